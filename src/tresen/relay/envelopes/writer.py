"""Group commit: every queue change of this node goes through one writer task.

Connections hand in :class:`WriteOp` s; the writer takes all that are waiting, applies them in
one transaction (one fsync for the lot), and only after the commit answers each op and publishes
the new items to their devices. Under load a batch holds hundreds of envelopes; when idle a
single op commits at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from tresen.bus import Bus
from tresen.bus.events import Items
from tresen.errors import TresenError, Unavailable
from tresen.protocol.frames import Item, ItemKind
from tresen.relay.clock import Clock
from tresen.relay.envelopes import store
from tresen.relay.envelopes.store import QueueRow
from tresen.storage.engine import Database, Txn

log = logging.getLogger("tresen.writer")

#: called once per op after the commit: (None, duplicate?) or (error, False)
Done = Callable[[TresenError | None, bool], None]


@dataclass(slots=True)
class NewItem:
    """A queue row to be, before its ``seq`` is allocated."""

    device: int
    kind: ItemKind
    envelope_id: str
    sender_account: int
    sender_device: int
    body: bytes = b""
    group: int = 0


@dataclass(slots=True)
class WriteOp:
    items: list[NewItem] = field(default_factory=list)
    #: (seq, device) rows to delete (acknowledged)
    deletes: list[tuple[int, int]] = field(default_factory=list)
    #: (sender_device, envelope_id): the op is applied only the first time this id is seen
    dedupe: tuple[int, str] | None = None
    ttl_ms: int = 0
    done: Done | None = None
    #: a business message's pricing type, told to the sender with ``sent``
    pricing: str = ""


def _finish(op: WriteOp, error: TresenError | None, duplicate: bool) -> None:
    """Answer an op once. Its callback is dropped first: a callback that holds its op (most
    do) would otherwise leave a reference cycle per envelope for the garbage collector."""
    done, op.done = op.done, None
    if done is not None:
        done(error, duplicate)


class Writer:
    def __init__(
        self, db: Database, bus: Bus, clock: Clock, *, ttl_ms: int, max_batch: int = 2048
    ) -> None:
        self.db, self.bus, self.clock = db, bus, clock
        self.ttl_ms = ttl_ms
        self.max_batch = max_batch
        self.pending: list[WriteOp] = []
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.batches = 0
        self.ops = 0

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="tresen-writer")

    async def close(self) -> None:
        """Finish what was handed in, then stop."""
        self.closing = True
        self.wakeup.set()
        if self.task is not None:
            await self.task

    def submit(self, op: WriteOp) -> None:
        if self.closing:
            _finish(op, Unavailable("the relay is shutting down; resend to another node"), False)
            return
        self.pending.append(op)
        self.wakeup.set()

    async def submit_wait(self, op: WriteOp) -> bool:
        """Submit and wait for the commit; returns True if the op was a duplicate."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def done(error: TresenError | None, duplicate: bool) -> None:
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(duplicate)

        op.done = done
        self.submit(op)
        return await future

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                batch = self.pending[: self.max_batch]
                del self.pending[: self.max_batch]
                await self._apply(batch)
            if self.closing and not self.pending:
                return

    async def _apply(self, batch: list[WriteOp]) -> None:
        now = self.clock.now_ms()

        async def interaction(txn: Txn) -> tuple[list[bool], list[QueueRow]]:
            duplicates: list[bool] = []
            # per device, commit order = seq order, across nodes (store.lock_queues). Taken
            # first, so that its lock timeout also bounds the wait for an id that another
            # node's open batch claimed (a node frozen mid-batch, its sender resending here)
            await store.lock_queues(txn, [it.device for op in batch for it in op.items])
            keys = list(dict.fromkeys(op.dedupe for op in batch if op.dedupe is not None))
            unclaimed = await store.claim_envelope_ids(txn, keys, now) if keys else set()
            fresh: list[NewItem] = []
            expiries: list[int] = []
            deletes: list[tuple[int, int]] = []
            for op in batch:
                dup = False
                if op.dedupe is not None:
                    # the first op with an id takes it; a repeat in the same batch is a duplicate
                    dup = op.dedupe not in unclaimed
                    unclaimed.discard(op.dedupe)
                duplicates.append(dup)
                if not dup:
                    fresh.extend(op.items)
                    expiries.extend([now + (op.ttl_ms or self.ttl_ms)] * len(op.items))
                deletes.extend(op.deletes)
            rows: list[QueueRow] = []
            if fresh:
                seqs = await txn.next_ids("queue_seq", len(fresh))
                rows = [
                    (
                        seq,
                        it.device,
                        it.kind,
                        it.envelope_id,
                        it.sender_account,
                        it.sender_device,
                        it.group,
                        now,
                        expires,
                        it.body,
                    )
                    for seq, it, expires in zip(seqs, fresh, expiries, strict=True)
                ]
                await store.insert_rows(txn, rows)
            if deletes:
                await store.delete_rows(txn, deletes)
            return duplicates, rows

        try:
            duplicates, rows = await self.db.run_interaction("write_batch", interaction)
        except Exception as exc:
            log.exception("write batch of %d ops failed", len(batch))
            error = (
                exc
                if isinstance(exc, TresenError)
                else Unavailable("the relay could not store this; resend it")
            )
            for op in batch:
                _finish(op, error, False)
            return
        self.batches += 1
        self.ops += len(batch)
        # after the commit: answer the senders, then wake the recipients
        for op, dup in zip(batch, duplicates, strict=True):
            _finish(op, None, dup)
        by_device: dict[int, list[Item]] = defaultdict(list)
        for r in rows:
            by_device[r[1]].append(Item(r[0], r[2], r[3], r[4], r[5], r[7], r[9], r[6]))  # type: ignore[arg-type]
        for device, items in by_device.items():
            self.bus.publish(f"device.{device}", Items(device=device, items=items))

"""Two writers (two relay nodes) on one PostgreSQL database: a device's items commit in ``seq``
order, so a reader's cursor never passes an item that commits late.

``seq`` comes from one PostgreSQL sequence. Without the per-device lock the writer takes before
it allocates, node A could hold seq N uncommitted while node B commits N+1; a device reading its
queue then would see N+1, move its cursor past N, and never read N.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tresen.bus.memory import MemoryBus
from tresen.errors import Unavailable
from tresen.relay.clock import Clock
from tresen.relay.envelopes import store
from tresen.relay.envelopes.delivery import DeviceStream
from tresen.relay.envelopes.writer import NewItem, WriteOp, Writer
from tresen.storage.engine import Database, Txn, open_database

from .test_multinode import pg_url  # noqa: F401 - a fresh PostgreSQL database in either pass

pytestmark = pytest.mark.postgres  # runs in the PostgreSQL pass only (tests/conftest.py)

DEVICE = 4242


async def until(condition: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def nodes(pg_url: str) -> AsyncIterator[tuple[Database, Database]]:  # noqa: F811
    a, b = open_database(pg_url, pool_size=3), open_database(pg_url, pool_size=3)
    await a.open()
    await a.migrate()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def read(db: Database, after: int) -> list[int]:
    items = await db.run_interaction(
        "fetch_queue", lambda txn: store.fetch_after(txn, DEVICE, after, 10_000), write=False
    )
    return [i.seq for i in items]


async def waiting_lock_count(db: Database) -> int:
    row = await db.run_interaction(
        "locks",
        lambda txn: txn.fetchone(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ),
        write=False,
    )
    return int(row[0]) if row else 0


async def test_a_later_seq_waits_for_an_earlier_uncommitted_one(
    nodes: tuple[Database, Database],
) -> None:
    node_a, node_b = nodes
    writer_b = Writer(node_b, MemoryBus(), Clock(), ttl_ms=60_000)
    writer_b.start()
    allocated, release = asyncio.Event(), asyncio.Event()

    async def slow_batch(txn: Txn) -> int:
        # node A's writer batch, exactly as the writer does it, held open before its commit
        await store.lock_queues(txn, [DEVICE, DEVICE + 1])
        (seq,) = await txn.next_ids("queue_seq", 1)
        await store.insert_rows(txn, [(seq, DEVICE, "message", "early", 1, 1, None, 0, 2**40, b"")])
        allocated.set()
        await release.wait()
        return seq

    batch_a = asyncio.create_task(node_a.run_interaction("write_batch", slow_batch))
    await allocated.wait()
    later = WriteOp(items=[NewItem(DEVICE, "message", "later", 1, 1, b"x")])
    batch_b = asyncio.create_task(writer_b.submit_wait(later))
    try:
        # node B's batch waits for node A's lock on the device instead of committing seq + 1
        waiting = 0
        async with asyncio.timeout(15):
            while waiting == 0:
                waiting = await waiting_lock_count(node_a)
                await asyncio.sleep(0.01)
        assert not batch_b.done()
        # so a device reading its queue now sees neither item: no gap for its cursor to skip
        stream = DeviceStream(DEVICE, window=10)
        assert await read(node_b, stream.cursor) == []
    finally:
        release.set()
    seq_a = await batch_a
    assert await batch_b is False
    seqs = await read(node_b, 0)
    assert seqs[0] == seq_a and len(seqs) == 2 and seqs[1] > seq_a
    await writer_b.close()


async def test_two_writers_racing_leave_no_gap_behind_any_cursor(
    nodes: tuple[Database, Database],
) -> None:
    """Many concurrent batches from both nodes; a reader following the queue the way a device
    stream does (reads after its cursor, woken on every commit) sees every item exactly once."""
    node_a, node_b = nodes
    writers = [Writer(db, MemoryBus(), Clock(), ttl_ms=60_000) for db in (node_a, node_b)]
    for w in writers:
        w.start()
    seen: list[int] = []
    done = asyncio.Event()

    async def follow() -> None:
        stream = DeviceStream(DEVICE, window=10_000)
        while True:
            # "done" must be known before the read starts: a read that began before the last
            # commits can come back empty after "done" was set
            finished = done.is_set()
            fetched = await node_a.run_interaction(
                "fetch_queue",
                lambda txn: store.fetch_after(txn, DEVICE, stream.cursor, 50),
                write=False,
            )
            seen.extend(i.seq for i in stream.on_fetched(fetched, exhausted=len(fetched) < 50))
            if finished and not fetched:
                return
            await asyncio.sleep(0)

    reader = asyncio.create_task(follow())

    async def send(w: Writer, n: int) -> None:
        # each op also touches other devices, so batches overlap in different orders
        items = [NewItem(DEVICE + d, "message", f"{n}-{d}", 1, 1, b"x") for d in (3, 0, 1)]
        await w.submit_wait(WriteOp(items=items))

    await asyncio.gather(*(send(writers[n % 2], n) for n in range(300)))
    done.set()
    await reader
    everything = await read(node_a, 0)
    assert len(everything) == 300
    assert seen == everything  # all of them, once, in order
    for w in writers:
        await w.close()


async def test_a_batch_does_not_wait_forever_behind_a_frozen_node(
    nodes: tuple[Database, Database],
) -> None:
    """A node frozen inside its batch (SIGSTOP, a VM pause) holds its devices' locks; another
    node's batch for those devices gives up after ``QUEUE_LOCK_TIMEOUT`` and its senders get
    ``unavailable`` (they resend) instead of every later batch of that node stalling too."""
    node_a, node_b = nodes
    writer_b = Writer(node_b, MemoryBus(), Clock(), ttl_ms=60_000)
    writer_b.start()
    allocated, release = asyncio.Event(), asyncio.Event()

    async def frozen_batch(txn: Txn) -> None:
        await store.lock_queues(txn, [DEVICE])
        allocated.set()
        await release.wait()

    batch_a = asyncio.create_task(node_a.run_interaction("write_batch", frozen_batch))
    await allocated.wait()
    try:
        with pytest.raises(Unavailable, match="resend"):
            await writer_b.submit_wait(WriteOp(items=[NewItem(DEVICE, "message", "x", 1, 1)]))
        # other devices are not held up, and the device works again once the node moves on
        await writer_b.submit_wait(WriteOp(items=[NewItem(DEVICE + 9, "message", "y", 1, 1)]))
    finally:
        release.set()
    await batch_a
    await writer_b.submit_wait(WriteOp(items=[NewItem(DEVICE, "message", "z", 1, 1)]))
    assert len(await read(node_b, 0)) == 1  # "z" is stored; "x" never was
    await writer_b.close()

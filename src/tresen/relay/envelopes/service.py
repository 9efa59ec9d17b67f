"""Rules of store-and-forward: who may send what to which devices, receipts, expiry.

``check_*`` validate a frame and build the :class:`WriteOp` the writer commits; nothing here
touches a socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from typing import Protocol

from tresen.config import Settings
from tresen.errors import (
    DeviceListMismatch,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
)
from tresen.protocol.codes import Code
from tresen.protocol.frames import Item, Read, Send, SendGroup
from tresen.relay.accounts.models import Principal
from tresen.relay.accounts.service import DeviceDirectory
from tresen.relay.clock import Clock, run_every
from tresen.relay.envelopes import store
from tresen.relay.envelopes.writer import NewItem, WriteOp, Writer
from tresen.relay.policy.hook import OPEN, EnvelopePolicy
from tresen.storage.engine import Database, Txn

MAX_ID = 64


class Members(Protocol):
    """What the envelope rules need from groups."""

    async def access_member_accounts(self, account_id: int, group_id: int) -> list[int]: ...


class EnvelopeService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        writer: Writer,
        directory: DeviceDirectory,
        members: Members,
        policy: EnvelopePolicy = OPEN,
    ) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        self.writer = writer
        self.directory = directory
        self.members = members
        self.policy = policy
        #: queue depth per device, loaded on first use and kept by this node
        self.depth: dict[int, int] = {}
        self.purger: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ sending

    def _check_id(self, envelope_id: str) -> None:
        if not 0 < len(envelope_id) <= MAX_ID:
            raise InvalidRequest(f"envelope id must be 1 to {MAX_ID} characters")

    def _check_size(self, envelope_id: str, bodies: Iterable[bytes]) -> None:
        limit = self.settings.max_envelope_bytes
        for body in bodies:
            if len(body) > limit:
                raise PayloadTooLarge(
                    f"a ciphertext of {len(body)} bytes exceeds the limit of {limit}: "
                    "send large content as media",
                    limit=limit,
                )

    async def _check_room(self, devices: Collection[int]) -> None:
        depth = self.depth
        for device in devices:
            if device not in depth:  # first sight since start: count once, then track
                depth[device] = await self._queue_length(device)
        limit = self.settings.max_queue_per_device
        full = [device for device in devices if depth[device] >= limit]
        if full:
            raise LimitExceeded(
                "a recipient device has too many undelivered envelopes; retry later",
                code=Code.QUEUE_FULL,
                devices=full,
                retry_after=60,
            )

    async def _queue_length(self, device: int) -> int:
        async def count(txn: Txn) -> int:
            return await store.queue_length(txn, device)

        return await self.db.run_interaction("queue_length", count, write=False)

    def _count(self, devices: Iterable[int], delta: int) -> None:
        for device in devices:
            if device in self.depth:
                self.depth[device] = max(0, self.depth[device] + delta)

    async def check_send(self, who: Principal, frame: Send) -> WriteOp:
        """Validate a 1:1 send: exactly the recipient's and own other current devices."""
        self._check_id(frame.id)
        cached = self.directory.cache.get  # the hot path: no coroutine for a cache hit
        recipients = cached(frame.to) or await self.directory.devices_of(frame.to)
        if not recipients:
            raise NotFound(f"no account {frame.to}", code=Code.UNKNOWN_RECIPIENT)
        own = cached(who.account_id) or await self.directory.devices_of(who.account_id)
        expected = (set(recipients) | set(own)) - {who.device_id}
        if set(frame.payloads) != expected:
            current = {str(frame.to): list(recipients)}
            if frame.to != who.account_id:
                current[str(who.account_id)] = [d for d in own if d != who.device_id]
            raise DeviceListMismatch(
                "the device list is out of date: encrypt for the current devices and resend",
                devices=current,
            )
        self._check_size(frame.id, frame.payloads.values())
        await self._check_room(frame.payloads)
        pricing = ""
        if self.policy.screen(who.account_id, frame.to, frame.biz):
            pricing = await self.policy.check_envelope(
                who.account_id, frame.to, frame.biz, frame.id
            )
        items = [
            NewItem(device, "message", frame.id, who.account_id, who.device_id, body)
            for device, body in frame.payloads.items()
        ]
        op = self._op(who, frame.id, items)
        op.pricing = pricing
        return op

    async def check_group_send(self, who: Principal, frame: SendGroup) -> WriteOp:
        """Validate a group send: one body fanned out to every member device but the sender."""
        self._check_id(frame.id)
        self.policy.check_group_send(who.account_id)
        accounts = await self.members.access_member_accounts(who.account_id, frame.group)
        devices: list[int] = []
        for account in accounts:
            devices.extend(await self.directory.devices_of(account))
        targets = [d for d in devices if d != who.device_id]
        if frame.devices is not None and set(frame.devices) - {who.device_id} != set(targets):
            raise DeviceListMismatch(
                "the group's device list is out of date: share keys with the current devices",
                devices={str(a): list(await self.directory.devices_of(a)) for a in accounts},
            )
        unknown = set(frame.payloads) - set(targets)
        if unknown:
            raise InvalidRequest(f"payloads for devices outside the group: {sorted(unknown)}")
        self._check_size(frame.id, [frame.body, *frame.payloads.values()])
        await self._check_room(targets)
        items = [
            NewItem(
                d,
                "message",
                frame.id,
                who.account_id,
                who.device_id,
                frame.payloads.get(d, frame.body),
                frame.group,
            )
            for d in targets
        ]
        return self._op(who, frame.id, items)

    def _op(self, who: Principal, envelope_id: str, items: list[NewItem]) -> WriteOp:
        """The op reserves queue room; :meth:`release` gives it back for a duplicate or failure."""
        self._count([i.device for i in items], +1)
        return WriteOp(items=items, dedupe=(who.device_id, envelope_id))

    def release(self, op: WriteOp) -> None:
        """A reserved op was a duplicate or failed: give its queue room back."""
        self._count([i.device for i in op.items], -1)

    # ------------------------------------------------------------ acknowledgements and receipts

    async def check_ack(self, who: Principal, acked: list[Item]) -> WriteOp:
        """Delete what the device acknowledged; tell senders their messages were delivered."""
        self.policy.on_delivered(who.account_id, acked)
        self._count([who.device_id], -len(acked))
        receipts: list[NewItem] = []
        senders: dict[int, tuple[int, ...]] = {}
        for item in acked:
            if item.kind != "message" or item.sender == who.account_id:
                continue
            if item.sender not in senders:
                senders[item.sender] = self.directory.cache.get(
                    item.sender
                ) or await self.directory.devices_of(item.sender)
            for device in senders[item.sender]:
                receipts.append(
                    NewItem(
                        device,
                        "delivered",
                        item.id,
                        who.account_id,
                        who.device_id,
                        group=item.group,
                    )
                )
        self._count([r.device for r in receipts], +1)
        return WriteOp(items=receipts, deletes=[(i.seq, who.device_id) for i in acked])

    async def check_read(self, who: Principal, frame: Read) -> WriteOp:
        if not frame.ids or len(frame.ids) > 1000:
            raise InvalidRequest("a read receipt names 1 to 1000 envelope ids")
        for envelope_id in frame.ids:
            self._check_id(envelope_id)
        senders = await self.directory.devices_of(frame.to)
        if not senders:
            raise NotFound(f"no account {frame.to}", code=Code.UNKNOWN_RECIPIENT)
        self.policy.screen(who.account_id, frame.to, None)  # raises if frame.to blocked who
        own = [d for d in await self.directory.devices_of(who.account_id) if d != who.device_id]
        targets = list(senders) + (own if frame.to != who.account_id else [])
        await self._check_room(targets)  # receipts fill a queue like envelopes do
        self._count(targets, +len(frame.ids))
        items = [
            NewItem(d, "read", envelope_id, who.account_id, who.device_id)
            for envelope_id in frame.ids
            for d in targets
        ]
        return WriteOp(items=items)

    async def fetch(self, device: int, after: int, limit: int) -> list[Item]:
        return await self.db.run_interaction(
            "fetch_queue", lambda txn: store.fetch_after(txn, device, after, limit), write=False
        )

    def forget_device(self, device: int) -> None:
        self.depth.pop(device, None)

    # ------------------------------------------------------------ expiry

    def start(self, interval: float = 60.0) -> None:
        self.purger = asyncio.create_task(
            run_every(interval, self.do_purge_expired, "purging expired envelopes"),
            name="tresen-purge",
        )

    async def close(self) -> None:
        if self.purger is not None:
            self.purger.cancel()
            await asyncio.gather(self.purger, return_exceptions=True)

    async def do_purge_expired(self) -> int:
        """Drop expired rows; tell each sending device which of its envelopes expired."""
        now = self.clock.now_ms()
        total = 0
        while True:
            expired = await self.db.run_interaction(
                "take_expired", lambda txn: store.take_expired(txn, now, 1000)
            )
            notices = [
                NewItem(sender_device, "expired", envelope_id, 0, device)
                for _, device, kind, envelope_id, _, sender_device in expired
                if kind == "message"
            ]
            self._count([row[1] for row in expired], -1)
            if notices:
                await self.writer.submit_wait(WriteOp(items=notices))
            total += len(expired)
            if len(expired) < 1000:
                break

        async def forget(txn: Txn) -> None:
            await store.forget_envelope_ids(txn, now - self.settings.envelope_ttl_seconds * 1000)

        await self.db.run_interaction("forget_envelope_ids", forget)
        return total

"""Presence and typing. Online state is per node (which devices hold a connection); changes
are published on ``presence.<account>`` and last seen is stored when the last device leaves.

With many nodes a :class:`~tresen.bus.presence.PresenceBook` says whether an account is online
on any node: a node publishes "online" only when the account's first device anywhere arrives
and "offline" only when its last one anywhere leaves (docs/scale-out.md). A node that dies says
nothing: every node follows the accounts watched from it and, every third of the book's time
to live, publishes "offline" for those the book no longer lists (:meth:`do_sweep`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque

from tresen.bus import Bus, BusEvent
from tresen.bus.base import Subscription
from tresen.bus.events import PresenceEvent, TypingEvent
from tresen.bus.presence import PresenceBook
from tresen.errors import Forbidden, InvalidRequest
from tresen.protocol.frames import Typing
from tresen.relay.accounts.models import PresenceState, Principal
from tresen.relay.accounts.service import AccountService, DeviceDirectory
from tresen.relay.clock import Clock, run_every
from tresen.relay.envelopes.service import Members
from tresen.relay.policy.hook import OPEN, EnvelopePolicy

log = logging.getLogger("tresen.presence")
#: accounts a node follows for the sweep at most (the oldest followed are dropped first)
MAX_FOLLOWED = 100_000


class PresenceService:
    def __init__(
        self,
        bus: Bus,
        clock: Clock,
        accounts: AccountService,
        directory: DeviceDirectory,
        members: Members,
        policy: EnvelopePolicy = OPEN,
        book: PresenceBook | None = None,
    ) -> None:
        self.bus, self.clock = bus, clock
        self.policy = policy
        self.accounts = accounts
        self.directory = directory
        self.members = members
        self.online: Counter[int] = Counter()
        #: many nodes: who is online anywhere (None: this node is the whole relay)
        self.book = book
        #: accounts the book last said are online on other nodes (asked on every watch)
        self.elsewhere: set[int] = set()
        self._changes: deque[tuple[int, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        #: many nodes: accounts watched from this node, followed on the bus (for the sweep)
        self._followed: dict[int, Subscription] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.book is not None:
            self._sweeper = asyncio.create_task(
                run_every(self.book.ttl / 3, self.do_sweep, "presence sweep"),
                name="tresen-presence-sweep",
            )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for sub in self._followed.values():
            sub.cancel()
        self._followed.clear()

    def is_online(self, account_id: int) -> bool:
        return self.online[account_id] > 0 or account_id in self.elsewhere

    def do_connected(self, who: Principal) -> None:
        self.online[who.account_id] += 1
        if self.online[who.account_id] == 1 and self.book is not None:
            self._book_change(who.account_id, True)
        elif self.online[who.account_id] == 1:
            self.bus.publish(
                f"presence.{who.account_id}", PresenceEvent(account=who.account_id, online=True)
            )

    async def do_disconnected(self, who: Principal) -> None:
        self.online[who.account_id] -= 1
        if self.online[who.account_id] <= 0:
            del self.online[who.account_id]
            await self.accounts.do_touch(who)
            if self.book is not None:
                self._book_change(who.account_id, False)
                return
            self.bus.publish(
                f"presence.{who.account_id}",
                PresenceEvent(account=who.account_id, online=False, last_seen=self.clock.now_ms()),
            )

    async def access_presence(self, who: Principal, account_id: int) -> PresenceState:
        """``account_id``'s online state and last seen, as its privacy and blocks allow."""
        if self.policy.blocked(account_id, who.account_id):
            raise Forbidden("this person does not share their presence with you")
        online = self.online[account_id] > 0
        if not online and self.book is not None:
            online = bool(await self.book.online([account_id]))
        return await self.accounts.access_presence(who, account_id, online)

    async def check_watch(self, who: Principal, accounts: list[int]) -> list[int]:
        """The accounts of ``accounts`` whose presence ``who`` may see."""
        if len(accounts) > 1000:
            raise InvalidRequest("watch at most 1000 accounts")
        visible = []
        for account in dict.fromkeys(accounts):
            if self.policy.blocked(account, who.account_id):
                continue  # whoever blocked you shows no presence to you
            allowed, _ = await self.accounts.check_presence_visible(who.account_id, account)
            if allowed:
                visible.append(account)
        if self.book is not None and visible:
            elsewhere = await self.book.online([a for a in visible if not self.online[a]])
            self.elsewhere.difference_update(visible)
            self.elsewhere |= elsewhere
            self._follow(visible)
        return visible

    def _follow(self, accounts: list[int]) -> None:
        for account in accounts:
            if account in self._followed:
                continue
            if len(self._followed) >= MAX_FOLLOWED:
                oldest = next(iter(self._followed))
                self._followed.pop(oldest).cancel()
                self.elsewhere.discard(oldest)
            self._followed[account] = self.bus.subscribe(f"presence.{account}", self._heard)

    def _heard(self, event: BusEvent) -> None:
        if isinstance(event, PresenceEvent):
            if event.online:
                self.elsewhere.add(event.account)
            else:
                self.elsewhere.discard(event.account)

    async def do_sweep(self) -> int:
        """Many nodes: the followed accounts last heard online whose entries left the book
        (their node died without a word) are offline now: tell the watchers. Returns how many.
        (Every node that follows such an account says so: a watcher may hear it twice.)"""
        assert self.book is not None
        candidates = [a for a in self.elsewhere if not self.online[a]]
        if not candidates:
            return 0
        still = await self.book.online(candidates)
        now = self.clock.now_ms()
        gone = [a for a in candidates if a not in still]
        if not gone:
            return 0
        # their node never stored a last seen: the sweep's time is the best there is
        await self.accounts.do_mark_seen(gone, now)
        for account in gone:
            self.elsewhere.discard(account)
            self.bus.publish(
                f"presence.{account}", PresenceEvent(account=account, online=False, last_seen=now)
            )
        log.info("%d accounts went offline with a node that stopped", len(gone))
        return len(gone)

    def _book_change(self, account: int, joined: bool) -> None:
        """Tell the book, in order; publish when the relay-wide state changed."""
        self._changes.append((account, joined))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._apply_changes(), name="tresen-presence")

    async def _apply_changes(self) -> None:
        assert self.book is not None
        while self._changes:
            account, joined = self._changes.popleft()
            try:
                changed = await (self.book.join(account) if joined else self.book.leave(account))
            except Exception as exc:
                # better a repeated event than a missed one
                log.warning("presence book unavailable (%r); publishing anyway", exc)
                changed = True
            if changed:
                last_seen = 0 if joined else self.clock.now_ms()
                self.bus.publish(
                    f"presence.{account}",
                    PresenceEvent(account=account, online=joined, last_seen=last_seen),
                )

    async def do_typing(self, who: Principal, frame: Typing) -> None:
        if bool(frame.to) == bool(frame.group):
            raise InvalidRequest("typing goes to exactly one of an account (to) or a group")
        if frame.group:
            accounts = await self.members.access_member_accounts(who.account_id, frame.group)
        else:
            accounts = [frame.to]
        for account in accounts:
            if account == who.account_id or self.policy.blocked(account, who.account_id):
                continue  # a block silences typing too (silently, like everything it stops)
            for device in await self.directory.devices_of(account):
                self.bus.publish(
                    f"device.{device}",
                    TypingEvent(
                        device=device,
                        account=who.account_id,
                        from_device=who.device_id,
                        on=frame.on,
                        group=frame.group,
                    ),
                )

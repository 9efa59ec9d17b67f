"""Presence and typing. Online state is per node (which devices hold a connection); changes
are published on ``presence.<account>`` and last seen is stored when the last device leaves.
"""

from __future__ import annotations

from collections import Counter

from tresen.bus import Bus
from tresen.bus.events import PresenceEvent, TypingEvent
from tresen.errors import Forbidden, InvalidRequest
from tresen.protocol.frames import Typing
from tresen.relay.accounts.models import PresenceState, Principal
from tresen.relay.accounts.service import AccountService, DeviceDirectory
from tresen.relay.clock import Clock
from tresen.relay.envelopes.service import Members
from tresen.relay.policy.hook import OPEN, EnvelopePolicy


class PresenceService:
    def __init__(
        self,
        bus: Bus,
        clock: Clock,
        accounts: AccountService,
        directory: DeviceDirectory,
        members: Members,
        policy: EnvelopePolicy = OPEN,
    ) -> None:
        self.bus, self.clock = bus, clock
        self.policy = policy
        self.accounts = accounts
        self.directory = directory
        self.members = members
        self.online: Counter[int] = Counter()

    def is_online(self, account_id: int) -> bool:
        return self.online[account_id] > 0

    def do_connected(self, who: Principal) -> None:
        self.online[who.account_id] += 1
        if self.online[who.account_id] == 1:
            self.bus.publish(
                f"presence.{who.account_id}", PresenceEvent(account=who.account_id, online=True)
            )

    async def do_disconnected(self, who: Principal) -> None:
        self.online[who.account_id] -= 1
        if self.online[who.account_id] <= 0:
            del self.online[who.account_id]
            await self.accounts.do_touch(who)
            self.bus.publish(
                f"presence.{who.account_id}",
                PresenceEvent(account=who.account_id, online=False, last_seen=self.clock.now_ms()),
            )

    async def access_presence(self, who: Principal, account_id: int) -> PresenceState:
        """``account_id``'s online state and last seen, as its privacy and blocks allow."""
        if self.policy.blocked(account_id, who.account_id):
            raise Forbidden("this person does not share their presence with you")
        return await self.accounts.access_presence(who, account_id, self.is_online(account_id))

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
        return visible

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

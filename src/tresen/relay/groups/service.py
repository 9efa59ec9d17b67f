"""Group rules: membership, admins, names, invite links, and the notices every change sends.

``access_*`` fetch with a permission check, ``check_*`` validate, ``do_*`` change state and,
after the commit, announce the change to the devices concerned.

Every change takes the group's row lock first (:func:`store.lock_group`), bumps the group's
``epoch`` once per notice, and queues one item of kind ``group`` per device through the writer:
to every member's devices (the actor's included, so that every client learns changes from its
queue in the same order) and to the devices of whoever was removed or left. The item's
``envelope_id`` is ``group.<id>.<epoch>``, its ``body`` a JSON :class:`GroupNotice`.

When the last admin leaves, the oldest remaining member becomes admin (a ``promote`` notice
follows the ``leave``). When the last member leaves, the group is deleted: its id is never
reused and later calls get ``unknown_group``.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from tresen.config import Settings
from tresen.errors import Conflict, Forbidden, InvalidRequest, NotFound, TresenError
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.accounts.service import DeviceDirectory
from tresen.relay.clock import Clock
from tresen.relay.envelopes.writer import NewItem, WriteOp, Writer
from tresen.relay.groups import store
from tresen.relay.groups.models import (
    Group,
    GroupCreate,
    GroupNotice,
    GroupSummary,
    GroupUpdate,
    Invite,
    InvitePreview,
    NoticeOp,
)
from tresen.storage.engine import Database, Txn

log = logging.getLogger("tresen.groups")

T = TypeVar("T")

#: groups whose member lists are kept in memory; the oldest entry goes first past this
MAX_CACHED_GROUPS = 100_000
_INVITE_CODE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


# ---------------------------------------------------------------- pure checks


def check_new_members(creator: int, requested: Iterable[int]) -> list[int]:
    """The requested members once each, in order, without the creator."""
    return [a for a in dict.fromkeys(requested) if a != creator]


def check_room(members: int, adding: int, limit: int) -> None:
    if members + adding > limit:
        raise Conflict(
            f"a group holds at most {limit} members; it has {members} and {adding} would join",
            code=Code.GROUP_FULL,
            limit=limit,
            members=members,
        )


def check_invite_code(code: str) -> str:
    """A syntactically impossible code is simply an unknown link."""
    if not _INVITE_CODE.match(code):
        raise _unknown_invite()
    return code


def new_invite_code() -> str:
    return secrets.token_urlsafe(16)


def invite_path(code: str) -> str:
    return f"/v1/groups/join/{code}"


def notice_id(group_id: int, epoch: int) -> str:
    """The queue item id of a change: unique, since group ids are never reused."""
    return f"group.{group_id}.{epoch}"


@dataclass(slots=True)
class Announcement:
    """A committed change and the accounts whose devices hear of it."""

    notice: GroupNotice
    to: list[int]


def _unknown_invite() -> NotFound:
    return NotFound(
        "this invite link is not valid: it may have been reset", code=Code.UNKNOWN_GROUP
    )


def _unknown_group(group_id: int) -> NotFound:
    return NotFound(f"no group {group_id}", code=Code.UNKNOWN_GROUP, group_id=group_id)


def _not_member(group_id: int) -> Forbidden:
    return Forbidden(
        f"you are not a member of group {group_id}", code=Code.NOT_GROUP_MEMBER, group_id=group_id
    )


class GroupService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        writer: Writer,
        directory: DeviceDirectory,
    ) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        self.writer = writer
        self.directory = directory
        #: member accounts per group, for the send path. Dropped after every change committed
        #: through this service. Single node for now: with many nodes, the node that made the
        #: change publishes it on the bus and every node calls :meth:`forget`.
        self.cache: dict[int, tuple[int, ...]] = {}
        #: bumped by every :meth:`forget`; a read that overlapped one does not fill the cache
        self.generation = 0

    # ------------------------------------------------------------ the send path

    async def access_member_accounts(self, account_id: int, group_id: int) -> list[int]:
        """All member accounts of a group ``account_id`` belongs to (the envelopes' ``Members``)."""
        members = self.cache.get(group_id)
        if members is None:
            members = await self._load_members(group_id)
        if account_id not in members:
            raise _not_member(group_id)
        return list(members)

    async def _load_members(self, group_id: int) -> tuple[int, ...]:
        generation = self.generation

        async def read(txn: Txn) -> list[int] | None:
            if await store.get_group(txn, group_id) is None:
                return None
            return await store.member_accounts(txn, group_id)

        found = await self.db.run_interaction("group_member_accounts", read, write=False)
        if found is None:
            raise _unknown_group(group_id)
        members = tuple(found)
        if generation == self.generation:
            if len(self.cache) >= MAX_CACHED_GROUPS:
                del self.cache[next(iter(self.cache))]
            self.cache[group_id] = members
        return members

    def forget(self, group_id: int) -> None:
        self.cache.pop(group_id, None)
        self.generation += 1

    # ------------------------------------------------------------ reads

    async def access_group(self, who: Principal, group_id: int) -> Group:
        async def read(txn: Txn) -> Group:
            group = await _snapshot(txn, group_id)
            if all(m.account_id != who.account_id for m in group.members):
                raise _not_member(group_id)
            return group

        return await self.db.run_interaction("get_group", read, write=False)

    async def access_groups(self, who: Principal) -> list[GroupSummary]:
        return await self.db.run_interaction(
            "groups_of", lambda txn: store.groups_of(txn, who.account_id), write=False
        )

    async def access_invite_preview(self, code: str) -> InvitePreview:
        check_invite_code(code)

        async def read(txn: Txn) -> InvitePreview:
            group_id = await store.group_by_invite(txn, code)
            row = await store.get_group(txn, group_id) if group_id is not None else None
            if row is None:
                raise _unknown_invite()
            return InvitePreview(int(row[0]), row[1], await store.count_members(txn, int(row[0])))

        return await self.db.run_interaction("preview_invite", read, write=False)

    # ------------------------------------------------------------ changes

    async def do_create(self, who: Principal, data: GroupCreate) -> Group:
        others = check_new_members(who.account_id, data.members)
        check_room(1, len(others), self.settings.max_group_members)
        now = self.clock.now_ms()

        async def create(txn: Txn, out: list[Announcement]) -> Group:
            await _check_accounts_exist(txn, others)
            group_id = await store.create_group(
                txn, data.name, data.description, who.account_id, now
            )
            await store.add_members(txn, group_id, [who.account_id], "admin", now)
            await store.add_members(txn, group_id, others, "member", now)
            await _record(txn, out, "create", group_id, [who.account_id, *others], name=data.name)
            return await _snapshot(txn, group_id)

        return await self._change(who, "create_group", create)

    async def do_update(self, who: Principal, group_id: int, update: GroupUpdate) -> Group:
        async def apply(txn: Txn, out: list[Announcement]) -> Group:
            await _access(txn, group_id, who.account_id, admin=True)
            row = await store.get_group(txn, group_id)
            assert row is not None
            if isinstance(update.name, str) and update.name != row[1]:
                await store.update_group(txn, group_id, "name", update.name)
                await _record(txn, out, "name", group_id, [], name=update.name)
            if isinstance(update.description, str) and update.description != row[2]:
                await store.update_group(txn, group_id, "description", update.description)
                await _record(txn, out, "description", group_id, [], description=update.description)
            return await _snapshot(txn, group_id)

        return await self._change(who, "update_group", apply)

    async def do_add_members(self, who: Principal, group_id: int, accounts: list[int]) -> Group:
        limit = self.settings.max_group_members
        now = self.clock.now_ms()

        async def add(txn: Txn, out: list[Announcement]) -> Group:
            await _access(txn, group_id, who.account_id, admin=True)
            present = set(await store.member_accounts(txn, group_id))
            fresh = [a for a in dict.fromkeys(accounts) if a not in present]
            if fresh:
                await _check_accounts_exist(txn, fresh)
                check_room(len(present), len(fresh), limit)
                await store.add_members(txn, group_id, fresh, "member", now)
                await _record(txn, out, "add", group_id, fresh)
            return await _snapshot(txn, group_id)

        return await self._change(who, "add_group_members", add)

    async def do_remove_member(self, who: Principal, group_id: int, account_id: int) -> None:
        """An admin removes someone; anyone removes themselves (:meth:`do_leave`)."""
        if account_id == who.account_id:
            await self.do_leave(who, group_id)
            return

        async def remove(txn: Txn, out: list[Announcement]) -> None:
            await _access(txn, group_id, who.account_id, admin=True)
            if not await store.remove_member(txn, group_id, account_id):
                raise _no_such_member(group_id, account_id)
            await _record(txn, out, "remove", group_id, [account_id], also=[account_id])

        await self._change(who, "remove_group_member", remove)

    async def do_leave(self, who: Principal, group_id: int) -> None:
        async def leave(txn: Txn, out: list[Announcement]) -> None:
            role = await _access(txn, group_id, who.account_id)
            await store.remove_member(txn, group_id, who.account_id)
            await _record(txn, out, "leave", group_id, [who.account_id], also=[who.account_id])
            if await store.count_members(txn, group_id) == 0:
                await store.delete_group(txn, group_id)
            elif role == "admin" and await store.count_members(txn, group_id, "admin") == 0:
                successor = await store.oldest_member(txn, group_id)
                assert successor is not None
                await store.set_role(txn, group_id, successor, "admin")
                await _record(txn, out, "promote", group_id, [successor])

        await self._change(who, "leave_group", leave)

    async def do_set_admin(
        self, who: Principal, group_id: int, account_id: int, admin: bool
    ) -> Group:
        """Promote (``admin=True``) or demote a member; a group always keeps one admin."""
        role = "admin" if admin else "member"

        async def apply(txn: Txn, out: list[Announcement]) -> Group:
            await _access(txn, group_id, who.account_id, admin=True)
            current = await store.role_of(txn, group_id, account_id)
            if current is None:
                raise _no_such_member(group_id, account_id)
            if current != role:
                if not admin and await store.count_members(txn, group_id, "admin") == 1:
                    raise InvalidRequest(
                        "a group needs an admin: promote someone else before stepping down"
                    )
                await store.set_role(txn, group_id, account_id, role)
                await _record(txn, out, "promote" if admin else "demote", group_id, [account_id])
            return await _snapshot(txn, group_id)

        return await self._change(who, "promote_member" if admin else "demote_member", apply)

    async def do_create_invite(self, who: Principal, group_id: int) -> Invite:
        """The group's invite link: the current one, or a new one if none is active."""

        async def create(txn: Txn) -> str:
            await _access(txn, group_id, who.account_id, admin=True)
            code = await store.get_invite_code(txn, group_id)
            if code is None:
                code = new_invite_code()
                await store.set_invite_code(txn, group_id, code)
            return code

        code = await self.db.run_interaction("create_group_invite", create)
        return Invite(code=code, url_path=invite_path(code))

    async def do_revoke_invite(self, who: Principal, group_id: int) -> None:
        async def revoke(txn: Txn) -> None:
            await _access(txn, group_id, who.account_id, admin=True)
            await store.set_invite_code(txn, group_id, None)

        await self.db.run_interaction("revoke_group_invite", revoke)

    async def do_join(self, who: Principal, code: str) -> Group:
        """Join through an invite link; joining a group one is in already changes nothing."""
        check_invite_code(code)
        limit = self.settings.max_group_members
        now = self.clock.now_ms()

        async def join(txn: Txn, out: list[Announcement]) -> Group:
            group_id = await store.group_by_invite(txn, code)
            # under the lock, the link must still be the group's (not reset meanwhile)
            if (
                group_id is None
                or not await store.lock_group(txn, group_id)
                or await store.get_invite_code(txn, group_id) != code
            ):
                raise _unknown_invite()
            if await store.role_of(txn, group_id, who.account_id) is None:
                check_room(await store.count_members(txn, group_id), 1, limit)
                await store.add_members(txn, group_id, [who.account_id], "member", now)
                await _record(txn, out, "join", group_id, [who.account_id])
            return await _snapshot(txn, group_id)

        return await self._change(who, "join_group", join)

    # ------------------------------------------------------------ after the commit

    async def _change(
        self,
        who: Principal,
        name: str,
        fn: Callable[[Txn, list[Announcement]], Awaitable[T]],
    ) -> T:
        """Run a change in one transaction; after the commit drop the cache and announce it."""
        out: list[Announcement] = []

        async def interaction(txn: Txn) -> T:
            out.clear()
            return await fn(txn, out)

        result = await self.db.run_interaction(name, interaction)
        for group_id in {a.notice.group for a in out}:
            self.forget(group_id)
        await self._announce(who, out)
        return result

    async def _announce(self, who: Principal, announcements: list[Announcement]) -> None:
        """Queue one ``group`` item per notice for every device concerned, in epoch order.

        The change is committed already: if queueing fails it is logged, not raised, and the
        clients see the gap in ``epoch`` and refetch the group.
        """
        items: list[NewItem] = []
        for announcement in announcements:
            notice = announcement.notice
            body = msgspec.json.encode(notice)
            envelope_id = notice_id(notice.group, notice.epoch)
            for account in announcement.to:
                for device in await self.directory.devices_of(account):
                    items.append(
                        NewItem(
                            device,
                            "group",
                            envelope_id,
                            who.account_id,
                            who.device_id,
                            body,
                            notice.group,
                        )
                    )
        if not items:
            return
        try:
            await self.writer.submit_wait(WriteOp(items=items))
        except TresenError:
            log.exception(
                "group change %s committed but its %d notices were not queued",
                [notice_id(a.notice.group, a.notice.epoch) for a in announcements],
                len(items),
            )


# ---------------------------------------------------------------- inside a transaction


async def _access(txn: Txn, group_id: int, account_id: int, *, admin: bool = False) -> str:
    """Lock the group; return the caller's role, or raise if it may not do this."""
    if not await store.lock_group(txn, group_id):
        raise _unknown_group(group_id)
    role = await store.role_of(txn, group_id, account_id)
    if role is None:
        raise _not_member(group_id)
    if admin and role != "admin":
        raise Forbidden(
            f"only admins of group {group_id} can do this",
            code=Code.NOT_GROUP_ADMIN,
            group_id=group_id,
        )
    return role


def _no_such_member(group_id: int, account_id: int) -> NotFound:
    return NotFound(
        f"account {account_id} is not a member of group {group_id}",
        group_id=group_id,
        account_id=account_id,
    )


async def _check_accounts_exist(txn: Txn, accounts: list[int]) -> None:
    existing = await store.existing_accounts(txn, accounts)
    missing = [a for a in accounts if a not in existing]
    if missing:
        raise NotFound(
            f"no account {', '.join(map(str, missing[:10]))}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""),
            code=Code.UNKNOWN_RECIPIENT,
            accounts=missing,
        )


async def _snapshot(txn: Txn, group_id: int) -> Group:
    row = await store.get_group(txn, group_id)
    if row is None:
        raise _unknown_group(group_id)
    members = await store.get_members(txn, group_id)
    return Group(int(row[0]), row[1], row[2], int(row[3]), int(row[4]), int(row[5]), members)


async def _record(
    txn: Txn,
    out: list[Announcement],
    op: NoticeOp,
    group_id: int,
    accounts: list[int],
    *,
    also: Iterable[int] = (),
    name: str | None = None,
    description: str | None = None,
) -> None:
    """Record a change: bump the epoch; its audience is the members now plus ``also``."""
    epoch = await store.next_epoch(txn, group_id)
    members = await store.member_accounts(txn, group_id)
    notice = GroupNotice(op, group_id, epoch, accounts, name=name, description=description)
    out.append(Announcement(notice, list(dict.fromkeys([*members, *also]))))

"""The groups service against a real SQLite file and the real writer, without HTTP.

Each change is checked the zulip way: the state before, plus the notices queued, must equal a
fresh fetch afterwards.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tresen.bus.memory import MemoryBus
from tresen.config import Settings
from tresen.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tresen.protocol.codes import Code
from tresen.protocol.frames import Item
from tresen.relay.accounts import store as accounts_store
from tresen.relay.accounts.models import Principal
from tresen.relay.accounts.service import DeviceDirectory
from tresen.relay.clock import Clock
from tresen.relay.envelopes import store as queue_store
from tresen.relay.envelopes.writer import Writer
from tresen.relay.groups.models import Group, GroupCreate, GroupNotice, GroupUpdate
from tresen.relay.groups.service import GroupService
from tresen.storage.engine import Database, Txn, open_database

_numbers = itertools.count(1)


@dataclass
class Rig:
    db: Database
    groups: GroupService
    #: last queue seq seen per device
    seen: dict[int, int]

    async def person(self, devices: int = 1) -> list[Principal]:
        """A new account with ``devices`` devices."""
        now = 1

        async def create(txn: Txn) -> list[Principal]:
            account = await accounts_store.create_account(txn, f"+49151{next(_numbers):08d}", now)
            out: list[Principal] = []
            for _ in range(devices):
                token = hashlib.sha256(f"{account}/{len(out)}".encode()).digest()
                device = await accounts_store.create_device(txn, account, "", token, now)
                out.append(Principal(account, device))
            return out

        return await self.db.run_interaction("test_person", create)

    async def notices(self, device: int) -> list[tuple[Item, GroupNotice]]:
        """Group items queued for ``device`` since the last call."""
        after = self.seen.get(device, 0)
        items = await self.db.run_interaction(
            "test_queue", lambda txn: queue_store.fetch_after(txn, device, after, 100_000)
        )
        if items:
            self.seen[device] = items[-1].seq
        return [
            (i, msgspec.json.decode(i.body, type=GroupNotice)) for i in items if i.kind == "group"
        ]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = open_database(f"sqlite:///{tmp_path}/relay.db", sqlite_synchronous="normal")
    await db.open()
    await db.migrate()
    clock = Clock()
    writer = Writer(db, MemoryBus(), clock, ttl_ms=86_400_000)
    writer.start()
    groups = GroupService(db, Settings(max_group_members=5), clock, writer, DeviceDirectory(db))
    try:
        yield Rig(db, groups, {})
    finally:
        await writer.close()
        await db.close()


def view(group: Group) -> dict[str, Any]:
    """The state a client keeps of a group, as a plain dict."""
    state: dict[str, Any] = msgspec.to_builtins(group)
    state["members"] = {m.account_id: m.role for m in group.members}
    return state


def apply(state: dict[str, Any], notice: GroupNotice) -> dict[str, Any]:
    """What a client does with a notice."""
    state = {**state, "epoch": notice.epoch}
    members = state["members"] = dict(state["members"])
    match notice.op:
        case "add" | "join":
            members.update(dict.fromkeys(notice.accounts, "member"))
        case "remove" | "leave":
            for account in notice.accounts:
                del members[account]
        case "promote" | "demote":
            role = "admin" if notice.op == "promote" else "member"
            members.update(dict.fromkeys(notice.accounts, role))
        case "name":
            state["name"] = notice.name
        case "description":
            state["description"] = notice.description
    return state


async def verify(rig: Rig, before: Group, device: Principal) -> Group:
    """``before`` plus the notices ``device`` received equals a fresh fetch."""
    state = view(before)
    for item, notice in await rig.notices(device.device_id):
        assert item.group == notice.group == before.group_id
        assert item.id == f"group.{notice.group}.{notice.epoch}"
        assert notice.epoch == state["epoch"] + 1, "a member sees every epoch"
        state = apply(state, notice)
    after = await rig.groups.access_group(device, before.group_id)
    assert state == view(after)
    return after


async def test_create_announces_to_every_member_device(rig: Rig) -> None:
    alice, alice2 = await rig.person(devices=2)
    (bob,) = await rig.person()
    group = await rig.groups.do_create(
        alice, GroupCreate(name="Climbing", members=[bob.account_id, bob.account_id])
    )
    assert group.created_by == alice.account_id
    assert group.epoch == 1
    assert [(m.account_id, m.role) for m in group.members] == [
        (alice.account_id, "admin"),
        (bob.account_id, "member"),
    ]
    for device in (alice, alice2, bob):
        [(item, notice)] = await rig.notices(device.device_id)
        assert (item.kind, item.id, item.group) == (
            "group",
            f"group.{group.group_id}.1",
            group.group_id,
        )
        assert (item.sender, item.sender_device) == (alice.account_id, alice.device_id)
        assert notice == GroupNotice(
            "create", group.group_id, 1, [alice.account_id, bob.account_id], name="Climbing"
        )


async def test_create_refuses_unknown_accounts_and_too_many(rig: Rig) -> None:
    (alice,) = await rig.person()
    with pytest.raises(NotFound) as caught:
        await rig.groups.do_create(alice, GroupCreate(name="x", members=[999_999, 999_998]))
    assert caught.value.code == Code.UNKNOWN_RECIPIENT
    assert caught.value.fields["accounts"] == [999_999, 999_998]
    others = [(await rig.person())[0].account_id for _ in range(5)]
    with pytest.raises(Conflict) as full:
        await rig.groups.do_create(alice, GroupCreate(name="x", members=others))
    assert full.value.code == Code.GROUP_FULL
    assert await rig.groups.access_groups(alice) == []


async def test_member_accounts_are_cached_and_dropped_on_change(rig: Rig) -> None:
    (alice,) = await rig.person()
    (bob,) = await rig.person()
    group = await rig.groups.do_create(alice, GroupCreate(name="g"))
    gid = group.group_id
    with pytest.raises(NotFound) as unknown:
        await rig.groups.access_member_accounts(alice.account_id, gid + 1000)
    assert unknown.value.code == Code.UNKNOWN_GROUP
    with pytest.raises(Forbidden) as outsider:
        await rig.groups.access_member_accounts(bob.account_id, gid)
    assert outsider.value.code == Code.NOT_GROUP_MEMBER
    assert rig.groups.cache[gid] == (alice.account_id,)
    assert await rig.groups.access_member_accounts(alice.account_id, gid) == [alice.account_id]
    await rig.groups.do_add_members(alice, gid, [bob.account_id])
    assert gid not in rig.groups.cache
    assert await rig.groups.access_member_accounts(bob.account_id, gid) == sorted(
        [alice.account_id, bob.account_id]
    )
    await rig.groups.do_remove_member(alice, gid, bob.account_id)
    with pytest.raises(Forbidden):
        await rig.groups.access_member_accounts(bob.account_id, gid)


async def test_a_read_overlapping_a_change_does_not_fill_the_cache(rig: Rig) -> None:
    (alice,) = await rig.person()
    gid = (await rig.groups.do_create(alice, GroupCreate(name="g"))).group_id
    real = rig.groups.db

    class Racing:
        """Reads, then lets a change commit before the read's answer is cached."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def run_interaction(
            self, name: str, fn: Any, *, write: bool = True, light: bool = False
        ) -> Any:
            result = await real.run_interaction(name, fn, write=write)
            rig.groups.forget(gid)
            return result

    rig.groups.db = Racing()
    try:
        await rig.groups.access_member_accounts(alice.account_id, gid)
    finally:
        rig.groups.db = real
    assert gid not in rig.groups.cache


async def test_admin_rules_and_the_snapshot_plus_notices(rig: Rig) -> None:
    (alice,) = await rig.person()
    (bob,) = await rig.person()
    (carol,) = await rig.person()
    group = await rig.groups.do_create(alice, GroupCreate(name="g", members=[bob.account_id]))
    await rig.notices(bob.device_id)
    for call in (
        rig.groups.do_update(bob, group.group_id, GroupUpdate(name="mine")),
        rig.groups.do_add_members(bob, group.group_id, [carol.account_id]),
        rig.groups.do_remove_member(bob, group.group_id, alice.account_id),
        rig.groups.do_set_admin(bob, group.group_id, bob.account_id, admin=True),
        rig.groups.do_create_invite(bob, group.group_id),
    ):
        with pytest.raises(Forbidden) as caught:
            await call
        assert caught.value.code == Code.NOT_GROUP_ADMIN
    with pytest.raises(Forbidden) as outsider:
        await rig.groups.access_group(carol, group.group_id)
    assert outsider.value.code == Code.NOT_GROUP_MEMBER

    await rig.groups.do_update(
        alice, group.group_id, GroupUpdate(name="Climbing", description="Tue")
    )
    await rig.groups.do_update(alice, group.group_id, GroupUpdate(name="Climbing"))  # no change
    await rig.groups.do_add_members(alice, group.group_id, [carol.account_id, bob.account_id])
    await rig.groups.do_set_admin(alice, group.group_id, bob.account_id, admin=True)
    await rig.groups.do_set_admin(alice, group.group_id, bob.account_id, admin=True)  # no change
    await rig.groups.do_set_admin(bob, group.group_id, alice.account_id, admin=False)
    await rig.groups.do_remove_member(bob, group.group_id, carol.account_id)
    after = await verify(rig, group, bob)
    assert (after.name, after.description, after.epoch) == ("Climbing", "Tue", 7)
    ops = [n.op for _, n in await rig.notices(carol.device_id)]
    assert ops == ["add", "promote", "demote", "remove"], "the removed member hears of it"

    with pytest.raises(NotFound):
        await rig.groups.do_remove_member(bob, group.group_id, carol.account_id)
    with pytest.raises(InvalidRequest):
        await rig.groups.do_set_admin(bob, group.group_id, bob.account_id, admin=False)


async def test_last_admin_leaving_promotes_the_oldest_member(rig: Rig) -> None:
    (alice,) = await rig.person()
    (bob,) = await rig.person()
    (carol,) = await rig.person()
    group = await rig.groups.do_create(alice, GroupCreate(name="g", members=[bob.account_id]))
    rig.groups.clock.advance(1)
    await rig.groups.do_add_members(alice, group.group_id, [carol.account_id])
    await rig.notices(carol.device_id)
    snapshot = await rig.groups.access_group(carol, group.group_id)
    await rig.groups.do_remove_member(alice, group.group_id, alice.account_id)
    after = await verify(rig, snapshot, carol)
    assert {m.account_id: m.role for m in after.members} == {
        bob.account_id: "admin",
        carol.account_id: "member",
    }
    ops = [(n.op, n.accounts) for _, n in await rig.notices(alice.device_id)]
    assert ops[-1] == ("leave", [alice.account_id]), "the leaver hears the leave, not after"
    with pytest.raises(Forbidden):
        await rig.groups.do_leave(alice, group.group_id)


async def test_the_last_member_leaving_deletes_the_group(rig: Rig) -> None:
    (alice,) = await rig.person()
    gid = (await rig.groups.do_create(alice, GroupCreate(name="g"))).group_id
    await rig.groups.access_member_accounts(alice.account_id, gid)
    await rig.groups.do_leave(alice, gid)
    ops = [n.op for _, n in await rig.notices(alice.device_id)]
    assert ops == ["create", "leave"]
    with pytest.raises(NotFound) as caught:
        await rig.groups.access_member_accounts(alice.account_id, gid)
    assert caught.value.code == Code.UNKNOWN_GROUP
    assert await rig.groups.access_groups(alice) == []


async def test_invite_links(rig: Rig) -> None:
    (alice,) = await rig.person()
    group = await rig.groups.do_create(alice, GroupCreate(name="Climbing"))
    invite = await rig.groups.do_create_invite(alice, group.group_id)
    assert invite.url_path == f"/v1/groups/join/{invite.code}"
    assert await rig.groups.do_create_invite(alice, group.group_id) == invite
    preview = await rig.groups.access_invite_preview(invite.code)
    assert (preview.group_id, preview.name, preview.member_count) == (group.group_id, "Climbing", 1)

    joiners = [(await rig.person())[0] for _ in range(5)]
    for joiner in joiners[:4]:
        joined = await rig.groups.do_join(joiner, invite.code)
        assert joiner.account_id in {m.account_id for m in joined.members}
    again = await rig.groups.do_join(joiners[0], invite.code)
    assert again.epoch == 5, "joining twice changes nothing"
    with pytest.raises(Conflict) as full:
        await rig.groups.do_join(joiners[4], invite.code)
    assert full.value.code == Code.GROUP_FULL
    [(item, notice)] = await rig.notices(joiners[3].device_id)
    assert (notice.op, notice.accounts, item.sender) == (
        "join",
        [joiners[3].account_id],
        joiners[3].account_id,
    )

    await rig.groups.do_revoke_invite(alice, group.group_id)
    for attempt in (
        rig.groups.do_join(joiners[4], invite.code),
        rig.groups.access_invite_preview(invite.code),
    ):
        with pytest.raises(NotFound) as gone:
            await attempt
        assert gone.value.code == Code.UNKNOWN_GROUP
    fresh = await rig.groups.do_create_invite(alice, group.group_id)
    assert fresh.code != invite.code

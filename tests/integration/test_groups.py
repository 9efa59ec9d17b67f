"""Groups over HTTP against a real relay: management, permissions, invite links, the notices
that land in member queues, group sends after membership changes, and the 1,024-member limit."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import msgspec
import pytest

from tresen.client import Connection
from tresen.errors import Forbidden
from tresen.protocol.codes import Code
from tresen.protocol.frames import Item
from tresen.relay.accounts import store as accounts_store
from tresen.relay.groups.models import GroupNotice
from tresen.storage.engine import Txn

from ..conftest import DeviceHandle, Harness


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    # every test device registers from 127.0.0.1
    return {"code_attempts_per_address_per_hour": 1000}


def error(response: httpx.Response, status: int, code: Code) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code
    return body


async def notices(relay: Harness, device: DeviceHandle) -> list[tuple[Item, GroupNotice]]:
    items = await relay.fetch_queue(device.device_id)
    return [(i, msgspec.json.decode(i.body, type=GroupNotice)) for i in items if i.kind == "group"]


async def next_of(conn: Connection, kind: str) -> Item:
    """The next item of ``kind``, skipping others (receipts of one's own sends)."""
    while True:
        item = await conn.recv()
        if item.kind == kind:
            return item


async def create(owner: DeviceHandle, name: str, *members: DeviceHandle) -> dict[str, Any]:
    r = await owner.http.post(
        "/v1/groups", json={"name": name, "members": [m.account_id for m in members]}
    )
    assert r.status_code == 201, r.text
    group: dict[str, Any] = r.json()
    return group


async def test_create_list_and_read(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    group = await create(alice, "Climbing", bob)
    gid = group["group_id"]
    assert group["created_by"] == alice.account_id
    assert [(m["account_id"], m["role"]) for m in group["members"]] == [
        (alice.account_id, "admin"),
        (bob.account_id, "member"),
    ]
    r = await bob.http.get("/v1/groups")
    assert r.status_code == 200
    assert r.json() == [
        {"group_id": gid, "name": "Climbing", "role": "member", "member_count": 2, "epoch": 1}
    ]
    r = await bob.http.get(f"/v1/groups/{gid}")
    assert r.json() == group
    assert (await carol.http.get("/v1/groups")).json() == []
    error(await carol.http.get(f"/v1/groups/{gid}"), 403, Code.NOT_GROUP_MEMBER)
    error(await carol.http.get(f"/v1/groups/{gid + 999}"), 404, Code.UNKNOWN_GROUP)

    r = await alice.http.post("/v1/groups", json={"name": "x", "members": [bob.account_id, 99999]})
    assert error(r, 404, Code.UNKNOWN_RECIPIENT)["fields"]["accounts"] == [99999]
    r = await alice.http.post("/v1/groups", json={"name": "", "members": []})
    error(r, 400, Code.BAD_REQUEST)
    r = await alice.http.post("/v1/groups", json={"name": "x", "owner": 1})
    error(r, 400, Code.BAD_REQUEST)
    async with relay.client() as anonymous:
        error(await anonymous.get("/v1/groups"), 401, Code.UNAUTHORIZED)


async def test_only_admins_manage(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    gid = (await create(alice, "g", bob))["group_id"]
    for response in (
        await bob.http.patch(f"/v1/groups/{gid}", json={"name": "mine"}),
        await bob.http.post(f"/v1/groups/{gid}/members", json={"accounts": [carol.account_id]}),
        await bob.http.delete(f"/v1/groups/{gid}/members/{alice.account_id}"),
        await bob.http.post(f"/v1/groups/{gid}/admins/{bob.account_id}"),
        await bob.http.delete(f"/v1/groups/{gid}/admins/{alice.account_id}"),
        await bob.http.post(f"/v1/groups/{gid}/invite"),
        await bob.http.delete(f"/v1/groups/{gid}/invite"),
    ):
        error(response, 403, Code.NOT_GROUP_ADMIN)
    error(
        await carol.http.patch(f"/v1/groups/{gid}", json={"name": "x"}), 403, Code.NOT_GROUP_MEMBER
    )

    r = await alice.http.patch(f"/v1/groups/{gid}", json={"name": "Climbing", "description": "Tue"})
    assert (r.json()["name"], r.json()["description"], r.json()["epoch"]) == ("Climbing", "Tue", 3)
    r = await alice.http.post(f"/v1/groups/{gid}/admins/{bob.account_id}")
    assert r.status_code == 200, r.text
    assert {m["account_id"]: m["role"] for m in r.json()["members"]}[bob.account_id] == "admin"
    r = await bob.http.delete(f"/v1/groups/{gid}/admins/{alice.account_id}")
    assert r.status_code == 200, r.text
    error(await alice.http.post(f"/v1/groups/{gid}/invite"), 403, Code.NOT_GROUP_ADMIN)
    error(await bob.http.delete(f"/v1/groups/{gid}/admins/{bob.account_id}"), 400, Code.BAD_REQUEST)
    r = await bob.http.delete(f"/v1/groups/{gid}/members/{carol.account_id}")
    error(r, 404, Code.NOT_FOUND)

    ops = [(n.op, n.accounts, n.name) for _, n in await notices(relay, bob)]
    assert ops == [
        ("create", [alice.account_id, bob.account_id], "g"),
        ("name", [], "Climbing"),
        ("description", [], None),
        ("promote", [bob.account_id], None),
        ("demote", [alice.account_id], None),
    ]


async def test_changes_reach_every_member_device_and_the_removed(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    bob2 = await relay.link_device(bob)
    gid = (await create(alice, "g", bob))["group_id"]
    r = await alice.http.post(f"/v1/groups/{gid}/members", json={"accounts": [carol.account_id]})
    assert r.status_code == 200, r.text
    assert r.json()["epoch"] == 2
    r = await alice.http.delete(f"/v1/groups/{gid}/members/{bob.account_id}")
    assert r.status_code == 204, r.text

    expected = [
        ("create", [alice.account_id, bob.account_id]),
        ("add", [carol.account_id]),
        ("remove", [bob.account_id]),
    ]
    for device in (alice, bob, bob2):
        got = await notices(relay, device)
        assert [(n.op, n.accounts) for _, n in got] == expected
        for item, notice in got:
            assert item.id == f"group.{gid}.{notice.epoch}"
            assert (item.group, notice.group) == (gid, gid)
            assert (item.sender, item.sender_device) == (alice.account_id, alice.device_id)
    assert [(n.op, n.accounts) for _, n in await notices(relay, carol)] == expected[1:]
    error(await bob.http.get(f"/v1/groups/{gid}"), 403, Code.NOT_GROUP_MEMBER)


async def test_notices_arrive_live_and_group_sends_follow_membership(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    gid = (await create(alice, "g", bob))["group_id"]
    aconn, bconn, cconn = await alice.connect(), await bob.connect(), await carol.connect()
    for conn in (aconn, bconn):
        item = await next_of(conn, "group")
        assert (item.kind, item.group) == ("group", gid)

    await aconn.send_group(gid, b"one", id="one")
    assert (await next_of(bconn, "message")).body == b"one"

    r = await alice.http.post(f"/v1/groups/{gid}/members", json={"accounts": [carol.account_id]})
    assert r.status_code == 200, r.text
    for conn in (aconn, bconn, cconn):
        item = await next_of(conn, "group")
        notice = msgspec.json.decode(item.body, type=GroupNotice)
        assert (item.kind, notice.op, notice.accounts) == ("group", "add", [carol.account_id])
    await aconn.send_group(gid, b"two", id="two")
    assert (await next_of(bconn, "message")).body == b"two"
    assert (await next_of(cconn, "message")).body == b"two"

    r = await bob.http.delete(f"/v1/groups/{gid}/members/{bob.account_id}")  # bob leaves
    assert r.status_code == 204, r.text
    for conn in (aconn, bconn, cconn):
        notice = msgspec.json.decode((await next_of(conn, "group")).body, type=GroupNotice)
        assert (notice.op, notice.accounts) == ("leave", [bob.account_id])
    with pytest.raises(Forbidden) as caught:
        await bconn.send_group(gid, b"let me in", id="three")
    assert caught.value.code == Code.NOT_GROUP_MEMBER
    await aconn.send_group(gid, b"four", id="four")
    assert (await next_of(cconn, "message")).body == b"four"


async def test_invite_links(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    gid = (await create(alice, "Climbing", bob))["group_id"]
    r = await alice.http.post(f"/v1/groups/{gid}/invite")
    assert r.status_code == 200, r.text
    invite = r.json()
    assert invite["url_path"] == f"/v1/groups/join/{invite['code']}"
    assert (await alice.http.post(f"/v1/groups/{gid}/invite")).json() == invite

    r = await carol.http.get(f"/v1/groups/invite/{invite['code']}")
    assert r.json() == {"group_id": gid, "name": "Climbing", "member_count": 2}
    error(await carol.http.get(f"/v1/groups/{gid}"), 403, Code.NOT_GROUP_MEMBER)
    r = await carol.http.post(invite["url_path"])
    assert r.status_code == 200, r.text
    assert carol.account_id in [m["account_id"] for m in r.json()["members"]]
    assert (await carol.http.post(invite["url_path"])).json() == r.json()
    [(item, notice)] = [n for n in await notices(relay, bob) if n[1].op == "join"]
    assert (notice.accounts, item.sender, item.sender_device) == (
        [carol.account_id],
        carol.account_id,
        carol.device_id,
    )

    r = await alice.http.delete(f"/v1/groups/{gid}/invite")
    assert r.status_code == 204, r.text
    dave = await relay.new_device()
    error(await dave.http.post(invite["url_path"]), 404, Code.UNKNOWN_GROUP)
    error(await dave.http.get(f"/v1/groups/invite/{invite['code']}"), 404, Code.UNKNOWN_GROUP)
    error(await dave.http.post("/v1/groups/join/not-a-code!"), 404, Code.UNKNOWN_GROUP)
    fresh = (await alice.http.post(f"/v1/groups/{gid}/invite")).json()
    assert fresh["code"] != invite["code"]
    assert (await dave.http.post(fresh["url_path"])).status_code == 200


async def test_last_admin_leaving_promotes_the_oldest_member(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    gid = (await create(alice, "g", bob))["group_id"]
    relay.clock.advance(1)
    await alice.http.post(f"/v1/groups/{gid}/members", json={"accounts": [carol.account_id]})
    r = await alice.http.delete(f"/v1/groups/{gid}/members/{alice.account_id}")
    assert r.status_code == 204, r.text
    group = (await carol.http.get(f"/v1/groups/{gid}")).json()
    assert {m["account_id"]: m["role"] for m in group["members"]} == {
        bob.account_id: "admin",
        carol.account_id: "member",
    }
    ops = [(n.op, n.accounts) for _, n in await notices(relay, carol)]
    assert ops[-2:] == [("leave", [alice.account_id]), ("promote", [bob.account_id])]
    assert group["epoch"] == 4

    for device in (bob, carol):
        r = await device.http.delete(f"/v1/groups/{gid}/members/{device.account_id}")
        assert r.status_code == 204, r.text
    error(await bob.http.get(f"/v1/groups/{gid}"), 404, Code.UNKNOWN_GROUP)


async def test_a_group_holds_1024_members_and_refuses_the_next(relay: Harness) -> None:
    limit = relay.services.settings.max_group_members
    assert limit == 1024
    alice = await relay.new_device()
    now = relay.clock.now_ms()

    async def people(txn: Txn) -> list[tuple[int, int]]:
        out = []
        for n in range(limit):
            account = await accounts_store.create_account(txn, f"+4917{n:09d}", now)
            token_hash = hashlib.sha256(b"bulk-%d" % n).digest()
            out.append(
                (account, await accounts_store.create_device(txn, account, "", token_hash, now))
            )
        return out

    *members, (extra, _) = await relay.services.db.run_interaction("test_people", people)
    assert len(members) == limit - 1

    r = await alice.http.post(
        "/v1/groups", json={"name": "big", "members": [a for a, _ in members] + [extra]}
    )
    assert error(r, 409, Code.GROUP_FULL)["fields"] == {"limit": limit, "members": 1}

    group = await alice.http.post(
        "/v1/groups", json={"name": "big", "members": [a for a, _ in members]}
    )
    assert group.status_code == 201, group.text
    gid = group.json()["group_id"]
    assert len(group.json()["members"]) == limit
    for _, device in (members[0], members[-1]):
        [item] = await relay.fetch_queue(device)
        notice = msgspec.json.decode(item.body, type=GroupNotice)
        assert (item.kind, notice.op, len(notice.accounts)) == ("group", "create", limit)

    r = await alice.http.post(f"/v1/groups/{gid}/members", json={"accounts": [extra]})
    assert error(r, 409, Code.GROUP_FULL)["fields"] == {"limit": limit, "members": limit}
    code = (await alice.http.post(f"/v1/groups/{gid}/invite")).json()["code"]
    outsider = await relay.new_device()
    error(await outsider.http.post(f"/v1/groups/join/{code}"), 409, Code.GROUP_FULL)
    accounts = await relay.services.groups.access_member_accounts(alice.account_id, gid)
    assert len(accounts) == limit

    # one leaves, one more fits
    r = await alice.http.delete(f"/v1/groups/{gid}/members/{members[0][0]}")
    assert r.status_code == 204, r.text
    r = await outsider.http.post(f"/v1/groups/join/{code}")
    assert r.status_code == 200, r.text
    assert len(r.json()["members"]) == limit

    # a group send reaches every other member device
    conn = await alice.connect()
    await conn.send_group(gid, b"hello all", id="all")
    for _, device in members[1:3]:
        assert [i.body for i in await relay.fetch_queue(device) if i.kind == "message"] == [
            b"hello all"
        ]


@pytest.mark.parametrize(
    "relay_settings", [{"max_group_members": 3, "code_attempts_per_address_per_hour": 1000}]
)
async def test_racing_joins_never_overfill_a_group(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    gid = (await create(alice, "g", bob))["group_id"]
    path = (await alice.http.post(f"/v1/groups/{gid}/invite")).json()["url_path"]
    joiners = [await relay.new_device() for _ in range(4)]
    answers = await asyncio.gather(*(j.http.post(path) for j in joiners))
    assert sorted(r.status_code for r in answers) == [200, 409, 409, 409]
    group = (await alice.http.get(f"/v1/groups/{gid}")).json()
    assert len(group["members"]) == 3
    assert group["epoch"] == 2

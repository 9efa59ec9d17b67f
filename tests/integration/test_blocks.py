"""Blocks stop every envelope at the relay at once (without revealing the block), and reports
go to the operator's queue with what the reporter chose to attach."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tresen.protocol.codes import Code
from tresen.protocol.frames import TypingNotice

from ..conftest import Harness
from ._policy import (
    admin_client,
    approved_template,
    error,
    make_business,
    opt_in,
    refused,
    send,
    template,
)


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"business_credit_limit_minor": 10**9}


async def test_block_stops_a_business_at_once_with_undeliverable(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    await approved_template(relay, shop)
    await opt_in(person, shop, "utility")
    pconn = await person.connect()
    conn = await shop.connect()
    await send(pconn, shop)  # an open window: service replies and templates pass
    await send(conn, person)
    r = await person.http.post("/v1/blocks", json={"account": shop.account_id})
    assert r.status_code == 201, r.text
    # the same code as "not on tresen": the block is not revealed
    await refused(conn, person, None, Code.MESSAGE_UNDELIVERABLE)
    await refused(conn, person, template(), Code.MESSAGE_UNDELIVERABLE)
    r = await person.http.get("/v1/blocks")
    assert [b["account"] for b in r.json()] == [shop.account_id]
    # the person can still write to the business (and so lift the block by unblocking)
    r = await person.http.delete(f"/v1/blocks/{shop.account_id}")
    assert r.status_code == 204, r.text
    await send(conn, person)
    error(await person.http.delete(f"/v1/blocks/{shop.account_id}"), 404, Code.NOT_FOUND)


async def test_a_person_can_block_any_account(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    bconn = await bob.connect()
    await send(bconn, alice)
    await alice.sdk.api.block(bob.account_id)  # through the SDK
    assert [b["account"] for b in await alice.sdk.api.blocks()] == [bob.account_id]
    await refused(bconn, alice, None, Code.MESSAGE_UNDELIVERABLE)
    # nothing from bob was queued after the block
    queued = await relay.fetch_queue(alice.device_id)
    assert len([i for i in queued if i.kind == "message"]) == 1
    # blocking is one way: alice can still write to bob
    aconn = await alice.connect()
    await send(aconn, bob)


async def test_block_validation(relay: Harness) -> None:
    alice = await relay.new_device()
    error(
        await alice.http.post("/v1/blocks", json={"account": alice.account_id}),
        400,
        Code.BAD_REQUEST,
    )
    error(
        await alice.http.post("/v1/blocks", json={"account": 999_999}), 404, Code.UNKNOWN_RECIPIENT
    )
    error(await alice.http.post("/v1/blocks", json={"account": "x"}), 400, Code.BAD_REQUEST)
    assert (await alice.http.get("/v1/blocks")).json() == []


async def test_report_reaches_the_operator_with_what_the_reporter_attached(relay: Harness) -> None:
    shop = await make_business(relay, "Spammy Deals")
    person = await relay.new_device()
    attached = [
        {"id": "m1", "sender": shop.account_id, "ts": 1, "text": "WIN A PRIZE"},
        {"id": "m2", "sender": person.account_id, "ts": 2, "text": "who is this?"},
    ]
    r = await person.http.post(
        "/v1/reports",
        json={
            "account": shop.account_id,
            "reason": "spam",
            "comment": "never signed up",
            "messages": attached,
            "block": True,
        },
    )
    assert r.status_code == 201, r.text
    report_id = r.json()["id"]
    conn = await shop.connect()
    await refused(conn, person, None, Code.MESSAGE_UNDELIVERABLE)  # reported and blocked
    # only the operator reads the queue
    error(await person.http.get("/v1/admin/reports"), 403, Code.ADMIN_REQUIRED)
    async with await admin_client(relay) as admin:
        r = await admin.get("/v1/admin/reports")
        assert r.status_code == 200, r.text
        (found,) = r.json()["reports"]
        assert found["id"] == report_id
        assert (found["reporter"], found["reported"]) == (person.account_id, shop.account_id)
        assert [m["text"] for m in found["messages"]] == ["WIN A PRIZE", "who is this?"]
        assert (found["status"], found["blocked"]) == ("open", True)
        r = await admin.post(
            f"/v1/admin/reports/{report_id}/resolve",
            json={"resolution": "warned", "note": "first warning"},
        )
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["resolved_by"]) == ("resolved", "ops")
        error(
            await admin.post(
                f"/v1/admin/reports/{report_id}/resolve", json={"resolution": "dismissed"}
            ),
            409,
            Code.ALREADY_REVIEWED,
        )
        assert (await admin.get("/v1/admin/reports")).json()["reports"] == []
        done = (await admin.get("/v1/admin/reports", params={"status": "resolved"})).json()
        assert [x["id"] for x in done["reports"]] == [report_id]
        audit = (await admin.get("/v1/admin/audit", params={"action": "report.resolve"})).json()
        assert audit["items"][0]["target"] == f"report:{report_id}"


async def test_report_validation(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    foreign = {"id": "x", "sender": carol.account_id, "ts": 1, "text": "not from this chat"}
    for body, code in (
        ({"account": bob.account_id, "reason": "spam", "messages": [foreign]}, Code.BAD_REQUEST),
        ({"account": bob.account_id, "reason": "boring"}, Code.BAD_REQUEST),
        ({"account": alice.account_id, "reason": "spam"}, Code.BAD_REQUEST),
        (
            {"account": bob.account_id, "reason": "spam", "messages": [{"id": "m"}] * 21},
            Code.BAD_REQUEST,
        ),
    ):
        error(await alice.http.post("/v1/reports", json=body), 400, code)
    error(
        await alice.http.post("/v1/reports", json={"account": 424242, "reason": "spam"}),
        404,
        Code.UNKNOWN_RECIPIENT,
    )
    async with await admin_client(relay) as admin:
        assert (await admin.get("/v1/admin/reports")).json()["reports"] == []


async def test_a_missed_block_is_picked_up_on_resync(relay: Harness) -> None:
    """A block made on another node whose event this node missed (a bus outage)."""
    from tresen.bus.events import PolicyChanged
    from tresen.relay.consent import store

    alice, bob = await relay.new_device(), await relay.new_device()
    bconn = await bob.connect()
    now = relay.clock.now_ms()
    await relay.services.db.run_interaction(
        "block_elsewhere", lambda txn: store.add_block(txn, alice.account_id, bob.account_id, now)
    )
    await send(bconn, alice)  # this node does not know yet
    gate = relay.services.policy
    relay.services.bus.publish("relay", PolicyChanged(what="resync"))
    assert gate._resync is not None
    await gate._resync
    await refused(bconn, alice, None, Code.MESSAGE_UNDELIVERABLE)


async def test_reports_per_person_are_limited(relay: Harness) -> None:
    from tresen.relay.consent.service import REPORTS_PER_DAY

    alice, bob = await relay.new_device(), await relay.new_device()
    for _ in range(REPORTS_PER_DAY):
        r = await alice.http.post("/v1/reports", json={"account": bob.account_id, "reason": "spam"})
        assert r.status_code == 201, r.text
    r = await alice.http.post("/v1/reports", json={"account": bob.account_id, "reason": "spam"})
    assert error(r, 429, Code.RATE_LIMITED)["fields"]["retry_after"] == 3600
    relay.clock.advance(24 * 3600 + 1)
    r = await alice.http.post("/v1/reports", json={"account": bob.account_id, "reason": "spam"})
    assert r.status_code == 201, r.text


async def test_a_block_also_silences_typing_presence_and_read_receipts(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    aconn, bconn = await alice.connect(), await bob.connect()
    await bconn.watch([alice.account_id])
    assert (await bconn.notice()).account == alice.account_id  # type: ignore[union-attr]
    await alice.sdk.api.block(bob.account_id)
    # bob's typing no longer reaches alice; alice's still reaches bob (a block is one way)
    await bconn.typing(to=alice.account_id)
    await aconn.typing(to=bob.account_id)
    notice = await bconn.notice()
    assert isinstance(notice, TypingNotice) and notice.account == alice.account_id
    with pytest.raises(TimeoutError):
        await aconn.notice(timeout=0.3)
    # presence: hidden from the blocked account, over HTTP and the socket
    r = await bob.http.get(f"/v1/accounts/{alice.account_id}/presence")
    assert r.status_code == 403
    assert (await alice.http.get(f"/v1/accounts/{bob.account_id}/presence")).status_code == 200
    await bconn.watch([alice.account_id])
    with pytest.raises(TimeoutError):
        await bconn.notice(timeout=0.3)
    # read receipts from the blocked account are refused like its envelopes
    await bconn.read(alice.account_id, ["m1"])
    refusal = await asyncio.wait_for(bconn.errors.get(), 5)
    assert refusal.code == Code.MESSAGE_UNDELIVERABLE
    assert not [i for i in await relay.fetch_queue(alice.device_id) if i.kind == "read"]

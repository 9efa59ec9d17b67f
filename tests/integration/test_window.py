"""The customer-service window: a person's message opens 24 hours of free-form replies; outside
it only approved templates pass (131047); a link or QR entry opens a 72-hour entry point."""

from __future__ import annotations

from typing import Any

import pytest

from tresen.protocol.codes import Code
from tresen.protocol.frames import BizMeta

from ..conftest import Harness
from ._policy import (
    HOUR,
    approved_template,
    error,
    make_business,
    messages,
    opt_in,
    refused,
    send,
    template,
)


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"business_credit_limit_minor": 10**9}


async def test_free_form_only_inside_24_hours_after_the_persons_message(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    conn = await shop.connect()
    pconn = await person.connect()
    err = await refused(conn, person, None, Code.REENGAGEMENT_REQUIRED)
    assert "24 hours" in err.message
    await send(pconn, shop)
    await send(conn, person)  # unmarked: a service message
    await send(conn, person, BizMeta())
    relay.clock.advance(23 * HOUR)
    await send(conn, person)
    relay.clock.advance(1 * HOUR + 1)
    await refused(conn, person, None, Code.REENGAGEMENT_REQUIRED)
    # the person's next message opens a new window
    await send(pconn, shop)
    await send(conn, person)
    got = await messages(pconn, 4)
    assert [i.sender for i in got] == [shop.account_id] * 4


async def test_templates_pass_outside_the_window(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    await approved_template(relay, shop)
    await opt_in(person, shop, "utility")
    conn = await shop.connect()
    await refused(conn, person, None, Code.REENGAGEMENT_REQUIRED)
    await send(conn, person, template())


async def test_entry_from_the_link_opens_72_hours(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    conn = await shop.connect()
    r = await person.http.post(f"/v1/entry/{shop.account_id}", json={"source": "qr"})
    assert r.status_code == 200, r.text
    assert r.json()["until"] >= relay.clock.now_ms() + 72 * 3600 * 1000 - 5000
    await send(conn, person)
    relay.clock.advance(71 * HOUR)
    await send(conn, person)
    relay.clock.advance(1 * HOUR + 1)
    await refused(conn, person, None, Code.REENGAGEMENT_REQUIRED)
    for body in ({"source": "ad"}, {}, {"source": "qr", "x": 1}):
        error(
            await person.http.post(f"/v1/entry/{shop.account_id}", json=body), 400, Code.BAD_REQUEST
        )
    error(
        await person.http.post(f"/v1/entry/{person.account_id}", json={"source": "link"}),
        404,
        Code.NOT_A_BUSINESS,
    )


async def test_the_window_survives_a_restart_of_the_policy(relay: Harness) -> None:
    """Windows are flushed to the store; a fresh gate (another node, a restart) sees them."""
    shop = await make_business(relay)
    person = await relay.new_device()
    pconn = await person.connect()
    await send(pconn, shop)
    gate = relay.services.policy
    await gate.flush()
    gate.threads.clear()  # as after a restart: state comes back from the store
    conn = await shop.connect()
    await send(conn, person)
    relay.clock.advance(25 * HOUR)
    gate.threads.clear()
    await refused(conn, person, None, Code.REENGAGEMENT_REQUIRED)


async def test_marking_rules(relay: Harness) -> None:
    shop = await make_business(relay)
    person, friend = await relay.new_device(), await relay.new_device()
    pconn = await person.connect()
    # people never mark envelopes
    with pytest.raises(Exception) as caught:
        await send(pconn, friend, BizMeta())
    assert getattr(caught.value, "code", None) == Code.BAD_REQUEST
    await send(pconn, friend)  # person to person: no window, no consent
    await send(pconn, shop)
    conn = await shop.connect()
    # a malformed mark is refused with the Cloud API's invalid-parameter code
    for biz in (
        BizMeta(kind="service", category="MARKETING"),
        BizMeta(kind="template", category="UTILITY"),
        BizMeta(kind="template", category="SERVICE", template="x", language="en"),
    ):
        await refused(conn, person, biz, Code.INVALID_PARAMETER)


async def test_businesses_do_not_send_to_groups(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    r = await shop.http.post(
        "/v1/groups", json={"name": "Customers", "members": [person.account_id]}
    )
    assert r.status_code == 201, r.text
    group = r.json()["group_id"]
    conn = await shop.connect()
    with pytest.raises(Exception) as caught:
        await conn.send_group(group, b"to everyone", devices=[person.device_id])
    assert getattr(caught.value, "code", None) == Code.BUSINESS_GROUP_SEND


async def test_between_two_businesses_each_message_opens_the_others_window(
    relay: Harness,
) -> None:
    supplier = await make_business(relay, "Supplier")
    shop = await make_business(relay, "Shop")
    sconn, shconn = await supplier.connect(), await shop.connect()
    await refused(shconn, supplier, None, Code.REENGAGEMENT_REQUIRED)
    # the shop's owner opens the supplier's chat from its link: the supplier may write
    r = await shop.http.post(f"/v1/entry/{supplier.account_id}", json={"source": "link"})
    assert r.status_code == 200
    await send(sconn, shop)
    # and that message opened the shop's window towards the supplier
    await send(shconn, supplier)

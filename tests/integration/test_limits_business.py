"""Messaging limits (unique people reached outside the window per moving 24 hours, in tiers),
tier changes by quality and use, and the per-business throughput limit (130429)."""

from __future__ import annotations

from typing import Any

import pytest

from tresen.errors import LimitExceeded
from tresen.protocol.codes import Code

from ..conftest import DeviceHandle, Harness
from ._policy import (
    HOUR,
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
    return {
        "business_credit_limit_minor": 10**9,
        "business_tier_limits": [2, 4],
        "quality_min_sends": 1,
    }


async def _people(relay: Harness, shop: DeviceHandle, n: int) -> list[DeviceHandle]:
    people = []
    for _ in range(n):
        person = await relay.new_device()
        await opt_in(person, shop, "utility")
        people.append(person)
    return people


async def test_limit_counts_unique_people_outside_the_window_per_moving_24h(
    relay: Harness,
) -> None:
    shop = await make_business(relay)
    await approved_template(relay, shop)
    p1, p2, p3, p4 = await _people(relay, shop, 4)
    conn = await shop.connect()
    await send(conn, p1, template())
    await send(conn, p2, template())
    await send(conn, p1, template())  # the same person again does not count twice
    err = await refused(conn, p3, template(), Code.MESSAGING_LIMIT_REACHED)
    assert err.fields["limit"] == 2
    # a person inside their customer-service window is not business-initiated
    p4conn = await p4.connect()
    await send(p4conn, shop)
    await send(conn, p4, template())
    # the 24 hours move: the first two fall out
    relay.clock.advance(24 * HOUR + 1)
    await send(conn, p3, template())
    r = await shop.http.get("/v1/business/account")
    assert (r.json()["tier"], r.json()["messaging_limit"]) == ("TIER_2", 2)


async def test_tier_rises_with_use_and_green_quality(relay: Harness) -> None:
    shop = await make_business(relay)
    await approved_template(relay, shop)
    (p1, p2, p3) = await _people(relay, shop, 3)
    conn = await shop.connect()
    async with await admin_client(relay) as admin:
        standing = (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()
        assert (standing["tier"], standing["quality"]) == ("TIER_2", "GREEN")  # unused
        await send(conn, p1, template())  # half of 2 used
        standing = (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()
        assert standing["tier"] == "TIER_4"
        await send(conn, p2, template())
        await send(conn, p3, template())  # 3 of 4 now allowed
        # at most one step per 6 hours
        assert (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()["tier"] == "TIER_4"
        relay.clock.advance(6 * HOUR)
        standing = (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()
        assert (standing["tier"], standing["messaging_limit"]) == ("TIER_UNLIMITED", None)


async def test_red_quality_lowers_the_tier(relay: Harness) -> None:
    shop = await make_business(relay)
    await approved_template(relay, shop)
    (p1, p2) = await _people(relay, shop, 2)
    conn = await shop.connect()
    async with await admin_client(relay) as admin:
        r = await admin.post(f"/v1/admin/policy/{shop.account_id}", json={"tier": "TIER_4"})
        assert r.status_code == 200, r.text
        await send(conn, p1, template())
        await send(conn, p2, template())
        for person in (p1, p2):
            r = await person.http.post("/v1/blocks", json={"account": shop.account_id})
            assert r.status_code == 201
        standing = (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()
        assert (standing["quality"], standing["blocks"]) == ("RED", 2)
        assert standing["tier"] == "TIER_4"  # the operator's change stands for a day
        relay.clock.advance(24 * HOUR)
        standing = (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()
        assert standing["tier"] == "TIER_2"
        r = await shop.http.get("/v1/business/standing")
        assert r.json()["quality"] == "RED"
        audit = await admin.get("/v1/admin/audit", params={"action": "business.standing"})
        assert audit.json()["items"][0]["target"] == f"business:{shop.account_id}"
        error(
            await admin.post(f"/v1/admin/policy/{shop.account_id}", json={"tier": "TIER_9"}),
            400,
            Code.BAD_REQUEST,
        )
        error(
            await admin.post(
                f"/v1/admin/policy/{shop.account_id}", json={"throughput_per_second": 5000}
            ),
            400,
            Code.BAD_REQUEST,
        )


async def test_throughput_per_business(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    pconn = await person.connect()
    await send(pconn, shop)
    async with await admin_client(relay) as admin:
        r = await admin.post(
            f"/v1/admin/policy/{shop.account_id}", json={"throughput_per_second": 1}
        )
        assert r.status_code == 200, r.text
    r = await shop.http.get("/v1/business/account")
    assert r.json()["throughput_per_second"] == 1
    conn = await shop.connect()
    await send(conn, person)
    with pytest.raises(LimitExceeded) as caught:
        for _ in range(5):  # far more than one a second
            await send(conn, person)
    assert caught.value.code == Code.THROUGHPUT_EXCEEDED
    assert 0 < caught.value.fields["retry_after"] <= 1
    # people are never limited by a business's throughput
    for _ in range(5):
        await send(pconn, shop)


async def test_feedback_counts_once_per_person_the_business_wrote_to(relay: Harness) -> None:
    shop = await make_business(relay)
    await approved_template(relay, shop)
    (customer,) = await _people(relay, shop, 1)
    stranger = await relay.new_device()
    conn = await shop.connect()
    await send(conn, customer, template())
    for reporter in (customer, customer, customer, stranger, stranger):
        r = await reporter.http.post(
            "/v1/reports", json={"account": shop.account_id, "reason": "spam"}
        )
        assert r.status_code == 201, r.text
    r = await stranger.http.post("/v1/blocks", json={"account": shop.account_id})
    assert r.status_code == 201
    async with await admin_client(relay) as admin:
        standing = (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()
    # three reports by one customer are one; a stranger's reports and block are none
    assert (standing["reports"], standing["blocks"], standing["sends"]) == (1, 0, 1)

"""Consent enforced by the relay: opt-in per business and category (with source and time),
writing first, opt-out by the person or the business's STOP keyword at once, and the first
contact notice that lets the person Block / Report / Continue."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tresen.protocol.codes import Code

from ..conftest import Harness
from ._policy import approved_template, error, make_business, opt_in, refused, send, template


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"business_credit_limit_minor": 10**9}  # billing has its own tests


async def test_template_needs_the_persons_opt_in(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    await approved_template(relay, shop, "order_update", "UTILITY")
    await approved_template(relay, shop, "spring_sale", "MARKETING")
    conn = await shop.connect()
    await refused(conn, person, template("order_update"), Code.OPT_IN_REQUIRED)
    before = relay.clock.now_ms()
    records = await opt_in(person, shop, "utility", source="website_form")
    assert [(r["category"], r["opted_in"], r["source"]) for r in records] == [
        ("utility", True, "website_form")
    ]
    assert records[0]["changed_at"] >= before
    await send(conn, person, template("order_update"))
    # utility consent is not marketing consent
    await refused(conn, person, template("spring_sale", "MARKETING"), Code.MARKETING_OPTED_OUT)
    await person.sdk.api.opt_in(shop.account_id, ["marketing"], "link")  # through the SDK
    await send(conn, person, template("spring_sale", "MARKETING"))
    r = await person.http.get("/v1/consents")
    assert sorted((c["category"], c["source"]) for c in r.json()) == [
        ("marketing", "link"),
        ("utility", "website_form"),
    ]


async def test_writing_first_allows_utility_templates_not_marketing(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    await approved_template(relay, shop, "order_update", "UTILITY")
    await approved_template(relay, shop, "spring_sale", "MARKETING")
    pconn = await person.connect()
    await send(pconn, shop)  # the person writes first
    relay.clock.advance(30 * 3600)  # the service window has closed
    conn = await shop.connect()
    await send(conn, person, template("order_update"))
    await refused(conn, person, template("spring_sale", "MARKETING"), Code.MARKETING_OPTED_OUT)


async def test_stop_in_the_app_takes_effect_at_once(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    await approved_template(relay, shop, "spring_sale", "MARKETING")
    await opt_in(person, shop, "marketing", "utility", source="in_chat")
    conn = await shop.connect()
    await send(conn, person, template("spring_sale", "MARKETING"))
    r = await person.http.post(
        f"/v1/consents/{shop.account_id}/stop", json={"categories": ["marketing"]}
    )
    assert r.status_code == 200, r.text
    err = await refused(
        conn, person, template("spring_sale", "MARKETING"), Code.MARKETING_OPTED_OUT
    )
    assert err.fields["opted_out"] is True
    # the history keeps both decisions, who made them and where
    async with relay.client() as _:
        history = await relay.services.consent.access_consent_history(
            shop.account_id, person.account_id
        )
    assert [(e.category, e.opted_in, e.actor) for e in history if e.category == "marketing"] == [
        ("marketing", True, "person"),
        ("marketing", False, "person"),
    ]


async def test_stop_keyword_reported_by_the_business(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    await approved_template(relay, shop, "order_update", "UTILITY")
    await opt_in(person, shop, "utility")
    conn = await shop.connect()
    await send(conn, person, template("order_update"))
    r = await shop.http.post(
        "/v1/business/opt-outs", json={"person": person.account_id, "keyword": "stop"}
    )
    assert r.status_code == 200, r.text
    assert {(c["category"], c["opted_in"], c["source"]) for c in r.json()} == {
        ("marketing", False, "keyword:STOP"),
        ("utility", False, "keyword:STOP"),
    }
    err = await refused(conn, person, template("order_update"), Code.OPT_IN_REQUIRED)
    assert err.fields["opted_out"] is True
    # an opt-out beats having written first
    pconn = await person.connect()
    await send(pconn, shop)
    relay.clock.advance(25 * 3600)
    await refused(conn, person, template("order_update"), Code.OPT_IN_REQUIRED)
    # a person who is not a business cannot report opt-outs
    error(
        await person.http.post("/v1/business/opt-outs", json={"person": shop.account_id}),
        404,
        Code.NOT_A_BUSINESS,
    )


async def test_first_contact_from_a_business_carries_a_notice(relay: Harness) -> None:
    shop = await make_business(relay, "Fresh Flowers")
    person = await relay.new_device()
    await approved_template(relay, shop, "order_update", "UTILITY")
    await opt_in(person, shop, "utility")
    pconn = await person.connect()
    conn = await shop.connect()
    envelope = await send(conn, person, template("order_update"))
    notice = await pconn.recv()
    assert (notice.kind, notice.id, notice.sender) == ("notice", envelope, shop.account_id)
    body = msgspec.json.decode(notice.body)
    assert body["type"] == "business_first_contact"
    assert body["display_name"] == "Fresh Flowers"
    assert body["actions"] == ["block", "report", "continue"]
    message = await pconn.recv()
    assert (message.kind, message.id) == ("message", envelope)
    # only the first contact
    second = await send(conn, person, template("order_update"))
    assert (await pconn.recv()).id == second


async def test_no_notice_when_the_person_wrote_first(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    pconn = await person.connect()
    conn = await shop.connect()
    await send(pconn, shop)
    await conn.recv()
    reply = await send(conn, person)
    item = await pconn.recv()
    assert (item.kind, item.id) == ("message", reply)


async def test_opt_in_validation(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    other = await relay.new_device()
    error(
        await person.http.post(
            f"/v1/consents/{other.account_id}", json={"categories": ["utility"], "source": "qr"}
        ),
        404,
        Code.NOT_A_BUSINESS,
    )
    for body in (
        {"categories": ["utility"], "source": "sms"},
        {"categories": [], "source": "qr"},
        {"categories": ["newsletter"], "source": "qr"},
        {"categories": ["utility"], "source": "qr", "extra": 1},
    ):
        error(
            await person.http.post(f"/v1/consents/{shop.account_id}", json=body),
            400,
            Code.BAD_REQUEST,
        )
    r = await person.http.get("/v1/consents")
    assert r.json() == []


async def test_the_business_sees_scoped_ids_and_can_name_people_by_them(relay: Harness) -> None:
    shop = await make_business(relay)
    person = await relay.new_device()
    await approved_template(relay, shop, "order_update", "UTILITY")
    await opt_in(person, shop, "utility", source="link")
    r = await shop.http.get("/v1/business/consents")
    (record,) = r.json()
    assert record["person"] == person.account_id
    assert record["user_id"].startswith("TR.") and person.phone not in record["user_id"]
    same = await shop.http.get("/v1/business/consents", params={"user_id": record["user_id"]})
    assert same.json() == [record]
    r = await shop.http.post("/v1/business/opt-outs", json={"user_id": record["user_id"]})
    assert r.status_code == 200, r.text
    conn = await shop.connect()
    await refused(conn, person, template("order_update"), Code.OPT_IN_REQUIRED)
    for body in ({}, {"person": person.account_id, "user_id": record["user_id"]}):
        error(await shop.http.post("/v1/business/opt-outs", json=body), 400, Code.BAD_REQUEST)
    error(
        await shop.http.post("/v1/business/opt-outs", json={"user_id": "TR.0"}),
        404,
        Code.UNKNOWN_RECIPIENT,
    )


async def test_the_policy_routes_are_in_the_openapi_document(relay: Harness) -> None:
    async with relay.client() as http:
        r = await http.get("/openapi.json")
    assert r.status_code == 200, r.text
    paths = r.json()["paths"]
    for path in (
        "/v1/consents/{business_id}",
        "/v1/blocks",
        "/v1/reports",
        "/v1/entry/{business_id}",
        "/v1/business/templates",
        "/v1/business/usage",
        "/v1/admin/reports",
        "/v1/admin/rate-card",
        "/v1/admin/policy/{business_id}",
    ):
        assert path in paths, path

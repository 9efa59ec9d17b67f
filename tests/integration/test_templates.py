"""Templates: validated like the Cloud API, reviewed by the operator, checked by the relay on
each business envelope (name + language + category), paused by quality and back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

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
    template_body,
)


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"business_credit_limit_minor": 10**9, "quality_min_sends": 1}


def _body(**changes: Any) -> dict[str, Any]:
    body = template_body()
    body.update(changes)
    return body


def _with_body(text: str, example: Any = None) -> dict[str, Any]:
    component: dict[str, Any] = {"type": "BODY", "text": text}
    if example is not None:
        component["example"] = example
    return _body(components=[component])


BAD_TEMPLATES = [
    _body(name="Order Update"),
    _body(name="order-update"),
    _body(language="english"),
    _body(category="PROMOTION"),
    _body(components=[]),
    _body(components=[{"type": "FOOTER", "text": "only a footer"}]),
    _body(components=[{"type": "BODY", "text": "a"}, {"type": "BODY", "text": "b"}]),
    _body(components=[{"type": "CAROUSEL", "text": "x"}]),
    _with_body("Your order {{1}} and {{3}} are ready", {"body_text": [["a", "b"]]}),
    _with_body("Your order {{1}} is ready"),  # no example
    _with_body("Your order {{1}} is ready", {"body_text": [["a", "b"]]}),
    _with_body("{{1}} is ready for you", {"body_text": [["a"]]}),  # opens the body
    _with_body("Hello {{first_name}}, hi", {"body_text": [["a"]]}),  # named in POSITIONAL
    _with_body("x" * 1025),
    _body(
        components=[
            {"type": "HEADER", "format": "IMAGE"},
            {"type": "BODY", "text": "Hello there"},
        ]
    ),
    _body(
        components=[
            {"type": "BODY", "text": "Hello there"},
            {"type": "FOOTER", "text": "Hi {{1}}"},
        ]
    ),
    _body(
        components=[
            {"type": "BODY", "text": "Hello there"},
            {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "x" * 26}]},
        ]
    ),
    _body(
        components=[
            {"type": "BODY", "text": "Hello there"},
            {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": "COPY_CODE"}]},
        ]
    ),
    _body(
        components=[
            {"type": "BODY", "text": "Hello there"},
            {"type": "BUTTONS", "buttons": [{"type": "URL", "text": "Go", "url": "ftp://x"}]},
        ]
    ),
    _body(category="AUTHENTICATION", components=[{"type": "BODY"}]),
]


@pytest.mark.parametrize("body", BAD_TEMPLATES)
async def test_invalid_templates_are_refused_with_a_stable_code(
    relay: Harness, body: dict[str, Any]
) -> None:
    shop = await make_business(relay)
    r = await shop.http.post("/v1/business/templates", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in (Code.INVALID_TEMPLATE, Code.BAD_REQUEST)
    assert (await shop.http.get("/v1/business/templates")).json() == []


async def test_cloud_api_shapes_are_accepted(relay: Harness) -> None:
    shop = await make_business(relay)
    named = {
        "name": "named_params",
        "language": "pt_BR",
        "category": "MARKETING",
        "parameter_format": "NAMED",
        "components": [
            {
                "type": "header",
                "format": "text",
                "text": "Hi {{first_name}}",
                "example": {
                    "header_text_named_params": [{"param_name": "first_name", "example": "Ana"}]
                },
            },
            {
                "type": "body",
                "text": "Your code {{code}} is valid until {{day}} only.",
                "example": {
                    "body_text_named_params": [
                        {"param_name": "code", "example": "SPRING"},
                        {"param_name": "day", "example": "Friday"},
                    ]
                },
            },
            {
                "type": "buttons",
                "buttons": [
                    {"type": "quick_reply", "text": "Stop promotions"},
                    {
                        "type": "url",
                        "text": "Shop",
                        "url": "https://shop.example/{{1}}",
                        "example": ["https://shop.example/spring"],
                    },
                    {"type": "phone_number", "text": "Call us", "phone_number": "+4930123456"},
                ],
            },
        ],
    }
    r = await shop.http.post("/v1/business/templates", json=named)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "PENDING" and r.json()["category"] == "MARKETING"
    r = await shop.http.get(f"/v1/business/templates/{r.json()['id']}")
    assert [c["type"] for c in r.json()["components"]] == ["HEADER", "BODY", "BUTTONS"]
    r = await shop.http.post("/v1/business/templates", json=template_body("otp", "AUTHENTICATION"))
    assert r.status_code == 201, r.text
    error(await shop.http.post("/v1/business/templates", json=named), 409, Code.TEMPLATE_EXISTS)


async def _ready(relay: Harness) -> tuple[DeviceHandle, DeviceHandle, Any]:
    shop = await make_business(relay)
    person = await relay.new_device()
    await opt_in(person, shop, "utility", "marketing")
    return shop, person, await shop.connect()


async def test_review_lifecycle_is_enforced_on_each_envelope(relay: Harness) -> None:
    shop, person, conn = await _ready(relay)
    r = await shop.http.post("/v1/business/templates", json=template_body("order_update"))
    template_id = int(r.json()["id"])
    await refused(conn, person, template("order_update"), Code.TEMPLATE_NOT_FOUND)  # PENDING
    async with await admin_client(relay) as admin:
        pending = (await admin.get("/v1/admin/templates")).json()
        assert [t["id"] for t in pending] == [template_id]
        error(
            await admin.post(
                f"/v1/admin/templates/{template_id}/review", json={"status": "REJECTED"}
            ),
            400,
            Code.BAD_REQUEST,
        )
        r = await admin.post(
            f"/v1/admin/templates/{template_id}/review",
            json={"status": "REJECTED", "reason": "the footer promises what the body does not"},
        )
        assert r.json()["status"] == "REJECTED"
        await refused(conn, person, template("order_update"), Code.TEMPLATE_NOT_FOUND)
        # an edit goes back to review, then the operator approves
        r = await shop.http.post(
            f"/v1/business/templates/{template_id}",
            json={"components": template_body()["components"][:1]},
        )
        assert r.json()["status"] == "PENDING", r.text
        r = await admin.post(
            f"/v1/admin/templates/{template_id}/review", json={"status": "APPROVED"}
        )
        assert r.json()["status"] == "APPROVED"
        error(
            await admin.post(
                f"/v1/admin/templates/{template_id}/review", json={"status": "APPROVED"}
            ),
            409,
            Code.ALREADY_REVIEWED,
        )
        await send(conn, person, template("order_update"))
        # name + language + category must all match the approved template
        await refused(
            conn, person, template("order_update", language="de"), Code.TEMPLATE_NOT_FOUND
        )
        await refused(conn, person, template("nothing_here"), Code.TEMPLATE_NOT_FOUND)
        await refused(conn, person, template("order_update", "MARKETING"), Code.INVALID_PARAMETER)
        r = await admin.post(f"/v1/admin/templates/{template_id}/disable", json={"reason": "abuse"})
        assert r.json()["status"] == "DISABLED"
        await refused(conn, person, template("order_update"), Code.TEMPLATE_DISABLED)
        r = await admin.post(f"/v1/admin/templates/{template_id}/reinstate", json={})
        assert r.json()["status"] == "APPROVED"
        await send(conn, person, template("order_update"))
        audit = await admin.get("/v1/admin/audit", params={"target": f"template:{template_id}"})
        assert [e["action"] for e in audit.json()["items"]] == [
            "template.reinstate",
            "template.disable",
            "template.approve",
            "template.reject",
        ]
    r = await shop.http.delete(f"/v1/business/templates/{template_id}")
    assert r.status_code == 204, r.text
    await refused(conn, person, template("order_update"), Code.TEMPLATE_NOT_FOUND)
    # a deleted name can be created again
    r = await shop.http.post("/v1/business/templates", json=template_body("order_update"))
    assert r.status_code == 201, r.text


async def test_other_businesses_templates_do_not_count(relay: Harness) -> None:
    shop, person, conn = await _ready(relay)
    other = await make_business(relay, "Other Shop")
    await approved_template(relay, other, "order_update")
    await refused(conn, person, template("order_update"), Code.TEMPLATE_NOT_FOUND)
    r = await shop.http.get(f"/v1/business/templates/{1}")
    assert r.status_code == 404


async def test_low_quality_pauses_a_template_then_it_comes_back(relay: Harness) -> None:
    shop = await make_business(relay)
    await approved_template(relay, shop, "promo", "MARKETING")
    await approved_template(relay, shop, "receipt", "UTILITY")
    conn = await shop.connect()
    people = [await relay.new_device() for _ in range(3)]
    for person in people:
        await opt_in(person, shop, "marketing", "utility")
        await send(conn, person, template("promo", "MARKETING"))
    # two of three report the promotion
    for person in people[:2]:
        r = await person.http.post(
            "/v1/reports", json={"account": shop.account_id, "reason": "spam"}
        )
        assert r.status_code == 201, r.text
    async with await admin_client(relay) as admin:
        standing = (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()
        assert standing["quality"] == "RED"
        assert standing["reports"] == 2
        assert standing["paused_templates"] == ["promo:en_US:PAUSED"]
        err = await refused(conn, people[2], template("promo", "MARKETING"), Code.TEMPLATE_PAUSED)
        assert err.fields["paused_until"] > relay.clock.now_ms()
        # the other template was not the problem
        await send(conn, people[2], template("receipt", "UTILITY"))
        relay.clock.advance(3 * HOUR + 1)
        r = await admin.post("/v1/admin/policy/sweep")
        assert r.status_code == 200, r.text
        await send(conn, people[2], template("promo", "MARKETING"))
        listed = (await shop.http.get("/v1/business/templates", params={"name": "promo"})).json()
        assert listed[0]["status"] == "APPROVED"
        # only feedback since it came back counts: none yet, so it stays
        standing = (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()
        assert standing["paused_templates"] == []
        # new complaints pause it again (6 h), and a third time disables it
        for person, status in ((people[2], "PAUSED"), (people[0], "DISABLED")):
            await send(conn, person, template("promo", "MARKETING"))
            r = await person.http.post(
                "/v1/reports", json={"account": shop.account_id, "reason": "spam"}
            )
            standing = (await admin.get(f"/v1/admin/policy/{shop.account_id}")).json()
            assert standing["paused_templates"] == [f"promo:en_US:{status}"]
            relay.clock.advance(6 * HOUR + 1)
            await admin.post("/v1/admin/policy/sweep")
        await refused(conn, people[1], template("promo", "MARKETING"), Code.TEMPLATE_DISABLED)


async def test_only_businesses_have_templates(relay: Harness) -> None:
    person = await relay.new_device()
    error(
        await person.http.post("/v1/business/templates", json=template_body()),
        404,
        Code.NOT_A_BUSINESS,
    )
    body = copy.deepcopy(template_body())
    body["unknown"] = True
    shop = await make_business(relay)
    error(await shop.http.post("/v1/business/templates", json=body), 400, Code.BAD_REQUEST)


async def test_a_business_has_at_most_250_templates(relay: Harness) -> None:
    from tresen.relay.templates.service import MAX_TEMPLATES

    shop = await make_business(relay)
    for n in range(MAX_TEMPLATES):
        r = await shop.http.post("/v1/business/templates", json=template_body(f"t{n}"))
        assert r.status_code == 201, r.text
    r = await shop.http.post("/v1/business/templates", json=template_body("one_more"))
    assert error(r, 409, Code.TEMPLATE_LIMIT)["fields"]["limit"] == MAX_TEMPLATES
    r = await shop.http.delete("/v1/business/templates", params={"name": "t0"})
    assert r.json() == {"deleted": 1}
    r = await shop.http.post("/v1/business/templates", json=template_body("one_more"))
    assert r.status_code == 201, r.text


async def test_the_business_is_told_of_status_and_quality_changes(relay: Harness) -> None:
    """What its gateway turns into message_template_status_update and
    phone_number_quality_update webhooks."""
    import msgspec

    shop = await make_business(relay)
    conn = await shop.connect()
    template_id = await approved_template(relay, shop, "promo", "MARKETING")
    notice = await conn.recv()
    body = msgspec.json.decode(notice.body)
    assert notice.kind == "notice"
    assert (body["type"], body["template"], body["status"]) == (
        "template_status",
        template_id,
        "APPROVED",
    )
    person = await relay.new_device()
    await opt_in(person, shop, "marketing")
    await send(conn, person, template("promo", "MARKETING"))
    r = await person.http.post("/v1/reports", json={"account": shop.account_id, "reason": "spam"})
    assert r.status_code == 201
    async with await admin_client(relay) as admin:
        await admin.get(f"/v1/admin/policy/{shop.account_id}")
    kinds = {}
    while len(kinds) < 2:
        item = await conn.recv()
        if item.kind == "notice":
            decoded = msgspec.json.decode(item.body)
            kinds[decoded["type"]] = decoded
    assert kinds["quality_update"]["quality"] == "RED"
    assert kinds["quality_update"]["paused_templates"] == ["promo:en_US:PAUSED"]
    assert (kinds["template_status"]["status"], kinds["template_status"]["name"]) == (
        "PAUSED",
        "promo",
    )
    assert kinds["template_status"]["paused_until"] > relay.clock.now_ms()

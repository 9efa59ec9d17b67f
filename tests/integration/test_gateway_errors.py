"""Cloud API errors from the gateway: the Graph envelope, codes and HTTP statuses, relay policy
codes mapped (131047, 131026 as a failed status), template checks (132000/132001/132012), and
parameters from JSON, form or query under any version prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Harness
from tests.integration.gateway_harness import (
    Business,
    Receiver,
    Uvicorn,
    next_message,
    person,
    start_gateway,
)
from tresen.gateway.watch import do_poll
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.templates.models import TemplateReview

TEXT = {"messaging_product": "whatsapp", "type": "text", "text": {"body": "hi"}}


@pytest.fixture
async def biz(relay: Harness, db_url: str, tmp_path: Path) -> AsyncIterator[Business]:
    async for business in start_gateway(relay, db_url, tmp_path):
        yield business


@pytest.fixture
async def hook(biz: Business) -> AsyncIterator[Receiver]:
    receiver = Receiver(biz.boot.app_secret, biz.boot.verify_token)
    server = Uvicorn(receiver.app())
    await server.start()
    r = await biz.http.post(
        f"/v22.0/{biz.boot.waba_id}/subscribed_apps",
        json={"override_callback_uri": f"{server.url}/hook", "verify_token": biz.boot.verify_token},
    )
    assert r.status_code == 200
    try:
        yield receiver
    finally:
        await server.stop()


def graph_error(r: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code, error
    assert error["type"] == "OAuthException" and error["fbtrace_id"]
    assert error["message"].startswith(f"(#{code})")
    assert error["error_data"]["messaging_product"] == "whatsapp"
    return error


async def writer(biz: Business, hook: Receiver, relay: Harness, tmp: Path) -> tuple[Any, str]:
    """A person who wrote first (the window is open); returns the device and the scoped id."""
    device = await person(relay, tmp)
    await device.send(biz.boot.relay_account_id, "hello")
    value = await hook.next("messages")
    return device, value["contacts"][0]["user_id"]


async def test_tokens_and_nodes(biz: Business) -> None:
    number = biz.boot.phone_number_id
    async with httpx.AsyncClient(base_url=biz.url) as anon:
        graph_error(await anon.post(f"/v22.0/{number}/messages", json=TEXT), 401, 190)
        r = await anon.post(
            f"/v22.0/{number}/messages", json=TEXT, headers={"Authorization": "Bearer nope"}
        )
        graph_error(r, 401, 190)
    error = graph_error(await biz.http.post("/v22.0/123456/messages", json=TEXT), 400, 100)
    assert error["error_subcode"] == 33
    graph_error(await biz.http.get("/v22.0/999999999"), 400, 100)
    r = await biz.http.get(f"/v22.0/{biz.boot.waba_id}/message_templates")
    assert r.status_code == 200 and r.json()["data"] == []


async def test_validation(biz: Business) -> None:
    def body(**changes: Any) -> dict[str, Any]:
        return {**TEXT, "to": "TR.00000000000000000001", **changes}

    error = graph_error(await biz.send(body(text={})), 400, 131009)
    assert "text" in error["error_data"]["details"]
    error = graph_error(await biz.send(body(text={"body": "x" * 4097})), 400, 131009)
    graph_error(await biz.send(body(type="hologram")), 400, 131051)
    graph_error(await biz.send(body(colour="red")), 400, 131009)
    graph_error(await biz.send({"type": "text", "to": "1", "text": {"body": "x"}}), 400, 131008)
    graph_error(await biz.send(body(messaging_product="sms")), 400, 100)
    r = await biz.send(body(type="image", image={"id": "1", "link": "https://x.test/a.png"}))
    graph_error(r, 400, 131009)
    r = await biz.send(
        body(
            type="interactive",
            interactive={
                "type": "button",
                "body": {"text": "?"},
                "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "A"}}] * 2},
            },
        )
    )
    graph_error(r, 400, 131009)  # duplicate ids
    r = await biz.http.post(
        f"/{biz.boot.phone_number_id}/messages",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    graph_error(r, 400, 100)
    # an unknown person
    graph_error(await biz.send(body(to="+49 151 99999999")), 400, 131026)


async def test_window_and_async_failures(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    stranger = await person(relay, tmp_path, "Bob")
    try:
        scoped = (await biz.server.gateway.person(line(biz), stranger.account_id)).scoped_id
        error = graph_error(await biz.send({**TEXT, "to": scoped}), 400, 131047)
        assert error["error_data"]["details"]
    finally:
        await stranger.close()
    sheena, to = await writer(biz, hook, relay, tmp_path)
    try:
        # she blocks the business: the send is accepted and fails asynchronously (131026)
        r = await sheena.device.api.request(
            "POST", "/v1/blocks", json={"account": biz.boot.relay_account_id}
        )
        r = await biz.send({**TEXT, "to": to, "biz_opaque_callback_data": "order-7"})
        assert r.status_code == 200, r.text
        status = (await hook.next("statuses"))["statuses"][0]
        assert status["status"] == "failed" and status["errors"][0]["code"] == 131026
        assert status["biz_opaque_callback_data"] == "order-7"
        assert status["id"] == r.json()["messages"][0]["id"]
    finally:
        await sheena.close()


async def test_templates_checked_and_rendered(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    waba = biz.boot.waba_id
    r = await biz.http.post(
        f"/v22.0/{waba}/message_templates",
        json={
            "name": "ready",
            "language": "en_US",
            "category": "UTILITY",
            "parameter_format": "NAMED",
            "components": [
                {
                    "type": "BODY",
                    "text": "Hi {{first_name}}, order {{order}} is ready.",
                    "example": {
                        "body_text_named_params": [
                            {"param_name": "first_name", "example": "Ann"},
                            {"param_name": "order", "example": "A-1"},
                        ]
                    },
                }
            ],
        },
    )
    assert r.status_code == 200, r.text
    template_id = r.json()["id"]
    assert r.json()["status"] == "PENDING"
    sheena, to = await writer(biz, hook, relay, tmp_path)
    try:

        def send(params: list[dict[str, Any]], name: str = "ready") -> Any:
            return biz.send(
                {
                    "messaging_product": "whatsapp",
                    "to": to,
                    "type": "template",
                    "template": {
                        "name": name,
                        "language": {"code": "en_US"},
                        "components": [{"type": "body", "parameters": params}],
                    },
                }
            )

        good = [
            {"type": "text", "parameter_name": "first_name", "text": "Sheena"},
            {"type": "text", "parameter_name": "order", "text": "B-2"},
        ]
        graph_error(await send(good), 400, 132001)  # still PENDING
        assert await do_poll(biz.server.gateway, line(biz)) == 0  # PENDING: only recorded
        admin = AdminPrincipal(admin_id=None, name="gateway-test")
        await relay.services.templates.do_review(
            admin, int(template_id), TemplateReview(status="APPROVED")
        )
        # the relay's notice to the number's device reports the review at once, no poll
        update = await hook.next("message_template_id")
        assert update["event"] == "APPROVED" and update["message_template_name"] == "ready"
        assert update["message_template_id"] == int(template_id)
        assert await do_poll(biz.server.gateway, line(biz)) == 0  # nothing new
        r = await biz.http.get(f"/v22.0/{template_id}")
        assert r.status_code == 200 and r.json()["status"] == "APPROVED"
        line(biz).templates.clear()
        graph_error(await send(good, name="nope"), 400, 132001)
        graph_error(await send(good[:1]), 400, 132000)
        wrong = [good[0], {**good[1], "parameter_name": "orders"}]
        graph_error(await send(wrong), 400, 132012)
        r = await send(good)
        assert r.status_code == 200, r.text
        assert r.json()["messages"][0]["message_status"] == "accepted"
        got = await next_message(sheena)
        assert got.content["body"] == "Hi Sheena, order B-2 is ready."
        status = await status_of(hook, r.json()["messages"][0]["id"], "sent")
        # a utility template inside her open 24-hour window is free (the relay's rule)
        assert status["pricing"] == {
            "billable": False,
            "pricing_model": "PMP",
            "category": "utility",
            "type": "free_customer_service",
        }
        # someone who opted in but never wrote: the template is billed (so it needs money)
        await relay.services.billing.do_top_up(
            admin, biz.boot.relay_account_id, 10_000, "gateway test"
        )
        bob = await person(relay, tmp_path, "Bob")
        try:
            await bob.device.api.request(
                "POST",
                f"/v1/consents/{biz.boot.relay_account_id}",
                json={"categories": ["utility"], "source": "website_form"},
            )
            bob_id = (await biz.server.gateway.person(line(biz), bob.account_id)).scoped_id
            r = await biz.send(
                {
                    "messaging_product": "whatsapp",
                    "to": bob_id,
                    "type": "template",
                    "template": {
                        "name": "ready",
                        "language": {"code": "en_US"},
                        "components": [{"type": "body", "parameters": good}],
                    },
                }
            )
            assert r.status_code == 200, r.text
            assert (await next_message(bob)).content["body"] == "Hi Sheena, order B-2 is ready."
            status = await status_of(hook, r.json()["messages"][0]["id"], "sent")
            assert status["recipient_user_id"] == bob_id
            assert status["pricing"] == {
                "billable": True,
                "pricing_model": "PMP",
                "category": "utility",
                "type": "regular",
            }
        finally:
            await bob.close()
        r = await biz.http.get(f"/v22.0/{waba}/message_templates", params={"status": "APPROVED"})
        assert [t["name"] for t in r.json()["data"]] == ["ready"]
        r = await biz.http.delete(f"/v22.0/{waba}/message_templates", params={"name": "ready"})
        assert r.status_code == 200 and r.json() == {"success": True}
        graph_error(await send(good), 400, 132001)
    finally:
        await sheena.close()


async def test_form_query_and_versions(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    sheena, to = await writer(biz, hook, relay, tmp_path)
    number = biz.boot.phone_number_id
    try:
        r = await biz.http.post(
            f"/v17.0/{number}/messages",
            data={"messaging_product": "whatsapp", "to": to, "text": '{"body": "by form"}'},
        )
        assert r.status_code == 200, r.text
        assert (await next_message(sheena)).content["body"] == "by form"
        r = await biz.http.post(
            f"/{number}/messages",
            params={"messaging_product": "whatsapp", "to": to, "type": "text"},
            json={"text": {"body": "query and json"}},
        )
        assert r.status_code == 200, r.text
        assert (await next_message(sheena)).content["body"] == "query and json"
        r = await biz.http.post(
            f"/v26.0/{number}/messages",
            json={"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.x"},
        )
        graph_error(r, 400, 100)
    finally:
        await sheena.close()


async def test_block_users(biz: Business, hook: Receiver, relay: Harness, tmp_path: Path) -> None:
    sheena, to = await writer(biz, hook, relay, tmp_path)
    number = biz.boot.phone_number_id
    try:
        body = {"messaging_product": "whatsapp", "block_users": [{"user": to}, {"user": "+1"}]}
        r = await biz.http.post(f"/{number}/block_users", json=body)
        assert r.status_code == 200, r.text
        result = r.json()["block_users"]
        assert [u["user_id"] for u in result["added_users"]] == [to]
        assert result["failed_users"][0]["input"] == "+1"
        r = await biz.http.get(f"/{number}/block_users")
        assert [u["user_id"] for u in r.json()["data"]] == [to]
        r = await biz.http.request("DELETE", f"/{number}/block_users", json=body)
        assert [u["user_id"] for u in r.json()["block_users"]["removed_users"]] == [to]
        r = await biz.http.get(f"/{number}/block_users")
        assert r.json()["data"] == []
    finally:
        await sheena.close()


async def status_of(hook: Receiver, wamid: str, state: str) -> dict[str, Any]:
    while True:
        status: dict[str, Any] = (await hook.next("statuses"))["statuses"][0]
        if status["id"] == wamid and status["status"] == state:
            return status


def line(biz: Business) -> Any:
    return biz.server.gateway.lines[biz.boot.phone_number_id]


async def test_template_paging_edit_and_delete(biz: Business) -> None:
    waba = biz.boot.waba_id
    ids = []
    for name in ("alpha", "beta", "gamma"):
        r = await biz.http.post(
            f"/v22.0/{waba}/message_templates",
            json={
                "name": name,
                "language": "en",
                "category": "marketing",
                "components": [{"type": "body", "text": f"Offer {name}"}],
            },
        )
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    graph_error(
        await biz.http.post(f"/v22.0/{waba}/message_templates", json={"name": "x"}), 400, 131008
    )
    r = await biz.http.get(f"/v22.0/{waba}/message_templates", params={"limit": 2})
    page = r.json()
    assert [t["name"] for t in page["data"]] == ["alpha", "beta"] and "next" in page["paging"]
    after = page["paging"]["cursors"]["after"]
    r = await biz.http.get(f"/v22.0/{waba}/message_templates", params={"limit": 2, "after": after})
    assert [t["name"] for t in r.json()["data"]] == ["gamma"]
    r = await biz.http.get(f"/v22.0/{waba}/message_templates", params={"name": "beta"})
    assert [t["id"] for t in r.json()["data"]] == [ids[1]]
    graph_error(
        await biz.http.get(f"/v22.0/{waba}/message_templates", params={"status": "NOPE"}), 400, 100
    )
    r = await biz.http.post(f"/v22.0/{ids[0]}", json={"category": "UTILITY"})
    assert r.status_code == 200 and r.json() == {"success": True}
    r = await biz.http.get(f"/v22.0/{ids[0]}")
    assert r.json()["category"] == "UTILITY" and r.json()["status"] == "PENDING"
    r = await biz.http.delete(
        f"/v22.0/{waba}/message_templates", params={"name": "alpha", "hsm_id": ids[1]}
    )
    graph_error(r, 400, 100)  # the id is not named alpha
    r = await biz.http.delete(f"/v22.0/{ids[2]}")
    assert r.json() == {"success": True}
    r = await biz.http.get(f"/v22.0/{waba}/message_templates")
    assert [t["name"] for t in r.json()["data"]] == ["alpha", "beta"]


async def test_media_headers_in_interactive_and_template(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    png = bytes.fromhex("89504e470d0a1a0a") + b"\x05" * 64
    number, waba = biz.boot.phone_number_id, biz.boot.waba_id
    r = await biz.http.post(
        f"/{number}/media", files={"file": ("h.png", png, "image/png")}, data={"type": "image/png"}
    )
    media = r.json()["id"]
    r = await biz.http.post(
        f"/v22.0/{waba}/message_templates",
        json={
            "name": "boarding",
            "language": "en",
            "category": "UTILITY",
            "components": [
                {"type": "HEADER", "format": "IMAGE", "example": {"header_handle": ["h"]}},
                {"type": "BODY", "text": "Your pass for {{1}}.", "example": {"body_text": [["X"]]}},
            ],
        },
    )
    assert r.status_code == 200, r.text
    await relay.services.templates.do_review(
        AdminPrincipal(admin_id=None, name="t"),
        int(r.json()["id"]),
        TemplateReview(status="APPROVED"),
    )
    sheena, to = await writer(biz, hook, relay, tmp_path)
    try:
        r = await biz.send(
            {
                "messaging_product": "whatsapp",
                "to": to,
                "type": "interactive",
                "interactive": {
                    "type": "button",
                    "header": {"type": "image", "image": {"id": media}},
                    "body": {"text": "Your pass"},
                    "action": {
                        "buttons": [{"type": "reply", "reply": {"id": "ok", "title": "OK"}}]
                    },
                },
            }
        )
        assert r.status_code == 200, r.text
        got = await next_message(sheena)
        assert await sheena.fetch_attachment(got) == png
        template = {
            "name": "boarding",
            "language": {"code": "en"},
            "components": [
                {"type": "header", "parameters": [{"type": "image", "image": {"id": media}}]},
                {"type": "body", "parameters": [{"type": "text", "text": "LY001"}]},
            ],
        }
        r = await biz.send(
            {"messaging_product": "whatsapp", "to": to, "type": "template", "template": template}
        )
        assert r.status_code == 200, r.text
        got = await next_message(sheena)
        assert got.content["body"] == "Your pass for LY001."
        assert await sheena.fetch_attachment(got) == png
        # a text parameter where the header wants an image
        template["components"][0]["parameters"] = [{"type": "text", "text": "no"}]
        r = await biz.send(
            {"messaging_product": "whatsapp", "to": to, "type": "template", "template": template}
        )
        graph_error(r, 400, 132012)
    finally:
        await sheena.close()


async def test_a_message_that_expires_undelivered_is_reported_failed(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    sheena, to = await writer(biz, hook, relay, tmp_path)
    await sheena.close()  # her phone stays off
    r = await biz.send({"messaging_product": "whatsapp", "to": to, "text": {"body": "gate 12"}})
    assert r.status_code == 200, r.text
    wamid = r.json()["messages"][0]["id"]
    await status_of(hook, wamid, "sent")
    relay.clock.advance(relay.services.settings.envelope_ttl_seconds + 1)
    assert await relay.services.envelopes.do_purge_expired() >= 1  # with receipts to her
    failed = await status_of(hook, wamid, "failed")
    assert failed["errors"][0]["code"] == 131026
    assert failed["recipient_user_id"] == to


async def test_pricing_in_statuses_is_the_relays(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    """She came through the business's QR code: the relay's billing makes everything free for
    72 hours (free_entry_point), which only the relay knows; the status says so."""
    sheena = await person(relay, tmp_path)
    try:
        await sheena.device.api.request(
            "POST", f"/v1/entry/{biz.boot.relay_account_id}", json={"source": "qr"}
        )
        await sheena.send(biz.boot.relay_account_id, "hello from the poster")
        to = (await hook.next("messages"))["contacts"][0]["user_id"]
        r = await biz.send({"messaging_product": "whatsapp", "to": to, "text": {"body": "hi"}})
        assert r.status_code == 200, r.text
        status = await status_of(hook, r.json()["messages"][0]["id"], "sent")
        assert status["pricing"] == {
            "billable": False,
            "pricing_model": "PMP",
            "category": "service",
            "type": "free_entry_point",
        }
    finally:
        await sheena.close()

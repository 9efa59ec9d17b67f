"""Helpers for the business-policy tests (consent, blocks, window, templates, limits, billing)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tresen.client import Connection
from tresen.errors import TresenError
from tresen.protocol.codes import Code
from tresen.protocol.frames import BizMeta, Item
from tresen.relay.admin.models import AdminPrincipal

from ..conftest import DeviceHandle, Harness

CONSOLE = AdminPrincipal(admin_id=None, name="policy-tests")
SERVICE = BizMeta()
HOUR = 3600.0


def template(
    name: str = "order_update", category: str = "UTILITY", language: str = "en_US"
) -> BizMeta:
    return BizMeta(kind="template", category=category, template=name, language=language)  # type: ignore[arg-type]


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


async def make_business(relay: Harness, name: str = "Corner Shop") -> DeviceHandle:
    owner = await relay.new_device()
    r = await owner.http.post("/v1/business", json={"display_name": name})
    assert r.status_code == 201, r.text
    # any business call of the policy makes every gate know the account at once
    r = await owner.http.get("/v1/business/account")
    assert r.status_code == 200, r.text
    assert owner.account_id in relay.services.policy.businesses
    return owner


async def admin_client(relay: Harness) -> httpx.AsyncClient:
    created = await relay.services.admins.do_create_token(CONSOLE, "ops")
    return relay.client(created.token)


def template_body(
    name: str = "order_update", category: str = "UTILITY", language: str = "en_US"
) -> dict[str, Any]:
    if category == "AUTHENTICATION":
        return {
            "name": name,
            "language": language,
            "category": category,
            "components": [
                {"type": "BODY", "add_security_recommendation": True},
                {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": "COPY_CODE"}]},
            ],
        }
    return {
        "name": name,
        "language": language,
        "category": category,
        "components": [
            {
                "type": "BODY",
                "text": "Hello, your order {{1}} is ready for pickup today.",
                "example": {"body_text": [["A-1042"]]},
            },
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
        ],
    }


async def approved_template(
    relay: Harness,
    business: DeviceHandle,
    name: str = "order_update",
    category: str = "UTILITY",
    language: str = "en_US",
) -> int:
    r = await business.http.post(
        "/v1/business/templates", json=template_body(name, category, language)
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "PENDING"
    template_id = int(r.json()["id"])
    async with await admin_client(relay) as admin:
        r = await admin.post(
            f"/v1/admin/templates/{template_id}/review", json={"status": "APPROVED"}
        )
        assert r.status_code == 200, r.text
    return template_id


async def send(
    conn: Connection, to: DeviceHandle, biz: BizMeta | None = None, *, id: str | None = None
) -> str:
    return await conn.send(to.account_id, {to.device_id: b"ciphertext"}, biz=biz, id=id)


async def refused(
    conn: Connection, to: DeviceHandle, biz: BizMeta | None, code: str
) -> TresenError:
    with pytest.raises(TresenError) as caught:
        await send(conn, to, biz)
    assert caught.value.code == code, caught.value
    return caught.value


async def opt_in(
    person: DeviceHandle, business: DeviceHandle, *categories: str, source: str = "qr"
) -> list[dict[str, Any]]:
    r = await person.http.post(
        f"/v1/consents/{business.account_id}",
        json={"categories": list(categories or ("utility",)), "source": source},
    )
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()
    return result


async def messages(conn: Connection, n: int) -> list[Item]:
    """The next ``n`` items that are messages (notices are skipped)."""
    out: list[Item] = []
    while len(out) < n:
        item = await conn.recv()
        if item.kind == "message":
            out.append(item)
    return out


__all__ = ["HOUR", "SERVICE", "Code"]

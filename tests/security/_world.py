"""A populated relay for the isolation tests: owners with private data, and wrong principals.

``alice`` (a person) owns a group, media, contacts, blocks, a consent and a report; ``shop`` (a
business) owns templates, a catalog, quick replies, labels, settings, a verification request and
a billing balance. ``bob``, ``rival`` and friends are the wrong principals that try to reach
them. :meth:`World.snapshot` reads everything the owners own, through the owners' own tokens and
an admin token, so a test can check that nothing changed. :data:`World.markers` are strings that
appear only in the owners' private data: no answer to a wrong principal may contain one.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import DeviceHandle, Harness, fresh_phone
from tests.integration.gateway_harness import Business, Receiver, Uvicorn, start_gateway
from tresen.gateway import store as gw_store
from tresen.gateway.app import GatewayServer
from tresen.gateway.bootstrap import create_number
from tresen.gateway.models import Bootstrap
from tresen.gateway.service import token_hash
from tresen.relay.admin.models import AdminPrincipal

CONSOLE = AdminPrincipal(admin_id=None, name="isolation-tests")
#: fields that change by being read or by the clock, not by anyone's action
VOLATILE = frozenset({"last_seen", "last_used_at", "online", "server_time", "generated_at"})


def tag(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(5)}"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json() if response.content else None


def scrub(value: Any) -> Any:
    """``value`` without the :data:`VOLATILE` fields, for comparing snapshots."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


@dataclass
class World:
    relay: Harness
    alice: DeviceHandle
    alice2: DeviceHandle
    bob: DeviceHandle
    carol: DeviceHandle
    dave: DeviceHandle
    shop: DeviceHandle
    rival: DeviceHandle
    #: tokens of signed-out devices (alice's and shop's) and of a revoked admin token
    revoked: str
    shop_revoked: str
    admin: httpx.AsyncClient
    admin_revoked: str
    #: a client without a token, for calls that set their own Authorization header
    anonymous: httpx.AsyncClient
    #: path parameters by name: the owners' resources
    ids: dict[str, Any] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)

    async def aclose(self) -> None:
        await self.admin.aclose()
        await self.anonymous.aclose()

    async def snapshot(self) -> dict[str, Any]:
        """Everything the owners own, read by the owners themselves (and the operator)."""
        i = self.ids
        reads: dict[str, tuple[httpx.AsyncClient, str]] = {}
        for path in (
            "/v1/me",
            "/v1/devices",
            "/v1/contacts",
            "/v1/keys/count",
            "/v1/groups",
            f"/v1/groups/{i['group_id']}",
            f"/v1/media/{i['media_id']}/info",
            f"/v1/media/{i['media_id']}/grants",
            f"/v1/media/{i['partial_media']}/info",
            "/v1/blocks",
            "/v1/consents",
        ):
            reads[f"alice {path}"] = (self.alice.http, path)
        for path in (
            "/v1/me",
            "/v1/devices",
            "/v1/business",
            "/v1/business/verification",
            "/v1/business/templates",
            f"/v1/business/templates/{i['template_id']}",
            "/v1/business/quick-replies",
            "/v1/business/labels",
            f"/v1/business/labels/{i['label_id']}/chats",
            f"/v1/business/chats/{self.alice.account_id}/labels",
            f"/v1/business/{self.shop.account_id}/products",
            f"/v1/business/{self.shop.account_id}/products/{i['product_id']}",
            "/v1/business/account",
            "/v1/business/standing",
            "/v1/business/consents",
            f"/v1/business/people/{self.alice.account_id}",
            "/v1/blocks",
        ):
            reads[f"shop {path}"] = (self.shop.http, path)
        for path in (
            "/v1/admin/tokens",
            "/v1/admin/audit",
            f"/v1/admin/reports/{i['report_id']}",
            f"/v1/admin/billing/{self.shop.account_id}",
            f"/v1/admin/businesses/{self.shop.account_id}",
            f"/v1/admin/templates/{i['template_id']}",
            f"/v1/admin/consents/{self.shop.account_id}/{self.alice.account_id}",
            "/v1/admin/rate-card",
        ):
            reads[f"admin {path}"] = (self.admin, path)
        out: dict[str, Any] = {}
        for name, (http, path) in reads.items():
            r = await http.get(path)
            assert r.status_code == 200, f"{name}: {r.text}"
            is_json = r.headers.get("content-type", "").startswith("application/json")
            out[name] = scrub(r.json()) if is_json else r.text
        r = await self.alice.http.get(f"/v1/media/{i['media_id']}")
        assert r.status_code == 200, r.text
        out["alice media bytes"] = r.content
        for who in (self.alice, self.alice2, self.shop):
            queue = await self.relay.fetch_queue(who.device_id)
            out[f"queue {who.device_id}"] = [(q.seq, q.kind, q.id, q.sender) for q in queue]
        return out


async def build_world(relay: Harness) -> World:
    alice = await relay.new_device(name="alice phone")
    alice2 = await relay.link_device(alice, name="alice laptop")
    gone = await relay.link_device(alice, name="alice old")
    ok(await alice.http.delete(f"/v1/devices/{gone.device_id}"), 204)
    bob = await relay.new_device(name="bob")
    carol = await relay.new_device(name="carol")
    dave = await relay.new_device(name="dave")
    shop = await relay.new_device(name="shop")
    rival = await relay.new_device(name="rival")
    markers: list[str] = []

    def secret(prefix: str) -> str:
        value = tag(prefix)
        markers.append(value)
        return value

    # ---- alice: profile, contacts, group, media, blocks, report
    username = tag("alice_")
    ok(await alice.http.patch("/v1/me", json={"username": username}))
    ok(await alice.http.patch("/v1/me", json={"presence_privacy": "contacts"}))
    ok(await alice.http.put("/v1/contacts", json={"accounts": [carol.account_id]}))
    group = ok(
        await alice.http.post(
            "/v1/groups",
            json={
                "name": secret("group-"),
                "description": secret("desc-"),
                "members": [carol.account_id, dave.account_id],
            },
        ),
        201,
    )
    group_id = group["group_id"]
    invite = ok(await alice.http.post(f"/v1/groups/{group_id}/invite"))
    recipients = [{"account_id": carol.account_id, "device_id": carol.device_id}]
    media = ok(
        await alice.http.post(
            "/v1/media", json={"kind": "image", "size": 64, "recipients": recipients}
        ),
        201,
    )
    done = await alice.http.patch(
        f"/v1/media/{media['media_id']}", content=b"\x01" * 64, headers={"Upload-Offset": "0"}
    )
    assert ok(done)["complete"]
    partial = ok(await alice.http.post("/v1/media", json={"kind": "document", "size": 100}), 201)
    ok(
        await alice.http.patch(
            f"/v1/media/{partial['media_id']}", content=b"\x02" * 10, headers={"Upload-Offset": "0"}
        )
    )
    ok(await alice.http.post("/v1/blocks", json={"account": dave.account_id}), 201)

    # ---- the businesses
    for owner, name in ((shop, "Corner Shop"), (rival, "Rival Store")):
        ok(await owner.http.post("/v1/business", json={"display_name": name}), 201)
        ok(await owner.http.get("/v1/business/account"))  # every policy gate knows it now
    shop_gone = await relay.link_device(shop, name="shop old")
    ok(await shop.http.delete(f"/v1/devices/{shop_gone.device_id}"), 204)
    slug = ok(await shop.http.get("/v1/business"))["slug"]
    ok(
        await shop.http.put(
            "/v1/business/greeting", json={"enabled": True, "text": secret("greet-")}
        )
    )
    ok(
        await shop.http.put(
            "/v1/business/away",
            json={"enabled": True, "text": secret("away-"), "schedule": "always"},
        )
    )
    ok(
        await shop.http.post(
            "/v1/business/verification",
            json={
                "legal_name": secret("legal-"),
                "registration_number": secret("reg-"),
                "domain": "shop.example",
            },
        ),
        201,
    )
    template_name = secret("tpl_")
    template = ok(
        await shop.http.post(
            "/v1/business/templates",
            json={
                "name": template_name,
                "language": "en_US",
                "category": "UTILITY",
                "components": [
                    {
                        "type": "BODY",
                        "text": f"Your order {{{{1}}}} is ready {secret('body-')}.",
                        "example": {"body_text": [["A-1"]]},
                    }
                ],
            },
        ),
        201,
    )
    product = ok(
        await shop.http.post(
            "/v1/business/products", json={"name": "Bread", "price": 250, "currency": "EUR"}
        ),
        201,
    )
    reply = ok(
        await shop.http.post(
            "/v1/business/quick-replies", json={"shortcut": "hours", "text": secret("reply-")}
        ),
        201,
    )
    label = ok(await shop.http.post("/v1/business/labels", json={"name": secret("label-")}), 201)
    ok(await shop.http.put(f"/v1/business/labels/{label['id']}/chats/{alice.account_id}"), 204)

    # ---- alice and shop: consent, shared phone; shop's scoped id for alice
    ok(
        await alice.http.post(
            f"/v1/consents/{shop.account_id}", json={"categories": ["utility"], "source": "qr"}
        )
    )
    ok(await alice.http.post(f"/v1/business/{shop.account_id}/share-phone"))
    markers.append(alice.phone.lstrip("+"))  # shared with shop only
    scoped = ok(await shop.http.get(f"/v1/business/people/{alice.account_id}"))["scoped_id"]
    report = ok(
        await alice.http.post(
            "/v1/reports",
            json={"account": dave.account_id, "reason": "spam", "comment": secret("report-")},
        ),
        201,
    )

    # ---- the operator: a token, a revoked token, shop's balance
    created = await relay.services.admins.do_create_token(CONSOLE, secret("ops-"))
    admin = relay.client(created.token)
    gone_admin = ok(await admin.post("/v1/admin/tokens", json={"name": "gone"}), 201)
    ok(await admin.delete(f"/v1/admin/tokens/{gone_admin['id']}"), 204)
    ok(
        await admin.post(
            f"/v1/admin/billing/{shop.account_id}/top-up", json={"amount_minor": 12_345}
        )
    )
    world = World(
        relay=relay,
        alice=alice,
        alice2=alice2,
        bob=bob,
        carol=carol,
        dave=dave,
        shop=shop,
        rival=rival,
        revoked=gone.token,
        shop_revoked=shop_gone.token,
        admin=admin,
        admin_revoked=gone_admin["token"],
        anonymous=relay.client(),
        markers=markers,
    )
    world.ids = {
        "group_id": group_id,
        "invite_code": invite["code"],
        "media_id": media["media_id"],
        "partial_media": partial["media_id"],
        "template_id": template["id"],
        "template_name": template_name,
        "product_id": product["id"],
        "reply_id": reply["id"],
        "label_id": label["id"],
        "scoped_id": scoped,
        "report_id": report["id"],
        "admin_token_id": created.id,
        "slug": slug,
        "username": username,
        "month": "2026-01",
    }
    return world


# ---------------------------------------------------------------- the business gateway


@dataclass
class GatewayWorld:
    """Two numbers on one gateway: ``shop`` (the owner: a template, media, a profile, a
    webhook, a block, a PIN) and ``rival``; ``rotated`` is shop's token before a rotation."""

    server: GatewayServer
    http: httpx.AsyncClient
    shop: Bootstrap
    rival: Bootstrap
    shop_token: str
    rotated: str
    #: shop's relay device token: not a Cloud API token
    device_token: str
    ids: dict[str, Any] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def snapshot(self) -> dict[str, Any]:
        i = self.ids
        out: dict[str, Any] = {}
        for path in (
            f"/v22.0/{i['phone']}",
            f"/v22.0/{i['waba']}",
            f"/v22.0/{i['waba']}/message_templates",
            f"/v22.0/{i['template']}",
            f"/v22.0/{i['waba']}/phone_numbers",
            f"/v22.0/{i['phone']}/whatsapp_business_profile",
            f"/v22.0/{i['phone']}/block_users",
            f"/v22.0/{i['waba']}/subscribed_apps",
            f"/v22.0/{i['phone']}/webhook_deliveries",
            f"/v22.0/{i['media']}",
            f"/media-bytes/{i['media']}",
        ):
            r = await self.http.get(path, headers=self.auth(self.shop_token))
            assert r.status_code == 200, f"{path}: {r.text}"
            is_json = r.headers.get("content-type", "").startswith("application/json")
            out[path] = scrub(r.json()) if is_json else r.content
        return out


async def build_gateway_world(
    relay: Harness, db_url: str, tmp: Path
) -> AsyncIterator[GatewayWorld]:
    """The gateway world; the webhook receiver runs as long as the world."""
    async for biz in start_gateway(relay, db_url, tmp):
        hook = Receiver(biz.boot.app_secret, biz.boot.verify_token)
        receiver = Uvicorn(hook.app())
        await receiver.start()
        try:
            yield await populate_gateway(relay, biz, tmp, f"{receiver.url}/hook")
        finally:
            await receiver.stop()


async def populate_gateway(relay: Harness, biz: Business, tmp: Path, hook: str) -> GatewayWorld:
    db = biz.server.app.db
    assert db is not None

    async def code(phone: str) -> str:
        return relay.sender.codes[phone]

    number, rival = await create_number(
        db, tmp / "gw", relay.url, fresh_phone(), code, name="Rival Air", base_url=biz.url
    )
    await biz.server.gateway.open_line(number)
    shop = biz.boot
    phone, waba = shop.phone_number_id, shop.waba_id
    fresh = "TRGW" + secrets.token_urlsafe(32)
    await db.run_interaction(
        "gw_token", lambda txn: gw_store.set_token(txn, phone, token_hash(fresh))
    )
    await biz.server.gateway.refresh_numbers()
    line = biz.server.gateway.lines[phone]
    headers = {"Authorization": f"Bearer {fresh}"}
    http = biz.http
    markers: list[str] = []

    def secret(prefix: str) -> str:
        value = tag(prefix)
        markers.append(value)
        return value

    r = await http.post(
        f"/v22.0/{waba}/subscribed_apps",
        headers=headers,
        json={
            "override_callback_uri": f"{hook}?k={secret('hook')}",
            "verify_token": shop.verify_token,
        },
    )
    ok(r)
    name = secret("gw_tpl_")
    r = await http.post(
        f"/v22.0/{waba}/message_templates",
        headers=headers,
        json={
            "name": name,
            "language": "en_US",
            "category": "UTILITY",
            "components": [{"type": "BODY", "text": f"Boarding {secret('gwbody-')}"}],
        },
    )
    template = ok(r)["id"]
    png = bytes.fromhex("89504e470d0a1a0a") + secrets.token_bytes(64)
    r = await http.post(
        f"/v22.0/{phone}/media",
        headers=headers,
        files={"file": ("pass.png", png, "image/png")},
        data={"messaging_product": "whatsapp", "type": "image/png"},
    )
    media = ok(r)["id"]
    r = await http.post(
        f"/v22.0/{phone}/whatsapp_business_profile",
        headers=headers,
        json={"messaging_product": "whatsapp", "about": secret("gwabout-")},
    )
    ok(r)
    ok(await http.post(f"/v22.0/{phone}/register", headers=headers, json={"pin": "123456"}))
    person = await relay.new_device()
    r = await http.post(
        f"/v22.0/{phone}/block_users",
        headers=headers,
        json={"messaging_product": "whatsapp", "block_users": [{"user": person.phone}]},
    )
    assert "added_users" in ok(r)["block_users"], r.text
    world = GatewayWorld(
        server=biz.server,
        http=http,
        shop=shop,
        rival=rival,
        shop_token=fresh,
        rotated=shop.access_token,
        device_token=line.number.device_token,
        markers=markers,
    )
    world.ids = {
        "phone": phone,
        "waba": waba,
        "template": template,
        "template_name": name,
        "media": media,
        "person": person.phone,
        "rival_phone": rival.phone_number_id,
        "rival_waba": rival.waba_id,
    }
    return world

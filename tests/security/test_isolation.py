"""Isolation: every HTTP route of the relay, called by the wrong principal, is refused with the
documented status and code, leaks none of the owners' private data, and changes nothing.

The routes come from the running relay's Litestar app (and its /openapi.json), so a route added
without an entry in :data:`RELAY_ROUTES` fails :func:`test_every_relay_route_is_in_the_table`.
Each entry says who may call the route (:data:`PUBLIC`, :data:`DEVICE`, :data:`BUSINESS`,
:data:`ADMIN`) and what the other principals get:

- everyone without a valid principal of the route's kind: no token, an unknown token, a signed-out
  device's token, an admin token on a device route (401 ``unauthorized`` / ``token_revoked``);
  a device token on an admin route (403 ``admin_required``);
- another account (``bob``) or another business (``rival``) on the owners' resources: the
  entry's ``other`` — a :class:`Deny`, or :class:`Allowed` where the route acts on the caller's
  own data or serves what is public by design (then the answer must still hold none of the
  owners' private strings);
- a person who is not a business on business routes: 404 ``not_a_business``;
- a group member or media grantee who is not its admin or uploader (``carol``): ``member``.

Afterwards the owners' data, read back through their own tokens, is exactly as before. The
business gateway's routes (:data:`GATEWAY_ROUTES`, enumerated the same way) get the same with
Cloud API tokens, and the WebSocket tests check what one device's frames can reach.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DeviceHandle, Harness
from tests.security._world import GatewayWorld, World, build_gateway_world, build_world
from tresen.client import Connection
from tresen.errors import DeviceListMismatch, InvalidRequest, LimitExceeded, TresenError
from tresen.protocol.codes import Code
from tresen.protocol.frames import Error, Presence

PUBLIC, DEVICE, BUSINESS, ADMIN = "public", "device", "business", "admin"


@dataclass(frozen=True)
class Deny:
    """Refused with this HTTP status and error code (the gateway's are Graph numbers)."""

    status: int
    code: str | int
    subcode: int | None = None


@dataclass(frozen=True)
class Allowed:
    """Not refused: the route acts on the caller's own data, or serves what is public by design.
    The answer must be below 500 and, unless ``shows`` says why, hold no private marker."""

    why: str
    shows: str = ""


@dataclass(frozen=True)
class Skip:
    """Not called by this principal, for the reason given."""

    why: str


Expect = Deny | Allowed | Skip

OWN = Allowed("acts on the caller's own data")
PUB = Allowed("public by design")
UNAUTHORIZED = Deny(401, "unauthorized")
REVOKED = Deny(401, "token_revoked")
ADMIN_REQUIRED = Deny(403, "admin_required")
NOT_A_BUSINESS = Deny(404, "not_a_business")
NOT_FOUND = Deny(404, "not_found")
NOT_MEMBER = Deny(403, "not_group_member")
NOT_ADMIN = Deny(403, "not_group_admin")
NO_MEDIA = Deny(404, "media_not_found")
#: templates answer their own code: a template of another business is "no template"
NO_TEMPLATE = Deny(404, "132001")


@dataclass(frozen=True)
class R:
    """One route: who may call it, what it is called with, what the wrong principals get."""

    kind: str
    #: bob on a device route, rival on a business route, the anonymous caller on a public one
    other: Expect = OWN
    #: carol: a member of alice's group (not an admin), a grantee of alice's media
    member: Expect | None = None
    #: a person who is not a business, on a business route
    nonbiz: Expect = NOT_A_BUSINESS
    #: path parameters: a key of ``World.ids`` or ``@name`` (an account) / ``@name.device``
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


GROUP = {"group_id": "group_id"}
PERIOD = {"start": "2026-01-01", "end": "2026-01-31"}
TEMPLATE_BODY = {
    "name": "rival_offer",
    "language": "en_US",
    "category": "UTILITY",
    "components": [{"type": "BODY", "text": "Your order is ready."}],
}


def signed_as_alice(world: World) -> dict[str, Any]:
    """Device keys that name alice's device (self-consistent, as an attacker would make them)."""
    account, device = str(world.alice.account_id), str(world.alice.device_id)
    return {
        "device_keys": {
            "user_id": account,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"ed25519:{device}": "A" * 43, f"curve25519:{device}": "B" * 43},
            "signatures": {account: {f"ed25519:{device}": "C" * 86}},
        }
    }


RELAY_ROUTES: dict[tuple[str, str], R] = {
    # ---------------------------------------------------------------- public
    ("GET", "/v1/info"): R(PUBLIC, PUB),
    ("GET", "/healthz"): R(PUBLIC, PUB),
    ("GET", "/openapi.json"): R(PUBLIC, PUB),
    ("GET", "/docs"): R(PUBLIC, PUB),
    ("GET", "/docs/openapi.json"): R(PUBLIC, PUB),
    ("GET", "/docs/openapi.yaml"): R(PUBLIC, PUB),
    ("GET", "/docs/openapi.yml"): R(PUBLIC, PUB),
    ("GET", "/docs/redoc"): R(PUBLIC, PUB),
    ("GET", "/docs/swagger"): R(PUBLIC, PUB),
    ("GET", "/docs/rapidoc"): R(PUBLIC, PUB),
    ("GET", "/docs/elements"): R(PUBLIC, PUB),
    ("GET", "/docs/oauth2-redirect.html"): R(PUBLIC, PUB),
    ("GET", "/docs/{path}"): R(PUBLIC, PUB, params={"path": "swagger"}),
    ("POST", "/v1/accounts/code"): R(PUBLIC, PUB, json={"phone": "+4915100000001"}),
    # taking over alice's number needs the code sent to alice's phone
    ("POST", "/v1/accounts"): R(
        PUBLIC,
        Deny(401, "invalid_code"),
        json={"phone": "@alice.phone", "code": "000000", "takeover": True},
    ),
    ("POST", "/v1/devices/link"): R(PUBLIC, Deny(401, "invalid_code"), json={"code": "ABCD1234"}),
    ("GET", "/b/{slug}"): R(PUBLIC, PUB, params={"slug": "slug"}),
    ("GET", "/v1/business/{account_id}/qr.png"): R(PUBLIC, PUB, params={"account_id": "@shop"}),
    ("GET", "/v1/business/{account_id}/qr.svg"): R(PUBLIC, PUB, params={"account_id": "@shop"}),
    # ---------------------------------------------------------------- accounts and devices
    ("GET", "/v1/me"): R(DEVICE),
    ("PATCH", "/v1/me"): R(DEVICE, json={"about": "hi"}),
    ("GET", "/v1/accounts/lookup"): R(DEVICE, PUB, query={"username": "username"}),
    ("GET", "/v1/accounts/{account_id}"): R(DEVICE, PUB, params={"account_id": "@alice"}),
    # alice shows her presence to contacts only: bob gets no more than the privacy allows
    ("GET", "/v1/accounts/{account_id}/presence"): R(DEVICE, PUB, params={"account_id": "@alice"}),
    ("POST", "/v1/devices/link-code"): R(DEVICE),
    ("GET", "/v1/devices"): R(DEVICE),
    ("DELETE", "/v1/devices/{device_id}"): R(
        DEVICE, NOT_FOUND, params={"device_id": "@alice2.device"}
    ),
    ("GET", "/v1/contacts"): R(DEVICE),
    ("PUT", "/v1/contacts"): R(DEVICE, json={"accounts": []}),
    # ---------------------------------------------------------------- keys
    ("POST", "/v1/keys/upload"): R(DEVICE, Deny(400, "invalid_keys"), json=signed_as_alice),
    ("GET", "/v1/keys/count"): R(DEVICE),
    ("POST", "/v1/keys/query"): R(DEVICE, PUB, json={"device_keys": {"@alice": []}}),
    ("POST", "/v1/keys/claim"): R(
        DEVICE,
        PUB,
        json={"one_time_keys": {"@alice": {"@alice.device": "signed_curve25519"}}},
    ),
    # ---------------------------------------------------------------- groups
    ("GET", "/v1/groups"): R(DEVICE),
    ("POST", "/v1/groups"): R(DEVICE, json={"name": "bob's own"}),
    ("GET", "/v1/groups/{group_id}"): R(DEVICE, NOT_MEMBER, params=GROUP),
    ("PATCH", "/v1/groups/{group_id}"): R(
        DEVICE, NOT_MEMBER, NOT_ADMIN, params=GROUP, json={"name": "taken over"}
    ),
    ("POST", "/v1/groups/{group_id}/members"): R(
        DEVICE, NOT_MEMBER, NOT_ADMIN, params=GROUP, json={"accounts": ["@bob"]}
    ),
    ("DELETE", "/v1/groups/{group_id}/members/{account_id}"): R(
        DEVICE, NOT_MEMBER, NOT_ADMIN, params={**GROUP, "account_id": "@dave"}
    ),
    ("POST", "/v1/groups/{group_id}/admins/{account_id}"): R(
        DEVICE, NOT_MEMBER, NOT_ADMIN, params={**GROUP, "account_id": "@carol"}
    ),
    ("DELETE", "/v1/groups/{group_id}/admins/{account_id}"): R(
        DEVICE, NOT_MEMBER, NOT_ADMIN, params={**GROUP, "account_id": "@alice"}
    ),
    ("POST", "/v1/groups/{group_id}/invite"): R(DEVICE, NOT_MEMBER, NOT_ADMIN, params=GROUP),
    ("DELETE", "/v1/groups/{group_id}/invite"): R(DEVICE, NOT_MEMBER, NOT_ADMIN, params=GROUP),
    # the invite code is the capability: whoever holds it sees the group's name and may join
    ("GET", "/v1/groups/invite/{code}"): R(
        DEVICE,
        Allowed("the code is the capability", shows="the group's name"),
        params={"code": "invite_code"},
    ),
    ("POST", "/v1/groups/join/{code}"): R(
        DEVICE,
        Skip("the code is the capability: joining is what it is for"),
        params={"code": "invite_code"},
    ),
    # ---------------------------------------------------------------- media
    ("POST", "/v1/media"): R(DEVICE, json={"kind": "image", "size": 1}),
    ("GET", "/v1/media/{media_id}"): R(DEVICE, NO_MEDIA, params={"media_id": "media_id"}),
    ("DELETE", "/v1/media/{media_id}"): R(
        DEVICE, NO_MEDIA, NO_MEDIA, params={"media_id": "media_id"}
    ),
    ("PATCH", "/v1/media/{media_id}"): R(
        DEVICE,
        NO_MEDIA,
        params={"media_id": "partial_media"},
        content=b"\x00" * 10,
        headers={"Upload-Offset": "10"},
    ),
    ("GET", "/v1/media/{media_id}/info"): R(DEVICE, NO_MEDIA, params={"media_id": "media_id"}),
    ("GET", "/v1/media/{media_id}/grants"): R(
        DEVICE, NO_MEDIA, NO_MEDIA, params={"media_id": "media_id"}
    ),
    ("POST", "/v1/media/{media_id}/grants"): R(
        DEVICE,
        NO_MEDIA,
        NO_MEDIA,
        params={"media_id": "media_id"},
        json={"recipients": [{"account_id": "@bob"}]},
    ),
    # ---------------------------------------------------------------- business: own profile
    ("POST", "/v1/business"): R(
        BUSINESS,
        Deny(409, "business_exists"),
        nonbiz=Skip("makes the caller a business: its own account"),
        json={"display_name": "Taken Over"},
    ),
    ("GET", "/v1/business"): R(BUSINESS),
    ("PATCH", "/v1/business"): R(BUSINESS, json={"about": "rival's about"}),
    ("PUT", "/v1/business/hours"): R(BUSINESS, json={"mode": "always_open"}),
    ("PUT", "/v1/business/greeting"): R(BUSINESS, json={"enabled": False}),
    ("PUT", "/v1/business/away"): R(BUSINESS, json={"enabled": False}),
    ("GET", "/v1/business/verification"): R(BUSINESS),
    ("POST", "/v1/business/verification"): R(
        BUSINESS,
        json={"legal_name": "Rival", "registration_number": "HRB 2", "domain": "rival.example"},
    ),
    # rival's own scoped id for alice; alice shared her phone with shop only
    ("GET", "/v1/business/people/{account_id}"): R(BUSINESS, params={"account_id": "@alice"}),
    ("GET", "/v1/business/people/by-scoped-id/{scoped_id}"): R(
        BUSINESS, NOT_FOUND, params={"scoped_id": "scoped_id"}
    ),
    # ---------------------------------------------------------------- business: public lookups
    ("GET", "/v1/business/{account_id}"): R(DEVICE, PUB, params={"account_id": "@shop"}),
    ("GET", "/v1/business/by-slug/{slug}"): R(DEVICE, PUB, params={"slug": "slug"}),
    ("GET", "/v1/business/{account_id}/products"): R(DEVICE, PUB, params={"account_id": "@shop"}),
    ("GET", "/v1/business/{account_id}/products/{product_id}"): R(
        DEVICE, PUB, params={"account_id": "@shop", "product_id": "product_id"}
    ),
    # a person shares (or stops sharing) their own phone; with rival, so shop's view stays
    ("POST", "/v1/business/{account_id}/share-phone"): R(DEVICE, params={"account_id": "@rival"}),
    ("DELETE", "/v1/business/{account_id}/share-phone"): R(DEVICE, params={"account_id": "@rival"}),
    # ---------------------------------------------------------------- business tools
    ("POST", "/v1/business/products"): R(
        BUSINESS, json={"name": "Cake", "price": 300, "currency": "EUR"}
    ),
    ("PATCH", "/v1/business/products/{product_id}"): R(
        BUSINESS, NOT_FOUND, params={"product_id": "product_id"}, json={"price": 1}
    ),
    ("DELETE", "/v1/business/products/{product_id}"): R(
        BUSINESS, NOT_FOUND, params={"product_id": "product_id"}
    ),
    ("GET", "/v1/business/quick-replies"): R(BUSINESS),
    ("POST", "/v1/business/quick-replies"): R(
        BUSINESS, json={"shortcut": "hi", "text": "Hello from rival"}
    ),
    ("PUT", "/v1/business/quick-replies/{reply_id}"): R(
        BUSINESS,
        NOT_FOUND,
        params={"reply_id": "reply_id"},
        json={"shortcut": "hours", "text": "changed"},
    ),
    ("DELETE", "/v1/business/quick-replies/{reply_id}"): R(
        BUSINESS, NOT_FOUND, params={"reply_id": "reply_id"}
    ),
    ("GET", "/v1/business/labels"): R(BUSINESS),
    ("POST", "/v1/business/labels"): R(BUSINESS, json={"name": "rival label"}),
    ("PATCH", "/v1/business/labels/{label_id}"): R(
        BUSINESS, NOT_FOUND, params={"label_id": "label_id"}, json={"name": "renamed"}
    ),
    ("DELETE", "/v1/business/labels/{label_id}"): R(
        BUSINESS, NOT_FOUND, params={"label_id": "label_id"}
    ),
    ("GET", "/v1/business/labels/{label_id}/chats"): R(
        BUSINESS, NOT_FOUND, params={"label_id": "label_id"}
    ),
    ("PUT", "/v1/business/labels/{label_id}/chats/{chat}"): R(
        BUSINESS, NOT_FOUND, params={"label_id": "label_id", "chat": "@bob"}
    ),
    ("DELETE", "/v1/business/labels/{label_id}/chats/{chat}"): R(
        BUSINESS, NOT_FOUND, params={"label_id": "label_id", "chat": "@alice"}
    ),
    ("GET", "/v1/business/chats/{chat}/labels"): R(BUSINESS, params={"chat": "@alice"}),
    # ---------------------------------------------------------------- consent, blocks, reports
    ("POST", "/v1/consents/{business_id}"): R(
        DEVICE, params={"business_id": "@rival"}, json={"categories": ["utility"], "source": "qr"}
    ),
    ("POST", "/v1/consents/{business_id}/stop"): R(
        DEVICE, params={"business_id": "@rival"}, json={}
    ),
    ("GET", "/v1/consents"): R(DEVICE),
    ("POST", "/v1/entry/{business_id}"): R(
        DEVICE, params={"business_id": "@rival"}, json={"source": "link"}
    ),
    ("GET", "/v1/blocks"): R(DEVICE),
    ("POST", "/v1/blocks"): R(DEVICE, json={"account": "@carol"}),
    # bob unblocking dave touches bob's blocks, never alice's block of dave
    ("DELETE", "/v1/blocks/{account_id}"): R(DEVICE, params={"account_id": "@dave"}),
    ("POST", "/v1/reports"): R(DEVICE, json={"account": "@carol", "reason": "spam"}),
    # a business's view of its own customers; an opt-out recorded by rival is rival's
    ("GET", "/v1/business/consents"): R(BUSINESS, query={"person": "@alice"}),
    ("POST", "/v1/business/opt-outs"): R(
        BUSINESS, json={"person": "@carol", "categories": ["marketing"], "keyword": "STOP"}
    ),
    # ---------------------------------------------------------------- templates
    ("GET", "/v1/business/templates"): R(BUSINESS, query={"name": "template_name"}),
    ("POST", "/v1/business/templates"): R(BUSINESS, json=TEMPLATE_BODY),
    # by name: rival deletes its own templates of that name (none), never shop's
    ("DELETE", "/v1/business/templates"): R(
        BUSINESS, nonbiz=NO_TEMPLATE, query={"name": "template_name"}
    ),
    ("GET", "/v1/business/templates/{template_id}"): R(
        BUSINESS, NO_TEMPLATE, nonbiz=NO_TEMPLATE, params={"template_id": "template_id"}
    ),
    ("POST", "/v1/business/templates/{template_id}"): R(
        BUSINESS,
        NO_TEMPLATE,
        nonbiz=NO_TEMPLATE,
        params={"template_id": "template_id"},
        json={"components": TEMPLATE_BODY["components"]},
    ),
    ("DELETE", "/v1/business/templates/{template_id}"): R(
        BUSINESS, NO_TEMPLATE, nonbiz=NO_TEMPLATE, params={"template_id": "template_id"}
    ),
    # ---------------------------------------------------------------- billing and standing
    ("GET", "/v1/business/usage"): R(BUSINESS, query=PERIOD),
    ("GET", "/v1/business/invoices/{month}"): R(BUSINESS, params={"month": "month"}),
    ("GET", "/v1/business/invoices/{month}/csv"): R(BUSINESS, params={"month": "month"}),
    ("GET", "/v1/business/invoices/{month}/html"): R(BUSINESS, params={"month": "month"}),
    ("GET", "/v1/business/invoices/{month}/pdf"): R(BUSINESS, params={"month": "month"}),
    ("GET", "/v1/business/account"): R(BUSINESS),
    ("GET", "/v1/business/standing"): R(BUSINESS),
    # ---------------------------------------------------------------- the operator
    ("GET", "/v1/admin/whoami"): R(ADMIN),
    ("GET", "/v1/admin/tokens"): R(ADMIN),
    ("POST", "/v1/admin/tokens"): R(ADMIN, json={"name": "intruder"}),
    ("DELETE", "/v1/admin/tokens/{token_id}"): R(ADMIN, params={"token_id": "admin_token_id"}),
    ("GET", "/v1/admin/audit"): R(ADMIN),
    ("GET", "/v1/admin/businesses"): R(ADMIN),
    ("GET", "/v1/admin/businesses/{account_id}"): R(ADMIN, params={"account_id": "@shop"}),
    ("POST", "/v1/admin/businesses/{account_id}/verification/approve"): R(
        ADMIN, params={"account_id": "@shop"}, json={}
    ),
    ("POST", "/v1/admin/businesses/{account_id}/verification/reject"): R(
        ADMIN, params={"account_id": "@shop"}, json={"reason": "no"}
    ),
    ("POST", "/v1/admin/businesses/{account_id}/verification/revoke"): R(
        ADMIN, params={"account_id": "@shop"}, json={"reason": "no"}
    ),
    ("POST", "/v1/admin/businesses/{account_id}/verification/check-domain"): R(
        ADMIN, params={"account_id": "@shop"}, json={}
    ),
    ("POST", "/v1/admin/businesses/{account_id}/display-name/approve"): R(
        ADMIN, params={"account_id": "@shop"}
    ),
    ("POST", "/v1/admin/businesses/{account_id}/display-name/reject"): R(
        ADMIN, params={"account_id": "@shop"}, json={"reason": "no"}
    ),
    ("GET", "/v1/admin/reports"): R(ADMIN),
    ("GET", "/v1/admin/reports/{report_id}"): R(ADMIN, params={"report_id": "report_id"}),
    ("POST", "/v1/admin/reports/{report_id}/resolve"): R(
        ADMIN, params={"report_id": "report_id"}, json={"resolution": "dismissed"}
    ),
    ("GET", "/v1/admin/consents/{business_id}/{person_id}"): R(
        ADMIN, params={"business_id": "@shop", "person_id": "@alice"}
    ),
    ("GET", "/v1/admin/templates"): R(ADMIN),
    ("GET", "/v1/admin/templates/{template_id}"): R(ADMIN, params={"template_id": "template_id"}),
    ("POST", "/v1/admin/templates/{template_id}/review"): R(
        ADMIN, params={"template_id": "template_id"}, json={"status": "APPROVED"}
    ),
    ("POST", "/v1/admin/templates/{template_id}/disable"): R(
        ADMIN, params={"template_id": "template_id"}, json={}
    ),
    ("POST", "/v1/admin/templates/{template_id}/reinstate"): R(
        ADMIN, params={"template_id": "template_id"}, json={}
    ),
    ("GET", "/v1/admin/billing/{business_id}"): R(ADMIN, params={"business_id": "@shop"}),
    ("POST", "/v1/admin/billing/{business_id}/top-up"): R(
        ADMIN, params={"business_id": "@shop"}, json={"amount_minor": 1_000_000}
    ),
    ("PUT", "/v1/admin/billing/{business_id}/credit-limit"): R(
        ADMIN, params={"business_id": "@shop"}, json={"credit_limit_minor": 1_000_000}
    ),
    ("GET", "/v1/admin/billing/{business_id}/usage"): R(
        ADMIN, params={"business_id": "@shop"}, query=PERIOD
    ),
    ("GET", "/v1/admin/billing/{business_id}/invoices/{month}"): R(
        ADMIN, params={"business_id": "@shop", "month": "month"}
    ),
    ("GET", "/v1/admin/rate-card"): R(ADMIN),
    ("PUT", "/v1/admin/rate-card"): R(
        ADMIN, content=b"country,category,price_minor\n", headers={"Content-Type": "text/csv"}
    ),
    ("DELETE", "/v1/admin/rate-card"): R(ADMIN),
    ("GET", "/v1/admin/policy/{business_id}"): R(ADMIN, params={"business_id": "@shop"}),
    ("POST", "/v1/admin/policy/{business_id}"): R(
        ADMIN, params={"business_id": "@shop"}, json={"tier": "TIER_UNLIMITED"}
    ),
    ("POST", "/v1/admin/policy/sweep"): R(ADMIN),
}


# ---------------------------------------------------------------- the machinery


def relay_routes(relay: Harness) -> dict[tuple[str, str], set[str]]:
    """Every (method, path) the relay's Litestar app serves, with its handler's dependencies
    (``who``: a device token, ``admin``: an admin token). OPTIONS is Litestar's own."""
    routes: dict[tuple[str, str], set[str]] = {}
    for route in relay.server.app.http.routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for handler in getattr(route, "route_handlers", []):
            for method in handler.http_methods - {"OPTIONS", "HEAD"}:
                routes[(method, path)] = set(handler.resolve_dependencies())
    return routes


def resolve(world: World, value: Any) -> Any:
    """Placeholders in params and bodies: ``@alice`` (account id), ``@alice.device``,
    ``@alice.phone``; in a body an account id becomes an int (a string inside a dict key)."""
    if isinstance(value, dict):
        return {str(resolve(world, k)): resolve(world, v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(world, v) for v in value]
    if not isinstance(value, str) or "@" not in value:
        return value
    if value.startswith("@") and re.fullmatch(r"@\w+(\.\w+)?", value):
        name, _, attr = value[1:].partition(".")
        handle = getattr(world, name)
        return {"": handle.account_id, "device": handle.device_id, "phone": handle.phone}[attr]
    return re.sub(
        r"@(\w+)(?:\.(device))?",
        lambda m: str(resolve(world, m.group(0))),
        value,
    )


def fill(world: World, path: str, route: R) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        ref = route.params.get(name, name)
        if ref.startswith("@"):
            return str(resolve(world, ref))
        return str(world.ids.get(ref, ref))

    return re.sub(r"\{(\w+)\}", one, path)


def principals(world: World, route: R) -> list[tuple[str, str | None, Expect]]:
    """The wrong principals for ``route`` and what each must get."""
    if route.kind == PUBLIC:
        return [("anonymous", None, route.other)]
    if route.kind == ADMIN:
        return [
            ("no token", None, UNAUTHORIZED),
            ("an unknown token", "tad_not-a-token", UNAUTHORIZED),
            ("a revoked admin token", world.admin_revoked, REVOKED),
            ("a signed-out device", world.revoked, UNAUTHORIZED),
            ("a person's device token", world.bob.token, ADMIN_REQUIRED),
            ("a business's device token", world.shop.token, ADMIN_REQUIRED),
        ]
    admin_token = world.admin.headers["authorization"].removeprefix("Bearer ")
    out: list[tuple[str, str | None, Expect]] = [
        ("no token", None, UNAUTHORIZED),
        ("an unknown token", "not-a-token", UNAUTHORIZED),
        ("a signed-out device", world.shop_revoked if route.kind == BUSINESS else world.revoked,
         REVOKED),
        ("an admin token", admin_token, UNAUTHORIZED),
    ]  # fmt: skip
    if route.kind == DEVICE:
        out.append(("another account (bob)", world.bob.token, route.other))
    else:
        out.append(("a person, not a business (bob)", world.bob.token, route.nonbiz))
        out.append(("another business (rival)", world.rival.token, route.other))
    if route.member is not None:
        out.append(("a member, not the owner (carol)", world.carol.token, route.member))
    return out


async def call(world: World, method: str, path: str, route: R, token: str | None) -> httpx.Response:
    headers = dict(route.headers)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    query = {k: resolve(world, v) if v.startswith("@") else world.ids.get(v, v)
             for k, v in route.query.items()}  # fmt: skip
    return await world.anonymous.request(
        method,
        fill(world, path, route),
        params=query,
        json=route.json(world) if callable(route.json) else resolve(world, route.json),
        content=route.content,
        headers=headers,
    )


def judge(world: World | GatewayWorld, response: httpx.Response, expect: Expect) -> str | None:
    """What is wrong with ``response`` (None: nothing)."""
    if response.status_code >= 500:
        return f"server error {response.status_code}: {response.text[:300]}"
    if isinstance(expect, Deny):
        try:
            error = response.json()["error"]
            code, subcode = str(error["code"]), error.get("error_subcode")
        except (ValueError, KeyError, TypeError):
            code, subcode = None, None
        got = (response.status_code, code, subcode if expect.subcode else None)
        if got != (expect.status, str(expect.code), expect.subcode):
            return (
                f"expected {expect.status} {expect.code}, got {response.status_code} "
                f"{response.text[:300]}"
            )
    if isinstance(expect, Allowed) and expect.shows:
        return None
    text = response.content.decode("utf-8", "replace")
    try:
        body = response.request.content.decode("utf-8", "replace")
    except httpx.RequestNotRead:  # a multipart upload: no marker in it
        body = ""
    sent = str(response.request.url) + body
    leaked = [m for m in world.markers if m in text and m not in sent]  # an echo is no leak
    if leaked:
        return f"answer {response.status_code} shows the owners' private data {leaked}"
    return None


@pytest.fixture
async def world(relay: Harness) -> AsyncIterator[World]:
    built = await build_world(relay)
    try:
        yield built
    finally:
        await built.aclose()


# ---------------------------------------------------------------- the tests


async def test_every_relay_route_is_in_the_table(relay: Harness) -> None:
    """A new route needs an entry here; each entry's kind matches how the route authenticates."""
    served = relay_routes(relay)
    assert set(served) - set(RELAY_ROUTES) == set(), "routes without an isolation entry"
    assert set(RELAY_ROUTES) - set(served) == set(), "entries for routes that are gone"
    async with relay.client() as http:
        documented = (await http.get("/openapi.json")).json()["paths"]
    for path, operations in documented.items():
        for method in operations:
            assert (method.upper(), path) in RELAY_ROUTES, (method, path)
    for key, route in RELAY_ROUTES.items():
        deps = served[key]
        wanted = {"who"} if route.kind in (DEVICE, BUSINESS) else set()
        wanted |= {"admin"} if route.kind == ADMIN else set()
        assert deps & {"who", "admin"} == wanted, (key, route.kind, deps)


async def test_every_relay_route_refuses_the_wrong_principal(world: World) -> None:
    before = await world.snapshot()
    problems: list[str] = []
    calls = 0
    for (method, path), route in RELAY_ROUTES.items():
        for who, token, expect in principals(world, route):
            if isinstance(expect, Skip):
                continue
            response = await call(world, method, path, route, token)
            calls += 1
            problem = judge(world, response, expect)
            if problem:
                problems.append(f"{method} {path} as {who}: {problem}")
    assert not problems, f"{len(problems)} of {calls} calls:\n" + "\n".join(problems)
    after = await world.snapshot()
    changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
    assert not changed, f"the owners' data changed: {changed}"


# ---------------------------------------------------------------- the business gateway
#
# One gateway serves many numbers; each number's Cloud API token opens only its own phone
# number, WABA, media, templates, webhook and blocks. Every wrong token (none, unknown, rotated
# away, the number's relay device token) is 401 with Graph code 190; another number's token on
# this number's nodes is the Graph "unknown object" (100, subcode 33), as the Cloud API answers.

NO_TOKEN = Deny(401, 190)
UNKNOWN_NODE = Deny(400, 100, subcode=33)


@dataclass(frozen=True)
class G:
    """One gateway route: the node ids it is called with (keys of ``GatewayWorld.ids``), and
    what rival's token gets there. ``own`` calls it once more on rival's own nodes with the
    same arguments (naming shop's things): it acts on rival's data only."""

    nodes: tuple[dict[str, str], ...] = ()
    rival: Expect = UNKNOWN_NODE
    public: bool = False
    json: Any = None
    query: dict[str, str] = field(default_factory=dict)
    upload: bool = False
    own: dict[str, str] | None = None


PHONE = ({"node": "phone"},)
WABA = ({"node": "waba"},)
GW_TEMPLATE = {
    "name": "rival_boarding",
    "language": "en_US",
    "category": "UTILITY",
    "components": [{"type": "BODY", "text": "Boarding now"}],
}
BLOCK = {"messaging_product": "whatsapp", "block_users": [{"user": "person"}]}

GATEWAY_ROUTES: dict[tuple[str, str], G] = {
    ("GET", "/openapi.json"): G(public=True),
    ("GET", "/healthz"): G(public=True),
    ("GET", "/docs"): G(public=True),
    ("GET", "/docs/openapi.json"): G(public=True),
    ("GET", "/docs/openapi.yaml"): G(public=True),
    ("GET", "/docs/openapi.yml"): G(public=True),
    ("GET", "/docs/redoc"): G(public=True),
    ("GET", "/docs/swagger"): G(public=True),
    ("GET", "/docs/rapidoc"): G(public=True),
    ("GET", "/docs/elements"): G(public=True),
    ("GET", "/docs/oauth2-redirect.html"): G(public=True),
    ("GET", "/docs/{path}"): G(({"path": "swagger"},), public=True),
    ("POST", "/{node}/messages"): G(
        PHONE,
        json={
            "messaging_product": "whatsapp",
            "to": "person",
            "type": "text",
            "text": {"body": "hi"},
        },
    ),
    ("POST", "/{node}/media"): G(PHONE, upload=True),
    ("GET", "/{node}"): G(
        ({"node": "phone"}, {"node": "waba"}, {"node": "media"}, {"node": "template"})
    ),
    # an edit or delete of a node that is none of this number's media is tried as a template,
    # which the relay does not have for this business: the Graph API's unknown object (100)
    ("POST", "/{node}"): G(
        ({"node": "template"},),
        Deny(400, 100),
        json={"components": [{"type": "BODY", "text": "Changed"}]},
    ),
    ("DELETE", "/{node}"): G(({"node": "media"},), Deny(400, 100)),
    ("GET", "/media-bytes/{media_id}"): G(({"media_id": "media"},)),
    ("GET", "/{node}/message_templates"): G(WABA, query={"name": "template_name"}, own={}),
    ("POST", "/{node}/message_templates"): G(WABA, json=GW_TEMPLATE),
    ("DELETE", "/{node}/message_templates"): G(
        WABA, query={"name": "template_name"}, own={"node": "rival_waba"}
    ),
    ("GET", "/{node}/phone_numbers"): G(WABA),
    ("GET", "/{node}/whatsapp_business_profile"): G(PHONE),
    ("POST", "/{node}/whatsapp_business_profile"): G(
        PHONE, json={"messaging_product": "whatsapp", "about": "taken over"}
    ),
    ("POST", "/{node}/register"): G(PHONE, json={"pin": "654321"}),
    ("POST", "/{node}/deregister"): G(PHONE),
    ("GET", "/{node}/block_users"): G(PHONE),
    ("POST", "/{node}/block_users"): G(PHONE, json=BLOCK),
    ("DELETE", "/{node}/block_users"): G(PHONE, json=BLOCK, own={"node": "rival_phone"}),
    ("GET", "/{node}/subscribed_apps"): G(WABA),
    ("POST", "/{node}/subscribed_apps"): G(
        WABA, json={"override_callback_uri": "http://127.0.0.1:9/stolen"}
    ),
    ("DELETE", "/{node}/subscribed_apps"): G(WABA),
    ("GET", "/{node}/webhook_deliveries"): G(PHONE),
    ("POST", "/{node}/webhook_deliveries/{delivery}/replay"): G(
        ({"node": "phone", "delivery": "1"},)
    ),
}


def gateway_routes(world: GatewayWorld) -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for route in world.server.app.http.routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for handler in getattr(route, "route_handlers", []):
            routes |= {(m, path) for m in handler.http_methods - {"OPTIONS", "HEAD"}}
    return routes


async def gateway_call(
    world: GatewayWorld, method: str, path: str, route: G, params: dict[str, str], token: str | None
) -> httpx.Response:
    ids = world.ids
    url = re.sub(r"\{(\w+)\}", lambda m: str(ids.get(params[m.group(1)], params[m.group(1)])), path)
    if not route.public:
        url = "/v22.0" + url
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = route.json
    if body is not None:
        body = {k: [{"user": ids["person"]}] if k == "block_users" else v for k, v in body.items()}
        body = {k: ids["person"] if v == "person" else v for k, v in body.items()}
    files = None
    if route.upload:
        files = {"file": ("x.png", bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 8, "image/png")}
    return await world.http.request(
        method,
        url,
        params={k: ids.get(v, v) for k, v in route.query.items()},
        json=body,
        files=files,
        data={"messaging_product": "whatsapp", "type": "image/png"} if route.upload else None,
        headers=headers,
    )


@pytest.fixture
async def gateway(relay: Harness, db_url: str, tmp_path: Path) -> AsyncIterator[GatewayWorld]:
    async for world in build_gateway_world(relay, db_url, tmp_path):
        yield world


async def test_every_gateway_route_refuses_the_wrong_number(gateway: GatewayWorld) -> None:
    served = gateway_routes(gateway)
    assert served - set(GATEWAY_ROUTES) == set(), "gateway routes without an isolation entry"
    assert set(GATEWAY_ROUTES) - served == set(), "entries for gateway routes that are gone"
    before = await gateway.snapshot()
    wrong = [
        ("no token", None),
        ("an unknown token", "TRGW" + "x" * 43),
        ("a rotated token", gateway.rotated),
        ("the number's relay device token", gateway.device_token),
    ]
    problems: list[str] = []
    calls = 0
    for (method, path), route in GATEWAY_ROUTES.items():
        for params in route.nodes or ({},):
            tried: list[tuple[str, str | None, Expect, dict[str, str]]]
            if route.public:
                tried = [("anonymous", None, PUB, params)]
            else:
                tried = [(who, token, NO_TOKEN, params) for who, token in wrong]
                tried.append(
                    ("another number (rival)", gateway.rival.access_token, route.rival, params)
                )
                if route.own is not None:
                    tried.append(
                        (
                            "rival on its own nodes",
                            gateway.rival.access_token,
                            OWN,
                            {**params, **route.own},
                        )
                    )
            for who, token, expect, where in tried:
                response = await gateway_call(gateway, method, path, route, where, token)
                calls += 1
                problem = judge(gateway, response, expect)
                if problem:
                    problems.append(f"{method} {path} {where} as {who}: {problem}")
    # deleting shop's template by id with rival's token: last, as a success would end it
    for who, token, expect in [
        *[(w, t, NO_TOKEN) for w, t in wrong],
        ("another number (rival)", gateway.rival.access_token, Deny(400, 100)),
    ]:
        response = await gateway_call(
            gateway, "DELETE", "/{node}", G(), {"node": "template"}, token
        )
        calls += 1
        problem = judge(gateway, response, expect)
        if problem:
            problems.append(f"DELETE /{{node}} (template) as {who}: {problem}")
    assert not problems, f"{len(problems)} of {calls} calls:\n" + "\n".join(problems)
    after = await gateway.snapshot()
    changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
    assert not changed, f"shop's data changed: {changed}"


# ---------------------------------------------------------------- the WebSocket
#
# What the protocol lets a device do to others: ``ack`` acknowledges only what was delivered on
# the device's own connection; ``send`` and ``gsend`` reach exactly the recipient's (or the
# group's) current devices; ``typing`` and ``watch`` obey blocks, membership and presence
# privacy. A ``read`` receipt cannot be checked against delivery (the relay keeps no history of
# who received what, by design), so it always names its true sender, a block stops it, and it
# takes queue room like any envelope; a client ignores receipts for envelopes it never sent
# to that account.


async def synced(conn: Connection, to: DeviceHandle) -> None:
    """Wait until the relay has handled every frame ``conn`` sent before (frames of one
    connection are handled in order; a ``send`` answers once stored)."""
    await conn.send(to.account_id, {to.device_id: b"sync"})


async def next_error(conn: Connection) -> Error:
    async with asyncio.timeout(10):
        return await conn.errors.get()


async def test_a_device_acks_only_what_it_was_given(relay: Harness) -> None:
    alice = await relay.new_device()
    alice2 = await relay.link_device(alice)
    bob, carol = await relay.new_device(), await relay.new_device()
    from_bob = await bob.connect()
    for n in range(3):
        await from_bob.send(
            alice.account_id, {alice.device_id: b"a%d" % n, alice2.device_id: b"b%d" % n}
        )
    queued = await relay.fetch_queue(alice.device_id)
    assert [i.kind for i in queued] == ["message"] * 3
    # bob (another account) and alice2 (alice's other device) acknowledge far past every seq
    await from_bob.ack(10**12)
    await synced(from_bob, carol)
    other = await alice2.connect(auto_ack=False)
    assert len([await other.recv() for _ in range(3)]) == 3
    await other.ack(10**12)
    async with asyncio.timeout(10):  # alice2's deletes and any others commit together
        while await relay.fetch_queue(alice2.device_id):
            await asyncio.sleep(0.01)
    assert await relay.fetch_queue(alice.device_id) == queued
    own = await alice.connect()
    got = [await own.recv() for _ in range(3)]
    assert [(i.sender, i.body) for i in got] == [(bob.account_id, b"a%d" % n) for n in range(3)]


async def test_sends_reach_only_the_addressed_devices(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    r = await alice.http.post("/v1/groups", json={"name": "g", "members": [carol.account_id]})
    group = r.json()["group_id"]
    listening = await alice.connect()
    conn = await bob.connect()
    # a payload for a third account's device is not a way into its queue
    with pytest.raises(DeviceListMismatch):
        await conn.send(alice.account_id, {alice.device_id: b"x", carol.device_id: b"x"})
    with pytest.raises(TresenError) as caught:
        await conn.send_group(group, b"x")
    assert caught.value.code == Code.NOT_GROUP_MEMBER
    # a member's payload for a device outside the group is refused, not delivered
    member = await carol.connect()
    with pytest.raises(InvalidRequest):
        await member.send_group(group, b"x", payloads={bob.device_id: b"x"})
    for device in (alice, bob, carol):
        assert [i for i in await relay.fetch_queue(device.device_id) if i.kind == "message"] == []
    await conn.typing(group=group)
    error = await next_error(conn)
    assert error.code == Code.NOT_GROUP_MEMBER
    with pytest.raises(TimeoutError):
        await listening.notice(timeout=0.3)


async def test_receipts_name_their_sender_and_a_block_stops_them(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    conn = await bob.connect()
    await conn.read(alice.account_id, ["never-sent-to-bob"])
    await synced(conn, carol)
    (receipt,) = await relay.fetch_queue(alice.device_id)
    assert (receipt.kind, receipt.id) == ("read", "never-sent-to-bob")
    assert (receipt.sender, receipt.sender_device) == (bob.account_id, bob.device_id)
    r = await alice.http.post("/v1/blocks", json={"account": bob.account_id})
    assert r.status_code == 201, r.text
    await conn.read(alice.account_id, ["after-the-block"])
    error = await next_error(conn)
    assert error.code == Code.MESSAGE_UNDELIVERABLE
    await conn.typing(to=alice.account_id)
    await synced(conn, carol)
    assert await relay.fetch_queue(alice.device_id) == [receipt]
    listening = await alice.connect(auto_ack=False)
    await conn.typing(to=alice.account_id)
    with pytest.raises(TimeoutError):
        await listening.notice(timeout=0.3)


async def test_watch_shows_presence_only_as_the_privacy_allows(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    r = await alice.http.patch("/v1/me", json={"presence_privacy": "contacts"})
    assert r.status_code == 200, r.text
    r = await alice.http.put("/v1/contacts", json={"accounts": [carol.account_id]})
    assert r.status_code == 200, r.text
    await alice.connect()
    watcher = await bob.connect()
    await watcher.watch([alice.account_id])
    friend = await carol.connect()
    await friend.watch([alice.account_id])
    seen = await friend.notice()
    assert isinstance(seen, Presence) and (seen.account, seen.online) == (alice.account_id, True)
    with pytest.raises(TimeoutError):
        await watcher.notice(timeout=0.3)


@pytest.mark.parametrize("relay_settings", [{"max_queue_per_device": 5}])
async def test_receipts_take_queue_room(relay: Harness) -> None:
    """A device's queue limit holds against read receipts too: without it ``read`` frames of
    1,000 ids each filled an offline device's queue past any limit."""
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    conn = await bob.connect()
    await conn.read(alice.account_id, [f"r{n}" for n in range(5)])
    await conn.read(alice.account_id, [f"s{n}" for n in range(1000)])
    error = await next_error(conn)
    assert error.code == Code.QUEUE_FULL
    await synced(conn, carol)
    assert len(await relay.fetch_queue(alice.device_id)) == 5
    with pytest.raises(LimitExceeded):
        await conn.send(alice.account_id, {alice.device_id: b"one too many"})

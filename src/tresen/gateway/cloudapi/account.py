"""The number's settings: business profile, register (two-step PIN), blocks, the webhook
subscription (with the verification handshake) and the webhook deliveries (outbox, dead letters).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import httpx
from litestar import Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from tresen.errors import TresenError
from tresen.gateway import store
from tresen.gateway.cloudapi.errors import GraphError, from_relay, missing, unknown_node
from tresen.gateway.cloudapi.params import bearer, only, params
from tresen.gateway.service import Gateway
from tresen.gateway.webhooks.outbox import delivery_view
from tresen.storage.engine import Txn

Req = Request[Any, Any, Any]
PROFILE_FIELDS = ("about", "address", "description", "email", "websites", "vertical")


# ---------------------------------------------------------------- business profile


@get("/{node:str}/whatsapp_business_profile", summary="The business profile (flat)")
async def get_profile(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    values = await params(request)
    try:
        business = await line.biz.get()
    except TresenError as exc:
        raise from_relay(exc) from exc
    view: dict[str, Any] = {k: business.get(k) for k in PROFILE_FIELDS}
    view["vertical"] = view["vertical"] or "UNDEFINED"
    view["websites"] = view["websites"] or []
    view["messaging_product"] = "whatsapp"
    photo = business.get("photo")
    if photo:
        view["profile_picture_url"] = f"{line.number.relay_url}/v1/media/{photo}"
    fields = {f.strip() for f in str(values.get("fields") or "").split(",") if f.strip()}
    if fields:
        view = {k: v for k, v in view.items() if k in fields or k == "messaging_product"}
    return {"data": [view]}


@post("/{node:str}/whatsapp_business_profile", status_code=200, summary="Update the profile")
async def update_profile(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    values = await params(request)
    only(values, {*PROFILE_FIELDS, "messaging_product", "profile_picture_handle"})
    changes = {k: values[k] for k in PROFILE_FIELDS if k in values}
    if "about" in changes and len(str(changes["about"])) > 139:
        raise GraphError(100, "about: at most 139 characters")
    if "websites" in changes and (
        not isinstance(changes["websites"], list) or len(changes["websites"]) > 2
    ):
        raise GraphError(100, "websites: a list of at most 2 URLs")
    handle = values.get("profile_picture_handle")
    if handle:
        record = await gateway.media.access_media({line.number.id}, str(handle))
        if record is None:
            raise GraphError(100, "profile_picture_handle: upload the picture with /media first")
        changes["photo"] = record.file.media_id
    if not changes:
        raise GraphError(100, "nothing to change")
    try:
        await line.biz.update(**changes)
    except TresenError as exc:
        raise from_relay(exc) from exc
    return {"success": True}


# ---------------------------------------------------------------- registration


@post("/{node:str}/register", status_code=200, summary="Register the number (two-step PIN)")
async def register(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    values = await params(request)
    only(values, {"messaging_product", "pin", "data_localization_region"})
    pin = str(values.get("pin") or "")
    if not re.fullmatch(r"\d{6}", pin):
        raise GraphError(100, "pin: six digits") if pin else missing("pin")
    number = line.number
    if number.pin_hash and number.pin_hash != _pin_hash(number.id, pin):
        raise GraphError(133005, "Two step verification PIN mismatch")
    pin_hash, now = _pin_hash(number.id, pin), gateway.now_ms()

    async def write(txn: Txn) -> None:
        await store.set_pin(txn, number.id, pin_hash, now)

    await gateway.db.run_interaction("gw_register", write)
    number.pin_hash, number.registered_at = pin_hash, now
    return {"success": True}


@post("/{node:str}/deregister", status_code=200, summary="Deregister the number")
async def deregister(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    number = line.number

    async def write(txn: Txn) -> None:
        await store.set_pin(txn, number.id, number.pin_hash, 0)

    await gateway.db.run_interaction("gw_deregister", write)
    number.registered_at = 0
    return {"success": True}


def _pin_hash(number: str, pin: str) -> str:
    return hashlib.sha256(f"{number}:{pin}".encode()).hexdigest()


# ---------------------------------------------------------------- blocks


async def _block(request: Req, node: str, gateway: Gateway, block: bool) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    values = await params(request)
    only(values, {"messaging_product", "block_users"})
    users = values.get("block_users")
    if not isinstance(users, list) or not users or len(users) > 1000:
        raise GraphError(100, 'block_users: a list of 1 to 1000 {"user": ...}')
    done, failed = [], []
    for entry in users:
        user = (
            str(entry.get("user") or entry.get("user_id") or "") if isinstance(entry, dict) else ""
        )
        try:
            person = await gateway.resolve(line, user)
            if block:
                await line.biz.block(person.account_id)
            else:
                await line.biz.unblock(person.account_id)
        except (GraphError, TresenError) as exc:
            error = exc if isinstance(exc, GraphError) else from_relay(exc)
            failed.append({"input": user, "errors": [error.webhook_error()]})
            continue
        result = {"input": user, "user_id": person.scoped_id}
        if person.wa_id:
            result["wa_id"] = person.wa_id
        done.append(result)
    key = "added_users" if block else "removed_users"
    body: dict[str, Any] = {key: done}
    if failed:
        body["failed_users"] = failed
    return {"messaging_product": "whatsapp", "block_users": body}


@post("/{node:str}/block_users", status_code=200, summary="Block people")
async def block_users(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    return await _block(request, node, gateway, True)


@delete("/{node:str}/block_users", status_code=200, summary="Unblock people")
async def unblock_users(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    return await _block(request, node, gateway, False)


@get("/{node:str}/block_users", summary="Blocked people")
async def blocked_users(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    try:
        blocked = await line.biz.blocks()
    except TresenError as exc:
        raise from_relay(exc) from exc
    data = []
    for entry in blocked:
        person = await gateway.person(line, int(entry["account"]))
        item = {"messaging_product": "whatsapp", "user_id": person.scoped_id}
        if person.wa_id:
            item["wa_id"] = person.wa_id
        data.append(item)
    return {"data": data, "paging": {"cursors": {}}}


# ---------------------------------------------------------------- webhook subscription


async def handshake(url: str, verify_token: str) -> None:
    """Meta's verification request; the callback must echo the challenge."""
    challenge = secrets.token_hex(8)
    query = {"hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": challenge}
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(url, params=query)
    except httpx.HTTPError as exc:
        raise GraphError(2200, f"callback verification failed: cannot reach {url}: {exc}") from exc
    if response.status_code != 200 or response.text.strip() != challenge:
        raise GraphError(
            2200,
            f"callback verification failed: {url} answered HTTP {response.status_code} "
            "without the challenge (check the verify token)",
        )


@post("/{node:str}/subscribed_apps", status_code=200, summary="Set the webhook callback")
async def subscribe(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_waba(bearer(request), node)
    values = await params(request)
    only(values, {"override_callback_uri", "verify_token", "messaging_product"})
    url = str(values.get("override_callback_uri") or "")
    if not url.startswith(("http://", "https://")):
        raise (
            GraphError(100, "override_callback_uri: an http(s) URL")
            if url
            else missing("override_callback_uri")
        )
    verify = str(values.get("verify_token") or line.number.verify_token)
    await handshake(url, verify)
    await gateway.do_set_webhook(line, url, verify)
    return {"success": True}


@get("/{node:str}/subscribed_apps", summary="The webhook callback")
async def subscriptions(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_waba(bearer(request), node)
    entry: dict[str, Any] = {"whatsapp_business_api_data": {"id": line.number.id}}
    if line.number.webhook_url:
        entry["override_callback_uri"] = line.number.webhook_url
    return {"data": [entry]}


@delete("/{node:str}/subscribed_apps", status_code=200, summary="Remove the webhook callback")
async def unsubscribe(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_waba(bearer(request), node)
    await gateway.do_set_webhook(line, "", line.number.verify_token)
    return {"success": True}


# ---------------------------------------------------------------- deliveries (the outbox)


@get("/{node:str}/webhook_deliveries", summary="Webhook events: pending, delivered, dead")
async def deliveries(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    values = await params(request)
    state = str(values.get("state") or "") or None
    if state not in (None, "pending", "delivered", "dead"):
        raise GraphError(100, "state: pending, delivered or dead")
    try:
        after, limit = int(values.get("after") or 0), int(values.get("limit") or 100)
    except ValueError as exc:
        raise GraphError(100, "after and limit are numbers") from exc
    if not 1 <= limit <= 500:
        raise GraphError(100, "limit: 1 to 500")
    number = line.number.id
    rows = await gateway.db.run_interaction(
        "gw_deliveries", lambda txn: store.deliveries(txn, number, state, after, limit), write=False
    )
    data = [delivery_view(row) for row in rows]
    return {"data": data, "paging": {"cursors": {"after": data[-1]["id"]} if data else {}}}


@post(
    "/{node:str}/webhook_deliveries/{delivery:str}/replay",
    status_code=200,
    summary="Send a dead-lettered event again",
)
async def replay(
    request: Req, node: FromPath[str], delivery: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    if not delivery.isdigit() or len(delivery) > 18:
        raise unknown_node(delivery)
    number, now = line.number.id, gateway.now_ms()
    changed = await gateway.db.run_interaction(
        "gw_replay", lambda txn: store.replay(txn, number, int(delivery), now)
    )
    if not changed:
        raise GraphError(100, f"delivery {delivery} is not a dead letter of this number")
    gateway.outbox.wake()
    return {"success": True}


ROUTES = [
    get_profile,
    update_profile,
    register,
    deregister,
    block_users,
    unblock_users,
    blocked_users,
    subscribe,
    subscriptions,
    unsubscribe,
    deliveries,
    replay,
]

"""Create a business number for the gateway: a relay account and device, the business on the
relay, the device's crypto store (its key in a 0600 key file), and the Cloud API credentials.

The access token is shown once and stored as a SHA-256 hash; the app secret (the webhook
signing key) and the device token are stored as they are, in the gateway's own database.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tresen.client.api import RelayAPI
from tresen.client.business import BusinessAPI
from tresen.client.crypto.store import create_key_file
from tresen.gateway import store
from tresen.gateway.models import Bootstrap, Number
from tresen.gateway.service import crypto_paths, token_hash
from tresen.storage.engine import Database, Txn

CodeSource = Callable[[str], Awaitable[str]]


def graph_id() -> str:
    """A 15-digit numeric id, as the Graph API's."""
    return str(10**14 + secrets.randbelow(9 * 10**14))


async def create_number(
    db: Database,
    data_dir: Path,
    relay_url: str,
    phone: str,
    code: CodeSource,
    *,
    name: str,
    vertical: str = "UNDEFINED",
    base_url: str = "",
    request_code: bool = True,
) -> tuple[Number, Bootstrap]:
    """Register ``phone`` on the relay (the code comes from ``code(normalised phone)``; with
    ``request_code=False`` it was requested before), make it a business named ``name``, and
    record it; returns the number and what to print."""
    async with RelayAPI(relay_url) as api:
        normalised = str((await api.request_code(phone))["phone"]) if request_code else phone
        body = await api.register(normalised, await code(normalised), "tresen business gateway")
    async with RelayAPI(relay_url, str(body["token"])) as api:
        biz = BusinessAPI(api)
        await biz.create(display_name=name, vertical=vertical)
        await biz.account()  # makes every policy gate know the business at once
    return await record_number(
        db,
        data_dir,
        relay_url,
        account_id=int(body["account_id"]),
        device_id=int(body["device_id"]),
        device_token=str(body["token"]),
        phone=normalised,
        base_url=base_url,
    )


async def record_number(
    db: Database,
    data_dir: Path,
    relay_url: str,
    *,
    account_id: int,
    device_id: int,
    device_token: str,
    phone: str,
    base_url: str = "",
) -> tuple[Number, Bootstrap]:
    """Record an existing business device as a gateway number (new Cloud API credentials)."""
    access_token = "TRGW" + secrets.token_urlsafe(32)
    number = Number(
        id=graph_id(),
        waba_id=graph_id(),
        relay_url=relay_url.rstrip("/"),
        account_id=account_id,
        device_id=device_id,
        device_token=device_token,
        phone=phone,
        token_hash=token_hash(access_token),
        app_secret=secrets.token_hex(16),
        verify_token=secrets.token_urlsafe(12),
        created_at=int(time.time() * 1000),
    )
    _, key_file = crypto_paths(data_dir, number.id)
    create_key_file(key_file)
    row = (
        number.id,
        number.waba_id,
        number.relay_url,
        number.account_id,
        number.device_id,
        number.device_token,
        number.phone,
        number.token_hash,
        number.app_secret,
        number.verify_token,
        number.webhook_url,
        number.pin_hash,
        number.registered_at,
        number.created_at,
    )

    async def write(txn: Txn) -> None:
        await store.insert_number(txn, row)

    await db.run_interaction("gw_number_create", write)
    shown = Bootstrap(
        phone_number_id=number.id,
        waba_id=number.waba_id,
        access_token=access_token,
        app_secret=number.app_secret,
        verify_token=number.verify_token,
        base_url=base_url,
        display_phone_number=number.digits,
        relay_account_id=account_id,
    )
    return number, shown

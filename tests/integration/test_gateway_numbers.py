"""One gateway, two business numbers: each has its own token, secret, webhook and media, and
neither can reach the other's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Harness, fresh_phone
from tests.integration.gateway_harness import Business, Receiver, Uvicorn, person, start_gateway
from tresen.gateway.bootstrap import create_number


@pytest.fixture
async def biz(relay: Harness, db_url: str, tmp_path: Path) -> AsyncIterator[Business]:
    async for business in start_gateway(relay, db_url, tmp_path):
        yield business


async def test_two_numbers_are_isolated(biz: Business, relay: Harness, tmp_path: Path) -> None:
    async def code(phone: str) -> str:
        return relay.sender.codes[phone]

    assert biz.server.app.db is not None
    number, second = await create_number(
        biz.server.app.db, tmp_path / "gw", relay.url, fresh_phone(), code, name="Beta Bank"
    )
    await biz.server.gateway.open_line(number)
    first = biz.boot
    assert second.app_secret != first.app_secret and second.waba_id != first.waba_id
    hooks = []
    servers = []
    try:
        async with httpx.AsyncClient(
            base_url=biz.url, headers={"Authorization": f"Bearer {second.access_token}"}
        ) as http2:
            for boot, client in ((first, biz.http), (second, http2)):
                hook = Receiver(boot.app_secret, boot.verify_token)
                server = Uvicorn(hook.app())
                await server.start()
                servers.append(server)
                hooks.append(hook)
                r = await client.post(
                    f"/v22.0/{boot.waba_id}/subscribed_apps",
                    json={"override_callback_uri": f"{server.url}/hook"},
                )
                assert r.status_code == 200, r.text
            # a token reaches only its own number, WABA and media
            for path in (f"/{first.phone_number_id}/messages", f"/{first.waba_id}/subscribed_apps"):
                r = await http2.post(path, json={"messaging_product": "whatsapp"})
                assert r.json()["error"]["error_subcode"] == 33, path
            files = {"file": ("a.png", b"\x89PNG....", "image/png")}
            r = await biz.http.post(f"/{first.phone_number_id}/media", files=files)
            media = r.json()["id"]
            assert (await http2.get(f"/{media}")).json()["error"]["error_subcode"] == 33
            assert (await http2.get(f"/media-bytes/{media}")).status_code == 400

            sheena = await person(relay, tmp_path)
            try:
                await sheena.send(first.relay_account_id, "to Acme")
                await sheena.send(second.relay_account_id, "to Beta")
                one = await hooks[0].next("messages")
                two = await hooks[1].next("messages")
            finally:
                await sheena.close()
            assert one["messages"][0]["text"]["body"] == "to Acme"
            assert two["messages"][0]["text"]["body"] == "to Beta"
            assert one["metadata"]["phone_number_id"] == first.phone_number_id
            assert two["metadata"]["phone_number_id"] == second.phone_number_id
            # each business sees the person under its own scoped id
            assert one["contacts"][0]["user_id"] != two["contacts"][0]["user_id"]
            assert hooks[0].rejected == hooks[1].rejected == 0
    finally:
        for server in servers:
            await server.stop()

"""A gateway restart loses nothing: numbers, tokens, the crypto sessions and the pending
webhook events come back from its database and data folder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.conftest import POSTGRES, Harness
from tests.integration.gateway_harness import Receiver, Uvicorn, next_message, person, start_gateway
from tresen.gateway.app import GatewayServer
from tresen.gateway.service import GatewaySettings
from tresen.gateway.webhooks.outbox import RetryPolicy


async def test_restart_keeps_sessions_and_outbox(
    relay: Harness, db_url: str, tmp_path: Path
) -> None:
    sheena = await person(relay, tmp_path)
    try:
        async for biz in start_gateway(relay, db_url, tmp_path):
            boot = biz.boot
            await sheena.send(boot.relay_account_id, "before the restart")
            async with asyncio.timeout(10):  # recorded, waiting for a callback URL
                while not (
                    await biz.http.get(f"/{boot.phone_number_id}/webhook_deliveries")
                ).json()["data"]:
                    await asyncio.sleep(0.05)
        # the same database and data folder, a new process-worth of state
        gw_db = db_url if POSTGRES else f"sqlite:///{tmp_path}/gateway.db"
        retry = RetryPolicy(base_seconds=0.05, cap_seconds=0.2)
        server = GatewayServer(
            gw_db, tmp_path / "gw", settings=GatewaySettings(tmp_path / "gw", retry=retry)
        )
        await server.start()
        hook = Receiver(boot.app_secret, boot.verify_token)
        hook_server = Uvicorn(hook.app())
        await hook_server.start()
        headers = {"Authorization": f"Bearer {boot.access_token}"}
        try:
            async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
                r = await http.post(
                    f"/v22.0/{boot.waba_id}/subscribed_apps",
                    json={"override_callback_uri": f"{hook_server.url}/hook"},
                )
                assert r.status_code == 200, r.text  # the stored verify token
                value = await hook.next("messages")
                assert value["messages"][0]["text"]["body"] == "before the restart"
                to = value["contacts"][0]["user_id"]
                # the Olm sessions survived: both directions still decrypt
                await sheena.send(boot.relay_account_id, "after the restart")
                value = await hook.next("messages")
                assert value["messages"][0]["text"]["body"] == "after the restart"
                r = await http.post(
                    f"/{boot.phone_number_id}/messages",
                    json={"messaging_product": "whatsapp", "to": to, "text": {"body": "hi"}},
                )
                assert r.status_code == 200, r.text
                assert (await next_message(sheena)).content["body"] == "hi"
        finally:
            await hook_server.stop()
            await server.stop()
    finally:
        await sheena.close()

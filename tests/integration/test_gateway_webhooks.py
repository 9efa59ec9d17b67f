"""Webhook delivery: the handshake, retries with backoff, ordering per conversation, dead
letters the business can list and replay, and events kept while no callback is set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Harness
from tests.integration.gateway_harness import Business, Receiver, Uvicorn, person, start_gateway


@pytest.fixture
async def biz(relay: Harness, db_url: str, tmp_path: Path) -> AsyncIterator[Business]:
    async for business in start_gateway(relay, db_url, tmp_path, retention_seconds=1.5):
        yield business


@pytest.fixture
async def receiver(biz: Business) -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver(biz.boot.app_secret, biz.boot.verify_token)
    server = Uvicorn(hook.app())
    await server.start()
    try:
        yield hook, f"{server.url}/hook"
    finally:
        await server.stop()


async def subscribe(biz: Business, url: str, token: str) -> Any:
    return await biz.http.post(
        f"/v22.0/{biz.boot.waba_id}/subscribed_apps",
        json={"override_callback_uri": url, "verify_token": token},
    )


async def deliveries(biz: Business, state: str = "") -> list[dict[str, Any]]:
    r = await biz.http.get(
        f"/{biz.boot.phone_number_id}/webhook_deliveries", params={"state": state} if state else {}
    )
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


async def test_handshake_must_echo_the_challenge(
    biz: Business, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    r = await subscribe(biz, url, "not-the-token")
    assert r.status_code == 400 and r.json()["error"]["code"] == 2200
    r = await biz.http.get(f"/v22.0/{biz.boot.waba_id}/subscribed_apps")
    assert "override_callback_uri" not in r.json()["data"][0]
    r = await subscribe(biz, url, biz.boot.verify_token)
    assert r.status_code == 200, r.text
    r = await biz.http.get(f"/v22.0/{biz.boot.waba_id}/subscribed_apps")
    assert r.json()["data"][0]["override_callback_uri"] == url


async def test_kept_until_subscribed_then_retried_in_order(
    biz: Business, receiver: tuple[Receiver, str], relay: Harness, tmp_path: Path
) -> None:
    hook, url = receiver
    sheena = await person(relay, tmp_path)
    try:
        for n in range(5):
            await sheena.send(biz.boot.relay_account_id, f"message {n}")
        async with asyncio.timeout(10):
            while len(await deliveries(biz, "pending")) < 5:
                await asyncio.sleep(0.05)
        pending = await deliveries(biz, "pending")
        assert "no webhook callback URL" in pending[0]["last_error"]
        hook.fail_next = 3  # the first attempts fail: the order must still hold
        assert (await subscribe(biz, url, biz.boot.verify_token)).status_code == 200
        bodies = [(await hook.next("messages"))["messages"][0]["text"]["body"] for _ in range(5)]
        assert bodies == [f"message {n}" for n in range(5)]
        assert hook.rejected == 0
        async with asyncio.timeout(10):  # the worker records each success after the answer
            while len(done := await deliveries(biz, "delivered")) < 5:
                await asyncio.sleep(0.05)
        assert len(done) == 5 and done[0]["attempts"] >= 4 and done[0]["last_error"] == ""
        # delivered events are forgotten after the retention, not before
        gateway = biz.server.gateway
        assert await gateway.do_prune() == (0, 0)
        later = gateway.now_ms() + 10_000
        assert await gateway.do_prune(now_ms=later) == (5, 0)
        assert await deliveries(biz) == []
    finally:
        await sheena.close()


async def test_dead_letters_listed_and_replayed(
    biz: Business, receiver: tuple[Receiver, str], relay: Harness, tmp_path: Path
) -> None:
    hook, url = receiver
    assert (await subscribe(biz, url, biz.boot.verify_token)).status_code == 200
    hook.fail_next = 10**6
    sheena = await person(relay, tmp_path)
    try:
        await sheena.send(biz.boot.relay_account_id, "lost?")
        async with asyncio.timeout(15):
            while not await deliveries(biz, "dead"):
                await asyncio.sleep(0.1)
        (dead,) = await deliveries(biz, "dead")
        assert dead["last_status"] == 500 and "HTTP 500" in dead["last_error"]
        assert dead["attempts"] >= 2 and "lost?" in dead["body"]
        # a dead letter no longer holds back the conversation
        hook.fail_next = 0
        await sheena.send(biz.boot.relay_account_id, "after")
        assert (await hook.next("messages"))["messages"][0]["text"]["body"] == "after"
        r = await biz.http.post(
            f"/{biz.boot.phone_number_id}/webhook_deliveries/{dead['id']}/replay"
        )
        assert r.status_code == 200, r.text
        assert (await hook.next("messages"))["messages"][0]["text"]["body"] == "lost?"
        r = await biz.http.post(
            f"/{biz.boot.phone_number_id}/webhook_deliveries/{dead['id']}/replay"
        )
        assert r.status_code == 400  # not dead any more
    finally:
        await sheena.close()

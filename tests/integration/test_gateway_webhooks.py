"""Webhook delivery: the handshake, retries with backoff, ordering per conversation, dead
letters the business can list and replay, events kept while no callback is set, and the outbox
on its own: events behind a pending retry, a restart with events pending."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Harness
from tests.integration.gateway_harness import Business, Receiver, Uvicorn, person, start_gateway
from tresen.gateway import store
from tresen.gateway.models import Number
from tresen.gateway.webhooks.outbox import Outbox, RetryPolicy
from tresen.storage.engine import Database, Txn, open_database


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


# ---------------------------------------------------------------- the outbox on its own

HOUR = 3600.0


@dataclass
class Lone:
    """An outbox on a database of its own, its callback a :class:`Receiver` on port 0, and a
    clock the test can move forward (retries are an hour apart: none comes by itself)."""

    db: Database
    hook: Receiver
    number: Number
    shift: list[float]

    def outbox(self) -> Outbox:
        policy = RetryPolicy(base_seconds=HOUR, cap_seconds=HOUR)
        return Outbox(
            self.db, lambda _: self.number, policy, clock=lambda: time.time() + self.shift[0]
        )

    async def rows(self) -> list[dict[str, Any]]:
        async def read(txn: Txn) -> list[Any]:
            return await store.deliveries(txn, self.number.id, None, 0, 1000)

        rows = await self.db.run_interaction("test_deliveries", read, write=False)
        return [{"n": json.loads(r[3])["n"], "state": r[4], "attempts": int(r[5])} for r in rows]

    async def until(self, n: str, state: str, attempts: int = 1) -> None:
        async with asyncio.timeout(10):
            while not any(
                r["n"] == n and r["state"] == state and r["attempts"] >= attempts
                for r in await self.rows()
            ):
                await asyncio.sleep(0.02)

    async def received(self, count: int) -> list[str]:
        """The next ``count`` events' names, as they arrived."""
        async with asyncio.timeout(10):
            return [str((await self.hook.events.get())["n"]) for _ in range(count)]

    def sent(self) -> list[str]:
        return [json.loads(body)["n"] for body in self.hook.bodies]


@pytest.fixture
async def lone(db_url: str) -> AsyncIterator[Lone]:
    db = open_database(db_url)
    await db.open()
    await store.migrate(db)
    hook = Receiver("app-secret", "verify-token")
    server = Uvicorn(hook.app())
    await server.start()
    number = Number(
        id="1001", waba_id="2001", relay_url="", account_id=1, device_id=1, device_token="",
        phone="+4915100000000", token_hash="", app_secret="app-secret",
        verify_token="verify-token", webhook_url=f"{server.url}/hook",
    )  # fmt: skip
    try:
        yield Lone(db, hook, number, [0.0])
    finally:
        await server.stop()
        await db.close()


async def add(outbox: Outbox, conversation: str, n: str) -> None:
    await outbox.add("1001", conversation, {"n": n})


async def test_fresh_events_wait_behind_a_pending_retry(lone: Lone) -> None:
    outbox = lone.outbox()
    await outbox.start()
    try:
        lone.hook.fail_next = 1
        await add(outbox, "c", "c0")
        await lone.until("c0", "pending")  # failed once: retried in an hour
        # handed off while c0 waits: they wait too; another conversation goes on
        await add(outbox, "c", "c1")
        await add(outbox, "c", "c2")
        await add(outbox, "d", "d0")
        assert await lone.received(1) == ["d0"]
        await lone.until("d0", "delivered")
        waiting = {r["n"]: r for r in await lone.rows()}
        assert waiting["c1"] == {"n": "c1", "state": "pending", "attempts": 0}
        assert waiting["c2"] == {"n": "c2", "state": "pending", "attempts": 0}
        assert lone.sent() == ["d0"]
        # nothing is due until the retry: the worker waits for it without reading the table
        # (it once read it over and over, a core busy, as c1 was due but held back)
        await asyncio.sleep(0.2)
        reads = outbox.rounds
        await asyncio.sleep(0.2)
        assert outbox.rounds - reads <= 1
        # the retry's time comes: c0 and then what waited behind it, in order
        lone.shift[0] = 2 * HOUR
        outbox.wake()
        assert await lone.received(3) == ["c0", "c1", "c2"]
        await lone.until("c2", "delivered")
        await add(outbox, "c", "c3")
        await add(outbox, "d", "d1")
        assert sorted(await lone.received(2)) == ["c3", "d1"]
        assert lone.sent()[:4] == ["d0", "c0", "c1", "c2"]
    finally:
        await outbox.close()


async def test_restart_sends_the_pending_events_first(lone: Lone) -> None:
    first = lone.outbox()
    await first.start()
    lone.hook.fail_next = 10**6
    try:
        await add(first, "c", "c0")
        await add(first, "c", "c1")  # behind c0's retry
        await add(first, "d", "d0")
        await lone.until("c0", "pending")
        await lone.until("d0", "pending")
    finally:
        await first.close()
    assert lone.sent() == []
    # a new process, once the retries are due, with an event written as it starts
    lone.hook.fail_next = 0
    lone.shift[0] = 2 * HOUR
    second = lone.outbox()
    await second.start()
    try:
        await add(second, "c", "c2")
        got = await lone.received(4)
        assert [n for n in got if n.startswith("c")] == ["c0", "c1", "c2"]
        assert "d0" in got
        await lone.until("c2", "delivered")
        assert all(r["state"] == "delivered" for r in await lone.rows())
        await add(second, "c", "c3")
        assert await lone.received(1) == ["c3"]
        assert sorted(lone.sent()) == ["c0", "c1", "c2", "c3", "d0"]
    finally:
        await second.close()

"""Limits: full queues are refused, floods are rate-limited, nothing is dropped silently."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from tresen.errors import LimitExceeded
from tresen.protocol.codes import Code

from ..conftest import Harness
from .test_envelopes import raw_socket


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"max_queue_per_device": 5, "frames_per_second": 1000, "frame_burst": 50}


async def test_full_queue_is_refused_not_dropped(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    conn = await alice.connect()
    for n in range(5):
        await conn.send(bob.account_id, {bob.device_id: b"%d" % n})
    with pytest.raises(LimitExceeded) as caught:
        await conn.send(bob.account_id, {bob.device_id: b"one too many"})
    assert caught.value.code == Code.QUEUE_FULL
    assert len(await relay.fetch_queue(bob.device_id)) == 5


async def test_flood_is_rate_limited_without_closing(relay: Harness) -> None:
    alice = await relay.new_device()
    ws = await raw_socket(relay, alice.token)
    for n in range(200):
        await ws.send(msgspec.json.encode({"t": "ping", "n": n}).decode())
    frames = [msgspec.json.decode(await ws.recv()) for _ in range(200)]
    limited = [f for f in frames if f["t"] == "error"]
    assert limited and all(f["code"] == "rate_limited" for f in limited)
    assert "retry_after" in limited[0]["fields"]
    await asyncio.sleep(0.2)
    await ws.send(msgspec.json.encode({"t": "ping", "n": 999}).decode())
    assert msgspec.json.decode(await ws.recv()) == {"t": "pong", "n": 999}
    await ws.close()

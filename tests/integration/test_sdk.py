"""The SDK's blocking facade, its coalesced writes, and the SMS-gateway webhook sender against a
real HTTP server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from tresen.client import Credentials, Device
from tresen.client.connection import CoalescingConnection
from tresen.errors import Unavailable
from tresen.relay.accounts.senders import WebhookSender

from ..conftest import Harness


async def test_sync_device_sends_and_receives(relay: Harness) -> None:
    a, b = await relay.new_device(), await relay.new_device()

    def blocking() -> bytes:
        with (
            Device(
                Credentials(
                    url=relay.url, account_id=a.account_id, device_id=a.device_id, token=a.token
                )
            ) as alice,
            Device(
                Credentials(
                    url=relay.url, account_id=b.account_id, device_id=b.device_id, token=b.token
                )
            ) as bob,
        ):
            alice.connect()
            bob.connect()
            alice.send(b.account_id, lambda device: b"sync hello")
            return bob.recv().body

    assert await asyncio.to_thread(blocking) == b"sync hello"


@pytest.fixture
def sms_gateway() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            received.append(body)
            self.send_response(500 if body["to"].endswith("0") else 200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/sms", received
    server.shutdown()
    server.server_close()


async def test_webhook_sender_posts_the_code(sms_gateway: tuple[str, list[Any]]) -> None:
    url, received = sms_gateway
    sender = WebhookSender(url)  # one client for every code, closed at the relay's shutdown
    await sender.send("+4915123456781", "123456")
    await sender.send("+4915123456782", "654321")
    assert received == [
        {"to": "+4915123456781", "code": "123456", "text": "Your tresen code: 123456"},
        {"to": "+4915123456782", "code": "654321", "text": "Your tresen code: 654321"},
    ]
    with pytest.raises(Unavailable, match="SMS gateway"):
        await sender.send("+4915123456780", "123456")
    await sender.aclose()


async def test_a_second_copy_of_a_device_takes_over_and_the_first_stops(relay: Harness) -> None:
    """One connection per device: the newest wins (4409), and the SDK of the older copy stops
    instead of reconnecting, since the two would only keep replacing each other."""
    alice, bob = await relay.new_device(), await relay.new_device()
    first = await bob.connect()
    second = await bob.connect()
    async with asyncio.timeout(10):
        while first.fatal is None:
            await asyncio.sleep(0.02)
    assert first.fatal.code == "connected_elsewhere"
    conn = await alice.connect()
    await conn.send(bob.account_id, {bob.device_id: b"to the copy that took over"})
    item = await second.recv()
    assert item.body == b"to the copy that took over"
    await asyncio.sleep(0.3)
    assert first.reconnects == 0 and second.fatal is None


class Counting(CoalescingConnection):
    """Counts the frames of each write."""

    def _flush(self) -> None:
        if self._out:
            writes.append(len(self._out))
        super()._flush()


writes: list[int] = []


async def test_frames_sent_in_one_loop_turn_leave_in_one_write() -> None:
    got: list[bytes] = []
    closed = asyncio.Event()

    async def record(ws: ServerConnection) -> None:
        async for message in ws:
            got.append(message if isinstance(message, bytes) else message.encode())
        closed.set()

    async with serve(record, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await connect(f"ws://127.0.0.1:{port}", create_connection=Counting)
        for i in range(50):  # no await suspends here: one turn of the loop
            await ws.send(i.to_bytes(2, "big"))
        await asyncio.sleep(0)  # the turn ends: one write
        await ws.send(b"last")
        await ws.close()  # what is queued goes before the close frame
        await asyncio.wait_for(closed.wait(), 10)
    assert 50 in writes, writes  # the 50 frames of the turn in one write
    assert got == [i.to_bytes(2, "big") for i in range(50)] + [b"last"]

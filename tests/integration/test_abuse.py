"""Abuse on raw sockets against a real relay: connection limits, slow-loris, oversized frames,
floods. Each limit is hit on purpose, and well-behaved clients beside it carry on unaffected.

Addresses: every test socket comes from 127.0.0.1, which uvicorn trusts as a proxy by default,
so ``X-Forwarded-For`` gives each raw socket the client address a proxy would have named.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import websockets

from tresen.client.secure import Message, SecureDevice, Undecryptable
from tresen.relay.transport import wsframes as wf
from tresen.relay.transport.ws import OUTBOX_HIGH, Connection

from ..conftest import DeviceHandle, Harness
from ._policy import make_business
from .test_websocket import masked, read_frame, tcp

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


# ---------------------------------------------------------------- raw WebSocket helpers


def upgrade_request(address: str | None = None, path: str = "/v1/ws") -> bytes:
    forwarded = f"X-Forwarded-For: {address}\r\n" if address else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{forwarded}\r\n"
    ).encode()


async def try_upgrade(relay: Harness, address: str | None = None) -> tuple[Reader, Writer, bytes]:
    """Send an upgrade; the response head (``101`` or a refusal) with the socket."""
    reader, writer = await tcp(relay)
    writer.write(upgrade_request(address))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    return reader, writer, head


async def ws_open(
    relay: Harness, address: str | None = None, rcvbuf: int = 0
) -> tuple[Reader, Writer]:
    """An upgraded socket; ``rcvbuf``: a small receive buffer (no autotuning) for this side."""
    if rcvbuf:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", relay.server.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(upgrade_request(address))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    else:
        reader, writer, head = await try_upgrade(relay, address)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


def app_frame(frame: dict[str, Any]) -> bytes:
    return masked(wf.OP_BINARY, msgspec.msgpack.encode(frame))


async def next_frame(reader: Reader) -> dict[str, Any]:
    """The next application frame, or ``{"t": "close", "code", "reason"}``; pings skipped."""
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(reader), 30)
        if opcode == wf.OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if payload else 1005
            return {"t": "close", "code": code, "reason": payload[2:].decode()}
        if opcode in (wf.OP_BINARY, wf.OP_TEXT):
            decoded: dict[str, Any] = msgspec.msgpack.decode(payload)
            return decoded


async def hello(reader: Reader, writer: Writer, token: str) -> dict[str, Any]:
    writer.write(app_frame({"t": "hello", "token": token}))
    return await next_frame(reader)


async def device_socket(
    relay: Harness, device: DeviceHandle, address: str | None = None, rcvbuf: int = 0
) -> tuple[Reader, Writer]:
    reader, writer = await ws_open(relay, address, rcvbuf)
    welcome = await hello(reader, writer, device.token)
    assert welcome["t"] == "welcome", welcome
    return reader, writer


async def closed_by_relay(reader: Reader) -> bytes:
    """Everything the relay still sends until it closes the socket."""
    return await asyncio.wait_for(reader.read(), 30)


def shut(*writers: Writer) -> None:
    for writer in writers:
        writer.close()


async def eventually(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Wait until ``check()`` holds (the relay notices closed sockets a moment later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


def hub_is_empty(relay: Harness) -> Callable[[], bool]:
    hub = relay.server.app.hub
    return lambda: (
        hub.sockets == 0
        and not hub.per_address
        and not hub.per_account
        and not hub.per_device
        and not hub.connections
    )


async def exchange(relay: Harness, a: DeviceHandle, b: DeviceHandle, n: int) -> None:
    """``n`` messages each way between two devices over the SDK, every one delivered."""
    conn_a, conn_b = await a.connect(), await b.connect()
    for i in range(n):
        await conn_a.send(b.account_id, {b.device_id: b"a%d" % i}, id=f"a{i}")
        await conn_b.send(a.account_id, {a.device_id: b"b%d" % i}, id=f"b{i}")

    async def messages(conn: Any) -> list[str]:  # receipts ("delivered") come in between
        ids: list[str] = []
        while len(ids) < n:
            item = await conn.recv(timeout=30)
            if item.kind == "message":
                ids.append(item.id)
        return ids

    assert await messages(conn_b) == [f"a{i}" for i in range(n)]
    assert await messages(conn_a) == [f"b{i}" for i in range(n)]


# ---------------------------------------------------------------- connection limits


class TestConnectionLimits:
    @pytest.fixture
    def relay_settings(self) -> dict[str, Any]:
        return {
            "max_connections": 12,
            "max_connections_per_address": 3,
            "max_connections_per_account": 2,
        }

    async def test_per_address_limit_refuses_the_upgrade_with_429(self, relay: Harness) -> None:
        alice = await relay.new_device()
        sockets = [await ws_open(relay, "198.51.100.7") for _ in range(3)]
        reader, writer, head = await try_upgrade(relay, "198.51.100.7")
        assert head.startswith(b"HTTP/1.1 429 "), head
        assert b"Retry-After: 5" in head
        assert b"too many connections from 198.51.100.7" in await closed_by_relay(reader)
        shut(writer)
        # another address, and the device itself, are unaffected
        other = await ws_open(relay, "198.51.100.8")
        _, w = await device_socket(relay, alice)
        # one closes: its address may open one again
        shut(sockets.pop()[1])
        hub = relay.server.app.hub
        await eventually(lambda: hub.per_address.get("198.51.100.7") == 2, "the close counted")
        sockets.append(await ws_open(relay, "198.51.100.7"))
        shut(w, other[1], *(s[1] for s in sockets))
        await eventually(hub_is_empty(relay), "every count back to zero")

    async def test_node_cap_refuses_with_503_and_http_goes_on(self, relay: Harness) -> None:
        sockets = [await ws_open(relay, f"203.0.113.{i}") for i in range(12)]
        _, writer, head = await try_upgrade(relay, "203.0.113.200")
        assert head.startswith(b"HTTP/1.1 503 "), head
        assert b"Retry-After" in head
        shut(writer)
        async with relay.client() as http:  # the HTTP API is not a WebSocket: it goes on
            assert (await http.get("/healthz")).status_code == 200
        shut(sockets.pop()[1])
        await eventually(lambda: relay.server.app.hub.sockets == 11, "the close counted")
        sockets.append(await ws_open(relay, "203.0.113.200"))
        shut(*(s[1] for s in sockets))
        await eventually(hub_is_empty(relay), "every count back to zero")

    async def test_the_newest_connection_of_a_device_replaces_the_oldest(
        self, relay: Harness
    ) -> None:
        alice, bob = await relay.new_device(), await relay.new_device()
        old_r, old_w = await device_socket(relay, alice)
        new_r, new_w = await device_socket(relay, alice)
        assert await next_frame(old_r) == {
            "t": "close",
            "code": 4409,
            "reason": "connected elsewhere",
        }
        await closed_by_relay(old_r)
        sender = await bob.connect()
        await sender.send(alice.account_id, {alice.device_id: b"to the new one"}, id="m1")
        deliver = await next_frame(new_r)
        assert deliver["t"] == "deliver" and deliver["items"][0]["id"] == "m1"
        hub = relay.server.app.hub
        assert len(hub.per_device[alice.device_id]) == 1
        assert hub.per_account[alice.account_id] == 1
        shut(old_w, new_w)

    async def test_per_account_limit_refuses_after_hello_with_4429(self, relay: Harness) -> None:
        alice = await relay.new_device()
        second, third = await relay.link_device(alice), await relay.link_device(alice)
        one = await device_socket(relay, alice)
        two = await device_socket(relay, second)
        reader, writer = await ws_open(relay)
        error = await hello(reader, writer, third.token)
        assert error["t"] == "error" and error["code"] == "too_many_connections", error
        assert error["fields"]["retry_after"] > 0
        close = await next_frame(reader)
        assert close["t"] == "close" and close["code"] == 4429
        shut(writer)
        # a device already connected may still reconnect (it replaces itself: no new slot)
        again = await device_socket(relay, second)
        assert (await next_frame(two[0]))["code"] == 4409
        # one device leaves: the third may come in
        shut(one[1])
        hub = relay.server.app.hub
        await eventually(lambda: hub.per_account.get(alice.account_id) == 1, "the close counted")
        three = await device_socket(relay, third)
        shut(two[1], again[1], three[1])
        await eventually(hub_is_empty(relay), "every count back to zero")

    async def test_counts_are_exact_under_concurrent_connects_and_closes(
        self, relay: Harness
    ) -> None:
        # 6 tries at once from one address limited to 3: exactly 3 get in, whatever the order
        tries = await asyncio.gather(*(try_upgrade(relay, "192.0.2.1") for _ in range(6)))
        statuses = sorted(head.split(b" ")[1] for _, _, head in tries)
        assert statuses == [b"101"] * 3 + [b"429"] * 3
        shut(*(w for _, w, _ in tries))
        await eventually(hub_is_empty(relay), "every count back to zero")
        # many rounds of connect / hello / replace / abort racing each other
        devices = [await relay.new_device() for _ in range(3)]

        async def churn(i: int) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                _, writer, head = await try_upgrade(relay, f"192.0.2.{10 + i % 4}")
                if head.startswith(b"HTTP/1.1 101 ") and i % 3:
                    writer.write(app_frame({"t": "hello", "token": devices[i % 3].token}))
                    await asyncio.sleep(0.01 * (i % 5))
                if i % 2:
                    writer.transport.abort()  # reset, no close handshake
                else:
                    writer.close()

        for _ in range(3):
            await asyncio.gather(*(churn(i) for i in range(24)))
        await eventually(hub_is_empty(relay), "every count back to zero")
        presence = relay.services.presence.online
        await eventually(
            lambda: all(presence.get(d.account_id, 0) == 0 for d in devices),
            "presence back to offline",
        )
        # and the limits hold exactly as before
        tries = await asyncio.gather(*(try_upgrade(relay, "192.0.2.1") for _ in range(4)))
        assert sorted(head.split(b" ")[1] for _, _, head in tries) == [b"101"] * 3 + [b"429"]
        shut(*(w for _, w, _ in tries))
        await eventually(hub_is_empty(relay), "every count back to zero")


class TestAsgiConnectionLimits:
    """``websocket = "asgi"`` counts the same way; a refusal closes before the accept (403)."""

    @pytest.fixture
    def relay_settings(self) -> dict[str, Any]:
        return {"websocket": "asgi", "max_connections_per_address": 1}

    async def test_per_address_limit_over_asgi(self, relay: Harness) -> None:
        url = relay.url.replace("http", "ws") + "/v1/ws"
        first = await websockets.connect(url)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url)
        assert refused.value.response.status_code == 403
        await first.close()
        await eventually(hub_is_empty(relay), "the close counted")
        again = await websockets.connect(url)
        await again.close()


# ---------------------------------------------------------------- slow-loris


SLOW = 0.25  # seconds between the bytes a slow socket drips


class TestSlowLoris:
    @pytest.fixture
    def relay_settings(self) -> dict[str, Any]:
        return {
            "request_head_timeout_seconds": 2.0,
            "hello_timeout_seconds": 4.0,
            "receive_timeout_seconds": 2.0,
            "receive_min_bytes_per_second": 1000,
            "max_connections_per_address": 1000,
        }

    async def test_slow_sockets_are_closed_and_real_clients_go_on(self, relay: Harness) -> None:
        alice, bob = await relay.new_device(), await relay.new_device()
        stalled_devices = [await relay.new_device() for _ in range(10)]
        stop = asyncio.Event()

        async def drip(writer: Writer, data: bytes) -> None:
            with contextlib.suppress(OSError):
                for i in range(len(data)):
                    if stop.is_set() or writer.is_closing():
                        return
                    writer.write(data[i : i + 1])
                    await asyncio.sleep(SLOW)

        drippers: list[asyncio.Task[None]] = []

        async def silent() -> bytes:
            reader, writer = await tcp(relay)
            try:
                return await closed_by_relay(reader)
            finally:
                shut(writer)

        async def slow_head() -> bytes:
            reader, writer = await tcp(relay)
            drippers.append(asyncio.create_task(drip(writer, upgrade_request())))
            try:
                return await closed_by_relay(reader)
            finally:
                shut(writer)

        async def slow_body() -> bytes:
            reader, writer = await tcp(relay)
            writer.write(
                b"POST /v1/accounts/code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: 100000\r\n\r\n"
            )
            drippers.append(asyncio.create_task(drip(writer, b" " * 100_000)))
            try:
                return await closed_by_relay(reader)
            finally:
                shut(writer)

        async def no_hello() -> dict[str, Any]:
            reader, writer = await ws_open(relay)
            try:
                return await next_frame(reader)
            finally:
                shut(writer)

        async def mid_frame(token: str | None) -> dict[str, Any]:
            reader, writer = await ws_open(relay)
            if token is not None:
                assert (await hello(reader, writer, token))["t"] == "welcome"
            # a frame header announcing 1000 bytes, then the payload a byte at a time
            frame = masked(wf.OP_BINARY, b"\x81\xa1t\xa4ping" + b"x" * 992)
            writer.write(frame[:8])
            drippers.append(asyncio.create_task(drip(writer, frame[8:])))
            try:
                return await next_frame(reader)
            finally:
                shut(writer)

        slow: list[Awaitable[Any]] = []
        slow += [silent() for _ in range(40)]
        slow += [slow_head() for _ in range(60)]
        slow += [slow_body() for _ in range(30)]
        slow += [no_hello() for _ in range(40)]
        slow += [mid_frame(None) for _ in range(30)]
        slow += [mid_frame(d.token) for d in stalled_devices]
        assert len(slow) >= 200
        waiting = asyncio.gather(*slow)
        # meanwhile real devices connect, message each other and use the HTTP API
        await exchange(relay, alice, bob, 25)
        carol = await relay.new_device()
        r, w = await device_socket(relay, carol)
        writer_ping = app_frame({"t": "ping", "n": 7})
        w.write(writer_ping)
        assert await next_frame(r) == {"t": "pong", "n": 7}
        assert (await alice.http.get("/v1/me")).status_code == 200

        answers = await waiting
        stop.set()
        await asyncio.gather(*drippers, return_exceptions=True)
        silent_answers, rest = answers[:40], answers[40:]
        head_answers, rest = rest[:60], rest[60:]
        body_answers, rest = rest[:30], rest[30:]
        hello_answers, rest = rest[:40], rest[40:]
        frame_answers, device_answers = rest[:30], rest[30:]
        assert silent_answers == [b""] * 40  # nothing said: hung up without a word
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in head_answers), head_answers[0]
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in body_answers), body_answers[0]
        assert all(
            a == {"t": "close", "code": 4408, "reason": "no hello in time"} for a in hello_answers
        )
        assert all(a["t"] == "close" and a["code"] == 4408 for a in frame_answers), frame_answers
        assert all(
            a == {"t": "close", "code": 4408, "reason": "message too slow"} for a in device_answers
        ), device_answers
        # nothing of theirs is held: only carol's and the SDK pair's sockets are counted
        hub = relay.server.app.hub
        await eventually(lambda: hub.sockets == 3, "the slow sockets uncounted")
        assert set(hub.per_device) == {alice.device_id, bob.device_id, carol.device_id}
        # and the pair still talks
        w.write(app_frame({"t": "ping", "n": 8}))
        assert await next_frame(r) == {"t": "pong", "n": 8}
        shut(w)

    async def test_a_body_that_keeps_coming_is_not_cut_off(self, relay: Harness) -> None:
        """Slower than the timeout in all, but above the minimum rate: read in full."""
        reader, writer = await tcp(relay)
        body = b'{"phone": "+4915100000001"}' + b" " * 6_000
        writer.write(
            b"POST /v1/accounts/code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        for start in range(0, len(body), 600):  # 3,000 bytes a second, over about 2 s
            writer.write(body[start : start + 600])
            await asyncio.sleep(0.2)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 202 "), head
        shut(writer)

    async def test_a_refused_body_ends_in_end_of_stream_not_a_reset(self, relay: Harness) -> None:
        """The 408 is a lingering close: what the client still sends is read and dropped, so no
        reset overtakes the answer (a client reading after its write would see only the reset)."""
        reader, writer = await tcp(relay)
        writer.write(
            b"POST /v1/accounts/code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: 100000\r\n\r\n{"
        )
        answer = await closed_by_relay(reader)  # the answer, then end-of-stream
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert answer.endswith(b"the request body did not keep coming\n"), answer
        writer.write(b" " * 65_536)  # still sending after the answer: read and dropped
        await asyncio.sleep(0.5)
        writer.write(b" " * 65_536)
        await asyncio.sleep(0.2)
        assert not writer.is_closing()  # no reset came back
        shut(writer)


# ---------------------------------------------------------------- oversized frames and bodies


class TestOversized:
    @pytest.fixture
    def relay_settings(self) -> dict[str, Any]:
        return {"max_frame_bytes": 4096, "max_frame_skip_bytes": 65536}

    @pytest.mark.parametrize("announced", [65537, 1 << 40, (1 << 63) - 1])
    async def test_a_frame_header_announcing_too_much_is_refused_with_1009(
        self, relay: Harness, announced: int
    ) -> None:
        alice = await relay.new_device()
        bystander = await device_socket(relay, alice)
        reader, writer = await ws_open(relay)
        # the header alone (64-bit length, mask): no payload follows, none is waited for
        writer.write(bytes((0x82, 0xFF)) + struct.pack("!Q", announced) + b"mask")
        close = await next_frame(reader)
        assert close["t"] == "close" and close["code"] == 1009, close
        assert await closed_by_relay(reader) == b""
        shut(writer)
        bystander[1].write(app_frame({"t": "ping", "n": 1}))
        assert await next_frame(bystander[0]) == {"t": "pong", "n": 1}
        shut(bystander[1])

    async def test_a_fragmented_message_growing_too_big_is_refused(self, relay: Harness) -> None:
        reader, writer = await ws_open(relay)
        first = bytes((0x02, 0x80 | 126)) + struct.pack("!H", 60_000) + b"mask"
        writer.write(first + wf.apply_mask(b"x" * 60_000, b"mask"))  # skipped: over 4096
        writer.write(bytes((0x80, 0x80 | 126)) + struct.pack("!H", 6_000) + b"mask")  # > 65536
        close = await next_frame(reader)
        assert close["t"] == "close" and close["code"] == 1009, close
        shut(writer)

    async def test_a_message_under_the_skip_size_is_answered_and_the_connection_goes_on(
        self, relay: Harness
    ) -> None:
        alice = await relay.new_device()
        reader, writer = await device_socket(relay, alice)
        writer.write(masked(wf.OP_BINARY, b"z" * 20_000))
        error = await next_frame(reader)
        assert error["t"] == "error" and error["code"] == "envelope_too_large"
        writer.write(app_frame({"t": "ping", "n": 2}))
        assert await next_frame(reader) == {"t": "pong", "n": 2}
        shut(writer)

    async def test_a_huge_body_is_refused_with_413_before_it_is_sent(self, relay: Harness) -> None:
        reader, writer = await tcp(relay)
        writer.write(
            b"POST /v1/accounts/code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 413 "), head
        length = next(h for h in head.lower().split(b"\r\n") if h.startswith(b"content-length"))
        body = msgspec.json.decode(await reader.readexactly(int(length.split(b":")[1])))
        assert body["error"]["code"] == "envelope_too_large"
        # the rest of the body is not waited for: the relay hangs up
        assert await closed_by_relay(reader) == b""
        shut(writer)

    async def test_a_chunked_body_past_the_limit_is_cut_off(self, relay: Harness) -> None:
        reader, writer = await tcp(relay)
        writer.write(
            b"POST /v1/accounts/code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"

        async def feed() -> None:
            with contextlib.suppress(OSError):
                for _ in range(64):  # at most 64 MiB; the relay refuses past 10 MB
                    writer.write(chunk)
                    await writer.drain()

        feeding = asyncio.create_task(feed())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 413 "), head
        await closed_by_relay(reader)
        await feeding
        shut(writer)


# ---------------------------------------------------------------- floods


class TestFloods:
    @pytest.fixture
    def relay_settings(self) -> dict[str, Any]:
        # buckets that barely refill during a test: a burst of 10 per device, 30 per address
        return {
            "frames_per_second": 0.01,
            "frame_burst": 10,
            "frames_per_second_per_address": 0.01,
            "frame_burst_per_address": 30,
        }

    async def test_the_device_bucket_outlives_a_reconnect(self, relay: Harness) -> None:
        alice, bob = await relay.new_device(), await relay.new_device()
        reader, writer = await device_socket(relay, alice, "192.0.2.50")
        writer.write(b"".join(app_frame({"t": "ping", "n": n}) for n in range(1, 11)))
        assert [(await next_frame(reader))["n"] for _ in range(10)] == list(range(1, 11))
        shut(writer)
        reader, writer = await device_socket(relay, alice, "192.0.2.51")
        writer.write(app_frame({"t": "ping", "n": 10}))
        limited = await next_frame(reader)
        assert limited["t"] == "error" and limited["code"] == "rate_limited", limited
        assert limited["fields"]["per"] == "device" and limited["fields"]["retry_after"] > 0
        # the connection's other work goes on: a message to the flooded device arrives
        sender = await bob.connect()
        await sender.send(alice.account_id, {alice.device_id: b"still here"}, id="m1")
        deliver = await next_frame(reader)
        assert deliver["t"] == "deliver" and deliver["items"][0]["id"] == "m1"
        shut(writer)

    async def test_one_address_shares_a_bucket_across_its_devices(self, relay: Harness) -> None:
        devices = [await relay.new_device() for _ in range(4)]
        same = [await device_socket(relay, d, "192.0.2.60") for d in devices[:3]]
        for n, (reader, writer) in enumerate(same):
            writer.write(b"".join(app_frame({"t": "ping", "n": n}) for _ in range(10)))
            assert [(await next_frame(reader))["t"] for _ in range(10)] == ["pong"] * 10
        reader, writer = same[0]
        writer.write(app_frame({"t": "ping", "n": 99}))
        limited = await next_frame(reader)
        assert limited["code"] == "rate_limited" and limited["fields"]["per"] == "address"
        other = await device_socket(relay, devices[3], "192.0.2.61")
        other[1].write(app_frame({"t": "ping", "n": 100}))
        assert await next_frame(other[0]) == {"t": "pong", "n": 100}
        shut(other[1], *(w for _, w in same))

    async def test_control_frames_count_and_over_the_limit_go_unanswered(
        self, relay: Harness
    ) -> None:
        alice = await relay.new_device()
        reader, writer = await device_socket(relay, alice, "192.0.2.70")
        writer.write(b"".join(masked(wf.OP_PING, b"%d" % n) for n in range(30)))
        writer.write(app_frame({"t": "ping", "n": 1}))
        pongs = []
        while True:
            opcode, payload = await asyncio.wait_for(read_frame(reader), 30)
            if opcode != wf.OP_PONG:
                break
            pongs.append(payload)
        assert pongs == [b"%d" % n for n in range(10)]  # the burst; the rest dropped
        error = msgspec.msgpack.decode(payload)
        assert error["code"] == "rate_limited"  # the pings emptied the same bucket
        shut(writer)


class TestFloodedSends:
    @pytest.fixture
    def relay_settings(self) -> dict[str, Any]:
        # a burst of 10 frames per device, then 20 a second; a business's device has room for
        # twice its throughput tier more
        return {
            "frames_per_second": 20,
            "frame_burst": 10,
            "business_max_throughput_per_second": 100,
        }

    async def test_a_refused_send_names_its_envelope_and_an_ack_is_never_refused(
        self, relay: Harness
    ) -> None:
        alice, bob = await relay.new_device(), await relay.new_device()
        sender = await bob.connect()
        reader, writer = await device_socket(relay, alice, "192.0.2.90")
        await sender.send(alice.account_id, {alice.device_id: b"hello"}, id="m1")
        deliver = await next_frame(reader)
        assert deliver["t"] == "deliver"
        seq = deliver["items"][0]["seq"]
        writer.write(b"".join(app_frame({"t": "ping", "n": n}) for n in range(10)))
        assert [(await next_frame(reader))["t"] for _ in range(10)] == ["pong"] * 10
        # the bucket is empty: the ack still counts, the send is refused by name
        writer.write(app_frame({"t": "ack", "upto": seq}))
        send = {"t": "send", "id": "x1", "to": bob.account_id, "payloads": {bob.device_id: b"?"}}
        writer.write(app_frame(send))
        refused = await next_frame(reader)
        assert refused["t"] == "error" and refused["code"] == "rate_limited", refused
        assert refused["ref"] == "x1" and refused["fields"]["retry_after"] > 0
        receipt = await sender.recv(timeout=10)  # the ack went through: bob hears 'delivered'
        assert (receipt.kind, receipt.id) == ("delivered", "m1")
        shut(writer)

    async def test_the_sdk_sends_again_what_a_flood_refused(self, relay: Harness) -> None:
        alice, bob = await relay.new_device(), await relay.new_device()
        receiver = await alice.connect()
        sender = await bob.connect()
        ids = [f"burst-{n}" for n in range(30)]  # three times the burst, all at once
        sends = (sender.send(alice.account_id, {alice.device_id: i.encode()}, id=i) for i in ids)
        await asyncio.wait_for(asyncio.gather(*sends), 60)  # before: a refused one never returned
        assert sender.resent > 0  # some were refused and sent again
        got = [await receiver.recv(timeout=10) for _ in ids]
        assert sorted(item.id for item in got) == sorted(ids)  # each once

    async def test_a_refused_send_goes_again_with_what_its_sender_encrypts_anew(
        self, relay: Harness
    ) -> None:
        alice, bob = await relay.new_device(), await relay.new_device()
        receiver = await alice.connect()
        sender = await bob.connect()
        asked: list[str] = []

        def fresh(envelope_id: str) -> Callable[[], Awaitable[dict[int, bytes]]]:
            async def encrypt() -> dict[int, bytes]:
                asked.append(envelope_id)
                return {alice.device_id: b"again " + envelope_id.encode()}

            return encrypt

        ids = [f"burst-{n}" for n in range(30)]
        sends = (
            sender.send(alice.account_id, {alice.device_id: i.encode()}, id=i, fresh=fresh(i))
            for i in ids
        )
        await asyncio.wait_for(asyncio.gather(*sends), 60)
        assert asked and sender.resent >= len(asked)  # each resend asked for new ciphertexts
        got = {item.id: item.body for item in [await receiver.recv(timeout=10) for _ in ids]}
        assert sorted(got) == sorted(ids)
        for i in ids:  # stored once: as first sent, or, if it was refused, as last encrypted
            assert got[i] == (b"again " + i.encode() if i in asked else i.encode())

    async def test_olm_messages_refused_in_a_flood_all_decrypt(
        self, relay: Harness, tmp_path: Path
    ) -> None:
        """Each refused one is encrypted again for its resend (a step further in the ratchet
        than the messages sent meanwhile), and the person decrypts every one. Resent as first
        encrypted, they arrived behind later messages of their chain; past the 40 skipped
        message keys a receiver keeps they were undecryptable (seen in bench/gateway.py, where
        sends past the tier are refused for good and leave gaps)."""
        alice_h, bob_h = await relay.new_device(), await relay.new_device()
        alice, bob = [
            SecureDevice.open(h.sdk, tmp_path / f"{h.device_id}.store", key=b"k" * 32)
            for h in (alice_h, bob_h)
        ]
        for device in (alice, bob):
            await device.start()
        await alice.send(bob.account_id, "hello")  # the session, before the flood
        texts = [f"message {n}" for n in range(30)]  # three times the burst, at once
        await asyncio.wait_for(asyncio.gather(*(alice.send(bob.account_id, t) for t in texts)), 60)
        assert alice.device._live().resent > 0  # the flood refused some
        got: list[str] = []
        while len(got) < len(texts) + 1:
            event = await bob.recv(10)
            assert not isinstance(event, Undecryptable), event
            if isinstance(event, Message):
                got.append(event.content["body"])
        assert sorted(got) == sorted(["hello", *texts])

    async def test_a_business_device_has_room_for_its_throughput(self, relay: Harness) -> None:
        shop, person = await make_business(relay), await relay.new_device()
        for device, address, answered in ((shop, "192.0.2.91", 60), (person, "192.0.2.92", 10)):
            reader, writer = await device_socket(relay, device, address)
            writer.write(b"".join(app_frame({"t": "ping", "n": n}) for n in range(60)))
            answers = [(await next_frame(reader))["t"] for _ in range(60)]
            assert answers.count("pong") == answered, answers
            shut(writer)


class TestFloodWithoutReading:
    @pytest.fixture
    def relay_settings(self) -> dict[str, Any]:
        return {"frames_per_second": 0.01, "frame_burst": 1}

    async def test_a_flood_that_is_not_read_is_held_back_not_buffered(self, relay: Harness) -> None:
        alice = await relay.new_device()
        reader, writer = await device_socket(relay, alice, "192.0.2.80", rcvbuf=65536)
        conn: Connection = next(iter(relay.server.app.hub.connections))
        link: Any = conn.link
        frames = 200_000
        ping = app_frame({"t": "ping", "n": 1})
        writer.write(ping * frames)  # each one answered with an error frame, none read yet
        await eventually(lambda: link.paused_reading, "the relay stops reading the flooder")
        assert len(conn.outbox) <= OUTBOX_HIGH
        # what waits to be read is one socket read's worth at most, not the flood
        assert sum(len(m) for m in link.inbox if isinstance(m, bytes)) <= 1 << 20
        # once it reads, every frame has its answer and the connection is still there
        answered = 0
        buffer = bytearray()
        while answered < frames:
            buffer += await asyncio.wait_for(reader.read(1 << 20), 30)
            pos = 0
            while len(buffer) - pos >= 2:
                n = buffer[pos + 1] & 0x7F
                head = 2 + (2 if n == 126 else 8 if n == 127 else 0)
                if len(buffer) - pos < head:
                    break
                if n == 126:
                    n = struct.unpack_from("!H", buffer, pos + 2)[0]
                elif n == 127:
                    n = struct.unpack_from("!Q", buffer, pos + 2)[0]
                if len(buffer) - pos < head + n:
                    break
                if buffer[pos] & 0x0F == wf.OP_BINARY:
                    answered += 1
                pos += head + n
            del buffer[:pos]
        assert answered == frames
        shut(writer)

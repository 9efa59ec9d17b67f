"""The relay's own WebSocket protocol on a real socket: handshake, limits, heartbeats, shutdown."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import msgspec
import pytest
import websockets

from tresen.relay.transport import wsframes as wf

from ..conftest import Harness
from .test_envelopes import raw_socket

MAX_FRAME = 4096


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"max_frame_bytes": MAX_FRAME, "heartbeat_seconds": 0.3}


async def tcp(relay: Harness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", relay.server.port)


async def upgrade(relay: Harness, path: str = "/v1/ws", extra: str = "") -> tuple[Any, Any, bytes]:
    reader, writer = await tcp(relay)
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


def masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else bytes((0x80 | opcode, 0xFE))
    if n >= 126:
        head += struct.pack("!H", n)
    return head + mask + wf.apply_mask(payload, mask)


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


async def test_wrong_path_and_subprotocol_get_http_errors(relay: Harness) -> None:
    _, writer, head = await upgrade(relay, "/v1/nope")
    assert head.startswith(b"HTTP/1.1 404 ")
    writer.close()
    _, writer, head = await upgrade(relay, extra="Sec-WebSocket-Protocol: tresen.v99.json\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    writer.close()


async def test_pipelined_hello_after_the_upgrade_is_read(relay: Harness) -> None:
    alice = await relay.new_device()
    hello = msgspec.msgpack.encode({"t": "hello", "token": alice.token})
    reader, writer, head = await upgrade(relay)
    assert head.startswith(b"HTTP/1.1 101 ")
    writer.write(masked(wf.OP_BINARY, hello) + masked(wf.OP_PING, b"are you there"))
    frames = [await read_frame(reader), await read_frame(reader)]
    assert (wf.OP_PONG, b"are you there") in frames
    welcome = next(p for op, p in frames if op == wf.OP_BINARY)
    assert msgspec.msgpack.decode(welcome)["t"] == "welcome"
    writer.close()


async def test_protocol_violation_closes_with_1002(relay: Harness) -> None:
    reader, writer, _ = await upgrade(relay)
    writer.write(bytes((0x82, 0x02)) + b"no")  # unmasked
    opcode, payload = await read_frame(reader)
    assert opcode == wf.OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1002
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


async def test_oversized_message_is_refused_and_the_connection_goes_on(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    ws = await raw_socket(relay, alice.token)
    await ws.send("x" * (MAX_FRAME * 3))
    error = msgspec.json.decode(await ws.recv())
    assert error["t"] == "error" and error["code"] == "envelope_too_large"
    good = {"t": "send", "id": "after", "to": bob.account_id, "payloads": {str(bob.device_id): ""}}
    await ws.send(msgspec.json.encode(good).decode())
    assert msgspec.json.decode(await ws.recv())["ids"] == ["after"]
    await ws.close()


async def test_silent_peer_is_pinged_then_dropped_but_a_live_one_stays(relay: Harness) -> None:
    alice = await relay.new_device()
    live = await raw_socket(relay, alice.token)  # websockets answers pings by itself
    reader, writer, _ = await upgrade(relay)
    opcode, _ = await asyncio.wait_for(read_frame(reader), 5)
    assert opcode == wf.OP_PING
    assert await asyncio.wait_for(reader.read(), 5) == b""  # never answered: dropped
    writer.close()
    await asyncio.sleep(1.0)
    await live.send('{"t":"ping","n":1}')
    assert msgspec.json.decode(await live.recv()) == {"t": "pong", "n": 1}
    await live.close()


async def test_client_close_is_answered(relay: Harness) -> None:
    alice = await relay.new_device()
    ws = await raw_socket(relay, alice.token)
    await ws.close(4000, "done")
    assert ws.close_code == 4000


async def test_relay_shutdown_tells_devices_to_reconnect(relay: Harness) -> None:
    alice = await relay.new_device()
    ws = await raw_socket(relay, alice.token)
    await relay.server.stop()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


class TestAsgiPath:
    """``websocket = "asgi"``: the same connection logic through uvicorn's ASGI protocol."""

    @pytest.fixture
    def relay_settings(self) -> dict[str, Any]:
        return {"websocket": "asgi", "max_frame_bytes": MAX_FRAME}

    async def test_send_receive_ack_over_asgi(self, relay: Harness) -> None:
        alice, bob = await relay.new_device(), await relay.new_device()
        sender, receiver = await alice.connect(), await bob.connect()
        await sender.send(bob.account_id, {bob.device_id: b"over asgi"}, id="a1")
        item = await receiver.recv()
        assert item.id == "a1" and item.body == b"over asgi"
        carol = await relay.new_device()  # nothing queued for her, so the next frame is the answer
        ws = await raw_socket(relay, carol.token)
        await ws.send("y" * (MAX_FRAME + 10))
        answer = msgspec.json.decode(await ws.recv())
        assert answer.get("code") == "envelope_too_large", answer
        await ws.close()

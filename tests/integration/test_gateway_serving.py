"""The gateway's HTTP serving, on a real server on port 0: each response leaves in one socket
write (one TCP segment on loopback, counted by the kernel's ``TCP_INFO``), pipelined requests
are answered in order, a response before a close is sent whole, and a request that arrives too
slowly is answered 408 and its connection closed."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tresen.gateway.app import GatewayServer, _HttpProtocol

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO's layout is Linux's")

POST = (
    b"POST /v22.0/123/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)
GET = b"GET /v22.0/123 HTTP/1.1\r\nHost: t\r\n\r\n"


def data_segments_in(sock: socket.socket) -> int:
    """Segments with data this socket has received (``tcpi_data_segs_in``, Linux >= 4.6)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, 152)[0])


async def response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head.split(b"\r\n")[0], await reader.readexactly(length)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(f"sqlite:///{tmp_path}/gw.db", tmp_path / "gw")
    server.server.config.timeout_keep_alive = 30  # the deadlines below, not uvicorn's, apply
    await server.start()
    yield server
    await server.stop()


@linux_only
async def test_each_response_leaves_in_one_segment(server: GatewayServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":")[-1]))
    sock = writer.get_extra_info("socket")
    for request in (POST, GET, POST):  # the hot path straight on ASGI, and a framework route
        before = data_segments_in(sock)
        writer.write(request)
        status, body = await response(reader)
        assert status == b"HTTP/1.1 401 Unauthorized" and b'"code":190' in body
        # uvicorn alone writes the status line and headers, then the body: two segments
        assert data_segments_in(sock) - before == 1
    writer.close()


async def test_pipelined_requests_answered_in_order_and_a_close_sends_all(
    server: GatewayServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":")[-1]))
    writer.write(POST + GET + GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    answers = [await response(reader) for _ in range(3)]
    assert [status for status, _ in answers] == [b"HTTP/1.1 401 Unauthorized"] * 3
    assert await reader.read() == b""  # closed after the whole last response
    writer.close()


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_HttpProtocol, "head_timeout", 0.5)
    monkeypatch.setattr(_HttpProtocol, "body_timeout", 0.5)


async def connect(server: GatewayServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":")[-1]))


@pytest.mark.usefixtures("short_deadlines")
async def test_headers_that_stall_are_answered_408_and_the_connection_closed(
    server: GatewayServer,
) -> None:
    reader, writer = await connect(server)
    writer.write(POST[:30])  # the request line and no more
    status, body = await asyncio.wait_for(response(reader), 5)
    assert status == b"HTTP/1.1 408 Request Timeout"
    error = json.loads(body)["error"]
    assert error["code"] == 100
    assert "head did not arrive in time" in error["error_data"]["details"]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.usefixtures("short_deadlines")
async def test_a_body_that_trickles_is_answered_408(server: GatewayServer) -> None:
    reader, writer = await connect(server)
    head, _, _ = POST.partition(b"\r\n\r\n")
    writer.write(head.replace(b"Content-Length: 2", b"Content-Length: 100000") + b"\r\n\r\n")
    for _ in range(4):  # a byte every 0.1 s: far below 500 bytes a second
        writer.write(b" ")
        await asyncio.sleep(0.1)
    status, body = await asyncio.wait_for(response(reader), 5)
    assert status == b"HTTP/1.1 408 Request Timeout"
    details = json.loads(body)["error"]["error_data"]["details"]
    assert "body did not keep coming" in details
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.usefixtures("short_deadlines")
async def test_a_connection_that_never_sends_is_closed_without_an_answer(
    server: GatewayServer,
) -> None:
    reader, writer = await connect(server)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.usefixtures("short_deadlines")
async def test_prompt_requests_on_a_kept_alive_connection_are_not_cut_off(
    server: GatewayServer,
) -> None:
    reader, writer = await connect(server)
    for _ in range(3):
        for i in range(0, len(POST), 20):  # in pieces, together well within the deadline
            writer.write(POST[i : i + 20])
            await asyncio.sleep(0.01)
        status, _ = await response(reader)
        assert status == b"HTTP/1.1 401 Unauthorized"
        await asyncio.sleep(0.7)  # idle between requests for longer than the head's deadline
    writer.write(GET)
    assert (await response(reader))[0] == b"HTTP/1.1 401 Unauthorized"
    writer.close()

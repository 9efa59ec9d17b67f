"""The gateway's HTTP serving: each response leaves in one socket write (one TCP segment on
loopback), pipelined requests are answered in order, and a response before a close is sent
whole. Counted by the kernel (``TCP_INFO``), on a real server on port 0."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tresen.gateway.app import GatewayServer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO's layout is Linux's")

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
    await server.start()
    yield server
    await server.stop()


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

"""RFC 6455 framing and handshake, driven with raw bytes (no sockets)."""

from __future__ import annotations

import os
import random
import struct
from http import HTTPStatus

import pytest

from tresen.relay.transport import wsframes as wf

#: masks from a seeded generator: the same test ids on every pytest-xdist worker (frames built
#: for parametrize become part of the ids)
MASKS = random.Random(6455)


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    mask = MASKS.randbytes(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = bytes((b0, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, 0x80 | 127)) + struct.pack("!Q", n)
    return head + mask + wf.apply_mask(payload, mask)


def upgrade(**headers: str) -> bytes:
    base = {
        "Host": "relay",
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers)
    lines = ["GET /v1/ws?x=1 HTTP/1.1"] + [f"{k}: {v}" for k, v in base.items() if v]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---------------------------------------------------------------- handshake


def test_handshake_accepts_the_rfc_example_and_keeps_what_follows() -> None:
    shake = wf.ServerHandshake()
    data = upgrade(**{"Sec-WebSocket-Protocol": "tresen.v1.json, other"})
    assert shake.feed(data[:10]) is None
    done = shake.feed(data[10:] + b"\x81")
    assert done is not None
    request, rest = done
    assert request.path == "/v1/ws" and rest == b"\x81"
    assert request.tokens("sec-websocket-protocol") == ["tresen.v1.json", "other"]
    assert wf.check_upgrade(request) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    response = wf.switching_protocols("abc", "tresen.v1.json")
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Protocol: tresen.v1.json\r\n" in response


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Upgrade": ""}, HTTPStatus.UPGRADE_REQUIRED),
        ({"Connection": "keep-alive"}, HTTPStatus.UPGRADE_REQUIRED),
        ({"Sec-WebSocket-Version": "8"}, HTTPStatus.UPGRADE_REQUIRED),
        ({"Sec-WebSocket-Key": "short"}, HTTPStatus.BAD_REQUEST),
        ({"Sec-WebSocket-Key": ""}, HTTPStatus.BAD_REQUEST),
    ],
)
def test_bad_upgrades_are_refused_with_a_status(headers: dict[str, str], status: int) -> None:
    done = wf.ServerHandshake().feed(upgrade(**headers))
    assert done is not None
    with pytest.raises(wf.HandshakeError) as caught:
        wf.check_upgrade(done[0])
    assert caught.value.status == status


def test_malformed_and_oversized_heads_are_refused() -> None:
    with pytest.raises(wf.HandshakeError):
        wf.ServerHandshake().feed(b"GARBAGE\r\n\r\n")
    with pytest.raises(wf.HandshakeError):
        wf.ServerHandshake().feed(b"GET / HTTP/1.0\r\n\r\n")
    with pytest.raises(wf.HandshakeError):
        wf.ServerHandshake().feed(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    with pytest.raises(wf.HandshakeError) as caught:
        wf.ServerHandshake().feed(b"GET / HTTP/1.1\r\nX: " + b"a" * wf.MAX_HEAD_BYTES)
    assert caught.value.status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    done = wf.ServerHandshake().feed(b"POST /v1/ws HTTP/1.1\r\n\r\n")
    assert done is not None
    with pytest.raises(wf.HandshakeError) as caught:
        wf.check_upgrade(done[0])
    assert caught.value.status == HTTPStatus.METHOD_NOT_ALLOWED
    response = wf.http_response(HTTPStatus.NOT_FOUND, {}, b"nope\n")
    assert response.startswith(b"HTTP/1.1 404 Not Found\r\n") and response.endswith(
        b"\r\n\r\nnope\n"
    )


# ---------------------------------------------------------------- frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_messages_of_every_length_class_round_trip(size: int) -> None:
    payload = os.urandom(size)
    reader = wf.FrameReader(max_message=1 << 20)
    assert reader.feed(masked(wf.OP_BINARY, payload)) == [wf.Message(payload, False)]
    assert reader.buffer == bytearray()


def test_byte_by_byte_feeding_gives_the_same_events() -> None:
    stream = (
        masked(wf.OP_TEXT, b"he", fin=False)
        + masked(wf.OP_PING, b"p")
        + masked(wf.OP_CONT, b"llo")
        + masked(wf.OP_BINARY, b"x" * 300)
        + masked(wf.OP_CLOSE, struct.pack("!H", 1000) + "bye ✓".encode())
    )
    whole = wf.FrameReader(max_message=1000).feed(stream)
    reader = wf.FrameReader(max_message=1000)
    pieces = [event for i in range(len(stream)) for event in reader.feed(stream[i : i + 1])]
    assert (
        pieces
        == whole
        == [
            wf.Ping(b"p"),
            wf.Message(b"hello", True),
            wf.Message(b"x" * 300, False),
            wf.Close(1000, "bye ✓"),
        ]
    )


def test_an_oversized_message_is_skipped_unbuffered_and_the_next_one_read() -> None:
    reader = wf.FrameReader(max_message=100)
    big = masked(wf.OP_BINARY, b"a" * 60, fin=False) + masked(wf.OP_CONT, b"b" * 5000)
    events: list[wf.Event] = []
    for start in range(0, len(big), 512):
        events += reader.feed(big[start : start + 512])
        assert len(reader.buffer) < 600  # never the whole message
    assert events == [wf.TooLarge(5060)]
    assert reader.feed(masked(wf.OP_BINARY, b"ok")) == [wf.Message(b"ok", False)]
    # a single oversized frame, an empty final continuation, and a ping in between
    stream = (
        masked(wf.OP_TEXT, b"z" * 101, fin=False)
        + masked(wf.OP_PING, b"")
        + masked(wf.OP_CONT, b"")
        + masked(wf.OP_TEXT, b"next")
    )
    assert reader.feed(stream) == [wf.Ping(b""), wf.TooLarge(101), wf.Message(b"next", True)]


@pytest.mark.parametrize(
    ("data", "close_code"),
    [
        (bytes((0x82, 0x02)) + b"no", wf.PROTOCOL_ERROR),  # unmasked
        (masked(wf.OP_BINARY, b"x", rsv=0x40), wf.PROTOCOL_ERROR),
        (masked(0x3, b"x"), wf.PROTOCOL_ERROR),  # reserved opcode
        (masked(wf.OP_PING, b"x" * 126), wf.PROTOCOL_ERROR),
        (masked(wf.OP_PING, b"x", fin=False), wf.PROTOCOL_ERROR),
        (masked(wf.OP_CONT, b"x"), wf.PROTOCOL_ERROR),
        (masked(wf.OP_TEXT, b"a", fin=False) + masked(wf.OP_TEXT, b"b"), wf.PROTOCOL_ERROR),
        (masked(wf.OP_CLOSE, b"\x03"), wf.PROTOCOL_ERROR),
        (masked(wf.OP_CLOSE, struct.pack("!H", 1005)), wf.PROTOCOL_ERROR),
        (masked(wf.OP_CLOSE, struct.pack("!H", 999)), wf.PROTOCOL_ERROR),
        (masked(wf.OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), wf.INVALID_DATA),
        (bytes((0x82, 0xFF)) + b"\x80" + bytes(7) + bytes(4), wf.PROTOCOL_ERROR),
    ],
)
def test_protocol_violations_raise_with_a_close_code(data: bytes, close_code: int) -> None:
    with pytest.raises(wf.ProtocolError) as caught:
        wf.FrameReader(max_message=1000).feed(data)
    assert caught.value.close_code == close_code


def test_control_frames_and_close_without_a_code() -> None:
    events = wf.FrameReader(max_message=10).feed(
        masked(wf.OP_PONG, b"hb") + masked(wf.OP_CLOSE, b"")
    )
    assert events == [wf.Pong(b"hb"), wf.Close(1005, "")]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_server_frames_are_unmasked_with_the_right_length_header(size: int) -> None:
    data = wf.frame(wf.OP_BINARY, b"q" * size)
    assert data[0] == 0x82 and not data[1] & 0x80
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(data) == header + size


def test_close_reason_is_cut_on_a_character_boundary() -> None:
    data = wf.close_frame(4400, "é" * 100)
    assert data[0] == 0x88 and len(data) - 2 <= 125
    assert struct.unpack("!H", data[2:4])[0] == 4400
    (data[4:]).decode()  # whole characters only

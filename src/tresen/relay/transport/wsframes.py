"""RFC 6455 for the relay's side, sans I/O: the opening handshake and frame (de)framing.

Bytes go in (:meth:`ServerHandshake.feed`, :meth:`FrameReader.feed`), events and bytes to send
come out; nothing here touches a socket, so tests drive it with raw bytes. Only what the relay
needs is spoken: no extensions (a client's permessage-deflate offer is declined), client frames
must be masked, control frames are short and whole. A message larger than the limit is skipped
without being buffered and reported as :class:`TooLarge`, so the connection goes on; one whose
frame header announces more than ``refuse_above`` is refused at once (1009), before its payload.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field
from http import HTTPStatus

from websockets.speedups import apply_mask as _apply_mask  # C, in every websockets wheel

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 16 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))

# close codes (RFC 6455 §7.4.1)
NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1001, 1002, 1007, 1009
_RESERVED_CLOSE = frozenset((1004, 1005, 1006, 1015))

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    return _apply_mask(data, mask)


class ProtocolError(Exception):
    """The peer broke RFC 6455; the connection closes with ``close_code``."""

    def __init__(self, message: str, close_code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.close_code = close_code


# ---------------------------------------------------------------- the opening handshake


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "

    def tokens(self, name: str) -> list[str]:
        return [t.strip() for t in self.headers.get(name, "").split(",") if t.strip()]


class HandshakeError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def parse_request(head: bytes) -> Request:
    """Parse an HTTP/1.1 request head (without the final blank line's CRLF CRLF)."""
    try:
        text = head.decode("latin-1")
        line, *rest = text.split("\r\n")
        method, target, version = line.split(" ")
    except ValueError:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "malformed request line") from None
    if version != "HTTP/1.1":
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "WebSocket needs HTTP/1.1")
    headers: dict[str, str] = {}
    for raw in rest:
        if not raw:
            continue
        name, sep, value = raw.partition(":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(HTTPStatus.BAD_REQUEST, f"malformed header line {raw[:40]!r}")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Request(method, target.split("?", 1)[0], headers)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()  # noqa: S324


def check_upgrade(request: Request) -> str:
    """Validate a WebSocket upgrade request; return the ``Sec-WebSocket-Accept`` value."""
    if request.method != "GET":
        raise HandshakeError(HTTPStatus.METHOD_NOT_ALLOWED, "WebSocket upgrades use GET")
    if "websocket" not in [t.lower() for t in request.tokens("upgrade")]:
        raise HandshakeError(HTTPStatus.UPGRADE_REQUIRED, "expected Upgrade: websocket")
    if "upgrade" not in [t.lower() for t in request.tokens("connection")]:
        raise HandshakeError(HTTPStatus.UPGRADE_REQUIRED, "expected Connection: Upgrade")
    if request.headers.get("sec-websocket-version") != "13":
        raise HandshakeError(
            HTTPStatus.UPGRADE_REQUIRED,
            "unsupported WebSocket version",
            {"Sec-WebSocket-Version": "13"},
        )
    key = request.headers.get("sec-websocket-key", "")
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "invalid Sec-WebSocket-Key")
    return accept_key(key)


def http_response(
    status: HTTPStatus, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if status != HTTPStatus.SWITCHING_PROTOCOLS:
        lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def switching_protocols(accept: str, subprotocol: str | None) -> bytes:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept}
    if subprotocol:
        headers["Sec-WebSocket-Protocol"] = subprotocol
    return http_response(HTTPStatus.SWITCHING_PROTOCOLS, headers)


class ServerHandshake:
    """Collects the request head; :meth:`feed` returns it (and the bytes after) once complete."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> tuple[Request, bytes] | None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise HandshakeError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
            return None
        request = parse_request(bytes(self.buffer[:end]))
        rest = bytes(self.buffer[end + 4 :])
        self.buffer = bytearray()
        return request, rest


# ---------------------------------------------------------------- frames


@dataclass(slots=True, frozen=True)
class Message:
    """A whole data message (text or binary)."""

    data: bytes
    text: bool


@dataclass(slots=True, frozen=True)
class TooLarge:
    """A data message over the limit, skipped unread; ``size`` is what was declared so far."""

    size: int


@dataclass(slots=True, frozen=True)
class Ping:
    data: bytes


@dataclass(slots=True, frozen=True)
class Pong:
    data: bytes


@dataclass(slots=True, frozen=True)
class Close:
    code: int
    reason: str


Event = Message | TooLarge | Ping | Pong | Close


@dataclass(slots=True)
class FrameReader:
    """Turns the client's byte stream into events. Raises :class:`ProtocolError` on violations."""

    max_message: int
    #: a message growing past this (by a frame header's announced length) raises 1009; 0: never
    refuse_above: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    parts: list[bytes] = field(default_factory=list)
    part_bytes: int = 0
    part_text: bool = False
    in_message: bool = False
    skipping: bool = False  # inside an oversized message: drop its frames
    skip_left: int = 0  # payload bytes of the current oversized frame still to drop
    skip_fin: bool = False
    skipped: int = 0

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        buf = self.buffer
        buf += data
        pos = 0
        end = len(buf)
        while True:
            if self.skip_left:
                take = min(self.skip_left, end - pos)
                pos += take
                self.skip_left -= take
                if self.skip_left:
                    break
                if self.skip_fin:
                    events.append(TooLarge(self.skipped))
                    self.skipping = self.in_message = False
                    self.skipped = 0
            if end - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            fin = b0 & 0x80
            opcode = b0 & 0x0F
            if b0 & 0x70:
                raise ProtocolError("reserved bits set without an extension")
            if not b1 & 0x80:
                raise ProtocolError("client frames must be masked")
            length = b1 & 0x7F
            head = 6
            if length == 126:
                head = 8
                if end - pos < head:
                    break
                length = _U16.unpack_from(buf, pos + 2)[0]
            elif length == 127:
                head = 14
                if end - pos < head:
                    break
                length = _U64.unpack_from(buf, pos + 2)[0]
                if length >> 63:
                    raise ProtocolError("frame length has its top bit set")
            if end - pos < head:
                break
            if opcode in CONTROL_OPCODES:
                if not fin or length > 125:
                    raise ProtocolError("control frames must be whole and at most 125 bytes")
            elif opcode not in DATA_OPCODES:
                raise ProtocolError(f"unknown opcode {opcode:#x}")
            else:
                if opcode == OP_CONT and not self.in_message:
                    raise ProtocolError("continuation frame outside a message")
                if opcode != OP_CONT and self.in_message:
                    raise ProtocolError("new message before the last one finished")
                total = (self.skipped if self.skipping else self.part_bytes) + length
                if self.refuse_above and total > self.refuse_above:
                    raise ProtocolError(f"message of {total} bytes or more is too big", TOO_BIG)
                if self.skipping or total > self.max_message:
                    # drop this frame's payload as it streams past, never buffering it
                    if not self.skipping:
                        self.skipping, self.skipped = True, self.part_bytes
                        self.parts, self.part_bytes = [], 0
                    self.skipped += length
                    self.in_message = True
                    self.skip_fin = bool(fin)
                    pos += head
                    self.skip_left = length
                    if length == 0:
                        self.skip_left = 0
                        if fin:
                            events.append(TooLarge(self.skipped))
                            self.skipping = self.in_message = False
                            self.skipped = 0
                    continue
            if end - pos < head + length:
                break
            mask = bytes(buf[pos + head - 4 : pos + head])
            payload = apply_mask(memoryview(buf)[pos + head : pos + head + length], mask)
            pos += head + length
            if opcode in CONTROL_OPCODES:
                events.append(self._control(opcode, payload))
                continue
            if opcode != OP_CONT:
                self.part_text = opcode == OP_TEXT
            if fin and not self.parts:
                events.append(Message(payload, self.part_text))
                self.in_message = False
                continue
            self.parts.append(payload)
            self.part_bytes += length
            self.in_message = True
            if fin:
                events.append(Message(b"".join(self.parts), self.part_text))
                self.parts, self.part_bytes, self.in_message = [], 0, False
        if pos:
            del buf[:pos]
        return events

    @staticmethod
    def _control(opcode: int, payload: bytes) -> Event:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if not payload:
            return Close(1005, "")
        if len(payload) == 1:
            raise ProtocolError("close frame with a one-byte payload")
        code = _U16.unpack_from(payload)[0]
        if code < 1000 or code in _RESERVED_CLOSE or 1016 <= code < 3000 or code >= 5000:
            raise ProtocolError(f"invalid close code {code}")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            raise ProtocolError("close reason is not UTF-8", INVALID_DATA) from None
        return Close(code, reason)


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, unfragmented server frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + _U16.pack(n) + payload
    return bytes((0x80 | opcode, 127)) + _U64.pack(n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    data = reason.encode()[:123]
    while True:  # never cut a UTF-8 character in half
        try:
            data.decode()
            break
        except UnicodeDecodeError:
            data = data[:-1]
    return frame(OP_CLOSE, _U16.pack(code) + data)


__all__ = [
    "Close",
    "Event",
    "FrameReader",
    "HandshakeError",
    "Message",
    "Ping",
    "Pong",
    "ProtocolError",
    "Request",
    "ServerHandshake",
    "TooLarge",
    "check_upgrade",
    "close_frame",
    "frame",
    "http_response",
    "switching_protocols",
]

"""Fuzzing the WebSocket decoders with hypothesis: whatever arrives, the answer is a typed frame
or a typed error with a stable code, never another exception, and a live relay answers every
frame an authenticated device sends without an ``internal`` error, keeping the connection.

- :class:`tresen.protocol.codec.Codec` (both directions, MessagePack and JSON): arbitrary bytes
  and text, and frames of every type whose fields hold values of the wrong type or range.
- :class:`tresen.relay.transport.wsframes.FrameReader` and :class:`ServerHandshake`: arbitrary
  bytes give events or :class:`ProtocolError` / :class:`HandshakeError`.
- the relay itself: such frames sent over a real WebSocket (the engine runs in a worker thread
  and drives the socket on the test's loop).
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Callable
from typing import Any, get_args

import msgspec
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Harness
from tresen.protocol.codec import Codec, FrameError, client_codec, server_codec
from tresen.protocol.codes import Code
from tresen.protocol.frames import ClientFrame, ServerFrame
from tresen.relay.transport.wsframes import (
    FrameReader,
    HandshakeError,
    ProtocolError,
    ServerHandshake,
)

STABLE = {Code.MALFORMED_FRAME, Code.UNKNOWN_FRAME}
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIENT_TYPES = get_args(ClientFrame)
SERVER_TYPES = get_args(ServerFrame)


def tags(types: tuple[type, ...]) -> dict[str, list[str]]:
    """Each frame type's tag and field names."""
    return {t.__struct_config__.tag: list(t.__struct_fields__) for t in types}  # type: ignore[attr-defined]


#: values of every JSON/MessagePack kind, with the edges: 64-bit limits, huge and negative
#: numbers, empty and long strings, bytes, nesting
INTS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(allow_nan=False),
    st.text(max_size=80),
    st.binary(max_size=80),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.text(max_size=12), INTS), inner, max_size=6),
    ),
    max_leaves=20,
)


def frames(types: tuple[type, ...]) -> st.SearchStrategy[dict[Any, Any]]:
    """Frames that look right: a known tag (now and then an unknown one), the type's own field
    names (some missing, some extra) holding any values."""
    by_tag = tags(types)

    @st.composite
    def build(draw: st.DrawFn) -> dict[Any, Any]:
        tag = draw(st.one_of(st.sampled_from(sorted(by_tag)), st.text(max_size=10)))
        fields = by_tag.get(tag, [])
        frame: dict[Any, Any] = {"t": tag}
        for name in fields:
            if draw(st.integers(0, 5)):  # mostly present
                frame[name] = draw(VALUES)
        extra = draw(
            st.dictionaries(st.text(string.ascii_lowercase, max_size=6), VALUES, max_size=2)
        )
        frame.update({k: v for k, v in extra.items() if k != "t"})
        return frame

    return build()


def encode(frame: Any, format: str) -> bytes:
    if format == "json":
        return msgspec.json.encode(frame)
    return msgspec.msgpack.encode(frame)


def decode(message: str | bytes, format: str) -> dict[str, Any]:
    data = message.encode() if isinstance(message, str) else message
    out: dict[str, Any] = (msgspec.json if format == "json" else msgspec.msgpack).decode(data)
    return out


def check(codec: Codec[Any], types: tuple[type, ...], data: bytes | str) -> None:
    """Decoding gives a frame of the union (that survives a round trip) or a stable error."""
    try:
        frame = codec.decode(data)
    except FrameError as exc:
        assert exc.code in STABLE, exc
        assert exc.status == 400
        return
    assert isinstance(frame, types)
    assert codec.decode(codec.encode(frame)) == frame


CODECS: list[tuple[str, Callable[[Any], Codec[Any]], tuple[type, ...]]] = [
    ("relay", server_codec, CLIENT_TYPES),
    ("client", client_codec, SERVER_TYPES),
]


@pytest.mark.parametrize(("side", "make", "types"), CODECS, ids=[c[0] for c in CODECS])
@pytest.mark.parametrize("format", ["msgpack", "json"])
@FAST
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_arbitrary_input_decodes_or_fails_typed(
    side: str, make: Callable[[Any], Codec[Any]], types: tuple[type, ...], format: str, data: Any
) -> None:
    check(make(format), types, data)


@pytest.mark.parametrize(("side", "make", "types"), CODECS, ids=[c[0] for c in CODECS])
@pytest.mark.parametrize("format", ["msgpack", "json"])
@FAST
@given(data=st.data())
def test_frames_with_wrong_fields_decode_or_fail_typed(
    side: str,
    make: Callable[[Any], Codec[Any]],
    types: tuple[type, ...],
    format: str,
    data: st.DataObject,
) -> None:
    frame = data.draw(frames(types))
    try:
        raw = encode(frame, format)
    except (TypeError, OverflowError, msgspec.EncodeError):
        return  # not representable in this format (e.g. a bytes key in JSON)
    check(make(format), types, raw)


@pytest.mark.parametrize("format", ["msgpack", "json"])
def test_deep_nesting_and_edge_numbers_fail_typed(format: str) -> None:
    codec = server_codec(format)  # type: ignore[arg-type]
    deep = b"[" * 100_000 if format == "json" else b"\x91" * 100_000
    for data in (
        deep,
        b'{"t":"ping","n":1e400}'
        if format == "json"
        else b"\x82\xa1t\xa4ping\xa1n\xcb\x7f\xf0" + b"\0" * 6,
        b"",
        b"\xff",
        "\ud800",  # a lone surrogate: no UTF-8 for it
    ):
        check(codec, CLIENT_TYPES, data)


@FAST
@given(chunks=st.lists(st.binary(max_size=200), max_size=8), limit=st.integers(0, 300))
def test_websocket_framing_gives_events_or_protocol_errors(chunks: list[bytes], limit: int) -> None:
    reader = FrameReader(max_message=limit)
    try:
        for chunk in chunks:
            reader.feed(chunk)
    except ProtocolError as exc:
        assert 1000 <= exc.close_code < 5000


@FAST
@given(chunks=st.lists(st.binary(max_size=400), max_size=6))
def test_handshake_gives_a_request_or_a_handshake_error(chunks: list[bytes]) -> None:
    handshake = ServerHandshake()
    try:
        for chunk in chunks:
            handshake.feed(chunk)
    except HandshakeError as exc:
        assert 400 <= exc.status < 500


# ---------------------------------------------------------------- against a live relay


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"frames_per_second": 100_000, "frame_burst": 100_000}


@pytest.mark.parametrize("format", ["msgpack", "json"])
async def test_relay_answers_every_frame_without_an_internal_error(
    relay: Harness, format: str
) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    r = await alice.http.post("/v1/groups", json={"name": "g", "members": [bob.account_id]})
    assert r.status_code == 201, r.text
    ws = await websockets.connect(
        relay.url.replace("http", "ws") + "/v1/ws",
        subprotocols=[f"tresen.v1.{format}"],  # type: ignore[list-item]
        max_size=None,
    )
    loop = asyncio.get_running_loop()
    answers: list[dict[str, Any]] = []

    async def exchange(raw: bytes, n: int) -> list[dict[str, Any]]:
        """Send one fuzzed frame and a ping; everything the relay says before the pong."""
        await ws.send(raw if format == "msgpack" else raw.decode())
        await ws.send(encode({"t": "ping", "n": n}, format))
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while True:
                frame = decode(await ws.recv(), format)
                if frame == {"t": "pong", "n": n}:
                    return got
                got.append(frame)

    try:
        await ws.send(encode({"t": "hello", "token": alice.token}, format))
        assert decode(await ws.recv(), format)["t"] == "welcome"
        ids = [alice.account_id, bob.account_id, alice.device_id, bob.device_id, 1]
        known = st.sampled_from(ids)
        counter = iter(range(1, 10**9))  # Pong(n=0) omits n

        @settings(
            max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(frame=st.one_of(frames(CLIENT_TYPES), relay_frames(known)))
        def fuzz(frame: dict[Any, Any]) -> None:
            if frame.get("t") == "hello":
                return  # answered "already authenticated"; covered by the unit tests
            try:
                raw = encode(frame, format)
            except (TypeError, OverflowError, msgspec.EncodeError):
                return
            got = asyncio.run_coroutine_threadsafe(exchange(raw, next(counter)), loop).result(30)
            answers.extend(got)
            internal = [f for f in got if f.get("t") == "error" and f.get("code") == Code.INTERNAL]
            assert not internal, (frame, internal)

        await asyncio.to_thread(fuzz)
    finally:
        await ws.close()
    codes = {a.get("code") for a in answers if a.get("t") == "error"}
    assert codes, "the fuzzer never provoked an error frame"


def relay_frames(ids: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed frames with real and unreal ids, so the rules behind the decoder run."""
    any_id = st.one_of(ids, INTS)
    body = st.binary(max_size=64)
    return st.one_of(
        st.builds(
            lambda i, to, p: {"t": "send", "id": i, "to": to, "payloads": p},
            st.text(max_size=70),
            any_id,
            st.dictionaries(any_id, body, max_size=3),
        ),
        st.builds(
            lambda i, g, b, d: {"t": "gsend", "id": i, "group": g, "body": b, "devices": d},
            st.text(max_size=70),
            any_id,
            body,
            st.one_of(st.none(), st.lists(any_id, max_size=3)),
        ),
        st.builds(lambda u: {"t": "ack", "upto": u}, INTS),
        st.builds(
            lambda to, i: {"t": "read", "to": to, "ids": i},
            any_id,
            st.lists(st.text(max_size=70), max_size=3),
        ),
        st.builds(
            lambda to, g, on: {"t": "typing", "to": to, "group": g, "on": on},
            st.one_of(st.just(0), any_id),
            st.one_of(st.just(0), any_id),
            st.booleans(),
        ),
        st.builds(lambda a: {"t": "watch", "accounts": a}, st.lists(any_id, max_size=5)),
    )

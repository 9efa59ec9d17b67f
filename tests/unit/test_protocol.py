"""The sans-I/O codec, driven with raw bytes."""

from __future__ import annotations

import msgspec
import pytest

from tresen.protocol.codec import FrameError, client_codec, server_codec
from tresen.protocol.codes import Code
from tresen.protocol.frames import Ack, Deliver, Item, Send, SendGroup, Sent


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_round_trip_every_client_frame(fmt: str) -> None:
    server = server_codec(fmt)  # type: ignore[arg-type]
    client = client_codec(fmt)  # type: ignore[arg-type]
    for frame in (
        Send(id="a", to=1, payloads={2: b"\x00\x01"}),
        SendGroup(id="g", group=3, body=b"b", devices=[1, 2]),
        Ack(upto=10),
    ):
        assert server.decode(client.encode(frame)) == frame
    deliver = Deliver(items=[Item(1, "message", "x", 2, 3, 4, b"z")])
    assert client.decode(server.encode(deliver)) == deliver
    assert client.decode(server.encode(Sent(ids=["a"], ts=5))) == Sent(ids=["a"], ts=5)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", Code.MALFORMED_FRAME),
        (b"\xc1", Code.MALFORMED_FRAME),
        (msgspec.msgpack.encode([1, 2]), Code.MALFORMED_FRAME),
        (msgspec.msgpack.encode({"t": "nope"}), Code.UNKNOWN_FRAME),
        (msgspec.msgpack.encode({"id": "x"}), Code.UNKNOWN_FRAME),
        (
            msgspec.msgpack.encode({"t": "send", "id": 1, "to": 2, "payloads": {}}),
            Code.MALFORMED_FRAME,
        ),
        (msgspec.msgpack.encode({"t": "ack", "upto": "x"}), Code.MALFORMED_FRAME),
        (msgspec.msgpack.encode({"t": "send", "id": "a", "to": 1}), Code.MALFORMED_FRAME),
    ],
)
def test_bad_bytes_raise_stable_codes(data: bytes, code: Code) -> None:
    with pytest.raises(FrameError) as caught:
        server_codec().decode(data)
    assert caught.value.code == code


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    data = msgspec.msgpack.encode({"t": "ack", "upto": 3, "future_field": True})
    assert server_codec().decode(data) == Ack(upto=3)

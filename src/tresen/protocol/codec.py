"""Encode and strictly decode frames, sans I/O: bytes in, typed frames out.

A frame that cannot be decoded raises :class:`FrameError` with a stable code
(``malformed_frame`` or ``unknown_frame``); the caller answers it with an error frame and carries
on with the connection's other work.
"""

from __future__ import annotations

import re
from typing import Generic, Literal, TypeVar

import msgspec

from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code
from tresen.protocol.frames import ClientFrame, ServerFrame

Format = Literal["msgpack", "json"]
F = TypeVar("F")

_BAD_TAG = re.compile(r"Invalid value .* - at `\$\.t`|Object missing required field `t`")


class FrameError(InvalidRequest):
    """A frame could not be decoded."""

    default_code = Code.MALFORMED_FRAME


class Codec(Generic[F]):
    """Typed encoder/decoder for one direction of one connection."""

    __slots__ = ("_decode", "encode", "format")

    def __init__(self, frame_type: type[F], format: Format = "msgpack") -> None:
        self.format = format
        if format == "msgpack":
            self._decode = msgspec.msgpack.Decoder(frame_type).decode
            self.encode = msgspec.msgpack.Encoder().encode
        else:
            self._decode = msgspec.json.Decoder(frame_type).decode
            self.encode = msgspec.json.Encoder().encode

    def decode(self, data: bytes | str) -> F:
        try:
            return self._decode(data.encode() if isinstance(data, str) else data)
        except msgspec.ValidationError as exc:
            text = str(exc)
            if _BAD_TAG.search(text):
                raise FrameError(f"unknown frame type: {text}", code=Code.UNKNOWN_FRAME) from None
            raise FrameError(f"invalid frame: {text}") from None
        except (msgspec.DecodeError, UnicodeEncodeError) as exc:  # text with a lone surrogate
            raise FrameError(f"undecodable frame ({self.format}): {exc}") from None


def server_codec(format: Format = "msgpack") -> Codec[ClientFrame]:
    """What the relay uses: decodes client frames, encodes server frames."""
    return Codec(ClientFrame, format)  # type: ignore[arg-type]


def client_codec(format: Format = "msgpack") -> Codec[ServerFrame]:
    """What a client uses: decodes server frames, encodes client frames."""
    return Codec(ServerFrame, format)  # type: ignore[arg-type]


__all__ = ["Codec", "Format", "FrameError", "client_codec", "server_codec"]

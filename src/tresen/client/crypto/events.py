"""Matrix-shaped events: what travels inside a tresen envelope, and the checks on plaintext.

An envelope's payload (the opaque bytes the relay stores) is the JSON of :class:`Envelope`: a
list of ``m.room.encrypted`` events, Olm (to-device: 1:1 messages, ``m.room_key`` shares,
verification) first, then at most one Megolm room event (a group message).

Every decrypted Olm payload is checked as Matrix clients do (matrix-nio ``olm_machine.py``,
matrix-sdk-crypto): ``sender`` must be the account the relay says sent it, ``keys.ed25519`` the
signing key of the device whose curve25519 key the session belongs to, ``recipient`` and
``recipient_keys.ed25519`` this device. A Megolm payload must name the group it arrived in.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tresen.client.crypto.signing import MEGOLM_ALGORITHM, OLM_ALGORITHM, DeviceIdentity
from tresen.errors import CryptoError

ROOM_KEY = "m.room_key"
ENCRYPTED = "m.room.encrypted"
MESSAGE = "m.room.message"
DUMMY = "m.dummy"
MAX_ENVELOPE_EVENTS = 16


class OlmCiphertext(msgspec.Struct, frozen=True):
    type: Literal[0, 1]
    body: str


class OlmContent(msgspec.Struct, frozen=True):
    """``m.room.encrypted`` content for ``m.olm.v1.curve25519-aes-sha2``."""

    algorithm: str
    sender_key: str
    ciphertext: dict[str, OlmCiphertext]


class MegolmContent(msgspec.Struct, frozen=True, omit_defaults=True):
    """``m.room.encrypted`` content for ``m.megolm.v1.aes-sha2``."""

    algorithm: str
    session_id: str
    ciphertext: str
    #: deprecated in Matrix 1.3 and left out by newer senders: the relay's sender is used then
    sender_key: str = ""
    device_id: str = ""


class EncryptedEvent(msgspec.Struct, frozen=True):
    type: str
    content: dict[str, Any]


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The plaintext-free payload of one queue item."""

    v: int
    events: list[EncryptedEvent]


ENVELOPE_VERSION = 1
_envelope_decoder = msgspec.json.Decoder(Envelope)


def undecryptable(reason: str, message: str, **fields: Any) -> CryptoError:
    return CryptoError(message, reason=reason, **fields)


def encode_envelope(events: list[EncryptedEvent]) -> bytes:
    return msgspec.json.encode(Envelope(ENVELOPE_VERSION, events))


def decode_envelope(data: bytes) -> Envelope:
    try:
        envelope = _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise undecryptable("malformed_envelope", f"not an encrypted envelope: {exc}") from exc
    if envelope.v != ENVELOPE_VERSION:
        raise undecryptable("unsupported_version", f"envelope version {envelope.v} is unknown")
    # no events: the envelope carried something for another device of this account only
    if len(envelope.events) > MAX_ENVELOPE_EVENTS:
        raise undecryptable("malformed_envelope", "an envelope holds at most 16 events")
    for event in envelope.events:
        if event.type != ENCRYPTED:
            raise undecryptable(
                "unencrypted", f"an event of type {event.type!r} arrived unencrypted"
            )
    return envelope


def olm_content(content: dict[str, Any]) -> OlmContent:
    try:
        return msgspec.convert(content, OlmContent)
    except msgspec.ValidationError as exc:
        raise undecryptable("malformed_event", f"bad Olm event: {exc}") from exc


def megolm_content(content: dict[str, Any]) -> MegolmContent:
    try:
        return msgspec.convert(content, MegolmContent)
    except msgspec.ValidationError as exc:
        raise undecryptable("malformed_event", f"bad Megolm event: {exc}") from exc


def algorithm_of(event: EncryptedEvent) -> str:
    algorithm = event.content.get("algorithm")
    if algorithm not in (OLM_ALGORITHM, MEGOLM_ALGORITHM):
        raise undecryptable("unknown_algorithm", f"unknown algorithm {str(algorithm)[:60]!r}")
    return str(algorithm)


def olm_plaintext(
    event_type: str,
    content: dict[str, Any],
    sender: DeviceIdentity,
    recipient: DeviceIdentity,
    **extra: Any,
) -> bytes:
    """The plaintext of an Olm message, with the fields the receiver checks."""
    return msgspec.json.encode(
        {
            "type": event_type,
            "content": content,
            "sender": sender.user_id,
            "sender_device": sender.device_id,
            "keys": {"ed25519": sender.ed25519},
            "recipient": recipient.user_id,
            "recipient_keys": {"ed25519": recipient.ed25519},
            **extra,
        }
    )


class DecryptedOlm(msgspec.Struct, frozen=True):
    type: str
    content: dict[str, Any]
    sender: DeviceIdentity
    #: the whole checked plaintext (extra fields included)
    event: dict[str, Any]


def check_olm_plaintext(
    plaintext: bytes, sender: DeviceIdentity, own: DeviceIdentity
) -> DecryptedOlm:
    """The Matrix checks on a decrypted to-device payload (the CVE-2022-39249/39251 class)."""
    try:
        event = msgspec.json.decode(plaintext)
    except msgspec.DecodeError as exc:
        raise undecryptable("malformed_plaintext", "the decrypted payload is not JSON") from exc
    if not isinstance(event, dict):
        raise undecryptable("malformed_plaintext", "the decrypted payload is not an object")
    event_type, content = event.get("type"), event.get("content")
    if not isinstance(event_type, str) or not isinstance(content, dict):
        raise undecryptable("malformed_plaintext", "the decrypted payload lacks type or content")
    if event.get("sender") != sender.user_id:
        raise undecryptable(
            "sender_mismatch",
            f"the payload claims sender {str(event.get('sender'))[:40]!r} but came from "
            f"{sender.user_id!r}",
        )
    keys = event.get("keys")
    if not isinstance(keys, dict) or keys.get("ed25519") != sender.ed25519:
        raise undecryptable(
            "sender_key_mismatch",
            "the payload's keys.ed25519 is not the signing key of the sending device",
        )
    if event.get("recipient") != own.user_id:
        raise undecryptable("recipient_mismatch", "the payload was meant for another account")
    recipient_keys = event.get("recipient_keys")
    if not isinstance(recipient_keys, dict) or recipient_keys.get("ed25519") != own.ed25519:
        raise undecryptable(
            "recipient_key_mismatch", "the payload was encrypted for another device's keys"
        )
    if event_type == ENCRYPTED:
        raise undecryptable("nested_encryption", "an encrypted event inside an Olm payload")
    return DecryptedOlm(event_type, content, sender, event)


def check_megolm_plaintext(plaintext: bytes, room_id: str) -> tuple[str, dict[str, Any]]:
    try:
        event = msgspec.json.decode(plaintext)
    except msgspec.DecodeError as exc:
        raise undecryptable("malformed_plaintext", "the decrypted payload is not JSON") from exc
    if not isinstance(event, dict):
        raise undecryptable("malformed_plaintext", "the decrypted payload is not an object")
    event_type, content = event.get("type"), event.get("content")
    if not isinstance(event_type, str) or not isinstance(content, dict):
        raise undecryptable("malformed_plaintext", "the decrypted payload lacks type or content")
    if event.get("room_id") != room_id:
        raise undecryptable(
            "room_mismatch", "the group message was encrypted for another conversation"
        )
    return event_type, content

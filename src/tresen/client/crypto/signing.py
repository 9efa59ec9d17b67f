"""Canonical JSON and Ed25519 signatures over it, as Matrix signs device keys and one-time keys.

A signed object carries ``signatures: {user_id: {"ed25519:<device_id>": <unpadded base64>}}``;
the signature covers the object's canonical JSON without ``signatures`` and ``unsigned``.
Everything a device learns from the key directory passes through :func:`check_device_keys` or
:func:`check_one_time_key` before it is used: the relay stores these objects opaquely and could
hand out anything.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import vodozemac

from tresen.errors import CryptoError
from tresen.protocol.codes import Code

OLM_ALGORITHM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM_ALGORITHM = "m.megolm.v1.aes-sha2"
#: the one-time key algorithm Matrix clients use (a curve25519 key signed by the device)
OTK_ALGORITHM = "signed_curve25519"
DEVICE_ALGORITHMS = [OLM_ALGORITHM, MEGOLM_ALGORITHM]


class DeviceIdentity(msgspec.Struct, frozen=True):
    """A device's long-term public keys, taken from checked, self-signed device keys."""

    user_id: str
    device_id: str
    #: identity key for Olm (unpadded base64)
    curve25519: str
    #: fingerprint / signing key (unpadded base64)
    ed25519: str


def untrusted(reason: str, message: str, **fields: Any) -> CryptoError:
    return CryptoError(message, code=Code.UNTRUSTED_KEYS, reason=reason, **fields)


def canonical_json(value: Any) -> bytes:
    """Matrix canonical JSON: sorted keys, no insignificant whitespace, UTF-8, no floats."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def b64encode(data: bytes) -> str:
    """Unpadded standard base64, as Matrix writes binary values."""
    return base64.b64encode(data).decode().rstrip("=")


def b64decode(text: str) -> bytes:
    """Standard base64 with or without padding; raises ``ValueError`` on anything else."""
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def signable(obj: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


def add_signature(obj: dict[str, Any], user_id: str, key_id: str, signature: str) -> None:
    obj.setdefault("signatures", {}).setdefault(user_id, {})[key_id] = signature


def verify_signature(obj: dict[str, Any], user_id: str, device_id: str, ed25519: str) -> None:
    """Check the device's signature on ``obj``; raise :class:`CryptoError` if missing or wrong."""
    key_id = f"ed25519:{device_id}"
    signatures = obj.get("signatures")
    signature = None
    if isinstance(signatures, dict) and isinstance(signatures.get(user_id), dict):
        signature = signatures[user_id].get(key_id)
    if not isinstance(signature, str):
        raise untrusted(
            "missing_signature", f"the object is not signed by {user_id}'s device {device_id}"
        )
    try:
        key = vodozemac.Ed25519PublicKey.from_base64(ed25519)
        key.verify_signature(signable(obj), vodozemac.Ed25519Signature.from_base64(signature))
    except (ValueError, TypeError) as exc:
        raise untrusted(
            "bad_signature",
            f"the signature of {user_id}'s device {device_id} does not verify: {exc}",
        ) from exc


def check_device_keys(obj: object, user_id: str, device_id: str) -> DeviceIdentity:
    """Device keys as served by the directory: right owner, both keys, valid self-signature."""
    if not isinstance(obj, dict):
        raise untrusted("malformed_keys", "device keys must be a JSON object")
    if obj.get("user_id") != user_id or obj.get("device_id") != device_id:
        raise untrusted(
            "wrong_owner",
            f"device keys for {obj.get('user_id')!r}/{obj.get('device_id')!r} were served "
            f"as {user_id!r}/{device_id!r}",
        )
    keys = obj.get("keys")
    algorithms = obj.get("algorithms")
    if not isinstance(keys, dict) or not isinstance(algorithms, list):
        raise untrusted("malformed_keys", "device keys lack keys or algorithms")
    curve = keys.get(f"curve25519:{device_id}")
    ed = keys.get(f"ed25519:{device_id}")
    if not isinstance(curve, str) or not isinstance(ed, str):
        raise untrusted("malformed_keys", f"device {device_id} published no curve25519/ed25519")
    if OLM_ALGORITHM not in algorithms:
        raise untrusted("unsupported_device", f"device {device_id} does not speak {OLM_ALGORITHM}")
    verify_signature(obj, user_id, device_id, ed)
    return DeviceIdentity(user_id, device_id, curve, ed)


def check_one_time_key(key_id: str, obj: object, device: DeviceIdentity) -> str:
    """A claimed one-time (or fallback) key signed by ``device``; returns the curve25519 key."""
    algorithm = key_id.partition(":")[0]
    if algorithm != OTK_ALGORITHM or not isinstance(obj, dict):
        raise untrusted("malformed_keys", f"{key_id!r} is not a {OTK_ALGORITHM} key")
    key = obj.get("key")
    if not isinstance(key, str):
        raise untrusted("malformed_keys", f"{key_id!r} has no key")
    verify_signature(obj, device.user_id, device.device_id, device.ed25519)
    return key

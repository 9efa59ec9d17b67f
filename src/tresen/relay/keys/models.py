"""Request and response bodies of the key directory, in the shapes of Matrix's ``/keys/*``.

Account ids and device ids are integers in tresen; as keys of JSON maps they are decimal strings.
The signed key objects are opaque to the relay: they are ``dict[str, Any]`` here and checked by
``check_*`` in :mod:`tresen.relay.keys.service`, then stored and served as the JSON the client
sent (the client verifies the signatures, the relay never does).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

#: the one-time key algorithm vodozemac and matrix-sdk-crypto use; always present in counts
OTK_ALGORITHM = "signed_curve25519"

#: a device id in a query: a decimal string as Matrix sends it, or a plain integer
DeviceRef = int | Annotated[str, msgspec.Meta(max_length=20)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class UploadRequest(Strict):
    """``POST /v1/keys/upload``: any of the three parts, each optional."""

    #: the device's signed identity keys (user_id, device_id, algorithms, keys, signatures)
    device_keys: dict[str, Any] | None = None
    #: ``{"signed_curve25519:AAAAAQ": {"key": ..., "signatures": {...}}}``
    one_time_keys: dict[str, Any] = {}
    #: ``{"signed_curve25519:AAAAAg": {"key": ..., "fallback": true, "signatures": {...}}}``
    fallback_keys: dict[str, Any] = {}


class KeyCounts(msgspec.Struct):
    """What the calling device holds on the relay, so it knows when to top up."""

    #: unclaimed one-time keys per algorithm (``signed_curve25519`` is always present)
    one_time_key_counts: dict[str, int]
    #: algorithms whose fallback key was not handed out yet (Matrix's
    #: ``device_unused_fallback_key_types``): a missing one means upload a new fallback key
    unused_fallback_key_types: list[str] = []


class QueryRequest(Strict):
    """``POST /v1/keys/query``: ``{"device_keys": {"<account_id>": []}}``, ``[]`` = every device."""

    device_keys: dict[str, Annotated[list[DeviceRef], msgspec.Meta(max_length=256)]]
    #: accepted for Matrix compatibility and ignored (there is no federation to wait for)
    timeout: int | None = None


class QueryResult(msgspec.Struct):
    #: ``{"<account_id>": {"<device_id>": <signed device keys>}}``; every account asked for is
    #: present, with only its current devices that uploaded keys
    device_keys: dict[str, dict[str, msgspec.Raw]]
    #: always empty: one relay, no remote servers to fail (kept for Matrix's shape)
    failures: dict[str, Any] = {}


class ClaimRequest(Strict):
    """``POST /v1/keys/claim``: ``{"one_time_keys": {"<account_id>": {"<device_id>": "alg"}}}``."""

    one_time_keys: dict[str, dict[str, Annotated[str, msgspec.Meta(max_length=64)]]]
    #: accepted for Matrix compatibility and ignored
    timeout: int | None = None


class ClaimResult(msgspec.Struct):
    #: ``{"<account_id>": {"<device_id>": {"signed_curve25519:ID": <signed key>}}}``; devices
    #: with no key left (nor a fallback key), unknown or signed out, are absent
    one_time_keys: dict[str, dict[str, dict[str, msgspec.Raw]]]
    failures: dict[str, Any] = {}


class SignedKey(msgspec.Struct, frozen=True):
    """A checked one-time or fallback key, ready to store."""

    key_id: str
    algorithm: str
    json: bytes


class ClaimedKey(msgspec.Struct, frozen=True):
    key_id: str
    json: bytes

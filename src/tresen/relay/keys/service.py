"""Key directory rules: what a device may publish, who gets which key, when to ask for more.

The relay stores the signed key objects as opaque JSON and never verifies a signature (clients
do); it checks their shape strictly so that what it serves is at least well formed and belongs
to the device that uploaded it. ``access_*`` read, ``check_*`` validate, ``do_*`` change state
and publish events after the commit.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tresen.bus import Bus
from tresen.bus.events import KeysLowEvent
from tresen.config import Settings
from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.keys import store
from tresen.relay.keys.models import (
    OTK_ALGORITHM,
    ClaimedKey,
    ClaimRequest,
    ClaimResult,
    DeviceRef,
    KeyCounts,
    QueryRequest,
    QueryResult,
    SignedKey,
    UploadRequest,
)
from tresen.storage.engine import Database, Txn

#: encoded size limits of the opaque objects
MAX_DEVICE_KEYS_BYTES = 16 * 1024
MAX_KEY_BYTES = 2 * 1024
#: a device may hold this many upload batches of unclaimed one-time keys at most
STORED_UPLOADS = 5
MAX_FALLBACK_KEYS = 4

DEVICE_KEYS_FIELDS = frozenset({"user_id", "device_id", "algorithms", "keys", "signatures"})
DEVICE_KEYS_OPTIONAL = frozenset({"unsigned"})
KEY_FIELDS = frozenset({"key", "signatures"})
KEY_OPTIONAL = frozenset({"fallback"})

_ALGORITHM = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_KEY_NAME = re.compile(r"[A-Za-z0-9+/=_.\-]{1,128}")
_ID = re.compile(r"[1-9][0-9]{0,17}")
_MAX_TEXT = 512


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, code=Code.INVALID_KEYS)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise _invalid(f"{where} must be a non-empty string of at most {_MAX_TEXT} characters")
    return value


def _fields(
    obj: object, where: str, required: frozenset[str], optional: frozenset[str]
) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _invalid(f"{where} must be a JSON object")
    missing = sorted(required - obj.keys())
    if missing:
        raise _invalid(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(obj.keys() - required - optional)
    if unknown:
        raise _invalid(f"{where} has unknown field(s) {', '.join(unknown)[:200]}")
    return obj


def _encode(obj: dict[str, Any], where: str, limit: int) -> bytes:
    data = msgspec.json.encode(obj)
    if len(data) > limit:
        raise _invalid(f"{where} is {len(data)} bytes encoded, more than the {limit} allowed")
    return data


def check_key_id(key_id: str) -> tuple[str, str]:
    """Split ``algorithm:key_id`` (e.g. ``signed_curve25519:AAAAAQ``) into its two parts."""
    algorithm, sep, name = key_id.partition(":")
    if not (sep and _ALGORITHM.fullmatch(algorithm) and _KEY_NAME.fullmatch(name)):
        raise _invalid(
            f"key id {key_id[:80]!r} must be '<algorithm>:<key id>', "
            "e.g. 'signed_curve25519:AAAAAQ'"
        )
    return algorithm, name


def check_algorithm(algorithm: str) -> str:
    if not _ALGORITHM.fullmatch(algorithm):
        raise _invalid(f"{algorithm[:80]!r} is not a key algorithm, e.g. 'signed_curve25519'")
    return algorithm


def check_signatures(value: object, where: str, who: Principal) -> dict[str, Any]:
    """``{"<account_id>": {"ed25519:<device_id>": "<signature>"}}``, with the device's own
    signature present (the relay checks it is there, the client checks it is right)."""
    if not isinstance(value, dict) or not value:
        raise _invalid(f"{where}.signatures must be a non-empty object")
    for signer, signed in value.items():
        if len(signer) > 64:
            raise _invalid(f"{where}.signatures: signer {signer[:80]!r} is not an account id")
        if not isinstance(signed, dict) or not signed:
            raise _invalid(
                f"{where}.signatures must map account ids to non-empty objects of signatures"
            )
        for key_id, signature in signed.items():
            check_key_id(key_id)
            _text(signature, f"{where}.signatures[{signer!r}][{key_id!r}]")
    own = f"ed25519:{who.device_id}"
    if own not in value.get(str(who.account_id), {}):
        raise _invalid(
            f"{where} must be signed by this device: signatures[{str(who.account_id)!r}][{own!r}]"
        )
    return value


def check_device_keys(obj: object, who: Principal) -> bytes:
    """The device's signed identity keys, as JSON to store; only the device itself uploads them."""
    keys = _fields(obj, "device_keys", DEVICE_KEYS_FIELDS, DEVICE_KEYS_OPTIONAL)
    account, device = str(who.account_id), str(who.device_id)
    if keys["user_id"] != account:
        raise _invalid(f"device_keys.user_id must be this account's id as a string, {account!r}")
    if keys["device_id"] != device:
        raise _invalid(f"device_keys.device_id must be this device's id as a string, {device!r}")
    algorithms = keys["algorithms"]
    if not isinstance(algorithms, list) or not 0 < len(algorithms) <= 16:
        raise _invalid("device_keys.algorithms must be a list of 1 to 16 algorithm names")
    for algorithm in algorithms:
        if not isinstance(algorithm, str) or not _ALGORITHM.fullmatch(algorithm):
            raise _invalid(f"device_keys.algorithms has a bad name {str(algorithm)[:80]!r}")
    identity = keys["keys"]
    if not isinstance(identity, dict) or not 0 < len(identity) <= 16:
        raise _invalid("device_keys.keys must be an object of 1 to 16 keys")
    for key_id, key in identity.items():
        _, name = check_key_id(key_id)
        if name != device:
            raise _invalid(f"device_keys.keys: {key_id!r} must be named '<algorithm>:{device}'")
        _text(key, f"device_keys.keys[{key_id!r}]")
    for needed in (f"curve25519:{device}", f"ed25519:{device}"):
        if needed not in identity:
            raise _invalid(f"device_keys.keys lacks {needed!r}")
    check_signatures(keys["signatures"], "device_keys", who)
    if "unsigned" in keys and not isinstance(keys["unsigned"], dict):
        raise _invalid("device_keys.unsigned must be an object")
    return _encode(keys, "device_keys", MAX_DEVICE_KEYS_BYTES)


def check_signed_key(key_id: str, obj: object, who: Principal, *, fallback: bool) -> SignedKey:
    """One signed one-time key, or a fallback key (``fallback=True``: it must say so itself)."""
    where = f"{'fallback_keys' if fallback else 'one_time_keys'}[{key_id[:80]!r}]"
    algorithm, _ = check_key_id(key_id)
    key = _fields(obj, where, KEY_FIELDS, KEY_OPTIONAL)
    _text(key["key"], f"{where}.key")
    check_signatures(key["signatures"], where, who)
    flag = key.get("fallback", False)
    if fallback and flag is not True:
        raise _invalid(f'{where} must have "fallback": true (it is part of what is signed)')
    if not fallback and flag is not False:
        raise _invalid(f"{where} is a one-time key: upload fallback keys under fallback_keys")
    return SignedKey(key_id, algorithm, _encode(key, where, MAX_KEY_BYTES))


def check_one_time_keys(keys: dict[str, Any], who: Principal, limit: int) -> list[SignedKey]:
    """Checked keys in the order sent: a device hands out its keys in the order it made them."""
    if len(keys) > limit:
        raise _invalid(
            f"{len(keys)} one-time keys in one upload, more than the {limit} allowed: "
            "send them in several uploads"
        )
    return [check_signed_key(k, v, who, fallback=False) for k, v in keys.items()]


def check_fallback_keys(keys: dict[str, Any], who: Principal) -> list[SignedKey]:
    """At most one fallback key per algorithm."""
    if len(keys) > MAX_FALLBACK_KEYS:
        raise _invalid(f"at most {MAX_FALLBACK_KEYS} fallback keys, one per algorithm")
    checked = [check_signed_key(k, v, who, fallback=True) for k, v in keys.items()]
    algorithms = [k.algorithm for k in checked]
    if len(set(algorithms)) != len(algorithms):
        raise _invalid("fallback_keys has two keys of one algorithm: keep only the newest")
    return checked


def check_id(raw: DeviceRef, what: str) -> int:
    """An account or device id, given as a JSON integer or (in map keys) a decimal string."""
    if isinstance(raw, int):
        if raw > 0:
            return raw
    elif _ID.fullmatch(raw):
        return int(raw)
    raise InvalidRequest(f"{str(raw)[:40]!r} is not a valid {what} id (a positive integer)")


def check_query(request: QueryRequest, max_accounts: int) -> dict[int, set[int]]:
    """``{account_id: device ids}`` to look up; an empty set means every device."""
    if len(request.device_keys) > max_accounts:
        raise InvalidRequest(f"at most {max_accounts} accounts per key query")
    return {
        check_id(account, "account"): {check_id(d, "device") for d in devices}
        for account, devices in request.device_keys.items()
    }


def check_claim(request: ClaimRequest, max_devices: int) -> list[tuple[int, int, str]]:
    """``(account_id, device_id, algorithm)`` sorted, so concurrent claims lock rows in one order
    (no deadlock on PostgreSQL)."""
    wanted = [
        (check_id(account, "account"), check_id(device, "device"), check_algorithm(algorithm))
        for account, devices in request.one_time_keys.items()
        for device, algorithm in devices.items()
    ]
    if len(wanted) > max_devices:
        raise InvalidRequest(f"at most {max_devices} devices per key claim")
    return sorted(wanted)


class KeyService:
    def __init__(self, db: Database, bus: Bus, settings: Settings) -> None:
        self.db, self.bus, self.settings = db, bus, settings

    # ------------------------------------------------------------ the device's own keys

    async def do_upload_keys(self, who: Principal, request: UploadRequest) -> KeyCounts:
        """Publish identity keys, one-time keys and fallback keys; all or nothing.

        Identity keys never change for a device (a new identity is a new device); other fields
        of the object may (more signatures). A one-time key id already held must come with the
        same content (a resend); a new fallback key replaces the old one of its algorithm.
        """
        device_keys = None
        if request.device_keys is not None:
            device_keys = check_device_keys(request.device_keys, who)
        limit = self.settings.max_otks_per_upload
        one_time = check_one_time_keys(request.one_time_keys, who, limit)
        fallback = check_fallback_keys(request.fallback_keys, who)
        device = who.device_id

        async def upload(txn: Txn) -> KeyCounts:
            if device_keys is not None:
                await self._put_device_keys(txn, device, device_keys)
            if one_time:
                await self._add_one_time_keys(txn, device, one_time, limit * STORED_UPLOADS)
            for key in fallback:
                held = await store.get_fallback_key(txn, device, key.algorithm)
                if held is None or (held[0], _decode(held[1])) != (key.key_id, _decode(key.json)):
                    await store.put_fallback_key(txn, device, key)
            return await _counts(txn, device)

        return await self.db.run_interaction("upload_keys", upload)

    async def _put_device_keys(self, txn: Txn, device: int, keys: bytes) -> None:
        held = await store.get_device_keys(txn, device)
        new = _decode(keys)
        if held is not None:
            old = _decode(held)
            if old == new:
                return
            if old.get("keys") != new["keys"]:
                raise _invalid(
                    "this device's identity keys are published and cannot change: "
                    "a new identity needs a new device (register or link one)"
                )
        await store.put_device_keys(txn, device, keys.decode())

    async def _add_one_time_keys(
        self, txn: Txn, device: int, keys: list[SignedKey], most: int
    ) -> None:
        held = await store.get_one_time_keys(txn, device, [k.key_id for k in keys])
        new = []
        for key in keys:
            old = held.get(key.key_id)
            if old is None:
                new.append(key)
            elif _decode(old) != _decode(key.json):
                raise _invalid(
                    f"one-time key {key.key_id!r} was uploaded before with other content: "
                    "key ids are never reused"
                )
        if not new:
            return
        count = sum((await store.count_one_time_keys(txn, device)).values())
        if count + len(new) > most:
            raise _invalid(
                f"this device holds {count} unclaimed one-time keys; with {len(new)} more it "
                f"would pass the {most} allowed: upload when the count is low"
            )
        await store.add_one_time_keys(txn, device, new)

    async def access_key_counts(self, who: Principal) -> KeyCounts:
        return await self.db.run_interaction(
            "key_counts", lambda txn: _counts(txn, who.device_id), write=False
        )

    async def otk_count(self, device_id: int, algorithm: str = OTK_ALGORITHM) -> int:
        """Unclaimed one-time keys of ``algorithm`` the device holds (for the Welcome frame)."""
        return await self.db.run_interaction(
            "otk_count",
            lambda txn: store.count_one_time_keys_of(txn, device_id, algorithm),
            write=False,
        )

    # ------------------------------------------------------------ other devices' keys

    async def access_device_keys(self, who: Principal, request: QueryRequest) -> QueryResult:
        """Signed identity keys of the current devices of each account asked for (any caller may
        ask: a sender must find the devices of someone it never wrote to)."""
        wanted = check_query(request, self.settings.max_group_members)

        async def query(txn: Txn) -> dict[str, dict[str, msgspec.Raw]]:
            found: dict[str, dict[str, msgspec.Raw]] = {}
            for account, devices in wanted.items():
                rows = await store.query_device_keys(txn, account)
                found[str(account)] = {
                    str(device): msgspec.Raw(keys.encode())
                    for device, keys in rows
                    if not devices or device in devices
                }
            return found

        return QueryResult(await self.db.run_interaction("query_keys", query, write=False))

    async def do_claim_keys(self, who: Principal, request: ClaimRequest) -> ClaimResult:
        """One key per device, each handed out exactly once, oldest first; the fallback key when
        none is left. Devices that run low hear it on ``device.<id>`` after the commit."""
        wanted = check_claim(request, self.settings.max_group_members * self.settings.max_devices)
        watermark = self.settings.otk_low_watermark

        async def claim(txn: Txn) -> tuple[list[tuple[int, int, ClaimedKey]], list[KeysLowEvent]]:
            claimed: list[tuple[int, int, ClaimedKey]] = []
            low: list[KeysLowEvent] = []
            active: dict[int, list[int]] = {}
            for account, device, algorithm in wanted:
                if account not in active:
                    active[account] = await store.active_devices(txn, account)
                if device not in active[account]:
                    continue
                key = await store.claim_one_time_key(txn, device, algorithm)
                if key is None:
                    key = await store.claim_fallback_key(txn, device, algorithm)
                if key is not None:
                    claimed.append((account, device, key))
                left = await store.count_one_time_keys_of(txn, device, algorithm)
                if left < watermark:
                    low.append(KeysLowEvent(device=device, count=left))
            return claimed, low

        claimed, low = await self.db.run_interaction("claim_keys", claim)
        for event in low:
            self.bus.publish(f"device.{event.device}", event)
        result: dict[str, dict[str, dict[str, msgspec.Raw]]] = {}
        for account, device, key in claimed:
            result.setdefault(str(account), {})[str(device)] = {key.key_id: msgspec.Raw(key.json)}
        return ClaimResult(result)


def _decode(data: str | bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(data)
    return decoded


async def _counts(txn: Txn, device_id: int) -> KeyCounts:
    counts = {OTK_ALGORITHM: 0, **await store.count_one_time_keys(txn, device_id)}
    return KeyCounts(counts, await store.unused_fallback_algorithms(txn, device_id))

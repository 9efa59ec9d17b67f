"""SQL of the key directory (``device_keys``, ``one_time_keys``, ``fallback_keys``).

Key objects are stored as the JSON text the client sent (after checking); the relay never
parses them again except to compare a re-upload. One-time key ids are stored whole
(``signed_curve25519:AAAAAQ``), so ``UNIQUE (device_id, key_id)`` is per algorithm too.
"""

from __future__ import annotations

from collections.abc import Sequence

from tresen.relay.keys.models import ClaimedKey, SignedKey
from tresen.storage.engine import Txn

#: How often one claim retries after losing a race for the same key (see claim_one_time_key).
CLAIM_ATTEMPTS = 64

_CLAIM = (
    "DELETE FROM one_time_keys WHERE id = ("
    "SELECT id FROM one_time_keys WHERE device_id = ? AND algorithm = ? ORDER BY id LIMIT 1"
    ") RETURNING key_id, key_json"
)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


async def active_devices(txn: Txn, account_id: int) -> list[int]:
    rows = await txn.fetch(
        "SELECT id FROM devices WHERE account_id = ? AND revoked_at IS NULL ORDER BY id",
        account_id,
    )
    return [int(r[0]) for r in rows]


# ---------------------------------------------------------------- device keys


async def get_device_keys(txn: Txn, device_id: int) -> str | None:
    row = await txn.fetchone("SELECT keys_json FROM device_keys WHERE device_id = ?", device_id)
    return str(row[0]) if row else None


async def put_device_keys(txn: Txn, device_id: int, keys_json: str) -> None:
    await txn.execute(
        "INSERT INTO device_keys (device_id, keys_json) VALUES (?, ?) "
        "ON CONFLICT (device_id) DO UPDATE SET keys_json = excluded.keys_json",
        device_id,
        keys_json,
    )


async def query_device_keys(txn: Txn, account_id: int) -> list[tuple[int, str]]:
    """``(device_id, keys_json)`` of the account's current devices that uploaded keys."""
    rows = await txn.fetch(
        "SELECT d.id, k.keys_json FROM devices d JOIN device_keys k ON k.device_id = d.id "
        "WHERE d.account_id = ? AND d.revoked_at IS NULL ORDER BY d.id",
        account_id,
    )
    return [(int(r[0]), str(r[1])) for r in rows]


# ---------------------------------------------------------------- one-time keys


async def get_one_time_keys(txn: Txn, device_id: int, key_ids: Sequence[str]) -> dict[str, str]:
    """The stored JSON of those of ``key_ids`` this device still holds."""
    if not key_ids:
        return {}
    rows = await txn.fetch(
        "SELECT key_id, key_json FROM one_time_keys "  # noqa: S608 (only ? marks are joined)
        f"WHERE device_id = ? AND key_id IN ({_marks(len(key_ids))})",
        device_id,
        *key_ids,
    )
    return {str(r[0]): str(r[1]) for r in rows}


async def add_one_time_keys(txn: Txn, device_id: int, keys: Sequence[SignedKey]) -> None:
    """Insert in the given order (ids ascend, so claims hand them out oldest first).

    A key id that a concurrent upload of the same device inserted first is skipped.
    """
    ids = await txn.next_ids("otk_seq", len(keys))
    await txn.executemany(
        "INSERT INTO one_time_keys (id, device_id, key_id, algorithm, key_json) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, key_id) DO NOTHING",
        [
            (i, device_id, k.key_id, k.algorithm, k.json.decode())
            for i, k in zip(ids, keys, strict=True)
        ],
    )


async def count_one_time_keys(txn: Txn, device_id: int) -> dict[str, int]:
    rows = await txn.fetch(
        "SELECT algorithm, count(*) FROM one_time_keys WHERE device_id = ? GROUP BY algorithm",
        device_id,
    )
    return {str(r[0]): int(r[1]) for r in rows}


async def count_one_time_keys_of(txn: Txn, device_id: int, algorithm: str) -> int:
    row = await txn.fetchone(
        "SELECT count(*) FROM one_time_keys WHERE device_id = ? AND algorithm = ?",
        device_id,
        algorithm,
    )
    return int(row[0]) if row else 0


async def claim_one_time_key(txn: Txn, device_id: int, algorithm: str) -> ClaimedKey | None:
    """Take the device's oldest key of ``algorithm`` in one statement, or None if it has none.

    On PostgreSQL two concurrent claimers can pick the same oldest id in the subquery; the one
    that loses waits for the winner's commit and then deletes nothing. It tries again with a
    fresh snapshot, and gives up only when no key is left (each lost race means another claim
    took a key, so this ends). SQLite runs one writer at a time and never loses.
    """
    for _ in range(CLAIM_ATTEMPTS):
        row = await txn.fetchone(_CLAIM, device_id, algorithm)
        if row is not None:
            return ClaimedKey(str(row[0]), str(row[1]).encode())
        left = await txn.fetchone(
            "SELECT 1 FROM one_time_keys WHERE device_id = ? AND algorithm = ? LIMIT 1",
            device_id,
            algorithm,
        )
        if left is None:
            return None
    return None


async def drop_device(txn: Txn, device_id: int) -> None:
    """A signed-out device's keys go with it (call in the transaction that revokes it)."""
    await txn.execute("DELETE FROM one_time_keys WHERE device_id = ?", device_id)
    await txn.execute("DELETE FROM fallback_keys WHERE device_id = ?", device_id)
    await txn.execute("DELETE FROM device_keys WHERE device_id = ?", device_id)


# ---------------------------------------------------------------- fallback keys


async def get_fallback_key(txn: Txn, device_id: int, algorithm: str) -> tuple[str, str] | None:
    """``(key_id, key_json)`` of the device's fallback key for ``algorithm``."""
    row = await txn.fetchone(
        "SELECT key_id, key_json FROM fallback_keys WHERE device_id = ? AND algorithm = ?",
        device_id,
        algorithm,
    )
    return (str(row[0]), str(row[1])) if row else None


async def put_fallback_key(txn: Txn, device_id: int, key: SignedKey) -> None:
    """Replace the device's fallback key for the algorithm; the new one is unused."""
    await txn.execute(
        "INSERT INTO fallback_keys (device_id, algorithm, key_id, key_json, used) "
        "VALUES (?, ?, ?, ?, 0) ON CONFLICT (device_id, algorithm) DO UPDATE SET "
        "key_id = excluded.key_id, key_json = excluded.key_json, used = 0",
        device_id,
        key.algorithm,
        key.key_id,
        key.json.decode(),
    )


async def claim_fallback_key(txn: Txn, device_id: int, algorithm: str) -> ClaimedKey | None:
    """The fallback key, marked used; it is handed out on every claim until replaced."""
    row = await txn.fetchone(
        "UPDATE fallback_keys SET used = 1 WHERE device_id = ? AND algorithm = ? "
        "RETURNING key_id, key_json",
        device_id,
        algorithm,
    )
    return ClaimedKey(str(row[0]), str(row[1]).encode()) if row else None


async def unused_fallback_algorithms(txn: Txn, device_id: int) -> list[str]:
    rows = await txn.fetch(
        "SELECT algorithm FROM fallback_keys WHERE device_id = ? AND used = 0 ORDER BY algorithm",
        device_id,
    )
    return [str(r[0]) for r in rows]

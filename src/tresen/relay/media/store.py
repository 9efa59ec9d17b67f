"""SQL for media rows and their grants. Nothing but SQL lives here; the bytes are in blobs.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from tresen.relay.media.models import Grant, MediaKind, MediaRow
from tresen.storage.engine import Row, Txn

_COLUMNS = (
    "id, owner_account, owner_device, kind, declared_size, received, created_at, "
    "completed_at, expires_at, keep"
)
#: ids per ``IN (...)`` list: well under every engine's limit on bound parameters
_CHUNK = 500


def _row(r: Row) -> MediaRow:
    return MediaRow(
        media_id=str(r[0]),
        owner_account=int(r[1]),
        owner_device=int(r[2]),
        kind=cast(MediaKind, r[3]),
        declared_size=int(r[4]),
        received=int(r[5]),
        created_at=int(r[6]),
        completed_at=None if r[7] is None else int(r[7]),
        expires_at=int(r[8]),
        keep=bool(r[9]),
    )


async def insert_media(txn: Txn, row: MediaRow) -> None:
    await txn.execute(
        f"INSERT INTO media ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        row.media_id,
        row.owner_account,
        row.owner_device,
        row.kind,
        row.declared_size,
        row.received,
        row.created_at,
        row.completed_at,
        row.expires_at,
        int(row.keep),
    )


async def get_media(txn: Txn, media_id: str) -> MediaRow | None:
    r = await txn.fetchone(f"SELECT {_COLUMNS} FROM media WHERE id = ?", media_id)  # noqa: S608
    return _row(r) if r else None


async def set_received(txn: Txn, media_id: str, received: int) -> bool:
    """False if the row is gone (purged or deleted meanwhile)."""
    changed = await txn.execute("UPDATE media SET received = ? WHERE id = ?", received, media_id)
    return changed > 0


async def set_completed(txn: Txn, media_id: str, received: int, at: int) -> bool:
    changed = await txn.execute(
        "UPDATE media SET received = ?, completed_at = ? WHERE id = ?", received, at, media_id
    )
    return changed > 0


async def set_expiry(txn: Txn, media_id: str, expires_at: int) -> None:
    await txn.execute("UPDATE media SET expires_at = ? WHERE id = ?", expires_at, media_id)


async def delete_media(txn: Txn, media_id: str) -> bool:
    await txn.execute("DELETE FROM media_grants WHERE media_id = ?", media_id)
    changed = await txn.execute("DELETE FROM media WHERE id = ?", media_id)
    return changed > 0


async def expired(txn: Txn, now: int, limit: int) -> list[str]:
    """Ids whose time is up, soonest first."""
    rows = await txn.fetch(
        "SELECT id FROM media WHERE expires_at <= ? ORDER BY expires_at LIMIT ?", now, limit
    )
    return [str(r[0]) for r in rows]


async def delete_many(txn: Txn, media_ids: list[str]) -> None:
    for start in range(0, len(media_ids), _CHUNK):
        chunk = media_ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        await txn.execute(f"DELETE FROM media_grants WHERE media_id IN ({marks})", *chunk)  # noqa: S608
        await txn.execute(f"DELETE FROM media WHERE id IN ({marks})", *chunk)  # noqa: S608


async def lock_owner(txn: Txn, account_id: int) -> None:
    """Serialise quota checks of one account (its row lock on PostgreSQL; SQLite has one
    writer anyway)."""
    await txn.execute("UPDATE accounts SET id = id WHERE id = ?", account_id)


async def held_by(txn: Txn, account_id: int) -> tuple[int, int]:
    """(blobs, declared bytes) an account's unexpired uploads hold."""
    r = await txn.fetchone(
        "SELECT count(*), coalesce(sum(declared_size), 0) FROM media WHERE owner_account = ?",
        account_id,
    )
    return (int(r[0]), int(r[1])) if r else (0, 0)


# ---------------------------------------------------------------- grants


async def add_grants(txn: Txn, media_id: str, devices: Iterable[tuple[int, int]], now: int) -> int:
    """Grant each (account, device) not granted yet; returns how many were new."""
    have = {g.device_id for g in await grants_of(txn, media_id)}
    rows = [(media_id, a, d, now) for a, d in dict.fromkeys(devices) if d not in have]
    if rows:
        await txn.executemany(
            "INSERT INTO media_grants (media_id, account_id, device_id, granted_at) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )
    return len(rows)


async def grants_of(txn: Txn, media_id: str) -> list[Grant]:
    rows = await txn.fetch(
        "SELECT account_id, device_id, granted_at, fetched_at FROM media_grants "
        "WHERE media_id = ? ORDER BY account_id, device_id",
        media_id,
    )
    return [
        Grant(int(r[0]), int(r[1]), int(r[2]), None if r[3] is None else int(r[3])) for r in rows
    ]


async def is_granted(txn: Txn, media_id: str, device_id: int) -> bool:
    r = await txn.fetchone(
        "SELECT 1 FROM media_grants WHERE media_id = ? AND device_id = ?", media_id, device_id
    )
    return r is not None


async def mark_fetched(txn: Txn, media_id: str, device_id: int, now: int) -> bool:
    """Record the first complete download by a granted device; False if not granted or done."""
    changed = await txn.execute(
        "UPDATE media_grants SET fetched_at = ? "
        "WHERE media_id = ? AND device_id = ? AND fetched_at IS NULL",
        now,
        media_id,
        device_id,
    )
    return changed > 0


async def fetch_progress(txn: Txn, media_id: str) -> tuple[int, int, int | None]:
    """(grants, grants fetched, time of the last fetch), counting devices not revoked: a
    device signed out before it fetched the blob will never fetch it."""
    r = await txn.fetchone(
        "SELECT count(*), count(g.fetched_at), max(g.fetched_at) FROM media_grants g "
        "JOIN devices d ON d.id = g.device_id WHERE g.media_id = ? AND d.revoked_at IS NULL",
        media_id,
    )
    if r is None:
        return 0, 0, None
    return int(r[0]), int(r[1]), None if r[2] is None else int(r[2])

"""SQL of the per-device queues (``queue``) and the seen-envelope-ids table.

The queue follows the stream-id contract: each row has a ``seq`` from one sequence; a device
fetches ``seq > after`` in order and the rows it acknowledged are deleted by ``seq``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tresen.protocol.frames import Item
from tresen.storage.engine import Txn

#: (seq, device_id, kind, envelope_id, sender_account, sender_device, group_id (0: none), created,
#:  expires, body)
QueueRow = tuple[int, int, str, str, int, int, int, int, int, bytes]

#: the first key of the per-device queue advisory locks (PostgreSQL)
QUEUE_LOCK_SPACE = 0x7E5E
#: a batch waits at most this long for another node's batch on the same devices; past it the
#: batch fails (senders get ``unavailable`` and resend) instead of stalling behind a frozen node
QUEUE_LOCK_TIMEOUT = "5s"


#: rows per statement when ids are claimed: a batch is cut into these, largest first. A statement
#: of each length is prepared once and kept in the engine's statement cache; one per batch
#: length (any from 1 to 2,048) pushed each other out of it, and preparing them cost a fifth of
#: the claim's CPU (counted with callgrind).
CLAIM_ROWS = (256, 64, 16, 4, 1)
_CLAIM_SQL = {
    n: "INSERT INTO envelope_ids (sender_device, envelope_id, created_at) "  # noqa: S608
    f"VALUES {', '.join(['(?, ?, ?)'] * n)} ON CONFLICT DO NOTHING "
    "RETURNING sender_device, envelope_id"
    for n in CLAIM_ROWS
}


def _claim_chunks(keys: Sequence[tuple[int, str]]) -> Iterator[Sequence[tuple[int, str]]]:
    start = 0
    for size in CLAIM_ROWS:
        while len(keys) - start >= size:
            yield keys[start : start + size]
            start += size


async def claim_envelope_ids(
    txn: Txn, keys: Sequence[tuple[int, str]], now: int
) -> set[tuple[int, str]]:
    """Record sender-chosen ids; return those not seen before."""
    fresh: set[tuple[int, str]] = set()
    for chunk in _claim_chunks(keys):
        rows = await txn.fetch(
            _CLAIM_SQL[len(chunk)],
            *[v for device, envelope_id in chunk for v in (device, envelope_id, now)],
        )
        fresh.update((int(r[0]), r[1]) for r in rows)
    return fresh


async def lock_queues(txn: Txn, devices: Sequence[int]) -> None:
    """Hold these devices' queues until the commit, before their ``seq`` are allocated.

    With many writers (relay nodes on PostgreSQL), a device's items then commit in ``seq``
    order, so a reader that sees ``seq`` N also sees every earlier item of that device and a
    cursor never skips one that commits late.
    """
    await txn.lock_keys(QUEUE_LOCK_SPACE, devices, timeout=QUEUE_LOCK_TIMEOUT)


async def insert_rows(txn: Txn, rows: Sequence[QueueRow]) -> None:
    # group 0 is stored as NULL by the database: a None parameter costs Python's sqlite3 3,300
    # instructions (it looks for an adapter and formats an AttributeError), a 0 almost nothing
    await txn.executemany(
        "INSERT INTO queue (seq, device_id, kind, envelope_id, sender_account, sender_device, "
        "group_id, created_at, expires_at, body) "
        "VALUES (?, ?, ?, ?, ?, ?, NULLIF(CAST(? AS BIGINT), 0), ?, ?, ?)",
        rows,
    )


async def delete_rows(txn: Txn, keys: Sequence[tuple[int, int]]) -> None:
    """Delete acknowledged rows given as ``(seq, device_id)``."""
    await txn.executemany("DELETE FROM queue WHERE seq = ? AND device_id = ?", keys)


async def fetch_after(txn: Txn, device_id: int, after: int, limit: int) -> list[Item]:
    rows = await txn.fetch(
        "SELECT seq, kind, envelope_id, sender_account, sender_device, created_at, body, group_id "
        "FROM queue WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        device_id,
        after,
        limit,
    )
    return [
        Item(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), int(r[5]), bytes(r[6]), int(r[7] or 0))
        for r in rows
    ]


async def queue_length(txn: Txn, device_id: int) -> int:
    row = await txn.fetchone("SELECT count(*) FROM queue WHERE device_id = ?", device_id)
    return int(row[0]) if row else 0


async def drop_device(txn: Txn, device_id: int) -> None:
    """A revoked device's queue goes with it."""
    await txn.execute("DELETE FROM queue WHERE device_id = ?", device_id)


async def take_expired(txn: Txn, now: int, limit: int) -> list[tuple[int, int, str, str, int, int]]:
    """Delete up to ``limit`` expired rows; return (seq, device, kind, id, sender acct, device)."""
    rows = await txn.fetch(
        "SELECT seq, device_id, kind, envelope_id, sender_account, sender_device FROM queue "
        "WHERE expires_at < ? ORDER BY expires_at LIMIT ?",
        now,
        limit,
    )
    await delete_rows(txn, [(int(r[0]), int(r[1])) for r in rows])
    return [(int(r[0]), int(r[1]), r[2], r[3], int(r[4]), int(r[5])) for r in rows]


async def forget_envelope_ids(txn: Txn, before: int) -> None:
    await txn.execute("DELETE FROM envelope_ids WHERE created_at < ?", before)

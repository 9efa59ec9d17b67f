"""The gateway's SQL (and only here): numbers, people, messages, media, the webhook outbox.

The gateway keeps its own database (SQLite by default, PostgreSQL as an option) through the
same engines as the relay (:mod:`tresen.storage`), with its own numbered migrations in
:mod:`tresen.gateway.migrations`, recorded in ``gw_schema_version`` so that a gateway may even
share a PostgreSQL server (or database) with a relay without touching its tables.
"""

from __future__ import annotations

import re
from importlib import resources

from tresen.errors import Unavailable
from tresen.storage.engine import Database, Migration, Row, Txn

_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("tresen.gateway.migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


SCHEMA_VERSION = migrations()[-1].version


async def migrate(db: Database) -> list[int]:
    """Apply the gateway's pending migrations, each in its own transaction."""

    async def current(txn: Txn) -> int:
        await txn.execute(
            "CREATE TABLE IF NOT EXISTS gw_schema_version "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
        )
        row = await txn.fetchone("SELECT coalesce(max(version), 0) FROM gw_schema_version")
        return int(row[0]) if row else 0

    have = await db.run_interaction("gw_schema_version", current)
    if have > SCHEMA_VERSION:
        raise Unavailable(
            f"gateway schema {have} is newer than this tresen ({SCHEMA_VERSION}): upgrade"
        )
    applied = []
    for migration in migrations():
        if migration.version <= have:
            continue

        async def apply(txn: Txn, m: Migration = migration) -> None:
            for statement in m.statements(lambda name: [], db.dialect):
                await txn.execute(statement)
            await txn.execute("INSERT INTO gw_schema_version VALUES (?, ?, 0)", m.version, m.name)

        await db.run_interaction(f"gw_migrate_{migration.version}", apply)
        applied.append(migration.version)
    return applied


# ---------------------------------------------------------------- numbers

NUMBER = (
    "id, waba_id, relay_url, account_id, device_id, device_token, phone, token_hash, "
    "app_secret, verify_token, webhook_url, pin_hash, registered_at, created_at"
)


async def insert_number(txn: Txn, row: tuple[object, ...]) -> None:
    await txn.execute(
        f"INSERT INTO gw_numbers ({NUMBER}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        *row,
    )


async def numbers(txn: Txn) -> list[Row]:
    return await txn.fetch(f"SELECT {NUMBER} FROM gw_numbers ORDER BY created_at")  # noqa: S608


async def set_webhook(txn: Txn, number: str, url: str, verify_token: str) -> int:
    return await txn.execute(
        "UPDATE gw_numbers SET webhook_url = ?, verify_token = ? WHERE id = ?",
        url,
        verify_token,
        number,
    )


async def set_pin(txn: Txn, number: str, pin_hash: str, now: int) -> int:
    return await txn.execute(
        "UPDATE gw_numbers SET pin_hash = ?, registered_at = ? WHERE id = ?", pin_hash, now, number
    )


async def set_token(txn: Txn, number: str, token_hash: str) -> int:
    return await txn.execute(
        "UPDATE gw_numbers SET token_hash = ? WHERE id = ?", token_hash, number
    )


# ---------------------------------------------------------------- people


async def person(txn: Txn, number: str, account: int) -> Row | None:
    return await txn.fetchone(
        "SELECT account_id, scoped_id, phone, name FROM gw_people "
        "WHERE number_id = ? AND account_id = ?",
        number,
        account,
    )


async def person_by_scoped(txn: Txn, number: str, scoped: str) -> Row | None:
    return await txn.fetchone(
        "SELECT account_id, scoped_id, phone, name FROM gw_people "
        "WHERE number_id = ? AND scoped_id = ?",
        number,
        scoped,
    )


async def person_by_phone(txn: Txn, number: str, phone: str) -> Row | None:
    return await txn.fetchone(
        "SELECT account_id, scoped_id, phone, name FROM gw_people "
        "WHERE number_id = ? AND phone = ?",
        number,
        phone,
    )


async def upsert_person(
    txn: Txn, number: str, account: int, scoped: str, phone: str, name: str
) -> None:
    await txn.execute(
        "INSERT INTO gw_people (number_id, account_id, scoped_id, phone, name) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (number_id, account_id) DO UPDATE SET "
        "scoped_id = excluded.scoped_id, phone = excluded.phone, name = excluded.name",
        number,
        account,
        scoped,
        phone,
        name,
    )


# ---------------------------------------------------------------- messages

MESSAGE = "id, direction, person, type, status, category, opaque, created_at, pricing"


async def has_message(txn: Txn, number: str, id: str) -> bool:
    """Whether the id is already known (a redelivered envelope)."""
    found = await txn.fetchone(
        "SELECT 1 FROM gw_messages WHERE number_id = ? AND id = ?", number, id
    )
    return found is not None


async def add_message(
    txn: Txn,
    number: str,
    id: str,
    direction: str,
    person: int,
    type: str,
    status: str,
    category: str,
    opaque: str,
    now: int,
    pricing: str = "",
) -> None:
    """A message whose id is new (one this gateway just made, or checked with has_message)."""
    await txn.execute(
        f"INSERT INTO gw_messages (number_id, {MESSAGE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        number,
        id,
        direction,
        person,
        type,
        status,
        category,
        opaque,
        now,
        pricing,
    )


async def last_inbound(txn: Txn, number: str, person: int) -> int | None:
    """When the person last wrote to this number (ms), if ever."""
    row = await txn.fetchone(
        "SELECT max(created_at) FROM gw_messages "
        "WHERE number_id = ? AND person = ? AND direction = 'in'",
        number,
        person,
    )
    return int(row[0]) if row and row[0] is not None else None


async def message(txn: Txn, number: str, id: str) -> Row | None:
    return await txn.fetchone(
        f"SELECT {MESSAGE} FROM gw_messages WHERE number_id = ? AND id = ?",  # noqa: S608
        number,
        id,
    )


async def outbound_with_person(txn: Txn, number: str, id: str) -> Row | None:
    """An outbound message with its person: status, category, opaque, pricing, then the
    person's account_id, scoped_id, phone, name."""
    return await txn.fetchone(
        "SELECT m.status, m.category, m.opaque, m.pricing, "
        "p.account_id, p.scoped_id, p.phone, p.name FROM gw_messages m "
        "JOIN gw_people p ON p.number_id = m.number_id AND p.account_id = m.person "
        "WHERE m.number_id = ? AND m.id = ? AND m.direction = 'out'",
        number,
        id,
    )


async def set_message_status(txn: Txn, number: str, id: str, status: str) -> int:
    return await txn.execute(
        "UPDATE gw_messages SET status = ? WHERE number_id = ? AND id = ?", status, number, id
    )


# ---------------------------------------------------------------- media

MEDIA = "id, number_id, origin, file, mime_type, sha256, size, filename, created_at, expires_at"


async def insert_media(txn: Txn, row: tuple[object, ...]) -> None:
    await txn.execute(
        f"INSERT INTO gw_media ({MEDIA}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        *row,
    )


async def media(txn: Txn, media_id: str) -> Row | None:
    return await txn.fetchone(
        f"SELECT {MEDIA} FROM gw_media WHERE id = ?",  # noqa: S608
        media_id,
    )


async def delete_media(txn: Txn, media_id: str) -> int:
    return await txn.execute("DELETE FROM gw_media WHERE id = ?", media_id)


async def expired_media(txn: Txn, now: int, limit: int) -> list[Row]:
    return await txn.fetch(
        f"SELECT {MEDIA} FROM gw_media WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",  # noqa: S608
        now,
        limit,
    )


# ---------------------------------------------------------------- the webhook outbox

OUTBOX = (
    "id, number_id, conversation, body, state, attempts, next_at, last_error, last_status, "
    "created_at, done_at"
)


async def enqueue(txn: Txn, id: int, number: str, conversation: str, body: str, now: int) -> None:
    await txn.execute(
        "INSERT INTO gw_outbox (id, number_id, conversation, body, state, next_at, created_at) "
        "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
        id,
        number,
        conversation,
        body,
        now,
        now,
    )


async def max_outbox_id(txn: Txn) -> int:
    row = await txn.fetchone("SELECT coalesce(max(id), 0) FROM gw_outbox")
    return int(row[0]) if row else 0


async def due(txn: Txn, now: int, limit: int) -> list[Row]:
    """The oldest due pending events, in id order, but none behind an older pending event of
    its conversation that waits for a retry: each conversation's events come as a run that
    starts at its oldest pending one."""
    return await txn.fetch(
        f"SELECT {OUTBOX} FROM gw_outbox o WHERE state = 'pending' AND next_at <= ? "  # noqa: S608
        "AND NOT EXISTS (SELECT 1 FROM gw_outbox e WHERE e.conversation = o.conversation "
        "AND e.state = 'pending' AND e.id < o.id AND e.next_at > ?) ORDER BY id LIMIT ?",
        now,
        now,
        limit,
    )


async def next_due(txn: Txn, now: int) -> int | None:
    """When the next retry is due, after a :func:`due` at ``now`` found nothing: a pending
    event that was due already waits behind one of these (it once answered with such an
    event's past time, and the worker read the table over and over, a core busy)."""
    row = await txn.fetchone(
        "SELECT min(next_at) FROM gw_outbox WHERE state = 'pending' AND next_at > ?", now
    )
    return int(row[0]) if row and row[0] is not None else None


async def delivered(txn: Txn, rows: list[tuple[int, int, int]]) -> None:
    """Mark events delivered: rows of (HTTP status, done at, id)."""
    await txn.executemany(
        "UPDATE gw_outbox SET state = 'delivered', attempts = attempts + 1, last_status = ?, "
        "last_error = '', done_at = ? WHERE id = ?",
        rows,
    )


async def failed(txn: Txn, rows: list[tuple[str, int, str, int, int, int]]) -> None:
    """Record failed attempts: rows of (state, HTTP status, error, next attempt at, done at,
    id); the state is ``pending`` (retried at next_at, done at 0) or ``dead``."""
    await txn.executemany(
        "UPDATE gw_outbox SET state = ?, attempts = attempts + 1, last_status = ?, "
        "last_error = ?, next_at = ?, done_at = ? WHERE id = ?",
        rows,
    )


async def deliveries(txn: Txn, number: str, state: str | None, after: int, limit: int) -> list[Row]:
    if state is None:
        return await txn.fetch(
            f"SELECT {OUTBOX} FROM gw_outbox WHERE number_id = ? AND id > ? "  # noqa: S608
            "ORDER BY id LIMIT ?",
            number,
            after,
            limit,
        )
    return await txn.fetch(
        f"SELECT {OUTBOX} FROM gw_outbox WHERE number_id = ? AND state = ? AND id > ? "  # noqa: S608
        "ORDER BY id LIMIT ?",
        number,
        state,
        after,
        limit,
    )


async def delivery(txn: Txn, number: str, id: int) -> Row | None:
    return await txn.fetchone(
        f"SELECT {OUTBOX} FROM gw_outbox WHERE number_id = ? AND id = ?",  # noqa: S608
        number,
        id,
    )


async def replay(txn: Txn, number: str, id: int, now: int) -> int:
    """A dead event goes back to pending (its 7 days start again)."""
    return await txn.execute(
        "UPDATE gw_outbox SET state = 'pending', attempts = 0, next_at = ?, created_at = ?, "
        "done_at = 0 WHERE number_id = ? AND id = ? AND state = 'dead'",
        now,
        now,
        number,
        id,
    )


# ---------------------------------------------------------------- watched relay state


async def watched(txn: Txn, number: str) -> dict[str, str]:
    rows = await txn.fetch("SELECT key, value FROM gw_watch WHERE number_id = ?", number)
    return {str(r[0]): str(r[1]) for r in rows}


async def set_watched(txn: Txn, number: str, key: str, value: str) -> None:
    await txn.execute(
        "INSERT INTO gw_watch (number_id, key, value) VALUES (?, ?, ?) "
        "ON CONFLICT (number_id, key) DO UPDATE SET value = excluded.value",
        number,
        key,
        value,
    )


async def prune_outbox(txn: Txn, before: int) -> int:
    """Forget delivered events finished before ``before`` (dead letters stay until replayed)."""
    return await txn.execute(
        "DELETE FROM gw_outbox WHERE state = 'delivered' AND done_at < ?", before
    )

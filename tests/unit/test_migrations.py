"""Schema migrations: one dialect's own migrations, and the SQLite queue keyed by its rowid."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tresen.protocol.frames import Item
from tresen.relay.envelopes import store
from tresen.storage import sqlite as sqlite_engine
from tresen.storage.engine import Migration, Txn, load_migrations
from tresen.storage.sqlite import SqliteDatabase

ONLY_SQLITE = """
-- tunes one engine
@only sqlite
CREATE TABLE t (a BIGINT);
CREATE INDEX t_a ON t (a)
"""


def test_a_migration_for_one_dialect_does_nothing_on_another() -> None:
    migration = Migration(99, "tune", ONLY_SQLITE)
    assert migration.statements(lambda name: [], "sqlite") == [
        "CREATE TABLE t (a BIGINT)",
        "CREATE INDEX t_a ON t (a)",
    ]
    assert migration.statements(lambda name: [], "postgres") == []
    plain = Migration(98, "plain", "@sequence s\nCREATE TABLE u (a BIGINT)")
    assert plain.statements(lambda name: [f"SEQ {name}"], "postgres") == [
        "SEQ s",
        "CREATE TABLE u (a BIGINT)",
    ]


def queue_indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'queue'"
        ).fetchall()
        return {r[0] for r in rows}
    finally:
        conn.close()


async def test_an_older_sqlite_queue_is_rebuilt_keyed_by_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    # a database made by tresen before migration 6: seq BIGINT PRIMARY KEY, a hidden rowid
    with monkeypatch.context() as m:
        m.setattr(sqlite_engine, "_TYPES", {"BYTEA": "BLOB"})
        m.setattr(sqlite_engine, "load_migrations", lambda: load_migrations()[:5])
        db = SqliteDatabase(str(path))
        await db.open()
        assert await db.migrate() == [1, 2, 3, 4, 5]

        async def fill(txn: Txn) -> None:
            await store.insert_rows(
                txn,
                [
                    (7, 70, "message", "a", 1, 10, 0, 1000, 9000, b"\x00one"),
                    (8, 70, "message", "b", 1, 10, 42, 1001, 9001, b"two"),
                    (9, 71, "delivered", "a", 2, 20, 0, 1002, 9002, b""),
                ],
            )

        await db.run_interaction("fill", fill)
        await db.close()
    assert "sqlite_autoindex_queue_1" in queue_indexes(path)  # the unique index on seq

    db = SqliteDatabase(str(path))
    await db.open()
    try:
        assert await db.migrate() == [6]
        assert queue_indexes(path) == {"queue_device", "queue_expiry"}

        async def read(txn: Txn) -> tuple[list[Item], list[Item], list[tuple[object, ...]]]:
            device_70 = await store.fetch_after(txn, 70, 0, 10)
            device_71 = await store.fetch_after(txn, 71, 0, 10)
            groups = await txn.fetch("SELECT seq, group_id FROM queue ORDER BY seq")
            return device_70, device_71, [tuple(r) for r in groups]

        device_70, device_71, groups = await db.run_interaction("read", read, write=False)
        assert [(i.seq, i.id, i.body, i.group) for i in device_70] == [
            (7, "a", b"\x00one", 0),
            (8, "b", b"two", 42),
        ]
        assert [(i.seq, i.kind) for i in device_71] == [(9, "delivered")]
        assert groups == [(7, None), (8, 42), (9, None)]  # no group is NULL, as before
    finally:
        await db.close()


async def test_a_new_sqlite_database_keys_its_tables_by_rowid(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    db = SqliteDatabase(str(path))
    await db.open()
    try:
        await db.migrate()
    finally:
        await db.close()
    conn = sqlite3.connect(path)
    try:
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'accounts'").fetchone()[0]
        autoindexes = conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_autoindex_queue%'"
        ).fetchall()
    finally:
        conn.close()
    assert "id INTEGER PRIMARY KEY" in ddl
    assert autoindexes == []

"""WAL checkpoints of tresen's SQLite files: never on the writer's (the event loop's) thread,
and a log that ends even when writes never pause; where a commit runs."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tresen.client.crypto.store import CryptoStore
from tresen.storage.engine import Txn
from tresen.storage.sqlite import SqliteDatabase


def wal_restarts(wal: Path) -> int:
    """How often the log has started over: the checkpoint sequence number in its header
    (SQLite's WAL format, offset 12), which each restart counts up."""
    with wal.open("rb") as f:
        header = f.read(16)
    return int.from_bytes(header[12:16], "big") if len(header) == 16 else 0


def checkpoint_threads() -> int:
    return sum(t.name == "tresen-crypto-checkpoint" for t in threading.enumerate())


def rows_in_the_file(path: Path) -> int:
    """Inbox rows in the database file itself, not counting what is only in its WAL."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        query = "SELECT count(*) FROM state WHERE kind = 'inbox'"
        return int(conn.execute(query).fetchone()[0])
    except sqlite3.OperationalError:  # not even the table is in the file yet
        return 0
    finally:
        conn.close()


def test_a_crypto_store_is_copied_back_by_its_own_thread(tmp_path: Path) -> None:
    path = tmp_path / "device.store"
    store = CryptoStore.open_with_key(path, os.urandom(32))
    for n in range(20):  # a few pages: SQLite's own checkpoint would wait for a thousand
        store.put("inbox", f"{n:04d}", {"n": n})
        store.commit()
    deadline = time.monotonic() + 10
    while rows_in_the_file(path) < 20:
        assert time.monotonic() < deadline, "the WAL was never copied back"
        time.sleep(0.05)
    store.close()


def test_the_checkpoint_thread_ends_with_its_store(tmp_path: Path) -> None:
    threads = checkpoint_threads()
    closed = CryptoStore.open_with_key(tmp_path / "a.store", os.urandom(32))
    dropped = CryptoStore.open_with_key(tmp_path / "b.store", os.urandom(32))
    assert checkpoint_threads() == threads + 2
    closed.close()
    assert checkpoint_threads() == threads + 1
    del dropped  # never closed: the thread notices the store is gone
    gc.collect()
    deadline = time.monotonic() + 10
    while checkpoint_threads() > threads:
        assert time.monotonic() < deadline, "the thread outlived its store"
        time.sleep(0.05)


async def test_the_wal_starts_over_while_writes_never_pause(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    db = SqliteDatabase(str(path), synchronous="normal")
    db.checkpoint_every = 0.02
    db.reset_pages = 64
    await db.open()
    blob = os.urandom(3000)

    async def create(txn: Txn) -> None:
        await txn.execute("CREATE TABLE t (v BLOB)")

    async def write(txn: Txn) -> None:
        await txn.execute("INSERT INTO t (v) VALUES (?)", blob)
        await txn.execute("DELETE FROM t WHERE rowid < (SELECT max(rowid) - 50 FROM t)")

    wal, largest, restarts = Path(f"{path}-wal"), 0, 0
    try:
        await db.run_interaction("create", create)
        stop = time.monotonic() + 1.5
        while time.monotonic() < stop:  # one write after another, never idle
            await db.run_interaction("write", write)
            await asyncio.sleep(0)
            largest = max(largest, wal.stat().st_size)
            restarts = max(restarts, wal_restarts(wal))
        rows = await db.run_interaction("count", lambda txn: txn.fetchone("SELECT count(*) FROM t"))
    finally:
        await db.close()
    assert rows is not None and rows[0] == 51
    # only an idle moment started it over: none in these 1.5 s, and it grew to 313-353 MB
    assert restarts >= 3, restarts
    assert largest < 96 * 1024 * 1024, largest  # 2-23 MB, as fast as the machine writes


class RecordingDatabase(SqliteDatabase):
    """Notes the thread each COMMIT of a write transaction ran on."""

    def __init__(self, path: str) -> None:
        super().__init__(path)  # synchronous=FULL: the COMMIT waits for an fsync
        self.committed_on: list[str] = []

    def _timed_commit(self, conn: sqlite3.Connection) -> None:
        self.committed_on.append(threading.current_thread().name)
        super()._timed_commit(conn)


async def test_a_light_write_commits_on_the_loop_while_commits_are_quick(tmp_path: Path) -> None:
    db = RecordingDatabase(str(tmp_path / "light.db"))
    await db.open()

    def rows(n: int) -> Any:
        async def write(txn: Txn) -> None:
            await txn.executemany("INSERT INTO t (v) VALUES (?)", [(i,) for i in range(n)])

        return write

    try:
        await db.run_interaction("create", lambda txn: txn.execute("CREATE TABLE t (v INT)"))
        loop_thread = threading.current_thread().name
        await db.run_interaction("light", rows(3), light=True)
        await db.run_interaction("not light", rows(3))
        await db.run_interaction("too many rows", rows(db.light_rows + 1), light=True)
        db.inline_commit_seconds = 0.0  # a disk whose fsync takes longer than a thread handoff
        await db.run_interaction("slow disk", rows(3), light=True)
        count = await db.run_interaction(
            "count", lambda txn: txn.fetchone("SELECT count(*) FROM t"), write=False
        )
    finally:
        await db.close()
    assert count is not None and count[0] == 3 + 3 + db.light_rows + 1 + 3
    on_loop = [name == loop_thread for name in db.committed_on]
    assert on_loop == [False, True, False, False, False]  # create, light, not light, ...

"""WAL checkpoints of tresen's SQLite files: never on the writer's (the event loop's) thread,
and a log that ends even when writes never pause; a durable commit flushes its log."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tresen.client.crypto.store import CryptoStore
from tresen.storage.engine import Txn
from tresen.storage.fsync import Syncer, ThreadSync
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


class CountingSyncer:
    """Wraps the engine's syncer; notes which file each flush was for."""

    def __init__(self, inner: Syncer) -> None:
        self.inner = inner
        self.flushed: list[int] = []  # inode numbers

    async def fdatasync(self, fd: int) -> None:
        self.flushed.append(os.fstat(fd).st_ino)
        await self.inner.fdatasync(fd)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("use_aio", [True, False], ids=["aio", "thread"])
async def test_a_full_commit_returns_after_its_wal_is_flushed(
    tmp_path: Path, use_aio: bool
) -> None:
    path = tmp_path / "full.db"
    db = SqliteDatabase(str(path))  # synchronous=full, the default
    db.use_aio = use_aio
    await db.open()
    assert db.syncer is not None
    if not use_aio:
        assert isinstance(db.syncer, ThreadSync)
    syncer = db.syncer = CountingSyncer(db.syncer)
    try:
        await db.run_interaction("create", lambda txn: txn.execute("CREATE TABLE t (v INT)"))
        for n in range(5):
            await db.run_interaction(
                "insert", lambda txn, n=n: txn.execute("INSERT INTO t VALUES (?)", n)
            )
        assert db._write is not None
        # the COMMIT only appends to the log; the engine's flush is what FULL adds to NORMAL
        assert db._write.execute("PRAGMA synchronous").fetchone()[0] == 1
        wal = Path(f"{path}-wal").stat().st_ino
        assert syncer.flushed == [wal] * 6
        await db.run_interaction("read", lambda txn: txn.fetch("SELECT v FROM t"), write=False)
        assert len(syncer.flushed) == 6  # reads flush nothing
    finally:
        await db.close()
    assert db.syncer is None


async def test_normal_and_memory_databases_flush_nothing_themselves(tmp_path: Path) -> None:
    normal = SqliteDatabase(str(tmp_path / "normal.db"), synchronous="normal")
    memory = SqliteDatabase(":memory:")
    for db in (normal, memory):
        await db.open()
        try:
            assert db.syncer is None
            await db.run_interaction("create", lambda txn: txn.execute("CREATE TABLE t (v)"))
        finally:
            await db.close()


async def test_a_wal_removed_behind_the_engine_is_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "moved.db"
    db = SqliteDatabase(str(path))
    await db.open()
    try:
        await db.run_interaction("create", lambda txn: txn.execute("CREATE TABLE t (v INT)"))
        first = os.fstat(db._wal()).st_ino
        wal = Path(f"{path}-wal")
        wal.rename(tmp_path / "old-wal")  # the inode lives on under another name
        wal.write_bytes(b"")
        (tmp_path / "old-wal").unlink()
        assert os.fstat(db._wal()).st_ino == wal.stat().st_ino != first
    finally:
        await db.close()

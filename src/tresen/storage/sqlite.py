"""SQLite engine: WAL, one writer at a time, fsyncs off the event loop.

Statements run on the event loop thread (they take microseconds). Durability
(``synchronous=full``, the default) is SQLite's own rule for WAL mode made asynchronous: the
writer's connection runs ``synchronous=NORMAL``, so a COMMIT only appends its frames to the
log, and the engine then flushes the log file (``fdatasync``) and returns only once that is
done. That is the one sync SQLite's FULL adds to NORMAL in WAL mode ("an additional sync of the
WAL file after each transaction commit"), so what a caller is told is committed survives a
power cut as before. The flush is awaited, not waited for: by Linux AIO where the kernel offers
it, with no thread (:mod:`tresen.storage.fsync`), else in a thread; the loop serves connections
meanwhile and the next writes gather into the next transaction.

Before, the COMMIT itself (waiting on fsync) ran in a worker thread, or on the loop for a small
write while this disk's fsync was quick: handing it to the thread and back took the GIL twice
and cost 120-240 µs of CPU a commit, more than the commit (the relay's writer, measured); on
the loop, the fsync stopped the relay. Running whole interactions in a thread was tried and
measured worse still: SQLite releases the GIL for every row it steps, and with the loop busy
each re-acquisition waits for the interpreter's switch interval (a convoy). Reads use their own
connection and so see only committed data (WAL snapshots); a read may see a commit whose flush
is still running, which a power cut could take back with its writer never told it succeeded.

Checkpoints (copying the WAL back into the database file, with its own fsyncs) never run inside
a commit: automatic checkpoints are off on the writer's connection, and a thread runs a passive
checkpoint on a connection of its own every :attr:`SqliteDatabase.checkpoint_every` seconds
after writes, so no sender waits behind one. Only a write that begins with every frame copied
back starts the WAL over, and under steady load one always commits while a checkpoint runs: the
log grew without end (37 MB/s in a busy gateway). So once it holds
:attr:`SqliteDatabase.reset_pages`, the next checkpoint is repeated with writes held back (the
loop runs on), for the frames written meanwhile; the next write starts the log over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tresen.errors import Unavailable
from tresen.storage.engine import (
    SCHEMA_VERSION,
    Interaction,
    InteractionTimer,
    Row,
    load_migrations,
    unstorable,
)
from tresen.storage.fsync import Syncer, open_syncer

T = TypeVar("T")
log = logging.getLogger("tresen.storage")

#: the schema's types as SQLite spells them. A table whose key is declared INTEGER PRIMARY KEY
#: keeps its rows by that key (the rowid); with BIGINT the rows are kept by a hidden rowid and
#: the key is one more index that every insert and delete updates.
_TYPES = {"BYTEA": "BLOB", "BIGINT PRIMARY KEY": "INTEGER PRIMARY KEY"}

# Python's sqlite3 binds int, float, str and bytearray as they are, but for every bytes parameter
# it searches for an adapter (a registry miss, then attribute lookups that format and drop an
# AttributeError): 1,500 instructions a parameter, counted with callgrind. A registered identity
# adapter (bytes(b) is b) is found at once.
sqlite3.register_adapter(bytes, bytes)

#: SQLite's answers for a disk that is full, failing or read-only, or a database another writer
#: holds: nothing was written, and the caller may try again (the relay answers ``unavailable``)
_STORAGE_FAULTS = {
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_READONLY,
}


class SqliteTxn:
    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return self.conn.execute(sql, args).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self.conn.execute(sql, args).fetchall()

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = self.conn.execute(sql, args).fetchone()
        return row

    async def next_ids(self, sequence: str, n: int) -> list[int]:
        row = self.conn.execute(
            "UPDATE sequences SET value = value + ? WHERE name = ? RETURNING value", (n, sequence)
        ).fetchone()
        if row is None:
            raise Unavailable(f"sequence {sequence} is missing: run `tresen migrate`")
        last = int(row[0])
        return list(range(last - n + 1, last + 1))

    async def lock_keys(self, space: int, keys: Iterable[int], *, timeout: str) -> None:
        return None  # one write transaction at a time (BEGIN IMMEDIATE): nothing to wait for


def _checkpoint(conn: sqlite3.Connection) -> int:
    """A passive checkpoint; returns the WAL's size in pages."""
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row[1]) if row else 0


class SqliteDatabase:
    dialect = "sqlite"
    checkpoint_every = 0.5
    reset_pages = 65_536  # 256 MB of WAL: writes wait for two fsyncs once per that much
    #: flush commits by Linux AIO where the kernel offers it (False: always in a thread)
    use_aio = True

    def __init__(self, path: str, *, synchronous: str = "full") -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self._write: sqlite3.Connection | None = None
        self._read: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._checkpointer: asyncio.Task[None] | None = None
        self._writes = 0
        #: flushes the WAL after each commit (FULL on a file in WAL mode); None: SQLite syncs
        #: as ``synchronous`` says, or nothing needs to (NORMAL, OFF, in memory)
        self.syncer: Syncer | None = None
        self._wal_fd = -1

    def _connect(self, synchronous: str = "") -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous or self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        # a statement's own undo log (a multi-row change inside a transaction) spills to a temp
        # file past 64 KiB: SQLite then created and unlinked one in /var/tmp per batch under
        # load, five system calls and an inode on the event loop. Kept in memory instead.
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        flush = self.path != ":memory:" and self.synchronous in ("FULL", "EXTRA")
        self._write = self._connect("NORMAL" if flush else "")
        self._read = self._connect() if self.path != ":memory:" else self._write
        if self.path != ":memory:":
            if flush:
                journal = self._write.execute("PRAGMA journal_mode").fetchone()
                if journal is not None and journal[0] == "wal":
                    probe = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        self.syncer = open_syncer(probe, use_aio=self.use_aio)
                    finally:
                        os.close(probe)
                else:  # a filesystem without WAL: SQLite's own syncs, on the loop
                    self._write.execute(f"PRAGMA synchronous={self.synchronous}")
            self._write.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = asyncio.create_task(self._checkpoints(), name="sqlite-checkpoint")

    def _wal(self) -> int:
        """A descriptor of the WAL file (there after the first commit), opened again if the file
        was removed (its last connection elsewhere closed): flushing it would save nothing."""
        if self._wal_fd >= 0 and os.fstat(self._wal_fd).st_nlink == 0:
            os.close(self._wal_fd)
            self._wal_fd = -1
        if self._wal_fd < 0:
            self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        return self._wal_fd

    async def _flush(self, name: str) -> None:
        """Wait until every commit so far is on stable storage (a no-op without a syncer)."""
        if self.syncer is None:
            return
        try:
            await self.syncer.fdatasync(self._wal())
        except FileNotFoundError:
            return  # no log yet: no commit has written one
        except OSError as exc:
            raise Unavailable(
                f"storage unavailable: {name} was written but could not be flushed to disk: "
                f"{exc}; try again"
            ) from exc

    async def _checkpoints(self) -> None:
        conn = self._connect()
        pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
        loop = asyncio.get_running_loop()
        try:
            seen = 0
            while True:
                await asyncio.sleep(self.checkpoint_every)
                if self._writes != seen:
                    seen = self._writes
                    try:
                        pages = await loop.run_in_executor(pool, _checkpoint, conn)
                        if pages >= self.reset_pages:
                            async with self._lock:  # no write until all is copied back
                                await loop.run_in_executor(pool, _checkpoint, conn)
                    except sqlite3.Error as exc:
                        log.warning("WAL checkpoint failed (will retry): %s", exc)
        finally:
            await loop.run_in_executor(pool, _checkpoint, conn)
            pool.shutdown(wait=True)
            conn.close()

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
            self._checkpointer = None
        async with self._lock:
            for conn in {id(c): c for c in (self._read, self._write) if c}.values():
                conn.close()
            self._read = self._write = None
        if self.syncer is not None:
            self.syncer.close()
            self.syncer = None
        if self._wal_fd >= 0:
            os.close(self._wal_fd)
            self._wal_fd = -1

    async def run_interaction(self, name: str, fn: Interaction[T], *, write: bool = True) -> T:
        timer = InteractionTimer(name)
        if not write:
            assert self._read is not None, "database is not open"
            try:
                result = await fn(SqliteTxn(self._read))
            except OverflowError as exc:
                raise unstorable(exc) from exc
            timer.done()
            return result
        async with self._lock:
            conn = self._write
            assert conn is not None, "database is not open"
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = await fn(SqliteTxn(conn))
            except BaseException as exc:
                if conn.in_transaction:  # after some errors (SQLITE_FULL) SQLite rolled back
                    conn.execute("ROLLBACK")
                if isinstance(exc, OverflowError):
                    raise unstorable(exc) from exc
                if (
                    isinstance(exc, sqlite3.Error)
                    and exc.sqlite_errorcode & 0xFF in _STORAGE_FAULTS
                ):
                    raise Unavailable(
                        f"storage unavailable during {name}: {exc}; try again"
                    ) from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise Unavailable(
                    f"storage unavailable: could not commit {name}: {exc}; try again"
                ) from exc
            self._writes += 1
            await self._flush(name)
        timer.done()
        return result

    def _sequence(self, name: str) -> list[str]:
        return [f"INSERT INTO sequences (name, value) VALUES ('{name}', 0)"]  # noqa: S608

    async def schema_version(self) -> int:
        assert self._write is not None
        has = self._write.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
        ).fetchone()
        if not has:
            return 0
        row = self._write.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    async def migrate(self) -> list[int]:
        assert self._write is not None
        async with self._lock:
            conn = self._write
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS sequences "
                "(name TEXT PRIMARY KEY, value BIGINT NOT NULL)"
            )
            current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            have = int(current.fetchone()[0])
            done = {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}
            if have > SCHEMA_VERSION:
                raise Unavailable(
                    f"database schema {have} is newer than this tresen ({SCHEMA_VERSION}): upgrade"
                )
            applied = []
            for migration in load_migrations():
                if migration.version in done:  # not "<= have": a late-merged lower number runs
                    continue
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in migration.statements(self._sequence, self.dialect):
                        for src, dst in _TYPES.items():
                            statement = statement.replace(src, dst)
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_version "
                        "VALUES (?, ?, CAST(strftime('%s','now') AS INT))",
                        (migration.version, migration.name),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                applied.append(migration.version)
            await self._flush("migrate")
            return applied

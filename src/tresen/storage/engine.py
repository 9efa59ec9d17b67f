"""The storage engine protocol: named interactions over a transaction, one per dialect.

Stores write SQL once, with ``?`` placeholders and portable types; each engine hides its
dialect (placeholder style, sequences, byte type) here so no store branches on the engine.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, Protocol, TypeVar

from tresen.errors import InvalidRequest

T = TypeVar("T")
Row = Sequence[Any]

log = logging.getLogger("tresen.storage")

#: The oldest schema this code can still run against (the newest is SCHEMA_VERSION, below).
SCHEMA_COMPAT_VERSION = 1


class Txn(Protocol):
    """One open transaction. Every method runs a single statement."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchone(self, sql: str, *args: Any) -> Row | None: ...

    async def next_ids(self, sequence: str, n: int) -> list[int]:
        """Allocate ``n`` ascending ids from a named sequence (created by a migration)."""
        ...

    async def lock_keys(self, space: int, keys: Iterable[int], *, timeout: str) -> None:
        """Hold locks on ``(space, key)`` until the commit, taken in ascending order (no
        deadlock between transactions); wait at most ``timeout`` (e.g. ``"5s"``) for another
        writer's. An engine with a single writer (SQLite) has nothing to lock."""
        ...


Interaction = Callable[[Txn], Awaitable[T]]


class Database(Protocol):
    dialect: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def run_interaction(self, name: str, fn: Interaction[T], *, write: bool = True) -> T:
        """Run ``fn`` in one transaction named ``name`` (for logs and metrics); a write returns
        once it is committed durably."""
        ...

    async def migrate(self) -> list[int]:
        """Apply every pending migration; return the versions applied."""
        ...

    async def schema_version(self) -> int: ...


class Migration:
    def __init__(self, version: int, name: str, sql: str) -> None:
        self.version = version
        self.name = name
        self.sql = sql

    def statements(self, sequence: Callable[[str], list[str]], dialect: str) -> list[str]:
        """Split into statements, expanding ``@sequence NAME`` lines for the dialect.

        A migration with an ``@only DIALECT`` line changes only that dialect's databases; on
        the others it is recorded as applied and does nothing (it tunes one engine's layout).
        """
        # comments go first, so that a ';' inside one never splits a statement
        sql = "\n".join(line.split("--", 1)[0].rstrip() for line in self.sql.splitlines())
        only = [line.split()[1] for line in sql.splitlines() if line.startswith("@only ")]
        if only and dialect not in only:
            return []
        sql = "\n".join(line for line in sql.splitlines() if not line.startswith("@only "))
        out: list[str] = []
        for chunk in sql.split(";"):
            lines = []
            for line in chunk.splitlines():
                stripped = line.strip()
                if stripped.startswith("@sequence "):
                    out.extend(sequence(stripped.split()[1]))
                elif stripped:
                    lines.append(line)
            if lines:
                out.append("\n".join(lines))
        return out


_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("tresen.storage.migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


#: The newest schema this code knows: the highest numbered migration file.
SCHEMA_VERSION = load_migrations()[-1].version


class InteractionTimer:
    """Logs slow interactions by name; a cheap hook for metrics."""

    slow_seconds = 0.5

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = time.perf_counter()

    def done(self) -> None:
        took = time.perf_counter() - self.start
        if took > self.slow_seconds:
            log.warning("slow interaction %s took %.3fs", self.name, took)


def unstorable(exc: Exception) -> InvalidRequest:
    """A value from the request that the database cannot hold: an integer past 64 bits (SQLite:
    ``OverflowError``; PostgreSQL: a data exception), text with NUL (PostgreSQL). The caller
    raises it ``from exc``: a bad request, not a fault of the server."""
    return InvalidRequest(
        "a value in the request is out of range (integers are at most 2^63-1, text has no NUL)"
    )


def sqlite_path(url: str) -> str | None:
    """``sqlite:///rel/path.db`` is relative, ``sqlite:////abs/path.db`` absolute."""
    if not url.startswith("sqlite://"):
        return None
    return url.removeprefix("sqlite://").removeprefix("/") or "relay.db"


def open_database(url: str, *, sqlite_synchronous: str = "full", pool_size: int = 10) -> Database:
    """Build the engine for a ``sqlite:///path`` or ``postgresql://`` URL (not yet opened)."""
    if url.startswith("sqlite://"):
        from tresen.storage.sqlite import SqliteDatabase

        return SqliteDatabase(sqlite_path(url) or "relay.db", synchronous=sqlite_synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        from tresen.storage.postgres import PostgresDatabase

        return PostgresDatabase(url, pool_size=pool_size)
    from tresen.errors import InvalidRequest

    raise InvalidRequest(
        f"unsupported database URL {url!r}: use sqlite:///path/to/file.db or postgresql://..."
    )


__all__ = [
    "SCHEMA_COMPAT_VERSION",
    "SCHEMA_VERSION",
    "Database",
    "Interaction",
    "Migration",
    "Row",
    "Txn",
    "load_migrations",
    "open_database",
    "sqlite_path",
    "unstorable",
]

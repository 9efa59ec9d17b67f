"""PostgreSQL engine on asyncpg: a pool, one transaction per interaction, real sequences."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg

from tresen.errors import Unavailable
from tresen.storage.engine import (
    SCHEMA_VERSION,
    Interaction,
    InteractionTimer,
    Row,
    load_migrations,
    unstorable,
)

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"\?")

#: the server went away or cannot take the write now (a restart, a full disk, a read-only or
#: shutting-down server, a command timeout): the caller gets ``unavailable`` and may retry (a
#: commit cut off mid-way may have been stored: a resent envelope is then a duplicate by id).
#: asyncpg reports a connection lost mid-operation as OSError or any of the next four; a session
#: the server ended for idling in a transaction (see ``IDLE_IN_TRANSACTION``) is lost that way,
#: or else names its own error.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)

#: the server ends a session of the relay's pool that sits this long inside a transaction
#: without a statement (its node froze mid-interaction: SIGSTOP, a paused VM, a stuck event
#: loop), which frees the rows and advisory locks it held for the other nodes; the interaction
#: then fails ``unavailable`` and the pool opens a new connection. A database URL's own
#: ``?idle_in_transaction_session_timeout=…`` (asyncpg passes a URL's unknown parameters on
#: to the server as settings) takes its place.
IDLE_IN_TRANSACTION = "30s"


@lru_cache(maxsize=1024)
def _dollars(sql: str) -> str:
    """Rewrite ``?`` placeholders as ``$1, $2, ...`` once per statement text."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgresTxn:
    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self.conn.execute(_dollars(sql), *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(_dollars(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self.conn.fetch(_dollars(sql), *args)
        return rows

    async def fetchone(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self.conn.fetchrow(_dollars(sql), *args)
        return row

    async def next_ids(self, sequence: str, n: int) -> list[int]:
        rows = await self.conn.fetch(
            "SELECT nextval($1::regclass) FROM generate_series(1, $2)", sequence, n
        )
        return sorted(int(r[0]) for r in rows)

    async def lock_keys(self, space: int, keys: Iterable[int], *, timeout: str) -> None:
        keys = list(keys)
        if not keys:
            return
        # a literal: SET takes no parameters; ``timeout`` comes from code, never from input
        await self.conn.execute(f"SET LOCAL lock_timeout = '{timeout}'")
        await self.conn.execute(
            "SELECT pg_advisory_xact_lock($1, k) FROM "
            "(SELECT DISTINCT (d % 2147483647)::int AS k FROM unnest($2::bigint[]) AS d "
            "ORDER BY k) s",
            space,
            keys,
        )


class PostgresDatabase:
    dialect = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: Any = None

    async def open(self) -> None:
        chosen = "idle_in_transaction_session_timeout" in parse_qs(urlsplit(self.dsn).query)
        settings = {} if chosen else {"idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION}
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                command_timeout=60,
                server_settings=settings,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise Unavailable(
                f"cannot connect to PostgreSQL at {self.dsn}: {exc}. Is the server running?"
            ) from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def run_interaction(self, name: str, fn: Interaction[T], *, write: bool = True) -> T:
        timer = InteractionTimer(name)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                result = await fn(PostgresTxn(conn))
        except asyncpg.exceptions.DataError as exc:  # SQLSTATE class 22: the value, not us
            raise unstorable(exc) from exc
        except _UNAVAILABLE as exc:
            # on a lost connection the rollback fails too, and would hide why it was lost
            first = exc.__context__ if isinstance(exc.__context__, _UNAVAILABLE) else exc
            raise Unavailable(
                f"storage unavailable during {name} ({type(first).__name__}: {first}); try again"
            ) from exc
        timer.done()
        return result

    def _sequence(self, name: str) -> list[str]:
        return [f"CREATE SEQUENCE {name}"]

    async def schema_version(self) -> int:
        async with self._pool.acquire() as conn:
            exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
            if not exists:
                return 0
            return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))

    async def migrate(self) -> list[int]:
        applied = []
        async with self._pool.acquire() as conn:
            # one node migrates at a time
            await conn.execute("SELECT pg_advisory_lock(7424242)")
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
                )
                have = int(
                    await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
                )
                if have > SCHEMA_VERSION:
                    raise Unavailable(
                        f"database schema {have} is newer than this tresen ({SCHEMA_VERSION})"
                    )
                done = {r[0] for r in await conn.fetch("SELECT version FROM schema_version")}
                for migration in load_migrations():
                    if migration.version in done:
                        continue
                    async with conn.transaction():
                        for statement in migration.statements(self._sequence, self.dialect):
                            await conn.execute(statement)
                        await conn.execute(
                            "INSERT INTO schema_version VALUES "
                            "($1, $2, extract(epoch from now())::bigint)",
                            migration.version,
                            migration.name,
                        )
                    applied.append(migration.version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(7424242)")
        return applied

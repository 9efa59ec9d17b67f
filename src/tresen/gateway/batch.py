"""Group commit for the gateway's small writes (message records, statuses, outbox marks).

Each caller hands in a function of a transaction and awaits its result; whatever arrives while
a transaction commits goes into the next one, so under load many writes share one commit
(one fsync on SQLite). If a batch fails, its functions run again one by one, so one bad write
never takes the others with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tresen.storage.engine import Database, Txn

T = TypeVar("T")
Write = Callable[[Txn], Awaitable[Any]]
MAX_BATCH = 500


class GroupWriter:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    async def run(self, fn: Callable[[Txn], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.pending.append((fn, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="tresen-gateway-writes")
        return await future

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            try:
                results = await self.db.run_interaction("gw_batch", _all([f for f, _ in batch]))
            except Exception:
                for fn, future in batch:  # find the one that fails; the others commit
                    try:
                        result = await self.db.run_interaction("gw_write", fn)
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(result)
                continue
            self.commits += 1
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


def _all(fns: list[Write]) -> Callable[[Txn], Awaitable[list[Any]]]:
    async def run(txn: Txn) -> list[Any]:
        return [await fn(txn) for fn in fns]

    return run

"""The durable webhook outbox and its delivery worker.

- Every event is written to ``gw_outbox`` (the exact signed body) before anything is sent, so
  a crash loses nothing; the worker picks due events in id order.
- Ordering per conversation (one business number and one person): an event waits while an
  older event of its conversation is still pending; a dead-lettered event no longer blocks.
- A delivery counts when the callback answers 2xx. Otherwise it is retried with exponential
  backoff (``base * 2**attempts``, at most ``cap``) until it is older than the retention (7 days
  by default, as Meta), then it becomes ``dead``: listed and replayable by the business.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tresen.gateway import store
from tresen.gateway.batch import GroupWriter
from tresen.gateway.models import Number
from tresen.gateway.webhooks import signer
from tresen.gateway.webhooks.http import WebhookClient, WebhookError
from tresen.storage.engine import Database, Row, Txn

log = logging.getLogger("tresen.gateway.webhooks")


@dataclass(slots=True)
class RetryPolicy:
    base_seconds: float = 5.0
    cap_seconds: float = 3600.0
    retention_seconds: float = 7 * 24 * 3600.0
    timeout_seconds: float = 10.0
    concurrency: int = 16

    def delay_ms(self, attempts: int) -> int:
        """The wait after the ``attempts``-th failed attempt (1 = the first)."""
        return int(min(self.base_seconds * 2 ** (attempts - 1), self.cap_seconds) * 1000)


def delivery_view(row: Row) -> dict[str, Any]:
    return {
        "id": str(row[0]),
        "conversation": row[2],
        "state": row[4],
        "attempts": int(row[5]),
        "next_attempt_at": int(row[6]) // 1000 if row[4] == "pending" else None,
        "last_error": row[7],
        "last_status": int(row[8]),
        "created_at": int(row[9]) // 1000,
        "done_at": int(row[10]) // 1000 if row[10] else None,
        "body": row[3],
    }


class Outbox:
    def __init__(
        self,
        db: Database,
        numbers: Callable[[str], Number | None],
        policy: RetryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        writes: GroupWriter | None = None,
    ) -> None:
        self.db = db
        self.writes = writes or GroupWriter(db)
        self.numbers = numbers
        self.policy = policy or RetryPolicy()
        self.clock = clock
        # a lean client of our own (http.py): the outbox sends two or more deliveries per
        # message, and aiohttp's per-request machinery was a quarter of the gateway's CPU
        self._http: WebhookClient | None = None
        self._next_id = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.rounds = 0  # delivery rounds (each reads the table)
        self.read_at = 0  # when the last round read what was due (ms)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def start(self) -> None:
        self._next_id = await self.db.run_interaction(
            "gw_outbox_max", store.max_outbox_id, write=False
        )
        self._task = asyncio.create_task(self._run(), name="tresen-gateway-webhooks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> WebhookClient:
        if self._http is None:  # made in the running loop, which it belongs to
            self._http = WebhookClient(
                timeout=self.policy.timeout_seconds, concurrency=self.policy.concurrency
            )
        return self._http

    def wake(self) -> None:
        self._wake.set()

    async def add_in(
        self, txn: Txn, number: str, conversation: str, payload: dict[str, Any]
    ) -> None:
        """Write an event inside the caller's transaction; call :meth:`wake` after commit."""
        self._next_id += 1
        await store.enqueue(
            txn, self._next_id, number, conversation, signer.encode(payload), self.now_ms()
        )

    async def add(self, number: str, conversation: str, payload: dict[str, Any]) -> None:
        async def write(txn: Txn) -> None:
            await self.add_in(txn, number, conversation, payload)

        await self.db.run_interaction("gw_outbox_add", write)
        self.wake()

    # ------------------------------------------------------------ the worker

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before reading: a wake() from here on starts another round
            try:
                sent = await self.run_once()
            except Exception:
                log.exception("webhook delivery round failed; retrying in a second")
                sent = 0
                await asyncio.sleep(1)
            if sent:
                continue
            # what was due at the last read was read: anything later is a retry
            after_read = functools.partial(store.next_due, now=self.read_at)
            upcoming = await self.db.run_interaction("gw_outbox_next", after_read, write=False)
            wait = 60.0 if upcoming is None else max(0.0, (upcoming - self.now_ms()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(wait, 60.0))

    async def run_once(self) -> int:
        """Deliver what is due now; returns how many tried.

        Each conversation's due events go one after another in id order (a failure ends its
        run: the rest wait behind the retry); conversations go side by side. The outcomes are
        written in one transaction at the end of the round, before the next round reads what
        is due (a crash in between delivers the round's events again: at least once).
        """
        now = self.read_at = self.now_ms()
        self.rounds += 1

        async def read(txn: Txn) -> list[Row]:
            return await store.due(txn, now, 200)

        rows = await self.db.run_interaction("gw_outbox_due", read, write=False)
        if not rows:
            return 0
        runs: dict[str, list[Row]] = {}
        for row in rows:
            runs.setdefault(str(row[2]), []).append(row)
        gate = asyncio.Semaphore(self.policy.concurrency)
        delivered: list[tuple[int, int, int]] = []
        failed: list[tuple[str, int, str, int, int, int]] = []

        async def conversation(run: list[Row]) -> None:
            for row in run:
                async with gate:
                    if not await self._deliver(row, delivered, failed):
                        return

        try:
            await asyncio.gather(*(conversation(run) for run in runs.values()))
        finally:
            if delivered or failed:

                async def write(txn: Txn) -> None:
                    if delivered:
                        await store.delivered(txn, delivered)
                    if failed:
                        await store.failed(txn, failed)

                await self.writes.run(write)
        return len(rows)

    async def _deliver(
        self,
        row: Row,
        delivered: list[tuple[int, int, int]],
        failed: list[tuple[str, int, str, int, int, int]],
    ) -> bool:
        """One attempt, its outcome added to ``delivered`` or ``failed``; True when the event
        no longer holds its conversation back."""
        id, number_id, body = int(row[0]), str(row[1]), str(row[3])
        attempts, created = int(row[5]), int(row[9])
        number = self.numbers(number_id)
        status, error = 0, ""
        if number is None:
            error = "the business number is no longer served by this gateway"
        elif not number.webhook_url:
            error = "no webhook callback URL is configured for this number"
        else:
            data = body.encode()
            headers = {
                "Content-Type": "application/json",
                signer.HEADER: signer.sign(number.app_secret, data),
            }
            try:
                status, text = await self._session().post(number.webhook_url, data, headers)
            except WebhookError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    delivered.append((status, self.now_ms(), id))
                    self.delivered += 1
                    return True
                error = f"HTTP {status}: {text}"

        now = self.now_ms()
        next_at = now + self.policy.delay_ms(attempts + 1)
        dead = next_at > created + self.policy.retention_seconds * 1000
        if dead:
            log.warning(
                "webhook event %d dead-lettered after %d attempts: %s", id, attempts + 1, error
            )
        state, done_at = ("dead", now) if dead else ("pending", 0)
        failed.append((state, status, error[:1000], next_at, done_at, id))
        return dead

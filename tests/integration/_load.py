"""The load of the fault tests (test_multinode, test_faults_pause, test_faults_postgres).

Pairs of devices: each sender keeps a window of envelopes in flight to its receiver while the
test makes something under the relay fail (a node killed or paused, PostgreSQL or NATS
restarted); the SDK resends what was answered ``unavailable`` or cut off. Afterwards every
envelope the relay acknowledged has arrived exactly once, and each receiver's in ``seq`` order.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from tresen.client import Connection
from tresen.protocol.frames import Item

from ..conftest import DeviceHandle


async def until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Wait for ``condition``; the limit only keeps a broken run from hanging."""
    try:
        async with asyncio.timeout(seconds):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"gave up waiting: {what}") from None


class Load:
    """``async with Load(pairs, senders, receivers) as load``: connects every connection, then
    runs a send loop and a receive loop per pair until the block ends; then closes them all.

    ``senders[i]`` is ``pairs[i][0]``'s connection, ``receivers[i]`` is ``pairs[i][1]``'s."""

    def __init__(
        self,
        pairs: list[tuple[DeviceHandle, DeviceHandle]],
        senders: list[Connection],
        receivers: list[Connection],
        *,
        window: int = 8,
    ) -> None:
        self.pairs, self.senders, self.receivers = pairs, senders, receivers
        self.window = window
        self.acked: list[set[str]] = [set() for _ in pairs]
        self.failed: list[BaseException] = []  # sends that ended with an error, not stored
        self.received: list[list[Item]] = [[] for _ in pairs]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []  # the send loops, then the receive loops

    @classmethod
    def through(
        cls, url: str, pairs: list[tuple[DeviceHandle, DeviceHandle]], **options: Any
    ) -> Load:
        """Every sender and receiver connects to ``url`` (a load balancer in front of the nodes)."""
        return cls(
            pairs,
            [Connection(url, a.token) for a, _ in pairs],
            [Connection(url, b.token) for _, b in pairs],
            **options,
        )

    @property
    def connections(self) -> list[Connection]:
        return self.senders + self.receivers

    async def __aenter__(self) -> Load:
        try:
            for conn in self.connections:
                await conn.connect()
        except BaseException:
            await self._close()
            raise
        self._tasks = [asyncio.create_task(self._send(i)) for i in range(len(self.pairs))]
        self._tasks += [asyncio.create_task(self._recv(i)) for i in range(len(self.pairs))]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in self.connections:
            await conn.close()

    async def _send(self, i: int) -> None:
        to, sender, n = self.pairs[i][1], self.senders[i], 0
        slots = asyncio.Semaphore(self.window)
        in_flight: set[asyncio.Task[str]] = set()

        def done(task: asyncio.Task[str]) -> None:
            in_flight.discard(task)
            slots.release()
            if task.cancelled():
                return
            if (error := task.exception()) is not None:
                self.failed.append(error)
            else:
                self.acked[i].add(task.result())

        try:
            while True:
                await slots.acquire()
                if self._stop.is_set():
                    break
                task = asyncio.create_task(
                    sender.send(to.account_id, {to.device_id: b"x"}, id=f"p{i}-{n}")
                )
                n += 1
                in_flight.add(task)
                task.add_done_callback(done)
            await asyncio.gather(*in_flight, return_exceptions=True)
        finally:
            for task in in_flight:
                task.cancel()

    async def _recv(self, i: int) -> None:
        while True:
            self.received[i].append(await self.receivers[i].recv(timeout=None))

    def acknowledged(self) -> int:
        """Envelopes acknowledged so far, over every pair."""
        return sum(len(a) for a in self.acked)

    def resent(self) -> int:
        """Sends the SDK made again (after ``unavailable``, or a connection lost on the way)."""
        return sum(c.resent for c in self.senders)

    async def each_pair_receives(self, n: int, what: str) -> None:
        """Wait until every pair has received ``n`` envelopes more than it had."""
        had = [len(r) for r in self.received]
        await until(
            lambda: all(len(r) >= h + n for r, h in zip(self.received, had, strict=True)), what
        )

    async def acknowledges(self, n: int, what: str) -> None:
        """Wait until ``n`` envelopes more than now are acknowledged, over every pair."""
        had = self.acknowledged()
        await until(lambda: self.acknowledged() >= had + n, what)

    async def stop_sending(self) -> None:
        """End the send loops and wait for the sends in flight to be answered."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks[: len(self.pairs)]), 60)

    async def check_delivered(self) -> None:
        """After ``stop_sending``: every acknowledged envelope arrives, none twice, in order."""

        def delivered() -> bool:
            return all(
                acked <= {it.id for it in got}
                for acked, got in zip(self.acked, self.received, strict=True)
            )

        try:
            await until(delivered, "every acknowledged envelope delivered", seconds=60)
        except AssertionError:
            pass  # the loop below names what is missing
        for i, (acked, got) in enumerate(zip(self.acked, self.received, strict=True)):
            ids = [it.id for it in got]
            assert acked <= set(ids), f"pair {i} lost {sorted(acked - set(ids))[:5]}"
            dupes = [k for k, v in Counter(ids).items() if v > 1]
            assert dupes == [], f"pair {i} was shown {dupes[:5]} twice"
            seqs = [it.seq for it in got]
            assert seqs == sorted(seqs), f"pair {i} was shown seqs out of order"

"""A relay node paused (SIGSTOP) past the heartbeat under load, then resumed (SIGCONT).

A paused node keeps its sockets open and the kernel still completes TCP handshakes for it, so
nothing closes: its clients find out only because the SDK pings at the heartbeat interval the
relay announced in ``welcome`` and hears nothing back. They reconnect through the balancer to
the other nodes and carry on; nothing acknowledged is lost; when the node wakes up, whatever it
still had to push goes to sockets its clients left, and nothing reaches a user twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typing_extensions import override

from tresen.bus.memory import MemoryBus
from tresen.client import Connection
from tresen.errors import Unavailable
from tresen.relay.clock import Clock
from tresen.relay.envelopes import store
from tresen.relay.envelopes.writer import NewItem, WriteOp, Writer
from tresen.storage.engine import Database, Txn

from ..conftest import PG_ADMIN, Harness
from .test_multinode import (  # noqa: F401 - pg_url, registrar and stop_nodes are fixtures
    NATS_URL,
    Balancer,
    Node,
    pg_url,
    registrar,
    stop_nodes,
    until,
)
from .test_multinode_seq import nodes  # noqa: F401 - two databases on one PostgreSQL database

pytestmark = pytest.mark.postgres  # runs in the PostgreSQL pass only (tests/conftest.py)

HEARTBEAT = 1.5
IDLE_IN_TXN = "2s"
PAIRS = 6
NODES = 3


class CheckedBalancer(Balancer):
    """The test balancer with health checks, as a real one has: a node whose ``/healthz`` does
    not answer in time gets no new connections. (A paused node's kernel still completes TCP
    handshakes, so "it accepts" is not enough to tell.) It also notes which node each client
    socket went to."""

    def __init__(self, backends: list[Node]) -> None:
        super().__init__(backends)
        self.up = list(backends)
        self.routes: dict[int, int] = {}  # client's local port -> node port
        self.checker: asyncio.Task[None] | None = None

    def node_of(self, conn: Connection) -> int:
        assert conn.ws is not None
        return self.routes[conn.ws.local_address[1]]

    @override
    async def start(self) -> None:
        await super().start()
        self.checker = asyncio.create_task(self._check())

    async def _check(self) -> None:
        async with httpx.AsyncClient(timeout=0.5) as http:

            async def healthy(node: Node) -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get(f"{node.url}/healthz")).status_code == 200
                return False

            while True:
                up = await asyncio.gather(*(healthy(node) for node in self.nodes))
                self.up = [n for n, ok in zip(self.nodes, up, strict=True) if ok] or self.nodes
                await asyncio.sleep(0.2)

    @override
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node = self.up[self.turn % len(self.up)]
        self.turn += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", node.port)
        except OSError:
            writer.close()
            return
        self.placed[node.port] += 1
        self.routes[writer.get_extra_info("peername")[1]] = node.port

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    @override
    async def close(self) -> None:
        if self.checker is not None:
            self.checker.cancel()
        await super().close()


async def test_a_node_paused_past_the_heartbeat_loses_nothing_and_shows_nothing_twice(
    registrar: Harness,  # noqa: F811
    pg_url: str,  # noqa: F811
    tmp_path: Path,
    stop_nodes: list[Node],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pairs = [(await registrar.new_device(), await registrar.new_device()) for _ in range(PAIRS)]
    late = await registrar.new_device()
    await registrar.server.stop()
    # as docs/scale-out.md asks: a session frozen inside a transaction (this node's, paused
    # mid-batch, holding its devices' queue locks and the ids it claimed) is ended by the server
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        name = pg_url.rsplit("/", 1)[1]
        await admin.execute(
            f"ALTER DATABASE \"{name}\" SET idle_in_transaction_session_timeout = '{IDLE_IN_TXN}'"
        )
    finally:
        await admin.close()
    monkeypatch.setenv("TRESEN_HEARTBEAT_SECONDS", str(HEARTBEAT))
    bus = f"{NATS_URL}/t{secrets.token_hex(5)}"
    started = [Node(pg_url, bus, tmp_path / "media") for _ in range(NODES)]
    stop_nodes.extend(started)
    for node in started:
        node.start()
    await asyncio.gather(*(node.ready() for node in started))
    balancer = CheckedBalancer(started)
    await balancer.start()
    senders = [Connection(balancer.url, a.token) for a, _ in pairs]
    receivers = [Connection(balancer.url, b.token) for _, b in pairs]
    acked: list[set[str]] = [set() for _ in range(PAIRS)]
    failed: list[BaseException] = []
    received: list[list[Any]] = [[] for _ in range(PAIRS)]
    stop = asyncio.Event()
    paused = started[0]
    assert paused.proc is not None

    async def send_loop(i: int) -> None:
        to, n = pairs[i][1], 0
        in_flight: set[asyncio.Task[str]] = set()

        def done(task: asyncio.Task[str]) -> None:
            in_flight.discard(task)
            if task.exception() is not None:
                failed.append(task.exception())  # type: ignore[arg-type]
            else:
                acked[i].add(task.result())

        while not stop.is_set():
            task = asyncio.create_task(
                senders[i].send(to.account_id, {to.device_id: b"x"}, id=f"p{i}-{n}")
            )
            n += 1
            in_flight.add(task)
            task.add_done_callback(done)
            while len(in_flight) >= 8:
                await asyncio.sleep(0.001)
        await asyncio.gather(*in_flight, return_exceptions=True)

    async def recv_loop(i: int) -> None:
        while True:
            received[i].append(await receivers[i].recv(timeout=None))

    try:
        for conn in senders + receivers:
            await conn.connect()
            assert conn.welcome is not None and conn.welcome.heartbeat == HEARTBEAT
        everyone = senders + receivers
        on_paused = [c for c in everyone if balancer.node_of(c) == paused.port]
        assert on_paused  # round robin put some of them on the node that will pause
        before = {id(c): c.reconnects for c in everyone}
        send_tasks = [asyncio.create_task(send_loop(i)) for i in range(PAIRS)]
        recv_tasks = [asyncio.create_task(recv_loop(i)) for i in range(PAIRS)]
        await until(lambda: all(len(r) >= 20 for r in received), "traffic on every pair")

        os.kill(paused.proc.pid, signal.SIGSTOP)
        try:
            # its clients hear no pong, drop the socket and reconnect elsewhere; every pair
            # (some had a sender or a receiver on the paused node) goes on while it sleeps
            await until(
                lambda: all(c.reconnects > before[id(c)] for c in on_paused),
                "the paused node's clients reconnected",
            )
            assert all(balancer.node_of(c) != paused.port for c in on_paused)
            during = [len(r) for r in received]
            await until(
                lambda: all(len(r) >= d + 20 for r, d in zip(received, during, strict=True)),
                "every pair delivers while the node is paused",
            )
        finally:
            os.kill(paused.proc.pid, signal.SIGCONT)

        # the node wakes up: it serves again, and what it had in hand reaches nobody twice
        woke = Connection(paused.url, late.token)
        await woke.connect()
        await senders[0].send(late.account_id, {late.device_id: b"good morning"})
        assert (await woke.recv(timeout=30)).body == b"good morning"
        await woke.close()
        after = sum(len(a) for a in acked)
        await until(lambda: sum(len(a) for a in acked) >= after + 50 * PAIRS, "traffic goes on")
        stop.set()
        await asyncio.wait_for(asyncio.gather(*send_tasks), 60)
        assert failed == []
        await until(
            lambda: all(acked[i] <= {it.id for it in received[i]} for i in range(PAIRS)),
            "every acknowledged envelope delivered",
            seconds=60,
        )
        for i in range(PAIRS):
            ids = [it.id for it in received[i]]
            dupes = [k for k, v in Counter(ids).items() if v > 1]
            assert dupes == [], f"pair {i} was shown {dupes[:5]} twice"
        for t in recv_tasks:
            t.cancel()
    finally:
        stop.set()
        for conn in senders + receivers:
            await conn.close()
        await balancer.close()


async def test_an_id_claimed_by_a_frozen_batch_does_not_stall_another_nodes_writer(
    nodes: tuple[Database, Database],  # noqa: F811
) -> None:
    """Node A froze inside its batch after claiming envelope id ``x``; the sender, reconnected
    to node B, resends ``x``. B's insert of the claim waits for A's transaction — but no longer
    than the queue lock timeout: B's senders get ``unavailable`` (and resend) instead of B's
    writer, and every sender on B with it, stalling for as long as A sleeps."""
    node_a, node_b = nodes
    writer_b = Writer(node_b, MemoryBus(), Clock(), ttl_ms=60_000)
    writer_b.start()
    sender, device = 77, 4243
    claimed, release = asyncio.Event(), asyncio.Event()

    async def frozen_batch(txn: Txn) -> None:
        await store.claim_envelope_ids(txn, [(sender, "x")], 1)
        claimed.set()
        await release.wait()

    batch_a = asyncio.create_task(node_a.run_interaction("write_batch", frozen_batch))
    await claimed.wait()
    try:
        resent = WriteOp(items=[NewItem(device, "message", "x", 1, sender)], dedupe=(sender, "x"))
        async with asyncio.timeout(30):  # without a bound on the wait: until A wakes up
            with pytest.raises(Unavailable):
                await writer_b.submit_wait(resent)
            other = WriteOp(
                items=[NewItem(device, "message", "y", 1, sender)], dedupe=(sender, "y")
            )
            assert await writer_b.submit_wait(other) is False  # stored; B goes on
    finally:
        release.set()
    await batch_a
    # A's batch committed its claim: the next resend of x is a duplicate, stored once
    again = WriteOp(items=[NewItem(device, "message", "x", 1, sender)], dedupe=(sender, "x"))
    assert await writer_b.submit_wait(again) is True
    await writer_b.close()

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
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typing_extensions import override

from tresen.bus.memory import MemoryBus
from tresen.client import Connection
from tresen.errors import Unavailable
from tresen.relay.clock import Clock
from tresen.relay.envelopes import store
from tresen.relay.envelopes.writer import NewItem, WriteOp, Writer
from tresen.storage.engine import Database, Txn, open_database

from ..conftest import Harness
from ._load import Load, until
from .test_multinode import (  # noqa: F401 - pg_url, registrar and stop_nodes are fixtures
    Balancer,
    Node,
    pg_url,
    registrar,
    start_nodes,
    stop_nodes,
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
    handshakes, so "it accepts" is not enough to tell.)"""

    def __init__(self, backends: list[Node]) -> None:
        super().__init__(backends)
        self.up = list(backends)
        self.checker: asyncio.Task[None] | None = None

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
    async def _upstream(self) -> tuple[Node, asyncio.StreamReader, asyncio.StreamWriter] | None:
        node = self.up[self.turn % len(self.up)]
        self.turn += 1
        with contextlib.suppress(OSError):
            return node, *(await asyncio.open_connection("127.0.0.1", node.port))
        return None

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
    monkeypatch.setenv("TRESEN_HEARTBEAT_SECONDS", str(HEARTBEAT))
    # the server ends the paused node's session frozen inside a transaction (mid-batch, holding
    # its devices' queue locks and the ids it claimed) sooner than the relay's default 30 s
    short = f"{pg_url}?idle_in_transaction_session_timeout={IDLE_IN_TXN}"
    started = await start_nodes(stop_nodes, short, tmp_path / "media", NODES)
    balancer = CheckedBalancer(started)
    await balancer.start()
    paused = started[0]
    assert paused.proc is not None
    try:
        async with Load.through(balancer.url, pairs) as load:
            for conn in load.connections:
                assert conn.welcome is not None and conn.welcome.heartbeat == HEARTBEAT
            on_paused = [c for c in load.connections if balancer.node_of(c) == paused.port]
            assert on_paused  # round robin put some of them on the node that will pause
            before = {id(c): c.reconnects for c in load.connections}
            await load.each_pair_receives(20, "traffic on every pair")

            os.kill(paused.proc.pid, signal.SIGSTOP)
            try:
                # its clients hear no pong, drop the socket and reconnect elsewhere; every pair
                # (some had a sender or a receiver on the paused node) goes on while it sleeps
                await until(
                    lambda: all(c.reconnects > before[id(c)] for c in on_paused),
                    "the paused node's clients reconnected",
                )
                assert all(balancer.node_of(c) != paused.port for c in on_paused)
                await load.each_pair_receives(20, "every pair delivers while the node is paused")
            finally:
                os.kill(paused.proc.pid, signal.SIGCONT)

            # the node wakes up: it serves again, and what it had in hand reaches nobody twice
            woke = Connection(paused.url, late.token)
            await woke.connect()
            await load.senders[0].send(late.account_id, {late.device_id: b"good morning"})
            assert (await woke.recv(timeout=30)).body == b"good morning"
            await woke.close()
            await load.acknowledges(50 * PAIRS, "traffic goes on")
            await load.stop_sending()
            assert load.failed == []
            await load.check_delivered()
    finally:
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


async def test_a_session_frozen_inside_a_transaction_is_ended_and_its_locks_go_to_the_others(
    pg_url: str,  # noqa: F811
) -> None:
    """A node whose event loop is stuck in the middle of a batch (or that is paused) holds its
    devices' queue locks and the envelope ids it claimed. The relay's sessions carry
    ``idle_in_transaction_session_timeout`` (30 s; here a shorter one from the database URL):
    the server ends the frozen session, another node gets the locks and the ids, and the frozen
    node, once it wakes, fails the batch ``unavailable`` and goes on with a new connection."""
    frozen = open_database(f"{pg_url}?idle_in_transaction_session_timeout=500ms", pool_size=1)
    await frozen.open()
    await frozen.migrate()
    sender, device = 77, 4243

    async def other_node_batch() -> set[tuple[int, str]]:
        """The same device and id on another node (in a loop of its own: the frozen one's is
        stuck). It waits for the locks as long as it takes, not the writer's 5 s: it gets them
        only once the server has ended the frozen session."""
        other = open_database(pg_url, pool_size=1)
        await other.open()

        async def batch(txn: Txn) -> set[tuple[int, str]]:
            row = await txn.fetchone("SHOW idle_in_transaction_session_timeout")
            assert row is not None and row[0] == "30s"  # the relay's own, without the URL's
            await txn.lock_keys(store.QUEUE_LOCK_SPACE, [device], timeout="60s")
            return await store.claim_envelope_ids(txn, [(sender, "x")], 2)

        try:
            return await other.run_interaction("write_batch", batch)
        finally:
            await other.close()

    taken: list[set[tuple[int, str]]] = []

    async def frozen_batch(txn: Txn) -> None:
        await store.lock_queues(txn, [device])
        assert await store.claim_envelope_ids(txn, [(sender, "x")], 1) == {(sender, "x")}
        # the event loop sticks here, inside the transaction, until the other node is done
        with ThreadPoolExecutor(1) as other_node:
            taken.append(other_node.submit(asyncio.run, other_node_batch()).result())
        await txn.execute("SELECT 1")

    with pytest.raises(Unavailable) as answer:
        await frozen.run_interaction("write_batch", frozen_batch)
    assert "idle-in-transaction" in answer.value.message
    assert taken == [{(sender, "x")}]  # the other node stored x: the frozen claim was undone
    # the frozen node's pool opens a new connection; a resend of x is now a duplicate
    again = await frozen.run_interaction(
        "write_batch", lambda txn: store.claim_envelope_ids(txn, [(sender, "x")], 3)
    )
    assert again == set()
    await frozen.close()

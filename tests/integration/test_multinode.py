"""Three relay nodes as processes on one PostgreSQL database and the real NATS server.

Devices on different nodes exchange envelopes, receipts, typing and presence; a device signed
out on one node is cut off on another; a node killed with SIGKILL under load loses nothing it
acknowledged, and its devices reconnect to another node through a load balancer; the same
for a node drained with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest

from tresen.client import Connection
from tresen.errors import DeviceListMismatch
from tresen.protocol.frames import Presence, TypingNotice
from tresen.relay.accounts.senders import MemorySender
from tresen.relay.clock import Clock
from tresen.relay.server import RelayServer

from .. import conftest
from ..conftest import PG_ADMIN, DeviceHandle, Harness
from ._load import Load, until

pytestmark = pytest.mark.postgres  # runs in the PostgreSQL pass only (tests/conftest.py)

NATS_URL = os.environ.get("TRESEN_TEST_NATS", "nats://127.0.0.1:4222")
NODES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """``tresen serve --db postgresql://... --bus nats://...`` in a process of its own."""

    def __init__(
        self, db_url: str, bus_url: str, media: Path, env: dict[str, str] | None = None
    ) -> None:
        self.db_url, self.bus_url, self.media = db_url, bus_url, media
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, TRESEN_MEDIA_DIR=str(self.media), **self.env)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tresen",
                "serve",
                "--port",
                str(self.port),
                "--db",
                self.db_url,
                "--bus",
                self.bus_url,
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        deadline = time.monotonic() + 60  # a loaded CI machine can take a while to start Python
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node exited with {self.proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError("node did not start")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Balancer:
    """A TCP load balancer in front of the nodes: each new connection goes to the next node
    that accepts it, as a real one with health checks would. It notes which node each client
    socket went to."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.turn = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.placed: Counter[int] = Counter()
        self.routes: dict[int, int] = {}  # client's local port -> node port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def node_of(self, conn: Connection) -> int:
        assert conn.ws is not None
        return self.routes[conn.ws.local_address[1]]

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _upstream(self) -> tuple[Node, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The next node that accepts the connection, and the connection to it."""
        for _ in range(len(self.nodes)):
            node = self.nodes[self.turn % len(self.nodes)]
            self.turn += 1
            with contextlib.suppress(OSError):
                return node, *(await asyncio.open_connection("127.0.0.1", node.port))
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._upstream()
        if upstream is None:
            writer.close()
            return
        node, up_reader, up_writer = upstream
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

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


class Cluster:
    def __init__(self, harness: Harness, nodes: list[Node]) -> None:
        self.harness = harness
        self.nodes = nodes

    async def connect(self, device: DeviceHandle, node: int, **options: Any) -> Connection:
        conn = Connection(self.nodes[node].url, device.token, **options)
        await conn.connect()
        device.conns.append(conn)
        return conn


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (in either pass of scripts/test)."""
    name = f"tresen_mn_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def registering_relay(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """An in-process relay on ``db_url``, to register devices before the nodes start."""
    sender = MemorySender()
    settings = conftest.test_settings(db_url, media_dir=str(tmp_path / "media"))
    server = RelayServer(settings, clock=Clock(), code_sender=sender)
    await server.start()
    harness = Harness(server, sender, Clock())
    try:
        yield harness
    finally:
        await harness.aclose()
        with contextlib.suppress(Exception):
            await server.stop()


@pytest.fixture
async def registrar(pg_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """An in-process relay on the same database, to register devices before the nodes start."""
    async with registering_relay(pg_url, tmp_path) as harness:
        yield harness


async def start_nodes(
    stop_nodes: list[Node],
    db_url: str,
    media: Path,
    count: int = NODES,
    env: dict[str, str] | None = None,
) -> list[Node]:
    """``count`` nodes on ``db_url`` and a NATS namespace of their own; ``stop_nodes`` ends
    them after the test."""
    bus = f"{NATS_URL}/t{secrets.token_hex(5)}"
    nodes = [Node(db_url, bus, media, env) for _ in range(count)]
    stop_nodes.extend(nodes)
    for node in nodes:
        node.start()
    await asyncio.gather(*(node.ready() for node in nodes))
    return nodes


async def start_cluster(
    registrar: Harness,
    pg_url: str,
    tmp_path: Path,
    stop_nodes: list[Node],
    env: dict[str, str] | None = None,
) -> Cluster:
    await registrar.server.stop()  # registration done; the nodes take over the database
    return Cluster(registrar, await start_nodes(stop_nodes, pg_url, tmp_path / "media", env=env))


@pytest.fixture
async def stop_nodes() -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop()
    # the nodes' control stream (one per namespace) goes with the test
    if started:
        nc = await nats.connect(NATS_URL)
        with contextlib.suppress(Exception):
            name = started[0].bus_url.rsplit("/", 1)[1]
            await nc.jetstream().delete_stream(f"{name.upper()}_CONTROL")
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(f"{name.upper()}_PRESENCE")
        await nc.close()


async def test_devices_on_different_nodes_exchange_envelopes_receipts_typing_and_presence(
    registrar: Harness, pg_url: str, tmp_path: Path, stop_nodes: list[Node]
) -> None:
    alice, bob, carol, dave = [await registrar.new_device() for _ in range(4)]
    dave_laptop = await registrar.link_device(dave, "laptop")
    cluster = await start_cluster(registrar, pg_url, tmp_path, stop_nodes)

    a = await cluster.connect(alice, 0)
    c = await cluster.connect(carol, 2)
    d = await cluster.connect(dave, 1)

    # presence: alice (node 0) watches dave, online on node 1 only
    await a.watch([dave.account_id])
    assert await a.notice() == Presence(account=dave.account_id, online=True)
    # dave's laptop joins on node 2, his phone leaves node 1: dave is still online
    laptop = await cluster.connect(dave_laptop, 2)
    await d.close()
    async with httpx.AsyncClient(
        base_url=cluster.nodes[0].url, headers={"Authorization": f"Bearer {alice.token}"}
    ) as http:

        async def dave_online() -> bool:
            r = await http.get(f"/v1/accounts/{dave.account_id}/presence")
            assert r.status_code == 200, r.text
            return bool(r.json()["online"])

        assert await dave_online()
        await laptop.typing(to=alice.account_id)
        # no "offline" came before the laptop's typing
        assert await a.notice() == TypingNotice(
            account=dave.account_id, device=dave_laptop.device_id, on=True
        )
        await laptop.close()
        offline = await a.notice()
        assert isinstance(offline, Presence) and offline.account == dave.account_id
        assert not offline.online and offline.last_seen > 0
        assert not await dave_online()
    d = await cluster.connect(dave, 2)
    assert await a.notice() == Presence(account=dave.account_id, online=True)
    b = await cluster.connect(bob, 2)

    # envelopes: node 0 -> node 2, node 2 -> node 0, node 2 -> node 2, many in order
    ids = [await a.send(bob.account_id, {bob.device_id: f"m{n}".encode()}) for n in range(20)]
    got = [await b.recv() for _ in range(20)]
    assert [i.id for i in got] == ids and [i.body for i in got] == [
        f"m{n}".encode() for n in range(20)
    ]
    assert [i.seq for i in got] == sorted(i.seq for i in got)
    reply = await b.send(alice.account_id, {alice.device_id: b"hi alice"})
    await c.send(bob.account_id, {bob.device_id: b"from carol"})
    # bob gets carol's envelope and the receipt for his reply from alice's node
    for_bob = {(i.kind, i.id): i for i in [await b.recv(), await b.recv()]}
    assert for_bob.keys() >= {("delivered", reply)}
    assert [i.body for i in for_bob.values() if i.kind == "message"] == [b"from carol"]

    # receipts: bob's device acked on node 2, alice sees "delivered" on node 0; bob's reply
    # (committed on node 2) arrives among them
    owed = [await a.recv() for _ in range(21)]
    assert {i.id for i in owed if i.kind == "delivered"} == set(ids)
    assert [(i.id, i.body) for i in owed if i.kind == "message"] == [(reply, b"hi alice")]
    assert [i.seq for i in owed] == sorted(i.seq for i in owed)
    await b.read(alice.account_id, ids[:3])
    reads = [await a.recv() for _ in range(3)]
    assert {i.kind for i in reads} == {"read"} and {i.id for i in reads} == set(ids[:3])

    # typing: bob on node 2 to alice on node 0
    await b.typing(to=alice.account_id)
    assert await a.notice() == TypingNotice(account=bob.account_id, device=bob.device_id, on=True)


async def test_watchers_hear_offline_for_the_accounts_of_a_node_that_died(
    registrar: Harness, pg_url: str, tmp_path: Path, stop_nodes: list[Node]
) -> None:
    """A killed node says nothing; its entries leave the presence book after the time to live,
    and the other nodes tell their watchers."""
    alice, dave = await registrar.new_device(), await registrar.new_device()
    env = {"TRESEN_PRESENCE_TTL_SECONDS": "3"}
    cluster = await start_cluster(registrar, pg_url, tmp_path, stop_nodes, env)
    a = await cluster.connect(alice, 0)
    await cluster.connect(dave, 1, reconnect=False)  # dave's phone goes down with the node
    await a.watch([dave.account_id])
    assert await a.notice() == Presence(account=dave.account_id, online=True)
    killed_at = int(time.time() * 1000)
    cluster.nodes[1].kill()
    offline = await a.notice(timeout=20)
    assert isinstance(offline, Presence) and offline.account == dave.account_id
    assert not offline.online and offline.last_seen >= killed_at
    async with httpx.AsyncClient(
        base_url=cluster.nodes[2].url, headers={"Authorization": f"Bearer {alice.token}"}
    ) as http:
        r = await http.get(f"/v1/accounts/{dave.account_id}/presence")
        assert r.status_code == 200 and r.json()["online"] is False
        # the dead node never stored it: the sweep did
        assert r.json()["last_seen"] >= killed_at, r.json()


async def drain(conn: Connection) -> list[Any]:
    out = []
    with contextlib.suppress(TimeoutError):
        while True:
            out.append(await conn.recv(timeout=0.5))
    return out


async def test_a_device_signed_out_on_one_node_is_cut_off_on_another(
    registrar: Harness, pg_url: str, tmp_path: Path, stop_nodes: list[Node]
) -> None:
    phone_device = await registrar.new_device()
    laptop = await registrar.link_device(phone_device, "laptop")
    friend = await registrar.new_device()
    cluster = await start_cluster(registrar, pg_url, tmp_path, stop_nodes)

    on_b = await cluster.connect(laptop, 1)
    sender = await cluster.connect(friend, 2)
    # node 2 caches the account's two devices as recipients
    await sender.send(
        phone_device.account_id, {phone_device.device_id: b"1", laptop.device_id: b"1"}
    )
    assert (await on_b.recv()).body == b"1"

    async with httpx.AsyncClient(
        base_url=cluster.nodes[0].url, headers={"Authorization": f"Bearer {phone_device.token}"}
    ) as http:
        r = await http.delete(f"/v1/devices/{laptop.device_id}")
        assert r.status_code in (200, 204), r.text
    # node 1 closes the laptop's connection, and it does not come back
    await until(lambda: on_b.fatal is not None, "the laptop's connection on node 1 was closed")
    # node 2 dropped its cached device list: the old list is refused as stale
    with pytest.raises(DeviceListMismatch) as refused:
        await sender.send(
            phone_device.account_id, {phone_device.device_id: b"2", laptop.device_id: b"2"}
        )
    assert refused.value.fields["devices"][str(phone_device.account_id)] == [phone_device.device_id]
    await sender.send(phone_device.account_id, {phone_device.device_id: b"3"})
    # the laptop's token is dead on every node
    async with httpx.AsyncClient(
        base_url=cluster.nodes[2].url, headers={"Authorization": f"Bearer {laptop.token}"}
    ) as http:
        assert (await http.get("/v1/me")).status_code == 401


PAIRS = 6


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
async def test_losing_one_node_under_load_loses_nothing_and_shows_nothing_twice(
    how: str, registrar: Harness, pg_url: str, tmp_path: Path, stop_nodes: list[Node]
) -> None:
    """kill -9: the node's sockets die with it. SIGTERM: a clean drain — the node stops
    accepting, closes its devices' connections with 1012 (try again), lets its writer commit
    what it took, and exits 0."""
    pairs = [(await registrar.new_device(), await registrar.new_device()) for _ in range(PAIRS)]
    bystander = await registrar.new_device()
    cluster = await start_cluster(registrar, pg_url, tmp_path, stop_nodes)
    balancer = Balancer(cluster.nodes)
    await balancer.start()
    try:
        async with Load.through(balancer.url, pairs) as load:
            # one device straight on the node that goes away, to see how it is told
            direct = await cluster.connect(bystander, 0, reconnect=False)
            assert len(balancer.placed) == NODES  # the connections are spread over all three
            await load.each_pair_receives(20, "traffic on every pair")
            if how == "kill -9":
                cluster.nodes[0].kill()
            else:
                proc = cluster.nodes[0].proc
                assert proc is not None
                proc.send_signal(signal.SIGTERM)
                # uvicorn drains, then ends the process with the signal it caught
                assert await asyncio.to_thread(proc.wait, 30) in (0, -signal.SIGTERM)
                await until(lambda: direct.fatal is not None, "the direct connection was closed")
                assert "(1012)" in str(direct.fatal)  # service restart: reconnect elsewhere
            # its devices reconnect through the balancer to the two nodes left
            await load.acknowledges(200 * PAIRS // 6, "traffic continues on the remaining nodes")
            await load.stop_sending()
            await load.check_delivered()
            assert sum(c.reconnects for c in load.connections) > 0
    finally:
        await balancer.close()


async def test_a_nats_restart_under_load_loses_nothing_and_shows_nothing_twice(
    registrar: Harness, pg_url: str, tmp_path: Path
) -> None:
    """Every pair talks across nodes; NATS goes away mid-traffic and comes back. Wake-ups lost
    meanwhile are made good by the resync after the reconnect."""
    from .test_bus import NatsServer

    own = NatsServer(tmp_path / "js")
    own.start()
    nodes: list[Node] = []
    try:
        await own.ready()
        pairs = [(await registrar.new_device(), await registrar.new_device()) for _ in range(PAIRS)]
        await registrar.server.stop()
        nodes = [Node(pg_url, f"{own.url}/restart", tmp_path / "media") for _ in range(NODES)]
        for node in nodes:
            node.start()
        await asyncio.gather(*(node.ready() for node in nodes))
        senders = [Connection(nodes[i % NODES].url, a.token) for i, (a, _) in enumerate(pairs)]
        receivers = [
            Connection(nodes[(i + 1) % NODES].url, b.token) for i, (_, b) in enumerate(pairs)
        ]
        async with Load(pairs, senders, receivers, window=1) as load:
            await load.each_pair_receives(10, "cross-node traffic")
            own.stop()
            # envelopes are still stored and acknowledged while NATS is away
            await load.acknowledges(50, "sends go on")
            # no traffic after the restart: what was stored during the outage reaches the
            # receivers only through wake-ups NATS kept or the resync after the reconnect
            await load.stop_sending()
            own.start()
            await own.ready()
            await load.check_delivered()
    finally:
        for node in nodes:
            node.stop()
        own.stop()

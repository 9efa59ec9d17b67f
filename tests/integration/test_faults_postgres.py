"""PostgreSQL faults under load: a restart (fast, and an immediate stop then start) and a server
that refuses writes.

The shared server on 5432 is never touched: each module run starts its own PostgreSQL cluster
(``initdb`` as the ``postgres`` user in a temporary folder, on a free port) and restarts that.
Every envelope the relay acknowledged arrives exactly once, senders are told ``unavailable``
for what could not be stored (the SDK resends it), the relay nodes stay up, and the clients
carry on without anyone doing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tresen.errors import Unavailable

from ..conftest import Harness
from ._load import Load, until
from .test_multinode import (  # noqa: F401 - stop_nodes is a fixture
    Balancer,
    Node,
    free_port,
    registering_relay,
    start_nodes,
    stop_nodes,
)

pytestmark = pytest.mark.postgres  # runs in the PostgreSQL pass only (tests/conftest.py)


def server_binaries() -> Path:
    found = os.environ.get("TRESEN_TEST_PG_BIN") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), ""
    )
    if not found or not (Path(found) / "initdb").exists():
        pytest.fail("PostgreSQL server binaries not found (set TRESEN_TEST_PG_BIN to their folder)")
    return Path(found)


class PrivatePostgres:
    """A PostgreSQL cluster of this test module's own, to restart at will."""

    def __init__(self) -> None:
        self.bin = server_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="tresen-pg-"))
        self.root.chmod(0o700)
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to ``postgres``
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self.options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        sudo = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*sudo, str(self.bin / tool), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # a postmaster started by pg_ctl keeps its stdout open
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            log = (self.root / "log").read_text()[-2000:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr.decode()}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def ctl(self, action: str, mode: str = "fast") -> None:
        """``pg_ctl start|stop|restart``, waiting until it is done."""
        log = ["-l", str(self.root / "log")] if action != "stop" else []
        opts = ["-o", self.options] if action != "stop" else []
        self._run("pg_ctl", action, "-D", str(self.data), *log, *opts, "-m", mode, "-w", "-t", "60")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.ctl("stop", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        cluster.init()
        cluster.ctl("start")
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
async def private_db(private_pg: PrivatePostgres) -> AsyncIterator[str]:
    name = f"tresen_f_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(private_pg.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield private_pg.url(name)


@pytest.fixture
async def registrar(private_db: str, tmp_path: Path) -> AsyncIterator[Harness]:
    """An in-process relay on the private cluster: registers devices (and, in the read-only
    test, is the relay)."""
    async with registering_relay(private_db, tmp_path) as harness:
        yield harness


PAIRS = 4
NODES = 2


@pytest.mark.parametrize("how", ["restart -m fast", "stop -m immediate, start"])
async def test_a_postgres_restart_under_load_loses_nothing_and_shows_nothing_twice(
    how: str,
    private_pg: PrivatePostgres,
    private_db: str,
    registrar: Harness,
    tmp_path: Path,
    stop_nodes: list[Node],  # noqa: F811
) -> None:
    pairs = [(await registrar.new_device(), await registrar.new_device()) for _ in range(PAIRS)]
    await registrar.server.stop()
    nodes = await start_nodes(stop_nodes, private_db, tmp_path / "media", NODES)
    balancer = Balancer(nodes)
    await balancer.start()
    try:
        async with Load.through(balancer.url, pairs) as load:
            await load.each_pair_receives(20, "traffic on every pair")
            resent = load.resent()
            if how == "restart -m fast":
                await asyncio.to_thread(private_pg.ctl, "restart", "fast")
            else:
                await asyncio.to_thread(private_pg.ctl, "stop", "immediate")
                # while the database is down, senders are told their envelopes were not stored
                await until(lambda: load.resent() > resent, "an 'unavailable' answer")
                await asyncio.to_thread(private_pg.ctl, "start")
            # the nodes reconnect to the database on their own; traffic goes on
            await load.acknowledges(100 * PAIRS, "traffic after the restart")
            await load.stop_sending()
            assert load.failed == []  # every send was stored in the end (some after a resend)
            assert all(node.proc is not None and node.proc.poll() is None for node in nodes)
            await load.check_delivered()
            # the batches cut off by the restart were answered 'unavailable' and resent
            assert load.resent() > resent
    finally:
        await balancer.close()


async def test_a_server_that_refuses_writes_is_an_error_to_senders_never_an_ack(
    private_pg: PrivatePostgres, private_db: str, registrar: Harness
) -> None:
    """The database turns read-only under the relay (a failover to a standby, an operator
    stopping writes): every send is answered ``unavailable``, reads and connections go on, and
    once writes are allowed again the same relay stores what is resent."""
    alice, carol, bob = [await registrar.new_device() for _ in range(3)]
    raw = await alice.connect(resend_unavailable=False)  # sees the answer itself
    sdk = await carol.connect()
    inbox = await bob.connect()
    await raw.send(bob.account_id, {bob.device_id: b"before"}, id="before")

    name = private_db.rsplit("/", 1)[1]
    admin = await asyncpg.connect(private_pg.url())

    async def new_sessions(setting: str) -> None:
        """Set ``default_transaction_read_only`` for the database and end the relay's open
        sessions, so that every session its pool opens from now on has the new value."""
        await admin.execute(f'ALTER DATABASE "{name}" {setting}')
        await admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )

    try:
        await new_sessions("SET default_transaction_read_only = on")
        # nothing is stored from here on; the first answers may still name the lost connection
        refused: list[Unavailable] = []
        while not any("read-only" in e.message for e in refused):
            assert len(refused) < 50, [e.message for e in refused]
            with pytest.raises(Unavailable) as answer:
                await raw.send(bob.account_id, {bob.device_id: b"no"}, id=f"refused{len(refused)}")
            refused.append(answer.value)
        assert {e.code for e in refused} == {"unavailable"}
        pending = asyncio.create_task(
            sdk.send(bob.account_id, {bob.device_id: b"resent"}, id="resent")
        )
        await until(lambda: sdk.resent >= 2, "the SDK resends what was refused")
        assert not pending.done()
        await new_sessions("RESET default_transaction_read_only")
    finally:
        await admin.close()
    assert await asyncio.wait_for(pending, 30) == "resent"
    await raw.send(bob.account_id, {bob.device_id: b"after"}, id="after")
    got = [await inbox.recv() for _ in range(3)]
    assert [i.id for i in got] == ["before", "resent", "after"]
    with contextlib.suppress(TimeoutError):
        extra = await inbox.recv(timeout=0.5)
        raise AssertionError(f"{extra.id} arrived but was never acknowledged")

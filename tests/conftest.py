"""Shared fixtures: a real relay on port 0, on SQLite or (TRESEN_TEST_POSTGRES=1) PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvloop

from tresen.client import AsyncDevice, Connection, Credentials
from tresen.config import Settings, load
from tresen.relay.accounts.senders import MemorySender
from tresen.relay.clock import Clock
from tresen.relay.server import RelayServer
from tresen.relay.services import Services

POSTGRES = os.environ.get("TRESEN_TEST_POSTGRES") == "1"

PG_ADMIN = os.environ.get("TRESEN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    """Every test on uvloop, as ``tresen serve`` runs. (On asyncio's own loop a keep-alive
    request between a client and a server in the same loop waits ~40 ms for a delayed ACK.)"""
    if os.environ.get("TRESEN_TEST_LOOP") == "asyncio":
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


def fresh_phone() -> str:
    """A valid, unused German mobile number."""
    return f"+49151{secrets.randbelow(10**8):08d}"


@pytest.fixture
async def db_url(tmp_path: Any) -> AsyncIterator[str]:
    if not POSTGRES:
        yield f"sqlite:///{tmp_path}/relay.db"
        return
    name = f"tresen_t_{secrets.token_hex(6)}"
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


@dataclass
class DeviceHandle:
    """A registered device in a test: ids, token, an authenticated HTTP client, the SDK."""

    account_id: int
    device_id: int
    token: str
    phone: str
    http: httpx.AsyncClient
    sdk: AsyncDevice
    conns: list[Connection] = field(default_factory=list)

    async def connect(self, **options: Any) -> Connection:
        conn = Connection(self.sdk.credentials.url, self.token, **options)
        await conn.connect()
        self.conns.append(conn)
        return conn


class Harness:
    def __init__(self, server: RelayServer, sender: MemorySender, clock: Clock) -> None:
        self.server = server
        self.sender = sender
        self.clock = clock
        self.devices: list[DeviceHandle] = []

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def services(self) -> Services:
        return self.server.app.services

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    async def new_device(self, phone: str | None = None, name: str = "") -> DeviceHandle:
        """Register a new account (or take over ``phone``'s) and return its first device."""
        phone = phone or fresh_phone()
        async with self.client() as http:
            r = await http.post("/v1/accounts/code", json={"phone": phone})
            assert r.status_code == 202, r.text
            normalised = r.json()["phone"]
            r = await http.post(
                "/v1/accounts",
                json={
                    "phone": normalised,
                    "code": self.sender.codes[normalised],
                    "device_name": name,
                },
            )
            assert r.status_code == 201, r.text
        return self._handle(r.json())

    async def link_device(self, existing: DeviceHandle, name: str = "") -> DeviceHandle:
        r = await existing.http.post("/v1/devices/link-code")
        assert r.status_code == 201, r.text
        async with self.client() as http:
            r = await http.post(
                "/v1/devices/link", json={"code": r.json()["code"], "device_name": name}
            )
            assert r.status_code == 201, r.text
        return self._handle(r.json())

    def _handle(self, body: dict[str, Any]) -> DeviceHandle:
        creds = Credentials(url=self.url, **body)
        handle = DeviceHandle(
            account_id=creds.account_id,
            device_id=creds.device_id,
            token=creds.token,
            phone=creds.phone,
            http=self.client(creds.token),
            sdk=AsyncDevice(creds),
        )
        self.devices.append(handle)
        return handle

    async def fetch_queue(self, device_id: int) -> list[Any]:
        return await self.services.envelopes.fetch(device_id, 0, 10_000)

    async def aclose(self) -> None:
        for device in self.devices:
            for conn in device.conns:
                await conn.close()
            await device.sdk.close()
            await device.http.aclose()


def test_settings(db_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "db": db_url,
        "sqlite_synchronous": "normal",
        # every test device registers from 127.0.0.1; test_accounts checks the limit itself
        "code_attempts_per_address_per_hour": 1_000_000,
    }
    base.update(overrides)
    return load(environ={}, overrides=base)


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    """Override in a test module to change the relay's settings."""
    return {}


@pytest.fixture
async def relay(
    db_url: str, relay_settings: dict[str, Any], tmp_path: Any
) -> AsyncIterator[Harness]:
    sender = MemorySender()
    clock = Clock()
    # media blobs in the test's own folder (on PostgreSQL the default is ./tresen-data/media)
    settings = test_settings(db_url, **{"media_dir": str(tmp_path / "media"), **relay_settings})
    server = RelayServer(settings, clock=clock, code_sender=sender)
    await server.start()
    harness = Harness(server, sender, clock)
    try:
        yield harness
    finally:
        await harness.aclose()
        await server.stop()


# ---------------------------------------------------------------- which pass runs what
#
# scripts/test runs the suite twice, on SQLite and then on PostgreSQL (TRESEN_TEST_POSTGRES=1).
# A second pass only adds something for a test that uses the pass's database, that is the
# ``db_url`` fixture (directly, or through ``relay`` and the gateway harness). So:
#   - a test that uses ``db_url`` runs in both passes (its own skipif may still narrow that);
#   - a test marked ``postgres`` needs PostgreSQL whatever the pass (databases or a cluster of
#     its own): it runs in the PostgreSQL pass only;
#   - every other test (no database, or a SQLite file of its own) runs once, in the SQLite pass.
# With CI=true a test skipped in the only pass it runs in fails instead: it would never run.

CI = os.environ.get("CI") == "true"
PASS = "postgres" if POSTGRES else "sqlite"


def passes(item: pytest.Item) -> tuple[str, ...]:
    """The passes of scripts/test that run ``item``."""
    if item.get_closest_marker("postgres") is not None:
        return ("postgres",)
    if "db_url" in getattr(item, "fixturenames", ()):
        return ("sqlite", "postgres")
    return ("sqlite",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = [item for item in items if PASS in passes(item)]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if PASS not in passes(item)])
        items[:] = keep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if CI and report.skipped and not hasattr(report, "wasxfail") and passes(item) == (PASS,):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        hint = "; mark it `postgres` if it needs PostgreSQL" if PASS == "sqlite" else ""
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in the {PASS} pass, the only one that runs it, so with CI=true it would "
            f"never run ({reason}){hint}"
        )
    return report


# ---------------------------------------------------------------- on xdist workers (-n N)
#
# Work goes out a module at a time (a module's tests share module-scoped fixtures and run in
# their order), except that the modules below make one unit together: they start relay nodes,
# clusters or servers as processes, or load the machine on purpose (many nodes, crashes,
# faults, abuse), so they run one after another on one worker, never at the same time as each
# other. A module of that kind joins by its name. scripts/test goes further: it runs them
# (marked ``serial``) after the rest and without workers, so nothing else loads the machine
# while they wait for recoveries and timeouts.

SERIAL = ("test_multinode", "test_faults_", "test_crash", "test_abuse", "test_e2e_durability")


def pytest_itemcollected(item: pytest.Item) -> None:
    """Those modules' tests are marked ``serial``: scripts/test runs them without workers, after
    the rest, so that nothing else loads the machine while they measure recovery and timeouts."""
    if Path(str(item.path)).name.startswith(SERIAL):
        item.add_marker(pytest.mark.serial)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") not in ("load", "loadscope"):
        return None  # another --dist asked for by name
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "serial" if Path(module).name.startswith(SERIAL) else module

    return ByModule(config, log)

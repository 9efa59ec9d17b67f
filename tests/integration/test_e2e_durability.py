"""Nothing the relay handed over is lost on the receiving side: a SecureDevice acknowledges an
item only once its events are stored with the crypto state, and keeps each event until the
application asks for the next one. A business gateway killed with -9 while people write to it
still reports every message to the webhook after its restart."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx

from tests.conftest import POSTGRES, DeviceHandle, Harness
from tests.integration.gateway_harness import Receiver, Uvicorn, person, start_gateway
from tresen.client import AsyncDevice, Connection
from tresen.client.secure import Message, SecureDevice, Undecryptable


async def crash(device: SecureDevice) -> None:
    """What a killed process leaves: the socket gone, nothing committed that was not yet."""
    assert device.machine.store is not None
    device.machine.store.db.close()  # uncommitted work is rolled back, as after kill -9
    conn = device.device.conn
    assert conn is not None and conn.ws is not None
    conn.reconnect = False
    conn.ws.transport.abort()
    await conn.close()  # only this test's event loop is tidied up: no ack, no commit
    await device.device.api.aclose()


async def reopen(handle: DeviceHandle, store: Path) -> SecureDevice:
    device = SecureDevice.open(AsyncDevice(handle.sdk.credentials), store, passphrase="pw")
    await device.start()
    return device


async def alice_and_bob(
    relay: Harness, tmp_path: Path
) -> tuple[SecureDevice, DeviceHandle, SecureDevice]:
    """Two new devices with crypto stores in ``tmp_path``: Alice, and Bob with his handle (to
    reopen him)."""
    alice_h, bob_h = await relay.new_device(), await relay.new_device()
    alice = await reopen(alice_h, tmp_path / "alice.store")
    return alice, bob_h, await reopen(bob_h, tmp_path / "bob.store")


async def bodies(device: SecureDevice, timeout: float = 1.5) -> list[str]:
    """Every message body until nothing more comes; fails on anything undecryptable."""
    seen = []
    try:
        while True:
            event = await device.recv(timeout)
            assert not isinstance(event, Undecryptable), event
            if isinstance(event, Message):
                seen.append(str(event.content["body"]))
    except TimeoutError:
        return seen


async def test_an_event_not_handled_comes_again_after_a_crash(
    relay: Harness, tmp_path: Path
) -> None:
    alice, bob_h, bob = await alice_and_bob(relay, tmp_path)
    await alice.send(bob.account_id, "one")
    first = await bob.recv()
    assert isinstance(first, Message) and first.content["body"] == "one"
    for text in ("two", "three"):
        await alice.send(bob.account_id, text)
    await asyncio.sleep(0.3)  # they reach bob's connection, not yet taken by a recv()
    await crash(bob)  # "one" was not handled (bob did not ask for the next event)

    bob = await reopen(bob_h, tmp_path / "bob.store")
    assert await bodies(bob) == ["one", "two", "three"]
    await bob.close()
    bob = await reopen(bob_h, tmp_path / "bob.store")
    assert await bodies(bob, 0.5) == []  # handled, and the relay holds nothing more
    # the Olm sessions moved on with the events: the next message decrypts
    await alice.send(bob.account_id, "four")
    assert await bodies(bob) == ["four"]
    await alice.close()
    await bob.close()


async def test_a_lost_ack_brings_no_duplicate_and_no_undecryptable(
    relay: Harness, tmp_path: Path
) -> None:
    alice, bob_h, bob = await alice_and_bob(relay, tmp_path)
    conn = bob.device._live()

    async def lost(upto: int) -> None:  # the ack never reaches the relay
        return None

    conn.ack = lost  # type: ignore[method-assign]
    await alice.send(bob.account_id, "once")
    assert await bodies(bob, 0.5) == ["once"]  # asked for more: "once" was handled
    await crash(bob)

    # the relay delivers the item again; it was stored, so it is only acknowledged now
    bob = await reopen(bob_h, tmp_path / "bob.store")
    assert await bodies(bob, 1.0) == []
    await bob.close()
    raw = Connection(bob_h.sdk.credentials.url, bob_h.token, auto_ack=False)
    await raw.connect()
    try:
        await asyncio.wait_for(raw.recv(None), 0.5)
        raise AssertionError("the relay still holds the item: the ack did not arrive")
    except TimeoutError:
        pass
    finally:
        await raw.close()
    await alice.close()


async def serve_gateway(db: str, data: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tresen", "business", "serve", "--port", "0",
        "--db", db, "--data-dir", str(data), "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        started = json.loads(await proc.stdout.readline())
    return proc, str(started["base_url"])


async def test_kill_9_gateway_loses_no_inbound_message(
    relay: Harness, db_url: str, tmp_path: Path
) -> None:
    async for biz in start_gateway(relay, db_url, tmp_path):
        boot = biz.boot  # the number, its keys and tokens; then the process-worth stops
    gw_db = db_url if POSTGRES else f"sqlite:///{tmp_path}/gateway.db"
    sheena = await person(relay, tmp_path)
    hook = Receiver(boot.app_secret, boot.verify_token)
    hook_server = Uvicorn(hook.app())
    await hook_server.start()
    proc, url = await serve_gateway(gw_db, tmp_path / "gw")
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {boot.access_token}"}
        ) as http:
            r = await http.post(
                f"/v22.0/{boot.waba_id}/subscribed_apps",
                json={"override_callback_uri": f"{hook_server.url}/hook"},
            )
            assert r.status_code == 200, r.text
        received: dict[str, str] = {}  # wamid -> body (a webhook may come twice, by design)

        async def collect() -> None:
            while True:
                value = await hook.next("messages", timeout=60)
                for message in value["messages"]:
                    received[message["id"]] = message["text"]["body"]

        collector = asyncio.create_task(collect())
        total = 60
        sent = []
        for n in range(total):
            sent.append(f"message {n}")
            await sheena.send(boot.relay_account_id, sent[-1])  # stored by the relay
            if n == 25:  # mid-stream: some handled, some in flight, some still queued
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            if n == 40:
                proc, _ = await serve_gateway(gw_db, tmp_path / "gw")
        async with asyncio.timeout(60):
            while len(received) < total:
                await asyncio.sleep(0.05)
        collector.cancel()
        assert sorted(received.values()) == sorted(sent)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        await hook_server.stop()
        await sheena.close()

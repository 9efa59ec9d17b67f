"""End-to-end encryption benchmark: the SDK's cost on top of the relay.

Runs a real relay in this process (SQLite in a temporary folder by default, or ``--db``) and
drives :class:`tresen.client.secure.SecureDevice` clients against it:

1. ``olm``: one device sends 1:1 messages to another through the relay for ``--seconds``, up to
   ``--window`` sends in flight; every message is Olm-encrypted (once for the recipient's one
   device) and decrypted and checked by the receiver. Reports messages per second received, and
   the encrypt-only rate of the same machine without the relay for comparison.
2. ``group``: a group of ``--members`` accounts with ``--devices`` devices each (256 x 2 by
   default). The first send creates the Megolm session, claims one-time keys, starts an Olm
   session with each of the other member devices and shares the key with them; the following
   ``--steady`` sends are Megolm only. Reports both times. Two member devices then connect and
   must decrypt every message (the check that the figures are for working messages).

Progress goes to stderr; the last line on stdout is one JSON object of the figures.
Run: ``.venv/bin/python bench/crypto.py --seconds 5`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tresen.client import AsyncDevice, Credentials
from tresen.client.crypto.machine import CryptoMachine
from tresen.client.secure import Message, SecureDevice
from tresen.config import load
from tresen.relay.accounts.senders import MemorySender
from tresen.relay.server import RelayServer

KEY = b"b" * 32


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, server: RelayServer, codes: MemorySender, workdir: Path) -> None:
        self.server, self.codes, self.workdir = server, codes, workdir
        self.count = 0

    async def register(self) -> AsyncDevice:
        self.count += 1
        phone = f"+49151{self.count:08d}"  # distinct per call, also when run concurrently
        await AsyncDevice.request_code(self.server.url, phone)
        return await AsyncDevice.register(self.server.url, phone, self.codes.codes[phone])

    async def link(self, device: AsyncDevice) -> AsyncDevice:
        code = (await device.api.link_code())["code"]
        return await AsyncDevice.link(self.server.url, code)

    def secure(self, device: AsyncDevice, otk_target: int = 50) -> SecureDevice:
        path = self.workdir / f"{device.device_id}.store"
        return SecureDevice.open(device, path, key=KEY, otk_target=otk_target)


async def next_message(device: SecureDevice) -> Message:
    while True:
        event = await device.recv(60)
        if isinstance(event, Message):
            return event


async def bench_olm(bench: Bench, seconds: float, window: int) -> dict[str, Any]:
    alice = bench.secure(await bench.register())
    bob = bench.secure(await bench.register())
    await alice.start()
    await bob.start()
    await alice.send(bob.account_id, "warm up")  # the Olm session exists from here on
    await next_message(bob)

    received = 0
    stop = asyncio.Event()

    async def receive() -> None:
        nonlocal received
        while not stop.is_set() or received < sent:
            message = await next_message(bob)
            assert message.content["body"].startswith("m")
            received += 1

    sent = 0
    body = "m" + "x" * 99

    async def sender() -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            await alice.send(bob.account_id, body)

    receiver = asyncio.create_task(receive())
    start = time.perf_counter()
    senders = [asyncio.create_task(sender()) for _ in range(window)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*senders)
    await asyncio.wait_for(receiver, 60)
    took = time.perf_counter() - start
    log(f"[olm] {received} messages sent, received and decrypted in {took:.1f} s")

    # the same machine without the relay: encrypt and decrypt only
    a, b = CryptoMachine("1", "1"), CryptoMachine("2", "2")
    b.upload_body(1, fallback=False)
    key_id, key = next(iter(b.account.one_time_keys(1).items()))
    a.start_session(b.own, key_id, key)
    n, local_start = 0, time.perf_counter()
    while time.perf_counter() - local_start < min(seconds, 2.0):
        b.decrypt_olm(a.own, a.encrypt_olm(b.own, "m.room.message", {"body": body}).content)
        n += 1
    local = n / (time.perf_counter() - local_start)
    await alice.close()
    await bob.close()
    return {
        "messages": received,
        "seconds": round(took, 2),
        "messages_per_s": round(received / took),
        "window": window,
        "local_encrypt_decrypt_per_s": round(local),
    }


async def bench_group(bench: Bench, members: int, devices: int, steady: int) -> dict[str, Any]:
    setup = time.perf_counter()
    owner = bench.secure(await bench.register())
    await owner.start()

    async def member() -> list[AsyncDevice]:
        first = await bench.register()
        linked = [first] + [await bench.link(first) for _ in range(devices - 1)]
        for device in linked:
            secure = bench.secure(device, otk_target=5)
            await secure.top_up()  # publishes keys without connecting
            if secure.machine.store is not None:
                secure.machine.store.close()
        return linked

    accounts: list[list[AsyncDevice]] = []
    while len(accounts) < members - 1:
        batch = min(8, members - 1 - len(accounts))
        accounts += await asyncio.gather(*(member() for _ in range(batch)))
        if len(accounts) % 64 == 0:
            log(f"[group] {len(accounts)} members registered with {devices} devices and keys")
    owner_extra = [await bench.link(owner.device) for _ in range(devices - 1)]
    for device in owner_extra:
        extra = bench.secure(device, otk_target=5)
        await extra.top_up()
        if extra.machine.store is not None:
            extra.machine.store.close()
    group = await owner.device.api.create_group("bench", [a[0].account_id for a in accounts])
    gid = int(group["group_id"])
    setup_took = time.perf_counter() - setup
    log(f"[group] set up {members} members x {devices} devices in {setup_took:.1f} s")

    start = time.perf_counter()
    await owner.send_group(gid, "first message: keys shared")
    first = time.perf_counter() - start
    log(f"[group] first send (sessions + key share + Megolm) {first * 1000:.0f} ms")
    times = []
    for n in range(steady):
        start = time.perf_counter()
        await owner.send_group(gid, f"steady {n}")
        times.append(time.perf_counter() - start)
    log(f"[group] steady sends: median {statistics.median(times) * 1000:.1f} ms")

    # two member devices come online and must read every message
    for device in (accounts[0][0], accounts[-1][-1]):
        reader = bench.secure(AsyncDevice(Credentials(**_creds(device))), otk_target=5)
        await reader.start()
        bodies = [(await next_message(reader)).content["body"] for _ in range(steady + 1)]
        assert bodies[0] == "first message: keys shared" and len(bodies) == steady + 1
        await reader.close()
    await owner.close()
    return {
        "members": members,
        "devices_per_member": devices,
        "recipient_devices": members * devices - 1,
        "setup_s": round(setup_took, 1),
        "first_send_ms": round(first * 1000, 1),
        "steady_send_ms_median": round(statistics.median(times) * 1000, 2),
        "steady_send_ms_p90": round(sorted(times)[int(len(times) * 0.9)] * 1000, 2),
        "steady_sends": steady,
    }


def _creds(device: AsyncDevice) -> dict[str, Any]:
    c = device.credentials
    return {"url": c.url, "account_id": c.account_id, "device_id": c.device_id, "token": c.token}


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    db = args.db or f"sqlite:///{workdir}/relay.db"
    settings = load(
        environ={},
        overrides={
            "host": "127.0.0.1",
            "port": 0,
            "db": db,
            "sqlite_synchronous": "normal",
            "code_attempts_per_address_per_hour": 1_000_000,
            "code_attempts_per_number_per_hour": 1_000_000,
            "max_devices": max(5, args.devices),
        },
    )
    codes = MemorySender()
    server = RelayServer(settings, code_sender=codes)
    await server.start()
    bench = Bench(server, codes, workdir)
    result: dict[str, Any] = {"db": db.split(":", 1)[0]}
    try:
        if "olm" in args.phases:
            result["olm"] = await bench_olm(bench, args.seconds, args.window)
        if "group" in args.phases:
            result["group"] = await bench_group(bench, args.members, args.devices, args.steady)
    finally:
        await server.stop()
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=5.0, help="measured time of the olm phase")
    p.add_argument("--window", type=int, default=16, help="1:1 sends in flight")
    p.add_argument("--members", type=int, default=256, help="group members (with the sender)")
    p.add_argument("--devices", type=int, default=2, help="devices per member")
    p.add_argument("--steady", type=int, default=50, help="Megolm-only sends after the first")
    p.add_argument("--phases", default="olm,group", help="olm, group or both")
    p.add_argument("--db", default="", help="relay database URL (default: SQLite in a temp dir)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tresen-bench-crypto-") as tmp:
        result = asyncio.run(main_async(args, Path(tmp)))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

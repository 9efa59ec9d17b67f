"""kill -9 the relay while clients send; after a restart every envelope the relay acknowledged
reaches its recipient exactly once (after the client's dedup by seq), and no id is stored twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx

from tresen.client import Connection

from ..conftest import Harness

PAIRS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_relay(db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TRESEN_SQLITE_SYNCHRONOUS="full")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tresen",
            "serve",
            "--port",
            str(port),
            "--db",
            db_url,
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60  # a loaded CI machine can take a while to start Python
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"relay did not start (exit code {proc.poll()})")


async def test_kill_9_loses_no_acknowledged_envelope(relay: Harness, db_url: str) -> None:
    pairs = [(await relay.new_device(), await relay.new_device()) for _ in range(PAIRS)]
    creds = [(a.token, b.account_id, b.device_id, b.token) for a, b in pairs]
    await relay.server.stop()  # the in-process relay only registered the devices

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = [await start_relay(db_url, port)]
    try:
        await run_and_kill(url, port, db_url, creds, procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def run_and_kill(
    url: str,
    port: int,
    db_url: str,
    creds: list[tuple[str, int, int, str]],
    procs: list[subprocess.Popen[bytes]],
) -> None:
    acked: list[set[str]] = [set() for _ in range(PAIRS)]
    received: list[list[Any]] = [[] for _ in range(PAIRS)]
    stop = asyncio.Event()
    senders = [Connection(url, c[0]) for c in creds]
    receivers = [Connection(url, c[3]) for c in creds]
    for conn in senders + receivers:
        await conn.connect()

    async def send_loop(i: int) -> None:
        _, to, device, _ = creds[i]
        n = 0
        in_flight: set[asyncio.Task[str]] = set()
        while not stop.is_set():
            envelope_id = f"p{i}-{n}"
            n += 1
            task = asyncio.create_task(
                senders[i].send(to, {device: envelope_id.encode()}, id=envelope_id)
            )
            task.add_done_callback(
                lambda t: acked[i].add(t.result()) if not t.exception() else None
            )
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            while len(in_flight) >= 10:
                await asyncio.sleep(0.001)
        await asyncio.gather(*in_flight, return_exceptions=True)

    async def recv_loop(i: int) -> None:
        while True:
            received[i].append(await receivers[i].recv(timeout=None))

    send_tasks = [asyncio.create_task(send_loop(i)) for i in range(PAIRS)]
    recv_tasks = [asyncio.create_task(recv_loop(i)) for i in range(PAIRS)]
    await asyncio.sleep(1.5)
    before_kill = sum(len(a) for a in acked)
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    await asyncio.sleep(0.3)
    procs.append(await start_relay(db_url, port))
    try:
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*send_tasks), 30)
        total = [len(a) for a in acked]
        for _ in range(300):
            if all(len({it.id for it in received[i]}) >= total[i] for i in range(PAIRS)):
                break
            await asyncio.sleep(0.05)
        for i in range(PAIRS):
            ids = [it.id for it in received[i]]
            assert acked[i] <= set(ids), f"pair {i} lost {sorted(acked[i] - set(ids))[:5]}"
            dupes = [k for k, v in Counter(ids).items() if v > 1]
            assert dupes == [], f"pair {i} got duplicates {dupes[:5]}"
        assert before_kill > 0 and any(c.reconnects for c in senders)
    finally:
        for t in recv_tasks:
            t.cancel()
        for conn in senders + receivers:
            await conn.close()

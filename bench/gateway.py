"""Business gateway benchmark: ``POST /messages`` for one business number, end to end.

The parts run as they are deployed, each in its own process: the relay (``tresen serve`` on
SQLite), the gateway with one business number (``--role gateway``), ``--people`` persons
(SecureDevices, connected, each wrote first so the window is open; ``--role people``) and this
process, which is the business's side: a lean keep-alive HTTP/1.1 load generator and a lean
webhook receiver that checks every signature (neither uses an HTTP library, so that their own
cost stays small next to the gateway's).

For ``--seconds`` it posts text messages with ``--window`` requests in flight, round-robin over
the people. Every request includes validation, the recipient lookup, Olm encryption to the
person's device, the relay's policy gate and its single tick; the people decrypt everything,
and the gateway's outbox delivers the ``sent`` and ``delivered`` status webhooks (signed).

The relay runs with the Cloud API's highest throughput tier (1,000 messages/s per number) and
a pair rate that does not limit the benchmark (the default allows one message per person every
6 s, see docs/business-rules.md).

Progress goes to stderr; the last line on stdout is one JSON object:
``messages_per_second``, API latency ``p50_ms`` / ``p99_ms``, ``received`` (decrypted by the
people) and ``undecryptable`` (the exit status is 1 unless every message sent was decrypted),
``webhooks_per_second`` (status deliveries, measured until the outbox drained) and
``cpu_ms_per_message`` per process (CPU time in the measured span over messages sent).
Run: ``.venv/bin/python bench/gateway.py --seconds 5`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from tresen.client import AsyncDevice
from tresen.client.secure import Message, SecureDevice, Undecryptable
from tresen.gateway.app import GatewayServer
from tresen.gateway.bootstrap import create_number
from tresen.gateway.service import GatewaySettings
from tresen.runtime import settle_heap

RELAY_SETTINGS = {
    "sqlite_synchronous": "normal",
    "code_attempts_per_address_per_hour": 1_000_000,
    "code_attempts_per_number_per_hour": 1_000_000,
    "business_throughput_per_second": 1_000,
    "business_pair_per_second": 1_000.0,
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- lean HTTP/1.1, both ends


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 message with a Content-Length body: (start line, headers, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    start, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return start, headers, body


class Client:
    """One keep-alive connection; one request at a time."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        start, headers, data = await read_message(self.reader)
        if headers.get(b"connection", b"").lower() == b"close":
            self.writer.close()
            self.writer = None
        return int(start.split(b" ", 2)[1]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Hook:
    """The business's webhook endpoint (and, for set-up, where the relay sends codes)."""

    def __init__(self) -> None:
        self.secret = b""
        self.statuses = self.bad = 0
        self.first = self.last = 0.0
        self.codes: dict[str, str] = {}
        self.code_arrived = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                start, headers, body = await read_message(reader)
                status, answer = await self.route(start, headers, body)
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(answer), answer)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def route(
        self, start: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> tuple[int, bytes]:
        method, target, _ = start.split(b" ", 2)
        if target == b"/codes":
            message = json.loads(body)
            self.codes[str(message["to"])] = str(message["code"])
            self.code_arrived.set()
            return 200, b"ok"
        if target.startswith(b"/codes/"):
            phone = target[7:].decode()
            while phone not in self.codes:
                self.code_arrived.clear()
                await asyncio.wait_for(self.code_arrived.wait(), 10)
            return 200, self.codes[phone].encode()
        if method == b"GET":  # the verification handshake
            query = dict(p.split(b"=", 1) for p in target.partition(b"?")[2].split(b"&") if p)
            return 200, query.get(b"hub.challenge", b"")
        signature = headers.get(b"x-hub-signature-256", b"").decode()
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            self.bad += 1
            return 403, b"bad signature"
        now = time.perf_counter()
        self.first = self.first or now
        self.last = now
        self.statuses += body.count(b'"statuses"')
        return 200, b"ok"


# ---------------------------------------------------------------- the other processes


async def line_of(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await proc.stdout.readline()
    if not raw:
        raise RuntimeError("a benchmark process ended early; run it alone to see why")
    result: dict[str, Any] = json.loads(raw)
    return result


async def spawn(*argv: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


async def relay_process(workdir: Path, codes_url: str) -> tuple[asyncio.subprocess.Process, str]:
    """``tresen serve`` in its own process (codes go to the hook's /codes)."""
    port = free_port()
    env = {**os.environ, **{f"TRESEN_{k.upper()}": str(v) for k, v in RELAY_SETTINGS.items()}}
    env |= {"TRESEN_CODE_SENDER": "webhook", "TRESEN_CODE_WEBHOOK_URL": codes_url}
    env |= {"TRESEN_MEDIA_DIR": str(workdir / "media")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tresen", "serve", "--port", str(port),
        "--db", f"sqlite:///{workdir}/relay.db", "--log-level", "warning",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    health = Client(port, {})
    for _ in range(400):
        try:
            if (await health.request("GET", "/healthz"))[0] == 200:
                health.close()
                return proc, f"http://127.0.0.1:{port}"
        except (OSError, asyncio.IncompleteReadError):
            health.writer = None
        await asyncio.sleep(0.05)
    raise RuntimeError("the relay did not start")


async def gateway_role(args: argparse.Namespace) -> None:
    """``--role gateway``: a gateway with one number; prints its ids, then scoped ids."""
    workdir = Path(args.workdir)
    gateway = GatewayServer(
        f"sqlite:///{workdir}/gateway.db",
        workdir / "gw",
        port=free_port(),
        settings=GatewaySettings(workdir / "gw", sqlite_synchronous=args.sqlite_synchronous),
    )
    await gateway.start()
    assert gateway.app.db is not None
    codes = Client(int(args.codes.rsplit(":", 1)[1].split("/")[0]), {})

    async def code(phone: str) -> str:
        return (await codes.request("GET", f"/codes/{phone}"))[1].decode()

    number, boot = await create_number(
        gateway.app.db, workdir / "gw", args.relay, "+4930000001", code, name="Bench Air"
    )
    line = await gateway.gateway.open_line(number)
    settle_heap()  # as `tresen business serve` does once started
    print(json.dumps({"url": gateway.url, **msgspec.to_builtins(boot)}), flush=True)
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    accounts = json.loads(await stdin.readline())
    scoped: list[str] = []
    while len(scoped) < len(accounts):  # until each person's first message arrived
        await asyncio.sleep(0.05)
        scoped = [(await gateway.gateway.person(line, a)).scoped_id for a in accounts]
        scoped = [s for s in scoped if s]
    print(json.dumps({"scoped": scoped}), flush=True)
    await stdin.read()  # until the benchmark closes our stdin
    await gateway.stop()


async def people_role(args: argparse.Namespace) -> None:
    """``--role people``: people who write first, then decrypt and count."""
    workdir = Path(args.workdir)
    codes = Client(int(args.codes.rsplit(":", 1)[1].split("/")[0]), {})
    people = []
    for n in range(args.people):
        phone = f"+49151{n:08d}"
        await AsyncDevice.request_code(args.relay, phone)
        code = (await codes.request("GET", f"/codes/{phone}"))[1].decode()
        device = await AsyncDevice.register(args.relay, phone, code)
        secure = SecureDevice.open(device, workdir / f"p{n}.store", key=b"k" * 32)
        await secure.start()
        people.append(secure)
        await secure.send(args.business, "hi")
    print(json.dumps({"accounts": [p.account_id for p in people]}), flush=True)
    received = undecryptable = 0

    async def drain(device: SecureDevice) -> None:
        nonlocal received, undecryptable
        while True:
            event = await device.recv(None)
            if isinstance(event, Message):
                received += 1
            elif isinstance(event, Undecryptable):
                undecryptable += 1

    tasks = [asyncio.create_task(drain(p)) for p in people]
    try:
        while True:
            await asyncio.sleep(0.25)
            print(json.dumps({"received": received, "undecryptable": undecryptable}), flush=True)
    except BrokenPipeError:  # the benchmark is done
        for task in tasks:
            task.cancel()


# ---------------------------------------------------------------- the benchmark


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    hook = Hook()
    hook_server = await asyncio.start_server(hook.handle, "127.0.0.1", 0)
    hook_url = f"http://127.0.0.1:{hook_server.sockets[0].getsockname()[1]}"
    me = [sys.executable, __file__, "--workdir", str(workdir), "--codes", f"{hook_url}/codes"]
    procs: list[asyncio.subprocess.Process] = []
    clients: list[Client] = []
    try:
        relay, relay_url = await relay_process(workdir, f"{hook_url}/codes")
        procs.append(relay)
        log("relay up; starting the gateway")
        gateway = await spawn(*me, "--role", "gateway", "--relay", relay_url,
                              "--sqlite-synchronous", args.sqlite_synchronous)  # fmt: skip
        procs.append(gateway)
        boot = await line_of(gateway)
        hook.secret = str(boot["app_secret"]).encode()
        port = int(str(boot["url"]).rsplit(":", 1)[1])
        auth = {"Authorization": f"Bearer {boot['access_token']}"}
        setup = Client(port, auth)
        subscribe = {"override_callback_uri": hook_url, "verify_token": boot["verify_token"]}
        status, body = await setup.request(
            "POST", f"/v22.0/{boot['waba_id']}/subscribed_apps", json.dumps(subscribe).encode()
        )
        assert status == 200, body
        log(f"registering {args.people} people, each writes first")
        people = await spawn(*me, "--role", "people", "--relay", relay_url,
                             "--business", str(boot["relay_account_id"]),
                             "--people", str(args.people))  # fmt: skip
        procs.append(people)
        accounts = (await line_of(people))["accounts"]
        assert gateway.stdin is not None
        gateway.stdin.write(json.dumps(accounts).encode() + b"\n")
        scoped = (await line_of(gateway))["scoped"]
        received = undecryptable = 0

        async def count() -> None:
            nonlocal received, undecryptable
            assert people.stdout is not None
            async for raw in people.stdout:
                counts = json.loads(raw)
                received, undecryptable = counts["received"], counts["undecryptable"]

        counter = asyncio.create_task(count())
        latencies: list[float] = []
        errors: dict[int, int] = {}
        sent = 0
        path = f"/v22.0/{boot['phone_number_id']}/messages"
        start = time.perf_counter()
        stop = start + args.seconds

        async def worker(k: int) -> None:
            nonlocal sent
            client = Client(port, auth)
            clients.append(client)
            n = k
            while time.perf_counter() < stop:
                due = 0.0
                if args.rate:  # open loop: request n is due at start + n / rate
                    due = start + n / args.rate
                    if due >= stop:
                        return
                    await asyncio.sleep(due - time.perf_counter())
                to = scoped[n % len(scoped)]
                n += args.window
                body = json.dumps(
                    {
                        "messaging_product": "whatsapp",
                        "to": to,
                        "type": "text",
                        "text": {"body": f"message {n}"},
                    }
                ).encode()
                t0 = due or time.perf_counter()  # a late start counts (no coordinated omission)
                status, _ = await client.request("POST", path, body)
                latencies.append(time.perf_counter() - t0)
                if status == 200:
                    sent += 1
                else:
                    errors[status] = errors.get(status, 0) + 1

        pace = f" at {args.rate:g}/s" if args.rate else ""
        log(f"sending for {args.seconds}s{pace} with up to {args.window} requests in flight")
        pids = {"relay": relay.pid, "gateway": gateway.pid, "people": people.pid}
        pids["business (load + webhooks)"] = os.getpid()
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = start = time.perf_counter()
        stop = start + args.seconds
        await asyncio.gather(*(worker(k) for k in range(args.window)))
        elapsed = time.perf_counter() - t0
        expected = 2 * sent  # sent + delivered per message
        deadline = time.perf_counter() + 60

        def drained_all() -> bool:
            return received + undecryptable >= sent and hook.statuses >= expected

        while not drained_all() and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        drained = time.perf_counter() - t0
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        counter.cancel()
        latencies.sort()
        webhook_span = max(hook.last - hook.first, 1e-9)
        return {
            "people": args.people,
            "window": args.window,
            "rate": args.rate,
            "seconds": round(elapsed, 2),
            "sent": sent,
            "errors": errors,
            "messages_per_second": round(sent / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
            "received": received,
            "undecryptable": undecryptable,
            "webhook_statuses": hook.statuses,
            "webhooks_per_second": round(hook.statuses / webhook_span, 1),
            "bad_signatures": hook.bad,
            "drained_seconds": round(drained, 2),
            "cpu_ms_per_message": {k: round(1000 * v / max(sent, 1), 3) for k, v in cpu.items()},
        }
    finally:
        for client in clients:
            client.close()
        for proc in reversed(procs):
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
        hook_server.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=5.0, help="measured sending time")
    p.add_argument("--window", type=int, default=32, help="requests in flight")
    p.add_argument("--people", type=int, default=8, help="recipients (one device each)")
    p.add_argument(
        "--rate", type=float, default=0.0, help="requests/s, open loop (0: as fast as it goes)"
    )
    p.add_argument(
        "--sqlite-synchronous", default="normal", choices=["normal", "full"], help="gateway DB"
    )
    p.add_argument("--role", default="main", choices=["main", "gateway", "people"],
                   help=argparse.SUPPRESS)  # fmt: skip
    for hidden in ("--relay", "--codes", "--workdir"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--business", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.role == "people":
        uvloop.run(people_role(args))
        return
    if args.role == "gateway":
        uvloop.run(gateway_role(args))  # as `tresen business serve`
        return
    with tempfile.TemporaryDirectory(prefix="tresen-bench-gw-") as tmp:
        result = uvloop.run(run(args, Path(tmp)))
    print(json.dumps(result))
    if result["undecryptable"] or result["received"] < result["sent"]:
        log(f"FAILED: of {result['sent']} messages sent, {result['received']} were decrypted")
        sys.exit(1)


if __name__ == "__main__":
    main()

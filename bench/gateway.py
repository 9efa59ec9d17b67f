"""Business gateway benchmark: ``POST /messages`` for one business number, end to end.

Runs, in this process, a relay (SQLite in a temporary folder), a gateway with one business
number, ``--people`` persons (SecureDevices, connected, each wrote first so the window is
open) and a webhook receiver that checks every signature. For ``--seconds`` it posts text
messages with ``--window`` requests in flight, round-robin over the people. Every request
includes validation, the recipient lookup, Olm encryption to the person's device, the relay's
policy gate and its single tick; the people decrypt everything, and the gateway's outbox
delivers the ``sent`` and ``delivered`` status webhooks (signed).

The relay runs with the Cloud API's highest throughput tier (1,000 messages/s per number) and
a pair rate that does not limit the benchmark (the default allows one message per person every
6 s, see docs/business-rules.md).

Progress goes to stderr; the last line on stdout is one JSON object:
``messages_per_second``, API latency ``p50_ms`` / ``p99_ms``, ``received`` (decrypted by the
people), ``webhooks_per_second`` (status deliveries, measured until the outbox drained).
Run: ``.venv/bin/python bench/gateway.py --seconds 5`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tresen.client import AsyncDevice
from tresen.client.secure import Message, SecureDevice
from tresen.config import load
from tresen.gateway.app import GatewayServer
from tresen.gateway.bootstrap import create_number
from tresen.gateway.service import GatewaySettings
from tresen.gateway.webhooks import signer
from tresen.relay.server import RelayServer


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Codes:
    def __init__(self) -> None:
        self.codes: dict[str, str] = {}

    async def send(self, phone: str, code: str) -> None:
        self.codes[phone] = code


class Hook:
    def __init__(self, secret: str, verify: str) -> None:
        self.secret, self.verify = secret, verify
        self.statuses = 0
        self.bad = 0
        self.first = self.last = 0.0
        self.codes: dict[str, str] = {}

    def app(self) -> Starlette:
        async def get(request: Request) -> Response:
            return PlainTextResponse(request.query_params.get("hub.challenge", ""))

        async def post(request: Request) -> Response:
            body = await request.body()
            if not signer.verify(self.secret, body, request.headers.get(signer.HEADER, "")):
                self.bad += 1
                return PlainTextResponse("bad", status_code=403)
            now = time.perf_counter()
            self.first = self.first or now
            self.last = now
            self.statuses += body.count(b'"statuses"')
            return PlainTextResponse("ok")

        async def code(request: Request) -> Response:
            body = await request.json()
            self.codes[str(body["to"])] = str(body["code"])
            return PlainTextResponse("ok")

        async def code_of(request: Request) -> Response:
            phone = request.path_params["phone"]
            for _ in range(100):
                if phone in self.codes:
                    return PlainTextResponse(self.codes[phone])
                await asyncio.sleep(0.05)
            return PlainTextResponse("no code", status_code=404)

        return Starlette(
            routes=[
                Route("/", get),
                Route("/", post, methods=["POST"]),
                Route("/codes", code, methods=["POST"]),
                Route("/codes/{phone}", code_of),
            ]
        )


async def serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


RELAY_SETTINGS = {
    "sqlite_synchronous": "normal",
    "code_attempts_per_address_per_hour": 1_000_000,
    "code_attempts_per_number_per_hour": 1_000_000,
    "business_throughput_per_second": 1_000,
    "business_pair_per_second": 1_000.0,
}


async def relay_process(workdir: Path, codes_url: str) -> tuple[asyncio.subprocess.Process, str]:
    """``tresen serve`` in its own process (codes come to the hook's /codes)."""
    import os
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **{f"TRESEN_{k.upper()}": str(v) for k, v in RELAY_SETTINGS.items()}}
    env |= {"TRESEN_CODE_SENDER": "webhook", "TRESEN_CODE_WEBHOOK_URL": codes_url}
    env |= {"TRESEN_MEDIA_DIR": str(workdir / "media")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tresen", "serve", "--port", str(port),
        "--db", f"sqlite:///{workdir}/relay.db", "--log-level", "warning",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the relay did not start")


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    relay: RelayServer | None = None
    proc: asyncio.subprocess.Process | None = None
    hook = Hook("", "")
    hook_server, hook_task, hook_url = await serve(hook.app())
    if args.relay_process:
        proc, relay_url = await relay_process(workdir, f"{hook_url}/codes")
        codes = hook.codes
    else:
        settings = load(
            environ={},
            overrides={
                "host": "127.0.0.1",
                "port": 0,
                "db": f"sqlite:///{workdir}/relay.db",
                "media_dir": str(workdir / "media"),
                **RELAY_SETTINGS,
            },
        )
        sender = Codes()
        codes = sender.codes
        relay = RelayServer(settings, code_sender=sender)
        await relay.start()
        relay_url = relay.url
    gateway = GatewayServer(
        f"sqlite:///{workdir}/gateway.db",
        workdir / "gw",
        settings=GatewaySettings(workdir / "gw", sqlite_synchronous=args.sqlite_synchronous),
    )
    await gateway.start()
    people: list[SecureDevice] = []
    try:
        assert gateway.app.db is not None

        async def code(phone: str) -> str:
            return codes[phone]

        number, boot = await create_number(
            gateway.app.db, workdir / "gw", relay_url, "+4930000001", code, name="Bench Air"
        )
        await gateway.gateway.open_line(number)
        hook.secret, hook.verify = boot.app_secret, boot.verify_token
        headers = {"Authorization": f"Bearer {boot.access_token}"}
        http = httpx.AsyncClient(
            base_url=gateway.url,
            headers=headers,
            timeout=30,
            limits=httpx.Limits(max_connections=args.window),
        )
        r = await http.post(
            f"/v22.0/{boot.waba_id}/subscribed_apps",
            json={"override_callback_uri": hook_url, "verify_token": boot.verify_token},
        )
        r.raise_for_status()
        log(f"registering {args.people} people, each writes first")
        line = gateway.gateway.lines[boot.phone_number_id]
        received = 0
        child: asyncio.subprocess.Process | None = None
        if args.people_process:
            child = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--role", "people", "--relay", relay_url,
                "--codes", f"{hook_url}/codes", "--business", str(boot.relay_account_id),
                "--people", str(args.people), "--workdir", str(workdir),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert child.stdout is not None
            accounts = json.loads(await child.stdout.readline())["accounts"]
            stdout = child.stdout

            async def count() -> None:
                nonlocal received
                async for raw in stdout:
                    received = json.loads(raw)["received"]

            drains = [asyncio.create_task(count())]
        else:
            for n in range(args.people):
                phone = f"+49151{n:08d}"
                await AsyncDevice.request_code(relay_url, phone)
                device = await AsyncDevice.register(relay_url, phone, codes[phone])
                secure = SecureDevice.open(device, workdir / f"p{n}.store", key=b"k" * 32)
                await secure.start()
                people.append(secure)
                await secure.send(boot.relay_account_id, "hi")
            accounts = [p.account_id for p in people]

            async def drain(device: SecureDevice) -> None:
                nonlocal received
                while True:
                    if isinstance(await device.recv(None), Message):
                        received += 1

            drains = [asyncio.create_task(drain(p)) for p in people]
        scoped: list[str] = []
        while len(scoped) < args.people:
            await asyncio.sleep(0.05)
            scoped = [(await gateway.gateway.person(line, a)).scoped_id for a in accounts]
        latencies: list[float] = []
        errors: dict[int, int] = {}
        sent = 0
        stop = time.perf_counter() + args.seconds

        async def worker(k: int) -> None:
            nonlocal sent
            n = k
            while time.perf_counter() < stop:
                to = scoped[n % len(scoped)]
                n += args.window
                body = {
                    "messaging_product": "whatsapp",
                    "to": to,
                    "type": "text",
                    "text": {"body": f"message {n}"},
                }
                t0 = time.perf_counter()
                r = await http.post(f"/v22.0/{boot.phone_number_id}/messages", json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    sent += 1
                else:
                    errors[r.status_code] = errors.get(r.status_code, 0) + 1

        log(f"sending for {args.seconds}s with {args.window} requests in flight")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(args.window)))
        elapsed = time.perf_counter() - t0
        expected = 2 * sent  # sent + delivered per message
        deadline = time.perf_counter() + 60
        while (received < sent or hook.statuses < expected) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        for task in drains:
            task.cancel()
        if child is not None:
            child.terminate()
            await child.wait()
        latencies.sort()
        webhook_span = max(hook.last - hook.first, 1e-9)
        await http.aclose()
        return {
            "relay": "process" if proc else "in-process",
            "people_in": "process" if args.people_process else "in-process",
            "people": args.people,
            "window": args.window,
            "seconds": round(elapsed, 2),
            "sent": sent,
            "errors": errors,
            "messages_per_second": round(sent / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
            "received": received,
            "webhook_statuses": hook.statuses,
            "webhooks_per_second": round(hook.statuses / webhook_span, 1),
            "bad_signatures": hook.bad,
        }
    finally:
        for p in people:
            await p.close()
        await gateway.stop()
        if relay is not None:
            await relay.stop()
        if proc is not None:
            proc.terminate()
            await proc.wait()
        hook_server.should_exit = True
        await hook_task


async def people_role(args: argparse.Namespace) -> None:
    """The child process of ``--people-process``: people who write first, then decrypt."""
    workdir = Path(args.workdir)
    people = []
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(args.people):
            phone = f"+49151{n:08d}"
            await AsyncDevice.request_code(args.relay, phone)
            code = (await http.get(f"{args.codes}/{phone}")).text
            device = await AsyncDevice.register(args.relay, phone, code)
            secure = SecureDevice.open(device, workdir / f"p{n}.store", key=b"k" * 32)
            await secure.start()
            people.append(secure)
            await secure.send(args.business, "hi")
    print(json.dumps({"accounts": [p.account_id for p in people]}), flush=True)
    received = 0

    async def drain(device: SecureDevice) -> None:
        nonlocal received
        while True:
            if isinstance(await device.recv(None), Message):
                received += 1

    tasks = [asyncio.create_task(drain(p)) for p in people]
    try:
        while True:
            await asyncio.sleep(0.25)
            print(json.dumps({"received": received}), flush=True)
    except BrokenPipeError:  # the benchmark is done
        for task in tasks:
            task.cancel()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=5.0, help="measured sending time")
    p.add_argument("--window", type=int, default=32, help="requests in flight")
    p.add_argument("--people", type=int, default=8, help="recipients (one device each)")
    p.add_argument("--relay-process", action="store_true", help="run the relay as its own process")
    p.add_argument(
        "--people-process",
        action="store_true",
        help="run the people in their own process (implies --relay-process)",
    )
    p.add_argument("--role", default="main", choices=["main", "people"], help=argparse.SUPPRESS)
    p.add_argument("--relay", help=argparse.SUPPRESS)
    p.add_argument("--codes", help=argparse.SUPPRESS)
    p.add_argument("--business", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument(
        "--sqlite-synchronous", default="normal", choices=["normal", "full"], help="gateway DB"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.role == "people":
        asyncio.run(people_role(args))
        return
    args.relay_process = args.relay_process or args.people_process
    with tempfile.TemporaryDirectory(prefix="tresen-bench-gw-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

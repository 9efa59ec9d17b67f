"""Webhook client micro-benchmark: CPU per POST of the outbox's own client against aiohttp.

A lean keep-alive HTTP/1.1 server runs in its own process (uvloop, an asyncio Protocol that
answers ``200 ok`` to each request, no HTTP library), so this process's CPU time is the
client's alone. Each phase posts a signed JSON body the size of a status webhook
(``--body-bytes``) with ``--concurrency`` posts in flight (the outbox's default, 16) for
``--seconds`` after a short warm-up; the clients take turns (``--rounds`` rounds, interleaved)
so that a change in the machine's load hits both alike.

- ``lean``: :class:`tresen.gateway.webhooks.http.WebhookClient`, as the outbox uses it;
- ``aiohttp``: an ``aiohttp.ClientSession`` set up and called as the outbox did before
  (total timeout, ``TCPConnector(limit=16)``, ``allow_redirects=False``, status read).

Progress goes to stderr; the last line on stdout is one JSON object: per phase ``posts``,
``posts_per_second``, ``cpu_us_per_post`` (this process: user + system CPU over the posts) and
``server_cpu_us_per_post``; then the median ``cpu_us_per_post`` per client and their ratio.
Run: ``.venv/bin/python bench/webhook_client.py --seconds 3`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop

from tresen.gateway.webhooks import signer
from tresen.gateway.webhooks.http import WebhookClient

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

Post = Callable[[], Awaitable[int]]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the server (its own process)


class Answerer(asyncio.Protocol):
    """Answers each request with ``200 ok``: finds the head's end and skips the body."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            at = buffer.find(b"Content-Length:", 0, end)
            length = int(buffer[at + 15 : buffer.index(b"\r\n", at)]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length :]
            answers += 1
        self.buffer = buffer
        if answers and self.transport is not None:
            self.transport.write(ANSWER * answers)


async def server_role() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Answerer, "127.0.0.1", 0, backlog=256)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    await stdin.read()  # until the benchmark closes our stdin
    server.close()


# ---------------------------------------------------------------- the clients


async def lean_client(url: str, body: bytes, headers: dict[str, str], concurrency: int) -> Any:
    client = WebhookClient(timeout=10.0, concurrency=concurrency)

    async def post() -> int:
        status, _ = await client.post(url, body, headers)
        return status

    return post, client.close


async def aiohttp_client(url: str, body: bytes, headers: dict[str, str], concurrency: int) -> Any:
    import aiohttp  # only for this comparison: the gateway no longer uses it

    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=10.0),
        connector=aiohttp.TCPConnector(limit=concurrency),
        headers={"User-Agent": "tresen-gateway"},
    )

    async def post() -> int:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
            return r.status

    return post, session.close


CLIENTS = {"lean": lean_client, "aiohttp": aiohttp_client}


async def phase(post: Post, concurrency: int, seconds: float, warmup: float) -> tuple[int, float]:
    """Posts for ``warmup`` then ``seconds``; returns (posts, CPU seconds) of the measured span."""
    posts = 0
    end = time.perf_counter() + warmup + seconds

    async def worker() -> None:
        nonlocal posts
        while time.perf_counter() < end:
            status = await post()
            if status != 200:
                raise RuntimeError(f"the server answered {status}")
            posts += 1

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    posts0, cpu0 = posts, time.process_time()
    await asyncio.gather(*workers)
    return posts - posts0, time.process_time() - cpu0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--role", "server",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = json.loads(await server.stdout.readline())["port"]
        url = f"http://127.0.0.1:{port}/hook"
        payload = {"object": "whatsapp_business_account", "entry": ""}
        payload["entry"] = "x" * max(0, args.body_bytes - len(signer.encode(payload)))
        body = signer.encode(payload).encode()
        headers = {
            "Content-Type": "application/json",
            signer.HEADER: signer.sign("an app secret", body),
        }
        clients = [c.strip() for c in args.clients.split(",") if c.strip()]
        if "aiohttp" in clients and importlib.util.find_spec("aiohttp") is None:
            log("aiohttp is not installed: measuring the lean client alone")
            clients.remove("aiohttp")
        phases: list[dict[str, Any]] = []
        for round_ in range(1, args.rounds + 1):
            for name in clients:
                post, close = await CLIENTS[name](url, body, headers, args.concurrency)
                server_cpu0 = cpu_seconds(server.pid)
                try:
                    posts, cpu = await phase(post, args.concurrency, args.seconds, args.warmup)
                finally:
                    await close()
                server_cpu = cpu_seconds(server.pid) - server_cpu0
                figures = {
                    "client": name,
                    "round": round_,
                    "posts": posts,
                    "posts_per_second": round(posts / args.seconds),
                    "cpu_us_per_post": round(cpu / max(posts, 1) * 1e6, 1),
                    "server_cpu_us_per_post": round(server_cpu / max(posts, 1) * 1e6, 1),
                }
                phases.append(figures)
                log(json.dumps(figures))
        medians = {
            name: statistics.median(p["cpu_us_per_post"] for p in phases if p["client"] == name)
            for name in clients
        }
        result: dict[str, Any] = {
            "params": vars(args) | {"body_bytes": len(body)},
            "phases": phases,
            "cpu_us_per_post": medians,
        }
        if "lean" in medians and "aiohttp" in medians:
            result["lean_vs_aiohttp"] = round(medians["lean"] / medians["aiohttp"], 3)
        return result
    finally:
        assert server.stdin is not None
        server.stdin.close()
        await server.wait()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=3.0, help="measured time of each phase")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured start of each phase")
    p.add_argument("--rounds", type=int, default=2, help="phases per client, interleaved")
    p.add_argument("--concurrency", type=int, default=16, help="posts in flight")
    p.add_argument("--body-bytes", type=int, default=700, help="size of the posted body")
    p.add_argument("--clients", default="aiohttp,lean", help="which, in turn: aiohttp,lean")
    p.add_argument("--role", default="main", choices=["main", "server"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = {c.strip() for c in args.clients.split(",")} - set(CLIENTS) - {""}
    if unknown:
        p.error(f"unknown clients: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role == "server":
        uvloop.run(server_role())
        return
    print(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()

"""Relay benchmark: throughput, receipts, latency at fixed rates, memory per idle connection.

Runs ``python -m tresen serve`` as a separate process on each backend (SQLite, PostgreSQL) and
drives it from this process with a lean load generator: picows WebSockets on uvloop, frames
encoded with msgspec (one pre-encoded ``send`` template per pair, patched in place).

Phases, per backend:

1. register the devices in-process against the fresh database (the relay's own services, a
   capturing code sender), then start the relay subprocess on that database;
2. ``deliver``: N sender/receiver pairs, each sender keeping up to ``--window`` envelopes in
   flight (sent, not yet 'sent'-acked); messages per second counted at the receivers;
3. ``receipt``: the same load; a message counts when its 'delivered' receipt is back at the
   sender (the relay generates one for every acknowledged message);
4. ``latency``: the pairs paced to a fixed total rate; latency is from writing the send frame to
   the receiver decoding the Deliver item (the send time travels in the 200-byte body);
5. ``idle``: connect 2,000 then 8,000 idle devices (hello/welcome done), read the relay's RSS at
   each, report the slope in KB per connection.

Every phase ends by draining: each envelope must be 'sent'-acked, delivered exactly once and in
order, and receipted, with no error frame; a phase that fails that reports no figure.

Progress goes to stderr; the last line on stdout is one JSON object of the figures.
Run: ``.venv/bin/python bench/relay.py --seconds 10`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import secrets
import shlex
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import psutil
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from tresen.config import load
from tresen.protocol.codec import server_codec
from tresen.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    Deliver,
    Error,
    Hello,
    Send,
    Sent,
    ServerFrame,
    Welcome,
)
from tresen.relay.accounts.senders import MemorySender
from tresen.relay.app import build_services, close_services

SUBPROTOCOL = f"tresen.v{PROTOCOL_VERSION}.msgpack"
BINARY = WSMsgType.BINARY
ENCODE = msgspec.msgpack.Encoder().encode
DECODE = msgspec.msgpack.Decoder(ServerFrame).decode  # type: ignore[var-annotated]
#: the first bytes of every body: send time (perf_counter_ns) and the pair's message number
STAMP = struct.Struct("<qQ")
ID_LEN = 16
NEVER = 1 << 62
#: the pacer's period: libuv timers have millisecond resolution (less would busy-loop)
TICK = 0.001
PHASES = ("deliver", "receipt", "latency", "idle")

#: measured earlier on this machine (see the issue); not run by this script
PEERS: dict[str, dict[str, Any]] = {
    "ejabberd 23.01": {
        "deliver_msgs_per_s": 13_500,
        "receipt_msgs_per_s": 7_300,
        "latency_ms": {"5000": {"p99": 4.4}},
        "rss_kb_per_idle_conn": 63,
        "note": "delivered to online users without persisting",
    },
    "prosody 0.12": {"deliver_msgs_per_s": 4_100, "rss_kb_per_idle_conn": 35},
}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class BenchFailure(Exception):
    """A phase did not complete correctly: its figures must not be reported."""


# ---------------------------------------------------------------- devices and the relay


@dataclass(frozen=True, slots=True)
class Device:
    account: int
    device: int
    token: str


async def register_devices(db: str, count: int) -> list[Device]:
    """Register ``count`` one-device accounts through the relay's own account service.

    SQLite runs with ``synchronous=normal`` for this setup only (the relay runs with ``full``);
    each device gets its own rate-limit address so the limiter's count stays small.
    """
    settings = load(
        environ={},
        overrides={
            "db": db,
            "sqlite_synchronous": "normal",
            "code_attempts_per_address_per_hour": 100_000_000,
            "postgres_pool_size": 20,
        },
    )
    codes = MemorySender()
    services = await build_services(settings, code_sender=codes)
    accounts = services.accounts
    gate = asyncio.Semaphore(20)

    async def one(i: int) -> Device:
        async with gate:
            sent = await accounts.do_send_code(f"+49151{i:08d}", f"bench-{i}")
            creds = await accounts.do_register(
                sent.phone, codes.codes.pop(sent.phone), f"bench {i}", False
            )
            return Device(creds.account_id, creds.device_id, creds.token)

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await close_services(services)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Relay:
    """``python -m tresen serve`` as a child process, with the bench's rate limits lifted."""

    def __init__(
        self, db: str, workdir: Path, synchronous: str = "full", prefix: Sequence[str] = ()
    ) -> None:
        self.db = db
        self.prefix = list(prefix)  # e.g. valgrind: the relay runs under it
        self.port = free_port()
        self.logfile = workdir / f"relay-{self.port}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None
        self.synchronous = synchronous

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        env = {
            **os.environ,
            "TRESEN_FRAMES_PER_SECOND": "1000000",
            "TRESEN_FRAME_BURST": "1000000",
            # every bench client comes from 127.0.0.1: lift the per-address limits too
            "TRESEN_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
            "TRESEN_FRAMES_PER_SECOND_PER_ADDRESS": "100000000",
            "TRESEN_FRAME_BURST_PER_ADDRESS": "100000000",
            "TRESEN_CODE_ATTEMPTS_PER_ADDRESS_PER_HOUR": "100000000",
            "TRESEN_SQLITE_SYNCHRONOUS": self.synchronous,
        }
        env.pop("TRESEN_CONFIG", None)
        command = [*self.prefix, sys.executable, "-m", "tresen", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--db", self.db, "--log-level", "warning"]
        with self.logfile.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + (60 if not self.prefix else 900)  # valgrind: slow start
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise BenchFailure(f"the relay exited at startup:\n{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return
        raise BenchFailure(f"the relay did not listen within 60 s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def alive(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            raise BenchFailure(f"the relay died:\n{self.log_tail()}")

    def cpu(self) -> float:
        assert self.ps is not None
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# ---------------------------------------------------------------- the load generator


class Counters:
    """Everything the listeners count; one instance per backend run."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.delivered = 0
        self.receipts = 0
        self.sent_acked = 0
        self.errors: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.closes = 0
        #: closed loop: refill the window on every 'sent'; paced: send only the backlog
        self.closed_loop = False
        self.sending = False
        #: record the latency of messages stamped in [lat_from, lat_until) (perf_counter_ns)
        self.latencies: list[int] = []
        self.lat_from = NEVER
        self.lat_until = NEVER

    def problems(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.errors:
            found["error_frames"] = dict(self.errors)
        if self.unexpected:
            found["unexpected"] = dict(self.unexpected)
        if self.closes:
            found["connections_lost"] = self.closes
        return found


class Peer(WSListener):
    """One device's WebSocket: hello on connect, then the frames of its role."""

    def __init__(self, counters: Counters, device: Device) -> None:
        self.c = counters
        self.device = device
        self.transport: WSTransport | None = None
        self.welcome: asyncio.Future[Welcome] = asyncio.get_running_loop().create_future()
        self.leaving = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        hello = Hello(token=self.device.token, agent="tresen-bench")
        transport.send(BINARY, ENCODE(hello))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not BINARY:
            if frame.msg_type is WSMsgType.CLOSE:
                if not self.leaving:
                    self.c.unexpected[f"close {frame.get_close_code()}"] += 1
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        msg = DECODE(frame.get_payload_as_bytes())
        if type(msg) is Deliver:
            self.on_deliver(msg)
        elif type(msg) is Sent:
            self.on_sent(msg)
        elif type(msg) is Error:
            self.c.errors[msg.code] += 1
            if not self.welcome.done():
                self.welcome.set_exception(BenchFailure(f"hello refused: {msg.code}"))
        elif type(msg) is Welcome:
            if not self.welcome.done():
                self.welcome.set_result(msg)
        else:
            self.c.unexpected[type(msg).__name__] += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.leaving:
            self.c.closes += 1
        if not self.welcome.done():
            self.welcome.set_exception(BenchFailure("disconnected before welcome"))

    def on_deliver(self, msg: Deliver) -> None:
        self.c.unexpected["deliver"] += len(msg.items)
        self.ack(msg)

    def on_sent(self, msg: Sent) -> None:
        self.c.unexpected["sent"] += len(msg.ids)

    def ack(self, msg: Deliver) -> None:
        assert self.transport is not None
        self.transport.send(BINARY, ENCODE(Ack(upto=msg.items[-1].seq)))

    def leave(self) -> None:
        self.leaving = True
        if self.transport is not None:
            self.transport.disconnect()


class Pair:
    """A sender and a receiver device; the sender sends only to the receiver's account."""

    __slots__ = (
        "backlog",
        "body_at",
        "buf",
        "delivered",
        "expect",
        "id_at",
        "in_flight",
        "next_n",
        "receipts",
        "receiver",
        "sender",
        "sent_acked",
    )

    def __init__(self, sender: Device, receiver: Device, body_bytes: int) -> None:
        self.sender: SenderPeer | None = None
        self.receiver: ReceiverPeer | None = None
        template = ENCODE(
            Send(
                id="#" * ID_LEN,
                to=receiver.account,
                payloads={receiver.device: b"\xa5" * body_bytes},
            )
        )
        self.id_at = template.index(b"#" * ID_LEN)
        self.body_at = template.index(b"\xa5" * body_bytes)
        self.buf = bytearray(template)
        self.next_n = 0  # messages written (the next message's number)
        self.in_flight = 0  # written, not yet 'sent'-acked
        self.sent_acked = 0
        self.backlog = 0  # paced: due but the window was full
        self.delivered = 0
        self.receipts = 0
        self.expect = 0  # the receiver's next message number

    def send(self) -> None:
        n = self.next_n
        self.next_n = n + 1
        self.in_flight += 1
        buf = self.buf
        buf[self.id_at : self.id_at + ID_LEN] = b"%016d" % n
        STAMP.pack_into(buf, self.body_at, time.perf_counter_ns(), n)
        assert self.sender is not None and self.sender.transport is not None
        self.sender.transport.send(BINARY, buf)

    def settled(self) -> bool:
        n = self.next_n
        return self.backlog == 0 and self.sent_acked == n and self.delivered == n == self.receipts


class SenderPeer(Peer):
    def __init__(self, counters: Counters, device: Device, pair: Pair) -> None:
        super().__init__(counters, device)
        self.pair = pair

    def on_sent(self, msg: Sent) -> None:
        pair, c = self.pair, self.c
        k = len(msg.ids)
        pair.in_flight -= k
        pair.sent_acked += k
        c.sent_acked += k
        window = c.window
        if pair.backlog:
            while pair.backlog and pair.in_flight < window:
                pair.backlog -= 1
                pair.send()
        elif c.closed_loop and c.sending:
            while pair.in_flight < window:
                pair.send()

    def on_deliver(self, msg: Deliver) -> None:
        k = 0
        for item in msg.items:
            if item.kind == "delivered":
                k += 1
            else:
                self.c.unexpected[f"sender got {item.kind}"] += 1
        self.pair.receipts += k
        self.c.receipts += k
        self.ack(msg)


class ReceiverPeer(Peer):
    def __init__(self, counters: Counters, device: Device, pair: Pair, sender: Device) -> None:
        super().__init__(counters, device)
        self.pair = pair
        self.from_account = sender.account

    def on_deliver(self, msg: Deliver) -> None:
        now = time.perf_counter_ns()
        pair, c = self.pair, self.c
        lat_from, lat_until, latencies = c.lat_from, c.lat_until, c.latencies
        k = 0
        for item in msg.items:
            if item.kind != "message" or item.sender != self.from_account:
                c.unexpected[f"receiver got {item.kind} from {item.sender}"] += 1
                continue
            stamp, n = STAMP.unpack_from(item.body)
            if n != pair.expect:
                c.unexpected["out of order or duplicate"] += 1
            pair.expect = n + 1
            if lat_from <= stamp < lat_until:
                latencies.append(now - stamp)
            k += 1
        pair.delivered += k
        c.delivered += k
        self.ack(msg)


async def connect_all(
    url: str, make: Sequence[Callable[[], Peer]], *, concurrency: int = 64
) -> list[Peer]:
    """Open a WebSocket per factory, hello each, and wait for every welcome."""
    gate = asyncio.Semaphore(concurrency)
    headers = {"Sec-WebSocket-Protocol": SUBPROTOCOL}

    async def one(factory: Callable[[], Peer]) -> Peer:
        async with gate:
            try:
                transport, peer = await ws_connect(
                    factory, url, extra_headers=headers, websocket_handshake_timeout=30
                )
            except Exception as exc:
                raise BenchFailure(f"cannot connect to {url}: {exc!r}") from exc
            assert isinstance(peer, Peer)
            chosen = transport.response.headers.get("Sec-WebSocket-Protocol")
            if chosen != SUBPROTOCOL:
                raise BenchFailure(f"the relay chose subprotocol {chosen!r}")
            try:
                await asyncio.wait_for(peer.welcome, 30)
            except TimeoutError:
                raise BenchFailure("no welcome within 30 s") from None
            return peer

    return list(await asyncio.gather(*(one(f) for f in make)))


# ---------------------------------------------------------------- phases


def machine_busy() -> float:
    """Seconds of CPU the whole machine spent busy (all processes and the kernel's workers, such
    as the one that runs the relay's WAL flushes), from /proc/stat; 0 where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall time and CPU of this process, of the relay and of the machine between start() and
    stop()."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    @staticmethod
    def own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self.t0, self.cpu0, self.relay0 = time.perf_counter(), self.own_cpu(), self.relay.cpu()
        self.machine0 = machine_busy()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        return {
            "wall_s": round(wall, 3),
            "loadgen_cpu_pct": round(100 * (self.own_cpu() - self.cpu0) / wall, 1),
            "relay_cpu_pct": round(100 * (self.relay.cpu() - self.relay0) / wall, 1),
            # every process on the machine, neighbours included: compare runs side by side only
            "machine_cpu_pct": round(100 * (machine_busy() - self.machine0) / wall, 1),
        }


async def drain(pairs: list[Pair], c: Counters, relay: Relay, timeout: float = 30.0) -> float:
    """Wait until every envelope is 'sent'-acked, delivered and receipted; return the time."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while not all(p.settled() for p in pairs):
        relay.alive()
        if c.closes or c.errors:
            break
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.02)
    waited = time.perf_counter() - t0
    unsettled = [p for p in pairs if not p.settled()]
    if unsettled or c.problems():
        p = unsettled[0] if unsettled else pairs[0]
        raise BenchFailure(
            f"not drained after {waited:.1f} s: {len(unsettled)} pairs unsettled (e.g. written "
            f"{p.next_n}, sent-acked {p.sent_acked}, delivered {p.delivered}, receipts "
            f"{p.receipts}, backlog {p.backlog}); problems: {c.problems()}"
        )
    return waited


async def closed_loop(
    pairs: list[Pair], c: Counters, relay: Relay, seconds: float, warmup: float, count: str
) -> dict[str, Any]:
    """Every sender keeps its window full; count messages at receivers or receipts at senders."""
    written0 = sum(p.next_n for p in pairs)
    c.closed_loop = c.sending = True
    for pair in pairs:
        while pair.in_flight < c.window:
            pair.send()
    await asyncio.sleep(warmup)
    meter = Meter(relay)

    def counted() -> int:
        return c.delivered if count == "deliver" else c.receipts

    n0 = counted()
    meter.start()
    await asyncio.sleep(seconds)
    n1 = counted()
    usage = meter.stop()
    c.sending = c.closed_loop = False
    drained = await drain(pairs, c, relay)
    written = sum(p.next_n for p in pairs) - written0
    rate = (n1 - n0) / usage["wall_s"]
    return {
        "msgs_per_s": round(rate),
        "counted": n1 - n0,
        "messages_total": written,
        "drain_s": round(drained, 2),
        **usage,
    }


async def paced(
    pairs: list[Pair], c: Counters, relay: Relay, rate: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """Send ``rate`` messages per second in total, round-robin over the pairs."""
    written0 = sum(p.next_n for p in pairs)
    c.latencies = []
    deferred = 0
    meter = Meter(relay)
    t0 = time.perf_counter()
    measure_at, end = t0 + warmup, t0 + warmup + seconds
    due_total = 0
    i = 0
    n_pairs = len(pairs)
    measuring = False
    delivered0 = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if not measuring and now >= measure_at:
            measuring = True
            c.lat_from = time.perf_counter_ns()
            delivered0 = c.delivered
            meter.start()
        due = int((now - t0) * rate) - due_total
        for _ in range(due):
            pair = pairs[i]
            i = (i + 1) % n_pairs
            if pair.in_flight < c.window and not pair.backlog:
                pair.send()
            else:
                pair.backlog += 1
                deferred += 1
        due_total += due
        await asyncio.sleep(TICK)
    if not measuring:
        raise BenchFailure("the paced phase ended before its measured window began")
    c.lat_until = time.perf_counter_ns()
    delivered1 = c.delivered
    usage = meter.stop()
    drained = await drain(pairs, c, relay)
    samples = sorted(c.latencies)
    c.latencies, c.lat_from, c.lat_until = [], NEVER, NEVER
    written = sum(p.next_n for p in pairs) - written0
    if not samples:
        raise BenchFailure(f"no latency samples at {rate}/s")

    def pct(q: float) -> float:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))] / 1e6, 3)

    delivered_rate = (delivered1 - delivered0) / usage["wall_s"]
    return {
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": round(samples[-1] / 1e6, 3),
        "mean": round(statistics.fmean(samples) / 1e6, 3),
        "samples": len(samples),
        "target_msgs_per_s": rate,
        "delivered_msgs_per_s": round(delivered_rate),
        # the relay did not keep up: the rate fell short, or senders waited for their window
        "saturated": delivered_rate < 0.97 * rate or deferred > 0.01 * written,
        "deferred_window_full": deferred,
        "messages_total": written,
        "drain_s": round(drained, 2),
        **usage,
    }


async def sample_rss(relay: Relay, settle: float = 1.0) -> int:
    await asyncio.sleep(settle)
    samples = []
    for _ in range(3):
        samples.append(relay.rss())
        await asyncio.sleep(0.3)
    return int(statistics.median(samples))


async def idle_phase(
    devices: list[Device], steps: list[int], relay: Relay, c: Counters
) -> dict[str, Any]:
    """Connect idle devices in steps; the relay's RSS at each and the slope between them."""
    peers: list[Peer] = []
    points: list[dict[str, Any]] = [
        {"connections": 0, "rss_mb": round(await sample_rss(relay) / 2**20, 1)}
    ]
    rss_at: dict[int, int] = {}
    try:
        for target in steps:
            batch = devices[len(peers) : target]
            t0 = time.perf_counter()
            peers += await connect_all(relay.url, [_idle_factory(c, d) for d in batch])
            took = time.perf_counter() - t0
            relay.alive()
            rss = await sample_rss(relay)
            rss_at[target] = rss
            points.append(
                {
                    "connections": target,
                    "rss_mb": round(rss / 2**20, 1),
                    "connect_per_s": round(len(batch) / took),
                }
            )
            log(f"  {target:>6} idle connections: relay RSS {rss / 2**20:.1f} MB ({took:.1f} s)")
        if c.problems():
            raise BenchFailure(f"idle connections had problems: {c.problems()}")
    finally:
        for peer in peers:
            peer.leave()
    lo, hi = steps[0], steps[-1]
    slope = (rss_at[hi] - rss_at[lo]) / (hi - lo) / 1024
    return {"rss_kb_per_idle_conn": round(slope, 1), "points": points}


def _idle_factory(c: Counters, device: Device) -> Callable[[], Peer]:
    return lambda: Peer(c, device)


# ---------------------------------------------------------------- one backend


@dataclass
class Options:
    seconds: float
    warmup: float
    pairs: int
    window: int
    body_bytes: int
    rates: list[int]
    idle: list[int]
    phases: list[str]
    workdir: Path
    relay_prefix: Sequence[str] = ()


async def run_backend(name: str, db: str, opts: Options) -> dict[str, Any]:
    result: dict[str, Any] = {"db": db}
    load_phases = [p for p in opts.phases if p != "idle"]
    idle = opts.idle if "idle" in opts.phases else []
    n_pair_devices = 2 * opts.pairs if load_phases else 0
    total = n_pair_devices + max(idle, default=0)
    t0 = time.perf_counter()
    devices = await register_devices(db, total)
    took = time.perf_counter() - t0
    result["setup"] = {"devices_registered": total, "register_s": round(took, 1)}
    log(f"[{name}] registered {total} devices in {took:.1f} s")

    synchronous = "normal" if name == "sqlite-normal" else "full"
    relay = Relay(db, opts.workdir, synchronous, opts.relay_prefix)
    await relay.start()
    result["setup"]["relay_rss_mb_at_start"] = round(relay.rss() / 2**20, 1)
    log(f"[{name}] relay pid {relay.pid} on port {relay.port}")
    phases: dict[str, Any] = {}
    failures: dict[str, str] = {}
    result["phases"], result["failures"] = phases, failures
    try:
        if load_phases:
            await run_load(
                name, devices[:n_pair_devices], load_phases, relay, opts, phases, failures
            )
        if idle:
            log(f"[{name}] idle: connecting {', '.join(map(str, idle))} devices ...")
            try:
                phases["idle"] = await idle_phase(
                    devices[n_pair_devices:], idle, relay, Counters(opts.window)
                )
                log(f"[{name}] idle: {phases['idle']['rss_kb_per_idle_conn']} KB per connection")
            except BenchFailure as exc:
                failures["idle"] = str(exc)
                log(f"[{name}] idle FAILED: {exc}")
            await asyncio.sleep(0.5)
        result["setup"]["relay_rss_mb_at_end"] = round(relay.rss() / 2**20, 1)
    finally:
        t0 = time.perf_counter()
        await relay.stop()
        log(f"[{name}] relay stopped in {time.perf_counter() - t0:.1f} s")
    result.update(_figures(phases))
    return result


async def run_load(
    name: str,
    devices: list[Device],
    wanted: list[str],
    relay: Relay,
    opts: Options,
    phases: dict[str, Any],
    failures: dict[str, str],
) -> None:
    """Connect the pairs and run the load phases in order; stop at the first failure."""
    c = Counters(opts.window)
    pairs = [Pair(s, r, opts.body_bytes) for s, r in zip(devices[::2], devices[1::2], strict=True)]
    _check_template(pairs[0], opts.body_bytes)
    factories: list[Callable[[], Peer]] = []
    for pair, s, r in zip(pairs, devices[::2], devices[1::2], strict=True):
        factories.append(_sender_factory(c, s, pair))
        factories.append(_receiver_factory(c, r, pair, s))
    peers = await connect_all(relay.url, factories)
    for peer in peers:
        if isinstance(peer, SenderPeer):
            peer.pair.sender = peer
        elif isinstance(peer, ReceiverPeer):
            peer.pair.receiver = peer
    log(f"[{name}] {opts.pairs} pairs connected")

    runs: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = []
    for kind in ("deliver", "receipt"):
        if kind in wanted:
            args = (pairs, c, relay, opts.seconds, opts.warmup, kind)
            runs.append((kind, functools.partial(closed_loop, *args)))
    if "latency" in wanted:
        for rate in opts.rates:
            args = (pairs, c, relay, rate, opts.seconds, opts.warmup)
            runs.append((f"latency_{rate}", functools.partial(paced, *args)))
    try:
        for phase, run in runs:
            log(f"[{name}] {phase}: {opts.seconds:g} s (+{opts.warmup:g} s warm-up) ...")
            try:
                phases[phase] = figures = await run()
            except BenchFailure as exc:
                failures[phase] = str(exc)
                log(f"[{name}] {phase} FAILED: {exc}")
                return  # the pairs' counts no longer line up: later load phases would fail too
            log(f"[{name}] {phase}: {_brief(figures)}")
    finally:
        for peer in peers:
            peer.leave()
        await asyncio.sleep(0.5)


def _sender_factory(c: Counters, device: Device, pair: Pair) -> Callable[[], Peer]:
    return lambda: SenderPeer(c, device, pair)


def _receiver_factory(
    c: Counters, device: Device, pair: Pair, sender: Device
) -> Callable[[], Peer]:
    return lambda: ReceiverPeer(c, device, pair, sender)


def _check_template(pair: Pair, body_bytes: int) -> None:
    """The patched template must decode as the relay decodes it."""
    frame = server_codec("msgpack").decode(bytes(pair.buf))
    assert isinstance(frame, Send) and len(frame.id) == ID_LEN
    assert [len(b) for b in frame.payloads.values()] == [body_bytes]


def _brief(figures: dict[str, Any]) -> str:
    if "p99" in figures:
        head = f"p50 {figures['p50']} ms, p99 {figures['p99']} ms"
        head += f" at {figures['delivered_msgs_per_s']}/s"
    else:
        head = f"{figures['msgs_per_s']} msgs/s"
    return (
        f"{head}; loadgen CPU {figures['loadgen_cpu_pct']}%, relay CPU {figures['relay_cpu_pct']}%"
    )


def _figures(phases: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, from the phases that completed (None for the rest)."""
    out: dict[str, Any] = {
        "deliver_msgs_per_s": phases.get("deliver", {}).get("msgs_per_s"),
        "receipt_msgs_per_s": phases.get("receipt", {}).get("msgs_per_s"),
        "latency_ms": {
            name.removeprefix("latency_"): {
                "p50": f["p50"],
                "p99": f["p99"],
                "achieved_msgs_per_s": f["delivered_msgs_per_s"],
                "saturated": f["saturated"],
            }
            for name, f in phases.items()
            if name.startswith("latency_")
        },
        "rss_kb_per_idle_conn": phases.get("idle", {}).get("rss_kb_per_idle_conn"),
        "loadgen_cpu_pct": {n: f["loadgen_cpu_pct"] for n, f in phases.items() if "wall_s" in f},
        "relay_cpu_pct": {n: f["relay_cpu_pct"] for n, f in phases.items() if "wall_s" in f},
    }
    ejabberd = PEERS["ejabberd 23.01"]
    ratios: dict[str, float | None] = {}
    for key in ("deliver_msgs_per_s", "receipt_msgs_per_s", "rss_kb_per_idle_conn"):
        ratios[key] = _ratio(out[key], ejabberd[key])
    p99 = out["latency_ms"].get("5000", {}).get("p99")
    ratios["latency_ms_5000_p99"] = _ratio(p99, ejabberd["latency_ms"]["5000"]["p99"])
    out["vs_ejabberd"] = ratios
    return out


def _ratio(ours: float | None, theirs: float) -> float | None:
    return None if ours is None else round(ours / theirs, 2)


# ---------------------------------------------------------------- databases


@contextlib.asynccontextmanager
async def fresh_database(backend: str, workdir: Path, pg_admin: str) -> Any:
    if backend.startswith("sqlite"):
        yield f"sqlite:///{workdir}/relay-{secrets.token_hex(4)}.db"
        return
    name = f"tresen_bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_admin)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield pg_admin.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(pg_admin)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# ---------------------------------------------------------------- main


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"RLIMIT_NOFILE hard limit {hard} < {needed} needed: raise it (ulimit -Hn)"
        )
    target = needed if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=10.0, help="measured time of each load phase")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured start of each phase")
    p.add_argument("--pairs", type=int, default=50, help="sender/receiver pairs")
    p.add_argument("--window", type=int, default=10, help="envelopes in flight per pair")
    p.add_argument("--body-bytes", type=int, default=200, help="ciphertext bytes per envelope")
    p.add_argument("--rates", type=csv_ints, default=[1000, 5000], help="paced rates, msgs/s")
    p.add_argument("--idle", type=csv_ints, default=[2000, 8000], help="idle connection steps")
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"which of {','.join(PHASES)} to run (in that order)",
    )
    p.add_argument(
        "--backends",
        default="sqlite,postgres",
        help="any of sqlite (synchronous=full: fsync per commit, the default), sqlite-normal "
        "(synchronous=normal: survives a process crash, not a power cut), postgres",
    )
    p.add_argument(
        "--pg-admin",
        default=os.environ.get("TRESEN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="DSN used to create and drop the bench's fresh PostgreSQL database",
    )
    p.add_argument("--workdir", type=Path, default=None, help="where SQLite files and logs go")
    p.add_argument(
        "--relay-prefix",
        default="",
        help="run the relay under this command, e.g. 'valgrind --tool=callgrind "
        "--callgrind-out-file=relay.cg' to count its instructions (bench/README.md)",
    )
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = set(backends) - {"sqlite", "sqlite-normal", "postgres"}
    if bad or not backends:
        p.error(f"--backends takes sqlite, sqlite-normal and/or postgres, not {sorted(bad)}")
    if len(args.idle) == 1 or (args.idle and args.idle != sorted(args.idle)):
        p.error("--idle takes at least two ascending steps (or none: --idle '')")
    if args.body_bytes < STAMP.size:
        p.error(f"--body-bytes must be at least {STAMP.size}")
    args.backends = backends
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    if set(args.phases) - set(PHASES) or not args.phases:
        p.error(f"--phases takes some of {','.join(PHASES)}")
    if args.warmup is None:
        args.warmup = min(1.0, args.seconds / 5)
    return args


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    opts = Options(
        seconds=args.seconds,
        warmup=args.warmup,
        pairs=args.pairs,
        window=args.window,
        body_bytes=args.body_bytes,
        rates=args.rates,
        idle=args.idle,
        phases=args.phases,
        workdir=workdir,
        relay_prefix=shlex.split(args.relay_prefix),
    )
    out: dict[str, Any] = {}
    for backend in args.backends:
        log(f"[{backend}] starting")
        async with fresh_database(backend, workdir, args.pg_admin) as db:
            try:
                out[backend] = await run_backend(backend, db, opts)
            except BenchFailure as exc:
                log(f"[{backend}] FAILED: {exc}")
                out[backend] = {"db": db, "failures": {"setup": str(exc)}}
    return out


def summary(results: dict[str, Any], backends: list[str]) -> None:
    """A table of the headline figures beside the peers', on stderr."""
    ej, pr = PEERS["ejabberd 23.01"], PEERS["prosody 0.12"]
    rows: list[tuple[str, list[Any], Any, Any]] = []
    for label, key in (
        ("delivered msgs/s", "deliver_msgs_per_s"),
        ("receipted msgs/s", "receipt_msgs_per_s"),
        ("KB per idle conn", "rss_kb_per_idle_conn"),
    ):
        rows.append((label, [results[b].get(key) for b in backends], ej.get(key), pr.get(key)))
    rates = {r for b in backends for r in results[b].get("latency_ms", {})}
    for rate in sorted(rates, key=int):
        for q in ("p50", "p99"):
            cells = []
            for b in backends:
                lat = results[b].get("latency_ms", {}).get(rate)
                cells.append(None if lat is None else f"{lat[q]}{'*' if lat['saturated'] else ''}")
            theirs = ej["latency_ms"].get(rate, {}).get(q)
            rows.append((f"latency {q} @{rate}/s ms", cells, theirs, None))
    print(
        f"{'':24}" + "".join(f"{x:>12}" for x in [*backends, "ejabberd", "prosody"]),
        file=sys.stderr,
    )
    for label, cells, theirs, prosody in rows:
        line = "".join(f"{_cell(x):>12}" for x in [*cells, theirs, prosody])
        print(f"{label:24}{line}", file=sys.stderr)
    print(
        "(* the relay did not sustain that rate; peers: reference, not run here)", file=sys.stderr
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_fd_limit(max(args.idle, default=0) + 2 * args.pairs + 256)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="tresen-bench-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(main_async(args, workdir))
    failed = {b: r["failures"] for b, r in results.items() if r.get("failures")}
    results["peers (reference, not run here)"] = PEERS
    results["params"] = {
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "pairs": args.pairs,
        "window": args.window,
        "body_bytes": args.body_bytes,
        "rates": args.rates,
        "idle_steps": args.idle,
        "backends": args.backends,
        "phases": args.phases,
        "sqlite_synchronous": "sqlite: full (fsync per commit); sqlite-normal: normal",
        "cpus": os.cpu_count(),
        "rlimit_nofile": limit,
        "total_s": round(time.perf_counter() - started, 1),
        "cpu_pct_note": "100 = one core busy; relay and load generator share the machine",
        "vs_ejabberd_note": "tresen/ejabberd: above 1 is better for msgs/s, worse for ms and KB",
    }
    summary(results, args.backends)
    if failed:
        log(f"FAILED phases (their figures are left out): {json.dumps(failed)[:2000]}")
    print(json.dumps(results, separators=(",", ":")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

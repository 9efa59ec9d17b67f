"""Cluster benchmark: tresen on 1, 2 and 3 nodes over PostgreSQL + NATS.

For each node count, on a fresh PostgreSQL database: register the devices, start that many
``python -m tresen serve --bus nats://...`` processes, connect N sender/receiver pairs with the
sender of pair i on node ``i % nodes`` and its receiver on node ``(i + 1) % nodes`` (so with
more than one node every message crosses nodes), and run the closed-loop ``deliver`` phase of
``bench/relay.py`` (each sender keeps ``--window`` envelopes in flight; messages per second
counted at the receivers; every envelope must then be 'sent'-acked, delivered exactly once and
in order, and receipted).

A baseline run first: one node on the in-process bus (``memory://``), where items are pushed
from memory instead of read back from PostgreSQL after a wake-up. All nodes, PostgreSQL, NATS
and the load generator share this machine: the figures show the cost of crossing nodes, not the
capacity of N machines.

Progress goes to stderr; the last line on stdout is one JSON object of the figures.
Run: ``.venv/bin/python bench/cluster.py --seconds 5`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nats
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay as single


async def run_nodes(
    count: int, args: argparse.Namespace, workdir: Path, *, memory: bool = False
) -> dict[str, Any]:
    """``count`` nodes on NATS; ``memory``: one node on the in-process bus (the baseline)."""
    name = f"bench{secrets.token_hex(4)}"
    bus = "memory://" if memory else f"{args.bus.rstrip('/')}/{name}"
    os.environ["TRESEN_BUS"] = bus  # the relay processes inherit it
    result: dict[str, Any] = {"nodes": count, "bus": bus}
    async with single.fresh_database("postgres", workdir, args.pg_admin) as db:
        devices = await single.register_devices(db, 2 * args.pairs)
        relays = [single.Relay(db, workdir) for _ in range(count)]
        try:
            await asyncio.gather(*(r.start() for r in relays))
            single.log(f"[{count} nodes] ports {[r.port for r in relays]}")
            c = single.Counters(args.window)
            pairs = [
                single.Pair(s, r, args.body_bytes)
                for s, r in zip(devices[::2], devices[1::2], strict=True)
            ]
            peers: list[single.Peer] = []
            for i, (pair, s, r) in enumerate(zip(pairs, devices[::2], devices[1::2], strict=True)):
                make_s: Callable[[], single.Peer] = _sender(c, s, pair)
                make_r: Callable[[], single.Peer] = _receiver(c, r, pair, s)
                peers += await single.connect_all(relays[i % count].url, [make_s])
                peers += await single.connect_all(relays[(i + 1) % count].url, [make_r])
            for peer in peers:
                if isinstance(peer, single.SenderPeer):
                    peer.pair.sender = peer
                elif isinstance(peer, single.ReceiverPeer):
                    peer.pair.receiver = peer
            try:
                result.update(await deliver(pairs, c, relays, args.seconds, args.warmup))
                single.log(f"[{count} nodes] {result['msgs_per_s']:,} delivered msgs/s")
            except single.BenchFailure as exc:
                result["failure"] = str(exc)
                single.log(f"[{count} nodes] FAILED: {exc}")
            finally:
                for peer in peers:
                    peer.leave()
                await asyncio.sleep(0.5)
        finally:
            await asyncio.gather(*(r.stop() for r in relays))
    if not memory:
        await drop_streams(args.bus, name)
    return result


async def drop_streams(url: str, name: str) -> None:
    """The run's JetStream streams go with it (they are per namespace)."""
    nc = await nats.connect(url)
    try:
        for kind in ("CONTROL", "PRESENCE"):
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(f"{name.upper()}_{kind}")
    finally:
        await nc.close()


async def deliver(
    pairs: list[single.Pair],
    c: single.Counters,
    relays: list[single.Relay],
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """Closed loop: every sender keeps its window full; count deliveries at the receivers."""
    c.closed_loop = c.sending = True
    for pair in pairs:
        while pair.in_flight < c.window:
            pair.send()
    await asyncio.sleep(warmup)
    cpu0 = [r.cpu() for r in relays]
    n0, t0 = c.delivered, time.perf_counter()
    await asyncio.sleep(seconds)
    n1, wall = c.delivered, time.perf_counter() - t0
    cpu = [
        round(100 * (r.cpu() - before) / wall, 1) for r, before in zip(relays, cpu0, strict=True)
    ]
    c.sending = c.closed_loop = False
    for r in relays:
        r.alive()
    drained = await single.drain(pairs, c, relays[0], timeout=60)
    return {
        "msgs_per_s": round((n1 - n0) / wall),
        "counted": n1 - n0,
        "drain_s": round(drained, 2),
        "node_cpu_pct": cpu,
        "node_rss_mb": [round(r.rss() / 2**20, 1) for r in relays],
    }


def _sender(c: single.Counters, d: single.Device, pair: single.Pair) -> Callable[[], single.Peer]:
    return lambda: single.SenderPeer(c, d, pair)


def _receiver(
    c: single.Counters, d: single.Device, pair: single.Pair, s: single.Device
) -> Callable[[], single.Peer]:
    return lambda: single.ReceiverPeer(c, d, pair, s)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per node count")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured start")
    p.add_argument("--nodes", type=single.csv_ints, default=[1, 2, 3], help="node counts")
    p.add_argument("--pairs", type=int, default=30, help="sender/receiver pairs")
    p.add_argument("--window", type=int, default=10, help="envelopes in flight per pair")
    p.add_argument("--body-bytes", type=int, default=200, help="ciphertext bytes per envelope")
    p.add_argument(
        "--bus",
        default=os.environ.get("TRESEN_BENCH_NATS", "nats://127.0.0.1:4222"),
        help="the NATS server (JetStream on); each run takes a namespace of its own",
    )
    p.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the baseline run: one node on the in-process bus (memory://)",
    )
    p.add_argument(
        "--pg-admin",
        default=os.environ.get("TRESEN_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="DSN used to create and drop each run's fresh PostgreSQL database",
    )
    args = p.parse_args(argv)
    if not args.nodes or min(args.nodes) < 1:
        p.error("--nodes takes positive counts, e.g. 1,2,3")
    if args.body_bytes < single.STAMP.size:
        p.error(f"--body-bytes must be at least {single.STAMP.size}")
    if args.warmup is None:
        args.warmup = min(1.0, args.seconds / 5)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    single.raise_fd_limit(2 * args.pairs + 256)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tresen-cluster-")))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runs = [(f"{n}_nodes", n, False) for n in args.nodes]
            if args.baseline:
                runs.insert(0, ("1_node_memory_bus", 1, True))
            for key, count, memory in runs:
                single.log(f"[{key}] starting")
                try:
                    results[key] = runner.run(run_nodes(count, args, workdir, memory=memory))
                except single.BenchFailure as exc:
                    results[key] = {"nodes": count, "failure": str(exc)}
                    single.log(f"[{key}] FAILED: {exc}")
    failed = [k for k, v in results.items() if "failure" in v]
    results["params"] = {
        "seconds": args.seconds,
        "pairs": args.pairs,
        "window": args.window,
        "body_bytes": args.body_bytes,
        "cpus": os.cpu_count(),
        "total_s": round(time.perf_counter() - started, 1),
        "note": "all nodes, PostgreSQL, NATS and the load generator share this machine",
    }
    for key, value in results.items():
        if key != "params":
            print(f"{key:18} {value.get('msgs_per_s', 'FAILED')!s:>8} msgs/s", file=sys.stderr)
    print(json.dumps(results, separators=(",", ":")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

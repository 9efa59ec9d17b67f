"""Policy benchmark: what the business-policy gate adds to the relay's per-message path.

In-process, on the relay's own services (``build_services``) over a fresh SQLite file (or
PostgreSQL with ``--db postgresql://...``): the envelope service's ``check_send`` is called in a
loop, exactly as the WebSocket calls it for every ``send`` frame, and each resulting write op is
released (not committed), so only the checks are timed. Phases:

- ``p2p_open``: person to person through an envelope service assembled without the policy;
- ``p2p_gate``: the same through the relay's envelope service with the policy gate (the cost
  for person-to-person traffic: a block lookup and a business-set lookup);
- ``gate_screen_p2p``: the gate's synchronous ``screen`` alone for person-to-person traffic
  (the added cost, free of the noise between two whole-path phases);
- ``person_to_business``: a person writing to a business (refreshes the 24 h window);
- ``business_service``: a business's free-form reply inside the window;
- ``business_template``: a business's approved UTILITY template outside the window (consent,
  template, messaging limit, balance, a buffered meter row);
- ``flush``: the batched write of everything the phases buffered (threads, meter rows and as
  many deliveries), per message.

Figures are microseconds per send (mean over the phase) and calls per second, one core.
Progress goes to stderr; the last line on stdout is one JSON object.
Run: ``.venv/bin/python bench/policy.py --seconds 3`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from tresen.config import load
from tresen.protocol.frames import BizMeta, Item, Send
from tresen.relay.accounts.models import Principal
from tresen.relay.accounts.senders import MemorySender
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.app import build_services, close_services
from tresen.relay.business.models import BusinessCreate
from tresen.relay.consent.models import OptIn
from tresen.relay.envelopes.service import EnvelopeService
from tresen.relay.services import Services
from tresen.relay.templates.models import Component, Example, TemplateCreate, TemplateReview


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def register(s: Services, codes: MemorySender, n: int) -> list[Principal]:
    out = []
    for _ in range(n):
        sent = await s.accounts.do_send_code(f"+49151{secrets.randbelow(10**8):08d}", "bench")
        creds = await s.accounts.do_register(sent.phone, codes.codes[sent.phone], "bench", False)
        out.append(Principal(creds.account_id, creds.device_id))
    return out


async def phase(
    name: str, seconds: float, call: Callable[[int], Awaitable[None]]
) -> dict[str, float]:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            await call(n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = time.perf_counter() - start
    result = {"us_per_send": round(elapsed / n * 1e6, 3), "sends_per_s": round(n / elapsed)}
    log(f"{name}: {result['us_per_send']} µs/send, {result['sends_per_s']:,}/s ({n:,} calls)")
    return result


async def run(db: str, seconds: float, people: int) -> dict[str, Any]:
    settings = load(
        environ={},
        overrides={
            "db": db,
            "sqlite_synchronous": "normal",
            "code_attempts_per_address_per_hour": 10**9,
            "business_throughput_per_second": 10**9,
            "business_max_throughput_per_second": 10**9,
            "business_pair_per_second": 10**9,
            "business_pair_burst": 10**9,
            "business_tier_limits": [10**9],
            "business_credit_limit_minor": 10**12,
            "policy_flush_seconds": 3600.0,  # the bench flushes itself, to time it
        },
    )
    codes = MemorySender()
    s = await build_services(settings, code_sender=codes)
    try:
        started = time.perf_counter()
        persons = await register(s, codes, people)
        (shop,) = await register(s, codes, 1)
        await s.business.do_create(
            shop, BusinessCreate(display_name="Bench Shop"), "http://127.0.0.1"
        )
        s.policy.note_business(shop.account_id)
        created = await s.templates.do_create(
            shop,
            TemplateCreate(
                name="receipt",
                language="en_US",
                category="UTILITY",
                components=[
                    Component(
                        type="BODY",
                        text="Your receipt {{1}} is ready.",
                        example=Example(body_text=[["A-1"]]),
                    )
                ],
            ),
        )
        await s.templates.do_review(
            AdminPrincipal(admin_id=None, name="bench"), int(created.id), TemplateReview("APPROVED")
        )
        half = people // 2
        for person in persons[half:]:
            await s.consent.do_opt_in(
                person, shop.account_id, OptIn(categories=["utility"], source="qr")
            )
        log(f"setup: {people + 1} accounts, 1 business in {time.perf_counter() - started:.1f}s")

        open_envelopes = EnvelopeService(s.db, settings, s.clock, s.writer, s.directory, s.groups)
        gated = s.envelopes
        body = b"x" * 200
        results: dict[str, Any] = {}

        def p2p(service: EnvelopeService) -> Callable[[int], Awaitable[None]]:
            async def call(n: int) -> None:
                a, b = persons[n % half], persons[(n + 1) % half]
                frame = Send(id=f"p{n}", to=b.account_id, payloads={b.device_id: body})
                service.release(await service.check_send(a, frame))

            return call

        # warm the device-list and queue-depth caches of both services
        for service in (open_envelopes, gated):
            for n in range(half):
                await p2p(service)(n)
        results["p2p_open"] = await phase("p2p_open", seconds, p2p(open_envelopes))
        results["p2p_gate"] = await phase("p2p_gate", seconds, p2p(gated))

        # the gate's synchronous screen alone, person to person: the cost the policy adds
        screen, calls = s.policy.screen, 0
        pairs = [(persons[n].account_id, persons[(n + 1) % half].account_id) for n in range(half)]
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for a, b in pairs:
                screen(a, b, None)
            calls += len(pairs)
        took = time.perf_counter() - start
        results["gate_screen_p2p"] = {
            "us_per_send": round(took / calls * 1e6, 3),
            "sends_per_s": round(calls / took),
        }
        log(f"gate_screen_p2p: {results['gate_screen_p2p']['us_per_send']} µs/send")

        async def inbound(n: int) -> None:
            person = persons[half + n % (people - half)]
            frame = Send(id=f"i{n}", to=shop.account_id, payloads={shop.device_id: body})
            gated.release(await gated.check_send(person, frame))

        for n in range(people):
            await inbound(n)
        results["person_to_business"] = await phase("person_to_business", seconds, inbound)

        async def reply(n: int) -> None:
            person = persons[half + n % (people - half)]
            frame = Send(
                id=f"s{n}", to=person.account_id, payloads={person.device_id: body}, biz=BizMeta()
            )
            gated.release(await gated.check_send(shop, frame))

        results["business_service"] = await phase("business_service", seconds, reply)
        s.clock.advance(25 * 3600)  # every window closed: templates are business-initiated
        utility = BizMeta(kind="template", category="UTILITY", template="receipt", language="en_US")

        async def initiated(n: int) -> None:
            person = persons[half + n % (people - half)]
            frame = Send(
                id=f"t{n}", to=person.account_id, payloads={person.device_id: body}, biz=utility
            )
            gated.release(await gated.check_send(shop, frame))

        results["business_template"] = await phase("business_template", seconds, initiated)

        gate = s.policy
        for business, envelope, person, *_ in list(gate.meter.sends):
            gate.on_delivered(person, [Item(0, "message", envelope, business, shop.device_id, 0)])
        rows = len(gate.meter.sends) + len(gate.meter.delivered) + len(gate.meter.dirty)
        start = time.perf_counter()
        await gate.flush()
        took = time.perf_counter() - start
        results["flush"] = {
            "rows": rows,
            "seconds": round(took, 3),
            "us_per_row": round(took / max(rows, 1) * 1e6, 3),
        }
        log(f"flush: {rows:,} rows (sends, deliveries, windows) in {took:.2f}s")
        results["added_us_p2p"] = round(
            results["p2p_gate"]["us_per_send"] - results["p2p_open"]["us_per_send"], 3
        )
        results["added_us_business_template"] = round(
            results["business_template"]["us_per_send"] - results["p2p_open"]["us_per_send"], 3
        )
        return results
    finally:
        await close_services(s)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=3.0, help="measured time of each phase")
    p.add_argument("--people", type=int, default=200, help="person accounts")
    p.add_argument(
        "--db",
        default="",
        help="'postgres' for a fresh PostgreSQL database, or a URL (default: an SQLite file)",
    )
    p.add_argument(
        "--pg-admin",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="creates and drops a database for --db postgres",
    )
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.db != "postgres":
        db = args.db or f"sqlite:///{workdir}/bench.db"
        return {"backend": db.split(":", 1)[0], **await run(db, args.seconds, args.people)}
    name = f"tresen_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.pg_admin)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        url = args.pg_admin.rsplit("/", 1)[0] + "/" + name
        return {"backend": "postgresql", **await run(url, args.seconds, args.people)}
    finally:
        admin = await asyncpg.connect(args.pg_admin)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tresen-bench-policy-") as workdir:
        results = asyncio.run(main_async(args, Path(workdir)))
    results["params"] = {"seconds": args.seconds, "people": args.people}
    print(json.dumps(results, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

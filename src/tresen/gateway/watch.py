"""Relay-side changes the business hears about by webhook: template reviews
(``message_template_status_update``) and the quality rating (``phone_number_quality_update``).

The relay tells the number's device of each change (a ``template_status`` or
``quality_update`` notice); the gateway then compares the relay's templates and quality with
what it last saw (``gw_watch``), and also every ``watch_seconds`` in case a notice was missed (a
notice can expire unread while the gateway is down for weeks). Each change is written with its
webhook event in one transaction. A template first seen while still PENDING is only recorded;
one first seen after its review (created elsewhere, or reviewed before the first poll) is
reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tresen.gateway import store
from tresen.gateway.webhooks import payloads
from tresen.storage.engine import Txn

if TYPE_CHECKING:
    from tresen.gateway.service import Gateway, Line

RANK = {"RED": 0, "YELLOW": 1, "GREEN": 2}


async def templates_of(line: Line) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await line.biz.templates(after=after, limit=500)
        found.extend(page)
        if len(page) < 500:
            return found
        after = int(page[-1]["id"])


async def do_poll(gw: Gateway, line: Line) -> int:
    """Compare the relay's templates and quality with the last poll; returns events queued."""
    async with line.watching:
        return await _compare(gw, line)


async def _compare(gw: Gateway, line: Line) -> int:
    number = line.number
    templates = await templates_of(line)
    account = await line.biz.account()
    quality = str(account.get("quality") or "NA").upper()
    tier = str(account.get("tier") or "")

    async def write(txn: Txn) -> int:
        seen = await store.watched(txn, number.id)
        events = 0
        for t in templates:
            key, status = f"template:{t['id']}", str(t["status"])
            before = seen.get(key)
            if before == status:
                continue
            await store.set_watched(txn, number.id, key, status)
            if before is None and status == "PENDING":
                continue
            event = payloads.template_status(
                number,
                template_id=int(t["id"]),
                name=str(t["name"]),
                language=str(t["language"]),
                category=str(t["category"]),
                event=status,
                reason=str(t.get("reason") or ""),
                time_ms=gw.now_ms(),
            )
            await gw.outbox.add_in(txn, number.id, f"{number.id}:templates", event)
            events += 1
        before = seen.get("quality")
        if before != quality:
            await store.set_watched(txn, number.id, "quality", quality)
            if before is not None:
                change = "UPGRADE" if RANK.get(quality, 1) > RANK.get(before, 1) else "DOWNGRADE"
                value = {
                    "display_phone_number": number.digits,
                    "event": change,
                    "current_limit": tier,
                    "old_quality_score": before,
                    "new_quality_score": quality,
                }
                event = payloads.envelope(
                    number, value, field="phone_number_quality_update", time_ms=gw.now_ms()
                )
                await gw.outbox.add_in(txn, number.id, f"{number.id}:quality", event)
                events += 1
        return events

    events: int = await gw.writes.run(write)
    if events:
        gw.outbox.wake()
    return events

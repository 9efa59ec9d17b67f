"""Greeting and away messages: the relay stores their settings (docs/business.md) and the
business's own end sends them, encrypted, as ordinary service replies.

- greeting: to a person writing for the first time, or after ``inactivity_days`` of silence;
- away: while the relay says the business is away (``away_now``, from its hours or a custom
  period), at most once per person per 24 hours.

Both go through the same path as ``POST /messages`` (statuses and webhooks included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tresen.errors import TresenError
from tresen.gateway import store
from tresen.gateway.cloudapi.errors import GraphError
from tresen.gateway.cloudapi.models import Text
from tresen.gateway.content import outbound
from tresen.protocol.frames import BizMeta
from tresen.storage.engine import Txn

if TYPE_CHECKING:
    from tresen.gateway.models import Person
    from tresen.gateway.service import Gateway, Line

DAY_MS = 86_400_000
SETTINGS_SECONDS = 30.0


async def business_settings(gw: Gateway, line: Line) -> dict[str, Any]:
    now = gw.clock()
    if line.business is not None and line.business[0] > now:
        return line.business[1]
    found = await line.biz.get()
    line.business = (now + SETTINGS_SECONDS, found)
    return found


async def do_auto_replies(
    gw: Gateway, line: Line, person: Person, previous_ms: int | None, now_ms: int
) -> list[str]:
    """Send what applies to a message just received; returns the kinds sent."""
    from tresen.gateway.send import deliver

    try:
        settings = await business_settings(gw, line)
    except TresenError:
        return []
    sent: list[str] = []
    greeting = settings.get("greeting") or {}
    if greeting.get("enabled") and greeting.get("text"):
        days = int(greeting.get("inactivity_days") or 14)
        if previous_ms is None or now_ms - previous_ms > days * DAY_MS:
            await _send(gw, line, person, str(greeting["text"]), deliver)
            sent.append("greeting")
    away = settings.get("away") or {}
    if settings.get("away_now") and away.get("enabled") and away.get("text"):
        key, number = f"away:{person.account_id}", line.number.id

        async def claim(txn: Txn) -> bool:
            last = (await store.watched(txn, number)).get(key)
            if last is not None and now_ms - int(last) < DAY_MS:
                return False
            await store.set_watched(txn, number, key, str(now_ms))
            return True

        if await gw.writes.run(claim):
            await _send(gw, line, person, str(away["text"]), deliver)
            sent.append("away")
    return sent


async def _send(gw: Gateway, line: Line, person: Person, text: str, deliver: Any) -> None:
    content = outbound("text", Text(body=text[:4096]))
    try:
        await deliver(gw, line, person, "text", content, BizMeta(), "")
    except (GraphError, TresenError) as exc:
        log_failure(line, exc)


def log_failure(line: Line, exc: Exception) -> None:
    import logging

    logging.getLogger("tresen.gateway").warning(
        "number %s: an automatic reply was not sent: %s", line.number.id, exc
    )

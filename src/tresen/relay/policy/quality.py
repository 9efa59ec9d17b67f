"""Quality ratings, messaging-limit tiers and template pauses, re-evaluated off the hot path.

Every ``quality_interval_seconds`` (and on the operator's demand) each business is rated from
the negative feedback on its business-initiated messages over the last ``quality_window_days``
(:func:`~tresen.relay.policy.state.rate_quality`), its tier moves by
:func:`~tresen.relay.policy.state.next_tier`, each of its templates rated RED on its own sends is
paused (3 h, then 6 h, then disabled), and pauses that ran out return to APPROVED.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from tresen.bus.events import PolicyChanged
from tresen.config import Settings
from tresen.errors import InvalidRequest
from tresen.relay.admin import audit
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.business.service import BusinessService
from tresen.relay.clock import Clock
from tresen.relay.policy import store
from tresen.relay.policy.gate import PolicyGate
from tresen.relay.policy.state import (
    DAY_MS,
    Quality,
    next_tier,
    pause_template,
    rate_quality,
    tier_limit,
    tier_name,
)
from tresen.relay.templates import store as template_store
from tresen.storage.engine import Database, Row, Txn

log = logging.getLogger("tresen.quality")


class Standing(msgspec.Struct):
    business: int
    quality: str
    tier: str
    messaging_limit: int | None
    sends: int
    blocks: int
    reports: int
    opt_outs: int
    reached_7d: int
    paused_templates: list[str]


class StandingChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    tier: str | None = None
    throughput_per_second: int | None = None


class QualityService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        gate: PolicyGate,
        businesses: BusinessService,
    ) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        self.gate, self.businesses = gate, businesses
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tresen-quality")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.quality_interval_seconds)
            try:
                await self.do_sweep()
            except Exception:
                log.exception("quality evaluation failed; will retry")

    async def do_sweep(self) -> list[Standing]:
        """End pauses that ran out; rate every business that sent business-initiated messages
        in the quality window or is not GREEN (the others have nothing to rate)."""
        await self.gate.flush()
        now = self.clock.now_ms()

        async def unpause(txn: Txn) -> list[Row]:
            rows = await template_store.expired_pauses(txn, now)
            for row in rows:
                await template_store.set_status(txn, int(row[0]), "APPROVED", "", now)
            return rows

        back = await self.db.run_interaction("unpause_templates", unpause)
        for business in sorted({int(row[1]) for row in back}):
            self.gate.publish(PolicyChanged(what="template", a=business))
        for row in back:
            await self._notify_template(row, "APPROVED", "", 0, now)
        since = now - self.settings.quality_window_days * DAY_MS
        active = await self.db.run_interaction(
            "active_businesses", lambda txn: store.active_businesses(txn, since), write=False
        )
        return [await self.do_evaluate(b, flush=False) for b in active]

    async def do_evaluate(self, business: int, *, flush: bool = True) -> Standing:
        await self.businesses.access_business(business)  # else the standing row has no owner
        if flush:
            await self.gate.flush()
        now = self.clock.now_ms()
        days = self.settings.quality_window_days
        since = now - days * DAY_MS
        min_sends = self.settings.quality_min_sends
        tiers = self.settings.business_tier_limits

        changed_templates: list[tuple[Row, str, int]] = []

        async def evaluate(txn: Txn) -> tuple[Standing, bool]:
            sends = dict(await store.initiated_sends(txn, business, since))
            signals = await store.signals(txn, business, since)
            totals = {"block": 0, "report": 0, "opt_out": 0}
            per_template: dict[str, dict[str, int]] = {}
            for kind, template, count in signals:
                totals[kind] = totals.get(kind, 0) + count
                if template:
                    per_template.setdefault(template, {}).setdefault(kind, 0)
                    per_template[template][kind] += count
            total_sends = sum(sends.values())
            quality: Quality = rate_quality(
                total_sends,
                totals["block"],
                totals["report"],
                totals["opt_out"],
                min_sends=min_sends,
            )
            row = await store.standing(txn, business)
            tier, old_quality, tier_changed, quality_changed = (
                (int(row[0]), row[1], int(row[2]), int(row[3])) if row else (0, "GREEN", 0, 0)
            )
            red_recently = old_quality == "RED" and now - quality_changed < days * DAY_MS
            reached = await store.reached_count(txn, business, since)
            new_tier = next_tier(
                tier,
                quality,
                reached,
                red_in_7d=red_recently,
                last_change=tier_changed,
                now=now,
                tiers=tiers,
            )
            changed = new_tier != tier or quality != old_quality
            if changed or row is None:
                await store.set_standing(
                    txn,
                    business,
                    new_tier,
                    quality,
                    now if new_tier != tier else tier_changed,
                    now if quality != old_quality else quality_changed,
                )
            paused: list[str] = []
            for name in per_template:
                for t in await template_store.list_of(txn, business, "APPROVED", name, 0, 100):
                    # only feedback since the template was last (re)approved counts
                    count, feedback = await store.template_feedback(
                        txn, business, name, max(since, int(t[11]))
                    )
                    rating = rate_quality(
                        count,
                        feedback.get("block", 0),
                        feedback.get("report", 0),
                        feedback.get("opt_out", 0),
                        min_sends=min_sends,
                    )
                    if rating != "RED":
                        continue
                    status, until = pause_template(int(t[12]), now)
                    await template_store.set_status(
                        txn,
                        int(t[0]),
                        status,
                        "quality rating RED",
                        now,
                        paused_until=until,
                        pause_count=int(t[12]) + 1,
                    )
                    paused.append(f"{name}:{t[3]}:{status}")
                    changed_templates.append((t, status, until))
                    changed = True
            standing = Standing(
                business=business,
                quality=quality,
                tier=tier_name(new_tier, tiers),
                messaging_limit=tier_limit(new_tier, tiers),
                sends=total_sends,
                blocks=totals["block"],
                reports=totals["report"],
                opt_outs=totals["opt_out"],
                reached_7d=reached,
                paused_templates=paused,
            )
            return standing, changed

        standing, changed = await self.db.run_interaction("evaluate_quality", evaluate)
        if changed:
            self.gate.publish(PolicyChanged(what="standing", a=business))
            self.gate.publish(PolicyChanged(what="template", a=business))
            log.info("business %d: quality %s, %s", business, standing.quality, standing.tier)
            for row, status, until in changed_templates:
                await self._notify_template(row, status, "quality rating RED", until, now)
            # the business's gateway: the Cloud API's phone_number_quality_update webhook
            await self.gate.notify(
                business,
                f"quality:{now}",
                {
                    "type": "quality_update",
                    "quality": standing.quality,
                    "tier": standing.tier,
                    "messaging_limit": standing.messaging_limit,
                    "paused_templates": standing.paused_templates,
                },
            )
        return standing

    async def _notify_template(
        self, row: Row, status: str, reason: str, paused_until: int, now: int
    ) -> None:
        """The business's gateway: a ``message_template_status_update``."""
        await self.gate.notify(
            int(row[1]),
            f"template:{row[0]}:{now}",
            {
                "type": "template_status",
                "template": int(row[0]),
                "name": row[2],
                "language": row[3],
                "category": row[4],
                "status": status,
                "reason": reason,
                "paused_until": paused_until,
            },
        )

    async def do_change(
        self, admin: AdminPrincipal, business: int, data: StandingChange
    ) -> Standing:
        """The operator sets a tier or a throughput (audited)."""
        await self.businesses.access_business(business)
        top = self.settings.business_max_throughput_per_second
        tiers = self.settings.business_tier_limits
        names = [tier_name(t, tiers) for t in range(len(tiers) + 1)]
        if data.tier is not None and data.tier not in names:
            raise InvalidRequest(f"tier must be one of {', '.join(names)}")
        if data.throughput_per_second is not None and not (1 <= data.throughput_per_second <= top):
            raise InvalidRequest(f"throughput_per_second must be 1 to {top}")
        now = self.clock.now_ms()

        async def apply(txn: Txn) -> None:
            if data.tier is not None:
                await store.set_tier(txn, business, names.index(data.tier), now)
            if data.throughput_per_second is not None:
                await store.set_throughput(txn, business, data.throughput_per_second)
            await audit.record(
                txn,
                admin,
                "business.standing",
                f"business:{business}",
                {"tier": data.tier, "throughput_per_second": data.throughput_per_second},
                at=now,
            )

        await self.db.run_interaction("change_standing", apply)
        self.gate.publish(PolicyChanged(what="standing", a=business))
        return await self.do_evaluate(business)

"""Billing rules: usage by day and category, monthly invoices, balances and the rate card.

The meter itself is written by the policy gate (a row per business envelope and recipient,
priced when the recipient's device acknowledges it); every read here flushes the gate first,
so it includes everything delivered so far. People never pay: only business accounts have
meters.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tresen.bus.events import PolicyChanged
from tresen.config import Settings
from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code
from tresen.relay.admin import audit
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.billing import store
from tresen.relay.billing.models import (
    Account,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    Usage,
    UsageRow,
)
from tresen.relay.billing.ratecard import RateCard, packaged_rate_card, parse_rate_card
from tresen.relay.business.service import BusinessService
from tresen.relay.clock import Clock
from tresen.relay.policy.gate import PolicyGate
from tresen.relay.policy.state import tier_limit, tier_name
from tresen.storage.engine import Database, Txn

MAX_USAGE_DAYS = 366


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def month_range(month: str) -> tuple[int, int]:
    """``2026-11`` -> [first ms of the month, first ms of the next), in UTC."""
    try:
        first = datetime.strptime(month + "-01", "%Y-%m-%d").replace(tzinfo=UTC).date()
    except ValueError as exc:
        raise InvalidRequest(f"month {month!r}: give it as YYYY-MM, e.g. 2026-11") from exc
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return _ms(first), _ms(following)


def parse_day(value: str, name: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC).date()
    except ValueError as exc:
        raise InvalidRequest(f"{name} {value!r}: give it as YYYY-MM-DD") from exc


class BillingService:
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

    # ------------------------------------------------------------ reads

    async def access_usage(self, business: int, start: str, end: str) -> Usage:
        """Delivered messages per UTC day, category and pricing type, ``start``..``end``."""
        await self.businesses.access_business(business)
        first, last = parse_day(start, "start"), parse_day(end, "end")
        if last < first or (last - first).days >= MAX_USAGE_DAYS:
            raise InvalidRequest(f"end must be on or after start, at most {MAX_USAGE_DAYS} days")
        await self.gate.flush()
        rows = await self.db.run_interaction(
            "usage",
            lambda txn: store.usage(txn, business, _ms(first), _ms(last + timedelta(days=1))),
            write=False,
        )
        out = [
            UsageRow(
                date=(date(1970, 1, 1) + timedelta(days=int(r[0]))).isoformat(),
                category=r[1],
                pricing_type=r[2],
                messages=int(r[3]),
                amount_minor=int(r[4] or 0),
            )
            for r in rows
        ]
        return Usage(
            business=business,
            start=first.isoformat(),
            end=last.isoformat(),
            currency=self.gate.rates.currency,
            rows=out,
            messages=sum(r.messages for r in out),
            amount_minor=sum(r.amount_minor for r in out),
        )

    async def access_invoice(self, business: int, month: str) -> Invoice:
        record = await self.businesses.access_business(business)
        start, end = month_range(month)
        await self.gate.flush()

        async def read(txn: Txn) -> Invoice:
            lines = [
                InvoiceLine(r[0], r[1], r[2], int(r[3]), int(r[4] or 0))
                for r in await store.invoice_lines(txn, business, start, end)
            ]
            payments = [
                LedgerEntry(int(r[0]), r[1], r[2], r[3], int(r[4]))
                for r in await store.ledger(txn, business, start, end)
            ]
            account = await store.account(txn, business)
            return Invoice(
                business=business,
                business_name=record.display_name,
                month=month,
                currency=self.gate.rates.currency,
                lines=lines,
                messages=sum(line.messages for line in lines),
                billable_messages=sum(
                    line.messages for line in lines if line.pricing_type == "regular"
                ),
                amount_minor=sum(line.amount_minor for line in lines),
                payments=payments,
                balance_minor=int(account[0]) if account else 0,
                issued_at=self.clock.now_ms(),
            )

        return await self.db.run_interaction("invoice", read, write=False)

    async def access_account(self, business: int) -> Account:
        await self.businesses.access_business(business)
        self.gate.note_business(business)
        await self.gate.flush()
        row = await self.db.run_interaction(
            "billing_account", lambda txn: store.account(txn, business), write=False
        )
        balance, credit, tier, quality, throughput = (
            (int(row[0]), row[1], int(row[2]), row[3], int(row[4]))
            if row
            else (0, None, 0, "GREEN", 0)
        )
        credit_limit = self.settings.business_credit_limit_minor if credit is None else int(credit)
        return Account(
            business=business,
            currency=self.gate.rates.currency,
            balance_minor=balance,
            credit_limit_minor=credit_limit,
            available_minor=balance + credit_limit,
            tier=tier_name(tier, self.settings.business_tier_limits),
            messaging_limit=tier_limit(tier, self.settings.business_tier_limits),
            quality=quality,
            throughput_per_second=min(
                throughput or self.settings.business_throughput_per_second,
                self.settings.business_max_throughput_per_second,
            ),
        )

    # ------------------------------------------------------------ the operator

    async def do_top_up(
        self, admin: AdminPrincipal, business: int, amount: int, note: str
    ) -> Account:
        """Add prepaid money (or, negative, an adjustment); audited."""
        if amount == 0:
            raise InvalidRequest("amount_minor must not be 0")
        await self.businesses.access_business(business)
        now = self.clock.now_ms()

        async def apply(txn: Txn) -> None:
            kind = "top_up" if amount > 0 else "adjustment"
            await store.add_to_balance(txn, business, amount, kind, note, admin.name, now)
            await audit.record(
                txn,
                admin,
                f"billing.{kind}",
                f"business:{business}",
                {"amount_minor": amount, "note": note},
                at=now,
            )

        await self.db.run_interaction("top_up", apply)
        self.gate.publish(PolicyChanged(what="standing", a=business))
        return await self.access_account(business)

    async def do_set_credit_limit(
        self, admin: AdminPrincipal, business: int, limit: int | None
    ) -> Account:
        await self.businesses.access_business(business)
        now = self.clock.now_ms()

        async def apply(txn: Txn) -> None:
            await store.set_credit_limit(txn, business, limit)
            await audit.record(
                txn,
                admin,
                "billing.credit_limit",
                f"business:{business}",
                {"credit_limit_minor": limit},
                at=now,
            )

        await self.db.run_interaction("credit_limit", apply)
        self.gate.publish(PolicyChanged(what="standing", a=business))
        return await self.access_account(business)

    def access_rate_card(self) -> str:
        return self.gate.rates.to_csv()

    async def do_replace_rate_card(self, admin: AdminPrincipal, text: str) -> str:
        """Replace the whole rate card (prices apply to messages delivered from now on)."""
        rows = parse_rate_card(text)
        now = self.clock.now_ms()
        current = self.gate.rates.currency

        async def apply(txn: Txn) -> None:
            if rows[0][3] != current and await store.money_recorded(txn):
                raise InvalidRequest(
                    f"balances and invoices are kept in {current}: a rate card in "
                    f"{rows[0][3]} would mix currencies; convert the prices to {current}",
                    code=Code.INVALID_RATE_CARD,
                )
            await store.replace_rate_card(txn, rows)
            await audit.record(
                txn,
                admin,
                "billing.rate_card",
                "rate_card",
                {"rows": len(rows), "currency": rows[0][3]},
                at=now,
            )

        await self.db.run_interaction("replace_rate_card", apply)
        await self.gate.flush()  # deliveries so far are priced at the old card
        self.gate.rates = RateCard(rows)
        self.gate.publish(PolicyChanged(what="rates"))
        return self.gate.rates.to_csv()

    async def do_reset_rate_card(self, admin: AdminPrincipal) -> str:
        """Back to the card packaged with this tresen version."""
        rows = packaged_rate_card()
        now = self.clock.now_ms()

        async def apply(txn: Txn) -> None:
            await store.replace_rate_card(txn, [])
            await audit.record(txn, admin, "billing.rate_card_reset", "rate_card", {}, at=now)

        await self.db.run_interaction("reset_rate_card", apply)
        await self.gate.flush()
        self.gate.rates = RateCard(rows)
        self.gate.publish(PolicyChanged(what="rates"))
        return self.gate.rates.to_csv()


__all__ = ["BillingService", "month_range", "parse_day"]

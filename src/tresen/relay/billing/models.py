"""Bodies of the usage, invoice, balance and rate-card APIs."""

from __future__ import annotations

from typing import Annotated

import msgspec


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class UsageRow(msgspec.Struct):
    date: str
    category: str
    pricing_type: str
    messages: int
    amount_minor: int


class Usage(msgspec.Struct):
    business: int
    start: str
    end: str
    currency: str
    rows: list[UsageRow]
    messages: int
    amount_minor: int


class InvoiceLine(msgspec.Struct):
    category: str
    pricing_type: str
    country: str
    messages: int
    amount_minor: int


class LedgerEntry(msgspec.Struct):
    amount_minor: int
    kind: str
    note: str
    actor: str
    at: int


class Invoice(msgspec.Struct):
    business: int
    business_name: str
    month: str
    currency: str
    lines: list[InvoiceLine]
    messages: int
    billable_messages: int
    amount_minor: int
    payments: list[LedgerEntry]
    #: the balance now (not at the month's end): prepaid money left, negative when owing
    balance_minor: int
    issued_at: int


class Account(msgspec.Struct):
    """A business's money and standing as the relay enforces them."""

    business: int
    currency: str
    balance_minor: int
    credit_limit_minor: int
    #: balance + credit limit: billable sends are refused at 0 (code 131042)
    available_minor: int
    tier: str
    messaging_limit: int | None
    quality: str
    throughput_per_second: int


class TopUp(Strict):
    amount_minor: Annotated[int, msgspec.Meta(ge=-(10**12), le=10**12)]
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class CreditLimit(Strict):
    """``None`` returns to the relay's default (``business_credit_limit_minor``)."""

    credit_limit_minor: Annotated[int, msgspec.Meta(ge=0, le=10**12)] | None


__all__ = [
    "Account",
    "CreditLimit",
    "Invoice",
    "InvoiceLine",
    "LedgerEntry",
    "TopUp",
    "Usage",
    "UsageRow",
]

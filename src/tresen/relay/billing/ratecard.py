"""The rate card: a price per delivered billable message, by category and country.

A CSV with the header ``category,country,price_minor,currency``; ``country`` is an ISO 3166
region code or ``*`` for the default row of a category. Prices are in minor units (cents) of one
currency for the whole card. The packaged card (``ratecard.csv`` next to this module) applies
until the operator uploads their own (``PUT /v1/admin/rate-card``, ``tresen admin rate-card``).
"""

from __future__ import annotations

import csv
import io
from importlib import resources

from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code

CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION", "SERVICE")
HEADER = ["category", "country", "price_minor", "currency"]
MAX_ROWS = 10_000

Rate = tuple[str, str, int, str]


class RateCard:
    """Prices by ``(category, country)`` with a per-category ``*`` default."""

    __slots__ = ("currency", "prices")

    def __init__(self, rows: list[Rate]) -> None:
        self.prices = {(c, country): price for c, country, price, _ in rows}
        self.currency = rows[0][3] if rows else "EUR"

    def price(self, category: str, country: str) -> int:
        found = self.prices.get((category, country))
        if found is None:
            found = self.prices.get((category, "*"), 0)
        return found

    def rows(self) -> list[Rate]:
        return [(c, k, p, self.currency) for (c, k), p in sorted(self.prices.items())]

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(self.rows())
        return out.getvalue()


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, code=Code.INVALID_RATE_CARD)


def parse_rate_card(text: str) -> list[Rate]:
    """Validate a rate card CSV strictly; the error names the line to fix."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != HEADER:
        raise _bad(f"the first line must be the header {','.join(HEADER)}")
    rows: list[Rate] = []
    seen: set[tuple[str, str]] = set()
    currencies: set[str] = set()
    for number, raw in enumerate(reader, start=2):
        if not raw or all(not cell.strip() for cell in raw):
            continue
        if len(raw) != 4:
            raise _bad(f"line {number}: expected 4 fields, got {len(raw)}")
        category, country, price, currency = (cell.strip() for cell in raw)
        category = category.upper()
        if category not in CATEGORIES:
            raise _bad(f"line {number}: category must be one of {', '.join(CATEGORIES)}")
        if country != "*" and not (len(country) == 2 and country.isalpha() and country.isupper()):
            raise _bad(f"line {number}: country must be an ISO code like DE, or * (default)")
        if not price.isdigit() or len(price) > 12:
            raise _bad(f"line {number}: price_minor must be a whole number of minor units >= 0")
        if not (len(currency) == 3 and currency.isalpha() and currency.isupper()):
            raise _bad(f"line {number}: currency must be an ISO 4217 code like EUR")
        if (category, country) in seen:
            raise _bad(f"line {number}: {category},{country} appears twice")
        seen.add((category, country))
        currencies.add(currency)
        rows.append((category, country, int(price), currency))
        if len(rows) > MAX_ROWS:
            raise _bad(f"a rate card has at most {MAX_ROWS} rows")
    if not rows:
        raise _bad("the rate card has no rows")
    if len(currencies) > 1:
        raise _bad(f"one currency per rate card, found {', '.join(sorted(currencies))}")
    missing = [c for c in CATEGORIES[:3] if (c, "*") not in seen]
    if missing:
        raise _bad(f"add a default row (country *) for {', '.join(missing)}")
    return rows


def packaged_rate_card() -> list[Rate]:
    text = resources.files("tresen.relay.billing").joinpath("ratecard.csv").read_text()
    return parse_rate_card(text)


__all__ = ["CATEGORIES", "RateCard", "packaged_rate_card", "parse_rate_card"]

"""The policy's in-memory state and its pure rules: windows, pricing type, tiers, quality.

Nothing here does I/O; :mod:`tresen.relay.policy.gate` loads and flushes this state, and the
unit tests drive these functions directly (``tests/unit/test_policy*.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: the customer-service window a person's message opens (or refreshes)
SERVICE_WINDOW_MS = DAY_MS
#: the free entry-point window opened by entering through the business's link or QR code
ENTRY_WINDOW_MS = 72 * HOUR_MS
#: messaging-limit tiers: unique people reached outside the window per moving 24 hours; the
#: tier past the last is unlimited (``business_tier_limits`` replaces them)
TIERS: tuple[int, ...] = (250, 2_000, 10_000, 100_000)


def tier_name(tier: int, tiers: tuple[int, ...] = TIERS) -> str:
    """``TIER_250``, ``TIER_2K``, ``TIER_10K``, ``TIER_100K``, ``TIER_UNLIMITED`` (Cloud API)."""
    limit = tier_limit(tier, tiers)
    if limit is None:
        return "TIER_UNLIMITED"
    if limit >= 1000 and limit % 1000 == 0:
        return f"TIER_{limit // 1000}K"
    return f"TIER_{limit}"


def tier_of(name: str, tiers: tuple[int, ...] = TIERS) -> int | None:
    names = [tier_name(t, tiers) for t in range(len(tiers) + 1)]
    return names.index(name) if name in names else None


Quality = Literal["GREEN", "YELLOW", "RED"]
PricingType = Literal["free_customer_service", "free_entry_point", "regular"]
ConsentCategory = Literal["marketing", "utility"]


def consent_category(category: str) -> ConsentCategory:
    """MARKETING needs marketing consent; UTILITY and AUTHENTICATION need utility consent."""
    return "marketing" if category == "MARKETING" else "utility"


class Bucket:
    """A token bucket on the relay's clock (milliseconds), so tests can move time."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now_ms: int) -> None:
        self.rate = rate  # tokens per second
        self.burst = burst
        self.tokens = burst
        self.stamp = now_ms

    def take(self, now_ms: int) -> float:
        """Take one token; return 0 or the seconds until one is there."""
        elapsed = max(0, now_ms - self.stamp) / 1000
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = now_ms
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def full(self, now_ms: int) -> bool:
        return self.tokens + max(0, now_ms - self.stamp) / 1000 * self.rate >= self.burst


@dataclass(slots=True)
class Thread:
    """What the relay knows of one business and one person."""

    first_contact_at: int = 0
    person_wrote: bool = False
    last_inbound_at: int = 0
    entry_until: int = 0
    entry_source: str = ""
    #: the person's country (ISO region of the phone number), for pricing
    country: str = "ZZ"
    #: 'marketing' / 'utility' -> opted in (True) or out (False); absent: never said
    consent: dict[str, bool] = field(default_factory=dict)
    #: the last template this person received from the business (for template quality)
    last_template: str = ""
    #: a row exists in the store (else the next flush inserts it)
    stored: bool = False

    def service_open(self, now: int) -> bool:
        return self.last_inbound_at > 0 and now < self.last_inbound_at + SERVICE_WINDOW_MS

    def entry_open(self, now: int) -> bool:
        return now < self.entry_until

    def window_open(self, now: int) -> bool:
        """Free-form messages may be sent: a customer-service or entry-point window is open."""
        return self.service_open(now) or self.entry_open(now)

    def may_initiate(self, category: str) -> bool | None:
        """Consent for a business-initiated template: True, False (opted out), None (no record).

        Marketing needs an explicit marketing opt-in. Utility and authentication need a utility
        opt-in, or the person having written to the business first (or opened its chat from
        its link or QR code); an opt-out of either
        category always wins.
        """
        wanted = consent_category(category)
        said = self.consent.get(wanted)
        if said is not None:
            return said
        if wanted == "utility" and (self.person_wrote or self.entry_source):
            return True
        return None


def pricing_type(kind: str, category: str, thread: Thread, now: int) -> PricingType:
    """How a delivered business message is charged (per-message pricing, docs/business-rules).

    Inside an entry-point window everything is free; free-form (service) replies are free;
    utility templates inside the customer-service window are free; marketing and
    authentication templates are always billed.
    """
    if thread.entry_open(now):
        return "free_entry_point"
    if kind == "service":
        return "free_customer_service"
    if category == "UTILITY" and thread.service_open(now):
        return "free_customer_service"
    return "regular"


def tier_limit(tier: int, tiers: tuple[int, ...] = TIERS) -> int | None:
    """The messaging limit of a tier (None: unlimited)."""
    tier = max(0, tier)
    return tiers[tier] if tier < len(tiers) else None


def rate_quality(
    sends: int, blocks: int, reports: int, opt_outs: int, *, min_sends: int
) -> Quality:
    """Quality from negative feedback over recent business-initiated sends.

    score = (blocks + 2 * reports + 0.5 * opt_outs) / sends. Fewer than ``min_sends`` sends
    is too little to judge unless the feedback alone is that many (then it counts against a
    floor of ``min_sends``). GREEN below 2 %, YELLOW below 5 %, RED from 5 %.
    """
    negative = blocks + 2 * reports + 0.5 * opt_outs
    if negative == 0:
        return "GREEN"
    if sends < min_sends and negative < min_sends:
        return "GREEN"
    score = negative / max(sends, min_sends)
    if score < 0.02:
        return "GREEN"
    if score < 0.05:
        return "YELLOW"
    return "RED"


def next_tier(
    tier: int,
    quality: Quality,
    reached_7d: int,
    *,
    red_in_7d: bool,
    last_change: int,
    now: int,
    tiers: tuple[int, ...] = TIERS,
) -> int:
    """The tier after one evaluation.

    Up one tier when the quality is GREEN, was not RED in the last 7 days, and the unique
    people reached outside the window over the last 7 days are at least half the current
    limit (at most one step per 6 hours). Down one tier while RED (at most one step per 24
    hours, never below the first).
    """
    limit = tier_limit(tier, tiers)
    if quality == "RED":
        if tier > 0 and now - last_change >= DAY_MS:
            return tier - 1
        return tier
    if limit is None or quality != "GREEN" or red_in_7d:
        return tier
    if reached_7d * 2 >= limit and now - last_change >= 6 * HOUR_MS:
        return tier + 1
    return tier


#: how long a template stays PAUSED the first and the second time (the third: DISABLED)
PAUSE_MS = (3 * HOUR_MS, 6 * HOUR_MS)


def pause_template(pause_count: int, now: int) -> tuple[str, int]:
    """A template rated RED: (new status, paused until) by how often it was paused before."""
    if pause_count >= len(PAUSE_MS):
        return "DISABLED", 0
    return "PAUSED", now + PAUSE_MS[pause_count]


__all__ = [
    "DAY_MS",
    "ENTRY_WINDOW_MS",
    "SERVICE_WINDOW_MS",
    "TIERS",
    "Bucket",
    "PricingType",
    "Quality",
    "Thread",
    "consent_category",
    "next_tier",
    "pause_template",
    "pricing_type",
    "rate_quality",
    "tier_limit",
    "tier_name",
    "tier_of",
]

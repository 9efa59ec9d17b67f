"""The policy's pure rules: windows, consent, pricing type, quality, tiers, pauses, buckets."""

from __future__ import annotations

import pytest

from tresen.relay.policy.state import (
    DAY_MS,
    ENTRY_WINDOW_MS,
    HOUR_MS,
    Bucket,
    Thread,
    next_tier,
    pause_template,
    pricing_type,
    rate_quality,
    tier_limit,
    tier_name,
    tier_of,
)

NOW = 1_800_000_000_000


def test_windows() -> None:
    thread = Thread()
    assert not thread.window_open(NOW)
    thread.last_inbound_at = NOW - DAY_MS + 1
    assert thread.service_open(NOW) and thread.window_open(NOW)
    thread.last_inbound_at = NOW - DAY_MS
    assert not thread.window_open(NOW)
    thread.entry_until = NOW + 1
    assert thread.entry_open(NOW) and thread.window_open(NOW)
    assert not thread.entry_open(NOW + 1)
    assert ENTRY_WINDOW_MS == 3 * DAY_MS


def test_consent() -> None:
    thread = Thread()
    assert thread.may_initiate("MARKETING") is None
    assert thread.may_initiate("UTILITY") is None
    thread.person_wrote = True
    assert thread.may_initiate("UTILITY") is True
    assert thread.may_initiate("AUTHENTICATION") is True
    assert thread.may_initiate("MARKETING") is None  # writing first is not marketing consent
    thread.consent["utility"] = False
    assert thread.may_initiate("UTILITY") is False  # an opt-out beats writing first
    thread.consent["marketing"] = True
    assert thread.may_initiate("MARKETING") is True
    entered = Thread(entry_source="qr")
    assert entered.may_initiate("UTILITY") is True


@pytest.mark.parametrize(
    ("kind", "category", "inbound", "entry", "expected"),
    [
        ("service", "SERVICE", NOW - HOUR_MS, 0, "free_customer_service"),
        ("template", "UTILITY", NOW - HOUR_MS, 0, "free_customer_service"),
        ("template", "UTILITY", 0, 0, "regular"),
        ("template", "MARKETING", NOW - HOUR_MS, 0, "regular"),
        ("template", "AUTHENTICATION", NOW - HOUR_MS, 0, "regular"),
        ("template", "MARKETING", 0, NOW + HOUR_MS, "free_entry_point"),
        ("service", "SERVICE", 0, NOW + HOUR_MS, "free_entry_point"),
    ],
)
def test_pricing_type(kind: str, category: str, inbound: int, entry: int, expected: str) -> None:
    thread = Thread(last_inbound_at=inbound, entry_until=entry)
    assert pricing_type(kind, category, thread, NOW) == expected


def test_quality_formula() -> None:
    assert rate_quality(0, 0, 0, 0, min_sends=50) == "GREEN"
    assert rate_quality(1000, 19, 0, 0, min_sends=50) == "GREEN"  # 1.9 %
    assert rate_quality(1000, 20, 0, 0, min_sends=50) == "YELLOW"  # 2 %
    assert rate_quality(1000, 10, 10, 19, min_sends=50) == "YELLOW"  # 39.5 / 1000
    assert rate_quality(1000, 0, 25, 0, min_sends=50) == "RED"  # reports weigh double
    assert rate_quality(1000, 0, 0, 99, min_sends=50) == "YELLOW"  # opt-outs weigh half
    # few sends: too little to judge, unless the feedback alone reaches the floor
    assert rate_quality(10, 3, 0, 0, min_sends=50) == "GREEN"
    assert rate_quality(10, 50, 0, 0, min_sends=50) == "RED"


def test_tiers() -> None:
    assert [tier_limit(t) for t in range(6)] == [250, 2000, 10000, 100000, None, None]
    assert [tier_name(t) for t in range(5)] == [
        "TIER_250",
        "TIER_2K",
        "TIER_10K",
        "TIER_100K",
        "TIER_UNLIMITED",
    ]
    assert tier_of("TIER_10K") == 2 and tier_of("TIER_7") is None
    up = {"red_in_7d": False, "last_change": NOW - 6 * HOUR_MS, "now": NOW}
    assert next_tier(0, "GREEN", 125, **up) == 1  # half of 250 used
    assert next_tier(0, "GREEN", 124, **up) == 0
    assert next_tier(0, "YELLOW", 250, **up) == 0
    assert next_tier(0, "GREEN", 250, **{**up, "red_in_7d": True}) == 0
    assert next_tier(0, "GREEN", 250, **{**up, "last_change": NOW - HOUR_MS}) == 0
    assert next_tier(4, "GREEN", 10**9, **up) == 4  # unlimited is the top
    down = {"red_in_7d": True, "last_change": NOW - DAY_MS, "now": NOW}
    assert next_tier(2, "RED", 0, **down) == 1
    assert next_tier(0, "RED", 0, **down) == 0
    assert next_tier(2, "RED", 0, **{**down, "last_change": NOW - HOUR_MS}) == 2
    assert next_tier(0, "GREEN", 1, tiers=(2, 4), **up) == 1


def test_pauses() -> None:
    assert pause_template(0, NOW) == ("PAUSED", NOW + 3 * HOUR_MS)
    assert pause_template(1, NOW) == ("PAUSED", NOW + 6 * HOUR_MS)
    assert pause_template(2, NOW) == ("DISABLED", 0)


def test_bucket_runs_on_the_relay_clock() -> None:
    bucket = Bucket(rate=2, burst=2, now_ms=NOW)
    assert bucket.take(NOW) == 0 and bucket.take(NOW) == 0
    assert bucket.take(NOW) == pytest.approx(0.5)
    assert not bucket.full(NOW)
    assert bucket.take(NOW + 500) == 0
    assert bucket.full(NOW + 10_000)

"""The business rules without I/O: hours and "open now" across time zones and DST, the away
schedule, domains, slugs, prices and the profile limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tresen.config import load
from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code
from tresen.relay.business import rules
from tresen.relay.business.models import AwaySettings, BusinessHours, Interval
from tresen.relay.business.proof import check_http, is_public_address, private_address
from tresen.relay.business.qr import qr_png, qr_svg


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


NINE_TO_FIVE = BusinessHours(
    mode="selected_hours",
    timezone="America/New_York",
    days={day: [Interval(open="09:00", close="17:00")] for day in ("monday", "friday")},
)


def test_open_now_follows_the_business_time_zone_and_dst() -> None:
    # Monday 2026-03-02 14:00 UTC is 09:00 in New York (EST, UTC-5): just opened
    assert rules.open_now(NINE_TO_FIVE, ms(2026, 3, 2, 14, 0)) is True
    assert rules.open_now(NINE_TO_FIVE, ms(2026, 3, 2, 13, 59)) is False
    # after the DST change (EDT, UTC-4) the same wall-clock opening is 13:00 UTC
    assert rules.open_now(NINE_TO_FIVE, ms(2026, 3, 9, 13, 0)) is True
    assert rules.open_now(NINE_TO_FIVE, ms(2026, 3, 9, 21, 0)) is False  # 17:00: closed
    # Tuesday: no intervals
    assert rules.open_now(NINE_TO_FIVE, ms(2026, 3, 3, 15, 0)) is False
    # Friday 16:59 local
    assert rules.open_now(NINE_TO_FIVE, ms(2026, 3, 6, 21, 59)) is True


def test_hours_modes() -> None:
    assert rules.open_now(BusinessHours(mode="always_open"), 0) is True
    assert rules.open_now(BusinessHours(mode="by_appointment"), 0) is None
    late = BusinessHours(days={"sunday": [Interval(open="20:00", close="24:00")]})
    assert rules.open_now(late, ms(2026, 3, 8, 23, 59)) is True  # Sunday, UTC


@pytest.mark.parametrize(
    "hours",
    [
        BusinessHours(timezone="Nowhere/Atlantis"),
        BusinessHours(days={"monday": [Interval(open="10:00", close="10:00")]}),
        BusinessHours(
            days={
                "monday": [
                    Interval(open="10:00", close="12:00"),
                    Interval(open="09:00", close="09:30"),
                ]
            }
        ),
    ],
)
def test_bad_hours(hours: BusinessHours) -> None:
    with pytest.raises(InvalidRequest) as caught:
        rules.check_hours(hours)
    assert caught.value.code == Code.INVALID_BUSINESS_HOURS


def test_away_schedules() -> None:
    on = AwaySettings(enabled=True, text="away", schedule="outside_hours")
    assert rules.away_now(on, NINE_TO_FIVE, ms(2026, 3, 2, 15, 0)) is False  # open
    assert rules.away_now(on, NINE_TO_FIVE, ms(2026, 3, 3, 15, 0)) is True  # closed Tuesday
    off = AwaySettings(enabled=False, text="away", schedule="always")
    assert rules.away_now(off, NINE_TO_FIVE, 0) is False
    custom = rules.check_away(
        AwaySettings(enabled=True, text="x", schedule="custom", start=100, end=200), NINE_TO_FIVE
    )
    assert [rules.away_now(custom, NINE_TO_FIVE, t) for t in (99, 100, 199, 200)] == [
        False,
        True,
        True,
        False,
    ]
    # a non-custom schedule drops stray start/end
    cleaned = rules.check_away(
        AwaySettings(enabled=True, text="x", schedule="always", start=1, end=2), NINE_TO_FIVE
    )
    assert (cleaned.start, cleaned.end) == (None, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Shop.Example.com.", "shop.example.com"), ("xn--bcher-kva.example", "xn--bcher-kva.example")],
)
def test_good_domains(raw: str, expected: str) -> None:
    assert rules.check_domain(raw, allow_loopback=False) == expected


@pytest.mark.parametrize(
    "raw",
    ["example", "127.0.0.1:8080", "1.2.3.4", "a_b.example", "-a.example", "a" * 64 + ".example"],
)
def test_bad_domains(raw: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        rules.check_domain(raw, allow_loopback=False)
    assert caught.value.code == Code.INVALID_DOMAIN


def test_loopback_only_when_allowed() -> None:
    assert rules.check_domain("127.0.0.1:8080", allow_loopback=True) == "127.0.0.1:8080"
    with pytest.raises(InvalidRequest):
        rules.check_domain("10.0.0.1:8080", allow_loopback=True)


def test_slugs() -> None:
    assert rules.slug_from_name("Café & Bar: Zürich!") == "caf-bar-z-rich"
    assert rules.slug_from_name("X") == "x-biz"
    assert rules.slug_from_name("Bakery", 2) == "bakery-2"
    assert rules.check_slug(" My-Shop ") == "my-shop"
    for bad in ("ab", "-shop", "shop-", "sh op", "a" * 33):
        with pytest.raises(InvalidRequest):
            rules.check_slug(bad)


def test_profile_limits() -> None:
    assert rules.check_text("about", "a" * 139, rules.MAX_ABOUT) == "a" * 139
    with pytest.raises(InvalidRequest) as caught:
        rules.check_text("about", "a" * 140, rules.MAX_ABOUT)
    assert caught.value.code == Code.INVALID_BUSINESS_PROFILE
    assert caught.value.fields == {"field": "about", "limit": 139}
    with pytest.raises(InvalidRequest):
        rules.check_websites(["https://a.example"] * 3)
    assert rules.check_vertical("RESTAURANT") == "RESTAURANT"


def test_prices() -> None:
    assert rules.check_price(0, "jpy") == (0, "JPY")
    for price, currency in ((-1, "EUR"), (10**15 + 1, "EUR"), (1, "XYZ")):
        with pytest.raises(InvalidRequest) as caught:
            rules.check_price(price, currency)
        assert caught.value.code == Code.INVALID_PRODUCT


def test_qr_outputs_are_well_formed() -> None:
    png = qr_png("https://relay.example/b/shop", scale=2)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png.endswith(b"IEND\xaeB`\x82")
    svg = qr_svg("https://relay.example/b/shop")
    assert svg.startswith(b"<?xml") and b"<svg" in svg and b"</svg>" in svg


def test_public_addresses() -> None:
    assert is_public_address("93.184.216.34")
    assert is_public_address("2606:2800:220:1::1")
    for inside in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104
        "224.0.0.1",
    ):
        assert not is_public_address(inside), inside


async def test_a_host_resolving_inside_is_not_fetched() -> None:
    # "localhost" resolves to loopback through /etc/hosts (no network needed)
    assert await private_address("localhost", 443) in ("127.0.0.1", "::1")
    settings = load(environ={}, overrides={"domain_proof_timeout_seconds": 2})
    ok, detail = await check_http("localhost", "tv_x", settings)
    assert ok is False and "non-public address" in detail

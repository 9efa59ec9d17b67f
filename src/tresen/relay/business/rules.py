"""The business rules that need no I/O: profile limits, hours and "open now", the away
schedule, slugs, domains, prices and currencies. Each refusal carries a stable code and names
the field and limit, so a client can point at the right input."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code
from tresen.relay.business.models import (
    VERTICALS,
    WEEKDAYS,
    AwaySettings,
    BusinessHours,
    GreetingSettings,
)

#: the Cloud API's limits (``whatsapp_business_profile``) and tresen's own for the rest
MAX_DISPLAY_NAME = 64
MAX_ABOUT = 139
MAX_ADDRESS = 256
MAX_DESCRIPTION = 512
MAX_EMAIL = 128
MAX_WEBSITES = 2
MAX_WEBSITE = 256
MAX_INTERVALS_PER_DAY = 4
MAX_MESSAGE_TEXT = 4096
MAX_PRODUCT_NAME = 200
MAX_PRODUCT_DESCRIPTION = 5000
MAX_PRICE = 10**15
MAX_PRODUCTS = 10_000
MAX_QUICK_REPLIES = 50
MAX_SHORTCUT = 25
MAX_LABELS = 20
MAX_LABEL_NAME = 40

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,30})[a-z0-9]$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_WEBSITE = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_SHORTCUT = re.compile(r"^[a-z0-9_]+$")
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
_LABEL_HOST = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOOPBACK = re.compile(r"^(127\.0\.0\.1|localhost):\d{1,5}$")

#: ISO 4217 active codes
CURRENCIES = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR
    MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD
    TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG""".split()
)


def _refuse(code: Code, field: str, message: str, **fields: object) -> InvalidRequest:
    return InvalidRequest(message, code=code, field=field, **fields)


def check_text(
    field: str,
    value: str,
    limit: int,
    *,
    required: bool = False,
    code: Code = Code.INVALID_BUSINESS_PROFILE,
) -> str:
    value = value.strip()
    if required and not value:
        raise _refuse(code, field, f"{field} must not be empty")
    if len(value) > limit:
        raise _refuse(
            code,
            field,
            f"{field} is {len(value)} characters; at most {limit} are allowed",
            limit=limit,
        )
    return value


def check_email(value: str) -> str:
    value = check_text("email", value, MAX_EMAIL)
    if value and not _EMAIL.match(value):
        raise _refuse(Code.INVALID_BUSINESS_PROFILE, "email", f"{value!r} is not an email address")
    return value


def check_websites(values: list[str]) -> list[str]:
    if len(values) > MAX_WEBSITES:
        raise _refuse(
            Code.INVALID_BUSINESS_PROFILE,
            "websites",
            f"{len(values)} websites given; at most {MAX_WEBSITES} are allowed",
            limit=MAX_WEBSITES,
        )
    out = []
    for value in values:
        value = check_text("websites", value, MAX_WEBSITE)
        if not _WEBSITE.match(value):
            raise _refuse(
                Code.INVALID_BUSINESS_PROFILE,
                "websites",
                f"{value!r} is not a website: start it with https://",
            )
        out.append(value)
    return out


def check_vertical(value: str) -> str:
    if value not in VERTICALS:
        raise _refuse(
            Code.INVALID_BUSINESS_PROFILE,
            "vertical",
            f"unknown vertical {value!r}; use one of {', '.join(VERTICALS)}",
            allowed=list(VERTICALS),
        )
    return value


def check_slug(value: str) -> str:
    slug = value.strip().lower()
    if not _SLUG.match(slug):
        raise _refuse(
            Code.INVALID_BUSINESS_PROFILE,
            "slug",
            "a short link name has 3 to 32 lowercase letters, digits or '-', "
            "and starts and ends with a letter or digit",
        )
    return slug


def slug_from_name(name: str, suffix: int = 0) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:26].strip("-") or "business"
    if len(base) < 3:
        base = f"{base}-biz"
    return f"{base}-{suffix}" if suffix else base


def check_hours(hours: BusinessHours) -> BusinessHours:
    try:
        ZoneInfo(hours.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _refuse(
            Code.INVALID_BUSINESS_HOURS,
            "timezone",
            f"unknown time zone {hours.timezone!r}: use an IANA name such as Europe/Berlin",
        ) from exc
    for day, intervals in hours.days.items():
        if len(intervals) > MAX_INTERVALS_PER_DAY:
            raise _refuse(
                Code.INVALID_BUSINESS_HOURS,
                day,
                f"{day} has {len(intervals)} intervals; at most {MAX_INTERVALS_PER_DAY}",
                limit=MAX_INTERVALS_PER_DAY,
            )
        last_close = -1
        for interval in intervals:
            start, end = _minutes(interval.open), _minutes(interval.close)
            if end <= start:
                raise _refuse(
                    Code.INVALID_BUSINESS_HOURS,
                    day,
                    f"{day}: {interval.open}-{interval.close} closes before it opens "
                    "(split a night across two days)",
                )
            if start < last_close:
                raise _refuse(
                    Code.INVALID_BUSINESS_HOURS,
                    day,
                    f"{day}: intervals must be sorted and must not overlap",
                )
            last_close = end
    return hours


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def open_now(hours: BusinessHours, now_ms: int) -> bool | None:
    """Whether the business is open at ``now_ms`` in its own time zone (None: by appointment)."""
    if hours.mode == "always_open":
        return True
    if hours.mode == "by_appointment":
        return None
    local = datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(ZoneInfo(hours.timezone))
    minute = local.hour * 60 + local.minute
    for interval in hours.days.get(WEEKDAYS[local.weekday()], []):  # type: ignore[call-overload]
        if _minutes(interval.open) <= minute < _minutes(interval.close):
            return True
    return False


def check_greeting(settings: GreetingSettings) -> GreetingSettings:
    text = settings.text.strip()
    if settings.enabled and not text:
        raise _refuse(
            Code.INVALID_BUSINESS_PROFILE, "greeting.text", "an enabled greeting needs text"
        )
    if len(text) > MAX_MESSAGE_TEXT:
        raise _refuse(
            Code.INVALID_BUSINESS_PROFILE,
            "greeting.text",
            f"the greeting is {len(text)} characters; at most {MAX_MESSAGE_TEXT}",
            limit=MAX_MESSAGE_TEXT,
        )
    return GreetingSettings(
        enabled=settings.enabled, text=text, inactivity_days=settings.inactivity_days
    )


def check_away(settings: AwaySettings, hours: BusinessHours) -> AwaySettings:
    text = settings.text.strip()
    if settings.enabled and not text:
        raise _refuse(
            Code.INVALID_BUSINESS_PROFILE, "away.text", "an enabled away message needs text"
        )
    if len(text) > MAX_MESSAGE_TEXT:
        raise _refuse(
            Code.INVALID_BUSINESS_PROFILE,
            "away.text",
            f"the away message is {len(text)} characters; at most {MAX_MESSAGE_TEXT}",
            limit=MAX_MESSAGE_TEXT,
        )
    start, end = settings.start, settings.end
    if settings.schedule == "custom":
        if start is None or end is None or end <= start:
            raise _refuse(
                Code.INVALID_BUSINESS_PROFILE,
                "away.schedule",
                "a custom away schedule needs start < end (milliseconds since the epoch)",
            )
    else:
        start = end = None
    if settings.enabled and settings.schedule == "outside_hours" and hours.mode != "selected_hours":
        raise _refuse(
            Code.INVALID_BUSINESS_PROFILE,
            "away.schedule",
            "'outside_hours' needs business hours in 'selected_hours' mode; set the hours first "
            "or use 'always' or 'custom'",
        )
    return AwaySettings(
        enabled=settings.enabled, text=text, schedule=settings.schedule, start=start, end=end
    )


def away_now(settings: AwaySettings, hours: BusinessHours, now_ms: int) -> bool:
    if not settings.enabled:
        return False
    if settings.schedule == "always":
        return True
    if settings.schedule == "custom":
        assert settings.start is not None and settings.end is not None
        return settings.start <= now_ms < settings.end
    return open_now(hours, now_ms) is False


def check_domain(value: str, *, allow_loopback: bool) -> str:
    domain = value.strip().lower().rstrip(".")
    if allow_loopback and _LOOPBACK.match(domain):
        return domain
    labels = domain.split(".")
    if (
        len(domain) > 253
        or len(labels) < 2
        or not all(_LABEL_HOST.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise InvalidRequest(
            f"{value!r} is not a domain name: give the website's host, e.g. shop.example.com",
            code=Code.INVALID_DOMAIN,
            field="domain",
        )
    return domain


def check_price(price: int, currency: str) -> tuple[int, str]:
    currency = currency.upper()
    if currency not in CURRENCIES:
        raise _refuse(
            Code.INVALID_PRODUCT, "currency", f"{currency!r} is not an ISO 4217 currency code"
        )
    if not 0 <= price <= MAX_PRICE:
        raise _refuse(
            Code.INVALID_PRODUCT,
            "price",
            "the price is in minor units (cents) and must be between 0 and 10^15",
        )
    return price, currency


def check_shortcut(value: str) -> str:
    shortcut = value.strip().lstrip("/").lower()
    if not shortcut or len(shortcut) > MAX_SHORTCUT or not _SHORTCUT.match(shortcut):
        raise _refuse(
            Code.INVALID_BUSINESS_PROFILE,
            "shortcut",
            f"a shortcut has 1 to {MAX_SHORTCUT} lowercase letters, digits or '_'",
            limit=MAX_SHORTCUT,
        )
    return shortcut


def check_color(value: str) -> str:
    if not _COLOR.match(value):
        raise _refuse(Code.INVALID_BUSINESS_PROFILE, "color", "a colour is '#RRGGBB'")
    return value.upper()

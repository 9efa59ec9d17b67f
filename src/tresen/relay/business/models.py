"""Bodies of the business API, validated strictly by msgspec; the exact limits (which answer
with their own stable codes) are checked in :mod:`tresen.relay.business.rules`."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

#: the Cloud API's ``vertical`` values (``whatsapp_business_profile``)
VERTICALS = (
    "UNDEFINED",
    "OTHER",
    "AUTO",
    "BEAUTY",
    "APPAREL",
    "EDU",
    "ENTERTAIN",
    "EVENT_PLAN",
    "FINANCE",
    "GROCERY",
    "GOVT",
    "HOTEL",
    "HEALTH",
    "NONPROFIT",
    "PROF_SERVICES",
    "RETAIL",
    "TRAVEL",
    "RESTAURANT",
    "NOT_A_BIZ",
    "ALCOHOL",
    "ONLINE_GAMBLING",
    "PHYSICAL_GAMBLING",
    "OTC_DRUGS",
)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
ReviewStatus = Literal["pending", "approved", "rejected"]
VerificationStatus = Literal["pending", "approved", "rejected", "revoked"]
HoursMode = Literal["selected_hours", "always_open", "by_appointment"]
AwaySchedule = Literal["always", "outside_hours", "custom"]
Availability = Literal["in_stock", "out_of_stock"]
#: generous caps so a body stays small; the product limits are checked by the rules
Text = Annotated[str, msgspec.Meta(max_length=8192)]
BlobId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
Clock = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


# ---------------------------------------------------------------- hours


class Interval(Strict):
    """Open from ``open`` to ``close`` (``HH:MM``, local time; ``close`` may be ``24:00``)."""

    open: Clock
    close: Clock


class BusinessHours(Strict):
    mode: HoursMode = "selected_hours"
    #: an IANA zone such as ``Europe/Berlin``
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    #: per weekday, up to 4 sorted non-overlapping intervals; a missing day is closed
    days: dict[Weekday, list[Interval]] = msgspec.field(default_factory=dict)


# ---------------------------------------------------------------- profile


class BusinessCreate(Strict):
    display_name: Text
    #: the short link's name (``/b/{slug}``); chosen from the display name when omitted
    slug: Text | None = None
    about: Text = ""
    address: Text = ""
    description: Text = ""
    email: Text = ""
    websites: Annotated[list[Text], msgspec.Meta(max_length=16)] = msgspec.field(
        default_factory=list
    )
    vertical: Text = "UNDEFINED"
    photo: BlobId | None = None


class BusinessUpdate(Strict):
    display_name: Text | msgspec.UnsetType = msgspec.UNSET
    slug: Text | msgspec.UnsetType = msgspec.UNSET
    about: Text | msgspec.UnsetType = msgspec.UNSET
    address: Text | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType = msgspec.UNSET
    email: Text | msgspec.UnsetType = msgspec.UNSET
    websites: Annotated[list[Text], msgspec.Meta(max_length=16)] | msgspec.UnsetType = msgspec.UNSET
    vertical: Text | msgspec.UnsetType = msgspec.UNSET
    photo: BlobId | msgspec.UnsetType | None = msgspec.UNSET


class BusinessProfile(msgspec.Struct, kw_only=True):
    """What every client sees: the public profile with the verified badge."""

    account_id: int
    display_name: str
    display_name_status: ReviewStatus
    verified: bool
    slug: str
    short_link: str
    about: str
    address: str
    description: str
    email: str
    websites: list[str]
    vertical: str
    photo: str | None
    hours: BusinessHours
    #: None when the business works by appointment
    open_now: bool | None


class GreetingSettings(Strict):
    """Sent by the business's own client to a new customer (or one silent for
    ``inactivity_days``); the relay only stores the settings."""

    enabled: bool = False
    text: Text = ""
    inactivity_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 14


class AwaySettings(Strict):
    """Sent by the business's own client while away; ``custom`` uses ``start``..``end`` (ms)."""

    enabled: bool = False
    text: Text = ""
    schedule: AwaySchedule = "outside_hours"
    start: int | None = None
    end: int | None = None


class Verification(msgspec.Struct, kw_only=True):
    id: int
    account_id: int
    legal_name: str
    registration_number: str
    domain: str
    status: VerificationStatus
    reason: str | None
    #: serve this at ``proof_url`` or as the TXT record ``proof_dns_name`` = ``proof_dns_value``
    proof_token: str
    proof_url: str
    proof_dns_name: str
    proof_dns_value: str
    proof_ok: bool
    proof_method: str | None
    proof_checked_at: int | None
    created_at: int
    decided_at: int | None


class Business(BusinessProfile, kw_only=True):
    """The business's own view: the public profile plus its private settings and reviews."""

    display_name_reason: str | None
    greeting: GreetingSettings
    away: AwaySettings
    #: whether the away message applies right now, by its schedule
    away_now: bool
    verification: Verification | None
    created_at: int
    updated_at: int


class VerificationApply(Strict):
    legal_name: Annotated[str, msgspec.Meta(min_length=2, max_length=200)]
    registration_number: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    #: the business's website domain, e.g. ``shop.example.com``
    domain: Annotated[str, msgspec.Meta(min_length=3, max_length=253)]


# ---------------------------------------------------------------- catalog


class ProductCreate(Strict):
    name: Text
    #: in minor units of ``currency`` (cents for EUR, yen for JPY)
    price: int
    currency: Annotated[str, msgspec.Meta(min_length=3, max_length=3)]
    description: Text = ""
    image: BlobId | None = None
    availability: Availability = "in_stock"
    #: the business's own product id (the Cloud API's ``product_retailer_id``)
    retailer_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None


class ProductUpdate(Strict):
    name: Text | msgspec.UnsetType = msgspec.UNSET
    description: Text | msgspec.UnsetType = msgspec.UNSET
    price: int | msgspec.UnsetType = msgspec.UNSET
    currency: Annotated[str, msgspec.Meta(min_length=3, max_length=3)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    image: BlobId | msgspec.UnsetType | None = msgspec.UNSET
    availability: Availability | msgspec.UnsetType = msgspec.UNSET
    retailer_id: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | msgspec.UnsetType | None
    ) = msgspec.UNSET


class Product(msgspec.Struct, kw_only=True):
    id: int
    business_id: int
    retailer_id: str | None
    name: str
    description: str
    price: int
    currency: str
    image: str | None
    availability: Availability
    created_at: int
    updated_at: int


class ProductPage(msgspec.Struct):
    """Oldest first; pass ``next`` as ``after`` for the following page (None at the end)."""

    items: list[Product]
    next: int | None


# ---------------------------------------------------------------- tools


class QuickReplyIn(Strict):
    #: typed after "/" in the composer: lowercase letters, digits and underscores
    shortcut: Text
    text: Text


class QuickReply(msgspec.Struct, kw_only=True):
    id: int
    shortcut: str
    text: str
    created_at: int
    updated_at: int


class LabelIn(Strict):
    name: Text
    #: ``#RRGGBB``
    color: Text = "#25D366"


class Label(msgspec.Struct, kw_only=True):
    id: int
    name: str
    color: str
    chats: int
    created_at: int


class LabelChats(msgspec.Struct):
    label_id: int
    chats: list[int]


# ---------------------------------------------------------------- people


class Person(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A person as a business sees them: the scoped id; the phone only if the person shared it."""

    scoped_id: str
    account_id: int
    phone: str | None = None
    phone_shared_at: int | None = None


class PhoneShare(msgspec.Struct):
    business_id: int
    scoped_id: str
    shared: bool


# ---------------------------------------------------------------- the operator


class Reason(Strict):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class Note(Strict):
    note: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class ProofCheck(Strict):
    method: Literal["http", "dns", "any"] = "any"


class ProofResult(msgspec.Struct, kw_only=True):
    ok: bool
    method: str | None
    detail: str
    verification: Verification


class BusinessReview(msgspec.Struct, kw_only=True):
    """A business as the operator sees it in the review queue."""

    business: BusinessProfile
    display_name_reason: str | None
    phone: str
    verification: Verification | None
    history: list[Verification]
    created_at: int

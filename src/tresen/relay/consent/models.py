"""Bodies of the consent, block, report and entry-point APIs (validated strictly by msgspec)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

#: where the person met the opt-in: the business's short link, its QR code, a form on its
#: website (that opened the app), or a prompt inside the chat
OptInSource = Literal["link", "qr", "website_form", "in_chat"]
#: marketing, or utility (which covers authentication too)
ConsentCategory = Literal["marketing", "utility"]
Categories = Annotated[list[ConsentCategory], msgspec.Meta(min_length=1, max_length=2)]
ReportReason = Literal["spam", "scam", "abuse", "impersonation", "inappropriate", "other"]
Resolution = Literal["dismissed", "no_action", "warned", "restricted", "suspended"]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class OptIn(Strict):
    categories: Categories
    source: OptInSource


class OptOut(Strict):
    """The person's "stop": both categories unless they name one."""

    categories: Categories = msgspec.field(default_factory=lambda: ["marketing", "utility"])


class BusinessOptOut(Strict):
    """A STOP keyword the business's gateway received from a person, named by account id
    (``person``) or by business-scoped user id (``user_id``)."""

    person: int | None = None
    user_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    categories: Categories = msgspec.field(default_factory=lambda: ["marketing", "utility"])
    keyword: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "STOP"


class ConsentRecord(msgspec.Struct):
    business: int
    person: int
    category: str
    opted_in: bool
    source: str
    changed_at: int
    #: the person's business-scoped user id (in the business's own views)
    user_id: str = ""


class ConsentEvent(msgspec.Struct):
    category: str
    opted_in: bool
    source: str
    actor: str
    at: int


class EntryRequest(Strict):
    """The person opened the business's chat from its short link or QR code."""

    source: Literal["link", "qr"]


class EntryWindow(msgspec.Struct):
    business: int
    person: int
    source: str
    until: int


class BlockRequest(Strict):
    account: int


class Blocked(msgspec.Struct):
    account: int
    created_at: int


class ReportedMessage(Strict):
    """A message the reporter's client decrypted and chose to attach."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    sender: int
    ts: int
    type: Annotated[str, msgspec.Meta(max_length=32)] = "text"
    text: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class ReportCreate(Strict):
    account: int
    reason: ReportReason
    comment: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    messages: Annotated[list[ReportedMessage], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )
    #: block the account in the same step
    block: bool = False


class Report(msgspec.Struct):
    id: int
    reporter: int
    reported: int
    reason: str
    comment: str
    messages: list[ReportedMessage]
    blocked: bool
    status: str
    resolution: str
    note: str
    resolved_by: str
    created_at: int
    resolved_at: int | None


class ReportResolve(Strict):
    resolution: Resolution
    note: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class ReportPage(msgspec.Struct):
    reports: list[Report]
    #: pass as ``before`` for the next (older) page; absent on the last page
    next: int | None = None


__all__ = [
    "BlockRequest",
    "Blocked",
    "BusinessOptOut",
    "ConsentEvent",
    "ConsentRecord",
    "EntryRequest",
    "EntryWindow",
    "OptIn",
    "OptOut",
    "Report",
    "ReportCreate",
    "ReportPage",
    "ReportResolve",
    "ReportedMessage",
]

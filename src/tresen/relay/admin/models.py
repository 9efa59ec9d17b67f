"""Bodies of the admin API: tokens, the audit log."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

AdminName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\w.@+-]+$")]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class AdminPrincipal(msgspec.Struct, frozen=True):
    """Who performs an admin action: a token's id and name, or the console (``admin_id`` None)
    when the operator writes to the database directly (``tresen admin token create --db``)."""

    admin_id: int | None
    name: str


class AdminTokenCreate(Strict):
    name: AdminName


class AdminTokenCreated(msgspec.Struct):
    """The new token, shown once; the relay keeps only its hash."""

    id: int
    name: str
    token: str
    created_at: int


class AdminToken(msgspec.Struct):
    id: int
    name: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None


class AuditEntry(msgspec.Struct):
    id: int
    at: int
    admin_id: int | None
    admin_name: str
    action: str
    target: str
    detail: dict[str, Any]


class AuditPage(msgspec.Struct):
    """Newest first; pass ``next`` as ``before`` for the following page (None at the end)."""

    items: list[AuditEntry]
    next: int | None

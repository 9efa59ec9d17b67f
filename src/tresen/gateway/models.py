"""The gateway's records: a business number it serves and a person it talks to."""

from __future__ import annotations

import msgspec


class Number(msgspec.Struct, kw_only=True):
    """One business number: Cloud API ids, its relay device and its webhook settings."""

    id: str  # phone_number_id
    waba_id: str
    relay_url: str
    account_id: int
    device_id: int
    device_token: str
    phone: str  # E.164 with '+'
    token_hash: str
    app_secret: str
    verify_token: str
    webhook_url: str = ""
    pin_hash: str = ""
    registered_at: int = 0
    created_at: int = 0

    @property
    def digits(self) -> str:
        """The display phone number as the Cloud API writes it (digits only)."""
        return self.phone.lstrip("+")


class Person(msgspec.Struct, kw_only=True, frozen=True):
    """A person as this business sees them: the scoped id, the phone only if shared."""

    account_id: int
    scoped_id: str
    phone: str = ""
    name: str = ""

    @property
    def wa_id(self) -> str:
        return self.phone.lstrip("+")

    @property
    def address(self) -> str:
        """What goes in ``from`` / ``recipient_id``: the phone if shared, else the scoped id."""
        return self.wa_id or self.scoped_id


class Bootstrap(msgspec.Struct, kw_only=True):
    """What ``tresen business create`` prints: everything a Cloud API client needs."""

    phone_number_id: str
    waba_id: str
    access_token: str
    app_secret: str
    verify_token: str
    base_url: str
    display_phone_number: str
    relay_account_id: int

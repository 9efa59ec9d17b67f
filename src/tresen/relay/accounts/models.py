"""Request and response bodies of the accounts API (validated strictly by msgspec)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

PresencePrivacy = Literal["everyone", "contacts", "nobody"]
Username = Annotated[str, msgspec.Meta(min_length=3, max_length=32, pattern=r"^[a-z][a-z0-9_.]*$")]
DeviceName = Annotated[str, msgspec.Meta(max_length=64)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CodeRequest(Strict):
    phone: Annotated[str, msgspec.Meta(max_length=32)]


class CodeSent(msgspec.Struct):
    phone: str
    expires_in: int


class RegisterRequest(Strict):
    phone: Annotated[str, msgspec.Meta(max_length=32)]
    code: Annotated[str, msgspec.Meta(min_length=4, max_length=12)]
    device_name: DeviceName = ""
    #: an account with this number exists: take it over (its devices are signed out)
    takeover: bool = False


class DeviceCredentials(msgspec.Struct):
    """What a new device keeps: its ids and its access token (shown once)."""

    account_id: int
    device_id: int
    token: str
    phone: str


class LinkCode(msgspec.Struct):
    code: str
    expires_in: int


class LinkRequest(Strict):
    code: Annotated[str, msgspec.Meta(min_length=4, max_length=32)]
    device_name: DeviceName = ""


class Device(msgspec.Struct):
    device_id: int
    name: str
    created_at: int
    last_seen_at: int | None
    current: bool = False


class Profile(msgspec.Struct, omit_defaults=True):
    account_id: int
    display_name: str = ""
    about: str = ""
    photo: str | None = None
    username: str | None = None
    #: the account is a business (its profile: GET /v1/business/{account_id})
    business: bool = False
    #: the business carries the operator's verified badge
    verified: bool = False


class Me(msgspec.Struct):
    account_id: int
    phone: str
    device_id: int
    display_name: str
    about: str
    photo: str | None
    username: str | None
    presence_privacy: PresencePrivacy


class ProfileUpdate(Strict):
    display_name: Annotated[str, msgspec.Meta(max_length=64)] | msgspec.UnsetType = msgspec.UNSET
    about: Annotated[str, msgspec.Meta(max_length=140)] | msgspec.UnsetType = msgspec.UNSET
    photo: Annotated[str, msgspec.Meta(max_length=128)] | msgspec.UnsetType | None = msgspec.UNSET
    username: Username | msgspec.UnsetType | None = msgspec.UNSET
    presence_privacy: PresencePrivacy | msgspec.UnsetType = msgspec.UNSET


class Contacts(Strict):
    accounts: Annotated[list[int], msgspec.Meta(max_length=5000)]


class PresenceState(msgspec.Struct, omit_defaults=True):
    account_id: int
    online: bool
    last_seen: int | None = None


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: resolved from a device token on every request and connection."""

    account_id: int
    device_id: int

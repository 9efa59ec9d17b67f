"""HTTP routes for accounts, devices, profiles, contacts and presence."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, delete, get, patch, post, put
from litestar.di import Provide
from litestar.params import Parameter

from tresen.relay.accounts.models import (
    CodeRequest,
    CodeSent,
    Contacts,
    Device,
    DeviceCredentials,
    LinkCode,
    LinkRequest,
    Me,
    PresenceState,
    Principal,
    Profile,
    ProfileUpdate,
    RegisterRequest,
)
from tresen.relay.accounts.service import AccountService
from tresen.relay.presence.service import PresenceService
from tresen.relay.transport.http import client_address, provide_principal

AUTH = {"who": Provide(provide_principal)}


@post("/accounts/code", status_code=202, summary="Send a verification code to a phone number")
async def send_code(
    request: Request[Any, Any, Any], data: CodeRequest, accounts: AccountService
) -> CodeSent:
    return await accounts.do_send_code(data.phone, client_address(request))


@post("/accounts", status_code=201, summary="Register this device with a verified phone number")
async def register(data: RegisterRequest, accounts: AccountService) -> DeviceCredentials:
    return await accounts.do_register(data.phone, data.code, data.device_name, data.takeover)


@get("/me", dependencies=AUTH, summary="The calling account and device")
async def me(who: Principal, accounts: AccountService) -> Me:
    return await accounts.access_me(who)


@patch("/me", dependencies=AUTH, summary="Change profile, username or presence privacy")
async def update_me(who: Principal, data: ProfileUpdate, accounts: AccountService) -> Me:
    return await accounts.do_update_profile(who, data)


@get("/accounts/lookup", dependencies=AUTH, summary="Find an account by phone or username")
async def lookup(
    who: Principal,
    accounts: AccountService,
    phone: str | None = Parameter(default=None, max_length=32),
    username: str | None = Parameter(default=None, max_length=32),
) -> Profile:
    return await accounts.access_lookup(phone, username)


@get("/accounts/{account_id:int}", dependencies=AUTH, summary="Public profile of an account")
async def profile(who: Principal, account_id: int, accounts: AccountService) -> Profile:
    return await accounts.access_profile(account_id)


@get(
    "/accounts/{account_id:int}/presence",
    dependencies=AUTH,
    summary="Online state and last seen, as the account's privacy setting allows",
)
async def presence(
    who: Principal, account_id: int, accounts: AccountService, presence: PresenceService
) -> PresenceState:
    return await accounts.access_presence(who, account_id, presence.is_online(account_id))


@post("/devices/link-code", dependencies=AUTH, status_code=201, summary="Code to link a device")
async def link_code(who: Principal, accounts: AccountService) -> LinkCode:
    return await accounts.do_create_link_code(who)


@post("/devices/link", status_code=201, summary="Link a new device with a code from another")
async def link(data: LinkRequest, accounts: AccountService) -> DeviceCredentials:
    return await accounts.do_link_device(data.code, data.device_name)


@get("/devices", dependencies=AUTH, summary="This account's devices")
async def devices(who: Principal, accounts: AccountService) -> list[Device]:
    return await accounts.access_devices(who)


@delete("/devices/{device_id:int}", dependencies=AUTH, summary="Sign a device out at once")
async def revoke(who: Principal, device_id: int, accounts: AccountService) -> None:
    await accounts.do_revoke_device(who, device_id)


@put("/contacts", dependencies=AUTH, summary="Replace the contact list (used for privacy)")
async def set_contacts(who: Principal, data: Contacts, accounts: AccountService) -> Contacts:
    return Contacts(accounts=await accounts.do_set_contacts(who, data.accounts))


@get("/contacts", dependencies=AUTH, summary="The contact list")
async def get_contacts(who: Principal, accounts: AccountService) -> Contacts:
    return Contacts(accounts=await accounts.access_contacts(who))


router = Router(
    path="/v1",
    tags=["accounts"],
    route_handlers=[
        send_code,
        register,
        me,
        update_me,
        lookup,
        profile,
        presence,
        link_code,
        link,
        devices,
        revoke,
        set_contacts,
        get_contacts,
    ],
)

"""HTTP routes for accounts, devices, profiles, contacts and presence."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Router, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

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
    request: Request[Any, Any, Any],
    data: JSONBody[CodeRequest],
    accounts: NamedDependency[AccountService],
) -> CodeSent:
    return await accounts.do_send_code(data.phone, client_address(request))


@post("/accounts", status_code=201, summary="Register this device with a verified phone number")
async def register(
    data: JSONBody[RegisterRequest], accounts: NamedDependency[AccountService]
) -> DeviceCredentials:
    return await accounts.do_register(data.phone, data.code, data.device_name, data.takeover)


@get("/me", dependencies=AUTH, summary="The calling account and device")
async def me(who: NamedDependency[Principal], accounts: NamedDependency[AccountService]) -> Me:
    return await accounts.access_me(who)


@patch("/me", dependencies=AUTH, summary="Change profile, username or presence privacy")
async def update_me(
    who: NamedDependency[Principal],
    data: JSONBody[ProfileUpdate],
    accounts: NamedDependency[AccountService],
) -> Me:
    return await accounts.do_update_profile(who, data)


@get("/accounts/lookup", dependencies=AUTH, summary="Find an account by phone or username")
async def lookup(
    who: NamedDependency[Principal],
    accounts: NamedDependency[AccountService],
    phone: Annotated[str | None, QueryParameter(max_length=32)] = None,
    username: Annotated[str | None, QueryParameter(max_length=32)] = None,
) -> Profile:
    return await accounts.access_lookup(phone, username)


@get("/accounts/{account_id:int}", dependencies=AUTH, summary="Public profile of an account")
async def profile(
    who: NamedDependency[Principal],
    account_id: FromPath[int],
    accounts: NamedDependency[AccountService],
) -> Profile:
    return await accounts.access_profile(account_id)


@get(
    "/accounts/{account_id:int}/presence",
    dependencies=AUTH,
    summary="Online state and last seen, as the account's privacy setting allows",
)
async def presence(
    who: NamedDependency[Principal],
    account_id: FromPath[int],
    presence: NamedDependency[PresenceService],
) -> PresenceState:
    return await presence.access_presence(who, account_id)


@post("/devices/link-code", dependencies=AUTH, status_code=201, summary="Code to link a device")
async def link_code(
    who: NamedDependency[Principal], accounts: NamedDependency[AccountService]
) -> LinkCode:
    return await accounts.do_create_link_code(who)


@post("/devices/link", status_code=201, summary="Link a new device with a code from another")
async def link(
    data: JSONBody[LinkRequest], accounts: NamedDependency[AccountService]
) -> DeviceCredentials:
    return await accounts.do_link_device(data.code, data.device_name)


@get("/devices", dependencies=AUTH, summary="This account's devices")
async def devices(
    who: NamedDependency[Principal], accounts: NamedDependency[AccountService]
) -> list[Device]:
    return await accounts.access_devices(who)


@delete("/devices/{device_id:int}", dependencies=AUTH, summary="Sign a device out at once")
async def revoke(
    who: NamedDependency[Principal],
    device_id: FromPath[int],
    accounts: NamedDependency[AccountService],
) -> None:
    await accounts.do_revoke_device(who, device_id)


@put("/contacts", dependencies=AUTH, summary="Replace the contact list (used for privacy)")
async def set_contacts(
    who: NamedDependency[Principal],
    data: JSONBody[Contacts],
    accounts: NamedDependency[AccountService],
) -> Contacts:
    return Contacts(accounts=await accounts.do_set_contacts(who, data.accounts))


@get("/contacts", dependencies=AUTH, summary="The contact list")
async def get_contacts(
    who: NamedDependency[Principal], accounts: NamedDependency[AccountService]
) -> Contacts:
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

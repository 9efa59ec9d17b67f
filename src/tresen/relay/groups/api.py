"""HTTP routes for groups: create, read, rename, members, admins and invite links."""

from __future__ import annotations

from litestar import Router, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody

from tresen.relay.accounts.models import Principal
from tresen.relay.groups.models import (
    Group,
    GroupCreate,
    GroupSummary,
    GroupUpdate,
    Invite,
    InvitePreview,
    MembersAdd,
)
from tresen.relay.groups.service import GroupService
from tresen.relay.transport.http import provide_principal

AUTH = {"who": Provide(provide_principal)}


@post("/groups", dependencies=AUTH, status_code=201, summary="Create a group; you are its admin")
async def create_group(
    who: NamedDependency[Principal],
    data: JSONBody[GroupCreate],
    groups: NamedDependency[GroupService],
) -> Group:
    return await groups.do_create(who, data)


@get("/groups", dependencies=AUTH, summary="The groups you are in")
async def list_groups(
    who: NamedDependency[Principal], groups: NamedDependency[GroupService]
) -> list[GroupSummary]:
    return await groups.access_groups(who)


@get("/groups/{group_id:int}", dependencies=AUTH, summary="A group with its members and roles")
async def get_group(
    who: NamedDependency[Principal], group_id: FromPath[int], groups: NamedDependency[GroupService]
) -> Group:
    return await groups.access_group(who, group_id)


@patch("/groups/{group_id:int}", dependencies=AUTH, summary="Rename or describe a group (admins)")
async def update_group(
    who: NamedDependency[Principal],
    group_id: FromPath[int],
    data: JSONBody[GroupUpdate],
    groups: NamedDependency[GroupService],
) -> Group:
    return await groups.do_update(who, group_id, data)


@post(
    "/groups/{group_id:int}/members",
    dependencies=AUTH,
    status_code=200,
    summary="Add members (admins)",
)
async def add_members(
    who: NamedDependency[Principal],
    group_id: FromPath[int],
    data: JSONBody[MembersAdd],
    groups: NamedDependency[GroupService],
) -> Group:
    return await groups.do_add_members(who, group_id, data.accounts)


@delete(
    "/groups/{group_id:int}/members/{account_id:int}",
    dependencies=AUTH,
    summary="Remove a member (admins), or leave (your own account)",
)
async def remove_member(
    who: NamedDependency[Principal],
    group_id: FromPath[int],
    account_id: FromPath[int],
    groups: NamedDependency[GroupService],
) -> None:
    await groups.do_remove_member(who, group_id, account_id)


@post(
    "/groups/{group_id:int}/admins/{account_id:int}",
    dependencies=AUTH,
    status_code=200,
    summary="Make a member admin (admins)",
)
async def promote(
    who: NamedDependency[Principal],
    group_id: FromPath[int],
    account_id: FromPath[int],
    groups: NamedDependency[GroupService],
) -> Group:
    return await groups.do_set_admin(who, group_id, account_id, admin=True)


@delete(
    "/groups/{group_id:int}/admins/{account_id:int}",
    dependencies=AUTH,
    status_code=200,
    summary="Dismiss an admin (admins); the last admin cannot step down",
)
async def demote(
    who: NamedDependency[Principal],
    group_id: FromPath[int],
    account_id: FromPath[int],
    groups: NamedDependency[GroupService],
) -> Group:
    return await groups.do_set_admin(who, group_id, account_id, admin=False)


@post(
    "/groups/{group_id:int}/invite",
    dependencies=AUTH,
    status_code=200,
    summary="The group's invite link, made if none is active (admins)",
)
async def create_invite(
    who: NamedDependency[Principal], group_id: FromPath[int], groups: NamedDependency[GroupService]
) -> Invite:
    return await groups.do_create_invite(who, group_id)


@delete(
    "/groups/{group_id:int}/invite",
    dependencies=AUTH,
    summary="Reset the invite link: the old one stops working (admins)",
)
async def revoke_invite(
    who: NamedDependency[Principal], group_id: FromPath[int], groups: NamedDependency[GroupService]
) -> None:
    await groups.do_revoke_invite(who, group_id)


@get("/groups/invite/{code:str}", dependencies=AUTH, summary="What an invite link leads to")
async def preview_invite(
    who: NamedDependency[Principal], code: FromPath[str], groups: NamedDependency[GroupService]
) -> InvitePreview:
    return await groups.access_invite_preview(code)


@post(
    "/groups/join/{code:str}",
    dependencies=AUTH,
    status_code=200,
    summary="Join a group through its invite link",
)
async def join(
    who: NamedDependency[Principal], code: FromPath[str], groups: NamedDependency[GroupService]
) -> Group:
    return await groups.do_join(who, code)


router = Router(
    path="/v1",
    tags=["groups"],
    route_handlers=[
        create_group,
        list_groups,
        get_group,
        update_group,
        add_members,
        remove_member,
        promote,
        demote,
        create_invite,
        revoke_invite,
        preview_invite,
        join,
    ],
)

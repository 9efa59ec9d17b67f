"""Request and response bodies of the groups API, and the notice members' devices receive."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Role = Literal["admin", "member"]
NoticeOp = Literal[
    "create", "add", "remove", "leave", "join", "name", "description", "promote", "demote"
]
GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Description = Annotated[str, msgspec.Meta(max_length=2048)]
#: a sanity bound on request size; the real limit is ``settings.max_group_members``
AccountIds = Annotated[list[int], msgspec.Meta(max_length=10_000)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class GroupCreate(Strict):
    name: GroupName
    #: the other members; the creator is added as the first admin
    members: AccountIds = []
    description: Description = ""


class GroupUpdate(Strict):
    name: GroupName | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


class MembersAdd(Strict):
    accounts: Annotated[list[int], msgspec.Meta(min_length=1, max_length=10_000)]


class Member(msgspec.Struct):
    account_id: int
    role: Role
    joined_at: int


class Group(msgspec.Struct):
    """A group as its members see it. ``epoch`` is the number of changes announced so far."""

    group_id: int
    name: str
    description: str
    created_by: int
    created_at: int
    epoch: int
    members: list[Member]


class GroupSummary(msgspec.Struct):
    """One of the caller's groups, with the caller's own role."""

    group_id: int
    name: str
    role: Role
    member_count: int
    epoch: int


class Invite(msgspec.Struct):
    code: str
    url_path: str


class InvitePreview(msgspec.Struct):
    """What a link shows before joining: no member list, only how many."""

    group_id: int
    name: str
    member_count: int


class GroupNotice(msgspec.Struct, omit_defaults=True):
    """The JSON ``body`` of a queue item of kind ``group``: one change, in ``epoch`` order.

    ``accounts`` are the accounts the change is about (for ``create`` all initial members, for
    ``name``/``description`` none); the actor is the item's ``sender``. Clients rotate their
    group session when membership changes.
    """

    op: NoticeOp
    group: int
    epoch: int
    accounts: list[int]
    name: str | None = None
    description: str | None = None

"""Pure checks of the groups service: no database, no I/O."""

from __future__ import annotations

import msgspec
import pytest

from tresen.errors import Conflict, NotFound
from tresen.protocol.codes import Code
from tresen.relay.envelopes.service import MAX_ID
from tresen.relay.groups.models import GroupCreate, GroupNotice, GroupUpdate
from tresen.relay.groups.service import (
    check_invite_code,
    check_new_members,
    check_room,
    invite_path,
    new_invite_code,
    notice_id,
)


def test_new_members_are_deduplicated_in_order_without_the_creator() -> None:
    assert check_new_members(1, [3, 2, 1, 3, 4, 2]) == [3, 2, 4]
    assert check_new_members(1, []) == []
    assert check_new_members(1, [1, 1]) == []


def test_room_up_to_the_limit() -> None:
    check_room(1023, 1, 1024)
    check_room(0, 1024, 1024)
    with pytest.raises(Conflict) as info:
        check_room(1024, 1, 1024)
    assert info.value.code == Code.GROUP_FULL
    assert info.value.status == 409
    assert info.value.fields == {"limit": 1024, "members": 1024}


def test_invite_codes_are_url_safe_and_unguessable() -> None:
    codes = {new_invite_code() for _ in range(100)}
    assert len(codes) == 100
    for code in codes:
        assert check_invite_code(code) == code
        assert len(code) >= 20
        assert invite_path(code) == f"/v1/groups/join/{code}"


@pytest.mark.parametrize(
    "code", ["", "short", "has space inside", "a/b/c/d/e/f", "x" * 65, "ü" * 10]
)
def test_impossible_invite_codes_are_unknown_links(code: str) -> None:
    with pytest.raises(NotFound) as info:
        check_invite_code(code)
    assert info.value.code == Code.UNKNOWN_GROUP


def test_notice_ids_fit_the_envelope_id_limit() -> None:
    largest = 2**63 - 1
    assert notice_id(7, 3) == "group.7.3"
    assert len(notice_id(largest, largest)) <= MAX_ID


def test_notice_json_shape() -> None:
    body = msgspec.json.encode(GroupNotice("create", 7, 1, [1, 2], name="Climbing"))
    assert msgspec.json.decode(body) == {
        "op": "create",
        "group": 7,
        "epoch": 1,
        "accounts": [1, 2],
        "name": "Climbing",
    }
    body = msgspec.json.encode(GroupNotice("name", 7, 2, [], name="Bouldering"))
    assert msgspec.json.decode(body) == {
        "op": "name",
        "group": 7,
        "epoch": 2,
        "accounts": [],
        "name": "Bouldering",
    }


def test_request_bodies_are_strict() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name": "x", "admins": [1]}', type=GroupCreate)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name": ""}', type=GroupCreate)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name": "' + b"x" * 101 + b'"}', type=GroupCreate)
    update = msgspec.json.decode(b'{"description": "rules"}', type=GroupUpdate)
    assert update.name is msgspec.UNSET
    assert update.description == "rules"

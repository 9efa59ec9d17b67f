"""Fuzzing every JSON body of the relay with hypothesis: no route answers 5xx, whatever comes.

(The fuzzer follows; first, what it found.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Harness
from tests.security._world import World, build_world
from tresen.errors import InvalidRequest


@pytest.fixture
async def world(relay: Harness) -> AsyncIterator[World]:
    built = await build_world(relay)
    try:
        yield built
    finally:
        await built.aclose()


async def test_out_of_range_ids_are_bad_requests(world: World) -> None:
    """Integers past 64 bits in a path, a body or a frame were a 500 / ``internal`` (on
    PostgreSQL so was text with NUL)."""
    huge = 2**63
    for method, path, body in [
        ("GET", f"/v1/accounts/{huge}", None),
        ("GET", f"/v1/groups/{10**30}", None),
        ("PUT", "/v1/contacts", {"accounts": [huge]}),
        ("POST", "/v1/blocks", {"account": huge}),
        ("POST", "/v1/keys/query", {"device_keys": {str(huge): []}}),
    ]:
        r = await world.alice.http.request(method, path, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request"), (path, r.text)
    conn = await world.alice.connect()  # and on the WebSocket: an error frame, not "internal"
    with pytest.raises(InvalidRequest):
        await conn.send(huge, {world.bob.device_id: b"x"})


async def test_a_field_named_like_a_service_is_a_bad_request(world: World) -> None:
    """A bad value in a body field that shares its name with one of the relay's services
    (``accounts``) was a 500: Litestar took it for a failed dependency."""
    group = world.ids["group_id"]
    for http, method, path, body in [
        (world.alice.http, "PUT", "/v1/contacts", {"accounts": None}),
        (world.alice.http, "PUT", "/v1/contacts", {"accounts": 5}),
        (world.alice.http, "POST", f"/v1/groups/{group}/members", {"accounts": "x"}),
    ]:
        r = await http.request(method, path, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_request"), (path, r.text)

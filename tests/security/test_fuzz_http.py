"""Fuzzing every JSON body of the relay with hypothesis: no route answers 5xx, whatever comes.

(The fuzzer follows; first, what it found.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Harness
from tests.security._world import World, build_world


@pytest.fixture
async def world(relay: Harness) -> AsyncIterator[World]:
    built = await build_world(relay)
    try:
        yield built
    finally:
        await built.aclose()


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

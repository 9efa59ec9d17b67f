"""Fuzzing every JSON body of the relay with hypothesis: no route answers 5xx, whatever comes.

The routes and their body schemas come from the running relay's /openapi.json. Each route is
called with its rightful principal (a person, a business or the operator, from the isolation
world, so requests get past authentication and reach real rows) and bodies that are valid by
the schema, valid with one field swapped for any JSON value, or any JSON at all (and now and
then bytes that are not JSON). Hypothesis runs in a worker thread with a plain HTTP client while
the relay serves on the test's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Harness
from tests.security._world import World, build_world
from tests.security.test_isolation import ADMIN, BUSINESS, RELAY_ROUTES, fill
from tresen.errors import InvalidRequest

#: examples per route; about 60 routes take a JSON body
EXAMPLES = 25

JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=40),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=15,
)


def resolve_refs(schema: Any, components: dict[str, Any], depth: int = 0) -> Any:
    """The schema with local ``$ref`` inlined (recursion cut at a few levels)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            if depth > 4:
                return {}
            name = schema["$ref"].rsplit("/", 1)[-1]
            return resolve_refs(components[name], components, depth + 1)
        return {k: resolve_refs(v, components, depth) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolve_refs(v, components, depth) for v in schema]
    return schema


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid by the JSON Schema subset Litestar writes for msgspec structs."""
    if not schema:
        return JSON
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            rest = {k: v for k, v in schema.items() if k != key}
            return st.one_of([from_schema({**rest, **option}) for option in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(
            min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 60), 60)
        )
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(
            from_schema(schema.get("items", {})),
            min_size=low,
            max_size=max(low, min(schema.get("maxItems", 4), 4)),
        )
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        if not properties:
            extra = schema.get("additionalProperties")
            values = from_schema(extra) if isinstance(extra, dict) else JSON
            return st.dictionaries(st.text(max_size=12), values, max_size=3)
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required},
        )
    return JSON


def bodies(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    valid = from_schema(schema)

    @st.composite
    def one_field_wrong(draw: st.DrawFn) -> Any:
        body = draw(valid)
        if isinstance(body, dict) and body:
            body[draw(st.sampled_from(sorted(body)))] = draw(JSON)
        return body

    return st.one_of(valid, one_field_wrong(), JSON)


@pytest.fixture
async def world(relay: Harness) -> AsyncIterator[World]:
    built = await build_world(relay)
    try:
        yield built
    finally:
        await built.aclose()


def fuzz_route(
    http: httpx.Client,
    method: str,
    path: str,
    concrete: str,
    headers: dict[str, str],
    schema: dict[str, Any],
    seen: list[str],
) -> None:
    """:data:`EXAMPLES` bodies on one route; every answer below 500."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies(schema), raw=st.binary(max_size=60), use_raw=st.integers(0, 9))
    def fuzz(body: Any, raw: bytes, use_raw: int) -> None:
        content = raw if use_raw == 0 else json.dumps(body).encode()  # now and then not JSON
        r = http.request(
            method,
            concrete,
            content=content,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert r.status_code < 500, (method, path, content[:300], r.text[:300])
        seen.append(str(r.status_code))

    fuzz()


def token_for(world: World, kind: str) -> str | None:
    if kind == ADMIN:
        return world.admin.headers["authorization"].removeprefix("Bearer ")
    if kind == BUSINESS:
        return world.shop.token
    return world.alice.token


async def test_no_json_body_gives_a_server_error(world: World) -> None:
    document = (await world.anonymous.get("/openapi.json")).json()
    components = document["components"]["schemas"]
    targets: list[tuple[str, str, str, dict[str, str], dict[str, Any]]] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            route = RELAY_ROUTES[(method.upper(), path)]
            schema = resolve_refs(content["application/json"]["schema"], components)
            token = token_for(world, route.kind)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            targets.append((method.upper(), path, fill(world, path, route), headers, schema))
    assert len(targets) > 40, targets
    url = world.relay.url

    def run() -> list[str]:
        seen: list[str] = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for target in targets:
                fuzz_route(http, *target, seen)
        return seen

    statuses = await asyncio.to_thread(run)
    assert len(statuses) >= len(targets) * 10
    assert {"200", "201"} & set(statuses) and "400" in statuses, sorted(set(statuses))


async def test_out_of_range_ids_are_bad_requests(world: World) -> None:
    """Integers past 64 bits in a path, a body or a frame were a 500 / ``internal`` (on
    PostgreSQL so was text with NUL)."""
    huge = 2**63
    calls: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/accounts/{huge}", None),
        ("GET", f"/v1/groups/{10**30}", None),
        ("PUT", "/v1/contacts", {"accounts": [huge]}),
        ("POST", "/v1/blocks", {"account": huge}),
        ("POST", "/v1/keys/query", {"device_keys": {str(huge): []}}),
    ]
    for method, path, body in calls:
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


async def test_admin_standing_of_a_non_business_is_not_a_business(world: World) -> None:
    """Re-rating an account that is no business (found by schemathesis) was a 500: the standing
    row it wrote had no business to belong to."""
    for account in (world.alice.account_id, 0, 999_999):
        r = await world.admin.get(f"/v1/admin/policy/{account}")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_a_business"), r.text
    r = await world.admin.get(f"/v1/admin/policy/{world.shop.account_id}")
    assert r.status_code == 200 and r.json()["business"] == world.shop.account_id, r.text

"""schemathesis against the relay's own OpenAPI document: generated requests on every route, each
with a principal that gets past authentication (the operator's token on /v1/admin, a business's
device token on /v1/business, a person's elsewhere), never make the relay answer 5xx, and every
request is answered in time.

The relay runs on port 0 with the populated isolation world (so generated ids often hit real
rows); schemathesis runs as its CLI in a subprocess, once per principal. The two routes that
would sign the caller itself out (revoking its own device or admin token) are left out: they
would turn the rest of the run into 401s.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Harness
from tests.security._world import World, build_world

CLI = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
async def world(relay: Harness) -> AsyncIterator[World]:
    built = await build_world(relay)
    try:
        yield built
    finally:
        await built.aclose()


async def schemathesis(world: World, token: str, report: Path, *filters: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "run", f"{world.relay.url}/openapi.json",
        "--checks", "not_a_server_error",
        "--header", f"Authorization: Bearer {token}",
        "--max-examples", "10", "--seed", "1", "--request-timeout", "20",
        "--phases", "examples,coverage,fuzzing",
        "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(report),
        *filters,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(600):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert "Server error" not in text
    return text


async def test_no_server_errors(world: World, tmp_path: Path) -> None:
    r = await world.anonymous.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/v1/me" in paths and "/v1/admin/tokens/{token_id}" in paths
    admin = world.admin.headers["authorization"].removeprefix("Bearer ")
    runs = [
        (admin, "admin", "--include-path-regex", "^/v1/admin/",
         "--exclude-operation-id", "V1AdminTokensTokenIdRevokeToken"),
        (world.shop.token, "business", "--include-path-regex", "^/v1/business"),
        (world.alice.token, "person", "--exclude-path-regex", "^/v1/(admin|business)",
         "--exclude-operation-id", "V1DevicesDeviceIdRevoke"),
    ]  # fmt: skip
    for token, name, *filters in runs:
        await schemathesis(world, token, tmp_path / name, *filters)
    # the principals are still who they were: nothing generated signed them out
    assert (await world.alice.http.get("/v1/me")).status_code == 200
    assert (await world.shop.http.get("/v1/business")).status_code == 200
    assert (await world.admin.get("/v1/admin/whoami")).status_code == 200

"""schemathesis against the gateway's own OpenAPI document: generated requests on every route
(with the number's token, so they get past authentication) never make the gateway answer 5xx.
The gateway runs beside a real relay on port 0; schemathesis runs as its CLI in a subprocess."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Harness
from tests.integration.gateway_harness import Business, start_gateway

CLI = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
async def biz(relay: Harness, db_url: str, tmp_path: Path) -> AsyncIterator[Business]:
    async for business in start_gateway(relay, db_url, tmp_path):
        yield business


async def test_no_server_errors(biz: Business, tmp_path: Path) -> None:
    r = await biz.http.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/{node}/messages" in paths and "/{node}/media" in paths
    assert "requestBody" in paths["/{node}/messages"]["post"]
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "run", f"{biz.url}/openapi.json",
        "--checks", "not_a_server_error",
        "--header", f"Authorization: Bearer {biz.boot.access_token}",
        "--max-examples", "30", "--seed", "1", "--request-timeout", "20",
        "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(600):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    assert "Server error" not in text

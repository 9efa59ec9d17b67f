"""``tresen business`` against a real relay: code, create (JSON credentials), list, token; the
printed credentials work against a gateway started on the same database."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from tests.conftest import POSTGRES, Harness, fresh_phone
from tresen.cli.main import app
from tresen.gateway.app import GatewayServer


async def tresen(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, app, list(args), env={})
    return result.exit_code, result.stdout, result.stderr


async def test_bootstrap_and_serve(relay: Harness, db_url: str, tmp_path: Path) -> None:
    gw_db = db_url if POSTGRES else f"sqlite:///{tmp_path}/gw.db"
    data = str(tmp_path / "gw")
    phone = fresh_phone()
    code, _, stderr = await tresen("business", "code", "--relay", relay.url, "--phone", phone)
    assert code == 0, stderr
    code, stdout, stderr = await tresen(
        "business", "create", "--relay", relay.url, "--phone", phone, "--name", "Cli Air",
        "--code", relay.sender.codes[phone], "--db", gw_db, "--data-dir", data, "--json",
        "--vertical", "TRAVEL",
    )  # fmt: skip
    assert code == 0, stderr
    boot: dict[str, Any] = json.loads(stdout)
    assert set(boot) >= {
        "phone_number_id", "waba_id", "access_token", "app_secret", "verify_token", "base_url"
    }  # fmt: skip
    assert boot["display_phone_number"] == phone.lstrip("+")
    assert (tmp_path / "gw" / f"{boot['phone_number_id']}.key").stat().st_mode & 0o077 == 0

    code, stdout, _ = await tresen("business", "list", "--db", gw_db, "--json")
    assert [n["phone_number_id"] for n in json.loads(stdout)] == [boot["phone_number_id"]]

    # a wrong code changes nothing and says what went wrong
    code, _, stderr = await tresen(
        "business", "create", "--relay", relay.url, "--phone", fresh_phone(), "--name", "X",
        "--code", "000000", "--db", gw_db, "--data-dir", data,
    )  # fmt: skip
    assert code == 1 and "error" in stderr
    code, stdout, _ = await tresen("business", "list", "--db", gw_db, "--json")
    assert len(json.loads(stdout)) == 1

    server = GatewayServer(gw_db, data)
    await server.start()
    try:
        number = boot["phone_number_id"]
        async with httpx.AsyncClient(base_url=server.url) as http:
            auth = {"Authorization": f"Bearer {boot['access_token']}"}
            r = await http.get(f"/v23.0/{number}", headers=auth)
            assert r.status_code == 200, r.text
            assert r.json()["verified_name"] == "Cli Air"
            assert r.json()["display_phone_number"] == phone
            # rotate: the running gateway takes the new token, the old one is refused
            code, stdout, _ = await tresen("business", "token", number, "--db", gw_db, "--json")
            new = json.loads(stdout)["access_token"]
            await server.gateway.refresh_numbers()
            r = await http.get(f"/v23.0/{number}", headers=auth)
            assert r.status_code == 401 and r.json()["error"]["code"] == 190
            r = await http.get(f"/{number}", headers={"Authorization": f"Bearer {new}"})
            assert r.status_code == 200, r.text
    finally:
        await server.stop()


async def test_serve_prints_its_url_and_serves(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tresen", "business", "serve", "--port", "0",
        "--db", f"sqlite:///{tmp_path}/gw.db", "--data-dir", str(tmp_path / "gw"),
        "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            started = json.loads(await proc.stdout.readline())
        assert started["phone_number_ids"] == []
        async with httpx.AsyncClient(base_url=started["base_url"]) as http:
            r = await http.get("/openapi.json")
            assert r.status_code == 200 and "/{node}/messages" in r.json()["paths"]
            r = await http.post("/v22.0/1/messages", json={})
            assert r.status_code == 401 and r.json()["error"]["code"] == 190
    finally:
        proc.terminate()
        async with asyncio.timeout(30):
            await proc.wait()

"""``tresen admin`` against a real relay: the first token straight into the database, then
review over HTTP with --url/--token (and TRESEN_ADMIN_TOKEN), tables and --json output, and
clear errors with exit codes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner

from tresen.cli.main import app

from ..conftest import Harness


async def tresen(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI in a worker thread (its HTTP calls block; the relay runs on this loop)."""
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, app, list(args), env=env or {})
    return result.exit_code, result.stdout, result.stderr


async def test_operator_flow(relay: Harness) -> None:
    db = relay.server.settings.db
    code, stdout, stderr = await tresen(
        "admin", "token", "create", "--db", db, "--name", "root", "--json"
    )
    assert code == 0, stderr
    first: dict[str, Any] = json.loads(stdout)
    assert first["name"] == "root" and first["token"].startswith("tad_")
    auth = ["--url", relay.url, "--token", first["token"]]

    owner = await relay.new_device()
    r = await owner.http.post("/v1/business", json={"display_name": "Cli Cafe"})
    assert r.status_code == 201
    r = await owner.http.post(
        "/v1/business/verification",
        json={"legal_name": "Cli Cafe Ltd", "registration_number": "42", "domain": "cli.example"},
    )
    assert r.status_code == 201

    code, stdout, _ = await tresen("admin", "business", "list", *auth)
    assert code == 0 and "Cli Cafe" in stdout and "pending" in stdout
    code, stdout, _ = await tresen("admin", "business", "list", "--json", *auth)
    assert [b["business"]["account_id"] for b in json.loads(stdout)] == [owner.account_id]

    account = str(owner.account_id)
    code, stdout, stderr = await tresen(
        "admin", "business", "approve", account, "--note", "ok", *auth
    )
    assert code == 0, stderr
    code, stdout, _ = await tresen("admin", "business", "name-approve", account, "--json", *auth)
    assert code == 0 and json.loads(stdout)["business"]["verified"] is True
    # the token can come from the environment
    env = {"TRESEN_ADMIN_TOKEN": first["token"], "TRESEN_ADMIN_URL": relay.url}
    code, stdout, _ = await tresen("admin", "business", "show", account, "--json", env=env)
    assert json.loads(stdout)["verification"]["status"] == "approved"
    code, stdout, stderr = await tresen("admin", "business", "revoke", account, env=env)
    assert code == 2 and "--reason" in stderr  # the reason is required
    code, _, stderr = await tresen("admin", "business", "approve", account, env=env)
    assert code == 1 and "already_reviewed" in stderr

    # a failed domain proof exits 3 and says why
    code, stdout, _ = await tresen(
        "admin", "business", "check-domain", account, "--method", "http", env=env
    )
    assert code == 3 and "failed" in stdout

    code, stdout, _ = await tresen(
        "admin", "audit", "--json", "--target", f"business:{owner.account_id}", env=env
    )
    actions = [e["action"] for e in json.loads(stdout)["items"]]
    assert actions == [
        "business.domain_proof.check",
        "business.display_name.approve",
        "business.verification.approve",
    ]
    code, stdout, _ = await tresen("admin", "audit", env=env)
    assert code == 0 and "action" in stdout and "root" in stdout  # a table for people

    # a second token over HTTP, listed, revoked
    code, stdout, _ = await tresen("admin", "token", "create", "--name", "bot", "--json", *auth)
    bot = json.loads(stdout)
    code, stdout, _ = await tresen("admin", "token", "list", "--json", *auth)
    assert [t["name"] for t in json.loads(stdout)] == ["root", "bot"]
    code, _, _ = await tresen("admin", "token", "revoke", str(bot["id"]), *auth)
    assert code == 0
    code, _, stderr = await tresen("admin", "audit", "--url", relay.url, "--token", bot["token"])
    assert code == 1 and "token_revoked" in stderr


async def test_cli_errors_are_clear(relay: Harness) -> None:
    code, _, stderr = await tresen("admin", "audit", "--url", relay.url)
    assert code == 2 and "TRESEN_ADMIN_TOKEN" in stderr
    person = await relay.new_device()
    code, _, stderr = await tresen("admin", "audit", "--url", relay.url, "--token", person.token)
    assert code == 1 and "admin_required" in stderr
    code, _, stderr = await tresen("admin", "audit", "--url", "http://127.0.0.1:9", "--token", "x")
    assert code == 1 and "cannot reach the relay" in stderr
    code, _, stderr = await tresen("admin", "token", "create", "--name", "x")
    assert code == 2 and "--db" in stderr
    code, _, stderr = await tresen(
        "admin", "token", "create", "--db", "sqlite:////nonexistent/r.db"
    )
    assert code == 1 and "tresen migrate" in stderr

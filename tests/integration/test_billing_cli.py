"""``tresen admin templates|reports|billing|rate-card|policy`` against a real relay."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from tresen.cli.main import app

from ..conftest import Harness
from ._policy import CONSOLE, make_business, messages, opt_in, send, template, template_body


async def tresen(*args: str) -> tuple[int, str, str]:
    """Run the CLI in a worker thread (its HTTP calls block; the relay runs on this loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env={})
    return result.exit_code, result.stdout, result.stderr


async def test_operator_commands(relay: Harness, tmp_path: Path) -> None:
    created = await relay.services.admins.do_create_token(CONSOLE, "cli")
    auth = ["--url", relay.url, "--token", created.token]
    shop = await make_business(relay, "Cli Shop")
    person = await relay.new_device()
    await opt_in(person, shop, "marketing")
    r = await shop.http.post("/v1/business/templates", json=template_body("promo", "MARKETING"))
    template_id = r.json()["id"]

    code, stdout, _ = await tresen("admin", "templates", "list", *auth)
    assert code == 0 and "promo" in stdout and "PENDING" in stdout
    code, stdout, stderr = await tresen("admin", "templates", "approve", template_id, *auth)
    assert code == 0, stderr
    code, stdout, _ = await tresen("admin", "templates", "show", template_id, "--json", *auth)
    assert json.loads(stdout)["status"] == "APPROVED"
    code, _, stderr = await tresen("admin", "templates", "approve", template_id, *auth)
    assert code == 1 and "already_reviewed" in stderr

    account = str(shop.account_id)
    code, stdout, stderr = await tresen(
        "admin", "billing", "top-up", account, "250", "--note", "wire 42", "--json", *auth
    )
    assert code == 0, stderr
    assert json.loads(stdout)["balance_minor"] == 250
    code, stdout, _ = await tresen("admin", "billing", "account", account, *auth)
    assert "2.50 EUR" in stdout

    card = tmp_path / "card.csv"
    card.write_text(
        "category,country,price_minor,currency\n"
        "MARKETING,*,20,EUR\nUTILITY,*,1,EUR\nAUTHENTICATION,*,1,EUR\n"
    )
    code, _, stderr = await tresen("admin", "rate-card", "set", str(card), *auth)
    assert code == 0, stderr
    code, stdout, _ = await tresen("admin", "rate-card", "show", *auth)
    assert "MARKETING,*,20,EUR" in stdout and "MARKETING,DE" not in stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("category,country,price_minor,currency\nMARKETING,*,x,EUR\n")
    code, _, stderr = await tresen("admin", "rate-card", "set", str(bad), *auth)
    assert code == 1 and "invalid_rate_card" in stderr

    conn, pconn = await shop.connect(), await person.connect()
    await send(conn, person, template("promo", "MARKETING"))
    await messages(pconn, 1)
    month = datetime.fromtimestamp(relay.clock.now_ms() / 1000, UTC).strftime("%Y-%m")
    out = tmp_path / "invoice.html"
    for _ in range(1000):
        code, stdout, _ = await tresen(
            "admin", "billing", "invoice", account, "--month", month, "--format", "csv", *auth
        )
        if ",20,EUR" in stdout:
            break
        await asyncio.sleep(0.02)
    assert "MARKETING,regular,DE,1,20,EUR" in stdout
    code, _, stderr = await tresen(
        "admin",
        "billing",
        "invoice",
        account,
        "--month",
        month,
        "--format",
        "html",
        "--out",
        str(out),
        *auth,
    )
    assert code == 0, stderr
    assert "Cli Shop" in out.read_text()
    pdf = tmp_path / "invoice.pdf"
    code, _, stderr = await tresen(
        "admin",
        "billing",
        "invoice",
        account,
        "--month",
        month,
        "--format",
        "pdf",
        "--out",
        str(pdf),
        *auth,
    )
    assert code == 0 and pdf.read_bytes().startswith(b"%PDF-"), stderr
    code, _, stderr = await tresen(
        "admin", "billing", "invoice", account, "--month", month, "--format", "pdf", *auth
    )
    assert code == 2 and "--out" in stderr
    code, stdout, _ = await tresen("admin", "policy", "set", account, "--throughput", "5", *auth)
    assert code == 0 and "GREEN" in stdout
    code, _, stderr = await tresen("admin", "policy", "set", account, "--tier", "TIER_9", *auth)
    assert code == 1 and "bad_request" in stderr

    r = await person.http.post("/v1/reports", json={"account": shop.account_id, "reason": "spam"})
    report = str(r.json()["id"])
    code, stdout, _ = await tresen("admin", "reports", "list", *auth)
    assert code == 0 and "spam" in stdout
    code, stdout, stderr = await tresen(
        "admin", "reports", "resolve", report, "--resolution", "warned", *auth
    )
    assert code == 0 and "resolved" in stdout, stderr
    code, _, stderr = await tresen("admin", "reports", "list")
    assert code == 2 and "no admin token" in stderr

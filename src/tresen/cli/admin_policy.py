"""``tresen admin templates|reports|billing|rate-card|policy``: the operator's side of the
business policy (docs/business-rules.md), over the admin API of a running relay.

Every command takes ``--url`` / ``--token`` (or ``TRESEN_ADMIN_URL`` / ``TRESEN_ADMIN_TOKEN``)
and prints a table, or JSON with ``--json``; errors print the relay's code and exit 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from tresen.cli.admin import DEFAULT_URL, JsonOpt, TokenOpt, UrlOpt, call, emit, err, when

templates_app = typer.Typer(help="Review message templates.", no_args_is_help=True)
reports_app = typer.Typer(help="The report queue.", no_args_is_help=True)
billing_app = typer.Typer(help="Balances, credit, usage and invoices.", no_args_is_help=True)
rates_app = typer.Typer(help="The rate card (CSV).", no_args_is_help=True)
policy_app = typer.Typer(help="Quality, messaging-limit tiers, throughput.", no_args_is_help=True)

Id = Annotated[int, typer.Argument(help="The id", min=1)]
Business = Annotated[int, typer.Argument(help="The business's account id", min=1)]
Reason = Annotated[str, typer.Option("--reason", help="Shown to the business")]


def register(admin_app: typer.Typer) -> None:
    admin_app.add_typer(templates_app, name="templates")
    admin_app.add_typer(reports_app, name="reports")
    admin_app.add_typer(billing_app, name="billing")
    admin_app.add_typer(rates_app, name="rate-card")
    admin_app.add_typer(policy_app, name="policy")


def call_text(url: str, token: str, method: str, path: str, **kwargs: Any) -> str:
    """An admin request answered with text (CSV, HTML); errors as :func:`call` prints them."""
    return call_raw(url, token, method, path, **kwargs).decode("utf-8")


def call_raw(url: str, token: str, method: str, path: str, **kwargs: Any) -> bytes:
    """An admin request answered with bytes (e.g. a PDF)."""
    if not token:
        err.print("[red]error:[/red] no admin token: pass --token or set TRESEN_ADMIN_TOKEN")
        raise typer.Exit(2)
    try:
        with httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] cannot reach the relay at {url}: {exc}. Is it running?")
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        try:
            problem = response.json()["error"]
            err.print(f"[red]error ({problem['code']}):[/red] {problem['message']}")
        except (ValueError, KeyError, TypeError):
            err.print(f"[red]error:[/red] HTTP {response.status_code}: {response.text[:500]}")
        raise typer.Exit(1)
    return response.content


def money(amount: int | None, currency: str) -> str:
    if amount is None:
        return "-"
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d} {currency}"


# ---------------------------------------------------------------- templates


def _templates(found: list[dict[str, Any]], as_json: bool) -> None:
    emit(
        found,
        as_json,
        ["id", "business", "name", "language", "category", "status", "reason", "updated"],
        [
            (
                t["id"],
                t["business"],
                t["name"],
                t["language"],
                t["category"],
                t["status"],
                t["reason"],
                when(t["updated_at"]),
            )
            for t in found
        ],
    )


@templates_app.command("list")
def templates_list(
    status: Annotated[
        str, typer.Option(help="PENDING, APPROVED, REJECTED, PAUSED, ...")
    ] = "PENDING",
    business: Annotated[int | None, typer.Option(help="Only this business")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Templates by status (default: those waiting for review)."""
    params = {"status": status.upper(), "business": business}
    _templates(call(url, token, "GET", "/v1/admin/templates", params=params), as_json)


@templates_app.command("show")
def templates_show(
    template_id: Id, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = True
) -> None:
    """One template with its components (JSON)."""
    found = call(url, token, "GET", f"/v1/admin/templates/{template_id}")
    if as_json:
        emit(found, True)
        return
    _templates([found], False)
    emit(found["components"], True)


def _review(url: str, token: str, template_id: int, body: dict[str, Any], as_json: bool) -> None:
    _templates(
        [call(url, token, "POST", f"/v1/admin/templates/{template_id}/review", body=body)], as_json
    )


@templates_app.command("approve")
def templates_approve(
    template_id: Id, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Approve a PENDING template: its business may send it from now on."""
    _review(url, token, template_id, {"status": "APPROVED"}, as_json)


@templates_app.command("reject")
def templates_reject(
    template_id: Id,
    reason: Reason,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Reject a PENDING template with a reason."""
    _review(url, token, template_id, {"status": "REJECTED", "reason": reason}, as_json)


@templates_app.command("disable")
def templates_disable(
    template_id: Id,
    reason: Reason = "",
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Disable a template (envelopes naming it are refused with 132016)."""
    path = f"/v1/admin/templates/{template_id}/disable"
    _templates([call(url, token, "POST", path, body={"reason": reason})], as_json)


@templates_app.command("reinstate")
def templates_reinstate(
    template_id: Id,
    reason: Reason = "",
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Put a paused or disabled template back to APPROVED."""
    path = f"/v1/admin/templates/{template_id}/reinstate"
    _templates([call(url, token, "POST", path, body={"reason": reason})], as_json)


# ---------------------------------------------------------------- reports


def _reports(found: list[dict[str, Any]], as_json: bool) -> None:
    emit(
        found,
        as_json,
        ["id", "reporter", "reported", "reason", "messages", "blocked", "status", "created"],
        [
            (
                r["id"],
                r["reporter"],
                r["reported"],
                r["reason"],
                len(r["messages"]),
                r["blocked"],
                r["status"] + (f" ({r['resolution']})" if r["resolution"] else ""),
                when(r["created_at"]),
            )
            for r in found
        ],
    )


@reports_app.command("list")
def reports_list(
    status: Annotated[str, typer.Option(help="open or resolved")] = "open",
    before: Annotated[int | None, typer.Option(help="Older than this report id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """The report queue, newest first."""
    page = call(
        url,
        token,
        "GET",
        "/v1/admin/reports",
        params={"status": status, "before": before, "limit": limit},
    )
    _reports(page["reports"], as_json)
    if page.get("next") and not as_json:
        err.print(f"more: --before {page['next']}")


@reports_app.command("show")
def reports_show(
    report_id: Id, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """One report with the messages the reporter attached."""
    found = call(url, token, "GET", f"/v1/admin/reports/{report_id}")
    if as_json:
        emit(found, True)
        return
    _reports([found], False)
    emit(
        found["messages"],
        False,
        ["id", "sender", "sent", "type", "text"],
        [
            (m["id"], m["sender"], when(m["ts"]), m.get("type", "text"), m.get("text", ""))
            for m in found["messages"]
        ],
    )


@reports_app.command("resolve")
def reports_resolve(
    report_id: Id,
    resolution: Annotated[
        str, typer.Option(help="dismissed, no_action, warned, restricted or suspended")
    ],
    note: Annotated[str, typer.Option(help="For the record")] = "",
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Resolve an open report (audited)."""
    body = {"resolution": resolution, "note": note}
    _reports(
        [call(url, token, "POST", f"/v1/admin/reports/{report_id}/resolve", body=body)], as_json
    )


# ---------------------------------------------------------------- billing


def _account(found: dict[str, Any], as_json: bool) -> None:
    c = found["currency"]
    emit(
        found,
        as_json,
        ["business", "balance", "credit limit", "available", "tier", "quality", "msg/s"],
        [
            (
                found["business"],
                money(found["balance_minor"], c),
                money(found["credit_limit_minor"], c),
                money(found["available_minor"], c),
                found["tier"],
                found["quality"],
                found["throughput_per_second"],
            )
        ],
    )


@billing_app.command("account")
def billing_account(
    business: Business, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Balance, credit, tier, quality and throughput of a business."""
    _account(call(url, token, "GET", f"/v1/admin/billing/{business}"), as_json)


@billing_app.command("top-up")
def billing_top_up(
    business: Business,
    amount: Annotated[int, typer.Argument(help="Minor units (cents); negative: an adjustment")],
    note: Annotated[str, typer.Option(help="e.g. the payment reference")] = "",
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Add prepaid money to a business's balance (audited)."""
    body = {"amount_minor": amount, "note": note}
    _account(call(url, token, "POST", f"/v1/admin/billing/{business}/top-up", body=body), as_json)


@billing_app.command("credit-limit")
def billing_credit_limit(
    business: Business,
    amount: Annotated[int | None, typer.Argument(help="Minor units; omit for the default")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Set what a business may owe beyond its balance (audited)."""
    path = f"/v1/admin/billing/{business}/credit-limit"
    _account(call(url, token, "PUT", path, body={"credit_limit_minor": amount}), as_json)


@billing_app.command("usage")
def billing_usage(
    business: Business,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD (UTC)")],
    end: Annotated[str, typer.Option(help="Last day, YYYY-MM-DD (UTC)")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Delivered messages by day, category and pricing type."""
    found = call(
        url,
        token,
        "GET",
        f"/v1/admin/billing/{business}/usage",
        params={"start": start, "end": end},
    )
    c = found["currency"]
    emit(
        found,
        as_json,
        ["date", "category", "pricing", "messages", "amount"],
        [
            (
                r["date"],
                r["category"],
                r["pricing_type"],
                r["messages"],
                money(r["amount_minor"], c),
            )
            for r in found["rows"]
        ]
        + [("total", "", "", found["messages"], money(found["amount_minor"], c))],
    )


@billing_app.command("invoice")
def billing_invoice(
    business: Business,
    month: Annotated[str, typer.Option(help="YYYY-MM")],
    format: Annotated[str, typer.Option("--format", help="csv, html, pdf or json")] = "csv",
    output: Annotated[Path | None, typer.Option("--out", help="Write to this file")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
) -> None:
    """A business's invoice for a calendar month."""
    if format not in ("csv", "html", "pdf", "json"):
        err.print("[red]error:[/red] --format is csv, html, pdf or json")
        raise typer.Exit(2)
    if format == "pdf" and output is None:
        err.print("[red]error:[/red] a PDF goes to a file: add --out invoice.pdf")
        raise typer.Exit(2)
    path = f"/v1/admin/billing/{business}/invoices/{month}"
    data = call_raw(url, token, "GET", path, params={"format": format})
    if output is None:
        text = data.decode("utf-8")
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_bytes(data)
        err.print(f"invoice written to {output}")


# ---------------------------------------------------------------- the rate card


@rates_app.command("show")
def rates_show(url: UrlOpt = DEFAULT_URL, token: TokenOpt = "") -> None:
    """The rate card in force, as CSV."""
    typer.echo(call_text(url, token, "GET", "/v1/admin/rate-card"), nl=False)


@rates_app.command("set")
def rates_set(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV: category,country,price_minor,currency", exists=True, dir_okay=False
        ),
    ],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
) -> None:
    """Replace the whole rate card (prices apply to messages delivered from now on)."""
    text = call_text(url, token, "PUT", "/v1/admin/rate-card", content=file.read_bytes())
    err.print(f"rate card replaced: {len(text.splitlines()) - 1} rows")


@rates_app.command("reset")
def rates_reset(url: UrlOpt = DEFAULT_URL, token: TokenOpt = "") -> None:
    """Back to the rate card packaged with this tresen."""
    text = call_text(url, token, "DELETE", "/v1/admin/rate-card")
    err.print(f"packaged rate card in force: {len(text.splitlines()) - 1} rows")


# ---------------------------------------------------------------- standing


def _standing(found: list[dict[str, Any]], as_json: bool) -> None:
    emit(
        found,
        as_json,
        [
            "business",
            "quality",
            "tier",
            "limit",
            "sends 7d",
            "blocks",
            "reports",
            "opt-outs",
            "paused",
        ],
        [
            (
                s["business"],
                s["quality"],
                s["tier"],
                s["messaging_limit"] or "unlimited",
                s["sends"],
                s["blocks"],
                s["reports"],
                s["opt_outs"],
                ", ".join(s["paused_templates"]) or "-",
            )
            for s in found
        ],
    )


@policy_app.command("show")
def policy_show(
    business: Business, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Re-rate a business now and show its quality, tier and feedback."""
    _standing([call(url, token, "GET", f"/v1/admin/policy/{business}")], as_json)


@policy_app.command("set")
def policy_set(
    business: Business,
    tier: Annotated[str | None, typer.Option(help="TIER_250, TIER_2K, ..., TIER_UNLIMITED")] = None,
    throughput: Annotated[int | None, typer.Option(help="Messages per second", min=1)] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Set a business's tier or throughput (audited)."""
    if tier is None and throughput is None:
        err.print("[red]error:[/red] give --tier and/or --throughput")
        raise typer.Exit(2)
    body = {"tier": tier, "throughput_per_second": throughput}
    _standing([call(url, token, "POST", f"/v1/admin/policy/{business}", body=body)], as_json)


@policy_app.command("sweep")
def policy_sweep(url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """Re-rate every business and end template pauses that ran out."""
    _standing(call(url, token, "POST", "/v1/admin/policy/sweep"), as_json)


__all__ = ["register"]

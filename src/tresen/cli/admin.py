"""``tresen admin``: the operator's commands.

The first admin token is made against the database (``tresen admin token create --db ...``);
every other command talks to a running relay over HTTP with ``--url`` and ``--token`` (or
``TRESEN_ADMIN_URL`` / ``TRESEN_ADMIN_TOKEN``), and prints tables, or JSON with ``--json``.

Other features add their commands to :data:`admin_app` with the helpers here:
:func:`call` (one admin request, errors turned into a clear message and exit code) and
:func:`emit` (JSON or a table).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from tresen.config import load
from tresen.errors import TresenError

admin_app = typer.Typer(
    name="admin",
    help="Operator commands: admin tokens, the audit log, business review.",
    no_args_is_help=True,
)
token_app = typer.Typer(help="Admin tokens (separate from device tokens).", no_args_is_help=True)
business_app = typer.Typer(
    help="Review businesses: verification, domain proof, display names.", no_args_is_help=True
)
admin_app.add_typer(token_app, name="token")
admin_app.add_typer(business_app, name="business")

out = Console()
err = Console(stderr=True)

UrlOpt = Annotated[
    str,
    typer.Option("--url", envvar="TRESEN_ADMIN_URL", help="The relay's base URL"),
]
TokenOpt = Annotated[
    str,
    typer.Option(
        "--token", envvar="TRESEN_ADMIN_TOKEN", help="An admin token (tad_...)", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
DEFAULT_URL = "http://127.0.0.1:8600"


def _operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "operator"


def call(
    url: str,
    token: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """One admin request; on an error print the relay's code and message and exit 1."""
    if not token:
        err.print(
            "[red]error:[/red] no admin token: pass --token or set TRESEN_ADMIN_TOKEN "
            "(make the first one with `tresen admin token create --db ...`)"
        )
        raise typer.Exit(2)
    query = {k: v for k, v in (params or {}).items() if v is not None}
    try:
        with httpx.Client(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            response = client.request(method, path, json=body, params=query)
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
    return response.json() if response.content else None


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def emit(
    data: Any, as_json: bool, columns: Sequence[str] = (), rows: Sequence[Sequence[Any]] = ()
) -> None:
    """Print ``data`` as JSON, or the given table (``columns`` + ``rows``) for people."""
    if as_json or not columns:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row))
    out.print(table)


# ---------------------------------------------------------------- tokens


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the token")] = "",
    db: Annotated[
        str | None,
        typer.Option("--db", help="Write straight to this database (for the first token)"),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", exists=True)] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Create an admin token and print it once (the relay keeps only its hash)."""
    name = name or _operator()
    if token and not db and not config:
        created = call(url, token, "POST", "/v1/admin/tokens", body={"name": name})
    else:
        created = _create_in_database(db, config, name)
    if as_json:
        emit(created, True)
        return
    out.print(f"admin token {created['id']} for {created['name']!r} (shown once, keep it safe):")
    typer.echo(created["token"])


def _create_in_database(db: str | None, config: Path | None, name: str) -> dict[str, Any]:
    from tresen.relay.admin.models import AdminPrincipal
    from tresen.relay.admin.service import do_create_token_in
    from tresen.storage.engine import open_database, sqlite_path

    if not (db or config or os.environ.get("TRESEN_DB") or os.environ.get("TRESEN_CONFIG")):
        err.print(
            "[red]error:[/red] say which database gets the token: "
            "--db sqlite:///tresen-data/relay.db (or postgresql://...) or --config FILE; "
            "or pass --token to create one through a running relay"
        )
        raise typer.Exit(2)
    try:
        settings = load(file=config, overrides={"db": db})
    except TresenError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    path = sqlite_path(settings.db)
    if path and not Path(path).exists():
        err.print(
            f"[red]error:[/red] no database at {path}: start the relay once (`tresen serve`) or "
            f"run `tresen migrate --db {settings.db}` first"
        )
        raise typer.Exit(1)
    actor = AdminPrincipal(admin_id=None, name=f"console:{_operator()}")

    async def run() -> dict[str, Any]:
        database = open_database(settings.db, sqlite_synchronous=settings.sqlite_synchronous)
        await database.open()
        try:
            await database.migrate()
            now = int(datetime.now(tz=UTC).timestamp() * 1000)
            created = await database.run_interaction(
                "create_admin_token", lambda txn: do_create_token_in(txn, actor, name, now)
            )
            return {
                "id": created.id,
                "name": created.name,
                "token": created.token,
                "created_at": created.created_at,
            }
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except TresenError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


@token_app.command("list")
def token_list(url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False) -> None:
    """List admin tokens (never the tokens themselves)."""
    tokens = call(url, token, "GET", "/v1/admin/tokens")
    emit(
        tokens,
        as_json,
        ("id", "name", "created", "last used", "revoked"),
        [
            (
                t["id"],
                t["name"],
                when(t["created_at"]),
                when(t["last_used_at"]),
                when(t["revoked_at"]),
            )
            for t in tokens
        ],
    )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (see `token list`)")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
) -> None:
    """Revoke an admin token at once."""
    call(url, token, "DELETE", f"/v1/admin/tokens/{token_id}")
    out.print(f"admin token {token_id} revoked")


# ---------------------------------------------------------------- the audit log


@admin_app.command("audit")
def audit_log(
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. business.verification.approve")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Only this target, e.g. business:42")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    before: Annotated[int | None, typer.Option(help="Entries older than this id (paging)")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Read the audit log, newest first."""
    page = call(
        url,
        token,
        "GET",
        "/v1/admin/audit",
        params={"action": action, "target": target, "limit": limit, "before": before},
    )
    emit(
        page,
        as_json,
        ("id", "when (UTC)", "admin", "action", "target", "detail"),
        [
            (
                e["id"],
                when(e["at"]),
                e["admin_name"],
                e["action"],
                e["target"],
                json.dumps(e["detail"], ensure_ascii=False),
            )
            for e in page["items"]
        ],
    )
    if not as_json and page["next"] is not None:
        err.print(f"more: --before {page['next']}")


# ---------------------------------------------------------------- businesses


def _review_rows(reviews: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for r in reviews:
        b, v = r["business"], r["verification"]
        rows.append(
            (
                b["account_id"],
                b["display_name"],
                b["display_name_status"],
                v["status"] if v else "-",
                v["domain"] if v else "-",
                ("yes" if v["proof_ok"] else "no") if v else "-",
                "yes" if b["verified"] else "no",
            )
        )
    return rows


REVIEW_COLUMNS = ("account", "display name", "name", "verification", "domain", "proof", "verified")


@business_app.command("list")
def business_list(
    status: Annotated[
        str, typer.Option(help="pending, verification_pending, name_pending, verified or all")
    ] = "pending",
    after: Annotated[int | None, typer.Option(help="Accounts after this id (paging)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Businesses waiting for review (or all of them)."""
    reviews = call(
        url,
        token,
        "GET",
        "/v1/admin/businesses",
        params={"status": status, "after": after, "limit": limit},
    )
    emit(reviews, as_json, REVIEW_COLUMNS, _review_rows(reviews))
    if not as_json and len(reviews) == limit:
        err.print(f"more: --after {reviews[-1]['business']['account_id']}")


def _show(review: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(review, True)
        return
    emit(review, False, REVIEW_COLUMNS, _review_rows([review]))
    v = review["verification"]
    if v:
        out.print(
            f"applied {when(v['created_at'])}: {v['legal_name']} ({v['registration_number']}), "
            f"domain {v['domain']}" + (f"; reason: {v['reason']}" if v["reason"] else "")
        )
    if review["display_name_reason"]:
        out.print(f"display name rejected: {review['display_name_reason']}")


Account = Annotated[int, typer.Argument(help="The business's account id")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (shown to the business)")]


@business_app.command("show")
def business_show(
    account: Account, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """One business with its verification applications."""
    _show(call(url, token, "GET", f"/v1/admin/businesses/{account}"), as_json)


@business_app.command("approve")
def business_approve(
    account: Account,
    note: Annotated[str, typer.Option(help="An internal note for the audit log")] = "",
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Approve the pending verification application."""
    path = f"/v1/admin/businesses/{account}/verification/approve"
    _show(call(url, token, "POST", path, body={"note": note}), as_json)


@business_app.command("reject")
def business_reject(
    account: Account,
    reason: ReasonOpt,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Reject the pending verification application."""
    path = f"/v1/admin/businesses/{account}/verification/reject"
    _show(call(url, token, "POST", path, body={"reason": reason}), as_json)


@business_app.command("revoke")
def business_revoke(
    account: Account,
    reason: ReasonOpt,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Revoke an approved verification (the badge goes at once)."""
    path = f"/v1/admin/businesses/{account}/verification/revoke"
    _show(call(url, token, "POST", path, body={"reason": reason}), as_json)


@business_app.command("check-domain")
def business_check_domain(
    account: Account,
    method: Annotated[str, typer.Option(help="http, dns or any")] = "any",
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Check the domain proof (HTTPS well-known file or DNS TXT) and record the result."""
    path = f"/v1/admin/businesses/{account}/verification/check-domain"
    result = call(url, token, "POST", path, body={"method": method})
    if as_json:
        emit(result, True)
    else:
        mark = "[green]passed[/green]" if result["ok"] else "[red]failed[/red]"
        out.print(
            f"domain proof for {result['verification']['domain']}: {mark} ({result['detail']})"
        )
    if not result["ok"]:
        raise typer.Exit(3)


@business_app.command("name-approve")
def business_name_approve(
    account: Account, url: UrlOpt = DEFAULT_URL, token: TokenOpt = "", as_json: JsonOpt = False
) -> None:
    """Approve the pending display name."""
    _show(call(url, token, "POST", f"/v1/admin/businesses/{account}/display-name/approve"), as_json)


@business_app.command("name-reject")
def business_name_reject(
    account: Account,
    reason: ReasonOpt,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Reject the pending display name."""
    path = f"/v1/admin/businesses/{account}/display-name/reject"
    _show(call(url, token, "POST", path, body={"reason": reason}), as_json)


__all__ = ["DEFAULT_URL", "JsonOpt", "TokenOpt", "UrlOpt", "admin_app", "call", "emit", "when"]

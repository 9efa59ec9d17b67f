"""``tresen business``: run the business gateway and bootstrap its numbers.

    tresen business code   --relay URL --phone +4930...          # the relay sends a code
    tresen business create --relay URL --phone +4930... --code 123456 --name "Acme" --json
    tresen business serve  --port 8080                            # the Cloud API + webhooks
    tresen business list | token NUMBER_ID

``create`` prints what a Cloud API client needs: ``phone_number_id``, ``waba_id``,
``access_token`` (shown once), ``app_secret``, ``verify_token`` and the base URL. The gateway
keeps its state in its own database (``--db``, SQLite by default, or PostgreSQL) and the
numbers' crypto stores with their key files in ``--data-dir``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console

from tresen.cli import run_server
from tresen.errors import TresenError

business_app = typer.Typer(
    name="business",
    help="The business gateway: a WhatsApp Cloud API-compatible API for business numbers.",
    no_args_is_help=True,
)
console = Console(stderr=True)
T = TypeVar("T")

DEFAULT_DB = "sqlite:///tresen-data/gateway.db"
DEFAULT_DIR = "tresen-data/gateway"
DbOpt = Annotated[
    str,
    typer.Option("--db", envvar="TRESEN_GATEWAY_DB", help="sqlite:///path or postgresql://…"),
]
DirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir", envvar="TRESEN_GATEWAY_DATA", help="Crypto stores and their key files"
    ),
]
RelayOpt = Annotated[
    str, typer.Option("--relay", envvar="TRESEN_RELAY_URL", help="The relay's base URL")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _run(make: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except TresenError as exc:
        console.print(f"[red]error:[/red] {exc.message} ({exc.code})")
        raise typer.Exit(1) from exc


async def _open(db_url: str) -> Any:
    from tresen.gateway import store
    from tresen.storage.engine import open_database

    db = open_database(db_url)
    await db.open()
    await store.migrate(db)
    return db


@business_app.command("code")
def request_code(
    phone: Annotated[str, typer.Option(help="The business's phone number (E.164)")],
    relay: RelayOpt = "http://127.0.0.1:8080",
) -> None:
    """Ask the relay to send a verification code to the business's phone number."""
    from tresen.client.api import RelayAPI

    async def run() -> dict[str, Any]:
        async with RelayAPI(relay) as api:
            return await api.request_code(phone)

    sent = _run(run)
    console.print(f"a code was sent to {sent['phone']}; pass it to 'tresen business create'")


@business_app.command("create")
def create(
    phone: Annotated[str, typer.Option(help="The business's phone number (E.164)")],
    name: Annotated[str, typer.Option(help="The business's display name")],
    relay: RelayOpt = "http://127.0.0.1:8080",
    code: Annotated[
        str | None, typer.Option(help="The code from 'tresen business code' (else asked)")
    ] = None,
    vertical: Annotated[str, typer.Option(help="Cloud API vertical, e.g. TRAVEL")] = "UNDEFINED",
    base_url: Annotated[str, typer.Option(help="Where 'serve' will be reachable")] = "",
    db: DbOpt = DEFAULT_DB,
    data_dir: DirOpt = Path(DEFAULT_DIR),
    as_json: JsonOpt = False,
) -> None:
    """Register a business number on the relay and create its Cloud API credentials."""
    from tresen.gateway.bootstrap import create_number

    data_dir.mkdir(parents=True, exist_ok=True)

    async def code_for(normalised: str) -> str:
        if code is not None:
            return code  # requested earlier with 'tresen business code'
        return str(typer.prompt(f"verification code sent to {normalised}")).strip()

    async def run() -> dict[str, Any]:
        database = await _open(db)
        try:
            _, shown = await create_number(
                database,
                data_dir,
                relay,
                phone,
                code_for,
                name=name,
                vertical=vertical,
                base_url=base_url,
                request_code=code is None,
            )
        finally:
            await database.close()
        result: dict[str, Any] = msgspec.to_builtins(shown)
        return result

    shown = _run(run)
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    for key, value in shown.items():
        typer.echo(f"{key:22} {value}")
    console.print("the access token is shown only once; start the gateway with 'serve'")


@business_app.command("list")
def list_numbers(db: DbOpt = DEFAULT_DB, as_json: JsonOpt = False) -> None:
    """The numbers this gateway serves."""
    from tresen.gateway import store
    from tresen.gateway.service import number_from_row

    async def run() -> list[dict[str, Any]]:
        database = await _open(db)
        try:
            rows = await database.run_interaction("gw_numbers", store.numbers, write=False)
        finally:
            await database.close()
        out = []
        for row in rows:
            n = number_from_row(row)
            out.append(
                {
                    "phone_number_id": n.id,
                    "waba_id": n.waba_id,
                    "display_phone_number": n.digits,
                    "relay": n.relay_url,
                    "relay_account_id": n.account_id,
                    "webhook_url": n.webhook_url,
                    "registered": bool(n.registered_at),
                }
            )
        return out

    numbers = _run(run)
    if as_json:
        typer.echo(json.dumps(numbers, indent=2))
        return
    for n in numbers:
        typer.echo(
            f"{n['phone_number_id']}  waba {n['waba_id']}  +{n['display_phone_number']}  "
            f"webhook {n['webhook_url'] or '-'}"
        )


@business_app.command("token")
def rotate_token(
    number: Annotated[str, typer.Argument(help="phone_number_id")],
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
) -> None:
    """Replace a number's access token (the old one stops working at the next start)."""
    from tresen.gateway import store
    from tresen.gateway.service import token_hash

    token = "TRGW" + secrets.token_urlsafe(32)

    async def run() -> int:
        database = await _open(db)
        try:
            return int(
                await database.run_interaction(
                    "gw_token", lambda txn: store.set_token(txn, number, token_hash(token))
                )
            )
        finally:
            await database.close()

    if not _run(run):
        console.print(f"[red]error:[/red] no number {number}; see 'tresen business list'")
        raise typer.Exit(1)
    typer.echo(json.dumps({"phone_number_id": number, "access_token": token}) if as_json else token)


@business_app.command("serve")
def serve(
    db: DbOpt = DEFAULT_DB,
    data_dir: DirOpt = Path(DEFAULT_DIR),
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one)")] = 8090,
    public_url: Annotated[str, typer.Option(help="The base URL clients use")] = "",
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run the gateway: the Cloud API, media, templates and the webhook worker."""
    from tresen.gateway.app import GatewayServer
    from tresen.gateway.service import GatewaySettings
    from tresen.relay.server import configure_logging

    configure_logging(log_level)
    settings = GatewaySettings(data_dir=data_dir, public_url=public_url)
    server = GatewayServer(db, data_dir, host=host, port=port, settings=settings)

    def started(s: GatewayServer) -> None:
        numbers = ", ".join(f"{n} (+{line.number.digits})" for n, line in s.gateway.lines.items())
        console.print(f"tresen business gateway on {s.url}  (OpenAPI: {s.url}/openapi.json)")
        console.print(f"numbers: {numbers or 'none yet: tresen business create'}")
        typer.echo(json.dumps({"base_url": s.url, "phone_number_ids": list(s.gateway.lines)}))

    try:
        run_server(server.serve_forever(started))
    except TresenError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot listen on {host}:{port}: {exc.strerror}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass


@business_app.command("demo")
def demo(
    port: Annotated[int, typer.Option(help="The gateway's port")] = 8090,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Keep the state here (default: temporary)")
    ] = None,
) -> None:
    """Relay + gateway with a sample business + a person who opted in, in one process."""
    from tresen.cli.business_demo import describe, run_demo

    try:
        run_server(
            run_demo(
                data_dir,
                port,
                lambda text: typer.echo(text),
                lambda message: typer.echo(f"Sheena received: {describe(message)}"),
            )
        )
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot listen on port {port}: {exc.strerror}; --port")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass

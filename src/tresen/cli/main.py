"""``tresen``: serve the relay, migrate its database, and (later) run apps and gateways."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel

from tresen import __version__
from tresen.cli import run_server
from tresen.config import Settings, load
from tresen.errors import TresenError

app = typer.Typer(
    name="tresen",
    help="tresen: open, self-hostable, end-to-end encrypted messaging.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file", exists=True)
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="sqlite:///path/relay.db (default) or postgresql://user@host/db"),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tresen {__version__}")
        raise typer.Exit


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version")
    ] = False,
) -> None:
    """tresen: open, self-hostable, end-to-end encrypted messaging."""


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load(file=config, overrides=overrides)
    except TresenError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc


def _banner(settings: Settings, url: str) -> None:
    from tresen.storage.engine import sqlite_path

    path = sqlite_path(settings.db)
    data = f"SQLite file {Path(path).resolve()}" if path else f"PostgreSQL {settings.db}"
    console.print(
        Panel.fit(
            f"[bold]tresen relay {__version__}[/bold]\n"
            f"HTTP API     {url}/v1   (OpenAPI: {url}/openapi.json, docs: {url}/docs)\n"
            f"WebSocket    {url.replace('http', 'ws', 1)}/v1/ws\n"
            f"data         {data}\n"
            f"codes        {settings.code_sender} sender"
            + (
                " (verification codes are printed here)"
                if settings.code_sender == "console"
                else ""
            )
            + "\nstop with Ctrl-C",
            title="listening",
        )
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one)")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    bus: Annotated[
        str | None,
        typer.Option(help="memory:// (one node) or nats://host:4222[/name] (many nodes)"),
    ] = None,
) -> None:
    """Run the relay (HTTP API + WebSocket) on SQLite by default."""
    from tresen.relay.server import RelayServer, configure_logging

    settings = _settings(config, host=host, port=port, db=db, bus=bus)
    configure_logging(log_level)
    server = RelayServer(settings, log_level="warning")
    try:
        run_server(server.serve_forever(lambda s: _banner(settings, s.url)))
    except TresenError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    except OSError as exc:
        console.print(
            f"[red]error:[/red] cannot listen on {settings.host}:{settings.port}: {exc.strerror}. "
            "Pick another --port."
        )
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass


@app.command()
def migrate(db: DbOpt = None, config: ConfigOpt = None) -> None:
    """Apply pending schema migrations (serve does this at start too)."""
    from tresen.storage.engine import SCHEMA_VERSION, open_database

    settings = _settings(config, db=db)

    async def run() -> tuple[list[int], int]:
        database = open_database(settings.db, sqlite_synchronous=settings.sqlite_synchronous)
        await database.open()
        try:
            applied = await database.migrate()
            return applied, await database.schema_version()
        finally:
            await database.close()

    try:
        applied, version = asyncio.run(run())
    except TresenError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    what = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
    console.print(f"schema version {version} (code knows {SCHEMA_VERSION}): {what}")


def _register_admin() -> None:
    from tresen.cli.admin import admin_app

    app.add_typer(admin_app, name="admin")
    from tresen.cli.admin_policy import register

    register(admin_app)  # templates, reports, billing, rate-card, policy (issue 4 part B)


_register_admin()


def _register_business() -> None:
    from tresen.cli.business import business_app

    app.add_typer(business_app, name="business")  # the gateway (issue 5)


_register_business()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)

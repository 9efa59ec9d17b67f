"""A live gateway beside the test relay: one business number, people as real SecureDevices,
and a webhook receiver that checks signatures (used by the gateway and pywa tests)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.conftest import POSTGRES, Harness, fresh_phone
from tresen.client.secure import Message, SecureDevice
from tresen.gateway.app import GatewayServer
from tresen.gateway.bootstrap import create_number
from tresen.gateway.models import Bootstrap


class Uvicorn:
    """Any ASGI app on 127.0.0.1, port 0."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            assert not self.task.done(), self.task
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()


@dataclass
class Receiver:
    """A webhook endpoint that checks the signature like Meta's clients and keeps the events."""

    app_secret: str
    verify_token: str
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    bodies: list[bytes] = field(default_factory=list)
    fail_next: int = 0
    rejected: int = 0

    def app(self) -> Starlette:
        async def verify(request: Request) -> Response:
            q = request.query_params
            if q.get("hub.mode") == "subscribe" and q.get("hub.verify_token") == self.verify_token:
                return PlainTextResponse(q.get("hub.challenge", ""))
            return PlainTextResponse("Forbidden", status_code=403)

        async def post(request: Request) -> Response:
            body = await request.body()
            header = request.headers.get("x-hub-signature-256", "")
            want = hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()
            if header != f"sha256={want}":
                self.rejected += 1
                return PlainTextResponse("bad signature", status_code=403)
            if self.fail_next > 0:
                self.fail_next -= 1
                return PlainTextResponse("try later", status_code=500)
            self.bodies.append(body)
            await self.events.put(json.loads(body))
            return PlainTextResponse("ok")

        return Starlette(routes=[Route("/hook", verify), Route("/hook", post, methods=["POST"])])

    async def next(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event whose value has ``kind`` (``messages`` or ``statuses``)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                value = event["entry"][0]["changes"][0]["value"]
                if kind in value:
                    return value


@dataclass
class Business:
    relay: Harness
    server: GatewayServer
    boot: Bootstrap
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.server.url

    async def send(self, body: dict[str, Any], version: str = "v22.0") -> httpx.Response:
        return await self.http.post(f"/{version}/{self.boot.phone_number_id}/messages", json=body)


async def start_gateway(
    relay: Harness, db_url: str, tmp: Path, **settings: Any
) -> AsyncIterator[Business]:
    from tresen.gateway.service import GatewaySettings
    from tresen.gateway.webhooks.outbox import RetryPolicy

    gw_db = db_url if POSTGRES else f"sqlite:///{tmp}/gateway.db"
    retry = RetryPolicy(base_seconds=0.05, cap_seconds=0.2, **settings)
    server = GatewayServer(gw_db, tmp / "gw", settings=GatewaySettings(tmp / "gw", retry=retry))
    await server.start()

    async def code(phone: str) -> str:
        return relay.sender.codes[phone]

    assert server.app.db is not None
    number, boot = await create_number(
        server.app.db,
        tmp / "gw",
        relay.url,
        fresh_phone(),
        code,
        name="Acme Air",
        vertical="TRAVEL",
        base_url=server.url,
    )
    await server.gateway.open_line(number)
    headers = {"Authorization": f"Bearer {boot.access_token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
        try:
            yield Business(relay, server, boot, http)
        finally:
            await server.stop()


async def person(relay: Harness, tmp: Path, name: str = "Sheena") -> SecureDevice:
    handle = await relay.new_device()
    await handle.http.patch("/v1/me", json={"display_name": name})
    secure = SecureDevice.open(handle.sdk, tmp / f"{handle.account_id}.crypto", passphrase="pw")
    await secure.start()
    return secure


async def next_message(device: SecureDevice, timeout: float = 10.0) -> Message:
    async with asyncio.timeout(timeout):
        while True:
            event = await device.recv(None)
            if isinstance(event, Message):
                return event

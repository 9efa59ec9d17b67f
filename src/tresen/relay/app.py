"""The composition root: builds the store, bus, writer and services, and the ASGI app.

One place constructs everything; the lifespan opens and closes it in order. ``/v1/ws`` goes
straight to the WebSocket endpoint (the hot path, no framework in between); every other request
goes to Litestar, which validates bodies and publishes the OpenAPI document at /openapi.json.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Router, get
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from tresen import API_FEATURE_LEVEL, __version__
from tresen.bus import BusEvent, open_bus
from tresen.bus.events import DevicesChanged
from tresen.config import Settings
from tresen.protocol.frames import PROTOCOL_VERSION
from tresen.relay.accounts.api import router as accounts_router
from tresen.relay.accounts.senders import CodeSender, build_sender
from tresen.relay.accounts.service import AccountService, DeviceDirectory
from tresen.relay.admin.service import AdminService
from tresen.relay.business import routes as business_routes
from tresen.relay.business.notify import BusinessNotifier
from tresen.relay.business.review import BusinessReviewService
from tresen.relay.business.service import BusinessService
from tresen.relay.business.tools import BusinessToolsService
from tresen.relay.clock import Clock
from tresen.relay.envelopes.service import EnvelopeService
from tresen.relay.envelopes.writer import Writer
from tresen.relay.groups.api import router as groups_router
from tresen.relay.groups.service import GroupService
from tresen.relay.keys.api import router as keys_router
from tresen.relay.keys.service import KeyService
from tresen.relay.media.api import router as media_router
from tresen.relay.media.blobs import FileBlobStore, default_media_dir
from tresen.relay.media.service import MediaService, limits_of
from tresen.relay.policy import routes as policy_routes
from tresen.relay.presence.service import PresenceService
from tresen.relay.services import Services
from tresen.relay.transport.http import EXCEPTION_HANDLERS
from tresen.relay.transport.ws import Hub, Message, Receive, Scope, Send_, websocket_endpoint
from tresen.storage.engine import open_database

log = logging.getLogger("tresen.relay")


class Info(msgspec.Struct):
    name: str
    version: str
    api_feature_level: int
    protocol_version: int
    max_devices: int
    max_envelope_bytes: int
    max_group_members: int
    #: the largest upload per media kind, in bytes
    media_max_bytes: dict[str, int]


async def build_services(
    settings: Settings, *, clock: Clock | None = None, code_sender: CodeSender | None = None
) -> Services:
    """Open the database (migrating it) and the bus, and wire every service. Caller closes."""
    clock = clock or Clock()
    db = open_database(
        settings.db,
        sqlite_synchronous=settings.sqlite_synchronous,
        pool_size=settings.postgres_pool_size,
    )
    await db.open()
    await db.migrate()
    bus = open_bus(settings.bus, presence_ttl=settings.presence_ttl_seconds)
    await bus.start()
    writer = Writer(db, bus, clock, ttl_ms=settings.envelope_ttl_seconds * 1000)
    directory = DeviceDirectory(db)

    def on_relay_event(event: BusEvent) -> None:
        if isinstance(event, DevicesChanged):  # from any node: drop the cached device list
            directory.forget(event.account)

    bus.subscribe("relay", on_relay_event)
    sender = code_sender or build_sender(settings.code_sender, settings.code_webhook_url)
    accounts = AccountService(db, bus, settings, clock, sender, directory)
    keys = KeyService(db, bus, settings)
    groups = GroupService(db, settings, clock, writer, directory)
    policy = policy_routes.build_gate(db, bus, settings, clock, writer, directory)
    envelopes = EnvelopeService(db, settings, clock, writer, directory, groups, policy)
    presence = PresenceService(
        bus, clock, accounts, directory, groups, policy, book=getattr(bus, "book", None)
    )
    blobs = FileBlobStore(settings.media_dir or default_media_dir(settings.db))
    media = MediaService(db, settings, clock, blobs, directory)
    admins = AdminService(db, clock)
    business = BusinessService(db, settings, clock, BusinessNotifier(bus, writer, directory))
    rules = policy_routes.build_policy(policy, db, settings, clock, business)
    await rules.start()
    writer.start()
    envelopes.start()
    media.start()
    presence.start()
    return Services(
        settings=settings,
        clock=clock,
        db=db,
        bus=bus,
        writer=writer,
        directory=directory,
        accounts=accounts,
        keys=keys,
        groups=groups,
        envelopes=envelopes,
        presence=presence,
        admins=admins,
        business=business,
        business_review=BusinessReviewService(business),
        business_tools=BusinessToolsService(business),
        media=media,
        policy=policy,
        consent=rules.consent,
        templates=rules.templates,
        billing=rules.billing,
        quality=rules.quality,
    )


async def close_services(services: Services) -> None:
    await services.presence.close()
    await services.quality.close()
    await services.policy.close()
    await services.media.close()
    await services.envelopes.close()
    await services.writer.close()
    await services.bus.close()
    await services.db.close()
    await services.accounts.sender.aclose()


class RelayApp:
    """The relay's ASGI application. ``services`` exists between startup and shutdown."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        code_sender: CodeSender | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.code_sender = code_sender
        self.hub = Hub(settings)
        self._services: Services | None = None
        self.http = self._build_http()

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("the relay is not started")
        return self._services

    @asynccontextmanager
    async def lifespan(self, _: Litestar) -> AsyncIterator[None]:
        self._services = await build_services(
            self.settings, clock=self.clock, code_sender=self.code_sender
        )
        try:
            yield
        finally:
            await self.hub.close_all()
            await close_services(self._services)
            self._services = None

    def _build_http(self) -> Litestar:
        def provider(name: str) -> Provide:
            return Provide(lambda: getattr(self.services, name), sync_to_thread=False)

        settings = self.settings

        @get("/v1/info", summary="Relay version, protocol and limits", tags=["relay"])
        async def info() -> Info:
            return Info(
                name="tresen",
                version=__version__,
                api_feature_level=API_FEATURE_LEVEL,
                protocol_version=PROTOCOL_VERSION,
                max_devices=settings.max_devices,
                max_envelope_bytes=settings.max_envelope_bytes,
                max_group_members=settings.max_group_members,
                media_max_bytes={str(k): v for k, v in limits_of(settings).items()},
            )

        @get("/healthz", summary="Liveness", tags=["relay"], include_in_schema=False)
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @get("/openapi.json", include_in_schema=False, summary="This API's OpenAPI document")
        async def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
            schema: dict[str, Any] = request.app.openapi_schema.to_schema()
            return schema

        http = Litestar(
            route_handlers=[
                info,
                healthz,
                openapi,
                accounts_router,
                keys_router,
                groups_router,
                media_router,
            ],
            dependencies={
                name: provider(name)
                for name in ("accounts", "keys", "groups", "envelopes", "presence", "media")
            },
            exception_handlers=EXCEPTION_HANDLERS,
            lifespan=[self.lifespan],
            openapi_config=OpenAPIConfig(
                title="tresen relay",
                version=__version__,
                description="Accounts, devices, key directory and groups. "
                "Envelopes travel over the WebSocket at /v1/ws (see docs/protocol.md).",
                path="/docs",
            ),
            debug=False,
        )
        # business accounts and the operator (issue 4): routers with their own services
        http.register(
            Router(
                path="/",
                route_handlers=business_routes.ROUTERS,
                dependencies={name: provider(name) for name in business_routes.SERVICES},
            )
        )
        # consent, blocks, reports, templates, limits, billing (issue 4 part B)
        http.register(
            Router(
                path="/",
                route_handlers=policy_routes.ROUTERS,
                dependencies={name: provider(name) for name in policy_routes.SERVICES},
            )
        )
        return http

    async def __call__(self, scope: Scope, receive: Receive, send: Send_) -> None:
        if scope["type"] == "websocket":
            if scope["path"] == "/v1/ws":
                await websocket_endpoint(self.services, self.hub, scope, receive, send)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 4404, "reason": "not found"})
            return
        await self.http(scope, receive, send)  # type: ignore[arg-type]


__all__ = ["Message", "RelayApp", "build_services", "close_services"]

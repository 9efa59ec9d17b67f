"""The gateway's composition root: database, :class:`Gateway`, routes, server.

``GatewayApp`` is an ASGI app: it strips the Graph version prefix (``/v22.0``, ``/v26.0``; any
``vNN.N``) and hands the request to Litestar, whose exception handlers answer every error in the
Graph envelope. ``GatewayServer`` runs it under uvicorn on a socket (port 0 picks one).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import msgspec
import uvicorn
from litestar import Litestar, Request, Response, get
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import (
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    Scope,
    Send,
)
from typing_extensions import override

from tresen import __version__
from tresen.errors import TresenError
from tresen.gateway import store
from tresen.gateway.cloudapi import account, api, templates
from tresen.gateway.cloudapi.errors import GraphError, from_relay, unknown_node
from tresen.gateway.cloudapi.models import openapi_bodies
from tresen.gateway.cloudapi.params import MAX_BODY, bearer_token, is_form, json_body
from tresen.gateway.send import do_send
from tresen.gateway.service import Gateway, GatewaySettings
from tresen.httpguard import GuardedHttp
from tresen.runtime import settle_heap
from tresen.storage.engine import Database, open_database

log = logging.getLogger("tresen.gateway.http")
VERSION = re.compile(rb"^/v\d{1,3}\.\d{1,3}(?=/)")
MESSAGES = re.compile(r"^/([^/]+)/messages$")


def _graph(exc: GraphError) -> Response[Any]:
    return Response(exc.body(), status_code=exc.status)


def on_graph(_: Request[Any, Any, Any], exc: GraphError) -> Response[Any]:
    return _graph(exc)


def on_tresen(_: Request[Any, Any, Any], exc: TresenError) -> Response[Any]:
    return _graph(from_relay(exc))


def graph_error(exc: Exception, method: str, path: str) -> GraphError:
    """What an error answers: a Graph error as it is, a relay error mapped, anything else
    logged and 131000."""
    if isinstance(exc, GraphError):
        return exc
    if isinstance(exc, TresenError):
        return from_relay(exc)
    log.exception("unhandled error on %s %s", method, path)
    return GraphError(131000, "internal error; the gateway logged the details")


def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code == 404:
        return _graph(unknown_node(request.url.path.strip("/")))
    if exc.status_code == 405:
        return _graph(GraphError(100, f"{request.method} is not supported on this path"))
    if exc.status_code == 413:
        return _graph(GraphError(131053, "the request is too large"))
    return _graph(GraphError(100, str(exc.detail)))


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return _graph(graph_error(exc, request.method, request.url.path))


class GatewayApp:
    def __init__(
        self,
        db_url: str,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] = time.time,
        max_upload_bytes: int = 100 * 1024 * 1024 + 65536,
    ) -> None:
        self.db_url = db_url
        self.settings = settings
        self.clock = clock
        self.db: Database | None = None
        self.gateway: Gateway | None = None
        self.http = self._build(max_upload_bytes)

    @asynccontextmanager
    async def lifespan(self, _: Litestar) -> AsyncIterator[None]:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = open_database(self.db_url, sqlite_synchronous=self.settings.sqlite_synchronous)
        await db.open()
        try:
            await store.migrate(db)
            gateway = Gateway(db, self.settings, clock=self.clock)
            await gateway.start()
        except BaseException:
            await db.close()
            raise
        self.db, self.gateway = db, gateway
        try:
            yield
        finally:
            await gateway.close()
            await db.close()
            self.gateway = None

    def _provide(self) -> Gateway:
        assert self.gateway is not None
        return self.gateway

    def _build(self, max_upload_bytes: int) -> Litestar:
        @get("/openapi.json", include_in_schema=False, summary="This API's OpenAPI document")
        async def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
            return openapi_bodies(request.app.openapi_schema.to_schema())

        @get("/healthz", include_in_schema=False)
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        return Litestar(
            route_handlers=[openapi, healthz, *api.ROUTES, *templates.ROUTES, *account.ROUTES],
            dependencies={"gateway": Provide(self._provide, sync_to_thread=False)},
            exception_handlers={
                GraphError: on_graph,
                TresenError: on_tresen,
                HTTPException: on_http,
                Exception: on_unexpected,
            },
            lifespan=[self.lifespan],
            request_max_body_size=max_upload_bytes,
            logging_config=None,  # the CLI configures logging; a library leaves it alone
            openapi_config=OpenAPIConfig(
                title="tresen business gateway (WhatsApp Cloud API compatible)",
                version=__version__,
                description="Graph-shaped routes; any /vNN.N prefix; Bearer access token. "
                "See docs/gateway.md.",
                path="/docs",
            ),
            debug=False,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            raw = scope.get("raw_path") or scope["path"].encode()
            match = VERSION.match(raw)
            if match:
                scope = cast(Scope, {**scope, "path": scope["path"][match.end() :]})
                scope["raw_path"] = raw[match.end() :]
            http = cast(HTTPScope, scope)
            if http["method"] == "POST" and not http["query_string"] and self.gateway:
                node = MESSAGES.match(http["path"])
                headers = dict(http["headers"])
                if node and not is_form(headers.get(b"content-type", b"").decode("latin-1")):
                    await self._post_messages(node[1], headers, receive, send)
                    return
        await self.http(scope, receive, send)

    async def _post_messages(
        self, node: str, headers: dict[bytes, bytes], receive: Receive, send: Send
    ) -> None:
        """``POST /{node}/messages`` with a JSON body, the hot path, straight on ASGI: the
        same steps and answers as the route (api.send_message) without the framework's
        per-request work, about a tenth of the gateway's CPU per message (bench/README.md)."""
        gateway = self.gateway
        assert gateway is not None
        status, answer = 200, b""
        try:
            body, more = bytearray(), True
            while more:  # at most one byte past MAX_BODY: json_body refuses it
                event = await receive()
                if event["type"] != "http.request":
                    return  # the client went away
                body += event.get("body", b"")
                more = event.get("more_body", False) and len(body) <= MAX_BODY
            token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
            line = gateway.access_phone(token, node)
            answer = msgspec.json.encode(await do_send(gateway, line, json_body(bytes(body))))
        except Exception as exc:
            error = graph_error(exc, "POST", f"/{node}/messages")
            status, answer = error.status, msgspec.json.encode(error.body())
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(answer)).encode()),
            ],
        }
        await send(start)
        done: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": answer,
            "more_body": False,
        }
        await send(done)


class _OneWrite(asyncio.Transport):
    """A connection's transport whose writes of one loop turn leave in one ``writelines``.

    uvicorn writes a response's status line and headers, then its body: two segments, and two
    wakeups and reads for the client, where one does. Held bytes leave at the end of the loop
    turn, or before the connection closes.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes | bytearray | memoryview] = []

    @override
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(data if isinstance(data, bytes) else bytes(data))  # may be reused

    @override
    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.writelines(held)

    @override
    def close(self) -> None:
        self._flush()
        self._transport.close()

    @override
    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    @override
    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    @override
    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    @override
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    @override
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    @override
    def pause_reading(self) -> None:
        self._transport.pause_reading()

    @override
    def resume_reading(self) -> None:
        self._transport.resume_reading()

    @override
    def is_reading(self) -> bool:
        return self._transport.is_reading()

    @override
    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._held)

    @override
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    @override
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    @override
    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class _HttpProtocol(GuardedHttp):
    """The guarded HTTP protocol the relay serves with too (deadlines for a request's head and
    body, 408 and a close past them), answering each response in one socket write and refusing
    in the Graph error envelope."""

    @override
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, self.loop))

    @override
    def refusal(self, status: int, message: str) -> tuple[str, bytes]:
        error = GraphError(100, f"{message}; send the whole request promptly", status=status)
        return "application/json", msgspec.json.encode(error.body())


class GatewayServer:
    """A gateway listening on a socket; ``url`` is its base URL (also when asked for port 0)."""

    def __init__(
        self,
        db_url: str,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: GatewaySettings | None = None,
        clock: Callable[[], float] = time.time,
        log_level: str = "warning",
    ) -> None:
        self.settings = settings or GatewaySettings(data_dir=Path(data_dir))
        self.app = GatewayApp(db_url, self.settings, clock=clock)
        self.host, self.port_wanted = host, port
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            lifespan="on",
            http=_HttpProtocol,
            ws="none",  # the gateway serves no WebSockets
            log_level=log_level,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        self.sock: socket.socket | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self.sock is not None
        return f"http://{self.host}:{self.sock.getsockname()[1]}"

    @property
    def gateway(self) -> Gateway:
        assert self.app.gateway is not None
        return self.app.gateway

    async def start(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port_wanted))
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError("the gateway stopped during startup")
            await asyncio.sleep(0.01)
        if not self.settings.public_url:
            self.gateway.base_url = self.url

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
            self.task = None
        if self.sock is not None:
            self.sock.close()

    async def serve_forever(
        self, on_started: Callable[[GatewayServer], None] | None = None
    ) -> None:
        await self.start()
        settle_heap()  # a server process from here on: see tresen.runtime
        if on_started:
            on_started(self)
        assert self.task is not None
        await self.task

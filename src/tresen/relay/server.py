"""Run the relay under uvicorn: one function for the CLI, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import uvicorn

from tresen.config import Settings
from tresen.httpguard import guarded_http_protocol
from tresen.relay.accounts.senders import CodeSender
from tresen.relay.app import RelayApp
from tresen.relay.clock import Clock
from tresen.relay.transport.wsnative import native_protocol
from tresen.runtime import settle_heap


def uvicorn_config(
    app: RelayApp, settings: Settings, *, log_level: str = "warning"
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        http=guarded_http_protocol(settings),
        ws=native_protocol(app) if settings.websocket == "native" else "websockets-sansio",
        ws_max_size=settings.max_frame_bytes + 1024,
        ws_ping_interval=settings.heartbeat_seconds,
        ws_ping_timeout=settings.heartbeat_seconds,
        ws_per_message_deflate=False,
        log_level=log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )


class RelayServer:
    """A relay listening on a socket; ``port`` is the bound port (also when asked for 0)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        code_sender: CodeSender | None = None,
        log_level: str = "warning",
    ) -> None:
        self.app = RelayApp(settings, clock=clock, code_sender=code_sender)
        self.settings = settings
        self.server = uvicorn.Server(uvicorn_config(self.app, settings, log_level=log_level))
        self.server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        self.task: asyncio.Task[None] | None = None
        self.sock: socket.socket | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        assert self.sock is not None
        if self._port is None:
            self._port = int(self.sock.getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.settings.host, self.settings.port))
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError("the relay stopped during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
            self.task = None
        if self.sock is not None:
            self.sock.close()

    async def serve_forever(self, on_started: Callable[[RelayServer], None] | None = None) -> None:
        await self.start()
        settle_heap()  # a server process from here on: see tresen.runtime
        if on_started:
            on_started(self)
        assert self.task is not None
        await self.task


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )

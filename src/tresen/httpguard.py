"""uvicorn's HTTP protocol with deadlines on what the client sends: slow-loris is cut off.

The relay and the business gateway both serve HTTP through it (the gateway's answers in the
Graph error envelope, :meth:`GuardedHttp.refusal`).

uvicorn reads a request head for as long as the client takes, and a body too: a client sending a
byte every few seconds holds its socket (and its share of the process) for ever. Here:

- the head (request line and headers; a WebSocket upgrade too) must arrive whole within
  ``request_head_timeout_seconds`` of the connection or of its first byte on a kept-alive one,
  and be at most :data:`MAX_HEAD_BYTES`; else ``408`` / ``431`` and the socket is closed;
- a body must keep coming: it may take ``receive_timeout_seconds`` plus one second for every
  ``receive_min_bytes_per_second`` bytes received (Apache's ``mod_reqtimeout`` rule), not
  counting time while the relay itself holds reading back; else ``408`` and closed;
- when the answer is sent before the body was read (``413`` on a ``Content-Length`` too large),
  the rest is read and dropped for at most :data:`LINGER_SECONDS`, then the socket is closed, so a
  huge body never streams on once refused;
- a ``408`` / ``431`` is a lingering close too: the answer, then end-of-stream, then whatever still
  comes is read and dropped for at most :data:`LINGER_SECONDS`. Closing at once with unread bytes
  (or bytes still on the way) makes the kernel answer them with a reset, which can reach the client
  before it has read the answer, and the client then sees only "connection reset".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Literal

from typing_extensions import override
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tresen.config import Settings

log = logging.getLogger("tresen.http")

MAX_HEAD_BYTES = 64 * 1024
LINGER_SECONDS = 2.0

Phase = Literal["idle", "head", "body", "linger"]


class GuardedHttp(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with one timer per connection for the phase it is in."""

    head_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 10.0
    min_rate: ClassVar[float] = 500.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase: Phase = "idle"
        self.since = 0.0  # when the phase began (the body: when it last started again)
        self.got = 0  # head or body bytes received in this phase
        self.guard: asyncio.TimerHandle | None = None
        self.refused = False  # answered by the guard itself: what still comes is dropped

    # ------------------------------------------------------------ the phases

    def _enter(self, phase: Phase, delay: float) -> None:
        self.phase, self.since, self.got = phase, self.loop.time(), 0
        if self.guard is not None:
            self.guard.cancel()
        self.guard = self.loop.call_later(delay, self._on_guard) if phase != "idle" else None

    def _on_guard(self) -> None:
        self.guard = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.phase == "head" and not self.got:  # never said anything: hang up
            self.phase = "idle"
            self.transport.close()
        elif self.phase == "head":
            self._refuse(408, "the request head did not arrive in time")
        elif self.phase == "linger":
            self.transport.close()
        elif self.phase == "body":
            cycle: RequestResponseCycle | None = self.cycle
            if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
                # the relay holds reading back (or has not asked for the body yet)
                self.since, self.got = now, 0
            deadline = self.since + self.body_timeout + self.got / self.min_rate
            if now < deadline:
                self.guard = self.loop.call_later(deadline - now, self._on_guard)
                return
            self._refuse(408, "the request body did not keep coming")

    def refusal(self, status: int, message: str) -> tuple[str, bytes]:
        """The content type and body of the guard's own ``408`` / ``431``."""
        return "text/plain; charset=utf-8", f"{message}\n".encode()

    def _refuse(self, status: int, message: str) -> None:
        log.debug("closing an HTTP connection: %s", message)
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            content_type, body = self.refusal(status, message)
            head = (
                f"HTTP/1.1 {status} {'Request Timeout' if status == 408 else 'Too Large'}\r\n"
                f"content-type: {content_type}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's own answer, if any, goes nowhere
            cycle.message_event.set()
        if not self.transport.can_write_eof():
            self.phase = "idle"
            self.transport.close()
            return
        self.refused = True
        self.transport.write_eof()
        self.flow.resume_reading()
        self._enter("linger", LINGER_SECONDS)

    # ------------------------------------------------------------ uvicorn's hooks

    @override
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter("head", self.head_timeout)

    @override
    def connection_lost(self, exc: Exception | None) -> None:
        if self.guard is not None:
            self.guard.cancel()
            self.guard = None
        super().connection_lost(exc)

    @override
    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.phase == "head":
            self.got += len(data)
        super().data_received(data)
        if self.phase == "head" and self.got > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(431, "request head too large")

    @override
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.phase == "idle":  # a kept-alive connection's next request
            self._enter("head", self.head_timeout)

    @override
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.phase == "head":
            self._enter("body", self.body_timeout)

    @override
    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self.phase == "body":
            self.got += len(body)

    @override
    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._enter("idle", 0)

    @override
    def on_response_complete(self) -> None:
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and cycle.more_body and self.phase == "body":
            self._enter("linger", LINGER_SECONDS)
        super().on_response_complete()

    @override
    def handle_websocket_upgrade(self) -> None:
        self._enter("idle", 0)  # the WebSocket protocol keeps its own clocks from here
        super().handle_websocket_upgrade()


def guarded_http_protocol(settings: Settings) -> type[GuardedHttp]:
    """The HTTP protocol class to give uvicorn (``Config(http=...)``), with ``settings``' limits."""
    attrs = {
        "head_timeout": settings.request_head_timeout_seconds,
        "body_timeout": settings.receive_timeout_seconds,
        "min_rate": float(max(1, settings.receive_min_bytes_per_second)),
    }
    return type("GuardedHttp", (GuardedHttp,), attrs)


__all__ = ["GuardedHttp", "guarded_http_protocol"]

"""The device WebSocket as uvicorn's WebSocket protocol: RFC 6455 straight off the socket.

uvicorn parses the HTTP request and, for an upgrade, hands the socket to the class that
:func:`native_protocol` builds. From there no ASGI messages are made: frames are parsed by
:mod:`wsframes` in ``data_received``, whole messages are queued for the connection's reader,
and its answers leave with one ``writelines`` per flush. This halves the transport's cost per
frame against uvicorn's own WebSocket protocols (see bench/README.md).

Flow control both ways: when a client sends faster than the relay handles its frames, reading
from its socket pauses; when it reads slower than the relay writes, the writer waits. A peer
silent for a heartbeat period gets a ping; if nothing comes back by the next one, it is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from http import HTTPStatus
from typing import Any, ClassVar, Protocol, cast

from typing_extensions import override

from tresen.protocol.codec import server_codec
from tresen.protocol.frames import SUBPROTOCOLS
from tresen.relay.services import Services
from tresen.relay.transport import wsframes as wf
from tresen.relay.transport.ws import Connection, Hub, choose_subprotocol

log = logging.getLogger("tresen.ws")

PATH = "/v1/ws"
INBOX_HIGH = 64  # messages waiting for the reader before the socket is paused


class Endpoint(Protocol):
    """What the protocol needs from the app: its services (once started) and its hub."""

    @property
    def services(self) -> Services: ...

    @property
    def hub(self) -> Hub: ...


class NativeWebSocket(asyncio.Protocol):
    """One device socket after the HTTP upgrade; also the :class:`~ws.Link` its connection uses."""

    endpoint: ClassVar[Endpoint]

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any] | None = None,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.loop = _loop or asyncio.get_running_loop()
        self.connections: set[Any] = server_state.connections
        self.heartbeat = float(getattr(config, "ws_ping_interval", None) or 30.0)
        self.max_message = int(getattr(config, "ws_max_size", 1 << 20))
        self.transport: asyncio.Transport | None = None
        self.handshake: wf.ServerHandshake | None = wf.ServerHandshake()
        self.reader: wf.FrameReader | None = None
        self.binary = True
        self.inbox: deque[bytes | int] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.pending: list[bytes] = []
        self.drained: asyncio.Future[None] | None = None
        self.paused_reading = False
        self.paused_writing = False
        self.gone = False  # the socket is closed (or closing): nothing more in or out
        self.close_sent = False
        self.last_heard = 0.0
        self.ping_at = 0.0  # when the heartbeat's ping went out; 0: none outstanding
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.conn: Connection | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()

    # ------------------------------------------------------------ asyncio.Protocol

    @override
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.connections.add(self)
        self.last_heard = self.loop.time()

    @override
    def data_received(self, data: bytes) -> None:
        if self.gone:
            return
        self.last_heard = self.loop.time()
        if self.reader is None:
            self._handshake(data)
            return
        try:
            events = self.reader.feed(data)
        except wf.ProtocolError as exc:
            log.debug("closing a WebSocket: %s", exc)
            self._send_close(exc.close_code, str(exc))
            self._abort()
            return
        woke = False
        for event in events:
            if isinstance(event, wf.Message):
                self.inbox.append(event.data)
                woke = True
            elif isinstance(event, wf.TooLarge):
                self.inbox.append(event.size)
                woke = True
            elif isinstance(event, wf.Ping):
                self._raw(wf.frame(wf.OP_PONG, event.data))
            elif isinstance(event, wf.Pong):
                pass  # hearing anything (a pong too) is what the heartbeat looks for
            else:  # Close: answer it and hang up
                code = event.code if event.code != 1005 else wf.NORMAL
                self._send_close(code, "")
                self._abort()
                return
        if woke:
            self._wake()
            if len(self.inbox) >= INBOX_HIGH and not self.paused_reading:
                self.paused_reading = True
                self.transport.pause_reading()  # type: ignore[union-attr]

    @override
    def eof_received(self) -> bool | None:
        return None  # close the transport

    @override
    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        self._wake()
        if not self.lost.done():
            self.lost.set_result(None)
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    @override
    def pause_writing(self) -> None:
        self.paused_writing = True

    @override
    def resume_writing(self) -> None:
        self.paused_writing = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: tell the device to reconnect (1012), then hang up."""
        if self.conn is not None:
            self.conn.close(1012, "relay restarting")
        else:
            self._abort()

    # ------------------------------------------------------------ the opening handshake

    def _handshake(self, data: bytes) -> None:
        assert self.handshake is not None
        try:
            done = self.handshake.feed(data)
            if done is None:
                return
            request, rest = done
            if request.path != PATH:
                raise wf.HandshakeError(HTTPStatus.NOT_FOUND, f"no WebSocket at {request.path}")
            accept = wf.check_upgrade(request)
            chosen, refusal = choose_subprotocol(request.tokens("sec-websocket-protocol"))
            if refusal is not None:
                raise wf.HandshakeError(HTTPStatus.BAD_REQUEST, refusal)
            try:
                services = self.endpoint.services
            except RuntimeError:
                raise wf.HandshakeError(
                    HTTPStatus.SERVICE_UNAVAILABLE, "the relay is starting or stopping; retry"
                ) from None
        except wf.HandshakeError as exc:
            self._raw(wf.http_response(exc.status, exc.headers, f"{exc}\n".encode()))
            self._abort()
            return
        self.handshake = None
        self._raw(wf.switching_protocols(accept, chosen))
        codec = server_codec(SUBPROTOCOLS[chosen] if chosen else "msgpack")  # type: ignore[arg-type]
        self.binary = codec.format == "msgpack"
        self.reader = wf.FrameReader(max_message=self.max_message)
        self.timer = self.loop.call_later(self.heartbeat, self._tick)
        conn = self.conn = Connection(services, self.endpoint.hub, self, codec)
        self.task = self.loop.create_task(self._run(conn))
        if rest:
            self.data_received(rest)

    async def _run(self, conn: Connection) -> None:
        try:
            await conn.serve()
        except Exception:
            log.exception("WebSocket connection failed")
        finally:
            if not self.gone:
                self._send_close(wf.NORMAL, "")
                self._abort()

    def _tick(self) -> None:
        """Heartbeat: ping a peer silent for a period; drop it if nothing came back by the next."""
        now = self.loop.time()
        if self.ping_at and self.last_heard < self.ping_at:
            log.debug("dropping a WebSocket silent for %.0fs", now - self.last_heard)
            self._abort()
            return
        self.ping_at = 0.0
        if now - self.last_heard >= self.heartbeat:
            self.ping_at = now
            self._raw(wf.frame(wf.OP_PING, b"hb"))
        self.timer = self.loop.call_later(self.heartbeat, self._tick)

    # ------------------------------------------------------------ the Link the connection uses

    async def receive(self) -> bytes | int | None:
        while not self.inbox:
            if self.gone:
                return None
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        if self.paused_reading and len(self.inbox) <= INBOX_HIGH // 2:
            self.paused_reading = False
            if not self.gone:
                self.transport.resume_reading()  # type: ignore[union-attr]
        return self.inbox.popleft()

    def write(self, data: bytes) -> None:
        self.pending.append(wf.frame(wf.OP_BINARY if self.binary else wf.OP_TEXT, data))

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        if self.gone:
            return
        if pending:
            self.transport.writelines(pending)  # type: ignore[union-attr]
        if self.paused_writing:
            self.drained = self.loop.create_future()
            await self.drained

    async def close(self, code: int, reason: str) -> None:
        await self.flush()
        self._send_close(code, reason)
        if not self.gone:
            # give the peer a moment to answer the close before hanging up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), 2.0)
            self._abort()

    # ------------------------------------------------------------ helpers

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _raw(self, data: bytes) -> None:
        if not self.gone and self.transport is not None:
            self.transport.write(data)

    def _send_close(self, code: int, reason: str) -> None:
        if not self.close_sent and self.reader is not None:
            self.close_sent = True
            self._raw(wf.close_frame(code, reason))

    def _abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.gone = True
        self._wake()


def native_protocol(endpoint: Endpoint) -> type[NativeWebSocket]:
    """The protocol class to give uvicorn (``Config(ws=...)``), bound to one app."""
    return type("NativeWebSocket", (NativeWebSocket,), {"endpoint": endpoint})


__all__ = ["NativeWebSocket", "native_protocol"]

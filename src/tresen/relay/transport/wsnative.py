"""The device WebSocket as uvicorn's WebSocket protocol: RFC 6455 straight off the socket.

uvicorn parses the HTTP request and, for an upgrade, hands the socket to the class that
:func:`native_protocol` builds. From there no ASGI messages are made: frames are parsed by
:mod:`wsframes` in ``data_received``, whole messages are queued for the connection's reader,
and its answers leave with one ``writelines`` per flush. This halves the transport's cost per
frame against uvicorn's own WebSocket protocols (see bench/README.md).

Flow control both ways: when a client sends faster than the relay handles its frames, reading
from its socket pauses; when it reads slower than the relay writes, the writer waits. A peer
silent for a heartbeat period gets a ping; if nothing comes back by the next one, it is dropped.

Limits (docs/operations.md): the upgrade is counted per client address and per node (the
:class:`~ws.Hub` refuses past them with 429 / 503); a frame header announcing more than
``max_frame_skip_bytes`` closes with 1009 before its payload is read; a message that has begun
must keep coming at ``receive_min_bytes_per_second`` after ``receive_timeout_seconds`` (else close
4408); control frames count against the same frame buckets as data frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
from collections import deque
from http import HTTPStatus
from typing import Any, ClassVar, Protocol, cast

from typing_extensions import override
from uvicorn.protocols.utils import get_remote_addr

from tresen.protocol.codec import server_codec
from tresen.protocol.frames import SUBPROTOCOLS
from tresen.relay.services import Services
from tresen.relay.transport import wsframes as wf
from tresen.relay.transport.ws import Connection, Hub, choose_subprotocol

log = logging.getLogger("tresen.ws")

PATH = "/v1/ws"
INBOX_HIGH = 64  # messages waiting for the reader before the socket is paused


class TrustedProxies:
    """uvicorn's ``forwarded_allow_ips``: the peers whose ``X-Forwarded-For`` names the client
    (the same rule uvicorn applies to HTTP requests, so one client has one address)."""

    def __init__(self, spec: tuple[str, ...]) -> None:
        self.everyone = "*" in spec
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()
        for item in spec:
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.names.add(item)

    def __contains__(self, host: str) -> bool:
        if self.everyone or host in self.names:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The peer, or behind trusted proxies the nearest hop of ``X-Forwarded-For`` that is
        not one of them."""
        if not forwarded_for or peer not in self:
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop not in self:
                return hop
        return hops[0] if hops else peer


@functools.cache
def trusted_proxies(spec: tuple[str, ...]) -> TrustedProxies:
    return TrustedProxies(spec)


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
        allowed = getattr(config, "forwarded_allow_ips", None) or ""
        items = allowed if isinstance(allowed, list) else str(allowed).split(",")
        spec = tuple(i.strip() for i in items if i.strip())
        self.proxies = trusted_proxies(spec) if getattr(config, "proxy_headers", False) else None
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
        self.address: str | None = None  # counted in the hub from the upgrade to the close
        # a message that has begun must keep coming (see _check_stall); set at the upgrade
        self.receive_timeout = 10.0
        self.min_rate = 500.0
        self.partial_since = 0.0  # when the message now pending began; 0: none pending
        self.partial_bytes = 0
        self.stall_timer: asyncio.TimerHandle | None = None

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
                # a ping flood costs the sender's buckets; over them (or while the peer does
                # not read) it goes unanswered rather than piling pongs up in memory
                if self._charge() and not self.paused_writing:
                    self._raw(wf.frame(wf.OP_PONG, event.data))
            elif isinstance(event, wf.Pong):
                self._charge()  # hearing anything (a pong too) is what the heartbeat looks for
            else:  # Close: answer it and hang up
                code = event.code if event.code != 1005 else wf.NORMAL
                self._send_close(code, "")
                self._abort()
                return
        self._time_partial(len(data), woke)
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
        if self.address is not None:
            self.endpoint.hub.release(self.address)
            self.address = None
        if self.timer is not None:
            self.timer.cancel()
        if self.stall_timer is not None:
            self.stall_timer.cancel()
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
            peer = get_remote_addr(self.transport) if self.transport is not None else None
            address = peer[0] if peer else "unknown"
            if self.proxies is not None:
                address = self.proxies.client(address, request.headers.get("x-forwarded-for", ""))
            full = self.endpoint.hub.admit(address)  # the last check: counted from here on
            if full is not None:
                status, reason = full
                raise wf.HandshakeError(HTTPStatus(status), reason, {"Retry-After": "5"})
            self.address = address
        except wf.HandshakeError as exc:
            self._raw(wf.http_response(exc.status, exc.headers, f"{exc}\n".encode()))
            self._abort()
            return
        self.handshake = None
        self._raw(wf.switching_protocols(accept, chosen))
        codec = server_codec(SUBPROTOCOLS[chosen] if chosen else "msgpack")  # type: ignore[arg-type]
        self.binary = codec.format == "msgpack"
        settings = services.settings
        self.reader = wf.FrameReader(
            max_message=self.max_message, refuse_above=settings.max_frame_skip_bytes
        )
        self.receive_timeout = settings.receive_timeout_seconds
        self.min_rate = float(max(1, settings.receive_min_bytes_per_second))
        self.timer = self.loop.call_later(self.heartbeat, self._tick)
        conn = self.conn = Connection(services, self.endpoint.hub, self, codec, address)
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

    def _charge(self) -> bool:
        """Count a control frame against the frame buckets; ``False``: over them, drop it."""
        return self.conn is None or not self.conn.charge()[0]

    def _time_partial(self, n: int, completed: bool) -> None:
        """After ``n`` bytes were read: start, go on or stop timing the message now pending.

        The clock restarts with each whole data message (a control frame in between does not
        restart it), so only a message that stops coming is timed out, never a slow stream of
        whole ones."""
        assert self.reader is not None
        reader = self.reader
        if completed:
            self.partial_since = 0.0
        if not (reader.buffer or reader.in_message or reader.skip_left):
            self.partial_since = 0.0
        elif not self.partial_since:
            self.partial_since, self.partial_bytes = self.loop.time(), 0
            if self.stall_timer is None:
                self.stall_timer = self.loop.call_later(self.receive_timeout, self._check_stall)
        else:
            self.partial_bytes += n

    def _check_stall(self) -> None:
        """Close a socket whose pending message has not kept coming (slow-loris mid-frame)."""
        self.stall_timer = None
        if self.gone or not self.partial_since:
            return
        now = self.loop.time()
        if self.paused_reading:  # the relay is behind, not the peer: start again
            self.partial_since, self.partial_bytes = now, 0
        deadline = self.partial_since + self.receive_timeout + self.partial_bytes / self.min_rate
        if now < deadline:
            self.stall_timer = self.loop.call_later(deadline - now, self._check_stall)
            return
        log.debug("closing a WebSocket whose message stopped coming (%d bytes)", self.partial_bytes)
        self._send_close(4408, "message too slow")
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

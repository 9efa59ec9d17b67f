"""A lean HTTP/1.1 client for webhook deliveries: POST a body, read the status and a little text.

Why not aiohttp: every message causes two signed status webhooks, and aiohttp's request
machinery (URL objects, header multidicts, a stream reader, a timer context per request) was
≈ 23 % of the gateway's CPU per message (bench/README.md). A delivery needs far less: one
pre-built write per request, the answer parsed in C by httptools (llhttp, which also parses
uvicorn's requests), connections kept alive per origin. ``bench/webhook_client.py`` compares the
two.

Rules, as aiohttp and browsers keep them:

- at most ``concurrency`` connections per origin (scheme, host, port); a request waits for one;
- a connection is reused only after its answer was read whole and allowed keep-alive; idle ones
  are closed after ``idle_seconds`` (below the 5 s that uvicorn and Node keep them);
- a reused connection that ends before any byte of the answer was closed by the server while
  idle: the request goes once more on a fresh connection. Never after an answer began;
- one deadline per request covers waiting for a connection, connecting (with TLS) and the answer;
- redirects are not followed (a 3xx is an answer like any other).

Errors (``str()`` reads well after the class name, as a delivery's ``last_error`` shows them)::

    WebhookError
    ├── InvalidURL      the callback URL cannot be used (not http(s), no host, bad port)
    ├── ConnectError    resolving, TCP or TLS failed: nothing was sent
    ├── Timeout         no complete answer before the deadline
    └── ProtocolError   the answer was not HTTP, or the connection closed before it ended
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Final, cast
from urllib.parse import quote, unquote, urlsplit

import httptools
from typing_extensions import override

USER_AGENT: Final = "tresen-gateway"
TEXT_BYTES: Final = 200  # of an answer's body kept for the caller
DRAIN_BYTES: Final = 64 * 1024  # read past that to keep the connection; beyond, close it
IDLE_SECONDS: Final = 4.0

_FRAMING: Final = frozenset((b"content-length", b"transfer-encoding"))
_HOST = re.compile(r"[a-z0-9\-._~!$&'()*+,;=%]+")
_PATH_SAFE: Final = "/%:@!$&'()*+,;=~?[]"  # what stays as it is in a request target


class WebhookError(Exception):
    """The root of the errors below."""


class InvalidURL(WebhookError):
    pass


class ConnectError(WebhookError):
    pass


class Timeout(WebhookError):
    pass


class ProtocolError(WebhookError):
    def __init__(self, message: str, *, unanswered: bool = False) -> None:
        super().__init__(message)
        self.unanswered = unanswered  # the connection ended before any byte of an answer


class Target:
    """What a URL gives: the origin to connect to and the fixed start of each request."""

    __slots__ = ("head", "host", "origin", "port", "tls", "where")

    def __init__(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"not a usable URL: {exc}") from None
        scheme = parts.scheme
        if not scheme:
            raise InvalidURL("not an absolute http(s) URL")
        if scheme not in ("http", "https"):
            raise InvalidURL(f"unsupported scheme {scheme!r} (http or https)")
        host = _host(parts.hostname or "")
        if port == 0:
            raise InvalidURL("port 0 is not a port")
        literal = f"[{host}]" if ":" in host else host
        self.tls = scheme == "https"
        self.host = host
        self.port = port or (443 if self.tls else 80)
        self.origin = (scheme, host, self.port)
        self.where = f"{literal}:{self.port}"
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_PATH_SAFE)
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {literal}" + (f":{port}" if port else ""),
            f"User-Agent: {USER_AGENT}",
        ]
        if parts.username is not None:  # credentials in the URL: Basic auth, as aiohttp does
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            lines.append(f"Authorization: Basic {base64.b64encode(user.encode()).decode()}")
        self.head = ("\r\n".join(lines) + "\r\n").encode("ascii")

    def request(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        """The whole request, for one write. ``headers`` must not set Host, Content-Length,
        Transfer-Encoding or Connection (the client does); a CR or LF in them is refused."""
        block = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if block.count("\n") != len(headers) or block.count("\r") != len(headers):
            raise ValueError("a header name or value holds a line break")
        return b"".join(
            (self.head, block.encode("latin-1"), b"Content-Length: %d\r\n\r\n" % len(body), body)
        )


def _host(host: str) -> str:
    """The host to connect to and to name in ``Host``: lower case, IDNA for names."""
    if not host:
        raise InvalidURL("no host in the URL")
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise InvalidURL(f"{host!r} is not an IPv6 address") from None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURL(f"{host!r} is not a valid host name") from None
    if not _HOST.fullmatch(host):
        raise InvalidURL(f"{host!r} is not a valid host name")
    return host


class _Connection(asyncio.Protocol):
    """One connection: its transport, a response parser and the answer being awaited.

    The parser calls back into this object (``on_*``); the answer is a future that gets
    ``(status, first TEXT_BYTES of the body as text)`` or one of the errors above.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str) -> None:
        self.loop = loop
        self.where = where
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, str]] | None = None
        self.status = 0
        self.text = b""
        self.seen = 0  # body bytes of this answer
        self.received = False  # any byte of this answer
        self.framed = False  # Content-Length or Transfer-Encoding: the body does not end at EOF
        self.done = False  # the answer was read whole
        self.keep_alive = False
        self.broken = False  # something after the answer, or it was given up: do not reuse
        self.lost = False
        self.idle_since = 0.0

    # -------------------------------------------------------- the client's side

    def send(self, request: bytes) -> asyncio.Future[tuple[int, str]]:
        answer: asyncio.Future[tuple[int, str]] = self.loop.create_future()
        self.answer = answer
        self.status = self.seen = 0
        self.text = b""
        self.received = self.framed = self.done = self.keep_alive = False
        if self.lost or self.transport is None or self.transport.is_closing():
            answer.set_exception(self._unanswered())
        else:
            self.transport.write(request)
        return answer

    def reusable(self) -> bool:
        return self.done and self.keep_alive and not (self.broken or self.lost)

    def usable(self, now: float, idle_seconds: float) -> bool:
        """Whether an idle connection may take a request."""
        transport = self.transport
        return (
            not self.lost
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < idle_seconds
        )

    def expire(self, seconds: float) -> None:
        """The deadline passed while waiting for the answer."""
        self.abort(Timeout(f"no complete answer from {self.where} within {seconds:g} s"))

    def abort(self, error: WebhookError) -> None:
        self._fail(error)
        self.close()

    def close(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.close()

    def _unanswered(self) -> ProtocolError:
        return ProtocolError(
            f"{self.where} closed the connection before answering", unanswered=True
        )

    def _finish(self) -> None:
        answer = self.answer
        if answer is not None and not answer.done():
            answer.set_result((self.status, self.text.decode("utf-8", "replace")))

    def _fail(self, error: WebhookError) -> None:
        answer = self.answer
        if answer is not None and not answer.done():
            answer.set_exception(error)

    # -------------------------------------------------------- asyncio's side

    @override
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    @override
    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.done:  # bytes nobody asked for: no longer trusted
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            reason = str(exc) or type(exc).__name__
            self._fail(ProtocolError(f"{self.where} answered something else than HTTP: {reason}"))
            self.close()

    @override
    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.answer is None or self.answer.done():
            return
        if not self.received:
            self._fail(self._unanswered())
        elif self.status and not self.framed:  # the body ran until the end of the connection
            self.done = True
            self._finish()
        else:
            self._fail(ProtocolError(f"{self.where} closed the connection during the answer"))

    # -------------------------------------------------------- httptools' side

    def on_message_begin(self) -> None:
        if self.done:  # a second answer to one request
            self.broken = True
        self.framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in _FRAMING:
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:  # a 1xx is followed by the real answer
            self.status = status
            self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.seen += len(body)
        if len(self.text) < TEXT_BYTES:
            self.text += body[: TEXT_BYTES - len(self.text)]
        elif self.seen > DRAIN_BYTES and not self.broken:  # not worth reading on: give up
            self._finish()
            self.close()

    def on_message_complete(self) -> None:
        if self.status and not self.done:
            self.done = True
            self._finish()


class _Pool:
    """The connections to one origin: ``busy`` slots (in use or being opened) plus ``idle``
    ones never exceed ``limit``; a request without a slot waits in ``waiters``, first come
    first served, and a released slot passes straight to the next waiter."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int, idle_seconds: float) -> None:
        self.loop = loop
        self.limit = limit
        self.idle_seconds = idle_seconds
        self.idle: list[_Connection] = []  # most recently used last
        self.busy = 0
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.sweeper: asyncio.TimerHandle | None = None
        self.every: set[_Connection] = set()

    def take(self) -> tuple[bool, _Connection | None]:
        """(True, an idle connection or None to open one), or (False, None): wait."""
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if conn.usable(now, self.idle_seconds):
                self.busy += 1
                return True, conn
            self.drop(conn)
        if self.busy < self.limit:
            self.busy += 1
            return True, None
        return False, None

    async def wait(self, deadline: float, seconds: float, where: str) -> _Connection | None:
        slot: asyncio.Future[_Connection | None] = self.loop.create_future()
        self.waiters.append(slot)

        def expire() -> None:
            if not slot.done():
                message = f"no free connection to {where} within {seconds:g} s"
                slot.set_exception(Timeout(message))

        timer = self.loop.call_at(deadline, expire)
        try:
            return await slot
        except BaseException:
            if slot.done() and not slot.cancelled() and slot.exception() is None:
                self.release(slot.result(), reuse=True)  # handed over as we were cancelled
            raise
        finally:
            timer.cancel()

    def release(self, conn: _Connection | None, reuse: bool) -> None:
        """Give a slot back: its connection goes to the next waiter or to the idle ones."""
        if conn is not None and not (reuse and conn.reusable()):
            self.drop(conn)
            conn = None
        while self.waiters:
            slot = self.waiters.popleft()
            if not slot.done():
                slot.set_result(conn)
                return
        self.busy -= 1
        if conn is not None:
            conn.answer = None
            conn.idle_since = self.loop.time()
            self.idle.append(conn)
            if self.sweeper is None:
                self.sweeper = self.loop.call_later(self.idle_seconds, self.sweep)

    def sweep(self) -> None:
        """Close the connections idle for too long (the oldest are first in ``idle``)."""
        self.sweeper = None
        now = self.loop.time()
        keep = [c for c in self.idle if c.usable(now, self.idle_seconds)]
        for conn in self.idle:
            if conn not in keep:
                self.drop(conn)
        self.idle = keep
        if keep:
            due = keep[0].idle_since + self.idle_seconds - now
            self.sweeper = self.loop.call_later(max(due, 0.01), self.sweep)

    def drop(self, conn: _Connection) -> None:
        conn.close()
        self.every.discard(conn)

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        while self.waiters:
            slot = self.waiters.popleft()
            if not slot.done():
                slot.set_exception(ProtocolError("the webhook client was closed"))
        for conn in list(self.every):
            conn.abort(ProtocolError("the webhook client was closed"))
            self.drop(conn)
        self.idle.clear()


class WebhookClient:
    """POST bodies to webhook URLs; one per outbox, made in (and bound to) the running loop.

    ``ssl_context`` defaults to :func:`ssl.create_default_context` (certificates verified
    against the system's CAs, host names checked); tests pass one that trusts their own CA.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        concurrency: int = 16,
        idle_seconds: float = IDLE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if concurrency < 1 or timeout <= 0:
            raise ValueError("concurrency must be at least 1 and the timeout positive")
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.concurrency = concurrency
        self.idle_seconds = idle_seconds
        self._ssl = ssl_context
        self._targets: dict[str, Target] = {}
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._closed = False

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        """POST ``body``; returns the status and the first 200 bytes of the answer's body as
        text. Raises :class:`WebhookError` (see the module docstring)."""
        if self._closed:
            raise RuntimeError("the webhook client is closed")
        target = self._targets.get(url) or self._target(url)
        request = target.request(body, headers)
        loop = self.loop
        deadline = loop.time() + self.timeout
        pool = self._pools.get(target.origin)
        if pool is None:
            pool = self._pools[target.origin] = _Pool(loop, self.concurrency, self.idle_seconds)
        ready, conn = pool.take()
        if not ready:
            conn = await pool.wait(deadline, self.timeout, target.where)
        reuse = False
        try:
            while True:
                fresh = conn is None
                if conn is None:
                    conn = await self._connect(pool, target, deadline)
                answer = conn.send(request)
                timer = loop.call_at(deadline, conn.expire, self.timeout)
                try:
                    result = await answer
                except ProtocolError as exc:
                    if fresh or not exc.unanswered:
                        raise
                    pool.drop(conn)  # closed by the server while idle: once more, on a new one
                    conn = None
                    continue
                finally:
                    timer.cancel()
                reuse = True
                return result
        finally:
            pool.release(conn, reuse)

    async def close(self) -> None:
        """Close every connection; requests still waiting fail."""
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    def _target(self, url: str) -> Target:
        target = Target(url)
        if len(self._targets) >= 256:  # a handful of callback URLs in practice
            self._targets.clear()
        self._targets[url] = target
        return target

    async def _connect(self, pool: _Pool, target: Target, deadline: float) -> _Connection:
        conn = _Connection(self.loop, target.where)
        context = None
        if target.tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout_at(deadline):
                await self.loop.create_connection(
                    lambda: conn,
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context else None,
                )
        except TimeoutError:
            raise Timeout(f"no connection to {target.where} within {self.timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or exc.reason
            raise ConnectError(f"TLS with {target.where}: {reason}") from None
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS with {target.where}: {exc.reason or exc}") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {target.where}: {exc.strerror or exc}") from None
        pool.every.add(conn)
        return conn


__all__ = [
    "ConnectError",
    "InvalidURL",
    "ProtocolError",
    "Target",
    "Timeout",
    "WebhookClient",
    "WebhookError",
]

"""One device's live connection to the relay.

- :meth:`Connection.send` returns once the relay stored the envelope (the single tick); until
  then the envelope is kept and resent with the same id after a reconnect, so a send is never
  lost and never stored twice.
- Received items come out of :meth:`Connection.recv` once each: redeliveries after a reconnect
  carry the same ``seq`` and are dropped. Acknowledgements are coalesced and sent "up to" the
  highest seq handed out, which lets the relay delete them.
- Typing, presence and key notices come out of :meth:`Connection.notice`.
- The relay answers ``unavailable`` when it could not store an envelope (its database is
  restarting, full or refusing writes; the node is draining): the envelope stays pending and is
  resent with the same id after a growing pause, until it is stored (``resend_unavailable``).
  The same goes for an envelope refused as part of a flood of frames (``rate_limited`` naming
  it): it is resent once the relay's ``retry_after`` has passed. A sender that can encrypt again
  (``send(fresh=...)``, the SDK's Olm sends) gets to: the resend carries new ciphertexts, so it
  takes its place in the ratchet after the messages sent meanwhile. The first ones would arrive
  behind them, and a receiver keeps only so many skipped message keys (vodozemac: 40 per chain),
  so under load they could arrive undecryptable.
- Frames sent in one turn of the event loop leave in one socket write (a gateway's sends that
  share a crypto-store save, a burst of acks and receipts): on loopback a write costs about as
  much CPU as the frame itself.
- Heartbeat: the connection pings the relay at the interval the relay announced in ``welcome``;
  a relay that does not answer within another interval (a paused node, a cut-off network whose
  socket never closes) is dropped, and the connection reconnects (through a load balancer, to
  another node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from typing_extensions import override
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tresen import __version__
from tresen.errors import TresenError, Unauthorized, Unavailable, from_code
from tresen.protocol.codec import Codec, client_codec
from tresen.protocol.codes import Code
from tresen.protocol.frames import (
    PROTOCOL_VERSION,
    Ack,
    BizMeta,
    ClientFrame,
    Deliver,
    Error,
    Hello,
    Item,
    KeysLow,
    Ping,
    Pong,
    Presence,
    Read,
    Send,
    SendGroup,
    Sent,
    ServerFrame,
    Typing,
    TypingNotice,
    Watch,
    Welcome,
)

log = logging.getLogger("tresen.client")

Notice = TypingNotice | Presence | KeysLow
#: closes after which reconnecting cannot help; 4409: a newer connection of this device (another
#: copy of it, with the same token) took over, and two copies would only keep replacing each other
FATAL_CLOSE = {4401, 4403, 4400, 4409}
#: how long the relay has to answer the upgrade and ``hello`` before this try counts as failed
HANDSHAKE_TIMEOUT = 10.0
#: refusals of a send after which the same envelope is sent again: the relay did not store it
#: (``unavailable``), or it came in a flood of frames (``rate_limited``, naming its id)
RESENT = {Code.UNAVAILABLE, Code.RATE_LIMITED}
#: encrypts a refused envelope's payloads anew for its resend (``Connection.send``)
Fresh = Callable[[], Awaitable[dict[int, bytes]]]


def new_envelope_id() -> str:
    return secrets.token_urlsafe(12)


class CoalescingConnection(ClientConnection):
    """websockets' client connection, with the frames sent in one loop turn written at once."""

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self._out: list[bytes] = []

    @override
    def send_data(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                if not self._out:
                    self.loop.call_soon(self._flush)
                self._out.append(data)
                continue
            self._flush()  # end of stream: what is queued goes first
            if self.transport.can_write_eof():
                with contextlib.suppress(Exception):  # uvloop may raise RuntimeError here
                    self.transport.write_eof()
            else:
                self.transport.close()

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.transport.is_closing():
            self.transport.writelines(out)


class Connection:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        format: Literal["msgpack", "json"] = "msgpack",
        reconnect: bool = True,
        auto_ack: bool = True,
        resend_unavailable: bool = True,
    ) -> None:
        base = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.url = base if base.endswith("/v1/ws") else base + "/v1/ws"
        self.token = token
        self.format = format
        self.codec: Codec[ServerFrame] = client_codec(format)
        self.reconnect = reconnect
        self.auto_ack = auto_ack
        self.resend_unavailable = resend_unavailable
        self.ws: ClientConnection | None = None
        self.welcome: Welcome | None = None
        self.pending: OrderedDict[str, tuple[ClientFrame, asyncio.Future[int]]] = OrderedDict()
        self.inbox: asyncio.Queue[Item] = asyncio.Queue()
        self.notices: asyncio.Queue[Notice] = asyncio.Queue()
        self.errors: asyncio.Queue[Error] = asyncio.Queue()
        self.seen: OrderedDict[int, None] = OrderedDict()
        self.ack_upto = 0
        self.acked = 0
        self.handled = 0  # the highest seq ever acknowledged, over every connection
        #: what the relay's billing applies to a business's sent messages (``pricing_of``)
        self.priced: OrderedDict[str, str] = OrderedDict()
        self._ack_scheduled = False
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closed = False
        self.fatal: TresenError | None = None
        self.reconnects = 0
        #: envelopes the relay answered ``unavailable`` and this connection resent
        self.resent = 0
        self._tries: dict[str, int] = {}
        self._fresh: dict[str, Fresh] = {}
        self._generation = 0  # counts opened sockets: a reconnect resends every pending frame
        self._heartbeat: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (it can change while a receive is pending)."""
        return self._closed

    async def connect(self) -> Welcome:
        await self._open()
        self._reader = asyncio.create_task(self._run(), name="tresen-client-reader")
        assert self.welcome is not None
        return self.welcome

    async def _open(self) -> None:
        subprotocol = f"tresen.v{PROTOCOL_VERSION}.{self.format}"
        try:
            ws = await connect(
                self.url,
                subprotocols=[subprotocol],  # type: ignore[list-item]
                max_size=None,
                compression=None,
                open_timeout=HANDSHAKE_TIMEOUT,
                ping_interval=None,  # the heartbeat follows the relay's interval (welcome)
                create_connection=CoalescingConnection,
            )
        except (OSError, InvalidStatus, TimeoutError) as exc:
            raise Unavailable(f"cannot connect to {self.url}: {exc}") from exc
        await ws.send(self._encode(Hello(token=self.token, agent=f"tresen-py/{__version__}")))
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                first = self.codec.decode(await ws.recv())
        except ConnectionClosed as exc:
            raise Unauthorized(f"the relay closed the connection: {exc}") from exc
        except TimeoutError as exc:
            ws.transport.abort()
            raise Unavailable(f"no welcome from {self.url} in {HANDSHAKE_TIMEOUT:.0f}s") from exc
        if isinstance(first, Error):
            await ws.close()
            raise from_code(first.code, first.message, first.fields)
        if not isinstance(first, Welcome):
            raise Unavailable(f"expected welcome, got {type(first).__name__}")
        self.ws, self.welcome = ws, first
        # the relay redelivers whatever was not acknowledged; acks restart per connection
        self.ack_upto = self.acked = 0
        self._generation += 1
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if first.heartbeat > 0:
            self._heartbeat = asyncio.create_task(
                self._beat(ws, first.heartbeat), name="tresen-client-heartbeat"
            )
        for frame, _ in self.pending.values():
            await ws.send(self._encode(frame))
        self._connected.set()

    async def _beat(self, ws: ClientConnection, period: float) -> None:
        """Ping every ``period``; no pong within another ``period``: the relay is gone.

        A paused node (SIGSTOP, a frozen VM) keeps its sockets open, so without this the
        connection would wait for TCP to give up. Aborting the socket ends the reader's loop,
        which reconnects."""
        while True:
            await asyncio.sleep(period)
            try:
                async with asyncio.timeout(period):
                    await (await ws.ping())
            except TimeoutError:
                log.info("no answer from %s within %.1fs; reconnecting", self.url, period)
                ws.transport.abort()
                return
            except ConnectionClosed:
                return

    async def close(self) -> None:
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for _, future in self.pending.values():
            if not future.done():
                future.set_exception(Unavailable("connection closed"))

    async def __aenter__(self) -> Connection:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _encode(self, frame: ClientFrame) -> bytes | str:
        data = self.codec.encode(frame)
        return data if self.format == "msgpack" else data.decode()

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closed:
            ws = self.ws
            assert ws is not None
            try:
                async for data in ws:
                    self._on_frame(self.codec.decode(data))
                code = ws.close_code
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
            self._connected.clear()
            if self.closed:
                return
            if code in FATAL_CLOSE or not self.reconnect:
                self.fatal = (
                    from_code(
                        Code.CONNECTED_ELSEWHERE,
                        "another connection of this device took over; this one stops",
                        {},
                    )
                    if code == 4409
                    else Unauthorized(f"the relay closed this device's connection ({code})")
                )
                for _, future in self.pending.values():
                    if not future.done():
                        future.set_exception(self.fatal)
                return
            while not self._closed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                try:
                    await self._open()
                    self.reconnects += 1
                    backoff = 0.1
                    break
                except Unauthorized as exc:
                    self.fatal = exc
                    return
                except (TresenError, OSError, ConnectionClosed) as exc:
                    log.info("reconnect to %s failed: %s; retrying", self.url, exc)

    def _on_frame(self, frame: ServerFrame) -> None:
        match frame:
            case Deliver(items=items):
                for item in items:
                    if item.seq in self.seen:
                        if item.seq <= self.handled:  # redelivered after a lost ack
                            self.ack_upto = max(self.ack_upto, item.seq)
                            self._schedule_ack()
                        continue
                    self.seen[item.seq] = None
                    if len(self.seen) > 100_000:
                        self.seen.popitem(last=False)
                    self.inbox.put_nowait(item)
                if items and not self.auto_ack:
                    return
                if items:
                    self.ack_upto = max(self.ack_upto, items[-1].seq)
                    self._schedule_ack()
            case Sent(ids=ids, ts=ts):
                for envelope_id, pricing in frame.pricing.items():
                    if envelope_id in self.pending:
                        self.priced[envelope_id] = pricing
                        if len(self.priced) > 10_000:  # nobody asks: keep the newest
                            self.priced.popitem(last=False)
                for envelope_id in ids:
                    self._tries.pop(envelope_id, None)
                    entry = self.pending.pop(envelope_id, None)
                    if entry is not None and not entry[1].done():
                        entry[1].set_result(ts)
            case Error(ref=ref) if (
                ref in self.pending and frame.code in RESENT and self.resend_unavailable
            ):
                self._resend_later(frame)
            case Error(ref=ref) if ref and ref in self.pending:
                self._tries.pop(ref, None)
                _, future = self.pending.pop(ref)
                if not future.done():
                    future.set_exception(from_code(frame.code, frame.message, frame.fields))
            case Error():
                self.errors.put_nowait(frame)
            case TypingNotice() | Presence() | KeysLow():
                self.notices.put_nowait(frame)
            case Pong() | Welcome():
                pass

    def _resend_later(self, error: Error) -> None:
        """The relay did not store this envelope and said so: send it again (same id) after a
        pause that doubles with each try, up to 5 s, and no sooner than it asked."""
        tries = self._tries[error.ref] = self._tries.get(error.ref, 0) + 1
        asked = (error.fields or {}).get("retry_after", 0)
        delay = max(min(0.05 * 2**tries, 5.0), asked if isinstance(asked, int | float) else 0)
        self.resent += 1
        log.info("envelope %s not stored (%s); resending in %.2fs", error.ref, error.message, delay)
        asyncio.get_running_loop().call_later(delay, self._resend, error.ref, self._generation)

    def _resend(self, envelope_id: str, generation: int) -> None:
        entry = self.pending.get(envelope_id)
        if entry is None or entry[1].done() or self._closed or generation != self._generation:
            return  # stored, given up, or already resent by a reconnect
        task = asyncio.ensure_future(self._send_again(envelope_id, generation))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send_again(self, envelope_id: str, generation: int) -> None:
        frame, future = self.pending[envelope_id]
        fresh = self._fresh.get(envelope_id)
        if fresh is not None and isinstance(frame, Send):
            try:
                payloads = await fresh()
            except Exception as exc:  # the sender cannot encrypt it now: its send fails
                if self.pending.get(envelope_id, (None, None))[1] is future:
                    del self.pending[envelope_id]
                if not future.done():
                    future.set_exception(exc)
                return
            entry = self.pending.get(envelope_id)
            if entry is None or entry[0] is not frame or generation != self._generation:
                return  # answered meanwhile, or a reconnect sent it again already
            frame = msgspec.structs.replace(frame, payloads=payloads)
            self.pending[envelope_id] = (frame, future)
        await self._send(frame)

    def _schedule_ack(self) -> None:
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_ack)

    def _send_ack(self) -> None:
        self._ack_scheduled = False
        if self.ack_upto > self.acked and self.ws is not None:
            self.acked = self.ack_upto
            self.handled = max(self.handled, self.acked)
            task = asyncio.ensure_future(self._send(Ack(upto=self.acked)))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send(self, frame: ClientFrame) -> None:
        if self.fatal is not None:
            raise self.fatal
        await self._connected.wait()
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(self._encode(frame))

    # ------------------------------------------------------------ API

    async def _request(self, frame: Send | SendGroup, fresh: Fresh | None = None) -> int:
        if frame.id in self.pending:  # already on its way: wait for the same answer
            return await asyncio.shield(self.pending[frame.id][1])
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[frame.id] = (frame, future)
        if fresh is not None:
            self._fresh[frame.id] = fresh
        try:
            await self._send(frame)
            return await future
        finally:
            self._fresh.pop(frame.id, None)

    async def send(
        self,
        to: int,
        payloads: dict[int, bytes],
        *,
        id: str | None = None,
        biz: BizMeta | None = None,
        fresh: Fresh | None = None,
    ) -> str:
        """Send one envelope (a ciphertext per device); returns its id once stored.

        A business account marks its envelopes with ``biz`` (service reply or template, see
        docs/business-rules.md); people never set it. ``fresh``, if given, encrypts the
        payloads anew for a resend after the relay refused the envelope without storing it
        (what it raises fails the send).
        """
        frame = Send(id=id or new_envelope_id(), to=to, payloads=payloads, biz=biz)
        await self._request(frame, fresh)
        return frame.id

    async def send_group(
        self,
        group: int,
        body: bytes,
        *,
        payloads: dict[int, bytes] | None = None,
        devices: list[int] | None = None,
        id: str | None = None,
    ) -> str:
        frame = SendGroup(
            id=id or new_envelope_id(),
            group=group,
            body=body,
            payloads=payloads or {},
            devices=devices,
        )
        await self._request(frame)
        return frame.id

    def pricing_of(self, envelope_id: str) -> str:
        """A business's sent message: the relay's pricing type, once (``""`` if not told)."""
        return self.priced.pop(envelope_id, "")

    async def recv(self, timeout: float | None = 10.0) -> Item:
        async with asyncio.timeout(timeout):
            return await self.inbox.get()

    async def notice(self, timeout: float | None = 10.0) -> Notice:
        async with asyncio.timeout(timeout):
            return await self.notices.get()

    async def ack(self, upto: int) -> None:
        """Acknowledge up to ``upto`` (only needed with ``auto_ack=False``)."""
        self.ack_upto = max(self.ack_upto, upto)
        self._send_ack()

    async def read(self, to: int, ids: list[str]) -> None:
        await self._send(Read(to=to, ids=ids))

    async def typing(self, *, to: int = 0, group: int = 0, on: bool = True) -> None:
        await self._send(Typing(to=to, group=group, on=on))

    async def watch(self, accounts: list[int]) -> None:
        await self._send(Watch(accounts=accounts))

    async def ping(self, n: int = 0) -> None:
        await self._send(Ping(n=n))

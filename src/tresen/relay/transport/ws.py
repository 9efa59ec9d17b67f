"""The device WebSocket: handshake, decode, dispatch, coalesced writes — over any :class:`Link`.

No rules live here: frames go to the services, answers come back as frames. One task reads
(:meth:`Connection.serve`) and one writes (:meth:`Connection._writer`), so a slow socket never
blocks the relay and many small answers leave as few frames. The bytes travel over a
:class:`Link`: the relay's own RFC 6455 protocol under uvicorn (``wsnative.py``, the default and
the fast path) or plain ASGI (:func:`websocket_endpoint`, for any ASGI server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from tresen.bus import Subscription
from tresen.bus.events import (
    BusEvent,
    DeviceRevoked,
    Items,
    KeysLowEvent,
    PresenceEvent,
    TypingEvent,
)
from tresen.config import Settings
from tresen.errors import CLOSE_CODES, LimitExceeded, TresenError, Unauthorized, Unavailable
from tresen.protocol.codec import Codec, FrameError, server_codec
from tresen.protocol.codes import Code
from tresen.protocol.frames import (
    PROTOCOL_VERSION,
    SUBPROTOCOLS,
    Ack,
    ClientFrame,
    Deliver,
    Error,
    Frame,
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
    Typing,
    TypingNotice,
    Watch,
    Welcome,
)
from tresen.relay.accounts.models import Principal
from tresen.relay.envelopes.delivery import DeviceStream
from tresen.relay.envelopes.writer import WriteOp
from tresen.relay.services import Services
from tresen.relay.transport.ratelimit import KeyedLimiter

log = logging.getLogger("tresen.ws")

#: a catch-up read that finds the store unreachable is tried again after this long, doubling up
#: to CATCH_UP_RETRY_MAX; the connection stays up meanwhile (its sends are answered
#: ``unavailable``, live deliveries and receipts go on)
CATCH_UP_RETRY = 0.25
CATCH_UP_RETRY_MAX = 5.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send_ = Callable[[Message], Awaitable[None]]

#: frames waiting for the writer before the reader stops reading (a peer that floods and does
#: not read is held back by TCP instead of growing the outbox)
OUTBOX_HIGH = 1024


class Link(Protocol):
    """One device's socket as the connection sees it: whole messages in, whole messages out."""

    async def receive(self) -> bytes | int | None:
        """The next message; an ``int`` is the size of one too large to read; ``None``: gone."""
        ...

    def write(self, data: bytes) -> None:
        """Queue one message (binary or text, as negotiated); :meth:`flush` sends the queue."""
        ...

    async def flush(self) -> None:
        """Send what is queued, waiting while the peer reads slowly."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


def choose_subprotocol(offered: list[str]) -> tuple[str | None, str | None]:
    """The subprotocol to accept (``None``: none offered, msgpack) and an error to close with."""
    chosen = next((p for p in offered if p in SUBPROTOCOLS), None)
    if chosen is None and offered:
        return None, f"unsupported protocol; speak one of {sorted(SUBPROTOCOLS)}"
    return chosen, None


class Hub:
    """The connections this node holds: counted for the connection limits, with the frame
    buckets per device and per address, and drained on shutdown.

    Every count changes in one synchronous step on the event loop (no ``await`` between a check
    and its update), so connects and disconnects racing each other never miscount.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections: set[Connection] = set()  # authenticated (after hello)
        self.sockets = 0  # upgraded sockets, from the upgrade until they close
        self.per_address: dict[str, int] = {}
        self.per_account: dict[int, int] = {}
        self.per_device: dict[int, list[Connection]] = {}  # oldest first
        keys = max(100_000, 2 * settings.max_connections)
        self.device_frames = KeyedLimiter(settings.frames_per_second, settings.frame_burst, keys)
        # a business's device sends up to its throughput tier, and acknowledges what comes back
        extra = 2 * settings.business_max_throughput_per_second
        self.business_frames = KeyedLimiter(
            settings.frames_per_second + extra, settings.frame_burst + extra, keys
        )
        self.address_frames = KeyedLimiter(
            settings.frames_per_second_per_address, settings.frame_burst_per_address, keys
        )

    def admit(self, address: str) -> tuple[int, str] | None:
        """Count a new socket from ``address``, or give the HTTP status and reason to refuse it."""
        s = self.settings
        if self.sockets >= s.max_connections:
            return 503, "this relay node holds all the connections it may; retry later"
        held = self.per_address.get(address, 0)
        if held >= s.max_connections_per_address:
            return 429, f"too many connections from {address} (at most {held} at once)"
        self.sockets += 1
        self.per_address[address] = held + 1
        return None

    def release(self, address: str) -> None:
        """The socket :meth:`admit` counted has closed."""
        self.sockets -= 1
        left = self.per_address[address] - 1
        if left:
            self.per_address[address] = left
        else:
            del self.per_address[address]

    def attach(self, conn: Connection, who: Principal) -> None:
        """Count an authenticated connection. Past the device's limit its oldest connection is
        closed (4409, the newest wins: the old one is most often a dead socket not yet noticed);
        past the account's limit this one is refused (``too_many_connections``)."""
        s = self.settings
        per_device = max(1, s.max_connections_per_device)
        mine = self.per_device.get(who.device_id, [])
        replacing = len(mine) >= per_device
        held = self.per_account.get(who.account_id, 0)
        if not replacing and held >= s.max_connections_per_account:
            raise LimitExceeded(
                f"this account has {held} connections to this relay, the most it may",
                code=Code.TOO_MANY_CONNECTIONS,
                retry_after=s.heartbeat_seconds,
            )
        while len(mine) >= per_device:
            old = mine[0]
            self.detach(old)
            old.close(CLOSE_CODES[Code.CONNECTED_ELSEWHERE], "connected elsewhere")
        self.per_device.setdefault(who.device_id, []).append(conn)
        self.per_account[who.account_id] = self.per_account.get(who.account_id, 0) + 1
        self.connections.add(conn)

    def detach(self, conn: Connection) -> None:
        """Stop counting ``conn`` (once; later calls do nothing)."""
        who = conn.who
        if conn not in self.connections or who is None:
            return
        self.connections.discard(conn)
        mine = self.per_device[who.device_id]
        mine.remove(conn)
        if not mine:
            del self.per_device[who.device_id]
        left = self.per_account[who.account_id] - 1
        if left:
            self.per_account[who.account_id] = left
        else:
            del self.per_account[who.account_id]

    async def close_all(self, code: int = 1012, reason: str = "relay restarting") -> None:
        for conn in list(self.connections):
            conn.close(code, reason)
        for conn in list(self.connections):
            if conn.writer_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(conn.writer_task), 2.0)


class Connection:
    def __init__(
        self,
        services: Services,
        hub: Hub,
        link: Link,
        codec: Codec[ClientFrame],
        address: str = "unknown",
    ) -> None:
        self.s = services
        self.hub = hub
        self.link = link
        self.codec = codec
        self.address = address
        self.who: Principal | None = None
        self.stream: DeviceStream | None = None
        self.outbox: deque[Frame] = deque()
        self.sent_ids: list[str] = []
        self.sent_pricing: dict[str, str] = {}
        self.wake = asyncio.Event()
        self.closing: tuple[int, str] | None = None
        self.writer_task: asyncio.Task[None] | None = None
        self.subs: list[Subscription] = []
        self.watch_subs: list[Subscription] = []
        self.in_flight = 0
        self.outbox_room = asyncio.Event()  # set while the outbox is below OUTBOX_HIGH
        self.outbox_room.set()

    # ------------------------------------------------------------ outbound

    def queue(self, frame: Frame) -> None:
        self.outbox.append(frame)
        self.wake.set()

    def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = (code, reason)
            self.wake.set()

    def error(self, exc: TresenError, ref: str = "") -> None:
        self.queue(Error(code=str(exc.code), message=exc.message, ref=ref, fields=exc.fields))

    def _write(self, frame: Frame) -> None:
        self.link.write(self.codec.encode(frame))

    async def _writer(self) -> None:
        stream = self.stream
        assert stream is not None
        batch = self.s.settings.push_batch
        loop = asyncio.get_running_loop()
        retry, not_before = CATCH_UP_RETRY, 0.0
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                if self.sent_ids:
                    ids, self.sent_ids = self.sent_ids, []
                    pricing, self.sent_pricing = self.sent_pricing, {}
                    self.outbox.appendleft(Sent(ids=ids, ts=self.s.clock.now_ms(), pricing=pricing))
                while self.outbox:
                    frame = self.outbox.popleft()
                    if isinstance(frame, Deliver) and len(frame.items) > batch:
                        for start in range(0, len(frame.items), batch):
                            self._write(Deliver(items=frame.items[start : start + batch]))
                    else:
                        self._write(frame)
                await self.link.flush()
                self.outbox_room.set()
                if self.closing is not None:
                    code, reason = self.closing
                    await self.link.close(code, reason)
                    return
                while stream.behind and stream.room > 0 and loop.time() >= not_before:
                    try:
                        fetched = await self.s.envelopes.fetch(
                            stream.device, stream.cursor, min(batch, stream.room)
                        )
                    except Unavailable as exc:
                        log.debug(
                            "catching up device %s: %s; again in %.2fs", stream.device, exc, retry
                        )
                        not_before = loop.time() + retry
                        loop.call_later(retry, self.wake.set)
                        retry = min(retry * 2, CATCH_UP_RETRY_MAX)
                        break
                    retry = CATCH_UP_RETRY
                    exhausted = len(fetched) < min(batch, stream.room)
                    out = stream.on_fetched(fetched, exhausted=exhausted)
                    if out:
                        self._write(Deliver(items=out))
                        await self.link.flush()
                    if self.outbox or self.sent_ids:
                        self.wake.set()
                        break
        except (OSError, RuntimeError) as exc:
            # the socket went away (uvicorn raises these after a disconnect)
            log.debug("writer for device %s ended: %s", stream.device, exc)
        except Exception:
            # a fault of the relay itself: the client reconnects and catches up from the store
            log.exception("delivery to device %s failed; closing its connection", stream.device)
            with contextlib.suppress(Exception):
                await self.link.close(1011, "try again")
        finally:
            self.outbox_room.set()  # a reader waiting for room goes on (and finds the socket gone)

    # ------------------------------------------------------------ bus events

    def on_event(self, event: BusEvent) -> None:
        stream = self.stream
        assert stream is not None
        match event:
            case Items(items=items):
                out = stream.on_live(items)
                if out:
                    self.queue(Deliver(items=out))
                elif stream.behind:
                    self.wake.set()
            case DeviceRevoked():
                self.close(CLOSE_CODES[Code.TOKEN_REVOKED], "device signed out")
            case KeysLowEvent(count=count):
                self.queue(KeysLow(count=count))
            case TypingEvent(account=account, from_device=device, on=on, group=group):
                self.queue(TypingNotice(account=account, device=device, on=on, group=group))
            case PresenceEvent(account=account, online=online, last_seen=last_seen):
                self.queue(Presence(account=account, online=online, last_seen=last_seen))
            case _:
                pass

    # ------------------------------------------------------------ inbound

    async def serve(self) -> None:
        who = await self._hello()  # counted in the hub from here on
        if who is None:
            return
        s = self.s
        self.stream = DeviceStream(who.device_id, window=s.settings.delivery_window)
        self.subs.append(s.bus.subscribe(f"device.{who.device_id}", self.on_event))
        s.presence.do_connected(who)
        try:
            self.queue(
                Welcome(
                    version=PROTOCOL_VERSION,
                    account=who.account_id,
                    device=who.device_id,
                    heartbeat=s.settings.heartbeat_seconds,
                    server_time=s.clock.now_ms(),
                    otk_count=await s.keys.otk_count(who.device_id),
                )
            )
            self.writer_task = asyncio.create_task(self._writer())
            await self._read_loop()
        finally:
            self.close(1000, "bye")
            for sub in self.subs + self.watch_subs:
                sub.cancel()
            self.hub.detach(self)
            await s.presence.do_disconnected(who)
            if self.writer_task is not None:
                await asyncio.gather(self.writer_task, return_exceptions=True)

    def _flooded(self, ref: str = "") -> bool:
        """Charge a frame; past the buckets answer ``rate_limited``, naming the frame's id (a
        client resends that envelope after ``retry_after``), and return True."""
        wait, per = self.charge()
        if wait:
            message = f"too many frames from this {per}; slow down"
            self.error(LimitExceeded(message, retry_after=round(wait, 3), per=per), ref)
        return bool(wait)

    def charge(self) -> tuple[float, str]:
        """Count one frame against its address's bucket and its device's; the seconds to wait
        (0: go on) and which bucket ran out."""
        hub, who = self.hub, self.who
        now = time.monotonic()
        wait = hub.address_frames.take(self.address, 1.0, now)
        if wait:
            return wait, "address"
        if who is not None:
            frames = (
                hub.business_frames
                if who.account_id in self.s.policy.businesses
                else hub.device_frames
            )
            wait = frames.take(who.device_id, 1.0, now)
        return wait, "device"

    async def _hello(self) -> Principal | None:
        try:
            async with asyncio.timeout(self.s.settings.hello_timeout_seconds):
                data = await self.link.receive()
        except TimeoutError:
            await self.link.close(4408, "no hello in time")
            return None
        if data is None:
            return None
        try:
            if isinstance(data, int):
                raise Unauthorized("the first frame must be hello with the device token")
            frame = self.codec.decode(data)
            if not isinstance(frame, Hello):
                raise Unauthorized("the first frame must be hello with the device token")
            who = await self.s.accounts.access_principal(frame.token)
            self.hub.attach(self, who)
            self.who = who
            return who
        except TresenError as exc:
            self._write(Error(code=str(exc.code), message=exc.message, fields=exc.fields))
            close = CLOSE_CODES.get(exc.code, CLOSE_CODES[Code.UNAUTHORIZED])
            await self.link.flush()
            await self.link.close(close, exc.message[:120])
            return None

    async def _read_loop(self) -> None:
        limit = self.s.settings.max_frame_bytes
        while self.closing is None:
            while len(self.outbox) >= OUTBOX_HIGH and self.closing is None:
                self.outbox_room.clear()
                await self.outbox_room.wait()
            data = await self.link.receive()
            if data is None:
                return
            size = data if isinstance(data, int) else len(data)
            if isinstance(data, int) or size > limit:
                if not self._flooded():
                    self.error(
                        LimitExceeded(
                            f"frame of {size} bytes exceeds {limit}", code=Code.ENVELOPE_TOO_LARGE
                        )
                    )
                continue
            try:
                frame = self.codec.decode(data)
            except FrameError as exc:
                if not self._flooded():
                    self.error(exc)
                continue
            # an acknowledgement only frees what this connection holds: never refused, so that
            # a flood cannot leave a device's deliveries waiting for an ack that was dropped
            if not isinstance(frame, Ack) and self._flooded(getattr(frame, "id", "")):
                continue
            try:
                await self._dispatch(frame)
            except TresenError as exc:
                self.error(exc, getattr(frame, "id", ""))
            except Exception:
                log.exception("frame %s failed", type(frame).__name__)
                self.error(
                    TresenError("internal error; the relay logged it"), getattr(frame, "id", "")
                )

    async def _dispatch(self, frame: ClientFrame) -> None:
        who, s = self.who, self.s
        assert who is not None and self.stream is not None
        match frame:
            case Send():
                self._submit(frame.id, await s.envelopes.check_send(who, frame))
            case SendGroup():
                self._submit(frame.id, await s.envelopes.check_group_send(who, frame))
            case Ack(upto=upto):
                acked = self.stream.on_ack(upto)
                if acked:
                    s.writer.submit(await s.envelopes.check_ack(who, acked))
                    if self.stream.behind:  # the window has room again: go on catching up
                        self.wake.set()
            case Read():
                s.writer.submit(await s.envelopes.check_read(who, frame))
            case Typing():
                await s.presence.do_typing(who, frame)
            case Watch(accounts=accounts):
                for sub in self.watch_subs:
                    sub.cancel()
                visible = await s.presence.check_watch(who, accounts)
                self.watch_subs = [s.bus.subscribe(f"presence.{a}", self.on_event) for a in visible]
                for account in visible:
                    self.queue(Presence(account=account, online=s.presence.is_online(account)))
            case Ping(n=n):
                self.queue(Pong(n=n))
            case Hello():
                self.error(TresenError("already authenticated", code=Code.BAD_REQUEST))

    def _submit(self, envelope_id: str, op: WriteOp) -> None:
        if self.in_flight >= self.s.settings.max_in_flight_per_connection:
            self.s.envelopes.release(op)
            raise LimitExceeded(
                "too many envelopes awaiting storage on this connection; wait for 'sent'",
                code=Code.TOO_MANY_IN_FLIGHT,
                retry_after=0.1,
            )
        self.in_flight += 1

        def done(error: TresenError | None, duplicate: bool) -> None:
            self.in_flight -= 1
            if error is not None or duplicate:
                self.s.envelopes.release(op)
            if error is not None:
                self.error(error, envelope_id)
            else:
                self.sent_ids.append(envelope_id)
                if op.pricing and not duplicate:
                    self.sent_pricing[envelope_id] = op.pricing
                self.wake.set()

        op.done = done
        self.s.writer.submit(op)


class AsgiLink:
    """A :class:`Link` over ASGI ``receive``/``send``, for running under any ASGI server."""

    def __init__(self, receive: Receive, send: Send_, *, binary: bool) -> None:
        self._receive = receive
        self._send = send
        self.key = "bytes" if binary else "text"
        self.pending: list[bytes] = []

    async def receive(self) -> bytes | int | None:
        message = await self._receive()
        if message["type"] != "websocket.receive":
            return None
        data = message.get("bytes")
        if data is None:
            return str(message.get("text") or "").encode()
        return bytes(data)

    def write(self, data: bytes) -> None:
        self.pending.append(data)

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        for data in pending:
            body: bytes | str = data if self.key == "bytes" else data.decode()
            await self._send({"type": "websocket.send", self.key: body})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


async def websocket_endpoint(
    services: Services, hub: Hub, scope: Scope, receive: Receive, send: Send_
) -> None:
    """The device WebSocket as a plain ASGI endpoint (``tresen serve`` uses ``wsnative``)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    chosen, refusal = choose_subprotocol(list(scope.get("subprotocols") or []))
    if refusal is not None:
        await send({"type": "websocket.close", "code": 4400, "reason": refusal})
        return
    client = scope.get("client")
    address = str(client[0]) if client else "unknown"
    full = hub.admit(address)
    if full is not None:  # before the accept: the client sees HTTP 403
        status, reason = full
        code = 4429 if status == 429 else CLOSE_CODES[Code.UNAVAILABLE]
        await send({"type": "websocket.close", "code": code, "reason": reason})
        return
    try:
        accept: Message = {"type": "websocket.accept"}
        if chosen is not None:
            accept["subprotocol"] = chosen
        await send(accept)
        codec = server_codec(SUBPROTOCOLS[chosen] if chosen else "msgpack")  # type: ignore[arg-type]
        link = AsgiLink(receive, send, binary=codec.format == "msgpack")
        await Connection(services, hub, link, codec, address).serve()
    finally:
        hub.release(address)


__all__ = [
    "AsgiLink",
    "Connection",
    "Hub",
    "Item",
    "Link",
    "choose_subprotocol",
    "websocket_endpoint",
]

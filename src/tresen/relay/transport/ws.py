"""The device WebSocket, on raw ASGI: handshake, decode, dispatch, coalesced writes.

No rules live here: frames go to the services, answers come back as frames. One task reads
(the ASGI handler itself) and one writes (:meth:`Connection._writer`), so a slow socket never
blocks the relay and many small answers leave as few frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tresen.bus import Subscription
from tresen.bus.events import (
    BusEvent,
    DeviceRevoked,
    Items,
    KeysLowEvent,
    PresenceEvent,
    TypingEvent,
)
from tresen.errors import CLOSE_CODES, LimitExceeded, TresenError, Unauthorized
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
from tresen.relay.transport.ratelimit import TokenBucket

log = logging.getLogger("tresen.ws")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send_ = Callable[[Message], Awaitable[None]]

HELLO_TIMEOUT = 10.0


class Hub:
    """The connections this node holds, to drain them on shutdown."""

    def __init__(self) -> None:
        self.connections: set[Connection] = set()

    async def close_all(self, code: int = 1012, reason: str = "relay restarting") -> None:
        for conn in list(self.connections):
            conn.close(code, reason)
        for conn in list(self.connections):
            if conn.writer_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(conn.writer_task), 2.0)


class Connection:
    def __init__(self, services: Services, hub: Hub, send: Send_, codec: Codec[ClientFrame]):
        self.s = services
        self.hub = hub
        self.send = send
        self.codec = codec
        self.binary = codec.format == "msgpack"
        self.who: Principal | None = None
        self.stream: DeviceStream | None = None
        self.outbox: deque[Frame] = deque()
        self.sent_ids: list[str] = []
        self.wake = asyncio.Event()
        self.closing: tuple[int, str] | None = None
        self.writer_task: asyncio.Task[None] | None = None
        self.subs: list[Subscription] = []
        self.watch_subs: list[Subscription] = []
        self.in_flight = 0
        settings = services.settings
        self.bucket = TokenBucket(settings.frames_per_second, settings.frame_burst)

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

    async def _write(self, frame: Frame) -> None:
        data = self.codec.encode(frame)
        if self.binary:
            await self.send({"type": "websocket.send", "bytes": data})
        else:
            await self.send({"type": "websocket.send", "text": data.decode()})

    async def _writer(self) -> None:
        stream = self.stream
        assert stream is not None
        batch = self.s.settings.push_batch
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                if self.sent_ids:
                    ids, self.sent_ids = self.sent_ids, []
                    self.outbox.appendleft(Sent(ids=ids, ts=self.s.clock.now_ms()))
                while self.outbox:
                    frame = self.outbox.popleft()
                    if isinstance(frame, Deliver) and len(frame.items) > batch:
                        for start in range(0, len(frame.items), batch):
                            await self._write(Deliver(items=frame.items[start : start + batch]))
                    else:
                        await self._write(frame)
                if self.closing is not None:
                    code, reason = self.closing
                    await self.send({"type": "websocket.close", "code": code, "reason": reason})
                    return
                while stream.behind and stream.room > 0:
                    fetched = await self.s.envelopes.fetch(
                        stream.device, stream.cursor, min(batch, stream.room)
                    )
                    exhausted = len(fetched) < min(batch, stream.room)
                    out = stream.on_fetched(fetched, exhausted=exhausted)
                    if out:
                        await self._write(Deliver(items=out))
                    if self.outbox or self.sent_ids:
                        self.wake.set()
                        break
        except (OSError, RuntimeError) as exc:
            # the socket went away (uvicorn raises these after a disconnect)
            log.debug("writer for device %s ended: %s", stream.device, exc)
        except Exception:
            # e.g. the store is unreachable while catching up: the client reconnects later
            log.exception("delivery to device %s failed; closing its connection", stream.device)
            with contextlib.suppress(Exception):
                await self.send({"type": "websocket.close", "code": 1011, "reason": "try again"})

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

    async def serve(self, receive: Receive) -> None:
        who = await self._hello(receive)
        if who is None:
            return
        s = self.s
        self.who = who
        self.stream = DeviceStream(who.device_id, window=s.settings.delivery_window)
        self.subs.append(s.bus.subscribe(f"device.{who.device_id}", self.on_event))
        self.hub.connections.add(self)
        s.presence.do_connected(who)
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
        try:
            await self._read_loop(receive)
        finally:
            self.close(1000, "bye")
            for sub in self.subs + self.watch_subs:
                sub.cancel()
            self.hub.connections.discard(self)
            await s.presence.do_disconnected(who)
            await asyncio.gather(self.writer_task, return_exceptions=True)

    async def _hello(self, receive: Receive) -> Principal | None:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                message = await receive()
        except TimeoutError:
            await self.send({"type": "websocket.close", "code": 4408, "reason": "no hello"})
            return None
        if message["type"] != "websocket.receive":
            return None
        try:
            frame = self.codec.decode(message.get("bytes") or message.get("text") or b"")
            if not isinstance(frame, Hello):
                raise Unauthorized("the first frame must be hello with the device token")
            return await self.s.accounts.access_principal(frame.token)
        except TresenError as exc:
            await self._write(Error(code=str(exc.code), message=exc.message))
            close = CLOSE_CODES.get(exc.code, CLOSE_CODES[Code.UNAUTHORIZED])
            await self.send({"type": "websocket.close", "code": close, "reason": exc.message[:120]})
            return None

    async def _read_loop(self, receive: Receive) -> None:
        limit = self.s.settings.max_frame_bytes
        while self.closing is None:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            data = message.get("bytes")
            if data is None:
                data = (message.get("text") or "").encode()
            if len(data) > limit:
                self.error(
                    LimitExceeded(
                        f"frame of {len(data)} bytes exceeds {limit}", code=Code.ENVELOPE_TOO_LARGE
                    )
                )
                continue
            wait = self.bucket.take()
            if wait:
                self.error(LimitExceeded("too many frames; slow down", retry_after=round(wait, 3)))
                continue
            try:
                frame = self.codec.decode(data)
            except FrameError as exc:
                self.error(exc)
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
                self.wake.set()

        op.done = done
        self.s.writer.submit(op)


async def websocket_endpoint(
    services: Services, hub: Hub, scope: Scope, receive: Receive, send: Send_
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    offered = scope.get("subprotocols") or []
    chosen = next((p for p in offered if p in SUBPROTOCOLS), None)
    if chosen is None:
        # no subprotocol: accept as msgpack unless they asked for something we don't speak
        if offered:
            await send(
                {
                    "type": "websocket.close",
                    "code": 4400,
                    "reason": f"unsupported protocol; speak one of {sorted(SUBPROTOCOLS)}",
                }
            )
            return
        await send({"type": "websocket.accept"})
        codec = server_codec("msgpack")
    else:
        await send({"type": "websocket.accept", "subprotocol": chosen})
        codec = server_codec(SUBPROTOCOLS[chosen])  # type: ignore[arg-type]
    conn = Connection(services, hub, send, codec)
    await conn.serve(receive)


__all__ = ["Connection", "Hub", "Item", "websocket_endpoint"]

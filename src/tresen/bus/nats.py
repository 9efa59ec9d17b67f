"""The bus across relay nodes, over NATS (docs/scale-out.md).

Every publish is dispatched to this node's own handlers at once (as :class:`MemoryBus` does) and
sent to the other nodes:

- **live events** (queue wake-ups, typing, presence, key counts) over core NATS, subject
  ``<name>.<topic>``: fast and fire-and-forget. Queue items cross only as wake-ups (an empty
  :class:`Items`): the database is the truth, and the recipient's connection reads the items
  from it in ``seq`` order, so a node that misses a wake-up still delivers from the store.
  After any reconnect a node re-reads the queue of every device it holds and asks every other
  node to do the same (``<name>._resync``): core NATS drops what crosses a broken connection.
- **control events** (a device revoked, a device list changed, a business-policy fact changed)
  through the JetStream stream ``<NAME>_CONTROL`` (subjects ``<name>.ctl.<topic>``), published
  with an acknowledgement and retried until stored, and read by each node with an ordered
  consumer that resumes where it left off after a reconnect or a NATS restart. A node that
  missed one of these would keep a stale cache (a signed-out device connected, an old device
  list, a lifted block), and nothing in the store would tell it.

Each node subscribes to ``<name>.<topic>`` only while one of its handlers wants that topic, so
a device's items travel only to the node that holds its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext, api

from tresen.bus.base import Handler
from tresen.bus.events import BusEvent, DeviceRevoked, DevicesChanged, Items, PolicyChanged
from tresen.bus.presence import ENTRY_TTL, NatsBook
from tresen.errors import InvalidRequest, Unavailable

log = logging.getLogger("tresen.bus")

#: events that must reach every node that holds state about them: through JetStream
CONTROL = (DeviceRevoked, DevicesChanged, PolicyChanged)
#: how long the control stream keeps events (a node away longer reloads from the database)
CONTROL_MAX_AGE = 15 * 60.0
ORIGIN = "Tresen-Node"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[BusEvent] = msgspec.msgpack.Decoder(BusEvent)


def parse_url(url: str) -> tuple[list[str], str]:
    """``nats://host:port[,host:port...][/name]`` -> (server URLs, subject namespace)."""
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls") or not parts.netloc:
        raise InvalidRequest(f"bus URL {url!r}: expected nats://host:port[/name]")
    name = parts.path.strip("/") or "tresen"
    if not _NAME.fullmatch(name):
        raise InvalidRequest(f"bus URL {url!r}: the name {name!r} must be letters, digits, _ or -")
    auth = parts.netloc.rpartition("@")[0]
    hosts = parts.netloc.rpartition("@")[2].split(",")
    prefix = f"{auth}@" if auth else ""
    return [f"{parts.scheme}://{prefix}{host}" for host in hosts if host], name


def resync_event(topic: str) -> BusEvent | None:
    """What a handler of ``topic`` gets when live events may have been missed, if anything.

    For ``device.<id>``: an empty :class:`Items`, which sends the device's stream back to the
    store (``DeviceStream.on_live``).
    """
    kind, _, rest = topic.partition(".")
    if kind == "device" and rest.isdigit():
        return Items(device=int(rest), items=[])
    return None


class _Sub:
    __slots__ = ("bus", "handler", "topic")

    def __init__(self, bus: NatsBus, topic: str, handler: Handler) -> None:
        self.bus, self.topic, self.handler = bus, topic, handler

    def cancel(self) -> None:
        self.bus._unsubscribe(self)


class NatsBus:
    """The :class:`~tresen.bus.base.Bus` over a NATS server or cluster with JetStream."""

    def __init__(
        self, url: str, *, connect_timeout: float = 5.0, presence_ttl: float = ENTRY_TTL
    ) -> None:
        self.servers, self.name = parse_url(url)
        self.presence_ttl = presence_ttl
        self.url = url
        self.node = uuid.uuid4().hex
        self.stream = f"{self.name.upper().replace('-', '_')}_CONTROL"
        self.connect_timeout = connect_timeout
        self.topics: dict[str, set[_Sub]] = {}
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        #: core NATS subscriptions, by topic
        self.remote: dict[str, NatsSubscription] = {}
        self._live: deque[tuple[str, str, bytes]] = deque()
        self._control: deque[tuple[str, bytes]] = deque()
        self._live_wake = asyncio.Event()
        #: set while nothing waits to be sent
        self._live_idle = asyncio.Event()
        self._live_idle.set()
        self._control_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._control_sub: Any = None
        #: which accounts are online on any node (PresenceService)
        self.book: NatsBook | None = None
        self.reconnects = 0
        self.dropped = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        nc = Client()
        try:
            # at start NATS must answer within the timeout; afterwards the client reconnects
            # for as long as it takes
            async with asyncio.timeout(self.connect_timeout * 2):
                await nc.connect(
                    self.servers,
                    name=f"tresen-relay-{self.node[:8]}",
                    no_echo=True,
                    connect_timeout=max(1, round(self.connect_timeout)),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
        except Exception as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise Unavailable(
                f"cannot reach NATS at {', '.join(self.servers)} ({exc!r}); start nats-server "
                "with JetStream (-js) or fix --bus"
            ) from exc
        self.nc = nc
        self.js = nc.jetstream(timeout=self.connect_timeout)
        try:
            await self._ensure_stream()
        except Exception as exc:
            await nc.close()
            raise Unavailable(
                f"NATS at {', '.join(self.servers)} has no usable JetStream ({exc!r}); start "
                "nats-server with -js (and a store directory, -sd)"
            ) from exc
        self._control_sub = await self.js.subscribe(
            f"{self.name}.ctl.>",
            cb=self._on_control,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
            idle_heartbeat=2.0,
        )
        await nc.subscribe(f"{self.name}._resync", cb=self._on_resync_request)
        self.book = NatsBook(self.js, self.name, self.node, ttl=self.presence_ttl)
        await self.book.start()
        # topics subscribed before start
        for topic in self.topics:
            self._live.append(("sub", topic, b""))
            self._live_idle.clear()
        self._tasks = [
            asyncio.create_task(self._pump_live(), name="tresen-bus-live"),
            asyncio.create_task(self._pump_control(), name="tresen-bus-control"),
        ]
        self._live_wake.set()

    async def _ensure_stream(self) -> None:
        assert self.js is not None
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.name}.ctl.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=CONTROL_MAX_AGE,
            max_msgs=1_000_000,
            discard=api.DiscardPolicy.OLD,
        )
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # it exists with other limits (an older version): take ours
            await self.js.update_stream(config)

    async def close(self) -> None:
        """Send what is queued (for up to two seconds), then disconnect."""
        self._closing = True
        self._live_wake.set()
        self._control_wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.book is not None:
            await self.book.close()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.flush(), 2.0)
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.topics.clear()
        self.remote.clear()

    # ------------------------------------------------------------ the Bus protocol

    def publish(self, topic: str, event: BusEvent) -> None:
        if isinstance(event, Items) and event.items:
            # queue items travel as wake-ups: the recipient reads them from the store, in order
            event = Items(device=event.device, items=[])
        self._dispatch(topic, event)
        if self._closing:
            return
        data = _encoder.encode(event)
        if isinstance(event, CONTROL):
            self._control.append((f"{self.name}.ctl.{topic}", data))
            self._control_wake.set()
        else:
            self._live.append(("pub", f"{self.name}.{topic}", data))
            self._live_idle.clear()
            self._live_wake.set()

    def subscribe(self, topic: str, handler: Handler) -> _Sub:
        sub = _Sub(self, topic, handler)
        handlers = self.topics.setdefault(topic, set())
        handlers.add(sub)
        if len(handlers) == 1 and topic not in self.remote:
            self._live.append(("sub", topic, b""))
            self._live_idle.clear()
            self._live_wake.set()
        return sub

    def _unsubscribe(self, sub: _Sub) -> None:
        handlers = self.topics.get(sub.topic)
        if handlers is None:
            return
        handlers.discard(sub)
        if not handlers:
            del self.topics[sub.topic]
            self._live.append(("unsub", sub.topic, b""))
            self._live_idle.clear()
            self._live_wake.set()

    async def sync(self) -> None:
        """Wait until what was published and subscribed so far has reached the server."""
        await self._live_idle.wait()
        if self.nc is not None:
            await self.nc.flush(timeout=5)

    # ------------------------------------------------------------ local dispatch

    def _dispatch(self, topic: str, event: BusEvent) -> None:
        for sub in tuple(self.topics.get(topic, ())):
            try:
                sub.handler(event)
            except Exception:
                log.exception("bus handler for %s failed", topic)

    def _resync(self, topics: list[str] | None = None) -> None:
        """Tell the handlers of ``topics`` (default: all) that they may have missed events."""
        for topic in list(self.topics) if topics is None else topics:
            event = resync_event(topic)
            if event is not None:
                self._dispatch(topic, event)

    async def _on_live(self, msg: Msg) -> None:
        topic = msg.subject[len(self.name) + 1 :]
        try:
            event = _decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("dropped an undecodable bus message on %s", msg.subject)
            return
        self._dispatch(topic, event)

    async def _on_control(self, msg: Msg) -> None:
        if (msg.headers or {}).get(ORIGIN) == self.node:
            return  # dispatched here when it was published
        topic = msg.subject[len(self.name) + 5 :]
        try:
            event = _decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("dropped an undecodable control message on %s", msg.subject)
            return
        self._dispatch(topic, event)

    async def _on_resync_request(self, msg: Msg) -> None:
        self._resync()

    # ------------------------------------------------------------ sending

    async def _pump_live(self) -> None:
        """Send publishes and (un)subscriptions in the order they were made."""
        nc = self.nc
        assert nc is not None
        while True:
            await self._live_wake.wait()
            self._live_wake.clear()
            subscribed: list[str] = []
            while self._live:
                op, name, data = self._live.popleft()
                try:
                    if op == "pub":
                        await nc.publish(name, data)
                    elif op == "sub":
                        if name in self.topics and name not in self.remote:
                            self.remote[name] = await nc.subscribe(
                                f"{self.name}.{name}", cb=self._on_live
                            )
                            subscribed.append(name)
                    elif name not in self.topics and name in self.remote:
                        await self.remote.pop(name).unsubscribe()
                except Exception as exc:
                    if op == "pub":
                        # the store holds it; receivers catch up at the resync after reconnect
                        self.dropped += 1
                        log.warning("bus publish to %s dropped: %r", name, exc)
                    else:
                        log.warning("bus %s %s failed: %r", op, name, exc)
            if subscribed and nc.is_connected:
                # once the server has the subscriptions, re-read what committed before
                with contextlib.suppress(Exception):
                    await nc.flush(timeout=2)
                    self._resync(subscribed)
            if not self._live:
                self._live_idle.set()
                if self._closing:
                    return

    async def _pump_control(self) -> None:
        """Store each control event in JetStream, in order, retrying until it is stored."""
        js = self.js
        assert js is not None
        delay = 0.1
        while True:
            await self._control_wake.wait()
            self._control_wake.clear()
            while self._control:
                subject, data = self._control[0]
                try:
                    await js.publish(subject, data, headers={ORIGIN: self.node})
                except Exception as exc:
                    if self._closing:
                        log.error("control event on %s not sent before close: %r", subject, exc)
                        self._control.clear()
                        return
                    log.warning("control event on %s not stored yet (%r); retrying", subject, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.1
                self._control.popleft()
            if self._closing:
                return

    # ------------------------------------------------------------ connection state

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("NATS connection lost; reconnecting")

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        nc = self.nc
        log.warning(
            "NATS reconnected to %s", nc.connected_url.netloc if nc and nc.connected_url else "?"
        )
        task = asyncio.create_task(self._after_reconnect())
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _after_reconnect(self) -> None:
        """Live events may have been lost both ways: every node re-reads its devices' queues."""
        nc = self.nc
        assert nc is not None
        try:
            await nc.flush(timeout=5)  # the server has our subscriptions again
            await nc.publish(f"{self.name}._resync", b"")
        except Exception as exc:
            log.warning("resync after reconnect failed: %r", exc)
        self._resync()
        try:
            # gone if NATS restarted without its store
            await self._ensure_stream()
            if self.book is not None:
                await self.book.ensure_stream()
        except Exception as exc:
            log.warning("JetStream streams not recreated after reconnect: %r", exc)


__all__ = ["CONTROL", "NatsBus", "parse_url", "resync_event"]

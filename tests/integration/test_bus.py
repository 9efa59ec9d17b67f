"""One conformance suite for every bus backend: memory (one node) and NATS (many nodes).

Each test gets two bus instances, ``a`` and ``b``, standing for two relay nodes (for memory,
the same bus twice: one node). NATS runs against the real server at 127.0.0.1:4222 with a
namespace of its own per test; the reconnect tests start a NATS server of their own.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from tresen.bus import Bus, BusEvent, open_bus
from tresen.bus.events import (
    DeviceRevoked,
    DevicesChanged,
    Items,
    KeysLowEvent,
    PolicyChanged,
    PresenceEvent,
    TypingEvent,
)
from tresen.bus.nats import NatsBus, parse_url
from tresen.errors import InvalidRequest, Unavailable
from tresen.protocol.frames import Item

NATS_URL = os.environ.get("TRESEN_TEST_NATS", "nats://127.0.0.1:4222")
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_reachable() -> bool:
    host, _, port = NATS_URL.removeprefix("nats://").partition(":")
    try:
        socket.create_connection((host, int(port or 4222)), timeout=1).close()
    except OSError:
        return False
    return True


#: without a NATS server the NATS half is skipped, except in CI, where it must run
needs_nats = pytest.mark.skipif(
    os.environ.get("CI") != "true" and not nats_reachable(),
    reason=f"no NATS server at {NATS_URL} (start nats-server -js, or set TRESEN_TEST_NATS)",
)

EVERY_EVENT: list[BusEvent] = [
    Items(device=5, items=[Item(9, "message", "e1", 1, 2, 3, b"\x00cipher", 0)]),
    DeviceRevoked(device=5),
    DevicesChanged(account=4),
    TypingEvent(device=5, account=4, from_device=6, on=True, group=7),
    PresenceEvent(account=4, online=False, last_seen=123),
    KeysLowEvent(device=5, count=3),
    PolicyChanged(what="consent", a=1, b=2, category="marketing", on=False, until=9, source="x"),
]


async def until(condition: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    """Wait for ``condition`` (a safety limit, not a timing assertion)."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


async def settle(*buses: Bus) -> None:
    """Let subscriptions and publishes reach the server (nothing to do in memory)."""
    for bus in buses:
        if isinstance(bus, NatsBus):
            await bus.sync()


def nats_name() -> str:
    return f"t{secrets.token_hex(6)}"


async def drop_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:  # noqa: S110 - already gone
        pass
    finally:
        await nc.close()


async def drop_streams(bus: NatsBus) -> None:
    """A test's namespace leaves nothing behind on the shared server."""
    await drop_stream(NATS_URL, bus.stream)
    await drop_stream(NATS_URL, f"{bus.name.upper().replace('-', '_')}_PRESENCE")


@pytest.fixture(params=["memory", pytest.param("nats", marks=needs_nats)])
async def pair(request: Any) -> AsyncIterator[tuple[Bus, Bus]]:
    if request.param == "memory":
        bus = open_bus("memory://")
        await bus.start()
        yield bus, bus
        await bus.close()
        return
    url = f"{NATS_URL}/{nats_name()}"
    a, b = open_bus(url), open_bus(url)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()
    assert isinstance(a, NatsBus)
    await drop_streams(a)


class Recorder:
    def __init__(self) -> None:
        self.events: list[BusEvent] = []

    def __call__(self, event: BusEvent) -> None:
        self.events.append(event)


def remote(a: Bus, b: Bus) -> bool:
    return a is not b


# ------------------------------------------------------------------ the contract


async def test_publish_reaches_a_subscriber_on_the_other_node(pair: tuple[Bus, Bus]) -> None:
    a, b = pair
    got = Recorder()
    b.subscribe("presence.4", got)
    await settle(b)
    a.publish("presence.4", PresenceEvent(account=4, online=True))
    await until(lambda: len(got.events) == 1, "presence crossed")
    assert got.events == [PresenceEvent(account=4, online=True)]


async def test_local_handlers_run_before_publish_returns(pair: tuple[Bus, Bus]) -> None:
    # services rely on it: a gate applies its own PolicyChanged at once
    a, _ = pair
    got = Recorder()
    a.subscribe("relay", got)
    a.publish("relay", PolicyChanged(what="block", a=1, b=2))
    assert got.events == [PolicyChanged(what="block", a=1, b=2)]


async def test_every_event_type_round_trips(pair: tuple[Bus, Bus]) -> None:
    a, b = pair
    got = Recorder()
    for i in range(len(EVERY_EVENT)):
        b.subscribe(f"topic.{i}", got)
    await settle(b)
    for i, event in enumerate(EVERY_EVENT):
        a.publish(f"topic.{i}", event)
    await until(lambda: len(got.events) == len(EVERY_EVENT), "every event arrived")
    expected = list(EVERY_EVENT)
    if isinstance(a, NatsBus):
        # between nodes, queue items travel as wake-ups; the recipient reads them from the store
        expected[0] = Items(device=5, items=[])
    assert sorted(got.events, key=repr) == sorted(expected, key=repr)


async def test_per_topic_order_is_kept(pair: tuple[Bus, Bus]) -> None:
    a, b = pair
    got = Recorder()
    b.subscribe("device.8", got)
    await settle(b)
    got.events.clear()  # a resync wake-up on subscribing is allowed
    for n in range(2000):
        a.publish("device.8", KeysLowEvent(device=8, count=n))
    await until(lambda: len(got.events) == 2000, "all arrived")
    assert [e.count for e in got.events if isinstance(e, KeysLowEvent)] == list(range(2000))


async def test_many_subscribers_each_get_every_event(pair: tuple[Bus, Bus]) -> None:
    a, b = pair
    recorders = [Recorder() for _ in range(5)]
    for r in recorders:
        b.subscribe("account.3", r)
    await settle(b)
    for n in range(20):
        a.publish("account.3", PresenceEvent(account=3, online=bool(n % 2)))
    await until(lambda: all(len(r.events) == 20 for r in recorders), "all five got all")
    assert all(r.events == recorders[0].events for r in recorders)


async def test_unsubscribe_stops_delivery_and_keeps_other_handlers(
    pair: tuple[Bus, Bus],
) -> None:
    a, b = pair
    gone, kept, marker = Recorder(), Recorder(), Recorder()
    sub = b.subscribe("account.9", gone)
    b.subscribe("account.9", kept)
    b.subscribe("account.10", marker)
    await settle(b)
    a.publish("account.9", PresenceEvent(account=9, online=True))
    await until(lambda: len(gone.events) == 1 and len(kept.events) == 1, "both got the first")
    sub.cancel()
    sub.cancel()  # twice is harmless
    a.publish("account.9", PresenceEvent(account=9, online=False))
    a.publish("account.10", PresenceEvent(account=10, online=True))  # sent after: a barrier
    await until(lambda: len(marker.events) == 1 and len(kept.events) == 2, "barrier passed")
    assert len(gone.events) == 1


async def test_last_unsubscribe_ends_interest_and_resubscribe_works(
    pair: tuple[Bus, Bus],
) -> None:
    a, b = pair
    first, second = Recorder(), Recorder()
    b.subscribe("account.11", first).cancel()
    await settle(b)
    if isinstance(b, NatsBus):
        assert "account.11" not in b.remote  # the node stops receiving the topic
    a.publish("account.11", PresenceEvent(account=11, online=True))
    b.subscribe("account.11", second)
    await settle(b)
    a.publish("account.11", PresenceEvent(account=11, online=False))
    # the first publish may still be on its way when the new subscription lands (NATS orders
    # one connection's messages, not a publish against another connection's subscribe)
    await until(
        lambda: PresenceEvent(account=11, online=False) in second.events,
        "the new subscriber got the one after it",
    )
    assert first.events == []
    assert second.events[-1] == PresenceEvent(account=11, online=False)


async def test_a_failing_handler_does_not_stop_the_others(pair: tuple[Bus, Bus]) -> None:
    a, b = pair
    got = Recorder()

    def broken(event: BusEvent) -> None:
        raise RuntimeError("handler bug")

    b.subscribe("account.12", broken)
    b.subscribe("account.12", got)
    await settle(b)
    a.publish("account.12", PresenceEvent(account=12, online=True))
    await until(lambda: len(got.events) == 1, "the healthy handler ran")


async def test_publish_with_no_subscriber_is_dropped_quietly(pair: tuple[Bus, Bus]) -> None:
    a, b = pair
    a.publish("device.999", Items(device=999, items=[]))
    got = Recorder()
    b.subscribe("account.13", got)
    await settle(a, b)
    a.publish("account.13", PresenceEvent(account=13, online=True))
    await until(lambda: len(got.events) == 1, "later traffic flows")


# ------------------------------------------------------------------ NATS specifics


def test_bus_urls_are_validated() -> None:
    assert parse_url("nats://h1:4222,h2:4223/prod") == (
        ["nats://h1:4222", "nats://h2:4223"],
        "prod",
    )
    assert parse_url("nats://u:p@h:1") == (["nats://u:p@h:1"], "tresen")
    for bad in ("nats://", "nats://h:1/a.b", "nats://h:1/" + "x" * 65, "redis://h:1"):
        with pytest.raises(InvalidRequest):
            parse_url(bad)
    with pytest.raises(InvalidRequest, match="memory://"):
        open_bus("kafka://h:1")


async def test_unreachable_nats_says_what_to_do() -> None:
    bus = NatsBus(f"nats://127.0.0.1:{free_port()}/x", connect_timeout=1.0)
    with pytest.raises(Unavailable, match="nats-server"):
        await bus.start()


@needs_nats
async def test_control_events_go_through_jetstream() -> None:
    url = f"{NATS_URL}/{nats_name()}"
    a = NatsBus(url)
    await a.start()
    try:
        a.publish("device.5", DeviceRevoked(device=5))
        a.publish("relay", DevicesChanged(account=4))
        a.publish("device.5", TypingEvent(device=5, account=1, from_device=2, on=True))
        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            await until(lambda: not a._control, "stored")
            info = await js.stream_info(a.stream)
            assert info.state.messages == 2  # the typing event is live only
            msg = await js.get_last_msg(a.stream, f"{a.name}.ctl.relay")
            assert msg.data is not None
        finally:
            await nc.close()
    finally:
        await a.close()
        await drop_streams(a)


@needs_nats
async def test_subscribing_to_a_device_wakes_it_once_the_server_has_the_subscription() -> None:
    # a commit published before the subscription reached the server is read from the store
    url = f"{NATS_URL}/{nats_name()}"
    a = NatsBus(url)
    await a.start()
    try:
        got = Recorder()
        a.subscribe("device.77", got)
        await until(lambda: Items(device=77, items=[]) in got.events, "wake-up after subscribe")
    finally:
        await a.close()
        await drop_streams(a)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A nats-server of this test's own, to stop and start."""

    def __init__(self, store: Path, *, jetstream: bool = True) -> None:
        self.port = free_port()
        self.store = store
        self.jetstream = jetstream
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)]
            + (["-js", "-sd", str(self.store)] if self.jetstream else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        async def probe() -> bool:
            try:
                nc = await nats.connect(self.url, allow_reconnect=False, connect_timeout=1)
            except Exception:
                return False
            await nc.close()
            return True

        async with asyncio.timeout(15):
            while not await probe():
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    if not Path(NATS_SERVER).exists():
        pytest.skip("nats-server is not installed")
    server = NatsServer(tmp_path / "js")
    server.start()
    yield server
    server.stop()


async def test_subscriptions_and_control_events_survive_a_nats_restart(
    own_nats: NatsServer,
) -> None:
    await own_nats.ready()
    a, b = NatsBus(own_nats.url + "/r"), NatsBus(own_nats.url + "/r")
    await a.start()
    await b.start()
    try:
        live, control, device = Recorder(), Recorder(), Recorder()
        b.subscribe("presence.1", live)
        b.subscribe("relay", control)
        b.subscribe("device.3", device)
        await settle(a, b)
        a.publish("presence.1", PresenceEvent(account=1, online=True))
        await until(lambda: len(live.events) == 1, "before the restart")

        own_nats.stop()
        # while NATS is down: a control event is kept and retried until stored
        a.publish("relay", DevicesChanged(account=42))
        device.events.clear()
        own_nats.start()
        await own_nats.ready()

        await until(lambda: a.reconnects >= 1 and b.reconnects >= 1, "both reconnected")
        # the control event published during the outage arrives after it
        await until(lambda: DevicesChanged(account=42) in control.events, "control event")
        # every device held by a node is told to re-read its queue (live events may be lost)
        await until(lambda: Items(device=3, items=[]) in device.events, "resync wake-up")
        # and live subscriptions work again
        await settle(a, b)
        a.publish("presence.1", PresenceEvent(account=1, online=False))
        await until(
            lambda: PresenceEvent(account=1, online=False) in live.events, "after the restart"
        )
    finally:
        await a.close()
        await b.close()


async def test_nats_without_jetstream_says_what_to_do(tmp_path: Path) -> None:
    if not Path(NATS_SERVER).exists():
        pytest.skip("nats-server is not installed")
    server = NatsServer(tmp_path / "js", jetstream=False)
    server.start()
    try:
        await server.ready()
        with pytest.raises(Unavailable, match="-js"):
            await NatsBus(server.url, connect_timeout=1.0).start()
    finally:
        server.stop()


async def test_close_sends_what_was_published(own_nats: NatsServer) -> None:
    await own_nats.ready()
    a, b = NatsBus(own_nats.url), NatsBus(own_nats.url)
    await a.start()
    await b.start()
    try:
        got = Recorder()
        b.subscribe("account.2", got)
        control = Recorder()
        b.subscribe("relay", control)
        await settle(b)
        for n in range(100):
            a.publish("account.2", PresenceEvent(account=2, online=True, last_seen=n))
        a.publish("relay", PolicyChanged(what="rates"))
        await a.close()  # flushes before disconnecting
        await until(lambda: len(got.events) == 100, "all 100 arrived")
        await until(lambda: len(control.events) == 1, "the control event arrived")
        a.publish("account.2", PresenceEvent(account=2, online=False))  # after close: ignored
    finally:
        await b.close()


@needs_nats
async def test_the_presence_book_counts_an_account_online_on_any_node() -> None:
    url = f"{NATS_URL}/{nats_name()}"
    a, b = NatsBus(url), NatsBus(url)
    await a.start()
    await b.start()
    try:
        assert a.book is not None and b.book is not None
        assert await a.book.join(5) is True  # first device anywhere: publish "online"
        assert await b.book.join(5) is False  # already online via node a
        assert await b.book.online([5, 6]) == {5}
        assert await a.book.leave(5) is False  # still on node b: no "offline"
        assert await a.book.online([5]) == {5}
        assert await b.book.leave(5) is True  # the last one: publish "offline"
        assert await a.book.online([5]) == set()
        await b.book.join(7)
        await b.close()  # a node that stops takes its entries with it
        assert await a.book.online([7]) == set()
    finally:
        await a.close()
        await b.close()
        await drop_streams(a)

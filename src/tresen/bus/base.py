"""The bus protocol every backend implements (memory for one node, NATS for many)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tresen.bus.events import BusEvent

Handler = Callable[[BusEvent], None]


class Subscription(Protocol):
    def cancel(self) -> None: ...


class Bus(Protocol):
    """Topic-addressed, fire-and-forget events. Handlers must not block.

    Topics: ``device.<id>`` (queue items, revocation, key counts, typing), ``account.<id>``
    (device list changes, presence), ``relay`` (node-wide notices).
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def publish(self, topic: str, event: BusEvent) -> None: ...

    def subscribe(self, topic: str, handler: Handler) -> Subscription: ...


def open_bus(url: str, *, presence_ttl: float = 60.0) -> Bus:
    """``presence_ttl``: many nodes: how long a dead node's accounts stay online in the book."""
    if url in ("memory://", "memory", ""):
        from tresen.bus.memory import MemoryBus

        return MemoryBus()
    if url.startswith(("nats://", "tls://")):
        from tresen.bus.nats import NatsBus

        return NatsBus(url, presence_ttl=presence_ttl)
    from tresen.errors import InvalidRequest

    raise InvalidRequest(
        f"unsupported bus URL {url!r}: use memory:// (one node) or nats://host:port[/name]"
    )

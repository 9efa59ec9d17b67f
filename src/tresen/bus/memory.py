"""In-process bus for a single relay node: a dict of topic to handlers, no copies."""

from __future__ import annotations

import logging

from tresen.bus.base import Handler
from tresen.bus.events import BusEvent

log = logging.getLogger("tresen.bus")


class _Sub:
    __slots__ = ("bus", "handler", "topic")

    def __init__(self, bus: MemoryBus, topic: str, handler: Handler) -> None:
        self.bus, self.topic, self.handler = bus, topic, handler

    def cancel(self) -> None:
        handlers = self.bus.topics.get(self.topic)
        if handlers is not None:
            handlers.discard(self)
            if not handlers:
                del self.bus.topics[self.topic]


class MemoryBus:
    def __init__(self) -> None:
        self.topics: dict[str, set[_Sub]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self.topics.clear()

    def publish(self, topic: str, event: BusEvent) -> None:
        for sub in tuple(self.topics.get(topic, ())):
            try:
                sub.handler(event)
            except Exception:
                log.exception("bus handler for %s failed", topic)

    def subscribe(self, topic: str, handler: Handler) -> _Sub:
        sub = _Sub(self, topic, handler)
        self.topics.setdefault(topic, set()).add(sub)
        return sub

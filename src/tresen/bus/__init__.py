"""The relay's event bus: in-process for one node, NATS (core + JetStream) for many."""

from tresen.bus.base import Bus, Handler, Subscription, open_bus
from tresen.bus.events import BusEvent

__all__ = ["Bus", "BusEvent", "Handler", "Subscription", "open_bus"]

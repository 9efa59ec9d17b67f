"""Events that cross the bus between relay parts (and, with NATS, between relay nodes).

Published only after the database commit that they describe.
"""

from __future__ import annotations

import msgspec

from tresen.protocol.frames import Item


class Event(msgspec.Struct, tag_field="e", omit_defaults=True):
    pass


class Items(Event, tag="items"):
    """New queue items for one device (already committed)."""

    device: int
    items: list[Item]


class DeviceRevoked(Event, tag="revoked"):
    device: int


class DevicesChanged(Event, tag="devices"):
    """An account's device list changed: caches drop it."""

    account: int


class TypingEvent(Event, tag="typing"):
    device: int
    account: int
    from_device: int
    on: bool
    group: int = 0


class PresenceEvent(Event, tag="presence"):
    account: int
    online: bool
    last_seen: int = 0


class KeysLowEvent(Event, tag="keys_low"):
    device: int
    count: int


BusEvent = Items | DeviceRevoked | DevicesChanged | TypingEvent | PresenceEvent | KeysLowEvent

__all__ = [
    "BusEvent",
    "DeviceRevoked",
    "DevicesChanged",
    "Event",
    "Items",
    "KeysLowEvent",
    "PresenceEvent",
    "TypingEvent",
]

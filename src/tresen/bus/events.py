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


class PolicyChanged(Event, tag="policy"):
    """A business-policy fact changed (topic ``relay``): policy gates update their memory.

    ``what``: ``business`` (``a`` became a business), ``block`` / ``unblock`` (``a`` blocked
    ``b``), ``consent`` (person ``b`` towards business ``a``: ``category``, ``on``), ``entry``
    (``b`` entered ``a``'s chat from a link until ``until``), ``template`` (a template of ``a``
    changed: reload), ``standing`` (``a``'s tier, quality, throughput or balance: reload),
    ``rates`` (the rate card was replaced), ``resync`` (events may have been missed: reload
    everything from the store).
    """

    what: str
    a: int = 0
    b: int = 0
    category: str = ""
    on: bool = True
    until: int = 0
    source: str = ""


BusEvent = (
    Items
    | DeviceRevoked
    | DevicesChanged
    | TypingEvent
    | PresenceEvent
    | KeysLowEvent
    | PolicyChanged
)

__all__ = [
    "BusEvent",
    "DeviceRevoked",
    "DevicesChanged",
    "Event",
    "Items",
    "KeysLowEvent",
    "PolicyChanged",
    "PresenceEvent",
    "TypingEvent",
]

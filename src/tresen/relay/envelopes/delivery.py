"""What one connected device has been sent and not yet acknowledged.

Sans I/O: the connection feeds it queue items (from the store or live from the bus) and acks,
and asks it what to send. At most ``window`` items are in flight; past that the device is
"behind" and catches up from the store once it acknowledges, so a slow device costs the relay
no memory.

Items leave in ascending ``seq`` (an ack "up to N" covers everything below N), and ``cursor``
means: every item of this device up to ``cursor`` has been sent on this connection. A live
:class:`Items` event with no items is a wake-up ("the store has new items for you"): the bus
between nodes sends only those, because items committed by other nodes may arrive out of
``seq`` order, and a read of the store is always gap-free (the writer takes a per-device lock
before it allocates ``seq``, so a device's items commit in ``seq`` order).
"""

from __future__ import annotations

from collections import OrderedDict

from tresen.protocol.frames import Item


class DeviceStream:
    __slots__ = (
        "behind",
        "buffer",
        "buffer_limit",
        "cursor",
        "device",
        "in_flight",
        "poked",
        "window",
    )

    def __init__(self, device: int, *, window: int, buffer_limit: int = 4096) -> None:
        self.device = device
        self.window = window
        self.buffer_limit = buffer_limit
        #: seq -> item, in the order sent
        self.in_flight: OrderedDict[int, Item] = OrderedDict()
        #: highest seq read from the store or sent live
        self.cursor = 0
        #: True while the store holds items this stream has not sent (catching up)
        self.behind = True
        #: live items that arrived while catching up
        self.buffer: list[Item] = []
        #: a wake-up came while behind: the running read may have begun before its commit
        self.poked = False

    @property
    def room(self) -> int:
        return self.window - len(self.in_flight)

    def on_live(self, items: list[Item]) -> list[Item]:
        """Items committed for this device; returns those to send now."""
        if not items:
            # a wake-up (or a resync after lost events): read the store after ``cursor``; if
            # already behind, a read may be running that began before this commit
            self.poked = self.behind
            self.behind = True
            return []
        if self.behind:
            if len(self.buffer) + len(items) > self.buffer_limit:
                # they are in the store: the catch-up reads them
                self.buffer.clear()
            else:
                self.buffer.extend(items)
            return []
        fresh = [i for i in items if i.seq not in self.in_flight]
        if len(fresh) > self.room:
            self.behind = True
            return []
        return self._mark_sent(fresh)

    def on_fetched(self, items: list[Item], *, exhausted: bool) -> list[Item]:
        """Items read from the store after ``cursor``; returns those to send now.

        ``exhausted`` says the store had nothing more after them: the stream goes live, and the
        live items buffered meanwhile that the read did not see are sent too.
        """
        out = self._mark_sent([i for i in items if i.seq not in self.in_flight])
        if exhausted and self.poked:
            # a wake-up came during (or just before) this read: read once more
            self.poked = False
        elif exhausted:
            # what the read saw has seq <= cursor; the rest committed after the read began
            late = [i for i in self.buffer if i.seq > self.cursor]
            self.buffer.clear()
            if len(late) <= self.room:
                self.behind = False
                out += self._mark_sent(sorted(late, key=lambda i: i.seq))
        return out

    def on_ack(self, upto: int) -> list[Item]:
        """Acknowledged items, to be deleted from the store."""
        acked = []
        for seq in list(self.in_flight):
            if seq <= upto:
                acked.append(self.in_flight.pop(seq))
        return acked

    def _mark_sent(self, items: list[Item]) -> list[Item]:
        for item in items:
            self.in_flight[item.seq] = item
            if item.seq > self.cursor:
                self.cursor = item.seq
        return items

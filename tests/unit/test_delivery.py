"""The per-connection delivery window, without sockets."""

from __future__ import annotations

from tresen.protocol.frames import Item
from tresen.relay.envelopes.delivery import DeviceStream


def item(seq: int) -> Item:
    return Item(seq, "message", f"e{seq}", 1, 1, 0)


def test_catch_up_then_live() -> None:
    s = DeviceStream(7, window=10)
    assert s.on_live([item(5)]) == []  # buffered while behind
    out = s.on_fetched([item(1), item(2)], exhausted=True)
    assert [i.seq for i in out] == [1, 2, 5]
    assert not s.behind
    assert [i.seq for i in s.on_live([item(6)])] == [6]
    assert [i.seq for i in s.on_ack(5)] == [1, 2, 5]
    assert list(s.in_flight) == [6]


def test_buffered_items_seen_by_the_read_are_not_sent_twice() -> None:
    s = DeviceStream(7, window=10)
    s.on_live([item(2)])
    out = s.on_fetched([item(1), item(2)], exhausted=True)
    assert [i.seq for i in out] == [1, 2]


def test_full_window_falls_behind_and_catches_up_from_the_store() -> None:
    s = DeviceStream(7, window=2)
    s.on_fetched([], exhausted=True)
    assert [i.seq for i in s.on_live([item(1), item(2)])] == [1, 2]
    assert s.on_live([item(3)]) == []
    assert s.behind and s.room == 0
    s.on_ack(2)
    assert [i.seq for i in s.on_fetched([item(3)], exhausted=True)] == [3]
    assert not s.behind


def test_buffer_overflow_is_dropped_because_the_store_has_it() -> None:
    s = DeviceStream(7, window=100, buffer_limit=3)
    s.on_live([item(1), item(2)])
    s.on_live([item(3), item(4)])
    assert s.buffer == []

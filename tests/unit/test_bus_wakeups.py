"""A device stream fed by a bus that carries wake-ups (empty ``Items``), as between nodes."""

from __future__ import annotations

from tresen.protocol.frames import Item
from tresen.relay.envelopes.delivery import DeviceStream


def item(seq: int) -> Item:
    return Item(seq, "message", f"e{seq}", 1, 1, 0)


def test_a_wake_up_sends_a_live_stream_back_to_the_store() -> None:
    s = DeviceStream(7, window=10)
    s.on_fetched([], exhausted=True)
    assert not s.behind
    assert s.on_live([]) == []
    assert s.behind  # the connection reads the store after its cursor


def test_a_wake_up_to_a_live_stream_costs_one_read() -> None:
    s = DeviceStream(7, window=10)
    s.on_fetched([], exhausted=True)
    s.on_live([])  # the read it causes starts after this commit
    assert [i.seq for i in s.on_fetched([item(1)], exhausted=True)] == [1]
    assert not s.behind


def test_a_wake_up_during_a_read_makes_the_stream_read_again() -> None:
    s = DeviceStream(7, window=10)
    s.on_fetched([], exhausted=True)
    s.on_live([])  # seq 1 committed: a read starts
    s.on_live([])  # seq 2 committed while that read runs; the read may not see it
    assert [i.seq for i in s.on_fetched([item(1)], exhausted=True)] == [1]
    assert s.behind  # not live yet: seq 2 may be in the store
    assert [i.seq for i in s.on_fetched([item(2)], exhausted=True)] == [2]
    assert not s.behind and s.cursor == 2


def test_items_leave_in_ascending_seq_even_when_wake_ups_arrive_out_of_order() -> None:
    # node B's commit (seq 11) wakes the device before node A's (seq 10) does; both are read
    # from the store, so the device never gets 11 before 10 (its ack "up to 11" covers 10)
    s = DeviceStream(7, window=10)
    s.on_fetched([], exhausted=True)
    s.on_live([])
    sent = s.on_fetched([item(10), item(11)], exhausted=True)
    s.on_live([])  # A's wake-up, late
    sent += s.on_fetched([], exhausted=True)
    assert [i.seq for i in sent] == [10, 11]
    assert [i.seq for i in s.on_ack(11)] == [10, 11]


def test_a_wake_up_while_the_window_is_full_is_kept_for_after_the_ack() -> None:
    s = DeviceStream(7, window=1)
    s.on_fetched([item(1)], exhausted=False)
    s.on_live([])
    assert s.behind and s.room == 0
    s.on_ack(1)
    assert [i.seq for i in s.on_fetched([item(2)], exhausted=True)] == [2]

"""Store-and-forward over real WebSockets: sends, queues, receipts, limits, bad input."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import msgspec
import pytest
import websockets

from tresen.errors import (
    DeviceListMismatch,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from tresen.protocol.codes import Code
from tresen.protocol.frames import Error, Presence, TypingNotice

from ..conftest import Harness


async def test_send_reaches_every_recipient_device_and_own_other_devices(relay: Harness) -> None:
    alice = await relay.new_device()
    alice2 = await relay.link_device(alice)
    bob = await relay.new_device()
    bob2 = await relay.link_device(bob)
    conns = {d.device_id: await d.connect() for d in (alice, alice2, bob, bob2)}
    payloads = {d.device_id: f"for {d.device_id}".encode() for d in (alice2, bob, bob2)}
    await conns[alice.device_id].send(bob.account_id, payloads, id="m1")
    for device in (alice2, bob, bob2):
        item = await conns[device.device_id].recv()
        assert (item.kind, item.id, item.body) == ("message", "m1", payloads[device.device_id])
        assert (item.sender, item.sender_device) == (alice.account_id, alice.device_id)


async def test_stale_device_list_is_refused_with_the_current_list(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    bob2 = await relay.link_device(bob)
    conn = await alice.connect()
    with pytest.raises(DeviceListMismatch) as caught:
        await conn.send(bob.account_id, {bob.device_id: b"x"}, id="stale")
    assert caught.value.code == Code.DEVICE_LIST_MISMATCH
    assert sorted(caught.value.fields["devices"][str(bob.account_id)]) == sorted(
        [bob.device_id, bob2.device_id]
    )
    # the SDK learns the list from the answer and retries by itself
    envelope = await alice.sdk.connect()
    assert envelope.welcome is not None
    await alice.sdk.send(bob.account_id, lambda d: b"hi %d" % d)
    assert alice.sdk.device_lists[bob.account_id] == sorted([bob.device_id, bob2.device_id])


async def test_offline_device_gets_its_queue_in_order_on_reconnect(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    conn = await alice.connect()
    for n in range(300):
        await conn.send(bob.account_id, {bob.device_id: b"%d" % n}, id=f"e{n}")
    assert len(await relay.fetch_queue(bob.device_id)) == 300
    bconn = await bob.connect()
    got = [await bconn.recv() for _ in range(300)]
    assert [i.body for i in got] == [b"%d" % n for n in range(300)]
    assert [i.seq for i in got] == sorted(i.seq for i in got)
    # acknowledged items leave the relay
    for _ in range(100):
        if not await relay.fetch_queue(bob.device_id):
            break
        await asyncio.sleep(0.02)
    assert await relay.fetch_queue(bob.device_id) == []


async def test_a_store_outage_while_catching_up_keeps_the_connection(
    relay: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catch-up read that finds the store unreachable (``unavailable``, as the engines
    answer for a database that is down) is tried again after a pause; the connection stays
    up, so its sends are still answered, and the queue arrives once the store is back."""
    alice, bob = await relay.new_device(), await relay.new_device()
    conn = await alice.connect()
    for n in range(20):
        await conn.send(bob.account_id, {bob.device_id: b"%d" % n}, id=f"q{n}")
    envelopes = relay.services.envelopes
    fetch, failures = envelopes.fetch, [2]

    async def down_twice(device: int, after: int, limit: int) -> list[Any]:
        if device == bob.device_id and failures[0]:
            failures[0] -= 1
            raise Unavailable("storage unavailable during fetch_after (test); try again")
        return await fetch(device, after, limit)

    monkeypatch.setattr(envelopes, "fetch", down_twice)
    bconn = await bob.connect()
    got = [await bconn.recv(timeout=10) for _ in range(20)]
    assert [i.body for i in got] == [b"%d" % n for n in range(20)]
    assert failures == [0]  # both failed reads happened, and were tried again
    assert bconn._generation == 1  # the same connection throughout: never closed by the relay
    await bconn.send(alice.account_id, {alice.device_id: b"back"}, id="back")


async def test_resent_id_is_stored_once(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    conn = await alice.connect()
    for _ in range(3):
        await conn.send(bob.account_id, {bob.device_id: b"once"}, id="same-id")
    assert len(await relay.fetch_queue(bob.device_id)) == 1


async def test_same_id_resent_within_one_commit_batch_is_stored_once(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    ws = await raw_socket(relay, alice.token)
    frame = {
        "t": "send",
        "id": "burst",
        "to": bob.account_id,
        "payloads": {str(bob.device_id): "aGk="},
    }
    for _ in range(5):
        await ws.send(msgspec.json.encode(frame).decode())
    acked: list[str] = []
    while len(acked) < 5:
        answer = msgspec.json.decode(await ws.recv())
        assert answer["t"] == "sent", answer
        acked += answer["ids"]
    assert acked == ["burst"] * 5
    assert len(await relay.fetch_queue(bob.device_id)) == 1
    await ws.close()


async def test_delivered_and_read_receipts_flow_back_to_every_sender_device(relay: Harness) -> None:
    alice = await relay.new_device()
    alice2 = await relay.link_device(alice)
    bob = await relay.new_device()
    a1, a2, b = await alice.connect(), await alice2.connect(), await bob.connect()
    await a1.send(bob.account_id, {bob.device_id: b"x", alice2.device_id: b"copy"}, id="r1")
    assert (await b.recv()).id == "r1"
    assert (await a2.recv()).kind == "message"  # the copy
    for conn in (a1, a2):
        receipt = await conn.recv()
        assert (receipt.kind, receipt.id, receipt.sender) == ("delivered", "r1", bob.account_id)
    await b.read(alice.account_id, ["r1"])
    for conn in (a1, a2):
        receipt = await conn.recv()
        assert (receipt.kind, receipt.id, receipt.sender_device) == ("read", "r1", bob.device_id)


async def test_unknown_recipient_oversized_and_bad_ids(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    conn = await alice.connect()
    with pytest.raises(NotFound) as caught:
        await conn.send(999_999, {1: b"x"})
    assert caught.value.code == Code.UNKNOWN_RECIPIENT
    big = b"x" * (relay.services.settings.max_envelope_bytes + 1)
    with pytest.raises(PayloadTooLarge):
        await conn.send(bob.account_id, {bob.device_id: big})
    with pytest.raises(InvalidRequest):
        await conn.send(bob.account_id, {bob.device_id: b"x"}, id="x" * 65)
    # the connection still works
    await conn.send(bob.account_id, {bob.device_id: b"fine"})


async def raw_socket(relay: Harness, token: str) -> Any:
    ws = await websockets.connect(
        relay.url.replace("http", "ws") + "/v1/ws",
        subprotocols=["tresen.v1.json"],  # type: ignore[list-item]
    )
    await ws.send(msgspec.json.encode({"t": "hello", "token": token}).decode())
    welcome = msgspec.json.decode(await ws.recv())
    assert welcome["t"] == "welcome", welcome
    return ws


async def test_malformed_frames_get_error_frames_and_the_connection_goes_on(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    ws = await raw_socket(relay, alice.token)
    bad = ['{"t": "nope"}', "not json", '{"t": "send", "id": 5}', "[1,2]", '{"t":"ack"}']
    for frame in bad:
        await ws.send(frame)
    codes = [msgspec.json.decode(await ws.recv())["code"] for _ in bad]
    assert codes == [
        "unknown_frame",
        "malformed_frame",
        "malformed_frame",
        "malformed_frame",
        "malformed_frame",
    ]
    good = {
        "t": "send",
        "id": "ok1",
        "to": bob.account_id,
        "payloads": {str(bob.device_id): "aGk="},
    }
    await ws.send(msgspec.json.encode(good).decode())
    sent = msgspec.json.decode(await ws.recv())
    assert sent["t"] == "sent" and sent["ids"] == ["ok1"]
    await ws.close()


async def test_bad_token_and_bad_subprotocol_are_refused(relay: Harness) -> None:
    url = relay.url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(url, subprotocols=["tresen.v1.json"]) as ws:  # type: ignore[list-item]
        await ws.send('{"t":"hello","token":"tdv_nope"}')
        error = msgspec.json.decode(await ws.recv())
        assert error["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    with pytest.raises(websockets.InvalidHandshake):
        async with websockets.connect(url, subprotocols=["tresen.v99.json"]) as ws:  # type: ignore[list-item]
            await ws.recv()


async def test_revoked_device_is_cut_off_and_its_queue_dropped(relay: Harness) -> None:
    alice = await relay.new_device()
    alice2 = await relay.link_device(alice)
    bob = await relay.new_device()
    conn2 = await alice2.connect(reconnect=False)
    bconn = await bob.connect()
    await bconn.send(alice.account_id, {alice.device_id: b"a", alice2.device_id: b"b"})
    await conn2.recv()
    await bconn.send(alice.account_id, {alice.device_id: b"a", alice2.device_id: b"b"})
    r = await alice.http.delete(f"/v1/devices/{alice2.device_id}")
    assert r.status_code == 204
    for _ in range(100):
        if conn2.fatal is not None:
            break
        await asyncio.sleep(0.02)
    assert conn2.fatal is not None
    assert await relay.fetch_queue(alice2.device_id) == []
    r = await alice2.http.get("/v1/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_revoked"
    # senders now have to leave the revoked device out
    with pytest.raises(DeviceListMismatch):
        await bconn.send(alice.account_id, {alice.device_id: b"a", alice2.device_id: b"b"})


async def test_typing_and_presence(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    a, b = await alice.connect(), await bob.connect()
    await a.typing(to=bob.account_id)
    notice = await b.notice()
    assert isinstance(notice, TypingNotice) and notice.account == alice.account_id
    await a.watch([bob.account_id])
    state = await a.notice()
    assert isinstance(state, Presence) and state.online
    await b.close()
    offline = await a.notice()
    assert isinstance(offline, Presence) and not offline.online and offline.last_seen > 0
    r = await alice.http.get(f"/v1/accounts/{bob.account_id}/presence")
    assert r.json()["online"] is False and r.json()["last_seen"] > 0
    # nobody: hidden
    r = await bob.http.patch("/v1/me", json={"presence_privacy": "nobody"})
    assert r.status_code == 200
    r = await alice.http.get(f"/v1/accounts/{bob.account_id}/presence")
    assert r.status_code == 403
    # contacts: visible to contacts only
    await bob.http.patch("/v1/me", json={"presence_privacy": "contacts"})
    assert (await alice.http.get(f"/v1/accounts/{bob.account_id}/presence")).status_code == 403
    await bob.http.put("/v1/contacts", json={"accounts": [alice.account_id]})
    assert (await alice.http.get(f"/v1/accounts/{bob.account_id}/presence")).status_code == 200


async def test_expired_envelopes_notify_the_sender(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    conn = await alice.connect()
    await conn.send(bob.account_id, {bob.device_id: b"late"}, id="old")
    relay.clock.advance(relay.services.settings.envelope_ttl_seconds + 1)
    assert await relay.services.envelopes.do_purge_expired() == 1
    notice = await conn.recv()
    assert (notice.kind, notice.id, notice.sender_device) == ("expired", "old", bob.device_id)
    assert await relay.fetch_queue(bob.device_id) == []


async def test_many_clients_exchange_concurrently(relay: Harness) -> None:
    pairs = [(await relay.new_device(), await relay.new_device()) for _ in range(20)]
    conns = [(await a.connect(), await b.connect()) for a, b in pairs]

    async def run(i: int) -> None:
        (_, b), (ca, cb) = pairs[i], conns[i]
        await asyncio.gather(*(ca.send(b.account_id, {b.device_id: b"%d" % n}) for n in range(50)))
        got = sorted([int((await cb.recv()).body) for _ in range(50)])
        assert got == list(range(50))

    await asyncio.gather(*(run(i) for i in range(20)))


async def test_json_debug_frames_work_end_to_end(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    a = await alice.connect(format="json")
    b = await bob.connect(format="json")
    await a.send(bob.account_id, {bob.device_id: b"\x00\xffbinary"})
    assert (await b.recv()).body == b"\x00\xffbinary"
    assert isinstance(await _no_error(b), type(None))


async def _no_error(conn: Any) -> Error | None:
    try:
        return conn.errors.get_nowait()  # type: ignore[no-any-return]
    except asyncio.QueueEmpty:
        return None


async def test_the_send_path_leaves_no_cyclic_garbage(relay: Harness) -> None:
    """A stored envelope leaves nothing for the cyclic garbage collector, whose walks pause the
    event loop (the writer's callback held its op: ten objects per envelope, found with
    ``gc.DEBUG_SAVEALL``). Counted with the client in the same process, so the SDK's path is
    held to the same rule."""
    alice, bob = await relay.new_device(), await relay.new_device()
    conn_a, conn_b = await alice.connect(), await bob.connect()

    async def burst(tag: str, n: int) -> None:
        for start in range(0, n, 10):  # ten in flight at a time
            await asyncio.gather(
                *(
                    conn_a.send(bob.account_id, {bob.device_id: b"x"}, id=f"{tag}{i}")
                    for i in range(start, start + 10)
                )
            )
        for _ in range(n):
            while (await conn_b.recv(timeout=30)).kind != "message":
                pass

    await burst("warm", 50)  # caches, pools and lazily made objects
    gc.collect()
    gc.disable()
    try:
        await burst("m", 500)
        found = gc.collect()
    finally:
        gc.enable()
    assert found < 50, f"{found} objects in reference cycles after 500 envelopes"

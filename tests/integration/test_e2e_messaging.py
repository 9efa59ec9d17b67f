"""End-to-end encryption through a real relay: 1:1 with multiple devices, groups with Megolm,
key top-up, persistence, device changes and SAS verification (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tresen.client import AsyncDevice
from tresen.client.crypto.machine import CryptoMachine
from tresen.client.crypto.megolm import ROTATION_MESSAGES
from tresen.client.secure import (
    Event,
    GroupChange,
    Message,
    Receipt,
    SecureDevice,
    SecurityCodeChanged,
    Undecryptable,
    VerificationUpdate,
)
from tresen.errors import CryptoError

from ..conftest import DeviceHandle, Harness

E = TypeVar("E")


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"code_attempts_per_address_per_hour": 1000}


async def secure(handle: DeviceHandle, tmp: Path, **options: Any) -> SecureDevice:
    device = SecureDevice.open(
        handle.sdk, tmp / f"{handle.device_id}.store", key=b"k" * 32, **options
    )
    await device.start()
    return device


async def next_of(device: SecureDevice, kind: type[E], timeout: float = 10.0) -> E:
    """The next event of ``kind``, skipping receipts, notices and other kinds."""
    while True:
        event: Event = await device.recv(timeout)
        if isinstance(event, kind):
            return event


async def test_one_to_one_with_every_device(relay: Harness, tmp_path: Path) -> None:
    alice_h, bob_h = await relay.new_device(), await relay.new_device()
    bob2_h = await relay.link_device(bob_h)
    alice2_h = await relay.link_device(alice_h)
    alice, bob, bob2, alice2 = [
        await secure(h, tmp_path) for h in (alice_h, bob_h, bob2_h, alice2_h)
    ]
    r = await bob_h.http.get("/v1/keys/count")
    assert r.json()["one_time_key_counts"]["signed_curve25519"] == 50
    assert r.json()["unused_fallback_key_types"] == ["signed_curve25519"]

    sent = await alice.send(bob.account_id, "hello bob")
    for receiver in (bob, bob2):
        msg = await next_of(receiver, Message)
        assert (msg.id, msg.content["body"], msg.sender) == (sent, "hello bob", alice.account_id)
        assert msg.conversation == alice.account_id and not msg.verified
    copy = await next_of(alice2, Message)
    assert (copy.content["body"], copy.conversation) == ("hello bob", bob.account_id)

    # the sessions now exist both ways: replies use normal Olm messages
    await bob.send(alice.account_id, {"msgtype": "m.text", "body": "hi alice"})
    assert (await next_of(alice, Message)).content["body"] == "hi alice"
    assert (await next_of(alice2, Message)).content["body"] == "hi alice"
    assert (await next_of(bob2, Message)).conversation == alice.account_id
    for _ in range(3):
        await alice.send(bob.account_id, "again")
        assert (await next_of(bob, Message)).content["body"] == "again"
    receipt = await next_of(alice, Receipt)
    assert receipt.kind == "delivered"
    for d in (alice, bob, bob2, alice2):
        await d.close()


async def test_state_survives_restart_and_wrong_key_fails(relay: Harness, tmp_path: Path) -> None:
    alice_h, bob_h = await relay.new_device(), await relay.new_device()
    alice = await secure(alice_h, tmp_path)
    bob = SecureDevice.open(bob_h.sdk, tmp_path / "bob.store", passphrase="correct horse")
    await bob.start()
    await alice.send(bob.account_id, "one")
    assert (await next_of(bob, Message)).content["body"] == "one"
    identity = bob.identity
    await bob.close()

    with pytest.raises(CryptoError) as wrong:
        SecureDevice.open(bob_h.sdk, tmp_path / "bob.store", passphrase="wrong horse")
    assert wrong.value.code == "crypto_store_key"
    assert wrong.value.fields["reason"] == "wrong_key"

    restarted = AsyncDevice(bob_h.sdk.credentials)
    bob = SecureDevice.open(restarted, tmp_path / "bob.store", passphrase="correct horse")
    assert bob.identity == identity
    await bob.start()
    # the restored Olm session decrypts the next message (no new pre-key needed)
    await alice.send(bob.account_id, "two")
    assert (await next_of(bob, Message)).content["body"] == "two"
    await bob.send(alice.account_id, "back")
    assert (await next_of(alice, Message)).content["body"] == "back"
    await alice.close()
    await bob.close()


async def test_keys_low_tops_up_and_fallback_rotates(relay: Harness, tmp_path: Path) -> None:
    bob_h = await relay.new_device()
    bob = await secure(bob_h, tmp_path, otk_target=12)
    senders = [await secure(await relay.new_device(), tmp_path) for _ in range(5)]
    for sender in senders:
        await sender.send(bob.account_id, "claiming a key")
    # five claims took bob below the watermark (10): the relay said keys_low, bob uploaded more
    for _ in range(5):
        assert (await next_of(bob, Message)).content["body"] == "claiming a key"
    # without a top-up five claims would leave 7 keys
    r = await bob_h.http.get("/v1/keys/count")
    for _ in range(50):
        if r.json()["one_time_key_counts"]["signed_curve25519"] >= 10:
            break
        await bob.device._live().ping()
        r = await bob_h.http.get("/v1/keys/count")
    assert r.json()["one_time_key_counts"]["signed_curve25519"] >= 10

    # bob goes offline; every one-time key is claimed, then the fallback key is handed out
    await bob.close()
    account, device = str(bob.account_id), str(bob.device_id)
    claim = {"one_time_keys": {account: {device: "signed_curve25519"}}}
    async with relay.client(senders[0].device.credentials.token) as http:
        for _ in range(30):
            r = await http.post("/v1/keys/claim", json=claim)
            key = next(iter(r.json()["one_time_keys"][account][device].values()))
            if key.get("fallback"):
                break
        assert key.get("fallback")
    assert (await bob_h.http.get("/v1/keys/count")).json()["unused_fallback_key_types"] == []
    # back online: a new fallback key and a full set of one-time keys
    bob = SecureDevice.open(
        AsyncDevice(bob_h.sdk.credentials), tmp_path / f"{bob_h.device_id}.store", key=b"k" * 32
    )
    await bob.start()
    counts = (await bob_h.http.get("/v1/keys/count")).json()
    assert counts["unused_fallback_key_types"] == ["signed_curve25519"]
    assert counts["one_time_key_counts"]["signed_curve25519"] == 50
    # a sender whose session started from the (old) fallback key still gets through
    late = await secure(await relay.new_device(), tmp_path)
    await late.send(bob.account_id, "after rotation")
    assert (await next_of(bob, Message)).content["body"] == "after rotation"
    for d in (bob, late, *senders):
        await d.close()


async def test_group_megolm_rotation_and_new_devices(relay: Harness, tmp_path: Path) -> None:
    a_h, b_h, c_h = [await relay.new_device() for _ in range(3)]
    alice, bob, carol = [await secure(h, tmp_path) for h in (a_h, b_h, c_h)]
    r = await a_h.http.post(
        "/v1/groups", json={"name": "g", "members": [bob.account_id, carol.account_id]}
    )
    gid = r.json()["group_id"]
    await alice.send_group(gid, "first")
    for d in (bob, carol):
        msg = await next_of(d, Message)
        assert (msg.group, msg.content["body"], msg.sender) == (gid, "first", alice.account_id)
    session = alice.machine.groups.outbound[f"!{gid}:tresen"].session.session_id
    await alice.send_group(gid, "second")
    assert (await next_of(bob, Message)).content["body"] == "second"
    assert alice.machine.groups.outbound[f"!{gid}:tresen"].session.session_id == session

    # carol is removed: the next message uses a new session that carol never gets
    r = await a_h.http.delete(f"/v1/groups/{gid}/members/{carol.account_id}")
    assert r.status_code in (200, 204), r.text
    while (change := await next_of(alice, GroupChange)).op != "remove":
        assert change.op == "create"
    await alice.send_group(gid, "without carol")
    assert (await next_of(bob, Message)).content["body"] == "without carol"
    rotated = alice.machine.groups.outbound[f"!{gid}:tresen"]
    assert rotated.session.session_id != session
    assert not any(k.startswith(f"{carol.account_id}|") for k in rotated.shared_with)

    # bob links a new device: alice sees the security code change; the new device gets the key
    # going forward only (it cannot read what was sent before it existed)
    b2_h = await relay.link_device(b_h)
    bob2 = await secure(b2_h, tmp_path)
    await alice.send_group(gid, "hello new device")
    change = await next_of(alice, SecurityCodeChanged)
    assert (change.account, change.device, change.kind) == (bob.account_id, b2_h.device_id, "added")
    assert (await next_of(bob2, Message)).content["body"] == "hello new device"
    assert (
        rotated.session.session_id
        == alice.machine.groups.outbound[f"!{gid}:tresen"].session.session_id
    )
    inbound = [g for g in bob2.machine.groups.inbound.values() if g.sender == str(alice.account_id)]
    assert inbound[0].session.first_known_index == rotated.messages - 1

    # bob answers in the group: alice and bob's other device read it
    await bob.send_group(gid, "from bob")
    assert (await next_of(alice, Message)).content["body"] == "from bob"
    assert (await next_of(bob2, Message)).content["body"] == "from bob"
    for d in (alice, bob, bob2, carol):
        await d.close()


async def test_group_session_rotates_after_100_messages(relay: Harness, tmp_path: Path) -> None:
    a_h, b_h = await relay.new_device(), await relay.new_device()
    alice, bob = await secure(a_h, tmp_path), await secure(b_h, tmp_path)
    gid = (
        await a_h.http.post("/v1/groups", json={"name": "g", "members": [bob.account_id]})
    ).json()["group_id"]
    sessions = set()
    for n in range(ROTATION_MESSAGES + 1):
        await alice.send_group(gid, f"m{n}")
        sessions.add(alice.machine.groups.outbound[f"!{gid}:tresen"].session.session_id)
    assert len(sessions) == 2
    for n in range(ROTATION_MESSAGES + 1):
        assert (await next_of(bob, Message)).content["body"] == f"m{n}"
    # seven days later the session rotates too
    outbound = alice.machine.groups.outbound[f"!{gid}:tresen"]
    alice.clock = lambda: outbound.created_at + 7 * 86_400
    await alice.send_group(gid, "a week later")
    assert alice.machine.groups.outbound[f"!{gid}:tresen"].session.session_id not in sessions
    assert (await next_of(bob, Message)).content["body"] == "a week later"
    await alice.close()
    await bob.close()


async def test_sas_verification_marks_devices_and_warns_on_change(
    relay: Harness, tmp_path: Path
) -> None:
    a_h, b_h = await relay.new_device(), await relay.new_device()
    alice, bob = await secure(a_h, tmp_path), await secure(b_h, tmp_path)
    await alice.send(bob.account_id, "let us verify")
    assert (await next_of(bob, Message)).verified is False

    async def until(device: SecureDevice, state: str) -> VerificationUpdate:
        while (update := await next_of(device, VerificationUpdate)).state != state:
            assert update.state != "cancelled", update
        return update

    # both devices must be receiving while the steps go back and forth
    sas = await alice.verify(bob.account_id, bob.device_id)
    alice_update, bob_update = await asyncio.gather(
        until(alice, "keys_exchanged"), until(bob, "keys_exchanged")
    )
    assert len(alice_update.emoji) == 7 and alice_update.emoji == bob_update.emoji
    assert alice_update.decimals == bob_update.decimals
    assert all(1000 <= n <= 9191 for n in alice_update.decimals or ())
    assert not alice.is_verified(bob.account_id, bob.device_id)
    bob_sas = bob.verifications[sas.transaction_id]
    await alice.confirm(sas)
    await bob.confirm(bob_sas)
    await asyncio.gather(until(alice, "verified"), until(bob, "verified"))
    assert alice.is_verified(bob.account_id, bob.device_id)
    assert bob.is_verified(alice.account_id, alice.device_id)
    await alice.send(bob.account_id, "verified now")
    assert (await next_of(bob, Message)).verified is True

    # bob gets a new device: alice is warned, since she verified bob
    b2_h = await relay.link_device(b_h)
    bob2 = await secure(b2_h, tmp_path)
    await alice.send(bob.account_id, "who is that")
    change = await next_of(alice, SecurityCodeChanged)
    assert (change.kind, change.warning) == ("added", True)
    assert not alice.is_verified(bob.account_id, b2_h.device_id)
    for d in (alice, bob, bob2):
        await d.close()


async def test_unreadable_items_are_reported_not_shown(relay: Harness, tmp_path: Path) -> None:
    a_h, b_h = await relay.new_device(), await relay.new_device()
    alice, bob = await secure(a_h, tmp_path), await secure(b_h, tmp_path)
    # a raw, unencrypted payload sent by a client that bypasses the SDK
    conn = await a_h.connect()
    await conn.send(
        bob.account_id,
        {bob.device_id: b'{"v":1,"events":[{"type":"m.room.message","content":{"body":"plain"}}]}'},
    )
    bad = await next_of(bob, Undecryptable)
    assert bad.reason == "unencrypted" and "plain" not in bad.message
    await conn.send(bob.account_id, {bob.device_id: b"garbage"})
    assert (await next_of(bob, Undecryptable)).reason == "malformed_envelope"
    await alice.close()
    await bob.close()


async def test_one_time_key_signed_by_the_wrong_key_is_refused(
    relay: Harness, tmp_path: Path
) -> None:
    """A device (or a lying relay) serves an OTK whose signature is not the device's: the
    sender starts no session, warns, and encrypts nothing for that device."""
    a_h, b_h = await relay.new_device(), await relay.new_device()
    alice = await secure(a_h, tmp_path)
    bob = CryptoMachine(str(b_h.account_id), str(b_h.device_id))
    mallory = CryptoMachine(str(b_h.account_id), str(b_h.device_id))
    key_id, otk = next(iter(bob.account.one_time_keys(1).items()))
    forged = mallory.account.sign({"key": otk["key"]})  # right name, wrong key
    r = await b_h.http.post(
        "/v1/keys/upload",
        json={"device_keys": bob.account.device_keys(), "one_time_keys": {key_id: forged}},
    )
    assert r.status_code == 200, r.text
    await alice.send(b_h.account_id, "for bob")
    change = await next_of(alice, SecurityCodeChanged)
    assert (change.device, change.kind, change.warning) == (b_h.device_id, "invalid_keys", True)
    assert "does not verify" in change.reason
    assert not alice.machine.olm.has_session(bob.own.curve25519)
    (item,) = [i for i in await relay.fetch_queue(b_h.device_id) if i.kind == "message"]
    assert item.body == b'{"v":1,"events":[]}'
    await alice.close()

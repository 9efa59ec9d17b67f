"""Megolm: key sharing over Olm, replay checks, forged senders, rotation rules; and the
encrypted crypto store (persistence, wrong key, key file permissions, tampered rows)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import vodozemac

from tresen.client.crypto.events import ROOM_KEY
from tresen.client.crypto.machine import CryptoMachine
from tresen.client.crypto.megolm import ROTATION_MESSAGES, ROTATION_SECONDS
from tresen.client.crypto.store import CryptoStore, create_key_file, read_key_file
from tresen.errors import CryptoError

from .test_crypto_olm import pair

ROOM = "!7:tresen"


def shared() -> tuple[CryptoMachine, CryptoMachine]:
    alice, bob = pair()
    group = alice.outbound_group(ROOM, 0.0, "e1")
    share = alice.room_key_event(bob.own, group)
    assert bob.decrypt_olm(alice.own, share.content).type == ROOM_KEY
    return alice, bob


def test_group_message_round_trip_and_replay() -> None:
    alice, bob = shared()
    group = alice.outbound_group(ROOM, 1.0, "e1")
    event = alice.encrypt_megolm(group, "m.room.message", {"body": "hi all"})
    _, kind, content = bob.decrypt_megolm(ROOM, event.content, alice.own, "env-1")
    assert (kind, content) == ("m.room.message", {"body": "hi all"})
    # the same envelope redelivered is not an error; the same index in another one is a replay
    bob.decrypt_megolm(ROOM, event.content, alice.own, "env-1")
    with pytest.raises(CryptoError) as exc:
        bob.decrypt_megolm(ROOM, event.content, alice.own, "env-2")
    assert exc.value.fields["reason"] == "replayed"
    # alice reads her own group messages
    assert alice.decrypt_megolm(ROOM, event.content, alice.own, "env-1")[2] == {"body": "hi all"}


def test_group_message_checks() -> None:
    alice, bob = shared()
    group = alice.outbound_group(ROOM, 1.0, "e1")
    event = alice.encrypt_megolm(group, "m.room.message", {"body": "x"})
    with pytest.raises(CryptoError) as exc:  # moved into another group
        bob.decrypt_megolm("!8:tresen", event.content, alice.own, "e")
    assert exc.value.fields["reason"] == "unknown_session"
    carol = CryptoMachine("3", "31")
    with pytest.raises(CryptoError) as exc:  # claimed by another sender
        bob.decrypt_megolm(ROOM, event.content, carol.own, "e")
    assert exc.value.fields["reason"] == "sender_mismatch"
    ciphertext = event.content["ciphertext"]
    flipped = ciphertext[:20] + ("A" if ciphertext[20] != "A" else "B") + ciphertext[21:]
    with pytest.raises(CryptoError) as exc:
        bob.decrypt_megolm(ROOM, {**event.content, "ciphertext": flipped}, alice.own, "e")
    assert exc.value.fields["reason"] == "megolm_decrypt_failed"
    # a key for room 7 sent under the name of room 8 does not make room-7 messages readable
    forged_key = alice.encrypt_olm(
        bob.own,
        ROOM_KEY,
        {**alice.groups.room_key_content(group), "room_id": "!8:tresen"},
    )
    bob.decrypt_olm(alice.own, forged_key.content)
    later = alice.encrypt_megolm(group, "m.room.message", {"body": "y"})
    with pytest.raises(CryptoError) as exc:
        bob.decrypt_megolm("!8:tresen", later.content, alice.own, "f")
    assert exc.value.fields["reason"] == "room_mismatch"


def test_rotation_rules() -> None:
    alice, _ = pair()
    first = alice.outbound_group(ROOM, 0.0, "e1")
    assert alice.outbound_group(ROOM, 10.0, "e1") is first
    assert alice.outbound_group(ROOM, 10.0, "e2") is not first  # members changed
    second = alice.outbound_group(ROOM, 10.0, "e2")
    for _ in range(ROTATION_MESSAGES):
        alice.encrypt_megolm(second, "t", {})
    third = alice.outbound_group(ROOM, 11.0, "e2")
    assert third is not second
    assert alice.outbound_group(ROOM, 10.0 + ROTATION_SECONDS, "e2") is third
    assert alice.outbound_group(ROOM, 11.0 + ROTATION_SECONDS, "e2") is not third


def test_a_late_key_reads_forward_only() -> None:
    alice, bob = pair()
    group = alice.outbound_group(ROOM, 0.0, "e1")
    before = alice.encrypt_megolm(group, "t", {"n": 0})
    bob.decrypt_olm(alice.own, alice.room_key_event(bob.own, group).content)
    after = alice.encrypt_megolm(group, "t", {"n": 1})
    assert bob.decrypt_megolm(ROOM, after.content, alice.own, "b")[2] == {"n": 1}
    with pytest.raises(CryptoError) as exc:
        bob.decrypt_megolm(ROOM, before.content, alice.own, "a")
    assert exc.value.fields["reason"] == "megolm_decrypt_failed"


def test_store_persists_everything(tmp_path: Path) -> None:
    path = tmp_path / "a.store"
    store = CryptoStore.open_with_passphrase(path, "pw")
    alice = CryptoMachine("1", "11", store)
    _, bob = pair()
    alice.devices.update("2", {"21": bob.account.device_keys()})
    key_id, key = next(iter(bob.account.one_time_keys(1).items()))
    alice.start_session(bob.own, key_id, key)
    group = alice.outbound_group(ROOM, 0.0, "e1")
    first = alice.encrypt_olm(bob.own, "t", {"n": 1})
    alice.save()
    store.close()
    assert os.stat(path).st_mode & 0o077 == 0
    assert b"signed_curve25519" not in path.read_bytes()

    again = CryptoMachine("1", "11", CryptoStore.open_with_passphrase(path, "pw"))
    assert again.own == alice.own
    assert again.devices.get("2", "21") is not None
    restored = again.groups.outbound[ROOM]
    assert restored.session.session_id == group.session.session_id
    second = again.encrypt_olm(bob.own, "t", {"n": 2})
    bob.devices.update("1", {"11": again.account.device_keys()})
    assert bob.decrypt_olm(again.own, first.content).content == {"n": 1}
    assert bob.decrypt_olm(again.own, second.content).content == {"n": 2}
    with pytest.raises(CryptoError) as exc:
        CryptoMachine("1", "12", CryptoStore.open_with_passphrase(path, "pw"))
    assert exc.value.fields["reason"] == "wrong_store"


def test_store_wrong_key_and_tampering(tmp_path: Path) -> None:
    path = tmp_path / "b.store"
    key_file = tmp_path / "store.key"
    key = create_key_file(key_file)
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert read_key_file(key_file) == key
    store = CryptoStore.open_with_key(path, key)
    store.put("x", "y", {"secret": 1})
    store.commit()
    store.close()
    for opener in (
        lambda: CryptoStore.open_with_key(path, b"\0" * 32),
        lambda: CryptoStore.open_with_passphrase(path, "guess"),
    ):
        with pytest.raises(CryptoError) as exc:
            opener()
        assert exc.value.code == "crypto_store_key"
    os.chmod(key_file, 0o644)
    with pytest.raises(CryptoError) as exc:
        read_key_file(key_file)
    assert exc.value.fields["reason"] == "key_file_permissions"
    with pytest.raises(FileExistsError):
        create_key_file(key_file)
    # a row moved to another name does not open
    store = CryptoStore.open_with_key(path, key)
    sealed = store.db.execute("SELECT value FROM state WHERE kind='x'").fetchone()[0]
    store.db.execute("INSERT INTO state VALUES ('x', 'z', ?)", (sealed,))
    with pytest.raises(CryptoError) as exc:
        store.get("x", "z")
    assert exc.value.fields["reason"] == "tampered"
    assert store.get("x", "y") == {"secret": 1}
    store.close()


def test_vodozemac_rejects_a_low_order_one_time_key() -> None:
    alice, bob = pair()
    zero = vodozemac.Curve25519PublicKey.from_bytes(b"\0" * 32).to_base64()
    signed = bob.account.sign({"key": zero})
    with pytest.raises(CryptoError) as exc:
        alice.start_session(bob.own, "signed_curve25519:AAAA", signed)
    assert exc.value.fields["reason"] == "bad_one_time_key"

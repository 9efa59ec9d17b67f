"""Olm between two crypto machines, and every check on the way: signatures on device keys and
one-time keys, pre-key routing, tampered and replayed ciphertext, forged plaintext fields."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest

from tresen.client.crypto.events import ENCRYPTED, EncryptedEvent, olm_plaintext
from tresen.client.crypto.machine import CryptoMachine
from tresen.client.crypto.signing import (
    OLM_ALGORITHM,
    b64encode,
    canonical_json,
    check_device_keys,
    check_one_time_key,
)
from tresen.errors import CryptoError


def pair() -> tuple[CryptoMachine, CryptoMachine]:
    """Alice with an outbound session to Bob from one of Bob's signed one-time keys."""
    alice, bob = CryptoMachine("1", "11"), CryptoMachine("2", "21")
    for m in (alice, bob):
        m.upload_body(5, fallback=True)
        m.uploaded()
    alice.devices.update("2", {"21": bob.account.device_keys()})
    bob.devices.update("1", {"11": alice.account.device_keys()})
    key_id, key = next(iter(bob.account.one_time_keys(5).items()))
    alice.start_session(bob.own, key_id, key)
    return alice, bob


def reason(exc: pytest.ExceptionInfo[CryptoError]) -> str:
    return str(exc.value.fields["reason"])


def test_canonical_json_is_matrix_canonical() -> None:
    assert (
        canonical_json({"b": 1, "a": {"d": "é", "c": [1, 2]}})
        == '{"a":{"c":[1,2],"d":"é"},"b":1}'.encode()
    )
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_device_keys_and_one_time_keys_are_signature_checked() -> None:
    alice, bob = CryptoMachine("1", "11"), CryptoMachine("2", "21")
    keys = bob.account.device_keys()
    assert check_device_keys(keys, "2", "21") == bob.own
    with pytest.raises(CryptoError) as exc:
        check_device_keys(keys, "2", "22")
    assert reason(exc) == "wrong_owner"
    forged = {**keys, "keys": {**keys["keys"], "curve25519:21": alice.own.curve25519}}
    with pytest.raises(CryptoError) as exc:
        check_device_keys(forged, "2", "21")
    assert reason(exc) == "bad_signature"
    unsigned = {k: v for k, v in keys.items() if k != "signatures"}
    with pytest.raises(CryptoError) as exc:
        check_device_keys(unsigned, "2", "21")
    assert reason(exc) == "missing_signature"

    key_id, otk = next(iter(bob.account.one_time_keys(1).items()))
    assert check_one_time_key(key_id, otk, bob.own) == otk["key"]
    # an OTK signed by the wrong key (alice's device, under bob's name) is refused
    wrong = {"key": otk["key"]}
    sig = alice.account.sign_bytes(canonical_json(wrong))
    wrong["signatures"] = {"2": {"ed25519:21": sig}}
    with pytest.raises(CryptoError) as exc:
        check_one_time_key(key_id, wrong, bob.own)
    assert reason(exc) == "bad_signature"
    with pytest.raises(CryptoError):
        alice.start_session(bob.own, key_id, wrong)
    assert not alice.olm.has_session(bob.own.curve25519)


def test_round_trip_and_pre_key_routing() -> None:
    alice, bob = pair()
    first = alice.encrypt_olm(bob.own, "m.room.message", {"body": "hi"})
    second = alice.encrypt_olm(bob.own, "m.room.message", {"body": "again"})
    assert first.content["ciphertext"][bob.own.curve25519]["type"] == 0
    assert bob.decrypt_olm(alice.own, first.content).content == {"body": "hi"}
    # the second pre-key message is routed to the session the first one created
    assert bob.decrypt_olm(alice.own, second.content).content == {"body": "again"}
    assert len(bob.olm.sessions[alice.own.curve25519]) == 1
    reply = bob.encrypt_olm(alice.own, "m.room.message", {"body": "yo"})
    assert reply.content["ciphertext"][alice.own.curve25519]["type"] == 1
    assert alice.decrypt_olm(bob.own, reply.content).content == {"body": "yo"}


def test_flipped_byte_is_rejected() -> None:
    alice, bob = pair()
    bob.decrypt_olm(alice.own, alice.encrypt_olm(bob.own, "t", {"n": 0}).content)
    for message_type in (1, 0):
        if message_type == 0:
            alice, bob = pair()
        event = alice.encrypt_olm(bob.own, "t", {"n": 1})
        body = event.content["ciphertext"][bob.own.curve25519]["body"]
        raw = bytearray(base64.b64decode(body + "=" * (-len(body) % 4)))
        raw[len(raw) // 2] ^= 0x01
        tampered = _with_body(event, bob.own.curve25519, b64encode(bytes(raw)))
        with pytest.raises(CryptoError) as exc:
            bob.decrypt_olm(alice.own, tampered)
        assert reason(exc) == "olm_decrypt_failed"
        # the genuine message still decrypts afterwards
        assert bob.decrypt_olm(alice.own, event.content).content == {"n": 1}


def test_replayed_olm_message_is_rejected() -> None:
    alice, bob = pair()
    bob.decrypt_olm(alice.own, alice.encrypt_olm(bob.own, "t", {}).content)
    alice.decrypt_olm(bob.own, bob.encrypt_olm(alice.own, "t", {}).content)
    event = alice.encrypt_olm(bob.own, "t", {"n": 2})
    bob.decrypt_olm(alice.own, event.content)
    with pytest.raises(CryptoError) as exc:
        bob.decrypt_olm(alice.own, event.content)
    assert reason(exc) == "olm_decrypt_failed"


def _with_body(event: EncryptedEvent, curve: str, body: str) -> dict[str, Any]:
    content = dict(event.content)
    content["ciphertext"] = {curve: {**content["ciphertext"][curve], "body": body}}
    return content


def _forge(alice: CryptoMachine, bob: CryptoMachine, **fields: Any) -> dict[str, Any]:
    """An Olm message from alice's real session whose plaintext fields are forged."""
    event = msgspec.json.decode(olm_plaintext("m.room.message", {"body": "x"}, alice.own, bob.own))
    event.update(fields)
    message = alice.olm.encrypt(bob.own.curve25519, msgspec.json.encode(event))
    return {
        "algorithm": OLM_ALGORITHM,
        "sender_key": alice.own.curve25519,
        "ciphertext": {bob.own.curve25519: msgspec.to_builtins(message)},
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"sender": "3"}, "sender_mismatch"),
        ({"keys": {"ed25519": "AAAA"}}, "sender_key_mismatch"),
        ({"recipient": "3"}, "recipient_mismatch"),
        ({"recipient_keys": {"ed25519": "AAAA"}}, "recipient_key_mismatch"),
        ({"type": ENCRYPTED}, "nested_encryption"),
    ],
)
def test_forged_plaintext_fields_are_rejected(fields: dict[str, Any], expected: str) -> None:
    alice, bob = pair()
    with pytest.raises(CryptoError) as exc:
        bob.decrypt_olm(alice.own, _forge(alice, bob, **fields))
    assert reason(exc) == expected


def test_forged_sender_device_is_rejected() -> None:
    """A message claiming to come from carol's device but encrypted by alice's session."""
    alice, bob = pair()
    carol = CryptoMachine("3", "31")
    bob.devices.update("3", {"31": carol.account.device_keys()})
    content = alice.encrypt_olm(bob.own, "m.room.message", {"body": "I am carol"}).content
    with pytest.raises(CryptoError) as exc:
        bob.decrypt_olm(carol.own, content)
    assert reason(exc) == "sender_key_mismatch"
    # even with the sender_key rewritten, alice's ciphertext does not open as carol's
    with pytest.raises(CryptoError) as exc:
        bob.decrypt_olm(carol.own, {**content, "sender_key": carol.own.curve25519})
    assert reason(exc) == "olm_decrypt_failed"


def test_message_for_another_device_is_not_decrypted() -> None:
    alice, bob = pair()
    content = alice.encrypt_olm(bob.own, "t", {}).content
    other = CryptoMachine("2", "22")
    with pytest.raises(CryptoError) as exc:
        other.decrypt_olm(alice.own, content)
    assert reason(exc) == "not_for_this_device"

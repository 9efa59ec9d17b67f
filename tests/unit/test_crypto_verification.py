"""SAS verification between two state machines: matching emoji and numbers, MACs, and the
cancel paths (a wrong commitment, a man in the middle, a tampered MAC)."""

from __future__ import annotations

from tresen.client.crypto.account import OlmAccount
from tresen.client.crypto.signing import b64decode, b64encode
from tresen.client.crypto.verification import EMOJI, SasVerification


def run_to_keys() -> tuple[SasVerification, SasVerification]:
    a, b = OlmAccount("1", "10"), OlmAccount("2", "20")
    alice = SasVerification(a.identity, b.identity)
    (step,) = alice.start()
    bob, (accept,) = SasVerification.from_start(b.identity, a.identity, step[1])
    (key_a,) = alice.receive(*accept)
    (key_b,) = bob.receive(*key_a)
    assert alice.receive(*key_b) == []
    return alice, bob


def test_both_sides_show_the_same_string_and_verify() -> None:
    assert len(EMOJI) == 64 and len({e for e, _ in EMOJI}) == 64
    alice, bob = run_to_keys()
    assert alice.emoji() == bob.emoji() and len(alice.emoji()) == 7
    assert alice.decimals() == bob.decimals()
    assert all(1000 <= n <= 9191 for n in alice.decimals())
    mac_a = alice.confirm()
    assert bob.receive(*mac_a[0]) == []
    mac_b = bob.confirm()
    assert [t for t, _ in mac_b] == ["m.key.verification.mac", "m.key.verification.done"]
    done = alice.receive(*mac_b[0])
    assert [t for t, _ in done] == ["m.key.verification.done"]
    assert alice.verified and bob.verified


def test_man_in_the_middle_key_breaks_the_commitment() -> None:
    a, b = OlmAccount("1", "10"), OlmAccount("2", "20")
    alice = SasVerification(a.identity, b.identity)
    (step,) = alice.start()
    _, (accept,) = SasVerification.from_start(b.identity, a.identity, step[1])
    alice.receive(*accept)
    mallory = SasVerification(b.identity, a.identity)
    out = alice.receive(
        "m.key.verification.key",
        {"transaction_id": alice.transaction_id, "key": mallory.public_key},
    )
    assert out[0][0] == "m.key.verification.cancel"
    assert alice.cancel_code == "m.mismatched_commitment" and not alice.verified


def test_tampered_mac_cancels() -> None:
    alice, bob = run_to_keys()
    alice.confirm()
    ((kind, content),) = bob.confirm()
    key_id = "ed25519:20"
    mac = b64decode(content["mac"][key_id])
    forged_mac = b64encode(bytes([mac[0] ^ 1]) + mac[1:])  # one bit of the MAC, never the same
    forged = {**content, "mac": {key_id: forged_mac}}
    out = alice.receive(kind, forged)
    assert out[0][1]["code"] == "m.key_mismatch" and not alice.verified


def test_wrong_transaction_and_unexpected_steps_cancel() -> None:
    alice, _ = run_to_keys()
    out = alice.receive("m.key.verification.mac", {"transaction_id": "other"})
    assert out[0][1]["code"] == "m.unknown_transaction"
    alice, _ = run_to_keys()
    out = alice.receive("m.key.verification.accept", {"transaction_id": alice.transaction_id})
    assert out[0][1]["code"] == "m.unexpected_message"

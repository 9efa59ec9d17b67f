"""Short authentication strings (Matrix SAS, ``m.sas.v1``) between two devices.

The flow, every step a to-device message (``m.key.verification.*``) sent over Olm:

    starter                                   other device
    start {methods}                  ───────▶
                                     ◀───────  accept {commitment = H(key_B ‖ start)}
    key {key_A}                      ───────▶
                                     ◀───────  key {key_B}
    (both show 7 emoji / 3 numbers; each person compares and confirms)
    mac {MAC(ed25519 key)}           ───────▶
                                     ◀───────  mac {MAC(ed25519 key)}
    done                             ◀──────▶  done

vodozemac does the key agreement, the SAS bytes and the MACs; this module is the state machine,
the commitment check and the Matrix info strings (``curve25519-hkdf-sha256``,
``hkdf-hmac-sha256.v2``). A mismatch anywhere cancels with a Matrix cancel code.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Literal

import vodozemac

from tresen.client.crypto.signing import DeviceIdentity, b64encode, canonical_json
from tresen.errors import CryptoError
from tresen.protocol.codes import Code

SAS_METHOD = "m.sas.v1"
KEY_AGREEMENT = "curve25519-hkdf-sha256"
HASH = "sha256"
MAC_METHOD = "hkdf-hmac-sha256.v2"
SAS_TYPES = ["emoji", "decimal"]
PREFIX = "m.key.verification."

#: the 64 emoji of the Matrix specification, by index
EMOJI: list[tuple[str, str]] = [
    ("🐶", "Dog"), ("🐱", "Cat"), ("🦁", "Lion"), ("🐎", "Horse"), ("🦄", "Unicorn"),
    ("🐷", "Pig"), ("🐘", "Elephant"), ("🐰", "Rabbit"), ("🐼", "Panda"), ("🐓", "Rooster"),
    ("🐧", "Penguin"), ("🐢", "Turtle"), ("🐟", "Fish"), ("🐙", "Octopus"), ("🦋", "Butterfly"),
    ("🌷", "Flower"), ("🌳", "Tree"), ("🌵", "Cactus"), ("🍄", "Mushroom"), ("🌏", "Globe"),
    ("🌙", "Moon"), ("☁️", "Cloud"), ("🔥", "Fire"), ("🍌", "Banana"), ("🍎", "Apple"),
    ("🍓", "Strawberry"), ("🌽", "Corn"), ("🍕", "Pizza"), ("🎂", "Cake"), ("❤️", "Heart"),
    ("😀", "Smiley"), ("🤖", "Robot"), ("🎩", "Hat"), ("👓", "Glasses"), ("🔧", "Spanner"),
    ("🎅", "Santa"), ("👍", "Thumbs Up"), ("☂️", "Umbrella"), ("⌛", "Hourglass"), ("⏰", "Clock"),
    ("🎁", "Gift"), ("💡", "Light Bulb"), ("📕", "Book"), ("✏️", "Pencil"), ("📎", "Paperclip"),
    ("✂️", "Scissors"), ("🔒", "Lock"), ("🔑", "Key"), ("🔨", "Hammer"), ("☎️", "Telephone"),
    ("🏁", "Flag"), ("🚂", "Train"), ("🚲", "Bicycle"), ("✈️", "Aeroplane"), ("🚀", "Rocket"),
    ("🏆", "Trophy"), ("⚽", "Ball"), ("🎸", "Guitar"), ("🎺", "Trumpet"), ("🔔", "Bell"),
    ("⚓", "Anchor"), ("🎧", "Headphones"), ("📁", "Folder"), ("📌", "Pin"),
]  # fmt: skip

State = Literal["started", "accepted", "keys_exchanged", "confirmed", "done", "cancelled"]
Outgoing = list[tuple[str, dict[str, Any]]]


def verification_error(reason: str, message: str) -> CryptoError:
    return CryptoError(message, code=Code.VERIFICATION_FAILED, reason=reason)


class SasVerification:
    """One verification between this device (``own``) and ``other``."""

    def __init__(
        self,
        own: DeviceIdentity,
        other: DeviceIdentity,
        *,
        transaction_id: str | None = None,
        we_started: bool = True,
    ) -> None:
        self.own, self.other = own, other
        self.transaction_id = transaction_id or secrets.token_urlsafe(12)
        self.we_started = we_started
        self.sas = vodozemac.Sas()
        self.public_key = self.sas.public_key.to_base64()
        self.their_key = ""
        self.established: vodozemac.EstablishedSas | None = None
        self.start_content: dict[str, Any] = {}
        self.commitment = ""
        self.state: State = "started"
        self.their_mac_ok = False
        self.sent_done = False
        self.cancel_code = ""
        self.cancel_reason = ""

    # ------------------------------------------------------------ outgoing steps

    def start(self) -> Outgoing:
        self.start_content = {
            "from_device": self.own.device_id,
            "method": SAS_METHOD,
            "transaction_id": self.transaction_id,
            "key_agreement_protocols": [KEY_AGREEMENT],
            "hashes": [HASH],
            "message_authentication_codes": [MAC_METHOD],
            "short_authentication_string": list(SAS_TYPES),
        }
        return [(PREFIX + "start", dict(self.start_content))]

    @classmethod
    def from_start(
        cls, own: DeviceIdentity, other: DeviceIdentity, content: dict[str, Any]
    ) -> tuple[SasVerification, Outgoing]:
        """Answer a received ``start`` with ``accept`` (or ``cancel`` if we cannot)."""
        sas = cls(
            own, other, transaction_id=str(content.get("transaction_id", "")), we_started=False
        )
        sas.start_content = content
        if (
            content.get("method") != SAS_METHOD
            or KEY_AGREEMENT not in content.get("key_agreement_protocols", [])
            or HASH not in content.get("hashes", [])
            or MAC_METHOD not in content.get("message_authentication_codes", [])
            or "emoji" not in content.get("short_authentication_string", [])
            or content.get("from_device") != other.device_id
        ):
            return sas, sas.cancel("m.unknown_method", "no common SAS method")
        commitment = b64encode(
            hashlib.sha256(sas.public_key.encode() + canonical_json(content)).digest()
        )
        sas.state = "accepted"
        accept = {
            "transaction_id": sas.transaction_id,
            "method": SAS_METHOD,
            "key_agreement_protocol": KEY_AGREEMENT,
            "hash": HASH,
            "message_authentication_code": MAC_METHOD,
            "short_authentication_string": list(SAS_TYPES),
            "commitment": commitment,
        }
        return sas, [(PREFIX + "accept", accept)]

    def cancel(self, code: str = "m.user", reason: str = "cancelled by the user") -> Outgoing:
        self.state = "cancelled"
        self.cancel_code, self.cancel_reason = code, reason
        content = {"transaction_id": self.transaction_id, "code": code, "reason": reason}
        return [(PREFIX + "cancel", content)]

    # ------------------------------------------------------------ incoming steps

    def receive(self, event_type: str, content: dict[str, Any]) -> Outgoing:
        """Feed one received ``m.key.verification.*`` event; returns what to send back."""
        if self.state in ("cancelled", "done"):
            return []
        if content.get("transaction_id") != self.transaction_id:
            return self.cancel("m.unknown_transaction", "unknown transaction")
        step = event_type.removeprefix(PREFIX)
        if step == "cancel":
            self.state = "cancelled"
            self.cancel_code = str(content.get("code", "m.user"))
            self.cancel_reason = str(content.get("reason", ""))[:200]
            return []
        if step == "accept" and self.we_started and self.state == "started":
            if (
                content.get("key_agreement_protocol") != KEY_AGREEMENT
                or content.get("hash") != HASH
                or content.get("message_authentication_code") != MAC_METHOD
                or not isinstance(content.get("commitment"), str)
            ):
                return self.cancel("m.unknown_method", "the accepted method is not offered")
            self.commitment = content["commitment"]
            self.state = "accepted"
            return [
                (PREFIX + "key", {"transaction_id": self.transaction_id, "key": self.public_key})
            ]
        if step == "key" and self.state == "accepted" and self.established is None:
            key = content.get("key")
            if not isinstance(key, str):
                return self.cancel("m.invalid_message", "a key event without a key")
            if self.we_started:
                expected = b64encode(
                    hashlib.sha256(key.encode() + canonical_json(self.start_content)).digest()
                )
                if expected != self.commitment:
                    return self.cancel("m.mismatched_commitment", "mismatched commitment")
            try:
                self.established = self.sas.diffie_hellman(
                    vodozemac.Curve25519PublicKey.from_base64(key)
                )
            except (ValueError, TypeError):
                return self.cancel("m.invalid_message", "the other device's key is invalid")
            self.their_key = key
            self.state = "keys_exchanged"
            if self.we_started:
                return []
            return [
                (PREFIX + "key", {"transaction_id": self.transaction_id, "key": self.public_key})
            ]
        if step == "mac" and self.state in ("keys_exchanged", "confirmed"):
            return self._receive_mac(content)
        if step == "done" and self.state == "confirmed" and self.their_mac_ok:
            self.state = "done"
            return []
        return self.cancel("m.unexpected_message", f"unexpected {event_type} in state {self.state}")

    # ------------------------------------------------------------ the short string

    def _info(self) -> str:
        mine = f"{self.own.user_id}|{self.own.device_id}|{self.public_key}"
        theirs = f"{self.other.user_id}|{self.other.device_id}|{self.their_key}"
        first, second = (mine, theirs) if self.we_started else (theirs, mine)
        return f"MATRIX_KEY_VERIFICATION_SAS|{first}|{second}|{self.transaction_id}"

    def _bytes(self) -> vodozemac.SasBytes:
        if self.established is None:
            raise verification_error("not_ready", "the keys are not exchanged yet")
        return self.established.bytes(self._info())

    def emoji(self) -> list[tuple[str, str]]:
        return [EMOJI[i] for i in self._bytes().emoji_indices]

    def decimals(self) -> tuple[int, int, int]:
        return self._bytes().decimals

    def confirm(self) -> Outgoing:
        """The person saw the same emoji on both devices: send our MAC (and done if ready)."""
        if self.established is None or self.state not in ("keys_exchanged",):
            raise verification_error("not_ready", f"cannot confirm in state {self.state}")
        self.state = "confirmed"
        info = self._mac_info(self.own, self.other)
        key_id = f"ed25519:{self.own.device_id}"
        content = {
            "transaction_id": self.transaction_id,
            "mac": {key_id: self.established.calculate_mac(self.own.ed25519, info + key_id)},
            "keys": self.established.calculate_mac(key_id, info + "KEY_IDS"),
        }
        out: Outgoing = [(PREFIX + "mac", content)]
        if self.their_mac_ok:
            out.append(self._done())
        return out

    def _done(self) -> tuple[str, dict[str, Any]]:
        self.sent_done = True
        return (PREFIX + "done", {"transaction_id": self.transaction_id})

    def _mac_info(self, sender: DeviceIdentity, receiver: DeviceIdentity) -> str:
        return (
            f"MATRIX_KEY_VERIFICATION_MAC{sender.user_id}{sender.device_id}"
            f"{receiver.user_id}{receiver.device_id}{self.transaction_id}"
        )

    def _receive_mac(self, content: dict[str, Any]) -> Outgoing:
        assert self.established is not None
        mac, keys = content.get("mac"), content.get("keys")
        key_id = f"ed25519:{self.other.device_id}"
        if not isinstance(mac, dict) or not isinstance(keys, str) or key_id not in mac:
            return self.cancel("m.invalid_message", "a MAC event without the device key's MAC")
        info = self._mac_info(self.other, self.own)
        try:
            self.established.verify_mac(",".join(sorted(mac)), info + "KEY_IDS", keys)
            for mac_key_id, tag in mac.items():
                if mac_key_id != key_id:
                    continue  # cross-signing keys are not used by tresen yet
                self.established.verify_mac(self.other.ed25519, info + mac_key_id, str(tag))
        except (ValueError, TypeError):
            return self.cancel("m.key_mismatch", "the other device's key does not match")
        self.their_mac_ok = True
        if self.state == "confirmed":
            self.state = "done"
            return [self._done()]
        return []

    @property
    def verified(self) -> bool:
        return self.state == "done" or (self.state == "confirmed" and self.their_mac_ok)

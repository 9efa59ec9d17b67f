"""Megolm group sessions: one outbound session per group on this device, inbound sessions for
every sender's session we were given a key for.

Rotation (a new session, whose key goes to the then-current member devices only): when the
group's members change (``epoch`` is a fingerprint of them), after :data:`ROTATION_MESSAGES`
messages or :data:`ROTATION_SECONDS`; the client also rotates when a device that had the key is
gone. Inbound messages are checked for replay: a message index is accepted once per session (a
redelivery of the same envelope is recognised and not an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import vodozemac

from tresen.client.crypto.events import MegolmContent, check_megolm_plaintext, undecryptable
from tresen.client.crypto.signing import MEGOLM_ALGORITHM, DeviceIdentity

ROTATION_MESSAGES = 100
ROTATION_SECONDS = 7 * 86_400


@dataclass
class OutboundGroup:
    room_id: str
    session: vodozemac.GroupSession
    created_at: float
    #: a fingerprint of the member devices this session was made for (rotate when it changes)
    epoch: str
    messages: int = 0
    #: device keys ("user_id|device_id" -> curve25519) the session key was shared with
    shared_with: dict[str, str] = field(default_factory=dict)

    def expired(self, now: float, epoch: str) -> bool:
        return (
            epoch != self.epoch
            or self.messages >= ROTATION_MESSAGES
            or now - self.created_at >= ROTATION_SECONDS
        )

    def meta(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "created_at": self.created_at,
            "epoch": self.epoch,
            "messages": self.messages,
            "shared_with": self.shared_with,
        }


@dataclass
class InboundGroup:
    room_id: str
    session: vodozemac.InboundGroupSession
    #: the curve25519 / ed25519 keys of the device that shared the key over Olm
    sender_key: str
    signing_key: str
    sender: str
    sender_device: str
    #: message index -> the envelope id it arrived in (replay check)
    seen: dict[int, str] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "sender_key": self.sender_key,
            "signing_key": self.signing_key,
            "sender": self.sender,
            "sender_device": self.sender_device,
            "seen": {str(k): v for k, v in self.seen.items()},
        }


def inbound_id(room_id: str, sender_key: str, session_id: str) -> str:
    return f"{room_id}|{sender_key}|{session_id}"


class GroupSessions:
    def __init__(self, own: DeviceIdentity) -> None:
        self.own = own
        self.outbound: dict[str, OutboundGroup] = {}
        self.inbound: dict[str, InboundGroup] = {}
        self.dirty_outbound: set[str] = set()
        self.dirty_inbound: set[str] = set()

    # ------------------------------------------------------------ sending

    def outbound_for(self, room_id: str, now: float, epoch: str) -> OutboundGroup:
        """The session to encrypt with, a fresh one if the current one must rotate."""
        current = self.outbound.get(room_id)
        if current is None or current.expired(now, epoch):
            current = OutboundGroup(room_id, vodozemac.GroupSession(), now, epoch)
            self.outbound[room_id] = current
            # our own device reads its own messages (and its other devices get the key too)
            self.add_inbound(
                room_id,
                current.session.session_key.to_base64(),
                self.own,
            )
            self.dirty_outbound.add(room_id)
        return current

    def room_key_content(self, group: OutboundGroup) -> dict[str, Any]:
        """The ``m.room_key`` content that shares ``group``'s current key."""
        return {
            "algorithm": MEGOLM_ALGORITHM,
            "room_id": group.room_id,
            "session_id": group.session.session_id,
            "session_key": group.session.session_key.to_base64(),
        }

    def encrypt(self, group: OutboundGroup, event_type: str, content: dict[str, Any]) -> Any:
        plaintext = msgspec.json.encode(
            {"type": event_type, "content": content, "room_id": group.room_id}
        )
        message = group.session.encrypt(plaintext)
        group.messages += 1
        self.dirty_outbound.add(group.room_id)
        return MegolmContent(
            algorithm=MEGOLM_ALGORITHM,
            session_id=group.session.session_id,
            ciphertext=message.to_base64(),
            sender_key=self.own.curve25519,
            device_id=self.own.device_id,
        )

    # ------------------------------------------------------------ receiving

    def add_inbound(self, room_id: str, session_key: str, sender: DeviceIdentity) -> bool:
        """Store a session key received over Olm from ``sender`` (checked by the caller).

        A key for a session we already hold never replaces it (the older key may know earlier
        messages, and a later share must not reset replay checks). Returns True if new."""
        try:
            session = vodozemac.InboundGroupSession(vodozemac.SessionKey(session_key))
        except (ValueError, TypeError) as exc:
            raise undecryptable("bad_room_key", f"the shared group key is invalid: {exc}") from exc
        key = inbound_id(room_id, sender.curve25519, session.session_id)
        if key in self.inbound:
            return False
        self.inbound[key] = InboundGroup(
            room_id,
            session,
            sender.curve25519,
            sender.ed25519,
            sender.user_id,
            sender.device_id,
        )
        self.dirty_inbound.add(key)
        return True

    def decrypt(
        self, room_id: str, content: MegolmContent, sender: DeviceIdentity, envelope_id: str
    ) -> tuple[InboundGroup, str, dict[str, Any]]:
        """Decrypt a message the relay says ``sender`` sent (its keys, not the event's claims,
        pick the session)."""
        name = inbound_id(room_id, sender.curve25519, content.session_id)
        group = self.inbound.get(name)
        if group is None:
            raise undecryptable(
                "unknown_session",
                "no key for this group session: it was not shared with this device "
                "(e.g. a message from before this device joined)",
            )
        if group.sender != sender.user_id or group.sender_device != sender.device_id:
            raise undecryptable(
                "sender_mismatch",
                "the group message comes from another sender than the one who shared its key",
            )
        try:
            message = vodozemac.MegolmMessage.from_base64(content.ciphertext)
            decrypted = group.session.decrypt(message)
        except (ValueError, TypeError) as exc:
            raise undecryptable(
                "megolm_decrypt_failed", f"the group message does not decrypt: {exc}"
            ) from exc
        index = decrypted.message_index
        seen = group.seen.get(index)
        if seen is not None and seen != envelope_id:
            raise undecryptable(
                "replayed",
                f"message index {index} of this group session was already received "
                f"(envelope {seen}): a replay",
                message_index=index,
            )
        group.seen[index] = envelope_id
        self.dirty_inbound.add(name)
        event_type, event_content = check_megolm_plaintext(decrypted.plaintext, room_id)
        return group, event_type, event_content

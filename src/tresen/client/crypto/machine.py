"""The device's crypto state machine, without I/O: account, Olm and Megolm sessions, the
device book, and their persistence in a :class:`CryptoStore`.

The secure client (:mod:`tresen.client.secure`) does the network part: it asks this machine
what to publish, which devices need sessions, how to encrypt for them, and hands it every
received payload to decrypt and check.
"""

from __future__ import annotations

from typing import Any

import msgspec
import vodozemac

from tresen.client.crypto.account import OlmAccount
from tresen.client.crypto.devices import DeviceBook
from tresen.client.crypto.events import (
    ENCRYPTED,
    ROOM_KEY,
    DecryptedOlm,
    EncryptedEvent,
    MegolmContent,
    OlmContent,
    check_olm_plaintext,
    olm_content,
    olm_plaintext,
    undecryptable,
)
from tresen.client.crypto.megolm import GroupSessions, InboundGroup, OutboundGroup
from tresen.client.crypto.olm import OlmSessions
from tresen.client.crypto.signing import (
    MEGOLM_ALGORITHM,
    OLM_ALGORITHM,
    DeviceIdentity,
    check_one_time_key,
)
from tresen.client.crypto.store import CryptoStore


class CryptoMachine:
    def __init__(self, user_id: str, device_id: str, store: CryptoStore | None = None) -> None:
        self.store = store
        pickled = store.get("account", "olm") if store is not None else None
        if pickled is not None and store is not None:
            if (pickled["user_id"], pickled["device_id"]) != (user_id, device_id):
                raise undecryptable(
                    "wrong_store",
                    f"this crypto store belongs to {pickled['user_id']}/{pickled['device_id']}",
                )
            self.account = OlmAccount.from_pickle(
                user_id, device_id, pickled["pickle"], store.pickle_key
            )
            self.account.published = bool(pickled["published"])
        else:
            self.account = OlmAccount(user_id, device_id)
        self.own = self.account.identity
        self.olm = OlmSessions(self.account)
        self.groups = GroupSessions(self.own)
        self.devices = DeviceBook(self.own)
        self.account_dirty = pickled is None
        if store is not None and pickled is not None:
            self._load(store)

    @property
    def user_id(self) -> str:
        return self.own.user_id

    @property
    def device_id(self) -> str:
        return self.own.device_id

    # ------------------------------------------------------------ keys to publish

    def upload_body(self, otk_count: int, *, fallback: bool) -> dict[str, Any]:
        """The ``/keys/upload`` body: device keys until published, ``otk_count`` one-time keys,
        and a new fallback key when ``fallback`` (or the unpublished one of a failed upload)."""
        body: dict[str, Any] = {}
        if not self.account.published:
            body["device_keys"] = self.account.device_keys()
        if otk_count > 0:
            body["one_time_keys"] = self.account.one_time_keys(otk_count)
        pending = self.account.unpublished_fallback_key()
        if pending:
            body["fallback_keys"] = pending
        elif fallback:
            body["fallback_keys"] = self.account.fallback_key()
        self.account_dirty = True
        return body

    def uploaded(self) -> None:
        self.account.mark_published()
        self.account.published = True
        self.account_dirty = True

    # ------------------------------------------------------------ Olm

    def start_session(self, device: DeviceIdentity, key_id: str, key: dict[str, Any]) -> None:
        """A session from a claimed one-time key, after checking the device signed it."""
        self.olm.create_outbound(device.curve25519, check_one_time_key(key_id, key, device))

    def encrypt_olm(
        self, device: DeviceIdentity, event_type: str, content: dict[str, Any], **extra: Any
    ) -> EncryptedEvent:
        plaintext = olm_plaintext(event_type, content, self.own, device, **extra)
        message = self.olm.encrypt(device.curve25519, plaintext)
        body = OlmContent(OLM_ALGORITHM, self.own.curve25519, {device.curve25519: message})
        return EncryptedEvent(ENCRYPTED, msgspec.to_builtins(body))

    def decrypt_olm(self, sender: DeviceIdentity, content: dict[str, Any]) -> DecryptedOlm:
        olm = olm_content(content)
        if olm.algorithm != OLM_ALGORITHM:
            raise undecryptable("unknown_algorithm", "not an Olm event")
        if olm.sender_key != sender.curve25519:
            raise undecryptable(
                "sender_key_mismatch",
                f"the Olm event's sender_key is not the identity key of device "
                f"{sender.user_id}/{sender.device_id}",
            )
        ciphertext = olm.ciphertext.get(self.own.curve25519)
        if ciphertext is None:
            raise undecryptable("not_for_this_device", "no ciphertext for this device's key")
        plaintext = self.olm.decrypt(sender.curve25519, ciphertext)
        decrypted = check_olm_plaintext(plaintext, sender, self.own)
        if decrypted.type == ROOM_KEY:
            self._take_room_key(decrypted)
        return decrypted

    def _take_room_key(self, event: DecryptedOlm) -> None:
        content = event.content
        if content.get("algorithm") != MEGOLM_ALGORITHM:
            raise undecryptable("bad_room_key", "a room key of an unknown algorithm")
        room_id, session_key = content.get("room_id"), content.get("session_key")
        if not isinstance(room_id, str) or not isinstance(session_key, str):
            raise undecryptable("bad_room_key", "a room key without room_id or session_key")
        self.groups.add_inbound(room_id, session_key, event.sender)

    # ------------------------------------------------------------ Megolm

    def outbound_group(self, room_id: str, now: float, epoch: str) -> OutboundGroup:
        return self.groups.outbound_for(room_id, now, epoch)

    def room_key_event(self, device: DeviceIdentity, group: OutboundGroup) -> EncryptedEvent:
        event = self.encrypt_olm(device, ROOM_KEY, self.groups.room_key_content(group))
        return event

    def mark_shared(self, group: OutboundGroup, devices: list[DeviceIdentity]) -> None:
        """The relay stored the key shares for ``devices``: do not share with them again."""
        for device in devices:
            group.shared_with[f"{device.user_id}|{device.device_id}"] = device.curve25519
        self.groups.dirty_outbound.add(group.room_id)

    def encrypt_megolm(
        self, group: OutboundGroup, event_type: str, content: dict[str, Any]
    ) -> EncryptedEvent:
        body = self.groups.encrypt(group, event_type, content)
        return EncryptedEvent(ENCRYPTED, msgspec.to_builtins(body))

    def decrypt_megolm(
        self, room_id: str, content: dict[str, Any], sender: DeviceIdentity, envelope_id: str
    ) -> tuple[InboundGroup, str, dict[str, Any]]:
        try:
            megolm = msgspec.convert(content, MegolmContent)
        except msgspec.ValidationError as exc:
            raise undecryptable("malformed_event", f"bad Megolm event: {exc}") from exc
        if megolm.sender_key not in ("", sender.curve25519) or megolm.device_id not in (
            "",
            sender.device_id,
        ):
            raise undecryptable(
                "sender_mismatch", "the group message names another device than its sender"
            )
        group, event_type, event_content = self.groups.decrypt(room_id, megolm, sender, envelope_id)
        if group.sender_device != sender.device_id or group.signing_key != sender.ed25519:
            raise undecryptable("sender_mismatch", "the group session was shared by another device")
        return group, event_type, event_content

    # ------------------------------------------------------------ persistence

    def save(self) -> None:
        store = self.store
        if store is None:
            return
        key = store.pickle_key
        if self.account_dirty:
            store.put(
                "account",
                "olm",
                {
                    "user_id": self.user_id,
                    "device_id": self.device_id,
                    "pickle": self.account.pickle(key),
                    "published": self.account.published,
                },
            )
            self.account_dirty = False
        for curve in self.olm.take_dirty():
            store.put("olm", curve, self.olm.pickle(curve, key))
        for room in self.groups.dirty_outbound:
            group = self.groups.outbound[room]
            store.put("outbound", room, {**group.meta(), "pickle": group.session.pickle(key)})
        for name in self.groups.dirty_inbound:
            inbound = self.groups.inbound[name]
            store.put("inbound", name, {**inbound.meta(), "pickle": inbound.session.pickle(key)})
        for user in self.devices.dirty:
            store.put("devices", user, self.devices.dump(user))
        self.groups.dirty_outbound.clear()
        self.groups.dirty_inbound.clear()
        self.devices.dirty.clear()
        store.commit()

    def _load(self, store: CryptoStore) -> None:
        key = store.pickle_key
        for curve, pickles in store.all("olm").items():
            self.olm.restore(curve, pickles, key)
        for room, data in store.all("outbound").items():
            self.groups.outbound[room] = OutboundGroup(
                room,
                vodozemac.GroupSession.from_pickle(data["pickle"], key),
                data["created_at"],
                data["epoch"],
                data["messages"],
                data["shared_with"],
            )
        for name, data in store.all("inbound").items():
            self.groups.inbound[name] = InboundGroup(
                data["room_id"],
                vodozemac.InboundGroupSession.from_pickle(data["pickle"], key),
                data["sender_key"],
                data["signing_key"],
                data["sender"],
                data["sender_device"],
                {int(k): v for k, v in data["seen"].items()},
            )
        for user, devices in store.all("devices").items():
            self.devices.load(user, devices)

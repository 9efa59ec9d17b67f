"""The end-to-end encrypted client: :class:`SecureDevice` on top of :class:`AsyncDevice`.

What it does for the application:

- publishes signed device keys, one-time keys and a fallback key on first start; tops the
  one-time keys up when the relay sends ``keys_low`` and uploads a new fallback key once the old
  one was handed out;
- 1:1: encrypts each message with Olm once per recipient device and once per own other device,
  claiming one-time keys (signature-checked) to start sessions where needed;
- groups: one Megolm session per group on this device, its key shared over Olm (``m.room_key``)
  with every member device that does not have it yet, in the same envelope as the message;
  rotated when the members change, when a device that had the key is gone, and every 100
  messages or 7 days;
- decrypts every received item and returns a :class:`Message`, or an :class:`Undecryptable`
  with the reason a check failed (never the plaintext of a failed check);
- loses nothing the relay handed over: an item is acknowledged only once its events are in the
  device's store, in the same commit as the crypto state its decryption advanced, and each
  event stays there until the application asks for the next one (see :meth:`SecureDevice.recv`);
- reports device changes of the people it talks to (:class:`SecurityCodeChanged`, a warning if
  the account had a verified device) and runs SAS verification (:meth:`SecureDevice.verify`).

The relay sees envelopes of ``m.room.encrypted`` events only (:mod:`tresen.client.crypto.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import msgspec

from tresen.client.connection import new_envelope_id
from tresen.client.crypto.devices import DeviceChange
from tresen.client.crypto.events import (
    DUMMY,
    MESSAGE,
    ROOM_KEY,
    EncryptedEvent,
    algorithm_of,
    decode_envelope,
    encode_envelope,
)
from tresen.client.crypto.machine import CryptoMachine
from tresen.client.crypto.signing import OLM_ALGORITHM, OTK_ALGORITHM, DeviceIdentity
from tresen.client.crypto.store import CryptoStore, read_key_file
from tresen.client.crypto.verification import PREFIX, SasVerification
from tresen.client.device import AsyncDevice
from tresen.client.media import EncryptedFile, MediaKind, fetch_attachment
from tresen.errors import CryptoError, DeviceListMismatch, Unavailable
from tresen.protocol.frames import BizMeta, Item, KeysLow

log = logging.getLogger("tresen.client.secure")

#: one-time keys kept on the relay (vodozemac holds up to 100 unpublished-or-unused)
OTK_TARGET = 50
#: key shares per group frame before they are sent ahead in frames of their own
KEY_SHARE_BUDGET = 640 * 1024
SEND_ATTEMPTS = 4
MEMBERSHIP_OPS = {"create", "add", "remove", "leave", "join"}
_MSGTYPES = {"image": "m.image", "video": "m.video", "audio": "m.audio", "document": "m.file"}


def room_id(group_id: int) -> str:
    """The Matrix room id a group's Megolm sessions are bound to."""
    return f"!{group_id}:tresen"


# ---------------------------------------------------------------- what recv() returns


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A decrypted message that passed every check."""

    id: str
    sender: int
    sender_device: int
    ts: int
    type: str
    content: dict[str, Any]
    #: the other account of a 1:1 chat (the recipient for copies of one's own messages)
    conversation: int = 0
    group: int = 0
    #: the sending device was verified by SAS on this device
    verified: bool = False


class Undecryptable(msgspec.Struct, frozen=True, kw_only=True):
    """An item that failed decryption or a check; ``reason`` is a stable word."""

    id: str
    sender: int
    sender_device: int
    ts: int
    reason: str
    message: str
    group: int = 0


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["delivered", "read", "expired"]
    id: str
    account: int
    device: int
    ts: int


class GroupChange(msgspec.Struct, frozen=True, kw_only=True):
    group: int
    op: str
    accounts: list[int]
    epoch: int
    actor: int


class SecurityCodeChanged(msgspec.Struct, frozen=True, kw_only=True):
    """An account's devices changed. ``warning``: the account had a verified device."""

    account: int
    device: int
    kind: str
    warning: bool
    reason: str = ""


class VerificationUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A SAS verification moved on: ``keys_exchanged`` means show :attr:`emoji`."""

    transaction_id: str
    account: int
    device: int
    state: str
    emoji: list[tuple[str, str]] = []
    decimals: tuple[int, int, int] | None = None
    cancel_code: str = ""


class RelayNotice(msgspec.Struct, frozen=True, kw_only=True):
    """A notice the relay itself wrote (so not end-to-end encrypted), ``type`` from its body:
    ``business_first_contact`` for a person; ``template_status`` and ``quality_update`` for a
    business's devices (docs/business-rules.md)."""

    id: str
    type: str
    body: dict[str, Any]
    ts: int


Event = (
    Message
    | Undecryptable
    | Receipt
    | GroupChange
    | SecurityCodeChanged
    | VerificationUpdate
    | RelayNotice
)
_EVENT_TYPES: dict[str, type[Event]] = {
    t.__name__: t
    for t in (
        Message,
        Undecryptable,
        Receipt,
        GroupChange,
        SecurityCodeChanged,
        VerificationUpdate,
        RelayNotice,
    )
}
#: the store's rows of received events not handled yet, and the seq every item up to is stored
INBOX = "inbox"
HANDLED = "~handled"


class _GroupView(msgspec.Struct):
    members: list[int]
    fresh: bool = True


class SecureDevice:
    def __init__(
        self,
        device: AsyncDevice,
        machine: CryptoMachine,
        *,
        clock: Callable[[], float] = time.time,
        otk_target: int = OTK_TARGET,
    ) -> None:
        self.device = device
        self.machine = machine
        self.clock = clock
        self.otk_target = otk_target
        self.lock = asyncio.Lock()
        self.events: deque[Event] = deque()
        #: current devices per account as the relay reported them (with or without keys)
        self.relay_devices: dict[int, list[int]] = {}
        self.groups: dict[int, _GroupView] = {}
        self.verifications: dict[str, SasVerification] = {}
        self.notices: asyncio.Queue[Any] = asyncio.Queue()
        self._watcher: asyncio.Task[None] | None = None
        #: the save that sends encrypted since the last one wait for (see :meth:`_saved`)
        self._saving: asyncio.Future[None] | None = None
        #: store keys of received events not yet handled (by ``id()`` of the event)
        self._keys: dict[int, str] = {}
        self._current: list[str] = []  # the keys of the events recv() returned last
        self._done_staged = False
        self._handled_seq = 0  # every item up to this seq is in the store
        self._restore_inbox()

    @classmethod
    def open(
        cls,
        device: AsyncDevice,
        store_path: str | Path,
        *,
        passphrase: str | None = None,
        key: bytes | None = None,
        key_file: str | Path | None = None,
        **options: Any,
    ) -> SecureDevice:
        """Open (or create) the device's crypto store with exactly one of the three secrets."""
        if sum(x is not None for x in (passphrase, key, key_file)) != 1:
            raise ValueError("give exactly one of passphrase, key or key_file")
        if passphrase is not None:
            store = CryptoStore.open_with_passphrase(store_path, passphrase)
        else:
            store = CryptoStore.open_with_key(
                store_path, key if key is not None else read_key_file(str(key_file))
            )
        machine = CryptoMachine(str(device.account_id), str(device.device_id), store)
        return cls(device, machine, **options)

    @property
    def account_id(self) -> int:
        return self.device.account_id

    @property
    def device_id(self) -> int:
        return self.device.device_id

    @property
    def identity(self) -> DeviceIdentity:
        return self.machine.own

    # ------------------------------------------------------------ lifecycle and keys

    async def start(self) -> None:
        """Connect, publish keys (first start) or top them up, and watch for ``keys_low``."""
        if self.device.conn is None:
            await self.device.connect(auto_ack=False)
        self.device._live().auto_ack = False  # items are acknowledged once stored (recv)
        await self.top_up()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_notices(), name="tresen-keys")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        if self._saving is not None:
            with contextlib.suppress(Exception):
                await self._saving
        await self.device.close()
        if self.machine.store is not None:
            self.done()  # a clean close: the event returned last was handled
            self._commit_done()
            self.machine.store.close()

    async def __aenter__(self) -> SecureDevice:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def top_up(self) -> dict[str, Any]:
        """Upload what is missing: device keys, one-time keys up to the target, a fallback key."""
        async with self.lock:
            counts: dict[str, Any] = await self.device.api.request("GET", "/v1/keys/count")
            held = int(counts["one_time_key_counts"].get(OTK_ALGORITHM, 0))
            fallback = OTK_ALGORITHM not in counts.get("unused_fallback_key_types", [])
            body = self.machine.upload_body(max(0, self.otk_target - held), fallback=fallback)
            self.machine.save()
            if body:
                counts = await self.device.api.upload_keys(**body)
                self.machine.uploaded()
                self.machine.save()
                log.info(
                    "published keys: %d one-time keys%s",
                    len(body.get("one_time_keys", {})),
                    ", a fallback key" if "fallback_keys" in body else "",
                )
            return counts

    async def _watch_notices(self) -> None:
        conn = self.device.conn
        assert conn is not None
        while not conn.closed:
            notice = await conn.notices.get()
            if isinstance(notice, KeysLow):
                try:
                    await self.top_up()
                except Exception as exc:  # keep watching: the next keys_low retries
                    log.warning("topping up one-time keys failed: %s", exc)
            else:
                self.notices.put_nowait(notice)

    # ------------------------------------------------------------ device lists

    async def refresh_devices(self, accounts: Iterable[int]) -> None:
        """Fetch the device keys of ``accounts`` and record any change as an event."""
        wanted = sorted(set(accounts))
        if not wanted:
            return
        result = await self.device.api.query_keys({str(a): [] for a in wanted})
        for user, served in result.get("device_keys", {}).items():
            for change in self.machine.devices.update(user, served):
                self.events.append(_security_change(change))

    async def _known(self, accounts: Iterable[int]) -> None:
        await self.refresh_devices(a for a in accounts if not self.machine.devices.known(str(a)))

    def _learn(self, exc: DeviceListMismatch) -> list[int]:
        changed = []
        for account, devices in exc.fields.get("devices", {}).items():
            self.relay_devices[int(account)] = [int(d) for d in devices]
            changed.append(int(account))
        return changed

    def _targets(self, accounts: Iterable[int]) -> dict[int, DeviceIdentity | None]:
        """Every device of ``accounts`` but this one: its keys, or None if it published none."""
        targets: dict[int, DeviceIdentity | None] = {}
        for account in accounts:
            for identity in self.machine.devices.usable(str(account)):
                targets[int(identity.device_id)] = identity
            for device in self.relay_devices.get(account, []):
                targets.setdefault(device, None)
        targets.pop(self.device_id, None)
        return targets

    async def _ensure_sessions(self, devices: Iterable[DeviceIdentity]) -> None:
        missing = [d for d in devices if not self.machine.olm.has_session(d.curve25519)]
        if not missing:
            return
        wanted: dict[str, dict[str, str]] = {}
        for d in missing:
            wanted.setdefault(d.user_id, {})[d.device_id] = OTK_ALGORITHM
        claimed = (await self.device.api.claim_keys(wanted)).get("one_time_keys", {})
        for d in missing:
            keys = claimed.get(d.user_id, {}).get(d.device_id) or {}
            if not keys:
                log.warning("device %s/%s has no one-time key left", d.user_id, d.device_id)
                continue
            key_id, key = next(iter(keys.items()))
            try:
                self.machine.start_session(d, key_id, key)
            except CryptoError as exc:
                self.events.append(
                    SecurityCodeChanged(
                        account=int(d.user_id),
                        device=int(d.device_id),
                        kind="invalid_keys",
                        warning=True,
                        reason=exc.message,
                    )
                )

    # ------------------------------------------------------------ sending

    async def send(
        self,
        to: int,
        content: dict[str, Any] | str,
        *,
        type: str = MESSAGE,
        id: str | None = None,
        biz: BizMeta | None = None,
    ) -> str:
        """Send to every device of ``to`` and our other devices; returns the envelope id.

        A business (its gateway) marks the envelope with ``biz`` (docs/business-rules.md).
        """
        if isinstance(content, str):
            content = {"msgtype": "m.text", "body": content}
        body = content

        def events(device: DeviceIdentity) -> list[EncryptedEvent]:
            return [self.machine.encrypt_olm(device, type, body, to=str(to))]

        return await self._send_olm(to, events, id, biz)

    async def _send_olm(
        self,
        to: int,
        make: Callable[[DeviceIdentity], list[EncryptedEvent]],
        id: str | None,
        biz: BizMeta | None = None,
    ) -> str:
        conn = self.device._live()
        envelope_id = id or new_envelope_id()
        accounts = {to, self.account_id}

        async def encrypt() -> dict[int, bytes]:
            """A ciphertext per target device, durable in the crypto store before it leaves;
            again for a resend the relay asks for (``Connection.send``'s ``fresh``)."""
            async with self.lock:
                await self._known(accounts)
                targets = self._targets(accounts)
                await self._ensure_sessions(d for d in targets.values() if d is not None)
                payloads = {}
                for device, identity in targets.items():
                    usable = identity is not None and self.machine.olm.has_session(
                        identity.curve25519
                    )
                    events = make(identity) if identity is not None and usable else []
                    payloads[device] = encode_envelope(events)
            await self._saved()
            return payloads

        for _ in range(SEND_ATTEMPTS):
            payloads = await encrypt()
            try:
                await conn.send(to, payloads, id=envelope_id, biz=biz, fresh=encrypt)
                return envelope_id
            except DeviceListMismatch as exc:
                changed = self._learn(exc)
                async with self.lock:
                    await self.refresh_devices(changed)
        raise Unavailable(f"the device list of account {to} kept changing; try again")

    async def _saved(self) -> None:
        """Make the crypto state durable before a ciphertext leaves (the ratchet must never
        step back after a crash). Sends that encrypt while a save waits for its turn share it:
        one commit of the crypto store for all of them."""
        if self.machine.store is None:
            return  # nothing to make durable (an in-memory device)
        if self._saving is None:
            self._saving = asyncio.ensure_future(self._save_now())
        await asyncio.shield(self._saving)

    async def _save_now(self) -> None:
        async with self.lock:  # never inside another holder's staged writes (recv)
            self._saving = None  # what encrypts from here on waits for the next save
            self.machine.save()

    async def _group_members(self, group_id: int) -> list[int]:
        view = self.groups.get(group_id)
        if view is None or not view.fresh:
            group = await self.device.api.request("GET", f"/v1/groups/{group_id}")
            view = _GroupView([m["account_id"] for m in group["members"]])
            self.groups[group_id] = view
        return view.members

    async def send_group(
        self,
        group_id: int,
        content: dict[str, Any] | str,
        *,
        type: str = MESSAGE,
        id: str | None = None,
    ) -> str:
        """Encrypt once with the group's Megolm session; share its key where it is missing."""
        if isinstance(content, str):
            content = {"msgtype": "m.text", "body": content}
        self.device._live()
        envelope_id = id or new_envelope_id()
        room = room_id(group_id)
        for _ in range(SEND_ATTEMPTS):
            async with self.lock:
                members = await self._group_members(group_id)
                await self._known(members)
                targets = self._targets(members)
                identities = [d for d in targets.values() if d is not None]
                await self._ensure_sessions(identities)
                epoch = hashlib.sha256(repr(sorted(members)).encode()).hexdigest()[:16]
                outbound = self.machine.outbound_group(room, self.clock(), epoch)
                current = {f"{d.user_id}|{d.device_id}": d.curve25519 for d in identities}
                if any(current.get(k) != v for k, v in outbound.shared_with.items()):
                    # a device that had the key is gone (or changed): nobody new may read on
                    self.machine.groups.outbound.pop(room, None)
                    outbound = self.machine.outbound_group(room, self.clock(), epoch)
                needs = [
                    d
                    for d in identities
                    if f"{d.user_id}|{d.device_id}" not in outbound.shared_with
                    and self.machine.olm.has_session(d.curve25519)
                ]
                # the shared key starts at the current index: share first, then encrypt
                shares = {int(d.device_id): self.machine.room_key_event(d, outbound) for d in needs}
                event = self.machine.encrypt_megolm(outbound, type, content)
                self.machine.save()
            try:
                await self._send_group_frames(group_id, envelope_id, event, shares, list(targets))
            except DeviceListMismatch as exc:
                changed = self._learn(exc)
                async with self.lock:
                    self.groups.pop(group_id, None)
                    await self.refresh_devices(changed)
                continue
            async with self.lock:
                self.machine.mark_shared(outbound, needs)
                self.machine.save()
            return envelope_id
        raise Unavailable(f"the members of group {group_id} kept changing; try again")

    async def _send_group_frames(
        self,
        group_id: int,
        envelope_id: str,
        event: EncryptedEvent,
        shares: dict[int, EncryptedEvent],
        devices: list[int],
    ) -> None:
        conn = self.device._live()
        body = encode_envelope([event])
        combined = {d: encode_envelope([share, event]) for d, share in shares.items()}
        if sum(len(p) for p in combined.values()) <= KEY_SHARE_BUDGET:
            await conn.send_group(
                group_id, body, payloads=combined, devices=devices, id=envelope_id
            )
            return
        # too many shares for one frame: send them ahead (the others get an empty envelope)
        empty = encode_envelope([])
        chunk: dict[int, bytes] = {}
        size = 0
        for n, (device, share) in enumerate(shares.items()):
            payload = encode_envelope([share])
            chunk[device] = payload
            size += len(payload)
            if size > KEY_SHARE_BUDGET or n == len(shares) - 1:
                await conn.send_group(
                    group_id, empty, payloads=chunk, devices=devices, id=f"{envelope_id}.k{n}"
                )
                chunk, size = {}, 0
        await conn.send_group(group_id, body, devices=devices, id=envelope_id)

    # ------------------------------------------------------------ attachments

    async def send_attachment(
        self,
        to: int,
        source: bytes | str | Path,
        *,
        kind: MediaKind,
        body: str = "",
        group: bool = False,
        id: str | None = None,
    ) -> str:
        """Encrypt and upload ``source`` (Matrix v2 attachment), then send its key and hash in
        an encrypted message to account ``to`` (or to group ``to`` when ``group``)."""
        recipients = await self._group_members(to) if group else [to, self.account_id]
        attachment = await self.device.upload_attachment(source, kind=kind, recipients=recipients)
        content = {
            "msgtype": _MSGTYPES.get(kind, "m.file"),
            "body": body or kind,
            "info": {"size": attachment.size},
            "file": msgspec.to_builtins(attachment.file),
        }
        if group:
            return await self.send_group(to, content, id=id)
        return await self.send(to, content, id=id)

    async def fetch_attachment(self, message: Message, *, max_bytes: int = 16 << 20) -> bytes:
        """Download, verify (SHA-256) and decrypt the attachment a message carries."""
        info = message.content.get("file")
        if not isinstance(info, dict):
            raise CryptoError("this message carries no attachment", reason="no_attachment")
        return await fetch_attachment(
            self.device.api, EncryptedFile.from_json(info), max_bytes=max_bytes
        )

    # ------------------------------------------------------------ receiving

    async def recv(self, timeout: float | None = 10.0) -> Event:
        """The next event: a message, an undecryptable item, a receipt or a notice.

        Asking for the next event marks the one returned before as handled (or call
        :meth:`done`). Until then it stays in the device's store: after a crash or a restart the
        events not handled yet come again first, so handle each one idempotently (by its id).
        """
        return (await self.recv_many(1, timeout))[0]

    async def recv_many(self, limit: int = 100, timeout: float | None = 10.0) -> list[Event]:
        """The events ready now (at least one, waiting as :meth:`recv` does; at most
        ``limit``), for handling them together; asking again marks them all handled."""
        self.done()
        async with asyncio.timeout(timeout):
            while not self.events:
                self._commit_done()  # before waiting, not once per event
                conn = self.device._live()
                items = [await conn.recv(None)]
                while not conn.inbox.empty():  # what already arrived shares one commit
                    items.append(conn.inbox.get_nowait())
                await self._take(items)
            taken = [self.events.popleft() for _ in range(min(max(limit, 1), len(self.events)))]
            self._current = [key for key in (self._keys.pop(id(e), "") for e in taken) if key]
            return taken

    def done(self) -> None:
        """Mark the events :meth:`recv` returned last as handled (the next ``recv`` does too)."""
        if self._current and self.machine.store is not None:
            for key in self._current:
                self.machine.store.delete(INBOX, key)
            self._done_staged = True
        self._current = []

    def _commit_done(self) -> None:
        if self._done_staged and self.machine.store is not None:
            self.machine.store.commit()
        self._done_staged = False

    async def handle(self, item: Item) -> None:
        """Take one item: decrypt, store its events with the crypto state, acknowledge it."""
        await self._take([item])

    async def _take(self, items: list[Item]) -> None:
        store = self.machine.store
        async with self.lock:
            try:
                for item in items:
                    if item.seq and item.seq <= self._handled_seq:
                        continue  # stored before a restart or a reconnect: only the ack was lost
                    before = len(self.events)
                    await self._on_item(item)
                    for n in range(before, len(self.events)):
                        event = self.events[n]
                        key = f"{item.seq:020d}.{n - before:04d}"
                        self._keys[id(event)] = key
                        if store is not None:
                            store.put(
                                INBOX, key, [type(event).__name__, msgspec.to_builtins(event)]
                            )
                    self._handled_seq = max(self._handled_seq, item.seq)
            finally:
                # one commit: crypto state, events, and what they came from. Also when a later
                # item failed or the take was cancelled: what was taken before it is stored (and
                # not acknowledged), instead of staying in an open transaction that locks the
                # store for other readers and that a later commit would take half of
                if store is not None:
                    store.put(INBOX, HANDLED, self._handled_seq)
                self.machine.save()
                self._done_staged = False
        await self.device._live().ack(self._handled_seq)

    async def _on_item(self, item: Item) -> None:
        match item.kind:
            case "message":
                await self._decrypt_item(item)
            case "group":
                self._on_group_notice(item)
            case "notice":
                self._on_relay_notice(item)
            case "delivered" | "read" | "expired":
                self.events.append(
                    Receipt(
                        kind=item.kind,
                        id=item.id,
                        account=item.sender,
                        device=item.sender_device,
                        ts=item.ts,
                    )
                )

    def _restore_inbox(self) -> None:
        """Events stored but not handled before the last stop come first."""
        store = self.machine.store
        if store is None:
            return
        rows = store.all(INBOX)
        self._handled_seq = int(rows.pop(HANDLED, 0))
        for key in sorted(rows):
            kind, data = rows[key]
            event = msgspec.convert(data, _EVENT_TYPES[kind])
            self._keys[id(event)] = key
            self.events.append(event)

    def _on_relay_notice(self, item: Item) -> None:
        try:
            body = msgspec.json.decode(item.body)
            kind = str(body["type"])
        except (msgspec.DecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed relay notice %s", item.id)
            return
        self.events.append(RelayNotice(id=item.id, type=kind, body=body, ts=item.ts))

    def _on_group_notice(self, item: Item) -> None:
        try:
            notice = msgspec.json.decode(item.body)
            op, epoch = str(notice["op"]), int(notice["epoch"])
            accounts = [int(a) for a in notice.get("accounts", [])]
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed group notice %s", item.id)
            return
        if op in MEMBERSHIP_OPS and item.group in self.groups:
            self.groups[item.group].fresh = False
        self.events.append(
            GroupChange(group=item.group, op=op, accounts=accounts, epoch=epoch, actor=item.sender)
        )

    async def _decrypt_item(self, item: Item) -> None:
        def failed(exc: CryptoError) -> Undecryptable:
            return Undecryptable(
                id=item.id,
                sender=item.sender,
                sender_device=item.sender_device,
                ts=item.ts,
                group=item.group,
                reason=str(exc.fields.get("reason", exc.code)),
                message=exc.message,
            )

        try:
            envelope = decode_envelope(item.body)
            sender = self.machine.devices.get(str(item.sender), str(item.sender_device))
            if sender is None and envelope.events:
                await self.refresh_devices([item.sender])
                sender = self.machine.devices.get(str(item.sender), str(item.sender_device))
            if envelope.events and (sender is None or sender.blocked):
                raise CryptoError(
                    "the sending device has no valid published keys", reason="unknown_device"
                )
            for event in envelope.events:
                assert sender is not None
                self._decrypt_event(item, event, sender.identity, sender.verified)
        except CryptoError as exc:
            self.events.append(failed(exc))

    def _decrypt_event(
        self, item: Item, event: EncryptedEvent, sender: DeviceIdentity, verified: bool
    ) -> None:
        if algorithm_of(event) == OLM_ALGORITHM:
            decrypted = self.machine.decrypt_olm(sender, event.content)
            if decrypted.type in (ROOM_KEY, DUMMY):
                return
            if decrypted.type.startswith(PREFIX):
                self._on_verification(sender, decrypted.type, decrypted.content)
                return
            to = str(decrypted.event.get("to", ""))
            if item.sender != self.account_id and to != str(self.account_id):
                raise CryptoError("the message was addressed to another chat", reason="wrong_chat")
            if not to.isdigit():
                raise CryptoError("a message without its chat", reason="wrong_chat")
            conversation = int(to) if item.sender == self.account_id else item.sender
            self.events.append(
                Message(
                    id=item.id,
                    sender=item.sender,
                    sender_device=item.sender_device,
                    ts=item.ts,
                    type=decrypted.type,
                    content=decrypted.content,
                    conversation=conversation,
                    verified=verified,
                )
            )
            return
        if not item.group:
            raise CryptoError("a group message outside a group", reason="not_a_group")
        _, event_type, content = self.machine.decrypt_megolm(
            room_id(item.group), event.content, sender, item.id
        )
        self.events.append(
            Message(
                id=item.id,
                sender=item.sender,
                sender_device=item.sender_device,
                ts=item.ts,
                type=event_type,
                content=content,
                group=item.group,
                conversation=item.group,
                verified=verified,
            )
        )

    # ------------------------------------------------------------ verification

    async def verify(self, account: int, device: int) -> SasVerification:
        """Start SAS with another device; watch :meth:`recv` for :class:`VerificationUpdate`."""
        async with self.lock:
            await self._known([account])
            tracked = self.machine.devices.get(str(account), str(device))
        if tracked is None:
            raise CryptoError(
                f"device {account}/{device} has no published keys", reason="unknown_device"
            )
        sas = SasVerification(self.machine.own, tracked.identity)
        self.verifications[sas.transaction_id] = sas
        await self._send_verification(sas, sas.start())
        return sas

    async def confirm(self, sas: SasVerification) -> None:
        """The person compared the emoji (or numbers) and they match."""
        await self._send_verification(sas, sas.confirm())
        async with self.lock:
            self._settle(sas)
            self.machine.save()

    async def cancel(self, sas: SasVerification) -> None:
        await self._send_verification(sas, sas.cancel())

    def _on_verification(
        self, sender: DeviceIdentity, event_type: str, content: dict[str, Any]
    ) -> None:
        transaction = str(content.get("transaction_id", ""))
        sas = self.verifications.get(transaction)
        if event_type == PREFIX + "start" and sas is None:
            sas, out = SasVerification.from_start(self.machine.own, sender, content)
            self.verifications[transaction] = sas
        elif sas is None or sas.other != sender:
            return
        else:
            out = sas.receive(event_type, content)
        self._spawn_send(sas, out)
        self._settle(sas)

    def _settle(self, sas: SasVerification) -> None:
        other = sas.other
        if sas.verified:
            self.machine.devices.set_verified(other.user_id, other.device_id)
        ready = sas.established is not None and sas.state != "cancelled"
        self.events.append(
            VerificationUpdate(
                transaction_id=sas.transaction_id,
                account=int(other.user_id),
                device=int(other.device_id),
                state="verified" if sas.verified else sas.state,
                emoji=sas.emoji() if ready else [],
                decimals=sas.decimals() if ready else None,
                cancel_code=sas.cancel_code,
            )
        )

    def _spawn_send(self, sas: SasVerification, out: list[tuple[str, dict[str, Any]]]) -> None:
        if out:
            task = asyncio.ensure_future(self._send_verification(sas, out))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send_verification(
        self, sas: SasVerification, out: list[tuple[str, dict[str, Any]]]
    ) -> None:
        target = sas.other

        def events(device: DeviceIdentity) -> list[EncryptedEvent]:
            if device != target:
                return []
            return [self.machine.encrypt_olm(device, t, c) for t, c in out]

        if out:
            await self._send_olm(int(target.user_id), events, None)

    def is_verified(self, account: int, device: int) -> bool:
        tracked = self.machine.devices.get(str(account), str(device))
        return tracked is not None and tracked.verified


def _security_change(change: DeviceChange) -> SecurityCodeChanged:
    return SecurityCodeChanged(
        account=int(change.user_id),
        device=int(change.device_id),
        kind=change.kind,
        warning=change.warning,
        reason=change.reason,
    )

"""What this device knows about other devices: checked identity keys, verification, changes.

Device lists come from the key directory (``/keys/query``). Each device's keys are checked
(:func:`check_device_keys`) before use. The first list learnt for an account is its baseline;
later differences become :class:`DeviceChange` notices ("security code changed"), with a
warning when the account had a verified device. A device id whose identity keys change is never
trusted again under that id (the relay refuses such uploads, so a change means a lying relay).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tresen.client.crypto.signing import DeviceIdentity, check_device_keys
from tresen.errors import CryptoError

ChangeKind = Literal["added", "removed", "keys_changed", "invalid_keys"]


class TrackedDevice(msgspec.Struct):
    identity: DeviceIdentity
    verified: bool = False
    #: a device whose keys failed a check is kept here but never used
    blocked: bool = False


class DeviceChange(msgspec.Struct, frozen=True):
    """A contact's (or our own account's) device set changed: its security code changed."""

    user_id: str
    device_id: str
    kind: ChangeKind
    #: the account had a verified device before this change: show a warning, not a notice
    warning: bool
    reason: str = ""


class DeviceBook:
    def __init__(self, own: DeviceIdentity) -> None:
        self.own = own
        self.accounts: dict[str, dict[str, TrackedDevice]] = {}
        self.dirty: set[str] = set()

    def known(self, user_id: str) -> bool:
        return user_id in self.accounts

    def devices(self, user_id: str) -> dict[str, TrackedDevice]:
        return self.accounts.get(user_id, {})

    def usable(self, user_id: str) -> list[DeviceIdentity]:
        return [d.identity for d in self.devices(user_id).values() if not d.blocked]

    def get(self, user_id: str, device_id: str) -> TrackedDevice | None:
        return self.accounts.get(user_id, {}).get(device_id)

    def by_curve(self, user_id: str, curve25519: str) -> TrackedDevice | None:
        for device in self.devices(user_id).values():
            if device.identity.curve25519 == curve25519:
                return device
        return None

    def is_verified_account(self, user_id: str) -> bool:
        return any(d.verified for d in self.devices(user_id).values())

    def update(self, user_id: str, served: dict[str, Any]) -> list[DeviceChange]:
        """Take the directory's current device keys of ``user_id``; return what changed."""
        first = user_id not in self.accounts
        held = self.accounts.setdefault(user_id, {})
        warning = self.is_verified_account(user_id)
        changes: list[DeviceChange] = []
        for device_id, keys in served.items():
            if user_id == self.own.user_id and device_id == self.own.device_id:
                continue
            try:
                identity = check_device_keys(keys, user_id, device_id)
            except CryptoError as exc:
                if device_id not in held:
                    changes.append(
                        DeviceChange(user_id, device_id, "invalid_keys", warning, exc.message)
                    )
                continue
            old = held.get(device_id)
            if old is None:
                held[device_id] = TrackedDevice(identity)
                if not first:
                    changes.append(DeviceChange(user_id, device_id, "added", warning))
            elif old.identity != identity and not old.blocked:
                old.blocked = True
                changes.append(
                    DeviceChange(
                        user_id,
                        device_id,
                        "keys_changed",
                        True,
                        "the relay served other identity keys for a known device",
                    )
                )
        for device_id in [d for d in held if d not in served]:
            del held[device_id]
            changes.append(DeviceChange(user_id, device_id, "removed", warning))
        self.dirty.add(user_id)
        return changes

    def set_verified(self, user_id: str, device_id: str, verified: bool = True) -> None:
        device = self.get(user_id, device_id)
        if device is None:
            raise KeyError(f"unknown device {user_id}/{device_id}")
        device.verified = verified
        self.dirty.add(user_id)

    def dump(self, user_id: str) -> dict[str, Any]:
        return {d: msgspec.to_builtins(t) for d, t in self.accounts.get(user_id, {}).items()}

    def load(self, user_id: str, data: dict[str, Any]) -> None:
        self.accounts[user_id] = {d: msgspec.convert(t, TrackedDevice) for d, t in data.items()}

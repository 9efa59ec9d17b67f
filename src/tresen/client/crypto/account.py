"""A device's Olm account: identity keys, signed device keys, one-time keys and fallback keys.

The account never leaves the device; what it publishes is signed JSON for the relay's key
directory in Matrix's shapes (``/keys/upload``).
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import vodozemac

from tresen.client.crypto.signing import (
    DEVICE_ALGORITHMS,
    OTK_ALGORITHM,
    DeviceIdentity,
    add_signature,
    canonical_json,
    signable,
)


class _FallbackKeys(Protocol):
    """What vodozemac 0.10 has at runtime but leaves out of its stubs."""

    fallback_key: dict[str, vodozemac.Curve25519PublicKey]

    def generate_fallback_key(self) -> None: ...


class OlmAccount:
    """One device's account, named as the key directory names it (``user_id``/``device_id``)."""

    def __init__(
        self, user_id: str, device_id: str, account: vodozemac.Account | None = None
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.account = account or vodozemac.Account()
        #: True once the device keys were accepted by the directory
        self.published = False

    @property
    def curve25519(self) -> str:
        return self.account.curve25519_key.to_base64()

    @property
    def ed25519(self) -> str:
        return self.account.ed25519_key.to_base64()

    @property
    def identity(self) -> DeviceIdentity:
        return DeviceIdentity(self.user_id, self.device_id, self.curve25519, self.ed25519)

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.device_id}"

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Add this device's signature to ``obj`` (in place) and return it."""
        signature = self.account.sign(signable(obj)).to_base64()
        add_signature(obj, self.user_id, self.key_id, signature)
        return obj

    def sign_bytes(self, data: bytes) -> str:
        return self.account.sign(data).to_base64()

    def device_keys(self) -> dict[str, Any]:
        return self.sign(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": list(DEVICE_ALGORITHMS),
                "keys": {
                    f"curve25519:{self.device_id}": self.curve25519,
                    f"ed25519:{self.device_id}": self.ed25519,
                },
            }
        )

    @property
    def max_one_time_keys(self) -> int:
        return self.account.max_number_of_one_time_keys

    def one_time_keys(self, count: int) -> dict[str, Any]:
        """Signed unpublished one-time keys, generating keys until ``count`` are unpublished.

        Keys stay unpublished (and are offered again) until :meth:`mark_published`, so an upload
        that failed halfway is simply repeated with the same ids."""
        missing = count - len(self.account.one_time_keys)
        if missing > 0:
            self.account.generate_one_time_keys(missing)
        return {
            f"{OTK_ALGORITHM}:{key_id}": self.sign({"key": key.to_base64()})
            for key_id, key in self.account.one_time_keys.items()
        }

    def unpublished_fallback_key(self) -> dict[str, Any]:
        return {
            f"{OTK_ALGORITHM}:{key_id}": self.sign({"key": key.to_base64(), "fallback": True})
            for key_id, key in cast(_FallbackKeys, self.account).fallback_key.items()
        }

    def fallback_key(self) -> dict[str, Any]:
        """A new signed fallback key (the previous one keeps working until the next rotation)."""
        cast(_FallbackKeys, self.account).generate_fallback_key()
        return self.unpublished_fallback_key()

    def mark_published(self) -> None:
        self.account.mark_keys_as_published()

    def pickle(self, key: bytes) -> str:
        return self.account.pickle(key)

    @classmethod
    def from_pickle(cls, user_id: str, device_id: str, pickle: str, key: bytes) -> OlmAccount:
        return cls(user_id, device_id, vodozemac.Account.from_pickle(pickle, key))

    def fingerprint(self) -> str:
        """The device's Ed25519 key in groups of four, as people compare it by eye."""
        return fingerprint(self.ed25519)


def fingerprint(ed25519: str) -> str:
    return " ".join(ed25519[i : i + 4] for i in range(0, len(ed25519), 4))


__all__ = ["OlmAccount", "canonical_json", "fingerprint"]

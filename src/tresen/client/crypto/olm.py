"""Olm sessions between pairs of devices, keyed by the peer's curve25519 identity key.

- Outbound: a session is created from a claimed (and signature-checked) one-time key and kept
  for every later message to that device.
- Inbound: a pre-key message is routed to an existing session with ``session_matches`` by the
  sender's curve25519 key, as Matrix does; only when none matches does it create a new session
  (which consumes the one-time key it names). A normal message is tried on the sender's known
  sessions. vodozemac rejects tampered and replayed ciphertext.
"""

from __future__ import annotations

import vodozemac

from tresen.client.crypto.account import OlmAccount
from tresen.client.crypto.events import OlmCiphertext, undecryptable
from tresen.client.crypto.signing import b64decode, b64encode

#: sessions kept per peer device (the newest first); older ones are dropped
MAX_SESSIONS_PER_DEVICE = 8


class OlmSessions:
    def __init__(self, account: OlmAccount) -> None:
        self.account = account
        #: peer curve25519 key -> sessions, the one to send with first
        self.sessions: dict[str, list[vodozemac.Session]] = {}
        #: peer curve25519 keys whose sessions changed since :meth:`take_dirty`
        self.dirty: set[str] = set()

    def has_session(self, curve25519: str) -> bool:
        return bool(self.sessions.get(curve25519))

    def _add(self, curve25519: str, session: vodozemac.Session) -> None:
        held = self.sessions.setdefault(curve25519, [])
        held.insert(0, session)
        del held[MAX_SESSIONS_PER_DEVICE:]
        self.dirty.add(curve25519)

    def create_outbound(self, curve25519: str, one_time_key: str) -> None:
        """A new session to the device with identity key ``curve25519`` (the OTK is checked)."""
        try:
            session = self.account.account.create_outbound_session(
                vodozemac.Curve25519PublicKey.from_base64(curve25519),
                vodozemac.Curve25519PublicKey.from_base64(one_time_key),
            )
        except (ValueError, TypeError) as exc:
            raise undecryptable(
                "bad_one_time_key", f"cannot start a session with this one-time key: {exc}"
            ) from exc
        self._add(curve25519, session)

    def encrypt(self, curve25519: str, plaintext: bytes) -> OlmCiphertext:
        sessions = self.sessions.get(curve25519)
        if not sessions:
            raise undecryptable("no_session", "no Olm session with this device yet")
        message_type, ciphertext = sessions[0].encrypt(plaintext).to_parts()
        self.dirty.add(curve25519)
        return OlmCiphertext(0 if message_type == 0 else 1, b64encode(ciphertext))

    def decrypt(self, sender_key: str, message: OlmCiphertext) -> bytes:
        try:
            sender = vodozemac.Curve25519PublicKey.from_base64(sender_key)
            parsed = vodozemac.AnyOlmMessage.from_parts(message.type, b64decode(message.body))
        except (ValueError, TypeError) as exc:
            raise undecryptable("malformed_ciphertext", f"not an Olm message: {exc}") from exc
        sessions = self.sessions.get(sender_key, [])
        pre_key = parsed.to_pre_key() if message.type == 0 else None
        if pre_key is not None:
            for session in sessions:
                if session.session_matches(pre_key):
                    return self._decrypt_with(sender_key, session, parsed)
            try:
                session, plaintext = self.account.account.create_inbound_session(sender, pre_key)
            except (ValueError, TypeError) as exc:
                raise undecryptable(
                    "olm_decrypt_failed",
                    f"cannot open a session from this pre-key message (tampered, replayed, or "
                    f"its one-time key was already used): {exc}",
                ) from exc
            self._add(sender_key, session)
            return plaintext
        for session in sessions:
            try:
                plaintext = session.decrypt(parsed)
            except (ValueError, TypeError):
                continue
            self.dirty.add(sender_key)
            return plaintext
        reason = "olm_decrypt_failed" if sessions else "no_session"
        raise undecryptable(
            reason,
            "no Olm session with the sending device decrypts this message (tampered, replayed "
            "or from a lost session)",
        )

    def _decrypt_with(
        self, sender_key: str, session: vodozemac.Session, parsed: vodozemac.AnyOlmMessage
    ) -> bytes:
        try:
            plaintext = session.decrypt(parsed)
        except (ValueError, TypeError) as exc:
            raise undecryptable(
                "olm_decrypt_failed", f"the matching Olm session rejects this message: {exc}"
            ) from exc
        self.dirty.add(sender_key)
        return plaintext

    def take_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty

    def pickle(self, curve25519: str, key: bytes) -> list[str]:
        return [s.pickle(key) for s in self.sessions.get(curve25519, [])]

    def restore(self, curve25519: str, pickles: list[str], key: bytes) -> None:
        self.sessions[curve25519] = [vodozemac.Session.from_pickle(p, key) for p in pickles]

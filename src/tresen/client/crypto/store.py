"""The device's crypto state on disk, readable only with a key the user holds.

One SQLite file with rows ``(kind, name, value)``; every value is sealed with AES-256-GCM under
a key derived (HKDF) from the 32-byte store key, with ``kind/name`` as associated data, so rows
cannot be swapped. vodozemac pickles inside are additionally encrypted by vodozemac under the
store key. The store key comes either from a passphrase (scrypt, salt and cost kept in the
file) or from a key file of 32 random bytes that only its owner may read (mode 0600, refused
otherwise). A wrong key fails with ``CryptoError(code=crypto_store_key)`` before anything is
read.

SQLite's automatic checkpoint (copying the WAL back into the file, with two fsyncs) runs inside
a commit, on the caller's thread: by default every thousand pages, which stalled a busy event
loop for 10-50 ms several times a second. A thread of the store's own copies the WAL back
instead (:class:`_Checkpoints`); the automatic checkpoint stays, rarely (:data:`WAL_RESET_PAGES`),
because only a writer that finds everything copied back can start the WAL over: without it the
log of a store that is never idle grows without end.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import stat
import threading
import weakref
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from typing_extensions import override

from tresen.errors import CryptoError
from tresen.protocol.codes import Code

KEY_BYTES = 32
#: scrypt cost for passphrases (about 64 MiB of memory, tenths of a second)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**16, 8, 1
_CHECK = b"tresen crypto store v1"
#: seconds between checkpoints of a store's WAL, when something was committed in between
CHECKPOINT_EVERY = 0.5
#: the WAL's size (pages) at which a commit checkpoints (what the thread left) and so lets the
#: next one start the log over; about 64 MB
WAL_RESET_PAGES = 16_384


def key_error(message: str, reason: str) -> CryptoError:
    return CryptoError(message, code=Code.CRYPTO_STORE_KEY, reason=reason)


def derive_key(passphrase: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R) -> bytes:
    if not passphrase:
        raise key_error("the crypto store passphrase must not be empty", "empty_passphrase")
    return hashlib.scrypt(
        passphrase.encode(),
        salt=salt,
        n=n,
        r=r,
        p=SCRYPT_P,
        maxmem=256 * 1024 * 1024,
        dklen=KEY_BYTES,
    )


def create_key_file(path: str | Path) -> bytes:
    """Write 32 random bytes to a new file only its owner can read; refuses to overwrite."""
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def read_key_file(path: str | Path) -> bytes:
    """The store key from a key file, which must be 32 bytes and not readable by others."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise key_error(
            f"no key file at {path}: create one with create_key_file()", "missing"
        ) from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise key_error(
            f"the key file {path} is accessible by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}): run 'chmod 600 {path}'",
            "key_file_permissions",
        )
    data = Path(path).read_bytes()
    if len(data) != KEY_BYTES:
        raise key_error(f"the key file {path} must hold exactly 32 bytes", "bad_key_file")
    return data


class CryptoStore:
    """Sealed rows in SQLite. Open with :meth:`open_with_passphrase` or :meth:`open_with_key`."""

    def __init__(self, path: str | Path, key: bytes, db: sqlite3.Connection) -> None:
        if len(key) != KEY_BYTES:
            raise key_error("the crypto store key must be 32 bytes", "bad_key")
        self.path = Path(path)
        #: vodozemac pickle key
        self.pickle_key = HKDF(hashes.SHA256(), KEY_BYTES, None, b"tresen pickle").derive(key)
        self.aead = AESGCM(HKDF(hashes.SHA256(), KEY_BYTES, None, b"tresen rows").derive(key))
        self.db = db
        self.commits = 0
        self._checkpoints = _Checkpoints(self)
        check = self._meta("check")
        if check is None:
            self._set_meta("check", self._seal("meta", "check", _CHECK))
            self.db.commit()
        else:
            try:
                self._open("meta", "check", check)
            except InvalidTag as exc:
                raise key_error(
                    f"wrong key or passphrase for the crypto store {self.path}", "wrong_key"
                ) from exc
        self._checkpoints.start()

    # ------------------------------------------------------------ opening

    @staticmethod
    def _connect(path: str | Path) -> sqlite3.Connection:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        db = sqlite3.connect(path, isolation_level="DEFERRED")
        db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed save survives the app crashing (not a power cut, where the
        # last saves may be lost and the affected Olm sessions re-established)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_RESET_PAGES}")  # see _Checkpoints
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS state (kind TEXT NOT NULL, name TEXT NOT NULL, "
            "value BLOB NOT NULL, PRIMARY KEY (kind, name))"
        )
        db.commit()
        return db

    @classmethod
    def open_with_key(cls, path: str | Path, key: bytes) -> CryptoStore:
        db = cls._connect(path)
        if _get_meta(db, "kdf") not in (None, b"key"):
            db.close()
            raise key_error(f"the crypto store {path} is protected by a passphrase", "wrong_kind")
        _set(db, "kdf", b"key")
        return cls._checked(path, key, db)

    @classmethod
    def open_with_passphrase(cls, path: str | Path, passphrase: str) -> CryptoStore:
        db = cls._connect(path)
        kdf = _get_meta(db, "kdf")
        if kdf not in (None, b"scrypt"):
            db.close()
            raise key_error(f"the crypto store {path} is protected by a key file", "wrong_kind")
        params = _get_meta(db, "scrypt")
        if params is None:
            salt, n, r = secrets.token_bytes(16), SCRYPT_N, SCRYPT_R
            _set(db, "kdf", b"scrypt")
            _set(db, "scrypt", msgspec.json.encode({"salt": salt.hex(), "n": n, "r": r}))
        else:
            decoded = msgspec.json.decode(params)
            salt, n, r = bytes.fromhex(decoded["salt"]), int(decoded["n"]), int(decoded["r"])
        return cls._checked(path, derive_key(passphrase, salt, n, r), db)

    @classmethod
    def _checked(cls, path: str | Path, key: bytes, db: sqlite3.Connection) -> CryptoStore:
        try:
            return cls(path, key, db)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self._checkpoints.stop()
        self.db.close()  # the last connection out checkpoints what is left

    # ------------------------------------------------------------ rows

    def _seal(self, kind: str, name: str, data: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self.aead.encrypt(nonce, data, f"{kind}/{name}".encode())

    def _open(self, kind: str, name: str, sealed: bytes) -> bytes:
        return self.aead.decrypt(sealed[:12], sealed[12:], f"{kind}/{name}".encode())

    def _meta(self, name: str) -> bytes | None:
        return _get_meta(self.db, name)

    def _set_meta(self, name: str, value: bytes) -> None:
        _set(self.db, name, value)

    def get(self, kind: str, name: str) -> Any:
        row = self.db.execute(
            "SELECT value FROM state WHERE kind = ? AND name = ?", (kind, name)
        ).fetchone()
        return None if row is None else self._decode(kind, name, row[0])

    def all(self, kind: str) -> dict[str, Any]:
        rows = self.db.execute("SELECT name, value FROM state WHERE kind = ?", (kind,))
        return {name: self._decode(kind, name, value) for name, value in rows}

    def _decode(self, kind: str, name: str, sealed: bytes) -> Any:
        try:
            return msgspec.json.decode(self._open(kind, name, sealed))
        except InvalidTag as exc:
            raise key_error(
                f"the crypto store row {kind}/{name} was altered or moved", "tampered"
            ) from exc

    def put(self, kind: str, name: str, value: Any) -> None:
        """Stage one row; :meth:`commit` makes a batch durable at once."""
        sealed = self._seal(kind, name, msgspec.json.encode(value))
        self.db.execute(
            "INSERT INTO state (kind, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value",
            (kind, name, sealed),
        )

    def delete(self, kind: str, name: str) -> None:
        self.db.execute("DELETE FROM state WHERE kind = ? AND name = ?", (kind, name))

    def commit(self) -> None:
        self.db.commit()
        self.commits += 1


class _Checkpoints(threading.Thread):
    """Checkpoints a store's WAL every :data:`CHECKPOINT_EVERY` seconds after commits, on a
    connection and thread of its own (passive: it never holds up the store's writes). It holds
    the store weakly and ends with it."""

    def __init__(self, store: CryptoStore) -> None:
        super().__init__(name="tresen-crypto-checkpoint", daemon=True)
        self.path = store.path
        self.store = weakref.ref(store)
        self.stopping = threading.Event()

    @override
    def run(self) -> None:
        conn: sqlite3.Connection | None = None
        seen = 0
        try:
            while not self.stopping.wait(CHECKPOINT_EVERY):
                store = self.store()
                if store is None:
                    return
                commits, store = store.commits, None
                if commits == seen:
                    continue
                seen = commits
                try:
                    conn = conn or sqlite3.connect(self.path, check_same_thread=False)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # busy or failing I/O: the next round tries again
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join()


def _get_meta(db: sqlite3.Connection, name: str) -> bytes | None:
    row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else bytes(row[0])


def _set(db: sqlite3.Connection, name: str, value: bytes) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )
    db.commit()

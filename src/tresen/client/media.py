"""Encrypted attachments in Matrix's "v2" format, and their transfer through the relay.

A file is encrypted on the device with AES-256-CTR under a fresh key and a 16-byte IV whose
last 8 bytes (the block counter) are zero; the SHA-256 of the *ciphertext* is kept. The key,
IV and hash form an :class:`EncryptedFile`, exactly Matrix's JSON::

    {"v": "v2",
     "key": {"kty": "oct", "key_ops": ["encrypt", "decrypt"], "alg": "A256CTR",
             "k": <unpadded base64url of 32 bytes>, "ext": true},
     "iv": <unpadded base64 of 16 bytes>,
     "hashes": {"sha256": <unpadded base64 of 32 bytes>}}

which travels inside the end-to-end encrypted message; the relay only ever sees ciphertext.

Everything streams: :class:`AttachmentEncryptor` works chunk by chunk, :func:`upload_attachment`
encrypts while it uploads (resuming at the relay's offset after a broken connection), and
:func:`download_attachment` decrypts into a temporary file next to the destination that is
renamed into place only after the ciphertext's hash matched. No plaintext is released before
its hash is verified: a mismatch raises :class:`~tresen.errors.CryptoError` with code
``attachment_corrupt``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from tresen.client.api import RelayAPI
from tresen.errors import Conflict, CryptoError, TresenError, Unavailable, from_code
from tresen.protocol.codes import Code

MediaKind = Literal["image", "video", "audio", "document", "sticker"]
#: (bytes done, bytes in all)
Progress = Callable[[int, int], None]

CHUNK = 256 * 1024
#: bytes per PATCH request of an upload: what a broken connection can cost at most
PART = 8 * 1024 * 1024
URL_PREFIX = "tresen://media/"


# ---------------------------------------------------------------- the format


class JsonWebKey(msgspec.Struct, kw_only=True):
    kty: str
    key_ops: list[str]
    alg: str
    k: str
    ext: bool


class EncryptedFile(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Matrix's ``EncryptedFile`` (``url`` optional, as in the browser's
    ``Attachment.encrypt`` → ``mediaEncryptionInfo``)."""

    v: str
    key: JsonWebKey
    iv: str
    hashes: dict[str, str]
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any]) -> EncryptedFile:
        """Decode and check (version, algorithm, key and IV lengths, hash present)."""
        try:
            if isinstance(data, dict):
                info = msgspec.convert(data, cls)
            else:
                info = msgspec.json.decode(data, type=cls)
        except msgspec.ValidationError as exc:
            raise _invalid(f"not an encrypted-file record: {exc}") from exc
        info.secrets()
        return info

    def secrets(self) -> tuple[bytes, bytes, bytes]:
        """(key, iv, sha256) as bytes, checked."""
        if self.v != "v2":
            raise _invalid(f"unsupported attachment version {self.v!r} (only v2)")
        if self.key.alg != "A256CTR" or self.key.kty != "oct":
            raise _invalid(f"unsupported key {self.key.kty}/{self.key.alg} (need oct/A256CTR)")
        if "decrypt" not in self.key.key_ops:
            raise _invalid("the key may not be used to decrypt (key_ops)")
        key, iv = unb64(self.key.k), unb64(self.iv)
        digest = unb64(self.hashes.get("sha256", ""))
        if len(key) != 32 or len(iv) != 16 or len(digest) != 32:
            raise _invalid("key, iv or sha256 has the wrong length")
        return key, iv, digest

    @property
    def media_id(self) -> str:
        if not self.url or not self.url.startswith(URL_PREFIX):
            raise _invalid("this attachment has no tresen media url")
        return self.url.removeprefix(URL_PREFIX)


def b64(data: bytes) -> str:
    """Unpadded standard base64, as Matrix writes it."""
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    """Padded or not, standard or URL-safe alphabet."""
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"bad base64: {exc}") from exc


def _invalid(message: str) -> CryptoError:
    return CryptoError(message, code=Code.ATTACHMENT_CORRUPT, reason="invalid_info")


def _mismatch() -> CryptoError:
    return CryptoError(
        "the attachment's SHA-256 does not match: it was altered or damaged in transit; "
        "ask the sender to send it again",
        code=Code.ATTACHMENT_CORRUPT,
        reason="hash_mismatch",
    )


def new_file_info(key: bytes, iv: bytes, digest: bytes, url: str | None = None) -> EncryptedFile:
    return EncryptedFile(
        v="v2",
        key=JsonWebKey(
            kty="oct",
            key_ops=["encrypt", "decrypt"],
            alg="A256CTR",
            k=base64.urlsafe_b64encode(key).decode().rstrip("="),
            ext=True,
        ),
        iv=b64(iv),
        hashes={"sha256": b64(digest)},
        url=url,
    )


def keystream_at(key: bytes, iv: bytes, offset: int) -> CipherContext:
    """AES-256-CTR positioned at byte ``offset`` (the counter block is the IV plus the block
    number, big-endian over 128 bits; with the v2 IV's zero counter half this is exactly the
    browser's 64-bit counter)."""
    counter = (int.from_bytes(iv, "big") + offset // 16) % (1 << 128)
    ctx = Cipher(algorithms.AES(key), modes.CTR(counter.to_bytes(16, "big"))).encryptor()
    if offset % 16:
        ctx.update(bytes(offset % 16))
    return ctx


class AttachmentEncryptor:
    """Streaming encryption: ``update(plain) -> cipher`` per chunk, then ``finish()``."""

    def __init__(self, key: bytes | None = None, iv: bytes | None = None) -> None:
        self.key = key or os.urandom(32)
        self.iv = iv or os.urandom(8) + bytes(8)
        self._ctx = keystream_at(self.key, self.iv, 0)
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, plaintext: bytes) -> bytes:
        ciphertext = self._ctx.update(plaintext)
        self._hash.update(ciphertext)
        self.size += len(ciphertext)
        return ciphertext

    def finish(self, url: str | None = None) -> EncryptedFile:
        return new_file_info(self.key, self.iv, self._hash.digest(), url)


class _Decryptor:
    """Decrypts and hashes a ciphertext stream; plaintext it returns is unverified until
    :meth:`verify` passed, so callers keep it out of reach until then."""

    def __init__(self, info: EncryptedFile) -> None:
        self.key, self.iv, self.digest = info.secrets()
        self.restart()

    def restart(self) -> None:
        self._ctx = keystream_at(self.key, self.iv, 0)
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, ciphertext: bytes) -> bytes:
        self._hash.update(ciphertext)
        self.size += len(ciphertext)
        return self._ctx.update(ciphertext)

    def verify(self) -> None:
        if not hmac.compare_digest(self._hash.digest(), self.digest):
            raise _mismatch()


def encrypt_attachment(plaintext: bytes) -> tuple[bytes, EncryptedFile]:
    """Encrypt in memory (small media; the conformance tests)."""
    encryptor = AttachmentEncryptor()
    ciphertext = encryptor.update(plaintext)
    return ciphertext, encryptor.finish()


def decrypt_attachment(ciphertext: bytes, info: EncryptedFile | bytes | str) -> bytes:
    """Check the hash, then decrypt; raises ``attachment_corrupt`` on any mismatch."""
    if not isinstance(info, EncryptedFile):
        info = EncryptedFile.from_json(info)
    key, iv, digest = info.secrets()
    if not hmac.compare_digest(hashlib.sha256(ciphertext).digest(), digest):
        raise _mismatch()
    return keystream_at(key, iv, 0).update(ciphertext)


def encrypt_file(source: str | Path, target: str | Path, *, chunk: int = CHUNK) -> EncryptedFile:
    """Encrypt a file into another, chunk by chunk."""
    encryptor = AttachmentEncryptor()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while data := src.read(chunk):
            dst.write(encryptor.update(data))
    return encryptor.finish()


def decrypt_file(
    source: str | Path, target: str | Path, info: EncryptedFile, *, chunk: int = CHUNK
) -> Path:
    """Decrypt a ciphertext file; ``target`` appears only if the hash matched."""
    decryptor = _Decryptor(info)
    with _Release(Path(target)) as out, open(source, "rb") as src:
        while data := src.read(chunk):
            out.write(decryptor.update(data))
        decryptor.verify()
    return Path(target)


class _Release:
    """Write plaintext to ``<target>.partial`` (owner-only) and rename it to ``target`` only
    when the block exits cleanly; on any error the partial file is removed."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.partial = target.with_name(target.name + ".partial")

    def __enter__(self) -> Any:
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.handle = os.fdopen(fd, "wb")
        return self.handle

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.partial, self.target)
        else:
            self.handle.close()
            with contextlib.suppress(FileNotFoundError):
                self.partial.unlink()


# ---------------------------------------------------------------- transfer


@dataclass(slots=True)
class Attachment:
    """An uploaded attachment: put ``file`` (and ``size``, ``kind``) in the encrypted message."""

    media_id: str
    kind: MediaKind
    size: int
    file: EncryptedFile


Recipients = Iterable[int | tuple[int, int]]


def recipients_body(recipients: Recipients | None) -> list[dict[str, int]]:
    """Accounts (every current device) or (account, device) pairs, as the relay wants them."""
    body = []
    for r in recipients or ():
        if isinstance(r, tuple):
            body.append({"account_id": r[0], "device_id": r[1]})
        else:
            body.append({"account_id": r})
    return body


class _Source:
    """Plaintext by offset, from bytes or a file (read in a worker thread)."""

    def __init__(self, source: bytes | str | os.PathLike[str]) -> None:
        self.data = source if isinstance(source, bytes) else None
        self.path = None if isinstance(source, bytes) else Path(source)
        self.size = len(self.data) if self.data is not None else os.stat(self.path or "").st_size

    async def chunks(self, start: int, end: int, chunk: int) -> AsyncIterator[bytes]:
        if self.data is not None:
            view = memoryview(self.data)
            for at in range(start, end, chunk):
                yield bytes(view[at : min(at + chunk, end)])
            return
        assert self.path is not None
        handle = await asyncio.to_thread(open, self.path, "rb")
        try:
            handle.seek(start)
            at = start
            while at < end:
                data = await asyncio.to_thread(handle.read, min(chunk, end - at))
                if not data:
                    raise TresenError(f"{self.path} shrank while it was being uploaded")
                at += len(data)
                yield data
        finally:
            handle.close()


class _HashOnce:
    """SHA-256 over a deterministic stream that may be produced again from an earlier offset
    (an upload resuming): each byte is hashed the first time it is produced, once."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.done = 0

    def feed(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end > self.done:
            self.hash.update(data[max(0, self.done - offset) :])
            self.done = end


async def upload_attachment(
    api: RelayAPI,
    source: bytes | str | os.PathLike[str],
    *,
    kind: MediaKind,
    recipients: Recipients | None = None,
    progress: Progress | None = None,
    part: int = PART,
    chunk: int = CHUNK,
    retries: int = 5,
    keep: bool = False,
) -> Attachment:
    """Encrypt ``source`` while uploading it; returns what the message must carry.

    The upload goes in PATCH requests of ``part`` bytes. When a request fails (a broken
    connection, the relay restarting) the relay's offset is read back and the upload resumes
    there, up to ``retries`` failures in a row. ``keep`` asks the relay to keep the blob to
    its TTL even after every recipient fetched it (for media sent again later to others,
    granting them with ``RelayAPI.grant_media``).
    """
    plain = _Source(source)
    size = plain.size
    if size == 0:
        raise TresenError("an attachment needs at least one byte")
    key, iv = os.urandom(32), os.urandom(8) + bytes(8)
    hasher = _HashOnce()
    created = await api.create_upload(kind, size, recipients_body(recipients), keep=keep)
    media_id, offset = created["media_id"], int(created["offset"])

    async def body(start: int, end: int) -> AsyncIterator[bytes]:
        ctx, at = keystream_at(key, iv, start), start
        async for data in plain.chunks(start, end, chunk):
            ciphertext = ctx.update(data)
            hasher.feed(at, ciphertext)
            at += len(ciphertext)
            yield ciphertext
            if progress:
                progress(at, size)

    failures = 0
    try:
        while offset < size:
            end = min(offset + part, size)
            try:
                state = await api.upload_part(media_id, offset, body(offset, end), end - offset)
                offset, failures = int(state["offset"]), 0
            except (Unavailable, Conflict) as exc:
                if isinstance(exc, Conflict) and exc.code == Code.UPLOAD_COMPLETE:
                    break  # the relay took the last part, but its answer was lost
                if isinstance(exc, Conflict) and exc.code != Code.UPLOAD_OFFSET_MISMATCH:
                    raise
                failures += 1
                if failures > retries:
                    raise
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                offset = await _relay_offset(api, media_id, exc)
    except Exception:
        # the key dies with this call, so the bytes on the relay are of no use to anyone:
        # free them (and the account's quota) if the relay can be reached
        with contextlib.suppress(TresenError):
            await api.delete_media(media_id)
        raise
    if hasher.done != size:  # only if the relay claims bytes this upload never produced
        raise TresenError(f"upload {media_id} ended at {hasher.done} of {size} bytes")
    info = new_file_info(key, iv, hasher.hash.digest(), URL_PREFIX + media_id)
    return Attachment(media_id=media_id, kind=kind, size=size, file=info)


async def _relay_offset(api: RelayAPI, media_id: str, exc: TresenError) -> int:
    if "offset" in exc.fields:
        return int(exc.fields["offset"])
    try:
        return int((await api.media_info(media_id))["offset"])
    except Unavailable:
        raise exc from None


async def _stream_error(response: httpx.Response) -> TresenError:
    body = await response.aread()
    try:
        err = msgspec.json.decode(body)["error"]
        return from_code(err.get("code", ""), err.get("message", ""), err.get("fields"))
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        return TresenError(f"relay answered HTTP {response.status_code}: {body[:200]!r}")


async def _fetch(
    api: RelayAPI,
    media_id: str,
    sink: Callable[[bytes], None],
    restart: Callable[[], None],
    progress: Progress | None,
    retries: int,
) -> None:
    """Stream the ciphertext into ``sink``, resuming with ``Range`` after a broken transfer."""
    received, failures = 0, 0
    while True:
        try:
            async with api.download_stream(media_id, received) as response:
                if response.status_code not in (200, 206):
                    raise await _stream_error(response)
                if response.status_code == 200 and received:
                    restart()  # the relay sent the whole blob again
                    received = 0
                total = received + int(response.headers.get("content-length", 0))
                async for data in response.aiter_raw(CHUNK):
                    sink(data)
                    received += len(data)
                    if progress:
                        progress(received, total)
                if received < total:
                    raise httpx.ReadError("the download ended early")
            return
        except httpx.TransportError as exc:
            failures += 1
            if failures > retries:
                raise Unavailable(f"cannot download media {media_id}: {exc}") from exc
            await asyncio.sleep(min(0.2 * 2**failures, 5.0))


async def download_attachment(
    api: RelayAPI,
    info: EncryptedFile,
    target: str | Path,
    *,
    media_id: str | None = None,
    progress: Progress | None = None,
    retries: int = 5,
) -> Path:
    """Download, verify and decrypt into ``target``, which appears only when the hash matched
    (until then the plaintext sits in an owner-only ``<target>.partial``)."""
    decryptor = _Decryptor(info)
    target = Path(target)
    with _Release(target) as out:

        def restart() -> None:
            out.seek(0)
            out.truncate()
            decryptor.restart()

        await _fetch(
            api,
            media_id or info.media_id,
            lambda data: out.write(decryptor.update(data)),
            restart,
            progress,
            retries,
        )
        decryptor.verify()
    return target


async def fetch_attachment(
    api: RelayAPI,
    info: EncryptedFile,
    *,
    media_id: str | None = None,
    max_bytes: int = 16 * 1024 * 1024,
    progress: Progress | None = None,
) -> bytes:
    """Download into memory (small media only: past ``max_bytes`` it stops), verify, decrypt."""
    parts: list[bytes] = []
    held = 0

    def keep(data: bytes) -> None:
        nonlocal held
        held += len(data)
        if held > max_bytes:
            raise TresenError(f"the attachment exceeds {max_bytes} bytes: use download_attachment")
        parts.append(data)

    def restart() -> None:
        nonlocal held
        parts.clear()
        held = 0

    await _fetch(api, media_id or info.media_id, keep, restart, progress, 5)
    return decrypt_attachment(b"".join(parts), info)


__all__ = [
    "Attachment",
    "AttachmentEncryptor",
    "EncryptedFile",
    "JsonWebKey",
    "MediaKind",
    "Progress",
    "decrypt_attachment",
    "decrypt_file",
    "download_attachment",
    "encrypt_attachment",
    "encrypt_file",
    "fetch_attachment",
    "keystream_at",
    "recipients_body",
    "upload_attachment",
]

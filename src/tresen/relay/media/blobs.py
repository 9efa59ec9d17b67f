"""Where media bytes live: the :class:`BlobStore` protocol and its filesystem implementation.

A blob is opaque ciphertext under a key (the media id). Bytes reach a store in one of two ways:

- :meth:`BlobStore.put` writes a whole blob from a stream; it becomes readable only once every
  byte is written (atomic), and a stream that crosses ``limit`` leaves nothing behind;
- resumable uploads stage bytes with :meth:`BlobStore.append` (at an offset; anything staged
  past it is dropped first) and publish them with :meth:`BlobStore.commit`.

Nothing is ever held whole in memory: writes go out in chunks of at most ``WRITE_BUFFER``
bytes, reads come back in chunks of ``READ_CHUNK`` bytes. docs/media.md maps each method onto
an S3-compatible object store (multipart uploads, ranged GETs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import IO, Protocol

from typing_extensions import override

#: bytes gathered before one write to disk
WRITE_BUFFER = 256 * 1024
#: bytes per chunk of a read
READ_CHUNK = 256 * 1024

_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class BlobNotFound(Exception):
    """No readable blob under this key."""


class BlobTooLarge(Exception):
    """A stream went past its ``limit``; the bytes past the limit were not written."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the stream exceeds {limit} bytes")
        self.limit = limit


class BlobOffsetError(Exception):
    """An append asked to continue past the bytes actually staged."""

    def __init__(self, offset: int, staged: int) -> None:
        super().__init__(f"cannot append at {offset}: only {staged} bytes are staged")
        self.offset = offset
        self.staged = staged


def check_key(key: str) -> str:
    """Keys name files and objects: a fixed alphabet, so no key can escape its folder."""
    if not _KEY.match(key):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobReader(Protocol):
    """The bytes of one read, in chunks; ``aclose`` releases them early."""

    def __aiter__(self) -> BlobReader: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


class BlobStore(Protocol):
    """A store of opaque blobs. Every method is safe to call again after a crash."""

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, limit: int) -> int:
        """Write a whole blob; readable only once complete. Returns its size.

        Past ``limit`` bytes raises :class:`BlobTooLarge` and nothing of the blob remains.
        """
        ...

    async def append(
        self, key: str, offset: int, chunks: AsyncIterable[bytes], *, limit: int
    ) -> int:
        """Stage bytes for ``key`` at ``offset`` (staged bytes past it are dropped first).

        Returns the staged length. Fewer than ``offset`` staged bytes raises
        :class:`BlobOffsetError` (nothing is written). Crossing ``limit`` raises
        :class:`BlobTooLarge` before the crossing chunk is written (and drops what this call
        wrote); if ``chunks`` raises, what was written stays staged (see :meth:`staged_size`)
        and the error propagates.
        """
        ...

    async def staged_size(self, key: str) -> int:
        """Bytes staged for ``key`` (0 if none)."""
        ...

    async def commit(self, key: str) -> int:
        """Publish the staged bytes as the blob, atomically; returns its size. Idempotent."""
        ...

    async def open(self, key: str, start: int = 0, end: int | None = None) -> BlobReader:
        """Stream bytes ``start`` to ``end`` inclusive (default: to the last byte).

        Raises :class:`BlobNotFound` at once (before any byte) if there is no blob.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Drop the blob and anything staged for it; True if something existed."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int | None:
        """The readable blob's size, None if there is none."""
        ...


class _FileReader(AsyncIterator[bytes]):
    """Chunks of an open file between two offsets; reads run in a worker thread."""

    def __init__(self, handle: IO[bytes], remaining: int) -> None:
        self.handle = handle
        self.remaining = remaining

    @override
    def __aiter__(self) -> _FileReader:
        return self

    @override
    async def __anext__(self) -> bytes:
        if self.remaining <= 0:
            await self.aclose()
            raise StopAsyncIteration
        chunk = await asyncio.to_thread(self.handle.read, min(READ_CHUNK, self.remaining))
        if not chunk:  # the file shrank under us: end here rather than spin
            await self.aclose()
            raise StopAsyncIteration
        self.remaining -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        self.remaining = 0
        if not self.handle.closed:
            self.handle.close()


class FileBlobStore:
    """Blobs as files under ``root``: ``blobs/ab/cd/<key>``, staged uploads in ``staging/``,
    whole-blob writes in ``tmp/`` until renamed into place (one filesystem, so rename is
    atomic). Data is fsynced before a blob becomes visible or a staged length is reported."""

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        for sub in ("blobs", "staging", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ paths

    def _blob(self, key: str) -> Path:
        check_key(key)
        return self.root / "blobs" / key[:2] / key[2:4] / key

    def _staged(self, key: str) -> Path:
        check_key(key)
        return self.root / "staging" / f"{key}.part"

    # ------------------------------------------------------------ writing

    async def _write(
        self, handle: IO[bytes], chunks: AsyncIterable[bytes], offset: int, limit: int
    ) -> int:
        """Append ``chunks`` to ``handle`` (positioned at ``offset``); return the new length.

        Whatever was buffered is written and synced even when ``chunks`` fails, so the
        length on disk is what the caller may trust afterwards.
        """
        buffer = bytearray()
        written = offset
        try:
            async for chunk in chunks:
                if written + len(buffer) + len(chunk) > limit:
                    raise BlobTooLarge(limit)
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER:
                    await asyncio.to_thread(handle.write, buffer)
                    written += len(buffer)
                    buffer = bytearray()
        finally:
            if buffer:
                await asyncio.to_thread(handle.write, buffer)
                written += len(buffer)
            await asyncio.to_thread(self._sync, handle)
        return written

    def _sync(self, handle: IO[bytes]) -> None:
        handle.flush()
        if self.fsync:
            os.fsync(handle.fileno())

    def _sync_dir(self, path: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, limit: int) -> int:
        target = self._blob(key)
        temp = self.root / "tmp" / f"{key}.{secrets.token_hex(4)}"
        handle = await asyncio.to_thread(open, temp, "wb")
        try:
            try:
                size = await self._write(handle, chunks, 0, limit)
            finally:
                handle.close()
            await asyncio.to_thread(self._publish, temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        return size

    def _publish(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        self._sync_dir(target.parent)

    async def append(
        self, key: str, offset: int, chunks: AsyncIterable[bytes], *, limit: int
    ) -> int:
        if offset < 0 or offset > limit:
            raise ValueError(f"offset {offset} outside 0..{limit}")
        path = self._staged(key)

        def open_at() -> IO[bytes]:
            handle = open(path, "r+b" if path.exists() else "w+b")
            staged = os.fstat(handle.fileno()).st_size
            if staged < offset:
                handle.close()
                raise BlobOffsetError(offset, staged)
            handle.truncate(offset)
            handle.seek(offset)
            return handle

        handle = await asyncio.to_thread(open_at)
        try:
            return await self._write(handle, chunks, offset, limit)
        except BlobTooLarge:
            # the refused stream leaves nothing: back to where it started
            await asyncio.to_thread(handle.truncate, offset)
            raise
        finally:
            handle.close()

    async def staged_size(self, key: str) -> int:
        try:
            return (await asyncio.to_thread(self._staged(key).stat)).st_size
        except FileNotFoundError:
            return 0

    async def commit(self, key: str) -> int:
        staged, target = self._staged(key), self._blob(key)

        def publish() -> int:
            if staged.exists():
                self._publish(staged, target)
            return target.stat().st_size  # raises FileNotFoundError: nothing staged, no blob

        try:
            return await asyncio.to_thread(publish)
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    # ------------------------------------------------------------ reading

    async def open(self, key: str, start: int = 0, end: int | None = None) -> BlobReader:
        path = self._blob(key)

        def open_range() -> tuple[IO[bytes], int]:
            handle = open(path, "rb")
            size = os.fstat(handle.fileno()).st_size
            last = size - 1 if end is None else min(end, size - 1)
            handle.seek(start)
            return handle, max(0, last - start + 1)

        try:
            handle, length = await asyncio.to_thread(open_range)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return _FileReader(handle, length)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._blob(key).exists)

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._blob(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> bool:
        def unlink_all() -> bool:
            found = False
            for path in (self._blob(key), self._staged(key)):
                try:
                    path.unlink()
                    found = True
                except FileNotFoundError:
                    pass
            return found

        return await asyncio.to_thread(unlink_all)


def default_media_dir(db_url: str) -> Path:
    """Next to the SQLite file; ``tresen-data/media`` for any other database."""
    from tresen.storage.engine import sqlite_path

    path = sqlite_path(db_url)
    if path is None:
        return Path("tresen-data") / "media"
    return Path(path).parent / "media"


__all__ = [
    "READ_CHUNK",
    "WRITE_BUFFER",
    "BlobNotFound",
    "BlobOffsetError",
    "BlobReader",
    "BlobStore",
    "BlobTooLarge",
    "FileBlobStore",
    "check_key",
    "default_media_dir",
]

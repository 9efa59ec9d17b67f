"""One conformance suite for every BlobStore backend (today: the filesystem store; an
S3-compatible store joins the ``store`` fixture's params when there is a server to test on)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from tresen.relay.media.blobs import (
    READ_CHUNK,
    BlobNotFound,
    BlobOffsetError,
    BlobStore,
    BlobTooLarge,
    FileBlobStore,
    check_key,
    default_media_dir,
)

KEY = "abcdEFGH1234_-xyzabcdE"


@pytest.fixture(params=[pytest.param("fs", id="filesystem")])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "fs":
        return FileBlobStore(tmp_path / "media")
    raise AssertionError(request.param)


async def stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


async def broken(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    raise ConnectionResetError("client went away")


async def read_all(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    reader = await store.open(key, start, end)
    return b"".join([chunk async for chunk in reader])


async def test_put_open_size_delete(store: BlobStore) -> None:
    data = os.urandom(3 * READ_CHUNK + 11)
    assert not await store.exists(KEY) and await store.size(KEY) is None
    assert await store.put(KEY, stream(data[:1000], data[1000:]), limit=len(data)) == len(data)
    assert await store.exists(KEY) and await store.size(KEY) == len(data)
    assert await read_all(store, KEY) == data
    chunks = [c async for c in await store.open(KEY)]
    assert max(len(c) for c in chunks) <= READ_CHUNK and len(chunks) > 1
    assert await read_all(store, KEY, 5, 9) == data[5:10]
    assert await read_all(store, KEY, len(data) - 3) == data[-3:]
    assert await read_all(store, KEY, 10, 10**9) == data[10:]
    assert await store.delete(KEY)
    assert not await store.delete(KEY)
    with pytest.raises(BlobNotFound):
        await store.open(KEY)


async def test_put_past_the_limit_leaves_nothing(store: BlobStore) -> None:
    with pytest.raises(BlobTooLarge):
        await store.put(KEY, stream(b"a" * 60, b"b" * 60), limit=100)
    assert not await store.exists(KEY)
    with pytest.raises(ConnectionResetError):
        await store.put(KEY, broken([b"a" * 10]), limit=100)
    assert not await store.exists(KEY)
    if isinstance(store, FileBlobStore):
        assert list((store.root / "tmp").iterdir()) == []


async def test_a_put_replaces_atomically(store: BlobStore) -> None:
    await store.put(KEY, stream(b"old"), limit=10)
    with pytest.raises(BlobTooLarge):
        await store.put(KEY, stream(b"new", b"x" * 20), limit=10)
    assert await read_all(store, KEY) == b"old"


async def test_staged_appends_commit(store: BlobStore) -> None:
    data = os.urandom(5000)
    assert await store.staged_size(KEY) == 0
    assert await store.append(KEY, 0, stream(data[:2000]), limit=5000) == 2000
    assert not await store.exists(KEY)  # staged bytes are not readable
    with pytest.raises(BlobNotFound):
        await store.open(KEY)
    # a retry from an earlier offset drops what was staged past it
    assert await store.append(KEY, 1500, stream(data[1500:3000]), limit=5000) == 3000
    with pytest.raises(BlobOffsetError) as caught:
        await store.append(KEY, 4000, stream(b"x"), limit=5000)
    assert caught.value.staged == 3000
    assert await store.append(KEY, 3000, stream(data[3000:]), limit=5000) == 5000
    assert await store.commit(KEY) == 5000
    assert await store.commit(KEY) == 5000  # idempotent (a crash after the rename)
    assert await read_all(store, KEY) == data
    assert await store.staged_size(KEY) == 0


async def test_append_past_the_limit_keeps_the_earlier_bytes(store: BlobStore) -> None:
    assert await store.append(KEY, 0, stream(b"a" * 40), limit=100) == 40
    with pytest.raises(BlobTooLarge):
        await store.append(KEY, 40, stream(b"b" * 50, b"c" * 50), limit=100)
    assert await store.staged_size(KEY) == 40  # nothing of the refused call


async def test_an_interrupted_append_keeps_what_arrived(store: BlobStore) -> None:
    with pytest.raises(ConnectionResetError):
        await store.append(KEY, 0, broken([b"a" * 300, b"b" * 200]), limit=1000)
    assert await store.staged_size(KEY) == 500
    assert await store.append(KEY, 500, stream(b"c" * 500), limit=1000) == 1000
    await store.commit(KEY)
    assert await read_all(store, KEY) == b"a" * 300 + b"b" * 200 + b"c" * 500


async def test_delete_drops_staged_bytes(store: BlobStore) -> None:
    await store.append(KEY, 0, stream(b"x" * 10), limit=10)
    assert await store.delete(KEY)
    assert await store.staged_size(KEY) == 0
    with pytest.raises(BlobNotFound):
        await store.commit(KEY)


async def test_a_reader_can_be_closed_early(store: BlobStore) -> None:
    await store.put(KEY, stream(os.urandom(4 * READ_CHUNK)), limit=4 * READ_CHUNK)
    reader = await store.open(KEY)
    assert len(await reader.__anext__()) == READ_CHUNK
    await reader.aclose()
    with pytest.raises(StopAsyncIteration):
        await reader.__anext__()
    assert await store.delete(KEY)


@pytest.mark.parametrize("key", ["../../etc/x", "a/b", "short", "x" * 65, "naïve-key-1"])
async def test_keys_cannot_escape(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.exists(key)
    with pytest.raises(ValueError, match="invalid blob key"):
        check_key(key)


def test_default_media_dir() -> None:
    assert default_media_dir("sqlite:////srv/tresen/relay.db") == Path("/srv/tresen/media")
    assert default_media_dir("sqlite:///tresen-data/relay.db") == Path("tresen-data/media")
    assert default_media_dir("postgresql://x@h/db") == Path("tresen-data/media")

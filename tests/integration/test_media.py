"""Media over real HTTP: encrypted round trips, resumable uploads, limits per kind, who may
download, Range, expiry after every recipient fetched or after the TTL, tampering."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tresen.client import Credentials, Device
from tresen.client.media import EncryptedFile, download_attachment, fetch_attachment
from tresen.errors import CryptoError, NotFound
from tresen.protocol.codes import Code

from ..conftest import DeviceHandle, Harness

MiB = 1024 * 1024


def error(response: httpx.Response, status: int, code: Code) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


def blob_path(relay: Harness, media_id: str) -> Path:
    root = Path(relay.services.media.blobs.root)  # type: ignore[attr-defined]
    return root / "blobs" / media_id[:2] / media_id[2:4] / media_id


def staged_path(relay: Harness, media_id: str) -> Path:
    root = Path(relay.services.media.blobs.root)  # type: ignore[attr-defined]
    return root / "staging" / f"{media_id}.part"


async def create(
    device: DeviceHandle, kind: str, size: int, recipients: list[dict[str, int]] | None = None
) -> dict[str, Any]:
    r = await device.http.post(
        "/v1/media", json={"kind": kind, "size": size, "recipients": recipients or []}
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def patch(device: DeviceHandle, media_id: str, offset: int, data: bytes) -> httpx.Response:
    return await device.http.patch(
        f"/v1/media/{media_id}", content=data, headers={"Upload-Offset": str(offset)}
    )


async def upload_raw(
    device: DeviceHandle, kind: str, data: bytes, recipients: list[dict[str, int]] | None = None
) -> str:
    created = await create(device, kind, len(data), recipients)
    r = await patch(device, created["media_id"], 0, data)
    assert r.status_code == 200 and r.json()["complete"], r.text
    return str(created["media_id"])


async def test_encrypted_round_trip_of_a_multi_megabyte_file(
    relay: Harness, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice, bob = await relay.new_device(), await relay.new_device()
    marker = b"TRESEN-MEDIA-MARKER-" + os.urandom(8).hex().encode()
    plaintext = (marker + os.urandom(64 * 1024)) * 80  # about 5 MiB, the marker throughout
    devices = tmp_path / "devices"  # the clients' side; everything else is the relay's
    devices.mkdir()
    source = devices / "holiday.mp4"
    source.write_bytes(plaintext)
    seen: list[tuple[int, int]] = []

    sent = await alice.sdk.upload_attachment(
        source, kind="video", recipients=[bob.account_id], progress=lambda d, t: seen.append((d, t))
    )
    assert sent.size == len(plaintext)
    assert seen[-1] == (len(plaintext), len(plaintext))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    stored = blob_path(relay, sent.media_id).read_bytes()
    assert len(stored) == len(plaintext)
    assert (
        EncryptedFile.from_json(sent.file.to_json()).secrets()[2] == hashlib.sha256(stored).digest()
    )

    # the message carries the record as JSON; bob rebuilds it and downloads
    received = EncryptedFile.from_json(sent.file.to_json())
    target = devices / "received.mp4"
    progress: list[int] = []
    await bob.sdk.download_attachment(received, target, progress=lambda d, _: progress.append(d))
    assert target.read_bytes() == plaintext
    assert progress[-1] == len(plaintext)
    assert not target.with_name("received.mp4.partial").exists()

    # the relay saw ciphertext only: no marker in its blobs, database files or logs
    scanned = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and devices not in path.parents:
            assert marker not in path.read_bytes(), path
            scanned += 1
    assert scanned >= (1 if db_url.startswith("postgresql") else 2)  # blob (+ SQLite file)
    assert marker.decode() not in caplog.text
    if db_url.startswith("postgresql") and shutil.which("pg_dump"):
        dump = await asyncio.create_subprocess_exec(
            "pg_dump", "--data-only", db_url, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await dump.communicate()
        assert dump.returncode == 0 and sent.media_id.encode() in out
        assert marker not in out


async def test_resumable_upload_and_offsets(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    data = os.urandom(3 * MiB + 17)
    up = await create(alice, "document", len(data), [{"account_id": bob.account_id}])
    mid = up["media_id"]
    assert up["offset"] == 0 and not up["complete"]
    assert up["upload_path"] == f"/v1/media/{mid}"

    r = await patch(alice, mid, 0, data[:MiB])
    assert r.status_code == 200 and r.json()["offset"] == MiB
    body = error(await patch(alice, mid, 5, data[5:10]), 409, Code.UPLOAD_OFFSET_MISMATCH)
    assert body["fields"]["offset"] == MiB
    error(
        await alice.http.patch(f"/v1/media/{mid}", content=b"x"), 400, Code.BAD_REQUEST
    )  # no Upload-Offset
    # not downloadable before the last byte, for anyone
    error(await bob.http.get(f"/v1/media/{mid}"), 409, Code.UPLOAD_INCOMPLETE)
    info = (await bob.http.get(f"/v1/media/{mid}/info")).json()
    assert info["offset"] == MiB and info["size"] == len(data)
    # only the uploader's account writes
    error(await patch(bob, mid, MiB, data[MiB:]), 404, Code.MEDIA_NOT_FOUND)

    r = await patch(alice, mid, MiB, data[MiB:])
    assert r.status_code == 200 and r.json()["complete"], r.text
    error(await patch(alice, mid, len(data), b""), 409, Code.UPLOAD_COMPLETE)
    r = await bob.http.get(f"/v1/media/{mid}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-length"] == str(len(data))
    assert not staged_path(relay, mid).exists()


async def raw_request(relay: Harness, head: str) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.server.port)
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


def patch_head(relay: Harness, device: DeviceHandle, media_id: str, offset: int, extra: str) -> str:
    return (
        f"PATCH /v1/media/{media_id} HTTP/1.1\r\nHost: 127.0.0.1:{relay.server.port}\r\n"
        f"Authorization: Bearer {device.token}\r\nUpload-Offset: {offset}\r\n{extra}\r\n"
    )


async def test_a_broken_connection_keeps_what_arrived(
    relay: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await relay.new_device()
    data = os.urandom(2 * MiB)
    mid = (await create(alice, "document", len(data)))["media_id"]
    _, writer = await raw_request(
        relay, patch_head(relay, alice, mid, 0, f"Content-Length: {len(data)}\r\n")
    )
    writer.write(data[:MiB])
    await writer.drain()
    await asyncio.sleep(0.2)  # let the relay take the bytes in before the connection drops
    writer.close()
    offset = 0
    for _ in range(200):
        offset = (await alice.http.get(f"/v1/media/{mid}/info")).json()["offset"]
        if offset:
            break
        await asyncio.sleep(0.05)
    assert 0 < offset <= MiB
    r = await patch(alice, mid, offset, data[offset:])
    assert r.status_code == 200 and r.json()["complete"]
    assert (await alice.http.get(f"/v1/media/{mid}")).content == data
    assert "unhandled error" not in caplog.text  # a broken upload is no relay error


@pytest.mark.parametrize(
    ("kind", "limit"),
    [
        ("image", 16 * MiB),
        ("video", 64 * MiB),
        ("audio", 16 * MiB),
        ("document", 100 * MiB),
        ("sticker", 500 * 1024),
    ],
)
async def test_limits_per_kind(relay: Harness, kind: str, limit: int) -> None:
    alice = await relay.new_device()
    r = await alice.http.post("/v1/media", json={"kind": kind, "size": limit + 1})
    body = error(r, 413, Code.MEDIA_TOO_LARGE)
    assert body["fields"] == {"kind": kind, "limit": limit}
    await create(alice, kind, limit)  # exactly the limit is fine


@pytest.mark.parametrize("relay_settings", [{"media_max_sticker_bytes": 1000}])
async def test_limits_are_configurable(relay: Harness) -> None:
    alice = await relay.new_device()
    error(
        await alice.http.post("/v1/media", json={"kind": "sticker", "size": 1001}),
        413,
        Code.MEDIA_TOO_LARGE,
    )
    await upload_raw(alice, "sticker", os.urandom(1000))
    for bad in ({"kind": "sticker", "size": 0}, {"kind": "gif", "size": 5}, {"size": 5}):
        error(await alice.http.post("/v1/media", json=bad), 400, Code.BAD_REQUEST)


async def test_a_body_past_its_declared_size_is_refused_at_the_crossing(relay: Harness) -> None:
    alice = await relay.new_device()
    size = 3 * MiB
    mid = (await create(alice, "image", size))["media_id"]
    assert (await patch(alice, mid, 0, os.urandom(MiB))).json()["offset"] == MiB

    # a chunked body: the relay cannot know its length in advance
    reader, writer = await raw_request(
        relay, patch_head(relay, alice, mid, MiB, "Transfer-Encoding: chunked\r\n")
    )
    chunk = os.urandom(512 * 1024)
    for _ in range(5):  # 2.5 MiB: crosses the 2 MiB that remain on the fifth chunk
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
    # the answer comes while the body is unfinished (no terminating chunk was sent)
    status = await asyncio.wait_for(reader.readline(), 30)
    assert b" 413 " in status
    head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    assert "content-length" in head
    writer.close()

    # nothing of the refused request remains; the upload goes on from where it was
    info = (await alice.http.get(f"/v1/media/{mid}/info")).json()
    assert info["offset"] == MiB and not info["complete"]
    assert staged_path(relay, mid).stat().st_size == MiB
    assert not blob_path(relay, mid).exists()
    # a Content-Length past the declared size is refused before any byte is read
    error(await patch(alice, mid, MiB, os.urandom(2 * MiB + 1)), 413, Code.MEDIA_TOO_LARGE)
    r = await patch(alice, mid, MiB, os.urandom(2 * MiB))
    assert r.json()["complete"]


async def test_only_the_uploader_and_granted_devices_download(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    alice2 = await relay.link_device(alice)
    bob_phone2 = await relay.link_device(bob)
    data = os.urandom(100_000)
    mid = await upload_raw(alice, "image", data, [{"account_id": bob.account_id}])

    async with relay.client() as anonymous:
        error(await anonymous.get(f"/v1/media/{mid}"), 401, Code.UNAUTHORIZED)
    async with relay.client("not-a-token") as forged:
        error(await forged.get(f"/v1/media/{mid}"), 401, Code.UNAUTHORIZED)
    error(await carol.http.get(f"/v1/media/{mid}"), 404, Code.MEDIA_NOT_FOUND)
    error(await carol.http.get(f"/v1/media/{mid}/info"), 404, Code.MEDIA_NOT_FOUND)
    error(await carol.http.get("/v1/media/short"), 404, Code.MEDIA_NOT_FOUND)
    for device in (alice, alice2, bob, bob_phone2):
        r = await device.http.get(f"/v1/media/{mid}")
        assert r.status_code == 200 and r.content == data
    # granting is the uploader's: carol cannot grant herself, alice can grant her
    body = {"recipients": [{"account_id": carol.account_id}]}
    error(await carol.http.post(f"/v1/media/{mid}/grants", json=body), 404, Code.MEDIA_NOT_FOUND)
    error(await bob.http.get(f"/v1/media/{mid}/grants"), 404, Code.MEDIA_NOT_FOUND)
    r = await alice.http.post(f"/v1/media/{mid}/grants", json=body)
    assert r.status_code == 200, r.text
    granted = {(g["account_id"], g["device_id"]) for g in r.json()["grants"]}
    assert granted == {
        (bob.account_id, bob.device_id),
        (bob.account_id, bob_phone2.device_id),
        (carol.account_id, carol.device_id),
    }
    assert (await carol.http.get(f"/v1/media/{mid}")).content == data
    # a device linked after the grant was not granted
    carol2 = await relay.link_device(carol)
    error(await carol2.http.get(f"/v1/media/{mid}"), 404, Code.MEDIA_NOT_FOUND)
    # unknown recipients are refused; a device of another account too
    for bad in (
        [{"account_id": 999_999}],
        [{"account_id": carol.account_id, "device_id": bob.device_id}],
    ):
        r = await alice.http.post(f"/v1/media/{mid}/grants", json={"recipients": bad})
        error(r, 404, Code.UNKNOWN_RECIPIENT)
    # the uploader deletes it for everyone
    error(await bob.http.delete(f"/v1/media/{mid}"), 404, Code.MEDIA_NOT_FOUND)
    assert (await alice.http.delete(f"/v1/media/{mid}")).status_code == 204
    error(await bob.http.get(f"/v1/media/{mid}"), 404, Code.MEDIA_NOT_FOUND)
    assert not blob_path(relay, mid).exists()


async def test_range_requests(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    data = os.urandom(1000)
    mid = await upload_raw(alice, "audio", data, [{"account_id": bob.account_id}])
    r = await bob.http.get(f"/v1/media/{mid}", headers={"Range": "bytes=10-99"})
    assert r.status_code == 206 and r.content == data[10:100]
    assert r.headers["content-range"] == "bytes 10-99/1000"
    r = await bob.http.get(f"/v1/media/{mid}", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = await bob.http.get(f"/v1/media/{mid}", headers={"Range": "bytes=990-5000"})
    assert r.status_code == 206 and r.content == data[990:]
    r = await bob.http.get(f"/v1/media/{mid}", headers={"Range": "bytes=0-1,5-6"})
    assert r.status_code == 200 and r.content == data  # several ranges: the whole blob
    body = error(
        await bob.http.get(f"/v1/media/{mid}", headers={"Range": "bytes=1000-"}),
        416,
        Code.RANGE_NOT_SATISFIABLE,
    )
    assert body["fields"]["size"] == 1000


async def grants(relay: Harness, owner: DeviceHandle, mid: str) -> dict[int, int | None]:
    r = await owner.http.get(f"/v1/media/{mid}/grants")
    return {g["device_id"]: g["fetched_at"] for g in r.json()["grants"]}


async def fetched_by(
    relay: Harness, owner: DeviceHandle, mid: str, *devices: DeviceHandle
) -> dict[int, int | None]:
    """The grants, checking ``devices`` are recorded as having fetched the blob: the relay
    records it before the last byte goes out, so it is there once a download returned."""
    found = await grants(relay, owner, mid)
    assert all(found[d.device_id] is not None for d in devices), found
    return found


async def settled_grants(relay: Harness, owner: DeviceHandle, mid: str) -> dict[int, int | None]:
    """The grants after any recording in flight had its chance to land."""
    await asyncio.sleep(0.3)
    return await grants(relay, owner, mid)


@pytest.mark.parametrize("relay_settings", [{"media_fetched_grace_seconds": 60}])
async def test_expiry_once_every_granted_device_fetched(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    bob2 = await relay.link_device(bob)
    data = os.urandom(300_000)
    recipients = [{"account_id": bob.account_id}, {"account_id": carol.account_id}]
    mid = await upload_raw(alice, "image", data, recipients)
    media = relay.services.media

    # the uploader's own downloads and partial ranges do not count
    assert (await alice.http.get(f"/v1/media/{mid}")).status_code == 200
    r = await bob.http.get(f"/v1/media/{mid}", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206
    assert set((await grants(relay, alice, mid)).values()) == {None}

    # the rest of the blob (a resumed download) counts
    r = await bob.http.get(f"/v1/media/{mid}", headers={"Range": "bytes=100-"})
    assert r.status_code == 206
    assert (await carol.http.get(f"/v1/media/{mid}")).status_code == 200
    fetched = await fetched_by(relay, alice, mid, bob, carol)
    assert fetched[bob2.device_id] is None
    relay.clock.advance(3600)
    assert await media.do_purge_expired() == 0  # bob's second device has not fetched it

    assert (await bob2.http.get(f"/v1/media/{mid}")).status_code == 200
    last = (await fetched_by(relay, alice, mid, bob2))[bob2.device_id]
    info = (await alice.http.get(f"/v1/media/{mid}/info")).json()
    assert last is not None and info["expires_at"] == last + 60_000
    assert await media.do_purge_expired() == 0  # the grace period
    relay.clock.advance(61)
    assert await media.do_purge_expired() == 1
    assert not blob_path(relay, mid).exists()
    error(await bob2.http.get(f"/v1/media/{mid}"), 404, Code.MEDIA_NOT_FOUND)
    error(await alice.http.get(f"/v1/media/{mid}/info"), 404, Code.MEDIA_NOT_FOUND)


async def test_a_download_broken_off_does_not_count(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    # larger than every socket buffer on the way, so the relay cannot send it all at once
    size = 48 * MiB
    created = await create(alice, "video", size, [{"account_id": bob.account_id}])
    mid = created["media_id"]
    block = os.urandom(MiB)
    r = await alice.http.patch(
        f"/v1/media/{mid}",
        content=stream_of(block, 48),
        headers={"Upload-Offset": "0", "Content-Length": str(size)},
    )
    assert r.json()["complete"], r.text
    async with bob.http.stream("GET", f"/v1/media/{mid}") as response:
        async for _ in response.aiter_raw(64 * 1024):
            break
    assert set((await settled_grants(relay, alice, mid)).values()) == {None}
    async with bob.http.stream("GET", f"/v1/media/{mid}") as response:
        digest = hashlib.sha256()
        async for data in response.aiter_raw(1024 * 1024):
            digest.update(data)
    assert digest.digest() == hashlib.sha256(block * 48).digest()
    await fetched_by(relay, alice, mid, bob)


async def stream_of(block: bytes, times: int) -> Any:
    for _ in range(times):
        yield block


@pytest.mark.parametrize(
    "relay_settings", [{"media_ttl_seconds": 3600, "media_upload_ttl_seconds": 600}]
)
async def test_expiry_after_the_ttl(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    mid = await upload_raw(alice, "document", os.urandom(5000), [{"account_id": bob.account_id}])
    unfinished = (await create(alice, "document", 5000))["media_id"]
    assert (await patch(alice, unfinished, 0, os.urandom(100))).status_code == 200
    assert staged_path(relay, unfinished).exists()
    media = relay.services.media

    relay.clock.advance(599)
    assert await media.do_purge_expired() == 0
    relay.clock.advance(2)
    # expired is gone at once, before the purge took the bytes
    error(await patch(alice, unfinished, 100, b"more"), 404, Code.MEDIA_NOT_FOUND)
    assert await media.do_purge_expired() == 1  # the upload nobody finished
    assert not staged_path(relay, unfinished).exists()
    error(await alice.http.get(f"/v1/media/{unfinished}/info"), 404, Code.MEDIA_NOT_FOUND)

    relay.clock.advance(3600 - 601 - 5)
    assert await media.do_purge_expired() == 0
    relay.clock.advance(6)
    error(await bob.http.get(f"/v1/media/{mid}"), 404, Code.MEDIA_NOT_FOUND)
    assert blob_path(relay, mid).exists()
    assert await media.do_purge_expired() == 1  # never fetched, but its time is up
    assert not blob_path(relay, mid).exists()
    error(await bob.http.get(f"/v1/media/{mid}"), 404, Code.MEDIA_NOT_FOUND)


@pytest.mark.parametrize(
    "relay_settings", [{"media_ttl_seconds": 60, "media_purge_interval_seconds": 0.05}]
)
async def test_the_relay_purges_on_its_own(relay: Harness) -> None:
    alice = await relay.new_device()
    mid = await upload_raw(alice, "sticker", os.urandom(2000))
    path = blob_path(relay, mid)
    assert path.exists()
    relay.clock.advance(61)
    for _ in range(200):
        if not path.exists():
            break
        await asyncio.sleep(0.05)
    assert not path.exists()
    error(await alice.http.get(f"/v1/media/{mid}/info"), 404, Code.MEDIA_NOT_FOUND)


async def test_tampered_ciphertext_is_detected_and_never_released(
    relay: Harness, tmp_path: Path
) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    plaintext = os.urandom(2 * MiB)
    sent = await alice.sdk.upload_attachment(plaintext, kind="image", recipients=[bob.account_id])
    path = blob_path(relay, sent.media_id)
    stored = bytearray(path.read_bytes())
    stored[MiB] ^= 0x01
    path.write_bytes(bytes(stored))

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    target = downloads / "photo.jpg"
    with pytest.raises(CryptoError) as caught:
        await bob.sdk.download_attachment(sent.file, target)
    assert caught.value.code == Code.ATTACHMENT_CORRUPT
    assert caught.value.fields["reason"] == "hash_mismatch"
    assert list(downloads.iterdir()) == []  # neither the file nor its .partial
    with pytest.raises(CryptoError):
        await fetch_attachment(bob.sdk.api, sent.file)
    # a record whose hash was swapped is refused the same way
    forged = EncryptedFile.from_json(sent.file.to_json())
    forged.hashes["sha256"] = EncryptedFile.from_json(sent.file.to_json()).hashes["sha256"][::-1]
    with pytest.raises(CryptoError):
        await download_attachment(bob.sdk.api, forged, target)


async def test_sdk_in_memory_fetch_and_errors(relay: Harness) -> None:
    alice, bob, carol = [await relay.new_device() for _ in range(3)]
    sent = await alice.sdk.upload_attachment(
        b"a small voice note", kind="audio", recipients=[(bob.account_id, bob.device_id)]
    )
    assert await fetch_attachment(bob.sdk.api, sent.file) == b"a small voice note"
    with pytest.raises(NotFound) as caught:
        await fetch_attachment(carol.sdk.api, sent.file)
    assert caught.value.code == Code.MEDIA_NOT_FOUND


@pytest.mark.parametrize(
    "relay_settings",
    [{"media_quota_blobs_per_account": 3, "media_quota_bytes_per_account": 10_000}],
)
async def test_quota_per_account(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    first = await upload_raw(alice, "sticker", os.urandom(6_000))
    r = await alice.http.post("/v1/media", json={"kind": "sticker", "size": 4_001})
    body = error(r, 429, Code.MEDIA_QUOTA_EXCEEDED)
    assert body["fields"]["held_bytes"] == 6_000 and body["fields"]["max_bytes"] == 10_000
    await create(alice, "sticker", 2_000)  # unfinished uploads count too
    await create(alice, "sticker", 1)
    error(
        await alice.http.post("/v1/media", json={"kind": "sticker", "size": 1}),
        429,
        Code.MEDIA_QUOTA_EXCEEDED,
    )
    await create(bob, "sticker", 9_000)  # another account has its own quota
    assert (await alice.http.delete(f"/v1/media/{first}")).status_code == 204
    await create(alice, "sticker", 1)  # deleting freed a place


async def test_one_writer_per_upload(relay: Harness) -> None:
    alice = await relay.new_device()
    first, second = os.urandom(2 * MiB), os.urandom(2 * MiB)
    mid = (await create(alice, "image", len(first)))["media_id"]
    reader, writer = await raw_request(
        relay, patch_head(relay, alice, mid, 0, f"Content-Length: {len(first)}\r\n")
    )
    writer.write(first[:MiB])
    await writer.drain()
    for _ in range(200):  # until the relay is writing the first request's bytes
        if staged_path(relay, mid).exists() and staged_path(relay, mid).stat().st_size:
            break
        await asyncio.sleep(0.02)
    # a second PATCH at the same offset waits for the first instead of writing alongside it
    racing = asyncio.create_task(patch(alice, mid, 0, second))
    await asyncio.sleep(0.3)
    assert not racing.done()
    writer.write(first[MiB:])
    await writer.drain()
    assert b" 200 " in await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    error(await racing, 409, Code.UPLOAD_COMPLETE)
    assert (await alice.http.get(f"/v1/media/{mid}")).content == first


async def test_info_announces_the_limits(relay: Harness) -> None:
    async with relay.client() as http:
        limits = (await http.get("/v1/info")).json()["media_max_bytes"]
    assert limits == {
        "image": 16 * MiB,
        "video": 64 * MiB,
        "audio": 16 * MiB,
        "document": 100 * MiB,
        "sticker": 500 * 1024,
    }


async def test_the_blocking_sdk_sends_and_receives_attachments(
    relay: Harness, tmp_path: Path
) -> None:
    a, b = await relay.new_device(), await relay.new_device()
    photo = os.urandom(200_000)

    def blocking() -> bytes:
        with (
            Device(Credentials(relay.url, a.account_id, a.device_id, a.token)) as alice,
            Device(Credentials(relay.url, b.account_id, b.device_id, b.token)) as bob,
        ):
            sent = alice.upload_attachment(photo, kind="image", recipients=[b.account_id])
            wire = sent.file.to_json()  # what the encrypted message would carry
            target = bob.download_attachment(EncryptedFile.from_json(wire), tmp_path / "p.jpg")
            return target.read_bytes()

    assert await asyncio.to_thread(blocking) == photo


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_curl_uploads_and_resumes_a_download(relay: Harness, tmp_path: Path) -> None:
    """A third-party client: curl PATCHes a file (it sends 'Expect: 100-continue' for large
    bodies) and resumes a download with '-C -'."""
    alice, bob = await relay.new_device(), await relay.new_device()
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(3 * MiB))
    mid = (await create(alice, "document", 3 * MiB, [{"account_id": bob.account_id}]))["media_id"]
    url = f"{relay.url}/v1/media/{mid}"

    async def curl(*args: str) -> tuple[int, bytes]:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        return proc.returncode, out

    _, out = await curl(
        "-X", "PATCH", "--data-binary", f"@{blob}", "-H", "Upload-Offset: 0",
        "-H", f"Authorization: Bearer {alice.token}", url,
    )  # fmt: skip
    assert json.loads(out)["complete"] is True
    partial = tmp_path / "download.bin"
    partial.write_bytes(blob.read_bytes()[:MiB])  # as if an earlier download broke off
    await curl("-C", "-", "-o", str(partial), "-H", f"Authorization: Bearer {bob.token}", url)
    assert partial.read_bytes() == blob.read_bytes()


@pytest.mark.parametrize("relay_settings", [{"media_fetched_grace_seconds": 60}])
async def test_a_signed_out_device_is_not_waited_for(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    bob_tablet = await relay.link_device(bob)
    mid = await upload_raw(alice, "image", os.urandom(10_000), [{"account_id": bob.account_id}])
    assert (await bob.http.delete(f"/v1/devices/{bob_tablet.device_id}")).status_code == 204
    assert (await bob.http.get(f"/v1/media/{mid}")).status_code == 200
    fetched = await fetched_by(relay, alice, mid, bob)
    assert fetched[bob_tablet.device_id] is None  # its grant stays, unfetched
    info = (await alice.http.get(f"/v1/media/{mid}/info")).json()
    assert info["expires_at"] == fetched[bob.device_id] + 60_000  # not the 30-day TTL


@pytest.mark.parametrize(
    "relay_settings", [{"media_fetched_grace_seconds": 60, "media_ttl_seconds": 3600}]
)
async def test_a_kept_blob_outlives_its_fetches(relay: Harness) -> None:
    """A business sends one uploaded medium to many people over days (Cloud API media ids
    live 30 days): ``keep`` holds it to the TTL, granting each new recipient as it goes."""
    shop, ann, ben = [await relay.new_device() for _ in range(3)]
    data = os.urandom(50_000)
    created = await shop.http.post(
        "/v1/media",
        json={"kind": "image", "size": len(data), "keep": True,
              "recipients": [{"account_id": ann.account_id}]},
    )  # fmt: skip
    assert created.status_code == 201 and created.json()["keep"] is True
    mid = created.json()["media_id"]
    assert (await patch(shop, mid, 0, data)).json()["complete"]
    assert (await ann.http.get(f"/v1/media/{mid}")).content == data
    await fetched_by(relay, shop, mid, ann)
    relay.clock.advance(600)  # far past the grace period
    assert await relay.services.media.do_purge_expired() == 0
    r = await shop.http.post(
        f"/v1/media/{mid}/grants", json={"recipients": [{"account_id": ben.account_id}]}
    )
    assert r.status_code == 200, r.text
    assert (await ben.http.get(f"/v1/media/{mid}")).content == data
    relay.clock.advance(3600)
    assert await relay.services.media.do_purge_expired() == 1

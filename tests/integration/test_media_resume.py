"""The SDK over a network that breaks: a TCP proxy in front of the relay cuts a connection
after so many bytes; uploads resume at the relay's offset and downloads with ``Range``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from pathlib import Path

import httpx
import pytest

from tresen.client import AsyncDevice, Credentials
from tresen.client.media import download_attachment, upload_attachment
from tresen.errors import TresenError
from tresen.storage.engine import Txn

from ..conftest import DeviceHandle, Harness
from .test_crash import free_port, start_relay

MiB = 1024 * 1024


class CuttingProxy:
    """Forwards TCP to the relay; the n-th connection accepted is aborted once ``cuts[n]`` =
    (direction, bytes) bytes went that way ("up": client to relay, "down": relay to client)."""

    def __init__(self, port: int, cuts: dict[int, tuple[str, int]]) -> None:
        self.target = port
        self.cuts = cuts
        self.connections = 0
        self.carried = {"up": 0, "down": 0}
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        direction, limit = self.cuts.get(index, ("", -1))
        relay_r, relay_w = await asyncio.open_connection("127.0.0.1", self.target)

        def abort() -> None:
            client_w.transport.abort()
            relay_w.transport.abort()

        async def pipe(way: str, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            passed = 0
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if way == direction and passed + len(data) >= limit:
                        dst.write(data[: limit - passed])
                        self.carried[way] += limit - passed
                        await dst.drain()
                        abort()
                        return
                    dst.write(data)
                    await dst.drain()
                    passed += len(data)
                    self.carried[way] += len(data)
                if dst.can_write_eof():
                    dst.write_eof()

        await asyncio.gather(pipe("up", client_r, relay_w), pipe("down", relay_r, client_w))
        client_w.close()
        relay_w.close()


def device_via(url: str, handle: DeviceHandle) -> AsyncDevice:
    return AsyncDevice(Credentials(url, handle.account_id, handle.device_id, handle.token))


async def test_upload_resumes_at_the_relays_offset(relay: Harness, tmp_path: Path) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    size = 6 * MiB
    source = tmp_path / "video.mp4"
    source.write_bytes(os.urandom(size))
    # the first connection carries the create request, then dies 3 MiB into the PATCH body
    proxy = CuttingProxy(relay.server.port, {0: ("up", 3 * MiB)})
    sender = device_via(await proxy.start(), alice)
    seen: list[int] = []
    try:
        sent = await upload_attachment(
            sender.api, source, kind="video", recipients=[bob.account_id],
            progress=lambda done, _: seen.append(done),
        )  # fmt: skip
    finally:
        await sender.close()
        await proxy.close()

    assert proxy.connections >= 2
    # progress went back once, to where the relay had got to, not to the start
    drops = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
    assert len(drops) == 1
    resumed_from = drops[0][1]  # the first chunk after the relay's offset
    assert 256 * 1024 < resumed_from <= 3 * MiB + 256 * 1024
    assert proxy.carried["up"] < size + 3 * MiB + 64 * 1024  # not sent twice over
    target = tmp_path / "received.mp4"
    await bob.sdk.download_attachment(sent.file, target)
    assert target.read_bytes() == source.read_bytes()


async def test_download_resumes_with_range(relay: Harness, tmp_path: Path) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    size = 5 * MiB
    plaintext = os.urandom(size)
    sent = await alice.sdk.upload_attachment(
        plaintext, kind="document", recipients=[bob.account_id]
    )
    # bob's first connection dies 2 MiB into the download
    proxy = CuttingProxy(relay.server.port, {0: ("down", 2 * MiB)})
    receiver = device_via(await proxy.start(), bob)
    seen: list[int] = []
    target = tmp_path / "report.pdf"
    try:
        await download_attachment(
            receiver.api, sent.file, target, progress=lambda done, _: seen.append(done)
        )
    finally:
        await receiver.close()
        await proxy.close()
    assert target.read_bytes() == plaintext
    assert proxy.connections == 2
    assert seen == sorted(seen) and seen[-1] == size  # continued, never restarted
    assert proxy.carried["down"] < size + 2 * MiB  # the second request fetched only the rest
    # the resumed download reached the end: bob counts as having fetched it
    grants = (await alice.http.get(f"/v1/media/{sent.media_id}/grants")).json()["grants"]
    assert [g["device_id"] for g in grants] == [bob.device_id]
    assert grants[0]["fetched_at"] is not None


async def test_an_upload_survives_a_relay_crash(
    relay: Harness, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 in the middle of a PATCH, restart: the upload goes on from the last offset the
    relay committed (bytes staged past it are dropped), and the blob comes out whole."""
    alice = await relay.new_device()
    await relay.server.stop()
    monkeypatch.setenv("TRESEN_MEDIA_DIR", str(tmp_path / "blobs"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = os.urandom(4 * MiB)
    headers = {"Authorization": f"Bearer {alice.token}"}
    proc = await start_relay(db_url, port)
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            r = await http.post("/v1/media", json={"kind": "video", "size": len(data)})
            mid = r.json()["media_id"]
            r = await http.patch(
                f"/v1/media/{mid}", content=data[:MiB], headers={"Upload-Offset": "0"}
            )
            assert r.json()["offset"] == MiB
        # the second PATCH is cut short by SIGKILL while its bytes are arriving
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"PATCH /v1/media/{mid} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.token}"
            f"\r\nUpload-Offset: {MiB}\r\nContent-Length: {3 * MiB}\r\n\r\n".encode()
            + data[MiB : 2 * MiB]
        )
        await writer.drain()
        staged = tmp_path / "blobs" / "staging" / f"{mid}.part"
        for _ in range(200):
            if staged.stat().st_size > MiB:
                break
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        writer.close()

        proc = await start_relay(db_url, port)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            offset = (await http.get(f"/v1/media/{mid}/info")).json()["offset"]
            assert offset == MiB  # what was committed before the crash
            r = await http.patch(
                f"/v1/media/{mid}", content=data[offset:], headers={"Upload-Offset": str(offset)}
            )
            assert r.json()["complete"], r.text
            assert (await http.get(f"/v1/media/{mid}")).content == data
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)


async def test_a_failed_upload_frees_its_bytes(relay: Harness, tmp_path: Path) -> None:
    alice = await relay.new_device()
    source = tmp_path / "growing.log"
    source.write_bytes(os.urandom(3 * MiB))

    def shrink(done: int, _: int) -> None:
        if done >= MiB:  # the file is cut while it is being uploaded
            with source.open("r+b") as handle:
                handle.truncate(MiB + 1)

    with pytest.raises(TresenError, match="shrank"):
        await alice.sdk.upload_attachment(source, kind="document", progress=shrink)

    async def count(txn: Txn) -> int:
        row = await txn.fetchone(
            "SELECT count(*) FROM media WHERE owner_account = ?", alice.account_id
        )
        return int(row[0]) if row else -1

    assert await relay.services.db.run_interaction("count_media", count) == 0
    staging = Path(relay.services.media.blobs.root) / "staging"  # type: ignore[attr-defined]
    assert list(staging.iterdir()) == []

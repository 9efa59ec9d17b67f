"""A 64 MiB attachment through a relay running as its own process: the relay's peak memory
(VmHWM) grows by far less than the blob, so neither the upload nor the download is buffered."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path

import pytest

from tresen.client import AsyncDevice, Credentials

from ..conftest import Harness
from .test_crash import free_port, start_relay

MiB = 1024 * 1024
SIZE = 64 * MiB

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status"
)


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak so far) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


async def test_64_mib_streams_through_without_buffering(
    relay: Harness, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    await relay.server.stop()  # the in-process relay only registered the devices

    monkeypatch.setenv("TRESEN_MEDIA_DIR", str(tmp_path / "blobs"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await start_relay(db_url, port)
    sender = AsyncDevice(Credentials(url, alice.account_id, alice.device_id, alice.token))
    receiver = AsyncDevice(Credentials(url, bob.account_id, bob.device_id, bob.token))
    try:
        # warm every code path once with a small attachment
        small = await sender.upload_attachment(
            os.urandom(MiB), kind="video", recipients=[bob.account_id]
        )
        await receiver.download_attachment(small.file, tmp_path / "small.out")
        baseline = max(memory_kib(proc.pid, "VmRSS"), memory_kib(proc.pid, "VmHWM"))

        source = tmp_path / "film.mp4"
        with source.open("wb") as out:
            for _ in range(SIZE // MiB):
                out.write(os.urandom(MiB))
        sent = await sender.upload_attachment(source, kind="video", recipients=[bob.account_id])
        after_upload = memory_kib(proc.pid, "VmHWM")
        target = tmp_path / "film.out"
        await receiver.download_attachment(sent.file, target)
        after_download = memory_kib(proc.pid, "VmHWM")

        assert (
            hashlib.sha256(target.read_bytes()).digest()
            == hashlib.sha256(source.read_bytes()).digest()
        )
        # the relay's peak grew by less than a quarter of the blob on either leg
        assert (after_upload - baseline) * 1024 < SIZE // 4, (baseline, after_upload)
        assert (after_download - baseline) * 1024 < SIZE // 4, (baseline, after_download)
    finally:
        await sender.close()
        await receiver.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(15)

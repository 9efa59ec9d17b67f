"""Media benchmark: attachment encryption in the SDK, and a 64 MB attachment through the relay.

Phases:

1. ``sdk``: AES-256-CTR + SHA-256 in the SDK, 1 MiB chunks, for ``--seconds`` each way:
   encrypt (``AttachmentEncryptor.update``) and verify-and-decrypt (the download path).
2. per backend (SQLite, and PostgreSQL with ``--backends sqlite,postgres``): two devices are
   registered in-process, then ``python -m tresen serve`` runs as a child process with its blob
   store in the work folder. After a 1 MiB warm-up round trip, for ``--seconds`` (at least once):
   - ``upload``/``download``: the SDK's ``upload_attachment`` (encrypting while uploading, in
     8 MiB PATCH requests) and ``download_attachment`` (streaming, verifying, decrypting into a
     file) of a ``--size-mb`` attachment;
   - ``raw_upload``/``raw_download``: the same bytes as one streaming PATCH and one streaming GET
     without any crypto, to show what the relay alone sustains.
   The relay's resident memory is read before the phase and its peak (``VmHWM``) after it.

MB is 10^6 bytes. Progress goes to stderr; the last line of stdout is one JSON object.
Run: ``.venv/bin/python bench/media.py --seconds 5`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from tresen.client import AsyncDevice, Credentials
from tresen.client.media import AttachmentEncryptor, _Decryptor, encrypt_attachment
from tresen.config import load
from tresen.relay.accounts.senders import MemorySender
from tresen.relay.app import build_services, close_services

MB = 1_000_000
MiB = 1024 * 1024


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- SDK crypto


def bench_sdk(seconds: float) -> dict[str, float]:
    chunk = os.urandom(MiB)
    encryptor = AttachmentEncryptor()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        encryptor.update(chunk)
        done += len(chunk)
    encrypt = done / (time.perf_counter() - start) / MB

    _, info = encrypt_attachment(b"x")
    decryptor = _Decryptor(info)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        decryptor.update(chunk)
        done += len(chunk)
    decrypt = done / (time.perf_counter() - start) / MB
    return {"encrypt_mb_s": round(encrypt, 1), "decrypt_verify_mb_s": round(decrypt, 1)}


# ---------------------------------------------------------------- the relay


async def register(db: str, media_dir: Path) -> list[tuple[int, int, str]]:
    settings = load(
        environ={},
        overrides={"db": db, "media_dir": str(media_dir), "sqlite_synchronous": "normal"},
    )
    codes = MemorySender()
    services = await build_services(settings, code_sender=codes)
    try:
        out = []
        for i in range(2):
            sent = await services.accounts.do_send_code(f"+4915190{i:06d}", f"bench-{i}")
            creds = await services.accounts.do_register(
                sent.phone, codes.codes[sent.phone], f"bench {i}", False
            )
            out.append((creds.account_id, creds.device_id, creds.token))
        return out
    finally:
        await close_services(services)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return int(psutil.Process(pid).memory_info().rss) // 1024


async def start_relay(db: str, media_dir: Path, log: Path) -> tuple[Any, str]:
    port = free_port()
    env = {**os.environ, "TRESEN_MEDIA_DIR": str(media_dir)}
    env.pop("TRESEN_CONFIG", None)
    command = [sys.executable, "-m", "tresen", "serve", "--port", str(port), "--db", db]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *command, "--log-level", "warning", env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            if proc.returncode is not None:
                raise RuntimeError(f"the relay exited at startup; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/healthz")).status_code == 200:
                    return proc, url
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the relay did not start; see {log}")


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while data := handle.read(256 * 1024):
            yield data


async def bench_relay(db: str, work: Path, seconds: float, size: int) -> dict[str, float]:
    media_dir = work / "media"
    (alice, bob) = await register(db, media_dir)
    proc, url = await start_relay(db, media_dir, work / "relay.log")
    sender = AsyncDevice(Credentials(url, alice[0], alice[1], alice[2]))
    receiver = AsyncDevice(Credentials(url, bob[0], bob[1], bob[2]))
    source, target = work / "attachment.bin", work / "received.bin"
    with source.open("wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
        out.write(os.urandom(size % MiB))
    try:
        warm = await sender.upload_attachment(os.urandom(MiB), kind="video", recipients=[bob[0]])
        await receiver.download_attachment(warm.file, target)
        rss_before = psutil.Process(proc.pid).memory_info().rss
        peak_before = peak_kib(proc.pid)

        times: dict[str, list[float]] = {k: [] for k in ("up", "down", "raw_up", "raw_down")}
        began = time.perf_counter()
        while not times["up"] or time.perf_counter() - began < seconds:
            t = time.perf_counter()
            sent = await sender.upload_attachment(source, kind="video", recipients=[bob[0]])
            times["up"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await receiver.download_attachment(sent.file, target)
            times["down"].append(time.perf_counter() - t)
            assert target.stat().st_size == size

            created = await sender.api.create_upload("video", size, [{"account_id": bob[0]}])
            t = time.perf_counter()
            state = await sender.api.upload_part(created["media_id"], 0, file_chunks(source), size)
            times["raw_up"].append(time.perf_counter() - t)
            assert state["complete"]
            t = time.perf_counter()
            got = 0
            async with receiver.api.download_stream(created["media_id"]) as response:
                async for data in response.aiter_raw(1024 * 1024):
                    got += len(data)
            times["raw_down"].append(time.perf_counter() - t)
            assert got == size
            say(
                f"  round {len(times['up'])}: up {size / times['up'][-1] / MB:.0f} MB/s, "
                f"down {size / times['down'][-1] / MB:.0f} MB/s"
            )
        peak_after = peak_kib(proc.pid)
        rss_after = psutil.Process(proc.pid).memory_info().rss
    finally:
        await sender.close()
        await receiver.close()
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()

    def rate(key: str) -> float:
        return round(size * len(times[key]) / sum(times[key]) / MB, 1)

    return {
        "attachment_mb": round(size / MB, 1),
        "rounds": len(times["up"]),
        "upload_mb_s": rate("up"),
        "download_mb_s": rate("down"),
        "raw_upload_mb_s": rate("raw_up"),
        "raw_download_mb_s": rate("raw_down"),
        "relay_rss_mb": round(rss_before / MB, 1),
        "relay_rss_growth_mb": round((rss_after - rss_before) / MB, 1),
        "relay_peak_growth_mb": round(max(0, peak_after - peak_before) * 1024 / MB, 1),
    }


async def postgres_db(admin_dsn: str) -> tuple[str, str]:
    name = f"tresen_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + "/" + name, name


async def drop_postgres(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    say(f"sdk: encrypt and decrypt for {args.seconds:g} s each")
    result: dict[str, Any] = {"sdk": bench_sdk(args.seconds)}
    say(f"  {result['sdk']}")
    size = int(args.size_mb * MB)
    for backend in args.backends.split(","):
        folder = work / backend
        folder.mkdir()
        say(f"{backend}: a {size / MB:.0f} MB attachment through the relay for {args.seconds:g} s")
        if backend == "sqlite":
            result[backend] = await bench_relay(
                f"sqlite:///{folder}/relay.db", folder, args.seconds, size
            )
        elif backend == "postgres":
            db, name = await postgres_db(args.pg_admin)
            try:
                result[backend] = await bench_relay(db, folder, args.seconds, size)
            finally:
                await drop_postgres(args.pg_admin, name)
        else:
            raise SystemExit(f"unknown backend {backend!r}: use sqlite and/or postgres")
        say(f"  {result[backend]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="time of each phase")
    parser.add_argument("--size-mb", type=float, default=64.0, help="attachment size, MB")
    parser.add_argument("--backends", default="sqlite", help="sqlite, postgres or both")
    parser.add_argument(
        "--pg-admin",
        default=os.environ.get("TRESEN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1/postgres"),
        help="PostgreSQL DSN allowed to create and drop a database",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tresen-bench-media-") as work:
        result = asyncio.run(main_async(args, Path(work)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

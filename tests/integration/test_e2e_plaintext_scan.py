"""The relay never sees plaintext: messages (1:1 and group) and an attachment carrying unique
markers go through a real relay, then its database (the SQLite file and its WAL, or every
table of the PostgreSQL database), its blob files and everything it logged are searched for
the markers. Tampered envelopes are shown as undecryptable, never as text."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tresen.client.secure import Message, SecureDevice, Undecryptable

from ..conftest import POSTGRES, DeviceHandle, Harness


@pytest.fixture
def relay_settings(tmp_path: Path) -> dict[str, Any]:
    return {"code_attempts_per_address_per_hour": 1000, "media_dir": str(tmp_path / "blobs")}


async def secure(handle: DeviceHandle, tmp: Path) -> SecureDevice:
    device = SecureDevice.open(handle.sdk, tmp / f"{handle.device_id}.store", key=b"s" * 32)
    await device.start()
    return device


async def next_message(device: SecureDevice) -> Message:
    while True:
        event = await device.recv(10)
        if isinstance(event, Message):
            return event


async def database_bytes(relay: Harness, db_url: str) -> bytes:
    if not POSTGRES:
        path = Path(db_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    conn = await asyncpg.connect(db_url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        dump = []
        for row in tables:
            for record in await conn.fetch(f'SELECT * FROM "{row["table_name"]}"'):  # noqa: S608
                for value in record.values():
                    dump.append(value if isinstance(value, bytes) else str(value).encode())
        return b"\n".join(dump)
    finally:
        await conn.close()


async def test_no_marker_reaches_the_relay(
    relay: Harness,
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    a_h, b_h = await relay.new_device(), await relay.new_device()
    b2_h = await relay.link_device(b_h)
    alice, bob, bob2 = [await secure(h, tmp_path) for h in (a_h, b_h, b2_h)]
    markers = [f"MARKER-{secrets.token_hex(8)}" for _ in range(4)]

    # 1:1, while bob's second device is offline (its copy stays queued in the relay)
    await bob2.device._live().close()
    await alice.send(bob.account_id, f"secret {markers[0]}")
    assert (await next_message(bob)).content["body"] == f"secret {markers[0]}"

    gid = (
        await a_h.http.post("/v1/groups", json={"name": "g", "members": [bob.account_id]})
    ).json()["group_id"]
    await alice.send_group(gid, f"group {markers[1]}")
    assert (await next_message(bob)).content["body"] == f"group {markers[1]}"

    picture = (f"picture {markers[2]} " * 2000).encode()
    await alice.send_attachment(bob.account_id, picture, kind="image", body=markers[3])
    message = await next_message(bob)
    assert message.content["body"] == markers[3]
    assert await bob.fetch_attachment(message) == picture

    stored = await database_bytes(relay, db_url)
    assert stored, "the scan found no database content at all"
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "blobs").rglob("*") if p.is_file())
    assert len(blobs) >= len(picture), "the blob store holds no (encrypted) attachment"
    out, err = capfd.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records) + out + err
    for marker in markers:
        for where, data in (("database", stored), ("blobs", blobs), ("logs", logs.encode())):
            assert marker.encode() not in data, f"{marker} found in the relay's {where}"
    # the same scan does find what the relay is allowed to know (it is not scanning nothing)
    assert str(a_h.phone).encode() in stored
    for d in (alice, bob, bob2):
        await d.close()


async def test_tampered_envelope_is_undecryptable(relay: Harness, tmp_path: Path) -> None:
    """A flipped byte anywhere in a real envelope's ciphertext: bob sees why, not text."""
    a_h, b_h = await relay.new_device(), await relay.new_device()
    alice, bob = await secure(a_h, tmp_path), await secure(b_h, tmp_path)
    await alice.send(bob.account_id, "establish")
    await next_message(bob)
    await bob.send(alice.account_id, "ok")
    await next_message(alice)

    captured: dict[int, bytes] = {}
    real_send = alice.device._live().send

    async def capture(to: int, payloads: dict[int, bytes], **options: Any) -> str:
        captured.update(payloads)
        tampered = {}
        for device, payload in payloads.items():
            raw = bytearray(payload)
            body_at = raw.index(b'"body":"') + 8 + 20
            raw[body_at] = ord("A") if raw[body_at] != ord("A") else ord("B")
            tampered[device] = bytes(raw)
        return await real_send(to, tampered, **options)

    alice.device._live().send = capture  # type: ignore[method-assign]
    await alice.send(bob.account_id, "never shown")
    event = await bob.recv(10)
    while not isinstance(event, (Undecryptable, Message)):
        event = await bob.recv(10)
    assert isinstance(event, Undecryptable)
    assert event.reason == "olm_decrypt_failed"
    assert "never shown" not in event.message
    for d in (alice, bob):
        await d.close()

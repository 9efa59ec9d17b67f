"""Conformance with the browser's crypto engine: a tresen SDK device (``CryptoMachine``) and
an ``OlmMachine`` from ``@matrix-org/matrix-sdk-crypto-wasm`` (run in Node) exchange 1:1 Olm
messages, Megolm group messages and Matrix v2 attachments, in both directions.

The test plays the key directory and to-device delivery between the two, in the Matrix shapes
the relay serves. Node is required when ``CI=true``; elsewhere the test is skipped without it.
The npm dependencies (pinned in ``js/package-lock.json``) are installed on first use.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tresen.client.crypto.events import ROOM_KEY
from tresen.client.crypto.machine import CryptoMachine
from tresen.errors import CryptoError

JS = Path(__file__).parent / "js"
PY_USER, PY_DEVICE = "@py:tresen.test", "PYDEVICE"
JS_USER, JS_DEVICE = "@web:tresen.test", "WEBDEVICE"
ROOM = "!conformance:tresen.test"
NODE = shutil.which("node")
NPM = shutil.which("npm")

if NODE is None or NPM is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("Node and npm are required for the conformance tests in CI")
    pytest.skip("Node/npm not installed (required when CI=true)", allow_module_level=True)


def _install() -> None:
    if (JS / "node_modules" / "@matrix-org" / "matrix-sdk-crypto-wasm").is_dir():
        return
    assert NPM is not None
    subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=JS,
        check=True,
        timeout=600,
    )


class Directory:
    """The key directory and to-device inboxes, in Matrix's request/response shapes."""

    def __init__(self) -> None:
        self.device_keys: dict[str, dict[str, Any]] = {}
        self.one_time_keys: dict[str, dict[str, dict[str, Any]]] = {}
        self.inbox: list[dict[str, Any]] = []  # to-device events for the Python device

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        kind, body = request["type"], request["body"]
        if kind == 0:  # keys upload
            if "device_keys" in body:
                keys = body["device_keys"]
                self.device_keys.setdefault(keys["user_id"], {})[keys["device_id"]] = keys
            held = self.one_time_keys.setdefault(JS_USER, {}).setdefault(JS_DEVICE, {})
            held.update(body.get("one_time_keys", {}))
            return {"one_time_key_counts": {"signed_curve25519": len(held)}}
        if kind == 1:  # keys query
            return {
                "device_keys": {u: self.device_keys.get(u, {}) for u in body["device_keys"]},
                "failures": {},
            }
        if kind == 2:  # keys claim
            claimed: dict[str, Any] = {}
            for user, devices in body["one_time_keys"].items():
                for device in devices:
                    held = self.one_time_keys.get(user, {}).get(device, {})
                    if held:
                        key_id = next(iter(held))
                        claimed.setdefault(user, {})[device] = {key_id: held.pop(key_id)}
            return {"one_time_keys": claimed, "failures": {}}
        if kind == 3:  # to-device
            for user, devices in body["messages"].items():
                for device, content in devices.items():
                    assert (user, device) == (PY_USER, PY_DEVICE)
                    self.inbox.append(
                        {"type": request["event_type"], "sender": JS_USER, "content": content}
                    )
            return {}
        raise AssertionError(f"unexpected request type {kind}")


class Peer:
    def __init__(self, directory: Directory) -> None:
        assert NODE is not None
        self.directory = directory
        self.proc = subprocess.Popen(
            [NODE, str(JS / "peer.mjs")],
            cwd=JS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, cmd: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            assert line, f"the Node peer exited during {cmd}"
            message = json.loads(line)
            if "request" in message:
                response = self.directory.answer(message["request"])
                self.proc.stdin.write(json.dumps({"response": response}) + "\n")
                self.proc.stdin.flush()
                continue
            if "error" in message:
                raise AssertionError(message["error"])
            return message["result"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write('{"cmd": "exit"}\n')
        self.proc.stdin.close()
        self.proc.wait(30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[CryptoMachine, Peer, Directory]]:
    _install()
    directory = Directory()
    py = CryptoMachine(PY_USER, PY_DEVICE)
    body = py.upload_body(10, fallback=True)
    py.uploaded()
    directory.device_keys.setdefault(PY_USER, {})[PY_DEVICE] = body["device_keys"]
    directory.one_time_keys.setdefault(PY_USER, {})[PY_DEVICE] = dict(body["one_time_keys"])
    peer = Peer(directory)
    peer("init", user=JS_USER, device=JS_DEVICE)
    # the Python device checks the browser's self-signed device keys like any other device
    assert py.devices.update(JS_USER, directory.device_keys[JS_USER]) == []
    try:
        yield py, peer, directory
    finally:
        peer.close()


def web_identity(py: CryptoMachine) -> Any:
    tracked = py.devices.get(JS_USER, JS_DEVICE)
    assert tracked is not None
    return tracked.identity


def test_engine_versions(world: tuple[CryptoMachine, Peer, Directory]) -> None:
    _, peer, _ = world
    versions = peer("versions")
    assert versions["vodozemac"] and versions["matrix_sdk_crypto"]


def test_python_to_browser_olm(world: tuple[CryptoMachine, Peer, Directory]) -> None:
    py, peer, directory = world
    web = web_identity(py)
    # the browser engine accepts Olm only from devices whose keys it downloaded
    peer("track", user=PY_USER)
    key_id, key = directory.answer(
        {"type": 2, "body": {"one_time_keys": {JS_USER: {JS_DEVICE: "signed_curve25519"}}}}
    )["one_time_keys"][JS_USER][JS_DEVICE].popitem()
    py.start_session(web, key_id, key)
    event = py.encrypt_olm(web, "org.tresen.test", {"body": "hello from python"})
    assert event.content["ciphertext"][web.curve25519]["type"] == 0  # a pre-key message
    result = peer(
        "receive_to_device",
        events=[{"type": "m.room.encrypted", "sender": PY_USER, "content": event.content}],
    )
    (received,) = result["events"]
    assert received["kind"] == "decrypted", received
    assert received["event"]["content"] == {"body": "hello from python"}
    assert received["event"]["sender"] == PY_USER


def test_browser_to_python_olm(world: tuple[CryptoMachine, Peer, Directory]) -> None:
    py, peer, _ = world
    peer("track", user=PY_USER)
    content = peer(
        "encrypt_to_device",
        user=PY_USER,
        device=PY_DEVICE,
        type="org.tresen.test",
        content={"body": "hello from the browser"},
    )["content"]
    decrypted = py.decrypt_olm(web_identity(py), content)
    assert (decrypted.type, decrypted.content) == (
        "org.tresen.test",
        {"body": "hello from the browser"},
    )
    # and a flipped byte in the browser's ciphertext is rejected by the Python checks
    again = peer(
        "encrypt_to_device",
        user=PY_USER,
        device=PY_DEVICE,
        type="org.tresen.test",
        content={"body": "second"},
    )["content"]
    cipher = again["ciphertext"][py.own.curve25519]
    raw = bytearray(base64.b64decode(cipher["body"] + "=" * (-len(cipher["body"]) % 4)))
    raw[-5] ^= 1
    tampered = {**cipher, "body": base64.b64encode(raw).decode().rstrip("=")}
    with pytest.raises(CryptoError):
        py.decrypt_olm(web_identity(py), {**again, "ciphertext": {py.own.curve25519: tampered}})
    assert py.decrypt_olm(web_identity(py), again).content == {"body": "second"}


def test_browser_to_python_group(world: tuple[CryptoMachine, Peer, Directory]) -> None:
    py, peer, directory = world
    peer("track", user=PY_USER)
    directory.inbox.clear()
    peer("share_room_key", room=ROOM, users=[PY_USER])
    shares = [e for e in directory.inbox if e["type"] == "m.room.encrypted"]
    assert shares, directory.inbox
    web = web_identity(py)
    assert [py.decrypt_olm(web, e["content"]).type for e in shares] == [ROOM_KEY]
    content = peer(
        "encrypt_room_event",
        room=ROOM,
        type="m.room.message",
        content={"msgtype": "m.text", "body": "group hello from the browser"},
    )["content"]
    _, kind, body = py.decrypt_megolm(ROOM, content, web, "$event1")
    assert (kind, body["body"]) == ("m.room.message", "group hello from the browser")
    with pytest.raises(CryptoError) as replay:
        py.decrypt_megolm(ROOM, content, web, "$event2")
    assert replay.value.fields["reason"] == "replayed"


def test_python_to_browser_group(world: tuple[CryptoMachine, Peer, Directory]) -> None:
    py, peer, _ = world
    web = web_identity(py)
    if not py.olm.has_session(web.curve25519):
        test_python_to_browser_olm(world)
    group = py.outbound_group(ROOM, 0.0, "members")
    share = py.room_key_event(web, group)
    result = peer(
        "receive_to_device",
        events=[{"type": "m.room.encrypted", "sender": PY_USER, "content": share.content}],
    )
    assert [(e["kind"], e["event"]["type"]) for e in result["events"]] == [("decrypted", ROOM_KEY)]
    event = py.encrypt_megolm(group, "m.room.message", {"msgtype": "m.text", "body": "from py"})
    decrypted = peer(
        "decrypt_room_event", room=ROOM, sender=PY_USER, content=event.content, event_id="$py1"
    )
    assert "error" not in decrypted, decrypted
    assert decrypted["event"]["content"]["body"] == "from py"
    assert decrypted["sender_curve25519"] == py.own.curve25519
    # a ciphertext with a flipped byte is refused by the browser engine as well
    flipped = dict(event.content)
    text = flipped["ciphertext"]
    flipped["ciphertext"] = text[:30] + ("B" if text[30] != "B" else "C") + text[31:]
    refused = peer("decrypt_room_event", room=ROOM, sender=PY_USER, content=flipped, event_id="$x")
    assert "error" in refused


def test_attachments_both_ways(world: tuple[CryptoMachine, Peer, Directory]) -> None:
    """Matrix v2 attachments (AES-256-CTR, SHA-256, JWK) from tresen.client.media."""
    media = pytest.importorskip("tresen.client.media")
    _, peer, _ = world
    data = os.urandom(300_000)
    ciphertext, info = media.encrypt_attachment(data)
    info_json = json.loads(info.to_json())
    result = peer(
        "attachment_decrypt",
        ciphertext=base64.b64encode(ciphertext).decode(),
        info=info_json,
    )
    assert "error" not in result, result
    assert base64.b64decode(result["data"]) == data

    from_browser = peer("attachment_encrypt", data=base64.b64encode(data).decode())
    assert from_browser["info"]["v"] == "v2" and from_browser["info"]["key"]["alg"] == "A256CTR"
    browser_ciphertext = base64.b64decode(from_browser["ciphertext"])
    assert media.decrypt_attachment(browser_ciphertext, json.dumps(from_browser["info"])) == data
    # a flipped byte fails the SHA-256 check on both sides
    flipped = bytearray(browser_ciphertext)
    flipped[1000] ^= 1
    with pytest.raises(CryptoError):
        media.decrypt_attachment(bytes(flipped), json.dumps(from_browser["info"]))
    refused = peer(
        "attachment_decrypt",
        ciphertext=base64.b64encode(bytes(flipped)).decode(),
        info=from_browser["info"],
    )
    assert "error" in refused

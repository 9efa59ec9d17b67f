"""The attachment format (Matrix v2) and its streaming encryption, without a relay."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from tresen.client.media import (
    AttachmentEncryptor,
    EncryptedFile,
    _HashOnce,
    decrypt_attachment,
    decrypt_file,
    encrypt_attachment,
    encrypt_file,
    keystream_at,
    recipients_body,
)
from tresen.errors import CryptoError
from tresen.protocol.codes import Code

# NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt
NIST_KEY = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
NIST_COUNTER = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
NIST_PLAIN = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710"
)
NIST_CIPHER = bytes.fromhex(
    "601ec313775789a5b7a7f504bbf3d228"
    "f443e3ca4d62b59aca84e990cacaf5c5"
    "2b0930daa23de94ce87017ba2d84988d"
    "dfc9c58db67aada613c2dd08457941a6"
)


def test_aes_ctr_known_answer_and_seeking() -> None:
    assert keystream_at(NIST_KEY, NIST_COUNTER, 0).update(NIST_PLAIN) == NIST_CIPHER
    # positioned anywhere, mid-block too, the keystream continues exactly
    for offset in (1, 15, 16, 17, 33, 63):
        part = keystream_at(NIST_KEY, NIST_COUNTER, offset).update(NIST_PLAIN[offset:])
        assert part == NIST_CIPHER[offset:]


def test_the_record_is_matrix_v2() -> None:
    ciphertext, info = encrypt_attachment(b"hello attachment")
    record = json.loads(info.to_json())
    assert set(record) == {"v", "key", "iv", "hashes"}  # no url until uploaded
    assert record["v"] == "v2"
    assert record["key"] == {
        "kty": "oct",
        "key_ops": ["encrypt", "decrypt"],
        "alg": "A256CTR",
        "k": record["key"]["k"],
        "ext": True,
    }
    for text in (record["key"]["k"], record["iv"], record["hashes"]["sha256"]):
        assert "=" not in text
    assert "+" not in record["key"]["k"] and "/" not in record["key"]["k"]  # base64url
    key = base64.urlsafe_b64decode(record["key"]["k"] + "=")
    iv = base64.b64decode(record["iv"] + "==")
    assert len(key) == 32 and len(iv) == 16 and iv[8:] == bytes(8)
    digest = base64.b64decode(record["hashes"]["sha256"] + "=")
    assert digest == hashlib.sha256(ciphertext).digest()
    assert keystream_at(key, iv, 0).update(ciphertext) == b"hello attachment"
    assert decrypt_attachment(ciphertext, info.to_json()) == b"hello attachment"
    # fresh key and iv every time
    assert encrypt_attachment(b"hello attachment")[1].key.k != info.key.k


def test_a_browser_style_record_decrypts() -> None:
    """Padded base64, keys in another order: what other Matrix clients may send."""
    key, iv = os.urandom(32), os.urandom(8) + bytes(8)
    ciphertext = keystream_at(key, iv, 0).update(b"from the browser")
    record = {
        "key": {
            "alg": "A256CTR",
            "ext": True,
            "k": base64.urlsafe_b64encode(key).decode(),
            "key_ops": ["encrypt", "decrypt"],
            "kty": "oct",
        },
        "iv": base64.b64encode(iv).decode(),
        "hashes": {"sha256": base64.b64encode(hashlib.sha256(ciphertext).digest()).decode()},
        "v": "v2",
        "url": "mxc://example.org/abc",
    }
    assert decrypt_attachment(ciphertext, json.dumps(record)) == b"from the browser"
    assert EncryptedFile.from_json(record).url == "mxc://example.org/abc"


def test_streaming_equals_one_shot() -> None:
    data = os.urandom(1_000_003)
    encryptor = AttachmentEncryptor()
    pieces = [encryptor.update(data[i : i + 4099]) for i in range(0, len(data), 4099)]
    info = encryptor.finish()
    assert encryptor.size == len(data)
    assert decrypt_attachment(b"".join(pieces), info) == data


def test_tampering_is_detected() -> None:
    ciphertext, info = encrypt_attachment(os.urandom(10_000))
    for index in (0, 5000, 9999):
        flipped = bytearray(ciphertext)
        flipped[index] ^= 0x80
        with pytest.raises(CryptoError) as caught:
            decrypt_attachment(bytes(flipped), info)
        assert caught.value.code == Code.ATTACHMENT_CORRUPT
        assert caught.value.fields["reason"] == "hash_mismatch"
    with pytest.raises(CryptoError):
        decrypt_attachment(ciphertext[:-1], info)  # truncated
    with pytest.raises(CryptoError):
        decrypt_attachment(ciphertext + b"\0", info)  # extended


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("v",), "v1"),
        (("key", "alg"), "A128CTR"),
        (("key", "kty"), "RSA"),
        (("key", "key_ops"), ["encrypt"]),
        (("key", "k"), base64.urlsafe_b64encode(bytes(16)).decode()),
        (("iv",), base64.b64encode(bytes(12)).decode()),
        (("hashes",), {"sha512": "AAAA"}),
        (("iv",), "***"),
    ],
)
def test_malformed_records_are_refused(path: tuple[str, ...], value: object) -> None:
    ciphertext, info = encrypt_attachment(b"x" * 100)
    record = json.loads(info.to_json())
    node = record
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    with pytest.raises(CryptoError) as caught:
        decrypt_attachment(ciphertext, json.dumps(record))
    assert caught.value.fields["reason"] == "invalid_info"
    with pytest.raises(CryptoError):
        EncryptedFile.from_json(b"{}")


def test_files_stream_and_release_only_verified_plaintext(tmp_path: Path) -> None:
    source, sealed, opened = tmp_path / "a.bin", tmp_path / "a.enc", tmp_path / "a.out"
    data = os.urandom(3 * 1024 * 1024 + 5)
    source.write_bytes(data)
    info = encrypt_file(source, sealed, chunk=65_536)
    assert sealed.read_bytes() != data and sealed.stat().st_size == len(data)
    decrypt_file(sealed, opened, info, chunk=65_536)
    assert opened.read_bytes() == data

    damaged = bytearray(sealed.read_bytes())
    damaged[-1] ^= 1
    sealed.write_bytes(bytes(damaged))
    opened.unlink()
    with pytest.raises(CryptoError):
        decrypt_file(sealed, opened, info)
    assert not opened.exists() and not (tmp_path / "a.out.partial").exists()


def test_hash_once_over_a_resumed_stream() -> None:
    data = os.urandom(1000)
    hasher = _HashOnce()
    hasher.feed(0, data[:600])
    hasher.feed(400, data[400:700])  # resumed from an earlier offset
    hasher.feed(700, data[700:])
    assert hasher.hash.digest() == hashlib.sha256(data).digest() and hasher.done == 1000


def test_recipients_body() -> None:
    assert recipients_body([7, (8, 80)]) == [
        {"account_id": 7},
        {"account_id": 8, "device_id": 80},
    ]
    assert recipients_body(None) == []

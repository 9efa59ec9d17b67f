"""The key directory's shape checks: what a device may publish, and what a query or claim asks."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.keys.models import ClaimRequest, QueryRequest, UploadRequest
from tresen.relay.keys.service import (
    MAX_DEVICE_KEYS_BYTES,
    check_claim,
    check_device_keys,
    check_fallback_keys,
    check_id,
    check_key_id,
    check_one_time_keys,
    check_query,
    check_signed_key,
)

WHO = Principal(account_id=7, device_id=42)
SIG = {"7": {"ed25519:42": "c2lnbmF0dXJl"}}


def device_keys(**changes: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "user_id": "7",
        "device_id": "42",
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {"curve25519:42": "Y3VydmU", "ed25519:42": "ZWQyNTUxOQ"},
        "signatures": copy.deepcopy(SIG),
    }
    keys.update(changes)
    return keys


def otk(**changes: Any) -> dict[str, Any]:
    key: dict[str, Any] = {"key": "b3RrMQ", "signatures": copy.deepcopy(SIG)}
    key.update(changes)
    return key


def rejected(message_part: str) -> Any:
    return pytest.raises(InvalidRequest, match=message_part)


# ---------------------------------------------------------------- key ids


@pytest.mark.parametrize(
    ("key_id", "parts"),
    [
        ("signed_curve25519:AAAAAQ", ("signed_curve25519", "AAAAAQ")),
        ("ed25519:42", ("ed25519", "42")),
        ("curve25519:a+b/c=", ("curve25519", "a+b/c=")),
    ],
)
def test_key_id_splits(key_id: str, parts: tuple[str, str]) -> None:
    assert check_key_id(key_id) == parts


@pytest.mark.parametrize(
    "key_id",
    [
        "",
        "AAAAAQ",
        ":AAAAAQ",
        "signed_curve25519:",
        "sig ned:AAAA",
        "a:b c",
        "a:b:c",
        "x" * 65 + ":A",
    ],
)
def test_key_id_rejects(key_id: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_key_id(key_id)
    assert info.value.code is Code.INVALID_KEYS
    assert "'<algorithm>:<key id>'" in info.value.message


# ---------------------------------------------------------------- device keys


def test_device_keys_accepted_and_encoded() -> None:
    keys = device_keys(unsigned={"note": "kept"})
    assert msgspec.json.decode(check_device_keys(keys, WHO)) == keys


def test_device_keys_must_be_an_object() -> None:
    with rejected("device_keys must be a JSON object"):
        check_device_keys(["not", "an", "object"], WHO)


@pytest.mark.parametrize("field", ["user_id", "device_id", "algorithms", "keys", "signatures"])
def test_device_keys_required_fields(field: str) -> None:
    keys = device_keys()
    del keys[field]
    with rejected(f"device_keys lacks {field}"):
        check_device_keys(keys, WHO)


def test_device_keys_unknown_field() -> None:
    with rejected("unknown field"):
        check_device_keys(device_keys(extra=1), WHO)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"user_id": "8"}, "user_id must be this account's id as a string, '7'"),
        ({"user_id": 7}, "user_id must be this account's id"),
        ({"device_id": "43"}, "device_id must be this device's id as a string, '42'"),
        ({"device_id": 42}, "device_id must be this device's id"),
        ({"algorithms": []}, "algorithms must be a list of 1 to 16"),
        ({"algorithms": "m.olm.v1"}, "algorithms must be a list"),
        ({"algorithms": ["ok", "not ok"]}, "algorithms has a bad name"),
        ({"algorithms": [1]}, "algorithms has a bad name"),
        ({"keys": {}}, "keys must be an object of 1 to 16"),
        ({"keys": {"curve25519:43": "x", "ed25519:42": "y"}}, "must be named '<algorithm>:42'"),
        ({"keys": {"curve25519:42": "", "ed25519:42": "y"}}, "must be a non-empty string"),
        ({"keys": {"curve25519:42": 5, "ed25519:42": "y"}}, "must be a non-empty string"),
        ({"keys": {"ed25519:42": "y"}}, "lacks 'curve25519:42'"),
        ({"keys": {"curve25519:42": "x"}}, "lacks 'ed25519:42'"),
        ({"keys": {"nocolon": "x"}}, "'<algorithm>:<key id>'"),
        ({"signatures": {}}, "signatures must be a non-empty object"),
        ({"signatures": {"7": {}}}, "non-empty objects of signatures"),
        ({"signatures": {"7": "sig"}}, "non-empty objects of signatures"),
        ({"signatures": {"7": {"ed25519:42": 1}}}, "must be a non-empty string"),
        ({"signatures": {"7": {"bad": "s"}}}, "'<algorithm>:<key id>'"),
        ({"signatures": {"8": {"ed25519:42": "s"}}}, "must be signed by this device"),
        ({"signatures": {"7": {"ed25519:41": "s"}}}, "signatures['7']['ed25519:42']"),
        ({"unsigned": "x"}, "unsigned must be an object"),
    ],
)
def test_device_keys_rejects(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_device_keys(device_keys(**changes), WHO)
    assert info.value.code is Code.INVALID_KEYS
    assert message in info.value.message


def test_device_keys_other_signers_allowed() -> None:
    signatures = {**SIG, "9": {"ed25519:master": "Y3Jvc3M"}}
    check_device_keys(device_keys(signatures=signatures), WHO)


def test_device_keys_size_limit() -> None:
    with rejected(f"more than the {MAX_DEVICE_KEYS_BYTES} allowed"):
        check_device_keys(device_keys(unsigned={"pad": "x" * MAX_DEVICE_KEYS_BYTES}), WHO)


# ---------------------------------------------------------------- one-time and fallback keys


def test_one_time_key_accepted() -> None:
    key = check_signed_key("signed_curve25519:AAAAAQ", otk(), WHO, fallback=False)
    assert (key.key_id, key.algorithm) == ("signed_curve25519:AAAAAQ", "signed_curve25519")
    assert msgspec.json.decode(key.json) == otk()


def test_fallback_key_accepted() -> None:
    key = check_signed_key("signed_curve25519:AAAAAg", otk(fallback=True), WHO, fallback=True)
    assert msgspec.json.decode(key.json)["fallback"] is True


@pytest.mark.parametrize(
    ("value", "fallback", "message"),
    [
        ("b3RrMQ", False, "must be a JSON object"),
        ({"signatures": SIG}, False, "lacks key"),
        ({"key": "x"}, False, "lacks signatures"),
        (otk(unsigned={}), False, "unknown field(s) unsigned"),
        (otk(key=""), False, ".key must be a non-empty string"),
        (otk(signatures={"7": {"ed25519:1": "s"}}), False, "must be signed by this device"),
        (otk(fallback=True), False, "upload fallback keys under fallback_keys"),
        (otk(fallback=1), False, "upload fallback keys under fallback_keys"),
        (otk(), True, '"fallback": true'),
        (otk(fallback=False), True, '"fallback": true'),
        (otk(fallback="true"), True, '"fallback": true'),
        (otk(key="k" * 600), False, "at most 512 characters"),
    ],
)
def test_signed_key_rejects(value: Any, fallback: bool, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_signed_key("signed_curve25519:AAAAAQ", value, WHO, fallback=fallback)
    assert info.value.code is Code.INVALID_KEYS
    assert message in info.value.message


def test_one_time_key_explicit_false_fallback_is_fine() -> None:
    check_signed_key("signed_curve25519:AAAAAQ", otk(fallback=False), WHO, fallback=False)


def test_signed_key_size_limit() -> None:
    signatures = {
        "7": {"ed25519:42": "s"},
        **{str(n): {"ed25519:x": "s" * 100} for n in range(100, 130)},
    }
    with rejected("more than the 2048 allowed"):
        check_signed_key("a:b", otk(signatures=signatures), WHO, fallback=False)


def test_one_time_keys_keep_order_and_limit() -> None:
    keys = {f"signed_curve25519:{name}": otk(key=name) for name in ["AAAAAw", "AAAAAQ", "AAAAAg"]}
    checked = check_one_time_keys(keys, WHO, limit=3)
    assert [k.key_id.split(":")[1] for k in checked] == ["AAAAAw", "AAAAAQ", "AAAAAg"]
    with rejected("3 one-time keys in one upload, more than the 2 allowed"):
        check_one_time_keys(keys, WHO, limit=2)
    assert check_one_time_keys({}, WHO, limit=0) == []


def test_fallback_keys_one_per_algorithm() -> None:
    one = {"signed_curve25519:AAAAAg": otk(fallback=True)}
    assert len(check_fallback_keys(one, WHO)) == 1
    two = {**one, "signed_curve25519:AAAAAw": otk(fallback=True)}
    with rejected("two keys of one algorithm"):
        check_fallback_keys(two, WHO)
    many = {f"alg{n}:A": otk(fallback=True) for n in range(5)}
    with rejected("at most 4 fallback keys"):
        check_fallback_keys(many, WHO)


def test_upload_request_shape() -> None:
    body = {"device_keys": device_keys(), "one_time_keys": {"a:b": otk()}}
    request = msgspec.json.decode(msgspec.json.encode(body), type=UploadRequest)
    assert request.fallback_keys == {}
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"device_key": {}}', type=UploadRequest)


# ---------------------------------------------------------------- query and claim


@pytest.mark.parametrize(
    ("raw", "value"), [(1, 1), ("1", 1), ("123456789012345678", 10**17 + 23456789012345678)]
)
def test_id_accepted(raw: int | str, value: int) -> None:
    assert check_id(raw, "device") == value


@pytest.mark.parametrize("raw", [0, -1, "0", "01", "-1", "1.0", "", " 1", "٣", "1" * 19, "abc"])
def test_id_rejected(raw: int | str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_id(raw, "device")
    assert info.value.code is Code.BAD_REQUEST
    assert "is not a valid device id" in info.value.message


def test_query_parses_ids() -> None:
    request = QueryRequest(device_keys={"7": [], "8": ["1", 2]})
    assert check_query(request, max_accounts=2) == {7: set(), 8: {1, 2}}
    with pytest.raises(InvalidRequest, match="at most 1 accounts"):
        check_query(request, max_accounts=1)
    with pytest.raises(InvalidRequest, match="not a valid account id"):
        check_query(QueryRequest(device_keys={"x": []}), max_accounts=5)


def test_query_request_accepts_matrix_timeout() -> None:
    body = b'{"device_keys": {"7": ["42"]}, "timeout": 10000}'
    assert msgspec.json.decode(body, type=QueryRequest).device_keys == {"7": ["42"]}


def test_claim_sorted_and_limited() -> None:
    request = ClaimRequest(
        one_time_keys={"9": {"3": "signed_curve25519"}, "7": {"5": "a", "4": "signed_curve25519"}}
    )
    assert check_claim(request, max_devices=3) == [
        (7, 4, "signed_curve25519"),
        (7, 5, "a"),
        (9, 3, "signed_curve25519"),
    ]
    with pytest.raises(InvalidRequest, match="at most 2 devices"):
        check_claim(request, max_devices=2)


def test_claim_rejects_bad_algorithm() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_claim(ClaimRequest(one_time_keys={"7": {"4": "bad alg"}}), max_devices=5)
    assert info.value.code is Code.INVALID_KEYS

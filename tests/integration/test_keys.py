"""The key directory over HTTP on a real relay: upload, query, claim, counts, low-key events."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from tests.conftest import DeviceHandle, Harness
from tresen.bus.events import BusEvent, KeysLowEvent
from tresen.relay.accounts.models import Principal
from tresen.relay.keys import store
from tresen.relay.keys.models import ClaimRequest
from tresen.storage.engine import Txn

ALG = "signed_curve25519"


def sigs(device: DeviceHandle) -> dict[str, Any]:
    return {str(device.account_id): {f"ed25519:{device.device_id}": f"sig-{device.device_id}"}}


def device_keys(device: DeviceHandle, **changes: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "user_id": str(device.account_id),
        "device_id": str(device.device_id),
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            f"curve25519:{device.device_id}": f"curve-{device.device_id}",
            f"ed25519:{device.device_id}": f"ed-{device.device_id}",
        },
        "signatures": sigs(device),
    }
    keys.update(changes)
    return keys


def otks(device: DeviceHandle, first: int, n: int) -> dict[str, Any]:
    """``n`` one-time keys named after the device and a counter (so every key is unique)."""
    return {
        f"{ALG}:K{i:05d}": {"key": f"otk-{device.device_id}-{i}", "signatures": sigs(device)}
        for i in range(first, first + n)
    }


def fallback(device: DeviceHandle, name: str) -> dict[str, Any]:
    return {
        f"{ALG}:{name}": {
            "key": f"fb-{device.device_id}-{name}",
            "fallback": True,
            "signatures": sigs(device),
        }
    }


async def upload(device: DeviceHandle, **body: Any) -> httpx.Response:
    return await device.http.post("/v1/keys/upload", json=body)


async def ready(relay: Harness, otk_count: int = 0, fb: str | None = "FB1") -> DeviceHandle:
    """A new device with its identity keys, ``otk_count`` one-time keys and a fallback key."""
    device = await relay.new_device()
    body: dict[str, Any] = {"device_keys": device_keys(device)}
    if otk_count:
        body["one_time_keys"] = otks(device, 0, otk_count)
    if fb:
        body["fallback_keys"] = fallback(device, fb)
    r = await upload(device, **body)
    assert r.status_code == 200, r.text
    return device


def want(*targets: DeviceHandle) -> dict[str, Any]:
    wanted: dict[str, dict[str, str]] = {}
    for t in targets:
        wanted.setdefault(str(t.account_id), {})[str(t.device_id)] = ALG
    return {"one_time_keys": wanted}


async def claim(claimer: DeviceHandle, *targets: DeviceHandle) -> dict[str, Any]:
    r = await claimer.http.post("/v1/keys/claim", json=want(*targets))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["failures"] == {}
    return body


def claimed_of(body: dict[str, Any], target: DeviceHandle) -> tuple[str, dict[str, Any]] | None:
    keys = body["one_time_keys"].get(str(target.account_id), {}).get(str(target.device_id))
    if keys is None:
        return None
    assert len(keys) == 1
    ((key_id, key),) = keys.items()
    return key_id, key


def error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code, body
    return str(body["message"])


# ---------------------------------------------------------------- upload and counts


async def test_upload_counts_and_idempotence(relay: Harness) -> None:
    alice = await relay.new_device()
    r = await upload(
        alice,
        device_keys=device_keys(alice),
        one_time_keys=otks(alice, 0, 5),
        fallback_keys=fallback(alice, "FB1"),
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"one_time_key_counts": {ALG: 5}, "unused_fallback_key_types": [ALG]}

    # the same upload again (a retry) changes nothing
    r = await upload(alice, device_keys=device_keys(alice), one_time_keys=otks(alice, 0, 5))
    assert r.json()["one_time_key_counts"] == {ALG: 5}
    # overlapping batches add only the new keys
    r = await upload(alice, one_time_keys=otks(alice, 3, 4))
    assert r.json()["one_time_key_counts"] == {ALG: 7}

    r = await alice.http.get("/v1/keys/count")
    assert r.status_code == 200, r.text
    assert r.json() == {"one_time_key_counts": {ALG: 7}, "unused_fallback_key_types": [ALG]}
    assert await relay.services.keys.otk_count(alice.device_id) == 7
    # an empty upload just reports the counts
    assert (await upload(alice)).json()["one_time_key_counts"] == {ALG: 7}


async def test_counts_of_a_device_without_keys(relay: Harness) -> None:
    alice = await relay.new_device()
    r = await alice.http.get("/v1/keys/count")
    assert r.json() == {"one_time_key_counts": {ALG: 0}, "unused_fallback_key_types": []}
    assert await relay.services.keys.otk_count(alice.device_id) == 0


async def test_reused_key_id_with_other_content_is_refused(relay: Harness) -> None:
    alice = await ready(relay, otk_count=3)
    changed = otks(alice, 0, 3)
    changed[f"{ALG}:K00001"]["key"] = "something else"
    message = error(await upload(alice, one_time_keys=changed), 400, "invalid_keys")
    assert f"{ALG}:K00001" in message
    # all or nothing: nothing of the refused upload was kept
    fresh = {**otks(alice, 10, 1), f"{ALG}:K00002": {"key": "other", "signatures": sigs(alice)}}
    error(await upload(alice, one_time_keys=fresh), 400, "invalid_keys")
    assert await relay.services.keys.otk_count(alice.device_id) == 3


async def test_device_keys_belong_to_the_caller(relay: Harness) -> None:
    alice = await relay.new_device()
    bob = await relay.new_device()
    message = error(await upload(alice, device_keys=device_keys(bob)), 400, "invalid_keys")
    assert "user_id" in message
    wrong_device = device_keys(alice, device_id=str(bob.device_id))
    message = error(await upload(alice, device_keys=wrong_device), 400, "invalid_keys")
    assert f"'{alice.device_id}'" in message
    # one-time keys must carry the uploading device's own signature
    message = error(await upload(alice, one_time_keys=otks(bob, 0, 1)), 400, "invalid_keys")
    assert "must be signed by this device" in message


async def test_identity_keys_never_change(relay: Harness) -> None:
    alice = await ready(relay)
    moved = device_keys(alice)
    moved["keys"][f"curve25519:{alice.device_id}"] = "a new identity"
    message = error(await upload(alice, device_keys=moved), 400, "invalid_keys")
    assert "cannot change" in message
    # more signatures on the same keys are fine (e.g. once cross-signed)
    signed = device_keys(alice)
    signed["signatures"]["99"] = {"ed25519:master": "cross"}
    assert (await upload(alice, device_keys=signed)).status_code == 200
    r = await alice.http.post("/v1/keys/query", json={"device_keys": {str(alice.account_id): []}})
    assert r.json()["device_keys"][str(alice.account_id)][str(alice.device_id)] == signed


async def test_malformed_bodies(relay: Harness) -> None:
    alice = await relay.new_device()
    r = await alice.http.post("/v1/keys/upload", json={"one_time_key": {}})
    error(r, 400, "bad_request")
    r = await upload(alice, one_time_keys={"no-colon": {"key": "k", "signatures": sigs(alice)}})
    assert "'<algorithm>:<key id>'" in error(r, 400, "invalid_keys")
    r = await upload(alice, fallback_keys={f"{ALG}:F": {"key": "k", "signatures": sigs(alice)}})
    assert '"fallback": true' in error(r, 400, "invalid_keys")
    r = await alice.http.post("/v1/keys/query", json={"device_keys": {"abc": []}})
    error(r, 400, "bad_request")
    r = await alice.http.post("/v1/keys/claim", json={"one_time_keys": {"1": {"x": ALG}}})
    error(r, 400, "bad_request")
    r = await alice.http.post("/v1/keys/claim", json={"one_time_keys": {"1": {"2": "a b"}}})
    error(r, 400, "invalid_keys")


async def test_upload_limits(relay: Harness) -> None:
    alice = await relay.new_device()
    most = relay.services.settings.max_otks_per_upload
    r = await upload(alice, one_time_keys=otks(alice, 0, most + 1))
    assert f"more than the {most} allowed" in error(r, 400, "invalid_keys")
    for batch in range(5):
        r = await upload(alice, one_time_keys=otks(alice, batch * most, most))
        assert r.status_code == 200, r.text
    r = await upload(alice, one_time_keys=otks(alice, 5 * most, 1))
    assert "upload when the count is low" in error(r, 400, "invalid_keys")


async def test_keys_need_a_token(relay: Harness) -> None:
    async with relay.client() as anonymous:
        for path in ("/v1/keys/upload", "/v1/keys/query", "/v1/keys/claim"):
            error(await anonymous.post(path, json={}), 401, "unauthorized")
        error(await anonymous.get("/v1/keys/count"), 401, "unauthorized")


# ---------------------------------------------------------------- query


async def test_query_lists_current_devices_with_keys(relay: Harness) -> None:
    alice = await ready(relay)
    laptop = await relay.link_device(alice)
    phone = await relay.link_device(alice)  # never uploads keys
    assert (await upload(laptop, device_keys=device_keys(laptop))).status_code == 200
    bob = await relay.new_device()

    async def query(ask: dict[str, list[Any]]) -> dict[str, Any]:
        r = await bob.http.post("/v1/keys/query", json={"device_keys": ask, "timeout": 10_000})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body["failures"] == {}
        found: dict[str, Any] = body["device_keys"]
        return found

    a = str(alice.account_id)
    assert await query({a: []}) == {
        a: {str(alice.device_id): device_keys(alice), str(laptop.device_id): device_keys(laptop)}
    }
    assert await query({a: [str(laptop.device_id), phone.device_id]}) == {
        a: {str(laptop.device_id): device_keys(laptop)}
    }
    # accounts without keys, or unknown, are present and empty
    assert await query({str(bob.account_id): [], "999999": []}) == {
        str(bob.account_id): {},
        "999999": {},
    }

    r = await alice.http.delete(f"/v1/devices/{laptop.device_id}")
    assert r.status_code in (200, 204), r.text
    assert await query({a: []}) == {a: {str(alice.device_id): device_keys(alice)}}


# ---------------------------------------------------------------- claim


async def test_claim_oldest_first_then_fallback(relay: Harness) -> None:
    alice = await ready(relay, otk_count=3)
    bob = await relay.new_device()
    order = list(otks(alice, 0, 3).items())
    for key_id, key in order:
        got = claimed_of(await claim(bob, alice), alice)
        assert got == (key_id, key)

    # none left: the fallback key, every time, until replaced
    for _ in range(2):
        got = claimed_of(await claim(bob, alice), alice)
        assert got is not None
        assert got == next(iter(fallback(alice, "FB1").items()))
    r = await alice.http.get("/v1/keys/count")
    assert r.json() == {"one_time_key_counts": {ALG: 0}, "unused_fallback_key_types": []}

    # the same fallback key again leaves it used; a new one replaces it, unused
    await upload(alice, fallback_keys=fallback(alice, "FB1"))
    assert (await alice.http.get("/v1/keys/count")).json()["unused_fallback_key_types"] == []
    r = await upload(alice, fallback_keys=fallback(alice, "FB2"))
    assert r.json()["unused_fallback_key_types"] == [ALG]
    got = claimed_of(await claim(bob, alice), alice)
    assert got is not None
    assert got[0] == f"{ALG}:FB2"

    # a new one-time key goes before the fallback key again
    await upload(alice, one_time_keys=otks(alice, 100, 1))
    got = claimed_of(await claim(bob, alice), alice)
    assert got is not None
    assert got[0] == f"{ALG}:K00100"


async def test_claim_without_any_key(relay: Harness) -> None:
    alice = await ready(relay, fb=None)
    bob = await relay.new_device()
    assert (await claim(bob, alice))["one_time_keys"] == {}


async def test_claim_skips_unknown_revoked_and_mismatched_devices(relay: Harness) -> None:
    alice = await ready(relay, otk_count=2)
    laptop = await relay.link_device(alice)
    await upload(laptop, device_keys=device_keys(laptop), one_time_keys=otks(laptop, 0, 2))
    bob = await ready(relay, otk_count=2)

    wanted = {
        str(alice.account_id): {str(laptop.device_id): ALG, "999999": ALG},
        # bob's device asked for under alice's account: not hers, so nothing
        "999998": {str(bob.device_id): ALG},
    }
    wanted[str(alice.account_id)][str(bob.device_id)] = ALG
    r = await bob.http.post("/v1/keys/claim", json={"one_time_keys": wanted})
    assert r.json()["one_time_keys"] == {
        str(alice.account_id): {str(laptop.device_id): otks(laptop, 0, 1)}
    }
    assert await relay.services.keys.otk_count(bob.device_id) == 2

    r = await alice.http.delete(f"/v1/devices/{laptop.device_id}")
    assert r.status_code in (200, 204), r.text
    assert (await claim(bob, laptop))["one_time_keys"] == {}
    # the other device of the account still hands out keys
    got = claimed_of(await claim(bob, alice, laptop), alice)
    assert got is not None
    assert got[0] == f"{ALG}:K00000"


async def test_drop_device_forgets_its_keys(relay: Harness) -> None:
    alice = await ready(relay, otk_count=3)
    bob = await ready(relay, otk_count=3)

    async def held(txn: Txn, device: int) -> tuple[str | None, int, bool]:
        counts = await store.count_one_time_keys(txn, device)
        fb = await store.get_fallback_key(txn, device, ALG)
        return await store.get_device_keys(txn, device), sum(counts.values()), fb is not None

    db = relay.services.db
    await db.run_interaction("test_drop", lambda txn: store.drop_device(txn, alice.device_id))
    assert await db.run_interaction("t", lambda txn: held(txn, alice.device_id)) == (None, 0, False)
    kept = await db.run_interaction("t", lambda txn: held(txn, bob.device_id))
    assert kept[1:] == (3, True)
    assert kept[0] is not None


async def test_claim_reports_low_keys_after_commit(relay: Harness) -> None:
    watermark = relay.services.settings.otk_low_watermark
    alice = await ready(relay, otk_count=watermark + 1)
    bob = await relay.new_device()
    events: list[BusEvent] = []
    sub = relay.services.bus.subscribe(f"device.{alice.device_id}", events.append)
    try:
        await claim(bob, alice)  # watermark left: not low yet
        assert events == []
        await claim(bob, alice)
        assert events == [KeysLowEvent(device=alice.device_id, count=watermark - 1)]
        # the event tells the truth: the claim is committed when it arrives
        assert await relay.services.keys.otk_count(alice.device_id) == watermark - 1
        for _ in range(watermark):
            await claim(bob, alice)
        assert events[-1] == KeysLowEvent(device=alice.device_id, count=0)
        # an empty device asked for keys is still told to upload
        await claim(bob, alice)
        assert len(events) == watermark + 2
    finally:
        sub.cancel()


async def test_concurrent_claims_hand_out_each_key_once(relay: Harness) -> None:
    alice = await ready(relay, otk_count=10)
    claimers = [await relay.new_device() for _ in range(4)]
    bodies = await asyncio.gather(*(claim(claimers[i % 4], alice) for i in range(20)))
    got = [claimed_of(body, alice) for body in bodies]
    assert all(g is not None for g in got)
    ids = Counter(g[0] for g in got if g is not None)
    one_time = {key_id for key_id in ids if key_id != f"{ALG}:FB1"}
    assert one_time == set(otks(alice, 0, 10))
    assert all(ids[key_id] == 1 for key_id in one_time)
    assert ids[f"{ALG}:FB1"] == 10
    assert await relay.services.keys.otk_count(alice.device_id) == 0


async def test_concurrent_multi_device_claims(relay: Harness) -> None:
    """Many claims over the same devices in every order: no deadlock, no key twice."""
    alice = await ready(relay, otk_count=15)
    bob = await ready(relay, otk_count=15)
    keys = relay.services.keys
    who = Principal(account_id=alice.account_id, device_id=alice.device_id)

    async def one(i: int) -> list[tuple[str, str]]:
        pair = [alice, bob] if i % 2 else [bob, alice]
        wanted: dict[str, dict[str, str]] = {}
        for t in pair:
            wanted.setdefault(str(t.account_id), {})[str(t.device_id)] = ALG
        result = await keys.do_claim_keys(who, ClaimRequest(one_time_keys=wanted))
        return [
            (device, key_id)
            for devices in result.one_time_keys.values()
            for device, by_id in devices.items()
            for key_id in by_id
        ]

    results = await asyncio.gather(*(one(i) for i in range(40)))
    assert all(len(r) == 2 for r in results)
    handed = Counter(key for r in results for key in r)
    for device in (alice, bob):
        mine = {key_id: n for (d, key_id), n in handed.items() if d == str(device.device_id)}
        # its 15 one-time keys once each, then the fallback key for the other 25 claims
        assert mine == {**dict.fromkeys(otks(device, 0, 15), 1), f"{ALG}:FB1": 25}

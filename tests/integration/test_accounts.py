"""Registration, codes, devices, linking, profiles over the real HTTP API."""

from __future__ import annotations

from typing import Any

import pytest

from ..conftest import Harness, fresh_phone


def error(r: Any) -> str:
    return str(r.json()["error"]["code"])


async def test_register_normalises_to_e164_and_rejects_invalid_numbers(relay: Harness) -> None:
    async with relay.client() as http:
        r = await http.post("/v1/accounts/code", json={"phone": "+49 (151) 2345-6789"})
        assert r.status_code == 202 and r.json()["phone"] == "+4915123456789"
        for bad in ("12345", "+999999", "not a number", ""):
            r = await http.post("/v1/accounts/code", json={"phone": bad})
            assert r.status_code == 400 and error(r) == "invalid_phone_number", bad
        r = await http.post("/v1/accounts/code", json={"phone": "+4915123456789", "x": 1})
        assert r.status_code == 400 and error(r) == "bad_request"


async def test_codes_are_single_use_expire_and_count_wrong_attempts(relay: Harness) -> None:
    phone = fresh_phone()
    async with relay.client() as http:
        await http.post("/v1/accounts/code", json={"phone": phone})
        code = relay.sender.codes[phone]
        wrong = "000000" if code != "000000" else "111111"
        r = await http.post("/v1/accounts", json={"phone": phone, "code": wrong})
        assert r.status_code == 401 and error(r) == "invalid_code"
        r = await http.post("/v1/accounts", json={"phone": phone, "code": code})
        assert r.status_code == 201
        r = await http.post("/v1/accounts", json={"phone": phone, "code": code})
        assert r.status_code == 401 and error(r) == "invalid_code"
        # expiry
        other = fresh_phone()
        await http.post("/v1/accounts/code", json={"phone": other})
        relay.clock.advance(relay.services.settings.code_ttl_seconds + 1)
        r = await http.post(
            "/v1/accounts", json={"phone": other, "code": relay.sender.codes[other]}
        )
        assert r.status_code == 401 and error(r) == "code_expired"
        # five wrong attempts burn the code
        third = fresh_phone()
        await http.post("/v1/accounts/code", json={"phone": third})
        code = relay.sender.codes[third]
        wrong = "000000" if code != "000000" else "111111"
        for _ in range(5):
            await http.post("/v1/accounts", json={"phone": third, "code": wrong})
        r = await http.post("/v1/accounts", json={"phone": third, "code": code})
        assert r.status_code == 401


async def test_code_requests_are_rate_limited_per_number(relay: Harness) -> None:
    phone = fresh_phone()
    async with relay.client() as http:
        limit = relay.services.settings.code_attempts_per_number_per_hour
        for _ in range(limit):
            assert (await http.post("/v1/accounts/code", json={"phone": phone})).status_code == 202
        r = await http.post("/v1/accounts/code", json={"phone": phone})
        assert r.status_code == 429 and error(r) == "rate_limited"
        assert r.headers["retry-after"] == "3600"


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"max_devices": 3}


async def test_existing_number_needs_takeover_which_signs_out_old_devices(relay: Harness) -> None:
    first = await relay.new_device()
    async with relay.client() as http:
        await http.post("/v1/accounts/code", json={"phone": first.phone})
        code = relay.sender.codes[first.phone]
        r = await http.post("/v1/accounts", json={"phone": first.phone, "code": code})
        assert r.status_code == 409 and error(r) == "account_exists"
        await http.post("/v1/accounts/code", json={"phone": first.phone})
        code = relay.sender.codes[first.phone]
        r = await http.post(
            "/v1/accounts", json={"phone": first.phone, "code": code, "takeover": True}
        )
        assert r.status_code == 201 and r.json()["account_id"] == first.account_id
    r = await first.http.get("/v1/me")
    assert r.status_code == 401 and error(r) == "token_revoked"


async def test_link_list_and_limit_devices(relay: Harness) -> None:
    alice = await relay.new_device(name="phone")
    laptop = await relay.link_device(alice, name="laptop")
    assert laptop.account_id == alice.account_id and laptop.device_id != alice.device_id
    tablet = await relay.link_device(alice, name="tablet")
    r = await alice.http.post("/v1/devices/link-code")
    code = r.json()["code"]
    r = await laptop.http.get("/v1/devices")
    listed = r.json()
    assert [d["name"] for d in listed] == ["phone", "laptop", "tablet"]
    assert [d["current"] for d in listed] == [False, True, False]
    async with relay.client() as http:
        r = await http.post("/v1/devices/link", json={"code": code})
        assert r.status_code == 409 and error(r) == "device_limit"
        # the code survives the refusal: remove a device and use it again, once
        assert (await alice.http.delete(f"/v1/devices/{tablet.device_id}")).status_code == 204
        r = await http.post("/v1/devices/link", json={"code": code, "device_name": "watch"})
        assert r.status_code == 201
        r = await http.post("/v1/devices/link", json={"code": code})
        assert r.status_code == 401 and error(r) == "invalid_code"
    # link codes expire
    r = await alice.http.post("/v1/devices/link-code")
    relay.clock.advance(relay.services.settings.link_code_ttl_seconds + 1)
    async with relay.client() as http:
        r = await http.post("/v1/devices/link", json={"code": r.json()["code"]})
        assert r.status_code == 401 and error(r) == "code_expired"
    # revoking someone else's device is not possible
    bob = await relay.new_device()
    r = await bob.http.delete(f"/v1/devices/{alice.device_id}")
    assert r.status_code == 404


async def test_profile_username_and_lookup(relay: Harness) -> None:
    alice, bob = await relay.new_device(), await relay.new_device()
    r = await alice.http.patch(
        "/v1/me", json={"display_name": "Alice", "about": "hi", "username": "alice_1"}
    )
    assert r.status_code == 200 and r.json()["username"] == "alice_1"
    r = await bob.http.patch("/v1/me", json={"username": "alice_1"})
    assert r.status_code == 409 and error(r) == "username_taken"
    r = await bob.http.patch("/v1/me", json={"username": "Bad Name!"})
    assert r.status_code == 400
    r = await bob.http.get("/v1/accounts/lookup", params={"username": "alice_1"})
    assert r.json()["account_id"] == alice.account_id and r.json()["display_name"] == "Alice"
    r = await bob.http.get("/v1/accounts/lookup", params={"phone": alice.phone})
    assert r.json()["account_id"] == alice.account_id
    assert "phone" not in r.json()
    r = await bob.http.get("/v1/accounts/lookup", params={"phone": fresh_phone()})
    assert r.status_code == 404 and error(r) == "unknown_recipient"


async def test_auth_errors_and_openapi(relay: Harness) -> None:
    async with relay.client() as http:
        r = await http.get("/v1/me")
        assert r.status_code == 401 and error(r) == "unauthorized"
        r = await http.get("/v1/me", headers={"Authorization": "Bearer tdv_unknown"})
        assert r.status_code == 401
        r = await http.get("/openapi.json")
        paths = r.json()["paths"]
        for path in ("/v1/accounts", "/v1/devices/link", "/v1/keys/claim", "/v1/groups"):
            assert path in paths
        r = await http.get("/v1/info")
        assert r.json()["protocol_version"] == 1
        r = await http.get("/v1/nope")
        assert r.status_code == 404 and error(r) == "not_found"

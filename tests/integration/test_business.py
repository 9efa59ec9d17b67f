"""Business accounts against a real relay: becoming a business, the Cloud API's profile limits,
short links and QR codes, hours and "open now", greeting and away settings, the public lookups,
and business-scoped user ids with phone sharing."""

from __future__ import annotations

import asyncio
import io
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import zxingcpp
from PIL import Image

from tresen.protocol.codes import Code

from ..conftest import DeviceHandle, Harness


def error(response: httpx.Response, status: int, code: Code) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


async def make_business(
    relay: Harness, name: str = "Acme Flowers", **fields: Any
) -> tuple[DeviceHandle, dict[str, Any]]:
    owner = await relay.new_device()
    r = await owner.http.post("/v1/business", json={"display_name": name, **fields})
    assert r.status_code == 201, r.text
    return owner, r.json()


async def test_create_with_cloud_api_profile(relay: Harness) -> None:
    owner, biz = await make_business(
        relay,
        about="Fresh flowers every day",
        address="Main St 1, Berlin",
        description="Bouquets, plants and delivery.",
        email="hello@acme.example",
        websites=["https://acme.example", "https://shop.acme.example"],
        vertical="RETAIL",
        photo="blob_abc123",
    )
    assert biz["account_id"] == owner.account_id
    assert biz["display_name_status"] == "pending"
    assert biz["verified"] is False
    assert biz["slug"] == "acme-flowers"
    assert biz["short_link"] == f"{relay.url}/b/acme-flowers"
    assert biz["websites"] == ["https://acme.example", "https://shop.acme.example"]
    assert biz["vertical"] == "RETAIL" and biz["photo"] == "blob_abc123"
    assert biz["verification"] is None
    assert (await owner.http.get("/v1/business")).json() == biz
    # one business per account
    error(
        await owner.http.post("/v1/business", json={"display_name": "Again"}),
        409,
        Code.BUSINESS_EXISTS,
    )


async def test_profile_limits_have_stable_codes(relay: Harness) -> None:
    owner = await relay.new_device()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"about": "a" * 140}, "about"),
        ({"address": "a" * 257}, "address"),
        ({"description": "d" * 513}, "description"),
        ({"email": "not-an-email"}, "email"),
        ({"websites": ["https://a.example", "https://b.example", "https://c.example"]}, "websites"),
        ({"websites": ["ftp://a.example"]}, "websites"),
        ({"vertical": "SPACESHIPS"}, "vertical"),
        ({"display_name": "   "}, "display_name"),
        ({"slug": "no"}, "slug"),
        ({"email": "a@" + "b" * 130 + ".example"}, "email"),
    ]
    for fields, field in cases:
        body = {"display_name": "Limits Ltd", **fields}
        problem = error(
            await owner.http.post("/v1/business", json=body), 400, Code.INVALID_BUSINESS_PROFILE
        )
        assert problem["fields"]["field"] == field
    # the limits themselves are accepted, and nothing was half-created before
    error(await owner.http.get("/v1/business"), 404, Code.NOT_A_BUSINESS)
    r = await owner.http.post(
        "/v1/business",
        json={
            "display_name": "Limits Ltd",
            "about": "a" * 139,
            "description": "d" * 512,
            "websites": ["https://a.example", "https://b.example"],
        },
    )
    assert r.status_code == 201, r.text
    problem = error(
        await owner.http.patch("/v1/business", json={"about": "b" * 140}),
        400,
        Code.INVALID_BUSINESS_PROFILE,
    )
    assert problem["fields"] == {"field": "about", "limit": 139}
    assert (await owner.http.get("/v1/business")).json()["about"] == "a" * 139
    error(await owner.http.patch("/v1/business", json={"unknown": 1}), 400, Code.BAD_REQUEST)
    error(
        await owner.http.patch("/v1/business", json={"photo": "../etc/passwd"}),
        400,
        Code.BAD_REQUEST,
    )


async def test_slugs_are_unique_and_generated(relay: Harness) -> None:
    _, first = await make_business(relay, "Bakery")
    _, second = await make_business(relay, "Bakery")
    assert first["slug"] == "bakery" and second["slug"] == "bakery-2"
    other = await relay.new_device()
    error(
        await other.http.post("/v1/business", json={"display_name": "X", "slug": "Bakery"}),
        409,
        Code.SLUG_TAKEN,
    )
    owner, _ = await make_business(relay, "Corner Shop")
    error(await owner.http.patch("/v1/business", json={"slug": "bakery"}), 409, Code.SLUG_TAKEN)
    r = await owner.http.patch("/v1/business", json={"slug": "the-corner"})
    assert r.json()["slug"] == "the-corner"
    async with relay.client() as anonymous:
        page = await anonymous.get("/b/the-corner")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "Corner Shop" in page.text
        assert f"tresen://business/{owner.account_id}?source=link" in page.text
        scanned = await anonymous.get("/b/the-corner?src=qr")
        assert f"tresen://business/{owner.account_id}?source=qr" in scanned.text
        error(await anonymous.get("/b/the-corner?src=fax"), 400, Code.BAD_REQUEST)
        as_json = await anonymous.get("/b/the-corner", headers={"accept": "application/json"})
        assert as_json.json()["account_id"] == owner.account_id
        error(await anonymous.get("/b/corner-shop"), 404, Code.NOT_A_BUSINESS)


async def test_another_account_cannot_edit_a_business(relay: Harness) -> None:
    owner, _ = await make_business(relay, "Owner Co", about="ours")
    stranger = await relay.new_device()
    # every write addresses the caller's own business: a stranger has none
    error(
        await stranger.http.patch("/v1/business", json={"about": "hacked"}),
        404,
        Code.NOT_A_BUSINESS,
    )
    error(
        await stranger.http.put("/v1/business/hours", json={"mode": "always_open"}),
        404,
        Code.NOT_A_BUSINESS,
    )
    error(
        await stranger.http.post(
            "/v1/business/products", json={"name": "x", "price": 1, "currency": "EUR"}
        ),
        404,
        Code.NOT_A_BUSINESS,
    )
    profile = (await stranger.http.get(f"/v1/business/{owner.account_id}")).json()
    assert profile["about"] == "ours"
    assert "greeting" not in profile and "verification" not in profile
    async with relay.client() as anonymous:
        error(await anonymous.get(f"/v1/business/{owner.account_id}"), 401, Code.UNAUTHORIZED)


async def test_public_lookups_and_account_profile_badge(relay: Harness) -> None:
    owner, biz = await make_business(relay, "Lookup Ltd")
    person = await relay.new_device()
    by_id = (await person.http.get(f"/v1/business/{owner.account_id}")).json()
    by_slug = (await person.http.get(f"/v1/business/by-slug/{biz['slug']}")).json()
    assert by_id == by_slug
    assert by_id["verified"] is False
    account = (await person.http.get(f"/v1/accounts/{owner.account_id}")).json()
    assert account["business"] is True
    assert account.get("verified", False) is False
    plain = (await person.http.get(f"/v1/accounts/{person.account_id}")).json()
    assert "business" not in plain  # additive: unchanged for people
    error(await person.http.get(f"/v1/business/{person.account_id}"), 404, Code.NOT_A_BUSINESS)


async def test_qr_codes_encode_the_short_link(relay: Harness) -> None:
    owner, biz = await make_business(relay, "QR Cafe")
    async with relay.client() as anonymous:
        png = await anonymous.get(f"/v1/business/{owner.account_id}/qr.png?scale=4")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
        decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)).convert("L"))
        assert [d.text for d in decoded] == [biz["short_link"] + "?src=qr"]
        svg = await anonymous.get(f"/v1/business/{owner.account_id}/qr.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        root = ET.fromstring(svg.content)  # noqa: S314 - our own output
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.find("{http://www.w3.org/2000/svg}path") is not None
        error(
            await anonymous.get(f"/v1/business/{owner.account_id}/qr.png?scale=0"),
            400,
            Code.BAD_REQUEST,
        )
        error(await anonymous.get("/v1/business/999999/qr.svg"), 404, Code.NOT_A_BUSINESS)


async def test_hours_and_open_now(relay: Harness) -> None:
    owner, biz = await make_business(relay, "Hours Co")
    assert biz["hours"]["mode"] == "by_appointment" and biz["open_now"] is None
    # 2026-01-05 is a Monday; 10:00 in Berlin is 09:00 UTC
    monday_0900_utc = 1_767_603_600_000
    relay.clock.offset_ms = monday_0900_utc - relay.clock.now_ms() + relay.clock.offset_ms
    hours = {
        "mode": "selected_hours",
        "timezone": "Europe/Berlin",
        "days": {
            "monday": [{"open": "08:00", "close": "12:00"}, {"open": "13:00", "close": "24:00"}]
        },
    }
    r = await owner.http.put("/v1/business/hours", json=hours)
    assert r.status_code == 200, r.text
    assert r.json()["open_now"] is True
    relay.clock.advance(2.5 * 3600)  # 12:30 Berlin: lunch
    assert (await owner.http.get("/v1/business")).json()["open_now"] is False
    relay.clock.advance(24 * 3600)  # Tuesday: closed all day
    assert (await owner.http.get("/v1/business")).json()["open_now"] is False
    bad = [
        {"timezone": "Mars/Olympus"},
        {"days": {"monday": [{"open": "12:00", "close": "11:00"}]}},
        {
            "days": {
                "monday": [{"open": "08:00", "close": "12:00"}, {"open": "11:00", "close": "13:00"}]
            }
        },
        {"days": {"monday": [{"open": f"0{i}:00", "close": f"0{i}:30"} for i in range(5)]}},
    ]
    for body in bad:
        error(
            await owner.http.put("/v1/business/hours", json=body), 400, Code.INVALID_BUSINESS_HOURS
        )
    error(
        await owner.http.put("/v1/business/hours", json={"days": {"funday": []}}),
        400,
        Code.BAD_REQUEST,
    )
    error(
        await owner.http.put(
            "/v1/business/hours", json={"days": {"monday": [{"open": "25:00", "close": "26:00"}]}}
        ),
        400,
        Code.BAD_REQUEST,
    )
    assert (await owner.http.get("/v1/business")).json()["hours"]["timezone"] == "Europe/Berlin"


async def test_greeting_and_away_settings(relay: Harness) -> None:
    owner, biz = await make_business(relay, "Away Co")
    assert biz["greeting"]["enabled"] is False and biz["away"]["enabled"] is False
    r = await owner.http.put(
        "/v1/business/greeting", json={"enabled": True, "text": " Welcome! ", "inactivity_days": 7}
    )
    assert r.json()["greeting"] == {"enabled": True, "text": "Welcome!", "inactivity_days": 7}
    error(
        await owner.http.put("/v1/business/greeting", json={"enabled": True, "text": "x" * 4097}),
        400,
        Code.INVALID_BUSINESS_PROFILE,
    )
    error(
        await owner.http.put("/v1/business/greeting", json={"enabled": True, "inactivity_days": 0}),
        400,
        Code.BAD_REQUEST,
    )
    error(
        await owner.http.put("/v1/business/greeting", json={"enabled": True, "text": ""}),
        400,
        Code.INVALID_BUSINESS_PROFILE,
    )
    # outside_hours needs selected hours (the business is by appointment)
    error(
        await owner.http.put(
            "/v1/business/away",
            json={"enabled": True, "text": "Back soon", "schedule": "outside_hours"},
        ),
        400,
        Code.INVALID_BUSINESS_PROFILE,
    )
    r = await owner.http.put(
        "/v1/business/away", json={"enabled": True, "text": "Back soon", "schedule": "always"}
    )
    assert r.json()["away_now"] is True
    now = relay.clock.now_ms()
    r = await owner.http.put(
        "/v1/business/away",
        json={
            "enabled": True,
            "text": "Holiday",
            "schedule": "custom",
            "start": now + 3_600_000,
            "end": now + 7_200_000,
        },
    )
    assert r.json()["away_now"] is False
    relay.clock.advance(5400)
    assert (await owner.http.get("/v1/business")).json()["away_now"] is True
    error(
        await owner.http.put(
            "/v1/business/away",
            json={"enabled": True, "text": "x", "schedule": "custom", "start": now, "end": now},
        ),
        400,
        Code.INVALID_BUSINESS_PROFILE,
    )
    # outside business hours, once the hours are set
    await owner.http.put("/v1/business/hours", json={"mode": "selected_hours", "days": {}})
    r = await owner.http.put(
        "/v1/business/away", json={"enabled": True, "text": "Closed", "schedule": "outside_hours"}
    )
    assert r.status_code == 200 and r.json()["away_now"] is True  # no open day at all
    # and the hours cannot then drop the mode the away schedule needs
    error(
        await owner.http.put("/v1/business/hours", json={"mode": "by_appointment"}),
        400,
        Code.INVALID_BUSINESS_PROFILE,
    )
    # settings are the business's own: people never see them
    person = await relay.new_device()
    public = (await person.http.get(f"/v1/business/{owner.account_id}")).json()
    assert "away" not in public and "greeting" not in public


async def test_new_display_name_goes_back_to_review(relay: Harness) -> None:
    owner, _ = await make_business(relay, "First Name")
    r = await owner.http.patch("/v1/business", json={"about": "hello"})
    assert r.json()["display_name_status"] == "pending"
    r = await owner.http.patch("/v1/business", json={"display_name": "Second Name"})
    assert r.json()["display_name"] == "Second Name"
    assert r.json()["display_name_status"] == "pending"


async def test_scoped_ids_and_phone_sharing(relay: Harness) -> None:
    shop, _ = await make_business(relay, "Scoped Shop")
    other_shop, _ = await make_business(relay, "Other Shop")
    person = await relay.new_device()
    seen = (await shop.http.get(f"/v1/business/people/{person.account_id}")).json()
    assert seen["scoped_id"].startswith("TR.") and "phone" not in seen
    again = (await shop.http.get(f"/v1/business/people/{person.account_id}")).json()
    assert again["scoped_id"] == seen["scoped_id"]  # stable
    elsewhere = (await other_shop.http.get(f"/v1/business/people/{person.account_id}")).json()
    assert elsewhere["scoped_id"] != seen["scoped_id"]  # per business
    assert relay.services.business is not None
    assert (
        await relay.services.business.scoped_id(shop.account_id, person.account_id)
        == seen["scoped_id"]
    )
    assert await relay.services.business.person_for(shop.account_id, seen["scoped_id"]) == (
        person.account_id
    )
    assert (
        await relay.services.business.person_for(other_shop.account_id, seen["scoped_id"]) is None
    )
    # the reverse lookup works only for the business that owns the id
    r = await shop.http.get(f"/v1/business/people/by-scoped-id/{seen['scoped_id']}")
    assert r.json()["account_id"] == person.account_id
    error(
        await other_shop.http.get(f"/v1/business/people/by-scoped-id/{seen['scoped_id']}"),
        404,
        Code.NOT_FOUND,
    )
    # the person shares the number with one business only
    r = await person.http.post(f"/v1/business/{shop.account_id}/share-phone")
    assert r.json() == {
        "business_id": shop.account_id,
        "scoped_id": seen["scoped_id"],
        "shared": True,
    }
    shared = (await shop.http.get(f"/v1/business/people/{person.account_id}")).json()
    assert shared["phone"] == person.phone
    assert (
        "phone"
        not in (await other_shop.http.get(f"/v1/business/people/{person.account_id}")).json()
    )
    r = await person.http.delete(f"/v1/business/{shop.account_id}/share-phone")
    assert r.json()["shared"] is False
    assert "phone" not in (await shop.http.get(f"/v1/business/people/{person.account_id}")).json()
    # only businesses see people; a person is not a business
    error(await person.http.get(f"/v1/business/people/{shop.account_id}"), 404, Code.NOT_A_BUSINESS)
    error(
        await person.http.post(f"/v1/business/{person.account_id}/share-phone"),
        404,
        Code.NOT_A_BUSINESS,
    )
    error(await shop.http.get("/v1/business/people/987654321"), 404, Code.UNKNOWN_RECIPIENT)


async def test_concurrent_creates_conflict_cleanly(relay: Harness) -> None:
    owners = [await relay.new_device() for _ in range(6)]
    answers = await asyncio.gather(
        *(
            o.http.post("/v1/business", json={"display_name": "Same", "slug": "same"})
            for o in owners
        )
    )
    assert sorted(r.status_code for r in answers) == [201] + [409] * 5
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {Code.SLUG_TAKEN}
    solo = await relay.new_device()
    answers = await asyncio.gather(
        *(solo.http.post("/v1/business", json={"display_name": f"Solo {i}"}) for i in range(4))
    )
    assert sorted(r.status_code for r in answers) == [201, 409, 409, 409]
    shop = solo
    answers = await asyncio.gather(
        *(
            shop.http.post("/v1/business/quick-replies", json={"shortcut": "hi", "text": str(i)})
            for i in range(4)
        )
    )
    assert sorted(r.status_code for r in answers) == [201, 409, 409, 409]
    assert len((await shop.http.get("/v1/business/quick-replies")).json()) == 1

"""The business gateway end to end: a real relay, the gateway on port 0, people as SecureDevices,
and a webhook receiver that checks signatures."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Harness
from tests.integration.gateway_harness import (
    Business,
    Receiver,
    Uvicorn,
    next_message,
    person,
    start_gateway,
)


@pytest.fixture
async def biz(relay: Harness, db_url: str, tmp_path: Path) -> AsyncIterator[Business]:
    async for business in start_gateway(relay, db_url, tmp_path):
        yield business


@pytest.fixture
async def hook(biz: Business) -> AsyncIterator[Receiver]:
    receiver = Receiver(biz.boot.app_secret, biz.boot.verify_token)
    server = Uvicorn(receiver.app())
    await server.start()
    r = await biz.http.post(
        f"/v22.0/{biz.boot.waba_id}/subscribed_apps",
        json={"override_callback_uri": f"{server.url}/hook", "verify_token": biz.boot.verify_token},
    )
    assert r.status_code == 200, r.text
    try:
        yield receiver
    finally:
        await server.stop()


async def test_person_writes_business_replies(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    sheena = await person(relay, tmp_path)
    try:
        account = biz.boot.relay_account_id
        await sheena.send(account, "When is my flight? é")
        value = await hook.next("messages")
        msg = value["messages"][0]
        assert msg["type"] == "text" and msg["text"]["body"] == "When is my flight? é"
        contact = value["contacts"][0]
        assert contact["user_id"].startswith("TR.") and contact["profile"]["name"] == "Sheena"
        assert value["metadata"]["phone_number_id"] == biz.boot.phone_number_id
        assert b"\\u00e9" in hook.bodies[-1]  # ASCII-escaped, signed as sent

        r = await biz.send(
            {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": contact["user_id"],
                "type": "text",
                "text": {"body": "Tomorrow 10:40", "preview_url": False},
                "context": {"message_id": msg["id"]},
            }
        )
        assert r.status_code == 200, r.text
        sent = r.json()
        wamid = sent["messages"][0]["id"]
        assert sent["contacts"][0]["input"] == contact["user_id"]
        got = await next_message(sheena)
        assert got.content["body"] == "Tomorrow 10:40"
        assert got.content["m.relates_to"]["m.in_reply_to"]["event_id"] == msg["id"][6:]
        statuses = [(await hook.next("statuses"))["statuses"][0] for _ in range(2)]
        assert [s["status"] for s in statuses] == ["sent", "delivered"]
        assert all(s["id"] == wamid for s in statuses)
        assert statuses[0]["pricing"]["category"] == "service"
    finally:
        await sheena.close()


async def test_media_upload_retrieve_download_delete(biz: Business) -> None:
    number = biz.boot.phone_number_id
    png = bytes.fromhex("89504e470d0a1a0a") + b"\x07" * 100
    files = {"file": ('bo"arding pass.png', png, "image/png")}
    data = {"messaging_product": "whatsapp", "type": "image/png"}
    r = await biz.http.post(f"/v22.0/{number}/media", files=files, data=data)
    assert r.status_code == 200, r.text
    media_id = r.json()["id"]
    r = await biz.http.get(f"/v22.0/{media_id}", params={"phone_number_id": number})
    info = r.json()
    assert info["mime_type"] == "image/png" and info["file_size"] == len(png)
    assert info["sha256"] == hashlib.sha256(png).hexdigest()
    r = await biz.http.get(info["url"])
    assert r.content == png and r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == 'attachment; filename="bo_arding_pass.png"'
    async with httpx.AsyncClient() as anon:  # the URL needs the token
        assert (await anon.get(info["url"])).status_code == 401
    # the relay holds ciphertext only
    blob_dir = Path(biz.relay.server.settings.media_dir)
    blobs = [p for p in blob_dir.rglob("*") if p.is_file()]
    assert blobs and all(png not in p.read_bytes() for p in blobs)
    # expiry (30 days for uploads): the record and the relay's blob go
    r = await biz.http.post(f"/v22.0/{number}/media", files=files, data=data)
    other = r.json()["id"]
    month = biz.server.gateway.now_ms() + 31 * 86_400_000
    removed = await biz.server.gateway.do_prune(now_ms=month)
    assert removed[1] == 2
    assert (await biz.http.get(f"/v22.0/{other}")).status_code == 400
    assert not [p for p in blob_dir.rglob("*") if p.is_file() and p.stat().st_size]
    r = await biz.http.get(f"/v22.0/{media_id}")
    assert r.status_code == 400 and r.json()["error"]["error_subcode"] == 33
    r = await biz.http.delete(f"/v22.0/{media_id}")
    assert r.status_code == 400
    # limits: a sticker over 500 KB, no file, no type
    big = {"file": ("s.webp", b"RIFF" + b"\x00" * 600_000, "image/webp")}
    r = await biz.http.post(f"/{number}/media", files=big, data={"type": "image/webp"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 131053
    r = await biz.http.post(f"/{number}/media", data={"type": "image/png"})
    assert r.json()["error"]["code"] == 131008


async def test_inbound_types_and_undecryptable(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    account = biz.boot.relay_account_id
    sheena = await person(relay, tmp_path)
    try:
        await sheena.send(account, "hello")
        first = (await hook.next("messages"))["messages"][0]
        await sheena.send(
            account, {"msgtype": "m.location", "body": "Gate B", "geo_uri": "geo:52.36,13.5"}
        )
        location = (await hook.next("messages"))["messages"][0]
        assert location["type"] == "location"
        assert location["location"] == {"latitude": 52.36, "longitude": 13.5}
        await sheena.send(
            account,
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": "abc", "key": "🎉"}},
            type="m.reaction",
        )
        reaction = (await hook.next("messages"))["messages"][0]
        assert reaction["reaction"] == {"message_id": "wamid.abc", "emoji": "🎉"}
        await sheena.send(
            account,
            {
                "msgtype": "m.text",
                "body": "about that",
                "m.relates_to": {"m.in_reply_to": {"event_id": first["id"][6:]}},
            },
        )
        reply = (await hook.next("messages"))["messages"][0]
        assert reply["context"] == {"from": biz.boot.display_phone_number, "id": first["id"]}
        await sheena.send_attachment(account, b"%PDF-1.7 itinerary", kind="document", body="trip")
        document = (await hook.next("messages"))["messages"][0]
        assert document["type"] == "document" and document["document"]["caption"] == "trip"
        r = await biz.http.get(f"/v22.0/{document['document']['id']}")
        assert (await biz.http.get(r.json()["url"])).content == b"%PDF-1.7 itinerary"
        # an envelope that is not valid ciphertext: reported, never passed on as content
        line = biz.server.gateway.lines[biz.boot.phone_number_id]
        conn = sheena.device._live()
        await conn.send(account, {line.number.device_id: b"not an envelope"})
        broken = (await hook.next("messages"))["messages"][0]
        assert broken["type"] == "unsupported" and broken["errors"][0]["code"] == 131051
        assert "decrypted" in broken["errors"][0]["error_data"]["details"]
    finally:
        await sheena.close()


async def test_stop_keyword_opts_out_at_the_relay(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    account = biz.boot.relay_account_id
    sheena = await person(relay, tmp_path)
    try:
        await sheena.device.api.request(
            "POST", f"/v1/consents/{account}", json={"categories": ["marketing"], "source": "qr"}
        )
        line = biz.server.gateway.lines[biz.boot.phone_number_id]
        await sheena.send(account, "Stop!")
        value = await hook.next("messages")
        assert value["messages"][0]["text"]["body"] == "Stop!"  # the business still sees it
        async with asyncio.timeout(10):
            while True:
                records = await line.biz.consents(sheena.account_id)
                marketing = [r for r in records if r["category"] == "marketing"]
                if marketing and not marketing[0]["opted_in"]:
                    break
                await asyncio.sleep(0.05)
        await sheena.send(account, "stopwatch")  # not a keyword: nothing changes
        await hook.next("messages")
    finally:
        await sheena.close()


async def test_greeting_and_away_messages(
    biz: Business, hook: Receiver, relay: Harness, tmp_path: Path
) -> None:
    line = biz.server.gateway.lines[biz.boot.phone_number_id]
    now = relay.clock.now_ms()
    await line.biz.api.request(
        "PUT", "/v1/business/greeting", json={"enabled": True, "text": "Welcome to Acme Air!"}
    )
    await line.biz.api.request(
        "PUT",
        "/v1/business/away",
        json={
            "enabled": True,
            "text": "We are away; we answer at 9:00.",
            "schedule": "custom",
            "start": now - 3_600_000,
            "end": now + 3_600_000,
        },
    )
    account = biz.boot.relay_account_id
    sheena = await person(relay, tmp_path)
    try:
        await sheena.send(account, "hello?")
        got = [(await next_message(sheena)).content["body"] for _ in range(2)]
        assert got == ["Welcome to Acme Air!", "We are away; we answer at 9:00."]
        await hook.next("messages")
        # the second message: no greeting (she wrote recently), no second away message today
        await sheena.send(account, "anyone?")
        msg = (await hook.next("messages"))["messages"][0]
        r = await biz.send(
            {"messaging_product": "whatsapp", "to": msg["from"], "text": {"body": "Yes, here"}}
        )
        assert r.status_code == 200, r.text
        assert (await next_message(sheena)).content["body"] == "Yes, here"
    finally:
        await sheena.close()

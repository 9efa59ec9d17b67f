"""pywa 4.5 (pywa_async) against a live relay and gateway, unchanged but for a transport that
sends graph.facebook.com to the gateway (the reference's approach B).

pywa sends every message type and a template, uploads and downloads media, reads and updates
the business profile, creates and deletes a template, gets a typed exception for a 131047, and
receives messages and statuses through its own webhook routes with signature checks on, while
a person on the other side (a real SecureDevice) decrypts everything and replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pywa.types.templates import (
    BodyText,
    Currency,
    DateTime,
    FooterText,
    Template,
    TemplateLanguage,
    TemplateStatusUpdate,
)
from pywa_async import WhatsApp
from pywa_async.errors import ReEngagementMessage
from pywa_async.types import (
    Button,
    CallbackButton,
    Contact,
    Message,
    MessageStatus,
    Section,
    SectionList,
    SectionRow,
    URLButton,
)
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import Harness
from tests.integration.gateway_harness import Business, Uvicorn, next_message, person, start_gateway
from tresen.client.media import EncryptedFile, fetch_attachment
from tresen.client.secure import Message as Decrypted
from tresen.client.secure import Receipt, SecureDevice
from tresen.gateway.watch import do_poll
from tresen.protocol.frames import TypingNotice
from tresen.relay.admin.models import AdminPrincipal

PNG = bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 64
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 24
CLIP = b"\x00\x00\x00\x18ftypmp42" + b"\x11" * 500


class ToGateway(httpx.AsyncBaseTransport):
    """Rewrites graph.facebook.com and api.facebook.com to the gateway; nothing else changes."""

    def __init__(self, gateway: str) -> None:
        self.target = httpx.URL(gateway)
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host in ("graph.facebook.com", "api.facebook.com"):
            request.url = request.url.copy_with(
                scheme="http", host=self.target.host, port=self.target.port
            )
            request.headers["host"] = f"{self.target.host}:{self.target.port}"
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Setup:
    biz: Business
    wa: WhatsApp
    files_url: str
    messages: asyncio.Queue[Message]
    statuses: asyncio.Queue[MessageStatus]
    buttons: asyncio.Queue[CallbackButton]
    template_updates: asyncio.Queue[TemplateStatusUpdate]
    sheena: SecureDevice


@pytest.fixture
async def biz(relay: Harness, db_url: str, tmp_path: Path) -> AsyncIterator[Business]:
    async for business in start_gateway(relay, db_url, tmp_path):
        yield business


@pytest.fixture
async def setup(biz: Business, relay: Harness, tmp_path: Path) -> AsyncIterator[Setup]:
    boot = biz.boot

    async def clip(_: Any) -> Response:
        return Response(CLIP, media_type="video/mp4")

    app = Starlette(routes=[Route("/files/clip.mp4", clip)])
    session = httpx.AsyncClient(transport=ToGateway(biz.url), timeout=30)
    wa = WhatsApp(
        phone_id=boot.phone_number_id,
        token=boot.access_token,
        session=session,
        api_version="22.0",
        waba_id=boot.waba_id,
        app_secret=boot.app_secret,
        verify_token=boot.verify_token,
        server=app,
        webhook_endpoint="/hook",
        validate_updates=True,
        filter_updates=True,
    )
    messages: asyncio.Queue[Message] = asyncio.Queue()
    statuses: asyncio.Queue[MessageStatus] = asyncio.Queue()
    buttons: asyncio.Queue[CallbackButton] = asyncio.Queue()
    template_updates: asyncio.Queue[TemplateStatusUpdate] = asyncio.Queue()

    @wa.on_message()
    async def on_message(_: WhatsApp, msg: Message) -> None:
        await messages.put(msg)

    @wa.on_message_status()
    async def on_status(_: WhatsApp, status: MessageStatus) -> None:
        await statuses.put(status)

    @wa.on_template_status_update()
    async def on_template(_: WhatsApp, update: TemplateStatusUpdate) -> None:
        await template_updates.put(update)

    @wa.on_callback_button()
    async def on_button(_: WhatsApp, button: CallbackButton) -> None:
        await buttons.put(button)

    server = Uvicorn(app)
    await server.start()
    # the gateway runs Meta's handshake against pywa's own verification route
    r = await biz.http.post(
        f"/v22.0/{boot.waba_id}/subscribed_apps",
        json={"override_callback_uri": f"{server.url}/hook", "verify_token": boot.verify_token},
    )
    assert r.status_code == 200, r.text
    sheena = await person(relay, tmp_path)
    try:
        yield Setup(biz, wa, server.url, messages, statuses, buttons, template_updates, sheena)
    finally:
        await sheena.close()
        await session.aclose()
        await server.stop()


async def first_contact(s: Setup) -> Message:
    await s.sheena.send(s.biz.boot.relay_account_id, "Hi, I need help with my booking")
    async with asyncio.timeout(10):
        msg = await s.messages.get()
    assert msg.text == "Hi, I need help with my booking"
    assert msg.from_user.bsuid.startswith("TR.")
    assert msg.from_user.name == "Sheena"
    return msg


async def received(s: Setup) -> Decrypted:
    return await next_message(s.sheena)


async def attachment(s: Setup, got: Decrypted) -> bytes:
    info = EncryptedFile.from_json(got.content["file"])
    return await fetch_attachment(s.sheena.device.api, info)


async def test_pywa_sends_every_type(setup: Setup) -> None:
    s, wa = setup, setup.wa
    msg = await first_contact(s)
    to = msg.from_user.bsuid

    sent = await wa.send_message(to=to, text="Your flight LY001 departs 10:40")
    assert sent.id.startswith("wamid.")
    got = await received(s)
    assert got.content["msgtype"] == "m.text"
    assert got.content["body"] == "Your flight LY001 departs 10:40"

    await wa.send_message(
        to=to,
        text="Pick one",
        header="Seat",
        footer="Acme Air",
        buttons=[Button(title="Yes", callback_data="y"), Button(title="No", callback_data="n")],
    )
    got = await received(s)
    buttons = got.content["tresen.cloud"]["interactive"]["action"]["buttons"]
    assert [b["reply"]["id"] for b in buttons] == ["y", "n"]
    assert "[Yes]" in got.content["body"]

    await wa.send_message(
        to=to,
        text="Choose a seat",
        buttons=SectionList(
            button_title="Seats",
            sections=[
                Section(
                    title="Window",
                    rows=[SectionRow(title="12A", callback_data="12A", description="Front")],
                )
            ],
        ),
    )
    got = await received(s)
    assert got.content["tresen.cloud"]["interactive"]["type"] == "list"

    await wa.send_message(
        to=to, text="Manage booking", buttons=URLButton(title="Open", url="https://acme.test/b")
    )
    got = await received(s)
    assert got.content["tresen.cloud"]["interactive"]["type"] == "cta_url"

    media = await wa.upload_media(media=PNG, mime_type="image/png", filename="bp.png")
    await wa.send_image(to=to, image=media.id, caption="Boarding pass")
    got = await received(s)
    assert got.content["msgtype"] == "m.image" and got.content["body"] == "Boarding pass"
    assert await attachment(s, got) == PNG

    await wa.send_video(to=to, video=f"{s.files_url}/files/clip.mp4", caption="Safety")
    got = await received(s)
    assert got.content["msgtype"] == "m.video" and await attachment(s, got) == CLIP

    voice = await wa.upload_media(media=b"OggS" + b"\x01" * 100, mime_type="audio/ogg")
    await wa.send_audio(to=to, audio=voice.id, is_voice=True)
    got = await received(s)
    assert got.content["msgtype"] == "m.audio" and got.content["info"]["voice"] is True

    doc = await wa.upload_media(media=b"%PDF-1.4 ticket", mime_type="application/pdf")
    await wa.send_document(to=to, document=doc.id, filename="ticket.pdf", caption="Ticket")
    got = await received(s)
    assert got.content["msgtype"] == "m.file" and got.content["info"]["filename"] == "ticket.pdf"

    sticker = await wa.upload_media(media=WEBP, mime_type="image/webp")
    await wa.send_sticker(to=to, sticker=sticker.id)
    got = await received(s)
    assert got.content["msgtype"] == "m.sticker"

    await wa.send_location(to=to, latitude=32.0, longitude=34.88, name="TLV", address="Airport")
    got = await received(s)
    assert got.content["geo_uri"] == "geo:32.0,34.88"

    await wa.send_contact(
        to=to,
        contact=Contact(
            name=Contact.Name(formatted_name="Acme Desk", first_name="Acme"),
            phones=[Contact.Phone(phone="+15550001111", type="WORK")],
        ),
    )
    got = await received(s)
    assert got.content["tresen.cloud"]["contacts"][0]["name"]["formatted_name"] == "Acme Desk"

    await wa.send_reaction(to=to, emoji="\U0001f44d", message_id=msg.id)
    got = await received(s)
    relates = got.content["m.relates_to"]
    assert relates["rel_type"] == "m.annotation" and relates["key"] == "\U0001f44d"

    await wa.send_message(to=to, text="Replying", reply_to_message_id=msg.id)
    got = await received(s)
    assert got.content["m.relates_to"]["m.in_reply_to"]["event_id"] == msg.id[6:]

    await wa.mark_message_as_read(message_id=msg.id)
    await wa.indicate_typing(message_id=msg.id)
    async with asyncio.timeout(10):
        typing = await s.sheena.notices.get()
    assert isinstance(typing, TypingNotice) and typing.account == s.biz.boot.relay_account_id
    async with asyncio.timeout(10):
        while True:
            event = await s.sheena.recv(None)
            if isinstance(event, Receipt) and event.kind == "read":
                assert event.id == msg.id[6:]
                break

    # statuses arrive through pywa's webhook handling: sent then delivered for the first one
    async with asyncio.timeout(10):
        first = [await s.statuses.get(), await s.statuses.get()]
    assert [str(x.status) for x in first] == ["sent", "delivered"]
    assert first[0].id == sent.id and first[0].pricing is not None


async def test_pywa_template_profile_media_and_errors(
    setup: Setup, relay: Harness, tmp_path: Path
) -> None:
    s, wa = setup, setup.wa
    msg = await first_contact(s)
    to = msg.from_user.bsuid

    created = await wa.create_template(
        template=Template(
            name="flight_update",
            language=TemplateLanguage.ENGLISH_US,
            category="UTILITY",
            components=[
                BodyText("Flight {{1}} costs {{2}} and departs {{3}}.", "LY001", "$100", "Feb 25"),
                FooterText(text="Acme Air"),
            ],
        )
    )
    assert str(created.status) == "PENDING"
    admin = AdminPrincipal(admin_id=None, name="pywa-test")
    await relay.services.templates.do_review(admin, int(created.id), _approve())
    await do_poll(s.biz.server.gateway, _line(s))  # the review, reported by webhook
    async with asyncio.timeout(10):
        update = await s.template_updates.get()
    assert str(update.new_status) == "APPROVED" and update.template_name == "flight_update"
    await wa.send_template(
        to=to,
        name="flight_update",
        language=TemplateLanguage.ENGLISH_US,
        params=[
            BodyText.params(
                "LY001",
                Currency(fallback_value="$100.99", code="USD", amount_1000=100990),
                DateTime(fallback_value="Feb 25"),
            )
        ],
    )
    got = await received(s)
    assert got.content["body"] == "Flight LY001 costs $100.99 and departs Feb 25.\nAcme Air"
    assert got.content["tresen.cloud"]["template"]["category"] == "UTILITY"

    profile = await wa.get_business_profile()
    assert str(profile.industry) == "TRAVEL"
    await wa.update_business_profile(about="We fly", websites=["https://acme.test"])
    profile = await wa.get_business_profile()
    assert profile.about == "We fly" and list(profile.websites or []) == ["https://acme.test"]

    media = await wa.upload_media(media=PNG, mime_type="image/png", filename="bp.png")
    url = await wa.get_media_url(media.id)
    assert url.mime_type == "image/png" and url.sha256
    assert await wa.get_media_bytes(url.url) == PNG
    await wa.delete_media(media.id)
    with pytest.raises(Exception, match="does not exist"):
        await wa.get_media_url(media.id)

    # a person who never wrote: a free-form message is outside any window
    stranger = await person(relay, tmp_path, "Bob")
    try:
        scoped = (await s.biz.server.gateway.person(_line(s), stranger.account_id)).scoped_id
        with pytest.raises(ReEngagementMessage) as caught:
            await wa.send_message(to=scoped, text="Hello?")
        assert caught.value.code == 131047
    finally:
        await stranger.close()

    assert await wa.delete_template(template_name="flight_update")
    assert await wa.register_phone_number(pin="123456")


async def test_pywa_receives_replies_and_media(setup: Setup) -> None:
    s, wa = setup, setup.wa
    msg = await first_contact(s)
    to = msg.from_user.bsuid
    sent = await wa.send_message(
        to=to, text="Pick one", buttons=[Button(title="Yes", callback_data="y")]
    )
    await received(s)
    account = s.biz.boot.relay_account_id
    await s.sheena.send(
        account,
        {
            "msgtype": "tresen.interactive",
            "body": "Yes",
            "tresen.cloud": {
                "type": "interactive",
                "interactive": {
                    "type": "button_reply",
                    "button_reply": {"id": "y", "title": "Yes"},
                },
            },
            "m.relates_to": {"m.in_reply_to": {"event_id": sent.id[6:]}},
        },
    )
    async with asyncio.timeout(10):
        button = await s.buttons.get()
    assert button.data == "y" and button.title == "Yes"
    assert button.reply_to_message is not None and button.reply_to_message.id == sent.id

    await s.sheena.send_attachment(account, PNG, kind="image", body="my passport")
    async with asyncio.timeout(10):
        image = await s.messages.get()
    assert image.image is not None and image.caption == "my passport"
    url = await wa.get_media_url(image.image.id)
    assert await wa.get_media_bytes(url.url) == PNG

    # the person reads the business's message: a read status through pywa
    await s.sheena.device._live().read(account, [sent.id[6:]])
    async with asyncio.timeout(10):
        while True:
            status = await s.statuses.get()
            if str(status.status) == "read":
                break
    assert status.id == sent.id and status.from_user.bsuid == to


def _approve() -> Any:
    from tresen.relay.templates.models import TemplateReview

    return TemplateReview(status="APPROVED")


def _line(s: Setup) -> Any:
    return s.biz.server.gateway.lines[s.biz.boot.phone_number_id]

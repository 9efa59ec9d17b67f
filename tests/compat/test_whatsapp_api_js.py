"""whatsapp-api-js 6.3 (Node) against a live relay and gateway, redirected with its fetch
ponyfill: it verifies the webhook subscription (it requires ``hub.mode=subscribe``), receives a
message and statuses through its own signature check (which re-escapes the body before the
HMAC), and sends text, buttons, location, an image by link, a reaction, a template and a read
mark, which a person (a real SecureDevice) decrypts. Node and npm come from the environment;
the package is pinned in ``js/package-lock.json`` and installed on first use."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import Harness
from tests.integration.gateway_harness import Business, Uvicorn, next_message, person, start_gateway
from tresen.client.secure import Receipt
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.templates.models import TemplateReview

JS = Path(__file__).parent / "js"
NODE, NPM = shutil.which("node"), shutil.which("npm")
if NODE is None or NPM is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("Node and npm are required for the compat tests in CI")
    pytest.skip("Node/npm not installed (required when CI=true)", allow_module_level=True)
PNG = bytes.fromhex("89504e470d0a1a0a") + b"\x01" * 40


def _install() -> None:
    if (JS / "node_modules" / "whatsapp-api-js").is_dir():
        return
    assert NPM is not None
    subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=JS, check=True, timeout=600
    )


class Client:
    """The Node process: commands in, JSON events out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.n = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            event = json.loads(line)
            await self.queue(event["event"]).put(event)

    def queue(self, kind: str) -> asyncio.Queue[dict[str, Any]]:
        return self.events.setdefault(kind, asyncio.Queue())

    async def next(self, kind: str) -> dict[str, Any]:
        async with asyncio.timeout(15):
            return await self.queue(kind).get()

    async def run(self, op: str, **args: Any) -> dict[str, Any]:
        self.n += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, "n": self.n, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        result = await self.next("result")
        assert result["n"] == self.n and "error" not in result, result
        body: dict[str, Any] = result["body"]
        return body


@pytest.fixture
async def biz(relay: Harness, db_url: str, tmp_path: Path) -> AsyncIterator[Business]:
    await asyncio.to_thread(_install)
    async for business in start_gateway(relay, db_url, tmp_path):
        yield business


@pytest.fixture
async def client(biz: Business) -> AsyncIterator[Client]:
    boot = biz.boot
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE, "gateway-client.mjs", biz.url, boot.access_token, boot.app_secret,
        boot.verify_token, cwd=JS, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    node = Client(proc)
    try:
        yield node
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        async with asyncio.timeout(10):
            await proc.wait()
        node.reader.cancel()


async def test_whatsapp_api_js(
    biz: Business, client: Client, relay: Harness, tmp_path: Path
) -> None:
    boot = biz.boot
    port = (await client.next("ready"))["port"]
    r = await biz.http.post(
        f"/v22.0/{boot.waba_id}/subscribed_apps",
        json={
            "override_callback_uri": f"http://127.0.0.1:{port}/",
            "verify_token": boot.verify_token,
        },
    )
    assert r.status_code == 200, r.text

    async def png(_: Any) -> Response:
        return Response(PNG, media_type="image/png")

    files = Uvicorn(Starlette(routes=[Route("/pass.png", png)]))
    await files.start()
    sheena = await person(relay, tmp_path, "Zoë")
    try:
        await sheena.send(boot.relay_account_id, "Grüße 👋")
        got = await client.next("message")
        assert got["message"]["text"]["body"] == "Grüße 👋"  # signature checked after re-escaping
        assert got["contact"]["profile"]["name"] == "Zoë"
        to = got["contact"]["user_id"]
        phone = boot.phone_number_id

        sent = await client.run(
            "text", phone_id=phone, to=to, body="Hallo Zoë", context=got["message"]["id"]
        )
        wamid = sent["messages"][0]["id"]
        message = await next_message(sheena)
        assert message.content["body"] == "Hallo Zoë"
        assert (
            message.content["m.relates_to"]["m.in_reply_to"]["event_id"] == got["message"]["id"][6:]
        )
        statuses = [await client.next("status"), await client.next("status")]
        assert [(s["id"], s["status"]) for s in statuses] == [(wamid, "sent"), (wamid, "delivered")]

        await client.run("buttons", phone_id=phone, to=to, body="OK?", buttons=[["y", "Yes"]])
        message = await next_message(sheena)
        assert (
            message.content["tresen.cloud"]["interactive"]["action"]["buttons"][0]["reply"]["id"]
            == "y"
        )

        await client.run(
            "location", phone_id=phone, to=to, latitude=52.5, longitude=13.4, name="BER"
        )
        assert (await next_message(sheena)).content["geo_uri"] == "geo:52.5,13.4"

        await client.run(
            "image", phone_id=phone, to=to, link=f"{files.url}/pass.png", caption="Pass"
        )
        message = await next_message(sheena)
        assert message.content["msgtype"] == "m.image"
        assert await sheena.fetch_attachment(message) == PNG

        await client.run(
            "reaction", phone_id=phone, to=to, message_id=got["message"]["id"], emoji="❤"
        )
        assert (await next_message(sheena)).content["m.relates_to"]["key"] == "❤"

        r = await biz.http.post(
            f"/v22.0/{boot.waba_id}/message_templates",
            json={
                "name": "fare", "language": "de", "category": "UTILITY",
                "components": [{"type": "BODY", "text": "Flug {{1}} kostet {{2}} am {{3}}.",
                                "example": {"body_text": [["LH1", "10 €", "1. Mai"]]}}],
            },
        )  # fmt: skip
        assert r.status_code == 200, r.text
        await relay.services.templates.do_review(
            AdminPrincipal(admin_id=None, name="js-test"),
            int(r.json()["id"]),
            TemplateReview(status="APPROVED"),
        )
        # the review's webhook, signed and checked by the library's own verifier
        assert (await client.next("other"))["field"] == "message_template_status_update"
        await client.run(
            "template", phone_id=phone, to=to, name="fare", language="de",
            params=[
                {"text": "LH1"}, {"currency": [99500, "EUR", "99,50 €"]}, {"date_time": "1. Mai"},
            ],
        )  # fmt: skip
        assert (await next_message(sheena)).content["body"] == "Flug LH1 kostet 99,50 € am 1. Mai."

        assert (await client.run("read", phone_id=phone, message_id=got["message"]["id"])) == {
            "success": True
        }
        async with asyncio.timeout(10):
            while not (isinstance(e := await sheena.recv(None), Receipt) and e.kind == "read"):
                pass
        assert client.queue("rejected").empty()
    finally:
        await sheena.close()
        await files.stop()

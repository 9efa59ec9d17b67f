"""With ``public_url`` set, short links and the QR codes point at the public address, not at
the address the request came in on (a relay behind a proxy)."""

from __future__ import annotations

import io
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from ..conftest import Harness


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"public_url": "https://chat.example/"}


async def test_links_use_the_public_url(relay: Harness) -> None:
    owner = await relay.new_device()
    r = await owner.http.post("/v1/business", json={"display_name": "Proxy Pub"})
    assert r.json()["short_link"] == "https://chat.example/b/proxy-pub"
    person = await relay.new_device()
    profile = (await person.http.get(f"/v1/business/{owner.account_id}")).json()
    assert profile["short_link"] == "https://chat.example/b/proxy-pub"
    png = await person.http.get(f"/v1/business/{owner.account_id}/qr.png")
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)).convert("L"))
    assert [d.text for d in decoded] == ["https://chat.example/b/proxy-pub?src=qr"]

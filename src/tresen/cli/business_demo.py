"""``tresen business demo``: everything in one process on SQLite, to try the Cloud API.

It starts a relay, a gateway with a sample business ("Acme Air"), and a person's SDK client
(a SecureDevice) that opted in to the business and wrote to it (so its 24-hour window is open);
prints the gateway's base URL, the ids and the token, and five lines of pywa that send the
person a message; then prints, decrypted, everything the person receives. The state lives in
``--data-dir`` (a fresh temporary folder by default).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tresen.client.device import AsyncDevice
from tresen.client.secure import Message, SecureDevice
from tresen.config import load
from tresen.gateway.app import GatewayServer
from tresen.gateway.bootstrap import create_number
from tresen.gateway.models import Bootstrap
from tresen.relay.accounts.senders import MemorySender
from tresen.relay.server import RelayServer


@dataclass
class Demo:
    relay: RelayServer
    gateway: GatewayServer
    boot: Bootstrap
    person: SecureDevice
    to: str

    def pywa_lines(self) -> list[str]:
        host, port = self.gateway.url.removeprefix("http://").split(":")
        return [
            "import httpx, pywa",
            "class T(httpx.HTTPTransport):  # sends graph.facebook.com to the gateway",
            f"    def handle_request(self, r): r.url = r.url.copy_with(scheme='http', "
            f"host='{host}', port={port}); return super().handle_request(r)",
            f"wa = pywa.WhatsApp(phone_id='{self.boot.phone_number_id}', "
            f"token='{self.boot.access_token}', session=httpx.Client(transport=T()))",
            f"wa.send_message(to='{self.to}', text='Hello from pywa!')",
        ]


async def start_demo(data_dir: Path, *, port: int = 8090, relay_port: int = 0) -> Demo:
    codes = MemorySender()
    settings = load(
        environ={},
        overrides={
            "host": "127.0.0.1",
            "port": relay_port,
            "db": f"sqlite:///{data_dir}/relay.db",
            "media_dir": str(data_dir / "media"),
        },
    )
    relay = RelayServer(settings, code_sender=codes)
    await relay.start()
    gateway = GatewayServer(f"sqlite:///{data_dir}/gateway.db", data_dir / "gateway", port=port)
    try:
        await gateway.start()
        assert gateway.app.db is not None

        async def code(phone: str) -> str:
            return codes.codes[phone]

        number, boot = await create_number(
            gateway.app.db,
            data_dir / "gateway",
            relay.url,
            f"+4930{secrets.randbelow(10**7):07d}",
            code,
            name="Acme Air",
            vertical="TRAVEL",
            base_url=gateway.url,
        )
        line = await gateway.gateway.open_line(number)
        phone = f"+49151{secrets.randbelow(10**8):08d}"
        await AsyncDevice.request_code(relay.url, phone)
        device = await AsyncDevice.register(relay.url, phone, codes.codes[phone], "demo phone")
        await device.api.update_me(display_name="Sheena")
        person = SecureDevice.open(device, data_dir / "person.crypto", key=secrets.token_bytes(32))
        await person.start()
    except BaseException:
        await gateway.stop()
        await relay.stop()
        raise
    business = boot.relay_account_id
    await device.api.request(
        "POST", f"/v1/consents/{business}", json={"categories": ["utility"], "source": "link"}
    )
    await person.send(business, "Hi Acme, I opted in.")
    to = (await gateway.gateway.person(line, person.account_id)).scoped_id
    return Demo(relay, gateway, boot, person, to)


async def stop_demo(demo: Demo) -> None:
    await demo.person.close()
    await demo.gateway.stop()
    await demo.relay.stop()


async def run_demo(
    data_dir: Path | None,
    port: int,
    show: Callable[[str], None],
    received: Callable[[Message], None],
) -> None:
    with contextlib.ExitStack() as stack:
        folder = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("httpx", "tresen"):  # every request logs at INFO: keep the screen clean
            logging.getLogger(name).setLevel(logging.WARNING)
        demo = await start_demo(folder, port=port)
        try:
            show(f"relay            {demo.relay.url}")
            show(f"gateway          {demo.gateway.url}  (OpenAPI: /openapi.json)")
            for key in ("phone_number_id", "waba_id", "access_token", "app_secret"):
                show(f"{key:16} {getattr(demo.boot, key)}")
            show(f"person           Sheena, user_id {demo.to} (opted in, wrote first)")
            show("\n# send her a message with pywa (pip install pywa):")
            for line in demo.pywa_lines():
                show(line)
            show("\nwhat Sheena's phone receives, decrypted (Ctrl-C to stop):")
            while True:
                event = await demo.person.recv(None)
                if isinstance(event, Message):
                    received(event)
        finally:
            await stop_demo(demo)


def describe(message: Message) -> str:
    content: dict[str, Any] = message.content
    kind = str(content.get("msgtype", message.type))
    return f"[{kind}] {content.get('body', '')}"

"""A device of an account: credentials, the HTTP API and the live connection in one object."""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import msgspec

from tresen.client import media
from tresen.client.api import RelayAPI
from tresen.client.connection import Connection, new_envelope_id
from tresen.errors import DeviceListMismatch, Unavailable
from tresen.protocol.frames import BizMeta, Item


class Credentials(msgspec.Struct):
    """What a device keeps between runs (its token is a secret)."""

    url: str
    account_id: int
    device_id: int
    token: str
    phone: str = ""


class AsyncDevice:
    def __init__(
        self, credentials: Credentials, *, format: Literal["msgpack", "json"] = "msgpack"
    ) -> None:
        self.credentials = credentials
        self.api = RelayAPI(credentials.url, credentials.token)
        self.format = format
        self.conn: Connection | None = None
        #: current devices per account, learnt from the relay's device_list_mismatch answers
        self.device_lists: dict[int, list[int]] = {}

    @property
    def account_id(self) -> int:
        return self.credentials.account_id

    @property
    def device_id(self) -> int:
        return self.credentials.device_id

    @classmethod
    async def request_code(cls, url: str, phone: str) -> dict[str, Any]:
        async with RelayAPI(url) as api:
            return await api.request_code(phone)

    @classmethod
    async def register(
        cls, url: str, phone: str, code: str, device_name: str = "", *, takeover: bool = False
    ) -> AsyncDevice:
        async with RelayAPI(url) as api:
            body = await api.register(phone, code, device_name, takeover=takeover)
        return cls(Credentials(url=url, **body))

    @classmethod
    async def link(cls, url: str, code: str, device_name: str = "") -> AsyncDevice:
        async with RelayAPI(url) as api:
            body = await api.link(code, device_name)
        return cls(Credentials(url=url, **body))

    async def connect(self, **options: Any) -> Connection:
        self.conn = Connection(
            self.credentials.url, self.credentials.token, format=self.format, **options
        )
        await self.conn.connect()
        return self.conn

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        await self.api.aclose()

    async def __aenter__(self) -> AsyncDevice:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _live(self) -> Connection:
        if self.conn is None:
            raise Unavailable("not connected: call connect() first")
        return self.conn

    async def send(
        self,
        to: int,
        encrypt: Callable[[int], bytes],
        *,
        id: str | None = None,
        attempts: int = 3,
        biz: BizMeta | None = None,
    ) -> str:
        """Send to every current device of ``to`` (and our own other devices).

        ``encrypt(device_id)`` makes the ciphertext for one device. When the relay says the
        device list changed, the new list is taken and the envelope is encrypted again.
        """
        envelope_id = id or new_envelope_id()
        for _ in range(attempts):
            targets = set(self.device_lists.get(to, []))
            if to != self.account_id:
                targets |= set(self.device_lists.get(self.account_id, []))
            targets.discard(self.device_id)
            try:
                return await self._live().send(
                    to, {d: encrypt(d) for d in sorted(targets)}, id=envelope_id, biz=biz
                )
            except DeviceListMismatch as exc:
                for account, devices in exc.fields.get("devices", {}).items():
                    self.device_lists[int(account)] = [int(d) for d in devices]
        raise Unavailable(f"the device list of account {to} kept changing; try again")

    async def recv(self, timeout: float | None = 10.0) -> Item:
        return await self._live().recv(timeout)

    # media: encrypted here, ciphertext on the relay (see tresen.client.media)
    async def upload_attachment(
        self,
        source: bytes | str | PathLike[str],
        *,
        kind: media.MediaKind,
        recipients: media.Recipients | None = None,
        progress: media.Progress | None = None,
    ) -> media.Attachment:
        """Encrypt and upload; ``recipients`` are accounts or (account, device) pairs."""
        return await media.upload_attachment(
            self.api, source, kind=kind, recipients=recipients, progress=progress
        )

    async def download_attachment(
        self,
        file: media.EncryptedFile,
        target: str | PathLike[str],
        *,
        progress: media.Progress | None = None,
    ) -> Path:
        """Download, verify and decrypt into ``target`` (created only if the hash matches)."""
        return await media.download_attachment(self.api, file, Path(target), progress=progress)

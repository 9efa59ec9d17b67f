"""Media for a business number: uploads are encrypted here and stored as ciphertext on the
relay's blob store; inbound attachments are recorded by reference and decrypted on download.

A media id (digits, as the Cloud API's) names a row of ``gw_media``: the attachment's
encrypted-file record (key, IV, hashes, relay blob), its MIME type, the SHA-256 and size of the
plaintext. Uploaded ids live 30 days, inbound ones 7 (Meta's figures); the relay's own blob
expiry applies as well.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from tresen.client.api import RelayAPI
from tresen.client.media import EncryptedFile, MediaKind, fetch_attachment, upload_attachment
from tresen.errors import TresenError
from tresen.gateway import store
from tresen.gateway.cloudapi.errors import GraphError, from_relay, unknown_node
from tresen.storage.engine import Database, Row, Txn

UPLOAD_TTL_MS = 30 * 86_400_000
INBOUND_TTL_MS = 7 * 86_400_000
MB = 1024 * 1024
#: the Cloud API's limits per media type
LIMITS = {"image": 5 * MB, "video": 16 * MB, "audio": 16 * MB, "document": 100 * MB}
LIMITS |= {"sticker": 500 * 1024}
MIME_KIND = {"image/jpeg": "image", "image/png": "image", "image/webp": "sticker"}


def kind_of(mime: str) -> MediaKind:
    if mime in MIME_KIND:
        return MIME_KIND[mime]  # type: ignore[return-value]
    major = mime.split("/", 1)[0]
    if major in ("video", "audio", "image"):
        return major  # type: ignore[return-value]
    return "document"


class MediaRecord(msgspec.Struct, kw_only=True):
    id: str
    number_id: str
    origin: str
    file: EncryptedFile
    mime_type: str
    sha256: str
    size: int
    filename: str
    created_at: int
    expires_at: int

    @classmethod
    def from_row(cls, row: Row) -> MediaRecord:
        return cls(
            id=row[0],
            number_id=row[1],
            origin=row[2],
            file=EncryptedFile.from_json(str(row[3])),
            mime_type=row[4],
            sha256=row[5],
            size=int(row[6]),
            filename=row[7],
            created_at=int(row[8]),
            expires_at=int(row[9]),
        )


def new_media_id() -> str:
    return str(10**15 + secrets.randbelow(9 * 10**15))


class MediaService:
    def __init__(
        self, db: Database, *, clock: Callable[[], float] = time.time, fetch_limit: int = 16 * MB
    ) -> None:
        self.db = db
        self.clock = clock
        self.fetch_limit = fetch_limit
        self.http = httpx.AsyncClient(timeout=30, follow_redirects=True)

    async def close(self) -> None:
        await self.http.aclose()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def do_upload(
        self, api: RelayAPI, number: str, data: bytes, mime: str, filename: str = ""
    ) -> MediaRecord:
        """Encrypt and upload to the relay; the recipients get grants when a message names it."""
        kind = kind_of(mime)
        if not data:
            raise GraphError(131053, "the file is empty")
        if len(data) > LIMITS[kind]:
            raise GraphError(
                131053, f"{kind} files may be at most {LIMITS[kind]} bytes ({len(data)} given)"
            )
        try:
            # a Cloud API media id is reusable for 30 days: keep it past its first fetches
            attachment = await upload_attachment(api, data, kind=kind, keep=True)
        except TresenError as exc:
            raise from_relay(exc) from exc
        now = self.now_ms()
        record = MediaRecord(
            id=new_media_id(),
            number_id=number,
            origin="upload",
            file=attachment.file,
            mime_type=mime,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            filename=filename,
            created_at=now,
            expires_at=now + UPLOAD_TTL_MS,
        )
        await self._insert(record)
        return record

    async def do_upload_link(self, api: RelayAPI, number: str, link: str) -> MediaRecord:
        """Fetch a ``link`` medium (as Meta does) and upload it encrypted."""
        try:
            response = await self.http.get(link)
        except httpx.HTTPError as exc:
            raise GraphError(131052, f"cannot fetch {link}: {exc}") from exc
        if not response.is_success:
            raise GraphError(131052, f"fetching {link} answered HTTP {response.status_code}")
        mime = response.headers.get("content-type", "application/octet-stream").split(";")[0]
        name = link.rsplit("/", 1)[-1].split("?")[0]
        return await self.do_upload(api, number, response.content, mime.strip(), name)

    async def do_record_inbound(
        self, api: RelayAPI, number: str, file: dict[str, Any], mime: str, filename: str
    ) -> MediaRecord:
        """Record a person's attachment; fetched and checked once for its hash and size."""
        info = EncryptedFile.from_json(file)
        try:
            data = await fetch_attachment(api, info, max_bytes=self.fetch_limit)
        except TresenError as exc:
            raise from_relay(exc) from exc
        now = self.now_ms()
        record = MediaRecord(
            id=new_media_id(),
            number_id=number,
            origin="inbound",
            file=info,
            mime_type=mime,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            filename=filename,
            created_at=now,
            expires_at=now + INBOUND_TTL_MS,
        )
        await self._insert(record)
        return record

    async def _insert(self, record: MediaRecord) -> None:
        row = (
            record.id,
            record.number_id,
            record.origin,
            record.file.to_json().decode(),
            record.mime_type,
            record.sha256,
            record.size,
            record.filename,
            record.created_at,
            record.expires_at,
        )

        async def write(txn: Txn) -> None:
            await store.insert_media(txn, row)

        await self.db.run_interaction("gw_media_insert", write)

    async def access_media(self, number_ids: set[str], media_id: str) -> MediaRecord | None:
        """The record if it belongs to one of ``number_ids`` and has not expired."""
        if not media_id.isdigit():
            return None

        async def read(txn: Txn) -> Row | None:
            return await store.media(txn, media_id)

        row = await self.db.run_interaction("gw_media_get", read, write=False)
        if row is None or row[1] not in number_ids or int(row[9]) <= self.now_ms():
            return None
        return MediaRecord.from_row(row)

    async def download(self, api: RelayAPI, record: MediaRecord) -> bytes:
        try:
            return await fetch_attachment(api, record.file, max_bytes=max(LIMITS.values()))
        except TresenError as exc:
            raise from_relay(exc) from exc

    async def do_delete(self, api: RelayAPI, record: MediaRecord) -> None:
        async def write(txn: Txn) -> int:
            return await store.delete_media(txn, record.id)

        if not await self.db.run_interaction("gw_media_delete", write):
            raise unknown_node(record.id)
        if record.origin == "upload":
            try:
                await api.delete_media(record.file.media_id)
            except TresenError as exc:
                if str(exc.code) not in ("media_not_found", "not_found"):
                    raise from_relay(exc) from exc

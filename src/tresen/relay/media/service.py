"""Media rules: who may upload what size, who may fetch it, and when it goes away.

The relay stores ciphertext only: the key and hash travel inside the end-to-end encrypted
message that points at the blob. Rules:

- an upload declares its kind and exact size; the size must fit the kind's limit
  (``media_max_<kind>_bytes``), and no byte past the declared size is ever accepted;
- bytes arrive by ``PATCH`` at the upload's current offset (resumable); the upload completes
  when the last declared byte is in, and only then can it be downloaded;
- the uploader's account and the devices it granted (at upload or later) may download; for
  anyone else the blob does not exist (``media_not_found``);
- a blob expires ``media_fetched_grace_seconds`` after every granted device fetched it to its
  last byte, and at the latest ``media_ttl_seconds`` after it completed; an unfinished upload
  after ``media_upload_ttl_seconds``. A periodic purge deletes the bytes, then the rows.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import re
import secrets
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tresen.config import Settings
from tresen.errors import (
    Conflict,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    Unavailable,
)
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.accounts.service import DeviceDirectory
from tresen.relay.clock import Clock, run_every
from tresen.relay.media import store
from tresen.relay.media.blobs import (
    BlobNotFound,
    BlobOffsetError,
    BlobReader,
    BlobStore,
    BlobTooLarge,
)
from tresen.relay.media.models import (
    GrantRequest,
    MediaGrants,
    MediaKind,
    MediaRow,
    Recipient,
    Upload,
    UploadCreate,
)
from tresen.storage.engine import Database, Txn

log = logging.getLogger("tresen.media")

T = TypeVar("T")

_MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
_RANGE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")
_OFFSET = re.compile(r"^[0-9]{1,19}$")
PURGE_BATCH = 500


# ---------------------------------------------------------------- pure checks


def limits_of(settings: Settings) -> dict[MediaKind, int]:
    return {
        "image": settings.media_max_image_bytes,
        "video": settings.media_max_video_bytes,
        "audio": settings.media_max_audio_bytes,
        "document": settings.media_max_document_bytes,
        "sticker": settings.media_max_sticker_bytes,
    }


def check_size(kind: MediaKind, size: int, limits: dict[MediaKind, int]) -> None:
    limit = limits[kind]
    if size > limit:
        raise PayloadTooLarge(
            f"{kind} uploads are limited to {limit} bytes; this one declares {size}",
            code=Code.MEDIA_TOO_LARGE,
            kind=kind,
            limit=limit,
        )


def check_quota(blobs: int, held: int, adding: int, settings: Settings) -> None:
    max_blobs = settings.media_quota_blobs_per_account
    max_bytes = settings.media_quota_bytes_per_account
    if blobs + 1 > max_blobs or held + adding > max_bytes:
        raise LimitExceeded(
            f"your account holds {blobs} uploads of {held} bytes on this relay; the limit is "
            f"{max_blobs} uploads and {max_bytes} bytes. Uploads go once their recipients "
            "fetched them: try again later, or delete ones you no longer need",
            code=Code.MEDIA_QUOTA_EXCEEDED,
            blobs=blobs,
            held_bytes=held,
            max_blobs=max_blobs,
            max_bytes=max_bytes,
        )


def check_media_id(media_id: str) -> str:
    """A syntactically impossible id is simply unknown."""
    if not _MEDIA_ID.match(media_id):
        raise _not_found(media_id)
    return media_id


def check_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks of a ``size``-byte blob.

    None means the whole blob: no header, or one this relay ignores as RFC 9110 allows
    (several ranges, other units, bad syntax). A range starting past the end is refused.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match[1] == match[2] == "":
        return None
    first, last = match[1], match[2]
    if first == "":  # the last N bytes
        length = int(last)
        if length == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or end < start:
        raise _unsatisfiable(size)
    return start, end


def expiry_of(
    row: MediaRow, grants: int, fetched: int, last_fetch: int | None, settings: Settings
) -> int:
    if row.completed_at is None:
        return row.created_at + settings.media_upload_ttl_seconds * 1000
    latest = row.completed_at + settings.media_ttl_seconds * 1000
    if not row.keep and grants and fetched == grants and last_fetch is not None:
        return min(latest, last_fetch + settings.media_fetched_grace_seconds * 1000)
    return latest


def _not_found(media_id: str) -> NotFound:
    return NotFound(f"no media {media_id} for you: it may have expired", code=Code.MEDIA_NOT_FOUND)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(f"the range lies outside the blob's {size} bytes", size=size)


def upload_view(row: MediaRow) -> Upload:
    path = f"/v1/media/{row.media_id}"
    return Upload(
        media_id=row.media_id,
        kind=row.kind,
        size=row.declared_size,
        offset=row.received,
        complete=row.complete,
        created_at=row.created_at,
        expires_at=row.expires_at,
        keep=row.keep,
        upload_path=path,
        download_path=path,
    )


@dataclass(slots=True)
class Download:
    """An authorised download: bytes ``start``..``end`` (inclusive) of a ``size``-byte blob."""

    media_id: str
    size: int
    start: int
    end: int
    partial: bool
    chunks: AsyncIterator[bytes]


class MediaService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        blobs: BlobStore,
        directory: DeviceDirectory,
    ) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        self.blobs = blobs
        self.directory = directory
        self.limits = limits_of(settings)
        #: one writer per upload on this node; a second PATCH waits, then sees the new offset
        self._writing: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.purger: asyncio.Task[None] | None = None

    async def _run(self, name: str, fn: Callable[[Txn], Awaitable[T]], write: bool = True) -> T:
        return await self.db.run_interaction(name, fn, write=write)

    # ------------------------------------------------------------ access

    async def _row(self, media_id: str) -> MediaRow:
        check_media_id(media_id)
        row = await self._run("get_media", lambda txn: store.get_media(txn, media_id), write=False)
        if row is None or row.expires_at <= self.clock.now_ms():  # expired: gone already
            raise _not_found(media_id)
        return row

    async def access_own(self, who: Principal, media_id: str) -> MediaRow:
        row = await self._row(media_id)
        if row.owner_account != who.account_id:
            raise _not_found(media_id)
        return row

    async def access_media(self, who: Principal, media_id: str) -> tuple[MediaRow, bool]:
        """The row, if ``who`` may read it, and whether ``who``'s device holds a grant."""
        row = await self._row(media_id)
        granted = await self._run(
            "media_granted",
            lambda txn: store.is_granted(txn, media_id, who.device_id),
            write=False,
        )
        if not granted and row.owner_account != who.account_id:
            raise _not_found(media_id)
        return row, granted

    async def access_info(self, who: Principal, media_id: str) -> Upload:
        row, _ = await self.access_media(who, media_id)
        return upload_view(row)

    async def access_grants(self, who: Principal, media_id: str) -> MediaGrants:
        await self.access_own(who, media_id)
        grants = await self._run(
            "media_grants", lambda txn: store.grants_of(txn, media_id), write=False
        )
        return MediaGrants(media_id, grants)

    async def check_recipients(
        self, who: Principal, recipients: list[Recipient]
    ) -> list[tuple[int, int]]:
        """(account, device) for every device named, accounts expanded to current devices."""
        devices: list[tuple[int, int]] = []
        for recipient in recipients:
            current = await self.directory.devices_of(recipient.account_id)
            if not current:
                raise NotFound(
                    f"no account {recipient.account_id}",
                    code=Code.UNKNOWN_RECIPIENT,
                    account_id=recipient.account_id,
                )
            if recipient.device_id is None:
                devices.extend((recipient.account_id, d) for d in current)
            elif recipient.device_id in current:
                devices.append((recipient.account_id, recipient.device_id))
            else:
                raise NotFound(
                    f"account {recipient.account_id} has no device {recipient.device_id}",
                    code=Code.UNKNOWN_RECIPIENT,
                    account_id=recipient.account_id,
                    device_id=recipient.device_id,
                )
        return [(a, d) for a, d in dict.fromkeys(devices) if d != who.device_id]

    # ------------------------------------------------------------ uploads

    async def do_create(self, who: Principal, body: UploadCreate) -> Upload:
        check_size(body.kind, body.size, self.limits)
        devices = await self.check_recipients(who, body.recipients)
        now = self.clock.now_ms()
        row = MediaRow(
            media_id=secrets.token_urlsafe(16),
            owner_account=who.account_id,
            owner_device=who.device_id,
            kind=body.kind,
            declared_size=body.size,
            received=0,
            created_at=now,
            completed_at=None,
            expires_at=now + self.settings.media_upload_ttl_seconds * 1000,
            keep=body.keep,
        )

        async def create(txn: Txn) -> None:
            await store.lock_owner(txn, who.account_id)
            check_quota(*await store.held_by(txn, who.account_id), body.size, self.settings)
            await store.insert_media(txn, row)
            await store.add_grants(txn, row.media_id, devices, now)

        await self._run("create_media", create)
        return upload_view(row)

    async def do_append(
        self,
        who: Principal,
        media_id: str,
        offset: int,
        content_length: int | None,
        chunks: AsyncIterable[bytes],
    ) -> Upload:
        """Write the bytes of one PATCH at ``offset``; complete the upload at its last byte."""
        lock = self._writing.get(media_id)
        if lock is None:
            lock = self._writing[media_id] = asyncio.Lock()
        async with lock:
            row = await self.access_own(who, media_id)
            if row.complete:
                raise Conflict(
                    "this upload is complete", code=Code.UPLOAD_COMPLETE, offset=row.received
                )
            if offset != row.received:
                raise Conflict(
                    f"the upload continues at byte {row.received}, not {offset}",
                    code=Code.UPLOAD_OFFSET_MISMATCH,
                    offset=row.received,
                )
            if content_length is not None and offset + content_length > row.declared_size:
                raise self._overflow(row)
            try:
                staged = await self.blobs.append(media_id, offset, chunks, limit=row.declared_size)
            except BlobTooLarge:
                raise self._overflow(row) from None
            except BlobOffsetError as exc:  # the staged bytes were lost: resume from them
                await self._record(row, exc.staged)
                raise Conflict(
                    f"the upload continues at byte {exc.staged}",
                    code=Code.UPLOAD_OFFSET_MISMATCH,
                    offset=exc.staged,
                ) from None
            except BaseException as exc:
                # the client went away mid-body: keep what arrived, so it can resume
                await self._record(row, await self.blobs.staged_size(media_id))
                if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                    log.error("the media folder is full: %s", exc)
                    raise Unavailable(
                        "the relay's media storage is full; try again later",
                        offset=await self.blobs.staged_size(media_id),
                    ) from exc
                raise
            if staged < row.declared_size:
                await self._record(row, staged)
                return upload_view(await self._row(media_id))
            await self.blobs.commit(media_id)
            return upload_view(await self._complete(row))

    def _overflow(self, row: MediaRow) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"this upload declared {row.declared_size} bytes; the request carries more "
            "(nothing of it was kept)",
            code=Code.MEDIA_TOO_LARGE,
            limit=row.declared_size,
            offset=row.received,
        )

    async def _record(self, row: MediaRow, staged: int) -> None:
        alive = await self._run(
            "media_offset", lambda txn: store.set_received(txn, row.media_id, staged)
        )
        if not alive:  # purged or deleted while the bytes came in
            await self.blobs.delete(row.media_id)
            raise _not_found(row.media_id)

    async def _complete(self, row: MediaRow) -> MediaRow:
        now = self.clock.now_ms()

        async def complete(txn: Txn) -> MediaRow | None:
            if not await store.set_completed(txn, row.media_id, row.declared_size, now):
                return None
            return await self._settle_expiry(txn, row.media_id)

        done = await self._run("complete_media", complete)
        if done is None:
            await self.blobs.delete(row.media_id)
            raise _not_found(row.media_id)
        return done

    async def _settle_expiry(self, txn: Txn, media_id: str) -> MediaRow | None:
        row = await store.get_media(txn, media_id)
        if row is None:
            return None
        grants, fetched, last = await store.fetch_progress(txn, media_id)
        expires = expiry_of(row, grants, fetched, last, self.settings)
        if expires != row.expires_at:
            await store.set_expiry(txn, media_id, expires)
        return await store.get_media(txn, media_id)

    # ------------------------------------------------------------ grants and deletion

    async def do_grant(self, who: Principal, media_id: str, body: GrantRequest) -> MediaGrants:
        await self.access_own(who, media_id)
        devices = await self.check_recipients(who, body.recipients)
        now = self.clock.now_ms()

        async def grant(txn: Txn) -> MediaGrants:
            await store.add_grants(txn, media_id, devices, now)
            await self._settle_expiry(txn, media_id)
            return MediaGrants(media_id, await store.grants_of(txn, media_id))

        return await self._run("grant_media", grant)

    async def do_delete(self, who: Principal, media_id: str) -> None:
        await self.access_own(who, media_id)
        await self.blobs.delete(media_id)
        await self._run("delete_media", lambda txn: store.delete_media(txn, media_id))

    # ------------------------------------------------------------ downloads

    async def access_download(
        self, who: Principal, media_id: str, range_header: str | None
    ) -> Download:
        row, granted = await self.access_media(who, media_id)
        if not row.complete:
            raise Conflict(
                f"the upload has {row.received} of {row.declared_size} bytes so far",
                code=Code.UPLOAD_INCOMPLETE,
                offset=row.received,
                size=row.declared_size,
            )
        size = row.declared_size
        wanted = check_range(range_header, size)
        start, end = wanted or (0, size - 1)
        try:
            reader = await self.blobs.open(media_id, start, end)
        except BlobNotFound:
            log.warning("media %s has a row but no blob; it will be purged", media_id)
            raise _not_found(media_id) from None
        counts = granted and end == size - 1
        chunks = self._stream(reader, media_id, who.device_id, end - start + 1, counts)
        return Download(media_id, size, start, end, wanted is not None, chunks)

    async def _stream(
        self, reader: BlobReader, media_id: str, device: int, length: int, counts: bool
    ) -> AsyncIterator[bytes]:
        """The bytes; a granted device is recorded as having fetched the blob when the chunk
        holding its last byte is handed to the connection. Recording it before that chunk goes
        out means a client that hangs up the moment it has every byte is still counted; if that
        last chunk is lost instead, the grace period (``media_fetched_grace_seconds``) leaves
        time to fetch it again."""
        handed = 0
        try:
            async for chunk in reader:
                handed += len(chunk)
                if counts and handed == length:
                    await self.do_mark_fetched(media_id, device)
                yield chunk
        finally:
            await reader.aclose()

    async def do_mark_fetched(self, media_id: str, device: int) -> None:
        now = self.clock.now_ms()

        async def mark(txn: Txn) -> None:
            if await store.mark_fetched(txn, media_id, device, now):
                await self._settle_expiry(txn, media_id)

        await self._run("media_fetched", mark)

    # ------------------------------------------------------------ expiry

    def start(self) -> None:
        interval = self.settings.media_purge_interval_seconds
        self.purger = asyncio.create_task(
            run_every(interval, self.do_purge_expired, "purging expired media"),
            name="tresen-media-purge",
        )

    async def close(self) -> None:
        if self.purger is not None:
            self.purger.cancel()
            await asyncio.gather(self.purger, return_exceptions=True)
            self.purger = None

    async def do_purge_expired(self) -> int:
        """Delete every expired blob, then its rows (a crash in between leaves rows, which the
        next purge takes; never a file without a row). Returns how many went."""
        now = self.clock.now_ms()
        total = 0
        while True:
            ids = await self._run(
                "expired_media", lambda txn: store.expired(txn, now, PURGE_BATCH), write=False
            )
            for media_id in ids:
                await self.blobs.delete(media_id)
            if ids:
                await self._run("purge_media", functools.partial(store.delete_many, media_ids=ids))
            total += len(ids)
            if len(ids) < PURGE_BATCH:
                break
        if total:
            log.info("purged %d expired media blobs", total)
        return total


def check_offset_header(value: str | None) -> int:
    if value is None or not _OFFSET.match(value.strip()):
        raise InvalidRequest("send the upload offset as 'Upload-Offset: <bytes>'")
    return int(value)


__all__ = [
    "Download",
    "MediaService",
    "check_media_id",
    "check_offset_header",
    "check_quota",
    "check_range",
    "check_size",
    "expiry_of",
    "limits_of",
    "upload_view",
]

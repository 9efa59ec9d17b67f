"""Request and response bodies of the media API (validated strictly by msgspec)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

MediaKind = Literal["image", "video", "audio", "document", "sticker"]
KINDS: tuple[MediaKind, ...] = ("image", "video", "audio", "document", "sticker")

#: how many recipients one request may name (a full group of 1,024 accounts fits)
MAX_RECIPIENTS = 1024


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Recipient(Strict):
    """A device allowed to download; without ``device_id``, every current device of the
    account (devices linked later are not included: they never had the message's key)."""

    account_id: int
    device_id: int | None = None


class UploadCreate(Strict):
    kind: MediaKind
    #: the ciphertext's exact size in bytes (AES-CTR keeps the plaintext's size)
    size: Annotated[int, msgspec.Meta(ge=1)]
    recipients: Annotated[list[Recipient], msgspec.Meta(max_length=MAX_RECIPIENTS)] = []
    #: keep the blob to the TTL even once every granted device fetched it (media reused
    #: across messages, such as a business's Cloud API media id)
    keep: bool = False


class GrantRequest(Strict):
    recipients: Annotated[list[Recipient], msgspec.Meta(min_length=1, max_length=MAX_RECIPIENTS)]


class Upload(msgspec.Struct):
    """An upload's state: where it is (``offset``) and whether it is complete."""

    media_id: str
    kind: MediaKind
    size: int
    offset: int
    complete: bool
    created_at: int
    expires_at: int
    keep: bool
    #: PATCH the bytes here, with ``Upload-Offset: <offset>``
    upload_path: str
    #: GET the bytes here once ``complete``
    download_path: str


class Grant(msgspec.Struct):
    account_id: int
    device_id: int
    granted_at: int
    #: when this device finished downloading the whole blob, if it did
    fetched_at: int | None


class MediaGrants(msgspec.Struct):
    media_id: str
    grants: list[Grant]


class MediaRow(msgspec.Struct, frozen=True):
    """One row of the ``media`` table."""

    media_id: str
    owner_account: int
    owner_device: int
    kind: MediaKind
    declared_size: int
    received: int
    created_at: int
    completed_at: int | None
    expires_at: int
    keep: bool = False

    @property
    def complete(self) -> bool:
        return self.completed_at is not None

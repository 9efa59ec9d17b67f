"""HTTP routes for media: create an upload, PATCH its bytes, grant, download (with Range).

Upload bodies are read straight from the ASGI ``receive`` channel, chunk by chunk, and handed
to the blob store as they arrive: the relay never holds a whole upload, and a body that
crosses its declared size is refused at the crossing chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Router, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from tresen.errors import InvalidRequest
from tresen.relay.accounts.models import Principal
from tresen.relay.media.models import GrantRequest, MediaGrants, Upload, UploadCreate
from tresen.relay.media.service import MediaService, check_offset_header
from tresen.relay.transport.http import provide_principal

AUTH = {"who": Provide(provide_principal)}


class UploadInterrupted(InvalidRequest):
    """The client went away before the end of the request body (a normal event on a mobile
    network: what arrived is kept, and nobody is left to read this answer)."""

    def __init__(self) -> None:
        super().__init__("the request body ended early; GET .../info tells where to resume")


async def body_of(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """The request body as it arrives (uvicorn pauses the socket while we write)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return
        elif message["type"] == "http.disconnect":
            raise UploadInterrupted


def content_length(request: Request[Any, Any, Any]) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise InvalidRequest("Content-Length must be a number of bytes")
    return int(value)


@post(
    "/media",
    dependencies=AUTH,
    status_code=201,
    summary="Start an upload of a ciphertext blob: its kind, exact size and recipients",
)
async def create_upload(
    who: NamedDependency[Principal],
    data: JSONBody[UploadCreate],
    media: NamedDependency[MediaService],
) -> Upload:
    return await media.do_create(who, data)


@patch(
    "/media/{media_id:str}",
    dependencies=AUTH,
    request_max_body_size=None,
    summary="Append bytes at 'Upload-Offset'; the upload completes at its last byte",
    description="Headers: `Upload-Offset: <bytes>` (required; must equal the upload's current "
    "offset, else 409 upload_offset_mismatch with fields.offset), `Content-Length` or a chunked "
    "body. The body is the raw ciphertext. Past the declared size: 413 media_too_large, and "
    "nothing of the request is kept. A broken request keeps what arrived; GET .../info says "
    "where to resume.",
)
async def append(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    media_id: FromPath[str],
    media: NamedDependency[MediaService],
) -> Upload:
    offset = check_offset_header(request.headers.get("upload-offset"))
    return await media.do_append(who, media_id, offset, content_length(request), body_of(request))


@get(
    "/media/{media_id:str}",
    dependencies=AUTH,
    summary="Download a complete blob (uploader and granted devices); supports Range",
    description="Streams `application/octet-stream` with `Content-Length` and "
    "`Accept-Ranges: bytes`; `Range: bytes=a-b` (one range) answers 206 with `Content-Range`. "
    "Not granted, unknown or expired: 404 media_not_found.",
)
async def download(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    media_id: FromPath[str],
    media: NamedDependency[MediaService],
) -> Stream:
    found = await media.access_download(who, media_id, request.headers.get("range"))
    headers = {
        "Content-Length": str(found.end - found.start + 1),
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store",
    }
    if found.partial:
        headers["Content-Range"] = f"bytes {found.start}-{found.end}/{found.size}"
    return Stream(
        found.chunks,
        status_code=206 if found.partial else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


@get("/media/{media_id:str}/info", dependencies=AUTH, summary="An upload's size and offset")
async def info(
    who: NamedDependency[Principal],
    media_id: FromPath[str],
    media: NamedDependency[MediaService],
) -> Upload:
    return await media.access_info(who, media_id)


@get("/media/{media_id:str}/grants", dependencies=AUTH, summary="Who may download (uploader)")
async def list_grants(
    who: NamedDependency[Principal],
    media_id: FromPath[str],
    media: NamedDependency[MediaService],
) -> MediaGrants:
    return await media.access_grants(who, media_id)


@post(
    "/media/{media_id:str}/grants",
    dependencies=AUTH,
    status_code=200,
    summary="Let more devices download (uploader)",
)
async def grant(
    who: NamedDependency[Principal],
    media_id: FromPath[str],
    data: JSONBody[GrantRequest],
    media: NamedDependency[MediaService],
) -> MediaGrants:
    return await media.do_grant(who, media_id, data)


@delete("/media/{media_id:str}", dependencies=AUTH, summary="Delete a blob now (uploader)")
async def remove(
    who: NamedDependency[Principal],
    media_id: FromPath[str],
    media: NamedDependency[MediaService],
) -> None:
    await media.do_delete(who, media_id)


router = Router(
    path="/v1",
    tags=["media"],
    route_handlers=[create_upload, append, download, info, list_grants, grant, remove],
)

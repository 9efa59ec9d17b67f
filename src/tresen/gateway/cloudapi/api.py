"""Routes: messages, media, and ``GET|POST|DELETE /{node}`` resolved by the node's kind.

Every path may carry a ``/vNN.N`` prefix (stripped by the application before routing, see
:mod:`tresen.gateway.app`). The access token is the number's Cloud API token (``Bearer``).
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath

from tresen.gateway.cloudapi import templates as tpl
from tresen.gateway.cloudapi.errors import GraphError, missing, unknown_node
from tresen.gateway.cloudapi.params import bearer, only, params
from tresen.gateway.media import MediaRecord
from tresen.gateway.send import do_send
from tresen.gateway.service import Gateway, Line

Req = Request[Any, Any, Any]
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@post("/{node:str}/messages", status_code=200, summary="Send a message, mark read, typing")
async def send_message(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    return await do_send(gateway, line, await params(request))


@post("/{node:str}/media", status_code=200, summary="Upload media (multipart 'file')")
async def upload_media(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_phone(bearer(request), node)
    files: dict[str, UploadFile] = {}
    values = await params(request, files=files)
    only(values, {"messaging_product", "type", "ttl_minutes"})
    upload = files.get("file")
    if upload is None:
        raise missing("file")
    mime = str(values.get("type") or upload.content_type or "").split(";")[0].strip()
    if "/" not in mime:
        raise GraphError(131053, "type: the file's MIME type is required (e.g. image/png)")
    data = await upload.read()
    record = await gateway.media.do_upload(
        line.api, line.number.id, data, mime, upload.filename or ""
    )
    return {"id": record.id}


def media_view(request: Req, record: MediaRecord) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        "messaging_product": "whatsapp",
        "url": f"{base}/media-bytes/{record.id}?hash={record.sha256[:16]}",
        "mime_type": record.mime_type,
        "sha256": record.sha256,
        "file_size": record.size,
        "id": record.id,
    }


async def _media_of(gateway: Gateway, line: Line, node: str) -> MediaRecord | None:
    return await gateway.media.access_media({line.number.id}, node)


@get("/{node:str}", summary="A node: phone number, WABA, media or template")
async def get_node(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_token(bearer(request))
    values = await params(request)
    fields = str(values.get("fields") or "")
    if node == line.number.id:
        return await tpl.phone_view(gateway, line, fields)
    if node == line.number.waba_id:
        return await tpl.waba_view(line)
    record = await _media_of(gateway, line, node)
    if record is not None:
        return media_view(request, record)
    return await tpl.template_view(line, node)


@post("/{node:str}", status_code=200, summary="Edit a template")
async def post_node(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_token(bearer(request))
    if node in (line.number.id, line.number.waba_id):
        raise GraphError(100, "this node has no fields that can be changed here")
    return await tpl.edit(line, node, await params(request))


@delete("/{node:str}", status_code=200, summary="Delete media or a template")
async def delete_node(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_token(bearer(request))
    record = await _media_of(gateway, line, node)
    if record is not None:
        await gateway.media.do_delete(line.api, record)
        return {"success": True}
    if not node.isdigit():
        raise unknown_node(node)
    await tpl.delete_by_id(line, node)
    return {"success": True}


@get("/media-bytes/{media_id:str}", summary="Download media (Bearer token)")
async def media_bytes(
    request: Req, media_id: FromPath[str], gateway: NamedDependency[Gateway]
) -> Response[bytes]:
    line = gateway.access_token(bearer(request))
    record = await _media_of(gateway, line, media_id)
    if record is None:
        raise unknown_node(media_id)
    data = await gateway.media.download(line.api, record)
    name = SAFE_NAME.sub("_", record.filename)[:120] or record.id
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(data, media_type=record.mime_type, headers=headers)


ROUTES = [send_message, upload_media, get_node, post_node, delete_node, media_bytes]

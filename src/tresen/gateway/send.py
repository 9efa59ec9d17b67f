"""``POST /{phone-number-id}/messages``: validate, resolve, encrypt to every device, send.

The order: the request is validated in full (131008 / 131009 / 100), the recipient resolved
(131026 when unknown), a template looked up and rendered (132001 / 132000 / 132012), media
resolved (an uploaded id, or a link fetched and uploaded encrypted) and granted to the person.
Then the message is recorded as ``accepted`` and sent; the relay's single tick makes it
``sent`` (a status webhook), receipts make it ``delivered`` and ``read``. A relay refusal maps
to its Cloud API code: most answer the request, while 131026 / 131049 / 131050 answer 200 and
arrive as a ``failed`` status, as on the Cloud API.
"""

from __future__ import annotations

from typing import Any

from tresen.client.connection import new_envelope_id
from tresen.errors import TresenError
from tresen.gateway import store
from tresen.gateway.cloudapi.errors import ASYNC_CODES, GraphError, from_relay, missing
from tresen.gateway.cloudapi.models import (
    ENVELOPE_FIELDS,
    MEDIA_TYPES,
    PAYLOADS,
    ContextRef,
    Interactive,
    Media,
    TemplateMessage,
    check_interactive,
    check_media,
    convert,
)
from tresen.gateway.content import envelope_of, outbound, render_template, wamid
from tresen.gateway.media import MediaRecord
from tresen.gateway.models import Person
from tresen.gateway.service import Gateway, Line
from tresen.protocol.frames import BizMeta
from tresen.storage.engine import Txn


def check_envelope(params: dict[str, Any]) -> None:
    product = params.get("messaging_product")
    if product is None:
        raise missing("messaging_product")
    if str(product).lower() != "whatsapp":
        raise GraphError(100, "(#100) Param messaging_product must be one of {WHATSAPP}")
    recipient_type = params.get("recipient_type", "individual")
    if recipient_type != "individual":
        raise GraphError(131009, "recipient_type: only 'individual' is supported")


async def do_send(gw: Gateway, line: Line, params: dict[str, Any]) -> dict[str, Any]:
    check_envelope(params)
    if params.get("status") is not None:
        return await do_mark_read(gw, line, params)
    kind = str(params.get("type") or "text")
    if kind not in PAYLOADS:
        raise GraphError(131051, f"type: '{kind}' is not a supported message type")
    unknown = set(params) - ENVELOPE_FIELDS - {kind}
    if unknown:
        raise GraphError(131009, f"unknown parameters: {', '.join(sorted(unknown))}")
    if kind not in params:
        raise missing(kind)
    payload = convert(params[kind], PAYLOADS[kind], kind)
    context = convert(params["context"], ContextRef, "context") if "context" in params else None
    opaque = params.get("biz_opaque_callback_data") or ""
    if not isinstance(opaque, str) or len(opaque) > 512:
        raise GraphError(131009, "biz_opaque_callback_data: a string of at most 512 characters")
    to = params.get("recipient") or params.get("to")
    if not to or not isinstance(to, str | int):
        raise missing("to")
    if kind in MEDIA_TYPES:
        check_media(payload, kind)
    if isinstance(payload, Interactive):
        check_interactive(payload)

    person = await gw.resolve(line, str(to))
    biz = BizMeta()
    fallback = ""
    media: Media | None = payload if isinstance(payload, Media) else None
    media_kind = kind
    if isinstance(payload, TemplateMessage):
        template = await gw.template(line, payload.name, payload.language.code)
        if template["status"] != "APPROVED":
            code = {"PAUSED": 132015, "DISABLED": 132016}.get(template["status"], 132001)
            raise GraphError(code, f"template {payload.name} is {template['status']}")
        fallback, rendered, header = render_template(payload, template)
        payload = rendered
        biz = BizMeta(
            kind="template",
            category=template["category"],
            template=template["name"],
            language=template["language"],
        )
        if header is not None:
            media, media_kind = getattr(header, header.type), header.type
    elif isinstance(payload, Interactive) and payload.header and payload.header.type != "text":
        media, media_kind = getattr(payload.header, payload.header.type), payload.header.type
    file = info = None
    if media is not None:
        record = await _media(gw, line, media, media_kind)
        try:
            await line.api.grant_media(record.file.media_id, [{"account_id": person.account_id}])
        except TresenError as exc:
            raise from_relay(exc) from exc
        file = record.file.to_dict()
        info = {"mimetype": record.mime_type, "size": record.size}
        if record.filename or (isinstance(payload, Media) and payload.filename):
            info["filename"] = (
                payload.filename if isinstance(payload, Media) else ""
            ) or record.filename
        if isinstance(payload, Media) and payload.voice:
            info["voice"] = True
    content = outbound(
        kind,
        payload,
        file=file,
        info=info,
        reply_to=context.message_id if context else "",
        fallback=fallback,
    )
    envelope_id = await deliver(gw, line, person, kind, content, biz, opaque)
    response: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": str(to), "user_id": person.scoped_id}],
        "messages": [{"id": wamid(envelope_id)}],
    }
    if person.wa_id:
        response["contacts"][0]["wa_id"] = person.wa_id
    if kind == "template":
        response["messages"][0]["message_status"] = "accepted"
    return response


async def _media(gw: Gateway, line: Line, media: Media, kind: str) -> MediaRecord:
    if media.id is not None:
        record = await gw.media.access_media({line.number.id}, media.id)
        if record is None:
            raise GraphError(131053, f"{kind}.id: media {media.id} does not exist or expired")
        return record
    assert media.link is not None
    return await gw.media.do_upload_link(line.api, line.number.id, media.link)


async def deliver(
    gw: Gateway,
    line: Line,
    person: Person,
    kind: str,
    content: dict[str, Any],
    biz: BizMeta,
    opaque: str,
) -> str:
    envelope_id = new_envelope_id()
    category = biz.category if biz.kind == "template" else ""
    # receipts that overtake the record wait in ``inflight`` until it is written
    line.inflight[envelope_id] = []
    try:
        await line.secure.send(person.account_id, content, id=envelope_id, biz=biz)
    except TresenError as exc:
        error = from_relay(exc)
        line.inflight.pop(envelope_id, None)
        if error.code not in ASYNC_CODES:
            raise error from exc
        await gw.do_record_sent(
            line, person, envelope_id, kind, category, opaque, "failed", [error.webhook_error()]
        )
        return envelope_id
    except BaseException:
        line.inflight.pop(envelope_id, None)
        raise
    pricing = line.secure.device._live().pricing_of(envelope_id)  # the relay's billing
    await gw.do_record_sent(
        line, person, envelope_id, kind, category, opaque, "sent", pricing=pricing
    )
    receipts = line.inflight.pop(envelope_id, [])
    if receipts:
        await gw.on_receipts(line, receipts)
    return envelope_id


async def do_mark_read(gw: Gateway, line: Line, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("status") != "read":
        raise GraphError(131009, "status: only 'read' can be set")
    unknown = set(params) - ENVELOPE_FIELDS
    if unknown:
        raise GraphError(131009, f"unknown parameters: {', '.join(sorted(unknown))}")
    message_id = params.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise missing("message_id")
    envelope_id = envelope_of(message_id)
    number = line.number.id
    row = await gw.db.run_interaction(
        "gw_message", lambda txn: store.message(txn, number, envelope_id), write=False
    )
    if row is None or row[1] != "in":
        raise GraphError(100, f"message_id: {message_id} is not a message this number received")
    person = int(row[2])
    conn = line.secure.device._live()
    await conn.read(person, [envelope_id])
    if params.get("typing_indicator") is not None:
        if not isinstance(params["typing_indicator"], dict):
            raise GraphError(131009, 'typing_indicator: an object {"type": "text"}')
        await conn.typing(to=person, on=True)

    async def mark(txn: Txn) -> None:
        await store.set_message_status(txn, number, envelope_id, "read")

    await gw.db.run_interaction("gw_mark_read", mark)
    return {"success": True}

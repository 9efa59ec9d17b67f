"""What travels inside the ciphertext between a business and a person (pure, no I/O).

Outbound, a Cloud API payload becomes a Matrix-style ``m.room.message`` content that any
tresen client can show (``msgtype`` + ``body`` as a plain fallback) plus the whole Cloud API
object under ``tresen.cloud`` for rich rendering (buttons, lists, templates, cards)::

    {"msgtype": "m.text", "body": "Hi", "tresen.cloud": {"type": "text", "text": {...}},
     "m.relates_to": {"m.in_reply_to": {"event_id": "<envelope id>"}}}

Media carry the attachment's key and hashes (``file``, Matrix v2) and ``info``. Inbound, the
reverse: a person's content (plain Matrix, or ``tresen.cloud`` for button and list replies)
becomes a webhook ``messages[]`` object. Templates are rendered here with their parameters.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tresen.gateway.cloudapi.errors import GraphError
from tresen.gateway.cloudapi.models import (
    Interactive,
    Parameter,
    TemplateMessage,
)

CLOUD = "tresen.cloud"
MSGTYPES = {
    "image": "m.image",
    "video": "m.video",
    "audio": "m.audio",
    "document": "m.file",
    "sticker": "m.sticker",
    "text": "m.text",
    "location": "m.location",
}
INBOUND_MEDIA = {"m.image": "image", "m.video": "video", "m.audio": "audio", "m.file": "document"}
INBOUND_MEDIA |= {"m.sticker": "sticker"}
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def wamid(envelope_id: str) -> str:
    return f"wamid.{envelope_id}"


def envelope_of(message_id: str) -> str:
    return message_id.removeprefix("wamid.")


def outbound(
    type: str,
    payload: Any,
    *,
    file: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    reply_to: str = "",
    fallback: str = "",
) -> dict[str, Any]:
    """The event content for one outbound message (``payload`` already validated)."""
    cloud = msgspec.to_builtins(payload)
    if isinstance(cloud, dict):
        cloud.pop("id", None)  # the gateway's media id means nothing to the person
        cloud.pop("link", None)
    content: dict[str, Any] = {
        "msgtype": MSGTYPES.get(type, f"tresen.{type}"),
        "body": fallback or _fallback(type, payload),
        CLOUD: {"type": type, type: cloud},
    }
    if file is not None:
        content["file"] = file
        content["info"] = info or {}
    if type == "location":
        content["geo_uri"] = f"geo:{payload.latitude},{payload.longitude}"
    if type == "reaction":
        content["m.relates_to"] = {
            "rel_type": "m.annotation",
            "event_id": envelope_of(payload.message_id),
            "key": payload.emoji,
        }
    elif reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": envelope_of(reply_to)}}
    return content


def _fallback(type: str, payload: Any) -> str:
    match type:
        case "text":
            return str(payload.body)
        case "image" | "video" | "audio" | "document" | "sticker":
            return str(payload.caption or payload.filename or type)
        case "location":
            return ", ".join(x for x in (payload.name, payload.address) if x) or "location"
        case "contacts":
            return ", ".join(c.name.formatted_name for c in payload)
        case "reaction":
            return str(payload.emoji)
        case "interactive":
            return _interactive_text(payload)
    return type


def _interactive_text(item: Interactive) -> str:
    lines = [item.header.text] if item.header and item.header.text else []
    lines.append(item.body.text)
    if item.footer:
        lines.append(item.footer.text)
    action = item.action
    for button in action.buttons or []:
        lines.append(f"[{button.reply.title}]")
    for section in action.sections or []:
        lines.extend(f"- {row.title}" for row in section.rows)
    if action.parameters is not None:
        lines.append(f"{action.parameters.display_text}: {action.parameters.url}")
    return "\n".join(lines)


# ---------------------------------------------------------------- templates


def parameter_text(p: Parameter) -> str:
    match p.type:
        case "text":
            return p.text or ""
        case "currency":
            assert p.currency is not None
            return p.currency.fallback_value
        case "date_time":
            assert p.date_time is not None
            return p.date_time.fallback_value
        case "payload":
            return p.payload or ""
    return ""


def _check_parameter(p: Parameter, where: str) -> None:
    value = getattr(p, p.type, None)
    if value is None:
        raise GraphError(131009, f"{where}: a '{p.type}' parameter needs its '{p.type}' object")


def fill(text: str, params: list[Parameter], fmt: str, where: str) -> str:
    """``text`` with its ``{{1}}`` / ``{{name}}`` placeholders replaced, or 132000 / 132012."""
    wanted: list[str] = []
    for name in PLACEHOLDER.findall(text):
        if name not in wanted:
            wanted.append(name)
    if len(params) != len(wanted):
        raise GraphError(
            132000,
            f"{where}: the template expects {len(wanted)} parameters, {len(params)} were given",
        )
    values: dict[str, str] = {}
    for n, p in enumerate(params, 1):
        _check_parameter(p, where)
        if fmt == "NAMED":
            if not p.parameter_name or p.parameter_name not in wanted:
                raise GraphError(
                    132012,
                    f"{where}: parameter_name {p.parameter_name!r} is not one of {wanted}",
                )
            values[p.parameter_name] = parameter_text(p)
        else:
            if p.parameter_name:
                raise GraphError(132012, f"{where}: this template takes positional parameters")
            values[str(n)] = parameter_text(p)
    return PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), text)


def render_template(
    message: TemplateMessage, template: dict[str, Any]
) -> tuple[str, dict[str, Any], Parameter | None]:
    """Render an approved template: (plain text, rendered structure, header media parameter)."""
    fmt = str(template.get("parameter_format", "POSITIONAL"))
    given: dict[str, list[Parameter]] = {}
    buttons_given: dict[int, list[Parameter]] = {}
    for component in message.components:
        kind = component.type.lower()
        if kind == "button":
            try:
                index = int(component.index or 0)
            except ValueError as exc:
                raise GraphError(131009, "template.components.index: a number") from exc
            buttons_given[index] = component.parameters
        elif kind in ("header", "body"):
            given[kind] = component.parameters
        else:
            raise GraphError(131009, f"template.components.type: unknown '{component.type}'")
    rendered: dict[str, Any] = {
        "name": message.name,
        "language": message.language.code,
        "category": template.get("category", ""),
    }
    header_media: Parameter | None = None
    lines: list[str] = []
    for component in template.get("components", []):
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            fmt_h = str(component.get("format", "TEXT")).upper()
            params = given.pop("header", [])
            if fmt_h == "TEXT":
                rendered["header"] = fill(component.get("text") or "", params, fmt, "header")
                lines.append(rendered["header"])
            else:
                if len(params) != 1 or params[0].type.upper() != fmt_h:
                    raise GraphError(
                        132012, f"header: the template expects one {fmt_h.lower()} parameter"
                    )
                header_media = params[0]
                rendered["header"] = {"format": fmt_h}
        elif kind == "BODY":
            rendered["body"] = fill(component.get("text") or "", given.pop("body", []), fmt, "body")
            lines.append(rendered["body"])
        elif kind == "FOOTER":
            rendered["footer"] = component.get("text") or ""
            lines.append(rendered["footer"])
        elif kind == "BUTTONS":
            rendered["buttons"] = _buttons(component.get("buttons") or [], buttons_given)
            lines.extend(f"[{b['text']}]" for b in rendered["buttons"])
    leftover = [k for k, v in given.items() if v]
    if leftover or buttons_given:
        raise GraphError(
            132000, f"parameters for components the template lacks: {leftover or 'buttons'}"
        )
    return "\n".join(x for x in lines if x), rendered, header_media


def _buttons(
    buttons: list[dict[str, Any]], given: dict[int, list[Parameter]]
) -> list[dict[str, Any]]:
    out = []
    for index, button in enumerate(buttons):
        params = given.pop(index, [])
        entry = {"type": button.get("type", ""), "text": button.get("text", "")}
        if button.get("type") == "URL":
            url = str(button.get("url", ""))
            entry["url"] = fill(url, params, "POSITIONAL", f"button {index}") if params else url
        elif params:
            entry["payload"] = parameter_text(params[0])
        out.append(entry)
    return out


# ---------------------------------------------------------------- inbound


def inbound(content: dict[str, Any], sender: str, business_phone: str) -> dict[str, Any]:
    """A person's decrypted content as a webhook message (without id, timestamp, media id).

    Media messages come back with ``type`` and ``<type>: {mime_type, caption?}``; the caller
    adds ``id`` and ``sha256`` once it recorded the attachment.
    """
    message: dict[str, Any] = {"from": sender}
    relates = content.get("m.relates_to")
    cloud = content.get(CLOUD)
    msgtype = content.get("msgtype")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.annotation":
        message["type"] = "reaction"
        message["reaction"] = {
            "message_id": wamid(str(relates.get("event_id", ""))),
            "emoji": str(relates.get("key", "")),
        }
        return message
    if isinstance(relates, dict) and isinstance(relates.get("m.in_reply_to"), dict):
        target = str(relates["m.in_reply_to"].get("event_id", ""))
        message["context"] = {"from": business_phone, "id": wamid(target)}
    if isinstance(cloud, dict) and cloud.get("type") in ("interactive", "button"):
        kind = str(cloud["type"])
        message["type"] = kind
        message[kind] = _reply(kind, cloud.get(kind))
        return message
    if msgtype in INBOUND_MEDIA and isinstance(content.get("file"), dict):
        kind = INBOUND_MEDIA[str(msgtype)]
        info = content.get("info") if isinstance(content.get("info"), dict) else {}
        assert isinstance(info, dict)
        media: dict[str, Any] = {"mime_type": str(info.get("mimetype", _mime(kind)))}
        body = str(content.get("body", ""))
        if body and body != kind and kind in ("image", "video", "document"):
            media["caption"] = body
        if kind == "document" and info.get("filename"):
            media["filename"] = str(info["filename"])
        if kind == "audio":
            media["voice"] = bool(info.get("voice", False))
        message["type"] = kind
        message[kind] = media
        return message
    if msgtype == "m.location":
        geo = str(content.get("geo_uri", ""))
        match = re.match(r"^geo:(-?[\d.]+),(-?[\d.]+)", geo)
        if match:
            location: dict[str, Any] = {
                "latitude": float(match[1]),
                "longitude": float(match[2]),
            }
            extra = cloud.get("location") if isinstance(cloud, dict) else None
            if isinstance(extra, dict):
                location.update({k: str(extra[k]) for k in ("name", "address") if k in extra})
            message["type"] = "location"
            message["location"] = location
            return message
    if isinstance(cloud, dict) and cloud.get("type") == "contacts":
        message["type"] = "contacts"
        message["contacts"] = cloud.get("contacts", [])
        return message
    if msgtype in ("m.text", "m.notice", "m.emote") and isinstance(content.get("body"), str):
        message["type"] = "text"
        message["text"] = {"body": content["body"]}
        return message
    message["type"] = "unsupported"
    message["errors"] = [
        {
            "code": 131051,
            "title": "Message type unknown",
            "message": "Message type unknown",
            "error_data": {"details": f"Message type is currently not supported ({msgtype})."},
        }
    ]
    return message


def _reply(kind: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    if kind == "button":
        return {"payload": str(value.get("payload", "")), "text": str(value.get("text", ""))}
    reply_type = str(value.get("type", ""))
    reply = value.get(reply_type) if isinstance(value.get(reply_type), dict) else {}
    assert isinstance(reply, dict)
    keys = ("id", "title", "description") if reply_type == "list_reply" else ("id", "title")
    return {"type": reply_type, reply_type: {k: str(reply[k]) for k in keys if k in reply}}


def _mime(kind: str) -> str:
    return {
        "image": "image/jpeg",
        "video": "video/mp4",
        "audio": "audio/ogg",
        "sticker": "image/webp",
    }.get(kind, "application/octet-stream")

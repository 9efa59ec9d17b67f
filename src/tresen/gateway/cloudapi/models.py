"""The Cloud API's message payloads, validated strictly (docs/gateway.md, the reference §1.1).

Each ``type`` of ``POST /{phone-number-id}/messages`` has its Struct; an unknown field, a wrong
type or a value out of range is refused with 131009 naming the field, before anything is sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from tresen.gateway.cloudapi.errors import GraphError


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    pass


S3_3 = Annotated[str, msgspec.Meta(min_length=3, max_length=3)]
S10 = Annotated[str, msgspec.Meta(max_length=10)]
S16 = Annotated[str, msgspec.Meta(max_length=16)]
S16_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
S16_2 = Annotated[str, msgspec.Meta(min_length=2, max_length=16)]
S20 = Annotated[str, msgspec.Meta(max_length=20)]
S20_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
S24 = Annotated[str, msgspec.Meta(max_length=24)]
S24_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=24)]
S32 = Annotated[str, msgspec.Meta(max_length=32)]
S60 = Annotated[str, msgspec.Meta(max_length=60)]
S64 = Annotated[str, msgspec.Meta(max_length=64)]
S72 = Annotated[str, msgspec.Meta(max_length=72)]
S128_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
S200_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
S240 = Annotated[str, msgspec.Meta(max_length=240)]
S256 = Annotated[str, msgspec.Meta(max_length=256)]
S256_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
S512_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
S1000 = Annotated[str, msgspec.Meta(max_length=1000)]
S1024 = Annotated[str, msgspec.Meta(max_length=1024)]
S1024_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
S2048 = Annotated[str, msgspec.Meta(max_length=2048)]
S2048_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
S4096_1 = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
S32768 = Annotated[str, msgspec.Meta(max_length=32768)]


class Text(Strict, kw_only=True):
    body: S4096_1
    preview_url: bool = False


class Media(Strict, kw_only=True):
    id: S64 | None = None
    link: S2048 | None = None
    caption: S1024 | None = None
    filename: S240 | None = None
    voice: bool | None = None


class Location(Strict, kw_only=True):
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    name: S1000 = ""
    address: S1000 = ""


class Lax(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Contact cards: many optional vCard-like fields, all strings."""


class ContactName(Lax, kw_only=True):
    formatted_name: S512_1
    first_name: S256 | None = None
    last_name: S256 | None = None
    middle_name: S256 | None = None
    suffix: S64 | None = None
    prefix: S64 | None = None


class Contact(Lax, kw_only=True):
    name: ContactName
    phones: list[dict[str, S256 | None]] = []
    emails: list[dict[str, S256 | None]] = []
    addresses: list[dict[str, S256 | None]] = []
    urls: list[dict[str, S2048 | None]] = []
    org: dict[str, S256 | None] | None = None
    birthday: S10 | None = None


class Reaction(Strict, kw_only=True):
    message_id: S128_1
    emoji: S16 = ""


class InteractiveText(Strict, kw_only=True):
    text: S1024_1


class InteractiveHeader(Strict, kw_only=True):
    type: Literal["text", "image", "video", "document"]
    text: S60 | None = None
    image: Media | None = None
    video: Media | None = None
    document: Media | None = None
    sub_text: S60 | None = None


class Reply(Strict, kw_only=True):
    id: S256_1
    title: S20_1


class ReplyButton(Strict, kw_only=True):
    type: Literal["reply"] = "reply"
    reply: Reply


class Row(Strict, kw_only=True):
    id: S200_1
    title: S24_1
    description: S72 | None = None


class Section(Strict, kw_only=True):
    title: S24 | None = None
    rows: Annotated[list[Row], msgspec.Meta(min_length=1, max_length=10)]


class CtaParameters(Strict, kw_only=True):
    display_text: S20_1
    url: S2048_1


class Action(Strict, kw_only=True):
    buttons: Annotated[list[ReplyButton], msgspec.Meta(min_length=1, max_length=3)] | None = None
    button: S20 | None = None
    sections: Annotated[list[Section], msgspec.Meta(min_length=1, max_length=10)] | None = None
    name: S32 | None = None
    parameters: CtaParameters | None = None


class Interactive(Strict, kw_only=True):
    type: Literal["button", "list", "cta_url"]
    body: InteractiveText
    action: Action
    header: InteractiveHeader | None = None
    footer: InteractiveText | None = None


class Currency(Strict, kw_only=True):
    fallback_value: S256_1
    code: S3_3
    amount_1000: int


class DateTime(Strict, kw_only=True):
    fallback_value: S256_1


class Parameter(Strict, kw_only=True):
    type: Literal[
        "text", "currency", "date_time", "image", "video", "document", "payload", "location"
    ]
    parameter_name: S64 | None = None
    text: S32768 | None = None
    currency: Currency | None = None
    date_time: DateTime | None = None
    image: Media | None = None
    video: Media | None = None
    document: Media | None = None
    location: Location | None = None
    payload: S1000 | None = None


class TemplateComponent(Strict, kw_only=True):
    type: S16_1
    sub_type: S32 | None = None
    index: int | str | None = None
    parameters: list[Parameter] = []


class Language(Strict, kw_only=True):
    code: S16_2
    policy: Literal["deterministic"] | None = None


class TemplateMessage(Strict, kw_only=True):
    name: S512_1
    language: Language
    components: list[TemplateComponent] = []


class ContextRef(Strict, kw_only=True):
    message_id: S128_1


class TypingIndicator(Strict, kw_only=True):
    type: Literal["text"] = "text"


PAYLOADS: dict[str, Any] = {
    "text": Text,
    "image": Media,
    "video": Media,
    "audio": Media,
    "document": Media,
    "sticker": Media,
    "location": Location,
    "contacts": Annotated[list[Contact], msgspec.Meta(min_length=1, max_length=20)],
    "reaction": Reaction,
    "interactive": Interactive,
    "template": TemplateMessage,
}
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
ENVELOPE_FIELDS = {
    "messaging_product",
    "recipient_type",
    "to",
    "recipient",
    "type",
    "context",
    "biz_opaque_callback_data",
    "status",
    "message_id",
    "typing_indicator",
}


def convert(value: Any, kind: Any, field: str) -> Any:
    """``value`` as ``kind`` or 131009 naming the field (``text.body`` ...)."""
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        where = str(exc).rsplit("at `$", 1)
        path = field + where[1].rstrip("`") if len(where) == 2 else field
        raise GraphError(131009, f"{path}: {where[0].strip().rstrip('-').strip()}") from exc


def check_media(media: Media, field: str) -> None:
    if (media.id is None) == (media.link is None):
        raise GraphError(131009, f"{field}: give exactly one of 'id' and 'link'")
    if media.link is not None and not media.link.startswith(("http://", "https://")):
        raise GraphError(131009, f"{field}.link: an http(s) URL is required")


def check_interactive(item: Interactive) -> None:
    action = item.action
    if item.type == "button" and not action.buttons:
        raise GraphError(131009, "interactive.action.buttons: 1 to 3 reply buttons are required")
    if item.type == "button" and len({b.reply.id for b in action.buttons or []}) != len(
        action.buttons or []
    ):
        raise GraphError(131009, "interactive.action.buttons: button ids must be unique")
    if item.type == "list":
        if not action.sections or not action.button:
            raise GraphError(131009, "interactive.action: a list needs 'button' and 'sections'")
        rows = [r.id for s in action.sections for r in s.rows]
        if len(rows) > 10 or len(set(rows)) != len(rows):
            raise GraphError(131009, "interactive.action.sections: at most 10 unique rows")
    if item.type == "cta_url" and action.parameters is None:
        raise GraphError(131009, "interactive.action.parameters: display_text and url required")
    header = item.header
    if header is not None:
        media = getattr(header, header.type) if header.type != "text" else None
        if header.type == "text" and not header.text:
            raise GraphError(131009, "interactive.header.text is required")
        if media is not None:
            check_media(media, f"interactive.header.{header.type}")
        elif header.type != "text":
            raise GraphError(131009, f"interactive.header.{header.type} is required")


class MessageRequest(Strict, kw_only=True):
    """The body of ``POST /{phone-number-id}/messages`` as documented in the OpenAPI document
    (the route reads it from JSON, form or query and checks it type by type)."""

    messaging_product: Literal["whatsapp"]
    recipient_type: Literal["individual"] = "individual"
    to: S2048 | None = None
    recipient: S128_1 | None = None
    type: Literal[
        "text", "image", "video", "audio", "document", "sticker", "location", "contacts",
        "reaction", "interactive", "template",
    ] = "text"  # fmt: skip
    text: Text | None = None
    image: Media | None = None
    video: Media | None = None
    audio: Media | None = None
    document: Media | None = None
    sticker: Media | None = None
    location: Location | None = None
    contacts: list[Contact] | None = None
    reaction: Reaction | None = None
    interactive: Interactive | None = None
    template: TemplateMessage | None = None
    context: ContextRef | None = None
    biz_opaque_callback_data: S1024 | None = None
    status: Literal["read"] | None = None
    message_id: S128_1 | None = None
    typing_indicator: TypingIndicator | None = None


def openapi_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the message body (and its components) to the generated OpenAPI document."""
    (ref,), components = msgspec.json.schema_components(
        [MessageRequest], ref_template="#/components/schemas/{name}"
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
    post = schema.get("paths", {}).get("/{node}/messages", {}).get("post")
    if post is not None:
        post["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref}},
        }
    return schema

"""Template bodies in the Cloud API's shape (``POST /{waba-id}/message_templates``)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Category = Literal["MARKETING", "UTILITY", "AUTHENTICATION"]
ParameterFormat = Literal["POSITIONAL", "NAMED"]
Status = Literal["PENDING", "APPROVED", "REJECTED", "PAUSED", "DISABLED", "DELETED"]
Short = Annotated[str, msgspec.Meta(max_length=2000)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    pass


class NamedExample(Strict):
    param_name: Annotated[str, msgspec.Meta(max_length=64)]
    example: Short


class Example(Strict):
    body_text: list[list[Short]] | None = None
    body_text_named_params: list[NamedExample] | None = None
    header_text: list[Short] | None = None
    header_text_named_params: list[NamedExample] | None = None
    header_handle: list[Short] | None = None


class Button(Strict):
    type: Annotated[str, msgspec.Meta(max_length=32)]
    text: Annotated[str, msgspec.Meta(max_length=200)] = ""
    url: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    phone_number: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    example: list[Short] | None = None
    otp_type: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    autofill_text: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    package_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    signature_hash: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    flow_id: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    flow_action: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    navigate_screen: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class Component(Strict):
    type: Annotated[str, msgspec.Meta(max_length=16)]
    format: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    text: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    example: Example | None = None
    buttons: Annotated[list[Button], msgspec.Meta(max_length=20)] | None = None
    add_security_recommendation: bool | None = None
    code_expiration_minutes: int | None = None


class TemplateCreate(Strict):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    language: Annotated[str, msgspec.Meta(min_length=2, max_length=16)]
    category: Category
    components: Annotated[list[Component], msgspec.Meta(min_length=1, max_length=4)]
    parameter_format: ParameterFormat = "POSITIONAL"


class TemplateEdit(Strict):
    """A change sends the template back to review (PENDING)."""

    category: Category | None = None
    components: Annotated[list[Component], msgspec.Meta(min_length=1, max_length=4)] | None = None


class Template(msgspec.Struct):
    id: int
    business: int
    name: str
    language: str
    category: str
    parameter_format: str
    components: list[Component]
    status: str
    reason: str
    paused_until: int
    created_at: int
    updated_at: int


class TemplateCreated(msgspec.Struct):
    """The Cloud API's answer to a create: ``{"id", "status", "category"}``."""

    id: str
    status: str
    category: str


class TemplateReview(Strict):
    status: Literal["APPROVED", "REJECTED"]
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class TemplateAction(Strict):
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


__all__ = [
    "Button",
    "Category",
    "Component",
    "Example",
    "NamedExample",
    "Template",
    "TemplateAction",
    "TemplateCreate",
    "TemplateCreated",
    "TemplateEdit",
    "TemplateReview",
]

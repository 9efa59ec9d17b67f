"""Webhook bodies in the Cloud API's shape (reference §2): messages and statuses.

Every ``value`` carries ``metadata`` and ``contacts[]`` with ``user_id`` (the business-scoped
id): pywa 4.5 fails on a message or status webhook without them.
"""

from __future__ import annotations

from typing import Any

from tresen.gateway.models import Number, Person

FREE = {"SERVICE", ""}


def contact(person: Person) -> dict[str, Any]:
    entry: dict[str, Any] = {"profile": {"name": person.name or person.scoped_id}}
    if person.wa_id:
        entry["wa_id"] = person.wa_id
    entry["user_id"] = person.scoped_id
    return entry


def envelope(
    number: Number, value: dict[str, Any], field: str = "messages", time_ms: int = 0
) -> dict[str, Any]:
    """The webhook body; account-level fields (templates, quality) carry the entry's ``time``."""
    entry: dict[str, Any] = {"id": number.waba_id}
    if time_ms:
        entry["time"] = time_ms // 1000
    entry["changes"] = [{"field": field, "value": value}]
    return {"object": "whatsapp_business_account", "entry": [entry]}


def _value(number: Number, person: Person) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": number.digits, "phone_number_id": number.id},
        "contacts": [contact(person)],
    }


def message(number: Number, person: Person, msg: dict[str, Any]) -> dict[str, Any]:
    value = _value(number, person)
    value["messages"] = [msg]
    return envelope(number, value)


def pricing_type(category: str, window_open: bool) -> str:
    """The relay's per-message pricing as the gateway can see it (docs/business-rules.md),
    where the relay did not say (its ``sent`` carries the pricing it applies): service replies
    are free, utility templates inside the 24-hour window are free, other templates are
    billed. (An entry-point window, known only to the relay, is not seen.)"""
    if category.upper() in FREE or (category.upper() == "UTILITY" and window_open):
        return "free_customer_service"
    return "regular"


def pricing_object(category: str, type: str = "") -> dict[str, Any]:
    """The PMP pricing object of a status webhook."""
    type = type or pricing_type(category, False)
    return {
        "billable": type == "regular",
        "pricing_model": "PMP",
        "category": category.lower() if category.upper() not in FREE else "service",
        "type": type,
    }


def status(
    number: Number,
    person: Person,
    *,
    message_id: str,
    status: str,
    ts_ms: int,
    category: str = "",
    pricing: str = "",
    opaque: str = "",
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": message_id,
        "status": status,
        "timestamp": str(ts_ms // 1000),
        "recipient_id": person.address,
        "recipient_user_id": person.scoped_id,
    }
    if opaque:
        entry["biz_opaque_callback_data"] = opaque
    if status != "failed":
        entry["pricing"] = pricing_object(category, pricing)
    if errors:
        entry["errors"] = errors
    value = _value(number, person)
    value["statuses"] = [entry]
    return envelope(number, value)


REASONS = {
    "PROMOTIONAL", "ABUSIVE_CONTENT", "INCORRECT_CATEGORY", "INVALID_FORMAT",
    "TAG_CONTENT_MISMATCH", "SCAM",
}  # fmt: skip


def template_status(
    number: Number,
    *,
    template_id: int,
    name: str,
    language: str,
    category: str,
    event: str,
    reason: str,
    time_ms: int,
) -> dict[str, Any]:
    """``message_template_status_update``; the operator's free-text reason goes in
    ``other_info`` (the Cloud API's ``reason`` is an enumeration)."""
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": template_id,
        "message_template_name": name,
        "message_template_language": language,
        "message_template_category": category,
        "reason": reason.upper() if reason.upper() in REASONS else "NONE",
    }
    if reason and value["reason"] == "NONE":
        value["other_info"] = {"title": event, "description": reason}
    return envelope(number, value, field="message_template_status_update", time_ms=time_ms)

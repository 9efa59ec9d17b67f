"""Templates on the WABA (the relay stores and reviews them), and the phone number / WABA nodes.

``POST /{waba}/message_templates`` creates (status PENDING until the operator reviews it),
``GET`` lists with ``name`` / ``status`` filters and cursor paging, ``GET /{template-id}``,
``POST /{template-id}`` edits (back to review),
``DELETE /{waba}/message_templates?name=[&hsm_id=]``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from tresen.errors import TresenError
from tresen.gateway.cloudapi.errors import GraphError, from_relay, missing, unknown_node
from tresen.gateway.cloudapi.params import bearer, only, params
from tresen.gateway.service import Gateway, Line

Req = Request[Any, Any, Any]
CREATE_FIELDS = {
    "name",
    "language",
    "category",
    "components",
    "parameter_format",
    "allow_category_change",
    "messaging_product",
}
STATUSES = {"APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED", "DELETED"}


def template_out(t: dict[str, Any], fields: str = "") -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": str(t["id"]),
        "name": t["name"],
        "language": t["language"],
        "status": t["status"],
        "category": t["category"],
        "parameter_format": t.get("parameter_format", "POSITIONAL"),
        "components": t.get("components", []),
    }
    if t.get("reason"):
        view["rejected_reason"] = t["reason"]
    wanted = {f.strip() for f in fields.split(",") if f.strip()}
    if wanted:
        view = {k: v for k, v in view.items() if k in wanted or k == "id"}
    return view


async def _relay(call: Any) -> Any:
    try:
        return await call
    except TresenError as exc:
        raise from_relay(exc) from exc


async def _by_id(node: str, call: Any) -> Any:
    """A call on one template by its id: one this business does not have (none, or another
    business's) is an unknown node, as the Graph API answers, not a missing template name."""
    try:
        return await call
    except TresenError as exc:
        if str(exc.code) in ("132001", "not_found"):
            raise unknown_node(node) from exc
        raise from_relay(exc) from exc


@post("/{node:str}/message_templates", status_code=200, summary="Create a template")
async def create_template(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_waba(bearer(request), node)
    values = await params(request)
    only(values, CREATE_FIELDS)
    for key in ("name", "language", "category", "components"):
        if key not in values:
            raise missing(key)
    body = {k: values[k] for k in ("name", "language", "category", "components")}
    if isinstance(body["category"], str):
        body["category"] = body["category"].upper()
    if "parameter_format" in values:
        body["parameter_format"] = str(values["parameter_format"]).upper()
    created = await _relay(line.biz.create_template(body))
    return {"id": str(created["id"]), "status": created["status"], "category": created["category"]}


@get("/{node:str}/message_templates", summary="List templates (filters, cursor paging)")
async def list_templates(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_waba(bearer(request), node)
    values = await params(request)
    status = str(values.get("status") or "").upper() or None
    if status is not None and status not in STATUSES:
        raise GraphError(100, f"status: one of {', '.join(sorted(STATUSES))}")
    try:
        limit = int(values.get("limit") or 25)
        after = int(values.get("after") or 0)
    except ValueError as exc:
        raise GraphError(100, "limit and after are numbers") from exc
    if not 1 <= limit <= 500 or after < 0:
        raise GraphError(100, "limit: 1 to 500; after: a cursor from paging")
    name = str(values.get("name") or "") or None
    found = await _relay(line.biz.templates(status=status, name=name, after=after, limit=limit))
    data = [template_out(t, str(values.get("fields") or "")) for t in found]
    paging: dict[str, Any] = (
        {"cursors": {"before": data[0]["id"], "after": data[-1]["id"]}} if data else {"cursors": {}}
    )
    if len(found) == limit:
        paging["next"] = (
            f"{request.base_url}{request.url.path.lstrip('/')}?after={data[-1]['id']}&limit={limit}"
        )
    return {"data": data, "paging": paging}


@delete("/{node:str}/message_templates", status_code=200, summary="Delete templates by name")
async def delete_templates(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_waba(bearer(request), node)
    values = await params(request)
    name = values.get("name")
    if not name:
        raise missing("name")
    hsm_id = str(values.get("hsm_id") or "")
    if hsm_id:
        if not hsm_id.isdigit():
            raise GraphError(100, "hsm_id: a template id")
        template = await _relay(line.biz.template(int(hsm_id)))
        if template["name"] != name:
            raise GraphError(100, f"template {hsm_id} is not named {name}")
        await _relay(line.biz.delete_template(int(hsm_id)))
    elif not await _relay(line.biz.delete_templates_named(str(name))):
        raise GraphError(100, f"no template is named {name}", subcode=33)
    line.templates.clear()
    return {"success": True}


async def template_view(line: Line, node: str) -> dict[str, Any]:
    if not node.isdigit() or len(node) > 18:
        raise unknown_node(node)
    try:
        return template_out(await line.biz.template(int(node)))
    except TresenError as exc:
        raise unknown_node(node) from exc


async def edit(line: Line, node: str, values: dict[str, Any]) -> dict[str, Any]:
    if not node.isdigit() or len(node) > 18:
        raise unknown_node(node)
    only(values, {"category", "components", "messaging_product"})
    body: dict[str, Any] = {k: values[k] for k in ("category", "components") if k in values}
    if not body:
        raise GraphError(100, "give 'category' or 'components' to change")
    await _by_id(node, line.biz.edit_template(int(node), body))
    line.templates.clear()
    return {"success": True}


async def delete_by_id(line: Line, node: str) -> None:
    if len(node) > 18:
        raise unknown_node(node)
    await _by_id(node, line.biz.delete_template(int(node)))
    line.templates.clear()


# ---------------------------------------------------------------- phone number and WABA


async def phone_view(gateway: Gateway, line: Line, fields: str) -> dict[str, Any]:
    business = await _relay(line.biz.get())
    try:
        quality = str((await line.biz.account()).get("quality") or "NA")
    except TresenError:
        quality = "NA"
    number = line.number
    view: dict[str, Any] = {
        "id": number.id,
        "display_phone_number": number.phone,
        "verified_name": business.get("display_name", ""),
        "quality_rating": quality.upper()
        if quality.upper() in ("GREEN", "YELLOW", "RED")
        else "NA",
        "code_verification_status": "VERIFIED",
        "name_status": {"approved": "APPROVED", "rejected": "DECLINED"}.get(
            str(business.get("display_name_status")), "PENDING_REVIEW"
        ),
        "is_official_business_account": bool(business.get("verified")),
        "platform_type": "CLOUD_API",
        "status": "CONNECTED" if number.registered_at else "PENDING",
        "throughput": {"level": "STANDARD"},
        "messaging_product": "whatsapp",
    }
    wanted = {f.strip() for f in fields.split(",") if f.strip()}
    if wanted:
        view = {k: v for k, v in view.items() if k in wanted or k == "id"}
    return view


async def waba_view(line: Line) -> dict[str, Any]:
    business = await _relay(line.biz.get())
    return {
        "id": line.number.waba_id,
        "name": business.get("display_name", ""),
        "timezone_id": "0",
        "message_template_namespace": f"tresen_{line.number.waba_id}",
        "business_verification_status": "verified" if business.get("verified") else "not_verified",
    }


@get("/{node:str}/phone_numbers", summary="The WABA's phone numbers")
async def phone_numbers(
    request: Req, node: FromPath[str], gateway: NamedDependency[Gateway]
) -> dict[str, Any]:
    line = gateway.access_waba(bearer(request), node)
    values = await params(request)
    return {"data": [await phone_view(gateway, line, str(values.get("fields") or ""))]}


ROUTES = [create_template, list_templates, delete_templates, phone_numbers]

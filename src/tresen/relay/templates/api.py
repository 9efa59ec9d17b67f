"""HTTP routes for templates: the business's (create, list, edit, delete) and the operator's."""

from __future__ import annotations

from typing import Annotated

from litestar import Router, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from tresen.relay.accounts.models import Principal
from tresen.relay.admin.auth import ADMIN
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.templates.models import (
    Status,
    Template,
    TemplateAction,
    TemplateCreate,
    TemplateCreated,
    TemplateEdit,
    TemplateReview,
)
from tresen.relay.templates.service import TemplateService
from tresen.relay.transport.http import provide_principal

AUTH = {"who": Provide(provide_principal)}
Name = Annotated[str | None, QueryParameter(max_length=512)]


@post("/templates", dependencies=AUTH, status_code=201, summary="Create a template (PENDING)")
async def create_template(
    who: NamedDependency[Principal],
    data: JSONBody[TemplateCreate],
    templates: NamedDependency[TemplateService],
) -> TemplateCreated:
    return await templates.do_create(who, data)


@get("/templates", dependencies=AUTH, summary="This business's templates")
async def list_templates(
    who: NamedDependency[Principal],
    templates: NamedDependency[TemplateService],
    status: Annotated[Status | None, QueryParameter()] = None,
    name: Name = None,
    after: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> list[Template]:
    return await templates.access_templates(who, status, name, after, limit)


@get("/templates/{template_id:int}", dependencies=AUTH, summary="One template")
async def get_template(
    who: NamedDependency[Principal],
    template_id: FromPath[int],
    templates: NamedDependency[TemplateService],
) -> Template:
    return await templates.access_template(who, template_id)


@post(
    "/templates/{template_id:int}",
    dependencies=AUTH,
    status_code=200,
    summary="Edit a template (it goes back to review)",
)
async def edit_template(
    who: NamedDependency[Principal],
    template_id: FromPath[int],
    data: JSONBody[TemplateEdit],
    templates: NamedDependency[TemplateService],
) -> Template:
    return await templates.do_edit(who, template_id, data)


@delete("/templates/{template_id:int}", dependencies=AUTH, summary="Delete a template")
async def delete_template(
    who: NamedDependency[Principal],
    template_id: FromPath[int],
    templates: NamedDependency[TemplateService],
) -> None:
    await templates.do_delete(who, template_id=template_id)


@delete(
    "/templates",
    dependencies=AUTH,
    status_code=200,
    summary="Delete every language of a template by name",
)
async def delete_by_name(
    who: NamedDependency[Principal],
    templates: NamedDependency[TemplateService],
    name: Annotated[str, QueryParameter(min_length=1, max_length=512)],
) -> dict[str, int]:
    return {"deleted": await templates.do_delete(who, name=name)}


# ---------------------------------------------------------------- the operator


@get("/templates", dependencies=ADMIN, summary="Templates to review (default: PENDING)")
async def admin_templates(
    admin: NamedDependency[AdminPrincipal],
    templates: NamedDependency[TemplateService],
    status: Annotated[Status | None, QueryParameter()] = "PENDING",
    business: Annotated[int | None, QueryParameter(ge=1)] = None,
    after: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> list[Template]:
    return await templates.access_admin_templates(status, business, after, limit)


@get("/templates/{template_id:int}", dependencies=ADMIN, summary="One template, any business")
async def admin_template(
    admin: NamedDependency[AdminPrincipal],
    template_id: FromPath[int],
    templates: NamedDependency[TemplateService],
) -> Template:
    return await templates.access_admin_template(template_id)


@post(
    "/templates/{template_id:int}/review",
    dependencies=ADMIN,
    status_code=200,
    summary="Approve or reject a PENDING template (audited)",
)
async def review_template(
    admin: NamedDependency[AdminPrincipal],
    template_id: FromPath[int],
    data: JSONBody[TemplateReview],
    templates: NamedDependency[TemplateService],
) -> Template:
    return await templates.do_review(admin, template_id, data)


@post(
    "/templates/{template_id:int}/disable",
    dependencies=ADMIN,
    status_code=200,
    summary="Disable a template (audited)",
)
async def disable_template(
    admin: NamedDependency[AdminPrincipal],
    template_id: FromPath[int],
    data: JSONBody[TemplateAction],
    templates: NamedDependency[TemplateService],
) -> Template:
    return await templates.do_disable(admin, template_id, data.reason)


@post(
    "/templates/{template_id:int}/reinstate",
    dependencies=ADMIN,
    status_code=200,
    summary="Reinstate a paused or disabled template (audited)",
)
async def reinstate_template(
    admin: NamedDependency[AdminPrincipal],
    template_id: FromPath[int],
    data: JSONBody[TemplateAction],
    templates: NamedDependency[TemplateService],
) -> Template:
    return await templates.do_reinstate(admin, template_id, data.reason)


business_router = Router(
    path="/v1/business",
    tags=["templates"],
    route_handlers=[
        create_template,
        list_templates,
        get_template,
        edit_template,
        delete_template,
        delete_by_name,
    ],
)
admin_router = Router(
    path="/v1/admin",
    tags=["admin"],
    route_handlers=[
        admin_templates,
        admin_template,
        review_template,
        disable_template,
        reinstate_template,
    ],
)

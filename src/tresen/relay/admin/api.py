"""Admin HTTP routes under /v1/admin: admin tokens and the audit log.

Feature packages add their own admin routes (business review, templates, billing) with
``dependencies=ADMIN`` and write each action to the audit log in the same transaction.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Router, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from tresen.relay.admin.auth import ADMIN
from tresen.relay.admin.models import (
    AdminPrincipal,
    AdminToken,
    AdminTokenCreate,
    AdminTokenCreated,
    AuditPage,
)
from tresen.relay.admin.service import AdminService


@get("/whoami", dependencies=ADMIN, summary="The admin behind this token")
async def whoami(admin: NamedDependency[AdminPrincipal]) -> AdminPrincipal:
    return admin


@post("/tokens", dependencies=ADMIN, status_code=201, summary="Create an admin token (shown once)")
async def create_token(
    admin: NamedDependency[AdminPrincipal],
    data: JSONBody[AdminTokenCreate],
    admins: NamedDependency[AdminService],
) -> AdminTokenCreated:
    return await admins.do_create_token(admin, data.name)


@get("/tokens", dependencies=ADMIN, summary="Admin tokens (never the tokens themselves)")
async def list_tokens(
    admin: NamedDependency[AdminPrincipal], admins: NamedDependency[AdminService]
) -> list[AdminToken]:
    return await admins.access_tokens()


@delete("/tokens/{token_id:int}", dependencies=ADMIN, summary="Revoke an admin token at once")
async def revoke_token(
    admin: NamedDependency[AdminPrincipal],
    token_id: FromPath[int],
    admins: NamedDependency[AdminService],
) -> None:
    await admins.do_revoke_token(admin, token_id)


@get("/audit", dependencies=ADMIN, summary="The audit log, newest first")
async def read_audit(
    admin: NamedDependency[AdminPrincipal],
    admins: NamedDependency[AdminService],
    before: Annotated[int | None, QueryParameter(ge=1)] = None,
    action: Annotated[str | None, QueryParameter(max_length=100)] = None,
    target: Annotated[str | None, QueryParameter(max_length=200)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> AuditPage:
    return await admins.access_audit(before=before, action=action, target=target, limit=limit)


router = Router(
    path="/v1/admin",
    tags=["admin"],
    route_handlers=[whoami, create_token, list_tokens, revoke_token, read_audit],
)

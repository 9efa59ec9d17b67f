"""HTTP routes: opt-in / opt-out, entry points, blocks, reports, and their admin side."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Router, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from tresen.relay.accounts.models import Principal
from tresen.relay.admin.auth import ADMIN
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.consent.models import (
    Blocked,
    BlockRequest,
    BusinessOptOut,
    ConsentEvent,
    ConsentRecord,
    EntryRequest,
    EntryWindow,
    OptIn,
    OptOut,
    Report,
    ReportCreate,
    ReportPage,
    ReportResolve,
)
from tresen.relay.consent.service import ConsentService
from tresen.relay.transport.http import provide_principal

AUTH = {"who": Provide(provide_principal)}


@post(
    "/consents/{business_id:int}",
    dependencies=AUTH,
    status_code=200,
    summary="Opt in to messages from a business (marketing and/or utility)",
)
async def opt_in(
    who: NamedDependency[Principal],
    business_id: FromPath[int],
    data: JSONBody[OptIn],
    consent: NamedDependency[ConsentService],
) -> list[ConsentRecord]:
    return await consent.do_opt_in(who, business_id, data)


@post(
    "/consents/{business_id:int}/stop",
    dependencies=AUTH,
    status_code=200,
    summary="Stop: opt out of a business's messages (takes effect at once)",
)
async def opt_out(
    who: NamedDependency[Principal],
    business_id: FromPath[int],
    data: JSONBody[OptOut],
    consent: NamedDependency[ConsentService],
) -> list[ConsentRecord]:
    return await consent.do_opt_out(who, business_id, data)


@get("/consents", dependencies=AUTH, summary="Your consents to businesses")
async def my_consents(
    who: NamedDependency[Principal], consent: NamedDependency[ConsentService]
) -> list[ConsentRecord]:
    return await consent.access_consents(who)


@post(
    "/entry/{business_id:int}",
    dependencies=AUTH,
    status_code=200,
    summary="You opened a business's chat from its link or QR code (72-hour free window)",
)
async def enter(
    who: NamedDependency[Principal],
    business_id: FromPath[int],
    data: JSONBody[EntryRequest],
    consent: NamedDependency[ConsentService],
) -> EntryWindow:
    return await consent.do_enter(who, business_id, data.source)


@post("/blocks", dependencies=AUTH, status_code=201, summary="Block an account: nothing from it")
async def block(
    who: NamedDependency[Principal],
    data: JSONBody[BlockRequest],
    consent: NamedDependency[ConsentService],
) -> Blocked:
    return await consent.do_block(who, data.account)


@delete("/blocks/{account_id:int}", dependencies=AUTH, summary="Unblock an account")
async def unblock(
    who: NamedDependency[Principal],
    account_id: FromPath[int],
    consent: NamedDependency[ConsentService],
) -> None:
    await consent.do_unblock(who, account_id)


@get("/blocks", dependencies=AUTH, summary="The accounts you blocked")
async def my_blocks(
    who: NamedDependency[Principal], consent: NamedDependency[ConsentService]
) -> list[Blocked]:
    return await consent.access_blocks(who)


@post(
    "/reports",
    dependencies=AUTH,
    status_code=201,
    summary="Report an account to the operator, with the messages you choose to attach",
)
async def report(
    who: NamedDependency[Principal],
    data: JSONBody[ReportCreate],
    consent: NamedDependency[ConsentService],
) -> Report:
    return await consent.do_report(who, data)


# ---------------------------------------------------------------- the business's side


@get("/consents", dependencies=AUTH, summary="Consents of people to this business")
async def business_consents(
    who: NamedDependency[Principal],
    consent: NamedDependency[ConsentService],
    person: Annotated[int | None, QueryParameter(ge=1)] = None,
    user_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
    after: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> list[ConsentRecord]:
    if user_id is not None or person is not None:
        person = await consent.check_person(who, person, user_id)
    return await consent.access_business_consents(who, person, after, limit)


@post(
    "/opt-outs",
    dependencies=AUTH,
    status_code=200,
    summary="Report a STOP keyword a person sent (the person is opted out at once)",
)
async def business_opt_out(
    who: NamedDependency[Principal],
    data: JSONBody[BusinessOptOut],
    consent: NamedDependency[ConsentService],
) -> list[ConsentRecord]:
    return await consent.do_business_opt_out(who, data)


# ---------------------------------------------------------------- the operator


@get("/reports", dependencies=ADMIN, summary="The report queue, newest first")
async def list_reports(
    admin: NamedDependency[AdminPrincipal],
    consent: NamedDependency[ConsentService],
    status: Annotated[Literal["open", "resolved"] | None, QueryParameter()] = "open",
    before: Annotated[int | None, QueryParameter(ge=1)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> ReportPage:
    return await consent.access_reports(status, before, limit)


@get("/reports/{report_id:int}", dependencies=ADMIN, summary="One report")
async def get_report(
    admin: NamedDependency[AdminPrincipal],
    report_id: FromPath[int],
    consent: NamedDependency[ConsentService],
) -> Report:
    return await consent.access_report(report_id)


@post(
    "/reports/{report_id:int}/resolve",
    dependencies=ADMIN,
    status_code=200,
    summary="Resolve a report (audited)",
)
async def resolve_report(
    admin: NamedDependency[AdminPrincipal],
    report_id: FromPath[int],
    data: JSONBody[ReportResolve],
    consent: NamedDependency[ConsentService],
) -> Report:
    return await consent.do_resolve_report(admin, report_id, data)


@get(
    "/consents/{business_id:int}/{person_id:int}",
    dependencies=ADMIN,
    summary="Every opt-in and opt-out between a business and a person",
)
async def consent_history(
    admin: NamedDependency[AdminPrincipal],
    business_id: FromPath[int],
    person_id: FromPath[int],
    consent: NamedDependency[ConsentService],
) -> list[ConsentEvent]:
    return await consent.access_consent_history(business_id, person_id)


router = Router(
    path="/v1",
    tags=["consent"],
    route_handlers=[opt_in, opt_out, my_consents, enter, block, unblock, my_blocks, report],
)
business_router = Router(
    path="/v1/business", tags=["consent"], route_handlers=[business_consents, business_opt_out]
)
admin_router = Router(
    path="/v1/admin",
    tags=["admin"],
    route_handlers=[list_reports, get_report, resolve_report, consent_history],
)

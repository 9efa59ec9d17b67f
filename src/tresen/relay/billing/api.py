"""HTTP routes: a business's usage, invoices and account; the operator's billing and standing."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, Router, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.admin.auth import ADMIN
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.billing.invoice import invoice_csv, invoice_html
from tresen.relay.billing.invoice_pdf import invoice_pdf
from tresen.relay.billing.models import Account, CreditLimit, Invoice, TopUp, Usage
from tresen.relay.billing.service import BillingService
from tresen.relay.policy.quality import QualityService, Standing, StandingChange
from tresen.relay.transport.http import provide_principal

AUTH = {"who": Provide(provide_principal)}
Day = Annotated[str, QueryParameter(min_length=10, max_length=10)]
MAX_RATE_CARD_BYTES = 1024 * 1024
CSV = "text/csv; charset=utf-8"
HTML = "text/html; charset=utf-8"
PDF = "application/pdf"


def _filename(business: int, month: str, ext: str) -> dict[str, str]:
    return {"Content-Disposition": f'inline; filename="tresen-{business}-{month}.{ext}"'}


# ---------------------------------------------------------------- the business


@get("/usage", dependencies=AUTH, summary="Delivered messages by day, category and pricing")
async def usage(
    who: NamedDependency[Principal],
    billing: NamedDependency[BillingService],
    start: Day,
    end: Day,
) -> Usage:
    return await billing.access_usage(who.account_id, start, end)


@get("/invoices/{month:str}", dependencies=AUTH, summary="The invoice of a month (YYYY-MM)")
async def invoice(
    who: NamedDependency[Principal], month: FromPath[str], billing: NamedDependency[BillingService]
) -> Invoice:
    return await billing.access_invoice(who.account_id, month)


@get("/invoices/{month:str}/csv", dependencies=AUTH, summary="The invoice as CSV", media_type=CSV)
async def invoice_as_csv(
    who: NamedDependency[Principal], month: FromPath[str], billing: NamedDependency[BillingService]
) -> Response[str]:
    found = await billing.access_invoice(who.account_id, month)
    return Response(
        invoice_csv(found), media_type=CSV, headers=_filename(found.business, month, "csv")
    )


@get(
    "/invoices/{month:str}/html",
    dependencies=AUTH,
    summary="The invoice, printable",
    media_type=HTML,
)
async def invoice_as_html(
    who: NamedDependency[Principal], month: FromPath[str], billing: NamedDependency[BillingService]
) -> Response[str]:
    found = await billing.access_invoice(who.account_id, month)
    return Response(invoice_html(found), media_type=HTML)


@get("/invoices/{month:str}/pdf", dependencies=AUTH, summary="The invoice as PDF", media_type=PDF)
async def invoice_as_pdf(
    who: NamedDependency[Principal], month: FromPath[str], billing: NamedDependency[BillingService]
) -> Response[bytes]:
    found = await billing.access_invoice(who.account_id, month)
    headers = _filename(found.business, month, "pdf")
    return Response(invoice_pdf(found), media_type=PDF, headers=headers)


@get("/account", dependencies=AUTH, summary="Balance, credit, tier, quality and throughput")
async def account(
    who: NamedDependency[Principal], billing: NamedDependency[BillingService]
) -> Account:
    return await billing.access_account(who.account_id)


@get("/standing", dependencies=AUTH, summary="Quality rating, messaging-limit tier, feedback")
async def standing(
    who: NamedDependency[Principal],
    quality: NamedDependency[QualityService],
    billing: NamedDependency[BillingService],
) -> Standing:
    await billing.access_account(who.account_id)  # a business, else not_a_business
    return await quality.do_evaluate(who.account_id)


# ---------------------------------------------------------------- the operator


@get("/billing/{business_id:int}", dependencies=ADMIN, summary="A business's billing account")
async def admin_account(
    admin: NamedDependency[AdminPrincipal],
    business_id: FromPath[int],
    billing: NamedDependency[BillingService],
) -> Account:
    return await billing.access_account(business_id)


@post(
    "/billing/{business_id:int}/top-up",
    dependencies=ADMIN,
    status_code=200,
    summary="Add prepaid money (negative: an adjustment); audited",
)
async def admin_top_up(
    admin: NamedDependency[AdminPrincipal],
    business_id: FromPath[int],
    data: JSONBody[TopUp],
    billing: NamedDependency[BillingService],
) -> Account:
    return await billing.do_top_up(admin, business_id, data.amount_minor, data.note)


@put(
    "/billing/{business_id:int}/credit-limit",
    dependencies=ADMIN,
    summary="Set what the business may owe (null: the relay default); audited",
)
async def admin_credit_limit(
    admin: NamedDependency[AdminPrincipal],
    business_id: FromPath[int],
    data: JSONBody[CreditLimit],
    billing: NamedDependency[BillingService],
) -> Account:
    return await billing.do_set_credit_limit(admin, business_id, data.credit_limit_minor)


@get("/billing/{business_id:int}/usage", dependencies=ADMIN, summary="A business's usage")
async def admin_usage(
    admin: NamedDependency[AdminPrincipal],
    business_id: FromPath[int],
    billing: NamedDependency[BillingService],
    start: Day,
    end: Day,
) -> Usage:
    return await billing.access_usage(business_id, start, end)


@get(
    "/billing/{business_id:int}/invoices/{month:str}",
    dependencies=ADMIN,
    summary="A business's invoice (JSON; add ?format=csv, html or pdf)",
)
async def admin_invoice(
    admin: NamedDependency[AdminPrincipal],
    business_id: FromPath[int],
    month: FromPath[str],
    billing: NamedDependency[BillingService],
    format: Annotated[str, QueryParameter(pattern="^(json|csv|html|pdf)$")] = "json",
) -> Response[Any]:
    found = await billing.access_invoice(business_id, month)
    if format == "csv":
        return Response(
            invoice_csv(found), media_type=CSV, headers=_filename(business_id, month, "csv")
        )
    if format == "html":
        return Response(invoice_html(found), media_type=HTML)
    if format == "pdf":
        headers = _filename(business_id, month, "pdf")
        return Response(invoice_pdf(found), media_type=PDF, headers=headers)
    return Response(found)


@get("/rate-card", dependencies=ADMIN, summary="The rate card in force (CSV)", media_type=CSV)
async def get_rate_card(
    admin: NamedDependency[AdminPrincipal], billing: NamedDependency[BillingService]
) -> Response[str]:
    return Response(billing.access_rate_card(), media_type=CSV)


@put(
    "/rate-card",
    dependencies=ADMIN,
    summary="Replace the rate card (CSV body: category,country,price_minor,currency); audited",
    media_type=CSV,
)
async def put_rate_card(
    request: Request[Any, Any, Any],
    admin: NamedDependency[AdminPrincipal],
    billing: NamedDependency[BillingService],
) -> Response[str]:
    body = await request.body()
    if len(body) > MAX_RATE_CARD_BYTES:
        raise InvalidRequest("a rate card is at most 1 MiB", code=Code.INVALID_RATE_CARD)
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            "send the rate card as UTF-8 CSV", code=Code.INVALID_RATE_CARD
        ) from exc
    return Response(await billing.do_replace_rate_card(admin, text), media_type=CSV)


@delete(
    "/rate-card",
    dependencies=ADMIN,
    status_code=200,
    summary="Back to the packaged rate card; audited",
    media_type=CSV,
)
async def reset_rate_card(
    admin: NamedDependency[AdminPrincipal], billing: NamedDependency[BillingService]
) -> Response[str]:
    return Response(await billing.do_reset_rate_card(admin), media_type=CSV)


@get("/policy/{business_id:int}", dependencies=ADMIN, summary="Re-rate a business now")
async def admin_standing(
    admin: NamedDependency[AdminPrincipal],
    business_id: FromPath[int],
    quality: NamedDependency[QualityService],
) -> Standing:
    return await quality.do_evaluate(business_id)


@post(
    "/policy/{business_id:int}",
    dependencies=ADMIN,
    status_code=200,
    summary="Set a business's tier or throughput; audited",
)
async def admin_change_standing(
    admin: NamedDependency[AdminPrincipal],
    business_id: FromPath[int],
    data: JSONBody[StandingChange],
    quality: NamedDependency[QualityService],
) -> Standing:
    return await quality.do_change(admin, business_id, data)


@post("/policy/sweep", dependencies=ADMIN, status_code=200, summary="Re-rate every business now")
async def admin_sweep(
    admin: NamedDependency[AdminPrincipal], quality: NamedDependency[QualityService]
) -> list[Standing]:
    return await quality.do_sweep()


business_router = Router(
    path="/v1/business",
    tags=["billing"],
    route_handlers=[
        usage,
        invoice,
        invoice_as_csv,
        invoice_as_html,
        invoice_as_pdf,
        account,
        standing,
    ],
)
admin_router = Router(
    path="/v1/admin",
    tags=["admin"],
    route_handlers=[
        admin_account,
        admin_top_up,
        admin_credit_limit,
        admin_usage,
        admin_invoice,
        get_rate_card,
        put_rate_card,
        reset_rate_card,
        admin_standing,
        admin_change_standing,
        admin_sweep,
    ],
)

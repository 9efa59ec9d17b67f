"""The operator's business routes under /v1/admin/businesses: the review queue, verification
decisions, the domain proof check and display-name approval (each one audited)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Request, Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from tresen.relay.admin.auth import ADMIN
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.business.api import base_url
from tresen.relay.business.models import BusinessReview, Note, ProofCheck, ProofResult, Reason
from tresen.relay.business.review import BusinessReviewService
from tresen.relay.business.service import BusinessService

Admin = NamedDependency[AdminPrincipal]
Review = NamedDependency[BusinessReviewService]
Businesses = NamedDependency[BusinessService]
Req = Request[Any, Any, Any]
StatusFilter = Literal["pending", "verification_pending", "name_pending", "verified", "all"]


@get("", dependencies=ADMIN, summary="Businesses to review (or all), oldest first")
async def queue(
    request: Req,
    admin: Admin,
    business_review: Review,
    business: Businesses,
    status: Annotated[StatusFilter, QueryParameter()] = "pending",
    after: Annotated[int | None, QueryParameter(ge=0)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
) -> list[BusinessReview]:
    return await business_review.access_queue(status, after, limit, base_url(request, business))


@get("/{account_id:int}", dependencies=ADMIN, summary="One business with its applications")
async def review(
    request: Req,
    admin: Admin,
    account_id: FromPath[int],
    business_review: Review,
    business: Businesses,
) -> BusinessReview:
    return await business_review.access_review(account_id, base_url(request, business))


@post(
    "/{account_id:int}/verification/approve",
    dependencies=ADMIN,
    status_code=200,
    summary="Approve the pending verification application",
)
async def approve_verification(
    request: Req,
    admin: Admin,
    account_id: FromPath[int],
    data: JSONBody[Note],
    business_review: Review,
    business: Businesses,
) -> BusinessReview:
    return await business_review.do_approve_verification(
        admin, account_id, data.note, base_url(request, business)
    )


@post(
    "/{account_id:int}/verification/reject",
    dependencies=ADMIN,
    status_code=200,
    summary="Reject the pending verification application, with a reason",
)
async def reject_verification(
    request: Req,
    admin: Admin,
    account_id: FromPath[int],
    data: JSONBody[Reason],
    business_review: Review,
    business: Businesses,
) -> BusinessReview:
    return await business_review.do_reject_verification(
        admin, account_id, data.reason, base_url(request, business)
    )


@post(
    "/{account_id:int}/verification/revoke",
    dependencies=ADMIN,
    status_code=200,
    summary="Revoke an approved verification (the badge goes at once)",
)
async def revoke_verification(
    request: Req,
    admin: Admin,
    account_id: FromPath[int],
    data: JSONBody[Reason],
    business_review: Review,
    business: Businesses,
) -> BusinessReview:
    return await business_review.do_revoke_verification(
        admin, account_id, data.reason, base_url(request, business)
    )


@post(
    "/{account_id:int}/verification/check-domain",
    dependencies=ADMIN,
    status_code=200,
    summary="Check the domain proof over HTTPS and/or DNS TXT, and record the result",
)
async def check_domain(
    admin: Admin, account_id: FromPath[int], data: JSONBody[ProofCheck], business_review: Review
) -> ProofResult:
    return await business_review.do_check_domain(admin, account_id, data.method)


@post(
    "/{account_id:int}/display-name/approve",
    dependencies=ADMIN,
    status_code=200,
    summary="Approve the pending display name",
)
async def approve_name(
    request: Req,
    admin: Admin,
    account_id: FromPath[int],
    business_review: Review,
    business: Businesses,
) -> BusinessReview:
    return await business_review.do_approve_name(admin, account_id, base_url(request, business))


@post(
    "/{account_id:int}/display-name/reject",
    dependencies=ADMIN,
    status_code=200,
    summary="Reject the pending display name, with a reason",
)
async def reject_name(
    request: Req,
    admin: Admin,
    account_id: FromPath[int],
    data: JSONBody[Reason],
    business_review: Review,
    business: Businesses,
) -> BusinessReview:
    return await business_review.do_reject_name(
        admin, account_id, data.reason, base_url(request, business)
    )


router = Router(
    path="/v1/admin/businesses",
    tags=["admin"],
    route_handlers=[
        queue,
        review,
        approve_verification,
        reject_verification,
        revoke_verification,
        check_domain,
        approve_name,
        reject_name,
    ],
)

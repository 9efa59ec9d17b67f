"""HTTP routes for businesses: the business's own profile, settings, verification, catalog and
tools under /v1/business; public lookups (profile, catalog, QR) by account id or slug; the
person's phone sharing; and the public short link /b/{slug}."""

from __future__ import annotations

import asyncio
from html import escape
from typing import Annotated, Any, Literal

from litestar import Request, Response, Router, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from tresen.relay.accounts.models import Principal
from tresen.relay.business.models import (
    AwaySettings,
    Business,
    BusinessCreate,
    BusinessHours,
    BusinessProfile,
    BusinessUpdate,
    GreetingSettings,
    Person,
    PhoneShare,
    Verification,
    VerificationApply,
)
from tresen.relay.business.qr import qr_png, qr_svg
from tresen.relay.business.service import BusinessService
from tresen.relay.business.tools_api import TOOL_ROUTES
from tresen.relay.transport.http import provide_principal

AUTH = {"who": Provide(provide_principal)}
QrScale = Annotated[int, QueryParameter(ge=1, le=40)]


def base_url(request: Request[Any, Any, Any], business: BusinessService) -> str:
    """Where short links point: the configured public URL, else this request's base URL."""
    return business.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")


def qr_target(profile: BusinessProfile) -> str:
    """What a QR code encodes: the short link, marked so the entry is recorded as a QR scan."""
    return f"{profile.short_link}?src=qr"


@post("", dependencies=AUTH, status_code=201, summary="Make this account a business")
async def create_business(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    data: JSONBody[BusinessCreate],
    business: NamedDependency[BusinessService],
) -> Business:
    return await business.do_create(who, data, base_url(request, business))


@get("", dependencies=AUTH, summary="This account's business, with its private settings")
async def own_business(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    business: NamedDependency[BusinessService],
) -> Business:
    return await business.access_own(who, base_url(request, business))


@patch("", dependencies=AUTH, summary="Change the profile (a new display name goes to review)")
async def update_business(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    data: JSONBody[BusinessUpdate],
    business: NamedDependency[BusinessService],
) -> Business:
    return await business.do_update(who, data, base_url(request, business))


@put("/hours", dependencies=AUTH, summary="Set business hours (used for 'open now' and away)")
async def set_hours(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    data: JSONBody[BusinessHours],
    business: NamedDependency[BusinessService],
) -> Business:
    return await business.do_set_hours(who, data, base_url(request, business))


@put("/greeting", dependencies=AUTH, summary="Greeting message settings (sent by your client)")
async def set_greeting(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    data: JSONBody[GreetingSettings],
    business: NamedDependency[BusinessService],
) -> Business:
    return await business.do_set_greeting(who, data, base_url(request, business))


@put("/away", dependencies=AUTH, summary="Away message settings (sent by your client)")
async def set_away(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    data: JSONBody[AwaySettings],
    business: NamedDependency[BusinessService],
) -> Business:
    return await business.do_set_away(who, data, base_url(request, business))


@post("/verification", dependencies=AUTH, status_code=201, summary="Apply for verification")
async def apply_verification(
    who: NamedDependency[Principal],
    data: JSONBody[VerificationApply],
    business: NamedDependency[BusinessService],
) -> Verification:
    return await business.do_apply(who, data)


@get("/verification", dependencies=AUTH, summary="The latest application and its domain proof")
async def own_verification(
    who: NamedDependency[Principal], business: NamedDependency[BusinessService]
) -> Verification:
    return await business.access_verification(who)


@get("/people/{account_id:int}", dependencies=AUTH, summary="A person's business-scoped id")
async def person(
    who: NamedDependency[Principal],
    account_id: FromPath[int],
    business: NamedDependency[BusinessService],
) -> Person:
    return await business.access_person(who, account_id)


@get(
    "/people/by-scoped-id/{scoped_id:str}",
    dependencies=AUTH,
    summary="The person behind one of this business's scoped ids",
)
async def person_by_scoped_id(
    who: NamedDependency[Principal],
    scoped_id: FromPath[str],
    business: NamedDependency[BusinessService],
) -> Person:
    return await business.access_person_by_scoped_id(who, scoped_id)


# ---------------------------------------------------------------- public lookups


@get("/{account_id:int}", dependencies=AUTH, summary="A business's public profile")
async def public_profile(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    account_id: FromPath[int],
    business: NamedDependency[BusinessService],
) -> BusinessProfile:
    return await business.access_profile(account_id, base_url(request, business))


@get("/by-slug/{slug:str}", dependencies=AUTH, summary="A business's public profile by short link")
async def profile_by_slug(
    request: Request[Any, Any, Any],
    who: NamedDependency[Principal],
    slug: FromPath[str],
    business: NamedDependency[BusinessService],
) -> BusinessProfile:
    return await business.access_profile_by_slug(slug, base_url(request, business))


@get("/{account_id:int}/qr.png", summary="QR code of the short link (PNG)", media_type="image/png")
async def qr_code_png(
    request: Request[Any, Any, Any],
    account_id: FromPath[int],
    business: NamedDependency[BusinessService],
    scale: QrScale = 8,
) -> Response[bytes]:
    profile = await business.access_profile(account_id, base_url(request, business))
    png = await asyncio.to_thread(qr_png, qr_target(profile), scale=scale)  # ~20 ms: off the loop
    return Response(png, media_type="image/png")


@get(
    "/{account_id:int}/qr.svg",
    summary="QR code of the short link (SVG)",
    media_type="image/svg+xml",
)
async def qr_code_svg(
    request: Request[Any, Any, Any],
    account_id: FromPath[int],
    business: NamedDependency[BusinessService],
    scale: QrScale = 8,
) -> Response[bytes]:
    profile = await business.access_profile(account_id, base_url(request, business))
    svg = await asyncio.to_thread(qr_svg, qr_target(profile), scale=scale)
    return Response(svg, media_type="image/svg+xml")


@post(
    "/{account_id:int}/share-phone",
    dependencies=AUTH,
    status_code=200,
    summary="Share your phone number with this business",
)
async def share_phone(
    who: NamedDependency[Principal],
    account_id: FromPath[int],
    business: NamedDependency[BusinessService],
) -> PhoneShare:
    return await business.do_share_phone(who, account_id, True)


@delete(
    "/{account_id:int}/share-phone",
    dependencies=AUTH,
    status_code=200,
    summary="Stop sharing your phone number with this business",
)
async def unshare_phone(
    who: NamedDependency[Principal],
    account_id: FromPath[int],
    business: NamedDependency[BusinessService],
) -> PhoneShare:
    return await business.do_share_phone(who, account_id, False)


# ---------------------------------------------------------------- the short link


@get("/b/{slug:str}", summary="The public short link: a page that opens a chat", tags=["business"])
async def short_link(
    request: Request[Any, Any, Any],
    slug: FromPath[str],
    business: NamedDependency[BusinessService],
    src: Annotated[Literal["link", "qr"], QueryParameter()] = "link",
) -> Response[Any]:
    """The app that opens the ``tresen://`` link records the entry (``POST /v1/entry/{id}``
    with this ``source``), which opens the 72-hour free entry-point window."""
    profile = await business.access_profile_by_slug(slug, base_url(request, business))
    if "application/json" in request.headers.get("accept", ""):
        return Response(profile)
    open_link = f"tresen://business/{profile.account_id}?source={src}"
    badge = " &#10004; verified" if profile.verified else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'>"
        f"<title>{escape(profile.display_name)} on tresen</title></head><body>"
        f"<h1>{escape(profile.display_name)}{badge}</h1>"
        f"<p>{escape(profile.about)}</p>"
        f"<p><a href='{escape(open_link)}'>Open a chat in tresen</a></p>"
        f"<img alt='QR code' src='/v1/business/{profile.account_id}/qr.svg' width='240'>"
        "</body></html>"
    )
    return Response(page, media_type="text/html; charset=utf-8")


router = Router(
    path="/v1/business",
    tags=["business"],
    route_handlers=[
        create_business,
        own_business,
        update_business,
        set_hours,
        set_greeting,
        set_away,
        apply_verification,
        own_verification,
        person,
        person_by_scoped_id,
        public_profile,
        profile_by_slug,
        qr_code_png,
        qr_code_svg,
        share_phone,
        unshare_phone,
        *TOOL_ROUTES,
    ],
)
short_link_router = Router(path="/", route_handlers=[short_link])

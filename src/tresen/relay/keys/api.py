"""HTTP routes of the key directory: Matrix's keys/upload, keys/query and keys/claim."""

from __future__ import annotations

from litestar import Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from tresen.relay.accounts.models import Principal
from tresen.relay.keys.models import (
    ClaimRequest,
    ClaimResult,
    KeyCounts,
    QueryRequest,
    QueryResult,
    UploadRequest,
)
from tresen.relay.keys.service import KeyService
from tresen.relay.transport.http import provide_principal

AUTH = {"who": Provide(provide_principal)}


@post(
    "/keys/upload",
    dependencies=AUTH,
    status_code=200,
    summary="Publish this device's identity keys, one-time keys and fallback keys",
)
async def upload(
    who: NamedDependency[Principal],
    data: JSONBody[UploadRequest],
    keys: NamedDependency[KeyService],
) -> KeyCounts:
    return await keys.do_upload_keys(who, data)


@get("/keys/count", dependencies=AUTH, summary="This device's unclaimed one-time keys")
async def count(who: NamedDependency[Principal], keys: NamedDependency[KeyService]) -> KeyCounts:
    return await keys.access_key_counts(who)


@post(
    "/keys/query",
    dependencies=AUTH,
    status_code=200,
    summary="Signed identity keys of the current devices of some accounts",
)
async def query(
    who: NamedDependency[Principal], data: JSONBody[QueryRequest], keys: NamedDependency[KeyService]
) -> QueryResult:
    return await keys.access_device_keys(who, data)


@post(
    "/keys/claim",
    dependencies=AUTH,
    status_code=200,
    summary="Take one one-time key per device (the fallback key when none is left)",
)
async def claim(
    who: NamedDependency[Principal], data: JSONBody[ClaimRequest], keys: NamedDependency[KeyService]
) -> ClaimResult:
    return await keys.do_claim_keys(who, data)


router = Router(path="/v1", tags=["keys"], route_handlers=[upload, count, query, claim])

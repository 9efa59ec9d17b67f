"""HTTP edges: the error body every route answers with, and the caller's identity.

Every error is ``{"error": {"code", "message", "fields"?}}`` with the matching HTTP status.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    NotAuthorizedException,
    ValidationException,
)
from msgspec import ValidationError

from tresen.errors import TresenError
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.accounts.service import AccountService

log = logging.getLogger("tresen.http")


def error_response(
    status: int, code: str, message: str, fields: dict[str, Any] | None = None, **more: Any
) -> Response[Any]:
    """The error body every route answers with; ``fields`` may use any name."""
    fields = {**(fields or {}), **more}
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    headers = {}
    if "retry_after" in fields:
        headers["Retry-After"] = str(int(fields["retry_after"]))
    return Response({"error": body}, status_code=status, headers=headers)


def on_tresen_error(_: Request[Any, Any, Any], exc: TresenError) -> Response[Any]:
    return error_response(exc.status, str(exc.code), exc.message, exc.fields)


def on_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else []
        return error_response(400, Code.BAD_REQUEST, f"invalid request: {exc.detail}", errors=extra)
    if isinstance(exc, NotAuthorizedException):
        return error_response(401, Code.UNAUTHORIZED, exc.detail)
    if isinstance(exc, InternalServerException) and isinstance(exc.__cause__, ValidationError):
        # Litestar blames a dependency when the failing field shares a dependency's name (a
        # body's "accounts" and the ``accounts`` service): it was the request's value
        return error_response(400, Code.BAD_REQUEST, f"invalid request: {exc.__cause__}")
    code = {404: Code.NOT_FOUND, 405: Code.BAD_REQUEST, 413: Code.ENVELOPE_TOO_LARGE}.get(
        exc.status_code, Code.BAD_REQUEST if exc.status_code < 500 else Code.INTERNAL
    )
    return error_response(exc.status_code, code, exc.detail)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, Code.INTERNAL, "internal error; the relay logged the details")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    TresenError: on_tresen_error,
    HTTPException: on_http_error,
    Exception: on_unexpected,
}


def bearer(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        from tresen.errors import Unauthorized

        raise Unauthorized("send the device token as 'Authorization: Bearer <token>'")
    return token.strip()


async def provide_principal(
    request: Request[Any, Any, Any], accounts: NamedDependency[AccountService]
) -> Principal:
    """Dependency ``who``: the device behind the bearer token (revoked tokens are refused)."""
    return await accounts.access_principal(bearer(request))


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"

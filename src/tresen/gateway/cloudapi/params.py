"""Graph parameters come from the query string, a form or a JSON body, merged in that order.

Form and query values that hold JSON (``template={"name": ...}``) are decoded, as the Graph API
does; a body that is not valid JSON, or not an object, is refused with code 100.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request
from litestar.datastructures import UploadFile

from tresen.gateway.cloudapi.errors import GraphError

MAX_BODY = 1024 * 1024


def _value(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    if stripped in ("true", "false"):
        return stripped == "true"
    return text


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer …`` header ('' when there is none)."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def bearer(request: Request[Any, Any, Any]) -> str:
    token = bearer_token(request.headers.get("authorization", ""))
    return token or str(request.query_params.get("access_token", ""))


def is_form(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind in ("application/x-www-form-urlencoded", "multipart/form-data")


def json_body(raw: bytes) -> dict[str, Any]:
    """A JSON body's parameters: an object, at most MAX_BODY bytes; empty is none."""
    if len(raw) > MAX_BODY:
        raise GraphError(100, f"the body may be at most {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise GraphError(100, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise GraphError(100, "the body must be a JSON object")
    return body


async def params(
    request: Request[Any, Any, Any], *, files: dict[str, UploadFile] | None = None
) -> dict[str, Any]:
    """The merged parameters; uploaded files go to ``files`` when given."""
    merged: dict[str, Any] = {
        k: _value(v) for k, v in request.query_params.items() if k != "access_token"
    }
    if is_form(request.headers.get("content-type", "")):
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if files is None:
                    raise GraphError(100, f"{key}: no file is expected here")
                files[key] = value
            else:
                merged[key] = _value(str(value))
        return merged
    merged.update(json_body(await request.body()))
    return merged


def only(values: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(values) - allowed
    if unknown:
        raise GraphError(100, f"unknown parameters: {', '.join(sorted(unknown))}")

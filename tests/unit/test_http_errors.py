"""The HTTP error body: any field name is allowed, Retry-After comes from retry_after."""

from __future__ import annotations

import msgspec

from tresen.errors import LimitExceeded
from tresen.relay.transport.http import error_response, on_tresen_error


def test_fields_named_like_the_envelope_do_not_collide() -> None:
    fields = {"status": "x", "code": 1, "message": "m"}
    response = error_response(409, "conflict", "taken", fields)
    assert response.status_code == 409
    body = response.content
    assert body == {
        "error": {
            "code": "conflict",
            "message": "taken",
            "fields": {"status": "x", "code": 1, "message": "m"},
        }
    }


def test_tresen_errors_carry_their_fields_and_retry_after() -> None:
    exc = LimitExceeded("slow down", retry_after=2.5, status="busy")
    response = on_tresen_error(None, exc)  # type: ignore[arg-type]
    assert response.status_code == exc.status
    assert response.headers["Retry-After"] == "2"
    assert msgspec.to_builtins(response.content)["error"]["fields"]["status"] == "busy"

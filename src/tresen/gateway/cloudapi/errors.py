"""The Graph error envelope and the mapping of relay errors to Cloud API codes.

Every gateway error answers ``{"error": {"message", "type", "code", "error_subcode"?,
"error_data": {"messaging_product": "whatsapp", "details"}, "fbtrace_id"}}`` with the HTTP
status of the reference table (docs/gateway.md). Relay policy codes are already the Cloud API's
numbers as strings (``tresen.protocol.codes``); the rest map here.
"""

from __future__ import annotations

import secrets
from typing import Any

from tresen.errors import TresenError
from tresen.protocol.codes import Code

#: Cloud API codes the gateway answers with, and their titles (used as ``message``)
TITLES = {
    0: "AuthException",
    3: "Capability or permissions issue",
    100: "Invalid parameter",
    190: "Access token has expired",
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131026: "Message undeliverable",
    131042: "Business eligibility payment issue",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131050: "User stopped marketing messages",
    131051: "Unsupported message type",
    131052: "Media download error",
    131053: "Media upload error",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132012: "Parameter format does not match format in the created template",
    132015: "Template is paused",
    132016: "Template is disabled",
}
STATUS = {
    0: 401,
    190: 401,
    3: 403,
    130429: 429,
    131056: 429,
    131000: 500,
    131016: 503,
}
#: relay codes that the Cloud API reports asynchronously, as a ``failed`` status webhook
ASYNC_CODES = {131026, 131049, 131050}


class GraphError(Exception):
    """An error in the Graph envelope. ``code`` is the Cloud API's number."""

    def __init__(
        self,
        code: int,
        details: str,
        *,
        subcode: int | None = None,
        status: int | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.subcode = subcode
        self.status = status or STATUS.get(code, 400)
        self.transient = transient

    @property
    def title(self) -> str:
        return TITLES.get(self.code, "Error")

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": f"(#{self.code}) {self.title}",
            "type": "OAuthException",
            "code": self.code,
            "error_data": {"messaging_product": "whatsapp", "details": self.details},
            "fbtrace_id": "A" + secrets.token_urlsafe(16),
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.transient is not None:
            error["is_transient"] = self.transient
        return {"error": error}

    def webhook_error(self) -> dict[str, Any]:
        """The same error as it appears in ``statuses[].errors[]``."""
        return {
            "code": self.code,
            "title": self.title,
            "message": self.title,
            "error_data": {"details": self.details},
        }


def invalid(details: str, *, code: int = 100) -> GraphError:
    return GraphError(code, details)


def missing(field: str) -> GraphError:
    return GraphError(131008, f"The parameter {field} is required.")


def unknown_node(node: str) -> GraphError:
    return GraphError(
        100,
        f"Unsupported request - object with ID '{node}' does not exist, cannot be loaded due "
        "to missing permissions, or does not support this operation",
        subcode=33,
    )


def from_relay(exc: TresenError) -> GraphError:
    """The Cloud API error for an error the relay answered."""
    code = str(exc.code)
    if code.isdigit():
        return GraphError(int(code), exc.message)
    match code:
        case Code.OPT_IN_REQUIRED | Code.UNKNOWN_RECIPIENT | Code.FORBIDDEN:
            return GraphError(131026, exc.message)
        case Code.RATE_LIMITED | Code.TOO_MANY_IN_FLIGHT | Code.QUEUE_FULL:
            return GraphError(130429, exc.message, status=429)
        case Code.UNAUTHORIZED | Code.TOKEN_REVOKED:
            return GraphError(131000, f"the relay refused this number's device: {exc.message}")
        case Code.INVALID_TEMPLATE | Code.TEMPLATE_EXISTS | Code.BAD_REQUEST:
            return GraphError(100, exc.message)
        case Code.NOT_FOUND:
            return GraphError(100, exc.message, subcode=33)
        case Code.MEDIA_TOO_LARGE | Code.MEDIA_QUOTA_EXCEEDED:
            return GraphError(131053, exc.message)
        case Code.MEDIA_NOT_FOUND | Code.ATTACHMENT_CORRUPT:
            return GraphError(131052, exc.message)
        case Code.UNAVAILABLE:
            return GraphError(131016, exc.message, transient=True)
        case Code.INVALID_BUSINESS_PROFILE:
            return GraphError(100, exc.message)
    return GraphError(131000, f"{exc.code}: {exc.message}")

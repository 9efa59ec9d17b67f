"""One error tree for the relay, the SDK and the CLI.

Every error carries a stable machine ``code`` (:class:`tresen.protocol.codes.Code`), a message for
people, the HTTP ``status`` it maps to and structured ``fields`` a client can act on.

TresenError
├── InvalidRequest            400  bad_request, malformed_frame, unknown_frame, invalid_*
├── Unauthorized              401  unauthorized, token_revoked, invalid_code, code_expired
├── Forbidden                 403  forbidden, not_group_member, not_group_admin
├── NotFound                  404  not_found, unknown_recipient, unknown_group
├── Conflict                  409  username_taken, account_exists, device_limit, group_full,
│                                  connected_elsewhere
│   └── DeviceListMismatch    409  device_list_mismatch (fields: the current device lists)
├── PayloadTooLarge           413  envelope_too_large, media_too_large
├── RangeNotSatisfiable       416  range_not_satisfiable (fields: size)
├── LimitExceeded             429  rate_limited, queue_full, too_many_in_flight,
│                                  too_many_connections (retry_after)
├── Unavailable               503  unavailable, internal
├── PolicyRefused             400  the relay's business policy refused an envelope: 131026,
│                                  131047, 131048, 131050, 131042, 131009, 132001, 132015,
│                                  132016, opt_in_required, business_group_send (Cloud API
│                                  numbers as strings; 130429 and 131056 are LimitExceeded)
└── CryptoError               400  undecryptable, untrusted_keys, crypto_store_key,
                                   verification_failed (SDK only: a check of the end-to-end
                                   encryption failed; ``fields['reason']`` says which)

WebSocket close codes are fixed by :data:`CLOSE_CODES`; a frame-level error never closes the
connection, it is answered with an error frame.
"""

from __future__ import annotations

from typing import Any, ClassVar

from typing_extensions import override

from tresen.protocol.codes import Code


class TresenError(Exception):
    """Root of every error tresen raises on purpose."""

    status: ClassVar[int] = 500
    default_code: ClassVar[Code] = Code.INTERNAL

    def __init__(self, message: str, *, code: Code | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return body

    @override
    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!s}, message={self.message!r})"


class InvalidRequest(TresenError):
    status = 400
    default_code = Code.BAD_REQUEST


class Unauthorized(TresenError):
    status = 401
    default_code = Code.UNAUTHORIZED


class Forbidden(TresenError):
    status = 403
    default_code = Code.FORBIDDEN


class NotFound(TresenError):
    status = 404
    default_code = Code.NOT_FOUND


class Conflict(TresenError):
    status = 409
    default_code = Code.ACCOUNT_EXISTS


class DeviceListMismatch(Conflict):
    """The sender's device list for an account is stale; ``fields['devices']`` has the current
    list per account (``{account_id: [device_id, ...]}``)."""

    default_code = Code.DEVICE_LIST_MISMATCH


class PayloadTooLarge(TresenError):
    status = 413
    default_code = Code.ENVELOPE_TOO_LARGE


class LimitExceeded(TresenError):
    """A rate, queue or in-flight limit; ``fields['retry_after']`` says when to retry (seconds)."""

    status = 429
    default_code = Code.RATE_LIMITED


class Unavailable(TresenError):
    status = 503
    default_code = Code.UNAVAILABLE


class RangeNotSatisfiable(TresenError):
    """A download's ``Range`` lies outside the blob; ``fields['size']`` is the blob's size."""

    status = 416
    default_code = Code.RANGE_NOT_SATISFIABLE


class CryptoError(TresenError):
    """Raised on a device, never by the relay: a message failed a check of the end-to-end
    encryption, a key is not trustworthy, the crypto store's key is wrong, or a verification
    failed. ``fields['reason']`` is a short stable word for what failed."""

    status = 400
    default_code = Code.UNDECRYPTABLE


class PolicyRefused(TresenError):
    """The relay's business policy refused an envelope (docs/business-rules.md): a block, no
    consent, outside the customer-service window, no approved template, a messaging limit, an
    exhausted balance. The code is the Cloud API's number where it has one."""

    status = 400
    default_code = Code.MESSAGE_UNDELIVERABLE


_BY_CODE: dict[Code, type[TresenError]] = {
    Code.BAD_REQUEST: InvalidRequest,
    Code.MALFORMED_FRAME: InvalidRequest,
    Code.UNKNOWN_FRAME: InvalidRequest,
    Code.UNSUPPORTED_PROTOCOL: InvalidRequest,
    Code.INVALID_PHONE_NUMBER: InvalidRequest,
    Code.INVALID_USERNAME: InvalidRequest,
    Code.INVALID_KEYS: InvalidRequest,
    Code.UNAUTHORIZED: Unauthorized,
    Code.TOKEN_REVOKED: Unauthorized,
    Code.INVALID_CODE: Unauthorized,
    Code.CODE_EXPIRED: Unauthorized,
    Code.FORBIDDEN: Forbidden,
    Code.NOT_GROUP_MEMBER: Forbidden,
    Code.NOT_GROUP_ADMIN: Forbidden,
    Code.NOT_FOUND: NotFound,
    Code.UNKNOWN_RECIPIENT: NotFound,
    Code.UNKNOWN_GROUP: NotFound,
    Code.USERNAME_TAKEN: Conflict,
    Code.ACCOUNT_EXISTS: Conflict,
    Code.DEVICE_LIMIT: Conflict,
    Code.GROUP_FULL: Conflict,
    Code.DUPLICATE_ENVELOPE: Conflict,
    Code.DEVICE_LIST_MISMATCH: DeviceListMismatch,
    Code.ENVELOPE_TOO_LARGE: PayloadTooLarge,
    Code.RATE_LIMITED: LimitExceeded,
    Code.QUEUE_FULL: LimitExceeded,
    Code.TOO_MANY_IN_FLIGHT: LimitExceeded,
    Code.UNAVAILABLE: Unavailable,
    Code.INTERNAL: Unavailable,
    Code.UNDECRYPTABLE: CryptoError,
    Code.UNTRUSTED_KEYS: CryptoError,
    Code.CRYPTO_STORE_KEY: CryptoError,
    Code.ADMIN_REQUIRED: Forbidden,
    Code.NOT_A_BUSINESS: NotFound,
    Code.BUSINESS_EXISTS: Conflict,
    Code.SLUG_TAKEN: Conflict,
    Code.INVALID_BUSINESS_PROFILE: InvalidRequest,
    Code.INVALID_BUSINESS_HOURS: InvalidRequest,
    Code.INVALID_PRODUCT: InvalidRequest,
    Code.PRODUCT_EXISTS: Conflict,
    Code.QUICK_REPLY_EXISTS: Conflict,
    Code.LABEL_EXISTS: Conflict,
    Code.INVALID_DOMAIN: InvalidRequest,
    Code.VERIFICATION_PENDING: Conflict,
    Code.ALREADY_REVIEWED: Conflict,
    Code.DOMAIN_PROOF_REQUIRED: Conflict,
    Code.BUSINESS_LIMIT: Conflict,
    Code.VERIFICATION_FAILED: CryptoError,
    Code.MEDIA_TOO_LARGE: PayloadTooLarge,
    Code.MEDIA_NOT_FOUND: NotFound,
    Code.UPLOAD_OFFSET_MISMATCH: Conflict,
    Code.UPLOAD_INCOMPLETE: Conflict,
    Code.UPLOAD_COMPLETE: Conflict,
    Code.RANGE_NOT_SATISFIABLE: RangeNotSatisfiable,
    Code.ATTACHMENT_CORRUPT: CryptoError,
    Code.MEDIA_QUOTA_EXCEEDED: LimitExceeded,
    Code.MESSAGE_UNDELIVERABLE: PolicyRefused,
    Code.REENGAGEMENT_REQUIRED: PolicyRefused,
    Code.THROUGHPUT_EXCEEDED: LimitExceeded,
    Code.PAIR_RATE_LIMITED: LimitExceeded,
    Code.MESSAGING_LIMIT_REACHED: PolicyRefused,
    Code.MARKETING_OPTED_OUT: PolicyRefused,
    Code.PAYMENT_REQUIRED: PolicyRefused,
    Code.INVALID_PARAMETER: PolicyRefused,
    Code.TEMPLATE_NOT_FOUND: PolicyRefused,
    Code.TEMPLATE_PAUSED: PolicyRefused,
    Code.TEMPLATE_DISABLED: PolicyRefused,
    Code.OPT_IN_REQUIRED: PolicyRefused,
    Code.INVALID_TEMPLATE: InvalidRequest,
    Code.TEMPLATE_EXISTS: Conflict,
    Code.BUSINESS_GROUP_SEND: PolicyRefused,
    Code.INVALID_RATE_CARD: InvalidRequest,
    Code.TEMPLATE_LIMIT: Conflict,
    Code.TOO_MANY_CONNECTIONS: LimitExceeded,
    Code.CONNECTED_ELSEWHERE: Conflict,
}

#: WebSocket close codes (4000-4999 are the application's own range).
CLOSE_CODES: dict[Code, int] = {
    Code.UNAUTHORIZED: 4401,
    Code.TOKEN_REVOKED: 4403,
    Code.UNSUPPORTED_PROTOCOL: 4400,
    Code.UNAVAILABLE: 4503,
    Code.TOO_MANY_CONNECTIONS: 4429,
    Code.CONNECTED_ELSEWHERE: 4409,
}


def from_code(code: str, message: str, fields: dict[str, Any] | None = None) -> TresenError:
    """Rebuild the typed error a client received as ``{code, message, fields}``."""
    try:
        known = Code(code)
    except ValueError:
        return TresenError(message, code=Code.INTERNAL, unknown_code=code, **(fields or {}))
    return _BY_CODE[known](message, code=known, **(fields or {}))


__all__ = [
    "CLOSE_CODES",
    "Conflict",
    "CryptoError",
    "DeviceListMismatch",
    "Forbidden",
    "InvalidRequest",
    "LimitExceeded",
    "NotFound",
    "PayloadTooLarge",
    "PolicyRefused",
    "RangeNotSatisfiable",
    "TresenError",
    "Unauthorized",
    "Unavailable",
    "from_code",
]

"""Stable machine codes for every error tresen reports, on HTTP and on the WebSocket.

A code never changes meaning once released; new codes are appended. Clients switch on these,
never on the human message.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    # request shape
    BAD_REQUEST = "bad_request"
    MALFORMED_FRAME = "malformed_frame"
    UNKNOWN_FRAME = "unknown_frame"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    INVALID_PHONE_NUMBER = "invalid_phone_number"
    INVALID_USERNAME = "invalid_username"
    INVALID_KEYS = "invalid_keys"
    # authentication and authorisation
    UNAUTHORIZED = "unauthorized"
    TOKEN_REVOKED = "token_revoked"
    FORBIDDEN = "forbidden"
    INVALID_CODE = "invalid_code"
    CODE_EXPIRED = "code_expired"
    # state
    NOT_FOUND = "not_found"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    UNKNOWN_GROUP = "unknown_group"
    USERNAME_TAKEN = "username_taken"
    ACCOUNT_EXISTS = "account_exists"
    DEVICE_LIMIT = "device_limit"
    DEVICE_LIST_MISMATCH = "device_list_mismatch"
    DUPLICATE_ENVELOPE = "duplicate_envelope"
    NOT_GROUP_MEMBER = "not_group_member"
    NOT_GROUP_ADMIN = "not_group_admin"
    GROUP_FULL = "group_full"
    # limits
    ENVELOPE_TOO_LARGE = "envelope_too_large"
    QUEUE_FULL = "queue_full"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_IN_FLIGHT = "too_many_in_flight"
    # server side
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


__all__ = ["Code"]

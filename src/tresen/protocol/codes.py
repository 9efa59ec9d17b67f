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
    # end-to-end encryption (raised by the SDK on the device, never by the relay)
    UNDECRYPTABLE = "undecryptable"
    UNTRUSTED_KEYS = "untrusted_keys"
    CRYPTO_STORE_KEY = "crypto_store_key"
    VERIFICATION_FAILED = "verification_failed"
    # business accounts and the operator (issue 4, part A)
    ADMIN_REQUIRED = "admin_required"
    NOT_A_BUSINESS = "not_a_business"
    BUSINESS_EXISTS = "business_exists"
    SLUG_TAKEN = "slug_taken"
    INVALID_BUSINESS_PROFILE = "invalid_business_profile"
    INVALID_BUSINESS_HOURS = "invalid_business_hours"
    INVALID_PRODUCT = "invalid_product"
    PRODUCT_EXISTS = "product_exists"
    QUICK_REPLY_EXISTS = "quick_reply_exists"
    LABEL_EXISTS = "label_exists"
    INVALID_DOMAIN = "invalid_domain"
    VERIFICATION_PENDING = "verification_pending"
    ALREADY_REVIEWED = "already_reviewed"
    DOMAIN_PROOF_REQUIRED = "domain_proof_required"
    BUSINESS_LIMIT = "business_limit"
    # media blobs (issue 3)
    MEDIA_TOO_LARGE = "media_too_large"
    MEDIA_NOT_FOUND = "media_not_found"
    UPLOAD_OFFSET_MISMATCH = "upload_offset_mismatch"
    UPLOAD_INCOMPLETE = "upload_incomplete"
    UPLOAD_COMPLETE = "upload_complete"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    ATTACHMENT_CORRUPT = "attachment_corrupt"
    # business policy (issue 4, part B; docs/business-rules.md). Where the Cloud API has a code
    # for the rule, the value is that code's string form, so a gateway passes it through as is
    MESSAGE_UNDELIVERABLE = "131026"
    REENGAGEMENT_REQUIRED = "131047"
    THROUGHPUT_EXCEEDED = "130429"
    PAIR_RATE_LIMITED = "131056"
    MESSAGING_LIMIT_REACHED = "131048"
    MARKETING_OPTED_OUT = "131050"
    PAYMENT_REQUIRED = "131042"
    INVALID_PARAMETER = "131009"
    TEMPLATE_NOT_FOUND = "132001"
    TEMPLATE_PAUSED = "132015"
    TEMPLATE_DISABLED = "132016"
    OPT_IN_REQUIRED = "opt_in_required"
    INVALID_TEMPLATE = "invalid_template"
    TEMPLATE_EXISTS = "template_exists"
    BUSINESS_GROUP_SEND = "business_group_send"
    INVALID_RATE_CARD = "invalid_rate_card"
    TEMPLATE_LIMIT = "template_limit"
    # media blobs (issue 3), continued
    MEDIA_QUOTA_EXCEEDED = "media_quota_exceeded"
    # connection limits (issue 6; docs/protocol.md)
    TOO_MANY_CONNECTIONS = "too_many_connections"
    CONNECTED_ELSEWHERE = "connected_elsewhere"


__all__ = ["Code"]

"""The exact body and its signature: ASCII-escaped JSON, HMAC-SHA256 with the app secret.

Meta sends JSON with every non-ASCII character escaped (``\\u00e9``, lower-case hex, UTF-16
surrogate pairs for emoji), and some clients (whatsapp-api-js) re-escape the body they received
before checking the HMAC; so the gateway signs and sends exactly that form.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

HEADER = "X-Hub-Signature-256"
#: made once: ``json.dumps`` with any option builds a new encoder on every call
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def encode(payload: dict[str, Any]) -> str:
    """The body as sent: ASCII only, no spaces after separators."""
    return _ENCODER.encode(payload)


def sign(app_secret: str, body: bytes) -> str:
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(app_secret: str, body: bytes, header: str) -> bool:
    """True when ``header`` (``sha256=<hex>``) signs ``body`` (constant-time compare)."""
    return hmac.compare_digest(sign(app_secret, body), header.strip())

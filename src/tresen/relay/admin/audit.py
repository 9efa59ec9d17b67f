"""The audit log: every admin action is written in the same transaction as the action.

Callers pass their open transaction, so the action and its audit row commit (or roll back)
together: an action the log does not show did not happen.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tresen.relay.admin import store
from tresen.relay.admin.models import AdminPrincipal
from tresen.storage.engine import Txn

_encoder = msgspec.json.Encoder()


async def record(
    txn: Txn,
    admin: AdminPrincipal,
    action: str,
    target: str,
    detail: dict[str, Any],
    *,
    at: int | None = None,
) -> int:
    """Write one audit row inside ``txn``; return its id.

    ``action`` is a dotted verb such as ``business.verification.approve``; ``target`` names what
    it acted on (``business:42``, ``template:7``); ``detail`` is any JSON-encodable mapping
    (reasons, old and new values). ``at`` defaults to the wall clock in milliseconds.
    """
    when = at if at is not None else time.time_ns() // 1_000_000
    return await store.add_audit(
        txn, when, admin.admin_id, admin.name, action, target, _encoder.encode(detail)
    )


__all__ = ["record"]

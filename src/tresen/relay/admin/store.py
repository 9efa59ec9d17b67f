"""SQL for admin tokens and the audit log. Nothing but SQL lives here."""

from __future__ import annotations

from typing import Any

import msgspec

from tresen.relay.admin.models import AdminToken, AuditEntry
from tresen.storage.engine import Txn


async def create_token(txn: Txn, name: str, token_hash: bytes, now: int) -> int:
    (token_id,) = await txn.next_ids("admin_seq", 1)
    await txn.execute(
        "INSERT INTO admin_tokens (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
        token_id,
        name,
        token_hash,
        now,
    )
    return token_id


async def token_by_hash(txn: Txn, token_hash: bytes) -> tuple[int, str, int | None, int | None]:
    """``(id, name, last_used_at, revoked_at)``; raises LookupError when unknown."""
    row = await txn.fetchone(
        "SELECT id, name, last_used_at, revoked_at FROM admin_tokens WHERE token_hash = ?",
        token_hash,
    )
    if row is None:
        raise LookupError
    return int(row[0]), str(row[1]), row[2], row[3]


async def touch_token(txn: Txn, token_id: int, now: int) -> None:
    await txn.execute("UPDATE admin_tokens SET last_used_at = ? WHERE id = ?", now, token_id)


async def list_tokens(txn: Txn) -> list[AdminToken]:
    rows = await txn.fetch(
        "SELECT id, name, created_at, last_used_at, revoked_at FROM admin_tokens ORDER BY id"
    )
    return [AdminToken(int(r[0]), r[1], int(r[2]), r[3], r[4]) for r in rows]


async def revoke_token(txn: Txn, token_id: int, now: int) -> bool:
    changed = await txn.execute(
        "UPDATE admin_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", now, token_id
    )
    return changed > 0


async def add_audit(
    txn: Txn,
    at: int,
    admin_id: int | None,
    admin_name: str,
    action: str,
    target: str,
    detail: bytes,
) -> int:
    (entry_id,) = await txn.next_ids("audit_seq", 1)
    await txn.execute(
        "INSERT INTO audit_log (id, at, admin_id, admin_name, action, target, detail_json) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        entry_id,
        at,
        admin_id,
        admin_name,
        action,
        target,
        detail.decode(),
    )
    return entry_id


async def read_audit(
    txn: Txn, *, before: int | None, action: str | None, target: str | None, limit: int
) -> list[AuditEntry]:
    where: list[str] = []
    args: list[Any] = []
    if before is not None:
        where.append("id < ?")
        args.append(before)
    if action is not None:
        where.append("action = ?")
        args.append(action)
    if target is not None:
        where.append("target = ?")
        args.append(target)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    rows = await txn.fetch(
        "SELECT id, at, admin_id, admin_name, action, target, detail_json FROM audit_log "  # noqa: S608
        f"{clause}ORDER BY id DESC LIMIT ?",
        *args,
        limit,
    )
    return [
        AuditEntry(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], msgspec.json.decode(r[6]))
        for r in rows
    ]

"""SQL of message templates."""

from __future__ import annotations

from tresen.storage.engine import Row, Txn

COLUMNS = (
    "id, business_id, name, language, category, parameter_format, components, status, reason, "
    "paused_until, created_at, updated_at, pause_count"
)


async def by_key(txn: Txn, business: int, name: str, language: str) -> Row | None:
    return await txn.fetchone(
        f"SELECT {COLUMNS} FROM templates "  # noqa: S608
        "WHERE business_id = ? AND name = ? AND language = ?",
        business,
        name,
        language,
    )


async def by_id(txn: Txn, template_id: int) -> Row | None:
    return await txn.fetchone(
        f"SELECT {COLUMNS} FROM templates WHERE id = ?",  # noqa: S608
        template_id,
    )


async def insert(
    txn: Txn,
    business: int,
    name: str,
    language: str,
    category: str,
    fmt: str,
    components: str,
    now: int,
) -> int:
    (template_id,) = await txn.next_ids("template_seq", 1)
    await txn.execute(
        "INSERT INTO templates (id, business_id, name, language, category, parameter_format, "
        "components, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?)",
        template_id,
        business,
        name,
        language,
        category,
        fmt,
        components,
        now,
        now,
    )
    return template_id


async def count_of(txn: Txn, business: int) -> int:
    row = await txn.fetchone(
        "SELECT count(*) FROM templates WHERE business_id = ? AND status <> 'DELETED'", business
    )
    return int(row[0]) if row else 0


async def delete(txn: Txn, template_id: int) -> None:
    await txn.execute("DELETE FROM templates WHERE id = ?", template_id)


async def update_content(
    txn: Txn, template_id: int, category: str, components: str, now: int
) -> None:
    """An edit goes back to review."""
    await txn.execute(
        "UPDATE templates SET category = ?, components = ?, status = 'PENDING', reason = '', "
        "updated_at = ? WHERE id = ?",
        category,
        components,
        now,
        template_id,
    )


async def set_status(
    txn: Txn,
    template_id: int,
    status: str,
    reason: str,
    now: int,
    *,
    paused_until: int = 0,
    pause_count: int | None = None,
) -> None:
    if pause_count is None:
        await txn.execute(
            "UPDATE templates SET status = ?, reason = ?, paused_until = ?, updated_at = ? "
            "WHERE id = ?",
            status,
            reason,
            paused_until,
            now,
            template_id,
        )
    else:
        await txn.execute(
            "UPDATE templates SET status = ?, reason = ?, paused_until = ?, pause_count = ?, "
            "updated_at = ? WHERE id = ?",
            status,
            reason,
            paused_until,
            pause_count,
            now,
            template_id,
        )


async def list_of(
    txn: Txn,
    business: int | None,
    status: str | None,
    name: str | None,
    after: int,
    limit: int,
) -> list[Row]:
    clauses: list[str] = ["id > ?", "status <> 'DELETED'"]
    args: list[object] = [after]
    if business is not None:
        clauses.append("business_id = ?")
        args.append(business)
    if status is not None:
        clauses.append("status = ?")
        args.append(status)
    if name is not None:
        clauses.append("name = ?")
        args.append(name)
    return await txn.fetch(
        f"SELECT {COLUMNS} FROM templates WHERE {' AND '.join(clauses)} "  # noqa: S608
        "ORDER BY id LIMIT ?",
        *args,
        limit,
    )


async def expired_pauses(txn: Txn, now: int) -> list[Row]:
    return await txn.fetch(
        f"SELECT {COLUMNS} FROM templates "  # noqa: S608
        "WHERE status = 'PAUSED' AND paused_until <= ?",
        now,
    )

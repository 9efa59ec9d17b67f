"""SQL of consents (current and history), blocks and the report queue."""

from __future__ import annotations

from tresen.storage.engine import Row, Txn


async def set_consent(
    txn: Txn,
    business: int,
    person: int,
    category: str,
    opted_in: bool,
    source: str,
    actor: str,
    at: int,
) -> None:
    await txn.execute(
        "INSERT INTO consents (business_id, person_id, category, opted_in, source, changed_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (business_id, person_id, category) DO UPDATE SET "
        "opted_in = excluded.opted_in, source = excluded.source, "
        "changed_at = excluded.changed_at",
        business,
        person,
        category,
        int(opted_in),
        source,
        at,
    )
    (event_id,) = await txn.next_ids("consent_event_seq", 1)
    await txn.execute(
        "INSERT INTO consent_events (id, business_id, person_id, category, opted_in, source, "
        "actor, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        event_id,
        business,
        person,
        category,
        int(opted_in),
        source,
        actor,
        at,
    )


async def consents_of_person(txn: Txn, person: int) -> list[Row]:
    return await txn.fetch(
        "SELECT business_id, person_id, category, opted_in, source, changed_at FROM consents "
        "WHERE person_id = ? ORDER BY business_id, category",
        person,
    )


async def consents_of_business(
    txn: Txn, business: int, person: int | None, after: int, limit: int
) -> list[Row]:
    if person is not None:
        return await txn.fetch(
            "SELECT business_id, person_id, category, opted_in, source, changed_at FROM consents "
            "WHERE business_id = ? AND person_id = ? ORDER BY category",
            business,
            person,
        )
    return await txn.fetch(
        "SELECT business_id, person_id, category, opted_in, source, changed_at FROM consents "
        "WHERE business_id = ? AND person_id > ? ORDER BY person_id, category LIMIT ?",
        business,
        after,
        limit,
    )


async def consent_history(txn: Txn, business: int, person: int) -> list[Row]:
    return await txn.fetch(
        "SELECT category, opted_in, source, actor, at FROM consent_events "
        "WHERE business_id = ? AND person_id = ? ORDER BY id",
        business,
        person,
    )


async def add_block(txn: Txn, blocker: int, blocked: int, at: int) -> bool:
    changed = await txn.execute(
        "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        blocker,
        blocked,
        at,
    )
    return changed > 0


async def remove_block(txn: Txn, blocker: int, blocked: int) -> bool:
    changed = await txn.execute(
        "DELETE FROM blocks WHERE blocker_id = ? AND blocked_id = ?", blocker, blocked
    )
    return changed > 0


async def blocks_of(txn: Txn, blocker: int) -> list[tuple[int, int]]:
    rows = await txn.fetch(
        "SELECT blocked_id, created_at FROM blocks WHERE blocker_id = ? ORDER BY created_at",
        blocker,
    )
    return [(int(r[0]), int(r[1])) for r in rows]


async def account_exists(txn: Txn, account_id: int) -> bool:
    return await txn.fetchone("SELECT 1 FROM accounts WHERE id = ?", account_id) is not None


_REPORT_COLUMNS = (
    "id, reporter_id, reported_id, reason, comment, messages, blocked, status, resolution, "
    "note, resolved_by, created_at, resolved_at"
)


async def add_report(
    txn: Txn,
    reporter: int,
    reported: int,
    reason: str,
    comment: str,
    messages: str,
    blocked: bool,
    at: int,
) -> int:
    (report_id,) = await txn.next_ids("report_seq", 1)
    await txn.execute(
        "INSERT INTO reports (id, reporter_id, reported_id, reason, comment, messages, blocked, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        report_id,
        reporter,
        reported,
        reason,
        comment,
        messages,
        int(blocked),
        at,
    )
    return report_id


async def reports_since(txn: Txn, reporter: int, since: int) -> int:
    row = await txn.fetchone(
        "SELECT count(*) FROM reports WHERE reporter_id = ? AND created_at > ?", reporter, since
    )
    return int(row[0]) if row else 0


async def report(txn: Txn, report_id: int) -> Row | None:
    return await txn.fetchone(
        f"SELECT {_REPORT_COLUMNS} FROM reports WHERE id = ?",  # noqa: S608
        report_id,
    )


async def reports(txn: Txn, status: str | None, before: int, limit: int) -> list[Row]:
    if status is None:
        return await txn.fetch(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE id < ? "  # noqa: S608
            "ORDER BY id DESC LIMIT ?",
            before,
            limit,
        )
    return await txn.fetch(
        f"SELECT {_REPORT_COLUMNS} FROM reports WHERE status = ? AND id < ? "  # noqa: S608
        "ORDER BY id DESC LIMIT ?",
        status,
        before,
        limit,
    )


async def resolve_report(
    txn: Txn, report_id: int, resolution: str, note: str, admin: str, at: int
) -> bool:
    changed = await txn.execute(
        "UPDATE reports SET status = 'resolved', resolution = ?, note = ?, resolved_by = ?, "
        "resolved_at = ? WHERE id = ? AND status = 'open'",
        resolution,
        note,
        admin,
        at,
        report_id,
    )
    return changed > 0

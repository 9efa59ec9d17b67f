"""SQL of the policy gate: what it loads into memory and what its flushes write.

Tables from ``0005_policy.sql`` (threads, business_sends, business_policy, quality_signals)
and, read only, ``businesses`` (issue 4 part A), ``blocks``, ``consents``, ``templates``,
``rate_card`` and ``accounts``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tresen.storage.engine import Row, Txn

#: (business, envelope_id, person, kind, category, template, pricing_type, country, initiated,
#:  sent_at)
SendRow = tuple[int, str, int, str, str, str, str, str, int, int]
#: (business, person, first_contact_at, person_wrote, last_inbound_at, entry_until, entry_source)
ThreadRow = tuple[int, int, int, int, int, int, str]


async def business_ids(txn: Txn) -> list[int]:
    rows = await txn.fetch("SELECT account_id FROM businesses")
    return [int(r[0]) for r in rows]


async def is_business(txn: Txn, account_id: int) -> bool:
    row = await txn.fetchone("SELECT 1 FROM businesses WHERE account_id = ?", account_id)
    return row is not None


async def all_blocks(txn: Txn) -> list[tuple[int, int]]:
    rows = await txn.fetch("SELECT blocker_id, blocked_id FROM blocks")
    return [(int(r[0]), int(r[1])) for r in rows]


async def ensure_business_policy(txn: Txn, account_id: int) -> None:
    await txn.execute(
        "INSERT INTO business_policy (account_id) VALUES (?) ON CONFLICT DO NOTHING", account_id
    )


async def business_policy(txn: Txn, account_id: int) -> Row | None:
    """(tier, quality, throughput, balance_minor, credit_limit_minor, tier_changed_at)"""
    return await txn.fetchone(
        "SELECT tier, quality, throughput, balance_minor, credit_limit_minor, tier_changed_at "
        "FROM business_policy WHERE account_id = ?",
        account_id,
    )


async def templates_of(txn: Txn, business: int) -> list[Row]:
    """(name, language, category, status, paused_until) of every template of a business."""
    return await txn.fetch(
        "SELECT name, language, category, status, paused_until FROM templates "
        "WHERE business_id = ?",
        business,
    )


async def reached_since(txn: Txn, business: int, since: int) -> list[tuple[int, int]]:
    """People reached with business-initiated messages since ``since``: (person, last time)."""
    rows = await txn.fetch(
        "SELECT person_id, max(sent_at) FROM business_sends "
        "WHERE business_id = ? AND initiated = 1 AND sent_at > ? GROUP BY person_id",
        business,
        since,
    )
    return [(int(r[0]), int(r[1])) for r in rows]


async def thread(txn: Txn, business: int, person: int) -> Row | None:
    return await txn.fetchone(
        "SELECT first_contact_at, person_wrote, last_inbound_at, entry_until, entry_source "
        "FROM threads WHERE business_id = ? AND person_id = ?",
        business,
        person,
    )


async def consents_of(txn: Txn, business: int, person: int) -> list[tuple[str, bool]]:
    rows = await txn.fetch(
        "SELECT category, opted_in FROM consents WHERE business_id = ? AND person_id = ?",
        business,
        person,
    )
    return [(r[0], bool(r[1])) for r in rows]


async def phone_of(txn: Txn, account_id: int) -> str | None:
    row = await txn.fetchone("SELECT phone FROM accounts WHERE id = ?", account_id)
    return row[0] if row else None


async def last_template(txn: Txn, business: int, person: int) -> str:
    row = await txn.fetchone(
        "SELECT template FROM business_sends WHERE business_id = ? AND person_id = ? "
        "AND template <> '' ORDER BY sent_at DESC LIMIT 1",
        business,
        person,
    )
    return row[0] if row else ""


def _later(column: str) -> str:
    """``column = the greater of the stored and the new value`` (portable: no max/greatest)."""
    return (
        f"{column} = CASE WHEN excluded.{column} > threads.{column} "
        f"THEN excluded.{column} ELSE threads.{column} END"
    )


_UPSERT_THREADS = (
    "INSERT INTO threads (business_id, person_id, first_contact_at, person_wrote, "  # noqa: S608
    "last_inbound_at, entry_until, entry_source) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (business_id, person_id) DO UPDATE SET "
    f"{_later('person_wrote')}, {_later('last_inbound_at')}, {_later('entry_until')}, "
    "entry_source = CASE WHEN excluded.entry_source <> '' THEN excluded.entry_source "
    "ELSE threads.entry_source END"
)


async def upsert_threads(txn: Txn, rows: Sequence[ThreadRow]) -> None:
    """Windows only move forward: a stale flush never shortens one."""
    await txn.executemany(_UPSERT_THREADS, rows)


#: a :data:`SendRow` + (delivered_at, price_minor, currency, charged)
MeterRow = tuple[int, str, int, str, str, str, str, str, int, int, int | None, int, str, int]


async def insert_sends(txn: Txn, rows: Sequence[MeterRow]) -> None:
    await txn.executemany(
        "INSERT INTO business_sends (business_id, envelope_id, person_id, kind, category, "
        "template, pricing_type, country, initiated, sent_at, delivered_at, price_minor, "
        "currency, charged) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        rows,
    )


async def send_meta(txn: Txn, business: int, envelope_id: str, person: int) -> Row | None:
    """(category, country, pricing_type) of an undelivered business send."""
    return await txn.fetchone(
        "SELECT category, country, pricing_type FROM business_sends WHERE business_id = ? "
        "AND envelope_id = ? AND person_id = ? AND delivered_at IS NULL",
        business,
        envelope_id,
        person,
    )


#: (delivered_at, price_minor, currency, business, envelope_id, person)
DeliveryRow = tuple[int, int, str, int, str, int]


async def mark_delivered(txn: Txn, rows: Sequence[DeliveryRow]) -> None:
    """Price sends on their first delivery (a later delivery to another device changes
    nothing)."""
    await txn.executemany(
        "UPDATE business_sends SET delivered_at = ?, price_minor = ?, currency = ? "
        "WHERE business_id = ? AND envelope_id = ? AND person_id = ? AND delivered_at IS NULL",
        rows,
    )


async def take_charges(txn: Txn) -> dict[int, int]:
    """Mark every delivered, uncharged send charged; return the amount per business.

    One statement: with PostgreSQL each row is charged by exactly one node's flush."""
    rows = await txn.fetch(
        "UPDATE business_sends SET charged = 1 WHERE charged = 0 AND delivered_at IS NOT NULL "
        "RETURNING business_id, price_minor"
    )
    charges: dict[int, int] = {}
    for business, price in rows:
        charges[int(business)] = charges.get(int(business), 0) + int(price)
    return charges


async def charge(txn: Txn, business: int, amount: int) -> None:
    await ensure_business_policy(txn, business)
    await txn.execute(
        "UPDATE business_policy SET balance_minor = balance_minor - ? WHERE account_id = ?",
        amount,
        business,
    )


async def rate_card(txn: Txn) -> list[tuple[str, str, int, str]]:
    rows = await txn.fetch("SELECT category, country, price_minor, currency FROM rate_card")
    return [(r[0], r[1], int(r[2]), r[3]) for r in rows]


async def add_signal(
    txn: Txn, business: int, person: int, kind: str, template: str, at: int
) -> None:
    await txn.execute(
        "INSERT INTO quality_signals (business_id, person_id, kind, template, at) "
        "VALUES (?, ?, ?, ?, ?)",
        business,
        person,
        kind,
        template,
        at,
    )


async def initiated_sends(txn: Txn, business: int, since: int) -> list[tuple[str, int]]:
    """Business-initiated sends since ``since`` per template: (template, count)."""
    rows = await txn.fetch(
        "SELECT template, count(*) FROM business_sends "
        "WHERE business_id = ? AND initiated = 1 AND sent_at > ? GROUP BY template",
        business,
        since,
    )
    return [(r[0], int(r[1])) for r in rows]


#: feedback counts once per person and kind, and only from people the business wrote to
#: (strangers, or one person reporting again and again, cannot sink a business's rating)
_FROM_RECIPIENTS = (
    "EXISTS (SELECT 1 FROM business_sends b WHERE b.business_id = quality_signals.business_id "
    "AND b.person_id = quality_signals.person_id)"
)


async def signals(txn: Txn, business: int, since: int) -> list[tuple[str, str, int]]:
    """Negative signals since ``since``: (kind, template, people)."""
    rows = await txn.fetch(
        "SELECT kind, template, count(DISTINCT person_id) FROM quality_signals "  # noqa: S608
        f"WHERE business_id = ? AND at > ? AND {_FROM_RECIPIENTS} GROUP BY kind, template",
        business,
        since,
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


async def reached_count(txn: Txn, business: int, since: int) -> int:
    row = await txn.fetchone(
        "SELECT count(DISTINCT person_id) FROM business_sends "
        "WHERE business_id = ? AND initiated = 1 AND sent_at > ?",
        business,
        since,
    )
    return int(row[0]) if row else 0


async def set_standing(
    txn: Txn, business: int, tier: int, quality: str, tier_changed: int, quality_changed: int
) -> None:
    await ensure_business_policy(txn, business)
    await txn.execute(
        "UPDATE business_policy SET tier = ?, quality = ?, tier_changed_at = ?, "
        "quality_changed_at = ? WHERE account_id = ?",
        tier,
        quality,
        tier_changed,
        quality_changed,
        business,
    )


async def standing(txn: Txn, business: int) -> Row | None:
    """(tier, quality, tier_changed_at, quality_changed_at)"""
    return await txn.fetchone(
        "SELECT tier, quality, tier_changed_at, quality_changed_at FROM business_policy "
        "WHERE account_id = ?",
        business,
    )


async def active_businesses(txn: Txn, since: int) -> list[int]:
    """Businesses with business-initiated sends since ``since`` or a rating to recover from."""
    rows = await txn.fetch(
        "SELECT DISTINCT business_id FROM business_sends WHERE sent_at > ? AND initiated = 1 "
        "UNION SELECT account_id FROM business_policy WHERE quality <> 'GREEN'",
        since,
    )
    return sorted(int(r[0]) for r in rows)


async def set_throughput(txn: Txn, business: int, per_second: int) -> None:
    await ensure_business_policy(txn, business)
    await txn.execute(
        "UPDATE business_policy SET throughput = ? WHERE account_id = ?", per_second, business
    )


async def set_tier(txn: Txn, business: int, tier: int, now: int) -> None:
    await ensure_business_policy(txn, business)
    await txn.execute(
        "UPDATE business_policy SET tier = ?, tier_changed_at = ? WHERE account_id = ?",
        tier,
        now,
        business,
    )


async def business_card(txn: Txn, account_id: int) -> tuple[str, bool] | None:
    """(display name, verified) of a business, shown with its first contact."""
    row = await txn.fetchone(
        "SELECT display_name, verified FROM businesses WHERE account_id = ?", account_id
    )
    return (row[0], bool(row[1])) if row else None


async def businesses_since(txn: Txn, since: int) -> list[tuple[int, int]]:
    """Businesses created at or after ``since``: (account id, created_at)."""
    rows = await txn.fetch(
        "SELECT account_id, created_at FROM businesses WHERE created_at >= ?", since
    )
    return [(int(r[0]), int(r[1])) for r in rows]


async def template_feedback(
    txn: Txn, business: int, template: str, since: int
) -> tuple[int, dict[str, int]]:
    """Business-initiated sends of one template since ``since`` and the feedback after them."""
    row = await txn.fetchone(
        "SELECT count(*) FROM business_sends WHERE business_id = ? AND template = ? "
        "AND initiated = 1 AND sent_at > ?",
        business,
        template,
        since,
    )
    rows = await txn.fetch(
        "SELECT kind, count(DISTINCT person_id) FROM quality_signals "  # noqa: S608
        f"WHERE business_id = ? AND template = ? AND at > ? AND {_FROM_RECIPIENTS} GROUP BY kind",
        business,
        template,
        since,
    )
    return (int(row[0]) if row else 0), {r[0]: int(r[1]) for r in rows}

"""SQL of metering reads (usage, invoices), balances, the ledger and the rate card."""

from __future__ import annotations

from collections.abc import Sequence

from tresen.storage.engine import Row, Txn

DAY_MS = 86_400_000


async def usage(txn: Txn, business: int, start: int, end: int) -> list[Row]:
    """Delivered messages in ``[start, end)`` per day number, category and pricing type:
    (day, category, pricing_type, messages, amount_minor)."""
    return await txn.fetch(
        "SELECT delivered_at / 86400000 AS day, category, pricing_type, count(*), "
        "sum(price_minor) FROM business_sends WHERE business_id = ? AND delivered_at >= ? "
        "AND delivered_at < ? GROUP BY delivered_at / 86400000, category, pricing_type "
        "ORDER BY day, category, pricing_type",
        business,
        start,
        end,
    )


async def invoice_lines(txn: Txn, business: int, start: int, end: int) -> list[Row]:
    """(category, pricing_type, country, messages, amount_minor, currency) for a period."""
    return await txn.fetch(
        "SELECT category, pricing_type, country, count(*), sum(price_minor), max(currency) "
        "FROM business_sends WHERE business_id = ? AND delivered_at >= ? AND delivered_at < ? "
        "GROUP BY category, pricing_type, country ORDER BY category, pricing_type, country",
        business,
        start,
        end,
    )


async def sent_undelivered(txn: Txn, business: int, start: int, end: int) -> int:
    row = await txn.fetchone(
        "SELECT count(*) FROM business_sends WHERE business_id = ? AND sent_at >= ? "
        "AND sent_at < ? AND delivered_at IS NULL",
        business,
        start,
        end,
    )
    return int(row[0]) if row else 0


async def ensure_policy(txn: Txn, business: int) -> None:
    await txn.execute(
        "INSERT INTO business_policy (account_id) VALUES (?) ON CONFLICT DO NOTHING", business
    )


async def account(txn: Txn, business: int) -> Row | None:
    """(balance_minor, credit_limit_minor, tier, quality, throughput)"""
    return await txn.fetchone(
        "SELECT balance_minor, credit_limit_minor, tier, quality, throughput "
        "FROM business_policy WHERE account_id = ?",
        business,
    )


async def add_to_balance(
    txn: Txn, business: int, amount: int, kind: str, note: str, actor: str, at: int
) -> None:
    await ensure_policy(txn, business)
    await txn.execute(
        "UPDATE business_policy SET balance_minor = balance_minor + ? WHERE account_id = ?",
        amount,
        business,
    )
    (entry,) = await txn.next_ids("ledger_seq", 1)
    await txn.execute(
        "INSERT INTO balance_ledger (id, business_id, amount_minor, kind, note, actor, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        entry,
        business,
        amount,
        kind,
        note,
        actor,
        at,
    )


async def set_credit_limit(txn: Txn, business: int, limit: int | None) -> None:
    await ensure_policy(txn, business)
    await txn.execute(
        "UPDATE business_policy SET credit_limit_minor = ? WHERE account_id = ?", limit, business
    )


async def ledger(txn: Txn, business: int, start: int, end: int) -> list[Row]:
    """(amount_minor, kind, note, actor, at) in a period."""
    return await txn.fetch(
        "SELECT amount_minor, kind, note, actor, at FROM balance_ledger "
        "WHERE business_id = ? AND at >= ? AND at < ? ORDER BY id",
        business,
        start,
        end,
    )


async def replace_rate_card(txn: Txn, rows: Sequence[tuple[str, str, int, str]]) -> None:
    await txn.execute("DELETE FROM rate_card")
    await txn.executemany(
        "INSERT INTO rate_card (category, country, price_minor, currency) VALUES (?, ?, ?, ?)",
        rows,
    )


async def money_recorded(txn: Txn) -> bool:
    """Any balance movement or priced delivery: the currency of the relay's money is fixed."""
    moved = await txn.fetchone("SELECT 1 FROM balance_ledger LIMIT 1")
    priced = await txn.fetchone("SELECT 1 FROM business_sends WHERE price_minor > 0 LIMIT 1")
    return moved is not None or priced is not None


async def business_name(txn: Txn, business: int) -> str | None:
    row = await txn.fetchone("SELECT display_name FROM businesses WHERE account_id = ?", business)
    return row[0] if row else None

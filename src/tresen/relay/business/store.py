"""SQL for businesses, verification, catalog, tools and scoped ids. Nothing but SQL lives here."""

from __future__ import annotations

from typing import Any

import msgspec

from tresen.relay.business.models import Label, Product, QuickReply
from tresen.storage.engine import Row, Txn

_BUSINESS_COLUMNS = (
    "account_id, slug, display_name, display_name_status, display_name_reason, about, address, "
    "description, email, websites_json, vertical, photo, timezone, hours_json, greeting_json, "
    "away_json, verified, verified_at, created_at, updated_at"
)


class BusinessRecord(msgspec.Struct, kw_only=True):
    """One ``businesses`` row; JSON columns still encoded (the service decodes them)."""

    account_id: int
    slug: str
    display_name: str
    display_name_status: str
    display_name_reason: str | None
    about: str
    address: str
    description: str
    email: str
    websites_json: str
    vertical: str
    photo: str | None
    timezone: str
    hours_json: str
    greeting_json: str | None
    away_json: str | None
    verified: bool
    verified_at: int | None
    created_at: int
    updated_at: int


def _business(row: Row) -> BusinessRecord:
    values = dict(zip([c.strip() for c in _BUSINESS_COLUMNS.split(",")], row, strict=True))
    values["verified"] = bool(values["verified"])
    return msgspec.convert(values, BusinessRecord)


async def get_business(txn: Txn, account_id: int) -> BusinessRecord | None:
    row = await txn.fetchone(
        f"SELECT {_BUSINESS_COLUMNS} FROM businesses WHERE account_id = ?",  # noqa: S608
        account_id,
    )
    return _business(row) if row else None


async def business_by_slug(txn: Txn, slug: str) -> BusinessRecord | None:
    row = await txn.fetchone(
        f"SELECT {_BUSINESS_COLUMNS} FROM businesses WHERE slug = ?",  # noqa: S608
        slug,
    )
    return _business(row) if row else None


async def is_verified(txn: Txn, account_id: int) -> bool | None:
    """True/False for a business, None for an account that is not one (the cheap check)."""
    row = await txn.fetchone("SELECT verified FROM businesses WHERE account_id = ?", account_id)
    return bool(row[0]) if row else None


async def slug_taken(txn: Txn, slug: str, except_account: int | None = None) -> bool:
    row = await txn.fetchone(
        "SELECT 1 FROM businesses WHERE slug = ? AND account_id <> ?", slug, except_account or 0
    )
    return row is not None


async def insert_business(txn: Txn, record: BusinessRecord) -> bool:
    """False if the account or the slug was taken meanwhile (a concurrent create)."""
    values = msgspec.structs.astuple(record)
    placeholders = ", ".join("?" * len(values))
    changed = await txn.execute(
        f"INSERT INTO businesses ({_BUSINESS_COLUMNS}) VALUES ({placeholders}) "  # noqa: S608
        "ON CONFLICT DO NOTHING",
        *[int(v) if isinstance(v, bool) else v for v in values],
    )
    return changed > 0


async def update_business(txn: Txn, account_id: int, changes: dict[str, Any]) -> None:
    """Set the given columns (names come from the service, never from a request)."""
    if not changes:
        return
    columns = ", ".join(f"{name} = ?" for name in changes)
    values = [int(v) if isinstance(v, bool) else v for v in changes.values()]
    await txn.execute(
        f"UPDATE businesses SET {columns} WHERE account_id = ?",  # noqa: S608
        *values,
        account_id,
    )


async def list_businesses(
    txn: Txn, *, where: str, after: int | None, limit: int
) -> list[BusinessRecord]:
    """``where`` is one of the fixed review filters built by the service."""
    rows = await txn.fetch(
        f"SELECT {_BUSINESS_COLUMNS} FROM businesses WHERE ({where}) AND account_id > ? "  # noqa: S608
        "ORDER BY account_id LIMIT ?",
        after or 0,
        limit,
    )
    return [_business(r) for r in rows]


async def phone_of(txn: Txn, account_id: int) -> str | None:
    row = await txn.fetchone("SELECT phone FROM accounts WHERE id = ?", account_id)
    return str(row[0]) if row else None


# ---------------------------------------------------------------- verification

_VERIFICATION_COLUMNS = (
    "id, account_id, legal_name, registration_number, domain, status, reason, proof_token, "
    "proof_method, proof_checked_at, proof_ok, created_at, decided_at, decided_by"
)
VerificationRow = tuple[Any, ...]


async def add_verification(
    txn: Txn,
    account_id: int,
    legal_name: str,
    registration_number: str,
    domain: str,
    proof_token: str,
    now: int,
) -> int:
    (vid,) = await txn.next_ids("verification_seq", 1)
    await txn.execute(
        "INSERT INTO business_verifications (id, account_id, legal_name, registration_number, "
        "domain, status, proof_token, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
        vid,
        account_id,
        legal_name,
        registration_number,
        domain,
        proof_token,
        now,
    )
    return vid


async def verifications(txn: Txn, account_id: int) -> list[VerificationRow]:
    rows = await txn.fetch(
        f"SELECT {_VERIFICATION_COLUMNS} FROM business_verifications "  # noqa: S608
        "WHERE account_id = ? ORDER BY id",
        account_id,
    )
    return [tuple(r) for r in rows]


async def decide_verification(
    txn: Txn,
    vid: int,
    *,
    from_status: str,
    to_status: str,
    reason: str | None,
    admin: int | None,
    now: int,
) -> bool:
    changed = await txn.execute(
        "UPDATE business_verifications SET status = ?, reason = ?, decided_at = ?, "
        "decided_by = ? WHERE id = ? AND status = ?",
        to_status,
        reason,
        now,
        admin,
        vid,
        from_status,
    )
    return changed > 0


async def record_proof(txn: Txn, vid: int, method: str | None, ok: bool, now: int) -> None:
    await txn.execute(
        "UPDATE business_verifications SET proof_method = ?, proof_ok = ?, proof_checked_at = ? "
        "WHERE id = ?",
        method,
        int(ok),
        now,
        vid,
    )


# ---------------------------------------------------------------- catalog

_PRODUCT_COLUMNS = (
    "id, account_id, retailer_id, name, description, price, currency, image, availability, "
    "created_at, updated_at"
)


def _product(r: Row) -> Product:
    return Product(
        id=int(r[0]),
        business_id=int(r[1]),
        retailer_id=r[2],
        name=r[3],
        description=r[4],
        price=int(r[5]),
        currency=r[6],
        image=r[7],
        availability=r[8],
        created_at=int(r[9]),
        updated_at=int(r[10]),
    )


async def insert_product(txn: Txn, product: Product) -> int | None:
    """The new id, or None if the retailer id was taken meanwhile."""
    (pid,) = await txn.next_ids("product_seq", 1)
    changed = await txn.execute(
        f"INSERT INTO products ({_PRODUCT_COLUMNS}) "  # noqa: S608
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        pid,
        product.business_id,
        product.retailer_id,
        product.name,
        product.description,
        product.price,
        product.currency,
        product.image,
        product.availability,
        product.created_at,
        product.updated_at,
    )
    return pid if changed else None


async def get_product(txn: Txn, business_id: int, product_id: int) -> Product | None:
    row = await txn.fetchone(
        f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE account_id = ? AND id = ?",  # noqa: S608
        business_id,
        product_id,
    )
    return _product(row) if row else None


async def retailer_id_taken(
    txn: Txn, business_id: int, retailer_id: str, except_product: int
) -> bool:
    row = await txn.fetchone(
        "SELECT 1 FROM products WHERE account_id = ? AND retailer_id = ? AND id <> ?",
        business_id,
        retailer_id,
        except_product,
    )
    return row is not None


async def save_product(txn: Txn, product: Product) -> None:
    await txn.execute(
        "UPDATE products SET retailer_id = ?, name = ?, description = ?, price = ?, currency = ?, "
        "image = ?, availability = ?, updated_at = ? WHERE id = ? AND account_id = ?",
        product.retailer_id,
        product.name,
        product.description,
        product.price,
        product.currency,
        product.image,
        product.availability,
        product.updated_at,
        product.id,
        product.business_id,
    )


async def delete_product(txn: Txn, business_id: int, product_id: int) -> bool:
    changed = await txn.execute(
        "DELETE FROM products WHERE account_id = ? AND id = ?", business_id, product_id
    )
    return changed > 0


async def list_products(
    txn: Txn, business_id: int, *, after: int | None, limit: int, in_stock_only: bool
) -> list[Product]:
    stock = " AND availability = 'in_stock'" if in_stock_only else ""
    rows = await txn.fetch(
        f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE account_id = ? AND id > ?"  # noqa: S608
        f"{stock} ORDER BY id LIMIT ?",
        business_id,
        after or 0,
        limit,
    )
    return [_product(r) for r in rows]


async def count_products(txn: Txn, business_id: int) -> int:
    row = await txn.fetchone("SELECT count(*) FROM products WHERE account_id = ?", business_id)
    return int(row[0]) if row else 0


# ---------------------------------------------------------------- quick replies


def _quick_reply(r: Row) -> QuickReply:
    return QuickReply(
        id=int(r[0]), shortcut=r[1], text=r[2], created_at=int(r[3]), updated_at=int(r[4])
    )


async def insert_quick_reply(
    txn: Txn, business_id: int, shortcut: str, text: str, now: int
) -> QuickReply | None:
    """None if the shortcut was taken meanwhile."""
    (qid,) = await txn.next_ids("quick_reply_seq", 1)
    changed = await txn.execute(
        "INSERT INTO quick_replies (id, account_id, shortcut, text, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        qid,
        business_id,
        shortcut,
        text,
        now,
        now,
    )
    if not changed:
        return None
    return QuickReply(id=qid, shortcut=shortcut, text=text, created_at=now, updated_at=now)


async def quick_reply_by_shortcut(txn: Txn, business_id: int, shortcut: str) -> int | None:
    row = await txn.fetchone(
        "SELECT id FROM quick_replies WHERE account_id = ? AND shortcut = ?",
        business_id,
        shortcut,
    )
    return int(row[0]) if row else None


async def update_quick_reply(
    txn: Txn, business_id: int, qid: int, shortcut: str, text: str, now: int
) -> QuickReply | None:
    changed = await txn.execute(
        "UPDATE quick_replies SET shortcut = ?, text = ?, updated_at = ? "
        "WHERE id = ? AND account_id = ?",
        shortcut,
        text,
        now,
        qid,
        business_id,
    )
    if not changed:
        return None
    row = await txn.fetchone(
        "SELECT id, shortcut, text, created_at, updated_at FROM quick_replies WHERE id = ?", qid
    )
    return _quick_reply(row) if row else None


async def delete_quick_reply(txn: Txn, business_id: int, qid: int) -> bool:
    changed = await txn.execute(
        "DELETE FROM quick_replies WHERE id = ? AND account_id = ?", qid, business_id
    )
    return changed > 0


async def list_quick_replies(txn: Txn, business_id: int) -> list[QuickReply]:
    rows = await txn.fetch(
        "SELECT id, shortcut, text, created_at, updated_at FROM quick_replies "
        "WHERE account_id = ? ORDER BY shortcut",
        business_id,
    )
    return [_quick_reply(r) for r in rows]


async def count_quick_replies(txn: Txn, business_id: int) -> int:
    row = await txn.fetchone("SELECT count(*) FROM quick_replies WHERE account_id = ?", business_id)
    return int(row[0]) if row else 0


# ---------------------------------------------------------------- labels


async def insert_label(txn: Txn, business_id: int, name: str, color: str, now: int) -> int | None:
    """The new id, or None if the name was taken meanwhile."""
    (lid,) = await txn.next_ids("label_seq", 1)
    changed = await txn.execute(
        "INSERT INTO labels (id, account_id, name, color, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        lid,
        business_id,
        name,
        color,
        now,
    )
    return lid if changed else None


async def label_by_name(txn: Txn, business_id: int, name: str) -> int | None:
    row = await txn.fetchone(
        "SELECT id FROM labels WHERE account_id = ? AND lower(name) = lower(?)", business_id, name
    )
    return int(row[0]) if row else None


async def label_exists(txn: Txn, business_id: int, lid: int) -> bool:
    row = await txn.fetchone(
        "SELECT 1 FROM labels WHERE id = ? AND account_id = ?", lid, business_id
    )
    return row is not None


async def update_label(txn: Txn, business_id: int, lid: int, name: str, color: str) -> bool:
    changed = await txn.execute(
        "UPDATE labels SET name = ?, color = ? WHERE id = ? AND account_id = ?",
        name,
        color,
        lid,
        business_id,
    )
    return changed > 0


async def delete_label(txn: Txn, business_id: int, lid: int) -> bool:
    await txn.execute(
        "DELETE FROM chat_labels WHERE label_id IN "
        "(SELECT id FROM labels WHERE id = ? AND account_id = ?)",
        lid,
        business_id,
    )
    changed = await txn.execute(
        "DELETE FROM labels WHERE id = ? AND account_id = ?", lid, business_id
    )
    return changed > 0


async def list_labels(txn: Txn, business_id: int, lid: int | None = None) -> list[Label]:
    one = " AND l.id = ?" if lid is not None else ""
    rows = await txn.fetch(
        "SELECT l.id, l.name, l.color, l.created_at, "  # noqa: S608
        "(SELECT count(*) FROM chat_labels c WHERE c.label_id = l.id) "
        f"FROM labels l WHERE l.account_id = ?{one} ORDER BY l.name",
        business_id,
        *([lid] if lid is not None else []),
    )
    return [
        Label(id=int(r[0]), name=r[1], color=r[2], created_at=int(r[3]), chats=int(r[4]))
        for r in rows
    ]


async def count_labels(txn: Txn, business_id: int) -> int:
    row = await txn.fetchone("SELECT count(*) FROM labels WHERE account_id = ?", business_id)
    return int(row[0]) if row else 0


async def assign_label(txn: Txn, lid: int, chat: int, now: int) -> None:
    await txn.execute(
        "INSERT INTO chat_labels (label_id, chat_account_id, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT (label_id, chat_account_id) DO NOTHING",
        lid,
        chat,
        now,
    )


async def unassign_label(txn: Txn, lid: int, chat: int) -> bool:
    changed = await txn.execute(
        "DELETE FROM chat_labels WHERE label_id = ? AND chat_account_id = ?", lid, chat
    )
    return changed > 0


async def chats_with_label(txn: Txn, lid: int, *, after: int | None, limit: int) -> list[int]:
    rows = await txn.fetch(
        "SELECT chat_account_id FROM chat_labels WHERE label_id = ? AND chat_account_id > ? "
        "ORDER BY chat_account_id LIMIT ?",
        lid,
        after or 0,
        limit,
    )
    return [int(r[0]) for r in rows]


async def labels_of_chat(txn: Txn, business_id: int, chat: int) -> list[int]:
    rows = await txn.fetch(
        "SELECT c.label_id FROM chat_labels c JOIN labels l ON l.id = c.label_id "
        "WHERE l.account_id = ? AND c.chat_account_id = ? ORDER BY c.label_id",
        business_id,
        chat,
    )
    return [int(r[0]) for r in rows]


# ---------------------------------------------------------------- scoped ids


async def scoped_person(
    txn: Txn, business_id: int, person_id: int
) -> tuple[str, int | None] | None:
    row = await txn.fetchone(
        "SELECT scoped_id, phone_shared_at FROM business_people "
        "WHERE business_id = ? AND person_id = ?",
        business_id,
        person_id,
    )
    return (str(row[0]), row[1]) if row else None


async def add_scoped_person(
    txn: Txn, business_id: int, person_id: int, scoped_id: str, now: int
) -> None:
    await txn.execute(
        "INSERT INTO business_people (business_id, person_id, scoped_id, created_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (business_id, person_id) DO NOTHING",
        business_id,
        person_id,
        scoped_id,
        now,
    )


async def person_by_scoped_id(
    txn: Txn, business_id: int, scoped_id: str
) -> tuple[int, int | None] | None:
    row = await txn.fetchone(
        "SELECT person_id, phone_shared_at FROM business_people "
        "WHERE business_id = ? AND scoped_id = ?",
        business_id,
        scoped_id,
    )
    return (int(row[0]), row[1]) if row else None


async def set_phone_shared(
    txn: Txn, business_id: int, person_id: int, shared_at: int | None
) -> None:
    await txn.execute(
        "UPDATE business_people SET phone_shared_at = ? WHERE business_id = ? AND person_id = ?",
        shared_at,
        business_id,
        person_id,
    )

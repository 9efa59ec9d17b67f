"""SQL for accounts, devices, codes and contacts. Nothing but SQL lives here."""

from __future__ import annotations

from collections.abc import Sequence

from tresen.relay.accounts.models import Device, Me, Profile
from tresen.storage.engine import Row, Txn


async def account_by_phone(txn: Txn, phone: str) -> int | None:
    row = await txn.fetchone("SELECT id FROM accounts WHERE phone = ?", phone)
    return int(row[0]) if row else None


async def account_by_username(txn: Txn, username: str) -> int | None:
    row = await txn.fetchone("SELECT id FROM accounts WHERE username = ?", username)
    return int(row[0]) if row else None


async def account_exists(txn: Txn, account_id: int) -> bool:
    return await txn.fetchone("SELECT 1 FROM accounts WHERE id = ?", account_id) is not None


async def create_account(txn: Txn, phone: str, now: int) -> int:
    (account_id,) = await txn.next_ids("account_seq", 1)
    await txn.execute(
        "INSERT INTO accounts (id, phone, created_at) VALUES (?, ?, ?)", account_id, phone, now
    )
    return account_id


async def create_device(txn: Txn, account_id: int, name: str, token_hash: bytes, now: int) -> int:
    (device_id,) = await txn.next_ids("device_seq", 1)
    await txn.execute(
        "INSERT INTO devices (id, account_id, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        device_id,
        account_id,
        name,
        token_hash,
        now,
    )
    return device_id


async def principal_by_token(txn: Txn, token_hash: bytes) -> tuple[int, int] | None:
    row = await txn.fetchone(
        "SELECT account_id, id FROM devices WHERE token_hash = ? AND revoked_at IS NULL",
        token_hash,
    )
    return (int(row[0]), int(row[1])) if row else None


async def is_revoked_token(txn: Txn, token_hash: bytes) -> bool:
    row = await txn.fetchone(
        "SELECT 1 FROM devices WHERE token_hash = ? AND revoked_at IS NOT NULL", token_hash
    )
    return row is not None


async def active_devices(txn: Txn, account_id: int) -> list[int]:
    rows = await txn.fetch(
        "SELECT id FROM devices WHERE account_id = ? AND revoked_at IS NULL ORDER BY id",
        account_id,
    )
    return [int(r[0]) for r in rows]


async def list_devices(txn: Txn, account_id: int) -> list[Device]:
    rows = await txn.fetch(
        "SELECT id, name, created_at, last_seen_at FROM devices "
        "WHERE account_id = ? AND revoked_at IS NULL ORDER BY id",
        account_id,
    )
    return [Device(int(r[0]), r[1], int(r[2]), r[3]) for r in rows]


async def revoke_device(txn: Txn, account_id: int, device_id: int, now: int) -> bool:
    changed = await txn.execute(
        "UPDATE devices SET revoked_at = ? WHERE id = ? AND account_id = ? AND revoked_at IS NULL",
        now,
        device_id,
        account_id,
    )
    return changed > 0


async def revoke_all_devices(txn: Txn, account_id: int, now: int) -> list[int]:
    devices = await active_devices(txn, account_id)
    await txn.execute(
        "UPDATE devices SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL",
        now,
        account_id,
    )
    return devices


async def touch_device(txn: Txn, device_id: int, account_id: int, now: int) -> None:
    await txn.execute("UPDATE devices SET last_seen_at = ? WHERE id = ?", now, device_id)
    await txn.execute("UPDATE accounts SET last_seen_at = ? WHERE id = ?", now, account_id)


async def mark_seen(txn: Txn, account_ids: Sequence[int], at: int) -> None:
    """Move these accounts' last seen forward to ``at`` (never back)."""
    await txn.executemany(
        "UPDATE accounts SET last_seen_at = ? "
        "WHERE id = ? AND (last_seen_at IS NULL OR last_seen_at < ?)",
        [(at, account_id, at) for account_id in account_ids],
    )


# ---------------------------------------------------------------- codes


async def put_verification_code(txn: Txn, phone: str, code_hash: bytes, expires_at: int) -> None:
    await txn.execute("DELETE FROM verification_codes WHERE phone = ?", phone)
    await txn.execute(
        "INSERT INTO verification_codes (phone, code_hash, expires_at) VALUES (?, ?, ?)",
        phone,
        code_hash,
        expires_at,
    )


async def get_verification_code(txn: Txn, phone: str) -> Row | None:
    return await txn.fetchone(
        "SELECT code_hash, expires_at, attempts FROM verification_codes WHERE phone = ?", phone
    )


async def count_code_attempt(txn: Txn, phone: str) -> None:
    await txn.execute(
        "UPDATE verification_codes SET attempts = attempts + 1 WHERE phone = ?", phone
    )


async def delete_verification_code(txn: Txn, phone: str) -> None:
    await txn.execute("DELETE FROM verification_codes WHERE phone = ?", phone)


async def put_link_code(txn: Txn, code_hash: bytes, account_id: int, expires_at: int) -> None:
    await txn.execute(
        "INSERT INTO link_codes (code_hash, account_id, expires_at) VALUES (?, ?, ?)",
        code_hash,
        account_id,
        expires_at,
    )


async def take_link_code(txn: Txn, code_hash: bytes) -> Row | None:
    """Single use: the code is deleted as it is read."""
    return await txn.fetchone(
        "DELETE FROM link_codes WHERE code_hash = ? RETURNING account_id, expires_at", code_hash
    )


async def count_rate_events(txn: Txn, bucket: str, since: int) -> int:
    row = await txn.fetchone(
        "SELECT count(*) FROM rate_events WHERE bucket = ? AND at > ?", bucket, since
    )
    return int(row[0]) if row else 0


async def add_rate_event(txn: Txn, bucket: str, at: int) -> None:
    await txn.execute("INSERT INTO rate_events (bucket, at) VALUES (?, ?)", bucket, at)


async def purge_stale(txn: Txn, now: int, rate_window_ms: int) -> None:
    await txn.execute("DELETE FROM rate_events WHERE at < ?", now - rate_window_ms)
    await txn.execute("DELETE FROM verification_codes WHERE expires_at < ?", now)
    await txn.execute("DELETE FROM link_codes WHERE expires_at < ?", now)


# ---------------------------------------------------------------- profiles


async def get_me(txn: Txn, account_id: int, device_id: int) -> Me | None:
    row = await txn.fetchone(
        "SELECT id, phone, display_name, about, photo, username, presence_privacy "
        "FROM accounts WHERE id = ?",
        account_id,
    )
    if row is None:
        return None
    return Me(int(row[0]), row[1], device_id, row[2], row[3], row[4], row[5], row[6])


async def get_profile(txn: Txn, account_id: int) -> Profile | None:
    row = await txn.fetchone(
        "SELECT a.id, a.display_name, a.about, a.photo, a.username, b.verified FROM accounts a "
        "LEFT JOIN businesses b ON b.account_id = a.id WHERE a.id = ?",
        account_id,
    )
    if row is None:
        return None
    return Profile(int(row[0]), row[1], row[2], row[3], row[4], row[5] is not None, bool(row[5]))


async def update_account(txn: Txn, account_id: int, column: str, value: object) -> None:
    assert column in {"display_name", "about", "photo", "username", "presence_privacy"}
    await txn.execute(f"UPDATE accounts SET {column} = ? WHERE id = ?", value, account_id)  # noqa: S608


async def presence_row(txn: Txn, account_id: int) -> Row | None:
    return await txn.fetchone(
        "SELECT presence_privacy, last_seen_at FROM accounts WHERE id = ?", account_id
    )


# ---------------------------------------------------------------- contacts


async def set_contacts(txn: Txn, account_id: int, contacts: list[int]) -> None:
    await txn.execute("DELETE FROM contacts WHERE account_id = ?", account_id)
    await txn.executemany(
        "INSERT INTO contacts (account_id, contact_id) SELECT ?, id FROM accounts WHERE id = ?",
        [(account_id, c) for c in sorted(set(contacts)) if c != account_id],
    )


async def get_contacts(txn: Txn, account_id: int) -> list[int]:
    rows = await txn.fetch(
        "SELECT contact_id FROM contacts WHERE account_id = ? ORDER BY contact_id", account_id
    )
    return [int(r[0]) for r in rows]


async def has_contact(txn: Txn, account_id: int, contact_id: int) -> bool:
    row = await txn.fetchone(
        "SELECT 1 FROM contacts WHERE account_id = ? AND contact_id = ?", account_id, contact_id
    )
    return row is not None

"""SQL for groups, their members and invite codes. Nothing but SQL lives here."""

from __future__ import annotations

from collections.abc import Iterable

from tresen.relay.groups.models import GroupSummary, Member
from tresen.storage.engine import Row, Txn

#: ids per ``IN (...)`` list: well under every engine's limit on bound parameters
_CHUNK = 500


async def existing_accounts(txn: Txn, account_ids: Iterable[int]) -> set[int]:
    ids = sorted(set(account_ids))
    found: set[int] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = await txn.fetch(f"SELECT id FROM accounts WHERE id IN ({marks})", *chunk)  # noqa: S608
        found.update(int(r[0]) for r in rows)
    return found


async def create_group(txn: Txn, name: str, description: str, created_by: int, now: int) -> int:
    (group_id,) = await txn.next_ids("group_seq", 1)
    await txn.execute(
        "INSERT INTO groups (id, name, description, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
        group_id,
        name,
        description,
        created_by,
        now,
    )
    return group_id


async def lock_group(txn: Txn, group_id: int) -> bool:
    """Take the group's row lock for the rest of the transaction; False if there is no group.

    Every change to a group starts here, so concurrent changes (two joins racing for the last
    place) run one after the other on PostgreSQL too; SQLite has one writer anyway.
    """
    changed = await txn.execute("UPDATE groups SET epoch = epoch WHERE id = ?", group_id)
    return changed > 0


async def next_epoch(txn: Txn, group_id: int) -> int:
    row = await txn.fetchone(
        "UPDATE groups SET epoch = epoch + 1 WHERE id = ? RETURNING epoch", group_id
    )
    assert row is not None, "next_epoch on a group that does not exist"
    return int(row[0])


async def get_group(txn: Txn, group_id: int) -> Row | None:
    """(id, name, description, created_by, created_at, epoch)"""
    return await txn.fetchone(
        "SELECT id, name, description, created_by, created_at, epoch FROM groups WHERE id = ?",
        group_id,
    )


async def update_group(txn: Txn, group_id: int, column: str, value: str) -> None:
    assert column in {"name", "description"}
    await txn.execute(f"UPDATE groups SET {column} = ? WHERE id = ?", value, group_id)  # noqa: S608


async def delete_group(txn: Txn, group_id: int) -> None:
    await txn.execute("DELETE FROM group_members WHERE group_id = ?", group_id)
    await txn.execute("DELETE FROM groups WHERE id = ?", group_id)


# ---------------------------------------------------------------- members


async def add_members(
    txn: Txn, group_id: int, accounts: Iterable[int], role: str, now: int
) -> None:
    rows = [(group_id, account, role, now) for account in accounts]
    if not rows:
        return
    await txn.executemany(
        "INSERT INTO group_members (group_id, account_id, role, joined_at) VALUES (?, ?, ?, ?)",
        rows,
    )


async def get_members(txn: Txn, group_id: int) -> list[Member]:
    """Oldest first."""
    rows = await txn.fetch(
        "SELECT account_id, role, joined_at FROM group_members WHERE group_id = ? "
        "ORDER BY joined_at, account_id",
        group_id,
    )
    return [Member(int(r[0]), r[1], int(r[2])) for r in rows]


async def member_accounts(txn: Txn, group_id: int) -> list[int]:
    rows = await txn.fetch(
        "SELECT account_id FROM group_members WHERE group_id = ? ORDER BY account_id", group_id
    )
    return [int(r[0]) for r in rows]


async def role_of(txn: Txn, group_id: int, account_id: int) -> str | None:
    row = await txn.fetchone(
        "SELECT role FROM group_members WHERE group_id = ? AND account_id = ?",
        group_id,
        account_id,
    )
    return str(row[0]) if row else None


async def count_members(txn: Txn, group_id: int, role: str | None = None) -> int:
    if role is None:
        row = await txn.fetchone("SELECT count(*) FROM group_members WHERE group_id = ?", group_id)
    else:
        row = await txn.fetchone(
            "SELECT count(*) FROM group_members WHERE group_id = ? AND role = ?", group_id, role
        )
    return int(row[0]) if row else 0


async def remove_member(txn: Txn, group_id: int, account_id: int) -> bool:
    changed = await txn.execute(
        "DELETE FROM group_members WHERE group_id = ? AND account_id = ?", group_id, account_id
    )
    return changed > 0


async def set_role(txn: Txn, group_id: int, account_id: int, role: str) -> None:
    await txn.execute(
        "UPDATE group_members SET role = ? WHERE group_id = ? AND account_id = ?",
        role,
        group_id,
        account_id,
    )


async def oldest_member(txn: Txn, group_id: int) -> int | None:
    row = await txn.fetchone(
        "SELECT account_id FROM group_members WHERE group_id = ? "
        "ORDER BY joined_at, account_id LIMIT 1",
        group_id,
    )
    return int(row[0]) if row else None


async def groups_of(txn: Txn, account_id: int) -> list[GroupSummary]:
    rows = await txn.fetch(
        "SELECT g.id, g.name, m.role, "
        "(SELECT count(*) FROM group_members c WHERE c.group_id = g.id), g.epoch "
        "FROM group_members m JOIN groups g ON g.id = m.group_id "
        "WHERE m.account_id = ? ORDER BY g.id",
        account_id,
    )
    return [GroupSummary(int(r[0]), r[1], r[2], int(r[3]), int(r[4])) for r in rows]


# ---------------------------------------------------------------- invite links


async def get_invite_code(txn: Txn, group_id: int) -> str | None:
    row = await txn.fetchone("SELECT invite_code FROM groups WHERE id = ?", group_id)
    return str(row[0]) if row and row[0] is not None else None


async def set_invite_code(txn: Txn, group_id: int, code: str | None) -> None:
    await txn.execute("UPDATE groups SET invite_code = ? WHERE id = ?", code, group_id)


async def group_by_invite(txn: Txn, code: str) -> int | None:
    row = await txn.fetchone("SELECT id FROM groups WHERE invite_code = ?", code)
    return int(row[0]) if row else None

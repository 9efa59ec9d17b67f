"""Claiming sender-chosen envelope ids: exactly the unseen ones, whatever the batch's length."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tresen.relay.envelopes import store
from tresen.storage.engine import Database, Txn, open_database


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = open_database(db_url)
    await database.open()
    await database.migrate()
    yield database
    await database.close()


async def claim(db: Database, keys: list[tuple[int, str]]) -> set[tuple[int, str]]:
    async def run(txn: Txn) -> set[tuple[int, str]]:
        return await store.claim_envelope_ids(txn, keys, 1_000)

    return await db.run_interaction("claim", run)


@pytest.mark.parametrize("length", [1, 3, 17, 341, 700])
async def test_a_batch_of_any_length_claims_exactly_the_unseen_ids(
    db: Database, length: int
) -> None:
    keys = [(1, f"id-{n}") for n in range(length)]
    seen = keys[::3]  # every third was claimed by an earlier batch
    assert await claim(db, seen) == set(seen)
    assert await claim(db, keys) == set(keys) - set(seen)
    assert await claim(db, keys) == set()


async def test_the_same_id_from_two_devices_is_two_envelopes(db: Database) -> None:
    keys = [(1, "same"), (2, "same"), *((3, f"x{n}") for n in range(300))]
    assert await claim(db, keys) == set(keys)
    assert await claim(db, [(2, "same"), (4, "same")]) == {(4, "same")}

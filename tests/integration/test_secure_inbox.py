"""The SecureDevice's inbox rows: a clean close keeps nothing of the handled events, a take that
fails stores what it took before, and whatever a crash leaves uncommitted comes again, in
order, never lost and never undecryptable (a lost ack: test_e2e_durability.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Harness
from tests.integration.test_e2e_durability import alice_and_bob, bodies, crash, reopen
from tresen.client.crypto.store import CryptoStore
from tresen.client.secure import HANDLED, INBOX, Message, SecureDevice
from tresen.protocol.frames import Item


def committed(store: Path) -> dict[str, object]:
    """The inbox rows another reader of the file sees: what was committed."""
    reader = CryptoStore.open_with_passphrase(store, "pw")
    try:
        return reader.all(INBOX)
    finally:
        reader.close()


async def body(device: SecureDevice) -> str:
    event = await device.recv(5)
    assert isinstance(event, Message), event
    return str(event.content["body"])


async def test_a_clean_close_keeps_nothing_of_the_handled_events(
    relay: Harness, tmp_path: Path
) -> None:
    alice, bob_h, bob = await alice_and_bob(relay, tmp_path)
    sent = [f"m{n}" for n in range(5)]
    for text in sent:
        await alice.send(bob.account_id, text)
    assert [await body(bob) for _ in sent] == sent
    await bob.close()  # handles the last one, commits the deletes still pending
    assert list(committed(tmp_path / "bob.store")) == [HANDLED]

    bob = await reopen(bob_h, tmp_path / "bob.store")
    assert await bodies(bob, 0.5) == []
    await alice.send(bob.account_id, "after")  # the Olm session is where it was left
    assert await bodies(bob) == ["after"]
    await bob.close()
    await alice.close()


async def test_after_a_crash_what_comes_again_is_in_order_and_nothing_is_lost(
    relay: Harness, tmp_path: Path
) -> None:
    alice, bob_h, bob = await alice_and_bob(relay, tmp_path)
    sent = [f"m{n}" for n in range(8)]
    for text in sent[:4]:
        await alice.send(bob.account_id, text)
    assert [await body(bob) for _ in range(3)] == sent[:3]  # m0, m1 handled; m2 not yet
    for text in sent[4:]:
        await alice.send(bob.account_id, text)
    await asyncio.sleep(0.3)  # they reach bob's connection, not yet taken
    await crash(bob)

    bob = await reopen(bob_h, tmp_path / "bob.store")
    again = await bodies(bob)
    assert again in (sent[2:], sent[1:], sent), again  # handled ones at most, in order
    await bob.close()
    bob = await reopen(bob_h, tmp_path / "bob.store")
    assert await bodies(bob, 0.5) == []
    await bob.close()
    await alice.close()


async def test_a_take_that_fails_keeps_the_items_taken_before(
    relay: Harness, tmp_path: Path
) -> None:
    alice, bob_h, bob = await alice_and_bob(relay, tmp_path)
    first = await alice.send(bob.account_id, "first")
    second = await alice.send(bob.account_id, "second")
    on_item = bob._on_item

    async def failing(item: Item) -> None:
        if item.id == second:
            raise RuntimeError("the second item fails")
        await on_item(item)

    bob._on_item = failing  # type: ignore[method-assign]
    conn = bob.device._live()
    async with asyncio.timeout(5):
        while conn.inbox.qsize() < 2:  # both reach bob's connection: one take
            await asyncio.sleep(0.02)
    with pytest.raises(RuntimeError):
        await bob.recv(5)
    rows = committed(tmp_path / "bob.store")
    assert [first] == [str(v[1]["id"]) for k, v in rows.items() if k != HANDLED]  # type: ignore[index]
    await crash(bob)

    # "first" comes from the store, "second" from the relay (it was never acknowledged)
    bob = await reopen(bob_h, tmp_path / "bob.store")
    assert await bodies(bob) == ["first", "second"]
    await bob.close()
    await alice.close()

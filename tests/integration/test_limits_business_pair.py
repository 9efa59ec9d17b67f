"""The pair rate limit: one business to one person, a burst then a slow rate (131056)."""

from __future__ import annotations

from typing import Any

import pytest

from tresen.errors import LimitExceeded
from tresen.protocol.codes import Code

from ..conftest import Harness
from ._policy import make_business, send


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"business_pair_burst": 3, "business_pair_per_second": 0.001}


async def test_pair_rate_limit_per_recipient(relay: Harness) -> None:
    shop = await make_business(relay)
    alice, bob = await relay.new_device(), await relay.new_device()
    for person in (alice, bob):
        pconn = await person.connect()
        await send(pconn, shop)
    conn = await shop.connect()
    for _ in range(3):
        await send(conn, alice)
    with pytest.raises(LimitExceeded) as caught:
        await send(conn, alice)
    assert caught.value.code == Code.PAIR_RATE_LIMITED
    assert caught.value.fields["retry_after"] > 0
    # another person is another pair
    await send(conn, bob)
    # the clock refills the pair's bucket
    relay.clock.advance(1000)
    await send(conn, alice)

"""Quality changes reach the business's webhook (``phone_number_quality_update``) as soon as
the relay tells the number's device, without waiting for the gateway's periodic comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Harness
from tests.integration._policy import admin_client
from tests.integration.gateway_harness import Business, Receiver, next_message
from tests.integration.test_gateway_errors import biz, hook, writer  # noqa: F401 - fixtures


@pytest.fixture
def relay_settings() -> dict[str, Any]:
    return {"quality_min_sends": 1}  # one report is enough to judge


async def test_quality_change_reaches_the_webhook_without_a_poll(
    biz: Business,  # noqa: F811
    hook: Receiver,  # noqa: F811
    relay: Harness,
    tmp_path: Path,
) -> None:
    """The relay's quality_update notice to the number's device: the webhook at once."""
    sheena, to = await writer(biz, hook, relay, tmp_path)
    try:
        r = await biz.send({"messaging_product": "whatsapp", "to": to, "text": {"body": "hi"}})
        assert r.status_code == 200, r.text
        await next_message(sheena)
        r = await sheena.device.api.request(
            "POST", "/v1/reports", json={"account": biz.boot.relay_account_id, "reason": "spam"}
        )
        async with await admin_client(relay) as admin:  # the operator's view evaluates now
            r = await admin.get(f"/v1/admin/policy/{biz.boot.relay_account_id}")
            assert r.status_code == 200, r.text
            assert r.json()["quality"] == "RED"
        update = await hook.next("new_quality_score")
        assert (update["old_quality_score"], update["new_quality_score"]) == ("GREEN", "RED")
        assert update["event"] == "DOWNGRADE"
    finally:
        await sheena.close()

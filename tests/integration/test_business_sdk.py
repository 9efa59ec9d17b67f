"""The SDK's business methods against a real relay, with the relay's errors raised as the
typed errors of the one error tree."""

from __future__ import annotations

import pytest

from tresen.client.api import RelayAPI
from tresen.errors import Conflict, InvalidRequest, NotFound
from tresen.protocol.codes import Code

from ..conftest import Harness


async def test_business_through_the_sdk(relay: Harness) -> None:
    owner = await relay.new_device()
    person = await relay.new_device()
    async with RelayAPI(relay.url, owner.token) as shop, RelayAPI(relay.url, person.token) as me:
        created = await shop.create_business("Sdk Store", about="Made with the SDK")
        assert created["slug"] == "sdk-store"
        with pytest.raises(Conflict) as caught:
            await shop.create_business("Again")
        assert caught.value.code == Code.BUSINESS_EXISTS
        with pytest.raises(InvalidRequest) as bad:
            await shop.update_business(about="x" * 140)
        assert bad.value.code == Code.INVALID_BUSINESS_PROFILE
        assert bad.value.fields == {"field": "about", "limit": 139}
        await shop.set_business_hours({"mode": "always_open"})
        assert (await me.business_profile(owner.account_id))["open_now"] is True
        assert (await me.business_profile(slug="sdk-store"))["account_id"] == owner.account_id
        await shop.set_greeting(enabled=True, text="Hi!")
        await shop.set_away(enabled=True, text="Away", schedule="always")
        own = await shop.business()
        assert own["greeting"]["text"] == "Hi!" and own["away_now"] is True

        application = await shop.apply_verification("Sdk Store Ltd", "HRB 1", "sdk.example")
        assert (await shop.verification())["proof_token"] == application["proof_token"]

        product = await shop.add_product(name="Mug", price=1299, currency="EUR")
        await shop.update_product(product["id"], availability="out_of_stock")
        page = await me.catalog(owner.account_id)
        assert [(p["name"], p["availability"]) for p in page["items"]] == [("Mug", "out_of_stock")]
        await shop.delete_product(product["id"])
        assert (await me.catalog(owner.account_id))["items"] == []

        await shop.add_quick_reply("thanks", "Thank you!")
        assert [q["shortcut"] for q in await shop.quick_replies()] == ["thanks"]
        label = await shop.add_label("VIP")
        await shop.label_chat(label["id"], person.account_id)
        assert [lab["chats"] for lab in await shop.labels()] == [1]

        seen = await shop.business_person(person.account_id)
        assert "phone" not in seen
        shared = await me.share_phone(owner.account_id)
        assert shared["scoped_id"] == seen["scoped_id"]
        assert (await shop.business_person(person.account_id))["phone"] == person.phone
        await me.share_phone(owner.account_id, share=False)
        assert "phone" not in await shop.business_person(person.account_id)

        with pytest.raises(NotFound) as missing:
            await me.business()
        assert missing.value.code == Code.NOT_A_BUSINESS
        with pytest.raises(ValueError, match="exactly one"):
            await me.business_profile()

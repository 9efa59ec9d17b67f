"""The relay's business routes from a business's device: thin methods over :class:`RelayAPI`.

Used by the business gateway (``tresen.gateway``); each method is one route of
docs/business.md or docs/business-rules.md and returns the relay's JSON as is.
"""

from __future__ import annotations

from typing import Any

from tresen.client.api import RelayAPI


class BusinessAPI:
    def __init__(self, api: RelayAPI) -> None:
        self.api = api

    # the business and its profile
    async def create(self, **profile: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request("POST", "/v1/business", json=profile)
        return result

    async def get(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request("GET", "/v1/business")
        return result

    async def update(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request("PATCH", "/v1/business", json=changes)
        return result

    async def account(self) -> dict[str, Any]:
        """Balance, tier, quality rating and throughput (part B's billing routes; read only)."""
        result: dict[str, Any] = await self.api.request("GET", "/v1/business/account")
        return result

    async def standing(self) -> dict[str, Any]:
        """Quality rating, tier and feedback, re-evaluated by the relay on the call."""
        result: dict[str, Any] = await self.api.request("GET", "/v1/business/standing")
        return result

    # people under business-scoped ids
    async def person(self, account_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request("GET", f"/v1/business/people/{account_id}")
        return result

    async def person_by_scoped_id(self, scoped_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request(
            "GET", f"/v1/business/people/by-scoped-id/{scoped_id}"
        )
        return result

    async def profile(self, account_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request("GET", f"/v1/accounts/{account_id}")
        return result

    async def lookup_phone(self, phone: str) -> dict[str, Any]:
        return await self.api.lookup(phone=phone)

    # templates (the relay reviews them; statuses come from the operator)
    async def create_template(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request("POST", "/v1/business/templates", json=body)
        return result

    async def templates(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"after": after, "limit": limit}
        if status:
            params["status"] = status
        if name:
            params["name"] = name
        result: list[dict[str, Any]] = await self.api.request(
            "GET", "/v1/business/templates", params=params
        )
        return result

    async def template(self, template_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request(
            "GET", f"/v1/business/templates/{template_id}"
        )
        return result

    async def edit_template(self, template_id: int, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request(
            "POST", f"/v1/business/templates/{template_id}", json=body
        )
        return result

    async def delete_template(self, template_id: int) -> None:
        await self.api.request("DELETE", f"/v1/business/templates/{template_id}")

    async def delete_templates_named(self, name: str) -> int:
        result = await self.api.request("DELETE", "/v1/business/templates", params={"name": name})
        return int(result["deleted"])

    # consent as the business sees it
    async def report_opt_out(self, person: int, keyword: str) -> list[dict[str, Any]]:
        """A STOP keyword the person sent: the relay opts them out at once."""
        result: list[dict[str, Any]] = await self.api.request(
            "POST", "/v1/business/opt-outs", json={"person": person, "keyword": keyword}
        )
        return result

    async def consents(self, person: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.api.request(
            "GET", "/v1/business/consents", params={"person": person}
        )
        return result

    # blocks (any account may block another; nothing from it gets through)
    async def block(self, account_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.api.request(
            "POST", "/v1/blocks", json={"account": account_id}
        )
        return result

    async def unblock(self, account_id: int) -> None:
        await self.api.request("DELETE", f"/v1/blocks/{account_id}")

    async def blocks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.api.request("GET", "/v1/blocks")
        return result

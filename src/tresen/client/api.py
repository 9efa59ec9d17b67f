"""The relay's HTTP API from a client: typed errors, one method per route."""

from __future__ import annotations

from collections.abc import AsyncIterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx

from tresen.errors import TresenError, Unavailable, from_code


class RelayAPI:
    """Async HTTP client of one relay, optionally authenticated as one device."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> RelayAPI:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def authenticate(self, token: str) -> None:
        self.http.headers["Authorization"] = f"Bearer {token}"

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the relay at {self.base_url}: {exc}") from exc
        if response.status_code == 204 or not response.content:
            if response.is_success:
                return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            raise from_code(err.get("code", ""), err.get("message", ""), err.get("fields"))
        raise TresenError(f"relay answered HTTP {response.status_code}: {response.text[:200]}")

    # accounts and devices
    async def request_code(self, phone: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", "/v1/accounts/code", json={"phone": phone}
        )
        return result

    async def register(
        self, phone: str, code: str, device_name: str = "", *, takeover: bool = False
    ) -> dict[str, Any]:
        body = {"phone": phone, "code": code, "device_name": device_name, "takeover": takeover}
        result: dict[str, Any] = await self.request("POST", "/v1/accounts", json=body)
        return result

    async def me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/v1/me")
        return result

    async def update_me(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("PATCH", "/v1/me", json=changes)
        return result

    async def lookup(
        self, *, phone: str | None = None, username: str | None = None
    ) -> dict[str, Any]:
        params = {k: v for k, v in (("phone", phone), ("username", username)) if v is not None}
        result: dict[str, Any] = await self.request("GET", "/v1/accounts/lookup", params=params)
        return result

    async def link_code(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", "/v1/devices/link-code")
        return result

    async def link(self, code: str, device_name: str = "") -> dict[str, Any]:
        body = {"code": code, "device_name": device_name}
        result: dict[str, Any] = await self.request("POST", "/v1/devices/link", json=body)
        return result

    async def devices(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/v1/devices")
        return result

    async def revoke(self, device_id: int) -> None:
        await self.request("DELETE", f"/v1/devices/{device_id}")

    async def presence(self, account_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/v1/accounts/{account_id}/presence")
        return result

    async def set_contacts(self, accounts: list[int]) -> list[int]:
        result = await self.request("PUT", "/v1/contacts", json={"accounts": accounts})
        return list(result["accounts"])

    # keys
    async def upload_keys(self, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", "/v1/keys/upload", json=body)
        return result

    async def query_keys(self, accounts: dict[str, list[str]]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", "/v1/keys/query", json={"device_keys": accounts}
        )
        return result

    async def claim_keys(self, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", "/v1/keys/claim", json={"one_time_keys": wanted}
        )
        return result

    # groups
    async def create_group(self, name: str, members: list[int]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", "/v1/groups", json={"name": name, "members": members}
        )
        return result

    # business accounts (docs/business.md)
    async def _dict(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(method, path, **kwargs)
        return result

    async def create_business(self, display_name: str, **profile: Any) -> dict[str, Any]:
        body = {"display_name": display_name, **profile}
        return await self._dict("POST", "/v1/business", json=body)

    async def business(self) -> dict[str, Any]:
        """This account's business with its private settings."""
        return await self._dict("GET", "/v1/business")

    async def update_business(self, **changes: Any) -> dict[str, Any]:
        return await self._dict("PATCH", "/v1/business", json=changes)

    async def business_profile(
        self, account_id: int | None = None, *, slug: str | None = None
    ) -> dict[str, Any]:
        """A business's public profile (with ``verified``), by account id or short-link slug."""
        if (account_id is None) == (slug is None):
            raise ValueError("give exactly one of account_id or slug")
        path = f"/v1/business/{account_id}" if slug is None else f"/v1/business/by-slug/{slug}"
        return await self._dict("GET", path)

    async def set_business_hours(self, hours: dict[str, Any]) -> dict[str, Any]:
        return await self._dict("PUT", "/v1/business/hours", json=hours)

    async def set_greeting(self, **settings: Any) -> dict[str, Any]:
        return await self._dict("PUT", "/v1/business/greeting", json=settings)

    async def set_away(self, **settings: Any) -> dict[str, Any]:
        return await self._dict("PUT", "/v1/business/away", json=settings)

    async def apply_verification(
        self, legal_name: str, registration_number: str, domain: str
    ) -> dict[str, Any]:
        body = {
            "legal_name": legal_name,
            "registration_number": registration_number,
            "domain": domain,
        }
        return await self._dict("POST", "/v1/business/verification", json=body)

    async def verification(self) -> dict[str, Any]:
        return await self._dict("GET", "/v1/business/verification")

    async def business_person(self, account_id: int) -> dict[str, Any]:
        """As a business: a person's scoped id (and phone, if they shared it)."""
        return await self._dict("GET", f"/v1/business/people/{account_id}")

    async def share_phone(self, business_id: int, share: bool = True) -> dict[str, Any]:
        """As a person: share your phone number with one business, or stop."""
        method = "POST" if share else "DELETE"
        return await self._dict(method, f"/v1/business/{business_id}/share-phone")

    async def catalog(
        self, business_id: int, *, after: int | None = None, limit: int = 50
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return await self._dict("GET", f"/v1/business/{business_id}/products", params=params)

    async def add_product(self, **product: Any) -> dict[str, Any]:
        return await self._dict("POST", "/v1/business/products", json=product)

    async def update_product(self, product_id: int, **changes: Any) -> dict[str, Any]:
        return await self._dict("PATCH", f"/v1/business/products/{product_id}", json=changes)

    async def delete_product(self, product_id: int) -> None:
        await self.request("DELETE", f"/v1/business/products/{product_id}")

    async def quick_replies(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/v1/business/quick-replies")
        return result

    async def add_quick_reply(self, shortcut: str, text: str) -> dict[str, Any]:
        body = {"shortcut": shortcut, "text": text}
        return await self._dict("POST", "/v1/business/quick-replies", json=body)

    async def labels(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/v1/business/labels")
        return result

    async def add_label(self, name: str, color: str = "#25D366") -> dict[str, Any]:
        return await self._dict("POST", "/v1/business/labels", json={"name": name, "color": color})

    async def label_chat(self, label_id: int, chat: int, on: bool = True) -> None:
        method = "PUT" if on else "DELETE"
        await self.request(method, f"/v1/business/labels/{label_id}/chats/{chat}")

    # consent, blocks, reports, entry points, templates, usage (docs/business-rules.md)
    async def opt_in(
        self, business: int, categories: list[str], source: str
    ) -> list[dict[str, Any]]:
        """Agree to ``categories`` ("marketing", "utility") from a business; ``source`` is
        where (link, qr, website_form, in_chat)."""
        body = {"categories": categories, "source": source}
        result: list[dict[str, Any]] = await self.request(
            "POST", f"/v1/consents/{business}", json=body
        )
        return result

    async def opt_out(
        self, business: int, categories: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Stop: no more messages of these categories (default: all) from a business."""
        body = {"categories": categories or ["marketing", "utility"]}
        result: list[dict[str, Any]] = await self.request(
            "POST", f"/v1/consents/{business}/stop", json=body
        )
        return result

    async def consents(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/v1/consents")
        return result

    async def enter_chat(self, business: int, source: str = "link") -> dict[str, Any]:
        """Opened a business's chat from its short link or QR code (a 72-hour entry point)."""
        return await self._dict("POST", f"/v1/entry/{business}", json={"source": source})

    async def block(self, account: int) -> dict[str, Any]:
        return await self._dict("POST", "/v1/blocks", json={"account": account})

    async def unblock(self, account: int) -> None:
        await self.request("DELETE", f"/v1/blocks/{account}")

    async def blocks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("GET", "/v1/blocks")
        return result

    async def report(
        self,
        account: int,
        reason: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        comment: str = "",
        block: bool = False,
    ) -> dict[str, Any]:
        """Report an account; ``messages`` are the decrypted messages you choose to attach."""
        body = {
            "account": account,
            "reason": reason,
            "messages": messages or [],
            "comment": comment,
            "block": block,
        }
        return await self._dict("POST", "/v1/reports", json=body)

    async def create_template(self, **template: Any) -> dict[str, Any]:
        """A business's template in the Cloud API's shape (name, language, category, ...)."""
        return await self._dict("POST", "/v1/business/templates", json=template)

    async def templates(self, **filters: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request(
            "GET", "/v1/business/templates", params=filters
        )
        return result

    async def usage(self, start: str, end: str) -> dict[str, Any]:
        params = {"start": start, "end": end}
        return await self._dict("GET", "/v1/business/usage", params=params)

    async def billing_account(self) -> dict[str, Any]:
        return await self._dict("GET", "/v1/business/account")

    # media (the bytes are ciphertext: see tresen.client.media)
    async def create_upload(
        self,
        kind: str,
        size: int,
        recipients: list[dict[str, int]] | None = None,
        *,
        keep: bool = False,
    ) -> dict[str, Any]:
        body = {"kind": kind, "size": size, "recipients": recipients or [], "keep": keep}
        result: dict[str, Any] = await self.request("POST", "/v1/media", json=body)
        return result

    async def upload_part(
        self, media_id: str, offset: int, body: AsyncIterable[bytes] | bytes, length: int
    ) -> dict[str, Any]:
        headers = {
            "Upload-Offset": str(offset),
            "Content-Length": str(length),
            "Content-Type": "application/offset+octet-stream",
        }
        result: dict[str, Any] = await self.request(
            "PATCH", f"/v1/media/{media_id}", content=body, headers=headers
        )
        return result

    async def media_info(self, media_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/v1/media/{media_id}/info")
        return result

    async def grant_media(self, media_id: str, recipients: list[dict[str, int]]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/v1/media/{media_id}/grants", json={"recipients": recipients}
        )
        return result

    async def delete_media(self, media_id: str) -> None:
        await self.request("DELETE", f"/v1/media/{media_id}")

    def download_stream(
        self, media_id: str, start: int = 0
    ) -> AbstractAsyncContextManager[httpx.Response]:
        """The blob's response, streaming; from byte ``start`` on (``Range``) if not 0."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        return self.http.stream("GET", f"/v1/media/{media_id}", headers=headers)

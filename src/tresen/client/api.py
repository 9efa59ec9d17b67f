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

    # media (the bytes are ciphertext: see tresen.client.media)
    async def create_upload(
        self, kind: str, size: int, recipients: list[dict[str, int]] | None = None
    ) -> dict[str, Any]:
        body = {"kind": kind, "size": size, "recipients": recipients or []}
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

"""Where verification codes go: the console (default) or an SMS gateway's HTTP webhook."""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

from tresen.errors import Unavailable

log = logging.getLogger("tresen.codes")


class CodeSender(Protocol):
    async def send(self, phone: str, code: str) -> None: ...

    async def aclose(self) -> None:
        """Release what the sender holds (at the relay's shutdown)."""


class ConsoleSender:
    """Prints the code on the relay's console: for development and self-hosting without SMS."""

    async def send(self, phone: str, code: str) -> None:
        log.warning("verification code for %s: %s", phone, code)

    async def aclose(self) -> None:
        return None


class MemorySender:
    """Keeps the codes in memory (``codes[phone]``): for demos, tests and benchmarks, where the
    code is read back by the same program instead of arriving by SMS."""

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}

    async def send(self, phone: str, code: str) -> None:
        self.codes[phone] = code

    async def aclose(self) -> None:
        return None


class WebhookSender:
    """POSTs ``{"to", "code", "text"}`` as JSON to an SMS gateway.

    One client for the relay's life (made on first use, in the running loop): a client per code
    built a TLS context and a connection each time, milliseconds of CPU per code."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def send(self, phone: str, code: str) -> None:
        body = {"to": phone, "code": code, "text": f"Your tresen code: {code}"}
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        try:
            response = await self._client.post(self.url, json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise Unavailable(f"the SMS gateway at {self.url} failed: {exc}; try again") from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def build_sender(kind: str, url: str) -> CodeSender:
    if kind == "webhook":
        if not url:
            raise ValueError("code_sender=webhook needs code_webhook_url")
        return WebhookSender(url)
    return ConsoleSender()

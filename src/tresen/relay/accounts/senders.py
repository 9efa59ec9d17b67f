"""Where verification codes go: the console (default) or an SMS gateway's HTTP webhook."""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

from tresen.errors import Unavailable

log = logging.getLogger("tresen.codes")


class CodeSender(Protocol):
    async def send(self, phone: str, code: str) -> None: ...


class ConsoleSender:
    """Prints the code on the relay's console: for development and self-hosting without SMS."""

    async def send(self, phone: str, code: str) -> None:
        log.warning("verification code for %s: %s", phone, code)


class WebhookSender:
    """POSTs ``{"to", "code", "text"}`` as JSON to an SMS gateway."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout

    async def send(self, phone: str, code: str) -> None:
        body = {"to": phone, "code": code, "text": f"Your tresen code: {code}"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, json=body)
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise Unavailable(f"the SMS gateway at {self.url} failed: {exc}; try again") from exc


def build_sender(kind: str, url: str) -> CodeSender:
    if kind == "webhook":
        if not url:
            raise ValueError("code_sender=webhook needs code_webhook_url")
        return WebhookSender(url)
    return ConsoleSender()

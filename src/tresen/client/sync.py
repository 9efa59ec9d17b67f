"""A blocking facade over the async SDK: an event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from tresen.client import media
from tresen.client.device import AsyncDevice, Credentials
from tresen.protocol.frames import Item

T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Device:
    """Blocking twin of :class:`AsyncDevice`: ``Device.register(...)``, ``send``, ``recv``."""

    def __init__(self, credentials: Credentials) -> None:
        self._loop = _Loop()
        self._async = AsyncDevice(credentials)

    @property
    def credentials(self) -> Credentials:
        return self._async.credentials

    @classmethod
    def request_code(cls, url: str, phone: str) -> dict[str, Any]:
        return asyncio.run(AsyncDevice.request_code(url, phone))

    @classmethod
    def register(cls, url: str, phone: str, code: str, device_name: str = "") -> Device:
        created = asyncio.run(AsyncDevice.register(url, phone, code, device_name))
        return cls(created.credentials)

    def connect(self) -> None:
        self._loop.run(self._async.connect())

    def send(self, to: int, encrypt: Callable[[int], bytes]) -> str:
        return self._loop.run(self._async.send(to, encrypt))

    def recv(self, timeout: float | None = 10.0) -> Item:
        return self._loop.run(self._async.recv(timeout))

    def upload_attachment(
        self,
        source: bytes | str | PathLike[str],
        *,
        kind: media.MediaKind,
        recipients: media.Recipients | None = None,
        progress: media.Progress | None = None,
    ) -> media.Attachment:
        """Encrypt and upload (``progress`` is called from the SDK's loop thread)."""
        return self._loop.run(
            self._async.upload_attachment(
                source, kind=kind, recipients=recipients, progress=progress
            )
        )

    def download_attachment(
        self,
        file: media.EncryptedFile,
        target: str | PathLike[str],
        *,
        progress: media.Progress | None = None,
    ) -> Path:
        """Download, verify and decrypt into ``target`` (created only if the hash matches)."""
        return self._loop.run(self._async.download_attachment(file, target, progress=progress))

    def close(self) -> None:
        self._loop.run(self._async.close())
        self._loop.stop()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

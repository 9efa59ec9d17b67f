"""Which accounts have a device connected to any of many relay nodes, kept in NATS.

A node tells the book when an account gets its first device on this node (``join``) and when
its last device on this node leaves (``leave``); the answers say whether that changed the
account's state for the whole relay, so only then is a presence event published.

One node needs no book (``PresenceService`` counts its own connections). Across nodes
(:class:`NatsBook`) each node keeps one message per account it holds in the
JetStream stream ``<NAME>_PRESENCE`` on ``<name>.online.<account>.<node>`` (one message per
subject, ``ttl`` of life (a minute by default), re-published every third of it); ``leave``
purges it. A node that dies stops refreshing, so its accounts drop out of the book within the
``ttl``; the other nodes then tell their watchers (``PresenceService``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

import nats.js.errors
from nats.js import JetStreamContext, api

log = logging.getLogger("tresen.bus")

#: how long an entry lives without a refresh (a node refreshes its own every third of it)
ENTRY_TTL = 60.0


class PresenceBook(Protocol):
    #: how long a node's entry lives without a refresh (so: after the node died)
    ttl: float

    async def join(self, account: int) -> bool:
        """This node now holds a device of ``account``; True if no node held one before."""
        ...

    async def leave(self, account: int) -> bool:
        """This node holds no device of ``account`` any more; True if no node holds one."""
        ...

    async def online(self, accounts: Sequence[int]) -> set[int]:
        """Those of ``accounts`` that have a device connected to any node."""
        ...


class NatsBook:
    """Many nodes: the book lives in a JetStream stream (see the module docstring)."""

    def __init__(
        self, js: JetStreamContext, name: str, node: str, *, ttl: float = ENTRY_TTL
    ) -> None:
        self.js, self.name, self.node = js, name, node
        self.ttl = ttl  # every node of a relay must use the same: it is the stream's max age
        self.stream = f"{name.upper().replace('-', '_')}_PRESENCE"
        self.mine: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.ensure_stream()
        self._task = asyncio.create_task(self._refresh(), name="tresen-presence-refresh")

    async def ensure_stream(self) -> None:
        config = api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.name}.online.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.MEMORY,
            max_msgs_per_subject=1,
            max_age=self.ttl,
            discard=api.DiscardPolicy.OLD,
        )
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self.js.update_stream(config)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # this node's entries go with it (best effort: they expire anyway)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.js.purge_stream(self.stream, subject=f"{self.name}.online.*.{self.node}"), 2
            )

    def _subject(self, account: int) -> str:
        return f"{self.name}.online.{account}.{self.node}"

    async def _others(self, account: int) -> bool:
        info = await self.js.stream_info(
            self.stream, subjects_filter=f"{self.name}.online.{account}.*"
        )
        subjects = info.state.subjects or {}
        return any(not s.endswith(f".{self.node}") for s in subjects)

    async def join(self, account: int) -> bool:
        self.mine.add(account)
        await self.js.publish(self._subject(account), b"")
        return not await self._others(account)

    async def leave(self, account: int) -> bool:
        self.mine.discard(account)
        await self.js.purge_stream(self.stream, subject=self._subject(account))
        return not await self._others(account)

    async def online(self, accounts: Sequence[int]) -> set[int]:
        gate = asyncio.Semaphore(64)

        async def one(account: int) -> int | None:
            async with gate:
                info = await self.js.stream_info(
                    self.stream, subjects_filter=f"{self.name}.online.{account}.*"
                )
            return account if info.state.subjects else None

        found = await asyncio.gather(*(one(a) for a in dict.fromkeys(accounts)))
        return {a for a in found if a is not None}

    async def _refresh(self) -> None:
        every = self.ttl / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.ensure_stream()  # gone if NATS restarted without its store
                for account in list(self.mine):
                    await self.js.publish(self._subject(account), b"")
            except Exception as exc:
                log.warning("presence refresh failed (%r); retrying in %.0f s", exc, every)


__all__ = ["ENTRY_TTL", "NatsBook", "PresenceBook"]

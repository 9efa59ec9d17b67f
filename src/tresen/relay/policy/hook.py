"""What the envelope service calls per envelope: the policy hook's contract.

Kept apart from :mod:`tresen.relay.policy.gate` so the envelope service depends on this small
protocol only; :data:`OPEN` lets everything through (a relay assembled without the policy).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from tresen.protocol.frames import BizMeta, Item


class EnvelopePolicy(Protocol):
    def screen(self, sender: int, recipient: int, biz: BizMeta | None) -> bool:
        """The synchronous first look (no coroutine on the hot path): raise if refused at once
        (a block); return True if :meth:`check_envelope` must run (business traffic)."""
        ...

    async def check_envelope(
        self, sender: int, recipient: int, biz: BizMeta | None, envelope_id: str
    ) -> str:
        """Raise a TresenError if the policy refuses this 1:1 envelope; else return the pricing
        type of a business message (``regular``, ``free_customer_service``,
        ``free_entry_point``), ``""`` for anything else."""
        ...

    def check_group_send(self, sender: int) -> None:
        """Raise a TresenError if ``sender`` may not send to groups."""
        ...

    def on_delivered(self, account: int, acked: Iterable[Item]) -> None:
        """``account``'s device acknowledged ``acked``: meter what needs metering."""
        ...

    def blocked(self, by: int, who: int) -> bool:
        """Has account ``by`` blocked account ``who``? (No typing, presence or receipts then.)"""
        ...


class OpenPolicy:
    def screen(self, sender: int, recipient: int, biz: BizMeta | None) -> bool:
        return False

    async def check_envelope(
        self, sender: int, recipient: int, biz: BizMeta | None, envelope_id: str
    ) -> str:
        return ""

    def check_group_send(self, sender: int) -> None:
        return None

    def on_delivered(self, account: int, acked: Iterable[Item]) -> None:
        return None

    def blocked(self, by: int, who: int) -> bool:
        return False


OPEN = OpenPolicy()

__all__ = ["OPEN", "EnvelopePolicy", "OpenPolicy"]

"""After a business's standing changes (created, renamed, reviewed), tell the rest of the relay
and the business's own devices — always after the commit.

- every node's policy gate gets a ``PolicyChanged`` on the ``relay`` topic (``business`` when
  an account becomes one, ``standing`` when its name or badge changed), so cached business
  state (the verified flag shown on a first contact) is reloaded;
- each device of the business gets a ``notice`` queue item ``{"type": "business_review",
  "subject": "verification" | "display_name", "status", "reason", "verified"}``, so every
  device shows the operator's decision without polling.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from tresen.bus import Bus
from tresen.bus.events import PolicyChanged
from tresen.relay.accounts.service import DeviceDirectory
from tresen.relay.envelopes.writer import NewItem, WriteOp, Writer

_encoder = msgspec.json.Encoder()


class BusinessNotifier:
    def __init__(self, bus: Bus, writer: Writer, directory: DeviceDirectory) -> None:
        self.bus, self.writer, self.directory = bus, writer, directory

    def business_created(self, account_id: int) -> None:
        self.bus.publish("relay", PolicyChanged(what="business", a=account_id))

    def standing_changed(self, account_id: int) -> None:
        self.bus.publish("relay", PolicyChanged(what="standing", a=account_id))

    async def reviewed(self, account_id: int, notice: dict[str, Any]) -> None:
        """The operator decided: reload the gates, then queue the notice for every device."""
        self.standing_changed(account_id)
        body = _encoder.encode({"type": "business_review", **notice})
        envelope = f"review-{uuid.uuid4().hex}"
        devices = await self.directory.devices_of(account_id)
        items = [NewItem(d, "notice", envelope, account_id, 0, body) for d in devices]
        if items:
            await self.writer.submit_wait(WriteOp(items=items))

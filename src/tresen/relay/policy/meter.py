"""The policy's buffered writes: window refreshes, meter rows and deliveries, one transaction
per flush, never one per message.

A send delivered before its flush is inserted already delivered, priced and charged. Later
deliveries are one ``executemany`` UPDATE (only the first device's acknowledgement changes the
row) and the charges are taken by one ``UPDATE ... RETURNING``, so each row is charged once even
when several relay nodes flush at the same time. After a restart a delivery is priced from what
the meter row recorded at send time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from tresen.relay.billing.ratecard import RateCard
from tresen.relay.policy import store
from tresen.relay.policy.state import Thread
from tresen.storage.engine import Database, Txn

Key = tuple[int, str, int]  # (business, envelope id, person)
RECENT = 100_000
MAX_PENDING = 1_000_000


class Meter:
    def __init__(self, db: Database) -> None:
        self.db = db
        #: (business, person) threads whose windows changed
        self.dirty: set[tuple[int, int]] = set()
        self.sends: list[store.SendRow] = []
        #: (business, envelope id, person, acknowledged at)
        self.delivered: list[tuple[int, str, int, int]] = []
        #: key -> (category, country, pricing type) until delivered
        self.pending: dict[Key, tuple[str, str, str]] = {}
        #: delivered lately: another device of the same person acknowledging it costs nothing
        self.recent: OrderedDict[Key, None] = OrderedDict()
        self.flushes = 0

    def record_send(self, row: store.SendRow) -> None:
        """A business envelope passed the gate (a resent id is recorded once)."""
        key = (row[0], row[1], row[2])
        if key not in self.pending:
            self.pending[key] = (row[4], row[7], row[6])
            self.sends.append(row)

    async def flush(
        self, threads: Mapping[tuple[int, int], Thread], rates: RateCard
    ) -> dict[int, int]:
        """Write everything buffered in one transaction; return what each business was charged.

        On failure everything stays buffered for the next flush."""
        dirty, self.dirty = self.dirty, set()
        rows: list[store.ThreadRow] = []
        for business, person in dirty:
            t = threads.get((business, person))
            if t is not None:
                rows.append(
                    (
                        business,
                        person,
                        t.first_contact_at,
                        int(t.person_wrote),
                        t.last_inbound_at,
                        t.entry_until,
                        t.entry_source,
                    )
                )
        sends, self.sends = self.sends, []
        delivered, self.delivered = self.delivered, []
        if not (rows or sends or delivered):
            return {}
        meter, local, later = self._price_fresh(sends, delivered, rates)
        pending, recent = self.pending, self.recent

        async def write(txn: Txn) -> dict[int, int]:
            if rows:
                await store.upsert_threads(txn, rows)
            if meter:
                await store.insert_sends(txn, meter)
            priced: list[store.DeliveryRow] = []
            for business, envelope_id, person, at in later:
                key = (business, envelope_id, person)
                meta = pending.get(key)
                if meta is None and key in recent:
                    continue
                if meta is None:  # sent before a restart: the meter row has what it needs
                    row = await store.send_meta(txn, business, envelope_id, person)
                    if row is None:
                        continue  # already delivered to another device, or not a metered send
                    meta = (row[0], row[1], row[2])
                category, country, kind_of_price = meta
                price = rates.price(category, country) if kind_of_price == "regular" else 0
                priced.append((at, price, rates.currency, business, envelope_id, person))
            if priced:
                await store.mark_delivered(txn, priced)
            charges = await store.take_charges(txn) if priced else {}
            for business, amount in local.items():
                charges[business] = charges.get(business, 0) + amount
            for business, amount in charges.items():
                if amount:
                    await store.charge(txn, business, amount)
            return charges

        try:
            charges = await self.db.run_interaction("policy_flush", write)
        except BaseException:
            self.dirty |= dirty
            self.sends[:0] = sends
            self.delivered[:0] = delivered
            raise
        self.flushes += 1
        for business, envelope_id, person, _ in delivered:
            pending.pop((business, envelope_id, person), None)
            recent[(business, envelope_id, person)] = None
        while len(recent) > RECENT:
            recent.popitem(last=False)
        if len(pending) > MAX_PENDING:  # never delivered (expired): priced from the store
            for key in list(pending)[: MAX_PENDING // 10]:
                del pending[key]
        return charges

    @staticmethod
    def _price_fresh(
        sends: list[store.SendRow], delivered: list[tuple[int, str, int, int]], rates: RateCard
    ) -> tuple[list[store.MeterRow], dict[int, int], list[tuple[int, str, int, int]]]:
        """Meter rows for this flush's sends (priced if already delivered), the charges for
        those, and the deliveries of sends written by an earlier flush."""
        fresh: dict[Key, store.MeterRow] = {(r[0], r[1], r[2]): (*r, None, 0, "", 0) for r in sends}
        local: dict[int, int] = {}
        later: list[tuple[int, str, int, int]] = []
        for business, envelope_id, person, at in delivered:
            key = (business, envelope_id, person)
            row = fresh.get(key)
            if row is None:
                later.append((business, envelope_id, person, at))
            elif row[10] is None:  # the first of the person's devices to acknowledge it
                price = rates.price(row[4], row[7]) if row[6] == "regular" else 0
                fresh[key] = (*row[:10], at, price, rates.currency, 1)
                local[business] = local.get(business, 0) + price
        return list(fresh.values()), local, later


__all__ = ["Meter"]

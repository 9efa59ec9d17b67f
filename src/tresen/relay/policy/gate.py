"""The policy gate: the one check the envelope service makes per send, and metering per ack.

:meth:`PolicyGate.check_envelope` runs on every 1:1 send. Person-to-person traffic costs two
set lookups and no database round trip: the business account ids and every block are held in
memory (loaded at start, updated by :class:`~tresen.bus.events.PolicyChanged` after each
commit, from any node). Business traffic is checked against per-business and per-(business,
person) state loaded once on first use and then kept in memory; what the checks change
(windows, sends, deliveries, charges) is buffered and written by one flush every
``policy_flush_seconds``, never by the send itself.

The order of checks for a business's envelope (docs/business-rules.md): block (131026, so a
block is not revealed), throughput (130429), pair rate (131056), then for free-form messages
the window (131047), for templates the approved template (132001 / 132015 / 132016 / 131009),
consent (131050 / opt_in_required) and the messaging limit (131048), and last the balance for a
billable message (131042).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
import phonenumbers

from tresen.bus import Bus
from tresen.bus.events import PolicyChanged
from tresen.config import Settings
from tresen.errors import InvalidRequest, LimitExceeded, PolicyRefused
from tresen.protocol.codes import Code
from tresen.protocol.frames import BizMeta, Item
from tresen.relay.accounts.service import DeviceDirectory
from tresen.relay.billing.ratecard import Rate, RateCard, packaged_rate_card
from tresen.relay.clock import Clock
from tresen.relay.envelopes.writer import NewItem, WriteOp, Writer
from tresen.relay.policy import store
from tresen.relay.policy.meter import Meter
from tresen.relay.policy.state import (
    DAY_MS,
    ENTRY_WINDOW_MS,
    Bucket,
    PricingType,
    Thread,
    pricing_type,
    tier_limit,
)
from tresen.storage.engine import Database, Txn

log = logging.getLogger("tresen.policy")

SERVICE = BizMeta()
MAX_THREADS = 200_000
_json = msgspec.json.Encoder()


@dataclass(slots=True)
class TemplateState:
    category: str
    status: str
    paused_until: int = 0


@dataclass(slots=True)
class BizState:
    """One business's standing, kept in memory while it sends."""

    tier: int
    quality: str
    throughput: int
    #: balance + credit: billable sends are refused once this is not positive
    available: int
    name: str
    verified: bool
    bucket: Bucket
    templates: dict[tuple[str, str], TemplateState] = field(default_factory=dict)
    #: person -> last business-initiated send outside the window (the moving 24 hours)
    reached: dict[int, int] = field(default_factory=dict)
    pairs: dict[int, Bucket] = field(default_factory=dict)
    #: changed in the store (template review, tier, balance): reload before the next send
    stale: bool = False


def country_of(phone: str | None) -> str:
    if not phone:
        return "ZZ"
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return "ZZ"
    return region or "ZZ"


class PolicyGate:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        settings: Settings,
        clock: Clock,
        writer: Writer,
        directory: DeviceDirectory,
    ) -> None:
        self.db, self.bus, self.settings, self.clock = db, bus, settings, clock
        self.writer, self.directory = writer, directory
        self.businesses: set[int] = set()
        #: (blocker, blocked)
        self.blocks: set[tuple[int, int]] = set()
        self.biz: dict[int, BizState] = {}
        self.threads: OrderedDict[tuple[int, int], Thread] = OrderedDict()
        self.rates = RateCard(packaged_rate_card())
        #: buffered writes: windows, meter rows, deliveries
        self.meter = Meter(db)
        self.rates_stale = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._seen_businesses = 0
        self._resync: asyncio.Future[None] | None = None
        self._sub = bus.subscribe("relay", self.on_event)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        async def load(txn: Txn) -> tuple[list[int], list[tuple[int, int]], list[Rate]]:
            businesses = await store.business_ids(txn)
            return businesses, await store.all_blocks(txn), await store.rate_card(txn)

        businesses, blocks, rates = await self.db.run_interaction("policy_load", load, write=False)
        self.businesses = set(businesses)
        self.blocks = set(blocks)
        if rates:
            self.rates = RateCard(rates)
        self._seen_businesses = self.clock.now_ms() - 60_000
        self._task = asyncio.create_task(self._flush_loop(), name="tresen-policy-flush")

    async def close(self) -> None:
        self._sub.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.policy_flush_seconds)
            try:
                await self.flush()
                await self._poll_businesses()
            except Exception:
                log.exception("policy flush failed; will retry")

    async def _poll_businesses(self) -> None:
        """Pick up businesses created on any node (besides the ``business`` event)."""
        since = self._seen_businesses

        async def read(txn: Txn) -> list[tuple[int, int]]:
            return await store.businesses_since(txn, since)

        for account, created in await self.db.run_interaction("new_businesses", read, write=False):
            self.businesses.add(account)
            self._seen_businesses = max(self._seen_businesses, created - 60_000)

    # ------------------------------------------------------------ the hot path

    def screen(self, sender: int, recipient: int, biz: BizMeta | None) -> bool:
        """Person-to-person traffic ends here, without a coroutine: refused if blocked, else
        nothing to do. True: business traffic, :meth:`check_envelope` decides."""
        if (recipient, sender) in self.blocks and sender != recipient:
            raise PolicyRefused("message undeliverable", code=Code.MESSAGE_UNDELIVERABLE)
        return biz is not None or sender in self.businesses or recipient in self.businesses

    async def check_envelope(
        self, sender: int, recipient: int, biz: BizMeta | None, envelope_id: str
    ) -> str:
        """Refuse a 1:1 envelope the policy forbids (raises), else record what it changes and
        return a business message's pricing type (``""`` for other traffic)."""
        if sender == recipient:
            return ""
        if (recipient, sender) in self.blocks:
            raise PolicyRefused("message undeliverable", code=Code.MESSAGE_UNDELIVERABLE)
        if sender in self.businesses:
            pricing = await self._business_send(sender, recipient, biz or SERVICE, envelope_id)
            if recipient in self.businesses:  # business to business: the recipient's window
                await self._person_wrote(recipient, sender)
            return pricing
        if biz is not None:
            if not await self._is_business(sender):
                raise InvalidRequest("only business accounts mark envelopes with 'biz'")
            return await self._business_send(sender, recipient, biz, envelope_id)
        if recipient in self.businesses:
            await self._person_wrote(recipient, sender)
        return ""

    def blocked(self, by: int, who: int) -> bool:
        return (by, who) in self.blocks

    def check_group_send(self, sender: int) -> None:
        """Businesses reach people one by one: consent and windows are per person."""
        if sender in self.businesses:
            raise PolicyRefused(
                "a business sends to each person (1:1), not to a group: consent and the "
                "customer-service window are per person",
                code=Code.BUSINESS_GROUP_SEND,
            )

    def on_delivered(self, account: int, acked: Iterable[Item]) -> None:
        """The recipient acknowledged these items: meter the business messages among them."""
        now = -1
        for item in acked:
            if item.kind == "message" and item.sender in self.businesses and item.sender != account:
                if now < 0:
                    now = self.clock.now_ms()
                self.meter.delivered.append((item.sender, item.id, account, now))

    # ------------------------------------------------------------ business rules

    async def _is_business(self, account: int) -> bool:
        async def read(txn: Txn) -> bool:
            return await store.is_business(txn, account)

        if await self.db.run_interaction("is_business", read, write=False):
            self.businesses.add(account)
            return True
        return False

    async def _person_wrote(self, business: int, person: int) -> None:
        thread = await self._thread(business, person)
        now = self.clock.now_ms()
        if not thread.first_contact_at:
            thread.first_contact_at = now
        thread.person_wrote = True
        thread.last_inbound_at = now
        self.meter.dirty.add((business, person))

    async def _business_send(
        self, business: int, person: int, biz: BizMeta, envelope_id: str
    ) -> PricingType:
        now = self.clock.now_ms()
        self._check_meta(biz)
        state = await self._biz(business)
        wait = state.bucket.take(now)
        if wait:
            raise LimitExceeded(
                f"more than {state.throughput} messages a second from this business",
                code=Code.THROUGHPUT_EXCEEDED,
                retry_after=round(wait, 3),
            )
        thread = await self._thread(business, person)
        pair = state.pairs.get(person)
        if pair is None:
            if len(state.pairs) > 10_000:
                state.pairs = {p: b for p, b in state.pairs.items() if not b.full(now)}
            pair = state.pairs[person] = Bucket(
                self.settings.business_pair_per_second, self.settings.business_pair_burst, now
            )
        wait = pair.take(now)
        if wait:
            raise LimitExceeded(
                "too many messages to this person; wait before sending more",
                code=Code.PAIR_RATE_LIMITED,
                retry_after=round(wait, 3),
            )
        window = thread.window_open(now)
        initiated = False
        if biz.kind == "service":
            if not window:
                raise PolicyRefused(
                    "more than 24 hours have passed since the person last wrote: "
                    "send an approved template",
                    code=Code.REENGAGEMENT_REQUIRED,
                )
        else:
            self._check_template(state, biz, now)
            self._check_consent(thread, biz.category)
            initiated = not window
            if initiated:
                self._check_limit(state, person, now)
        kind_of_price = pricing_type(biz.kind, biz.category, thread, now)
        if kind_of_price == "regular" and state.available <= 0:
            if self.rates.price(biz.category, thread.country) > 0:
                raise PolicyRefused(
                    "the business's prepaid balance and credit are used up: top up to send "
                    "billable messages (service replies still flow)",
                    code=Code.PAYMENT_REQUIRED,
                )
        # accepted: record what it changes
        if initiated:
            state.reached[person] = now
        if not thread.first_contact_at:
            thread.first_contact_at = now
            self.meter.dirty.add((business, person))
            await self._first_contact(business, state, person, envelope_id, now)
        if biz.kind == "template":
            thread.last_template = biz.template
        self.meter.record_send(
            (
                business,
                envelope_id,
                person,
                biz.kind,
                biz.category,
                biz.template,
                kind_of_price,
                thread.country,
                int(initiated),
                now,
            )
        )
        return kind_of_price

    @staticmethod
    def _check_meta(biz: BizMeta) -> None:
        if biz.kind == "service":
            if biz.category != "SERVICE" or biz.template:
                raise PolicyRefused(
                    "a service message has category SERVICE and no template",
                    code=Code.INVALID_PARAMETER,
                )
        elif biz.category == "SERVICE" or not biz.template or not biz.language:
            raise PolicyRefused(
                "a template message names its template, language and category "
                "(MARKETING, UTILITY or AUTHENTICATION)",
                code=Code.INVALID_PARAMETER,
            )

    @staticmethod
    def _check_template(state: BizState, biz: BizMeta, now: int) -> None:
        template = state.templates.get((biz.template, biz.language))
        if template is None or template.status not in ("APPROVED", "PAUSED", "DISABLED"):
            raise PolicyRefused(
                f"no approved template {biz.template!r} in language {biz.language!r}",
                code=Code.TEMPLATE_NOT_FOUND,
            )
        if template.status == "DISABLED":
            raise PolicyRefused(
                f"template {biz.template!r} is disabled", code=Code.TEMPLATE_DISABLED
            )
        if template.status == "PAUSED" and now < template.paused_until:
            raise PolicyRefused(
                f"template {biz.template!r} is paused for low quality",
                code=Code.TEMPLATE_PAUSED,
                paused_until=template.paused_until,
            )
        if template.category != biz.category:
            raise PolicyRefused(
                f"template {biz.template!r} is {template.category}, not {biz.category}",
                code=Code.INVALID_PARAMETER,
            )

    @staticmethod
    def _check_consent(thread: Thread, category: str) -> None:
        allowed = thread.may_initiate(category)
        if allowed:
            return
        if category == "MARKETING":
            raise PolicyRefused(
                "this person has not opted in to marketing from this business"
                if allowed is None
                else "this person opted out of marketing from this business",
                code=Code.MARKETING_OPTED_OUT,
                opted_out=allowed is False,
            )
        raise PolicyRefused(
            "this person has not opted in to messages from this business"
            if allowed is None
            else "this person opted out of messages from this business",
            code=Code.OPT_IN_REQUIRED,
            opted_out=allowed is False,
        )

    def _check_limit(self, state: BizState, person: int, now: int) -> None:
        limit = tier_limit(state.tier, self.settings.business_tier_limits)
        if limit is None or person in state.reached or len(state.reached) < limit:
            return
        cutoff = now - DAY_MS
        state.reached = {p: t for p, t in state.reached.items() if t > cutoff}
        if person in state.reached or len(state.reached) < limit:
            return
        raise PolicyRefused(
            f"the messaging limit of {limit} people reached outside the customer-service "
            "window per 24 hours is used up",
            code=Code.MESSAGING_LIMIT_REACHED,
            limit=limit,
        )

    async def _first_contact(
        self, business: int, state: BizState, person: int, envelope_id: str, now: int
    ) -> None:
        """Tell the person's devices: a business writes first; show Block / Report / Continue."""
        body = _json.encode(
            {
                "type": "business_first_contact",
                "business": business,
                "display_name": state.name,
                "verified": state.verified,
                "envelope": envelope_id,
                "actions": ["block", "report", "continue"],
            }
        )
        devices = await self.directory.devices_of(person)
        items = [NewItem(d, "notice", envelope_id, business, 0, body) for d in devices]
        if items:
            self.writer.submit(WriteOp(items=items))

    # ------------------------------------------------------------ state, loaded on first use

    async def _biz(self, business: int) -> BizState:
        state = self.biz.get(business)
        if state is None or state.stale:
            state = await self.load_business(business)
        return state

    async def load_business(self, business: int) -> BizState:
        now = self.clock.now_ms()
        since = now - DAY_MS

        async def load(txn: Txn) -> BizState:
            row = await store.business_policy(txn, business)
            tier, quality, throughput, balance, credit = (
                (int(row[0]), row[1], int(row[2]), int(row[3]), row[4])
                if row
                else (0, "GREEN", 0, 0, None)
            )
            card = await store.business_card(txn, business) or ("", False)
            per_second = min(
                throughput or self.settings.business_throughput_per_second,
                self.settings.business_max_throughput_per_second,
            )
            credit_limit = self.settings.business_credit_limit_minor if credit is None else credit
            state = BizState(
                tier=tier,
                quality=quality,
                throughput=per_second,
                available=balance + int(credit_limit),
                name=card[0],
                verified=card[1],
                bucket=Bucket(per_second, per_second, now),
            )
            for name, language, category, status, paused_until in await store.templates_of(
                txn, business
            ):
                state.templates[(name, language)] = TemplateState(
                    category, status, int(paused_until)
                )
            state.reached = dict(await store.reached_since(txn, business, since))
            return state

        state = await self.db.run_interaction("policy_business", load, write=False)
        old = self.biz.get(business)
        if old is not None:  # a reload keeps the live counters
            state.pairs = old.pairs
            if old.throughput == state.throughput:
                state.bucket = old.bucket
            state.reached = old.reached | state.reached
        self.biz[business] = state
        return state

    async def _thread(self, business: int, person: int) -> Thread:
        key = (business, person)
        thread = self.threads.get(key)
        if thread is not None:
            self.threads.move_to_end(key)
            return thread

        async def load(txn: Txn) -> Thread:
            row = await store.thread(txn, business, person)
            thread = Thread(country=country_of(await store.phone_of(txn, person)))
            if row is not None:
                thread.first_contact_at = int(row[0])
                thread.person_wrote = bool(row[1])
                thread.last_inbound_at = int(row[2])
                thread.entry_until = int(row[3])
                thread.entry_source = row[4]
                thread.stored = True
                thread.last_template = await store.last_template(txn, business, person)
            thread.consent = dict(await store.consents_of(txn, business, person))
            return thread

        thread = await self.db.run_interaction("policy_thread", load, write=False)
        found = self.threads.get(key)  # loaded meanwhile by another send
        if found is not None:
            return found
        self.threads[key] = thread
        if len(self.threads) > MAX_THREADS:
            self._evict()
        return thread

    def _evict(self) -> None:
        for key in list(self.threads)[: MAX_THREADS // 10]:
            if key not in self.meter.dirty:
                del self.threads[key]

    # ------------------------------------------------------------ changes from the services

    def on_event(self, event: object) -> None:
        if not isinstance(event, PolicyChanged):
            return
        match event.what:
            case "business":
                self.businesses.add(event.a)
            case "block":
                self.blocks.add((event.a, event.b))
            case "unblock":
                self.blocks.discard((event.a, event.b))
            case "consent":
                thread = self.threads.get((event.a, event.b))
                if thread is not None:
                    thread.consent[event.category] = event.on
            case "entry":
                thread = self.threads.get((event.a, event.b))
                if thread is not None:
                    thread.entry_until = max(thread.entry_until, event.until)
                    thread.entry_source = event.source
                    opened = event.until - ENTRY_WINDOW_MS
                    thread.first_contact_at = thread.first_contact_at or opened
            case "template" | "standing":
                state = self.biz.get(event.a)
                if state is not None:
                    state.stale = True  # reloaded before its next send, counters kept
            case "rates":
                self.rates_stale = True
            case "resync":  # events may have been missed (a bus outage): reload everything
                self._resync = asyncio.ensure_future(self.do_resync())
            case _:
                pass

    async def do_resync(self) -> None:
        """Reload business ids, blocks and the rate card; forget cached threads and standing."""

        async def load(txn: Txn) -> tuple[list[int], list[tuple[int, int]]]:
            return await store.business_ids(txn), await store.all_blocks(txn)

        await self.flush()  # what this node buffered goes to the store first
        businesses, blocks = await self.db.run_interaction("policy_resync", load, write=False)
        self.businesses = set(businesses)
        self.blocks = set(blocks)
        self.rates_stale = True
        for state in self.biz.values():
            state.stale = True
        self.threads.clear()
        log.info("policy state reloaded: %d businesses, %d blocks", len(businesses), len(blocks))

    # ------------------------------------------------------------ the flush

    async def flush(self) -> None:
        """Write what the checks changed, in one transaction; deliveries are priced here."""
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        if self.rates_stale:
            self.rates_stale = False
            rows = await self.db.run_interaction("rate_card", store.rate_card, write=False)
            self.rates = RateCard(rows) if rows else RateCard(packaged_rate_card())
        charges = await self.meter.flush(self.threads, self.rates)
        for business, amount in charges.items():
            state = self.biz.get(business)
            if state is not None:
                state.available -= amount

    # ------------------------------------------------------------ reads for the services

    async def thread_of(self, business: int, person: int) -> Thread:
        return await self._thread(business, person)

    def last_template(self, business: int, person: int) -> str | None:
        """The last template sent to ``person``, if this gate holds their thread (else None)."""
        thread = self.threads.get((business, person))
        return thread.last_template if thread is not None else None

    async def notify(self, account: int, notice_id: str, body: dict[str, object]) -> None:
        """Queue a ``notice`` item (JSON ``body``) for every device of ``account``, after the
        commit it reports (template status, quality changes for a business's gateway)."""
        devices = await self.directory.devices_of(account)
        data = _json.encode(body)
        items = [NewItem(d, "notice", notice_id[:64], 0, 0, data) for d in devices]
        if items:
            self.writer.submit(WriteOp(items=items))

    def note_business(self, account: int) -> None:
        """A service saw ``account`` is a business: every gate learns it now, not at the poll."""
        if account not in self.businesses:
            self.publish(PolicyChanged(what="business", a=account))

    def publish(self, event: PolicyChanged) -> None:
        """Services call this after their commit; every node's gate (this one too) applies it."""
        self.bus.publish("relay", event)


__all__ = ["BizState", "PolicyGate", "TemplateState", "country_of"]

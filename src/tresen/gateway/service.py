"""The gateway's rules: one :class:`Line` per business number (its SecureDevice), sending Cloud
API messages encrypted to every device of a person, and turning what arrives (messages,
receipts) into webhook events in the outbox.

Naming as in the relay: ``access_*`` resolves with a permission check, ``check_*`` validates,
``do_*`` acts. Webhook events are written in the transaction that records the message and the
worker is woken only after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tresen.client.business import BusinessAPI
from tresen.client.device import AsyncDevice, Credentials
from tresen.client.secure import Message, Receipt, RelayNotice, SecureDevice, Undecryptable
from tresen.errors import TresenError
from tresen.gateway import store
from tresen.gateway.batch import GroupWriter
from tresen.gateway.cloudapi.errors import GraphError, from_relay, unknown_node
from tresen.gateway.media import MediaRecord, MediaService
from tresen.gateway.models import Number, Person
from tresen.gateway.watch import do_poll
from tresen.gateway.webhooks import payloads
from tresen.gateway.webhooks.outbox import Outbox, RetryPolicy
from tresen.storage.engine import Database, Row, Txn

log = logging.getLogger("tresen.gateway")
STATUS_RANK = {"accepted": 0, "sent": 1, "delivered": 2, "read": 3, "failed": 4}
TEMPLATE_CACHE_SECONDS = 10.0
RECIPIENT_CACHE_SECONDS = 30.0
RECIPIENT_CACHE_SIZE = 50_000
DAY_MS = 86_400_000
#: tries to handle one received event (waits of 0.5, 1, 2, 4, then 8 s: about 50 s in all)
HANDLING_ATTEMPTS = 10
#: received events taken at once (receipts among them share one transaction)
RECEIVE_BATCH = 200
RECEIPT_STATUS = {"delivered": "delivered", "read": "read", "expired": "failed"}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def number_from_row(row: Row) -> Number:
    return Number(
        id=row[0],
        waba_id=row[1],
        relay_url=row[2],
        account_id=int(row[3]),
        device_id=int(row[4]),
        device_token=row[5],
        phone=row[6],
        token_hash=row[7],
        app_secret=row[8],
        verify_token=row[9],
        webhook_url=row[10],
        pin_hash=row[11],
        registered_at=int(row[12]),
        created_at=int(row[13]),
    )


def crypto_paths(data_dir: Path, number_id: str) -> tuple[Path, Path]:
    return data_dir / f"{number_id}.crypto", data_dir / f"{number_id}.key"


@dataclass(eq=False)
class Line:
    """A business number at work: its encrypted device, relay client and state in memory."""

    number: Number
    secure: SecureDevice
    biz: BusinessAPI
    task: asyncio.Task[None] | None = None
    #: envelope ids being sent; receipts for them wait until the ``sent`` status is written
    inflight: dict[str, list[Receipt]] = field(default_factory=dict)
    templates: dict[tuple[str, str], tuple[float, dict[str, Any]]] = field(default_factory=dict)
    #: the relay's business view (greeting and away settings, ``away_now``), briefly cached
    business: tuple[float, dict[str, Any]] | None = None
    #: one comparison with the relay's templates and quality at a time (watch.py)
    watching: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: recipients as sent in ``to`` -> (until, person): a send needs no lookup when cached
    recipients: dict[str, tuple[float, Person]] = field(default_factory=dict)

    @property
    def api(self) -> Any:
        return self.secure.device.api


@dataclass(slots=True)
class GatewaySettings:
    data_dir: Path
    public_url: str = ""
    #: how often new numbers and rotated tokens are read from the database
    refresh_seconds: float = 5.0
    #: how often template reviews and the quality rating are read from the relay
    watch_seconds: float = 30.0
    #: inbound texts that opt the person out of this business's messages (case-insensitive)
    stop_keywords: frozenset[str] = frozenset({"STOP", "UNSUBSCRIBE", "STOPP", "ARRET"})
    #: SQLite only: ``normal`` trades power-loss durability for speed (as the relay's setting)
    sqlite_synchronous: str = "full"
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Gateway:
    def __init__(
        self,
        db: Database,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.lines: dict[str, Line] = {}
        self.tokens: dict[str, str] = {}
        self.wabas: dict[str, str] = {}
        self.writes = GroupWriter(db)
        self.outbox = Outbox(db, self.number_of, settings.retry, clock=clock, writes=self.writes)
        self.media = MediaService(db, clock=clock)
        self.base_url = settings.public_url
        self._watcher: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.refresh_numbers()
        await self.outbox.start()
        self._watcher = asyncio.create_task(self._watch_numbers(), name="tresen-gateway-numbers")

    async def refresh_numbers(self) -> None:
        """Open numbers created since (``tresen business create``) and take rotated tokens."""
        rows = await self.db.run_interaction("gw_numbers", store.numbers, write=False)
        for row in rows:
            number = number_from_row(row)
            line = self.lines.get(number.id)
            if line is None:
                await self.open_line(number)
            elif line.number.token_hash != number.token_hash:
                self.tokens.pop(line.number.token_hash, None)
                line.number.token_hash = number.token_hash
                self.tokens[number.token_hash] = number.id

    async def _watch_numbers(self) -> None:
        polled = 0.0
        while True:
            await asyncio.sleep(self.settings.refresh_seconds)
            try:
                await self.refresh_numbers()
            except Exception as exc:  # keep serving the numbers already open
                log.warning("reading the gateway's numbers failed: %s", exc)
            if self.clock() - polled < self.settings.watch_seconds:
                continue
            polled = self.clock()
            try:
                await self.do_prune()
            except Exception as exc:
                log.warning("pruning the gateway's database failed: %s", exc)
            for line in list(self.lines.values()):
                try:
                    await do_poll(self, line)
                except Exception as exc:
                    log.warning("number %s: polling the relay failed: %s", line.number.id, exc)

    async def open_line(self, number: Number) -> Line:
        """Start serving ``number`` (once: a second call returns the open line)."""
        async with self._opening:
            line = self.lines.get(number.id)
            return line if line is not None else await self._open_line(number)

    async def _open_line(self, number: Number) -> Line:
        path, key_file = crypto_paths(self.settings.data_dir, number.id)
        credentials = Credentials(
            url=number.relay_url,
            account_id=number.account_id,
            device_id=number.device_id,
            token=number.device_token,
            phone=number.phone,
        )
        secure = SecureDevice.open(AsyncDevice(credentials), path, key_file=key_file)
        await secure.start()
        line = Line(number=number, secure=secure, biz=BusinessAPI(secure.device.api))
        line.task = asyncio.create_task(self._receive(line), name=f"tresen-gateway-{number.id}")
        self.lines[number.id] = line
        self.tokens[number.token_hash] = number.id
        self.wabas[number.waba_id] = number.id
        return line

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.outbox.close()
        await self.writes.close()
        for line in self.lines.values():
            if line.task is not None:
                line.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await line.task
            await line.secure.close()
        await self.media.close()

    async def do_prune(self, now_ms: int | None = None) -> tuple[int, int]:
        """Forget delivered webhook events after the retention, and expired media (with
        their relay blobs); returns (events, media) removed."""
        now = self.now_ms() if now_ms is None else now_ms
        before = now - int(self.settings.retry.retention_seconds * 1000)
        events = await self.db.run_interaction(
            "gw_prune_outbox", lambda txn: store.prune_outbox(txn, before)
        )
        expired = await self.db.run_interaction(
            "gw_expired_media", lambda txn: store.expired_media(txn, now, 500), write=False
        )
        removed = 0
        for row in expired:
            line = self.lines.get(str(row[1]))
            record = MediaRecord.from_row(row)
            if line is None:
                continue
            with contextlib.suppress(GraphError):
                await self.media.do_delete(line.api, record)
                removed += 1
        return int(events), removed

    async def do_set_webhook(self, line: Line, url: str, verify_token: str) -> None:
        number = line.number

        async def write(txn: Txn) -> None:
            await store.set_webhook(txn, number.id, url, verify_token)

        await self.db.run_interaction("gw_set_webhook", write)
        number.webhook_url, number.verify_token = url, verify_token
        self.outbox.wake()

    def number_of(self, number_id: str) -> Number | None:
        line = self.lines.get(number_id)
        return line.number if line else None

    # ------------------------------------------------------------ access

    def access_token(self, token: str) -> Line:
        number_id = self.tokens.get(token_hash(token)) if token else None
        if number_id is None:
            raise GraphError(190, "Invalid OAuth access token - Cannot parse access token")
        return self.lines[number_id]

    def access_phone(self, token: str, node: str) -> Line:
        line = self.access_token(token)
        if node != line.number.id:
            raise unknown_node(node)
        return line

    def access_waba(self, token: str, node: str) -> Line:
        line = self.access_token(token)
        if node != line.number.waba_id:
            raise unknown_node(node)
        return line

    # ------------------------------------------------------------ people

    async def person(self, line: Line, account: int, phone: str = "") -> Person:
        """This business's view of ``account`` (scoped id; the phone if known)."""
        number = line.number.id
        row = await self.db.run_interaction(
            "gw_person", lambda txn: store.person(txn, number, account), write=False
        )
        if row is not None and (row[2] or not phone):
            return Person(account_id=account, scoped_id=row[1], phone=row[2], name=row[3])
        try:
            scoped = await line.biz.person(account)
            profile = await line.biz.profile(account)
        except TresenError as exc:
            raise from_relay(exc) from exc
        found = Person(
            account_id=account,
            scoped_id=str(scoped["scoped_id"]),
            phone=phone or str(scoped.get("phone") or ""),
            name=str(profile.get("display_name") or ""),
        )

        async def write(txn: Txn) -> None:
            await store.upsert_person(
                txn, number, account, found.scoped_id, found.phone, found.name
            )

        await self.db.run_interaction("gw_person_put", write)
        return found

    async def resolve(self, line: Line, to: str) -> Person:
        """A recipient given as a business-scoped id (``TR.…``) or a phone number (briefly
        cached: a phone the person shares later shows within ``RECIPIENT_CACHE_SECONDS``)."""
        now = self.clock()
        cached = line.recipients.get(to)
        if cached is not None and cached[0] > now:
            return cached[1]
        person = await self._resolve(line, to)
        if len(line.recipients) >= RECIPIENT_CACHE_SIZE:
            line.recipients = {k: v for k, v in line.recipients.items() if v[0] > now}
            if len(line.recipients) >= RECIPIENT_CACHE_SIZE:
                line.recipients.clear()
        line.recipients[to] = (now + RECIPIENT_CACHE_SECONDS, person)
        return person

    async def _resolve(self, line: Line, to: str) -> Person:
        number = line.number.id
        to = to.strip()
        if "." in to:
            row = await self.db.run_interaction(
                "gw_person_scoped", lambda txn: store.person_by_scoped(txn, number, to), write=False
            )
            if row is not None:
                return Person(account_id=int(row[0]), scoped_id=row[1], phone=row[2], name=row[3])
            try:
                found = await line.biz.person_by_scoped_id(to)
            except TresenError as exc:
                raise GraphError(131026, f"no person has the id {to} for this business") from exc
            return await self.person(line, int(found["account_id"]))
        digits = "".join(c for c in to if c.isdigit())
        if not digits or len(digits) > 15 or not to.lstrip("+").replace(" ", "").isdigit():
            raise GraphError(131009, f"to: {to!r} is neither a phone number nor a user id")
        phone = "+" + digits
        row = await self.db.run_interaction(
            "gw_person_phone", lambda txn: store.person_by_phone(txn, number, phone), write=False
        )
        if row is not None:
            return Person(account_id=int(row[0]), scoped_id=row[1], phone=row[2], name=row[3])
        try:
            found = await line.biz.lookup_phone(phone)
        except TresenError as exc:
            raise GraphError(131026, f"{to} is not on tresen ({exc.message})") from exc
        return await self.person(line, int(found["account_id"]), phone)

    # ------------------------------------------------------------ templates

    async def template(self, line: Line, name: str, language: str) -> dict[str, Any]:
        now = self.clock()
        cached = line.templates.get((name, language))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = await line.biz.templates(name=name)
        except TresenError as exc:
            raise from_relay(exc) from exc
        for template in found:
            if template["name"] == name and template["language"] == language:
                line.templates[(name, language)] = (now + TEMPLATE_CACHE_SECONDS, template)
                return template
        raise GraphError(
            132001, f"template name ({name}) does not exist in the translation ({language})"
        )

    # ------------------------------------------------------------ receiving

    async def _receive(self, line: Line) -> None:
        try:  # what the relay's notices are compared against from now on
            await do_poll(self, line)
        except Exception as exc:
            log.warning("number %s: reading templates and quality failed: %s", line.number.id, exc)
        while True:
            try:
                events = await line.secure.recv_many(RECEIVE_BATCH, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("number %s: receiving failed (%s); retrying", line.number.id, exc)
                await asyncio.sleep(1)
                continue
            # the events stay in the device's store until the next recv_many(): a crash brings
            # them again; a failure (the database restarting) is retried for about 50 s.
            # Receipts that arrived one after another share one transaction; the order of the
            # events (and so of their webhooks) stays as it came.
            receipts: list[Receipt] = []
            for event in [*events, None]:
                if isinstance(event, Receipt):
                    receipts.append(event)
                    continue
                if receipts:
                    await self._handle(line, "receipts", self.on_receipts, line, receipts)
                    receipts = []
                match event:
                    case Message():
                        await self._handle(line, "Message", self._on_message, line, event)
                    case Undecryptable():
                        await self._handle(
                            line, "Undecryptable", self._on_undecryptable, line, event
                        )
                    case RelayNotice(type="template_status" | "quality_update"):
                        # the webhook now, not at the next poll
                        await self._handle(line, "RelayNotice", do_poll, self, line)

    async def _handle(
        self, line: Line, what: str, handle: Callable[..., Awaitable[object]], *args: Any
    ) -> None:
        for attempt in range(HANDLING_ATTEMPTS):
            try:
                await handle(*args)
                return
            except Exception:
                last = attempt == HANDLING_ATTEMPTS - 1
                log.exception(
                    "number %s: handling %s failed%s",
                    line.number.id,
                    what,
                    "; giving up on it" if last else "; retrying",
                )
                if not last:
                    await asyncio.sleep(min(0.5 * 2**attempt, 8.0))

    async def _on_message(self, line: Line, msg: Message) -> None:
        from tresen.gateway.content import inbound, wamid

        if msg.sender == line.number.account_id or msg.group:
            return  # a copy of our own message or a group (businesses are not in groups)
        person = await self.person(line, msg.sender)
        body = inbound(msg.content, person.address, line.number.digits)
        kind = str(body["type"])
        media = body.get(kind)
        if isinstance(media, dict) and "mime_type" in media:
            info = msg.content.get("info") if isinstance(msg.content.get("info"), dict) else {}
            assert isinstance(info, dict)
            record = await self.media.do_record_inbound(
                line.api,
                line.number.id,
                msg.content["file"],
                media["mime_type"],
                str(info.get("filename", "")),
            )
            media["id"] = record.id
            media["sha256"] = record.sha256
        body["id"] = wamid(msg.id)
        body["timestamp"] = str(msg.ts // 1000)
        number = line.number.id
        previous = await self.db.run_interaction(
            "gw_last_inbound",
            lambda txn: store.last_inbound(txn, number, person.account_id),
            write=False,
        )
        fresh = await self._record_inbound(line, person, msg.id, kind, body, msg.ts)
        if not fresh:
            return  # a redelivery: already reported and answered
        if kind == "text":
            await self._check_stop(line, person, str(body["text"]["body"]))
        if kind != "reaction":
            from tresen.gateway.autoreply import do_auto_replies

            await do_auto_replies(self, line, person, previous, msg.ts)

    async def _check_stop(self, line: Line, person: Person, text: str) -> None:
        """A STOP keyword opts the person out at the relay at once (docs/business-rules.md);
        the message still reaches the business's webhook."""
        word = text.strip().strip(".!").upper()
        if word not in self.settings.stop_keywords:
            return
        try:
            await line.biz.report_opt_out(person.account_id, word[:32])
        except TresenError as exc:
            log.warning("number %s: reporting an opt-out failed: %s", line.number.id, exc)

    async def _on_undecryptable(self, line: Line, item: Undecryptable) -> None:
        from tresen.gateway.content import wamid

        if item.sender == line.number.account_id:
            return
        person = await self.person(line, item.sender)
        body = {
            "from": person.address,
            "id": wamid(item.id),
            "timestamp": str(item.ts // 1000),
            "type": "unsupported",
            "errors": [
                {
                    "code": 131051,
                    "title": "Message type unknown",
                    "message": "Message type unknown",
                    "error_data": {"details": f"could not be decrypted: {item.reason}"},
                }
            ],
        }
        await self._record_inbound(line, person, item.id, "unsupported", body, item.ts)

    async def _record_inbound(
        self, line: Line, person: Person, id: str, kind: str, body: dict[str, Any], ts: int
    ) -> bool:
        """Record a received message with its webhook event; False if it was known."""
        number = line.number

        async def write(txn: Txn) -> bool:
            fresh = not await store.has_message(txn, number.id, id)
            if fresh:
                await store.add_message(
                    txn, number.id, id, "in", person.account_id, kind, "received", "", "", ts
                )
                event = payloads.message(number, person, body)
                await self.outbox.add_in(txn, number.id, f"{number.id}:{person.account_id}", event)
            return fresh

        fresh: bool = await self.writes.run(write)
        self.outbox.wake()
        return fresh

    async def on_receipts(self, line: Line, receipts: list[Receipt]) -> None:
        """Move outbound messages forward (never back) and queue their status webhooks, in
        one transaction; a receipt for a message still being sent waits in ``inflight``."""
        due = []
        for receipt in receipts:
            waiting = line.inflight.get(receipt.id)
            if waiting is not None:
                waiting.append(receipt)
            else:
                due.append((receipt.id, RECEIPT_STATUS[receipt.kind], receipt.ts))
        if not due:
            return
        number = line.number

        async def write(txn: Txn) -> bool:
            changed = False
            for envelope_id, status, ts in due:
                changed = (
                    await self.status_in(txn, number, envelope_id, status, ts, None) or changed
                )
            return changed

        if await self.writes.run(write):
            self.outbox.wake()

    async def do_record_sent(
        self,
        line: Line,
        person: Person,
        envelope_id: str,
        kind: str,
        category: str,
        opaque: str,
        status: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        pricing: str = "",
    ) -> None:
        """Record an outbound message and its first status (``sent`` or ``failed``) at once.

        ``pricing``: what the relay's billing applies (told with ``sent``); without it (a
        failed send, an older relay) the gateway's own view of the rules stands in."""
        number, now = line.number, self.now_ms()

        async def write(txn: Txn) -> None:
            kind_of_price = pricing
            if not kind_of_price:
                wrote = await store.last_inbound(txn, number.id, person.account_id)
                window = wrote is not None and now - wrote < DAY_MS
                kind_of_price = payloads.pricing_type(category, window)
            # written at its first status at once (it was ``accepted`` only in memory)
            await store.add_message(
                txn, number.id, envelope_id, "out", person.account_id, kind, status,
                category, opaque, now, kind_of_price,
            )  # fmt: skip
            await self._status_event(
                txn, number, person, envelope_id, status, now, category, kind_of_price, opaque,
                errors,
            )  # fmt: skip

        await self.writes.run(write)
        self.outbox.wake()

    async def status_in(
        self,
        txn: Txn,
        number: Number,
        envelope_id: str,
        status: str,
        ts: int,
        errors: list[dict[str, Any]] | None,
    ) -> bool:
        row = await store.outbound_with_person(txn, number.id, envelope_id)
        if row is None or STATUS_RANK.get(status, 0) <= STATUS_RANK.get(str(row[0]), 0):
            return False
        person = Person(account_id=int(row[4]), scoped_id=row[5], phone=row[6], name=row[7])
        await store.set_message_status(txn, number.id, envelope_id, status)
        await self._status_event(
            txn, number, person, envelope_id, status, ts, str(row[1]), str(row[3]), str(row[2]),
            errors,
        )  # fmt: skip
        return True

    async def _status_event(
        self,
        txn: Txn,
        number: Number,
        person: Person,
        envelope_id: str,
        status: str,
        ts: int,
        category: str,
        pricing: str,
        opaque: str,
        errors: list[dict[str, Any]] | None,
    ) -> None:
        """Queue the status webhook of an outbound message (in the caller's transaction)."""
        from tresen.gateway.content import wamid

        if status == "failed" and not errors:
            errors = [
                GraphError(131026, "the message expired before it was delivered").webhook_error()
            ]
        event = payloads.status(
            number,
            person,
            message_id=wamid(envelope_id),
            status=status,
            ts_ms=ts,
            category=category,
            pricing=pricing,
            opaque=opaque,
            errors=errors,
        )
        await self.outbox.add_in(txn, number.id, f"{number.id}:{person.account_id}", event)

"""What people decide about who may reach them: opt-in and opt-out per business and category,
blocks, reports to the operator, and entering a business's chat from its link or QR code.

Every change commits first, then is announced as a :class:`PolicyChanged` event, which every
node's policy gate applies to its memory at once (docs/business-rules.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tresen.bus.events import PolicyChanged
from tresen.errors import Conflict, InvalidRequest, LimitExceeded, NotFound
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.admin import audit
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.business.service import BusinessService, scoped_id_in
from tresen.relay.clock import Clock
from tresen.relay.consent import store
from tresen.relay.consent.models import (
    Blocked,
    BusinessOptOut,
    ConsentEvent,
    ConsentRecord,
    EntryWindow,
    OptIn,
    OptOut,
    Report,
    ReportCreate,
    ReportedMessage,
    ReportPage,
    ReportResolve,
)
from tresen.relay.policy import store as policy_store
from tresen.relay.policy.gate import PolicyGate
from tresen.relay.policy.state import DAY_MS, ENTRY_WINDOW_MS
from tresen.storage.engine import Database, Row, Txn

_messages = msgspec.json.Decoder(list[ReportedMessage])
#: reports one person may file a day (the operator's queue is not a place to flood)
REPORTS_PER_DAY = 20


def _consent(row: Row) -> ConsentRecord:
    return ConsentRecord(
        business=int(row[0]),
        person=int(row[1]),
        category=row[2],
        opted_in=bool(row[3]),
        source=row[4],
        changed_at=int(row[5]),
    )


def _report(row: Row) -> Report:
    return Report(
        id=int(row[0]),
        reporter=int(row[1]),
        reported=int(row[2]),
        reason=row[3],
        comment=row[4],
        messages=_messages.decode(row[5]),
        blocked=bool(row[6]),
        status=row[7],
        resolution=row[8],
        note=row[9],
        resolved_by=row[10],
        created_at=int(row[11]),
        resolved_at=int(row[12]) if row[12] is not None else None,
    )


class ConsentService:
    def __init__(
        self, db: Database, clock: Clock, gate: PolicyGate, businesses: BusinessService
    ) -> None:
        self.db, self.clock, self.gate, self.businesses = db, clock, gate, businesses

    async def _check_business(self, account_id: int) -> None:
        if account_id not in self.gate.businesses:
            await self.businesses.access_business(account_id)  # raises not_a_business
            self.gate.note_business(account_id)

    async def _signal(self, txn: Txn, business: int, person: int, kind: str, at: int) -> None:
        """Negative feedback on a business, with the last template the person got from it."""
        if business in self.gate.businesses:
            template = self.gate.last_template(business, person)
            if template is None:  # not in memory: the store has every flushed send
                template = await policy_store.last_template(txn, business, person)
            await policy_store.add_signal(txn, business, person, kind, template, at)

    # ------------------------------------------------------------ opt-in and opt-out

    async def do_opt_in(self, who: Principal, business: int, data: OptIn) -> list[ConsentRecord]:
        """The person agrees to messages of these categories from this business."""
        if business == who.account_id:
            raise InvalidRequest("you cannot opt in to yourself")
        await self._check_business(business)
        now = self.clock.now_ms()
        categories = sorted(set(data.categories))

        async def apply(txn: Txn) -> None:
            for category in categories:
                await store.set_consent(
                    txn, business, who.account_id, category, True, data.source, "person", now
                )

        await self.db.run_interaction("opt_in", apply)
        for category in categories:
            self.gate.publish(
                PolicyChanged(what="consent", a=business, b=who.account_id, category=category)
            )
        return await self.access_consents(who, business)

    async def do_opt_out(self, who: Principal, business: int, data: OptOut) -> list[ConsentRecord]:
        """The person's "stop": takes effect for the next envelope, on every node."""
        await self._check_business(business)
        await self._opt_out(business, who.account_id, data.categories, "app", "person")
        return await self.access_consents(who, business)

    async def do_business_opt_out(
        self, who: Principal, data: BusinessOptOut
    ) -> list[ConsentRecord]:
        """The business's gateway received a STOP keyword from a person."""
        await self._check_business(who.account_id)
        person = await self.check_person(who, data.person, data.user_id)
        source = f"keyword:{data.keyword.strip().upper()}"
        await self._opt_out(who.account_id, person, data.categories, source, "business")
        return await self.access_business_consents(who, person, 0, 10)

    async def check_person(self, who: Principal, person: int | None, user_id: str | None) -> int:
        """The account a business names by account id or by its scoped user id (exactly one)."""
        if (person is None) == (user_id is None):
            raise InvalidRequest("name the person by 'person' (account id) or 'user_id', not both")
        if user_id is not None:
            found = await self.businesses.person_for(who.account_id, user_id)
            if found is None:
                raise NotFound(
                    f"no person {user_id!r} for this business", code=Code.UNKNOWN_RECIPIENT
                )
            return found
        assert person is not None
        return person

    async def _opt_out(
        self, business: int, person: int, categories: Sequence[str], source: str, actor: str
    ) -> None:
        now = self.clock.now_ms()
        wanted = sorted(set(categories))

        async def apply(txn: Txn) -> None:
            if not await store.account_exists(txn, person):
                raise NotFound(f"no account {person}", code=Code.UNKNOWN_RECIPIENT)
            for category in wanted:
                await store.set_consent(txn, business, person, category, False, source, actor, now)
            await self._signal(txn, business, person, "opt_out", now)

        await self.db.run_interaction("opt_out", apply)
        for category in wanted:
            self.gate.publish(
                PolicyChanged(what="consent", a=business, b=person, category=category, on=False)
            )

    async def access_consents(
        self, who: Principal, business: int | None = None
    ) -> list[ConsentRecord]:
        rows = await self.db.run_interaction(
            "consents_of_person",
            lambda txn: store.consents_of_person(txn, who.account_id),
            write=False,
        )
        found = [_consent(r) for r in rows]
        return [c for c in found if business is None or c.business == business]

    async def access_business_consents(
        self, who: Principal, person: int | None, after: int, limit: int
    ) -> list[ConsentRecord]:
        await self._check_business(who.account_id)
        now = self.clock.now_ms()

        async def read(txn: Txn) -> list[ConsentRecord]:
            found = []
            for row in await store.consents_of_business(txn, who.account_id, person, after, limit):
                record = _consent(row)
                record.user_id = await scoped_id_in(txn, who.account_id, record.person, now)
                found.append(record)
            return found

        # writes the scoped id of a person the business had not seen yet
        return await self.db.run_interaction("consents_of_business", read)

    async def access_consent_history(self, business: int, person: int) -> list[ConsentEvent]:
        rows = await self.db.run_interaction(
            "consent_history",
            lambda txn: store.consent_history(txn, business, person),
            write=False,
        )
        return [ConsentEvent(r[0], bool(r[1]), r[2], r[3], int(r[4])) for r in rows]

    # ------------------------------------------------------------ entry points

    async def do_enter(self, who: Principal, business: int, source: str) -> EntryWindow:
        """The person opened the business's chat from its link or QR: a free 72-hour window."""
        await self._check_business(business)
        now = self.clock.now_ms()
        until = now + ENTRY_WINDOW_MS

        async def apply(txn: Txn) -> None:
            await policy_store.upsert_threads(
                txn, [(business, who.account_id, now, 0, 0, until, source)]
            )

        await self.db.run_interaction("enter_chat", apply)
        self.gate.publish(
            PolicyChanged(what="entry", a=business, b=who.account_id, until=until, source=source)
        )
        return EntryWindow(business=business, person=who.account_id, source=source, until=until)

    # ------------------------------------------------------------ blocks

    async def do_block(self, who: Principal, account: int) -> Blocked:
        if account == who.account_id:
            raise InvalidRequest("you cannot block yourself")
        now = self.clock.now_ms()

        async def apply(txn: Txn) -> None:
            if not await store.account_exists(txn, account):
                raise NotFound(f"no account {account}", code=Code.UNKNOWN_RECIPIENT)
            if await store.add_block(txn, who.account_id, account, now):
                await self._signal(txn, account, who.account_id, "block", now)

        await self.db.run_interaction("block", apply)
        self.gate.publish(PolicyChanged(what="block", a=who.account_id, b=account))
        return Blocked(account=account, created_at=now)

    async def do_unblock(self, who: Principal, account: int) -> None:
        async def apply(txn: Txn) -> bool:
            return await store.remove_block(txn, who.account_id, account)

        if not await self.db.run_interaction("unblock", apply):
            raise NotFound(f"account {account} is not blocked")
        self.gate.publish(PolicyChanged(what="unblock", a=who.account_id, b=account))

    async def access_blocks(self, who: Principal) -> list[Blocked]:
        rows = await self.db.run_interaction(
            "blocks_of", lambda txn: store.blocks_of(txn, who.account_id), write=False
        )
        return [Blocked(account=a, created_at=t) for a, t in rows]

    # ------------------------------------------------------------ reports

    async def do_report(self, who: Principal, data: ReportCreate) -> Report:
        """Queue a report for the operator with exactly what the reporter chose to attach."""
        if data.account == who.account_id:
            raise InvalidRequest("you cannot report yourself")
        now = self.clock.now_ms()
        foreign = [m.id for m in data.messages if m.sender not in (data.account, who.account_id)]
        if foreign:
            raise InvalidRequest(
                "attach only messages of this chat (sent by you or the reported account): "
                f"{foreign}"
            )
        messages = msgspec.json.encode(data.messages).decode()

        async def apply(txn: Txn) -> Report:
            if not await store.account_exists(txn, data.account):
                raise NotFound(f"no account {data.account}", code=Code.UNKNOWN_RECIPIENT)
            if await store.reports_since(txn, who.account_id, now - DAY_MS) >= REPORTS_PER_DAY:
                raise LimitExceeded(
                    f"at most {REPORTS_PER_DAY} reports a day; blocking works at once",
                    retry_after=3600,
                )
            report_id = await store.add_report(
                txn,
                who.account_id,
                data.account,
                data.reason,
                data.comment,
                messages,
                data.block,
                now,
            )
            await self._signal(txn, data.account, who.account_id, "report", now)
            if data.block and await store.add_block(txn, who.account_id, data.account, now):
                await self._signal(txn, data.account, who.account_id, "block", now)
            row = await store.report(txn, report_id)
            assert row is not None
            return _report(row)

        report = await self.db.run_interaction("report", apply)
        if data.block:
            self.gate.publish(PolicyChanged(what="block", a=who.account_id, b=data.account))
        return report

    async def access_reports(
        self, status: str | None, before: int | None, limit: int
    ) -> ReportPage:
        rows = await self.db.run_interaction(
            "reports",
            lambda txn: store.reports(txn, status, before or 2**62, limit + 1),
            write=False,
        )
        page = [_report(r) for r in rows[:limit]]
        return ReportPage(reports=page, next=page[-1].id if len(rows) > limit else None)

    async def access_report(self, report_id: int) -> Report:
        row = await self.db.run_interaction(
            "report", lambda txn: store.report(txn, report_id), write=False
        )
        if row is None:
            raise NotFound(f"no report {report_id}")
        return _report(row)

    async def do_resolve_report(
        self, admin: AdminPrincipal, report_id: int, data: ReportResolve
    ) -> Report:
        now = self.clock.now_ms()

        async def apply(txn: Txn) -> Report:
            if await store.report(txn, report_id) is None:
                raise NotFound(f"no report {report_id}")
            if not await store.resolve_report(
                txn, report_id, data.resolution, data.note, admin.name, now
            ):
                raise Conflict(
                    f"report {report_id} is already resolved", code=Code.ALREADY_REVIEWED
                )
            await audit.record(
                txn,
                admin,
                "report.resolve",
                f"report:{report_id}",
                {"resolution": data.resolution, "note": data.note},
                at=now,
            )
            row = await store.report(txn, report_id)
            assert row is not None
            return _report(row)

        return await self.db.run_interaction("resolve_report", apply)

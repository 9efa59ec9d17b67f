"""Business rules: becoming a business, the profile and hours, the greeting and away settings,
verification with the operator's review, display-name approval, and business-scoped user ids.

``access_*`` read with a permission check, ``check_*`` validate, ``do_*`` change state. Every
operator action writes its audit row in the same transaction (:func:`admin.audit.record`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import msgspec

from tresen.config import Settings
from tresen.errors import Conflict, InvalidRequest, NotFound
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.business import proof, rules, store
from tresen.relay.business.models import (
    AwaySettings,
    Business,
    BusinessCreate,
    BusinessHours,
    BusinessProfile,
    BusinessUpdate,
    GreetingSettings,
    Person,
    PhoneShare,
    Verification,
    VerificationApply,
)
from tresen.relay.business.notify import BusinessNotifier
from tresen.relay.business.store import BusinessRecord
from tresen.relay.clock import Clock
from tresen.storage.engine import Database, Txn

REVIEW_FILTERS = {
    "pending": "display_name_status = 'pending' OR account_id IN "
    "(SELECT account_id FROM business_verifications WHERE status = 'pending')",
    "verification_pending": "account_id IN "
    "(SELECT account_id FROM business_verifications WHERE status = 'pending')",
    "name_pending": "display_name_status = 'pending'",
    "verified": "verified = 1",
    "all": "1 = 1",
}


def not_a_business(account_id: int) -> NotFound:
    return NotFound(
        f"account {account_id} is not a business (create one with POST /v1/business)",
        code=Code.NOT_A_BUSINESS,
    )


def new_scoped_id() -> str:
    """An opaque business-scoped user id, shaped like the Cloud API's ``user_id``."""
    return f"TR.{secrets.randbelow(10**20):020d}"


async def scoped_id_in(txn: Txn, business_id: int, person_id: int, now: int) -> str:
    """The stable scoped id of ``person_id`` for ``business_id``, created on first use."""
    found = await store.scoped_person(txn, business_id, person_id)
    if found is None:
        await store.add_scoped_person(txn, business_id, person_id, new_scoped_id(), now)
        found = await store.scoped_person(txn, business_id, person_id)
        assert found is not None
    return found[0]


def _hours_of(record: BusinessRecord) -> BusinessHours:
    return msgspec.json.decode(record.hours_json, type=BusinessHours)


def _away_of(record: BusinessRecord) -> AwaySettings:
    if not record.away_json:
        return AwaySettings()
    return msgspec.json.decode(record.away_json, type=AwaySettings)


class BusinessService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        notifier: BusinessNotifier | None = None,
    ) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        #: tells the policy gates and the business's devices, after each commit
        self.notifier = notifier

    # ------------------------------------------------------------ lookups for other features

    async def access_business(self, account_id: int) -> BusinessRecord:
        """The business row (``.verified`` is the badge); ``not_a_business`` if there is none."""
        found = await self.db.run_interaction(
            "get_business", lambda txn: store.get_business(txn, account_id), write=False
        )
        if found is None:
            raise not_a_business(account_id)
        return found

    async def is_verified(self, account_id: int) -> bool | None:
        """True/False for a business, None for an account that is not one."""
        return await self.db.run_interaction(
            "business_verified", lambda txn: store.is_verified(txn, account_id), write=False
        )

    async def scoped_id(self, business_id: int, person_id: int) -> str:
        now = self.clock.now_ms()
        return await self.db.run_interaction(
            "scoped_id", lambda txn: scoped_id_in(txn, business_id, person_id, now)
        )

    async def person_for(self, business_id: int, scoped_id: str) -> int | None:
        """The account behind a scoped id, for that business only (None if unknown)."""
        found = await self.db.run_interaction(
            "person_by_scoped_id",
            lambda txn: store.person_by_scoped_id(txn, business_id, scoped_id),
            write=False,
        )
        return found[0] if found else None

    # ------------------------------------------------------------ views

    def profile_view(self, record: BusinessRecord, base_url: str) -> BusinessProfile:
        hours = _hours_of(record)
        return BusinessProfile(**self._profile_fields(record, base_url, hours))

    def _profile_fields(
        self, record: BusinessRecord, base_url: str, hours: BusinessHours
    ) -> dict[str, Any]:
        return {
            "account_id": record.account_id,
            "display_name": record.display_name,
            "display_name_status": record.display_name_status,
            "verified": record.verified,
            "slug": record.slug,
            "short_link": f"{base_url}/b/{record.slug}",
            "about": record.about,
            "address": record.address,
            "description": record.description,
            "email": record.email,
            "websites": msgspec.json.decode(record.websites_json, type=list[str]),
            "vertical": record.vertical,
            "photo": record.photo,
            "hours": hours,
            "open_now": rules.open_now(hours, self.clock.now_ms()),
        }

    def verification_view(self, row: store.VerificationRow) -> Verification:
        (vid, account, legal, reg, domain, status, reason, token, method, checked, ok) = row[:11]
        return Verification(
            id=int(vid),
            account_id=int(account),
            legal_name=legal,
            registration_number=reg,
            domain=domain,
            status=status,
            reason=reason,
            proof_token=token,
            proof_url=proof.proof_url(domain, self.settings),
            proof_dns_name=proof.dns_name(domain.partition(":")[0]),
            proof_dns_value=proof.dns_value(token),
            proof_ok=bool(ok),
            proof_method=method,
            proof_checked_at=checked,
            created_at=int(row[11]),
            decided_at=row[12],
        )

    async def _own(self, txn: Txn, account_id: int, base_url: str) -> Business:
        record = await store.get_business(txn, account_id)
        if record is None:
            raise not_a_business(account_id)
        history = await store.verifications(txn, account_id)
        hours = _hours_of(record)
        greeting = (
            msgspec.json.decode(record.greeting_json, type=GreetingSettings)
            if record.greeting_json
            else GreetingSettings()
        )
        away = _away_of(record)
        return Business(
            **self._profile_fields(record, base_url, hours),
            display_name_reason=record.display_name_reason,
            greeting=greeting,
            away=away,
            away_now=rules.away_now(away, hours, self.clock.now_ms()),
            verification=self.verification_view(history[-1]) if history else None,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    # ------------------------------------------------------------ the business itself

    async def do_create(self, who: Principal, data: BusinessCreate, base_url: str) -> Business:
        now = self.clock.now_ms()
        name = rules.check_text(
            "display_name", data.display_name, rules.MAX_DISPLAY_NAME, required=True
        )
        record = BusinessRecord(
            account_id=who.account_id,
            slug=rules.check_slug(data.slug) if data.slug is not None else "",
            display_name=name,
            display_name_status="pending",
            display_name_reason=None,
            about=rules.check_text("about", data.about, rules.MAX_ABOUT),
            address=rules.check_text("address", data.address, rules.MAX_ADDRESS),
            description=rules.check_text("description", data.description, rules.MAX_DESCRIPTION),
            email=rules.check_email(data.email),
            websites_json=msgspec.json.encode(rules.check_websites(data.websites)).decode(),
            vertical=rules.check_vertical(data.vertical),
            photo=data.photo,
            timezone="UTC",
            hours_json=msgspec.json.encode(BusinessHours(mode="by_appointment")).decode(),
            greeting_json=None,
            away_json=None,
            verified=False,
            verified_at=None,
            created_at=now,
            updated_at=now,
        )

        async def create(txn: Txn) -> Business:
            if await store.get_business(txn, who.account_id) is not None:
                raise Conflict("this account is already a business", code=Code.BUSINESS_EXISTS)
            if record.slug:
                if await store.slug_taken(txn, record.slug):
                    raise Conflict(f"the short link {record.slug!r} is taken", code=Code.SLUG_TAKEN)
            else:
                suffix = 0
                while await store.slug_taken(txn, slug := rules.slug_from_name(name, suffix)):
                    suffix = suffix + 1 if suffix else 2
                record.slug = slug
            if not await store.insert_business(txn, record):  # a concurrent create won
                if await store.get_business(txn, who.account_id) is not None:
                    raise Conflict("this account is already a business", code=Code.BUSINESS_EXISTS)
                raise Conflict(f"the short link {record.slug!r} is taken", code=Code.SLUG_TAKEN)
            return await self._own(txn, who.account_id, base_url)

        created = await self.db.run_interaction("create_business", create)
        if self.notifier is not None:
            self.notifier.business_created(who.account_id)
        return created

    async def access_own(self, who: Principal, base_url: str) -> Business:
        return await self.db.run_interaction(
            "own_business", lambda txn: self._own(txn, who.account_id, base_url), write=False
        )

    async def access_profile(self, account_id: int, base_url: str) -> BusinessProfile:
        record = await self.access_business(account_id)
        return self.profile_view(record, base_url)

    async def access_profile_by_slug(self, slug: str, base_url: str) -> BusinessProfile:
        record = await self.db.run_interaction(
            "business_by_slug",
            lambda txn: store.business_by_slug(txn, slug.strip().lower()),
            write=False,
        )
        if record is None:
            raise NotFound(f"no business has the short link {slug!r}", code=Code.NOT_A_BUSINESS)
        return self.profile_view(record, base_url)

    async def do_update(self, who: Principal, data: BusinessUpdate, base_url: str) -> Business:
        changes: dict[str, Any] = {}
        if data.about is not msgspec.UNSET:
            changes["about"] = rules.check_text("about", data.about, rules.MAX_ABOUT)
        if data.address is not msgspec.UNSET:
            changes["address"] = rules.check_text("address", data.address, rules.MAX_ADDRESS)
        if data.description is not msgspec.UNSET:
            changes["description"] = rules.check_text(
                "description", data.description, rules.MAX_DESCRIPTION
            )
        if data.email is not msgspec.UNSET:
            changes["email"] = rules.check_email(data.email)
        if data.websites is not msgspec.UNSET:
            websites = rules.check_websites(data.websites)
            changes["websites_json"] = msgspec.json.encode(websites).decode()
        if data.vertical is not msgspec.UNSET:
            changes["vertical"] = rules.check_vertical(data.vertical)
        if data.photo is not msgspec.UNSET:
            changes["photo"] = data.photo
        slug = rules.check_slug(data.slug) if data.slug is not msgspec.UNSET else None
        name = (
            rules.check_text(
                "display_name", data.display_name, rules.MAX_DISPLAY_NAME, required=True
            )
            if data.display_name is not msgspec.UNSET
            else None
        )
        now = self.clock.now_ms()

        async def update(txn: Txn) -> Business:
            record = await store.get_business(txn, who.account_id)
            if record is None:
                raise not_a_business(who.account_id)
            if slug is not None and slug != record.slug:
                if await store.slug_taken(txn, slug, who.account_id):
                    raise Conflict(f"the short link {slug!r} is taken", code=Code.SLUG_TAKEN)
                changes["slug"] = slug
            if name is not None and (
                name != record.display_name or record.display_name_status == "rejected"
            ):
                # a new name goes back to review, and the badge waits for it
                changes.update(
                    display_name=name,
                    display_name_status="pending",
                    display_name_reason=None,
                    verified=False,
                    verified_at=None,
                )
            changes["updated_at"] = now
            await store.update_business(txn, who.account_id, changes)
            return await self._own(txn, who.account_id, base_url)

        updated = await self.db.run_interaction("update_business", update)
        if self.notifier is not None and "display_name" in changes:
            self.notifier.standing_changed(who.account_id)  # the name and badge gates show
        return updated

    async def _set_json(
        self,
        who: Principal,
        column: str,
        build: Callable[[BusinessRecord], msgspec.Struct],
        base_url: str,
    ) -> Business:
        """Validate against the current row and save, in one transaction (so the hours and the
        away schedule that depends on them can never be saved inconsistent)."""
        now = self.clock.now_ms()

        async def save(txn: Txn) -> Business:
            record = await store.get_business(txn, who.account_id)
            if record is None:
                raise not_a_business(who.account_id)
            value = build(record)
            changes = {column: msgspec.json.encode(value).decode(), "updated_at": now}
            if isinstance(value, BusinessHours):
                changes["timezone"] = value.timezone
            await store.update_business(txn, who.account_id, changes)
            return await self._own(txn, who.account_id, base_url)

        return await self.db.run_interaction(f"set_business_{column}", save)

    async def do_set_hours(self, who: Principal, hours: BusinessHours, base_url: str) -> Business:
        hours = rules.check_hours(hours)

        def build(record: BusinessRecord) -> BusinessHours:
            away = _away_of(record)
            if away.enabled:  # the away schedule may depend on the hours
                rules.check_away(away, hours)
            return hours

        return await self._set_json(who, "hours_json", build, base_url)

    async def do_set_greeting(
        self, who: Principal, greeting: GreetingSettings, base_url: str
    ) -> Business:
        checked = rules.check_greeting(greeting)
        return await self._set_json(who, "greeting_json", lambda _: checked, base_url)

    async def do_set_away(self, who: Principal, away: AwaySettings, base_url: str) -> Business:
        return await self._set_json(
            who, "away_json", lambda record: rules.check_away(away, _hours_of(record)), base_url
        )

    # ------------------------------------------------------------ verification (the business)

    async def do_apply(self, who: Principal, data: VerificationApply) -> Verification:
        domain = rules.check_domain(
            data.domain, allow_loopback=self.settings.domain_proof_allow_loopback_http
        )
        legal = data.legal_name.strip()
        registration = data.registration_number.strip()
        if not legal or not registration:
            raise InvalidRequest(
                "legal_name and registration_number must not be blank",
                code=Code.INVALID_BUSINESS_PROFILE,
                field="legal_name" if not legal else "registration_number",
            )
        now = self.clock.now_ms()
        token = "tv_" + secrets.token_urlsafe(24)

        async def apply(txn: Txn) -> Verification:
            if await store.get_business(txn, who.account_id) is None:
                raise not_a_business(who.account_id)
            history = await store.verifications(txn, who.account_id)
            if history and history[-1][5] == "pending":
                raise Conflict(
                    "a verification application is already waiting for review",
                    code=Code.VERIFICATION_PENDING,
                )
            await store.add_verification(
                txn, who.account_id, legal, registration, domain, token, now
            )
            return self.verification_view((await store.verifications(txn, who.account_id))[-1])

        return await self.db.run_interaction("apply_verification", apply)

    async def access_verification(self, who: Principal) -> Verification:
        async def read(txn: Txn) -> Verification:
            if await store.get_business(txn, who.account_id) is None:
                raise not_a_business(who.account_id)
            history = await store.verifications(txn, who.account_id)
            if not history:
                raise NotFound("no verification application yet: apply with POST")
            return self.verification_view(history[-1])

        return await self.db.run_interaction("own_verification", read, write=False)

    # ------------------------------------------------------------ people

    async def access_person(self, who: Principal, person_id: int) -> Person:
        now = self.clock.now_ms()

        async def read(txn: Txn) -> Person:
            if await store.get_business(txn, who.account_id) is None:
                raise not_a_business(who.account_id)
            if await store.phone_of(txn, person_id) is None:
                raise NotFound(f"no account {person_id}", code=Code.UNKNOWN_RECIPIENT)
            await scoped_id_in(txn, who.account_id, person_id, now)
            return await self._person(txn, who.account_id, person_id)

        return await self.db.run_interaction("business_person", read)

    async def access_person_by_scoped_id(self, who: Principal, scoped_id: str) -> Person:
        async def read(txn: Txn) -> Person:
            if await store.get_business(txn, who.account_id) is None:
                raise not_a_business(who.account_id)
            found = await store.person_by_scoped_id(txn, who.account_id, scoped_id)
            if found is None:
                raise NotFound(f"no person has the scoped id {scoped_id!r} for this business")
            return await self._person(txn, who.account_id, found[0])

        return await self.db.run_interaction("business_person_by_scoped", read, write=False)

    async def _person(self, txn: Txn, business_id: int, person_id: int) -> Person:
        found = await store.scoped_person(txn, business_id, person_id)
        assert found is not None
        scoped, shared_at = found
        if shared_at is None:
            return Person(scoped_id=scoped, account_id=person_id)
        return Person(
            scoped_id=scoped,
            account_id=person_id,
            phone=await store.phone_of(txn, person_id),
            phone_shared_at=shared_at,
        )

    async def do_share_phone(self, who: Principal, business_id: int, share: bool) -> PhoneShare:
        """The person shares (or stops sharing) their phone number with one business."""
        now = self.clock.now_ms()

        async def set_share(txn: Txn) -> PhoneShare:
            if await store.get_business(txn, business_id) is None:
                raise not_a_business(business_id)
            if business_id == who.account_id:
                raise InvalidRequest("a business does not share its number with itself")
            scoped = await scoped_id_in(txn, business_id, who.account_id, now)
            await store.set_phone_shared(txn, business_id, who.account_id, now if share else None)
            return PhoneShare(business_id=business_id, scoped_id=scoped, shared=share)

        return await self.db.run_interaction("share_phone", set_share)

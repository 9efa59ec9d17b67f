"""The operator's side of businesses: the review queue, verification decisions, the domain
proof check and display-name approval. Every action writes its audit row in the same
transaction, so the log shows exactly the decisions that took effect."""

from __future__ import annotations

from typing import Any

from tresen.errors import Conflict, InvalidRequest, NotFound
from tresen.protocol.codes import Code
from tresen.relay.admin import audit
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.business import proof, store
from tresen.relay.business.models import BusinessReview, ProofResult, Verification
from tresen.relay.business.service import REVIEW_FILTERS, BusinessService, not_a_business
from tresen.storage.engine import Txn

_DECIDED = ("approved", "rejected", "revoked")
MAX_PAGE = 200


async def _recompute_badge(txn: Txn, account_id: int, now: int) -> bool:
    """``verified`` = the latest decided application is approved AND the name is approved."""
    record = await store.get_business(txn, account_id)
    assert record is not None
    decided = [row for row in await store.verifications(txn, account_id) if row[5] in _DECIDED]
    verified = bool(decided) and decided[-1][5] == "approved"
    verified = verified and record.display_name_status == "approved"
    if verified != record.verified:
        await store.update_business(
            txn, account_id, {"verified": verified, "verified_at": now if verified else None}
        )
    return verified


class BusinessReviewService:
    def __init__(self, businesses: BusinessService) -> None:
        self.businesses = businesses
        self.db, self.settings, self.clock = businesses.db, businesses.settings, businesses.clock

    async def _review(self, txn: Txn, account_id: int, base_url: str) -> BusinessReview:
        record = await store.get_business(txn, account_id)
        if record is None:
            raise not_a_business(account_id)
        history = [
            self.businesses.verification_view(r) for r in await store.verifications(txn, account_id)
        ]
        return BusinessReview(
            business=self.businesses.profile_view(record, base_url),
            display_name_reason=record.display_name_reason,
            phone=await store.phone_of(txn, account_id) or "",
            verification=history[-1] if history else None,
            history=history,
            created_at=record.created_at,
        )

    async def access_queue(
        self, status: str, after: int | None, limit: int, base_url: str
    ) -> list[BusinessReview]:
        where = REVIEW_FILTERS.get(status)
        if where is None:
            raise InvalidRequest(
                f"unknown status filter {status!r}; use one of {', '.join(REVIEW_FILTERS)}"
            )
        limit = max(1, min(limit, MAX_PAGE))

        async def read(txn: Txn) -> list[BusinessReview]:
            records = await store.list_businesses(txn, where=where, after=after, limit=limit)
            return [await self._review(txn, r.account_id, base_url) for r in records]

        return await self.db.run_interaction("business_review_queue", read, write=False)

    async def access_review(self, account_id: int, base_url: str) -> BusinessReview:
        return await self.db.run_interaction(
            "business_review", lambda txn: self._review(txn, account_id, base_url), write=False
        )

    async def _decide(
        self,
        admin: AdminPrincipal,
        account_id: int,
        base_url: str,
        *,
        action: str,
        from_status: str,
        to_status: str,
        reason: str | None,
        detail: dict[str, Any],
    ) -> BusinessReview:
        now = self.clock.now_ms()

        async def decide(txn: Txn) -> BusinessReview:
            if await store.get_business(txn, account_id) is None:
                raise not_a_business(account_id)
            history = await store.verifications(txn, account_id)
            if not history:
                raise NotFound(f"business {account_id} has not applied for verification")
            latest = history[-1]
            if latest[5] != from_status:
                raise Conflict(
                    f"the latest application is {latest[5]}, not {from_status}",
                    code=Code.ALREADY_REVIEWED,
                    current=latest[5],
                )
            if (
                to_status == "approved"
                and self.settings.verification_requires_domain_proof
                and not latest[10]
            ):
                raise Conflict(
                    "this relay approves only after a passed domain proof: run the check first",
                    code=Code.DOMAIN_PROOF_REQUIRED,
                )
            await store.decide_verification(
                txn,
                int(latest[0]),
                from_status=from_status,
                to_status=to_status,
                reason=reason,
                admin=admin.admin_id,
                now=now,
            )
            verified = await _recompute_badge(txn, account_id, now)
            await audit.record(
                txn,
                admin,
                action,
                f"business:{account_id}",
                {**detail, "verification_id": int(latest[0]), "verified": verified},
                at=now,
            )
            return await self._review(txn, account_id, base_url)

        review = await self.db.run_interaction(action, decide)
        await self._notify(account_id, "verification", to_status, reason, review)
        return review

    async def _notify(
        self, account_id: int, subject: str, status: str, reason: str | None, review: BusinessReview
    ) -> None:
        if self.businesses.notifier is not None:
            notice = {
                "subject": subject,
                "status": status,
                "reason": reason,
                "verified": review.business.verified,
            }
            await self.businesses.notifier.reviewed(account_id, notice)

    async def do_approve_verification(
        self, admin: AdminPrincipal, account_id: int, note: str, base_url: str
    ) -> BusinessReview:
        return await self._decide(
            admin,
            account_id,
            base_url,
            action="business.verification.approve",
            from_status="pending",
            to_status="approved",
            reason=None,  # the note is internal: it goes to the audit log only
            detail={"note": note},
        )

    async def do_reject_verification(
        self, admin: AdminPrincipal, account_id: int, reason: str, base_url: str
    ) -> BusinessReview:
        return await self._decide(
            admin,
            account_id,
            base_url,
            action="business.verification.reject",
            from_status="pending",
            to_status="rejected",
            reason=reason,
            detail={"reason": reason},
        )

    async def do_revoke_verification(
        self, admin: AdminPrincipal, account_id: int, reason: str, base_url: str
    ) -> BusinessReview:
        return await self._decide(
            admin,
            account_id,
            base_url,
            action="business.verification.revoke",
            from_status="approved",
            to_status="revoked",
            reason=reason,
            detail={"reason": reason},
        )

    async def do_check_domain(
        self, admin: AdminPrincipal, account_id: int, method: str
    ) -> ProofResult:
        """Fetch the proof (outside any transaction), then record the result and audit it."""

        async def latest(txn: Txn) -> store.VerificationRow:
            if await store.get_business(txn, account_id) is None:
                raise not_a_business(account_id)
            history = await store.verifications(txn, account_id)
            if not history:
                raise NotFound(f"business {account_id} has not applied for verification")
            return history[-1]

        row = await self.db.run_interaction("proof_target", latest, write=False)
        domain, token = str(row[4]), str(row[7])
        ok, passed, note = await proof.check_proof(domain, token, method, self.settings)
        now = self.clock.now_ms()

        async def save(txn: Txn) -> Verification:
            await store.record_proof(txn, int(row[0]), passed, ok, now)
            await audit.record(
                txn,
                admin,
                "business.domain_proof.check",
                f"business:{account_id}",
                {
                    "verification_id": int(row[0]),
                    "domain": domain,
                    "method": method,
                    "ok": ok,
                    "passed": passed,
                    "detail": note,
                },
                at=now,
            )
            found = [r for r in await store.verifications(txn, account_id) if r[0] == row[0]]
            return self.businesses.verification_view(found[0])

        verification = await self.db.run_interaction("record_proof", save)
        return ProofResult(ok=ok, method=passed, detail=note, verification=verification)

    async def _decide_name(
        self, admin: AdminPrincipal, account_id: int, base_url: str, approve: bool, reason: str
    ) -> BusinessReview:
        now = self.clock.now_ms()
        action = f"business.display_name.{'approve' if approve else 'reject'}"

        async def decide(txn: Txn) -> BusinessReview:
            record = await store.get_business(txn, account_id)
            if record is None:
                raise not_a_business(account_id)
            if record.display_name_status != "pending":
                raise Conflict(
                    f"the display name is {record.display_name_status}, not pending",
                    code=Code.ALREADY_REVIEWED,
                    current=record.display_name_status,
                )
            await store.update_business(
                txn,
                account_id,
                {
                    "display_name_status": "approved" if approve else "rejected",
                    "display_name_reason": None if approve else reason,
                    "updated_at": now,
                },
            )
            verified = await _recompute_badge(txn, account_id, now)
            await audit.record(
                txn,
                admin,
                action,
                f"business:{account_id}",
                {"display_name": record.display_name, "reason": reason, "verified": verified},
                at=now,
            )
            return await self._review(txn, account_id, base_url)

        review = await self.db.run_interaction(action, decide)
        status = "approved" if approve else "rejected"
        await self._notify(account_id, "display_name", status, reason or None, review)
        return review

    async def do_approve_name(
        self, admin: AdminPrincipal, account_id: int, base_url: str
    ) -> BusinessReview:
        return await self._decide_name(admin, account_id, base_url, True, "")

    async def do_reject_name(
        self, admin: AdminPrincipal, account_id: int, reason: str, base_url: str
    ) -> BusinessReview:
        return await self._decide_name(admin, account_id, base_url, False, reason)

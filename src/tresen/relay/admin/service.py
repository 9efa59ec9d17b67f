"""Admin rules: admin tokens (separate from device tokens) and reading the audit log."""

from __future__ import annotations

import hashlib
import secrets

from tresen.errors import Forbidden, NotFound, Unauthorized
from tresen.protocol.codes import Code
from tresen.relay.accounts import store as account_store
from tresen.relay.accounts.service import hash_token
from tresen.relay.admin import audit, store
from tresen.relay.admin.models import (
    AdminPrincipal,
    AdminToken,
    AdminTokenCreated,
    AuditPage,
)
from tresen.relay.clock import Clock
from tresen.storage.engine import Database, Txn

TOKEN_PREFIX = "tad_"  # noqa: S105
#: ``last_used_at`` is written at most this often per token (a read path should not write)
TOUCH_EVERY_MS = 60_000
MAX_AUDIT_PAGE = 500


def hash_admin_token(token: str) -> bytes:
    return hashlib.sha256(b"admin:" + token.encode()).digest()


async def do_create_token_in(
    txn: Txn, actor: AdminPrincipal, name: str, now: int
) -> AdminTokenCreated:
    """Create an admin token inside ``txn`` (also used by the CLI against the database)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = await store.create_token(txn, name, hash_admin_token(token), now)
    await audit.record(
        txn, actor, "admin.token.create", f"admin:{token_id}", {"name": name}, at=now
    )
    return AdminTokenCreated(id=token_id, name=name, token=token, created_at=now)


class AdminService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db, self.clock = db, clock

    async def access_admin(self, token: str) -> AdminPrincipal:
        """The admin behind ``token``: 401 for none or unknown, 403 ``admin_required`` for a
        device (user) token, 401 ``token_revoked`` for a revoked admin token."""
        token_hash = hash_admin_token(token)
        now = self.clock.now_ms()

        async def lookup(txn: Txn) -> tuple[int, str, int | None, int | None] | None:
            try:
                return await store.token_by_hash(txn, token_hash)
            except LookupError:
                return None

        found = await self.db.run_interaction("admin_by_token", lookup, write=False)
        if found is None:
            device_hash = hash_token(token)
            user = await self.db.run_interaction(
                "admin_user_token",
                lambda txn: account_store.principal_by_token(txn, device_hash),
                write=False,
            )
            if user is not None:
                raise Forbidden(
                    "this is a device token; the admin API needs an admin token "
                    "(create one with `tresen admin token create --db ...`)",
                    code=Code.ADMIN_REQUIRED,
                )
            raise Unauthorized("unknown admin token")
        token_id, name, last_used, revoked = found
        if revoked is not None:
            raise Unauthorized("this admin token was revoked", code=Code.TOKEN_REVOKED)
        if last_used is None or now - last_used > TOUCH_EVERY_MS:
            await self.db.run_interaction(
                "touch_admin_token", lambda txn: store.touch_token(txn, token_id, now)
            )
        return AdminPrincipal(admin_id=token_id, name=name)

    async def do_create_token(self, admin: AdminPrincipal, name: str) -> AdminTokenCreated:
        now = self.clock.now_ms()
        return await self.db.run_interaction(
            "create_admin_token", lambda txn: do_create_token_in(txn, admin, name, now)
        )

    async def access_tokens(self) -> list[AdminToken]:
        return await self.db.run_interaction("list_admin_tokens", store.list_tokens, write=False)

    async def do_revoke_token(self, admin: AdminPrincipal, token_id: int) -> None:
        now = self.clock.now_ms()

        async def revoke(txn: Txn) -> None:
            if not await store.revoke_token(txn, token_id, now):
                raise NotFound(f"no active admin token {token_id}")
            await audit.record(txn, admin, "admin.token.revoke", f"admin:{token_id}", {}, at=now)

        await self.db.run_interaction("revoke_admin_token", revoke)

    async def access_audit(
        self, *, before: int | None, action: str | None, target: str | None, limit: int
    ) -> AuditPage:
        limit = max(1, min(limit, MAX_AUDIT_PAGE))

        async def read(txn: Txn) -> AuditPage:
            items = await store.read_audit(
                txn, before=before, action=action, target=target, limit=limit + 1
            )
            more = len(items) > limit
            items = items[:limit]
            return AuditPage(items=items, next=items[-1].id if more else None)

        return await self.db.run_interaction("read_audit", read, write=False)

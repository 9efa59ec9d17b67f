"""Template rules: a business creates (PENDING), the operator reviews (APPROVED / REJECTED with a
reason), quality pauses (PAUSED for 3 h, then 6 h, then DISABLED), the operator may disable or
reinstate. Every status change is announced to the policy gates after the commit, so the next
envelope naming the template is checked against its new status.
"""

from __future__ import annotations

import msgspec

from tresen.bus.events import PolicyChanged
from tresen.errors import Conflict, InvalidRequest, NotFound
from tresen.protocol.codes import Code
from tresen.relay.accounts.models import Principal
from tresen.relay.admin import audit
from tresen.relay.admin.models import AdminPrincipal
from tresen.relay.business.service import BusinessService
from tresen.relay.clock import Clock
from tresen.relay.policy.gate import PolicyGate
from tresen.relay.templates import store
from tresen.relay.templates.models import (
    Component,
    Template,
    TemplateCreate,
    TemplateCreated,
    TemplateEdit,
    TemplateReview,
)
from tresen.relay.templates.validate import check_components, check_template
from tresen.storage.engine import Database, Row, Txn

#: templates per business (each language counts; the Cloud API's limit for an unverified one)
MAX_TEMPLATES = 250
_components = msgspec.json.Decoder(list[Component])
_encode = msgspec.json.Encoder()


def template_of(row: Row) -> Template:
    return Template(
        id=int(row[0]),
        business=int(row[1]),
        name=row[2],
        language=row[3],
        category=row[4],
        parameter_format=row[5],
        components=_components.decode(row[6]),
        status=row[7],
        reason=row[8],
        paused_until=int(row[9]),
        created_at=int(row[10]),
        updated_at=int(row[11]),
    )


async def notify_status(gate: PolicyGate, template: Template) -> None:
    """Tell the business's devices (its gateway: the Cloud API's
    ``message_template_status_update`` webhook) that a template's status changed."""
    await gate.notify(
        template.business,
        f"template:{template.id}:{template.updated_at}",
        {
            "type": "template_status",
            "template": template.id,
            "name": template.name,
            "language": template.language,
            "category": template.category,
            "status": template.status,
            "reason": template.reason,
            "paused_until": template.paused_until,
        },
    )


class TemplateService:
    def __init__(
        self, db: Database, clock: Clock, gate: PolicyGate, businesses: BusinessService
    ) -> None:
        self.db, self.clock, self.gate, self.businesses = db, clock, gate, businesses

    def _changed(self, business: int) -> None:
        self.gate.publish(PolicyChanged(what="template", a=business))

    async def _own(self, txn: Txn, who: Principal, template_id: int) -> Row:
        row = await store.by_id(txn, template_id)
        if row is None or int(row[1]) != who.account_id or row[7] == "DELETED":
            raise NotFound(f"no template {template_id}", code=Code.TEMPLATE_NOT_FOUND)
        return row

    # ------------------------------------------------------------ the business

    async def do_create(self, who: Principal, data: TemplateCreate) -> TemplateCreated:
        await self.businesses.access_business(who.account_id)
        self.gate.note_business(who.account_id)
        checked = check_template(data)
        components = _encode.encode(checked.components).decode()
        now = self.clock.now_ms()

        async def create(txn: Txn) -> int:
            existing = await store.by_key(txn, who.account_id, checked.name, checked.language)
            if existing is not None:
                if existing[7] != "DELETED":
                    raise Conflict(
                        f"template {checked.name!r} in {checked.language} exists: edit it",
                        code=Code.TEMPLATE_EXISTS,
                        id=str(existing[0]),
                    )
                await store.delete(txn, int(existing[0]))
            if await store.count_of(txn, who.account_id) >= MAX_TEMPLATES:
                raise Conflict(
                    f"a business has at most {MAX_TEMPLATES} templates: delete unused ones",
                    code=Code.TEMPLATE_LIMIT,
                    limit=MAX_TEMPLATES,
                )
            return await store.insert(
                txn,
                who.account_id,
                checked.name,
                checked.language,
                checked.category,
                checked.parameter_format,
                components,
                now,
            )

        template_id = await self.db.run_interaction("create_template", create)
        self._changed(who.account_id)
        return TemplateCreated(id=str(template_id), status="PENDING", category=checked.category)

    async def access_templates(
        self, who: Principal, status: str | None, name: str | None, after: int, limit: int
    ) -> list[Template]:
        await self.businesses.access_business(who.account_id)
        self.gate.note_business(who.account_id)
        rows = await self.db.run_interaction(
            "list_templates",
            lambda txn: store.list_of(txn, who.account_id, status, name, after, limit),
            write=False,
        )
        return [template_of(r) for r in rows]

    async def access_template(self, who: Principal, template_id: int) -> Template:
        async def read(txn: Txn) -> Row:
            return await self._own(txn, who, template_id)

        return template_of(await self.db.run_interaction("get_template", read, write=False))

    async def do_edit(self, who: Principal, template_id: int, data: TemplateEdit) -> Template:
        now = self.clock.now_ms()

        async def edit(txn: Txn) -> Template:
            current = template_of(await self._own(txn, who, template_id))
            if current.status == "DISABLED":
                raise Conflict("a disabled template cannot be edited", code=Code.TEMPLATE_DISABLED)
            category = data.category or current.category
            components = check_components(
                data.components or current.components, category, current.parameter_format
            )
            await store.update_content(
                txn, template_id, category, _encode.encode(components).decode(), now
            )
            row = await store.by_id(txn, template_id)
            assert row is not None
            return template_of(row)

        template = await self.db.run_interaction("edit_template", edit)
        self._changed(who.account_id)
        return template

    async def do_delete(
        self, who: Principal, *, name: str | None = None, template_id: int | None = None
    ) -> int:
        """Delete by id, or every language of a name (the Cloud API's ``?name=``)."""
        if name is None and template_id is None:
            raise InvalidRequest("name the template to delete (name or id)")
        now = self.clock.now_ms()

        async def delete(txn: Txn) -> int:
            if template_id is not None:
                rows = [await self._own(txn, who, template_id)]
            else:
                rows = await store.list_of(txn, who.account_id, None, name, 0, 1000)
                if not rows:
                    raise NotFound(f"no template {name!r}", code=Code.TEMPLATE_NOT_FOUND)
            for row in rows:
                await store.set_status(txn, int(row[0]), "DELETED", "", now)
            return len(rows)

        count = await self.db.run_interaction("delete_template", delete)
        self._changed(who.account_id)
        return count

    # ------------------------------------------------------------ the operator

    async def access_admin_templates(
        self, status: str | None, business: int | None, after: int, limit: int
    ) -> list[Template]:
        rows = await self.db.run_interaction(
            "admin_templates",
            lambda txn: store.list_of(txn, business, status, None, after, limit),
            write=False,
        )
        return [template_of(r) for r in rows]

    async def access_admin_template(self, template_id: int) -> Template:
        row = await self.db.run_interaction(
            "admin_template", lambda txn: store.by_id(txn, template_id), write=False
        )
        if row is None or row[7] == "DELETED":
            raise NotFound(f"no template {template_id}", code=Code.TEMPLATE_NOT_FOUND)
        return template_of(row)

    async def _admin_change(
        self,
        admin: AdminPrincipal,
        template_id: int,
        action: str,
        allowed_from: tuple[str, ...],
        status: str,
        reason: str,
    ) -> Template:
        now = self.clock.now_ms()

        async def change(txn: Txn) -> Template:
            row = await store.by_id(txn, template_id)
            if row is None or row[7] == "DELETED":
                raise NotFound(f"no template {template_id}", code=Code.TEMPLATE_NOT_FOUND)
            if row[7] not in allowed_from:
                raise Conflict(
                    f"template {template_id} is {row[7]}; {action} needs "
                    f"{' or '.join(allowed_from)}",
                    code=Code.ALREADY_REVIEWED,
                )
            await store.set_status(txn, template_id, status, reason, now)
            await audit.record(
                txn,
                admin,
                f"template.{action}",
                f"template:{template_id}",
                {"from": row[7], "to": status, "reason": reason, "business": int(row[1])},
                at=now,
            )
            found = await store.by_id(txn, template_id)
            assert found is not None
            return template_of(found)

        template = await self.db.run_interaction(f"template_{action}", change)
        self._changed(template.business)
        await notify_status(self.gate, template)
        return template

    async def do_review(
        self, admin: AdminPrincipal, template_id: int, data: TemplateReview
    ) -> Template:
        if data.status == "REJECTED" and not data.reason.strip():
            raise InvalidRequest("give the business a reason for the rejection")
        action = "approve" if data.status == "APPROVED" else "reject"
        return await self._admin_change(
            admin, template_id, action, ("PENDING",), data.status, data.reason.strip()
        )

    async def do_disable(self, admin: AdminPrincipal, template_id: int, reason: str) -> Template:
        return await self._admin_change(
            admin, template_id, "disable", ("APPROVED", "PAUSED", "PENDING"), "DISABLED", reason
        )

    async def do_reinstate(self, admin: AdminPrincipal, template_id: int, reason: str) -> Template:
        return await self._admin_change(
            admin, template_id, "reinstate", ("PAUSED", "DISABLED"), "APPROVED", reason
        )

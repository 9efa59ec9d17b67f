"""Everything issue 4 part B adds to the relay: its services, built in one call, and its routes.

The composition root calls :func:`build_policy` and registers :data:`ROUTERS`, so the shared
``app.py`` stays small. The gate must exist before the envelope service (it is its hook).
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Router

from tresen.bus import Bus
from tresen.config import Settings
from tresen.relay.accounts.service import DeviceDirectory
from tresen.relay.billing import api as billing_api
from tresen.relay.billing.service import BillingService
from tresen.relay.business.service import BusinessService
from tresen.relay.clock import Clock
from tresen.relay.consent import api as consent_api
from tresen.relay.consent.service import ConsentService
from tresen.relay.envelopes.writer import Writer
from tresen.relay.policy.gate import PolicyGate
from tresen.relay.policy.quality import QualityService
from tresen.relay.templates import api as templates_api
from tresen.relay.templates.service import TemplateService
from tresen.storage.engine import Database

ROUTERS: list[Router] = [
    consent_api.router,
    consent_api.business_router,
    consent_api.admin_router,
    templates_api.business_router,
    templates_api.admin_router,
    billing_api.business_router,
    billing_api.admin_router,
]
#: names of the ``Services`` fields these routes take as dependencies
SERVICES = ("policy", "consent", "templates", "billing", "quality", "admins")


@dataclass(slots=True)
class PolicyServices:
    policy: PolicyGate
    consent: ConsentService
    templates: TemplateService
    billing: BillingService
    quality: QualityService

    async def start(self) -> None:
        await self.policy.start()
        self.quality.start()

    async def close(self) -> None:
        await self.quality.close()
        await self.policy.close()


def build_gate(
    db: Database,
    bus: Bus,
    settings: Settings,
    clock: Clock,
    writer: Writer,
    directory: DeviceDirectory,
) -> PolicyGate:
    return PolicyGate(db, bus, settings, clock, writer, directory)


def build_policy(
    gate: PolicyGate, db: Database, settings: Settings, clock: Clock, business: BusinessService
) -> PolicyServices:
    return PolicyServices(
        policy=gate,
        consent=ConsentService(db, clock, gate, business),
        templates=TemplateService(db, clock, gate, business),
        billing=BillingService(db, settings, clock, gate, business),
        quality=QualityService(db, settings, clock, gate, business),
    )

"""The typed bundle of everything the composition root builds, handed to the transports."""

from __future__ import annotations

from dataclasses import dataclass

from tresen.bus import Bus
from tresen.config import Settings
from tresen.relay.accounts.service import AccountService, DeviceDirectory
from tresen.relay.admin.service import AdminService
from tresen.relay.billing.service import BillingService
from tresen.relay.business.review import BusinessReviewService
from tresen.relay.business.service import BusinessService
from tresen.relay.business.tools import BusinessToolsService
from tresen.relay.clock import Clock
from tresen.relay.consent.service import ConsentService
from tresen.relay.envelopes.service import EnvelopeService
from tresen.relay.envelopes.writer import Writer
from tresen.relay.groups.service import GroupService
from tresen.relay.keys.service import KeyService
from tresen.relay.media.service import MediaService
from tresen.relay.policy.gate import PolicyGate
from tresen.relay.policy.quality import QualityService
from tresen.relay.presence.service import PresenceService
from tresen.relay.templates.service import TemplateService
from tresen.storage.engine import Database


@dataclass(slots=True)
class Services:
    settings: Settings
    clock: Clock
    db: Database
    bus: Bus
    writer: Writer
    directory: DeviceDirectory
    accounts: AccountService
    keys: KeyService
    groups: GroupService
    envelopes: EnvelopeService
    presence: PresenceService
    admins: AdminService
    business: BusinessService
    business_review: BusinessReviewService
    business_tools: BusinessToolsService
    media: MediaService
    policy: PolicyGate
    consent: ConsentService
    templates: TemplateService
    billing: BillingService
    quality: QualityService

-- Business policy: consent, blocks, reports, the customer-service window, templates, limits,
-- quality, metering and billing (docs/business-rules.md). Times are milliseconds since the epoch,
-- money is in minor units (cents) of the row's currency.

@sequence consent_event_seq
@sequence report_seq
@sequence template_seq
@sequence ledger_seq

-- the current consent of a person towards a business, per category ('marketing', 'utility')
CREATE TABLE consents (
    business_id BIGINT NOT NULL REFERENCES accounts (id),
    person_id BIGINT NOT NULL REFERENCES accounts (id),
    category TEXT NOT NULL,
    opted_in INTEGER NOT NULL,
    source TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (business_id, person_id, category)
);
CREATE INDEX consents_person ON consents (person_id);

-- every opt-in and opt-out as it happened (who made it: 'person' or 'business')
CREATE TABLE consent_events (
    id BIGINT PRIMARY KEY,
    business_id BIGINT NOT NULL,
    person_id BIGINT NOT NULL,
    category TEXT NOT NULL,
    opted_in INTEGER NOT NULL,
    source TEXT NOT NULL,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX consent_events_pair ON consent_events (business_id, person_id, at);

-- an account refuses every envelope from another
CREATE TABLE blocks (
    blocker_id BIGINT NOT NULL REFERENCES accounts (id),
    blocked_id BIGINT NOT NULL REFERENCES accounts (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);

-- what the relay knows of a business and one person: first contact, the open windows
CREATE TABLE threads (
    business_id BIGINT NOT NULL,
    person_id BIGINT NOT NULL,
    first_contact_at BIGINT NOT NULL,
    person_wrote INTEGER NOT NULL DEFAULT 0,
    last_inbound_at BIGINT NOT NULL DEFAULT 0,
    entry_until BIGINT NOT NULL DEFAULT 0,
    entry_source TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (business_id, person_id)
);

-- the operator's queue of reports, ``messages`` is what the reporter's client chose to attach
CREATE TABLE reports (
    id BIGINT PRIMARY KEY,
    reporter_id BIGINT NOT NULL,
    reported_id BIGINT NOT NULL,
    reason TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    messages TEXT NOT NULL DEFAULT '[]',
    blocked INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'open',
    resolution TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    resolved_by TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE INDEX reports_status ON reports (status, id);

CREATE TABLE templates (
    id BIGINT PRIMARY KEY,
    business_id BIGINT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    category TEXT NOT NULL,
    parameter_format TEXT NOT NULL,
    components TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    pause_count INTEGER NOT NULL DEFAULT 0,
    paused_until BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (business_id, name, language)
);
CREATE INDEX templates_status ON templates (status, id);

-- one row per business envelope and recipient: the meter. ``initiated`` = business-initiated
-- outside the customer-service window (counts towards the messaging limit), priced on delivery
CREATE TABLE business_sends (
    business_id BIGINT NOT NULL,
    envelope_id TEXT NOT NULL,
    person_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    category TEXT NOT NULL,
    template TEXT NOT NULL DEFAULT '',
    pricing_type TEXT NOT NULL,
    country TEXT NOT NULL,
    initiated INTEGER NOT NULL,
    sent_at BIGINT NOT NULL,
    delivered_at BIGINT,
    price_minor BIGINT NOT NULL DEFAULT 0,
    currency TEXT NOT NULL DEFAULT '',
    -- 1 once the price is taken from the business's balance
    charged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (business_id, envelope_id, person_id)
);
CREATE INDEX business_sends_uncharged ON business_sends (business_id)
    WHERE charged = 0 AND delivered_at IS NOT NULL;
CREATE INDEX business_sends_sent ON business_sends (business_id, sent_at);
CREATE INDEX business_sends_delivered ON business_sends (business_id, delivered_at);

-- negative feedback on a business: 'block', 'report', 'opt_out' (with the last template the
-- person had received from it, so that template's own quality can be rated)
CREATE TABLE quality_signals (
    business_id BIGINT NOT NULL,
    person_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    template TEXT NOT NULL DEFAULT '',
    at BIGINT NOT NULL
);
CREATE INDEX quality_signals_business ON quality_signals (business_id, at);

-- the relay's view of a business's standing: tier, quality, throughput, money
CREATE TABLE business_policy (
    account_id BIGINT PRIMARY KEY REFERENCES accounts (id),
    tier INTEGER NOT NULL DEFAULT 0,
    quality TEXT NOT NULL DEFAULT 'GREEN',
    throughput INTEGER NOT NULL DEFAULT 0,
    balance_minor BIGINT NOT NULL DEFAULT 0,
    credit_limit_minor BIGINT,
    tier_changed_at BIGINT NOT NULL DEFAULT 0,
    quality_changed_at BIGINT NOT NULL DEFAULT 0
);

-- prices per delivered message, replaced as a whole by the operator (else the packaged card)
CREATE TABLE rate_card (
    category TEXT NOT NULL,
    country TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (category, country)
);

-- money in and out of a business's balance (top-ups, adjustments, delivered charges summed
-- from business_sends)
CREATE TABLE balance_ledger (
    id BIGINT PRIMARY KEY,
    business_id BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    kind TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    actor TEXT NOT NULL DEFAULT '',
    at BIGINT NOT NULL
);
CREATE INDEX balance_ledger_business ON balance_ledger (business_id, at)

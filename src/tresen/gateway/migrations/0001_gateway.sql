-- The business gateway's own database (never the relay's): the numbers it serves with their
-- relay device credentials, the people it talks to under their business-scoped ids, the
-- messages it sent and received (ids and states, never bodies), media references (the bytes
-- stay encrypted on the relay), and the webhook outbox.

CREATE TABLE gw_numbers (
    id TEXT PRIMARY KEY,                -- phone_number_id
    waba_id TEXT NOT NULL UNIQUE,
    relay_url TEXT NOT NULL,
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    device_token TEXT NOT NULL,
    phone TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,    -- SHA-256 of the Cloud API access token
    app_secret TEXT NOT NULL,
    verify_token TEXT NOT NULL,
    webhook_url TEXT NOT NULL DEFAULT '',
    pin_hash TEXT NOT NULL DEFAULT '',
    registered_at BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE gw_people (
    number_id TEXT NOT NULL,
    account_id BIGINT NOT NULL,
    scoped_id TEXT NOT NULL,
    phone TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (number_id, account_id)
);
CREATE UNIQUE INDEX gw_people_scoped ON gw_people (number_id, scoped_id);

CREATE TABLE gw_messages (
    number_id TEXT NOT NULL,
    id TEXT NOT NULL,                   -- the relay envelope id (wamid.<id> on the API)
    direction TEXT NOT NULL,            -- in | out
    person BIGINT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,               -- accepted sent delivered read failed | received read
    category TEXT NOT NULL DEFAULT '',
    opaque TEXT NOT NULL DEFAULT '',    -- biz_opaque_callback_data
    created_at BIGINT NOT NULL,
    PRIMARY KEY (number_id, id)
);
CREATE INDEX gw_messages_person ON gw_messages (number_id, person, created_at);

CREATE TABLE gw_media (
    id TEXT PRIMARY KEY,                -- the Cloud API media id (digits)
    number_id TEXT NOT NULL,
    origin TEXT NOT NULL,               -- upload | inbound
    file TEXT NOT NULL,                 -- the encrypted-file JSON (key, iv, hashes, relay blob)
    mime_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    filename TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX gw_media_number ON gw_media (number_id, created_at);

CREATE TABLE gw_outbox (
    id BIGINT PRIMARY KEY,
    number_id TEXT NOT NULL,
    conversation TEXT NOT NULL,         -- events of one conversation go out in id order
    body TEXT NOT NULL,                 -- the exact (ASCII-escaped) JSON that is signed
    state TEXT NOT NULL,                -- pending | delivered | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    last_status INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    done_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX gw_outbox_due ON gw_outbox (state, next_at);
CREATE INDEX gw_outbox_conversation ON gw_outbox (conversation, state, id);
CREATE INDEX gw_outbox_number ON gw_outbox (number_id, state, id)

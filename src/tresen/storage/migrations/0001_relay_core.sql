-- tresen relay core: accounts, devices, keys, per-device queues, groups.
-- Times are milliseconds since the Unix epoch (BIGINT). Ids come from sequences.

@sequence account_seq
@sequence device_seq
@sequence queue_seq
@sequence group_seq
@sequence otk_seq

CREATE TABLE accounts (
    id BIGINT PRIMARY KEY,
    phone TEXT NOT NULL UNIQUE,
    username TEXT UNIQUE,
    display_name TEXT NOT NULL DEFAULT '',
    about TEXT NOT NULL DEFAULT '',
    photo TEXT,
    presence_privacy TEXT NOT NULL DEFAULT 'everyone',
    last_seen_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE devices (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL DEFAULT '',
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX devices_account ON devices (account_id);

-- one-time codes proving a phone number (hash of the code, never the code)
CREATE TABLE verification_codes (
    phone TEXT PRIMARY KEY,
    code_hash BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);

-- short-lived codes shown on an existing device to link a new one
CREATE TABLE link_codes (
    code_hash BYTEA PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    expires_at BIGINT NOT NULL
);

-- sliding-window counters for abuse limits that must survive a restart
CREATE TABLE rate_events (
    bucket TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX rate_events_bucket ON rate_events (bucket, at);

CREATE TABLE device_keys (
    device_id BIGINT PRIMARY KEY REFERENCES devices (id),
    keys_json TEXT NOT NULL
);

CREATE TABLE one_time_keys (
    id BIGINT PRIMARY KEY,
    device_id BIGINT NOT NULL REFERENCES devices (id),
    key_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_json TEXT NOT NULL,
    UNIQUE (device_id, key_id)
);
CREATE INDEX one_time_keys_claim ON one_time_keys (device_id, algorithm, id);

CREATE TABLE fallback_keys (
    device_id BIGINT NOT NULL REFERENCES devices (id),
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, algorithm)
);

-- the offline queue: one row per target device, deleted when that device acknowledges it
CREATE TABLE queue (
    seq BIGINT PRIMARY KEY,
    device_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    envelope_id TEXT NOT NULL,
    sender_account BIGINT NOT NULL,
    sender_device BIGINT NOT NULL,
    group_id BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    body BYTEA NOT NULL
);
CREATE INDEX queue_device ON queue (device_id, seq);
CREATE INDEX queue_expiry ON queue (expires_at);

-- sender-chosen envelope ids seen, so that a resend is accepted once
CREATE TABLE envelope_ids (
    sender_device BIGINT NOT NULL,
    envelope_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (sender_device, envelope_id)
);
CREATE INDEX envelope_ids_age ON envelope_ids (created_at);

CREATE TABLE groups (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    created_by BIGINT NOT NULL REFERENCES accounts (id),
    invite_code TEXT UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id BIGINT NOT NULL REFERENCES groups (id),
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    role TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, account_id)
);
CREATE INDEX group_members_account ON group_members (account_id);

CREATE TABLE contacts (
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    contact_id BIGINT NOT NULL REFERENCES accounts (id),
    PRIMARY KEY (account_id, contact_id)
);

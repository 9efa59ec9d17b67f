-- Business accounts, verification, small-business tools, scoped ids, and the operator's
-- admin tokens and audit log. Booleans are INTEGER 0/1; JSON documents are TEXT.

@sequence verification_seq
@sequence product_seq
@sequence quick_reply_seq
@sequence label_seq
@sequence admin_seq
@sequence audit_seq

-- one business per account; ``verified`` is 1 only while both the verification application and
-- the display name are approved (so a renamed business loses its badge until reviewed again)
CREATE TABLE businesses (
    account_id BIGINT PRIMARY KEY REFERENCES accounts (id),
    slug TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    display_name_status TEXT NOT NULL DEFAULT 'pending',
    display_name_reason TEXT,
    about TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    websites_json TEXT NOT NULL DEFAULT '[]',
    vertical TEXT NOT NULL DEFAULT 'UNDEFINED',
    photo TEXT,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    hours_json TEXT NOT NULL DEFAULT '[]',
    greeting_json TEXT,
    away_json TEXT,
    verified INTEGER NOT NULL DEFAULT 0,
    verified_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX businesses_name_status ON businesses (display_name_status);

-- verification applications, newest last; at most one 'pending' per business (service rule)
CREATE TABLE business_verifications (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES businesses (account_id),
    legal_name TEXT NOT NULL,
    registration_number TEXT NOT NULL,
    domain TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    proof_token TEXT NOT NULL,
    proof_method TEXT,
    proof_checked_at BIGINT,
    proof_ok INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by BIGINT
);
CREATE INDEX business_verifications_account ON business_verifications (account_id, id);
CREATE INDEX business_verifications_status ON business_verifications (status, id);

CREATE TABLE products (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES businesses (account_id),
    retailer_id TEXT,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    price BIGINT NOT NULL,
    currency TEXT NOT NULL,
    image TEXT,
    availability TEXT NOT NULL DEFAULT 'in_stock',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (account_id, retailer_id)
);
CREATE INDEX products_business ON products (account_id, id);

CREATE TABLE quick_replies (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES businesses (account_id),
    shortcut TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (account_id, shortcut)
);

CREATE TABLE labels (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES businesses (account_id),
    name TEXT NOT NULL,
    color TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (account_id, name)
);

-- a chat is the counterpart account; a label belongs to exactly one business
CREATE TABLE chat_labels (
    label_id BIGINT NOT NULL REFERENCES labels (id),
    chat_account_id BIGINT NOT NULL REFERENCES accounts (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (label_id, chat_account_id)
);
CREATE INDEX chat_labels_chat ON chat_labels (chat_account_id);

-- the business-scoped user id of each person a business has seen, and whether the person
-- shared their phone number with that business
CREATE TABLE business_people (
    business_id BIGINT NOT NULL REFERENCES businesses (account_id),
    person_id BIGINT NOT NULL REFERENCES accounts (id),
    scoped_id TEXT NOT NULL UNIQUE,
    phone_shared_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (business_id, person_id)
);

-- operator access, separate from device tokens (hash of the token, never the token)
CREATE TABLE admin_tokens (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);

-- every admin action, written in the same transaction as the action itself
CREATE TABLE audit_log (
    id BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    admin_id BIGINT,
    admin_name TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_action ON audit_log (action, id)

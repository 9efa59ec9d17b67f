-- media blobs: one row per upload (the bytes live in the blob store, never in the database),
-- and the devices the uploader granted a download. The relay sees ciphertext sizes only.
-- ``received`` is the committed upload offset; ``completed_at`` is set once every declared
-- byte arrived. ``expires_at`` starts at the upload deadline, moves to completed + TTL when the
-- upload completes, and to "now + grace" once every granted device fetched the whole blob
-- (unless ``keep`` is 1: kept to the TTL, for media reused across messages).

CREATE TABLE media (
    id TEXT PRIMARY KEY,
    owner_account BIGINT NOT NULL REFERENCES accounts (id),
    owner_device BIGINT NOT NULL REFERENCES devices (id),
    kind TEXT NOT NULL,
    declared_size BIGINT NOT NULL,
    received BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    completed_at BIGINT,
    expires_at BIGINT NOT NULL,
    keep INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX media_expires ON media (expires_at);
CREATE INDEX media_owner ON media (owner_account);

CREATE TABLE media_grants (
    media_id TEXT NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    granted_at BIGINT NOT NULL,
    fetched_at BIGINT,
    PRIMARY KEY (media_id, device_id)
);
CREATE INDEX media_grants_account ON media_grants (account_id, media_id)

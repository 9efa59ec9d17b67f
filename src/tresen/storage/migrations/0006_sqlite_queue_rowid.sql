-- SQLite only: the queue keeps its rows by seq. Migration 0001 declared seq BIGINT PRIMARY KEY,
-- which SQLite keeps as a hidden rowid plus a unique index on seq: one more b-tree for every
-- envelope stored and deleted. Declared INTEGER PRIMARY KEY (the engine spells BIGINT PRIMARY KEY
-- so), seq is the rowid. A database created since is already laid out so and is copied as well.
@only sqlite

CREATE TABLE queue_by_seq (
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
INSERT INTO queue_by_seq
    SELECT seq, device_id, kind, envelope_id, sender_account, sender_device, group_id,
           created_at, expires_at, body
    FROM queue;
DROP TABLE queue;
ALTER TABLE queue_by_seq RENAME TO queue;
CREATE INDEX queue_device ON queue (device_id, seq);
CREATE INDEX queue_expiry ON queue (expires_at);

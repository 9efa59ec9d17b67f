-- What the gateway last saw of relay-side state it reports by webhook: template review
-- statuses (key 'template:<id>') and the number's quality rating (key 'quality').
CREATE TABLE gw_watch (
    number_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (number_id, key)
)

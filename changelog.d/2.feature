Relay core: phone registration with one-time codes, linked devices, key directory (Matrix shapes),
store-and-forward envelopes with group commit, receipts, typing, presence, groups of up to 1,024
members; msgpack/JSON WebSocket protocol v1; HTTP API with OpenAPI; async and sync SDK; SQLite and
PostgreSQL.

-- Idempotency records (SPEC §6). Keep it in step with ../postgres/0002_idempotency.sql: same
-- table, columns and constraint names; only the types differ.
--
-- One row per (account, Idempotency-Key): the claim a request takes before it executes
-- (`pending`), then the response it produced (`complete`). Not audited, not in the change log:
-- these are a retry cache, purged once `expires_at` passes.

CREATE TABLE idempotency_records (
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    idempotency_key TEXT NOT NULL,
    -- The request's fingerprint (method, path, query, body hash), 32 bytes, opaque here.
    fingerprint     BLOB NOT NULL,
    state           TEXT NOT NULL,
    -- Opaque to the store (the server keeps it encrypted); NULL while pending.
    response        BLOB,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    PRIMARY KEY (account_id, idempotency_key),
    CONSTRAINT idempotency_records_fingerprint_length CHECK (length(fingerprint) = 32),
    CONSTRAINT idempotency_records_state CHECK (state IN ('pending', 'complete'))
);

CREATE INDEX idempotency_records_expires_at ON idempotency_records (expires_at);

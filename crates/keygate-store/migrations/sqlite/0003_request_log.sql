-- The request log (SPEC §8 `/usage`). Keep it in step with ../postgres/0003_request_log.sql: same
-- table, columns and index names; only the types differ.
--
-- One row per authenticated request, written in batches off the hot path and purged after the
-- configured retention. `id` is ours (`rl_<ULID>`): `request_id` may come from the client's
-- X-Request-Id, so it is neither unique nor trusted. No foreign keys: a row outlives its key.
-- `at` is RFC 3339 text in UTC, so its first ten characters are the day.

CREATE TABLE request_log (
    id          TEXT    NOT NULL PRIMARY KEY,
    request_id  TEXT    NOT NULL,
    at          TEXT    NOT NULL,
    account_id  TEXT    NOT NULL,
    key_id      TEXT,
    tenant_id   TEXT,
    -- The matched route template (`/v1/api-keys/{id}`), or the path of a gateway request.
    route       TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    -- The error code, or `ok`.
    outcome     TEXT    NOT NULL,
    client_ip   TEXT,
    latency_us  INTEGER NOT NULL
);

CREATE INDEX request_log_account_id ON request_log (account_id, id);
CREATE INDEX request_log_key_id_at ON request_log (key_id, at);
CREATE INDEX request_log_at ON request_log (at);

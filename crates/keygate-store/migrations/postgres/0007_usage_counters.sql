-- Usage counters and a leaner request log (SPEC §8). Keep it in step with
-- ../sqlite/0007_usage_counters.sql: same tables, columns and index names; only the types differ.
--
-- Usage is counted in memory and added here in batches: one row per account, UTC day, key,
-- tenant and outcome, whose `count` only grows. `tenant_id` is '' for a request without a tenant
-- (a primary key column cannot be NULL). No foreign keys: counts outlive their key.
CREATE TABLE usage_counters (
    account_id  TEXT COLLATE "C" NOT NULL,
    -- `YYYY-MM-DD`, in UTC.
    day         TEXT COLLATE "C" NOT NULL,
    key_id      TEXT COLLATE "C" NOT NULL,
    tenant_id   TEXT COLLATE "C" NOT NULL,
    -- The error code, or `ok`.
    outcome     TEXT COLLATE "C" NOT NULL,
    count       BIGINT NOT NULL,
    PRIMARY KEY (account_id, day, key_id, tenant_id, outcome)
);

CREATE INDEX usage_counters_key_id ON usage_counters (key_id, day);
CREATE INDEX usage_counters_tenant_id ON usage_counters (account_id, tenant_id, day);

-- Usage so far was counted from the request log: carried over, so no day loses its counts.
INSERT INTO usage_counters (account_id, day, key_id, tenant_id, outcome, count)
SELECT account_id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), key_id, COALESCE(tenant_id, ''), outcome, COUNT(*)
FROM request_log WHERE key_id IS NOT NULL
GROUP BY 1, 2, 3, 4, 5;

-- The request log keeps only the indexes its listing needs: per account and per key, newest
-- first by record id (a ULID, so also by time). Usage no longer reads it, and retention deletes
-- by record id, so the index on `at` goes.
DROP INDEX request_log_key_id_at;
DROP INDEX request_log_at;
CREATE INDEX request_log_key_id ON request_log (key_id, id);

-- The request log in chunks (SPEC §8; crates/keygate-store/src/sql/requestlog.rs has the form).
-- Keep it in step with ../postgres/0008_request_log_chunks.sql: same table, columns and index
-- names; only the types differ.
--
-- One row per account and time bucket (record ids sharing their first 9 characters: about
-- 17.5 minutes) per written batch, appended (`seq` only grows), holding up to 1,000 records as a JSON array of arrays `[id, request_id, at (Unix seconds), key_id, tenant_id,
-- route, method, status, outcome, client_ip, latency_us, via_key_id]`. One index entry per chunk,
-- none per record; retention deletes whole chunks. No foreign keys: a record outlives its key.
CREATE TABLE request_log_chunks (
    seq         INTEGER NOT NULL PRIMARY KEY,
    account_id  TEXT    NOT NULL,
    -- The smallest and largest record id (`rl_<ULID>`) in the chunk.
    first_id    TEXT    NOT NULL,
    last_id     TEXT    NOT NULL,
    -- The earliest and latest record time, in seconds since the Unix epoch.
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    records     TEXT    NOT NULL
);

CREATE INDEX request_log_chunks_account_id ON request_log_chunks (account_id, last_id, seq);
-- Retention deletes by `last_id`; chunks are appended in about that order.
CREATE INDEX request_log_chunks_last_id ON request_log_chunks (last_id);

-- Every record kept so far moves over, 1,000 to a chunk per account and time bucket in id order.
INSERT INTO request_log_chunks (account_id, first_id, last_id, first_at, last_at, count, records)
SELECT account_id, MIN(id), MAX(id), MIN(at_s), MAX(at_s), COUNT(*),
       json_group_array(json_array(id, request_id, at_s, key_id, tenant_id, route, method, status, outcome,
                                   client_ip, latency_us, via_key_id))
FROM (
    SELECT request_log.*, CAST(strftime('%s', at) AS INTEGER) AS at_s,
           substr(id, 1, 9) AS bucket,
           (ROW_NUMBER() OVER (PARTITION BY account_id, substr(id, 1, 9) ORDER BY id) - 1) / 1000 AS part
    FROM request_log ORDER BY account_id, id
)
GROUP BY account_id, bucket, part
ORDER BY MIN(id);

-- The table stays, empty: a node of the previous version writes to it until it is upgraded
-- (docs/deployment.md, rolling upgrades), and the store reads and purges what it finds there.
DELETE FROM request_log;

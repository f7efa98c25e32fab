-- The request log in chunks (SPEC §8; crates/keygate-store/src/sql/requestlog.rs has the form).
-- Keep it in step with ../sqlite/0008_request_log_chunks.sql: same table, columns and index
-- names; only the types differ.
--
-- One row per account and time bucket (record ids sharing their first 9 characters: about
-- 17.5 minutes) per written batch, appended (`seq` only grows), holding up to 1,000 records as a JSON array of arrays `[id, request_id, at (Unix seconds), key_id, tenant_id,
-- route, method, status, outcome, client_ip, latency_us, via_key_id]`. One index entry per chunk,
-- none per record; retention deletes whole chunks. No foreign keys: a record outlives its key.
-- `records` is text, not jsonb: it is written far more often than it is read.
CREATE TABLE request_log_chunks (
    seq         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  TEXT COLLATE "C" NOT NULL,
    -- The smallest and largest record id (`rl_<ULID>`) in the chunk.
    first_id    TEXT COLLATE "C" NOT NULL,
    last_id     TEXT COLLATE "C" NOT NULL,
    -- The earliest and latest record time, in seconds since the Unix epoch.
    first_at    BIGINT  NOT NULL,
    last_at     BIGINT  NOT NULL,
    count       BIGINT  NOT NULL,
    records     TEXT    NOT NULL
);

CREATE INDEX request_log_chunks_account_id ON request_log_chunks (account_id, last_id, seq);
-- Retention deletes by `last_id`; chunks are appended in about that order.
CREATE INDEX request_log_chunks_last_id ON request_log_chunks (last_id);

-- Nodes of the previous version wait for this migration to commit before they write to
-- request_log again: a row committed between the copy and the DELETE below would otherwise be
-- deleted without having been copied.
LOCK TABLE request_log IN EXCLUSIVE MODE;

-- Every record kept so far moves over, 1,000 to a chunk per account and time bucket in id order.
INSERT INTO request_log_chunks (account_id, first_id, last_id, first_at, last_at, count, records)
SELECT account_id, MIN(id), MAX(id), MIN(at_s), MAX(at_s), COUNT(*),
       json_agg(json_build_array(id, request_id, at_s, key_id, tenant_id, route, method, status, outcome,
                                 client_ip, latency_us, via_key_id) ORDER BY id)::text
FROM (
    SELECT request_log.*, floor(EXTRACT(EPOCH FROM at))::BIGINT AS at_s,
           substr(id, 1, 9) AS bucket,
           (ROW_NUMBER() OVER (PARTITION BY account_id, substr(id, 1, 9) ORDER BY id) - 1) / 1000 AS part
    FROM request_log
) AS numbered
GROUP BY account_id, bucket, part
ORDER BY MIN(id);

-- The table stays, empty: a node of the previous version writes to it until it is upgraded
-- (docs/deployment.md, rolling upgrades), and the store reads and purges what it finds there.
DELETE FROM request_log;

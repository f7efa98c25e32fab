-- A request-log record made by a verify call (SPEC §9) is a use of the verified key; the key
-- that asked is noted here. Keep it in step with ../postgres/0005_request_via.sql.
ALTER TABLE request_log ADD COLUMN via_key_id TEXT;

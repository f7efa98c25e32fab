-- The request log's packed form (SPEC §8; crates/keygate-store/src/sql/requestlog.rs has it).
-- Keep it in step with ../postgres/0009_request_log_packed.sql: same columns, only the types
-- differ.
--
-- `strings`: a JSON array of the chunk's repeated text (key and tenant ids, routes, methods,
-- outcomes), each once. `packed`: the chunk's records, each in postcard's encoding, naming that
-- text by index: about 52 bytes a record, against 215 in `records`. A chunk written from this
-- version on has both, and `records` `[]`: nodes of the previous version read only `records`,
-- and find no records there rather than bytes they cannot read. Chunks written before keep
-- `records` and have both new columns NULL. Adding nullable columns rewrites no row.
ALTER TABLE request_log_chunks ADD COLUMN packed BLOB;
ALTER TABLE request_log_chunks ADD COLUMN strings TEXT;

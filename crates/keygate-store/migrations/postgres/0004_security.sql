-- Security additions. Keep it in step with ../sqlite/0004_security.sql: same tables, columns
-- and constraint names; only the types differ.

-- The tenant scope of what an audit event is about (SPEC §4): a JSON array of tenant ids (a
-- key's `tenant_ids`, a tenant's own id), or NULL for an event about the account as a whole.
-- Tenant-scoped callers see only events whose tenants lie within their own. Events written
-- before this migration are NULL: account-wide, so hidden from tenant-scoped callers.
ALTER TABLE audit_events ADD COLUMN tenant_ids JSONB;

-- Facts about the deployment itself, one row per name. `hash_secret_fingerprint` holds an HMAC
-- fingerprint of the hash secret (never the secret), so that a process started with another
-- secret can refuse to start (SPEC §2). Not audited, not in the change log.
CREATE TABLE keygate_meta (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

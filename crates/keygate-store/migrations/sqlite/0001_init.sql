-- keygate's schema for SQLite. Keep it in step with ../postgres/0001_init.sql: same tables,
-- columns and constraint names; only the types differ.
--
-- Timestamps are TEXT in sqlx's RFC 3339 form (`2026-04-20T15:42:11+00:00`). keygate writes whole
-- seconds in UTC only, so comparing them as text compares them as times.
-- JSON columns are TEXT holding JSON; booleans are 0/1.

CREATE TABLE accounts (
    id                    TEXT    NOT NULL PRIMARY KEY,
    name                  TEXT    NOT NULL,
    status                TEXT    NOT NULL,
    operator              BOOLEAN NOT NULL DEFAULT 0,
    allowed_ips           TEXT    NOT NULL DEFAULT '[]',
    rate_limit_per_minute INTEGER NOT NULL,
    created_at            TEXT    NOT NULL,
    updated_at            TEXT    NOT NULL
);

-- At most one operator account.
CREATE UNIQUE INDEX accounts_one_operator ON accounts (operator) WHERE operator;

CREATE TABLE tenants (
    id          TEXT NOT NULL PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    name        TEXT NOT NULL,
    external_id TEXT,
    status      TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    CONSTRAINT tenants_external_id_unique UNIQUE (account_id, external_id)
);

CREATE INDEX tenants_account_id ON tenants (account_id, id);

CREATE TABLE api_keys (
    id                    TEXT    NOT NULL PRIMARY KEY,
    account_id            TEXT    NOT NULL REFERENCES accounts (id),
    name                  TEXT    NOT NULL,
    prefix                TEXT    NOT NULL,
    environment           TEXT    NOT NULL,
    -- HMAC-SHA256 of the plaintext; the plaintext is never stored.
    key_hash              BLOB    NOT NULL,
    last4                 TEXT    NOT NULL,
    -- NULL = unrestricted / every tenant / any IP; a JSON array otherwise ([] for allowed_ips
    -- means no IP at all).
    scopes                TEXT,
    tenant_ids            TEXT,
    allowed_ips           TEXT,
    rate_limit_per_minute INTEGER NOT NULL,
    expires_at            TEXT,
    revoked_at            TEXT,
    revoked_reason        TEXT,
    last_used_at          TEXT,
    last_used_ip          TEXT,
    metadata              TEXT    NOT NULL DEFAULT '{}',
    created_at            TEXT    NOT NULL,
    created_by            TEXT,
    updated_at            TEXT    NOT NULL,
    CONSTRAINT api_keys_key_hash_unique UNIQUE (key_hash)
);

CREATE INDEX api_keys_account_id ON api_keys (account_id, id);

-- Append-only. No foreign key: the log outlives what it describes.
CREATE TABLE audit_events (
    id          TEXT NOT NULL PRIMARY KEY,
    account_id  TEXT NOT NULL,
    action      TEXT NOT NULL,
    actor_type  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    request_id  TEXT,
    changes     TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE INDEX audit_events_account_id ON audit_events (account_id, id);

-- The change log every node follows to evict its caches. AUTOINCREMENT: a seq is never reused,
-- even after the newest rows are purged.
CREATE TABLE changes (
    seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    entity_id  TEXT    NOT NULL,
    account_id TEXT    NOT NULL,
    at         TEXT    NOT NULL
);

CREATE INDEX changes_at ON changes (at);

-- keygate's schema for PostgreSQL. Keep it in step with ../sqlite/0001_init.sql: same tables,
-- columns and constraint names; only the types differ.
--
-- Ids are TEXT COLLATE "C": lists page by `id < $before ORDER BY id DESC`, and ULIDs sort by
-- time only byte-wise, whatever the database's default collation.

CREATE TABLE accounts (
    id                    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name                  TEXT        NOT NULL,
    status                TEXT        NOT NULL,
    operator              BOOLEAN     NOT NULL DEFAULT FALSE,
    allowed_ips           JSONB       NOT NULL DEFAULT '[]',
    rate_limit_per_minute BIGINT      NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);

-- At most one operator account.
CREATE UNIQUE INDEX accounts_one_operator ON accounts (operator) WHERE operator;

CREATE TABLE tenants (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    account_id  TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    name        TEXT        NOT NULL,
    external_id TEXT,
    status      TEXT        NOT NULL,
    metadata    JSONB       NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT tenants_external_id_unique UNIQUE (account_id, external_id)
);

CREATE INDEX tenants_account_id ON tenants (account_id, id);

CREATE TABLE api_keys (
    id                    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    account_id            TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    name                  TEXT        NOT NULL,
    prefix                TEXT        NOT NULL,
    environment           TEXT        NOT NULL,
    -- HMAC-SHA256 of the plaintext; the plaintext is never stored.
    key_hash              BYTEA       NOT NULL,
    last4                 TEXT        NOT NULL,
    -- NULL = unrestricted / every tenant / any IP; a JSON array otherwise ([] for allowed_ips
    -- means no IP at all).
    scopes                JSONB,
    tenant_ids            JSONB,
    allowed_ips           JSONB,
    rate_limit_per_minute BIGINT      NOT NULL,
    expires_at            TIMESTAMPTZ,
    revoked_at            TIMESTAMPTZ,
    revoked_reason        TEXT,
    last_used_at          TIMESTAMPTZ,
    last_used_ip          TEXT,
    metadata              JSONB       NOT NULL DEFAULT '{}',
    created_at            TIMESTAMPTZ NOT NULL,
    created_by            TEXT,
    updated_at            TIMESTAMPTZ NOT NULL,
    CONSTRAINT api_keys_key_hash_unique UNIQUE (key_hash)
);

CREATE INDEX api_keys_account_id ON api_keys (account_id, id);

-- Append-only. No foreign key: the log outlives what it describes.
CREATE TABLE audit_events (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    account_id  TEXT COLLATE "C" NOT NULL,
    action      TEXT        NOT NULL,
    actor_type  TEXT        NOT NULL,
    actor_id    TEXT        NOT NULL,
    target_type TEXT        NOT NULL,
    target_id   TEXT        NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    request_id  TEXT,
    changes     JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX audit_events_account_id ON audit_events (account_id, id);

-- The change log every node follows to evict its caches. Writers take a transaction-scoped
-- advisory lock before inserting here, so seq order is commit order (see sql/postgres.rs).
CREATE TABLE changes (
    seq        BIGSERIAL   NOT NULL PRIMARY KEY,
    kind       TEXT        NOT NULL,
    entity_id  TEXT        NOT NULL,
    account_id TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);

CREATE INDEX changes_at ON changes (at);

-- Dashboard users, their sign-in sessions and one-time sign-in tokens (SPEC §8). Keep it in step
-- with ../sqlite/0006_users.sql: same tables, columns and constraint names; only the types
-- differ.
--
-- Audited like every other write, but not in the change log: nothing caches them.

CREATE TABLE users (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    account_id      TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    -- As the user typed it; `email_lower` is its lower-cased form (written by keygate, not by
    -- SQL, so both backends fold case alike), which makes emails unique per account whatever
    -- their case, and is what sign-in looks up.
    email           TEXT        NOT NULL,
    email_lower     TEXT        NOT NULL,
    role            TEXT        NOT NULL,
    -- An argon2id PHC string; NULL until the user sets a password (sign-in by one-time link).
    password_hash   TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    last_sign_in_at TIMESTAMPTZ,
    CONSTRAINT users_email_lower_unique UNIQUE (account_id, email_lower),
    CONSTRAINT users_role CHECK (role IN ('viewer', 'developer', 'admin', 'owner'))
);

CREATE INDEX users_account_id ON users (account_id, id);
-- Sign-in: one email, any account.
CREATE INDEX users_email_lower ON users (email_lower);

-- The cookie holds a random token; only its SHA-256 is stored. A session is deleted with its
-- user (by the store, in the same transaction) and purged once revoked or expired. The purge
-- scans the table: it is small, and the purge runs in the background.
CREATE TABLE sessions (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    account_id   TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    token_hash   BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    -- The absolute end of the session, whatever its activity.
    expires_at   TIMESTAMPTZ NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    revoked_at   TIMESTAMPTZ,
    CONSTRAINT sessions_token_hash_unique UNIQUE (token_hash),
    CONSTRAINT sessions_token_hash_length CHECK (length(token_hash) = 32)
);

CREATE INDEX sessions_user_id ON sessions (user_id, id);

-- One-time sign-in links: the SHA-256 of the token the link carries. Consuming one deletes it.
CREATE TABLE sign_in_tokens (
    token_hash BYTEA       NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    expires_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT sign_in_tokens_token_hash_pkey PRIMARY KEY (token_hash),
    CONSTRAINT sign_in_tokens_token_hash_length CHECK (length(token_hash) = 32)
);

CREATE INDEX sign_in_tokens_user_id ON sign_in_tokens (user_id);
CREATE INDEX sign_in_tokens_expires_at ON sign_in_tokens (expires_at);

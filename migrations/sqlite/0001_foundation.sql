-- Foundation schema (SQLite). Times are Unix seconds (INTEGER); identifiers are UUID text.
-- The PostgreSQL schema in ../postgres mirrors this one exactly, column for column.

CREATE TABLE accounts (
    id                    TEXT PRIMARY KEY NOT NULL,
    kind                  TEXT NOT NULL CHECK (kind IN ('professional', 'patient', 'administrator')),
    login                 TEXT NOT NULL,
    id_nat                TEXT,
    email                 TEXT,
    given_name            TEXT,
    family_name           TEXT,
    status                TEXT NOT NULL CHECK (status IN ('invited', 'active', 'disabled')),
    locale                TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    last_authenticated_at INTEGER
);
CREATE UNIQUE INDEX accounts_login ON accounts (login);
CREATE UNIQUE INDEX accounts_id_nat ON accounts (id_nat) WHERE id_nat IS NOT NULL;
CREATE INDEX accounts_last_authenticated ON accounts (last_authenticated_at);

-- Factors and secrets: password hashes, encrypted TOTP seeds, hashed recovery codes, WebAuthn keys.
CREATE TABLE credentials (
    id           TEXT PRIMARY KEY NOT NULL,
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    name         TEXT,
    secret       BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX credentials_account ON credentials (account_id, kind);

CREATE TABLE invitations (
    token_hash TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE clients (
    client_id   TEXT PRIMARY KEY NOT NULL,
    metadata    TEXT NOT NULL,
    secret_hash TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Refresh-token families: one row per grant (a code redemption); each rotation replaces the current
-- token hash and remembers the previous ones so that reuse revokes the family.
CREATE TABLE grants (
    id            TEXT PRIMARY KEY NOT NULL,
    account_id    TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    client_id     TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    session_id    TEXT,
    scope         TEXT NOT NULL,
    claims        TEXT NOT NULL,
    auth_time     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX grants_account ON grants (account_id);
CREATE INDEX grants_session ON grants (session_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    grant_id    TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE consents (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, client_id)
);

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    private_sealed BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    activates_at   INTEGER NOT NULL,
    retired_at     INTEGER
);

-- Foundation schema (PostgreSQL). Times are Unix seconds (BIGINT); identifiers are UUID text.
-- The SQLite schema in ../sqlite mirrors this one exactly, column for column.

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
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    last_authenticated_at BIGINT
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
    secret       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX credentials_account ON credentials (account_id, kind);

CREATE TABLE invitations (
    token_hash TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE clients (
    client_id   TEXT PRIMARY KEY NOT NULL,
    metadata    TEXT NOT NULL,
    secret_hash TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
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
    auth_time     BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX grants_account ON grants (account_id);
CREATE INDEX grants_session ON grants (session_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    grant_id    TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE consents (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, client_id)
);

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    private_sealed BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    activates_at   BIGINT NOT NULL,
    retired_at     BIGINT
);

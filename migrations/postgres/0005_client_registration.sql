-- Dynamic client registration (RFC 7591) and its management protocol (RFC 7592).
-- Tokens are stored as the SHA-256 (hex) of their value, never in clear.

-- Initial access tokens: issued by administrators (`habilis client registration-token issue`), each
-- allowing `max_uses` registrations before `expires_at`, unless revoked first.
CREATE TABLE initial_access_tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    description  TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    max_uses     BIGINT NOT NULL CHECK (max_uses >= 1),
    uses         BIGINT NOT NULL DEFAULT 0,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

-- Clients that registered themselves: the registration access token that manages each one
-- (RFC 7592) and the initial access token it was registered with. Removed with the client.
CREATE TABLE client_registrations (
    client_id         TEXT PRIMARY KEY NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    access_token_hash TEXT NOT NULL,
    initial_token_id  TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

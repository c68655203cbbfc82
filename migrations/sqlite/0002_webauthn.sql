-- WebAuthn credentials (security keys and passkeys). The credential id is unique across accounts;
-- `passkey` is the webauthn-rs credential (public key, sign counter, backup flags) as JSON.
CREATE TABLE webauthn_credentials (
    credential_id TEXT PRIMARY KEY NOT NULL,
    account_id    TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    passkey       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX webauthn_credentials_account ON webauthn_credentials (account_id);

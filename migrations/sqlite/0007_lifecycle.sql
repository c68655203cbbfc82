-- Inactive accounts (CNIL rule) and the scheduled jobs' lease. See idp/src/lifecycle.

-- When the owner last objected to the deletion of their inactive account ("keep my account"):
-- the inactivity clock counts from the latest of last_authenticated_at, kept_at and created_at.
ALTER TABLE accounts ADD COLUMN kept_at INTEGER;

-- One row per scheduled job: whoever holds an unexpired lease runs it, so that several instances
-- (or a CLI run beside a server) never act at once. Taken by one conditional upsert.
CREATE TABLE job_leases (
    name  TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    until INTEGER NOT NULL
);

-- The warnings of an inactivity period (the period is named by the activity time it counts
-- from): the primary key makes each stage's warning claimable once, so it is never sent twice.
-- channel is 'email' or 'none' (no reachable channel: reported and audited, not sent).
CREATE TABLE inactivity_warnings (
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    activity_at INTEGER NOT NULL,
    stage       INTEGER NOT NULL,
    deletion_at INTEGER NOT NULL,
    sent_at     INTEGER NOT NULL,
    channel     TEXT NOT NULL,
    PRIMARY KEY (account_id, activity_at, stage)
);

-- Single-use "keep my account" links: only the SHA-256 of the token is stored; a link expires at
-- the deletion date it announced.
CREATE TABLE keep_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX keep_tokens_account ON keep_tokens (account_id);
CREATE INDEX accounts_created ON accounts (created_at);

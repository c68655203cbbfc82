-- Ephemeral entries that must not be lost with the ephemeral store (issue 19): revocation markers
-- (an access token's jti, a revoked grant) and account/address lockouts. The ephemeral store keeps
-- the copy every request reads; this table is written first and restores that copy when the
-- ephemeral store comes back empty (a restart of the in-memory store, Redis restarted or flushed).
-- key is the ephemeral key, value its value, expires_at (Unix seconds) when it stops mattering:
-- expired rows are purged by the lifecycle job.
CREATE TABLE durable_markers (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX durable_markers_expiry ON durable_markers (expires_at);

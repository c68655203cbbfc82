-- The durable, hash-chained audit log (see idp/src/audit/chain.rs for what each hash covers).
-- Records are appended by one transaction per batch that locks the head row, so that every writer
-- (several instances on PostgreSQL, the CLI beside a running server on SQLite) extends one chain.

-- seq is the rowid (INTEGER PRIMARY KEY): reading in seq order walks the table itself.
CREATE TABLE audit_records (
    seq              INTEGER PRIMARY KEY NOT NULL,
    time             INTEGER NOT NULL,
    event            TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    client_id        TEXT,
    request_id       TEXT,
    acr              TEXT,
    actor            TEXT,
    subject          TEXT,
    ip               TEXT,
    user_agent       TEXT,
    details          TEXT NOT NULL,
    personal_digest  TEXT NOT NULL,
    pseudonymised_at INTEGER,
    prev_hash        TEXT NOT NULL,
    hash             TEXT NOT NULL
);
CREATE INDEX audit_records_time ON audit_records (time);
CREATE INDEX audit_records_actor ON audit_records (actor);
CREATE INDEX audit_records_subject ON audit_records (subject);
CREATE INDEX audit_records_event ON audit_records (event, seq);

-- The head of the chain: the last record's seq and hash (0 and the genesis value when empty). It
-- stays after a purge, so that new records keep linking to the purged ones.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Signed checkpoints: "the chain had hash at seq" (compact JWS).
CREATE TABLE audit_checkpoints (
    seq  INTEGER PRIMARY KEY NOT NULL,
    hash TEXT NOT NULL,
    time INTEGER NOT NULL,
    kid  TEXT NOT NULL,
    jws  TEXT NOT NULL
);

-- Signed anchors left by purges: the log verifies from record seq + 1.
CREATE TABLE audit_anchors (
    seq            INTEGER PRIMARY KEY NOT NULL,
    hash           TEXT NOT NULL,
    time           INTEGER NOT NULL,
    records        INTEGER NOT NULL,
    archive_sha256 TEXT NOT NULL,
    kid            TEXT NOT NULL,
    jws            TEXT NOT NULL
);

-- The keys that signed checkpoints and anchors, copied from signing_keys on first use (those are
-- purged after rotation; the audit log outlives them). private_sealed is sealed under the master
-- key with the kid as AAD, exactly as in signing_keys.
CREATE TABLE audit_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    private_sealed BLOB NOT NULL,
    created_at     INTEGER NOT NULL
);

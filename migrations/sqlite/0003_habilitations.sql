-- Habilitations: what a professional may do for which patient, and why. Holds identification
-- data only (an INS or an app-local identifier), never health data.

-- A professional's practice data (professions, activities, organisations) as the JSON of
-- habilitation::professional::PracticeRecord: the source of the Pro Santé Connect–compatible claims.
CREATE TABLE professionals (
    account_id TEXT PRIMARY KEY NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    practice   TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE organisations (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL,
    identifier_type TEXT,
    identifier      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX organisations_identifier ON organisations (identifier_type, identifier) WHERE identifier IS NOT NULL;

-- A patient is identified either by an INS (value + OID of its kind) or by an identifier local to
-- one app, namespaced by the client that owns it. account_id links the patient's own login, if any.
CREATE TABLE patients (
    id         TEXT PRIMARY KEY NOT NULL,
    ins_value  TEXT,
    ins_oid    TEXT,
    local_id   TEXT,
    namespace  TEXT,
    account_id TEXT REFERENCES accounts (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    CHECK ((ins_value IS NOT NULL AND ins_oid IS NOT NULL) OR (local_id IS NOT NULL AND namespace IS NOT NULL))
);
CREATE UNIQUE INDEX patients_ins ON patients (ins_value, ins_oid) WHERE ins_value IS NOT NULL;
CREATE UNIQUE INDEX patients_local ON patients (namespace, local_id) WHERE local_id IS NOT NULL;
CREATE INDEX patients_account ON patients (account_id) WHERE account_id IS NOT NULL;

-- professional <-> patient. status is 'active' or 'revoked'; 'expired' is derived from valid_until
-- at read time, so no job has to run for an expiry to take effect.
CREATE TABLE relationships (
    id              TEXT PRIMARY KEY NOT NULL,
    professional_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    patient_id      TEXT NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    organisation_id TEXT REFERENCES organisations (id) ON DELETE SET NULL,
    valid_from      INTEGER NOT NULL,
    valid_until     INTEGER,
    status          TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    source_client   TEXT,
    source_actor    TEXT NOT NULL,
    evidence        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    revoked_by      TEXT
);
CREATE INDEX relationships_professional_patient ON relationships (professional_id, patient_id);
CREATE INDEX relationships_patient ON relationships (patient_id);

-- Administrator-defined habilitation profiles (habilitation::policy::ProfileSpec as JSON).
CREATE TABLE habilitation_profiles (
    name         TEXT PRIMARY KEY NOT NULL,
    description  TEXT NOT NULL,
    spec         TEXT NOT NULL,
    max_duration INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

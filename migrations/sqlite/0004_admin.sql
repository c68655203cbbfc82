-- Administration: roles of administrators, departments of organisations and which organisation
-- an account belongs to (what organisation administrators are limited to).

-- Organisations can be disabled (kept with their members, but no new member or role is added)
-- and remember their last change. updated_at 0 means "never changed since creation".
ALTER TABLE organisations ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE organisations ADD COLUMN disabled_at INTEGER;

CREATE TABLE departments (
    id              TEXT PRIMARY KEY NOT NULL,
    organisation_id TEXT NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX departments_name ON departments (organisation_id, name);

-- account <-> organisation (optionally one of its departments). Practice data in `professionals`
-- describes where a professional practises; this table says which organisation administers the
-- account, which is what authorisation needs.
CREATE TABLE organisation_members (
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    organisation_id TEXT NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    department_id   TEXT REFERENCES departments (id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (account_id, organisation_id)
);
CREATE INDEX organisation_members_organisation ON organisation_members (organisation_id);

-- Role grants. An account may hold several; organisation_id is set exactly for org_admin.
-- Accounts of kind 'administrator' are platform administrators without a row here.
CREATE TABLE admin_roles (
    id              TEXT PRIMARY KEY NOT NULL,
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('platform_admin', 'org_admin', 'auditor')),
    organisation_id TEXT REFERENCES organisations (id) ON DELETE CASCADE,
    granted_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    CHECK ((role = 'org_admin') = (organisation_id IS NOT NULL))
);
CREATE UNIQUE INDEX admin_roles_grant ON admin_roles (account_id, role, COALESCE(organisation_id, ''));
CREATE INDEX admin_roles_organisation ON admin_roles (organisation_id) WHERE organisation_id IS NOT NULL;

-- Profile assignments: which professionals hold a habilitation profile whose spec says
-- `requires_assignment` (such a profile permits only for its holders). organisation_id NULL is a
-- platform-wide assignment; otherwise it holds only for the relationships of that organisation.
-- Deleting the account, the profile or the organisation deletes its assignments, so that a profile
-- re-created under the same name starts with no holder.
CREATE TABLE profile_assignments (
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    profile_name    TEXT NOT NULL REFERENCES habilitation_profiles (name) ON DELETE CASCADE,
    organisation_id TEXT REFERENCES organisations (id) ON DELETE CASCADE,
    assigned_by     TEXT NOT NULL,
    assigned_at     INTEGER NOT NULL
);
-- One assignment per (account, profile, organisation or none); it also serves the lookup by account
-- that decisions make beside the relationships.
CREATE UNIQUE INDEX profile_assignments_key ON profile_assignments (account_id, profile_name, COALESCE(organisation_id, ''));
CREATE INDEX profile_assignments_profile ON profile_assignments (profile_name);
CREATE INDEX profile_assignments_organisation ON profile_assignments (organisation_id) WHERE organisation_id IS NOT NULL;

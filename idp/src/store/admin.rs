//! Durable administration data: role grants, organisations as administrators see them (with
//! departments and members), account search and the account-wide operations of the admin API. A
//! seam of its own ([`AdminStore`]), like the habilitation data; the SQL implementation lives beside
//! the main one (`sql`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Account, AccountKind, AccountStatus, Grant, Relationship, RelationshipStatus, StoreResult, UnixTime};

/// An administration role. Stored as its snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Everything, everywhere.
    PlatformAdmin,
    /// Accounts, departments and memberships of one organisation.
    OrgAdmin,
    /// Reads everything (audit included), changes nothing.
    Auditor,
}

impl AdminRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::PlatformAdmin => "platform_admin",
            AdminRole::OrgAdmin => "org_admin",
            AdminRole::Auditor => "auditor",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "platform_admin" => Some(AdminRole::PlatformAdmin),
            "org_admin" => Some(AdminRole::OrgAdmin),
            "auditor" => Some(AdminRole::Auditor),
            _ => None,
        }
    }
}

/// One role held by one account; `organisation_id` is set exactly for [`AdminRole::OrgAdmin`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleGrant {
    pub id: String,
    pub account_id: String,
    pub role: AdminRole,
    pub organisation_id: Option<String>,
    /// Who granted it (`account:<id>`, `client:<id>` or `cli`).
    pub granted_by: String,
    pub created_at: UnixTime,
}

/// An organisation with its administrative state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganisationRecord {
    pub id: String,
    pub name: String,
    pub identifier_type: Option<String>,
    pub identifier: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    pub disabled_at: Option<UnixTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Department {
    pub id: String,
    pub organisation_id: String,
    pub name: String,
    pub created_at: UnixTime,
}

/// An account's attachment to an organisation (and maybe one of its departments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub account_id: String,
    pub organisation_id: String,
    pub department_id: Option<String>,
    pub created_at: UnixTime,
}

/// Which accounts to list. Results are ordered by login (unique), so `after_login` is a stable
/// keyset cursor.
#[derive(Clone, Debug, Default)]
pub struct AccountFilter {
    /// Lower-case `LIKE` pattern (already escaped with `\`) over login, email and names.
    pub pattern: Option<String>,
    pub kind: Option<AccountKind>,
    pub status: Option<AccountStatus>,
    pub organisation_id: Option<String>,
    pub after_login: Option<String>,
    pub limit: i64,
}

/// Which organisations to list, ordered by (name, id).
#[derive(Clone, Debug, Default)]
pub struct OrganisationFilter {
    /// Lower-case `LIKE` pattern (already escaped with `\`) over the name.
    pub pattern: Option<String>,
    /// Keyset cursor: the (name, id) of the last organisation of the previous page.
    pub after: Option<(String, String)>,
    pub limit: i64,
}

/// Which relationships administrators list, newest first ((created_at, id) descending).
#[derive(Clone, Debug, Default)]
pub struct RelationshipSearch {
    pub professional_id: Option<String>,
    pub patient_id: Option<String>,
    pub organisation_id: Option<String>,
    /// The status at `now` (`expired` is an active relationship past its `valid_until`).
    pub status: Option<RelationshipStatus>,
    pub now: UnixTime,
    /// Keyset cursor: the (created_at, id) of the last relationship of the previous page.
    pub before: Option<(UnixTime, String)>,
    pub limit: i64,
}

#[async_trait]
pub trait AdminStore: Send + Sync {
    // Roles
    /// Stores a grant; the same (account, role, organisation) twice is `Conflict`.
    async fn insert_role(&self, grant: &RoleGrant) -> StoreResult<()>;
    async fn role(&self, id: &str) -> StoreResult<Option<RoleGrant>>;
    async fn delete_role(&self, id: &str) -> StoreResult<bool>;
    async fn roles_of(&self, account_id: &str) -> StoreResult<Vec<RoleGrant>>;
    /// Every grant, or those of one organisation; ordered by creation.
    async fn list_roles(&self, organisation_id: Option<&str>) -> StoreResult<Vec<RoleGrant>>;

    // Organisations (creation is `HabilitationStore::insert_organisation`)
    async fn organisation_record(&self, id: &str) -> StoreResult<Option<OrganisationRecord>>;
    async fn search_organisations(&self, filter: &OrganisationFilter) -> StoreResult<Vec<OrganisationRecord>>;
    /// Replaces name, identifier and disabled state; returns whether it exists.
    async fn update_organisation(&self, organisation: &OrganisationRecord) -> StoreResult<bool>;
    /// Deletes an organisation that has no member left; `None` when it does not exist,
    /// `Some(false)` when it still has members.
    async fn delete_organisation(&self, id: &str) -> StoreResult<Option<bool>>;

    // Departments
    /// A name already used in the organisation is `Conflict`.
    async fn insert_department(&self, department: &Department) -> StoreResult<()>;
    async fn departments_of(&self, organisation_id: &str) -> StoreResult<Vec<Department>>;
    async fn delete_department(&self, organisation_id: &str, id: &str) -> StoreResult<bool>;

    // Memberships
    /// Adds or moves (department) the account's membership of the organisation.
    async fn upsert_membership(&self, membership: &Membership) -> StoreResult<()>;
    async fn delete_membership(&self, account_id: &str, organisation_id: &str) -> StoreResult<bool>;
    async fn memberships_of(&self, account_id: &str) -> StoreResult<Vec<Membership>>;

    // Accounts
    async fn search_accounts(&self, filter: &AccountFilter) -> StoreResult<Vec<Account>>;
    /// Grants of the account that are neither revoked nor expired at `now`, newest first.
    async fn active_grants_of(&self, account_id: &str, now: UnixTime) -> StoreResult<Vec<Grant>>;
    /// Removes every security key and passkey of the account; returns how many.
    async fn delete_webauthn_credentials_of(&self, account_id: &str) -> StoreResult<u64>;

    // Relationships (written through `HabilitationStore`)
    async fn search_relationships(&self, search: &RelationshipSearch) -> StoreResult<Vec<Relationship>>;
}

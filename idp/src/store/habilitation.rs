//! Durable habilitation data: professionals' practice records, organisations, patients,
//! relationships and profiles. A seam of its own ([`HabilitationStore`]) so that the login and token
//! code never sees these tables; the SQL implementation lives beside the main one (`sql`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{StoreResult, UnixTime};

/// How a patient is identified: a national health identity (INS, with the OID of its kind) or an
/// identifier local to one app, namespaced by the client that owns it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PatientIdentity {
    Ins { value: String, oid: String },
    Local { local_id: String, namespace: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patient {
    pub id: String,
    pub identity: PatientIdentity,
    /// The patient's own login account, when the patient signs in to an app.
    pub account_id: Option<String>,
    pub created_at: UnixTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    pub identifier_type: Option<String>,
    pub identifier: Option<String>,
    pub created_at: UnixTime,
}

/// The stored status; `expired` is derived from `valid_until` when read ([`Relationship::status_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelationshipStatus {
    Active,
    Revoked,
    Expired,
}

impl RelationshipStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RelationshipStatus::Active => "active",
            RelationshipStatus::Revoked => "revoked",
            RelationshipStatus::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relationship {
    pub id: String,
    pub professional_id: String,
    pub patient_id: String,
    pub kind: String,
    pub organisation_id: Option<String>,
    pub valid_from: UnixTime,
    pub valid_until: Option<UnixTime>,
    /// Stored status: `Active` or `Revoked` (never `Expired`; see [`Relationship::status_at`]).
    pub status: RelationshipStatus,
    /// The client through which it was created.
    pub source_client: Option<String>,
    /// Who created it: `account:<id>` (e.g. the patient) or `client:<id>`.
    pub source_actor: String,
    /// Why it exists, as JSON (e.g. the patient's authenticated request and its token id).
    pub evidence: String,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
    pub revoked_by: Option<String>,
}

impl Relationship {
    /// The status as of `now`: a relationship past its end is expired even if nobody revoked it.
    pub fn status_at(&self, now: UnixTime) -> RelationshipStatus {
        match self.status {
            RelationshipStatus::Active if self.valid_until.is_some_and(|until| now >= until) => {
                RelationshipStatus::Expired
            }
            status => status,
        }
    }
}

/// How a professional is named in a lookup.
#[derive(Clone, Copy, Debug)]
pub enum ProfessionalKey<'a> {
    AccountId(&'a str),
    /// The login (the idNat for professionals).
    Login(&'a str),
}

/// The identities of a batch lookup as the JSON array the SQL reads (`[{"v","o"} | {"l","n"}]`).
pub fn identities_json(identities: &[PatientIdentity]) -> String {
    let items: Vec<serde_json::Value> = identities
        .iter()
        .map(|i| match i {
            PatientIdentity::Ins { value, oid } => serde_json::json!({"v": value, "o": oid}),
            PatientIdentity::Local { local_id, namespace } => serde_json::json!({"l": local_id, "n": namespace}),
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Which relationships to list. At least one of the two ids is set by callers.
#[derive(Clone, Debug, Default)]
pub struct RelationshipFilter {
    pub professional_id: Option<String>,
    pub patient_id: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// A relationship found by [`HabilitationStore::relationships_with_patients`]: the identity it
/// matched and, when asked for, the profiles assigned to its professional that hold for it
/// (platform-wide, or in the relationship's organisation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationshipMatch {
    pub identity: PatientIdentity,
    pub relationship: Relationship,
    /// Profile names, sorted; empty when assignments were not asked for.
    pub assigned_profiles: Vec<String>,
}

/// A professional holds a profile that requires assignment: everywhere (`organisation_id` None) or
/// for the relationships of one organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileAssignment {
    pub account_id: String,
    pub profile_name: String,
    pub organisation_id: Option<String>,
    /// Who assigned it: `account:<id>` or `client:<id>`.
    pub assigned_by: String,
    pub assigned_at: UnixTime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRecord {
    pub name: String,
    pub description: String,
    /// `habilitation::policy::ProfileSpec` as JSON.
    pub spec: String,
    pub max_duration: Option<i64>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

#[async_trait]
pub trait HabilitationStore: Send + Sync {
    // Professionals' practice data
    async fn upsert_practice(&self, account_id: &str, practice: &str, now: UnixTime) -> StoreResult<()>;
    async fn practice_of(&self, account_id: &str) -> StoreResult<Option<String>>;

    // Organisations
    async fn insert_organisation(&self, organisation: &Organisation) -> StoreResult<()>;
    async fn organisation(&self, id: &str) -> StoreResult<Option<Organisation>>;

    // Patients
    /// Stores a new patient; an identity already known is `Conflict`.
    async fn insert_patient(&self, patient: &Patient) -> StoreResult<()>;
    async fn patient_by_identity(&self, identity: &PatientIdentity) -> StoreResult<Option<Patient>>;
    async fn patient_by_id(&self, id: &str) -> StoreResult<Option<Patient>>;
    /// Links a patient record to the patient's login account (first link wins).
    async fn link_patient_account(&self, patient_id: &str, account_id: &str) -> StoreResult<bool>;
    async fn patients_of_account(&self, account_id: &str) -> StoreResult<Vec<Patient>>;

    // Relationships
    async fn insert_relationship(&self, relationship: &Relationship) -> StoreResult<()>;
    async fn relationship(&self, id: &str) -> StoreResult<Option<Relationship>>;
    /// Every relationship of a professional (an active professional account, named by id or by
    /// login) with the patients of these identities, in one read: the hot path of every
    /// habilitation decision. Each relationship comes with the identity it matched and, with
    /// `with_assignments`, the profiles assigned to the professional for it (same read).
    async fn relationships_with_patients(
        &self,
        professional: ProfessionalKey<'_>,
        identities: &[PatientIdentity],
        with_assignments: bool,
    ) -> StoreResult<Vec<RelationshipMatch>>;
    async fn list_relationships(&self, filter: &RelationshipFilter) -> StoreResult<Vec<Relationship>>;
    /// Revokes an active relationship; false when it was not active.
    async fn revoke_relationship(&self, id: &str, by: &str, at: UnixTime) -> StoreResult<bool>;
    /// Ends an active relationship at `until` (an expiry); false when it was not active.
    async fn expire_relationship(&self, id: &str, until: UnixTime, at: UnixTime) -> StoreResult<bool>;

    // Profiles
    async fn upsert_profile(&self, profile: &ProfileRecord) -> StoreResult<()>;
    async fn profiles(&self) -> StoreResult<Vec<ProfileRecord>>;
    async fn delete_profile(&self, name: &str) -> StoreResult<bool>;
    /// (count, latest change): instances compare it to reload profiles changed elsewhere.
    async fn profiles_version(&self) -> StoreResult<(i64, UnixTime)>;

    // Profile assignments
    /// Stores an assignment; false when the account already holds it (the first one is kept).
    async fn assign_profile(&self, assignment: &ProfileAssignment) -> StoreResult<bool>;
    /// Removes an assignment; false when there was none.
    async fn unassign_profile(
        &self,
        account_id: &str,
        profile_name: &str,
        organisation_id: Option<&str>,
    ) -> StoreResult<bool>;
    /// The account's assignments, by profile then organisation (platform-wide first).
    async fn assignments_of_account(&self, account_id: &str) -> StoreResult<Vec<ProfileAssignment>>;
    /// The holders of a profile, by account then organisation, a page at a time.
    async fn assignments_of_profile(
        &self,
        profile_name: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<ProfileAssignment>>;
}

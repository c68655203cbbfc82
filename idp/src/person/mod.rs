//! Personal data of one person (GDPR access and erasure; DOMAIN.md "HDS hosting / GDPR"):
//! [`export`] gathers everything Habilis holds on an account — never a secret nor a hash — and
//! [`delete_person`] deletes the account, the one deletion shared by erasure on request and the
//! inactive-account rule (`crate::lifecycle`).
//!
//! Deleting a person: their relationships as a professional end (revoked and audited as
//! `relationship_ended`), their grants are revoked and browser sessions ended (tokens stop working
//! at once), the account row is deleted and the schema's cascades remove its factors, passkeys,
//! invitations, grants and refresh tokens, consents, practice data, memberships, roles and
//! lifecycle rows; patient records linked to the account are unlinked (they identify a patient for
//! the professionals' apps and stay). The audit log keeps its records, with the person replaced by
//! a random pseudonym in every record about them (`AuditStore::pseudonymise`: the chain still
//! verifies), and records `account_deleted` under that pseudonym.

pub mod cli;

use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::accounts::{AccountView, MembershipView};
use crate::admin::roles::RoleView;
use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::habilitation::relationships::RelationshipView;
use crate::store::{Account, RelationshipFilter, RelationshipStatus, StoreError, StoredAuditRecord};

#[derive(Debug, thiserror::Error)]
pub enum PersonError {
    #[error("no such account")]
    NotFound,
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// A step of the deletion failed (ending a relationship, revoking a grant…).
    #[error("{step}: {reason}")]
    Step { step: &'static str, reason: String },
}

impl From<PersonError> for crate::error::OAuthError {
    fn from(e: PersonError) -> Self {
        match e {
            PersonError::NotFound => {
                crate::error::OAuthError::new(crate::error::OAuthErrorCode::NotFound, "no such account")
            }
            PersonError::Store(e) => e.into(),
            PersonError::Step { step, reason } => {
                tracing::error!(step, %reason, "person: deletion step failed");
                crate::error::OAuthError::server_error()
            }
        }
    }
}

fn step(step: &'static str) -> impl Fn(crate::error::OAuthError) -> PersonError {
    move |e| PersonError::Step { step, reason: e.description.to_string() }
}

/// Why an account is deleted, as `account_deleted` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionReason {
    /// The inactive-account rule.
    Inactive,
    /// Erasure on request (`habilis person erase`, the admin API).
    Erasure,
}

impl DeletionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionReason::Inactive => "inactive",
            DeletionReason::Erasure => "erasure",
        }
    }
}

/// What a deletion did.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Deletion {
    /// Replaces the account in the audit log from now on.
    pub pseudonym: String,
    /// Relationships (as a professional) that were active and were revoked.
    pub relationships_ended: u64,
    /// Grants (tokens of applications) that were active and were revoked.
    pub grants_revoked: u64,
    /// Audit records about the person that were pseudonymised.
    pub audit_records_pseudonymised: u64,
}

/// The strings that identify the account in audit records' details: what pseudonymisation replaces.
pub fn identifiers(account: &Account) -> Vec<String> {
    let mut ids = vec![account.id.clone(), account.login.clone()];
    ids.extend(account.id_nat.clone());
    ids.extend(account.email.clone());
    ids.sort();
    ids.dedup();
    ids.retain(|s| !s.is_empty());
    ids
}

/// A fresh pseudonym: random, so that it links nothing outside the log.
pub fn new_pseudonym() -> String {
    format!("pseudonym:{}", uuid::Uuid::new_v4())
}

/// Deletes `account` (see the module documentation) and records `account_deleted` (and, for an
/// erasure, `person_erased`) with `actor`. Effects carry the real time.
pub async fn delete_person(
    state: &AppState,
    account: &Account,
    reason: DeletionReason,
    actor: &str,
    context: AuditContext,
) -> Result<Deletion, PersonError> {
    let now = crate::unix_now();
    let relationships_ended = end_relationships(state, &account.id, actor, &context, now).await?;
    let grants_revoked = crate::oidc::token::end_all_access_of(state, &account.id, now)
        .await
        .map_err(step("revoking the grants and ending the browser sessions"))?;
    // Every record about the person must be in the durable log before it is pseudonymised.
    audit_trail::flush(state).await;
    if !state.store.lifecycle().delete_account(&account.id).await? {
        return Err(PersonError::NotFound);
    }
    let pseudonym = new_pseudonym();
    let audit_records_pseudonymised =
        audit_trail::pseudonymise(state, &account.id, &pseudonym, &identifiers(account), now).await?;
    state.audit.record(
        AuditEvent::AccountDeleted {
            pseudonym: pseudonym.clone(),
            reason: reason.as_str().to_string(),
            actor: actor.to_string(),
            relationships_ended,
        },
        context.clone(),
    );
    if reason == DeletionReason::Erasure {
        state.audit.record(
            AuditEvent::PersonErased {
                pseudonym: pseudonym.clone(),
                actor: actor.to_string(),
                audit_records: audit_records_pseudonymised,
            },
            context,
        );
    }
    tracing::info!(%pseudonym, reason = reason.as_str(), relationships_ended, "person: account deleted");
    Ok(Deletion { pseudonym, relationships_ended, grants_revoked: grants_revoked as u64, audit_records_pseudonymised })
}

/// Revokes every active relationship where the account is the professional (through the domain
/// operation: cache invalidation and `relationship_ended` included). Returns how many.
async fn end_relationships(
    state: &AppState,
    account_id: &str,
    actor: &str,
    context: &AuditContext,
    now: i64,
) -> Result<u64, PersonError> {
    let mut ended = 0;
    for relationship in relationships_of(state, Some(account_id), None).await? {
        if relationship.status_at(now) != RelationshipStatus::Active {
            continue;
        }
        crate::habilitation::relationships::end(state, &relationship, actor, None, context.clone(), now)
            .await
            .map_err(step("ending a relationship"))?;
        ended += 1;
    }
    Ok(ended)
}

/// Every relationship of a professional account or of a patient record, in pages.
async fn relationships_of(
    state: &AppState,
    professional_id: Option<&str>,
    patient_id: Option<&str>,
) -> Result<Vec<crate::store::Relationship>, PersonError> {
    // A filter without either id would list everybody's.
    if professional_id.is_none() && patient_id.is_none() {
        return Ok(Vec::new());
    }
    const PAGE: i64 = 500;
    let mut all = Vec::new();
    loop {
        let filter = RelationshipFilter {
            professional_id: professional_id.map(str::to_string),
            patient_id: patient_id.map(str::to_string),
            limit: PAGE,
            offset: all.len() as i64,
        };
        let page = state.store.habilitations().list_relationships(&filter).await?;
        let last = (page.len() as i64) < PAGE;
        all.extend(page);
        if last {
            return Ok(all);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Export

/// Everything Habilis holds on a person. Secrets and their hashes are never in it: factors and
/// passkeys are described by kind, name and dates only.
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonExport {
    /// Unix seconds.
    pub exported_at: i64,
    pub account: AccountView,
    /// Password, authenticator app (TOTP), recovery codes… (metadata only).
    pub factors: Vec<FactorInfo>,
    /// Security keys and passkeys (metadata only).
    pub passkeys: Vec<PasskeyInfo>,
    /// Consents given to applications.
    pub consents: Vec<ConsentInfo>,
    /// Authorizations given to applications (revoked and expired ones included).
    pub grants: Vec<GrantInfo>,
    pub organisations: Vec<MembershipView>,
    pub roles: Vec<RoleView>,
    /// A professional's practice data (professions, activities, organisations), as stored.
    #[schema(value_type = Option<Object>)]
    pub practice: Option<serde_json::Value>,
    /// Relationships where the person is the professional.
    pub relationships: Vec<RelationshipView>,
    /// Patient records linked to the account (the person as a patient), with their relationships.
    pub patients: Vec<PatientInfo>,
    pub inactivity: InactivityInfo,
    /// Every audit record whose actor or subject is the person, oldest first.
    pub audit: Vec<AuditEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FactorInfo {
    /// `password`, `totp`, `recovery_code`…
    pub kind: String,
    pub name: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyInfo {
    pub credential_id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentInfo {
    pub client_id: String,
    pub scope: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantInfo {
    pub client_id: String,
    pub scope: String,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatientInfo {
    pub id: String,
    /// `{"ins": {"value", "oid"}}` or `{"local_id", "namespace"}`.
    #[schema(value_type = Object)]
    pub identity: serde_json::Value,
    pub created_at: i64,
    pub relationships: Vec<RelationshipView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InactivityInfo {
    /// What the inactivity clock counts from (Unix seconds).
    pub activity_at: i64,
    /// The last objection to a deletion ("keep my account").
    pub kept_at: Option<i64>,
    /// When the account is deleted if it stays unused (before any warning is sent).
    pub deletion_due_at: i64,
    pub warnings: Vec<WarningInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WarningInfo {
    /// 1: the warning, 2: the reminder.
    pub stage: i64,
    pub sent_at: i64,
    pub deletion_at: i64,
    /// `email`, or `none` (no reachable channel).
    pub channel: String,
}

/// One audit record about the person.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub time: i64,
    pub event: String,
    pub outcome: String,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub acr: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<StoredAuditRecord> for AuditEntry {
    fn from(r: StoredAuditRecord) -> Self {
        AuditEntry {
            seq: r.seq,
            time: r.time,
            event: r.event,
            outcome: r.outcome,
            actor: r.actor,
            subject: r.subject,
            client_id: r.client_id,
            ip: r.ip,
            user_agent: r.user_agent,
            request_id: r.request_id,
            acr: r.acr,
            details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::String(r.details)),
        }
    }
}

/// Gathers everything held on `account_id` and records `person_exported` with `actor`.
pub async fn export(
    state: &AppState,
    account_id: &str,
    actor: &str,
    context: AuditContext,
) -> Result<PersonExport, PersonError> {
    let now = crate::unix_now();
    let store = &state.store;
    let activity = store.lifecycle().activity_of(account_id).await?.ok_or(PersonError::NotFound)?;
    let account = activity.account.clone();
    let factors = store
        .lifecycle()
        .credential_infos(&account.id)
        .await?
        .into_iter()
        .map(|c| FactorInfo { kind: c.kind, name: c.name, created_at: c.created_at, last_used_at: c.last_used_at })
        .collect();
    let passkeys = store
        .webauthn_credentials_of(&account.id)
        .await?
        .into_iter()
        .map(|k| PasskeyInfo {
            credential_id: k.credential_id,
            name: k.name,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        })
        .collect();
    let consents = store
        .consents_of(&account.id)
        .await?
        .into_iter()
        .map(|c| ConsentInfo {
            client_id: c.client_id,
            scope: c.scope,
            created_at: c.created_at,
            updated_at: c.updated_at,
        })
        .collect();
    let grants = store
        .lifecycle()
        .grants_of(&account.id)
        .await?
        .into_iter()
        .map(|g| GrantInfo {
            client_id: g.client_id,
            scope: g.scope,
            auth_time: g.auth_time,
            created_at: g.created_at,
            expires_at: g.expires_at,
            revoked_at: g.revoked_at,
        })
        .collect();
    let organisations =
        store.admin().memberships_of(&account.id).await?.into_iter().map(MembershipView::from).collect();
    let roles = store.admin().roles_of(&account.id).await?.into_iter().map(RoleView::from).collect();
    let practice = store
        .habilitations()
        .practice_of(&account.id)
        .await?
        .map(|p| serde_json::from_str(&p).unwrap_or(serde_json::Value::String(p)));
    let mut relationships = Vec::new();
    for r in relationships_of(state, Some(&account.id), None).await? {
        if let Some(patient) = store.habilitations().patient_by_id(&r.patient_id).await? {
            relationships.push(crate::habilitation::relationships::view(&r, &account, &patient, now));
        }
    }
    let mut patients = Vec::new();
    for patient in store.habilitations().patients_of_account(&account.id).await? {
        let mut views = Vec::new();
        for r in relationships_of(state, None, Some(&patient.id)).await? {
            if let Some(professional) = store.account_by_id(&r.professional_id).await? {
                views.push(crate::habilitation::relationships::view(&r, &professional, &patient, now));
            }
        }
        patients.push(PatientInfo {
            identity: serde_json::to_value(crate::habilitation::patient::PatientRef::from_identity(&patient.identity))
                .unwrap_or_default(),
            id: patient.id,
            created_at: patient.created_at,
            relationships: views,
        });
    }
    let policy = crate::lifecycle::Policy::from_config(&state.config.lifecycle);
    let inactivity = InactivityInfo {
        activity_at: activity.activity_at(),
        kept_at: activity.kept_at,
        deletion_due_at: activity.activity_at() + policy.inactive_after,
        warnings: store
            .lifecycle()
            .warnings_of(&account.id)
            .await?
            .into_iter()
            .map(|w| WarningInfo { stage: w.stage, sent_at: w.sent_at, deletion_at: w.deletion_at, channel: w.channel })
            .collect(),
    };
    audit_trail::flush(state).await;
    let audit = audit_trail::records_about(state, &account.id).await?.into_iter().map(AuditEntry::from).collect();
    state
        .audit
        .record(AuditEvent::PersonExported { account_id: account.id.clone(), actor: actor.to_string() }, context);
    Ok(PersonExport {
        exported_at: now,
        account: account.into(),
        factors,
        passkeys,
        consents,
        grants,
        organisations,
        roles,
        practice,
        relationships,
        patients,
        inactivity,
        audit,
    })
}

/// The account named by an id or, failing that, a login (CLI).
pub async fn find(state: &AppState, id_or_login: &str) -> Result<Account, PersonError> {
    if let Some(account) = state.store.account_by_id(id_or_login).await? {
        return Ok(account);
    }
    let login = crate::authn::login::normalise_login(id_or_login);
    state.store.account_by_login(&login).await?.ok_or(PersonError::NotFound)
}

/// The durable audit log, as person export and erasure (and the lifecycle and person CLIs) use it.
pub(crate) mod audit_trail {
    use super::PersonError;
    use crate::app::AppState;
    use crate::store::StoredAuditRecord;

    /// Waits until every record recorded so far is in the durable log, so that an export or an
    /// erasure also covers the events of the last moments (e.g. the erasure request itself).
    pub async fn flush(state: &AppState) {
        state.audit.flush().await;
    }

    /// Every record whose actor or subject is `account_id`, oldest first.
    pub async fn records_about(state: &AppState, account_id: &str) -> Result<Vec<StoredAuditRecord>, PersonError> {
        Ok(state.store.audit().records_about(account_id).await?)
    }

    /// Replaces the person by `pseudonym` in every record about them; returns how many changed.
    /// The chain still verifies: each record keeps the digest of its personal fields.
    pub async fn pseudonymise(
        state: &AppState,
        account_id: &str,
        pseudonym: &str,
        identifiers: &[String],
        at: i64,
    ) -> Result<u64, PersonError> {
        Ok(state.store.audit().pseudonymise(account_id, pseudonym, identifiers, at).await?)
    }
}

#[cfg(test)]
mod tests;

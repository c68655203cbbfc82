//! Relationships as domain operations, whoever asks: apps and patients (`relationships_api`,
//! `/api/v1/relationships`) and administrators (`admin::relationships`). The callers decide *who*
//! may act; these functions hold what every channel shares — the checks of a new relationship's
//! terms, patient references, storing, ending, invalidating cached lookups, the audit events and
//! the view.

use serde_json::{Value, json};

use super::patient::PatientRef;
use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{Account, AccountStatus, Patient, PatientIdentity, Relationship, RelationshipStatus};

/// A relationship as the APIs show it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RelationshipView {
    pub id: String,
    /// `{"id_nat", "given_name", "family_name"}` of the professional.
    #[schema(value_type = Object)]
    pub professional: Value,
    #[schema(value_type = Object)]
    pub patient: PatientRef,
    pub kind: String,
    pub organisation_id: Option<String>,
    /// Unix seconds.
    pub valid_from: i64,
    pub valid_until: Option<i64>,
    /// `active`, `revoked` or `expired` (now).
    #[schema(value_type = String)]
    pub status: RelationshipStatus,
    /// `{"client_id", "actor", "evidence"}`: who created it, through which app, and why.
    #[schema(value_type = Object)]
    pub source: Value,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub fn view(r: &Relationship, professional: &Account, patient: &Patient, now: i64) -> RelationshipView {
    RelationshipView {
        id: r.id.clone(),
        professional: json!({
            "id_nat": professional.id_nat,
            "given_name": professional.given_name,
            "family_name": professional.family_name,
        }),
        patient: PatientRef::from_identity(&patient.identity),
        kind: r.kind.clone(),
        organisation_id: r.organisation_id.clone(),
        valid_from: r.valid_from,
        valid_until: r.valid_until,
        status: r.status_at(now),
        source: json!({
            "client_id": r.source_client,
            "actor": r.source_actor,
            "evidence": serde_json::from_str::<Value>(&r.evidence).unwrap_or(Value::Null),
        }),
        created_at: r.created_at,
        revoked_at: r.revoked_at,
    }
}

/// The view of a stored relationship, with its professional and patient read from the store;
/// `None` when either is gone.
pub async fn view_of(state: &AppState, r: &Relationship, now: i64) -> Result<Option<RelationshipView>, OAuthError> {
    let professional = state.store.account_by_id(&r.professional_id).await?;
    let patient = state.store.habilitations().patient_by_id(&r.patient_id).await?;
    Ok(match (professional, patient) {
        (Some(professional), Some(patient)) => Some(view(r, &professional, &patient, now)),
        _ => None,
    })
}

/// Checks that `kind` is one of `habilitation.relationship_kinds`.
pub fn check_kind(state: &AppState, kind: &str) -> Result<(), OAuthError> {
    let kinds = &state.habilitations.relationship_kinds;
    if !kinds.iter().any(|k| k == kind) {
        return Err(OAuthError::invalid_request(format!("kind must be one of {}", kinds.join(", "))));
    }
    Ok(())
}

/// An active (or invited) professional to relate a patient to; a disabled one is refused.
pub async fn professional_by_id_nat(state: &AppState, id_nat: &str) -> Result<Account, OAuthError> {
    let account = super::professional_by_id_nat(state, id_nat).await?;
    if account.status == AccountStatus::Disabled {
        return Err(OAuthError::invalid_request("this professional's account is disabled"));
    }
    Ok(account)
}

/// A patient reference from a request, parsed and validated (`patient: …` errors).
pub fn parse_patient(state: &AppState, value: &Value) -> Result<PatientRef, OAuthError> {
    let reference = PatientRef::parse(value).map_err(|e| OAuthError::invalid_request(format!("patient: {e}")))?;
    reference
        .validate(state.habilitations.production)
        .map_err(|e| OAuthError::invalid_request(format!("patient: {e}")))?;
    Ok(reference)
}

/// Stores a new patient record for `identity`; one created concurrently is used instead.
pub async fn insert_patient(state: &AppState, identity: PatientIdentity, now: i64) -> Result<Patient, OAuthError> {
    let patient =
        Patient { id: uuid::Uuid::new_v4().to_string(), identity: identity.clone(), account_id: None, created_at: now };
    match state.store.habilitations().insert_patient(&patient).await {
        Ok(()) => Ok(patient),
        // Created concurrently by another request: use that one.
        Err(crate::store::StoreError::Conflict { .. }) => {
            state.store.habilitations().patient_by_identity(&identity).await?.ok_or_else(OAuthError::server_error)
        }
        Err(e) => Err(e.into()),
    }
}

/// The terms of a new relationship, as requested.
pub struct Terms {
    pub kind: String,
    pub organisation_id: Option<String>,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
}

/// Who creates it and why: recorded with the relationship and in the audit event.
pub struct Origin {
    /// The app it was created through, if any.
    pub client_id: Option<String>,
    /// `client:<id>` or `account:<id>`.
    pub actor: String,
    pub evidence: Value,
    pub context: AuditContext,
}

/// Checks `terms` (kind, validity period against `habilitation.max_relationship_duration`, a known
/// organisation), stores the relationship, invalidates cached lookups and records
/// `relationship_created`.
pub async fn create(
    state: &AppState,
    professional: &Account,
    patient: &Patient,
    terms: Terms,
    origin: Origin,
    now: i64,
) -> Result<Relationship, OAuthError> {
    check_kind(state, &terms.kind)?;
    let valid_from = terms.valid_from.unwrap_or(now);
    let valid_until = terms.valid_until;
    if valid_until.is_some_and(|until| until <= valid_from.max(now)) {
        return Err(OAuthError::invalid_request("valid_until must be in the future and after valid_from"));
    }
    if let Some(max) = state.config.habilitation.max_relationship_duration {
        let limit = valid_from + max.as_secs() as i64;
        if valid_until.is_none_or(|until| until > limit) {
            return Err(OAuthError::invalid_request(format!(
                "valid_until is required and at most {} after valid_from (habilitation.max_relationship_duration)",
                humantime::format_duration(max)
            )));
        }
    }
    if let Some(org) = &terms.organisation_id
        && state.store.habilitations().organisation(org).await?.is_none()
    {
        return Err(OAuthError::invalid_request("organisation_id names no known organisation"));
    }
    let relationship = Relationship {
        id: uuid::Uuid::new_v4().to_string(),
        professional_id: professional.id.clone(),
        patient_id: patient.id.clone(),
        kind: terms.kind,
        organisation_id: terms.organisation_id,
        valid_from,
        valid_until,
        status: RelationshipStatus::Active,
        source_client: origin.client_id,
        source_actor: origin.actor.clone(),
        evidence: origin.evidence.to_string(),
        created_at: now,
        updated_at: now,
        revoked_at: None,
        revoked_by: None,
    };
    state.store.habilitations().insert_relationship(&relationship).await?;
    state.habilitations.relationships_changed().await;
    state.audit.record(
        AuditEvent::RelationshipCreated {
            relationship_id: relationship.id.clone(),
            professional_id: professional.id.clone(),
            patient_id: patient.id.clone(),
            kind: relationship.kind.clone(),
            actor: origin.actor,
            evidence: relationship.evidence.clone(),
        },
        origin.context,
    );
    Ok(relationship)
}

/// Revokes (`until: None`) or ends at `until` a relationship the caller may manage (the caller
/// checked that), invalidates cached lookups and records `relationship_ended`. Returns it as now
/// stored. Already revoked or expired: 400 saying so.
pub async fn end(
    state: &AppState,
    relationship: &Relationship,
    actor: &str,
    until: Option<i64>,
    context: AuditContext,
    now: i64,
) -> Result<Relationship, OAuthError> {
    let store = state.store.habilitations();
    let id = &relationship.id;
    let changed = match until {
        None => store.revoke_relationship(id, actor, now).await?,
        Some(until) => {
            if until < now {
                return Err(OAuthError::invalid_request("valid_until cannot be in the past"));
            }
            // Ending a relationship never extends it (nor escapes max_relationship_duration).
            if relationship.valid_until.is_some_and(|current| current > now && until > current) {
                return Err(OAuthError::invalid_request("valid_until cannot be later than the current end"));
            }
            store.expire_relationship(id, until, now).await?
        }
    };
    state.habilitations.relationships_changed().await;
    if !changed {
        return Err(OAuthError::invalid_request(format!(
            "the relationship is already {}",
            relationship.status_at(now).as_str()
        )));
    }
    let updated = store
        .relationship(id)
        .await?
        .ok_or_else(|| OAuthError::new(OAuthErrorCode::NotFound, "no such relationship"))?;
    state.audit.record(
        AuditEvent::RelationshipEnded {
            relationship_id: id.clone(),
            actor: actor.to_string(),
            status: if until.is_some() { "expired".into() } else { "revoked".into() },
        },
        context,
    );
    Ok(updated)
}

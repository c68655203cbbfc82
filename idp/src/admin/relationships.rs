//! Professional–patient relationships in the admin API (`/api/admin/v1/relationships`): search,
//! show, create, revoke. The operations are the domain's (`habilitation::relationships`, shared
//! with the apps' `/api/v1/relationships`): same checks of kind, validity and organisation, same
//! cache invalidation, same `relationship_created` / `relationship_ended` events — plus an
//! `admin_relationship_changed` event with the state before and after.
//!
//! A relationship belongs to its organisation (`organisation_id`): organisation administrators
//! see, create and revoke only those of their organisations; one without an organisation is
//! platform-wide. Platform administrators do everything, auditors read.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::{Actor, PageQuery, actor, audit_context, authorize, encode_cursor, json_body, query, split_page};
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::habilitation::patient::PatientRef;
use crate::habilitation::relationships::{
    self as domain, Origin, RelationshipView, Terms, insert_patient, parse_patient, professional_by_id_nat,
};
use crate::store::{Relationship, RelationshipSearch, RelationshipStatus};

pub const PATH: &str = "/api/admin/v1/relationships";
pub const ITEM_PATH: &str = "/api/admin/v1/relationships/{id}";
pub const REVOKE_PATH: &str = "/api/admin/v1/relationships/{id}/revoke";

const REASON_MAX: usize = 500;

/// A page of relationships, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelationshipPage {
    pub items: Vec<RelationshipView>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RelationshipQuery {
    /// idNat of the professional.
    pub professional: Option<String>,
    /// The patient's INS (with `ins_oid`).
    pub ins_value: Option<String>,
    pub ins_oid: Option<String>,
    /// The patient's local identifier (with `namespace`, the client_id of the app that owns it).
    pub local_id: Option<String>,
    pub namespace: Option<String>,
    /// Organisation id. An organisation administrator of one organisation searches it by default.
    pub organisation: Option<String>,
    /// `active`, `revoked` or `expired`.
    pub status: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfessionalId {
    pub id_nat: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRelationship {
    pub professional: ProfessionalId,
    /// `{"ins": {"value", "oid"}}` or `{"local_id", "namespace"}` (namespace: a registered client_id).
    #[schema(value_type = Object)]
    pub patient: Value,
    /// One of `habilitation.relationship_kinds`.
    pub kind: String,
    /// Required from organisation administrators (one of theirs); the professional must be a member.
    #[serde(default)]
    pub organisation_id: Option<String>,
    /// Unix seconds (default: now).
    #[serde(default)]
    pub valid_from: Option<i64>,
    #[serde(default)]
    pub valid_until: Option<i64>,
    /// Why the relationship exists (kept as its evidence, at most 500 characters).
    #[serde(default)]
    pub reason: Option<String>,
}

fn target(organisation: Option<&str>) -> TargetFacts {
    TargetFacts::of("relationship", organisation)
}

fn not_found() -> OAuthError {
    OAuthError::new(OAuthErrorCode::NotFound, "no such relationship")
}

fn parse_status(text: &str) -> Result<RelationshipStatus, OAuthError> {
    match text {
        "active" => Ok(RelationshipStatus::Active),
        "revoked" => Ok(RelationshipStatus::Revoked),
        "expired" => Ok(RelationshipStatus::Expired),
        _ => Err(OAuthError::invalid_request("status must be active, revoked or expired")),
    }
}

/// The patient named by a query: `ins_value` + `ins_oid` or `local_id` + `namespace`.
fn patient_filter(q: &RelationshipQuery) -> Result<Option<Value>, OAuthError> {
    match (&q.ins_value, &q.ins_oid, &q.local_id, &q.namespace) {
        (Some(value), Some(oid), None, None) => Ok(Some(json!({"ins": {"value": value, "oid": oid}}))),
        (None, None, Some(local_id), Some(namespace)) => {
            Ok(Some(json!({"local_id": local_id, "namespace": namespace})))
        }
        (None, None, None, None) => Ok(None),
        _ => Err(OAuthError::invalid_request("name the patient by ins_value + ins_oid or by local_id + namespace")),
    }
}

fn audit_relationship(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    change: &str,
    before: Option<&RelationshipView>,
    after: &RelationshipView,
) {
    state.audit.record(
        AuditEvent::AdminRelationshipChanged {
            relationship_id: after.id.clone(),
            organisation_id: after.organisation_id.clone(),
            actor: actor.id.clone(),
            change: change.to_string(),
            before: before.and_then(super::snapshot),
            after: super::snapshot(after),
        },
        audit_context(headers),
    );
}

async fn load(state: &AppState, id: &str) -> Result<Relationship, OAuthError> {
    state.store.habilitations().relationship(id).await?.ok_or_else(not_found)
}

async fn view_of(state: &AppState, r: &Relationship, now: i64) -> Result<RelationshipView, OAuthError> {
    domain::view_of(state, r, now).await?.ok_or_else(not_found)
}

#[utoipa::path(
    get, path = PATH, tag = "relationships", params(RelationshipQuery),
    responses(
        (status = 200, description = "A page of relationships, newest first", body = RelationshipPage),
        (status = 400, description = "Invalid filter, limit or cursor", body = ErrorBody),
        (status = 403, description = "Another organisation (or none named by an organisation administrator)",
            body = ErrorBody),
        (status = 404, description = "No professional has this idNat", body = ErrorBody),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<RelationshipPage>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let q: RelationshipQuery = query(&uri)?;
    let page = PageQuery { limit: q.limit, cursor: q.cursor.clone() };
    let limit = page.limit()?;
    let status = q.status.as_deref().map(parse_status).transpose()?;
    let patient = patient_filter(&q)?;
    // An organisation administrator of exactly one organisation searches it unless told otherwise.
    let organisation = match &q.organisation {
        Some(org) => Some(org.clone()),
        None => {
            let everything = state.admin_policy.evaluate(&actor.facts, Operation::Read, &target(None)).allowed;
            match actor.facts.organisations.as_slice() {
                [only] if !everything => Some(only.clone()),
                _ => None,
            }
        }
    };
    let what =
        organisation.as_deref().map_or("all relationships".into(), |o| format!("relationships of organisation {o}"));
    authorize(&state, &headers, &actor, Operation::Read, &target(organisation.as_deref()), &what)?;
    let before = match page.cursor(2)? {
        None => None,
        Some(parts) => {
            let at = parts[0]
                .parse::<i64>()
                .map_err(|_| OAuthError::invalid_request("cursor is not one this API returned"))?;
            Some((at, parts[1].clone()))
        }
    };
    let mut search = RelationshipSearch {
        organisation_id: organisation,
        status,
        now,
        before,
        limit: limit + 1,
        ..Default::default()
    };
    if let Some(id_nat) = &q.professional {
        search.professional_id = Some(crate::habilitation::professional_by_id_nat(&state, id_nat).await?.id);
    }
    if let Some(value) = patient {
        let reference = parse_patient(&state, &value)?;
        match state.store.habilitations().patient_by_identity(&reference.identity()).await? {
            Some(p) => search.patient_id = Some(p.id),
            None => return Ok(Json(RelationshipPage { items: Vec::new(), next_cursor: None })),
        }
    }
    let (rows, more) = split_page(state.store.admin().search_relationships(&search).await?, limit);
    let next_cursor = more.then(|| rows.last().map(|r| encode_cursor(&[&r.created_at.to_string(), &r.id]))).flatten();
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Some(view) = domain::view_of(&state, r, now).await? {
            items.push(view);
        }
    }
    Ok(Json(RelationshipPage { items, next_cursor }))
}

#[utoipa::path(
    get, path = ITEM_PATH, tag = "relationships", params(("id" = String, Path, description = "Relationship id")),
    responses(
        (status = 200, description = "The relationship", body = RelationshipView),
        (status = 403, description = "Another organisation", body = ErrorBody),
        (status = 404, description = "No such relationship", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RelationshipView>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let relationship = load(&state, &id).await?;
    let what = format!("relationship {id}");
    authorize(&state, &headers, &actor, Operation::Read, &target(relationship.organisation_id.as_deref()), &what)?;
    Ok(Json(view_of(&state, &relationship, now).await?))
}

#[utoipa::path(
    post, path = PATH, tag = "relationships", request_body = NewRelationship,
    responses(
        (status = 201, description = "Created", body = RelationshipView),
        (status = 400, description = "Invalid kind, patient, period, organisation or reason", body = ErrorBody),
        (status = 403, description = "Another organisation, or none named by an organisation administrator",
            body = ErrorBody),
        (status = 404, description = "No professional has this idNat", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let request: NewRelationship = json_body(&body)?;
    let organisation = request.organisation_id.clone();
    let what =
        organisation.as_deref().map_or("new relationship".into(), |o| format!("new relationship in organisation {o}"));
    authorize(&state, &headers, &actor, Operation::Write, &target(organisation.as_deref()), &what)?;
    domain::check_kind(&state, &request.kind)?;
    let reason = match request.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) if r.chars().count() > REASON_MAX || r.chars().any(char::is_control) => {
            return Err(OAuthError::invalid_request(format!(
                "reason must be at most {REASON_MAX} printable characters"
            )));
        }
        other => other.map(str::to_owned),
    };
    let professional = professional_by_id_nat(&state, &request.professional.id_nat).await?;
    if let Some(org) = &organisation {
        if state.store.admin().organisation_record(org).await?.is_none() {
            return Err(OAuthError::invalid_request("organisation_id names no known organisation"));
        }
        let memberships = state.store.admin().memberships_of(&professional.id).await?;
        if !memberships.iter().any(|m| &m.organisation_id == org) {
            return Err(OAuthError::invalid_request("the professional is not a member of this organisation"));
        }
    }
    let reference = parse_patient(&state, &request.patient)?;
    if let PatientRef::Local { namespace, .. } = &reference
        && state.clients.get(namespace).await?.is_none()
    {
        return Err(OAuthError::invalid_request(
            "patient: a local identifier's namespace must be the client_id of a registered app",
        ));
    }
    let patient = match state.store.habilitations().patient_by_identity(&reference.identity()).await? {
        Some(p) => p,
        None => insert_patient(&state, reference.identity(), now).await?,
    };
    let terms = Terms {
        kind: request.kind,
        organisation_id: organisation,
        valid_from: request.valid_from,
        valid_until: request.valid_until,
    };
    let origin = Origin {
        client_id: None,
        actor: actor.id.clone(),
        evidence: json!({"type": "admin_request", "actor": actor.id, "reason": reason}),
        context: audit_context(&headers),
    };
    let relationship = domain::create(&state, &professional, &patient, terms, origin, now).await?;
    let view = domain::view(&relationship, &professional, &patient, now);
    audit_relationship(&state, &headers, &actor, "created", None, &view);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    post, path = REVOKE_PATH, tag = "relationships", params(("id" = String, Path, description = "Relationship id")),
    responses(
        (status = 200, description = "Revoked: no token is granted through it any more", body = RelationshipView),
        (status = 400, description = "Already revoked or expired", body = ErrorBody),
        (status = 403, description = "Another organisation", body = ErrorBody),
        (status = 404, description = "No such relationship", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RelationshipView>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let relationship = load(&state, &id).await?;
    let what = format!("relationship {id}");
    authorize(&state, &headers, &actor, Operation::Write, &target(relationship.organisation_id.as_deref()), &what)?;
    let before = view_of(&state, &relationship, now).await?;
    let updated = domain::end(&state, &relationship, &actor.id, None, audit_context(&headers), now).await?;
    let after = view_of(&state, &updated, now).await?;
    audit_relationship(&state, &headers, &actor, "revoked", Some(&before), &after);
    Ok(Json(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_patient_filters_are_checked() {
        assert_eq!(parse_status("expired").unwrap(), RelationshipStatus::Expired);
        assert!(parse_status("ended").unwrap_err().description.contains("active, revoked or expired"));
        let q = RelationshipQuery { ins_value: Some("x".into()), ..Default::default() };
        assert!(patient_filter(&q).unwrap_err().description.contains("ins_value + ins_oid"));
        let q = RelationshipQuery { local_id: Some("1".into()), namespace: Some("app".into()), ..Default::default() };
        assert_eq!(patient_filter(&q).unwrap(), Some(json!({"local_id": "1", "namespace": "app"})));
    }
}

//! The relationships API for apps: create, list, revoke and end professional–patient
//! relationships. Callers present a Habilis access token with the `relationships` scope:
//! - an app's back end (client credentials) manages the relationships it created, and creates
//!   patients only in its own namespace;
//! - a patient, with their own token, solicits a professional for themselves (e.g. a second
//!   opinion) and revokes what they solicited: the request is recorded as the evidence.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::patient::PatientRef;
pub use super::relationships::RelationshipView;
use super::relationships::{
    self as domain, Origin, Terms, insert_patient, parse_patient, professional_by_id_nat, view,
};
use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::authorize::RELATIONSHIPS_SCOPE;
use crate::oidc::tokens::AccessClaims;
use crate::store::{Account, AccountKind, AccountStatus, Patient, RelationshipFilter};

pub const PATH: &str = "/api/v1/relationships";
const MAX_PAGE: i64 = 200;

/// Who calls the API.
enum Caller {
    /// An app's back end acting on its own behalf.
    App { client_id: String },
    /// A patient acting for themselves through an app.
    Patient { client_id: String, account: Box<Account>, claims: Box<AccessClaims> },
}

impl Caller {
    fn actor(&self) -> String {
        match self {
            Caller::App { client_id } => format!("client:{client_id}"),
            Caller::Patient { account, .. } => format!("account:{}", account.id),
        }
    }
    fn client_id(&self) -> &str {
        match self {
            Caller::App { client_id } | Caller::Patient { client_id, .. } => client_id,
        }
    }
}

async fn caller(state: &AppState, headers: &HeaderMap, now: i64) -> Result<Caller, OAuthError> {
    let claims = super::api_token(state, headers, now).await?;
    if !claims.has_scope(RELATIONSHIPS_SCOPE) {
        return Err(OAuthError::new(
            OAuthErrorCode::InsufficientScope,
            "the access token lacks the relationships scope",
        )
        .with_challenge("Bearer"));
    }
    let client_id = claims.client_id.clone();
    let Some(account_id) = claims.account_id().map(str::to_string) else {
        return Ok(Caller::App { client_id });
    };
    let account = match state.store.account_by_id(&account_id).await? {
        Some(a) if a.status == AccountStatus::Active => a,
        _ => return Err(OAuthError::new(OAuthErrorCode::InvalidToken, "the account behind this token is disabled")),
    };
    if account.kind != AccountKind::Patient {
        return Err(OAuthError::new(
            OAuthErrorCode::AccessDenied,
            "with a user's token only patients manage relationships (for themselves); apps use client credentials",
        ));
    }
    Ok(Caller::Patient { client_id, account: Box::new(account), claims: Box::new(claims) })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRelationship {
    pub professional: ProfessionalRef,
    /// Optional for a patient's own request when they already have a patient record.
    #[serde(default)]
    pub patient: Option<Value>,
    pub kind: String,
    #[serde(default)]
    pub organisation_id: Option<String>,
    #[serde(default)]
    pub valid_from: Option<i64>,
    #[serde(default)]
    pub valid_until: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfessionalRef {
    pub id_nat: String,
}

fn api_error(error: OAuthError) -> Response {
    error.into_response()
}

pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let now = crate::unix_now();
    match create_inner(&state, &headers, &body, now).await {
        Ok(view) => (StatusCode::CREATED, Json(view)).into_response(),
        Err(e) => api_error(e),
    }
}

async fn create_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<RelationshipView, OAuthError> {
    let caller = caller(state, headers, now).await?;
    let request: CreateRelationship = serde_json::from_slice(body)
        .map_err(|e| OAuthError::invalid_request(format!("the body must be a relationship request: {e}")))?;
    domain::check_kind(state, &request.kind)?;
    let professional = professional_by_id_nat(state, &request.professional.id_nat).await?;
    let patient = resolve_patient(state, &caller, request.patient.as_ref(), now).await?;
    let evidence = match &caller {
        Caller::App { client_id } => json!({"type": "app_request", "client_id": client_id}),
        Caller::Patient { client_id, account, claims } => json!({
            "type": "patient_request",
            "patient_account": account.id,
            "client_id": client_id,
            "token_id": claims.jti,
            "acr": claims.acr,
            "auth_time": claims.auth_time,
        }),
    };
    let terms = Terms {
        kind: request.kind,
        organisation_id: request.organisation_id,
        valid_from: request.valid_from,
        valid_until: request.valid_until,
    };
    let origin = Origin {
        client_id: Some(caller.client_id().to_string()),
        actor: caller.actor(),
        evidence,
        context: context(headers, &caller),
    };
    let relationship = domain::create(state, &professional, &patient, terms, origin, now).await?;
    Ok(view(&relationship, &professional, &patient, now))
}

fn context(headers: &HeaderMap, caller: &Caller) -> AuditContext {
    AuditContext { client_id: Some(caller.client_id().to_string()), ..AuditContext::from_request(headers, None) }
}

/// The patient record the request names. An app's record is created on first use (local
/// identifiers only in the app's own namespace); a patient may only name a record linked to them.
async fn resolve_patient(
    state: &AppState,
    caller: &Caller,
    requested: Option<&Value>,
    now: i64,
) -> Result<Patient, OAuthError> {
    let store = state.store.habilitations();
    let reference = match requested {
        Some(value) => Some(parse_patient(state, value)?),
        None => None,
    };
    if let Some(PatientRef::Local { namespace, .. }) = &reference
        && namespace != caller.client_id()
    {
        return Err(OAuthError::new(
            OAuthErrorCode::AccessDenied,
            "a local patient identifier must use the calling application's client_id as namespace",
        ));
    }
    let existing = match &reference {
        Some(r) => store.patient_by_identity(&r.identity()).await?,
        None => None,
    };
    match caller {
        Caller::App { .. } => {
            let reference = reference.ok_or_else(|| OAuthError::invalid_request("patient is required"))?;
            match existing {
                Some(p) => Ok(p),
                None => insert_patient(state, reference.identity(), now).await,
            }
        }
        Caller::Patient { account, .. } => {
            // Habilis cannot tell whose an INS is: only an app that verified its user's identity
            // links a patient record to the account (POST /api/v1/patients). A patient acts only
            // for a record linked to them, never claims or creates one.
            let own = store.patients_of_account(&account.id).await?;
            match (reference, existing) {
                (None, _) if own.len() == 1 => Ok(own.into_iter().next().expect("one record")),
                (None, _) if own.is_empty() => Err(OAuthError::new(
                    OAuthErrorCode::AccessDenied,
                    "no patient record is linked to this account yet: the application links it first",
                )),
                (None, _) => Err(OAuthError::invalid_request(
                    "several patient records are linked to this account: name the patient",
                )),
                (Some(_), Some(p)) if p.account_id.as_deref() == Some(account.id.as_str()) => Ok(p),
                (Some(_), _) => Err(not_yours()),
            }
        }
    }
}

fn not_yours() -> OAuthError {
    OAuthError::new(
        OAuthErrorCode::AccessDenied,
        "a patient may only act for the patient record an application linked to their account",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// idNat of the professional.
    pub professional: Option<String>,
    pub ins_value: Option<String>,
    pub ins_oid: Option<String>,
    pub local_id: Option<String>,
    pub namespace: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let now = crate::unix_now();
    let result = async {
        let Query(query) = query.map_err(|e| OAuthError::invalid_request(format!("bad query: {}", e.body_text())))?;
        let caller = caller(&state, &headers, now).await?;
        list_inner(&state, &caller, query, now).await
    }
    .await;
    match result {
        Ok(items) => Json(json!({ "relationships": items })).into_response(),
        Err(e) => api_error(e),
    }
}

async fn list_inner(
    state: &AppState,
    caller: &Caller,
    query: ListQuery,
    now: i64,
) -> Result<Vec<RelationshipView>, OAuthError> {
    let store = state.store.habilitations();
    let mut filter = RelationshipFilter {
        limit: query.limit.unwrap_or(50).clamp(1, MAX_PAGE),
        offset: query.offset.unwrap_or(0).max(0),
        ..Default::default()
    };
    if let Some(id_nat) = &query.professional {
        filter.professional_id = Some(professional_by_id_nat(state, id_nat).await?.id);
    }
    let patient_value = match (&query.ins_value, &query.ins_oid, &query.local_id, &query.namespace) {
        (Some(value), Some(oid), None, None) => Some(json!({"ins": {"value": value, "oid": oid}})),
        (None, None, Some(local_id), Some(namespace)) => Some(json!({"local_id": local_id, "namespace": namespace})),
        (None, None, None, None) => None,
        _ => {
            return Err(OAuthError::invalid_request("name the patient by ins_value + ins_oid or local_id + namespace"));
        }
    };
    if let Some(value) = patient_value {
        let reference = parse_patient(state, &value)?;
        match store.patient_by_identity(&reference.identity()).await? {
            Some(p) => filter.patient_id = Some(p.id),
            None => return Ok(Vec::new()),
        }
    }
    if let Caller::Patient { account, .. } = caller {
        // A patient sees their own relationships only.
        let own = store.patients_of_account(&account.id).await?;
        match (&filter.patient_id, own.first()) {
            (Some(id), _) if !own.iter().any(|p| &p.id == id) => return Err(not_yours()),
            (None, Some(p)) => filter.patient_id = Some(p.id.clone()),
            (None, None) => return Ok(Vec::new()),
            _ => {}
        }
    } else if filter.professional_id.is_none() && filter.patient_id.is_none() {
        return Err(OAuthError::invalid_request("name a professional (professional=idNat) or a patient"));
    }
    let mut out = Vec::new();
    for r in store.list_relationships(&filter).await? {
        // An app sees the relationships it created; a patient sees all of their own.
        if let Caller::App { client_id } = caller
            && r.source_client.as_deref() != Some(client_id.as_str())
        {
            continue;
        }
        let (Some(professional), Some(patient)) =
            (state.store.account_by_id(&r.professional_id).await?, store.patient_by_id(&r.patient_id).await?)
        else {
            continue;
        };
        out.push(view(&r, &professional, &patient, now));
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    /// For `expire`: when it ends (default: now).
    #[serde(default)]
    pub valid_until: Option<i64>,
}

pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    end(state, headers, id, None).await
}

pub async fn expire(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request: EndRequest = if body.is_empty() {
        EndRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return api_error(OAuthError::invalid_request(format!("the body must be {{\"valid_until\"}}: {e}")));
            }
        }
    };
    end(state, headers, id, Some(request)).await
}

/// Revokes (`expire: None`) or ends at a time (`expire: Some`) a relationship the caller may manage.
async fn end(state: AppState, headers: HeaderMap, id: String, expire: Option<EndRequest>) -> Response {
    let now = crate::unix_now();
    let result = async {
        let caller = caller(&state, &headers, now).await?;
        let store = state.store.habilitations();
        let not_found = || OAuthError::new(OAuthErrorCode::NotFound, "no such relationship");
        let relationship = store.relationship(&id).await?.ok_or_else(not_found)?;
        let allowed = match &caller {
            Caller::App { client_id } => relationship.source_client.as_deref() == Some(client_id.as_str()),
            Caller::Patient { account, .. } => store
                .patient_by_id(&relationship.patient_id)
                .await?
                .is_some_and(|p| p.account_id.as_deref() == Some(account.id.as_str())),
        };
        if !allowed {
            // Not revealing whether it exists to someone who may not manage it.
            return Err(not_found());
        }
        let until = expire.as_ref().map(|request| request.valid_until.unwrap_or(now));
        let updated =
            domain::end(&state, &relationship, &caller.actor(), until, context(&headers, &caller), now).await?;
        let professional = state.store.account_by_id(&updated.professional_id).await?.ok_or_else(not_found)?;
        let patient = store.patient_by_id(&updated.patient_id).await?.ok_or_else(not_found)?;
        Ok(view(&updated, &professional, &patient, now))
    }
    .await;
    match result {
        Ok(view) => Json(view).into_response(),
        Err(e) => api_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkPatient {
    pub patient: Value,
    /// Login of the patient's own account, to link to the record (the app vouches for it).
    #[serde(default)]
    pub account: Option<String>,
}

pub const PATIENTS_PATH: &str = "/api/v1/patients";

/// `POST /api/v1/patients` (apps only): registers a patient record (INS, or a local identifier in
/// the app's namespace) and optionally links it to the patient's own account, after the app has
/// verified that the identity is theirs. The first link wins; linking a record to another account
/// is refused (409).
pub async fn link_patient(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let now = crate::unix_now();
    let result = async {
        let caller = caller(&state, &headers, now).await?;
        let Caller::App { client_id } = &caller else {
            return Err(OAuthError::new(OAuthErrorCode::AccessDenied, "only an application's back end links patients"));
        };
        let request: LinkPatient = serde_json::from_slice(&body)
            .map_err(|e| OAuthError::invalid_request(format!("the body must be {{\"patient\", \"account\"?}}: {e}")))?;
        let patient = resolve_patient(&state, &caller, Some(&request.patient), now).await?;
        let linked = match &request.account {
            None => false,
            Some(login) => {
                let account = match state.store.account_by_login(&login.trim().to_lowercase()).await? {
                    Some(a) if a.kind == AccountKind::Patient => a,
                    _ => return Err(OAuthError::new(OAuthErrorCode::NotFound, "no patient account has this login")),
                };
                match patient.account_id.as_deref() {
                    Some(id) if id == account.id => true,
                    Some(_) => {
                        return Err(OAuthError::new(
                            OAuthErrorCode::Conflict,
                            "this patient record is already linked to another account",
                        ));
                    }
                    None => {
                        if !state.store.habilitations().link_patient_account(&patient.id, &account.id).await? {
                            return Err(OAuthError::new(
                                OAuthErrorCode::Conflict,
                                "this patient record is already linked to another account",
                            ));
                        }
                        state.audit.record(
                            AuditEvent::PatientLinked {
                                patient_id: patient.id.clone(),
                                account_id: account.id.clone(),
                                client_id: client_id.clone(),
                            },
                            context(&headers, &caller),
                        );
                        true
                    }
                }
            }
        };
        Ok(json!({"id": patient.id, "patient": PatientRef::from_identity(&patient.identity), "linked": linked}))
    }
    .await;
    match result {
        Ok(answer) => (StatusCode::OK, Json(answer)).into_response(),
        Err(e) => api_error(e),
    }
}

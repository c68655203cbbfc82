//! The "who would be allowed" preview of a habilitation profile
//! (`POST /api/admin/v1/profiles/{name}/preview`): a candidate profile, not stored (or, without a
//! candidate in the body, the stored profile `name`), is evaluated by the
//! habilitation engine (Cedar, the same code as token issuance) on sample requests — each a
//! stored relationship, or a professional (idNat) and a patient — and the answer says, for each,
//! what the candidate alone would grant or why it would refuse, next to what the profiles in force
//! decide now. Nothing is stored or audited as a decision: it is a read. Platform administrators
//! and auditors (the CRUD of profiles is `habilitation::profiles_api`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::{actor, authorize, json_body};
use crate::app::AppState;
use crate::clients::AcrLevel;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::habilitation::patient::PatientRef;
use crate::habilitation::rar::{GrantedAccess, PatientAccess, TYPE_PATIENT_ACCESS};
use crate::habilitation::relationships::parse_patient;
use crate::habilitation::service::{Denial, HabilitationError, Professional, ProfileDefinition};

pub const PREVIEW_PATH: &str = "/api/admin/v1/profiles/{name}/preview";
pub const MAX_SAMPLES: usize = 50;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The candidate profile, as for `PUT /profiles/{name}` (`name` may be left out); absent: the
    /// stored profile `name`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub profile: Option<Value>,
    /// 1 to 50 sample requests.
    pub samples: Vec<Sample>,
}

/// A sample request: a stored relationship (`relationship_id`), or a professional and a patient.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    #[serde(default)]
    pub relationship_id: Option<String>,
    /// idNat of the professional.
    #[serde(default)]
    pub professional: Option<String>,
    /// `{"ins": {"value", "oid"}}` or `{"local_id", "namespace"}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub patient: Option<Value>,
    /// The app asking (default: the candidate's first client).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The login level: `eidas1`, `eidas2` or `eidas3` (default: the candidate's `min_acr`, else eidas1).
    #[serde(default)]
    pub acr: Option<String>,
    /// Actions asked for (default: the candidate's).
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    #[serde(default)]
    pub datatypes: Vec<String>,
    /// The relationship kind relied on (default: the sample relationship's, else any).
    #[serde(default)]
    pub relationship: Option<String>,
}

/// What one set of profiles decides for a sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct Outcome {
    pub granted: bool,
    /// Granted actions (a subset of those asked for).
    pub actions: Vec<String>,
    pub datatypes: Vec<String>,
    pub relationship_id: Option<String>,
    pub profile: Option<String>,
    /// Why it is refused (the deciding policies, a missing relationship, a login too weak …).
    pub reason: Option<String>,
}

impl From<Result<GrantedAccess, Denial>> for Outcome {
    fn from(outcome: Result<GrantedAccess, Denial>) -> Self {
        match outcome {
            Ok(g) => Outcome {
                granted: true,
                actions: g.actions,
                datatypes: g.datatypes,
                relationship_id: Some(g.relationship.id),
                profile: Some(g.profile),
                reason: None,
            },
            Err(d) => Outcome {
                granted: false,
                actions: Vec::new(),
                datatypes: Vec::new(),
                relationship_id: None,
                profile: None,
                reason: Some(d.describe()),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SampleResult {
    /// idNat of the professional.
    pub professional: Option<String>,
    #[schema(value_type = Object)]
    pub patient: PatientRef,
    pub client_id: String,
    pub acr: String,
    pub actions: Vec<String>,
    /// With the candidate profile alone.
    pub candidate: Outcome,
    /// With the profiles in force now.
    pub current: Outcome,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewAnswer {
    pub profile: String,
    /// One result per sample, in order.
    pub results: Vec<SampleResult>,
}

fn invalid_profile(e: HabilitationError) -> OAuthError {
    match e {
        HabilitationError::Store(e) => e.into(),
        other => OAuthError::invalid_request(format!("invalid profile: {other}")),
    }
}

/// The candidate, as `PUT /profiles/{name}` would read it.
fn candidate(name: &str, mut value: Value) -> Result<ProfileDefinition, OAuthError> {
    if !value.is_object() {
        return Err(OAuthError::invalid_request("profile must be a JSON object"));
    }
    match value.get("name") {
        None | Some(Value::Null) => value["name"] = json!(name),
        Some(Value::String(n)) if n == name => {}
        Some(_) => return Err(OAuthError::invalid_request("the name in the profile differs from the one in the path")),
    }
    let definition: ProfileDefinition =
        serde_json::from_value(value).map_err(|e| OAuthError::invalid_request(format!("invalid profile: {e}")))?;
    definition.spec().map_err(invalid_profile)?;
    Ok(definition)
}

#[utoipa::path(
    post, path = PREVIEW_PATH, tag = "profiles", params(("name" = String, Path, description = "Profile name")),
    request_body = PreviewRequest,
    responses(
        (status = 200, description = "For each sample: what the candidate alone would grant or why not, and what the \
            profiles in force decide", body = PreviewAnswer),
        (status = 400, description = "Invalid candidate (with Cedar's diagnostics) or sample", body = ErrorBody),
        (status = 403, description = "Not a platform administrator or auditor", body = ErrorBody),
        (status = 404, description = "No stored profile of this name (and no candidate), or a sample names an \
            unknown relationship or professional", body = ErrorBody),
    )
)]
pub async fn preview(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<PreviewAnswer>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    authorize(&state, &headers, &actor, Operation::Read, &TargetFacts::of("profile", None), "profile preview")?;
    let request: PreviewRequest = json_body(&body)?;
    let profile = match request.profile {
        Some(value) => candidate(&name, value)?,
        None => state.habilitations.definitions().iter().find(|d| d.name == name).cloned().ok_or_else(|| {
            OAuthError::new(
                OAuthErrorCode::NotFound,
                "no such profile; give a candidate as `profile` to preview a new one",
            )
        })?,
    };
    if request.samples.is_empty() || request.samples.len() > MAX_SAMPLES {
        return Err(OAuthError::invalid_request(format!("samples must hold 1 to {MAX_SAMPLES} requests")));
    }
    let mut results = Vec::with_capacity(request.samples.len());
    for (i, sample) in request.samples.into_iter().enumerate() {
        let label = |text: &str| format!("samples[{i}]: {text}");
        let client_id = match sample.client_id.or_else(|| profile.clients.first().cloned()) {
            Some(c) => c,
            None => {
                return Err(OAuthError::invalid_request(label("client_id is required (the profile names no client)")));
            }
        };
        let acr = sample.acr.or_else(|| profile.min_acr.clone()).unwrap_or_else(|| "eidas1".into());
        if AcrLevel::parse(&acr).is_none() {
            return Err(OAuthError::invalid_request(label("acr must be eidas1, eidas2 or eidas3")));
        }
        let actions = sample.actions.unwrap_or_else(|| profile.actions.clone());
        if actions.is_empty() {
            return Err(OAuthError::invalid_request(label("actions must not be empty")));
        }
        let (account, patient, kind) = match (sample.relationship_id, sample.professional, sample.patient) {
            (Some(id), None, None) => {
                let not_found = || OAuthError::new(OAuthErrorCode::NotFound, label("no such relationship"));
                let r = state.store.habilitations().relationship(&id).await?.ok_or_else(not_found)?;
                let account = state.store.account_by_id(&r.professional_id).await?.ok_or_else(not_found)?;
                let patient = state.store.habilitations().patient_by_id(&r.patient_id).await?.ok_or_else(not_found)?;
                (account, PatientRef::from_identity(&patient.identity), sample.relationship.or(Some(r.kind)))
            }
            (None, Some(id_nat), Some(patient)) => {
                let account = crate::habilitation::professional_by_id_nat(&state, &id_nat)
                    .await
                    .map_err(|e| OAuthError::new(e.code, label(&e.description)))?;
                let patient =
                    parse_patient(&state, &patient).map_err(|e| OAuthError::new(e.code, label(&e.description)))?;
                (account, patient, sample.relationship)
            }
            _ => {
                return Err(OAuthError::invalid_request(label(
                    "give either relationship_id, or professional (idNat) and patient",
                )));
            }
        };
        let access = PatientAccess {
            kind: TYPE_PATIENT_ACCESS.into(),
            patient: patient.clone(),
            actions: actions.clone(),
            datatypes: sample.datatypes,
            relationship: kind,
            purpose: None,
        };
        let mut outcomes = state
            .habilitations
            .preview(
                &state.store,
                &profile,
                std::slice::from_ref(&access),
                Professional::Account(&account),
                &client_id,
                Some(&acr),
                now,
            )
            .await
            .map_err(invalid_profile)?;
        let (with_candidate, current) =
            outcomes.pop().unwrap_or((Err(Denial::NoRelationship), Err(Denial::NoRelationship)));
        results.push(SampleResult {
            professional: account.id_nat.clone(),
            patient,
            client_id,
            acr,
            actions,
            candidate: with_candidate.into(),
            current: current.into(),
        });
    }
    Ok(Json(PreviewAnswer { profile: profile.name, results }))
}

//! The decision API, shaped after OpenID AuthZEN (Authorization API 1.0): an app asks "may
//! professional S do action A on patient P now?" and gets the answer the token endpoint would give,
//! from the same profiles and relationships. `POST /access/v1/evaluation` answers one question,
//! `POST /access/v1/evaluations` a batch (defaults at the top level, overridden per item).
//!
//! The caller is an app's back end with a client-credentials token carrying the `decisions` scope;
//! decisions use the profiles that apply to that app.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::patient::PatientRef;
use super::rar::{GrantedAccess, PatientAccess, TYPE_PATIENT_ACCESS};
use super::service::Denial;
use crate::app::AppState;
use crate::error::{OAuthError, OAuthErrorCode};

pub const EVALUATION_PATH: &str = "/access/v1/evaluation";
pub const EVALUATIONS_PATH: &str = "/access/v1/evaluations";
pub const DECISIONS_SCOPE: &str = "decisions";
/// AuthZEN policy decision point metadata.
pub const METADATA_PATH: &str = "/.well-known/authzen-configuration";
const MAX_BATCH: usize = 100;

/// One evaluation request; in a batch, absent parts come from the top level.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Evaluation {
    #[serde(default)]
    pub subject: Option<Entity>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub resource: Option<Entity>,
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Entity {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub properties: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Action {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct Batch {
    #[serde(flatten)]
    pub defaults: Evaluation,
    pub evaluations: Vec<Evaluation>,
}

/// The calling app, from its bearer token.
async fn calling_app(state: &AppState, headers: &HeaderMap, now: i64) -> Result<String, OAuthError> {
    let claims = super::api_token(state, headers, now).await?;
    if !claims.has_scope(DECISIONS_SCOPE) || claims.account_id().is_some() {
        return Err(OAuthError::new(
            OAuthErrorCode::InsufficientScope,
            "use an access token of the app itself (client credentials) with the decisions scope",
        )
        .with_challenge("Bearer"));
    }
    Ok(claims.client_id)
}

pub async fn evaluation(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let now = crate::unix_now();
    let result = async {
        let client_id = calling_app(&state, &headers, now).await?;
        let request: Evaluation = serde_json::from_slice(&body)
            .map_err(|e| OAuthError::invalid_request(format!("the body must be an AuthZEN evaluation: {e}")))?;
        decide(&state, &client_id, &request, now).await
    }
    .await;
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn evaluations(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let now = crate::unix_now();
    let result = async {
        let client_id = calling_app(&state, &headers, now).await?;
        let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
            OAuthError::invalid_request(format!("the body must be an AuthZEN evaluations request: {e}"))
        })?;
        if batch.evaluations.len() > MAX_BATCH {
            return Err(OAuthError::invalid_request(format!("at most {MAX_BATCH} evaluations per request")));
        }
        // Each item parsed (a malformed one is answered as a denial with its reason, not a failed
        // batch), then the questions about one professional at one login level in one read.
        let mut answers: Vec<Option<Value>> = Vec::with_capacity(batch.evaluations.len());
        let mut questions: Vec<(usize, Question)> = Vec::new();
        for (index, item) in batch.evaluations.iter().enumerate() {
            let merged = Evaluation {
                subject: item.subject.clone().or_else(|| batch.defaults.subject.clone()),
                action: item.action.clone().or_else(|| batch.defaults.action.clone()),
                resource: item.resource.clone().or_else(|| batch.defaults.resource.clone()),
                context: item.context.clone().or_else(|| batch.defaults.context.clone()),
            };
            match question(&state, &merged) {
                Ok(q) => {
                    answers.push(None);
                    questions.push((index, q));
                }
                Err(e) => answers.push(Some(json!({"decision": false, "context": {"error": e.description}}))),
            }
        }
        while let Some((_, first)) = questions.first() {
            let (id_nat, acr) = (first.id_nat.clone(), first.acr.clone());
            let (group, rest): (Vec<_>, Vec<_>) =
                questions.into_iter().partition(|(_, q)| q.id_nat == id_nat && q.acr == acr);
            questions = rest;
            let requests: Vec<PatientAccess> = group.iter().map(|(_, q)| q.access.clone()).collect();
            let outcomes = evaluate(&state, &client_id, &id_nat, acr.as_deref(), &requests, now).await;
            for ((index, _), outcome) in group.into_iter().zip(outcomes) {
                answers[index] = Some(answer(outcome));
            }
        }
        let answers: Vec<Value> = answers.into_iter().map(|a| a.unwrap_or(Value::Null)).collect();
        Ok(json!({ "evaluations": answers }))
    }
    .await;
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

/// One question: may professional `id_nat`, logged in at `acr`, have `access`?
struct Question {
    id_nat: String,
    acr: Option<String>,
    access: PatientAccess,
}

/// Answers one evaluation: `{"decision": bool, "context": {...}}`.
async fn decide(state: &AppState, client_id: &str, request: &Evaluation, now: i64) -> Result<Value, OAuthError> {
    let q = question(state, request)?;
    let outcome = evaluate(state, client_id, &q.id_nat, q.acr.as_deref(), std::slice::from_ref(&q.access), now)
        .await
        .pop()
        .unwrap_or(Err(Denial::NoRelationship));
    Ok(answer(outcome))
}

/// Reads and checks an AuthZEN evaluation request.
fn question(state: &AppState, request: &Evaluation) -> Result<Question, OAuthError> {
    let subject = request.subject.as_ref().ok_or_else(|| OAuthError::invalid_request("subject is required"))?;
    if subject.kind != "professional" {
        return Err(OAuthError::invalid_request("subject.type must be professional (id: the idNat)"));
    }
    let id_nat = subject.id.as_deref().ok_or_else(|| OAuthError::invalid_request("subject.id (idNat) is required"))?;
    let action = request.action.as_ref().ok_or_else(|| OAuthError::invalid_request("action is required"))?;
    if !super::policy::ACTIONS.contains(&action.name.as_str()) {
        return Err(OAuthError::invalid_request(format!(
            "action.name must be one of {}",
            super::policy::ACTIONS.join(", ")
        )));
    }
    let resource = request.resource.as_ref().ok_or_else(|| OAuthError::invalid_request("resource is required"))?;
    if resource.kind != "patient" {
        return Err(OAuthError::invalid_request("resource.type must be patient"));
    }
    let patient = PatientRef::parse(resource.properties.as_ref().unwrap_or(&Value::Null))
        .map_err(|e| OAuthError::invalid_request(format!("resource.properties: {e}")))?;
    patient
        .validate(state.habilitations.production)
        .map_err(|e| OAuthError::invalid_request(format!("resource.properties: {e}")))?;
    let context = request.context.clone().unwrap_or_default();
    let acr = context.get("acr").and_then(Value::as_str).map(str::to_string);
    let datatypes: Vec<String> = context
        .get("datatypes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let relationship = context.get("relationship").and_then(Value::as_str).map(str::to_string);
    Ok(Question {
        id_nat: id_nat.to_string(),
        acr,
        access: PatientAccess {
            kind: TYPE_PATIENT_ACCESS.to_string(),
            patient,
            actions: vec![action.name.clone()],
            datatypes,
            relationship,
            purpose: None,
        },
    })
}

/// Evaluates questions about one professional. The professional is looked up with the
/// relationships, in one read: an unknown or disabled professional simply has no relationship.
async fn evaluate(
    state: &AppState,
    client_id: &str,
    id_nat: &str,
    acr: Option<&str>,
    requests: &[PatientAccess],
    now: i64,
) -> Vec<Result<GrantedAccess, Denial>> {
    let outcomes = state
        .habilitations
        .evaluate_all(&state.store, requests, super::service::Professional::IdNat(id_nat), client_id, acr, now)
        .await;
    for (request, outcome) in requests.iter().zip(&outcomes) {
        super::audit_decision_via(state, &format!("idNat:{id_nat}"), client_id, request, outcome, "decision_api");
    }
    outcomes
}

fn answer(outcome: Result<GrantedAccess, Denial>) -> Value {
    match outcome {
        Ok(granted) => json!({
            "decision": true,
            "context": {
                "relationship": granted.relationship,
                "profile": granted.profile,
                "datatypes": granted.datatypes,
            }
        }),
        Err(denial) => {
            let mut context = json!({"reason": denial.describe()});
            if let Denial::InsufficientAcr(level) = denial {
                context["required_acr"] = json!(level.as_str());
            }
            json!({"decision": false, "context": context})
        }
    }
}

/// `GET /.well-known/authzen-configuration`: where the decision endpoints are (AuthZEN PDP metadata).
pub async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = state.issuer_string();
    Json(json!({
        "policy_decision_point": issuer,
        "access_evaluation_endpoint": format!("{issuer}{EVALUATION_PATH}"),
        "access_evaluations_endpoint": format!("{issuer}{EVALUATIONS_PATH}"),
    }))
    .into_response()
}

//! Habilitation profiles in the admin REST API (`/api/admin/v1/profiles`): list, show, create or
//! replace (validated by Cedar; an invalid profile is refused with the diagnostics), remove.
//! Callers present a Habilis access token with the `admin` scope: a platform administrator's own
//! token, or an administration back end's client-credentials token; auditors (scope `audit`) read.
//! The "who would be allowed" preview is `admin::profiles`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::service::{HabilitationError, ProfileDefinition};
use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::error::{OAuthError, OAuthErrorCode};

pub const PATH: &str = "/api/admin/v1/profiles";
pub const ITEM_PATH: &str = "/api/admin/v1/profiles/{name}";
pub const ADMIN_SCOPE: &str = crate::admin::ADMIN_SCOPE;

/// The acting platform administrator (`account:<id>` or `client:<id>`), from the bearer token: see
/// [`crate::admin::actor`]. Profiles and practice data are platform-wide, so organisation
/// administrators and auditors are refused.
pub async fn administrator(state: &AppState, headers: &HeaderMap, now: i64) -> Result<String, OAuthError> {
    let actor = crate::admin::actor(state, headers, now).await?;
    if actor.facts.platform {
        Ok(actor.id)
    } else {
        Err(OAuthError::new(OAuthErrorCode::AccessDenied, "only platform administrators manage profiles"))
    }
}

/// The caller reading profiles: platform administrators and auditors (the admin rules decide;
/// a refusal is audited).
pub async fn reader(state: &AppState, headers: &HeaderMap, now: i64) -> Result<String, OAuthError> {
    let actor = crate::admin::actor(state, headers, now).await?;
    let target = crate::admin::policy::TargetFacts::of("profile", None);
    crate::admin::authorize(state, headers, &actor, crate::admin::policy::Operation::Read, &target, "profiles")?;
    Ok(actor.id)
}

/// Every habilitation profile.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProfileList {
    pub profiles: Vec<ProfileDefinition>,
}

#[utoipa::path(
    get, path = PATH, tag = "profiles",
    responses(
        (status = 200, description = "Every profile", body = ProfileList),
        (status = 403, description = "Not a platform administrator or auditor", body = crate::admin::openapi::ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let now = crate::unix_now();
    match reader(&state, &headers, now).await {
        Ok(_) => Json(ProfileList { profiles: state.habilitations.definitions().to_vec() }).into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(
    get, path = ITEM_PATH, tag = "profiles", params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "The profile", body = ProfileDefinition),
        (status = 403, description = "Not a platform administrator or auditor", body = crate::admin::openapi::ErrorBody),
        (status = 404, description = "No such profile", body = crate::admin::openapi::ErrorBody),
    )
)]
pub async fn show(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let now = crate::unix_now();
    if let Err(e) = reader(&state, &headers, now).await {
        return e.into_response();
    }
    match state.habilitations.definitions().iter().find(|d| d.name == name) {
        Some(d) => Json(d.clone()).into_response(),
        None => OAuthError::new(OAuthErrorCode::NotFound, "no such profile").into_response(),
    }
}

#[utoipa::path(
    put, path = ITEM_PATH, tag = "profiles", params(("name" = String, Path, description = "Profile name")),
    request_body(content = ProfileDefinition, description = "The profile; `name` may be left out (it is the path's)"),
    responses(
        (status = 200, description = "Replaced", body = ProfileDefinition),
        (status = 201, description = "Created", body = ProfileDefinition),
        (status = 400, description = "Invalid profile, with Cedar's diagnostics", body = crate::admin::openapi::ErrorBody),
        (status = 403, description = "Not a platform administrator", body = crate::admin::openapi::ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let now = crate::unix_now();
    let result = async {
        let actor = administrator(&state, &headers, now).await?;
        let mut value: Value = serde_json::from_slice(&body)
            .map_err(|e| OAuthError::invalid_request(format!("the body must be a JSON profile: {e}")))?;
        match value.get("name") {
            None => value["name"] = json!(name),
            Some(Value::String(n)) if *n == name => {}
            Some(_) => {
                return Err(OAuthError::invalid_request("the name in the body differs from the one in the path"));
            }
        }
        let definition: ProfileDefinition =
            serde_json::from_value(value).map_err(|e| OAuthError::invalid_request(format!("invalid profile: {e}")))?;
        let after = serde_json::to_string(&definition).ok();
        let previous = state.habilitations.put_profile(&state.store, definition.clone(), now).await.map_err(refusal)?;
        state.audit.record(
            AuditEvent::ProfileChanged {
                name: name.clone(),
                actor,
                before: previous.as_ref().and_then(|p| serde_json::to_string(p).ok()),
                after,
            },
            AuditContext::from_request(&headers, None),
        );
        let status = if previous.is_some() { StatusCode::OK } else { StatusCode::CREATED };
        Ok((status, Json(definition)))
    }
    .await;
    match result {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(
    delete, path = ITEM_PATH, tag = "profiles", params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Not a platform administrator", body = crate::admin::openapi::ErrorBody),
        (status = 404, description = "No such profile", body = crate::admin::openapi::ErrorBody),
    )
)]
pub async fn remove(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let now = crate::unix_now();
    let result = async {
        let actor = administrator(&state, &headers, now).await?;
        let before = state.habilitations.definitions().iter().find(|d| d.name == name).cloned();
        if !state.habilitations.delete_profile(&state.store, &name).await.map_err(refusal)? {
            return Err(OAuthError::new(OAuthErrorCode::NotFound, "no such profile"));
        }
        state.audit.record(
            AuditEvent::ProfileChanged {
                name: name.clone(),
                actor,
                before: before.and_then(|p| serde_json::to_string(&p).ok()),
                after: None,
            },
            AuditContext::from_request(&headers, None),
        );
        Ok(StatusCode::NO_CONTENT)
    }
    .await;
    match result {
        Ok(status) => status.into_response(),
        Err(e) => e.into_response(),
    }
}

/// A refused profile says why, with Cedar's diagnostics.
fn refusal(e: HabilitationError) -> OAuthError {
    match e {
        HabilitationError::Store(e) => e.into(),
        other => OAuthError::invalid_request(format!("invalid profile: {other}")),
    }
}

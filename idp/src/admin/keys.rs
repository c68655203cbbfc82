//! Signing keys in the admin API (`/api/admin/v1/keys`): list, rotate, retire — the operations of
//! `habilis keys list|rotate|retire` (`crate::keys`), on the running instance's store and master
//! key, after which this instance reloads its key set at once (the others at their next
//! `keys.reload_interval`). Views carry the public facts only (kid, algorithm, state, dates):
//! never private material. Platform administrators only; auditors read.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::{actor, audit_context, authorize, json_body};
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::config::SigningAlg;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::keys::{KeyError, KeyStatus};

pub const PATH: &str = "/api/admin/v1/keys";
pub const ROTATE_PATH: &str = "/api/admin/v1/keys/rotate";
pub const RETIRE_PATH: &str = "/api/admin/v1/keys/{kid}/retire";

/// A signing key's public facts.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    /// `pending`, `active`, `superseded`, `retired-published` or `expired`.
    pub state: String,
    /// Whether it signs now (the active key of its algorithm).
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// When it signs from.
    pub activates_at: i64,
    pub retired_at: Option<i64>,
    /// For retired keys: when they leave the JWKS.
    pub published_until: Option<i64>,
}

impl From<KeyStatus> for KeyView {
    fn from(k: KeyStatus) -> Self {
        KeyView {
            active: k.state == crate::keys::KeyState::Active,
            state: k.state.as_str().to_string(),
            kid: k.kid,
            alg: k.alg,
            created_at: k.created_at,
            activates_at: k.activates_at,
            retired_at: k.retired_at,
            published_until: k.published_until,
        }
    }
}

/// Every signing key, by algorithm then creation (never more than one page).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyPage {
    pub items: Vec<KeyView>,
    /// Always null.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// `ES256`, `RS256` or `EdDSA`, one of `keys.algorithms` (default: `keys.default_algorithm`).
    #[serde(default)]
    pub alg: Option<String>,
    /// Sign with the new key at once (an emergency rotation) instead of after
    /// `keys.activation_delay`, when relying parties' cached JWKS may not hold it yet.
    #[serde(default)]
    pub activate_now: bool,
}

fn key_target() -> TargetFacts {
    TargetFacts::of("signing_key", None)
}

fn key_error(e: KeyError) -> OAuthError {
    match e {
        KeyError::UnknownKid(_) => OAuthError::new(OAuthErrorCode::NotFound, "no signing key has this kid"),
        e @ (KeyError::AlreadyRetired { .. } | KeyError::RetireRefused { .. }) => {
            OAuthError::new(OAuthErrorCode::Conflict, e.to_string())
        }
        KeyError::Store(e) => e.into(),
        other => {
            tracing::error!(error = %other, "key operation failed");
            OAuthError::server_error()
        }
    }
}

async fn views(state: &AppState, now: i64) -> Result<Vec<KeyView>, OAuthError> {
    let records = state.store.list_signing_keys().await?;
    let retention = state.config.longest_signed_token_lifetime();
    Ok(crate::keys::describe(&records, now, retention).into_iter().map(KeyView::from).collect())
}

/// The key set of this instance follows the store at once (the others at their next reload).
async fn reload(state: &AppState, now: i64) {
    if let Err(e) = state.keys.reload(now).await {
        tracing::warn!(error = %e, "reloading the signing keys after an admin change failed; the reloader retries");
    }
}

#[utoipa::path(
    get, path = PATH, tag = "keys",
    responses(
        (status = 200, description = "Every signing key (public facts only)", body = KeyPage),
        (status = 403, description = "Not a platform administrator or auditor", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<KeyPage>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    authorize(&state, &headers, &actor, Operation::Read, &key_target(), "signing keys")?;
    Ok(Json(KeyPage { items: views(&state, now).await?, next_cursor: None }))
}

#[utoipa::path(
    post, path = ROTATE_PATH, tag = "keys", request_body = RotateRequest,
    responses(
        (status = 201, description = "A new key, published now; it signs from `activates_at`. Retire the previous \
            one once it does", body = KeyView),
        (status = 400, description = "Unknown or disabled algorithm", body = ErrorBody),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
    )
)]
pub async fn rotate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    authorize(&state, &headers, &actor, Operation::Write, &key_target(), "signing keys")?;
    let request: RotateRequest = if body.is_empty() { RotateRequest::default() } else { json_body(&body)? };
    let alg = match request.alg.as_deref() {
        None => state.config.keys.default_algorithm,
        Some(text) => {
            SigningAlg::parse(text).ok_or_else(|| OAuthError::invalid_request("alg must be ES256, RS256 or EdDSA"))?
        }
    };
    if !state.config.keys.algorithms.contains(&alg) {
        return Err(OAuthError::invalid_request(format!(
            "alg {} is not enabled on this server (keys.algorithms)",
            alg.as_str()
        )));
    }
    let activates_at = if request.activate_now { now } else { crate::keys::default_activation(&state.config, now) };
    let master = state.keys.master_key();
    let record = crate::keys::rotate(state.store.as_ref(), &master, alg, activates_at, now).await.map_err(key_error)?;
    reload(&state, now).await;
    state.audit.record(
        AuditEvent::SigningKeyRotated {
            kid: record.kid.clone(),
            alg: record.alg.clone(),
            actor: actor.id.clone(),
            activates_at: record.activates_at,
        },
        audit_context(&headers),
    );
    let view = views(&state, now)
        .await?
        .into_iter()
        .find(|k| k.kid == record.kid)
        .ok_or_else(|| OAuthError::new(OAuthErrorCode::Conflict, "the new key was removed meanwhile"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    post, path = RETIRE_PATH, tag = "keys", params(("kid" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "Retired: it no longer signs, and stays published until the tokens it signed \
            expire", body = KeyView),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
        (status = 404, description = "No signing key has this kid", body = ErrorBody),
        (status = 409, description = "Already retired, or its algorithm would be left without an active key",
            body = ErrorBody),
    )
)]
pub async fn retire(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(kid): Path<String>,
) -> Result<Json<KeyView>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    authorize(&state, &headers, &actor, Operation::Write, &key_target(), &format!("signing key {kid}"))?;
    let record =
        crate::keys::retire(state.store.as_ref(), &kid, now, &state.config.keys.algorithms).await.map_err(key_error)?;
    reload(&state, now).await;
    state.audit.record(
        AuditEvent::SigningKeyRetired { kid: record.kid.clone(), alg: record.alg.clone(), actor: actor.id.clone() },
        audit_context(&headers),
    );
    let view = views(&state, now)
        .await?
        .into_iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| key_error(KeyError::UnknownKid(kid)))?;
    Ok(Json(view))
}

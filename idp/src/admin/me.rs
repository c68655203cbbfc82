//! Who the caller is to the admin API (`GET /api/admin/v1/me`): the powers its token carries, as
//! the rules see them. The console reads it at login to show only the links and buttons that can
//! work for this person (an organisation administrator who is also an auditor holds both scopes,
//! yet may not rotate keys); the API still decides every call.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::actor;
use super::openapi::ErrorBody;
use crate::app::AppState;
use crate::error::OAuthError;

pub const PATH: &str = "/api/admin/v1/me";

/// The caller's powers with this token.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MeView {
    /// `account:<id>` (a person's token) or `client:<id>` (an administration back end): how audit
    /// records name the caller.
    pub id: String,
    /// Manages everything, platform-wide targets included (clients, profiles, keys, roles).
    pub platform_admin: bool,
    /// Reads everything, the audit log included.
    pub auditor: bool,
    /// The organisations it administers (ids); empty for the others.
    pub organisations: Vec<String>,
    /// Whether this token only reads (an auditor, or any token with only the `audit` scope).
    pub read_only: bool,
}

#[utoipa::path(
    get, path = PATH, tag = "meta",
    responses(
        (status = 200, description = "The caller's powers with this token", body = MeView),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the admin and audit scopes, or the account holds no \
            administration role", body = ErrorBody),
    )
)]
pub async fn show(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<MeView>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let facts = actor.facts;
    Ok(Json(MeView {
        id: actor.id,
        read_only: !facts.platform && facts.organisations.is_empty(),
        platform_admin: facts.platform,
        auditor: facts.auditor,
        organisations: facts.organisations,
    }))
}

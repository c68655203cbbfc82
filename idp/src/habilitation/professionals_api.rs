//! Professionals' practice data in the admin REST API: `GET` and `PUT
//! /api/admin/v1/professionals/{id_nat}/practice` (a PSC `SubjectRefPro`-shaped JSON object, the
//! source of the `scope_all` claims). Same callers as the profiles API (scope `admin`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::professional::PracticeRecord;
use super::profiles_api::administrator;
use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::error::OAuthError;

pub const PATH: &str = "/api/admin/v1/professionals/{id_nat}/practice";

#[utoipa::path(
    get, path = PATH, tag = "professionals", params(("id_nat" = String, Path, description = "The professional's idNat")),
    responses(
        (status = 200, description = "The practice record (PSC `SubjectRefPro` shape)", body = serde_json::Value),
        (status = 403, description = "Not a platform administrator", body = crate::admin::openapi::ErrorBody),
        (status = 404, description = "No professional has this idNat", body = crate::admin::openapi::ErrorBody),
    )
)]
pub async fn show(State(state): State<AppState>, headers: HeaderMap, Path(id_nat): Path<String>) -> Response {
    let now = crate::unix_now();
    let result = async {
        administrator(&state, &headers, now).await?;
        let account = super::professional_by_id_nat(&state, &id_nat).await?;
        let practice = match state.store.habilitations().practice_of(&account.id).await? {
            Some(json) => serde_json::from_str::<PracticeRecord>(&json).map_err(|_| OAuthError::server_error())?,
            None => PracticeRecord::default(),
        };
        Ok::<_, OAuthError>(Json(practice))
    }
    .await;
    match result {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(
    put, path = PATH, tag = "professionals", params(("id_nat" = String, Path, description = "The professional's idNat")),
    request_body(content = serde_json::Value, description = "A PSC `SubjectRefPro`-shaped practice record"),
    responses(
        (status = 200, description = "Stored", body = serde_json::Value),
        (status = 400, description = "Invalid practice record", body = crate::admin::openapi::ErrorBody),
        (status = 403, description = "Not a platform administrator", body = crate::admin::openapi::ErrorBody),
        (status = 404, description = "No professional has this idNat", body = crate::admin::openapi::ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id_nat): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let now = crate::unix_now();
    let result = async {
        let actor = administrator(&state, &headers, now).await?;
        let account = super::professional_by_id_nat(&state, &id_nat).await?;
        let practice: PracticeRecord = serde_json::from_slice(&body).map_err(|e| {
            OAuthError::invalid_request(format!("the body must be a SubjectRefPro-shaped practice record: {e}"))
        })?;
        if practice
            .exercices
            .iter()
            .any(|e| e.code_profession.len() != 2 || !e.code_profession.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(OAuthError::invalid_request("codeProfession must be 2 digits (TRE_G15, e.g. 10 médecin)"));
        }
        let before = state.store.habilitations().practice_of(&account.id).await?;
        let after = serde_json::to_string(&practice).map_err(|_| OAuthError::server_error())?;
        state.store.habilitations().upsert_practice(&account.id, &after, now).await?;
        state.audit.record(
            AuditEvent::PracticeChanged { account_id: account.id.clone(), actor, before, after: after.clone() },
            AuditContext::from_request(&headers, None),
        );
        Ok((StatusCode::OK, Json(practice)))
    }
    .await;
    match result {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

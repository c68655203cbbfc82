//! A person's data in the admin API: export everything held on an account, and erase it (the
//! deletion shared with the inactive-account rule, `crate::person`). Platform administrators only:
//! both reach across organisations (audit records, relationships) and erasure cannot be undone;
//! anyone else gets 403, audited as `admin_access_denied`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

use super::openapi::ErrorBody;
use super::policy::Operation;
use super::{Actor, account_target, actor, audit_context, authorize};
use crate::app::AppState;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::person::{Deletion, DeletionReason, PersonExport};
use crate::store::Account;

pub const EXPORT_PATH: &str = "/api/admin/v1/accounts/{id}/export";
pub const ERASE_PATH: &str = "/api/admin/v1/accounts/{id}/erase";

/// The account `id` after checking that `actor` is a platform administrator (Cedar: the
/// `administer` action, which only platform administrators hold).
async fn platform_only(state: &AppState, headers: &HeaderMap, actor: &Actor, id: &str) -> Result<Account, OAuthError> {
    let account = state
        .store
        .account_by_id(id)
        .await?
        .ok_or_else(|| OAuthError::new(OAuthErrorCode::NotFound, "no such account"))?;
    let target = account_target(state, &account).await?;
    authorize(state, headers, actor, Operation::Administer, &target, &format!("personal data of account {id}"))
        .map_err(|_| {
            OAuthError::new(
                OAuthErrorCode::AccessDenied,
                "only platform administrators export or erase a person's data",
            )
        })?;
    Ok(account)
}

#[utoipa::path(
    get, path = EXPORT_PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "Everything held on the person (never a secret), with the audit records \
            about them; audited as person_exported", body = PersonExport),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<PersonExport>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let account = platform_only(&state, &headers, &actor, &id).await?;
    Ok(Json(crate::person::export(&state, &account.id, &actor.id, audit_context(&headers)).await?))
}

#[utoipa::path(
    post, path = ERASE_PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "Erased: the account and its factors, sessions, consents, memberships and \
            roles deleted, its relationships as a professional ended, its audit records pseudonymised; audited as \
            account_deleted and person_erased", body = Deletion),
        (status = 400, description = "One's own account", body = ErrorBody),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn erase(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Deletion>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let account = platform_only(&state, &headers, &actor, &id).await?;
    if actor.id == format!("account:{}", account.id) {
        return Err(OAuthError::invalid_request("you cannot erase your own account"));
    }
    let deletion =
        crate::person::delete_person(&state, &account, DeletionReason::Erasure, &actor.id, audit_context(&headers))
            .await?;
    Ok(Json(deletion))
}

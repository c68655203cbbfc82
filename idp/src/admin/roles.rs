//! Administration roles (`/api/admin/v1/roles`): list, grant, revoke. Granting and revoking are
//! platform-wide operations (`administer`): only platform administrators do them. Reading follows
//! the target: an organisation administrator may list the roles of its organisation or of one of
//! its accounts.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::policy::{Operation, TargetFacts};
use super::{Actor, actor, audit_context, authorize, json_body, query, snapshot};
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{AccountKind, AdminRole, RoleGrant, Store, StoreError};

pub const PATH: &str = "/api/admin/v1/roles";
pub const ITEM_PATH: &str = "/api/admin/v1/roles/{id}";

/// One role held by one account.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleView {
    pub id: String,
    pub account_id: String,
    pub role: AdminRole,
    /// Set exactly for `org_admin`: the organisation administered.
    pub organisation_id: Option<String>,
    /// Who granted it: `account:<id>`, `client:<id>` or `cli`.
    pub granted_by: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<RoleGrant> for RoleView {
    fn from(g: RoleGrant) -> Self {
        RoleView {
            id: g.id,
            account_id: g.account_id,
            role: g.role,
            organisation_id: g.organisation_id,
            granted_by: g.granted_by,
            created_at: g.created_at,
        }
    }
}

/// Role grants (the list is short: never more than one page).
#[derive(Debug, Serialize, ToSchema)]
pub struct RolePage {
    pub items: Vec<RoleView>,
    /// Always null: every grant matching the filter is in `items`.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RoleQuery {
    /// Only the roles of this account.
    pub account: Option<String>,
    /// Only the `org_admin` grants of this organisation.
    pub organisation: Option<String>,
}

/// A role to grant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub account_id: String,
    pub role: AdminRole,
    /// Required for `org_admin`, refused otherwise.
    #[serde(default)]
    pub organisation_id: Option<String>,
}

/// Grants `role` (checked: account and organisation exist, the account may hold roles). Shared by
/// the API and the CLI; the caller authorizes and audits.
pub async fn grant_role(
    store: &dyn Store,
    account_id: &str,
    role: AdminRole,
    organisation_id: Option<&str>,
    granted_by: &str,
    now: i64,
) -> Result<RoleGrant, OAuthError> {
    let organisation_id = match (role, organisation_id.map(str::trim).filter(|o| !o.is_empty())) {
        (AdminRole::OrgAdmin, None) => {
            return Err(OAuthError::invalid_request("the org_admin role needs organisation_id"));
        }
        (AdminRole::OrgAdmin, Some(org)) => Some(org.to_string()),
        (_, Some(_)) => {
            return Err(OAuthError::invalid_request(format!(
                "organisation_id is only for org_admin; {} is platform-wide",
                role.as_str()
            )));
        }
        (_, None) => None,
    };
    let account = store
        .account_by_id(account_id)
        .await?
        .ok_or_else(|| OAuthError::new(OAuthErrorCode::NotFound, "no such account"))?;
    if account.kind == AccountKind::Patient {
        return Err(OAuthError::invalid_request("a patient account cannot hold an administration role"));
    }
    if let Some(org) = &organisation_id {
        match store.admin().organisation_record(org).await? {
            None => return Err(OAuthError::new(OAuthErrorCode::NotFound, "no such organisation")),
            Some(o) if o.disabled_at.is_some() => {
                return Err(OAuthError::invalid_request("the organisation is disabled"));
            }
            Some(_) => {}
        }
    }
    let grant = RoleGrant {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account.id,
        role,
        organisation_id,
        granted_by: granted_by.to_string(),
        created_at: now,
    };
    match store.admin().insert_role(&grant).await {
        Ok(()) => Ok(grant),
        Err(StoreError::Conflict { .. }) => {
            Err(OAuthError::new(OAuthErrorCode::Conflict, "the account already holds this role"))
        }
        Err(e) => Err(e.into()),
    }
}

/// The target of an operation on a role grant.
fn role_target(organisation_id: Option<&str>) -> TargetFacts {
    TargetFacts::of("role", organisation_id)
}

#[utoipa::path(
    get, path = PATH, tag = "roles", params(RoleQuery),
    responses(
        (status = 200, description = "The grants", body = RolePage),
        (status = 400, description = "Invalid filter", body = super::openapi::ErrorBody),
        (status = 403, description = "Not allowed to read these grants", body = super::openapi::ErrorBody),
        (status = 404, description = "No such account", body = super::openapi::ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Json<RolePage>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let q: RoleQuery = query(&uri)?;
    let grants = match (&q.account, &q.organisation) {
        (Some(account_id), _) => {
            let account = state
                .store
                .account_by_id(account_id)
                .await?
                .ok_or_else(|| OAuthError::new(OAuthErrorCode::NotFound, "no such account"))?;
            let target = super::account_target(&state, &account).await?;
            authorize(&state, &headers, &actor, Operation::Read, &target, &format!("roles of account {}", account.id))?;
            let mut grants = state.store.admin().roles_of(&account.id).await?;
            if let Some(org) = &q.organisation {
                grants.retain(|g| g.organisation_id.as_deref() == Some(org.as_str()));
            }
            grants
        }
        (None, Some(org)) => {
            let target = role_target(Some(org));
            authorize(&state, &headers, &actor, Operation::Read, &target, &format!("roles of organisation {org}"))?;
            state.store.admin().list_roles(Some(org)).await?
        }
        (None, None) => {
            authorize(&state, &headers, &actor, Operation::Read, &role_target(None), "all roles")?;
            state.store.admin().list_roles(None).await?
        }
    };
    Ok(Json(RolePage { items: grants.into_iter().map(RoleView::from).collect(), next_cursor: None }))
}

#[utoipa::path(
    post, path = PATH, tag = "roles", request_body = GrantRequest,
    responses(
        (status = 201, description = "Granted", body = RoleView),
        (status = 400, description = "Invalid grant", body = super::openapi::ErrorBody),
        (status = 403, description = "Only platform administrators grant roles", body = super::openapi::ErrorBody),
        (status = 404, description = "No such account or organisation", body = super::openapi::ErrorBody),
        (status = 409, description = "Already granted", body = super::openapi::ErrorBody),
    )
)]
pub async fn grant(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let request: GrantRequest = json_body(&body)?;
    let target = role_target(request.organisation_id.as_deref());
    authorize(&state, &headers, &actor, Operation::Administer, &target, &format!("roles of {}", request.account_id))?;
    let grant = grant_role(
        state.store.as_ref(),
        &request.account_id,
        request.role,
        request.organisation_id.as_deref(),
        &actor.id,
        now,
    )
    .await?;
    let view = RoleView::from(grant);
    audit_role(&state, &headers, &actor, &view.account_id, None, Some(&view));
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    delete, path = ITEM_PATH, tag = "roles", params(("id" = String, Path, description = "The grant's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "Only platform administrators revoke roles", body = super::openapi::ErrorBody),
        (status = 404, description = "No such grant", body = super::openapi::ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let grant = state
        .store
        .admin()
        .role(&id)
        .await?
        .ok_or_else(|| OAuthError::new(OAuthErrorCode::NotFound, "no such role"))?;
    let target = role_target(grant.organisation_id.as_deref());
    authorize(&state, &headers, &actor, Operation::Administer, &target, &format!("role {id}"))?;
    if !state.store.admin().delete_role(&id).await? {
        return Err(OAuthError::new(OAuthErrorCode::NotFound, "no such role"));
    }
    let view = RoleView::from(grant);
    audit_role(&state, &headers, &actor, &view.account_id, Some(&view), None);
    Ok(StatusCode::NO_CONTENT)
}

fn audit_role(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    account_id: &str,
    before: Option<&RoleView>,
    after: Option<&RoleView>,
) {
    state.audit.record(
        AuditEvent::AdminRoleChanged {
            account_id: account_id.to_string(),
            actor: actor.id.clone(),
            before: before.and_then(snapshot),
            after: after.and_then(snapshot),
        },
        audit_context(headers),
    );
}

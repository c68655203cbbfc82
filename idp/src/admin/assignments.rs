//! Profile assignments in the admin API (`/api/admin/v1/accounts/{id}/profiles`): which
//! professionals hold a habilitation profile that `requires_assignment` (see policies/README.md).
//!
//! An assignment is platform-wide (no organisation) or holds for the relationships of one
//! organisation the professional is a member of. Organisation administrators assign and unassign
//! only to members of their organisations and only inside them; a platform-wide assignment, like
//! any change to an administrator's account, is for platform administrators (`policies/admin.cedar`:
//! the target is the account, placed in the assignment's organisation). Auditors read. Every change
//! is audited (`profile_assigned`, `profile_unassigned`) and reaches the decisions of every
//! instance at once (the relationship cache is invalidated).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::{Actor, account_target, actor, audit_context, authorize, json_body, query};
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{Account, AccountKind, ProfileAssignment};

pub const PATH: &str = "/api/admin/v1/accounts/{id}/profiles";
pub const ITEM_PATH: &str = "/api/admin/v1/accounts/{id}/profiles/{profile}";

/// One profile held by the account.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AssignmentView {
    pub account_id: String,
    pub profile: String,
    /// Null: platform-wide; else it holds for the relationships of this organisation only.
    pub organisation_id: Option<String>,
    /// `account:<id>` or `client:<id>`.
    pub assigned_by: String,
    /// Unix seconds.
    pub assigned_at: i64,
    /// Whether the profile requires assignment now (when it does not, it applies to every
    /// professional anyway and the assignment changes nothing until it does).
    pub requires_assignment: bool,
}

/// A profile that can be assigned.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AssignableProfile {
    pub name: String,
    pub description: String,
    pub requires_assignment: bool,
}

/// What the caller may assign to this account.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Assignable {
    /// Every profile (none when the account is not a professional's).
    pub profiles: Vec<AssignableProfile>,
    /// The account's organisations in which the caller may assign.
    pub organisations: Vec<String>,
    /// Whether the caller may assign platform-wide.
    pub platform_wide: bool,
}

/// The profiles an account holds (all of them: an account holds few), with what the caller may
/// assign to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentPage {
    pub items: Vec<AssignmentView>,
    /// Always null: every assignment the caller may see is in `items`.
    pub next_cursor: Option<String>,
    pub assignable: Assignable,
}

/// Where the assignment holds.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentRequest {
    /// One of the account's organisations; absent or null: platform-wide (platform administrators
    /// only).
    #[serde(default)]
    pub organisation_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UnassignQuery {
    /// The organisation of the assignment to remove; absent: the platform-wide one.
    pub organisation_id: Option<String>,
}

fn no_account() -> OAuthError {
    OAuthError::new(OAuthErrorCode::NotFound, "no such account")
}

fn scope_text(organisation: Option<&str>) -> String {
    organisation.map_or("platform-wide".to_string(), |o| format!("in organisation {o}"))
}

/// The account `id` and what the rules know about it, after checking that `actor` may do
/// `operation` to it (where it belongs now).
async fn authorized_account(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    operation: Operation,
    id: &str,
) -> Result<(Account, TargetFacts), OAuthError> {
    let account = state.store.account_by_id(id).await?.ok_or_else(no_account)?;
    let target = account_target(state, &account).await?;
    authorize(state, headers, actor, operation, &target, &format!("account {id}"))?;
    Ok((account, target))
}

/// Checks that `actor` may change the account's assignments in `organisation` (none: platform-wide).
fn authorize_scope(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    account: &TargetFacts,
    organisation: Option<&str>,
    what: &str,
) -> Result<(), OAuthError> {
    let scoped =
        TargetFacts { organisations: organisation.map(str::to_owned).into_iter().collect(), ..account.clone() };
    authorize(state, headers, actor, Operation::Write, &scoped, what).map_err(|mut e| {
        if organisation.is_none() && e.code == OAuthErrorCode::AccessDenied && !actor.facts.platform {
            e.description = "a platform-wide assignment needs a platform administrator; give organisation_id \
                (one of the account's organisations that you administer)"
                .into();
        }
        e
    })
}

fn view(state: &AppState, a: ProfileAssignment) -> AssignmentView {
    let requires_assignment =
        state.habilitations.compiled().profile(&a.profile_name).is_some_and(|p| p.requires_assignment);
    AssignmentView {
        account_id: a.account_id,
        profile: a.profile_name,
        organisation_id: a.organisation_id,
        assigned_by: a.assigned_by,
        assigned_at: a.assigned_at,
        requires_assignment,
    }
}

fn audit(state: &AppState, headers: &HeaderMap, event: AuditEvent) {
    state.audit.record(event, audit_context(headers));
}

#[utoipa::path(
    get, path = PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "The profiles the account holds (platform-wide and in the caller's \
            organisations), and what the caller may assign to it", body = AssignmentPage),
        (status = 403, description = "Another organisation", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AssignmentPage>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let (account, target) = authorized_account(&state, &headers, &actor, Operation::Read, &id).await?;
    let may = |operation: Operation, organisation: Option<&str>| {
        let scoped =
            TargetFacts { organisations: organisation.map(str::to_owned).into_iter().collect(), ..target.clone() };
        state.admin_policy.evaluate(&actor.facts, operation, &scoped).allowed
    };
    // Platform-wide assignments concern every organisation; the others only theirs.
    let items = state
        .store
        .habilitations()
        .assignments_of_account(&account.id)
        .await?
        .into_iter()
        .filter(|a| a.organisation_id.is_none() || may(Operation::Read, a.organisation_id.as_deref()))
        .map(|a| view(&state, a))
        .collect();
    let professional = account.kind == AccountKind::Professional;
    let profiles = if professional {
        state
            .habilitations
            .definitions()
            .iter()
            .map(|d| AssignableProfile {
                name: d.name.clone(),
                description: d.description.clone(),
                requires_assignment: d.requires_assignment,
            })
            .collect()
    } else {
        Vec::new()
    };
    let assignable = Assignable {
        profiles,
        organisations: target
            .organisations
            .iter()
            .filter(|o| professional && may(Operation::Write, Some(o)))
            .cloned()
            .collect(),
        platform_wide: professional && may(Operation::Write, None),
    };
    Ok(Json(AssignmentPage { items, next_cursor: None, assignable }))
}

#[utoipa::path(
    put, path = ITEM_PATH, tag = "accounts",
    params(("id" = String, Path, description = "Account id"), ("profile" = String, Path, description = "Profile name")),
    request_body(content = AssignmentRequest, description = "Optional: the organisation (absent: platform-wide)",
        content_type = "application/json"),
    responses(
        (status = 201, description = "Assigned", body = AssignmentView),
        (status = 200, description = "Already held (unchanged)", body = AssignmentView),
        (status = 400, description = "Not a professional, not a member of the organisation, or a disabled \
            organisation", body = ErrorBody),
        (status = 403, description = "Another organisation, an administrator's account, or a platform-wide \
            assignment by an organisation administrator", body = ErrorBody),
        (status = 404, description = "No such account, profile or organisation", body = ErrorBody),
    )
)]
pub async fn assign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, profile)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let request: AssignmentRequest = if body.is_empty() { AssignmentRequest::default() } else { json_body(&body)? };
    let organisation = request.organisation_id.as_deref();
    let (account, target) = authorized_account(&state, &headers, &actor, Operation::Write, &id).await?;
    let what = format!("profile {profile} of account {id} {}", scope_text(organisation));
    authorize_scope(&state, &headers, &actor, &target, organisation, &what)?;
    if state.habilitations.compiled().profile(&profile).is_none() {
        return Err(OAuthError::new(OAuthErrorCode::NotFound, format!("no such profile `{profile}`")));
    }
    if let Some(org) = organisation {
        if super::organisations::load(&state, org).await?.disabled_at.is_some() {
            return Err(OAuthError::invalid_request("the organisation is disabled"));
        }
        if !target.organisations.iter().any(|o| o == org) {
            return Err(OAuthError::invalid_request(format!(
                "the account is not a member of organisation {org}: make it one first"
            )));
        }
    }
    if account.kind != AccountKind::Professional {
        return Err(OAuthError::invalid_request("habilitation profiles are assigned to professionals only"));
    }
    let assignment = ProfileAssignment {
        account_id: account.id.clone(),
        profile_name: profile.clone(),
        organisation_id: request.organisation_id.clone(),
        assigned_by: actor.id.clone(),
        assigned_at: now,
    };
    let habilitations = state.store.habilitations();
    let created = habilitations.assign_profile(&assignment).await?;
    let stored = habilitations
        .assignments_of_account(&account.id)
        .await?
        .into_iter()
        .find(|a| a.profile_name == profile && a.organisation_id == request.organisation_id)
        // Removed again in between by someone else: answer what was asked for.
        .unwrap_or(assignment);
    if !created {
        return Ok((StatusCode::OK, Json(view(&state, stored))));
    }
    state.habilitations.assignments_changed().await;
    audit(
        &state,
        &headers,
        AuditEvent::ProfileAssigned {
            account_id: account.id.clone(),
            profile: profile.clone(),
            organisation_id: request.organisation_id.clone(),
            actor: actor.id.clone(),
        },
    );
    Ok((StatusCode::CREATED, Json(view(&state, stored))))
}

#[utoipa::path(
    delete, path = ITEM_PATH, tag = "accounts",
    params(
        ("id" = String, Path, description = "Account id"),
        ("profile" = String, Path, description = "Profile name"),
        UnassignQuery,
    ),
    responses(
        (status = 204, description = "No longer held there; decisions stop granting it at once"),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 403, description = "Another organisation, an administrator's account, or a platform-wide \
            assignment by an organisation administrator", body = ErrorBody),
        (status = 404, description = "No such account, or the account does not hold the profile there", body = ErrorBody),
    )
)]
pub async fn unassign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, profile)): Path<(String, String)>,
    uri: Uri,
) -> Result<StatusCode, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let q: UnassignQuery = query(&uri)?;
    let organisation = q.organisation_id.as_deref().filter(|o| !o.is_empty());
    let (account, target) = authorized_account(&state, &headers, &actor, Operation::Write, &id).await?;
    let what = format!("profile {profile} of account {id} {}", scope_text(organisation));
    authorize_scope(&state, &headers, &actor, &target, organisation, &what)?;
    if !state.store.habilitations().unassign_profile(&account.id, &profile, organisation).await? {
        return Err(OAuthError::new(
            OAuthErrorCode::NotFound,
            format!("the account does not hold profile `{profile}` {}", scope_text(organisation)),
        ));
    }
    state.habilitations.assignments_changed().await;
    audit(
        &state,
        &headers,
        AuditEvent::ProfileUnassigned {
            account_id: account.id.clone(),
            profile,
            organisation_id: organisation.map(str::to_owned),
            actor: actor.id.clone(),
        },
    );
    Ok(StatusCode::NO_CONTENT)
}

//! Accounts in the admin API (`/api/admin/v1/accounts`): search, show, create by invitation,
//! disable and enable, organisation membership, factor reset, sessions (list and end).
//!
//! An account belongs to the organisations it is a member of (`organisation_members`); that is
//! what organisation administrators are limited to. Accounts holding an administration role are
//! changed only by platform administrators (`policies/admin.cedar`).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::roles::RoleView;
use super::{
    Actor, PageQuery, account_target, actor, audit_context, authorize, contains_pattern, encode_cursor, json_body,
    query, snapshot, split_page,
};
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{Account, AccountFilter, AccountKind, AccountStatus, Invitation, Membership, StoreError};

pub const PATH: &str = "/api/admin/v1/accounts";
pub const ITEM_PATH: &str = "/api/admin/v1/accounts/{id}";
pub const DISABLE_PATH: &str = "/api/admin/v1/accounts/{id}/disable";
pub const ENABLE_PATH: &str = "/api/admin/v1/accounts/{id}/enable";
pub const MEMBERSHIP_PATH: &str = "/api/admin/v1/accounts/{id}/organisations/{organisation_id}";
pub const FACTORS_RESET_PATH: &str = "/api/admin/v1/accounts/{id}/factors/reset";
pub const SESSIONS_PATH: &str = "/api/admin/v1/accounts/{id}/sessions";
pub const UNLOCK_PATH: &str = "/api/admin/v1/accounts/{id}/unlock";

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub kind: AccountKind,
    pub login: String,
    pub id_nat: Option<String>,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub status: AccountStatus,
    pub locale: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub last_authenticated_at: Option<i64>,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        AccountView {
            id: a.id,
            kind: a.kind,
            login: a.login,
            id_nat: a.id_nat,
            email: a.email,
            given_name: a.given_name,
            family_name: a.family_name,
            status: a.status,
            locale: a.locale,
            created_at: a.created_at,
            updated_at: a.updated_at,
            last_authenticated_at: a.last_authenticated_at,
        }
    }
}

/// A page of accounts, by login.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountPage {
    pub items: Vec<AccountView>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MembershipView {
    pub organisation_id: String,
    pub department_id: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<Membership> for MembershipView {
    fn from(m: Membership) -> Self {
        MembershipView { organisation_id: m.organisation_id, department_id: m.department_id, created_at: m.created_at }
    }
}

/// Which factors an account has (never their secrets).
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct FactorSummary {
    pub password: bool,
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_codes: usize,
    /// Security keys and passkeys.
    pub webauthn: usize,
}

/// An account with its organisations, roles and factors.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountDetail {
    pub account: AccountView,
    pub organisations: Vec<MembershipView>,
    pub roles: Vec<RoleView>,
    pub factors: FactorSummary,
    /// Until when the password and code steps are locked after repeated failures (Unix seconds),
    /// or null. Card and security-key logins are never locked. Lift it with `POST …/unlock`.
    pub locked_until: Option<i64>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// Part of the login, email or name (case-insensitive).
    pub q: Option<String>,
    /// `professional`, `patient` or `administrator`.
    pub kind: Option<String>,
    /// `invited`, `active` or `disabled`.
    pub status: Option<String>,
    /// Members of this organisation only. Organisation administrators get their own by default.
    pub organisation: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An account to create; its owner gets an invitation mail to choose a password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub kind: AccountKind,
    /// Required for professionals (8 + RPPS or 0 + ADELI); it is their login.
    #[serde(default)]
    pub id_nat: Option<String>,
    /// Login of patients and administrators (default: the email).
    #[serde(default)]
    pub login: Option<String>,
    /// Where the invitation goes.
    pub email: String,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub family_name: Option<String>,
    /// `fr` or `en` (the invitation's language).
    #[serde(default)]
    pub locale: Option<String>,
    /// The organisation the account belongs to (required from organisation administrators).
    #[serde(default)]
    pub organisation_id: Option<String>,
    #[serde(default)]
    pub department_id: Option<String>,
}

/// The created account; the invitation link went by mail only.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitedAccount {
    #[serde(flatten)]
    pub detail: AccountDetail,
    /// Unix seconds: when the invitation link stops working.
    pub invitation_expires_at: i64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipRequest {
    /// A department of the organisation.
    #[serde(default)]
    pub department_id: Option<String>,
}

/// A factor an administrator can remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    Password,
    Totp,
    RecoveryCodes,
    Webauthn,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FactorReset {
    /// The factors to remove (at least one).
    pub factors: Vec<Factor>,
    /// Mail the owner a new invitation link to choose a password (with `password` only).
    #[serde(default)]
    pub invite: bool,
}

/// One authorization (grant) of the account: a client that holds tokens for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub grant_id: String,
    pub client_id: String,
    /// The browser session's public id (`sid`), when the grant came from one.
    pub sid: Option<String>,
    pub scope: String,
    /// Unix seconds.
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionPage {
    pub items: Vec<SessionView>,
    /// Always null: every active grant is in `items`.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsEnded {
    /// Grants revoked (their refresh and access tokens stop working).
    pub revoked_grants: usize,
}

fn not_found() -> OAuthError {
    OAuthError::new(OAuthErrorCode::NotFound, "no such account")
}

async fn load(state: &AppState, id: &str) -> Result<Account, OAuthError> {
    state.store.account_by_id(id).await?.ok_or_else(not_found)
}

async fn factors_of(state: &AppState, account_id: &str) -> Result<FactorSummary, OAuthError> {
    let store = &state.store;
    Ok(FactorSummary {
        password: !store.credentials_of(account_id, "password").await?.is_empty(),
        totp: !store.credentials_of(account_id, crate::authn::totp::KIND).await?.is_empty(),
        recovery_codes: store.credentials_of(account_id, crate::authn::recovery::KIND).await?.len(),
        webauthn: store.webauthn_credentials_of(account_id).await?.len(),
    })
}

async fn detail(state: &AppState, account: Account) -> Result<AccountDetail, OAuthError> {
    let admin = state.store.admin();
    Ok(AccountDetail {
        organisations: admin.memberships_of(&account.id).await?.into_iter().map(MembershipView::from).collect(),
        roles: admin.roles_of(&account.id).await?.into_iter().map(RoleView::from).collect(),
        factors: factors_of(state, &account.id).await?,
        locked_until: locked_until(state, &account.login).await?,
        account: account.into(),
    })
}

async fn locked_until(state: &AppState, login: &str) -> Result<Option<i64>, OAuthError> {
    crate::authn::lockout::locked_until(state.ephemeral.as_ref(), login, crate::unix_now()).await.map_err(lock_error)
}

fn lock_error(e: crate::authn::throttle::ThrottleError) -> OAuthError {
    tracing::error!(error = %e, "lock state unavailable");
    OAuthError::new(OAuthErrorCode::TemporarilyUnavailable, "the lock state is unavailable; retry shortly")
}

fn audit_account(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    account_id: &str,
    change: &str,
    before: Option<String>,
    after: Option<String>,
) {
    state.audit.record(
        AuditEvent::AccountChanged {
            account_id: account_id.to_string(),
            actor: actor.id.clone(),
            change: change.to_string(),
            before,
            after,
        },
        audit_context(headers),
    );
}

/// The account `id` after checking that `actor` may do `operation` to it.
async fn authorized_account(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    operation: Operation,
    id: &str,
) -> Result<Account, OAuthError> {
    let account = load(state, id).await?;
    let target = account_target(state, &account).await?;
    authorize(state, headers, actor, operation, &target, &format!("account {id}"))?;
    Ok(account)
}

#[utoipa::path(
    get, path = PATH, tag = "accounts", params(AccountQuery),
    responses(
        (status = 200, description = "A page of accounts, by login", body = AccountPage),
        (status = 400, description = "Invalid filter, limit or cursor", body = ErrorBody),
        (status = 403, description = "Another organisation", body = ErrorBody),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<AccountPage>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let q: AccountQuery = query(&uri)?;
    let page = PageQuery { limit: q.limit, cursor: q.cursor.clone() };
    let limit = page.limit()?;
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(
            AccountKind::parse(k)
                .ok_or_else(|| OAuthError::invalid_request("kind must be professional, patient or administrator"))?,
        ),
    };
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            AccountStatus::parse(s)
                .ok_or_else(|| OAuthError::invalid_request("status must be invited, active or disabled"))?,
        ),
    };
    // An organisation administrator of exactly one organisation searches it unless told otherwise.
    let organisation = match &q.organisation {
        Some(org) => Some(org.clone()),
        None => {
            let everything =
                state.admin_policy.evaluate(&actor.facts, Operation::Read, &TargetFacts::of("account", None)).allowed;
            match actor.facts.organisations.as_slice() {
                [only] if !everything => Some(only.clone()),
                _ => None,
            }
        }
    };
    let target = TargetFacts::of("account", organisation.as_deref());
    let what = organisation.as_deref().map_or("all accounts".to_string(), |o| format!("accounts of organisation {o}"));
    authorize(&state, &headers, &actor, Operation::Read, &target, &what)?;
    let after_login = page.cursor(1)?.and_then(|mut parts| parts.pop());
    let filter = AccountFilter {
        pattern: contains_pattern(q.q.as_deref())?,
        kind,
        status,
        organisation_id: organisation,
        after_login,
        limit: limit + 1,
    };
    let (rows, more) = split_page(state.store.admin().search_accounts(&filter).await?, limit);
    let next_cursor = more.then(|| rows.last().map(|a| encode_cursor(&[&a.login]))).flatten();
    Ok(Json(AccountPage { items: rows.into_iter().map(AccountView::from).collect(), next_cursor }))
}

#[utoipa::path(
    get, path = ITEM_PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account with its organisations, roles and factors", body = AccountDetail),
        (status = 403, description = "Another organisation", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AccountDetail>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let account = authorized_account(&state, &headers, &actor, Operation::Read, &id).await?;
    Ok(Json(detail(&state, account).await?))
}

/// Checks a new account's fields; returns (login, id_nat, email).
fn validate_new_account(request: &NewAccount) -> Result<(String, Option<String>, String), OAuthError> {
    let email = request.email.trim().to_ascii_lowercase();
    if !crate::cli::looks_like_email(&email) || email.len() > 254 {
        return Err(OAuthError::invalid_request("email must be an email address: the invitation goes there"));
    }
    let (login, id_nat) = match request.kind {
        AccountKind::Professional => {
            let raw = request.id_nat.as_deref().ok_or_else(|| {
                OAuthError::invalid_request("a professional needs id_nat (8 + RPPS, or 0 + ADELI): it is the login")
            })?;
            let id = crate::ids::IdNat::parse(raw).map_err(|e| OAuthError::invalid_request(format!("id_nat: {e}")))?;
            if request.login.is_some() {
                return Err(OAuthError::invalid_request("a professional's login is the id_nat; do not give login"));
            }
            (id.as_str().to_string(), Some(id.as_str().to_string()))
        }
        _ => {
            if request.id_nat.is_some() {
                return Err(OAuthError::invalid_request("id_nat is for professionals only"));
            }
            let login = request.login.as_deref().unwrap_or(&email).trim().to_ascii_lowercase();
            (login, None)
        }
    };
    if login.is_empty() || login.len() > 254 || login.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(OAuthError::invalid_request("login must have 1 to 254 characters, without spaces"));
    }
    for (field, value) in [("given_name", &request.given_name), ("family_name", &request.family_name)] {
        if let Some(v) = value
            && (v.chars().count() > 100 || v.chars().any(char::is_control))
        {
            return Err(OAuthError::invalid_request(format!("{field} must be at most 100 printable characters")));
        }
    }
    if request.locale.as_deref().is_some_and(|l| l != "fr" && l != "en") {
        return Err(OAuthError::invalid_request("locale must be fr or en"));
    }
    if request.department_id.is_some() && request.organisation_id.is_none() {
        return Err(OAuthError::invalid_request("department_id needs organisation_id"));
    }
    Ok((login, id_nat, email))
}

/// Checks that the organisation exists and is enabled, and that the department (if any) is one of
/// its own.
async fn check_placement(
    state: &AppState,
    organisation_id: &str,
    department_id: Option<&str>,
) -> Result<(), OAuthError> {
    let organisation = super::organisations::load(state, organisation_id).await?;
    if organisation.disabled_at.is_some() {
        return Err(OAuthError::invalid_request("the organisation is disabled"));
    }
    if let Some(department) = department_id
        && !state.store.admin().departments_of(organisation_id).await?.iter().any(|d| d.id == department)
    {
        return Err(OAuthError::invalid_request("department_id is not a department of this organisation"));
    }
    Ok(())
}

/// Stores a single-use invitation for `account` and mails the link to choose a password.
/// Returns when it expires.
async fn send_invitation(state: &AppState, account: &Account, email: &str, now: i64) -> Result<i64, OAuthError> {
    let lifetime: Duration = state.config.tokens.invitation_lifetime;
    let token = crate::cli::random_token();
    let expires_at = now + lifetime.as_secs() as i64;
    state
        .store
        .insert_invitation(&Invitation {
            token_hash: crate::cli::sha256_hex(&token),
            account_id: account.id.clone(),
            expires_at,
            created_at: now,
        })
        .await?;
    let link = format!("{}/invitation?token={token}", state.issuer_string());
    let days = lifetime.as_secs().div_ceil(24 * 3600).max(1) as u32;
    let rendered = state
        .mail_templates
        .invitation(account.locale.as_deref().unwrap_or("fr"), &link, &account.login, days)
        .map_err(|e| {
            tracing::error!(error = %e, "invitation template failed");
            OAuthError::server_error()
        })?;
    let name =
        [account.given_name.as_deref(), account.family_name.as_deref()].into_iter().flatten().collect::<Vec<_>>();
    let mail = crate::mail::OutgoingMail::new(email, (!name.is_empty()).then(|| name.join(" ")), rendered);
    // Mail leaves in the background, as other mails do: a slow relay must not hold the request.
    let mailer = state.mailer.clone();
    let account_id = account.id.clone();
    tokio::spawn(async move {
        if let Err(e) = mailer.send(&mail).await {
            tracing::error!(error = %e, account = %account_id, "invitation mail not delivered");
        }
    });
    Ok(expires_at)
}

#[utoipa::path(
    post, path = PATH, tag = "accounts", request_body = NewAccount,
    responses(
        (status = 201, description = "Created (status invited); the invitation went by mail", body = InvitedAccount),
        (status = 400, description = "Invalid account", body = ErrorBody),
        (status = 403, description = "Another organisation, or no organisation given by an organisation administrator",
            body = ErrorBody),
        (status = 404, description = "No such organisation", body = ErrorBody),
        (status = 409, description = "An account has this login", body = ErrorBody),
    )
)]
pub async fn invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let request: NewAccount = json_body(&body)?;
    let mut target = TargetFacts::of("account", request.organisation_id.as_deref());
    // Creating an administrator is changing an administrator.
    target.privileged = request.kind == AccountKind::Administrator;
    let what = request.organisation_id.as_deref().map_or("new account".into(), |o| format!("new account in {o}"));
    authorize(&state, &headers, &actor, Operation::Write, &target, &what)?;
    let (login, id_nat, email) = validate_new_account(&request)?;
    if let Some(org) = &request.organisation_id {
        check_placement(&state, org, request.department_id.as_deref()).await?;
    }
    let account = Account {
        id: uuid::Uuid::new_v4().to_string(),
        kind: request.kind,
        login,
        id_nat,
        email: Some(email.clone()),
        given_name: request.given_name.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned),
        family_name: request.family_name.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned),
        status: AccountStatus::Invited,
        locale: request.locale.clone(),
        created_at: now,
        updated_at: now,
        last_authenticated_at: None,
    };
    state.store.insert_account(&account).await.map_err(|e| match e {
        StoreError::Conflict { .. } => {
            OAuthError::new(OAuthErrorCode::Conflict, "an account with this login already exists")
        }
        other => other.into(),
    })?;
    if let Some(org) = &request.organisation_id {
        let membership = Membership {
            account_id: account.id.clone(),
            organisation_id: org.clone(),
            department_id: request.department_id.clone(),
            created_at: now,
        };
        state.store.admin().upsert_membership(&membership).await?;
    }
    let invitation_expires_at = send_invitation(&state, &account, &email, now).await?;
    let detail = detail(&state, account).await?;
    audit_account(&state, &headers, &actor, &detail.account.id, "invited", None, snapshot(&detail));
    Ok((StatusCode::CREATED, Json(InvitedAccount { detail, invitation_expires_at })))
}

/// Sets the account's status, ending its sessions when it is disabled.
async fn set_status(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    disable: bool,
) -> Result<Json<AccountDetail>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(state, headers, now).await?;
    let account = authorized_account(state, headers, &actor, Operation::Write, id).await?;
    if disable && actor.id == format!("account:{}", account.id) {
        return Err(OAuthError::invalid_request("you cannot disable your own account"));
    }
    let (status, change) =
        if disable { (AccountStatus::Disabled, "disabled") } else { (AccountStatus::Active, "enabled") };
    let before = account.status;
    if before != status {
        state.store.set_account_status(&account.id, status, now).await?;
    }
    if disable {
        crate::oidc::token::end_all_access_of(state, &account.id, now).await?;
    }
    let updated = load(state, id).await?;
    audit_account(
        state,
        headers,
        &actor,
        &account.id,
        change,
        snapshot(&serde_json::json!({ "status": before })),
        snapshot(&serde_json::json!({ "status": updated.status })),
    );
    Ok(Json(detail(state, updated).await?))
}

#[utoipa::path(
    post, path = DISABLE_PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "Disabled; its sessions and tokens ended", body = AccountDetail),
        (status = 400, description = "One's own account", body = ErrorBody),
        (status = 403, description = "Another organisation, or an administrator's account", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn disable(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AccountDetail>, OAuthError> {
    set_status(&state, &headers, &id, true).await
}

#[utoipa::path(
    post, path = ENABLE_PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "Active", body = AccountDetail),
        (status = 403, description = "Another organisation, or an administrator's account", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn enable(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AccountDetail>, OAuthError> {
    set_status(&state, &headers, &id, false).await
}

#[utoipa::path(
    put, path = MEMBERSHIP_PATH, tag = "accounts",
    params(("id" = String, Path, description = "Account id"), ("organisation_id" = String, Path, description = "Organisation id")),
    request_body(content = MembershipRequest, description = "Optional: the department", content_type = "application/json"),
    responses(
        (status = 200, description = "The account is a member (of the department, if given)", body = AccountDetail),
        (status = 400, description = "Invalid department, or a disabled organisation", body = ErrorBody),
        (status = 403, description = "The account or the organisation is not the caller's", body = ErrorBody),
        (status = 404, description = "No such account or organisation", body = ErrorBody),
    )
)]
pub async fn add_membership(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, organisation_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<AccountDetail>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let request: MembershipRequest = if body.is_empty() { MembershipRequest::default() } else { json_body(&body)? };
    // Both sides must be the caller's: the account where it is now (an account of no organisation
    // is only a platform administrator's), and the organisation it joins.
    let account = authorized_account(&state, &headers, &actor, Operation::Write, &id).await?;
    super::organisations::load(&state, &organisation_id).await?;
    let mut target = account_target(&state, &account).await?;
    target.organisations = vec![organisation_id.clone()];
    authorize(&state, &headers, &actor, Operation::Write, &target, &format!("account {id} in {organisation_id}"))?;
    check_placement(&state, &organisation_id, request.department_id.as_deref()).await?;
    let before = state.store.admin().memberships_of(&account.id).await?;
    let membership = Membership {
        account_id: account.id.clone(),
        organisation_id: organisation_id.clone(),
        department_id: request.department_id,
        created_at: now,
    };
    state.store.admin().upsert_membership(&membership).await?;
    let detail = detail(&state, account).await?;
    let before: Vec<MembershipView> = before.into_iter().map(MembershipView::from).collect();
    audit_account(
        &state,
        &headers,
        &actor,
        &id,
        "membership_added",
        snapshot(&before),
        snapshot(&detail.organisations),
    );
    Ok(Json(detail))
}

#[utoipa::path(
    delete, path = MEMBERSHIP_PATH, tag = "accounts",
    params(("id" = String, Path, description = "Account id"), ("organisation_id" = String, Path, description = "Organisation id")),
    responses(
        (status = 204, description = "No longer a member"),
        (status = 403, description = "Another organisation, or an administrator's account", body = ErrorBody),
        (status = 404, description = "No such account, or not a member", body = ErrorBody),
    )
)]
pub async fn remove_membership(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, organisation_id)): Path<(String, String)>,
) -> Result<StatusCode, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let account = load(&state, &id).await?;
    let mut target = account_target(&state, &account).await?;
    if !target.organisations.contains(&organisation_id) {
        return Err(OAuthError::new(OAuthErrorCode::NotFound, "the account is not a member of this organisation"));
    }
    target.organisations = vec![organisation_id.clone()];
    authorize(&state, &headers, &actor, Operation::Write, &target, &format!("account {id} in {organisation_id}"))?;
    let before = state.store.admin().memberships_of(&account.id).await?;
    if !state.store.admin().delete_membership(&account.id, &organisation_id).await? {
        return Err(OAuthError::new(OAuthErrorCode::NotFound, "the account is not a member of this organisation"));
    }
    let after = state.store.admin().memberships_of(&account.id).await?;
    let views = |m: Vec<Membership>| m.into_iter().map(MembershipView::from).collect::<Vec<_>>();
    audit_account(
        &state,
        &headers,
        &actor,
        &id,
        "membership_removed",
        snapshot(&views(before)),
        snapshot(&views(after)),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = FACTORS_RESET_PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    request_body = FactorReset,
    responses(
        (status = 200, description = "Removed; the factors left", body = AccountDetail),
        (status = 400, description = "No factor named, or invite without password", body = ErrorBody),
        (status = 403, description = "Another organisation, or an administrator's account", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn reset_factors(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<AccountDetail>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let request: FactorReset = json_body(&body)?;
    let account = authorized_account(&state, &headers, &actor, Operation::Write, &id).await?;
    if request.factors.is_empty() {
        return Err(OAuthError::invalid_request(
            "factors must name at least one of password, totp, recovery_codes, webauthn",
        ));
    }
    let removes_password = request.factors.contains(&Factor::Password);
    if request.invite && !removes_password {
        return Err(OAuthError::invalid_request("invite sends a link to choose a new password: include password"));
    }
    let email = match (&account.email, request.invite) {
        (None, true) => return Err(OAuthError::invalid_request("the account has no email address to invite")),
        (email, _) => email.clone(),
    };
    let before = factors_of(&state, &account.id).await?;
    for factor in &request.factors {
        match factor {
            Factor::Password => state.store.delete_credentials(&account.id, "password").await?,
            Factor::Totp => state.store.delete_credentials(&account.id, crate::authn::totp::KIND).await?,
            Factor::RecoveryCodes => state.store.delete_credentials(&account.id, crate::authn::recovery::KIND).await?,
            Factor::Webauthn => state.store.admin().delete_webauthn_credentials_of(&account.id).await?,
        };
    }
    if let (true, Some(email)) = (request.invite, email) {
        send_invitation(&state, &account, &email, now).await?;
    }
    let detail = detail(&state, account).await?;
    audit_account(&state, &headers, &actor, &id, "factors_reset", snapshot(&before), snapshot(&detail.factors));
    Ok(Json(detail))
}

#[utoipa::path(
    get, path = SESSIONS_PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "Active grants (clients holding tokens for the account), newest first",
            body = SessionPage),
        (status = 403, description = "Another organisation", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SessionPage>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let account = authorized_account(&state, &headers, &actor, Operation::Read, &id).await?;
    let items = state
        .store
        .admin()
        .active_grants_of(&account.id, now)
        .await?
        .into_iter()
        .map(|g| SessionView {
            grant_id: g.id,
            client_id: g.client_id,
            sid: g.session_id,
            scope: g.scope,
            auth_time: g.auth_time,
            created_at: g.created_at,
            expires_at: g.expires_at,
        })
        .collect();
    Ok(Json(SessionPage { items, next_cursor: None }))
}

#[utoipa::path(
    delete, path = SESSIONS_PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "Every grant revoked and every browser session ended", body = SessionsEnded),
        (status = 403, description = "Another organisation, or an administrator's account", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn kill_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SessionsEnded>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let account = authorized_account(&state, &headers, &actor, Operation::Write, &id).await?;
    let before = state.store.admin().active_grants_of(&account.id, now).await?.len();
    let revoked_grants = crate::oidc::token::end_all_access_of(&state, &account.id, now).await?;
    audit_account(
        &state,
        &headers,
        &actor,
        &id,
        "sessions_killed",
        snapshot(&serde_json::json!({ "active_grants": before })),
        snapshot(&serde_json::json!({ "active_grants": 0 })),
    );
    Ok(Json(SessionsEnded { revoked_grants }))
}

#[utoipa::path(
    post, path = UNLOCK_PATH, tag = "accounts", params(("id" = String, Path, description = "Account id")),
    responses(
        (status = 200, description = "Unlocked (or was not locked); failure counts forgotten", body = AccountDetail),
        (status = 403, description = "Another organisation, or an administrator's account", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
pub async fn unlock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AccountDetail>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let account = authorized_account(&state, &headers, &actor, Operation::Write, &id).await?;
    let was = crate::authn::lockout::unlock(state.ephemeral.as_ref(), &account.login, now).await.map_err(lock_error)?;
    audit_account(
        &state,
        &headers,
        &actor,
        &id,
        "unlocked",
        snapshot(&serde_json::json!({ "locked_until": was })),
        snapshot(&serde_json::json!({ "locked_until": null })),
    );
    Ok(Json(detail(&state, account).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: AccountKind) -> NewAccount {
        NewAccount {
            kind,
            id_nat: None,
            login: None,
            email: "Jeanne.Martin@Example.org".into(),
            given_name: Some("Jeanne".into()),
            family_name: None,
            locale: None,
            organisation_id: None,
            department_id: None,
        }
    }

    fn refusal(r: &NewAccount) -> String {
        validate_new_account(r).unwrap_err().description.into_owned()
    }

    #[test]
    fn new_accounts_are_validated() {
        assert_eq!(
            validate_new_account(&request(AccountKind::Patient)).unwrap(),
            ("jeanne.martin@example.org".into(), None, "jeanne.martin@example.org".into())
        );
        assert!(refusal(&request(AccountKind::Professional)).contains("id_nat"));
        let mut pro = request(AccountKind::Professional);
        pro.id_nat = Some("899700427885".into());
        assert_eq!(validate_new_account(&pro).unwrap().0, "899700427885");
        pro.id_nat = Some("899700427886".into());
        assert!(refusal(&pro).starts_with("id_nat:"), "{}", refusal(&pro));

        let mut r = request(AccountKind::Administrator);
        r.email = "not-an-address".into();
        assert!(refusal(&r).contains("email"));
        let mut r = request(AccountKind::Patient);
        r.id_nat = Some("899700427885".into());
        assert!(refusal(&r).contains("professionals only"));
        let mut r = request(AccountKind::Patient);
        r.login = Some("with space".into());
        assert!(refusal(&r).contains("login"));
        let mut r = request(AccountKind::Patient);
        r.locale = Some("de".into());
        assert!(refusal(&r).contains("locale"));
        let mut r = request(AccountKind::Patient);
        r.department_id = Some("d".into());
        assert!(refusal(&r).contains("organisation_id"));
    }
}

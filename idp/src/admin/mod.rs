//! The admin REST API (`/api/admin/v1`): roles, organisations and departments, accounts, the
//! habilitation profiles and practice data (in `habilitation`), and its OpenAPI 3 document.
//!
//! Every call goes the same way: [`actor`] reads the bearer token (a Habilis access token addressed
//! to Habilis, scope `admin` or `audit`) and the caller's role grants; the handler loads its target
//! (404 when missing), asks the Cedar rules ([`authorize`], `policies/admin.cedar`) whether the
//! caller may do this to it (403 and an audit event when not), validates the input (400 saying
//! what is wrong), acts, and records a typed audit event with the state before and after.
//!
//! Errors are the JSON of every other Habilis endpoint ([`OAuthError`]:
//! `{"error", "error_description"}`); lists are pages ([`PageQuery`], `{"items", "next_cursor"}`).
//! The routes are data ([`routes`]) so that a test can check each one against the OpenAPI
//! document.

pub mod accounts;
pub mod assignments;
pub mod audit;
pub mod cli;
pub mod clients;
pub mod indicators;
pub mod keys;
pub mod me;
pub mod openapi;
pub mod organisations;
pub mod persons;
pub mod policy;
pub mod profiles;
pub mod relationships;
pub mod roles;
pub mod settings;

use axum::Router;
use axum::http::{HeaderMap, Method};
use axum::routing::{MethodFilter, MethodRouter, on};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{Account, AccountKind, AccountStatus, AdminRole};
use policy::{AdminFacts, Operation, TargetFacts};

/// Where the admin API lives.
pub const BASE: &str = "/api/admin/v1";
/// Scope of administrators' tokens (platform and organisation administrators).
pub const ADMIN_SCOPE: &str = "admin";
/// Scope of auditors' tokens: read-only access, whatever roles the account holds.
pub const AUDIT_SCOPE: &str = "audit";
/// Page size when the caller gives none, and the largest accepted.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// The caller of the admin API.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `account:<id>` or `client:<id>`: what audit events name.
    pub id: String,
    pub facts: AdminFacts,
}

/// The caller, from the bearer token and its role grants.
///
/// - A client's own token (client credentials) stands for an administration back end: scope
///   `admin` makes it a platform administrator, scope `audit` an auditor.
/// - An account's token counts only while the account is active. Its powers are its role grants
///   (accounts of kind `administrator` are platform administrators); with only the `audit` scope
///   they shrink to read-only, and only for platform administrators and auditors.
pub async fn actor(state: &AppState, headers: &HeaderMap, now: i64) -> Result<Actor, OAuthError> {
    let claims = crate::habilitation::api_token(state, headers, now).await?;
    let (admin_scope, audit_scope) = (claims.has_scope(ADMIN_SCOPE), claims.has_scope(AUDIT_SCOPE));
    if !admin_scope && !audit_scope {
        return Err(OAuthError::new(
            OAuthErrorCode::InsufficientScope,
            "the access token lacks the admin (or audit) scope",
        )
        .with_challenge("Bearer"));
    }
    let Some(account_id) = claims.account_id() else {
        let facts = AdminFacts { platform: admin_scope, auditor: !admin_scope, organisations: Vec::new() };
        return Ok(Actor { id: format!("client:{}", claims.client_id), facts });
    };
    let account = match state.store.account_by_id(account_id).await? {
        Some(a) if a.status == AccountStatus::Active => a,
        _ => return Err(no_role()),
    };
    let grants = state.store.admin().roles_of(&account.id).await?;
    let has = |role: AdminRole| grants.iter().any(|g| g.role == role);
    let platform = account.kind == AccountKind::Administrator || has(AdminRole::PlatformAdmin);
    let auditor = has(AdminRole::Auditor);
    let organisations: Vec<String> =
        grants.iter().filter(|g| g.role == AdminRole::OrgAdmin).filter_map(|g| g.organisation_id.clone()).collect();
    let facts = if admin_scope {
        AdminFacts { platform, auditor, organisations }
    } else {
        AdminFacts { platform: false, auditor: platform || auditor, organisations: Vec::new() }
    };
    if !facts.platform && !facts.auditor && facts.organisations.is_empty() {
        return Err(no_role());
    }
    Ok(Actor { id: format!("account:{}", account.id), facts })
}

fn no_role() -> OAuthError {
    OAuthError::new(OAuthErrorCode::AccessDenied, "this account holds no administration role usable with this token")
}

/// Asks the administration rules whether `actor` may perform `operation` on `target` (`what`
/// names it for the audit log). A refusal is audited and answered 403 with a description of why.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    operation: Operation,
    target: &TargetFacts,
    what: &str,
) -> Result<(), OAuthError> {
    let decision = state.admin_policy.evaluate(&actor.facts, operation, target);
    if decision.allowed {
        return Ok(());
    }
    state.audit.record(
        AuditEvent::AdminAccessDenied {
            actor: actor.id.clone(),
            operation: operation.as_str().to_string(),
            target: what.to_string(),
            organisations: target.organisations.clone(),
            reasons: decision.reasons,
        },
        AuditContext::from_request(headers, None),
    );
    Err(OAuthError::new(OAuthErrorCode::AccessDenied, refusal_text(&actor.facts, operation, target)))
}

/// Targets that belong to no organisation by nature: only platform administrators change them.
pub const PLATFORM_WIDE: &[&str] =
    &["client", "initial_access_token", "signing_key", "settings", "profile", "audit_log"];

/// Why a request was refused, in the caller's terms.
fn refusal_text(facts: &AdminFacts, operation: Operation, target: &TargetFacts) -> &'static str {
    if operation != Operation::Read && facts.auditor && !facts.platform && facts.organisations.is_empty() {
        "auditors have read-only access"
    } else if PLATFORM_WIDE.contains(&target.kind) {
        "clients, profiles, signing keys, settings and the audit log are platform-wide: only platform administrators manage them (auditors read them)"
    } else if operation == Operation::Administer {
        "only platform administrators create, disable or delete organisations and grant or revoke roles"
    } else if target.privileged && facts.organisations.iter().any(|o| target.organisations.contains(o)) {
        "only platform administrators change the accounts of administrators"
    } else if target.organisations.is_empty() {
        "organisation administrators act only inside their own organisation; name it (e.g. ?organisation=)"
    } else {
        "organisation administrators act only inside their own organisation"
    }
}

/// What the rules know about an account: its organisations, and whether it administers anything.
pub async fn account_target(state: &AppState, account: &Account) -> Result<TargetFacts, OAuthError> {
    let memberships = state.store.admin().memberships_of(&account.id).await?;
    let privileged =
        account.kind == AccountKind::Administrator || !state.store.admin().roles_of(&account.id).await?.is_empty();
    Ok(TargetFacts {
        kind: "account",
        organisations: memberships.into_iter().map(|m| m.organisation_id).collect(),
        privileged,
    })
}

/// The context of an audit record of the admin API.
pub fn audit_context(headers: &HeaderMap) -> AuditContext {
    AuditContext::from_request(headers, None)
}

/// A value as JSON text for an audit record's `before`/`after`.
pub fn snapshot<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

/// A JSON request body, or 400 saying what is wrong with it.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, OAuthError> {
    serde_json::from_slice(body).map_err(|e| OAuthError::invalid_request(format!("invalid JSON body: {e}")))
}

/// The query string, or 400 saying what is wrong with it.
pub fn query<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, OAuthError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| OAuthError::invalid_request(format!("invalid query: {}", e.body_text())))
}

/// `?limit=&cursor=` of every list.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page; absent for the first page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page size, checked.
    pub fn limit(&self) -> Result<i64, OAuthError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(OAuthError::invalid_request(format!("limit must be between 1 and {MAX_LIMIT}"))),
        }
    }

    /// The cursor's parts, checked: `parts` strings.
    pub fn cursor(&self, parts: usize) -> Result<Option<Vec<String>>, OAuthError> {
        let Some(cursor) = &self.cursor else { return Ok(None) };
        let invalid = || OAuthError::invalid_request("cursor is not one this API returned");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let values: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if values.len() != parts {
            return Err(invalid());
        }
        Ok(Some(values))
    }
}

/// An opaque cursor holding the sort key of the last item of a page.
pub fn encode_cursor(parts: &[&str]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(parts).unwrap_or_default())
}

/// Splits a page fetched with `limit + 1` rows: the items, and whether more follow.
pub fn split_page<T>(mut rows: Vec<T>, limit: i64) -> (Vec<T>, bool) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    (rows, more)
}

/// A `LIKE` pattern matching `text` anywhere, case-insensitively (the SQL lower-cases the column),
/// with the pattern characters of `text` taken literally. `None` for a blank filter.
pub fn contains_pattern(text: Option<&str>) -> Result<Option<String>, OAuthError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    if text.chars().count() > 100 {
        return Err(OAuthError::invalid_request("the search text is limited to 100 characters"));
    }
    let mut pattern = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Ok(Some(pattern))
}

/// A required, trimmed, bounded text field of a request body.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String, OAuthError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(OAuthError::invalid_request(format!("{field} must not be empty")));
    }
    if trimmed.chars().count() > max || trimmed.chars().any(char::is_control) {
        return Err(OAuthError::invalid_request(format!("{field} must be at most {max} printable characters")));
    }
    Ok(trimmed.to_string())
}

/// One route of the admin API: what the router serves and what the OpenAPI document must describe.
pub struct AdminRoute {
    pub method: Method,
    pub path: &'static str,
    pub handler: MethodRouter<AppState>,
}

macro_rules! route {
    ($method:ident, $path:expr, $handler:expr) => {
        AdminRoute { method: Method::$method, path: $path, handler: on(MethodFilter::$method, $handler) }
    };
}

/// Every route under [`BASE`], the existing habilitation ones included.
pub fn routes() -> Vec<AdminRoute> {
    use crate::habilitation::{professionals_api, profiles_api};
    vec![
        route!(GET, openapi::PATH, openapi::document),
        route!(GET, me::PATH, me::show),
        route!(GET, roles::PATH, roles::list),
        route!(POST, roles::PATH, roles::grant),
        route!(DELETE, roles::ITEM_PATH, roles::revoke),
        route!(GET, organisations::PATH, organisations::list),
        route!(POST, organisations::PATH, organisations::create),
        route!(GET, organisations::ITEM_PATH, organisations::show),
        route!(PATCH, organisations::ITEM_PATH, organisations::update),
        route!(DELETE, organisations::ITEM_PATH, organisations::remove),
        route!(GET, organisations::DEPARTMENTS_PATH, organisations::list_departments),
        route!(POST, organisations::DEPARTMENTS_PATH, organisations::create_department),
        route!(DELETE, organisations::DEPARTMENT_PATH, organisations::remove_department),
        route!(GET, accounts::PATH, accounts::search),
        route!(POST, accounts::PATH, accounts::invite),
        route!(GET, accounts::ITEM_PATH, accounts::show),
        route!(POST, accounts::DISABLE_PATH, accounts::disable),
        route!(POST, accounts::ENABLE_PATH, accounts::enable),
        route!(PUT, accounts::MEMBERSHIP_PATH, accounts::add_membership),
        route!(DELETE, accounts::MEMBERSHIP_PATH, accounts::remove_membership),
        route!(POST, accounts::FACTORS_RESET_PATH, accounts::reset_factors),
        route!(GET, accounts::SESSIONS_PATH, accounts::sessions),
        route!(DELETE, accounts::SESSIONS_PATH, accounts::kill_sessions),
        route!(POST, accounts::UNLOCK_PATH, accounts::unlock),
        route!(GET, assignments::PATH, assignments::list),
        route!(PUT, assignments::ITEM_PATH, assignments::assign),
        route!(DELETE, assignments::ITEM_PATH, assignments::unassign),
        route!(GET, persons::EXPORT_PATH, persons::export),
        route!(POST, persons::ERASE_PATH, persons::erase),
        route!(GET, profiles_api::PATH, profiles_api::list),
        route!(GET, profiles_api::ITEM_PATH, profiles_api::show),
        route!(PUT, profiles_api::ITEM_PATH, profiles_api::put),
        route!(DELETE, profiles_api::ITEM_PATH, profiles_api::remove),
        route!(GET, professionals_api::PATH, professionals_api::show),
        route!(PUT, professionals_api::PATH, professionals_api::put),
        route!(GET, clients::PATH, clients::list),
        route!(POST, clients::PATH, clients::register),
        route!(GET, clients::ITEM_PATH, clients::show),
        route!(PATCH, clients::ITEM_PATH, clients::update),
        route!(DELETE, clients::ITEM_PATH, clients::remove),
        route!(POST, clients::SECRET_PATH, clients::rotate_secret),
        route!(GET, clients::TOKENS_PATH, clients::list_tokens),
        route!(POST, clients::TOKENS_PATH, clients::issue_token),
        route!(DELETE, clients::TOKEN_PATH, clients::revoke_token),
        route!(GET, relationships::PATH, relationships::search),
        route!(POST, relationships::PATH, relationships::create),
        route!(GET, relationships::ITEM_PATH, relationships::show),
        route!(POST, relationships::REVOKE_PATH, relationships::revoke),
        route!(GET, keys::PATH, keys::list),
        route!(POST, keys::ROTATE_PATH, keys::rotate),
        route!(POST, keys::RETIRE_PATH, keys::retire),
        route!(GET, settings::PATH, settings::show),
        route!(GET, audit::PATH, audit::search),
        route!(GET, audit::EXPORT_PATH, audit::export),
        route!(GET, indicators::PATH, indicators::show),
        route!(POST, profiles::PREVIEW_PATH, profiles::preview),
    ]
}

/// The admin API's router (axum merges the methods of one path).
pub fn router() -> Router<AppState> {
    routes().into_iter().fold(Router::new(), |router, r| router.route(r.path, r.handler))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_under_the_base_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in routes() {
            assert!(r.path.starts_with(BASE), "{}", r.path);
            assert!(seen.insert((r.method.clone(), r.path)), "{} {} twice", r.method, r.path);
        }
        // Building the router checks the paths' syntax and that no method is routed twice.
        let _ = router();
    }

    #[test]
    fn page_limits_and_cursors_are_checked() {
        assert_eq!(PageQuery::default().limit().unwrap(), DEFAULT_LIMIT);
        for bad in [0, -1, MAX_LIMIT + 1] {
            let q = PageQuery { limit: Some(bad), cursor: None };
            assert!(q.limit().unwrap_err().description.contains("limit"), "{bad}");
        }
        let cursor = encode_cursor(&["Hôpital", "id-1"]);
        let q = PageQuery { limit: None, cursor: Some(cursor) };
        assert_eq!(q.cursor(2).unwrap(), Some(vec!["Hôpital".to_string(), "id-1".to_string()]));
        assert!(q.cursor(1).is_err(), "wrong number of parts");
        for bad in ["!!", "e30", ""] {
            let q = PageQuery { limit: None, cursor: Some(bad.into()) };
            assert!(q.cursor(2).is_err(), "{bad}");
        }
    }

    #[test]
    fn split_page_tells_whether_more_follow() {
        assert_eq!(split_page(vec![1, 2, 3], 2), (vec![1, 2], true));
        assert_eq!(split_page(vec![1, 2], 2), (vec![1, 2], false));
    }

    #[test]
    fn search_patterns_are_literal_and_case_insensitive() {
        assert_eq!(contains_pattern(Some("  ")).unwrap(), None);
        assert_eq!(contains_pattern(None).unwrap(), None);
        assert_eq!(contains_pattern(Some("Dupont")).unwrap().as_deref(), Some("%dupont%"));
        assert_eq!(contains_pattern(Some("50%_a\\")).unwrap().as_deref(), Some("%50\\%\\_a\\\\%"));
        assert!(contains_pattern(Some(&"x".repeat(101))).is_err());
    }

    #[test]
    fn required_text_is_trimmed_and_bounded() {
        assert_eq!(required_text("name", "  Clinique  ", 10).unwrap(), "Clinique");
        assert!(required_text("name", "   ", 10).unwrap_err().description.contains("name must not be empty"));
        assert!(required_text("name", "abcdefghijk", 10).is_err());
        assert!(required_text("name", "a\u{7}b", 10).is_err());
    }
}

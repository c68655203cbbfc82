//! The pages of the inactive-account rule: the "keep my account" link of the warning mail, and
//! the terms of use that state the cadence.
//!
//! Following the link (GET) only shows a page: mail security scanners fetch links, and must not
//! object on the owner's behalf. The objection is the form's POST, protected like the other
//! self-service forms by a double-submit CSRF token (a `__Host-` cookie on https, echoed by the
//! form); it consumes the link atomically and restarts the inactivity clock.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;

use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::authn::session::cookie;
use crate::error::OAuthError;
use crate::oidc::params::Params;
use crate::store::{Account, KeepToken};
use crate::web::i18n::Lang;

pub use super::notify::KEEP_PATH;
/// The terms of use of the theme.
pub const TERMS_PATH: &str = "/terms";

fn csrf_cookie_name(state: &AppState) -> &'static str {
    if state.sessions.settings.secure { "__Host-habilis-csrf" } else { "habilis-csrf" }
}

/// A page with a fresh double-submit CSRF token (set as a cookie, echoed by the form).
fn with_csrf(state: &AppState, render: impl FnOnce(&str) -> Response) -> Response {
    let token = crate::cli::random_token();
    let mut response = render(&token);
    let secure = if state.sessions.settings.secure { "; Secure" } else { "" };
    let value = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600{secure}", csrf_cookie_name(state));
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

fn csrf_ok(state: &AppState, headers: &HeaderMap, params: &Params) -> bool {
    use subtle::ConstantTimeEq;
    match (cookie(headers, csrf_cookie_name(state)), params.get("csrf")) {
        (Some(c), Some(f)) if !c.is_empty() => c.as_bytes().ct_eq(f.as_bytes()).into(),
        _ => false,
    }
}

fn message(state: &AppState, lang: Lang, status: StatusCode, text: &str) -> Response {
    let title = state.pages.texts(lang).keep_title;
    state.pages.page(status, "message.html", lang, minijinja::context! { title => title, message => text })
}

/// The account's language when it has one, else the browser's.
fn lang_of(account: &Account, headers: &HeaderMap) -> Lang {
    Lang::negotiate(account.locale.as_deref(), headers)
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// The unused, unexpired link `token` and its account.
async fn peek(state: &AppState, token: &str, now: i64) -> Result<Option<(KeepToken, Account)>, OAuthError> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let Some(link) = state.store.lifecycle().keep_token(&crate::cli::sha256_hex(token)).await? else {
        return Ok(None);
    };
    if link.used_at.is_some() || link.expires_at <= now {
        return Ok(None);
    }
    Ok(state.store.account_by_id(&link.account_id).await?.map(|account| (link, account)))
}

/// `GET /account/keep?token=…`: the confirmation page (consumes nothing).
pub async fn keep_page(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    let token = q.token.unwrap_or_default();
    let (link, account) = match peek(&state, &token, crate::unix_now()).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            let lang = Lang::negotiate(None, &headers);
            return message(&state, lang, StatusCode::GONE, state.pages.texts(lang).keep_invalid);
        }
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let lang = lang_of(&account, &headers);
    let deletion_at = match deletion_date_of(&state, &link).await {
        Ok(at) => at,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let deletion_date = super::format_date(deletion_at, lang.code());
    with_csrf(&state, |csrf| {
        state.pages.page(
            StatusCode::OK,
            "keep_account.html",
            lang,
            minijinja::context! { token => token, csrf => csrf, login => account.login.clone(), deletion_date => deletion_date },
        )
    })
}

/// The deletion date announced to the account: the first warning's of its latest period (a link
/// cut short by `keep_link_validity` ends before it).
async fn deletion_date_of(state: &AppState, link: &KeepToken) -> Result<i64, OAuthError> {
    let warnings = state.store.lifecycle().warnings_of(&link.account_id).await?;
    let latest = warnings.iter().map(|w| w.activity_at).max();
    Ok(warnings
        .iter()
        .filter(|w| Some(w.activity_at) == latest)
        .map(|w| w.deletion_at)
        .min()
        .unwrap_or(link.expires_at))
}

/// `POST /account/keep`: the objection. Consumes the link and restarts the inactivity clock.
pub async fn keep_submit(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    if !csrf_ok(&state, &headers, &params) {
        return crate::web::pages_error(
            &state,
            &headers,
            None,
            OAuthError::invalid_request("the form is out of date; open the link of the mail again"),
        );
    }
    let token = params.get("token").unwrap_or("");
    let now = crate::unix_now();
    let browser_lang = Lang::negotiate(None, &headers);
    if token.is_empty() || token.len() > 128 {
        return message(&state, browser_lang, StatusCode::GONE, state.pages.texts(browser_lang).keep_invalid);
    }
    let spent = match state.store.lifecycle().use_keep_token(&crate::cli::sha256_hex(token), now).await {
        Ok(Some(spent)) => spent,
        Ok(None) => {
            return message(&state, browser_lang, StatusCode::GONE, state.pages.texts(browser_lang).keep_invalid);
        }
        Err(e) => return crate::web::pages_error(&state, &headers, None, e.into()),
    };
    state.audit.record(
        AuditEvent::AccountKept { account_id: spent.account_id.clone(), deletion_at: spent.expires_at },
        AuditContext::from_request(&headers, None),
    );
    tracing::info!(account = %spent.account_id, "lifecycle: the owner kept their inactive account");
    let lang = match state.store.account_by_id(&spent.account_id).await {
        Ok(Some(account)) => lang_of(&account, &headers),
        _ => browser_lang,
    };
    message(&state, lang, StatusCode::OK, state.pages.texts(lang).keep_done)
}

/// `GET /terms`: the terms of use, with the cadence of the running configuration.
pub async fn terms(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let lang = Lang::negotiate(None, &headers);
    let config = &state.config.lifecycle;
    let days = |d: std::time::Duration| d.as_secs() / (24 * 3600);
    state.pages.page(
        StatusCode::OK,
        "terms.html",
        lang,
        minijinja::context! {
            enabled => config.enabled,
            inactive_days => days(config.inactive_after),
            warn_days => days(config.warn_before),
            remind_days => config.remind_before.map(days),
        },
    )
}

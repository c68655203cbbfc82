//! Self-service pages outside an authorization: accepting an invitation (choose a password) and
//! resetting a forgotten password by an emailed link. Neither logs the user in: the next login
//! still asks for the second factor. Forms carry a double-submit CSRF token (cookie + field).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;

use crate::app::AppState;
use crate::authn::password::PasswordError;
use crate::authn::session::cookie;
use crate::error::OAuthError;
use crate::oidc::params::Params;
use crate::store::{Account, AccountStatus, Credential};
use crate::web::i18n::{Lang, Texts};

/// How long a password-reset link stays valid.
pub const RESET_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// One reset link per login name per this window.
pub const RESET_REQUEST_WINDOW: Duration = Duration::from_secs(60);

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

fn message(state: &AppState, lang: Lang, status: StatusCode, title: &str, text: &str) -> Response {
    state.pages.page(status, "message.html", lang, minijinja::context! { title => title, message => text })
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

enum Purpose {
    Invitation,
    Reset,
}

impl Purpose {
    fn title(&self, t: &'static Texts) -> &'static str {
        match self {
            Purpose::Invitation => t.invitation_title,
            Purpose::Reset => t.reset_title,
        }
    }
    fn intro(&self, t: &'static Texts) -> &'static str {
        match self {
            Purpose::Invitation => t.invitation_intro,
            Purpose::Reset => t.reset_intro,
        }
    }
    fn invalid(&self, t: &'static Texts) -> &'static str {
        match self {
            Purpose::Invitation => t.invitation_invalid,
            Purpose::Reset => t.reset_invalid,
        }
    }
    fn done(&self, t: &'static Texts) -> &'static str {
        match self {
            Purpose::Invitation => t.invitation_done,
            Purpose::Reset => t.reset_done,
        }
    }
    fn action(&self) -> &'static str {
        match self {
            Purpose::Invitation => "/invitation",
            Purpose::Reset => "/password/reset",
        }
    }
}

fn reset_key(token: &str) -> String {
    format!("pwreset:{}", crate::cli::sha256_hex(token))
}

/// The account a token stands for, without consuming the token.
async fn peek(state: &AppState, purpose: &Purpose, token: &str, now: i64) -> Result<Option<Account>, OAuthError> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let account_id = match purpose {
        Purpose::Invitation => match state.store.invitation(&crate::cli::sha256_hex(token)).await? {
            Some(i) if i.expires_at > now => Some(i.account_id),
            _ => None,
        },
        Purpose::Reset => state.ephemeral.get(&reset_key(token)).await?.and_then(|b| String::from_utf8(b).ok()),
    };
    match account_id {
        Some(id) => Ok(state.store.account_by_id(&id).await?.filter(|a| a.status != AccountStatus::Disabled)),
        None => Ok(None),
    }
}

/// Consumes the token atomically: of concurrent submissions, exactly one gets the account id.
async fn take(state: &AppState, purpose: &Purpose, token: &str, now: i64) -> Result<Option<String>, OAuthError> {
    Ok(match purpose {
        Purpose::Invitation => {
            state.store.take_invitation(&crate::cli::sha256_hex(token), now).await?.map(|i| i.account_id)
        }
        Purpose::Reset => state.ephemeral.take(&reset_key(token)).await?.and_then(|b| String::from_utf8(b).ok()),
    })
}

async fn show_form(state: AppState, headers: HeaderMap, token: Option<String>, purpose: Purpose) -> Response {
    let now = crate::unix_now();
    let lang = Lang::negotiate(None, &headers);
    let t = state.pages.texts(lang);
    let token = token.unwrap_or_default();
    let account = match peek(&state, &purpose, &token, now).await {
        Ok(Some(a)) => a,
        Ok(None) => return message(&state, lang, StatusCode::GONE, purpose.title(t), purpose.invalid(t)),
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let lang = account.locale.as_deref().map(|l| Lang::negotiate(Some(l), &headers)).unwrap_or(lang);
    form_page(&state, lang, &purpose, &token, &account, None, StatusCode::OK)
}

fn form_page(
    state: &AppState,
    lang: Lang,
    purpose: &Purpose,
    token: &str,
    account: &Account,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let t = state.pages.texts(lang);
    let min_length = state.config.password.min_length;
    with_csrf(state, |csrf| {
        state.pages.page(
            status,
            "set_password.html",
            lang,
            minijinja::context! {
                title => purpose.title(t), intro => purpose.intro(t), rules => t.password_rules, action => purpose.action(),
                token => token, csrf => csrf, login => account.login.clone(), min_length => min_length, error => error.unwrap_or(""),
            },
        )
    })
}

async fn submit_form(state: AppState, headers: HeaderMap, body: Bytes, purpose: Purpose) -> Response {
    let now = crate::unix_now();
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let lang = Lang::negotiate(None, &headers);
    let t = state.pages.texts(lang);
    if !csrf_ok(&state, &headers, &params) {
        return crate::web::pages_error(
            &state,
            &headers,
            None,
            OAuthError::invalid_request("the form is out of date; open the link again"),
        );
    }
    let token = params.get("token").unwrap_or("").to_string();
    let account = match peek(&state, &purpose, &token, now).await {
        Ok(Some(a)) => a,
        Ok(None) => return message(&state, lang, StatusCode::GONE, purpose.title(t), purpose.invalid(t)),
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let password = zeroize::Zeroizing::new(params.get("password").unwrap_or("").to_string());
    if params.get("confirm").unwrap_or("") != password.as_str() {
        return form_page(&state, lang, &purpose, &token, &account, Some(t.passwords_differ), StatusCode::BAD_REQUEST);
    }
    let personal: Vec<&str> = [
        Some(account.login.as_str()),
        account.given_name.as_deref(),
        account.family_name.as_deref(),
        account.email.as_deref().and_then(|e| e.split('@').next()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Err(e) = state.passwords.check_policy_for(&password, &personal) {
        let text = match e {
            PasswordError::Weak => t.password_weak.to_string(),
            other => other.to_string(),
        };
        return form_page(&state, lang, &purpose, &token, &account, Some(&text), StatusCode::BAD_REQUEST);
    }
    // Only now, with a valid password in hand, consume the token.
    match take(&state, &purpose, &token, now).await {
        Ok(Some(id)) if id == account.id => {}
        Ok(_) => return message(&state, lang, StatusCode::GONE, purpose.title(t), purpose.invalid(t)),
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    }
    let hash = match state.passwords.hash(password).await {
        Ok(h) => h,
        Err(e) => return crate::web::pages_error(&state, &headers, None, OAuthError::invalid_request(e.to_string())),
    };
    let credential = Credential::password(&account.id, hash, now);
    if let Err(e) = state.store.replace_credentials(&credential).await {
        return crate::web::pages_error(&state, &headers, None, e.into());
    }
    if account.status == AccountStatus::Invited
        && let Err(e) = state.store.set_account_status(&account.id, AccountStatus::Active, now).await
    {
        return crate::web::pages_error(&state, &headers, None, e.into());
    }
    // A reset means the old password may be known to someone else: whoever used it keeps no
    // session and no token. Every grant is revoked (access tokens fail at once, refresh tokens
    // are refused) and every browser session of the account ends.
    if matches!(purpose, Purpose::Reset) {
        match crate::oidc::token::end_all_access_of(&state, &account.id, now).await {
            Ok(grants) => {
                tracing::info!(account = %account.id, grants, "password reset: every grant and session ended")
            }
            Err(e) => return crate::web::pages_error(&state, &headers, None, e),
        }
    }
    tracing::info!(account = %account.id, purpose = purpose.action(), "password set");
    let via = match purpose {
        Purpose::Invitation => "invitation",
        Purpose::Reset => "reset",
    };
    state.audit.record(
        crate::audit::AuditEvent::PasswordChanged { account_id: account.id.clone(), via: via.into() },
        crate::audit::AuditContext::from_request(&headers, None),
    );
    message(&state, lang, StatusCode::OK, purpose.title(t), purpose.done(t))
}

pub async fn invitation_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    show_form(state, headers, q.token, Purpose::Invitation).await
}

pub async fn invitation_submit(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    submit_form(state, headers, body, Purpose::Invitation).await
}

pub async fn reset_page(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    show_form(state, headers, q.token, Purpose::Reset).await
}

pub async fn reset_submit(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    submit_form(state, headers, body, Purpose::Reset).await
}

pub async fn forgot_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let lang = Lang::negotiate(None, &headers);
    with_csrf(&state, |csrf| {
        state.pages.page(
            StatusCode::OK,
            "forgot_password.html",
            lang,
            minijinja::context! { csrf => csrf, sent => false },
        )
    })
}

/// Sends a reset link when the login names an active account with an email address. The answer
/// is the same in every case, so the page reveals nothing about which accounts exist; requests
/// are throttled per login name (one link per minute).
pub async fn forgot_submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = crate::unix_now();
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    if !csrf_ok(&state, &headers, &params) {
        return crate::web::pages_error(
            &state,
            &headers,
            None,
            OAuthError::invalid_request("the form is out of date; reload the page"),
        );
    }
    let lang = Lang::negotiate(None, &headers);
    let login = crate::authn::login::normalise_login(params.get("login").unwrap_or(""));
    if !login.is_empty() && login.len() <= 254 {
        // Each login typed stores a throttle entry: bounded like every other anonymous entry.
        let work = crate::oidc::admission::Work::PasswordReset;
        if let Err(e) = crate::oidc::admission::admit(&state, work, Some(peer.ip()), None).await {
            return crate::web::pages_error_in(&state, lang, None, e);
        }
        let first_in_window = matches!(
            state.ephemeral.put_if_absent(&format!("pwreset-throttle:{login}"), b"1", RESET_REQUEST_WINDOW).await,
            Ok(true)
        );
        if first_in_window && let Err(e) = send_reset_link(&state, &login, lang).await {
            tracing::error!(error = %e, "password reset link not sent");
        }
    }
    let _ = now;
    state.pages.page(StatusCode::OK, "forgot_password.html", lang, minijinja::context! { sent => true, csrf => "" })
}

async fn send_reset_link(state: &AppState, login: &str, lang: Lang) -> Result<(), OAuthError> {
    let Some(account) = state.store.account_by_login(login).await? else { return Ok(()) };
    let Some(email) = account.email.clone().filter(|_| account.status == AccountStatus::Active) else { return Ok(()) };
    let token = crate::cli::random_token();
    state.ephemeral.put(&reset_key(&token), account.id.as_bytes(), RESET_LIFETIME).await?;
    let link = format!("{}/password/reset?token={token}", state.issuer_string());
    let language = account.locale.as_deref().unwrap_or(lang.code());
    let rendered =
        state.mail_templates.password_reset(language, &link, (RESET_LIFETIME.as_secs() / 60) as u32).map_err(|e| {
            tracing::error!(error = %e, "reset template failed");
            OAuthError::server_error()
        })?;
    let mail = crate::mail::OutgoingMail::new(email, None, rendered);
    let mailer = state.mailer.clone();
    tokio::spawn(async move {
        if let Err(e) = mailer.send(&mail).await {
            tracing::error!(error = %e, "password reset mail not delivered");
        }
    });
    tracing::info!(account = %account.id, "password reset link sent");
    Ok(())
}

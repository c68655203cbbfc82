//! The login page: identifier + password, the first step of the login journey. Unknown accounts
//! and wrong passwords get the same answer after the same work (a dummy hash is verified for
//! unknown accounts), and attempts are counted per account and per address.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde::Deserialize;

use crate::app::AppState;
use crate::authn::session::{self, FactorRecord, Session};
use crate::error::OAuthError;
use crate::oidc::interaction::{self, Interaction};
use crate::oidc::params::Params;
use crate::store::{Account, AccountStatus};
use crate::web::i18n::Lang;

/// Failed attempts allowed per account, then per client address, in one window.
const ACCOUNT_ATTEMPTS: u64 = 10;
const ADDRESS_ATTEMPTS: u64 = 100;
const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Deserialize)]
pub struct LoginQuery {
    interaction: String,
}

pub async fn page(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    match interaction::load_bound(&state, &headers, &q.interaction).await {
        Ok(interaction) => {
            let login_hint = interaction.request.login_hint.clone().unwrap_or_default();
            render(&state, &headers, &interaction, &login_hint, None).await
        }
        Err(e) => crate::web::pages_error(&state, &headers, None, e),
    }
}

async fn render(
    state: &AppState,
    headers: &HeaderMap,
    interaction: &Interaction,
    login: &str,
    error: Option<&str>,
) -> Response {
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), headers);
    let client_name = crate::oidc::consent::client_name(state, &interaction.request.client_id).await;
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    state.pages.page(
        status,
        "login.html",
        lang,
        minijinja::context! {
            interaction => interaction.id.clone(), csrf => interaction.csrf.clone(), login_hint => login,
            error => error.unwrap_or(""), client_name => client_name,
        },
    )
}

/// Normalises what the user typed: idNat and ADELI are upper-case alphanumerics, other logins
/// (email addresses, chosen ids) are compared lower-case.
pub fn normalise_login(input: &str) -> String {
    let trimmed = input.trim();
    match crate::ids::IdNat::parse(trimmed) {
        Ok(id) => id.as_str().to_string(),
        Err(_) => trimmed.to_lowercase(),
    }
}

pub async fn submit(
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
    let mut interaction = match interaction::load_bound(&state, &headers, params.get("interaction").unwrap_or("")).await
    {
        Ok(i) => i,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    if !interaction.csrf_matches(params.get("csrf").unwrap_or("")) {
        return crate::web::pages_error(
            &state,
            &headers,
            None,
            OAuthError::invalid_request("the form is out of date; reload the page"),
        );
    }
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), &headers);
    let texts = state.pages.texts(lang);
    let typed = params.get("login").unwrap_or("");
    let login = normalise_login(typed);
    let password = zeroize::Zeroizing::new(params.get("password").unwrap_or("").to_string());
    if login.is_empty() || login.len() > 254 || password.is_empty() {
        return render(&state, &headers, &interaction, typed, Some(texts.bad_credentials)).await;
    }

    // Failed attempts are counted per account and per address; past the limit, no password is
    // even checked until the window ends (the lockout of the login journey builds on this).
    let account_key = format!("rl:login:acct:{login}");
    let address_key = format!("rl:login:ip:{}", peer.ip());
    let failures = |bytes: &Option<Vec<u8>>| -> u64 {
        bytes.as_deref().and_then(|b| std::str::from_utf8(b).ok()).and_then(|s| s.parse().ok()).unwrap_or(0)
    };
    match (state.ephemeral.get(&account_key).await, state.ephemeral.get(&address_key).await) {
        (Ok(a), Ok(b)) if failures(&a) >= ACCOUNT_ATTEMPTS || failures(&b) >= ADDRESS_ATTEMPTS => {
            tracing::warn!(ip = %peer.ip(), "login throttled");
            return render(&state, &headers, &interaction, typed, Some(texts.too_many_attempts)).await;
        }
        (Err(e), _) | (_, Err(e)) => return crate::web::pages_error(&state, &headers, None, e.into()),
        _ => {}
    }

    let account = match verify_password(&state, &login, password).await {
        Ok(Some(account)) => account,
        Ok(None) => {
            let _ = state.ephemeral.incr(&account_key, ATTEMPT_WINDOW).await;
            let _ = state.ephemeral.incr(&address_key, ATTEMPT_WINDOW).await;
            interaction.failures += 1;
            let _ = interaction::save(&state, &interaction).await;
            tracing::info!(ip = %peer.ip(), "login failed: bad credentials");
            return render(&state, &headers, &interaction, typed, Some(texts.bad_credentials)).await;
        }
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let _ = state.ephemeral.delete(&account_key).await;

    // A fresh session id at every login (no fixation); factors of the same account carry over so a
    // later step-up adds to them.
    let previous = state.sessions.current(&state, &headers, now).await.ok().flatten();
    let mut factors = match &previous {
        Some(s) if s.account_id == account.id => s.factors.iter().filter(|f| f.method != "pwd").cloned().collect(),
        _ => Vec::new(),
    };
    factors.push(FactorRecord { method: "pwd".into(), at: now });
    let clients =
        previous.as_ref().filter(|s| s.account_id == account.id).map(|s| s.clients.clone()).unwrap_or_default();
    if let Some(old) = &previous {
        let _ = session::delete(state.ephemeral.as_ref(), &old.id).await;
    }
    // The public `sid` stays the same across step-ups of one account's session.
    let sid = previous
        .as_ref()
        .filter(|s| s.account_id == account.id)
        .map(|s| s.sid.clone())
        .unwrap_or_else(crate::cli::random_token);
    let new_session = Session {
        id: crate::cli::random_token(),
        sid,
        account_id: account.id.clone(),
        auth_time: now,
        factors,
        created_at: now,
        last_seen: now,
        clients,
    };
    if let Err(e) = session::save(state.ephemeral.as_ref(), &state.sessions.settings, &new_session).await {
        return crate::web::pages_error(&state, &headers, None, e);
    }
    if let Err(e) = state.store.record_authentication(&account.id, now).await {
        tracing::warn!(error = %e, "could not record the authentication time");
    }
    tracing::info!(account = %account.id, method = "pwd", "login succeeded");
    interaction.login_at = Some(now);
    if let Err(e) = interaction::save(&state, &interaction).await {
        return crate::web::pages_error(&state, &headers, None, e);
    }
    let mut response = Redirect::to(&format!("{}?interaction={}", crate::oidc::authorize::RESUME_PATH, interaction.id))
        .into_response();
    response.headers_mut().append(header::SET_COOKIE, state.sessions.settings.set_cookie(&new_session.id));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The account if `password` is right and the account active; `None` otherwise, after the same
/// amount of hashing work either way.
async fn verify_password(
    state: &AppState,
    login: &str,
    password: zeroize::Zeroizing<String>,
) -> Result<Option<Account>, OAuthError> {
    let account = state.store.account_by_login(login).await?;
    let stored = match &account {
        Some(a) => state.store.credentials_of(&a.id, "password").await?.into_iter().next(),
        None => None,
    };
    let phc = match &stored {
        Some(c) => String::from_utf8(c.secret.clone()).unwrap_or_default(),
        None => state.dummy_password_hash().await,
    };
    let needs_rehash = state.passwords.needs_rehash(&phc);
    let ok = state.passwords.verify(phc, password.clone()).await;
    match (account, stored) {
        (Some(a), Some(credential)) if ok && a.status == AccountStatus::Active => {
            if needs_rehash {
                rehash(state, &credential, password).await;
            }
            Ok(Some(a))
        }
        _ => Ok(None),
    }
}

/// Re-hashes a password stored with other argon2 parameters than the configured ones, now that the
/// clear password is at hand (raising the cost takes effect at each user's next login).
async fn rehash(state: &AppState, credential: &crate::store::Credential, password: zeroize::Zeroizing<String>) {
    let hasher = state.passwords.clone();
    let hashed = tokio::task::spawn_blocking(move || hasher.rehash_blocking(&password)).await;
    if let Ok(Ok(phc)) = hashed {
        let updated = crate::store::Credential {
            id: uuid::Uuid::new_v4().to_string(),
            secret: phc.into_bytes(),
            ..credential.clone()
        };
        match state.store.replace_credentials(&updated).await {
            Ok(()) => {
                tracing::info!(account = %credential.account_id, "password re-hashed with the configured parameters")
            }
            Err(e) => tracing::warn!(error = %e, "password re-hash failed"),
        }
    }
}

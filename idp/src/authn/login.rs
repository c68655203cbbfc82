//! The login pages: the password step, then the second factor the session still lacks (email
//! code, authenticator app, recovery code). The journey asks only for what is missing: the
//! required level comes from `login.minimum_acr`, the client and the request (see
//! `oidc::authorize::required_acr`), and what is already proven comes from the session — unless
//! the request demands a fresh login (`prompt=login`, `max_age`, another account).
//!
//! Failures are throttled per login name and per client address (lockout that ends by itself,
//! progressive delay), and unknown accounts are indistinguishable from wrong passwords.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::authn::journey::level_of;
use crate::authn::session::{self, FactorRecord, Session};
use crate::authn::throttle::{Throttle, ThrottleError, ThrottlePolicy, delay_for};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::authorize::{Prompt, required_acr};
use crate::oidc::interaction::{self, Interaction};
use crate::oidc::params::Params;
use crate::store::{Account, AccountStatus};
use crate::web::i18n::{Lang, Texts};

/// The second-factor methods, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Totp,
    Email,
    Recovery,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Totp => "totp",
            Method::Email => "email",
            Method::Recovery => "recovery",
        }
    }
    /// The factor as audit records and metrics name it.
    fn factor(self) -> &'static str {
        match self {
            Method::Totp => "totp",
            Method::Email => "email_otp",
            Method::Recovery => "recovery_code",
        }
    }
    fn parse(s: &str) -> Option<Method> {
        match s {
            "totp" => Some(Method::Totp),
            "email" => Some(Method::Email),
            "recovery" => Some(Method::Recovery),
            _ => None,
        }
    }
    fn label(self, t: &Texts) -> &'static str {
        match self {
            Method::Totp => t.method_totp,
            Method::Email => t.method_email,
            Method::Recovery => t.method_recovery,
        }
    }
}

fn account_throttle(state: &AppState) -> Throttle {
    let c = &state.config.login;
    Throttle::new(ThrottlePolicy { max_failures: c.max_failures, lockout: c.lockout, window: c.lockout })
}

fn address_throttle(state: &AppState) -> Throttle {
    let c = &state.config.login;
    Throttle::new(ThrottlePolicy { max_failures: c.max_failures_per_address, lockout: c.lockout, window: c.lockout })
}

/// Whether `peer` is locked out by its failures (any factor, any account): card logins and
/// security keys use it, as the password and code steps do.
pub(crate) async fn address_locked(state: &AppState, peer: &SocketAddr, now: i64) -> bool {
    match address_throttle(state).check(state.ephemeral.as_ref(), &address_scope(peer), now).await {
        Ok(()) => false,
        Err(ThrottleError::Locked { .. }) => true,
        // Failing closed: without the counter, attempts cannot be limited.
        Err(ThrottleError::Storage(_)) => true,
    }
}

/// Counts a failed attempt from `peer` (a refused card or security key).
pub(crate) async fn count_address_failure(state: &AppState, peer: &SocketAddr, now: i64) {
    if let Err(e) = address_throttle(state).record_failure(state.ephemeral.as_ref(), &address_scope(peer), now).await {
        tracing::error!(error = %e, "could not count a failed attempt");
    }
}

/// Failures are counted per login name (known or not, so lockouts reveal nothing) and per address.
pub fn login_scope(login: &str) -> String {
    format!("login:{login}")
}

/// Second-factor codes of a login name, all methods together; reset only by a right code.
pub(crate) fn code_scope(login: &str) -> String {
    format!("login-code:{login}")
}

fn address_scope(peer: &SocketAddr) -> String {
    format!("ip:{}", peer.ip())
}

/// One login attempt as the audit log and the metrics see it.
struct Attempt<'a> {
    account_id: Option<&'a str>,
    /// The normalised login typed (never recorded in clear when no account has it).
    login: &'a str,
    factor: &'static str,
    context: AuditContext,
}

impl<'a> Attempt<'a> {
    fn new(
        interaction: &Interaction,
        headers: &HeaderMap,
        peer: &SocketAddr,
        account_id: Option<&'a str>,
        login: &'a str,
        factor: &'static str,
    ) -> Attempt<'a> {
        let context = AuditContext {
            client_id: Some(interaction.request.client_id.clone()),
            ..AuditContext::from_request(headers, Some(*peer))
        };
        Attempt { account_id, login, factor, context }
    }

    /// For an unknown account: a keyed hash of the typed login (the master key keeps a dictionary
    /// of logins from reversing it), so that repeated attempts on one name can be correlated.
    fn login_hash(&self, state: &AppState) -> Option<String> {
        if self.account_id.is_some() || self.login.is_empty() {
            return None;
        }
        let key = state.keys.master_key().to_base64();
        let mac = crate::alerts::hmac_sha256(key.as_bytes(), format!("login:{}", self.login).as_bytes());
        Some(hex::encode(&mac[..16]))
    }

    fn succeeded(&self, state: &AppState, account_id: &str) {
        state.metrics.login(self.factor, true);
        state.audit.record(
            AuditEvent::LoginSucceeded { account_id: account_id.to_string(), factor: self.factor.to_string() },
            self.context.clone(),
        );
    }

    /// `reason`: a stable code (`bad_password`, `bad_code`, `expired_code`, `locked`…).
    fn failed(&self, state: &AppState, reason: &str) {
        state.metrics.login(self.factor, false);
        if self.factor != "password" && reason != "locked" {
            state.metrics.code_failure(self.factor);
        }
        state.audit.record(
            AuditEvent::LoginFailed {
                account_id: self.account_id.map(str::to_string),
                login_hash: self.login_hash(state),
                factor: self.factor.to_string(),
                reason: reason.to_string(),
            },
            self.context.clone(),
        );
    }

    fn locked(&self, state: &AppState, until: i64) {
        state.metrics.lockout(self.factor);
        state.audit.record(
            AuditEvent::LockedOut {
                account_id: self.account_id.map(str::to_string),
                login_hash: self.login_hash(state),
                factor: self.factor.to_string(),
                until,
            },
            self.context.clone(),
        );
    }
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

/// Whether this authorization needs a login from scratch, ignoring the current session's factors.
fn needs_fresh_login(interaction: &Interaction, session: Option<&Session>, now: i64) -> bool {
    let Some(session) = session else { return true };
    if interaction.account_id.as_ref().is_some_and(|a| a != &session.account_id) {
        return true;
    }
    let request = &interaction.request;
    request.has_prompt(Prompt::Login) || request.max_age.is_some_and(|max| now - session.auth_time > max)
}

/// The factors that count for this interaction: its own, plus the session's when it may be reused.
fn counted_factors(interaction: &Interaction, session: Option<&Session>, fresh: bool) -> Vec<FactorRecord> {
    let mut factors: Vec<FactorRecord> = match (session, fresh) {
        (Some(s), false) => s.factors.clone(),
        _ => Vec::new(),
    };
    for f in &interaction.factors {
        factors.retain(|existing| existing.method != f.method);
        factors.push(f.clone());
    }
    factors
}

fn amr_of(factors: &[FactorRecord]) -> Vec<String> {
    let probe = Session {
        id: String::new(),
        sid: String::new(),
        account_id: String::new(),
        auth_time: 0,
        factors: factors.to_vec(),
        created_at: 0,
        last_seen: 0,
        clients: Vec::new(),
    };
    probe.amr()
}

#[derive(Deserialize)]
pub struct LoginQuery {
    interaction: String,
    method: Option<String>,
}

/// `GET /login`: the next step of the journey for this interaction.
pub async fn page(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let now = crate::unix_now();
    let mut interaction = match interaction::load_bound(&state, &headers, &q.interaction).await {
        Ok(i) => i,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let session = state.sessions.current(&state, &headers, now).await.ok().flatten();
    let fresh = needs_fresh_login(&interaction, session.as_ref(), now);
    let factors = counted_factors(&interaction, session.as_ref(), fresh);
    // Above eidas1 a password and a code are not enough: only the card gets there.
    if let Some(card_url) = card_url(&state, &interaction)
        && needs_more_than_codes(&state, &interaction).await
    {
        let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), &headers);
        let (client_name, logo) = crate::oidc::consent::client_branding(&state, &interaction.request.client_id).await;
        return state.pages.client_page(
            StatusCode::OK,
            "card_required.html",
            lang,
            minijinja::context! { card_url => card_url, client_name => client_name },
            logo.as_ref(),
            Some(&interaction.request.redirect_uri),
        );
    }
    if !factors.iter().any(|f| f.method == "pwd") {
        let hint = interaction.request.login_hint.clone().unwrap_or_default();
        return password_page(&state, &headers, &interaction, &hint, None, StatusCode::OK).await;
    }
    if interaction.account_id.is_none() {
        interaction.account_id = session.as_ref().map(|s| s.account_id.clone());
    }
    let requested = q.method.as_deref().and_then(Method::parse);
    second_factor_page(&state, &headers, interaction, requested, None, None, now).await
}

/// `GET /login/continue?interaction=…`: the journey after a factor completed by script (security
/// key): ends the login when the factors suffice, or asks for what is missing.
pub async fn continue_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    match interaction::load_bound(&state, &headers, &q.interaction).await {
        Ok(interaction) => advance(&state, &headers, interaction, crate::unix_now()).await,
        Err(e) => crate::web::pages_error(&state, &headers, None, e),
    }
}

/// Where this interaction's card login starts, when card login is on.
fn card_url(state: &AppState, interaction: &Interaction) -> Option<String> {
    state.card.as_ref().map(|card| card.entry_url(&interaction.id))
}

/// Whether the level this interaction requires is beyond password + one-time code (eidas1).
async fn needs_more_than_codes(state: &AppState, interaction: &Interaction) -> bool {
    let Ok(Some(client)) = state.clients.get(&interaction.request.client_id).await else { return false };
    let required = required_acr(&interaction.request, &client, crate::authn::journey::levels(state).floor);
    required.is_some_and(|r| r > crate::clients::AcrLevel::Eidas1)
}

async fn password_page(
    state: &AppState,
    headers: &HeaderMap,
    interaction: &Interaction,
    login: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), headers);
    let (client_name, logo) = crate::oidc::consent::client_branding(state, &interaction.request.client_id).await;
    state.pages.client_page(
        status,
        "login.html",
        lang,
        minijinja::context! {
            interaction => interaction.id.clone(), csrf => interaction.csrf.clone(), login_hint => login,
            error => error.unwrap_or(""), client_name => client_name,
            card_url => card_url(state, interaction), webauthn => state.webauthn.is_some(),
        },
        logo.as_ref(),
        Some(&interaction.request.redirect_uri),
    )
}

/// The second-factor methods the account has, in order of preference.
async fn methods_of(state: &AppState, account: &Account) -> Result<Vec<Method>, OAuthError> {
    let mut methods = Vec::new();
    if !state.store.credentials_of(&account.id, "totp").await?.is_empty() {
        methods.push(Method::Totp);
    }
    if account.email.is_some() {
        methods.push(Method::Email);
    }
    if crate::authn::recovery::remaining(state.store.as_ref(), &account.id).await.unwrap_or(0) > 0 {
        methods.push(Method::Recovery);
    }
    Ok(methods)
}

fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn second_factor_page(
    state: &AppState,
    headers: &HeaderMap,
    mut interaction: Interaction,
    requested: Option<Method>,
    error: Option<&str>,
    notice: Option<&str>,
    now: i64,
) -> Response {
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), headers);
    let t = state.pages.texts(lang);
    let account = match load_account(state, interaction.account_id.as_deref()).await {
        Ok(a) => a,
        Err(e) => return fail(state, headers, &interaction, e),
    };
    let methods = match methods_of(state, &account).await {
        Ok(m) => m,
        Err(e) => return fail(state, headers, &interaction, e),
    };
    let Some(default) = methods.first().copied() else {
        let request = interaction.request.clone();
        let _ = interaction::finish(state, &interaction).await;
        let error = OAuthError::new(OAuthErrorCode::UnmetAuthenticationRequirements, t.no_second_factor);
        return crate::oidc::authorize::respond(
            state,
            &request.redirect_uri,
            request.response_mode,
            headers,
            vec![
                ("error", error.code.as_str().to_string()),
                ("error_description", error.description.to_string()),
                ("state", request.state.clone().unwrap_or_default()),
            ],
        );
    };
    let method = requested.filter(|m| methods.contains(m)).unwrap_or(default);
    let mut notice = notice.map(str::to_string);
    if method == Method::Email && interaction.otp_challenge.is_none() {
        let first = !interaction.email_code_sent;
        match send_email_code(state, &account, &interaction, lang, now, first).await {
            Ok(challenge) => {
                interaction.otp_challenge = Some(challenge);
                interaction.email_code_sent = true;
            }
            Err(SendError::TooSoon) => notice = Some(t.resend_too_soon.to_string()),
            Err(SendError::Failed(e)) => return fail(state, headers, &interaction, e),
        }
    }
    if let Err(e) = interaction::save(state, &interaction).await {
        return fail(state, headers, &interaction, e);
    }
    let others: Vec<serde_json::Value> = methods
        .iter()
        .filter(|m| **m != method)
        .map(|m| serde_json::json!({ "method": m.as_str(), "label": m.label(t) }))
        .collect();
    let (client_name, logo) = crate::oidc::consent::client_branding(state, &interaction.request.client_id).await;
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let has_keys = state.webauthn.is_some()
        && state.store.webauthn_credentials_of(&account.id).await.is_ok_and(|keys| !keys.is_empty());
    state.pages.client_page(
        status,
        "second_factor.html",
        lang,
        minijinja::context! {
            interaction => interaction.id.clone(), csrf => interaction.csrf.clone(), method => method.as_str(),
            masked_email => account.email.as_deref().map(mask_email).unwrap_or_default(),
            error => error.unwrap_or(""), notice => notice.unwrap_or_default(), others => minijinja::value::Serde(&others), client_name => client_name,
            card_url => card_url(state, &interaction), has_keys => has_keys,
        },
        logo.as_ref(),
        Some(&interaction.request.redirect_uri),
    )
}

async fn load_account(state: &AppState, account_id: Option<&str>) -> Result<Account, OAuthError> {
    let id = account_id.ok_or_else(|| OAuthError::invalid_request("log in with your password first"))?;
    match state.store.account_by_id(id).await? {
        Some(a) if a.status == AccountStatus::Active => Ok(a),
        _ => Err(OAuthError::new(OAuthErrorCode::AccessDenied, "this account is disabled; contact your administrator")),
    }
}

fn unavailable() -> OAuthError {
    OAuthError::new(OAuthErrorCode::TemporarilyUnavailable, "the service is temporarily unavailable; try again shortly")
}

enum SendError {
    TooSoon,
    Failed(OAuthError),
}

/// Issues an email one-time code and mails it in the user's language.
async fn send_email_code(
    state: &AppState,
    account: &Account,
    interaction: &Interaction,
    lang: Lang,
    now: i64,
    first_of_interaction: bool,
) -> Result<String, SendError> {
    let Some(email) = account.email.clone() else { return Err(SendError::Failed(OAuthError::server_error())) };
    // The first code of a login is sent at once, even right after an earlier login's code; asking
    // again within the same login waits for the resend interval. The hourly cap applies to both.
    let issuing = if first_of_interaction {
        crate::authn::email_otp::issue_for_new_login(state.ephemeral.as_ref(), &account.id, now).await
    } else {
        crate::authn::email_otp::issue(state.ephemeral.as_ref(), &account.id, now).await
    };
    let issued = match issuing {
        Ok(issued) => issued,
        Err(crate::authn::email_otp::EmailOtpError::ResendTooSoon { .. }) => return Err(SendError::TooSoon),
        Err(e) => {
            tracing::error!(error = %e, "email code not issued");
            return Err(SendError::Failed(OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "the code could not be sent; try again shortly",
            )));
        }
    };
    let client_name = crate::oidc::consent::client_name(state, &interaction.request.client_id).await;
    let language = account.locale.as_deref().filter(|l| *l == "fr" || *l == "en").unwrap_or(lang.code());
    let rendered = state
        .mail_templates
        .otp_code(
            language,
            issued.code.as_str(),
            crate::authn::email_otp::CODE_LIFETIME_MINUTES,
            client_name.as_deref(),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "email code template failed");
            SendError::Failed(OAuthError::server_error())
        })?;
    let name = [account.given_name.as_deref(), account.family_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let mail = crate::mail::OutgoingMail::new(email, if name.is_empty() { None } else { Some(name) }, rendered);
    let mailer = state.mailer.clone();
    let account_id = account.id.clone();
    // Sending must not hold the page: an SMTP hiccup is logged, and the user can ask again.
    tokio::spawn(async move {
        match mailer.send(&mail).await {
            Ok(()) => tracing::info!(account = %account_id, "email code sent"),
            Err(e) => tracing::error!(account = %account_id, error = %e, "email code not delivered"),
        }
    });
    Ok(issued.challenge_id)
}

/// `POST /login`: the password step.
pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = crate::unix_now();
    let (mut interaction, params) = match load_form(&state, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), &headers);
    let texts = state.pages.texts(lang);
    let typed = params.get("login").unwrap_or("");
    let login = normalise_login(typed);
    let password = zeroize::Zeroizing::new(params.get("password").unwrap_or("").to_string());
    if login.is_empty() || login.len() > 254 || password.is_empty() {
        return password_page(
            &state,
            &headers,
            &interaction,
            typed,
            Some(texts.bad_credentials),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let scope = login_scope(&login);
    let attempt = Attempt::new(&interaction, &headers, &peer, None, &login, "password");
    let guess = match reserve_guess(
        &state,
        &headers,
        &interaction,
        guess_scopes(&state, &scope, &peer, None),
        typed,
        &attempt,
        now,
    )
    .await
    {
        Ok(guess) => guess,
        Err(response) => return response,
    };
    let account = match verify_password(&state, &login, password).await {
        Ok(PasswordCheck::Valid(account)) => account,
        Ok(PasswordCheck::Refused { account_id, reason }) => {
            tracing::info!(ip = %peer.ip(), "login failed: bad credentials");
            let attempt = Attempt { account_id: account_id.as_deref(), ..attempt };
            attempt.failed(&state, reason);
            interaction.failures += 1;
            let _ = interaction::save(&state, &interaction).await;
            let locked = guess.failed(&state, &peer, &attempt, now).await;
            let message = if locked { texts.locked } else { texts.bad_credentials };
            return password_page(&state, &headers, &interaction, typed, Some(message), StatusCode::UNAUTHORIZED).await;
        }
        Err(e) => {
            guess.release(&state).await;
            return crate::web::pages_error(&state, &headers, None, e);
        }
    };
    tracing::info!(account = %account.id, method = "pwd", "password verified");
    guess.succeeded(&state).await;
    attempt.succeeded(&state, &account.id);
    if interaction.account_id.as_ref().is_some_and(|a| a != &account.id) {
        // Another account than the one this interaction started with: start the factors over.
        interaction.factors.clear();
        interaction.otp_challenge = None;
    }
    interaction.account_id = Some(account.id.clone());
    interaction.complete_factor("pwd", now);
    advance(&state, &headers, interaction, now).await
}

/// `POST /login/code`: a second factor (email code, authenticator code or recovery code).
pub async fn submit_code(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = crate::unix_now();
    let (mut interaction, params) = match load_form(&state, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), &headers);
    let texts = state.pages.texts(lang);
    let account = match load_account(&state, interaction.account_id.as_deref()).await {
        Ok(a) => a,
        Err(e) => return fail(&state, &headers, &interaction, e),
    };
    let method = params.get("method").and_then(Method::parse).unwrap_or(Method::Email);
    let code = params.get("code").unwrap_or("").trim().to_string();
    // Codes are counted apart from passwords: a right password must not give a code guesser a
    // fresh allowance (with the password known, each new login would otherwise bring five more).
    let scope = code_scope(&account.login);
    let attempt = Attempt::new(&interaction, &headers, &peer, Some(&account.id), &account.login, method.factor());
    // Each login in progress also has its own allowance of codes (the emailed code has one per
    // code, kept by `email_otp`): the authenticator and recovery codes get theirs here.
    let challenge = (method != Method::Email).then(|| challenge_scope(&interaction));
    let scopes = guess_scopes(&state, &scope, &peer, challenge);
    let guess = match reserve_guess(&state, &headers, &interaction, scopes, "", &attempt, now).await {
        Ok(guess) => guess,
        Err(response) => return response,
    };
    let outcome = match method {
        Method::Email => match interaction.otp_challenge.clone() {
            Some(challenge) => {
                match crate::authn::email_otp::verify(state.ephemeral.as_ref(), &challenge, &account.id, &code).await {
                    Ok(()) => {
                        interaction.otp_challenge = None;
                        Ok(())
                    }
                    Err(
                        crate::authn::email_otp::EmailOtpError::Invalid { .. }
                        | crate::authn::email_otp::EmailOtpError::Malformed,
                    ) => Err((texts.bad_code, "bad_code")),
                    Err(crate::authn::email_otp::EmailOtpError::Storage(e)) => {
                        tracing::error!(error = %e, "email code check unavailable");
                        guess.release(&state).await;
                        return fail(&state, &headers, &interaction, unavailable());
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "email code refused");
                        interaction.otp_challenge = None;
                        Err((texts.code_expired, "expired_code"))
                    }
                }
            }
            None => Err((texts.code_expired, "expired_code")),
        },
        Method::Totp => {
            let master = state.keys.master_key();
            match crate::authn::totp::verify(
                state.store.as_ref(),
                state.ephemeral.as_ref(),
                &master,
                &account.id,
                &code,
                now,
            )
            .await
            {
                Ok(()) => Ok(()),
                Err(crate::authn::totp::TotpError::Replayed) => Err((texts.code_replayed, "replayed_code")),
                Err(e @ (crate::authn::totp::TotpError::Storage(_) | crate::authn::totp::TotpError::Internal(_))) => {
                    tracing::error!(error = %e, "authenticator check unavailable");
                    guess.release(&state).await;
                    return fail(&state, &headers, &interaction, unavailable());
                }
                Err(e) => {
                    tracing::info!(error = %e, "authenticator code refused");
                    Err((texts.bad_code, "bad_code"))
                }
            }
        }
        Method::Recovery => match crate::authn::recovery::redeem(state.store.as_ref(), &account.id, &code, now).await {
            Ok(remaining) => {
                tracing::warn!(account = %account.id, remaining, "recovery code used");
                Ok(())
            }
            Err(e) => {
                tracing::info!(error = %e, "recovery code refused");
                Err((texts.bad_code, "bad_code"))
            }
        },
    };
    match outcome {
        Ok(()) => {
            tracing::info!(account = %account.id, method = method.as_str(), "second factor verified");
            attempt.succeeded(&state, &account.id);
            interaction.offer_totp = method == Method::Email;
            guess.succeeded(&state).await;
            interaction.complete_factor("otp", now);
            advance(&state, &headers, interaction, now).await
        }
        Err((message, reason)) => {
            attempt.failed(&state, reason);
            interaction.failures += 1;
            let locked = guess.failed(&state, &peer, &attempt, now).await;
            let message = if locked { texts.locked } else { message };
            second_factor_page(&state, &headers, interaction, Some(method), Some(message), None, now).await
        }
    }
}

/// `POST /login/email`: send a new email code (throttled).
pub async fn resend(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let now = crate::unix_now();
    let (mut interaction, _params) = match load_form(&state, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), &headers);
    let texts = state.pages.texts(lang);
    let account = match load_account(&state, interaction.account_id.as_deref()).await {
        Ok(a) => a,
        Err(e) => return fail(&state, &headers, &interaction, e),
    };
    let notice = match send_email_code(&state, &account, &interaction, lang, now, false).await {
        Ok(challenge) => {
            interaction.otp_challenge = Some(challenge);
            texts.code_resent
        }
        Err(SendError::TooSoon) => texts.resend_too_soon,
        Err(SendError::Failed(e)) => return fail(&state, &headers, &interaction, e),
    };
    second_factor_page(&state, &headers, interaction, Some(Method::Email), None, Some(notice), now).await
}

async fn load_form(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(Interaction, Params), Response> {
    let params = Params::parse(body).map_err(|e| crate::web::pages_error(state, headers, None, e))?;
    let interaction = interaction::load_bound(state, headers, params.get("interaction").unwrap_or(""))
        .await
        .map_err(|e| crate::web::pages_error(state, headers, None, e))?;
    if !interaction.csrf_matches(params.get("csrf").unwrap_or("")) {
        return Err(fail(
            state,
            headers,
            &interaction,
            OAuthError::invalid_request("the form is out of date; reload the page"),
        ));
    }
    Ok((interaction, params))
}

/// An error page in the language of the login in progress.
fn fail(state: &AppState, headers: &HeaderMap, interaction: &Interaction, error: OAuthError) -> Response {
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), headers);
    crate::web::pages_error_in(state, lang, None, error)
}

/// The login in progress, as a throttle scope for the codes that have no allowance of their own.
fn challenge_scope(interaction: &Interaction) -> String {
    format!("challenge:{}", interaction.id)
}

/// The scopes one guess is counted at: the login name first (its lock is what the page reports),
/// the client address, and the login in progress when given.
fn guess_scopes(
    state: &AppState,
    login: &str,
    peer: &SocketAddr,
    challenge: Option<String>,
) -> Vec<(Throttle, String)> {
    let mut scopes = vec![(account_throttle(state), login.to_string()), (address_throttle(state), address_scope(peer))];
    scopes.extend(challenge.map(|c| (account_throttle(state), c)));
    scopes
}

/// One guess at a secret, its attempt reserved at each of its scopes before anything is verified
/// (see `authn::throttle`): whatever the concurrency, no scope ever has more guesses evaluated than
/// its limit.
struct Guess {
    /// (throttle, scope, attempt number); the login name's first.
    reserved: Vec<(Throttle, String, u32)>,
}

impl Guess {
    /// The answer was right: the login name's count is forgotten, the address's attempt given back.
    async fn succeeded(self, state: &AppState) {
        for (index, (throttle, scope, _)) in self.reserved.iter().enumerate() {
            let done = if index == 0 {
                throttle.succeeded(state.ephemeral.as_ref(), scope).await
            } else {
                throttle.release(state.ephemeral.as_ref(), scope).await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not settle a login attempt");
            }
        }
    }

    /// The guess could not be judged (a storage failure): its attempts are given back.
    async fn release(self, state: &AppState) {
        for (throttle, scope, _) in &self.reserved {
            if let Err(e) = throttle.release(state.ephemeral.as_ref(), scope).await {
                tracing::warn!(error = %e, "could not give back a login attempt");
            }
        }
    }

    /// The answer was wrong: each scope whose allowance this guess used up is locked, then the
    /// answer is held for the progressive delay. Returns whether the login name is now locked.
    async fn failed(self, state: &AppState, peer: &SocketAddr, attempt: &Attempt<'_>, now: i64) -> bool {
        let mut login_locked = false;
        let mut delay = std::time::Duration::ZERO;
        for (index, (throttle, scope, number)) in self.reserved.iter().enumerate() {
            match throttle.failed(state.ephemeral.as_ref(), scope, *number, now).await {
                Ok(failure) => {
                    if index == 0 {
                        delay = delay_for(failure.failures);
                        if let Some(until) = failure.locked_until {
                            tracing::warn!(ip = %peer.ip(), until, "account locked after repeated failures");
                            attempt.locked(state, until);
                            login_locked = true;
                            if let Some(account_id) = attempt.account_id
                                && let Ok(Some(account)) = state.store.account_by_id(account_id).await
                            {
                                crate::authn::lockout::tell_holder(state, &account, until);
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not lock after a failed login"),
            }
        }
        tokio::time::sleep(delay).await;
        login_locked
    }
}

/// Reserves the guess's attempt at each scope, or answers the page to show: the lockout message
/// while a scope is locked or its allowance is used up, 503 when the counters are unreachable
/// (failing closed: without them guesses cannot be limited).
async fn reserve_guess(
    state: &AppState,
    headers: &HeaderMap,
    interaction: &Interaction,
    scopes: Vec<(Throttle, String)>,
    typed: &str,
    attempt: &Attempt<'_>,
    now: i64,
) -> Result<Guess, Response> {
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), headers);
    let texts = state.pages.texts(lang);
    let mut guess = Guess { reserved: Vec::with_capacity(scopes.len()) };
    for (throttle, scope) in scopes {
        match throttle.reserve(state.ephemeral.as_ref(), &scope, now).await {
            Ok(number) => guess.reserved.push((throttle, scope, number)),
            Err(ThrottleError::Locked { .. }) => {
                guess.release(state).await;
                tracing::warn!(scope = scope.split(':').next().unwrap_or(""), "login attempt while locked");
                attempt.failed(state, "locked");
                let response = if interaction.account_id.is_some() && typed.is_empty() {
                    second_factor_page(state, headers, interaction.clone(), None, Some(texts.locked), None, now).await
                } else {
                    password_page(state, headers, interaction, typed, Some(texts.locked), StatusCode::TOO_MANY_REQUESTS)
                        .await
                };
                return Err(response);
            }
            Err(ThrottleError::Storage(e)) => {
                guess.release(state).await;
                tracing::error!(error = %e, "throttle unavailable: refusing the attempt");
                return Err(crate::web::pages_error(
                    state,
                    headers,
                    None,
                    OAuthError::new(
                        OAuthErrorCode::TemporarilyUnavailable,
                        "the service is temporarily unavailable; try again shortly",
                    ),
                ));
            }
        }
    }
    Ok(guess)
}

/// After a factor: either the required level is reached (the session is established or raised
/// and the authorization resumes) or the next missing factor is asked for.
pub(crate) async fn advance(state: &AppState, headers: &HeaderMap, mut interaction: Interaction, now: i64) -> Response {
    // The account is known: admin scopes it holds no role for need no stronger login.
    if let Some(account_id) = interaction.account_id.clone() {
        crate::oidc::authorize::narrow_admin_scopes(state, &mut interaction.request, &account_id).await;
    }
    let previous = state.sessions.current(state, headers, now).await.ok().flatten();
    let fresh = needs_fresh_login(&interaction, previous.as_ref(), now);
    let factors = counted_factors(&interaction, previous.as_ref(), fresh);
    let client = match state.clients.get(&interaction.request.client_id).await {
        Ok(Some(c)) => c,
        _ => {
            return crate::web::pages_error(
                state,
                headers,
                None,
                OAuthError::new(OAuthErrorCode::InvalidClient, "the application was removed"),
            );
        }
    };
    let required = required_acr(&interaction.request, &client, crate::authn::journey::levels(state).floor);
    let reached = level_of(&amr_of(&factors));
    if required.is_some_and(|r| reached.is_none_or(|l| l < r)) {
        if let Err(e) = interaction::save(state, &interaction).await {
            return crate::web::pages_error(state, headers, None, e);
        }
        return Redirect::to(&format!("/login?interaction={}", interaction.id)).into_response();
    }
    let Some(account_id) = interaction.account_id.clone() else {
        return crate::web::pages_error(state, headers, None, OAuthError::server_error());
    };
    let same_account = previous.as_ref().is_some_and(|s| s.account_id == account_id);
    if let Some(before) = previous.as_ref().filter(|_| same_account && !fresh) {
        let from = level_of(&before.amr());
        if reached.is_some_and(|r| from.is_none_or(|f| f < r)) {
            state.audit.record(
                AuditEvent::StepUpCompleted {
                    account_id: account_id.clone(),
                    from_acr: from.map(|l| l.as_str().to_string()),
                    to_acr: reached.map(|l| l.as_str().to_string()),
                },
                AuditContext {
                    client_id: Some(interaction.request.client_id.clone()),
                    ..AuditContext::from_request(headers, None)
                },
            );
        }
    }
    // A new secret session id at every login or step-up (no fixation); the public sid and the
    // list of clients survive a step-up of the same account.
    let new_session = Session {
        id: crate::cli::random_token(),
        sid: previous
            .as_ref()
            .filter(|_| same_account && !fresh)
            .map(|s| s.sid.clone())
            .unwrap_or_else(crate::cli::random_token),
        account_id: account_id.clone(),
        auth_time: now,
        factors,
        created_at: previous.as_ref().filter(|_| same_account && !fresh).map(|s| s.created_at).unwrap_or(now),
        last_seen: now,
        clients: previous.as_ref().filter(|_| same_account).map(|s| s.clients.clone()).unwrap_or_default(),
    };
    if let Some(old) = &previous {
        let _ = session::delete(state.ephemeral.as_ref(), &old.id).await;
    }
    if let Err(e) = session::save(state.ephemeral.as_ref(), &state.sessions.settings, &new_session).await {
        return crate::web::pages_error(state, headers, None, e);
    }
    if let Err(e) = state.store.record_authentication(&account_id, now).await {
        tracing::warn!(error = %e, "could not record the authentication time");
    }
    tracing::info!(account = %account_id, amr = ?new_session.amr(), "login complete");
    interaction.login_at = Some(now);
    interaction.factors.clear();
    if let Err(e) = interaction::save(state, &interaction).await {
        return crate::web::pages_error(state, headers, None, e);
    }
    let next = if should_offer_totp(state, &interaction, &account_id).await {
        format!("/login/totp?interaction={}", interaction.id)
    } else {
        format!("{}?interaction={}", crate::oidc::authorize::RESUME_PATH, interaction.id)
    };
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().append(header::SET_COOKIE, state.sessions.settings.set_cookie(&new_session.id));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// After a login with an email code, people without an authenticator app are offered one (unless
/// they chose "later" in the last 30 days): a login that just happened is the recent strong login
/// that enrolling a factor requires.
async fn should_offer_totp(state: &AppState, interaction: &Interaction, account_id: &str) -> bool {
    if !interaction.offer_totp {
        return false;
    }
    let enrolled = crate::authn::totp::is_enrolled(state.store.as_ref(), account_id).await.unwrap_or(true);
    let postponed = state.ephemeral.get(&totp_later_key(account_id)).await.map(|v| v.is_some()).unwrap_or(true);
    !enrolled && !postponed
}

fn totp_later_key(account_id: &str) -> String {
    format!("totp-later:{account_id}")
}

/// How long enrolling an authenticator stays possible after the login that allowed it.
const ENROLMENT_WINDOW_SECS: i64 = 10 * 60;

/// The interaction and account allowed to enrol: the browser that just completed a login.
async fn enrolment_context(
    state: &AppState,
    headers: &HeaderMap,
    interaction_id: &str,
    now: i64,
) -> Result<(Interaction, Account), OAuthError> {
    let interaction = interaction::load_bound(state, headers, interaction_id).await?;
    let session = state.sessions.current(state, headers, now).await?;
    let recent = interaction.login_at.is_some_and(|t| now - t <= ENROLMENT_WINDOW_SECS);
    match (session, interaction.account_id.clone()) {
        (Some(s), Some(id)) if s.account_id == id && recent => {
            let account = load_account(state, Some(&id)).await?;
            Ok((interaction, account))
        }
        _ => Err(OAuthError::invalid_request("log in again before changing your authentication factors")),
    }
}

fn resume(interaction: &Interaction) -> Response {
    Redirect::to(&format!("{}?interaction={}", crate::oidc::authorize::RESUME_PATH, interaction.id)).into_response()
}

/// `GET /login/totp`: QR code and key of a new authenticator secret, kept sealed in the interaction.
pub async fn totp_page(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let now = crate::unix_now();
    let (mut interaction, account) = match enrolment_context(&state, &headers, &q.interaction, now).await {
        Ok(x) => x,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let pending = match crate::authn::totp::begin_enrolment(&account.login) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "authenticator enrolment could not start");
            return crate::web::pages_error(&state, &headers, None, OAuthError::server_error());
        }
    };
    let master = state.keys.master_key();
    let aad = format!("totp-pending:{}", interaction.id);
    match master.seal(pending.secret_base32.as_bytes(), aad.as_bytes()) {
        Ok(sealed) => {
            use base64::Engine as _;
            interaction.totp_pending = Some(base64::engine::general_purpose::STANDARD.encode(sealed));
        }
        Err(_) => return crate::web::pages_error(&state, &headers, None, OAuthError::server_error()),
    }
    if let Err(e) = interaction::save(&state, &interaction).await {
        return crate::web::pages_error(&state, &headers, None, e);
    }
    totp_setup_page(&state, &headers, &interaction, &pending, None).await
}

/// A key shown in groups of four, easier to type into an app.
fn grouped(key: &str) -> String {
    key.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

async fn totp_setup_page(
    state: &AppState,
    headers: &HeaderMap,
    interaction: &Interaction,
    pending: &crate::authn::totp::PendingTotp,
    error: Option<&str>,
) -> Response {
    let (client_name, logo) = crate::oidc::consent::client_branding(state, &interaction.request.client_id).await;
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), headers);
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    state.pages.client_page(
        status,
        "totp_setup.html",
        lang,
        minijinja::context! {
            interaction => interaction.id.clone(), csrf => interaction.csrf.clone(), qr_svg => pending.qr_svg.clone(),
            secret => grouped(&pending.secret_base32), error => error.unwrap_or(""), client_name => client_name,
        },
        logo.as_ref(),
        Some(&interaction.request.redirect_uri),
    )
}

/// `POST /login/totp`: confirm the new authenticator with a first code (then show the recovery
/// codes, once), or postpone.
pub async fn totp_submit(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let now = crate::unix_now();
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let (mut interaction, account) =
        match enrolment_context(&state, &headers, params.get("interaction").unwrap_or(""), now).await {
            Ok(x) => x,
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
    if params.get("decision") != Some("enrol") {
        let thirty_days = std::time::Duration::from_secs(30 * 24 * 3600);
        let _ = state.ephemeral.put(&totp_later_key(&account.id), b"1", thirty_days).await;
        return resume(&interaction);
    }
    let master = state.keys.master_key();
    let aad = format!("totp-pending:{}", interaction.id);
    let secret = interaction.totp_pending.as_deref().and_then(|b| {
        use base64::Engine as _;
        let sealed = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        let opened = master.open(&sealed, aad.as_bytes()).ok()?;
        String::from_utf8(opened.to_vec()).ok()
    });
    let Some(secret) = secret else {
        return Redirect::to(&format!("/login/totp?interaction={}", interaction.id)).into_response();
    };
    let secret = zeroize::Zeroizing::new(secret);
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), &headers);
    let t = state.pages.texts(lang);
    let code = params.get("code").unwrap_or("").trim().to_string();
    match crate::authn::totp::confirm_enrolment(state.store.as_ref(), &master, &account.id, &secret, &code, now).await {
        Ok(_) => {}
        Err(e @ (crate::authn::totp::TotpError::Storage(_) | crate::authn::totp::TotpError::Internal(_))) => {
            tracing::error!(error = %e, "authenticator enrolment failed");
            return crate::web::pages_error(&state, &headers, None, unavailable());
        }
        Err(_) => {
            let pending = match crate::authn::totp::pending_from_secret(&secret, &account.login) {
                Ok(p) => p,
                Err(_) => return crate::web::pages_error(&state, &headers, None, OAuthError::server_error()),
            };
            return totp_setup_page(&state, &headers, &interaction, &pending, Some(t.bad_code)).await;
        }
    }
    tracing::info!(account = %account.id, "authenticator app enrolled");
    let context = AuditContext {
        client_id: Some(interaction.request.client_id.clone()),
        ..AuditContext::from_request(&headers, None)
    };
    state
        .audit
        .record(AuditEvent::FactorEnrolled { account_id: account.id.clone(), factor: "totp".into() }, context.clone());
    interaction.totp_pending = None;
    let _ = interaction::save(&state, &interaction).await;
    let codes = match crate::authn::recovery::generate(state.store.as_ref(), &account.id, now).await {
        Ok(c) => {
            state.audit.record(
                AuditEvent::FactorEnrolled { account_id: account.id.clone(), factor: "recovery_code".into() },
                context,
            );
            c.iter().cloned().collect::<Vec<String>>()
        }
        Err(e) => {
            tracing::error!(error = %e, "recovery codes not generated");
            return resume(&interaction);
        }
    };
    let (client_name, logo) = crate::oidc::consent::client_branding(&state, &interaction.request.client_id).await;
    state.pages.client_page(
        StatusCode::OK,
        "recovery_codes.html",
        lang,
        minijinja::context! { codes => codes, interaction => interaction.id.clone(), client_name => client_name },
        logo.as_ref(),
        Some(&interaction.request.redirect_uri),
    )
}

/// What a password check found (the reason is for the audit log only: the page says the same
/// thing in every case).
enum PasswordCheck {
    Valid(Account),
    Refused { account_id: Option<String>, reason: &'static str },
}

/// The account if `password` is right and the account active; why not otherwise, after the same
/// amount of hashing work either way.
async fn verify_password(
    state: &AppState,
    login: &str,
    password: zeroize::Zeroizing<String>,
) -> Result<PasswordCheck, OAuthError> {
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
            Ok(PasswordCheck::Valid(a))
        }
        (None, _) => Ok(PasswordCheck::Refused { account_id: None, reason: "unknown_account" }),
        (Some(a), None) => Ok(PasswordCheck::Refused { account_id: Some(a.id), reason: "no_password" }),
        (Some(a), Some(_)) if ok => Ok(PasswordCheck::Refused { account_id: Some(a.id), reason: "account_disabled" }),
        (Some(a), Some(_)) => Ok(PasswordCheck::Refused { account_id: Some(a.id), reason: "bad_password" }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_and_normalisation() {
        assert_eq!(mask_email("kit.doc@example.org"), "k***@example.org");
        assert_eq!(normalise_login(" 899700427885 "), "899700427885");
        assert_eq!(normalise_login("Jeanne@Example.ORG"), "jeanne@example.org");
    }
}

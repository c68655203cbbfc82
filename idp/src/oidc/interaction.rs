//! An interaction: one authorization request in progress while the user logs in or consents.
//! Kept in the ephemeral store, bound to the browser that started it by a cookie (so a login URL
//! sent to someone else is useless) and protected against CSRF by a per-interaction token.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::authn::session::cookie;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::authorize::AuthorizationRequest;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Interaction {
    pub id: String,
    pub request: AuthorizationRequest,
    pub csrf: String,
    pub created_at: i64,
    /// Set when the user authenticated during this interaction (satisfies prompt=login, max_age).
    pub login_at: Option<i64>,
    pub consent_given: bool,
    /// Failed login attempts within this interaction (for messages; limits are per account/IP).
    pub failures: u32,
    /// The account being logged in, once identified (password step, or the current session).
    #[serde(default)]
    pub account_id: Option<String>,
    /// Factors completed during this interaction, not yet (or not all) in the session.
    #[serde(default)]
    pub factors: Vec<crate::authn::session::FactorRecord>,
    /// The pending email one-time-code challenge, if one was sent.
    #[serde(default)]
    pub otp_challenge: Option<String>,
    /// Whether this interaction already sent an email code (later ones obey the resend interval).
    #[serde(default)]
    pub email_code_sent: bool,
    /// Set when the email code was used: the journey then offers an authenticator app.
    #[serde(default)]
    pub offer_totp: bool,
    /// The authenticator secret being enrolled, sealed under the master key.
    #[serde(default)]
    pub totp_pending: Option<String>,
}

impl Interaction {
    pub fn new(request: AuthorizationRequest, now: i64) -> Interaction {
        Interaction {
            id: crate::cli::random_token(),
            request,
            csrf: crate::cli::random_token(),
            created_at: now,
            login_at: None,
            consent_given: false,
            failures: 0,
            account_id: None,
            factors: Vec::new(),
            otp_challenge: None,
            email_code_sent: false,
            offer_totp: false,
            totp_pending: None,
        }
    }

    /// Records a factor completed now, replacing an earlier completion of the same method.
    pub fn complete_factor(&mut self, method: &str, now: i64) {
        self.factors.retain(|f| f.method != method);
        self.factors.push(crate::authn::session::FactorRecord { method: method.to_string(), at: now });
    }

    /// Whether nobody has answered this login page yet (no form posted, nobody identified): such
    /// an interaction is anonymous state, kept only `session.unanswered_interaction_lifetime`.
    pub fn unanswered(&self) -> bool {
        self.account_id.is_none()
            && self.login_at.is_none()
            && self.failures == 0
            && self.factors.is_empty()
            && self.otp_challenge.is_none()
            && !self.consent_given
    }

    /// Constant-time check of the form's CSRF token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

fn key(id: &str) -> String {
    format!("int:{id}")
}

pub fn cookie_name(state: &AppState) -> &'static str {
    if state.sessions.settings.secure { "__Host-habilis-interaction" } else { "habilis-interaction" }
}

pub async fn save(state: &AppState, interaction: &Interaction) -> Result<(), OAuthError> {
    let bytes = serde_json::to_vec(interaction).map_err(|_| OAuthError::server_error())?;
    let session = &state.config.session;
    let ttl =
        if interaction.unanswered() { session.unanswered_interaction_lifetime } else { session.interaction_lifetime };
    state.ephemeral.put(&key(&interaction.id), &bytes, ttl).await?;
    Ok(())
}

/// Saves the interaction and sends the browser to `path?interaction=ID`, binding it by cookie.
pub async fn redirect_to(state: &AppState, interaction: &Interaction, path: &str, _now: i64) -> Response {
    if let Err(e) = save(state, interaction).await {
        return crate::web::pages_error(state, &HeaderMap::new(), None, e);
    }
    let mut response = Redirect::to(&format!("{path}?interaction={}", interaction.id)).into_response();
    let secure = if state.sessions.settings.secure { "; Secure" } else { "" };
    let max_age = state.config.session.interaction_lifetime.as_secs();
    let value =
        format!("{}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}", cookie_name(state), interaction.id);
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn expired() -> OAuthError {
    OAuthError::new(
        OAuthErrorCode::InvalidRequest,
        "this login page has expired or was opened in another browser; go back to the application and start again",
    )
}

/// Loads an interaction, only for the browser that started it.
pub async fn load_bound(state: &AppState, headers: &HeaderMap, id: &str) -> Result<Interaction, OAuthError> {
    if id.is_empty() || id.len() > 64 {
        return Err(expired());
    }
    let bound = cookie(headers, cookie_name(state)).is_some_and(|c| {
        use subtle::ConstantTimeEq;
        c.as_bytes().ct_eq(id.as_bytes()).into()
    });
    if !bound {
        return Err(expired());
    }
    let bytes = state.ephemeral.get(&key(id)).await?.ok_or_else(expired)?;
    serde_json::from_slice(&bytes).map_err(|_| expired())
}

/// Loads an interaction by its id alone, for the card entry point, which may run on another host
/// than the interaction cookie's; the result of such a step only counts once it comes back to the
/// issuer's host and [`load_bound`] has checked the browser.
pub async fn load_unbound(state: &AppState, id: &str) -> Result<Interaction, OAuthError> {
    if id.is_empty() || id.len() > 64 {
        return Err(expired());
    }
    let bytes = state.ephemeral.get(&key(id)).await?.ok_or_else(expired)?;
    serde_json::from_slice(&bytes).map_err(|_| expired())
}

pub async fn finish(state: &AppState, interaction: &Interaction) -> Result<(), OAuthError> {
    state.ephemeral.delete(&key(&interaction.id)).await?;
    Ok(())
}

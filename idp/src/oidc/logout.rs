//! Logout: OpenID Connect RP-Initiated Logout 1.0 (`end_session_endpoint`) and Back-Channel
//! Logout 1.0. Logging out ends the browser session, revokes the grants made through it, and
//! sends a `logout_token` to every client of the session that registered a back-channel URI.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::authn::session::{self, Session};
use crate::clients::Client;
use crate::error::OAuthError;
use crate::oidc::params::Params;
use crate::web::i18n::Lang;

pub const PATH: &str = "/logout";
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The validated logout request.
struct LogoutRequest {
    client: Option<std::sync::Arc<Client>>,
    hint_subject: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    ui_locales: Option<String>,
}

pub async fn end_session(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let now = crate::unix_now();
    let raw: Vec<u8> =
        if method == Method::POST { body.to_vec() } else { uri.query().unwrap_or("").as_bytes().to_vec() };
    let params = match Params::parse(&raw) {
        Ok(p) => p,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    // The confirmation form posts back here with its CSRF token and the user's decision.
    if method == Method::POST && params.contains("decision") {
        return confirm(&state, &headers, &params, now).await;
    }
    let request = match validate(&state, &params).await {
        Ok(r) => r,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let current = state.sessions.current(&state, &headers, now).await.ok().flatten();
    let hint_matches_session = match (&current, &request.client, &request.hint_subject) {
        (Some(s), Some(client), Some(sub)) => &crate::oidc::claims::subject_for(client, &s.account_id) == sub,
        (None, _, Some(_)) => true,
        _ => false,
    };
    if hint_matches_session {
        if let Some(session) = current {
            end(&state, &session, now).await;
        }
        return finish(&state, &headers, &request);
    }
    if current.is_none() {
        return finish(&state, &headers, &request);
    }
    ask_confirmation(&state, &headers, &params, &request).await
}

async fn validate(state: &AppState, params: &Params) -> Result<LogoutRequest, OAuthError> {
    let mut client = None;
    let mut hint_subject = None;
    if let Some(hint) = params.get("id_token_hint") {
        // Expired ID tokens are acceptable hints (the user may come back long after login).
        let claims = state
            .keys
            .verify(hint)
            .map_err(|_| OAuthError::invalid_request("id_token_hint is not an ID token issued here"))?;
        if claims.get("iss").and_then(Value::as_str) != Some(state.issuer_string().as_str()) {
            return Err(OAuthError::invalid_request("id_token_hint was issued by another issuer"));
        }
        let aud = match claims.get("aud") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or_default().to_string(),
            _ => String::new(),
        };
        client = state.clients.get(&aud).await?;
        hint_subject = claims.get("sub").and_then(Value::as_str).map(str::to_string);
    }
    if let Some(client_id) = params.get("client_id") {
        match &client {
            Some(c) if c.client_id() != client_id => {
                return Err(OAuthError::invalid_request("client_id does not match id_token_hint"));
            }
            Some(_) => {}
            None => client = state.clients.get(client_id).await?,
        }
    }
    let post_logout_redirect_uri = params.get("post_logout_redirect_uri").map(str::to_string);
    if let Some(uri) = &post_logout_redirect_uri {
        let allowed = client.as_ref().is_some_and(|c| c.post_logout_redirect_uri_allowed(uri));
        if !allowed {
            return Err(OAuthError::invalid_request(
                "post_logout_redirect_uri is not registered for this client (send id_token_hint or client_id, and register the URI exactly)",
            ));
        }
    }
    Ok(LogoutRequest {
        client,
        hint_subject,
        post_logout_redirect_uri,
        state: params.get("state").map(str::to_string),
        ui_locales: params.get("ui_locales").map(str::to_string),
    })
}

/// Without a trustworthy hint the user confirms: a third party must not be able to log them out.
async fn ask_confirmation(state: &AppState, headers: &HeaderMap, params: &Params, request: &LogoutRequest) -> Response {
    let csrf = crate::cli::random_token();
    let mut kept: Vec<(String, String)> = Vec::new();
    for name in ["id_token_hint", "client_id", "post_logout_redirect_uri", "state", "ui_locales"] {
        if let Some(v) = params.get(name) {
            kept.push((name.to_string(), v.to_string()));
        }
    }
    // The token is bound to this browser's session: a confirmation page fetched by someone else
    // cannot end this session.
    let session_id = state.sessions.settings.cookie_value(headers).unwrap_or_default();
    if let Err(e) =
        state.ephemeral.put(&format!("logout:{csrf}"), session_id.as_bytes(), Duration::from_secs(600)).await
    {
        return crate::web::pages_error(state, headers, None, e.into());
    }
    let lang = Lang::negotiate(request.ui_locales.as_deref(), headers);
    let client_name = request.client.as_ref().map(|c| c.client_name().unwrap_or(c.client_id()).to_string());
    state.pages.page(
        StatusCode::OK,
        "logout.html",
        lang,
        minijinja::context! { csrf => csrf, fields => kept, client_name => client_name },
    )
}

async fn confirm(state: &AppState, headers: &HeaderMap, params: &Params, now: i64) -> Response {
    let csrf = params.get("csrf").unwrap_or("");
    let session_id = state.sessions.settings.cookie_value(headers).unwrap_or_default();
    let valid = !csrf.is_empty()
        && match state.ephemeral.take(&format!("logout:{csrf}")).await {
            Ok(Some(bound)) => {
                use subtle::ConstantTimeEq;
                bool::from(bound.as_slice().ct_eq(session_id.as_bytes()))
            }
            _ => false,
        };
    if !valid {
        return crate::web::pages_error(
            state,
            headers,
            None,
            OAuthError::invalid_request("the logout form is out of date; reload the page"),
        );
    }
    let request = match validate(state, params).await {
        Ok(r) => r,
        Err(e) => return crate::web::pages_error(state, headers, None, e),
    };
    if params.get("decision") == Some("logout")
        && let Ok(Some(session)) = state.sessions.current(state, headers, now).await
    {
        end(state, &session, now).await;
    }
    finish(state, headers, &request)
}

/// Redirects to the registered post-logout URI (with `state`), or shows the logged-out page.
fn finish(state: &AppState, headers: &HeaderMap, request: &LogoutRequest) -> Response {
    let mut response = match &request.post_logout_redirect_uri {
        Some(uri) => match url::Url::parse(uri) {
            Ok(mut url) => {
                if let Some(s) = &request.state {
                    url.query_pairs_mut().append_pair("state", s);
                }
                Redirect::to(url.as_str()).into_response()
            }
            Err(_) => return crate::web::pages_error(state, headers, None, OAuthError::server_error()),
        },
        None => {
            let lang = Lang::negotiate(request.ui_locales.as_deref(), headers);
            let t = state.pages.texts(lang);
            state.pages.page(
                StatusCode::OK,
                "message.html",
                lang,
                minijinja::context! { title => t.logout_title, message => t.logged_out },
            )
        }
    };
    response.headers_mut().append(header::SET_COOKIE, state.sessions.settings.clear_cookie());
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Ends a session: deletes it, revokes its grants, notifies its clients on their back channel.
pub async fn end(state: &AppState, session: &Session, now: i64) {
    if let Err(e) = session::delete(state.ephemeral.as_ref(), &session.id).await {
        tracing::error!(error = %e, "could not delete the session at logout");
    }
    match state.store.revoke_session_grants(&session.sid, now).await {
        Ok(grants) => {
            for grant in grants {
                if let Err(e) = crate::oidc::tokens::mark_grant_revoked(state, &grant.id, now).await {
                    // The grant row is revoked (no refresh); its access tokens run to their expiry.
                    tracing::error!(error = %e.description, grant_id = %grant.id, "could not mark a grant revoked at logout");
                }
                state.audit.record(
                    crate::audit::AuditEvent::TokenRevoked {
                        account_id: Some(grant.account_id.clone()),
                        grant_id: Some(grant.id.clone()),
                        token_type: "refresh_token".into(),
                        via: "logout".into(),
                    },
                    crate::audit::AuditContext { client_id: Some(grant.client_id.clone()), ..Default::default() },
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "could not revoke the grants of the session at logout"),
    }
    tracing::info!(account = %session.account_id, "logged out");
    for client_id in &session.clients {
        let Ok(Some(client)) = state.clients.get(client_id).await else { continue };
        let Some(uri) = client.backchannel_logout_uri().cloned() else { continue };
        match logout_token(state, &client, session, now) {
            Ok(token) => {
                let state = state.clone();
                tokio::spawn(async move { deliver(&state, &uri, &token).await });
            }
            Err(e) => tracing::error!(error = %e, client_id, "could not sign a logout token"),
        }
    }
}

/// Back-Channel Logout 1.0 §2.4: `typ: logout+jwt`, `events`, `sid` and `sub`, never `nonce`.
pub fn logout_token(state: &AppState, client: &Client, session: &Session, now: i64) -> Result<String, OAuthError> {
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(state.issuer_string()));
    claims.insert("aud".into(), json!(client.client_id()));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + 120));
    claims.insert("jti".into(), json!(crate::oidc::tokens::new_jti()));
    claims.insert("events".into(), json!({ BACKCHANNEL_EVENT: {} }));
    claims.insert("sub".into(), json!(crate::oidc::claims::subject_for(client, &session.account_id)));
    claims.insert("sid".into(), json!(session.sid));
    state
        .keys
        .sign(client.id_token_signed_response_alg(), "logout+jwt", &claims)
        .map_err(|_| OAuthError::server_error())
}

/// POSTs the logout token, retrying with a growing delay (Back-Channel Logout 1.0 §2.8).
async fn deliver(state: &AppState, uri: &url::Url, token: &str) {
    let attempts = state.config.oidc.backchannel_logout_attempts.max(1);
    for attempt in 1..=attempts {
        let result = state.http.post(uri.clone()).form(&[("logout_token", token)]).send().await;
        match result {
            Ok(response) if response.status().is_success() => {
                tracing::info!(%uri, attempt, "back-channel logout delivered");
                return;
            }
            Ok(response) => {
                tracing::warn!(%uri, attempt, status = response.status().as_u16(), "back-channel logout refused")
            }
            Err(e) => tracing::warn!(%uri, attempt, error = %e, "back-channel logout failed"),
        }
        if attempt < attempts {
            tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt - 1))).await;
        }
    }
    tracing::error!(%uri, "back-channel logout not delivered; the client keeps its session");
}

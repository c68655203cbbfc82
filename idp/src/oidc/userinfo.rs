//! The UserInfo endpoint (OIDC Core §5.3): the access token in the `Authorization` header or a
//! form body (RFC 6750 §2.1–2.2), never in the query string. Optionally signed (`application/jwt`).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::cps::presented::MtlsCertificate;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::params::Params;
use crate::oidc::token::no_store;
use crate::oidc::tokens::{invalid_token, verify_access_token};
use crate::store::AccountStatus;

pub const PATH: &str = "/userinfo";

/// Extracts the bearer token from the header or, for POST forms, the body (RFC 6750).
pub fn bearer_token(method: &Method, headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Result<String, OAuthError> {
    if uri.query().is_some_and(|q| q.split('&').any(|p| p.starts_with("access_token="))) {
        return Err(OAuthError::invalid_request(
            "access tokens are not accepted in the query string; use the Authorization header",
        ));
    }
    let from_header = match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(value) => {
            let (scheme, token) =
                value.split_once(' ').ok_or_else(|| invalid_token("malformed Authorization header"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(OAuthError::invalid_request("use the Bearer authorization scheme").with_challenge("Bearer"));
            }
            Some(token.trim().to_string())
        }
        None => None,
    };
    let from_body = if *method == Method::POST && crate::web::is_form(headers) {
        Params::parse(body)?.get("access_token").map(str::to_string)
    } else {
        None
    };
    match (from_header, from_body) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request("send the access token once, in the header or the body")),
        (Some(t), None) | (None, Some(t)) if !t.is_empty() => Ok(t),
        _ => Err(OAuthError::new(OAuthErrorCode::InvalidToken, "an access token is required").with_challenge("Bearer")),
    }
}

pub async fn userinfo(
    State(state): State<AppState>,
    certificate: MtlsCertificate,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let now = crate::unix_now();
    match handle(&state, &certificate, &method, &headers, &uri, &body, now).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    certificate: &MtlsCertificate,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
    now: i64,
) -> Result<Response, OAuthError> {
    let token = bearer_token(method, headers, uri, body)?;
    let claims = verify_access_token(state, &token, now).await?;
    // RFC 8705 §3: a certificate-bound token is honoured only with its certificate.
    if let Some(bound) = claims.cnf.as_ref().map(|c| c.x5t_s256.as_str())
        && certificate.thumbprint().as_deref() != Some(bound)
    {
        state.audit.record(
            crate::audit::AuditEvent::CertificateBindingMismatch { client_id: claims.client_id.clone() },
            crate::audit::AuditContext::from_request(headers, None),
        );
        return Err(invalid_token(
            "this access token is bound to a client certificate: present it on the mTLS endpoint",
        ));
    }
    if !claims.has_scope("openid") {
        return Err(OAuthError::new(OAuthErrorCode::InsufficientScope, "the access token lacks the openid scope")
            .with_challenge("Bearer"));
    }
    let account_id = claims.uid.clone().unwrap_or_else(|| claims.sub.clone());
    let account = match state.store.account_by_id(&account_id).await? {
        Some(a) if a.status == AccountStatus::Active => a,
        _ => return Err(invalid_token("the account behind this token is disabled or gone")),
    };
    let scopes: Vec<&str> = claims.scopes().collect();
    let mut body = crate::oidc::claims::account_claims(&account, &scopes);
    if scopes.contains(&crate::oidc::claims::PSC_SCOPE) {
        body.extend(
            crate::habilitation::professional::psc_claims_of(&state.store, &account, claims.acr.as_deref()).await?,
        );
    }
    body.insert("sub".into(), json!(claims.sub));
    let client = state.clients.get(&claims.client_id).await?;
    if let Some(alg) = client.as_ref().and_then(|c| c.userinfo_signed_response_alg()) {
        body.insert("iss".into(), json!(state.issuer_string()));
        body.insert("aud".into(), json!(claims.client_id));
        let jwt = state.keys.sign(Some(alg), "JWT", &body).map_err(|_| OAuthError::server_error())?;
        let response = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/jwt"))], jwt).into_response();
        return Ok(no_store(response));
    }
    Ok(no_store((StatusCode::OK, axum::Json(Value::Object(body))).into_response()))
}

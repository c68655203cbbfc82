//! Token introspection (RFC 7662) for resource servers, which are confidential clients of
//! Habilis. Revocation is seen at once: access tokens are checked against the shared revocation
//! markers, refresh tokens against the database.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::cps::presented::MtlsCertificate;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::token::{authenticate_client, form_params, no_store};
use crate::oidc::tokens::verify_access_token;

pub const PATH: &str = "/introspect";

pub async fn introspect(
    State(state): State<AppState>,
    certificate: MtlsCertificate,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = crate::unix_now();
    match handle(&state, &headers, &certificate, &body, now).await {
        Ok(answer) => no_store(axum::Json(Value::Object(answer)).into_response()),
        Err(error) => error.into_response(),
    }
}

fn inactive() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("active".into(), json!(false));
    m
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    certificate: &MtlsCertificate,
    body: &[u8],
    now: i64,
) -> Result<Map<String, Value>, OAuthError> {
    let params = form_params(headers, body)?;
    let caller = authenticate_client(state, headers, certificate, &params, PATH, now).await?;
    if caller.client.is_public() {
        return Err(OAuthError::new(OAuthErrorCode::UnauthorizedClient, "public clients cannot introspect tokens"));
    }
    let token = params.require("token")?;
    // Refresh tokens are opaque and access tokens are JWTs, so the shape decides; a wrong
    // `token_type_hint` must not hide a token (RFC 7662 §2.1).
    let looks_like_jwt = token.split('.').count() == 3;
    if looks_like_jwt {
        return Ok(match verify_access_token(state, token, now).await {
            Ok(mut claims) => {
                // A relationship revoked since issuance withdraws its detail at once; a token
                // whose every detail was withdrawn is no longer active.
                if let Some(details) = claims.authorization_details.take() {
                    let mut still = Vec::with_capacity(details.len());
                    for detail in details {
                        if state.habilitations.still_granted(&state.store, &detail, now).await {
                            still.push(detail);
                        }
                    }
                    if still.is_empty() {
                        return Ok(inactive());
                    }
                    claims.authorization_details = Some(still);
                }
                let mut m = match serde_json::to_value(&claims) {
                    Ok(Value::Object(m)) => m,
                    _ => return Err(OAuthError::server_error()),
                };
                m.remove("gid");
                m.remove("uid");
                m.insert("active".into(), json!(true));
                m.insert("token_type".into(), json!("Bearer"));
                m
            }
            Err(_) => inactive(),
        });
    }
    if token.len() > 128 {
        return Ok(inactive());
    }
    // Refresh tokens: only the client they were issued to may introspect them.
    let Some(refresh) = state.store.refresh_token(&crate::cli::sha256_hex(token)).await? else { return Ok(inactive()) };
    let Some(grant) = state.store.grant_by_id(&refresh.grant_id).await? else { return Ok(inactive()) };
    let usable =
        refresh.used_at.is_none() && refresh.expires_at > now && grant.revoked_at.is_none() && grant.expires_at > now;
    if !usable || grant.client_id != caller.client.client_id() {
        return Ok(inactive());
    }
    let subject = match state.clients.get(&grant.client_id).await? {
        Some(client) => crate::oidc::claims::subject_for(&client, &grant.account_id),
        None => return Ok(inactive()),
    };
    let mut m = Map::new();
    m.insert("active".into(), json!(true));
    m.insert("token_type".into(), json!("refresh_token"));
    m.insert("client_id".into(), json!(grant.client_id));
    m.insert("sub".into(), json!(subject));
    m.insert("scope".into(), json!(grant.scope));
    m.insert("iat".into(), json!(refresh.created_at));
    m.insert("exp".into(), json!(refresh.expires_at));
    m.insert("iss".into(), json!(state.issuer_string()));
    Ok(m)
}

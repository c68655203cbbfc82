//! Token revocation (RFC 7009). Revoking a refresh token revokes its whole grant, including the
//! access tokens issued from it; revoking an access token marks its `jti`. Unknown tokens, and
//! tokens of other clients, get the same empty 200 so that nothing is learnt from the answer.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::app::AppState;
use crate::cps::presented::MtlsCertificate;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::token::{authenticate_client, form_params, no_store, revoke_grant};
use crate::oidc::tokens::{revoke_access_token, verify_access_token};

pub const PATH: &str = "/revoke";

pub async fn revoke(
    State(state): State<AppState>,
    certificate: MtlsCertificate,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = crate::unix_now();
    match handle(&state, &headers, &certificate, &body, now).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    certificate: &MtlsCertificate,
    body: &[u8],
    now: i64,
) -> Result<(), OAuthError> {
    let params = form_params(headers, body)?;
    let caller = authenticate_client(state, headers, certificate, &params, PATH, now).await?;
    let token = params.require("token")?;
    match params.get("token_type_hint") {
        None | Some("access_token") | Some("refresh_token") => {}
        Some(_) => {
            return Err(OAuthError::new(
                OAuthErrorCode::UnsupportedTokenType,
                "token_type_hint must be access_token or refresh_token",
            ));
        }
    }
    if token.split('.').count() == 3 {
        if let Ok(claims) = verify_access_token(state, token, now).await
            && claims.client_id == caller.client.client_id()
        {
            revoke_access_token(state, &claims, now).await?;
            tracing::info!(client_id = %claims.client_id, jti = %claims.jti, "access token revoked");
            audit_revocation(state, headers, &claims.client_id, claims.uid.clone(), claims.gid.clone(), "access_token");
        }
        return Ok(());
    }
    if token.len() > 128 {
        return Ok(());
    }
    if let Some(refresh) = state.store.refresh_token(&crate::cli::sha256_hex(token)).await?
        && let Some(grant) = state.store.grant_by_id(&refresh.grant_id).await?
        && grant.client_id == caller.client.client_id()
    {
        revoke_grant(state, &grant.id, now).await?;
        tracing::info!(client_id = %grant.client_id, grant = %grant.id, "refresh token revoked with its grant");
        audit_revocation(
            state,
            headers,
            &grant.client_id,
            Some(grant.account_id.clone()),
            Some(grant.id.clone()),
            "refresh_token",
        );
    }
    Ok(())
}

fn audit_revocation(
    state: &AppState,
    headers: &HeaderMap,
    client_id: &str,
    account_id: Option<String>,
    grant_id: Option<String>,
    token_type: &str,
) {
    state.audit.record(
        crate::audit::AuditEvent::TokenRevoked {
            account_id,
            grant_id,
            token_type: token_type.to_string(),
            via: "revocation_endpoint".into(),
        },
        crate::audit::AuditContext {
            client_id: Some(client_id.to_string()),
            ..crate::audit::AuditContext::from_request(headers, None)
        },
    );
}

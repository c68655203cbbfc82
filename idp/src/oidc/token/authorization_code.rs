//! `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5): single use, atomically; a
//! second presentation revokes everything issued from the code (RFC 6749 §4.1.2).

use async_trait::async_trait;

use super::{
    Grant, GrantContext, RefreshPlan, TokenResponse, UserTokens, active_account, issue_user_tokens, revoke_grant,
};
use crate::app::AppState;
use crate::clients::AuthenticatedClient;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::authorize::{CodeRecord, code_key, code_used_key, pkce_matches};
use crate::oidc::params::Params;
use crate::store::Grant as GrantRow;

pub struct AuthorizationCode;

fn invalid_grant(description: &'static str) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidGrant, description)
}

/// The code is gone: unknown or expired, or redeemed already — then this is a replay, and what the
/// code produced is revoked (RFC 6749 §4.1.2).
async fn replayed(
    state: &AppState,
    client: &AuthenticatedClient,
    code: &str,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let Some(grant_id) = state.ephemeral.get(&code_used_key(code)).await? else {
        return Err(invalid_grant("the authorization code is invalid or expired"));
    };
    let grant_id = String::from_utf8_lossy(&grant_id).to_string();
    revoke_grant(state, &grant_id, now).await?;
    tracing::warn!(client_id = client.client.client_id(), grant = %grant_id, "authorization code replayed: grant revoked");
    state.audit.record(
        crate::audit::AuditEvent::AuthorizationCodeReplayed { grant_id },
        crate::audit::AuditContext { client_id: Some(client.client.client_id().to_string()), ..Default::default() },
    );
    Err(invalid_grant("the authorization code was already used; the tokens issued from it are revoked"))
}

#[async_trait]
impl Grant for AuthorizationCode {
    fn grant_type(&self) -> &'static str {
        "authorization_code"
    }

    async fn exchange(
        &self,
        state: &AppState,
        client: &AuthenticatedClient,
        params: &Params,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let code = params.require("code")?;
        let redirect_uri = params.require("redirect_uri")?;
        let verifier = params.require("code_verifier")?;
        if code.len() > 128 {
            return Err(invalid_grant("the authorization code is invalid or expired"));
        }
        // Read the code first: its client is checked before anything is consumed, and its grant
        // is recorded before the code is taken (see `replayed`).
        let Some(bytes) = state.ephemeral.get(&code_key(code)).await? else {
            return replayed(state, client, code, now).await;
        };
        let record: CodeRecord = serde_json::from_slice(&bytes).map_err(|_| OAuthError::server_error())?;
        // A client presenting another client's code must not consume it (that would let anyone
        // holding a leaked code deny its rightful client the tokens).
        if record.client_id != client.client.client_id() {
            return Err(invalid_grant("the authorization code was issued to another client"));
        }
        // Remember the redemption (code -> grant id) BEFORE consuming the code, for as long as the
        // code or its access tokens could be replayed: a parallel presentation that finds the code
        // gone then always finds this marker and revokes the grant (with the marker-first order of
        // `revoke_grant`, the winner's grant cannot outlive a replay).
        let remember =
            state.config.tokens.authorization_code_lifetime + crate::oidc::tokens::longest_access_token_lifetime(state);
        state.ephemeral.put(&code_used_key(code), record.grant_id.as_bytes(), remember).await?;
        // The atomic take decides the one winner among parallel presentations.
        if state.ephemeral.take(&code_key(code)).await?.is_none() {
            return replayed(state, client, code, now).await;
        }
        if record.redirect_uri != redirect_uri {
            return Err(invalid_grant("redirect_uri differs from the one of the authorization request"));
        }
        if !pkce_matches(verifier, &record.code_challenge) {
            return Err(invalid_grant("PKCE verification failed: code_verifier does not match code_challenge"));
        }
        let account = active_account(state, &record.account_id).await?;
        let absolute = client
            .client
            .refresh_token_absolute_lifetime()
            .unwrap_or(state.config.tokens.refresh_token_absolute_lifetime);
        let context = GrantContext {
            auth: record.auth.clone(),
            claims: record.claims.clone(),
            resource: record.resource.clone(),
            authorization_details: record.authorization_details.clone(),
        };
        let grant = GrantRow {
            id: record.grant_id.clone(),
            account_id: account.id.clone(),
            client_id: record.client_id.clone(),
            session_id: record.auth.sid.clone(),
            scope: record.scope.clone(),
            claims: serde_json::to_string(&context).map_err(|_| OAuthError::server_error())?,
            auth_time: record.auth.auth_time,
            created_at: now,
            expires_at: now + absolute.as_secs() as i64,
            revoked_at: None,
        };
        state.store.insert_grant(&grant).await?;
        // A replay running in parallel may have revoked the grant before its row existed: its
        // marker is written first (see `revoke_grant`), so it is visible now. Issue nothing.
        if crate::oidc::tokens::grant_marked_revoked(state, &grant.id, now).await? {
            state.store.revoke_grant(&grant.id, now).await?;
            return Err(invalid_grant(
                "the authorization code was already used; the tokens issued from it are revoked",
            ));
        }
        state.audit.record(
            crate::audit::AuditEvent::AuthorizationCodeRedeemed {
                account_id: account.id.clone(),
                grant_id: grant.id.clone(),
            },
            crate::audit::AuditContext { client_id: Some(grant.client_id.clone()), ..Default::default() },
        );
        let details = super::requested_details(state, &context, params)?;
        let request = UserTokens {
            client: &client.client,
            account: &account,
            grant: &grant,
            context: &context,
            scope: &record.scope,
            nonce: record.nonce.as_deref(),
            refresh: RefreshPlan::Issue,
            certificate: client.certificate_thumbprint.as_deref(),
            details,
        };
        issue_user_tokens(state, request, now).await
    }
}

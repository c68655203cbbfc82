//! `grant_type=refresh_token` (RFC 6749 §6) with rotation on every use and reuse detection: a
//! spent refresh token presented again revokes its whole family (OAuth 2.0 Security BCP §4.14).

use async_trait::async_trait;

use super::{Grant, GrantContext, TokenResponse, UserTokens, active_account, issue_user_tokens, revoke_grant};
use crate::app::AppState;
use crate::clients::AuthenticatedClient;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::params::Params;
use crate::store::RefreshUse;

pub struct RefreshTokenGrant;

fn invalid_grant(description: &'static str) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidGrant, description)
}

#[async_trait]
impl Grant for RefreshTokenGrant {
    fn grant_type(&self) -> &'static str {
        "refresh_token"
    }

    async fn exchange(
        &self,
        state: &AppState,
        client: &AuthenticatedClient,
        params: &Params,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let presented = params.require("refresh_token")?;
        if presented.len() > 128 {
            return Err(invalid_grant("the refresh token is invalid"));
        }
        let hash = crate::cli::sha256_hex(presented);
        // Check the owner before spending: a client holding a leaked token of another application
        // must not be able to burn (and so revoke) that application's token family.
        let Some(known) = state.store.refresh_token(&hash).await? else {
            return Err(invalid_grant("the refresh token is invalid"));
        };
        match state.store.grant_by_id(&known.grant_id).await? {
            Some(g) if g.client_id == client.client.client_id() => {}
            _ => return Err(invalid_grant("the refresh token is invalid")),
        }
        let token = match state.store.use_refresh_token(&hash, now).await? {
            RefreshUse::Fresh(token) => token,
            RefreshUse::Reused(token) => {
                revoke_grant(state, &token.grant_id, now).await?;
                tracing::warn!(client_id = client.client.client_id(), grant = %token.grant_id, "refresh token reused: family revoked");
                return Err(invalid_grant(
                    "the refresh token was already used; the whole token family is revoked, log in again",
                ));
            }
            RefreshUse::Unknown => return Err(invalid_grant("the refresh token is invalid")),
        };
        let grant = state
            .store
            .grant_by_id(&token.grant_id)
            .await?
            .ok_or_else(|| invalid_grant("the refresh token is invalid"))?;
        if grant.client_id != client.client.client_id() {
            return Err(invalid_grant("the refresh token was issued to another client"));
        }
        if grant.revoked_at.is_some() {
            return Err(invalid_grant("the refresh token has been revoked"));
        }
        if token.expires_at <= now || grant.expires_at <= now {
            return Err(invalid_grant("the refresh token has expired; log in again"));
        }
        let granted: Vec<&str> = grant.scope.split(' ').filter(|s| !s.is_empty()).collect();
        let scope = match params.get("scope") {
            None => grant.scope.clone(),
            Some(requested) => {
                let mut narrowed: Vec<&str> = Vec::new();
                for s in requested.split(' ').filter(|s| !s.is_empty()) {
                    if !granted.contains(&s) {
                        return Err(OAuthError::new(
                            OAuthErrorCode::InvalidScope,
                            "a refresh may only narrow the scope originally granted",
                        ));
                    }
                    if !narrowed.contains(&s) {
                        narrowed.push(s);
                    }
                }
                // The refresh token itself keeps living only while offline_access is kept.
                narrowed.join(" ")
            }
        };
        let account = active_account(state, &grant.account_id).await?;
        let context: GrantContext = serde_json::from_str(&grant.claims).unwrap_or_default();
        let request = UserTokens {
            client: &client.client,
            account: &account,
            grant: &grant,
            context: &context,
            scope: &scope,
            nonce: None,
        };
        issue_user_tokens(state, request, now).await
    }
}

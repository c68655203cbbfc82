//! `grant_type=refresh_token` (RFC 6749 §6) with rotation on every use and reuse detection: a
//! spent refresh token presented again revokes its whole family (OAuth 2.0 Security BCP §4.14).

use async_trait::async_trait;

use super::{
    Grant, GrantContext, RefreshPlan, TokenResponse, UserTokens, active, issue_user_tokens, revoke_grant, successor_of,
};
use crate::app::AppState;
use crate::clients::AuthenticatedClient;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::params::Params;
use crate::store::RefreshUse;

pub struct RefreshTokenGrant;

/// A spent token presented again: a sign of theft, so the whole family is revoked.
async fn reused(state: &AppState, client: &AuthenticatedClient, grant: &crate::store::Grant, now: i64) -> OAuthError {
    let grant_id = &grant.id;
    if let Err(e) = revoke_grant(state, grant_id, now).await {
        return e;
    }
    tracing::warn!(client_id = client.client.client_id(), grant = %grant_id, "refresh token reused: family revoked");
    state.audit.record(
        crate::audit::AuditEvent::RefreshTokenReused {
            account_id: Some(grant.account_id.clone()),
            grant_id: grant_id.clone(),
        },
        crate::audit::AuditContext { client_id: Some(client.client.client_id().to_string()), ..Default::default() },
    );
    invalid_grant("the refresh token was already used; the whole token family is revoked, log in again")
}

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
        // The common case, a plain refresh, spends and rotates in one store hand-off whose
        // conditions are every check below; a token failing any of them is left untouched and
        // takes the slower path, which says why (and revokes the family on reuse).
        if params.get("scope").is_none() && params.get("authorization_details").is_none() {
            let value = crate::cli::random_token();
            let rotated = state
                .store
                .rotate_refresh_token_checked(
                    &hash,
                    client.client.client_id(),
                    now,
                    &crate::cli::sha256_hex(&value),
                    super::refresh_idle_expiry(state, &client.client, now),
                )
                .await?;
            if let Some(rotated) = rotated {
                let context: GrantContext = serde_json::from_str(&rotated.grant.claims).unwrap_or_default();
                let details = super::requested_details(state, &context, params)?;
                let request = UserTokens {
                    client: &client.client,
                    account: &rotated.account,
                    grant: &rotated.grant,
                    context: &context,
                    scope: &rotated.grant.scope,
                    nonce: None,
                    refresh: RefreshPlan::Rotated(value),
                    certificate: client.certificate_thumbprint.as_deref(),
                    details,
                };
                return issue_user_tokens(state, request, now).await;
            }
        }
        // Check the owner before spending: a client holding a leaked token of another application
        // must not be able to burn (and so revoke) that application's token family.
        let (known, grant, account) = match state.store.refresh_context(&hash).await? {
            Some(c) if c.grant.client_id == client.client.client_id() => (c.token, c.grant, c.account),
            _ => return Err(invalid_grant("the refresh token is invalid")),
        };
        if known.used_at.is_some() {
            return Err(reused(state, client, &grant, now).await);
        }
        if grant.revoked_at.is_some() {
            return Err(invalid_grant("the refresh token has been revoked"));
        }
        if known.expires_at <= now || grant.expires_at <= now {
            return Err(invalid_grant("the refresh token has expired; log in again"));
        }
        let granted: Vec<&str> = grant.scope.split(' ').filter(|s| !s.is_empty()).collect();
        let scope = match params.get("scope") {
            None => grant.scope.clone(),
            Some(requested) => {
                super::narrow_scope(&granted, requested, "a refresh may only narrow the scope originally granted")?
            }
        };
        let account = active(account)?;
        // A malformed or broader narrowing is refused before the token is spent.
        let context: GrantContext = serde_json::from_str(&grant.claims).unwrap_or_default();
        let details = super::requested_details(state, &context, params)?;
        // Spend the presented token (atomically) and store its successor when the family goes on
        // (the family ends when a narrowed scope drops offline_access).
        let keeps_family = scope.split(' ').any(|s| s == "offline_access");
        let (outcome, refresh) = if keeps_family {
            let value = crate::cli::random_token();
            let successor = successor_of(state, &client.client, &grant, &value, now);
            (state.store.rotate_refresh_token(&hash, now, &successor).await?, RefreshPlan::Rotated(value))
        } else {
            (state.store.use_refresh_token(&hash, now).await?, RefreshPlan::Omit)
        };
        match outcome {
            RefreshUse::Fresh(_) => {}
            RefreshUse::Reused(_) => return Err(reused(state, client, &grant, now).await),
            RefreshUse::Unknown => return Err(invalid_grant("the refresh token is invalid")),
        }
        let request = UserTokens {
            client: &client.client,
            account: &account,
            grant: &grant,
            context: &context,
            scope: &scope,
            nonce: None,
            refresh,
            certificate: client.certificate_thumbprint.as_deref(),
            details,
        };
        issue_user_tokens(state, request, now).await
    }
}

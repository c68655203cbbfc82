//! `grant_type=client_credentials` (RFC 6749 §4.4): tokens for an application's back end acting
//! on its own behalf. Confidential clients only; no user, so no `openid` and no refresh token.

use async_trait::async_trait;

use super::{Grant, TokenResponse, access_lifetime, audience};
use crate::app::AppState;
use crate::clients::AuthenticatedClient;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::params::Params;
use crate::oidc::tokens::{self, AccessTokenRequest};

pub struct ClientCredentials;

/// Scopes that describe a user and therefore make no sense without one.
const USER_SCOPES: &[&str] = &["openid", "profile", "email", "phone", "offline_access"];

#[async_trait]
impl Grant for ClientCredentials {
    fn grant_type(&self) -> &'static str {
        "client_credentials"
    }

    async fn exchange(
        &self,
        state: &AppState,
        client: &AuthenticatedClient,
        params: &Params,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let authenticated = client;
        let client = &client.client;
        if client.is_public() {
            return Err(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "public clients cannot use client_credentials",
            ));
        }
        let mut scopes: Vec<&str> = Vec::new();
        for s in params.get("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
            if USER_SCOPES.contains(&s) || !client.scope_allowed(s) {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidScope,
                    format!("scope `{}` cannot be granted to this client", s.chars().take(40).collect::<String>()),
                ));
            }
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        let resource: Vec<String> = params.get("resource").map(|r| vec![r.to_string()]).unwrap_or_default();
        if let Some(r) = resource.first()
            && url::Url::parse(r).map(|u| u.fragment().is_some()).unwrap_or(true)
        {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidTarget,
                "resource must be an absolute URI without fragment",
            ));
        }
        let scope = scopes.join(" ");
        let minted = tokens::mint_access_token(
            state,
            AccessTokenRequest {
                client_id: client.client_id(),
                subject: client.client_id(),
                account_id: None,
                scope: &scope,
                audience: audience(client, &resource),
                auth: None,
                grant_id: None,
                lifetime: access_lifetime(state, client),
                certificate_thumbprint: authenticated.certificate_thumbprint.as_deref(),
                authorization_details: None,
                act: None,
            },
            now,
        )?;
        Ok(TokenResponse {
            access_token: minted.token,
            token_type: "Bearer",
            expires_in: minted.expires_in,
            scope: if scope.is_empty() { None } else { Some(scope) },
            refresh_token: None,
            id_token: None,
            authorization_details: None,
            issued_token_type: None,
            issued_to: None,
        })
    }
}

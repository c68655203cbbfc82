//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): a confidential client
//! exchanges a user's Habilis access token for a narrower one — fewer scopes, one patient, another
//! audience (the app it calls next). The new token carries `act` naming the calling client, is
//! never broader nor longer-lived than the subject token, and its `patient_access` details are
//! evaluated again by policy for the audience.
//!
//! Who may exchange (the `may_act` rule): the client the subject token was issued to, or a client
//! the subject token was addressed to (`aud`: a resource server calling onward). Target audiences
//! must be the caller itself or listed in its `token_exchange_audiences`.

use async_trait::async_trait;
use serde_json::json;

use super::{Grant, TokenResponse, access_lifetime};
use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::clients::{AuthenticatedClient, TOKEN_EXCHANGE_GRANT};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::habilitation::rar::{self, GrantedAccess};
use crate::oidc::authorize::audience_contains;
use crate::oidc::params::Params;
use crate::oidc::tokens::{self, AccessClaims, AccessTokenRequest, AuthContext};
use crate::store::AccountStatus;

pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

pub struct TokenExchange;

fn invalid_grant(description: &'static str) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidGrant, description)
}

#[async_trait]
impl Grant for TokenExchange {
    fn grant_type(&self) -> &'static str {
        TOKEN_EXCHANGE_GRANT
    }

    async fn exchange(
        &self,
        state: &AppState,
        caller: &AuthenticatedClient,
        params: &Params,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let client = &caller.client;
        if client.is_public() {
            return Err(OAuthError::new(OAuthErrorCode::UnauthorizedClient, "public clients cannot exchange tokens"));
        }
        let subject_token = params.require("subject_token")?;
        if params.require("subject_token_type")? != ACCESS_TOKEN_TYPE {
            return Err(OAuthError::invalid_request(format!("subject_token_type must be {ACCESS_TOKEN_TYPE}")));
        }
        if params.get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
            return Err(OAuthError::invalid_request(format!("requested_token_type must be {ACCESS_TOKEN_TYPE}")));
        }
        if params.contains("actor_token") {
            return Err(OAuthError::invalid_request(
                "actor_token is not supported: the authenticated client is the actor",
            ));
        }
        let subject = tokens::verify_access_token(state, subject_token, now)
            .await
            .map_err(|_| invalid_grant("subject_token is invalid, expired or revoked"))?;
        let Some(account_id) = subject.account_id().map(str::to_string) else {
            return Err(invalid_grant("subject_token must be a user's token"));
        };
        let caller_id = client.client_id();
        if subject.client_id != caller_id && !audience_contains(Some(&subject.aud), caller_id) {
            return Err(OAuthError::new(
                OAuthErrorCode::AccessDenied,
                "this client may not act on that token: it was neither issued to it nor addressed to it",
            ));
        }
        let audience = target_audience(client, params)?;
        let scope = narrowed_scope(&subject, params.get("scope"))?;
        let account = match state.store.account_by_id(&account_id).await? {
            Some(a) if a.status == AccountStatus::Active => a,
            _ => return Err(invalid_grant("the account behind subject_token is disabled or gone")),
        };
        // Policy is evaluated for the application the new token is for.
        let policy_client = match state.clients.get(&audience).await? {
            Some(target) => target.client_id().to_string(),
            None => caller_id.to_string(),
        };
        let held = subject.authorization_details.clone().unwrap_or_default();
        let requested = rar::narrow(&held, params.get("authorization_details"), state.habilitations.production)?;
        let outcomes = state
            .habilitations
            .evaluate_all(
                &state.store,
                &requested,
                crate::habilitation::service::Professional::Account(&account),
                &policy_client,
                subject.acr.as_deref(),
                now,
            )
            .await;
        let mut granted: Vec<GrantedAccess> = Vec::new();
        for (i, (detail, outcome)) in requested.iter().zip(outcomes).enumerate() {
            crate::habilitation::audit_decision_via(
                state,
                &account.id,
                &policy_client,
                detail,
                &outcome,
                "token_exchange",
            );
            match outcome {
                Ok(g) => granted.push(g),
                Err(denial) => {
                    return Err(OAuthError::new(
                        OAuthErrorCode::AccessDenied,
                        format!("authorization_details[{i}]: {}", denial.describe()),
                    ));
                }
            }
        }
        let auth = AuthContext {
            auth_time: subject.auth_time.unwrap_or(subject.iat),
            acr: subject.acr.clone(),
            amr: subject.amr.clone().unwrap_or_default(),
            sid: subject.sid.clone(),
        };
        // RFC 8693 §4.1: the current actor, with any previous one nested.
        let act = match &subject.act {
            Some(previous) => json!({"client_id": caller_id, "act": previous}),
            None => json!({"client_id": caller_id}),
        };
        let lifetime = access_lifetime(state, client).min(subject.exp - now).max(1);
        let minted = tokens::mint_access_token(
            state,
            AccessTokenRequest {
                client_id: caller_id,
                subject: &subject.sub,
                account_id: Some(&account.id),
                scope: &scope,
                audience: vec![audience.clone()],
                auth: Some(&auth),
                grant_id: subject.gid.as_deref(),
                lifetime,
                certificate_thumbprint: caller.certificate_thumbprint.as_deref(),
                authorization_details: (!granted.is_empty()).then(|| granted.clone()),
                act: Some(act),
            },
            now,
        )?;
        // The token leaves only with its trace committed (see `Audit::record_committed`).
        state
            .audit
            .record_committed(
                AuditEvent::TokenExchanged {
                    subject_client: subject.client_id.clone(),
                    actor_client: caller_id.to_string(),
                    account_id: Some(account.id.clone()),
                    audience: vec![audience],
                },
                AuditContext { client_id: Some(caller_id.to_string()), ..Default::default() },
            )
            .await
            .map_err(super::audit_not_durable)?;
        Ok(TokenResponse {
            access_token: minted.token,
            token_type: "Bearer",
            expires_in: minted.expires_in,
            scope: (!scope.is_empty()).then_some(scope),
            refresh_token: None,
            id_token: None,
            authorization_details: (!granted.is_empty()).then_some(granted),
            issued_token_type: Some(ACCESS_TOKEN_TYPE),
            issued_to: None,
        })
    }
}

/// `audience` or `resource` (one of them, once): the caller itself or one it registered.
fn target_audience(client: &crate::clients::Client, params: &Params) -> Result<String, OAuthError> {
    let target = match (params.get("audience"), params.get("resource")) {
        (Some(_), Some(_)) => return Err(OAuthError::invalid_request("send audience or resource, not both")),
        (Some(a), None) | (None, Some(a)) => a.to_string(),
        (None, None) => return Ok(client.client_id().to_string()),
    };
    if target == client.client_id() || client.token_exchange_audiences().contains(&target) {
        Ok(target)
    } else {
        Err(OAuthError::new(
            OAuthErrorCode::InvalidTarget,
            "this client may not obtain tokens for that audience (see its token_exchange_audiences)",
        ))
    }
}

/// The requested scope, which may only narrow the subject token's (default: the same, without
/// `offline_access`: an exchanged token is never refreshable).
fn narrowed_scope(subject: &AccessClaims, requested: Option<&str>) -> Result<String, OAuthError> {
    let held: Vec<&str> = subject.scopes().filter(|s| *s != "offline_access").collect();
    match requested {
        None => Ok(held.join(" ")),
        Some(requested) => {
            super::narrow_scope(&held, requested, "the requested scope is broader than the subject token's")
        }
    }
}

//! The token endpoint (RFC 6749 §3.2) with a registry of grants: one module per `grant_type`,
//! each implementing [`Grant`]. Client authentication, `Cache-Control: no-store` and the error
//! shape are handled here once; discovery lists what the registry holds.

mod authorization_code;
mod client_credentials;
mod refresh_token;
pub mod token_exchange;

use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::clients::{AuthenticatedClient, Client};
use crate::cps::presented::MtlsCertificate;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::params::Params;
use crate::oidc::tokens::{self, AccessTokenRequest, AuthContext, IdTokenRequest};
use crate::store::{Account, AccountStatus, Grant as GrantRow, RefreshToken};

pub const PATH: &str = "/token";

/// One `grant_type` of the token endpoint.
#[async_trait]
pub trait Grant: Send + Sync {
    fn grant_type(&self) -> &'static str;
    async fn exchange(
        &self,
        state: &AppState,
        client: &AuthenticatedClient,
        params: &Params,
        now: i64,
    ) -> Result<TokenResponse, OAuthError>;
}

/// The grants this server accepts, looked up by `grant_type`.
pub struct GrantRegistry {
    grants: Vec<Box<dyn Grant>>,
}

impl Default for GrantRegistry {
    fn default() -> Self {
        Self::standard()
    }
}

impl GrantRegistry {
    pub fn standard() -> GrantRegistry {
        GrantRegistry {
            grants: vec![
                Box::new(authorization_code::AuthorizationCode),
                Box::new(refresh_token::RefreshTokenGrant),
                Box::new(client_credentials::ClientCredentials),
                Box::new(token_exchange::TokenExchange),
            ],
        }
    }

    pub fn get(&self, grant_type: &str) -> Option<&dyn Grant> {
        self.grants.iter().find(|g| g.grant_type() == grant_type).map(|g| g.as_ref())
    }

    pub fn grant_types(&self) -> Vec<&'static str> {
        self.grants.iter().map(|g| g.grant_type()).collect()
    }
}

/// RFC 6749 §5.1 (+ OIDC `id_token`).
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// RFC 9396 §7: the details granted, as in the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<crate::habilitation::rar::GrantedAccess>>,
    /// RFC 8693 §2.2.1 (token exchange only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// The account and grant of user tokens, for the audit record (never sent).
    #[serde(skip)]
    pub issued_to: Option<IssuedTo>,
}

/// Whom user tokens were issued to.
#[derive(Clone, Debug)]
pub struct IssuedTo {
    pub account_id: String,
    pub grant_id: String,
}

/// The values `aud` of a client assertion may carry at this endpoint.
pub fn assertion_audience(state: &AppState, endpoint_path: &str) -> Vec<String> {
    let issuer = state.issuer_string();
    vec![format!("{issuer}{endpoint_path}"), issuer]
}

/// Authenticates the client of a back-channel request (token, PAR, introspection, revocation).
pub async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    certificate: &MtlsCertificate,
    params: &Params,
    endpoint_path: &str,
    now: i64,
) -> Result<AuthenticatedClient, OAuthError> {
    let pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    state
        .clients
        .authenticate(
            headers,
            &pairs,
            &assertion_audience(state, endpoint_path),
            state.ephemeral.as_ref(),
            &crate::cps::mtls::RequestCertificate { state, certificate, now },
            now,
        )
        .await
}

/// Parses a back-channel form body, insisting on the form content type.
pub fn form_params(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
    if !crate::web::is_form(headers) {
        return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    Params::parse(body)
}

pub async fn token(
    State(state): State<AppState>,
    certificate: MtlsCertificate,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = crate::unix_now();
    match handle(&state, &headers, &certificate, &body, now).await {
        Ok(response) => no_store(axum::Json(response).into_response()),
        Err(error) => {
            tracing::info!(error = error.code.as_str(), description = %error.description, "token request refused");
            error.into_response()
        }
    }
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    certificate: &MtlsCertificate,
    body: &[u8],
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let params = form_params(headers, body)?;
    let client = authenticate_client(state, headers, certificate, &params, PATH, now).await?;
    let grant_type = params.require("grant_type")?;
    let grant = state.grants.get(grant_type).ok_or_else(|| {
        OAuthError::new(
            OAuthErrorCode::UnsupportedGrantType,
            format!("grant_type must be one of {}", state.grants.grant_types().join(", ")),
        )
    })?;
    if !client.client.allows_grant(grant_type) {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            format!("this client is not registered for the {grant_type} grant"),
        ));
    }
    let response = grant.exchange(state, &client, &params, now).await?;
    audit_issuance(state, headers, client.client.client_id(), grant_type, &response).await?;
    state.metrics.token_issued(grant_type);
    Ok(response)
}

/// Audits a token response from what is at hand (no query: this is the token hot path) and
/// returns once the record is committed: no token reaches a client without its durable trace,
/// even if the process is killed right after answering. Token exchanges have their own event,
/// recorded (the same way) by their grant.
async fn audit_issuance(
    state: &AppState,
    headers: &HeaderMap,
    client_id: &str,
    grant_type: &str,
    response: &TokenResponse,
) -> Result<(), OAuthError> {
    let issued_to = response.issued_to.clone();
    let event = match (grant_type, issued_to) {
        (crate::clients::TOKEN_EXCHANGE_GRANT, _) => return Ok(()),
        ("refresh_token", Some(to)) => AuditEvent::TokenRefreshed { account_id: to.account_id, grant_id: to.grant_id },
        (_, to) => AuditEvent::TokenIssued {
            grant_type: grant_type.to_string(),
            account_id: to.as_ref().map(|t| t.account_id.clone()),
            grant_id: to.map(|t| t.grant_id),
        },
    };
    let context = AuditContext { client_id: Some(client_id.to_string()), ..AuditContext::from_request(headers, None) };
    state.audit.record_committed(event, context).await.map_err(audit_not_durable)
}

/// A token whose audit record could not be committed is not handed out. For a refresh, the
/// client's retry with the same token is answered within the reuse window (see `tokens`).
pub(crate) fn audit_not_durable(_: crate::audit::NotDurable) -> OAuthError {
    OAuthError::new(
        OAuthErrorCode::TemporarilyUnavailable,
        "the token could not be recorded in the audit log; try again shortly",
    )
}

pub fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// What a grant remembers of the authorization, for refreshes (JSON in the `grants` row).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GrantContext {
    pub auth: AuthContext,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<String>,
    /// The `patient_access` details granted at the authorization; each issuance re-evaluates them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_details: Vec<crate::habilitation::rar::GrantedAccess>,
}

fn lifetime(value: Option<Duration>, default: Duration) -> i64 {
    value.unwrap_or(default).as_secs() as i64
}

pub(crate) fn access_lifetime(state: &AppState, client: &Client) -> i64 {
    lifetime(client.access_token_lifetime(), state.config.tokens.access_token_lifetime)
}

pub(crate) fn audience(client: &Client, resource: &[String]) -> Vec<String> {
    if !resource.is_empty() { resource.to_vec() } else { client.access_token_audience().to_vec() }
}

/// The account behind a grant, only while it may still get tokens.
pub(crate) async fn active_account(state: &AppState, account_id: &str) -> Result<Account, OAuthError> {
    match state.store.account_by_id(account_id).await? {
        Some(a) => active(a),
        None => Err(account_gone()),
    }
}

/// The account, only while it may still get tokens.
pub(crate) fn active(account: Account) -> Result<Account, OAuthError> {
    if account.status == AccountStatus::Active { Ok(account) } else { Err(account_gone()) }
}

fn account_gone() -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidGrant, "the account is disabled or no longer exists")
}

/// Revokes a grant in the store and makes its access tokens fail at once everywhere.
///
/// The marker is written before the row is revoked. A code redemption racing a replay inserts the
/// grant row and only then reads the marker: either the replay's row update comes after the insert
/// (and revokes the row), or it came before, so the marker was already there when the winner
/// looked. Either way the winner's grant ends revoked.
pub async fn revoke_grant(state: &AppState, grant_id: &str, now: i64) -> Result<(), OAuthError> {
    tokens::mark_grant_revoked(state, grant_id, now).await?;
    state.store.revoke_grant(grant_id, now).await?;
    Ok(())
}

/// Ends everything an account holds: every active grant revoked (tokens stop working at once) and
/// every browser session ended. Returns how many grants were revoked. What an administrator's "end
/// sessions", a password reset and an account deletion all do.
pub async fn end_all_access_of(state: &AppState, account_id: &str, now: i64) -> Result<usize, OAuthError> {
    let grants = state.store.admin().active_grants_of(account_id, now).await?;
    for grant in &grants {
        revoke_grant(state, &grant.id, now).await?;
    }
    crate::authn::session::end_all(state.ephemeral.as_ref(), &state.sessions.settings, account_id, now).await?;
    Ok(grants.len())
}

/// The scopes of `requested` (deduplicated), each among `held`; otherwise `invalid_scope` with
/// `refusal`. Refreshes and token exchanges may only narrow what they hold.
pub(crate) fn narrow_scope(held: &[&str], requested: &str, refusal: &'static str) -> Result<String, OAuthError> {
    let mut narrowed: Vec<&str> = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !held.contains(&scope) {
            return Err(OAuthError::new(OAuthErrorCode::InvalidScope, refusal));
        }
        if !narrowed.contains(&scope) {
            narrowed.push(scope);
        }
    }
    Ok(narrowed.join(" "))
}

/// The details a token request asks for: the grant's, or a narrowing of them.
pub(crate) fn requested_details(
    state: &AppState,
    context: &GrantContext,
    params: &Params,
) -> Result<Vec<crate::habilitation::rar::PatientAccess>, OAuthError> {
    let raw = params.get("authorization_details");
    if raw.is_some() && context.authorization_details.is_empty() {
        return Err(crate::habilitation::rar::invalid(
            "authorization_details can only narrow those of the authorization, which had none",
        ));
    }
    crate::habilitation::rar::narrow(&context.authorization_details, raw, state.habilitations.production)
}

/// What a user grant issues tokens for.
pub(crate) struct UserTokens<'a> {
    pub client: &'a Client,
    pub account: &'a Account,
    pub grant: &'a GrantRow,
    pub context: &'a GrantContext,
    /// The scope of these tokens (the grant's, or narrower on refresh).
    pub scope: &'a str,
    /// Only for the first ID token of an authorization (OIDC Core §12.2).
    pub nonce: Option<&'a str>,
    pub refresh: RefreshPlan,
    /// The client certificate the access token is bound to (RFC 8705), if any.
    pub certificate: Option<&'a str>,
    /// The `patient_access` details to evaluate for these tokens: the grant's, or fewer when the
    /// token request narrowed them (RFC 9396 §6).
    pub details: Vec<crate::habilitation::rar::PatientAccess>,
}

/// What to do about the refresh token of a response.
pub(crate) enum RefreshPlan {
    /// Issue a new family member when the scope has `offline_access` (code exchange).
    Issue,
    /// Already stored atomically with the spend of its predecessor (refresh rotation).
    Rotated(String),
    /// No refresh token.
    Omit,
}

/// When a refresh token issued now expires if unused (before the cap of its family's end).
pub(crate) fn refresh_idle_expiry(state: &AppState, client: &Client, now: i64) -> i64 {
    now + lifetime(client.refresh_token_idle_lifetime(), state.config.tokens.refresh_token_idle_lifetime)
}

/// The stored form of a new refresh token of `grant`: idle lifetime, capped by the family's end.
pub(crate) fn successor_of(state: &AppState, client: &Client, grant: &GrantRow, value: &str, now: i64) -> RefreshToken {
    RefreshToken {
        token_hash: crate::cli::sha256_hex(value),
        grant_id: grant.id.clone(),
        created_at: now,
        expires_at: refresh_idle_expiry(state, client, now).min(grant.expires_at),
        used_at: None,
    }
}

/// Issues the tokens of a user grant: access token, refresh token (with `offline_access`) and ID
/// token (with `openid`).
pub(crate) async fn issue_user_tokens(
    state: &AppState,
    request: UserTokens<'_>,
    now: i64,
) -> Result<TokenResponse, OAuthError> {
    let UserTokens { client, account, grant, context, scope, nonce, refresh, certificate, details } = request;
    let subject = crate::oidc::claims::subject_for(client, &account.id);
    let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    let authorization_details = current_details(state, client, account, context, &details, now).await;
    let minted = tokens::mint_access_token(
        state,
        AccessTokenRequest {
            client_id: client.client_id(),
            subject: &subject,
            account_id: Some(&account.id),
            scope,
            audience: audience(client, &context.resource),
            auth: Some(&context.auth),
            grant_id: Some(&grant.id),
            lifetime: access_lifetime(state, client),
            certificate_thumbprint: certificate,
            authorization_details: authorization_details.clone(),
            act: None,
        },
        now,
    )?;
    let refresh_token = match refresh {
        RefreshPlan::Rotated(value) => Some(value),
        RefreshPlan::Issue if scopes.contains(&"offline_access") && client.allows_grant("refresh_token") => {
            let value = crate::cli::random_token();
            state.store.insert_refresh_token(&successor_of(state, client, grant, &value, now)).await?;
            Some(value)
        }
        RefreshPlan::Issue | RefreshPlan::Omit => None,
    };
    let id_token = if scopes.contains(&"openid") {
        let mut extra = requested_id_token_claims(account, context.claims.as_ref(), &scopes);
        if scopes.contains(&crate::oidc::claims::PSC_SCOPE) {
            extra.extend(
                crate::habilitation::professional::psc_claims_of(&state.store, account, context.auth.acr.as_deref())
                    .await?,
            );
        }
        Some(tokens::mint_id_token(
            state,
            IdTokenRequest {
                client_id: client.client_id(),
                subject: &subject,
                nonce,
                auth: &context.auth,
                access_token: Some(&minted.token),
                alg: client.id_token_signed_response_alg(),
                lifetime: state.config.tokens.id_token_lifetime.as_secs() as i64,
                extra,
            },
            now,
        )?)
    } else {
        None
    };
    Ok(TokenResponse {
        access_token: minted.token,
        token_type: "Bearer",
        expires_in: minted.expires_in,
        scope: Some(scope.to_string()),
        refresh_token,
        id_token,
        authorization_details,
        issued_token_type: None,
        issued_to: Some(IssuedTo { account_id: account.id.clone(), grant_id: grant.id.clone() }),
    })
}

/// The details of a grant that still hold now: each is evaluated again, so a revoked
/// relationship or a changed profile is reflected in the next token. `None` when the grant has
/// none; an empty list when all were withdrawn.
async fn current_details(
    state: &AppState,
    client: &Client,
    account: &Account,
    context: &GrantContext,
    details: &[crate::habilitation::rar::PatientAccess],
    now: i64,
) -> Option<Vec<crate::habilitation::rar::GrantedAccess>> {
    if context.authorization_details.is_empty() {
        return None;
    }
    let outcomes = state
        .habilitations
        .evaluate_all(
            &state.store,
            details,
            crate::habilitation::service::Professional::Account(account),
            client.client_id(),
            context.auth.acr.as_deref(),
            now,
        )
        .await;
    let mut granted = Vec::with_capacity(details.len());
    for (request, outcome) in details.iter().zip(outcomes) {
        crate::habilitation::audit_decision(state, &account.id, client.client_id(), request, &outcome);
        if let Ok(g) = outcome {
            granted.push(g);
        }
    }
    Some(granted)
}

/// Claims asked for in the ID token through the `claims` parameter, among those the scopes release.
fn requested_id_token_claims(account: &Account, claims: Option<&Value>, scopes: &[&str]) -> Map<String, Value> {
    let Some(requested) = claims.and_then(|c| c.get("id_token")).and_then(Value::as_object) else { return Map::new() };
    let available = crate::oidc::claims::account_claims(account, &["profile", "email", "phone"]);
    let _ = scopes;
    requested.keys().filter_map(|name| available.get(name).map(|v| (name.clone(), v.clone()))).collect()
}

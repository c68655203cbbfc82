//! The authorization endpoint (RFC 6749 §4.1, OIDC Core §3.1.2) as a list of named steps, in the
//! order the specifications give them. Until the client and its redirect URI are trusted, errors
//! are shown on a page; after that they are sent back to the client (with `state` and RFC 9207
//! `iss`). The same validation serves pushed authorization requests (RFC 9126).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::AppState;
use crate::authn::journey::Levels;
use crate::authn::session::{self, Session};
use crate::clients::{AcrLevel, ApplicationType, Client};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::habilitation::rar::{GrantedAccess, PatientAccess};
use crate::oidc::interaction::{self, Interaction};
use crate::oidc::params::Params;
use crate::oidc::tokens::AuthContext;
use crate::web::i18n::Lang;

pub const PATH: &str = "/authorize";
pub const RESUME_PATH: &str = "/authorize/resume";
pub const PAR_URN_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// Scopes Habilis understands; clients may only be granted scopes from their registration.
pub const SUPPORTED_SCOPES: &[&str] =
    &["openid", "profile", "email", "phone", "offline_access", "scope_all", RELATIONSHIPS_SCOPE];

/// Scopes of the admin REST API (`/api/admin/v1`). Not in [`SUPPORTED_SCOPES`]: they are never
/// advertised nor offered to dynamic registration. A client registered with them (by an
/// administrator) gets them only for accounts holding an administration role, and only after a
/// login at `admin.minimum_acr` (eidas2 by default): see [`narrow_admin_scopes`].
pub const ADMIN_SCOPES: &[&str] = &[crate::admin::ADMIN_SCOPE, crate::admin::AUDIT_SCOPE];

pub fn is_admin_scope(scope: &str) -> bool {
    ADMIN_SCOPES.contains(&scope)
}

/// Lets a token manage relationships through the relationships API (a patient soliciting an
/// expert with their own token, or an app's back end with client credentials).
pub const RELATIONSHIPS_SCOPE: &str = "relationships";

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    Query,
    FormPost,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    None,
    Login,
    Consent,
    SelectAccount,
}

/// A validated authorization request: what was asked, already checked against the client.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub response_mode: ResponseMode,
    pub scope: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub prompt: Vec<Prompt>,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// `sub` of a valid `id_token_hint`: the user the client expects.
    pub expected_subject: Option<String>,
    pub ui_locales: Option<String>,
    pub acr_values: Vec<String>,
    /// Levels of an essential `acr` claim request: one of them must be met.
    pub essential_acr: Vec<String>,
    /// The `claims` parameter (OIDC Core §5.5), kept for the token and userinfo responses.
    pub claims: Option<Value>,
    pub resource: Vec<String>,
    /// RFC 9396 `patient_access` details asked for (evaluated once the user is known).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_details: Vec<PatientAccess>,
    /// The weakest login the habilitation profiles need to grant those details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details_acr: Option<String>,
    /// The weakest login the admin scopes asked for need (`admin.minimum_acr`); cleared when
    /// they are dropped for an account without an administration role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_acr: Option<String>,
}

impl AuthorizationRequest {
    pub fn scope_string(&self) -> String {
        self.scope.join(" ")
    }
    pub fn has_prompt(&self, prompt: Prompt) -> bool {
        self.prompt.contains(&prompt)
    }
}

/// Why a request failed, and where the answer goes.
#[derive(Debug)]
pub enum Failure {
    /// The client or redirect URI cannot be trusted: show a page, never redirect.
    Page(OAuthError),
    /// Tell the client, at its validated redirect URI.
    Redirect { error: OAuthError, redirect_uri: String, state: Option<String>, mode: ResponseMode },
}

/// The validation context: what the steps read and fill in.
struct Steps<'a> {
    state: &'a AppState,
    params: &'a Params,
    client: Option<Arc<Client>>,
    redirect_uri: Option<String>,
    response_mode: ResponseMode,
    now: i64,
}

impl Steps<'_> {
    fn client(&self) -> &Client {
        self.client.as_deref().expect("step order: client is resolved first")
    }

    /// Turns an error of a later step into a redirect to the (already validated) client.
    fn redirect(&self, error: OAuthError) -> Failure {
        Failure::Redirect {
            error,
            redirect_uri: self.redirect_uri.clone().unwrap_or_default(),
            state: self.params.get("state").map(str::to_string),
            mode: self.response_mode,
        }
    }
}

/// Validates an authorization request. `pushed_by` is the authenticated client of a PAR request.
pub async fn validate(
    state: &AppState,
    params: &Params,
    pushed_by: Option<&Client>,
    now: i64,
) -> Result<AuthorizationRequest, Failure> {
    let mut steps = Steps { state, params, client: None, redirect_uri: None, response_mode: ResponseMode::Query, now };
    step_client(&mut steps, pushed_by).await?;
    step_redirect_uri(&mut steps)?;
    step_response_mode(&mut steps)?;
    step_unsupported_parameters(&steps)?;
    step_response_type(&steps)?;
    step_pushed_request_required(&steps, pushed_by)?;
    let code_challenge = step_pkce(&steps)?;
    let scope = step_scope(&steps)?;
    let (claims, essential_acr) = step_claims(&steps)?;
    let prompt = step_prompt(&steps)?;
    let max_age = step_max_age(&steps)?;
    let acr_values = step_acr_values(&steps)?;
    let expected_subject = step_id_token_hint(&steps)?;
    let resource = step_resource(&steps)?;
    let (authorization_details, details_acr) = step_authorization_details(&steps)?;
    let login_hint = bounded(&steps, "login_hint", 256)?;
    let ui_locales = bounded(&steps, "ui_locales", 64)?;
    let nonce = bounded(&steps, "nonce", 512)?;
    let state_param = bounded(&steps, "state", 2048)?;
    let admin_acr = scope.iter().any(|s| is_admin_scope(s)).then(|| state.config.admin.minimum_acr.clone());
    Ok(AuthorizationRequest {
        client_id: steps.client().client_id().to_string(),
        redirect_uri: steps.redirect_uri.clone().unwrap_or_default(),
        response_mode: steps.response_mode,
        scope,
        state: state_param,
        nonce,
        code_challenge,
        prompt,
        max_age,
        login_hint,
        expected_subject,
        ui_locales,
        acr_values,
        essential_acr,
        claims,
        resource,
        authorization_details,
        details_acr: details_acr.map(|l| l.as_str().to_string()),
        admin_acr,
    })
}

/// The client exists (and is the one that pushed the request, for PAR).
async fn step_client(steps: &mut Steps<'_>, pushed_by: Option<&Client>) -> Result<(), Failure> {
    let client_id = steps
        .params
        .get("client_id")
        .ok_or_else(|| Failure::Page(OAuthError::invalid_request("missing parameter `client_id`")))?;
    if let Some(pusher) = pushed_by
        && pusher.client_id() != client_id
    {
        return Err(Failure::Page(OAuthError::invalid_request("`client_id` differs from the authenticated client")));
    }
    let client = steps.state.clients.get(client_id).await.map_err(|e| Failure::Page(e.into()))?.ok_or_else(|| {
        Failure::Page(OAuthError::new(
            OAuthErrorCode::InvalidClient,
            "unknown client_id; check the application's configuration",
        ))
    })?;
    steps.client = Some(client);
    Ok(())
}

/// The redirect URI is present and registered (exact match; port-agnostic loopback only for
/// native clients, RFC 8252 §7.3).
fn step_redirect_uri(steps: &mut Steps<'_>) -> Result<(), Failure> {
    let uri = steps
        .params
        .get("redirect_uri")
        .ok_or_else(|| Failure::Page(OAuthError::invalid_request("missing parameter `redirect_uri`")))?;
    if !steps.client().redirect_uri_allowed(uri) {
        return Err(Failure::Page(OAuthError::invalid_request(
            "redirect_uri is not registered for this client (it must match a registered URI exactly)",
        )));
    }
    steps.redirect_uri = Some(uri.to_string());
    Ok(())
}

fn step_response_mode(steps: &mut Steps<'_>) -> Result<(), Failure> {
    steps.response_mode = match steps.params.get("response_mode") {
        None | Some("query") => ResponseMode::Query,
        Some("form_post") => ResponseMode::FormPost,
        Some(_) => {
            return Err(
                steps.redirect(OAuthError::invalid_request("unsupported response_mode; use query or form_post"))
            );
        }
    };
    Ok(())
}

/// Request objects are not supported: say so instead of silently ignoring them.
fn step_unsupported_parameters(steps: &Steps<'_>) -> Result<(), Failure> {
    if steps.params.contains("request") {
        return Err(steps.redirect(OAuthError::new(
            OAuthErrorCode::RequestNotSupported,
            "request objects are not supported; use PAR",
        )));
    }
    if steps.params.contains("request_uri") {
        return Err(steps.redirect(OAuthError::new(
            OAuthErrorCode::InvalidRequestUri,
            "request_uri is accepted only from the pushed authorization request endpoint",
        )));
    }
    if steps.params.contains("registration") {
        return Err(steps.redirect(OAuthError::new(
            OAuthErrorCode::RegistrationNotSupported,
            "the registration parameter is not supported",
        )));
    }
    Ok(())
}

fn step_response_type(steps: &Steps<'_>) -> Result<(), Failure> {
    match steps.params.get("response_type") {
        Some("code") if steps.client().allows_response_type("code") => Ok(()),
        Some("code") => Err(steps.redirect(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use response_type=code",
        ))),
        Some(_) => Err(steps.redirect(OAuthError::new(
            OAuthErrorCode::UnsupportedResponseType,
            "only response_type=code is supported",
        ))),
        None => Err(steps.redirect(OAuthError::invalid_request("missing parameter `response_type`"))),
    }
}

fn step_pushed_request_required(steps: &Steps<'_>, pushed_by: Option<&Client>) -> Result<(), Failure> {
    let required = steps.state.config.oidc.require_pushed_authorization_requests
        || steps.client().require_pushed_authorization_requests();
    if required && pushed_by.is_none() {
        return Err(steps.redirect(OAuthError::invalid_request(
            "this client must push its authorization requests (RFC 9126) and send only request_uri and client_id here",
        )));
    }
    Ok(())
}

/// PKCE with S256 is required of every client (`plain` is refused).
fn step_pkce(steps: &Steps<'_>) -> Result<String, Failure> {
    let challenge = steps
        .params
        .get("code_challenge")
        .ok_or_else(|| steps.redirect(OAuthError::invalid_request("code_challenge is required (PKCE with S256)")))?;
    match steps.params.get("code_challenge_method") {
        Some("S256") => {}
        Some("plain") => {
            return Err(
                steps.redirect(OAuthError::invalid_request("code_challenge_method plain is not allowed; use S256"))
            );
        }
        Some(_) => {
            return Err(steps.redirect(OAuthError::invalid_request("unsupported code_challenge_method; use S256")));
        }
        None => {
            return Err(
                steps.redirect(OAuthError::invalid_request("code_challenge_method is required and must be S256"))
            );
        }
    }
    let well_formed =
        challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(steps.redirect(OAuthError::invalid_request(
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        )));
    }
    Ok(challenge.to_string())
}

fn step_scope(steps: &Steps<'_>) -> Result<Vec<String>, Failure> {
    let raw = steps.params.get("scope").ok_or_else(|| {
        steps.redirect(OAuthError::new(OAuthErrorCode::InvalidScope, "scope is required and must include openid"))
    })?;
    let mut scopes: Vec<String> = Vec::new();
    for scope in raw.split(' ').filter(|s| !s.is_empty()) {
        let known = SUPPORTED_SCOPES.contains(&scope) || is_admin_scope(scope);
        if !known || !steps.client().scope_allowed(scope) {
            return Err(steps.redirect(OAuthError::new(
                OAuthErrorCode::InvalidScope,
                format!("scope `{}` is not allowed for this client", printable(scope)),
            )));
        }
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        return Err(steps.redirect(OAuthError::new(OAuthErrorCode::InvalidScope, "scope must include openid")));
    }
    if scopes.iter().any(|s| s == "offline_access") && !steps.client().allows_grant("refresh_token") {
        scopes.retain(|s| s != "offline_access");
    }
    Ok(scopes)
}

/// The `claims` parameter: a JSON object; an essential `acr` request becomes a requirement.
fn step_claims(steps: &Steps<'_>) -> Result<(Option<Value>, Vec<String>), Failure> {
    let Some(raw) = steps.params.get("claims") else { return Ok((None, Vec::new())) };
    let value: Value = serde_json::from_str(raw)
        .map_err(|_| steps.redirect(OAuthError::invalid_request("claims is not valid JSON")))?;
    let Some(object) = value.as_object() else {
        return Err(steps.redirect(OAuthError::invalid_request("claims must be a JSON object")));
    };
    for (member, requested) in object {
        if member != "id_token" && member != "userinfo" {
            return Err(steps.redirect(OAuthError::invalid_request("claims may only contain id_token and userinfo")));
        }
        if !requested.is_object() {
            return Err(steps.redirect(OAuthError::invalid_request(format!("claims.{member} must be an object"))));
        }
    }
    let mut essential = Vec::new();
    if let Some(acr) = value.pointer("/id_token/acr").filter(|v| !v.is_null()) {
        let is_essential = acr.get("essential").and_then(Value::as_bool).unwrap_or(false);
        let mut levels: Vec<String> = Vec::new();
        if let Some(v) = acr.get("value").and_then(Value::as_str) {
            levels.push(v.to_string());
        }
        if let Some(vs) = acr.get("values").and_then(Value::as_array) {
            levels.extend(vs.iter().filter_map(Value::as_str).map(str::to_string));
        }
        if is_essential {
            if levels.is_empty() || levels.iter().any(|l| AcrLevel::parse(l).is_none()) {
                return Err(steps.redirect(OAuthError::invalid_request(
                    "an essential acr claim must list supported values (eidas1, eidas2, eidas3)",
                )));
            }
            essential = levels;
        }
    }
    Ok((Some(value), essential))
}

fn step_prompt(steps: &Steps<'_>) -> Result<Vec<Prompt>, Failure> {
    let Some(raw) = steps.params.get("prompt") else { return Ok(Vec::new()) };
    let mut prompts = Vec::new();
    for p in raw.split(' ').filter(|s| !s.is_empty()) {
        let prompt = match p {
            "none" => Prompt::None,
            "login" => Prompt::Login,
            "consent" => Prompt::Consent,
            "select_account" => Prompt::SelectAccount,
            _ => {
                return Err(
                    steps.redirect(OAuthError::invalid_request(format!("unsupported prompt value `{}`", printable(p))))
                );
            }
        };
        prompts.push(prompt);
    }
    if prompts.contains(&Prompt::None) && prompts.len() > 1 {
        return Err(steps.redirect(OAuthError::invalid_request("prompt=none cannot be combined with other values")));
    }
    Ok(prompts)
}

fn step_max_age(steps: &Steps<'_>) -> Result<Option<i64>, Failure> {
    match steps.params.get("max_age") {
        None => Ok(None),
        Some(raw) => raw.parse::<u32>().map(|v| Some(i64::from(v))).map_err(|_| {
            steps.redirect(OAuthError::invalid_request("max_age must be a non-negative number of seconds"))
        }),
    }
}

fn step_acr_values(steps: &Steps<'_>) -> Result<Vec<String>, Failure> {
    let values: Vec<String> = steps
        .params
        .get("acr_values")
        .map(|v| v.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if values.len() > 8 {
        return Err(steps.redirect(OAuthError::invalid_request("too many acr_values")));
    }
    Ok(values)
}

/// An `id_token_hint` must be an ID token Habilis issued (expired ones are fine, OIDC Core §3.1.2.1).
fn step_id_token_hint(steps: &Steps<'_>) -> Result<Option<String>, Failure> {
    let Some(hint) = steps.params.get("id_token_hint") else { return Ok(None) };
    let claims = steps
        .state
        .keys
        .verify(hint)
        .map_err(|_| steps.redirect(OAuthError::invalid_request("id_token_hint is not an ID token issued here")))?;
    let issuer_ok = claims.get("iss").and_then(Value::as_str) == Some(steps.state.issuer_string().as_str());
    let audience_ok = audience_contains(claims.get("aud"), steps.client().client_id());
    if !issuer_ok || !audience_ok {
        return Err(steps.redirect(OAuthError::invalid_request("id_token_hint was not issued to this client")));
    }
    let _ = steps.now;
    Ok(claims.get("sub").and_then(Value::as_str).map(str::to_string))
}

/// RFC 8707 resource indicators: absolute URIs without fragment.
fn step_resource(steps: &Steps<'_>) -> Result<Vec<String>, Failure> {
    let Some(raw) = steps.params.get("resource") else { return Ok(Vec::new()) };
    match url::Url::parse(raw) {
        Ok(url) if url.fragment().is_none() => Ok(vec![raw.to_string()]),
        _ => Err(steps.redirect(OAuthError::new(
            OAuthErrorCode::InvalidTarget,
            "resource must be an absolute URI without fragment",
        ))),
    }
}

/// RFC 9396: `patient_access` details, well formed, and grantable by at least one profile of this
/// client; the weakest login those profiles need becomes a requirement of the journey (step-up).
fn step_authorization_details(steps: &Steps<'_>) -> Result<(Vec<PatientAccess>, Option<AcrLevel>), Failure> {
    let Some(raw) = steps.params.get("authorization_details") else { return Ok((Vec::new(), None)) };
    let habilitations = &steps.state.habilitations;
    let details = crate::habilitation::rar::parse(raw, habilitations.production).map_err(|e| steps.redirect(e))?;
    let mut required: Option<AcrLevel> = None;
    for (i, detail) in details.iter().enumerate() {
        match habilitations.required_acr(steps.client().client_id(), detail) {
            Ok(level) => required = required.max(level),
            Err(_) => {
                return Err(steps.redirect(OAuthError::new(
                    OAuthErrorCode::AccessDenied,
                    format!(
                        "authorization_details[{i}]: no habilitation profile of this application grants {}",
                        detail.actions.join(", ")
                    ),
                )));
            }
        }
    }
    Ok((details, required))
}

fn bounded(steps: &Steps<'_>, name: &str, max: usize) -> Result<Option<String>, Failure> {
    match steps.params.get(name) {
        Some(v) if v.len() > max => {
            Err(steps.redirect(OAuthError::invalid_request(format!("{name} is too long (at most {max} bytes)"))))
        }
        other => Ok(other.map(str::to_string)),
    }
}

pub fn audience_contains(aud: Option<&Value>, client_id: &str) -> bool {
    match aud {
        Some(Value::String(s)) => s == client_id,
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(client_id)),
        _ => false,
    }
}

fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic()).take(40).collect()
}

// ---------------------------------------------------------------------------------------------
// The endpoint

/// `GET /authorize`: parameters in the query string.
pub async fn authorize_get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let raw = uri.query().unwrap_or("").as_bytes().to_vec();
    authorize(state, peer, headers, &raw).await
}

/// `POST /authorize`: parameters in a form body (OIDC Core §3.1.2.1).
pub async fn authorize_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !crate::web::is_form(&headers) {
        return crate::web::pages_error(
            &state,
            &headers,
            None,
            OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"),
        );
    }
    authorize(state, peer, headers, &body).await
}

async fn authorize(state: AppState, peer: SocketAddr, headers: HeaderMap, raw: &[u8]) -> Response {
    let now = crate::unix_now();
    let params = match Params::parse(raw) {
        Ok(p) => p,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let request = match params.get("request_uri") {
        Some(request_uri) => match resolve_pushed_request(&state, &params, request_uri).await {
            Ok(request) => request,
            Err(failure) => return respond_failure(&state, &headers, failure),
        },
        None => match validate(&state, &params, None, now).await {
            Ok(request) => request,
            Err(failure) => return respond_failure(&state, &headers, failure),
        },
    };
    // A valid request stores a login page for whoever sent it: anonymous state, bounded per
    // address, per client and in total (`oidc::admission`). A browser with a session is not
    // anonymous: its logins carry on whatever anonymous senders do.
    // The session is loaded once, here, and handed on.
    let session = match state.sessions.current(&state, &headers, now).await {
        Ok(s) => s,
        Err(e) => return redirect_error(&state, &request, e),
    };
    let work = crate::oidc::admission::Work::Interaction;
    if session.is_none()
        && let Err(e) = crate::oidc::admission::admit(&state, work, Some(peer.ip()), Some(&request.client_id)).await
    {
        return crate::web::pages_error(&state, &headers, None, e);
    }
    let interaction = Interaction::new(request, now);
    continue_with_session(&state, &headers, interaction, session, now).await
}

/// RFC 9126 §4: `request_uri` from PAR, single use, bound to the client that pushed it.
async fn resolve_pushed_request(
    state: &AppState,
    params: &Params,
    request_uri: &str,
) -> Result<AuthorizationRequest, Failure> {
    let client_id = params
        .get("client_id")
        .ok_or_else(|| Failure::Page(OAuthError::invalid_request("missing parameter `client_id`")))?;
    let id =
        request_uri.strip_prefix(PAR_URN_PREFIX).filter(|id| !id.is_empty() && id.len() <= 64).ok_or_else(|| {
            Failure::Page(OAuthError::new(
                OAuthErrorCode::InvalidRequestUri,
                "request_uri was not issued by this server",
            ))
        })?;
    let stored =
        state.ephemeral.take(&format!("par:{id}")).await.map_err(|e| Failure::Page(e.into()))?.ok_or_else(|| {
            Failure::Page(OAuthError::new(
                OAuthErrorCode::InvalidRequestUri,
                "request_uri is unknown, expired or already used; push the request again",
            ))
        })?;
    let request: AuthorizationRequest = serde_json::from_slice(&stored)
        .map_err(|_| Failure::Page(OAuthError::new(OAuthErrorCode::InvalidRequestUri, "request_uri is unreadable")))?;
    if request.client_id != client_id {
        return Err(Failure::Page(OAuthError::new(
            OAuthErrorCode::InvalidRequestUri,
            "request_uri was pushed by another client",
        )));
    }
    Ok(request)
}

/// Where an interaction stands: what the session lacks decides the next page.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Login(LoginReason),
    Consent,
    Issue,
}

/// The named reasons to (re)authenticate (cf. node-oidc-provider's interaction policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginReason {
    NoSession,
    PromptLogin,
    MaxAgeExceeded,
    AccountMismatch,
    AcrUnmet,
}

impl LoginReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginReason::NoSession => "no_session",
            LoginReason::PromptLogin => "prompt_login",
            LoginReason::MaxAgeExceeded => "max_age",
            LoginReason::AccountMismatch => "account_mismatch",
            LoginReason::AcrUnmet => "acr_unmet",
        }
    }
}

/// The acr levels any of which satisfies the request: essential `acr` claim values, else the
/// client's minimum. `acr_values` alone is a preference, not a requirement (OIDC Core §3.1.2.1).
pub fn required_acr(request: &AuthorizationRequest, client: &Client, floor: Option<AcrLevel>) -> Option<AcrLevel> {
    let essential = request.essential_acr.iter().filter_map(|l| AcrLevel::parse(l)).min();
    // Apps built for Pro Santé Connect send `acr_values` expecting it to be honoured: any of the
    // listed ladder levels satisfies the request, so the lowest of them is required.
    let asked = request.acr_values.iter().filter_map(|l| AcrLevel::parse(l)).min();
    let habilitation = request.details_acr.as_deref().and_then(AcrLevel::parse);
    let admin = request.admin_acr.as_deref().and_then(AcrLevel::parse);
    [essential, asked, client.minimum_acr(), floor, habilitation, admin].into_iter().flatten().max()
}

/// The admin scopes an account may hold: `admin` for platform and organisation administrators,
/// `audit` for platform administrators and auditors (the powers `crate::admin::actor` gives such
/// tokens). None for an inactive or unknown account, or when the roles cannot be read.
pub async fn admin_scopes_of(state: &AppState, account_id: &str) -> Vec<&'static str> {
    use crate::store::{AccountKind, AccountStatus, AdminRole};
    let account = match state.store.account_by_id(account_id).await {
        Ok(Some(a)) if a.status == AccountStatus::Active => a,
        Ok(_) => return Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the account: admin scopes withheld");
            return Vec::new();
        }
    };
    let grants = match state.store.admin().roles_of(&account.id).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the administration roles: admin scopes withheld");
            return Vec::new();
        }
    };
    let has = |role: AdminRole| grants.iter().any(|g| g.role == role);
    let platform = account.kind == AccountKind::Administrator || has(AdminRole::PlatformAdmin);
    let mut scopes = Vec::new();
    if platform || has(AdminRole::OrgAdmin) {
        scopes.push(crate::admin::ADMIN_SCOPE);
    }
    if platform || has(AdminRole::Auditor) {
        scopes.push(crate::admin::AUDIT_SCOPE);
    }
    scopes
}

/// Once the account is known (a session, or a password just checked): drops the admin scopes it
/// holds no role for — a patient or a professional without role asking for `admin` gets a token
/// without it — and with them the stronger login they would need.
pub async fn narrow_admin_scopes(state: &AppState, request: &mut AuthorizationRequest, account_id: &str) {
    if !request.scope.iter().any(|s| is_admin_scope(s)) {
        return;
    }
    let held = admin_scopes_of(state, account_id).await;
    let before = request.scope.len();
    request.scope.retain(|s| !is_admin_scope(s) || held.contains(&s.as_str()));
    if request.scope.len() != before {
        tracing::info!(account = %account_id, client_id = %request.client_id, "admin scopes dropped: no such role");
    }
    if !request.scope.iter().any(|s| is_admin_scope(s)) {
        request.admin_acr = None;
    }
}

/// The acr a session's factors reach (None: below the ladder, e.g. password only).
pub fn session_acr(session: &Session) -> Option<AcrLevel> {
    crate::authn::journey::level_of(&session.amr())
}

pub fn decide(
    request: &AuthorizationRequest,
    client: &Client,
    levels: &Levels,
    session: Option<&Session>,
    interaction: &Interaction,
    now: i64,
) -> Result<Decision, OAuthError> {
    let floor = levels.floor;
    // A level no login method can reach fails at once, before any page is shown.
    if let Some(required) = required_acr(request, client, floor)
        && !levels.achievable(required)
    {
        return Err(OAuthError::new(
            OAuthErrorCode::UnmetAuthenticationRequirements,
            format!("this service requires {} and no such login method is available yet", required.as_str()),
        ));
    }
    let Some(session) = session else { return Ok(Decision::Login(LoginReason::NoSession)) };
    let logged_in_here = interaction.login_at.is_some_and(|t| t >= interaction.created_at);
    if request.has_prompt(Prompt::Login) && !logged_in_here {
        return Ok(Decision::Login(LoginReason::PromptLogin));
    }
    if let Some(max_age) = request.max_age
        && now - session.auth_time > max_age
        && !logged_in_here
    {
        return Ok(Decision::Login(LoginReason::MaxAgeExceeded));
    }
    if let Some(expected) = &request.expected_subject
        && expected != &crate::oidc::claims::subject_for(client, &session.account_id)
    {
        return Ok(Decision::Login(LoginReason::AccountMismatch));
    }
    if let Some(required) = required_acr(request, client, floor) {
        let reached = session_acr(session);
        if reached.is_none_or(|r| r < required) {
            if !levels.achievable(required) {
                return Err(OAuthError::new(
                    OAuthErrorCode::UnmetAuthenticationRequirements,
                    format!("this service requires {} and no such login method is available yet", required.as_str()),
                ));
            }
            if logged_in_here {
                return Err(OAuthError::new(
                    OAuthErrorCode::UnmetAuthenticationRequirements,
                    format!("the login did not reach the required level {}", required.as_str()),
                ));
            }
            return Ok(Decision::Login(LoginReason::AcrUnmet));
        }
    }
    if !client.first_party() && (request.has_prompt(Prompt::Consent) || !interaction.consent_given) {
        return Ok(Decision::Consent);
    }
    Ok(Decision::Issue)
}

/// Runs the interaction one step further: a login page, a consent page, or the code.
pub async fn continue_interaction(
    state: &AppState,
    headers: &HeaderMap,
    interaction: Interaction,
    now: i64,
) -> Response {
    let session = match state.sessions.current(state, headers, now).await {
        Ok(s) => s,
        Err(e) => return redirect_error(state, &interaction.request, e),
    };
    continue_with_session(state, headers, interaction, session, now).await
}

/// [`continue_interaction`] with the request's session already loaded (`/authorize` loads it
/// first, to tell a signed-in browser from an anonymous one).
async fn continue_with_session(
    state: &AppState,
    headers: &HeaderMap,
    mut interaction: Interaction,
    session: Option<Session>,
    now: i64,
) -> Response {
    let request = interaction.request.clone();
    let client = match state.clients.get(&request.client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return crate::web::pages_error(
                state,
                headers,
                None,
                OAuthError::new(OAuthErrorCode::InvalidClient, "the application was removed"),
            );
        }
        Err(e) => return crate::web::pages_error(state, headers, None, e.into()),
    };
    if let Some(s) = &session {
        narrow_admin_scopes(state, &mut interaction.request, &s.account_id).await;
    }
    let request = interaction.request.clone();
    if !interaction.consent_given && !client.first_party() {
        interaction.consent_given = match &session {
            Some(s) => {
                crate::oidc::consent::covers(state, &s.account_id, &client, &request.scope).await.unwrap_or(false)
            }
            None => false,
        };
    }
    let decision =
        match decide(&request, &client, &crate::authn::journey::levels(state), session.as_ref(), &interaction, now) {
            Ok(d) => d,
            Err(e) => return redirect_error(state, &request, e),
        };
    match decision {
        Decision::Login(reason) => {
            if request.has_prompt(Prompt::None) {
                let error = match reason {
                    LoginReason::AcrUnmet => {
                        OAuthError::new(OAuthErrorCode::InteractionRequired, "a stronger login is required")
                    }
                    _ => OAuthError::new(OAuthErrorCode::LoginRequired, "the user is not logged in (prompt=none)"),
                };
                return redirect_error(state, &request, error);
            }
            tracing::debug!(reason = reason.as_str(), client_id = %request.client_id, "login required");
            interaction::redirect_to(state, &interaction, "/login", now).await
        }
        Decision::Consent => {
            if request.has_prompt(Prompt::None) {
                return redirect_error(
                    state,
                    &request,
                    OAuthError::new(OAuthErrorCode::ConsentRequired, "consent is required (prompt=none)"),
                );
            }
            interaction::redirect_to(state, &interaction, "/consent", now).await
        }
        Decision::Issue => {
            let Some(mut session) = session else { return redirect_error(state, &request, OAuthError::server_error()) };
            let acr = session_acr(&session).map(|l| l.as_str().to_string());
            let details = match grant_details(state, &request, &client, &session.account_id, acr.as_deref(), now).await
            {
                Ok(details) => details,
                Err(DetailsRefusal::Denied(e)) => return redirect_error(state, &request, e),
                Err(DetailsRefusal::StepUp(level)) => {
                    return step_up_for_details(state, interaction, level, now).await;
                }
            };
            match issue_code(state, &request, &client, &mut session, details, now).await {
                Ok(code) => {
                    let _ = interaction::finish(state, &interaction).await;
                    respond(
                        state,
                        &request.redirect_uri,
                        request.response_mode,
                        headers,
                        vec![("code", code), ("state", request.state.clone().unwrap_or_default())],
                    )
                }
                Err(e) => redirect_error(state, &request, e),
            }
        }
    }
}

/// `GET /authorize/resume?interaction=…`: where the login and consent pages send the browser back.
pub async fn resume(State(state): State<AppState>, headers: HeaderMap, Query(query): Query<ResumeQuery>) -> Response {
    let now = crate::unix_now();
    match interaction::load_bound(&state, &headers, &query.interaction).await {
        Ok(interaction) => continue_interaction(&state, &headers, interaction, now).await,
        Err(e) => crate::web::pages_error(&state, &headers, None, e),
    }
}

#[derive(Deserialize)]
pub struct ResumeQuery {
    interaction: String,
}

/// What an authorization code stands for, kept in the ephemeral store under the code's hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub account_id: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth: AuthContext,
    pub claims: Option<Value>,
    pub resource: Vec<String>,
    /// The `patient_access` details granted at the authorization (re-checked at every issuance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_details: Vec<GrantedAccess>,
    pub issued_at: i64,
    /// The grant created at issuance; redeeming twice revokes it.
    pub grant_id: String,
}

pub fn code_key(code: &str) -> String {
    format!("code:{}", crate::cli::sha256_hex(code))
}

pub fn code_used_key(code: &str) -> String {
    format!("code-used:{}", crate::cli::sha256_hex(code))
}

async fn issue_code(
    state: &AppState,
    request: &AuthorizationRequest,
    client: &Client,
    session: &mut Session,
    authorization_details: Vec<GrantedAccess>,
    now: i64,
) -> Result<String, OAuthError> {
    let acr = session_acr(session).map(|l| l.as_str().to_string());
    let code = crate::cli::random_token();
    let amr = session.amr();
    let record = CodeRecord {
        client_id: client.client_id().to_string(),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        account_id: session.account_id.clone(),
        scope: request.scope_string(),
        nonce: request.nonce.clone(),
        auth: AuthContext { auth_time: session.auth_time, acr, amr, sid: Some(session.sid.clone()) },
        claims: request.claims.clone(),
        resource: request.resource.clone(),
        authorization_details,
        issued_at: now,
        grant_id: uuid::Uuid::new_v4().to_string(),
    };
    let bytes = serde_json::to_vec(&record).map_err(|_| OAuthError::server_error())?;
    state.ephemeral.put(&code_key(&code), &bytes, state.config.tokens.authorization_code_lifetime).await?;
    session.add_client(client.client_id());
    session::save(state.ephemeral.as_ref(), &state.sessions.settings, session).await?;
    Ok(code)
}

/// Why the requested details give no code (yet).
enum DetailsRefusal {
    /// A profile would grant them after a stronger login.
    StepUp(AcrLevel),
    Denied(OAuthError),
}

/// Evaluates the requested `patient_access` details for the logged-in user: the granted ones
/// (possibly narrowed) go into the code. When none is granted the request is denied, saying why,
/// unless a stronger login would grant one: then the journey asks for it (step-up).
async fn grant_details(
    state: &AppState,
    request: &AuthorizationRequest,
    client: &Client,
    account_id: &str,
    acr: Option<&str>,
    now: i64,
) -> Result<Vec<GrantedAccess>, DetailsRefusal> {
    if request.authorization_details.is_empty() {
        return Ok(Vec::new());
    }
    let account = match state.store.account_by_id(account_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Err(DetailsRefusal::Denied(OAuthError::new(
                OAuthErrorCode::AccessDenied,
                "the account no longer exists",
            )));
        }
        Err(e) => return Err(DetailsRefusal::Denied(e.into())),
    };
    let mut granted = Vec::new();
    let mut denials = Vec::new();
    let mut step_up: Option<AcrLevel> = None;
    let outcomes = state
        .habilitations
        .evaluate_all(
            &state.store,
            &request.authorization_details,
            crate::habilitation::service::Professional::Account(&account),
            client.client_id(),
            acr,
            now,
        )
        .await;
    for (i, (detail, outcome)) in request.authorization_details.iter().zip(outcomes).enumerate() {
        crate::habilitation::audit_decision(state, &account.id, client.client_id(), detail, &outcome);
        match outcome {
            Ok(g) => granted.push(g),
            Err(crate::habilitation::service::Denial::InsufficientAcr(level)) => {
                step_up = step_up.max(Some(level));
                denials.push(format!("authorization_details[{i}]: a login at {} is required", level.as_str()));
            }
            Err(denial) => denials.push(format!("authorization_details[{i}]: {}", denial.describe())),
        }
    }
    if !granted.is_empty() {
        return Ok(granted);
    }
    match step_up {
        Some(level) => Err(DetailsRefusal::StepUp(level)),
        None => Err(DetailsRefusal::Denied(OAuthError::new(OAuthErrorCode::AccessDenied, denials.join("; ")))),
    }
}

/// Raises the interaction's requirement to `level` and sends the user to the login journey; a
/// level no login method reaches, or one this interaction already failed to reach, fails clearly.
async fn step_up_for_details(state: &AppState, mut interaction: Interaction, level: AcrLevel, now: i64) -> Response {
    let request = interaction.request.clone();
    let already = request.details_acr.as_deref().and_then(AcrLevel::parse).is_some_and(|l| l >= level);
    if already || !crate::authn::journey::levels(state).achievable(level) || request.has_prompt(Prompt::None) {
        let code = if request.has_prompt(Prompt::None) {
            OAuthErrorCode::InteractionRequired
        } else {
            OAuthErrorCode::UnmetAuthenticationRequirements
        };
        return redirect_error(
            state,
            &request,
            OAuthError::new(
                code,
                format!("the patient access asked for requires a login at {} and it was not reached", level.as_str()),
            ),
        );
    }
    interaction.request.details_acr = Some(level.as_str().to_string());
    interaction::redirect_to(state, &interaction, "/login", now).await
}

fn redirect_error(state: &AppState, request: &AuthorizationRequest, error: OAuthError) -> Response {
    let mut fields =
        vec![("error", error.code.as_str().to_string()), ("error_description", error.description.to_string())];
    if let Some(s) = &request.state {
        fields.push(("state", s.clone()));
    }
    respond(state, &request.redirect_uri, request.response_mode, &HeaderMap::new(), fields)
}

pub fn respond_failure(state: &AppState, headers: &HeaderMap, failure: Failure) -> Response {
    match failure {
        Failure::Page(error) => crate::web::pages_error(state, headers, None, error),
        Failure::Redirect { error, redirect_uri, state: client_state, mode } => {
            let mut fields =
                vec![("error", error.code.as_str().to_string()), ("error_description", error.description.to_string())];
            if let Some(s) = client_state {
                fields.push(("state", s));
            }
            respond(state, &redirect_uri, mode, headers, fields)
        }
    }
}

/// Sends the response parameters (plus RFC 9207 `iss`) to the client, by redirect or form post.
pub fn respond(
    state: &AppState,
    redirect_uri: &str,
    mode: ResponseMode,
    headers: &HeaderMap,
    mut fields: Vec<(&'static str, String)>,
) -> Response {
    fields.retain(|(_, v)| !v.is_empty());
    fields.push(("iss", state.issuer_string()));
    match mode {
        ResponseMode::Query => {
            let mut url = match url::Url::parse(redirect_uri) {
                Ok(u) => u,
                Err(_) => return crate::web::pages_error(state, headers, None, OAuthError::server_error()),
            };
            {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in &fields {
                    pairs.append_pair(k, v);
                }
            }
            let mut response = Redirect::to(url.as_str()).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        ResponseMode::FormPost => {
            let nonce = crate::cli::random_token();
            let lang = Lang::negotiate(None, headers);
            let origin = url::Url::parse(redirect_uri).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
            let csp = format!(
                "default-src 'none'; script-src 'nonce-{nonce}'; form-action {origin}; frame-ancestors 'none'; base-uri 'none'"
            );
            match state.pages.render(
                "form_post.html",
                lang,
                minijinja::context! { action => redirect_uri, fields => fields, nonce => nonce },
            ) {
                Ok(html) => crate::web::pages::with_page_headers(
                    (StatusCode::OK, axum::response::Html(html)).into_response(),
                    &csp,
                ),
                Err(_) => crate::web::pages_error(state, headers, None, OAuthError::server_error()),
            }
        }
    }
}

/// The S256 PKCE check (RFC 7636 §4.6), constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let valid_verifier = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !valid_verifier {
        return false;
    }
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

#[allow(dead_code)]
fn is_native(client: &Client) -> bool {
    client.application_type() == ApplicationType::Native
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_rfc7636_example() {
        // RFC 7636 Appendix B.
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches("short", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }
}

#[cfg(test)]
mod step_tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    async fn state_with_client(extra: &str) -> (AppState, tempfile::TempDir) {
        let (state, dir) = crate::app::test_state().await;
        let metadata = format!(
            r#"{{"redirect_uris":["https://app.example/cb","http://127.0.0.1/native"],"grant_types":["authorization_code","refresh_token"],
               "scope":"openid profile email offline_access","token_endpoint_auth_method":"none"{extra}}}"#
        );
        state.clients.register(&metadata, Some("app"), None).await.expect("register");
        (state, dir)
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut p = Params::default();
        let base = [
            ("client_id", "app"),
            ("redirect_uri", "https://app.example/cb"),
            ("response_type", "code"),
            ("scope", "openid profile"),
            ("state", "st"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in base {
            p.insert(k, v.to_string());
        }
        for (k, v) in pairs {
            if v.is_empty() {
                p.remove(k);
            } else {
                p.insert(k, v.to_string());
            }
        }
        p
    }

    fn code_of(failure: Failure) -> (bool, &'static str) {
        match failure {
            Failure::Page(e) => (false, e.code.as_str()),
            Failure::Redirect { error, .. } => (true, error.code.as_str()),
        }
    }

    #[tokio::test]
    async fn a_good_request_validates() {
        let (state, _dir) = state_with_client("").await;
        let request = validate(&state, &params(&[("nonce", "n"), ("max_age", "60")]), None, 0).await.unwrap();
        assert_eq!(request.scope, vec!["openid", "profile"]);
        assert_eq!(request.max_age, Some(60));
        assert_eq!(request.response_mode, ResponseMode::Query);
    }

    #[tokio::test]
    async fn client_and_redirect_uri_errors_are_pages() {
        let (state, _dir) = state_with_client("").await;
        for (pairs, expected) in [
            (vec![("client_id", "nobody")], "invalid_client"),
            (vec![("client_id", "")], "invalid_request"),
            (vec![("redirect_uri", "https://app.example/cb/")], "invalid_request"),
            (vec![("redirect_uri", "https://app.example/cb?x=1")], "invalid_request"),
            (vec![("redirect_uri", "https://evil.example/cb")], "invalid_request"),
            (vec![("redirect_uri", "")], "invalid_request"),
        ] {
            let failure = validate(&state, &params(&pairs), None, 0).await.unwrap_err();
            assert_eq!(code_of(failure), (false, expected), "{pairs:?}");
        }
    }

    #[tokio::test]
    async fn native_loopback_redirect_may_change_port() {
        let (state, _dir) = state_with_client(r#","application_type":"native""#).await;
        let ok = validate(&state, &params(&[("redirect_uri", "http://127.0.0.1:53123/native")]), None, 0).await;
        assert!(ok.is_ok());
    }

    #[tokio::test]
    async fn later_errors_are_redirected_with_their_codes() {
        let (state, _dir) = state_with_client("").await;
        for (pairs, expected) in [
            (vec![("response_type", "token")], "unsupported_response_type"),
            (vec![("response_type", "")], "invalid_request"),
            (vec![("code_challenge", "")], "invalid_request"),
            (vec![("code_challenge_method", "plain")], "invalid_request"),
            (vec![("code_challenge_method", "")], "invalid_request"),
            (vec![("code_challenge", "short")], "invalid_request"),
            (vec![("scope", "profile")], "invalid_scope"),
            (vec![("scope", "openid admin")], "invalid_scope"),
            (vec![("claims", "{not json")], "invalid_request"),
            (vec![("claims", r#"{"id_token":{"acr":{"essential":true,"values":["gold"]}}}"#)], "invalid_request"),
            (vec![("prompt", "none login")], "invalid_request"),
            (vec![("prompt", "sometimes")], "invalid_request"),
            (vec![("max_age", "-1")], "invalid_request"),
            (vec![("id_token_hint", "not.a.token")], "invalid_request"),
            (vec![("request", "eyJ")], "request_not_supported"),
            (vec![("response_mode", "fragment")], "invalid_request"),
            (vec![("resource", "not a uri")], "invalid_target"),
        ] {
            let failure = validate(&state, &params(&pairs), None, 0).await.unwrap_err();
            assert_eq!(code_of(failure), (true, expected), "{pairs:?}");
        }
    }

    #[tokio::test]
    async fn admin_scopes_need_registration_a_role_and_a_stronger_login() {
        use crate::store::{Account, AccountKind, AccountStatus};
        let (state, _dir) = crate::app::test_state().await;
        let metadata = r#"{"redirect_uris":["https://app.example/cb"],"scope":"openid profile admin audit",
                           "token_endpoint_auth_method":"none"}"#;
        state.clients.register(metadata, Some("app"), None).await.expect("register");
        let client = state.clients.get("app").await.unwrap().unwrap();
        let plain = validate(&state, &params(&[]), None, 0).await.unwrap();
        assert_eq!((plain.admin_acr.as_deref(), required_acr(&plain, &client, None)), (None, None));
        let mut asked = validate(&state, &params(&[("scope", "openid admin audit")]), None, 0).await.unwrap();
        assert_eq!(asked.admin_acr.as_deref(), Some("eidas2"), "admin.minimum_acr by default");
        assert_eq!(required_acr(&asked, &client, Some(AcrLevel::Eidas1)), Some(AcrLevel::Eidas2));
        // Not advertised: discovery and dynamic registration know nothing of them.
        assert!(!SUPPORTED_SCOPES.iter().any(|s| is_admin_scope(s)));

        let account = |id: &str, kind| Account {
            id: id.into(),
            kind,
            login: id.into(),
            id_nat: None,
            email: None,
            given_name: None,
            family_name: None,
            status: AccountStatus::Active,
            locale: None,
            created_at: 0,
            updated_at: 0,
            last_authenticated_at: None,
        };
        state.store.insert_account(&account("admin-1", AccountKind::Administrator)).await.unwrap();
        state.store.insert_account(&account("patient-1", AccountKind::Patient)).await.unwrap();
        let mut kept = asked.clone();
        narrow_admin_scopes(&state, &mut kept, "admin-1").await;
        assert_eq!(kept.scope, vec!["openid", "admin", "audit"]);
        assert_eq!(kept.admin_acr.as_deref(), Some("eidas2"));
        narrow_admin_scopes(&state, &mut asked, "patient-1").await;
        assert_eq!(asked.scope, vec!["openid"], "a patient holds no administration role");
        assert_eq!((asked.admin_acr.clone(), required_acr(&asked, &client, None)), (None, None), "and no step-up");
        let mut unknown = validate(&state, &params(&[("scope", "openid admin")]), None, 0).await.unwrap();
        narrow_admin_scopes(&state, &mut unknown, "nobody").await;
        assert_eq!(unknown.scope, vec!["openid"]);
    }

    #[tokio::test]
    async fn par_only_clients_must_push() {
        let (state, _dir) = state_with_client(r#","require_pushed_authorization_requests":true"#).await;
        let failure = validate(&state, &params(&[]), None, 0).await.unwrap_err();
        assert_eq!(code_of(failure), (true, "invalid_request"));
    }

    #[tokio::test]
    async fn a_login_page_is_unanswered_until_someone_acts_on_it() {
        let (state, _dir) = state_with_client("").await;
        let request = validate(&state, &params(&[]), None, 0).await.unwrap();
        let fresh = Interaction::new(request, 100);
        assert!(fresh.unanswered(), "kept only session.unanswered_interaction_lifetime");
        let mut failed = fresh.clone();
        failed.failures = 1;
        let mut identified = fresh.clone();
        identified.account_id = Some("a".into());
        let mut factor = fresh.clone();
        factor.complete_factor("pwd", 101);
        for answered in [failed, identified, factor] {
            assert!(!answered.unanswered(), "{answered:?}");
        }
    }

    #[tokio::test]
    async fn essential_acr_becomes_a_requirement_that_fails_clearly() {
        let (state, _dir) = state_with_client("").await;
        let claims = r#"{"id_token":{"acr":{"essential":true,"values":["eidas2"]}}}"#;
        let request = validate(&state, &params(&[("claims", claims)]), None, 0).await.unwrap();
        assert_eq!(request.essential_acr, vec!["eidas2"]);
        let client = state.clients.get("app").await.unwrap().unwrap();
        assert_eq!(required_acr(&request, &client, None), Some(AcrLevel::Eidas2));
        assert_eq!(required_acr(&request, &client, Some(AcrLevel::Eidas3)), Some(AcrLevel::Eidas3));
        let session = Session {
            id: "s".into(),
            sid: "p".into(),
            account_id: "a".into(),
            auth_time: 0,
            factors: vec![crate::authn::session::FactorRecord { method: "pwd".into(), at: 0 }],
            created_at: 0,
            last_seen: 0,
            clients: vec![],
        };
        let interaction = Interaction::new(request.clone(), 0);
        let err = decide(&request, &client, &Levels::PASSWORD_AND_CODE, Some(&session), &interaction, 0).unwrap_err();
        assert_eq!(err.code.as_str(), "unmet_authentication_requirements");
    }

    #[tokio::test]
    async fn decisions_name_their_reason() {
        let (state, _dir) = state_with_client(r#","first_party":true"#).await;
        let client = state.clients.get("app").await.unwrap().unwrap();
        let session = Session {
            id: "s".into(),
            sid: "p".into(),
            account_id: "a".into(),
            auth_time: 100,
            factors: vec![],
            created_at: 100,
            last_seen: 100,
            clients: vec![],
        };
        let plain = validate(&state, &params(&[]), None, 0).await.unwrap();
        let interaction = Interaction::new(plain.clone(), 200);
        assert_eq!(
            decide(&plain, &client, &Levels::PASSWORD_AND_CODE, None, &interaction, 200).unwrap(),
            Decision::Login(LoginReason::NoSession)
        );
        assert_eq!(
            decide(&plain, &client, &Levels::PASSWORD_AND_CODE, Some(&session), &interaction, 200).unwrap(),
            Decision::Issue
        );
        let login = validate(&state, &params(&[("prompt", "login")]), None, 0).await.unwrap();
        assert_eq!(
            decide(&login, &client, &Levels::PASSWORD_AND_CODE, Some(&session), &interaction, 200).unwrap(),
            Decision::Login(LoginReason::PromptLogin)
        );
        let mut done = interaction.clone();
        done.login_at = Some(200);
        assert_eq!(
            decide(&login, &client, &Levels::PASSWORD_AND_CODE, Some(&session), &done, 200).unwrap(),
            Decision::Issue
        );
        let max_age = validate(&state, &params(&[("max_age", "0")]), None, 0).await.unwrap();
        assert_eq!(
            decide(&max_age, &client, &Levels::PASSWORD_AND_CODE, Some(&session), &interaction, 200).unwrap(),
            Decision::Login(LoginReason::MaxAgeExceeded)
        );
        let mut other = max_age.clone();
        other.max_age = None;
        other.expected_subject = Some("someone-else".into());
        assert_eq!(
            decide(&other, &client, &Levels::PASSWORD_AND_CODE, Some(&session), &interaction, 200).unwrap(),
            Decision::Login(LoginReason::AccountMismatch)
        );
    }
}

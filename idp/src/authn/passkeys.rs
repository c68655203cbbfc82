//! WebAuthn security keys and passkeys (webauthn-rs). Every credential is registered and used
//! with user verification (PIN or biometrics on the authenticator), so a key alone is two factors
//! (`hwk`/`swk` + `user`, RFC 8176) and reaches `eidas2`, phishing-resistant by construction: the
//! browser binds each assertion to the relying party id and origin, both derived from the issuer.
//!
//! Ceremony state lives in the ephemeral store between the two requests of a ceremony (any
//! instance can finish what another started) and is taken atomically: a challenge is single use.
//! Routes: registration by a logged-in user after a recent login (`/account/passkeys…`), and
//! authentication within a login interaction (`/webauthn/authenticate/…`): passwordless
//! (identifier-first or discoverable) or after the password.

use std::time::Duration;

use axum::Json;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, AttestedPasskeyRegistration, AuthenticationResult, CredentialID,
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::authn::session::Session;
use crate::oidc::interaction;
use crate::store::{AccountStatus, WebauthnCredential};

/// How long a ceremony may take (the browser's own timeout is shorter).
pub const CEREMONY_LIFETIME: Duration = Duration::from_secs(300);
/// Registration needs a login at most this old (a stolen idle session cannot add a key).
pub const RECENT_LOGIN_SECS: i64 = 600;
const MAX_KEYS_PER_ACCOUNT: usize = 10;
const MAX_NAME_CHARS: usize = 60;

/// Whether WebAuthn can run with this issuer (its host is a domain name).
pub fn available(config: &crate::config::Config) -> bool {
    matches!(config.issuer().host(), Some(url::Host::Domain(_)))
}

/// The relying party, derived from the issuer. `None` when the issuer's host is an IP address:
/// WebAuthn relying-party ids are domain names (use `localhost` on a workstation).
pub fn relying_party(config: &crate::config::Config) -> Result<Option<Webauthn>, String> {
    let issuer = config.issuer();
    let Some(url::Host::Domain(host)) = issuer.host() else {
        tracing::warn!(issuer = %issuer, "security keys and passkeys are off: WebAuthn needs a domain name in the issuer (e.g. http://localhost:8080)");
        return Ok(None);
    };
    let origin = Url::parse(issuer.origin().ascii_serialization().as_str()).map_err(|e| e.to_string())?;
    WebauthnBuilder::new(host, &origin)
        .and_then(|b| b.rp_name("Habilis").timeout(Duration::from_secs(120)).build())
        .map(Some)
        .map_err(|e| format!("WebAuthn relying party {host}: {e}"))
}

/// The authenticator models allowed when `webauthn.attestation = "required"` (`None`: any).
pub fn attestation_policy(config: &crate::config::Config) -> Result<Option<AttestationCaList>, String> {
    if config.webauthn.attestation == crate::config::AttestationMode::None {
        return Ok(None);
    }
    let mut builder = AttestationCaListBuilder::new();
    for (i, allowed) in config.webauthn.allowed_authenticators.iter().enumerate() {
        let key = format!("webauthn.allowed_authenticators[{i}]");
        let bytes = std::fs::read(&allowed.ca).map_err(|e| format!("{key}.ca {}: {e}", allowed.ca.display()))?;
        let aaguid = Uuid::parse_str(&allowed.aaguid).map_err(|e| format!("{key}.aaguid: {e}"))?;
        let description = allowed.description.clone();
        let inserted = if bytes.starts_with(b"-----BEGIN") {
            builder.insert_device_pem(&bytes, aaguid, description, Default::default())
        } else {
            builder.insert_device_der(&bytes, aaguid, description, Default::default())
        };
        inserted.map_err(|e| format!("{key}.ca {} is not a certificate: {e:?}", allowed.ca.display()))?;
    }
    Ok(Some(builder.build()))
}

/// The registration state: plain, or checking the authenticator's attestation.
#[derive(Serialize, Deserialize)]
enum Registration {
    Any(PasskeyRegistration),
    Attested(AttestedPasskeyRegistration),
}

/// A ceremony between its two requests.
#[derive(Serialize, Deserialize)]
enum Ceremony {
    Register { account_id: String, session_id: String, state: Registration },
    Authenticate { interaction: String, account_id: Option<String>, state: PasskeyAuthentication },
    Discover { interaction: String, state: DiscoverableAuthentication },
}

fn ceremony_key(id: &str) -> String {
    format!("webauthn:{}", crate::cli::sha256_hex(id))
}

async fn save_ceremony(state: &AppState, ceremony: &Ceremony) -> Result<String, Failure> {
    let id = crate::cli::random_token();
    let bytes = serde_json::to_vec(ceremony).map_err(|_| Failure::server())?;
    state.ephemeral.put(&ceremony_key(&id), &bytes, CEREMONY_LIFETIME).await.map_err(|_| Failure::unavailable())?;
    Ok(id)
}

/// Takes a ceremony: the second use of a challenge finds nothing.
async fn take_ceremony(state: &AppState, id: &str) -> Result<Ceremony, Failure> {
    if id.is_empty() || id.len() > 128 {
        return Err(Failure::expired());
    }
    let bytes = state.ephemeral.take(&ceremony_key(id)).await.map_err(|_| Failure::unavailable())?;
    let bytes = bytes.ok_or_else(Failure::expired)?;
    serde_json::from_slice(&bytes).map_err(|_| Failure::expired())
}

/// A JSON error for the page's script, with a sentence for the person.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure { status, code, message: message.into() }
    }
    fn server() -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "an internal error occurred; try again")
    }
    fn unavailable() -> Failure {
        Failure::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again in a moment")
    }
    fn expired() -> Failure {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "ceremony_expired",
            "this security-key request has expired or was already used; start again",
        )
    }
    fn off() -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "webauthn_disabled", "security keys are not available on this server")
    }
    fn refused(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::UNAUTHORIZED, "webauthn_refused", message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(json!({ "error": self.code, "error_description": self.message }))).into_response();
        response
            .headers_mut()
            .insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
        response
    }
}

fn webauthn(state: &AppState) -> Result<&Webauthn, Failure> {
    state.webauthn.as_deref().ok_or_else(Failure::off)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn passkey_of(credential: &WebauthnCredential) -> Option<Passkey> {
    serde_json::from_str(&credential.passkey).ok()
}

/// The CSRF token of the passkey pages: derived from the secret session id, so only a page of
/// that session knows it.
pub fn session_csrf(session: &Session) -> String {
    crate::cli::sha256_hex(&format!("passkeys:{}", session.id))
}

fn csrf_matches(session: &Session, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    session_csrf(session).as_bytes().ct_eq(presented.as_bytes()).into()
}

/// The current session, only when its login is recent and at least `eidas1`.
async fn recent_session(state: &AppState, headers: &HeaderMap) -> Result<Session, Failure> {
    let now = crate::unix_now();
    let session = state.sessions.current(state, headers, now).await.ok().flatten().ok_or_else(|| {
        Failure::new(StatusCode::UNAUTHORIZED, "login_required", "log in first, then add your security key")
    })?;
    if now - session.auth_time > RECENT_LOGIN_SECS || crate::authn::journey::level_of(&session.amr()).is_none() {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "recent_login_required",
            "adding a security key needs a recent login with two factors: log in again, then add it",
        ));
    }
    Ok(session)
}

// ---------------------------------------------------------------------------------------------
// Registration

#[derive(Deserialize)]
pub struct RegisterStart {
    csrf: String,
}

/// `POST /account/passkeys/register/start`: the creation options for `navigator.credentials.create`.
pub async fn register_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RegisterStart>,
) -> Response {
    register_start_inner(&state, &headers, &body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn register_start_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: &RegisterStart,
) -> Result<Response, Failure> {
    let webauthn = webauthn(state)?;
    let session = recent_session(state, headers).await?;
    if !csrf_matches(&session, &body.csrf) {
        return Err(Failure::new(StatusCode::FORBIDDEN, "csrf", "reload the page and try again"));
    }
    let account = state.store.account_by_id(&session.account_id).await.map_err(|_| Failure::unavailable())?;
    let account = account.filter(|a| a.status == AccountStatus::Active).ok_or_else(Failure::server)?;
    let existing = state.store.webauthn_credentials_of(&account.id).await.map_err(|_| Failure::unavailable())?;
    if existing.len() >= MAX_KEYS_PER_ACCOUNT {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "too_many_keys",
            format!("an account holds at most {MAX_KEYS_PER_ACCOUNT} keys: revoke one first"),
        ));
    }
    // The WebAuthn user handle is the account id (a UUID): stable, and no personal data.
    let user = Uuid::parse_str(&account.id).map_err(|_| Failure::server())?;
    let exclude: Vec<CredentialID> = existing.iter().filter_map(passkey_of).map(|p| p.cred_id().clone()).collect();
    let display = [account.given_name.as_deref(), account.family_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let display = if display.is_empty() { account.login.clone() } else { display };
    let started = match &state.webauthn_attestation {
        None => webauthn
            .start_passkey_registration(user, &account.login, &display, Some(exclude))
            .map(|(options, r)| (options, Registration::Any(r))),
        Some(allowed) => webauthn
            .start_attested_passkey_registration(
                user,
                &account.login,
                &display,
                Some(exclude),
                (**allowed).clone(),
                None,
            )
            .map(|(options, r)| (options, Registration::Attested(r))),
    };
    let (options, registration) =
        started.map_err(|e| Failure::refused(format!("registration could not start: {e}")))?;
    // Ask for a discoverable credential when the authenticator can store one: it then also
    // serves usernameless login (conditional mediation). The verification does not depend on it.
    let mut options = to_value(&options);
    options["publicKey"]["authenticatorSelection"]["residentKey"] = json!("preferred");
    options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = json!(false);
    let ceremony = Ceremony::Register { account_id: account.id, session_id: session.id, state: registration };
    let id = save_ceremony(state, &ceremony).await?;
    Ok(Json(json!({ "ceremony": id, "options": options })).into_response())
}

#[derive(Deserialize)]
pub struct RegisterFinish {
    csrf: String,
    ceremony: String,
    name: Option<String>,
    credential: RegisterPublicKeyCredential,
}

/// `POST /account/passkeys/register/finish`: verifies and stores the new credential.
pub async fn register_finish(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RegisterFinish>,
) -> Response {
    register_finish_inner(&state, &headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn register_finish_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: RegisterFinish,
) -> Result<Response, Failure> {
    let webauthn = webauthn(state)?;
    let session = recent_session(state, headers).await?;
    if !csrf_matches(&session, &body.csrf) {
        return Err(Failure::new(StatusCode::FORBIDDEN, "csrf", "reload the page and try again"));
    }
    let Ceremony::Register { account_id, session_id, state: registration } =
        take_ceremony(state, &body.ceremony).await?
    else {
        return Err(Failure::expired());
    };
    if session_id != session.id || account_id != session.account_id {
        return Err(Failure::expired());
    }
    let context = AuditContext::from_request(headers, None);
    let finished = match &registration {
        Registration::Any(r) => webauthn.finish_passkey_registration(&body.credential, r),
        Registration::Attested(r) => {
            webauthn.finish_attested_passkey_registration(&body.credential, r).map(Passkey::from)
        }
    };
    let passkey = match finished {
        Ok(p) => p,
        Err(e) => {
            state
                .audit
                .record(AuditEvent::WebauthnRefused { account_id: Some(account_id), reason: e.to_string() }, context);
            let message = match registration {
                Registration::Attested(_) => format!(
                    "this service accepts only approved security-key models, and this key could not prove it is one ({e})"
                ),
                Registration::Any(_) => format!("the key's answer is not valid: {e}"),
            };
            return Err(Failure::refused(message));
        }
    };
    let name = body
        .name
        .map(|n| n.trim().chars().take(MAX_NAME_CHARS).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "Security key".to_string());
    let now = crate::unix_now();
    let credential = WebauthnCredential {
        credential_id: b64(passkey.cred_id()),
        account_id: account_id.clone(),
        name,
        passkey: serde_json::to_string(&passkey).map_err(|_| Failure::server())?,
        created_at: now,
        last_used_at: None,
    };
    match state.store.insert_webauthn_credential(&credential).await {
        Ok(()) => {}
        Err(crate::store::StoreError::Conflict { .. }) => {
            return Err(Failure::new(StatusCode::CONFLICT, "already_registered", "this key is already registered"));
        }
        Err(_) => return Err(Failure::unavailable()),
    }
    state.audit.record(
        AuditEvent::WebauthnRegistered { account_id, credential_id: credential.credential_id.clone() },
        context,
    );
    Ok(Json(json!({ "credential_id": credential.credential_id, "name": credential.name })).into_response())
}

// ---------------------------------------------------------------------------------------------
// Authentication within a login interaction

#[derive(Deserialize)]
pub struct AuthenticateStart {
    interaction: String,
    csrf: String,
    /// Identifier-first passwordless login; absent: discoverable credentials (conditional UI), or
    /// the account already identified by the password step.
    login: Option<String>,
}

/// Refuses every attempt from an address locked out by its failures (any factor).
async fn locked(state: &AppState, peer: &SocketAddr) -> Option<Failure> {
    crate::authn::login::address_locked(state, peer, crate::unix_now()).await.then(|| {
        Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked",
            "too many failed attempts from this address; wait a few minutes, then try again",
        )
    })
}

/// `POST /webauthn/authenticate/start`: the request options for `navigator.credentials.get`.
pub async fn authenticate_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<AuthenticateStart>,
) -> Response {
    if let Some(refusal) = locked(&state, &peer).await {
        return refusal.into_response();
    }
    // Each start stores a challenge: bounded like every other anonymous entry.
    if let Err(e) =
        crate::oidc::admission::admit(&state, crate::oidc::admission::Work::PasskeyChallenge, Some(peer.ip()), None)
            .await
    {
        return Failure::new(e.code.status(), e.code.as_str(), e.description).into_response();
    }
    authenticate_start_inner(&state, &headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn authenticate_start_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: AuthenticateStart,
) -> Result<Response, Failure> {
    let webauthn = webauthn(state)?;
    let interaction =
        interaction::load_bound(state, headers, &body.interaction).await.map_err(|_| Failure::expired())?;
    if !interaction.csrf_matches(&body.csrf) {
        return Err(Failure::new(StatusCode::FORBIDDEN, "csrf", "reload the page and try again"));
    }
    let account_id = match body.login.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        Some(login) => {
            let login = crate::authn::login::normalise_login(login);
            state.store.account_by_login(&login).await.map_err(|_| Failure::unavailable())?.map(|a| a.id)
        }
        None => interaction.account_id.clone(),
    };
    let passkeys: Vec<Passkey> = match &account_id {
        Some(account_id) => state
            .store
            .webauthn_credentials_of(account_id)
            .await
            .map_err(|_| Failure::unavailable())?
            .iter()
            .filter_map(passkey_of)
            .collect(),
        None => Vec::new(),
    };
    if passkeys.is_empty() {
        // Nobody identified: a usernameless login with the authenticator's discoverable
        // credentials. Someone identified (a login typed, or the password step) without keys, or
        // an unknown login: the same challenge listing one random credential id, shaped like a
        // real answer so this endpoint does not reveal who has an account or a key.
        let decoy = account_id.is_some() || body.login.is_some();
        return start_discoverable(state, webauthn, &interaction.id, decoy).await;
    }
    let (options, authentication) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(|e| Failure::refused(format!("authentication could not start: {e}")))?;
    let id = save_ceremony(
        state,
        &Ceremony::Authenticate { interaction: interaction.id.clone(), account_id, state: authentication },
    )
    .await?;
    Ok(Json(json!({ "ceremony": id, "options": options })).into_response())
}

/// Starts a discoverable-credential ceremony; with `decoy`, lists one random credential id.
async fn start_discoverable(
    state: &AppState,
    webauthn: &Webauthn,
    interaction_id: &str,
    decoy: bool,
) -> Result<Response, Failure> {
    let (options, discover) = webauthn
        .start_discoverable_authentication()
        .map_err(|e| Failure::refused(format!("authentication could not start: {e}")))?;
    let mut options = to_value(&options);
    if decoy {
        let mut id = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        options["publicKey"]["allowCredentials"] = json!([{ "type": "public-key", "id": b64(&id) }]);
    }
    let ceremony = Ceremony::Discover { interaction: interaction_id.to_string(), state: discover };
    let id = save_ceremony(state, &ceremony).await?;
    Ok(Json(json!({ "ceremony": id, "options": options })).into_response())
}

#[derive(Deserialize)]
pub struct AuthenticateFinish {
    interaction: String,
    csrf: String,
    ceremony: String,
    credential: PublicKeyCredential,
}

/// `POST /webauthn/authenticate/finish`: verifies the assertion, records the factors in the
/// interaction and tells the page where to go next.
pub async fn authenticate_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<AuthenticateFinish>,
) -> Response {
    if let Some(refusal) = locked(&state, &peer).await {
        return refusal.into_response();
    }
    match authenticate_finish_inner(&state, &headers, body).await {
        Ok(response) => response,
        Err(failure) => {
            if failure.status == StatusCode::UNAUTHORIZED {
                crate::authn::login::count_address_failure(&state, &peer, crate::unix_now()).await;
            }
            failure.into_response()
        }
    }
}

async fn authenticate_finish_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: AuthenticateFinish,
) -> Result<Response, Failure> {
    let webauthn = webauthn(state)?;
    let mut interaction = match interaction::load_bound(state, headers, &body.interaction).await {
        Ok(i) => i,
        Err(_) => {
            // A replayed assertion lands here once its login has completed.
            state.metrics.login("webauthn", false);
            state.audit.record(
                AuditEvent::WebauthnRefused { account_id: None, reason: "login already completed or expired".into() },
                AuditContext::from_request(headers, None),
            );
            return Err(Failure::expired());
        }
    };
    if !interaction.csrf_matches(&body.csrf) {
        return Err(Failure::new(StatusCode::FORBIDDEN, "csrf", "reload the page and try again"));
    }
    let context = AuditContext {
        client_id: Some(interaction.request.client_id.clone()),
        ..AuditContext::from_request(headers, None)
    };
    let presented_id = b64(&body.credential.raw_id);
    let ceremony = match take_ceremony(state, &body.ceremony).await {
        Ok(c) => c,
        Err(failure) => {
            // A replayed assertion lands here: its challenge was taken by the first use.
            state.metrics.login("webauthn", false);
            state.audit.record(
                AuditEvent::WebauthnRefused { account_id: None, reason: "challenge already used or expired".into() },
                context,
            );
            return Err(failure);
        }
    };
    let stored = state.store.webauthn_credential(&presented_id).await.map_err(|_| Failure::unavailable())?;
    let refuse = |account_id: Option<String>, reason: String| {
        state.metrics.login("webauthn", false);
        state.audit.record(AuditEvent::WebauthnRefused { account_id, reason: reason.clone() }, context.clone());
        Failure::refused(
            "this security key was not accepted: use a key registered on your account, or log in another way",
        )
    };
    let Some(stored) = stored else {
        return Err(refuse(None, "unknown or revoked credential".into()));
    };
    let passkey = passkey_of(&stored).ok_or_else(Failure::server)?;
    let result: AuthenticationResult = match ceremony {
        Ceremony::Authenticate { interaction: i, account_id, state: authentication } => {
            if i != interaction.id || account_id.as_deref() != Some(stored.account_id.as_str()) {
                return Err(refuse(Some(stored.account_id), "credential of another account".into()));
            }
            webauthn
                .finish_passkey_authentication(&body.credential, &authentication)
                .map_err(|e| refuse(Some(stored.account_id.clone()), e.to_string()))?
        }
        Ceremony::Discover { interaction: i, state: discover } => {
            if i != interaction.id {
                return Err(Failure::expired());
            }
            let (user, _) = webauthn
                .identify_discoverable_authentication(&body.credential)
                .map_err(|e| refuse(None, e.to_string()))?;
            if user.to_string() != stored.account_id {
                return Err(refuse(Some(stored.account_id), "user handle does not match the credential".into()));
            }
            webauthn
                .finish_discoverable_authentication_v2(&body.credential, discover, &passkey)
                .map_err(|e| refuse(Some(stored.account_id.clone()), e.to_string()))?
        }
        Ceremony::Register { .. } => return Err(Failure::expired()),
    };
    if interaction.account_id.as_ref().is_some_and(|a| a != &stored.account_id) {
        return Err(refuse(Some(stored.account_id), "credential of another account than the password's".into()));
    }
    let account = state.store.account_by_id(&stored.account_id).await.map_err(|_| Failure::unavailable())?;
    if !account.is_some_and(|a| a.status == AccountStatus::Active) {
        return Err(refuse(Some(stored.account_id), "account disabled".into()));
    }
    // The counter check (a cloned key) happened in webauthn-rs; keep the new counter and flags.
    let mut updated = passkey;
    updated.update_credential(&result);
    let now = crate::unix_now();
    let serialized = serde_json::to_string(&updated).map_err(|_| Failure::server())?;
    state
        .store
        .record_webauthn_use(&stored.credential_id, &serialized, now)
        .await
        .map_err(|_| Failure::unavailable())?;
    // RFC 8176: a synced passkey is a software key, a device-bound one a hardware key.
    let key_kind = if result.backup_eligible() { "swk" } else { "hwk" };
    interaction.account_id = Some(stored.account_id.clone());
    interaction.complete_factor(key_kind, now);
    if result.user_verified() {
        interaction.complete_factor("user", now);
    }
    state.metrics.login("webauthn", true);
    state.audit.record(
        AuditEvent::WebauthnLoginSucceeded {
            account_id: stored.account_id.clone(),
            credential_id: stored.credential_id.clone(),
        },
        context,
    );
    interaction::save(state, &interaction).await.map_err(|_| Failure::unavailable())?;
    // The page then follows the journey, which ends the login or asks for what is still missing.
    let next = format!("/login/continue?interaction={}", interaction.id);
    Ok(Json(json!({ "redirect": next })).into_response())
}

/// Ceremony options as JSON, to adjust before they go to the page's script.
fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------------
// The account page: list, rename, revoke, add

fn date(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .unwrap_or_default()
}

/// `GET /account/passkeys`: the keys of the session's account.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    render_page(&state, &headers, None).await
}

async fn render_page(state: &AppState, headers: &HeaderMap, notice: Option<&str>) -> Response {
    let lang = crate::web::i18n::Lang::negotiate(None, headers);
    let t = state.pages.texts(lang);
    let now = crate::unix_now();
    let Some(session) = state.sessions.current(state, headers, now).await.ok().flatten() else {
        return state.pages.page(
            StatusCode::UNAUTHORIZED,
            "message.html",
            lang,
            minijinja::context! { title => t.passkeys_title, message => t.passkeys_login_first },
        );
    };
    let keys = match state.store.webauthn_credentials_of(&session.account_id).await {
        Ok(keys) => keys,
        Err(e) => return crate::web::pages_error_in(state, lang, None, e.into()),
    };
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({ "id": k.credential_id, "name": k.name, "created": date(k.created_at),
                    "last_used": k.last_used_at.map(date) })
        })
        .collect();
    let can_register = state.webauthn.is_some() && recent_session(state, headers).await.is_ok();
    state.pages.page(
        StatusCode::OK,
        "passkeys.html",
        lang,
        minijinja::context! {
            keys => minijinja::value::Serde(&keys), csrf => session_csrf(&session), can_register => can_register,
            notice => notice.unwrap_or(""),
        },
    )
}

/// The session and the form of a rename or revoke, after the CSRF check.
async fn form_session(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Session, crate::oidc::params::Params), Response> {
    let lang = crate::web::i18n::Lang::negotiate(None, headers);
    let forbidden = |description: &'static str| {
        crate::web::pages_error_in(
            state,
            lang,
            None,
            crate::error::OAuthError::new(crate::error::OAuthErrorCode::AccessDenied, description),
        )
    };
    let now = crate::unix_now();
    let Some(session) = state.sessions.current(state, headers, now).await.ok().flatten() else {
        return Err(forbidden("your session has ended; log in again"));
    };
    let Ok(params) = crate::oidc::params::Params::parse(body) else {
        return Err(forbidden("the form could not be read; reload the page"));
    };
    if !csrf_matches(&session, params.get("csrf").unwrap_or("")) {
        return Err(forbidden("this form has expired; reload the page and try again"));
    }
    Ok((session, params))
}

/// `POST /account/passkeys/rename`.
pub async fn rename(State(state): State<AppState>, headers: HeaderMap, body: bytes::Bytes) -> Response {
    let (session, params) = match form_session(&state, &headers, &body).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let name: String = params.get("name").unwrap_or("").trim().chars().take(MAX_NAME_CHARS).collect();
    let id = params.get("credential_id").unwrap_or("");
    if !name.is_empty() {
        let _ = state.store.rename_webauthn_credential(&session.account_id, id, &name).await;
    }
    let lang = crate::web::i18n::Lang::negotiate(None, &headers);
    render_page(&state, &headers, Some(state.pages.texts(lang).passkeys_renamed_notice)).await
}

/// `POST /account/passkeys/revoke`: the key stops logging in at once.
pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: bytes::Bytes) -> Response {
    let (session, params) = match form_session(&state, &headers, &body).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let id = params.get("credential_id").unwrap_or("").to_string();
    if let Ok(true) = state.store.delete_webauthn_credential(&session.account_id, &id).await {
        state.audit.record(
            AuditEvent::WebauthnRevoked {
                account_id: session.account_id.clone(),
                credential_id: id,
                by: "owner".into(),
            },
            AuditContext::from_request(&headers, None),
        );
    }
    let lang = crate::web::i18n::Lang::negotiate(None, &headers);
    render_page(&state, &headers, Some(state.pages.texts(lang).passkeys_revoked_notice)).await
}

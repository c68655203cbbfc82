//! Dynamic client registration as domain operations: RFC 7591 registration with an initial access
//! token that an administrator issued, and RFC 7592 management (read, replace, delete) with the
//! registration access token handed to the client at registration. The HTTP edge is
//! `oidc::registration`; the administrator's side is `habilis client registration-token`.
//!
//! * Metadata is validated exactly as `habilis client import` validates it ([`ClientRegistry`]),
//!   then narrowed by a [`RegistrationPolicy`]: what a client may grant *itself* is less than what
//!   an administrator may grant it (no `first_party`, no audiences of other APIs, no lifetime
//!   overrides, no token exchange, only the scopes of `registration.allowed_scopes`).
//! * Every token (initial or registration access token) is 256 random bits, shown once, stored as
//!   its SHA-256 — the fast hash of client secrets: brute force is hopeless whatever the hash cost.
//! * Each operation emits its typed audit event; metadata in events never holds a secret (the
//!   registry strips `client_secret` and the other response-only members before storing).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::model::{Client, ClientKeys, ClientMetadataError, GrantType};
use super::registry::{ClientRegistry, PreparedRegistration, RegistryError, generate_secret, hash_secret};
use crate::audit::{Audit, AuditContext, AuditEvent};
use crate::config::{Config, SigningAlg};
use crate::store::{ClientRegistrationRecord, InitialAccessToken, Store, StoreError, UnixTime};

/// Longest validity of an initial access token.
pub const MAX_INITIAL_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Most registrations one initial access token may allow.
pub const MAX_INITIAL_TOKEN_USES: i64 = 10_000;
const MAX_DESCRIPTION_LEN: usize = 200;

/// Members only an administrator may set (`habilis client import`): each gives a client power
/// over others — consent skipped, tokens for other APIs, longer-lived tokens.
const ADMINISTRATOR_ONLY_MEMBERS: &[&str] = &[
    "first_party",
    "access_token_audience",
    "token_exchange_audiences",
    "access_token_lifetime",
    "refresh_token_idle_lifetime",
    "refresh_token_absolute_lifetime",
];

/// Why a registration operation failed, in domain terms; `oidc::registration` maps each to its
/// RFC 7591/7592 response.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The initial or registration access token is missing, unknown, expired, revoked or used up
    /// (401 `invalid_token`).
    #[error("{0}")]
    InvalidToken(&'static str),
    /// RFC 7591 §3.2.2 `invalid_redirect_uri` / `invalid_client_metadata`.
    #[error(transparent)]
    Metadata(#[from] ClientMetadataError),
    /// Software statements are not accepted here (`unapproved_software_statement`).
    #[error(
        "software statements are not accepted by this server; register without software_statement, \
         with an initial access token from its administrators"
    )]
    SoftwareStatement,
    /// A malformed management request (`invalid_request`).
    #[error("{0}")]
    InvalidRequest(String),
    /// An administrator's request that cannot be honoured (CLI usage).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A registry failure that valid input cannot cause (logged; `server_error`).
    #[error("client registry: {0}")]
    Registry(String),
}

impl From<RegistryError> for RegistrationError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Metadata(m) => RegistrationError::Metadata(m),
            RegistryError::Store(s) => RegistrationError::Store(s),
            other => RegistrationError::Registry(other.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, RegistrationError>;

// ---------------------------------------------------------------------------------------------
// Initial access tokens

/// What an administrator asks for when issuing an initial access token.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub expires_in: Duration,
    pub max_uses: i64,
    pub description: Option<String>,
}

/// A token just issued: the stored record and the token itself, to show once.
pub struct IssuedToken {
    pub record: InitialAccessToken,
    pub token: Zeroizing<String>,
}

/// Hand-written so that the token can never reach a log through `{:?}`.
impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("id", &self.record.id).field("token", &"<redacted>").finish()
    }
}

/// Whether an initial access token can register a client at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    Usable,
    Revoked,
    Expired,
    UsedUp,
}

impl TokenState {
    pub fn of(token: &InitialAccessToken, now: UnixTime) -> TokenState {
        if token.revoked_at.is_some() {
            TokenState::Revoked
        } else if token.expires_at <= now {
            TokenState::Expired
        } else if token.uses >= token.max_uses {
            TokenState::UsedUp
        } else {
            TokenState::Usable
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Usable => "usable",
            TokenState::Revoked => "revoked",
            TokenState::Expired => "expired",
            TokenState::UsedUp => "used up",
        }
    }

    /// Why a token in this state is refused (`None` when usable).
    fn refusal(self) -> Option<&'static str> {
        match self {
            TokenState::Usable => None,
            TokenState::Revoked => Some("the initial access token was revoked"),
            TokenState::Expired => Some("the initial access token has expired"),
            TokenState::UsedUp => Some("the initial access token has been used as many times as it allows"),
        }
    }
}

fn check_issue_request(request: &IssueRequest) -> Result<()> {
    if request.expires_in.is_zero() || request.expires_in > MAX_INITIAL_TOKEN_LIFETIME {
        return Err(RegistrationError::Usage(format!(
            "--expires-in must be between 1s and {}",
            humantime::format_duration(MAX_INITIAL_TOKEN_LIFETIME)
        )));
    }
    if !(1..=MAX_INITIAL_TOKEN_USES).contains(&request.max_uses) {
        return Err(RegistrationError::Usage(format!("--max-uses must be between 1 and {MAX_INITIAL_TOKEN_USES}")));
    }
    if let Some(description) = &request.description
        && (description.chars().count() > MAX_DESCRIPTION_LEN || description.chars().any(char::is_control))
    {
        return Err(RegistrationError::Usage(format!(
            "--description must be at most {MAX_DESCRIPTION_LEN} characters, without control characters"
        )));
    }
    Ok(())
}

/// Issues an initial access token: stored hashed, returned once. `actor` names who issued it.
pub async fn issue_initial_access_token(
    store: &dyn Store,
    audit: &Audit,
    actor: &str,
    request: &IssueRequest,
    now: UnixTime,
) -> Result<IssuedToken> {
    check_issue_request(request)?;
    let token = generate_secret();
    let lifetime = i64::try_from(request.expires_in.as_secs()).unwrap_or(i64::MAX);
    let record = InitialAccessToken {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        token_hash: hash_secret(&token),
        description: request.description.clone().filter(|d| !d.trim().is_empty()),
        created_at: now,
        expires_at: now.saturating_add(lifetime),
        max_uses: request.max_uses,
        uses: 0,
        last_used_at: None,
        revoked_at: None,
    };
    store.registrations().insert_initial_access_token(&record).await?;
    audit.record(
        AuditEvent::RegistrationTokenIssued {
            token_id: record.id.clone(),
            actor: actor.to_string(),
            description: record.description.clone(),
            expires_at: record.expires_at,
            max_uses: record.max_uses,
        },
        AuditContext::default(),
    );
    Ok(IssuedToken { record, token })
}

/// Revokes an initial access token by id. Returns whether an unrevoked token was revoked.
pub async fn revoke_initial_access_token(
    store: &dyn Store,
    audit: &Audit,
    actor: &str,
    id: &str,
    now: UnixTime,
) -> Result<bool> {
    let revoked = store.registrations().revoke_initial_access_token(id, now).await?;
    if revoked {
        audit.record(
            AuditEvent::RegistrationTokenRevoked { token_id: id.to_string(), actor: actor.to_string() },
            AuditContext::default(),
        );
    }
    Ok(revoked)
}

// ---------------------------------------------------------------------------------------------
// What a client may register for itself

/// What a self-registering client may ask for, beyond the metadata rules every client follows.
#[derive(Clone, Debug)]
pub struct RegistrationPolicy {
    /// `registration.allowed_scopes`.
    pub allowed_scopes: Vec<String>,
    /// `keys.algorithms`.
    pub enabled_algorithms: Vec<SigningAlg>,
    /// Whether the mTLS listener runs (the RFC 8705 authentication methods need it).
    pub mtls: bool,
}

impl RegistrationPolicy {
    pub fn from_config(config: &Config, mtls: bool) -> RegistrationPolicy {
        RegistrationPolicy {
            allowed_scopes: config.registration.allowed_scopes.clone(),
            enabled_algorithms: config.keys.algorithms.clone(),
            mtls,
        }
    }

    /// Validates a submitted document for `client_id` (`None`: a new identifier is generated):
    /// the registry's validation, shared with `habilis client import`, then this policy. The
    /// document must not carry `client_id` or `client_secret` (callers handle those).
    fn prepare(
        &self,
        registry: &ClientRegistry,
        mut document: Map<String, Value>,
        client_id: Option<&str>,
    ) -> Result<PreparedRegistration> {
        if document.get("software_statement").is_some_and(|v| !v.is_null()) {
            return Err(RegistrationError::SoftwareStatement);
        }
        if let Some(member) = ADMINISTRATOR_ONLY_MEMBERS.iter().find(|m| document.contains_key(**m)) {
            return Err(ClientMetadataError::metadata(format!(
                "{member} is set by administrators only (habilis client import), not by dynamic registration; \
                 remove it"
            ))
            .into());
        }
        if document.get("scope").is_none_or(Value::is_null) {
            document.insert("scope".into(), Value::String(self.allowed_scopes.join(" ")));
        }
        let prepared = registry.prepare_document(Value::Object(document), client_id, None)?;
        self.check(prepared.client())?;
        Ok(prepared)
    }

    /// The rules a client validated by the registry must also follow to register itself.
    fn check(&self, client: &Client) -> std::result::Result<(), ClientMetadataError> {
        if let Some(scope) = client.allowed_scopes().iter().find(|s| !self.allowed_scopes.contains(s)) {
            return Err(ClientMetadataError::metadata(format!(
                "scope `{}` cannot be registered dynamically; choose among: {}",
                scope.escape_debug(),
                self.allowed_scopes.join(" ")
            )));
        }
        if client.grant_types().contains(&GrantType::TokenExchange) {
            return Err(ClientMetadataError::metadata(
                "grant_types: token exchange is granted by administrators only (habilis client import)",
            ));
        }
        let method = client.token_endpoint_auth_method();
        if method.uses_certificate() && !self.mtls {
            return Err(ClientMetadataError::metadata(format!(
                "token_endpoint_auth_method {method} needs the mTLS listener, which this server does not run; \
                 use client_secret_basic, client_secret_post, private_key_jwt or none"
            )));
        }
        client.check_enabled_algorithms(&self.enabled_algorithms)?;
        // URLs the server itself calls must not lead it to plain http on its own machine.
        let fetched = [
            ("jwks_uri", if let ClientKeys::Remote(url) = client.keys() { Some(url) } else { None }),
            ("backchannel_logout_uri", client.backchannel_logout_uri()),
        ];
        for (member, url) in fetched {
            if let Some(url) = url
                && url.scheme() != "https"
            {
                return Err(ClientMetadataError::metadata(format!(
                    "{member} must use https for a dynamically registered client"
                )));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Registration and management

/// A registered client as the registration endpoints describe it (RFC 7591 §3.2.1).
pub struct RegisteredClient {
    pub client: Arc<Client>,
    pub client_id_issued_at: UnixTime,
    /// A secret generated by this operation (shown once), when the method uses one.
    pub client_secret: Option<Zeroizing<String>>,
    /// The registration access token valid after this operation.
    pub registration_access_token: Zeroizing<String>,
}

/// The registration operations of one request, with what they need: the client registry, the
/// store, the audit sink and context, and the policy.
pub struct DynamicRegistration<'a> {
    pub registry: &'a ClientRegistry,
    pub store: &'a dyn Store,
    pub audit: &'a Audit,
    pub context: AuditContext,
    pub policy: RegistrationPolicy,
}

/// The members of a submitted document, which must be a JSON object.
fn object(document: Value) -> Result<Map<String, Value>> {
    match document {
        Value::Object(map) => Ok(map),
        _ => Err(ClientMetadataError::metadata("the client metadata must be a JSON object").into()),
    }
}

/// Removes `member` from the document and returns it when it is a (non-null) string.
fn take_string(document: &mut Map<String, Value>, member: &str) -> Result<Option<String>> {
    match document.remove(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ClientMetadataError::metadata(format!("`{member}` must be a string")).into()),
    }
}

/// Compares a presented token with a stored hash in constant time.
fn token_matches(presented: &str, stored_hash: &str) -> bool {
    hash_secret(presented).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

impl DynamicRegistration<'_> {
    /// RFC 7591 §3: registers a client with an initial access token. The token's use is counted
    /// only once the metadata is valid, so a rejected attempt does not spend it.
    pub async fn register(&self, initial_token: &str, document: Value, now: UnixTime) -> Result<RegisteredClient> {
        let token_hash = hash_secret(initial_token);
        let token = self
            .store
            .registrations()
            .initial_access_token(&token_hash)
            .await?
            .ok_or(RegistrationError::InvalidToken("unknown initial access token"))?;
        if let Some(refusal) = TokenState::of(&token, now).refusal() {
            return Err(RegistrationError::InvalidToken(refusal));
        }
        let mut document = object(document)?;
        for member in ["client_id", "client_secret"] {
            if take_string(&mut document, member)?.is_some() {
                return Err(ClientMetadataError::metadata(format!(
                    "{member} is assigned by the server; remove it from the registration request"
                ))
                .into());
            }
        }
        let prepared = self.policy.prepare(self.registry, document, None)?;
        if self.store.registrations().use_initial_access_token(&token_hash, now).await?.is_none() {
            return Err(RegistrationError::InvalidToken(
                "the initial access token was used up, revoked or expired meanwhile",
            ));
        }
        let registration = self.registry.register_prepared(prepared).await?;
        let client = registration.client;
        let client_id = client.client_id().to_string();
        let access_token = generate_secret();
        let record = ClientRegistrationRecord {
            client_id: client_id.clone(),
            access_token_hash: hash_secret(&access_token),
            initial_token_id: token.id.clone(),
            created_at: now,
            updated_at: now,
        };
        if let Err(e) = self.store.registrations().insert_client_registration(&record).await {
            // Without its registration the client could never be managed: take it back.
            if let Err(undo) = self.registry.remove(&client_id).await {
                tracing::error!(client_id, error = %undo, "could not remove a client whose registration failed");
            }
            return Err(e.into());
        }
        self.audit.record(
            AuditEvent::ClientRegistered {
                client_id: client_id.clone(),
                actor: format!("initial_access_token:{}", token.id),
                metadata: metadata_text(&client),
            },
            self.context_for(&client_id),
        );
        Ok(RegisteredClient {
            client,
            client_id_issued_at: now,
            client_secret: registration.secret,
            registration_access_token: access_token,
        })
    }

    /// Checks the registration access token of `client_id`. An unknown client, a client that did
    /// not register itself and a wrong token are the same failure (RFC 7592 §2.1: 401).
    async fn authorize(&self, client_id: &str, token: &str) -> Result<ClientRegistrationRecord> {
        let record = self.store.registrations().client_registration(client_id).await?;
        match record {
            Some(record) if token_matches(token, &record.access_token_hash) => Ok(record),
            _ => Err(RegistrationError::InvalidToken("invalid registration access token for this client")),
        }
    }

    /// RFC 7592 §2.1: the client's current registration. The registration access token stays
    /// the same (it is returned as presented).
    pub async fn read(&self, client_id: &str, token: &str) -> Result<RegisteredClient> {
        let registration = self.authorize(client_id, token).await?;
        let client = self.current(client_id).await?;
        Ok(RegisteredClient {
            client,
            // The registration record's time is the one the registration response gave; the
            // client row may have been written a second earlier.
            client_id_issued_at: registration.created_at,
            client_secret: None,
            registration_access_token: Zeroizing::new(token.to_string()),
        })
    }

    /// RFC 7592 §2.2: replaces the client's metadata (validated as at registration) and rotates
    /// the registration access token. `client_id` must be in the document; `client_secret`, when
    /// present, must be the current secret (it is kept; a new one is generated only when the
    /// client moves to a secret-based method).
    pub async fn update(
        &self,
        client_id: &str,
        token: &str,
        document: Value,
        now: UnixTime,
    ) -> Result<RegisteredClient> {
        let registration = self.authorize(client_id, token).await?;
        let mut document = object(document)?;
        if take_string(&mut document, "client_id")?.as_deref() != Some(client_id) {
            return Err(RegistrationError::InvalidRequest(format!(
                "the request must carry the client's client_id (`{client_id}`) (RFC 7592 §2.2)"
            )));
        }
        let stored =
            self.store.client_by_id(client_id).await?.ok_or(RegistrationError::InvalidToken("the client is gone"))?;
        if let Some(secret) = take_string(&mut document, "client_secret")?.map(Zeroizing::new) {
            let matches = stored.secret_hash.as_deref().is_some_and(|hash| token_matches(&secret, hash));
            if !matches {
                return Err(RegistrationError::InvalidRequest(
                    "client_secret does not match the client's current secret; omit it to keep the secret".into(),
                ));
            }
        }
        let prepared = self.policy.prepare(self.registry, document, Some(client_id))?;
        let new_token = generate_secret();
        let new_hash = hash_secret(&new_token);
        let current_hash = &registration.access_token_hash;
        // Rotate first: of two concurrent updates with the same token, only one goes on.
        if !self.store.registrations().swap_registration_token(client_id, current_hash, &new_hash, now).await? {
            return Err(RegistrationError::InvalidToken("the registration access token was rotated meanwhile"));
        }
        let outcome = match self.registry.register_prepared(prepared).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // The client keeps its previous token, which is still the one it holds.
                let registrations = self.store.registrations();
                if let Err(undo) = registrations.swap_registration_token(client_id, &new_hash, current_hash, now).await
                {
                    tracing::error!(client_id, error = %undo, "could not restore a registration access token");
                }
                return Err(e.into());
            }
        };
        self.audit.record(
            AuditEvent::ClientUpdated {
                client_id: client_id.to_string(),
                actor: format!("registration_access_token:{client_id}"),
                before: stored.metadata,
                after: metadata_text(&outcome.client),
            },
            self.context_for(client_id),
        );
        Ok(RegisteredClient {
            client: outcome.client,
            client_id_issued_at: registration.created_at,
            client_secret: outcome.secret,
            registration_access_token: new_token,
        })
    }

    /// RFC 7592 §2.3: deletes the client with its grants (so its refresh tokens) and consents,
    /// as `habilis client remove` does.
    pub async fn delete(&self, client_id: &str, token: &str) -> Result<()> {
        self.authorize(client_id, token).await?;
        let before = self.store.client_by_id(client_id).await?.map(|r| r.metadata).unwrap_or_default();
        if !self.registry.remove(client_id).await? {
            return Err(RegistrationError::InvalidToken("the client is gone"));
        }
        self.audit.record(
            AuditEvent::ClientDeleted {
                client_id: client_id.to_string(),
                actor: format!("registration_access_token:{client_id}"),
                before,
            },
            self.context_for(client_id),
        );
        Ok(())
    }

    async fn current(&self, client_id: &str) -> Result<Arc<Client>> {
        let entry =
            self.registry.describe(client_id).await?.ok_or(RegistrationError::InvalidToken("the client is gone"))?;
        let client = entry.client.map_err(|e| {
            RegistrationError::Registry(format!("stored metadata of `{client_id}` no longer validates: {e}"))
        })?;
        Ok(client)
    }

    fn context_for(&self, client_id: &str) -> AuditContext {
        AuditContext { client_id: Some(client_id.to_string()), ..self.context.clone() }
    }
}

fn metadata_text(client: &Client) -> String {
    serde_json::to_string(client.metadata()).unwrap_or_default()
}

/// The client information of RFC 7591 §3.2.1 (without the members the edge adds: the secret,
/// the registration access token and URI): the stored metadata with every value the server
/// defaulted made explicit.
pub fn client_information(client: &Client, client_id_issued_at: UnixTime) -> Map<String, Value> {
    let mut info = client.metadata().clone();
    let strings = |items: Vec<&str>| Value::Array(items.into_iter().map(|s| Value::String(s.into())).collect());
    info.insert("client_id".into(), Value::String(client.client_id().into()));
    info.insert("client_id_issued_at".into(), Value::from(client_id_issued_at));
    info.insert("redirect_uris".into(), strings(client.redirect_uris().iter().map(String::as_str).collect()));
    info.insert("grant_types".into(), strings(client.grant_types().iter().map(|g| g.as_str()).collect()));
    info.insert("response_types".into(), strings(client.response_types().iter().map(String::as_str).collect()));
    info.insert("token_endpoint_auth_method".into(), Value::String(client.token_endpoint_auth_method().to_string()));
    info.insert("application_type".into(), Value::String(client.application_type().as_str().into()));
    info.insert("scope".into(), Value::String(client.allowed_scopes().join(" ")));
    if client.token_endpoint_auth_method().uses_secret() {
        // RFC 7591 §3.2.1: 0 means the secret does not expire.
        info.insert("client_secret_expires_at".into(), Value::from(0));
    }
    info
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::connect_with;

    const NOW: i64 = 1_700_000_000;

    fn token(max_uses: i64, uses: i64, expires_at: i64, revoked_at: Option<i64>) -> InitialAccessToken {
        InitialAccessToken {
            id: "t1".into(),
            token_hash: hash_secret("x"),
            description: None,
            created_at: NOW - 10,
            expires_at,
            max_uses,
            uses,
            last_used_at: None,
            revoked_at,
        }
    }

    #[test]
    fn initial_token_states() {
        assert_eq!(TokenState::of(&token(1, 0, NOW + 60, None), NOW), TokenState::Usable);
        assert_eq!(TokenState::of(&token(1, 1, NOW + 60, None), NOW), TokenState::UsedUp);
        assert_eq!(TokenState::of(&token(3, 2, NOW + 60, None), NOW), TokenState::Usable);
        assert_eq!(TokenState::of(&token(1, 0, NOW, None), NOW), TokenState::Expired, "expiry is exclusive");
        assert_eq!(TokenState::of(&token(1, 0, NOW + 60, Some(NOW - 1)), NOW), TokenState::Revoked);
        // Revocation wins over every other reason.
        assert_eq!(TokenState::of(&token(1, 1, NOW - 1, Some(NOW - 1)), NOW), TokenState::Revoked);
        assert!(TokenState::Usable.refusal().is_none());
        assert!(TokenState::Expired.refusal().unwrap().contains("expired"));
    }

    #[test]
    fn tokens_are_compared_by_hash() {
        let stored = hash_secret("the-token");
        assert_eq!(stored.len(), 64, "hex SHA-256");
        assert!(token_matches("the-token", &stored));
        assert!(!token_matches("the-token ", &stored));
        assert!(!token_matches("", &stored));
        assert!(!token_matches("the-token", ""));
    }

    #[test]
    fn issue_requests_are_bounded() {
        let ok = IssueRequest { expires_in: Duration::from_secs(3600), max_uses: 1, description: None };
        assert!(check_issue_request(&ok).is_ok());
        for bad in [
            IssueRequest { expires_in: Duration::ZERO, ..ok.clone() },
            IssueRequest { expires_in: MAX_INITIAL_TOKEN_LIFETIME + Duration::from_secs(1), ..ok.clone() },
            IssueRequest { max_uses: 0, ..ok.clone() },
            IssueRequest { max_uses: MAX_INITIAL_TOKEN_USES + 1, ..ok.clone() },
            IssueRequest { description: Some("a\nb".into()), ..ok.clone() },
            IssueRequest { description: Some("x".repeat(201)), ..ok.clone() },
        ] {
            assert!(matches!(check_issue_request(&bad), Err(RegistrationError::Usage(_))), "{bad:?}");
        }
    }

    fn policy() -> RegistrationPolicy {
        RegistrationPolicy {
            allowed_scopes: ["openid", "profile", "email"].map(String::from).to_vec(),
            enabled_algorithms: vec![SigningAlg::ES256],
            mtls: false,
        }
    }

    fn web() -> Map<String, Value> {
        json!({ "redirect_uris": ["https://rp.example.org/cb"] }).as_object().cloned().unwrap()
    }

    fn with(member: &str, value: Value) -> Map<String, Value> {
        let mut document = web();
        document.insert(member.into(), value);
        document
    }

    #[track_caller]
    fn refused(registry: &ClientRegistry, document: Map<String, Value>, needle: &str) {
        match policy().prepare(registry, document, None) {
            Ok(p) => panic!("accepted {:?}, expected a refusal mentioning `{needle}`", p.client().client_id()),
            Err(e) => assert!(e.to_string().contains(needle), "`{e}` does not mention `{needle}`"),
        }
    }

    async fn registry() -> (Arc<ClientRegistry>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        (ClientRegistry::new(connect_with(&url, 2).await.unwrap()), dir)
    }

    /// On SQLite and, when reachable, PostgreSQL.
    #[tokio::test]
    async fn initial_tokens_are_issued_hashed_used_and_revoked() {
        for (store, _dir) in crate::authn::throttle::test_backends::stores().await {
            let backend = store.backend().as_str();
            let audit = Audit::default();
            let mut events = audit.subscribe();
            let request =
                IssueRequest { expires_in: Duration::from_secs(60), max_uses: 2, description: Some("rp".into()) };
            let issued = issue_initial_access_token(store.as_ref(), &audit, "cli", &request, NOW).await.unwrap();
            assert_eq!(issued.token.len(), 43);
            assert_ne!(issued.record.token_hash, issued.token.as_str(), "stored hashed");
            assert_eq!(issued.record.token_hash, hash_secret(&issued.token));
            assert!(!format!("{issued:?}").contains(issued.token.as_str()));
            assert!(matches!(events.try_recv().unwrap().event, AuditEvent::RegistrationTokenIssued { .. }));

            let registrations = store.registrations();
            let hash = &issued.record.token_hash;
            assert_eq!(registrations.initial_access_token(hash).await.unwrap().as_ref(), Some(&issued.record));
            assert_eq!(registrations.use_initial_access_token(hash, NOW).await.unwrap().unwrap().uses, 1);
            assert_eq!(registrations.use_initial_access_token(hash, NOW).await.unwrap().unwrap().uses, 2);
            assert!(registrations.use_initial_access_token(hash, NOW).await.unwrap().is_none(), "{backend}: used up");

            let other = issue_initial_access_token(store.as_ref(), &audit, "cli", &request, NOW).await.unwrap();
            let hash = &other.record.token_hash;
            assert!(registrations.use_initial_access_token(hash, NOW + 60).await.unwrap().is_none(), "expired");
            let id = &other.record.id;
            assert!(revoke_initial_access_token(store.as_ref(), &audit, "cli", id, NOW).await.unwrap());
            assert!(!revoke_initial_access_token(store.as_ref(), &audit, "cli", id, NOW).await.unwrap());
            assert!(registrations.use_initial_access_token(hash, NOW).await.unwrap().is_none(), "revoked");
            let listed = registrations.list_initial_access_tokens().await.unwrap();
            assert_eq!(listed.len(), 2, "{backend}");
            assert!(listed.iter().any(|t| t.revoked_at == Some(NOW)), "{backend}");
        }
    }

    #[tokio::test]
    async fn registration_policy_narrows_what_import_accepts() {
        let (registry, _dir) = registry().await;
        // Without scope, the allowed scopes; generated id.
        let prepared = policy().prepare(&registry, web(), None).unwrap();
        assert_eq!(prepared.client().allowed_scopes(), ["openid", "profile", "email"]);
        assert_eq!(prepared.client().client_id().len(), 32);
        // The registry's own validation (shared with `client import`) applies with its codes.
        match policy().prepare(&registry, with("redirect_uris", json!(["http://rp.example.org/cb"])), None) {
            Err(RegistrationError::Metadata(e)) => assert_eq!(e.code.as_str(), "invalid_redirect_uri"),
            other => panic!("expected invalid_redirect_uri, got {:?}", other.map(|p| p.client().client_id().len())),
        }
        refused(&registry, with("grant_types", json!(["implicit"])), "implicit");
        refused(&registry, with("scope", json!("openid relationships")), "relationships");
        refused(&registry, with("first_party", json!(true)), "first_party");
        refused(&registry, with("access_token_audience", json!(["https://api"])), "access_token_audience");
        refused(&registry, with("access_token_lifetime", json!(60)), "administrators only");
        refused(&registry, with("id_token_signed_response_alg", json!("RS256")), "not enabled");
        let mut tls = with("token_endpoint_auth_method", json!("tls_client_auth"));
        tls.insert("tls_client_auth_subject_dn".into(), json!("CN=rp,O=Example"));
        refused(&registry, tls, "mTLS");
        refused(&registry, with("backchannel_logout_uri", json!("http://127.0.0.1/logout")), "https");
        let mut pkj = with("token_endpoint_auth_method", json!("private_key_jwt"));
        pkj.insert("jwks_uri".into(), json!("http://localhost/jwks"));
        refused(&registry, pkj, "jwks_uri must use https");
        let mut exchange = with("grant_types", json!(["authorization_code", crate::clients::TOKEN_EXCHANGE_GRANT]));
        exchange.insert("token_endpoint_auth_method".into(), json!("client_secret_basic"));
        refused(&registry, exchange, "token exchange");
        assert!(matches!(
            policy().prepare(&registry, with("software_statement", json!("eyJ...")), None),
            Err(RegistrationError::SoftwareStatement)
        ));
        // A native public client on loopback is fine.
        let native = json!({
            "application_type": "native", "token_endpoint_auth_method": "none",
            "redirect_uris": ["http://127.0.0.1/cb"], "scope": "openid"
        });
        assert!(policy().prepare(&registry, native.as_object().cloned().unwrap(), None).is_ok());
    }
}

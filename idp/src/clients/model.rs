//! A registered client: RFC 7591 metadata (plus OIDC Registration and Habilis extensions), parsed
//! and validated once into an immutable [`Client`] that requests share as `Arc<Client>`.
//!
//! Validation happens when a client is registered *and* every time a stored document is loaded, so
//! a rule tightened in a later version cannot be bypassed by data written earlier (such a client
//! is refused with a logged reason until an administrator fixes it).
//!
//! Unknown members are accepted and ignored, as RFC 7591 §2 asks of servers, but a known member of
//! the wrong JSON type is an error: silently ignoring `"redirect_uris": "https://…"` (a string, not
//! an array) would register a client that cannot log anyone in.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use josekit::jwk::{Jwk, JwkSet};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::{Host, Url};

use super::jose;
use crate::config::SigningAlg;

/// The longest `client_id` accepted. Identifiers travel in URLs, logs and cache keys.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// Scopes a client may request when its metadata has no `scope`.
pub const DEFAULT_SCOPE: &str = "openid profile email phone offline_access";

/// Upper bounds of the per-client lifetime overrides; the same as the server-wide settings
/// (`tokens.*` in the configuration), so a client cannot be configured beyond what the operator
/// could set globally.
pub(crate) const MAX_ACCESS_TOKEN_LIFETIME: u64 = 24 * 3600;
const MAX_REFRESH_IDLE_LIFETIME: u64 = 90 * 24 * 3600;
const MAX_REFRESH_ABSOLUTE_LIFETIME: u64 = 365 * 24 * 3600;

/// Members that belong to a registration *response* (or carry a secret): they are never kept in
/// the stored document.
const RESPONSE_ONLY_MEMBERS: &[&str] = &[
    "client_id",
    "client_secret",
    "client_id_issued_at",
    "client_secret_expires_at",
    "registration_access_token",
    "registration_client_uri",
];

/// RFC 7591 §3.2.2 error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataErrorCode {
    InvalidRedirectUri,
    InvalidClientMetadata,
}

impl MetadataErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            MetadataErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            MetadataErrorCode::InvalidClientMetadata => "invalid_client_metadata",
        }
    }
}

/// Why a metadata document was refused: an RFC 7591 code and a description that names the member
/// and says what to change. Shown as is to administrators (CLI, admin API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct ClientMetadataError {
    pub code: MetadataErrorCode,
    pub description: String,
}

impl ClientMetadataError {
    pub(crate) fn metadata(description: impl Into<String>) -> Self {
        ClientMetadataError { code: MetadataErrorCode::InvalidClientMetadata, description: description.into() }
    }
    fn redirect(description: impl Into<String>) -> Self {
        ClientMetadataError { code: MetadataErrorCode::InvalidRedirectUri, description: description.into() }
    }
}

type MetadataResult<T> = Result<T, ClientMetadataError>;

/// RFC 8693 §2.1.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Grant types Habilis implements. Anything else (implicit, password …) is refused at registration
/// rather than accepted and failing later at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
    /// RFC 8693 token exchange.
    TokenExchange,
}

impl GrantType {
    pub const ALL: [GrantType; 4] =
        [GrantType::AuthorizationCode, GrantType::RefreshToken, GrantType::ClientCredentials, GrantType::TokenExchange];
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::TokenExchange => TOKEN_EXCHANGE_GRANT,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// How a client authenticates at the token, PAR, introspection and revocation endpoints.
/// `client_secret_jwt` is deliberately absent: it needs the secret in clear on the server, while
/// Habilis keeps only a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    None,
    /// RFC 8705 §2.1: a certificate from a trusted CA (the card trust store) with the registered
    /// subject DN or subject alternative name, presented on the mTLS listener.
    TlsClientAuth,
    /// RFC 8705 §2.2: a self-signed certificate registered in the client's `jwks` (`x5c`).
    SelfSignedTlsClientAuth,
}

impl TokenEndpointAuthMethod {
    pub const ALL: [TokenEndpointAuthMethod; 6] = [
        TokenEndpointAuthMethod::ClientSecretBasic,
        TokenEndpointAuthMethod::ClientSecretPost,
        TokenEndpointAuthMethod::PrivateKeyJwt,
        TokenEndpointAuthMethod::None,
        TokenEndpointAuthMethod::TlsClientAuth,
        TokenEndpointAuthMethod::SelfSignedTlsClientAuth,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TokenEndpointAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenEndpointAuthMethod::ClientSecretPost => "client_secret_post",
            TokenEndpointAuthMethod::PrivateKeyJwt => "private_key_jwt",
            TokenEndpointAuthMethod::None => "none",
            TokenEndpointAuthMethod::TlsClientAuth => "tls_client_auth",
            TokenEndpointAuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
    /// Methods where the TLS client certificate is the credential (RFC 8705).
    pub fn uses_certificate(self) -> bool {
        matches!(self, TokenEndpointAuthMethod::TlsClientAuth | TokenEndpointAuthMethod::SelfSignedTlsClientAuth)
    }
    pub fn parse(s: &str) -> Option<Self> {
        TokenEndpointAuthMethod::ALL.into_iter().find(|m| m.as_str() == s)
    }
    /// Methods that prove possession of a client secret (whose hash the store keeps).
    pub fn uses_secret(self) -> bool {
        matches!(self, TokenEndpointAuthMethod::ClientSecretBasic | TokenEndpointAuthMethod::ClientSecretPost)
    }
}

impl fmt::Display for TokenEndpointAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OIDC Registration `application_type`: decides which redirect URIs are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationType {
    /// Runs on a server or in a browser: https redirect URIs (http only on loopback, for development).
    Web,
    /// Runs on the user's device (RFC 8252): loopback http with any port, private-use URI schemes,
    /// or claimed https URIs.
    Native,
}

impl ApplicationType {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationType::Web => "web",
            ApplicationType::Native => "native",
        }
    }
}

/// OIDC Core §8: the same `sub` for every client (`public`) or one per sector (`pairwise`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    Public,
    Pairwise,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::Public => "public",
            SubjectType::Pairwise => "pairwise",
        }
    }
}

/// Assurance levels of Habilis (see DOMAIN.md), ordered: `Eidas1 < Eidas2 < Eidas3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AcrLevel {
    /// Two factors, not phishing-resistant (password + one-time code).
    Eidas1,
    /// Phishing-resistant multi-factor (WebAuthn with user verification).
    Eidas2,
    /// Qualified hardware credential (CPS card + PIN, or Pro Santé Connect at eidas3).
    Eidas3,
}

impl AcrLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AcrLevel::Eidas1 => "eidas1",
            AcrLevel::Eidas2 => "eidas2",
            AcrLevel::Eidas3 => "eidas3",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "eidas1" => Some(AcrLevel::Eidas1),
            "eidas2" => Some(AcrLevel::Eidas2),
            "eidas3" => Some(AcrLevel::Eidas3),
            _ => None,
        }
    }
}

/// Where the keys that verify a client's `private_key_jwt` assertions come from. RFC 7591 forbids
/// registering both `jwks` and `jwks_uri`, so this is one or the other.
#[derive(Clone, Debug)]
pub enum ClientKeys {
    None,
    /// `jwks`: public keys inline in the metadata (JWKs parsed at registration).
    Inline(Vec<Jwk>),
    /// `jwks_uri`: fetched and cached (see the registry).
    Remote(Url),
}

/// A validated client. Immutable: a change in the store produces a new `Client`, swapped into the
/// registry as a whole, so a request never sees a half-updated client.
#[derive(Clone, Debug)]
pub struct Client {
    client_id: String,
    client_name: Option<String>,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    grant_types: Vec<GrantType>,
    response_types: Vec<String>,
    token_endpoint_auth_method: TokenEndpointAuthMethod,
    application_type: ApplicationType,
    scopes: Vec<String>,
    keys: ClientKeys,
    id_token_signed_response_alg: Option<SigningAlg>,
    userinfo_signed_response_alg: Option<SigningAlg>,
    token_endpoint_auth_signing_alg: Option<String>,
    backchannel_logout_uri: Option<Url>,
    backchannel_logout_session_required: bool,
    require_pushed_authorization_requests: bool,
    subject_type: SubjectType,
    sector_identifier: Option<String>,
    logo_uri: Option<Url>,
    client_uri: Option<Url>,
    policy_uri: Option<Url>,
    tos_uri: Option<Url>,
    contacts: Vec<String>,
    first_party: bool,
    minimum_acr: Option<AcrLevel>,
    access_token_audience: Vec<String>,
    /// Audiences this client may ask for in a token exchange (RFC 8693), besides narrowing a
    /// token for itself.
    token_exchange_audiences: Vec<String>,
    access_token_lifetime: Option<Duration>,
    refresh_token_idle_lifetime: Option<Duration>,
    refresh_token_absolute_lifetime: Option<Duration>,
    /// RFC 8705 `tls_client_auth`: the one certificate name the client registered.
    tls_client_auth_name: Option<CertificateName>,
    /// RFC 8705 `self_signed_tls_client_auth`: x5t#S256 of the certificates in `jwks` (`x5c`).
    self_signed_certificates: Vec<String>,
    metadata: Map<String, Value>,
}

/// The certificate name a `tls_client_auth` client registered (RFC 8705 §2.1.2: exactly one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateName {
    SubjectDn(String),
    SanDns(String),
    SanUri(String),
    SanIp(String),
    SanEmail(String),
}

/// The document as deserialised: every known member optional and typed, unknown members ignored
/// (no `deny_unknown_fields`, on purpose: RFC 7591 §2).
#[derive(Deserialize)]
struct RawMetadata {
    client_id: Option<String>,
    client_name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    post_logout_redirect_uris: Option<Vec<String>>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    application_type: Option<String>,
    scope: Option<String>,
    jwks: Option<Map<String, Value>>,
    tls_client_auth_subject_dn: Option<String>,
    tls_client_auth_san_dns: Option<String>,
    tls_client_auth_san_uri: Option<String>,
    tls_client_auth_san_ip: Option<String>,
    tls_client_auth_san_email: Option<String>,
    jwks_uri: Option<String>,
    id_token_signed_response_alg: Option<String>,
    userinfo_signed_response_alg: Option<String>,
    token_endpoint_auth_signing_alg: Option<String>,
    backchannel_logout_uri: Option<String>,
    backchannel_logout_session_required: Option<bool>,
    require_pushed_authorization_requests: Option<bool>,
    subject_type: Option<String>,
    sector_identifier_uri: Option<String>,
    logo_uri: Option<String>,
    client_uri: Option<String>,
    policy_uri: Option<String>,
    tos_uri: Option<String>,
    contacts: Option<Vec<String>>,
    // Habilis extensions.
    first_party: Option<bool>,
    minimum_acr: Option<String>,
    access_token_audience: Option<Vec<String>>,
    token_exchange_audiences: Option<Vec<String>>,
    access_token_lifetime: Option<u64>,
    refresh_token_idle_lifetime: Option<u64>,
    refresh_token_absolute_lifetime: Option<u64>,
    // Accepted at import (typed here so a wrong type is reported), never stored.
    #[allow(dead_code)]
    client_secret: Option<String>,
}

/// Checks the shape of a client identifier: 1 to 128 URL-unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`). Identifiers then need no encoding anywhere (URLs, Basic credentials,
/// logs) and contain no `:`, which keeps cache keys such as `jti:<client_id>:<jti>` unambiguous.
pub fn validate_client_id(client_id: &str) -> MetadataResult<()> {
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN {
        return Err(ClientMetadataError::metadata(format!(
            "client_id must be 1 to {MAX_CLIENT_ID_LEN} characters long"
        )));
    }
    if !client_id.bytes().all(is_unreserved) {
        return Err(ClientMetadataError::metadata(format!(
            "client_id `{}` may contain only letters, digits and - . _ ~",
            client_id.escape_debug()
        )));
    }
    Ok(())
}

/// RFC 3986 unreserved characters.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

impl Client {
    /// Parses and validates a stored (or submitted) metadata document for `client_id`.
    pub fn from_metadata(client_id: &str, metadata: &str) -> MetadataResult<Client> {
        let value: Value = serde_json::from_str(metadata)
            .map_err(|e| ClientMetadataError::metadata(format!("the client metadata is not valid JSON: {e}")))?;
        Client::from_value(client_id, value)
    }

    /// Validates a metadata document (a JSON object) for `client_id`. A `client_id` member, if
    /// present, must agree. Response-only members (`client_secret` …) are dropped from the
    /// document kept in [`Client::metadata`].
    pub fn from_value(client_id: &str, value: Value) -> MetadataResult<Client> {
        validate_client_id(client_id)?;
        let Value::Object(mut document) = value else {
            return Err(ClientMetadataError::metadata("the client metadata must be a JSON object"));
        };
        let raw: RawMetadata = serde_path_to_error::deserialize(Value::Object(document.clone())).map_err(|e| {
            let path = e.path().to_string();
            ClientMetadataError::metadata(format!("`{path}`: {}", e.into_inner()))
        })?;
        if let Some(inner) = &raw.client_id
            && inner != client_id
        {
            return Err(ClientMetadataError::metadata(format!(
                "the document's client_id `{}` differs from the client being registered (`{client_id}`)",
                inner.escape_debug()
            )));
        }
        for member in RESPONSE_ONLY_MEMBERS {
            document.remove(*member);
        }
        build(client_id, raw, document)
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }
    pub fn redirect_uris(&self) -> &[String] {
        &self.redirect_uris
    }
    pub fn post_logout_redirect_uris(&self) -> &[String] {
        &self.post_logout_redirect_uris
    }
    pub fn grant_types(&self) -> &[GrantType] {
        &self.grant_types
    }
    pub fn response_types(&self) -> &[String] {
        &self.response_types
    }
    pub fn token_endpoint_auth_method(&self) -> TokenEndpointAuthMethod {
        self.token_endpoint_auth_method
    }
    pub fn application_type(&self) -> ApplicationType {
        self.application_type
    }
    /// Scopes this client may request, in registration order, without duplicates. Requests for
    /// other scopes are the authorization endpoint's to refuse or narrow.
    pub fn allowed_scopes(&self) -> &[String] {
        &self.scopes
    }
    pub fn scope_allowed(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
    pub fn keys(&self) -> &ClientKeys {
        &self.keys
    }
    pub fn id_token_signed_response_alg(&self) -> Option<SigningAlg> {
        self.id_token_signed_response_alg
    }
    pub fn userinfo_signed_response_alg(&self) -> Option<SigningAlg> {
        self.userinfo_signed_response_alg
    }
    /// When set, `private_key_jwt` assertions signed with another algorithm are refused (OIDC
    /// Registration §2).
    pub fn token_endpoint_auth_signing_alg(&self) -> Option<&str> {
        self.token_endpoint_auth_signing_alg.as_deref()
    }
    pub fn backchannel_logout_uri(&self) -> Option<&Url> {
        self.backchannel_logout_uri.as_ref()
    }
    pub fn backchannel_logout_session_required(&self) -> bool {
        self.backchannel_logout_session_required
    }
    /// RFC 9126 §6: authorization requests must come through PAR.
    pub fn require_pushed_authorization_requests(&self) -> bool {
        self.require_pushed_authorization_requests
    }
    pub fn subject_type(&self) -> SubjectType {
        self.subject_type
    }
    /// For pairwise clients, the sector identifier (OIDC Core §8.1): the single host shared by
    /// every redirect URI (or the private-use scheme of a native app). `None` for public ones.
    pub fn sector_identifier(&self) -> Option<&str> {
        self.sector_identifier.as_deref()
    }
    pub fn logo_uri(&self) -> Option<&Url> {
        self.logo_uri.as_ref()
    }
    pub fn client_uri(&self) -> Option<&Url> {
        self.client_uri.as_ref()
    }
    pub fn policy_uri(&self) -> Option<&Url> {
        self.policy_uri.as_ref()
    }
    pub fn tos_uri(&self) -> Option<&Url> {
        self.tos_uri.as_ref()
    }
    pub fn contacts(&self) -> &[String] {
        &self.contacts
    }
    /// Habilis extension `first_party` (default `false`): an application run by the operator
    /// itself (e.g. the admin console). Consent is not asked: the user is already dealing with the
    /// operator, and a consent screen would only teach people to click through.
    pub fn tls_client_auth_name(&self) -> Option<&CertificateName> {
        self.tls_client_auth_name.as_ref()
    }
    pub fn self_signed_certificates(&self) -> &[String] {
        &self.self_signed_certificates
    }
    pub fn first_party(&self) -> bool {
        self.first_party
    }
    /// Habilis extension `minimum_acr` (`eidas1` | `eidas2` | `eidas3`, optional): the lowest
    /// assurance level this client ever accepts, whatever the request asks. Lets a sensitive
    /// application be protected even when its own `acr_values` are missing or weakened.
    pub fn minimum_acr(&self) -> Option<AcrLevel> {
        self.minimum_acr
    }
    /// Habilis extension `access_token_audience` (list of strings, default empty): the `aud` of
    /// access tokens issued to this client — the APIs (resource servers) it calls with them.
    pub fn access_token_audience(&self) -> &[String] {
        &self.access_token_audience
    }
    /// Habilis extension `token_exchange_audiences`: audiences a token exchange may target.
    pub fn token_exchange_audiences(&self) -> &[String] {
        &self.token_exchange_audiences
    }
    /// Habilis extension `access_token_lifetime` (seconds, optional, ≤ 24 h): overrides
    /// `tokens.access_token_lifetime` for this client, e.g. 120 s to match Pro Santé Connect.
    pub fn access_token_lifetime(&self) -> Option<Duration> {
        self.access_token_lifetime
    }
    /// Habilis extension `refresh_token_idle_lifetime` (seconds, optional, ≤ 90 days): overrides
    /// `tokens.refresh_token_idle_lifetime` for this client.
    pub fn refresh_token_idle_lifetime(&self) -> Option<Duration> {
        self.refresh_token_idle_lifetime
    }
    /// Habilis extension `refresh_token_absolute_lifetime` (seconds, optional, ≤ 365 days):
    /// overrides `tokens.refresh_token_absolute_lifetime` for this client. When only one of the
    /// two refresh lifetimes is overridden, callers should cap idle at absolute.
    pub fn refresh_token_absolute_lifetime(&self) -> Option<Duration> {
        self.refresh_token_absolute_lifetime
    }
    /// The metadata document as stored (without `client_id` and secrets); unknown members kept.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// Public client (`token_endpoint_auth_method: none`): it cannot keep a secret, so it proves
    /// nothing at the token endpoint and must use PKCE.
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == TokenEndpointAuthMethod::None
    }

    /// Whether the client registered `grant_type` (its RFC 6749 name). Unknown names: `false`.
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        GrantType::parse(grant_type).is_some_and(|g| self.grant_types.contains(&g))
    }

    pub fn allows_response_type(&self, response_type: &str) -> bool {
        self.response_types.iter().any(|r| r == response_type)
    }

    /// Whether `uri` may receive an authorization response: exact string comparison with a
    /// registered redirect URI (OAuth 2.0 Security BCP §4.1.3 — no normalisation, no prefix or
    /// wildcard matching). One exception, RFC 8252 §7.3: for a native client, a loopback IP
    /// literal URI (`http://127.0.0.1:PORT/…`, `http://[::1]:PORT/…`) matches a registered one that
    /// differs only by the port, because the app picks a free port at run time. `localhost` never
    /// gets this flexibility (RFC 8252 §8.3: its resolution is not guaranteed to be local), and
    /// web clients never do.
    pub fn redirect_uri_allowed(&self, uri: &str) -> bool {
        if self.redirect_uris.iter().any(|r| r == uri) {
            return true;
        }
        if self.application_type != ApplicationType::Native {
            return false;
        }
        let Some(requested) = split_loopback_port(uri) else {
            return false;
        };
        self.redirect_uris.iter().filter_map(|r| split_loopback_port(r)).any(|registered| registered == requested)
    }

    /// Whether `uri` may receive the user after logout: exact string comparison only.
    pub fn post_logout_redirect_uri_allowed(&self, uri: &str) -> bool {
        self.post_logout_redirect_uris.iter().any(|r| r == uri)
    }

    /// Checks what the metadata alone cannot: that the signing algorithms it asks for are among
    /// those enabled on this server (`keys.algorithms`). Every way of registering a client (the
    /// CLI, dynamic registration) runs it after [`Client::from_value`].
    pub fn check_enabled_algorithms(&self, enabled: &[SigningAlg]) -> MetadataResult<()> {
        let asked = [
            ("id_token_signed_response_alg", self.id_token_signed_response_alg),
            ("userinfo_signed_response_alg", self.userinfo_signed_response_alg),
        ];
        for (member, alg) in asked {
            if let Some(alg) = alg
                && !enabled.contains(&alg)
            {
                let names: Vec<&str> = enabled.iter().map(|a| a.as_str()).collect();
                return Err(ClientMetadataError::metadata(format!(
                    "{member} {} is not enabled on this server (keys.algorithms = [{}]); choose one of \
                     those, or have an administrator add it to keys.algorithms",
                    alg.as_str(),
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Splits a loopback IP literal http URI into (scheme + host, everything after the port):
/// `http://127.0.0.1:8400/cb?x` → `("http://127.0.0.1", "/cb?x")`. Works on the raw string so that
/// the rest is compared exactly, byte for byte. `None` for anything else, including a port outside
/// 1–65535 or a host that merely starts like a loopback address (`http://127.0.0.1.evil.example`).
fn split_loopback_port(uri: &str) -> Option<(&str, &str)> {
    let prefix_len = ["http://127.0.0.1", "http://[::1]"].into_iter().find(|p| uri.starts_with(p))?.len();
    let (host, after_host) = uri.split_at(prefix_len);
    let rest = match after_host.strip_prefix(':') {
        Some(port_and_rest) => {
            let end = port_and_rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(port_and_rest.len());
            let port: u16 = port_and_rest[..end].parse().ok()?;
            if port == 0 {
                return None;
            }
            &port_and_rest[end..]
        }
        None => after_host,
    };
    let authority_ends = rest.is_empty() || rest.starts_with('/') || rest.starts_with('?');
    if !authority_ends || rest.contains('#') {
        return None;
    }
    Some((host, rest))
}

fn build(client_id: &str, raw: RawMetadata, metadata: Map<String, Value>) -> MetadataResult<Client> {
    let grant_types = parse_grant_types(raw.grant_types.as_deref())?;
    let has_code = grant_types.contains(&GrantType::AuthorizationCode);
    let response_types = parse_response_types(raw.response_types.as_deref(), has_code)?;
    if grant_types.contains(&GrantType::RefreshToken) && !has_code {
        return Err(ClientMetadataError::metadata(
            "grant_types: refresh_token needs authorization_code (refresh tokens are issued only \
             with an authorization code; client_credentials never gets one)",
        ));
    }

    let token_endpoint_auth_method = match raw.token_endpoint_auth_method.as_deref() {
        None => TokenEndpointAuthMethod::ClientSecretBasic,
        Some(m) => TokenEndpointAuthMethod::parse(m).ok_or_else(|| {
            ClientMetadataError::metadata(format!(
                "token_endpoint_auth_method `{}` is not supported; use client_secret_basic, \
                 client_secret_post, private_key_jwt, tls_client_auth, self_signed_tls_client_auth or none{}",
                m.escape_debug(),
                if m == "client_secret_jwt" {
                    " (client_secret_jwt would need the secret in clear on the server)"
                } else {
                    ""
                }
            ))
        })?,
    };
    if token_endpoint_auth_method == TokenEndpointAuthMethod::None
        && grant_types.contains(&GrantType::ClientCredentials)
    {
        return Err(ClientMetadataError::metadata(
            "token_endpoint_auth_method none (a public client) cannot use the client_credentials \
             grant: a public client has no credential to prove who it is; use client_secret_basic \
             or private_key_jwt",
        ));
    }

    let application_type = match raw.application_type.as_deref() {
        None | Some("web") => ApplicationType::Web,
        Some("native") => ApplicationType::Native,
        Some(other) => {
            return Err(ClientMetadataError::metadata(format!(
                "application_type `{}` is not valid; use web or native",
                other.escape_debug()
            )));
        }
    };

    let redirect_uris = dedup(raw.redirect_uris.unwrap_or_default());
    for (i, uri) in redirect_uris.iter().enumerate() {
        validate_redirect_uri(&format!("redirect_uris[{i}]"), uri, application_type)?;
    }
    if has_code && redirect_uris.is_empty() {
        return Err(ClientMetadataError::redirect(
            "redirect_uris: the authorization_code grant needs at least one redirect URI",
        ));
    }
    let post_logout_redirect_uris = dedup(raw.post_logout_redirect_uris.unwrap_or_default());
    for (i, uri) in post_logout_redirect_uris.iter().enumerate() {
        validate_redirect_uri(&format!("post_logout_redirect_uris[{i}]"), uri, application_type)?;
    }

    let scopes = parse_scope(raw.scope.as_deref())?;

    if raw.jwks.is_some() && raw.jwks_uri.is_some() {
        return Err(ClientMetadataError::metadata(
            "jwks and jwks_uri must not both be present (RFC 7591 §2); keep one",
        ));
    }
    let token_endpoint_auth_signing_alg = match raw.token_endpoint_auth_signing_alg {
        None => None,
        Some(alg) if jose::ASSERTION_SIGNING_ALGS.contains(&alg.as_str()) => Some(alg),
        Some(alg) => {
            return Err(ClientMetadataError::metadata(format!(
                "token_endpoint_auth_signing_alg `{}` is not accepted; use one of {}",
                alg.escape_debug(),
                jose::ASSERTION_SIGNING_ALGS.join(", ")
            )));
        }
    };
    let self_signed_certificates = raw.jwks.as_ref().map(x5c_thumbprints).unwrap_or_default();
    let names = [
        raw.tls_client_auth_subject_dn.map(CertificateName::SubjectDn),
        raw.tls_client_auth_san_dns.map(CertificateName::SanDns),
        raw.tls_client_auth_san_uri.map(CertificateName::SanUri),
        raw.tls_client_auth_san_ip.map(CertificateName::SanIp),
        raw.tls_client_auth_san_email.map(CertificateName::SanEmail),
    ];
    let mut names: Vec<CertificateName> = names.into_iter().flatten().collect();
    let tls_client_auth_name = match token_endpoint_auth_method {
        TokenEndpointAuthMethod::TlsClientAuth if names.len() == 1 => names.pop(),
        TokenEndpointAuthMethod::TlsClientAuth => {
            return Err(ClientMetadataError::metadata(
                "tls_client_auth needs exactly one of tls_client_auth_subject_dn, tls_client_auth_san_dns, \
                 tls_client_auth_san_uri, tls_client_auth_san_ip, tls_client_auth_san_email (RFC 8705 §2.1.2)",
            ));
        }
        _ => None,
    };
    if token_endpoint_auth_method == TokenEndpointAuthMethod::SelfSignedTlsClientAuth
        && self_signed_certificates.is_empty()
    {
        return Err(ClientMetadataError::metadata(
            "self_signed_tls_client_auth needs the client's certificate in jwks: a JWK with x5c \
             (base64 DER of the self-signed certificate); jwks_uri is not accepted for this method",
        ));
    }
    let keys = match (raw.jwks, raw.jwks_uri) {
        (Some(jwks), _) => ClientKeys::Inline(parse_jwks(jwks, token_endpoint_auth_signing_alg.as_deref())?),
        (None, Some(uri)) => ClientKeys::Remote(parse_https_url("jwks_uri", &uri, false)?),
        (None, None) => ClientKeys::None,
    };
    if token_endpoint_auth_method == TokenEndpointAuthMethod::PrivateKeyJwt {
        match &keys {
            ClientKeys::None => {
                return Err(ClientMetadataError::metadata(
                    "token_endpoint_auth_method private_key_jwt needs the client's public keys: \
                     add jwks (inline JWK set) or jwks_uri",
                ));
            }
            ClientKeys::Inline(keys) if keys.iter().all(jose::is_not_for_signatures) => {
                return Err(ClientMetadataError::metadata(
                    "jwks: private_key_jwt needs at least one signing key (no `use` or `use: sig`)",
                ));
            }
            _ => {}
        }
    }

    let id_token_signed_response_alg =
        parse_signing_alg("id_token_signed_response_alg", raw.id_token_signed_response_alg)?;
    let userinfo_signed_response_alg =
        parse_signing_alg("userinfo_signed_response_alg", raw.userinfo_signed_response_alg)?;

    let backchannel_logout_uri =
        raw.backchannel_logout_uri.map(|u| parse_https_url("backchannel_logout_uri", &u, false)).transpose()?;

    let subject_type = match raw.subject_type.as_deref() {
        None | Some("public") => SubjectType::Public,
        Some("pairwise") => SubjectType::Pairwise,
        Some(other) => {
            return Err(ClientMetadataError::metadata(format!(
                "subject_type `{}` is not valid; use public or pairwise",
                other.escape_debug()
            )));
        }
    };
    if raw.sector_identifier_uri.is_some() {
        return Err(ClientMetadataError::metadata(
            "sector_identifier_uri is not supported: a pairwise client's sector is the single host \
             of its redirect_uris; remove sector_identifier_uri",
        ));
    }
    let sector_identifier = match subject_type {
        SubjectType::Public => None,
        SubjectType::Pairwise => Some(sector_of(&redirect_uris)?),
    };

    let logo_uri = optional_https_url("logo_uri", raw.logo_uri)?;
    let client_uri = optional_https_url("client_uri", raw.client_uri)?;
    let policy_uri = optional_https_url("policy_uri", raw.policy_uri)?;
    let tos_uri = optional_https_url("tos_uri", raw.tos_uri)?;

    let contacts = raw.contacts.unwrap_or_default();
    if let Some(i) = contacts.iter().position(|c| c.trim().is_empty()) {
        return Err(ClientMetadataError::metadata(format!("contacts[{i}] is empty; list e-mail addresses")));
    }

    let minimum_acr = match raw.minimum_acr.as_deref() {
        None => None,
        Some(s) => Some(AcrLevel::parse(s).ok_or_else(|| {
            ClientMetadataError::metadata(format!(
                "minimum_acr `{}` is not valid; use eidas1, eidas2 or eidas3",
                s.escape_debug()
            ))
        })?),
    };

    let access_token_audience = dedup(raw.access_token_audience.unwrap_or_default());
    if let Some(i) = access_token_audience
        .iter()
        .position(|a| a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ClientMetadataError::metadata(format!(
            "access_token_audience[{i}] must be a non-empty identifier without spaces (usually the \
             API's URL)"
        )));
    }

    let token_exchange_audiences = dedup(raw.token_exchange_audiences.unwrap_or_default());
    if let Some(i) = token_exchange_audiences
        .iter()
        .position(|a| a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ClientMetadataError::metadata(format!(
            "token_exchange_audiences[{i}] must be a non-empty identifier without spaces (a client_id or \
             an API's URL)"
        )));
    }
    if grant_types.contains(&GrantType::TokenExchange) && token_endpoint_auth_method == TokenEndpointAuthMethod::None {
        return Err(ClientMetadataError::metadata(
            "a public client (token_endpoint_auth_method none) cannot use token exchange",
        ));
    }

    let access_token_lifetime =
        lifetime("access_token_lifetime", raw.access_token_lifetime, MAX_ACCESS_TOKEN_LIFETIME)?;
    let refresh_token_idle_lifetime =
        lifetime("refresh_token_idle_lifetime", raw.refresh_token_idle_lifetime, MAX_REFRESH_IDLE_LIFETIME)?;
    let refresh_token_absolute_lifetime = lifetime(
        "refresh_token_absolute_lifetime",
        raw.refresh_token_absolute_lifetime,
        MAX_REFRESH_ABSOLUTE_LIFETIME,
    )?;
    if let (Some(idle), Some(absolute)) = (refresh_token_idle_lifetime, refresh_token_absolute_lifetime)
        && idle > absolute
    {
        return Err(ClientMetadataError::metadata(
            "refresh_token_idle_lifetime must not exceed refresh_token_absolute_lifetime",
        ));
    }

    Ok(Client {
        client_id: client_id.to_string(),
        client_name: raw.client_name.filter(|n| !n.trim().is_empty()),
        redirect_uris,
        post_logout_redirect_uris,
        grant_types,
        response_types,
        token_endpoint_auth_method,
        application_type,
        scopes,
        keys,
        id_token_signed_response_alg,
        userinfo_signed_response_alg,
        token_endpoint_auth_signing_alg,
        backchannel_logout_uri,
        backchannel_logout_session_required: raw.backchannel_logout_session_required.unwrap_or(false),
        require_pushed_authorization_requests: raw.require_pushed_authorization_requests.unwrap_or(false),
        subject_type,
        sector_identifier,
        logo_uri,
        client_uri,
        policy_uri,
        tos_uri,
        contacts,
        first_party: raw.first_party.unwrap_or(false),
        minimum_acr,
        access_token_audience,
        token_exchange_audiences,
        access_token_lifetime,
        refresh_token_idle_lifetime,
        refresh_token_absolute_lifetime,
        tls_client_auth_name,
        self_signed_certificates,
        metadata,
    })
}

/// The x5t#S256 thumbprints of the first certificate of every `x5c` in a JWK set.
fn x5c_thumbprints(jwks: &Map<String, Value>) -> Vec<String> {
    use base64::Engine;
    let keys = jwks.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
    keys.iter()
        .filter_map(|k| k.get("x5c")?.as_array()?.first()?.as_str().map(str::to_string))
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(|der| crate::cps::certificate::fingerprint(&der))
        .collect()
}

/// Removes duplicates, keeping the first occurrence (order matters for display only).
fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

fn parse_grant_types(grant_types: Option<&[String]>) -> MetadataResult<Vec<GrantType>> {
    let Some(names) = grant_types else {
        return Ok(vec![GrantType::AuthorizationCode]);
    };
    if names.is_empty() {
        return Err(ClientMetadataError::metadata(
            "grant_types is empty; list at least one of authorization_code, refresh_token, \
             client_credentials (or omit it for authorization_code)",
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let grant = GrantType::parse(name).ok_or_else(|| {
            ClientMetadataError::metadata(format!(
                "grant_types: `{}` is not supported; use authorization_code, refresh_token, \
                 client_credentials or urn:ietf:params:oauth:grant-type:token-exchange",
                name.escape_debug()
            ))
        })?;
        if !out.contains(&grant) {
            out.push(grant);
        }
    }
    Ok(out)
}

/// Only `code` exists here (no implicit or hybrid flows: OAuth 2.0 Security BCP §2.1.2). The
/// default follows the grant types, as RFC 7591 §2.1 ties `code` to `authorization_code`.
fn parse_response_types(response_types: Option<&[String]>, has_code: bool) -> MetadataResult<Vec<String>> {
    let Some(types) = response_types else {
        return Ok(if has_code { vec!["code".to_string()] } else { Vec::new() });
    };
    if let Some(other) = types.iter().find(|t| t.as_str() != "code") {
        return Err(ClientMetadataError::metadata(format!(
            "response_types: `{}` is not supported; only `code` is (no implicit or hybrid flows)",
            other.escape_debug()
        )));
    }
    let wants_code = !types.is_empty();
    if wants_code != has_code {
        return Err(ClientMetadataError::metadata(if has_code {
            "response_types must contain `code` when grant_types contains authorization_code"
        } else {
            "response_types `code` needs the authorization_code grant in grant_types"
        }));
    }
    Ok(if wants_code { vec!["code".to_string()] } else { Vec::new() })
}

/// RFC 6749 §3.3: space-delimited tokens of NQCHAR (`%x21 / %x23-5B / %x5D-7E`).
fn parse_scope(scope: Option<&str>) -> MetadataResult<Vec<String>> {
    let scope = scope.unwrap_or(DEFAULT_SCOPE);
    let mut out: Vec<String> = Vec::new();
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        let valid = token.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if !valid {
            return Err(ClientMetadataError::metadata(format!(
                "scope: `{}` is not a valid scope token (printable ASCII without spaces, quotes or \
                 backslashes; separate scopes with single spaces)",
                token.escape_debug()
            )));
        }
        if !out.iter().any(|s| s == token) {
            out.push(token.to_string());
        }
    }
    if out.is_empty() {
        return Err(ClientMetadataError::metadata(
            "scope is empty; list the scopes this client may request, separated by spaces (or \
             omit it for the default)",
        ));
    }
    Ok(out)
}

fn parse_signing_alg(member: &str, alg: Option<String>) -> MetadataResult<Option<SigningAlg>> {
    match alg {
        None => Ok(None),
        Some(a) => SigningAlg::parse(&a).map(Some).ok_or_else(|| {
            ClientMetadataError::metadata(format!(
                "{member} `{}` is not supported; use ES256, RS256 or EdDSA",
                a.escape_debug()
            ))
        }),
    }
}

fn lifetime(member: &str, seconds: Option<u64>, max: u64) -> MetadataResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(0) => Err(ClientMetadataError::metadata(format!(
            "{member} must be greater than zero (in seconds), or omitted for the server default"
        ))),
        Some(s) if s > max => Err(ClientMetadataError::metadata(format!("{member} must be at most {max} seconds"))),
        Some(s) => Ok(Some(Duration::from_secs(s))),
    }
}

fn is_loopback_host(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip == Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
        None => false,
    }
}

/// `url` silently strips leading/trailing spaces and removes tabs and newlines while parsing, so
/// the raw string is checked first: the registered string must be exactly what gets compared.
fn check_raw(member: &str, raw: &str, redirect: bool) -> MetadataResult<()> {
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        let message = format!("{member} `{}` contains spaces or control characters", raw.escape_debug());
        return Err(if redirect {
            ClientMetadataError::redirect(message)
        } else {
            ClientMetadataError::metadata(message)
        });
    }
    Ok(())
}

/// The redirect URI rules (OAuth 2.0 Security BCP, RFC 8252, OIDC Registration §2):
/// absolute, no fragment, no user information; web clients use https (http only on loopback, for
/// development); native clients use loopback http, https, or a private-use scheme that is a
/// reverse domain name (`com.example.app:/callback`).
fn validate_redirect_uri(member: &str, raw: &str, app: ApplicationType) -> MetadataResult<()> {
    check_raw(member, raw, true)?;
    let shown = raw.escape_debug();
    let url = Url::parse(raw)
        .map_err(|e| ClientMetadataError::redirect(format!("{member} `{shown}` is not an absolute URI ({e})")))?;
    if url.fragment().is_some() {
        return Err(ClientMetadataError::redirect(format!("{member} `{shown}` must not contain a fragment (#…)")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientMetadataError::redirect(format!(
            "{member} `{shown}` must not contain user information (user@)"
        )));
    }
    match (url.scheme(), app) {
        ("https", _) => Ok(()),
        ("http", _) if is_loopback_host(url.host()) => Ok(()),
        ("http", ApplicationType::Web) => Err(ClientMetadataError::redirect(format!(
            "{member} `{shown}`: web clients must use https (http is allowed only on localhost, \
             127.0.0.1 or [::1], for development)"
        ))),
        ("http", ApplicationType::Native) => Err(ClientMetadataError::redirect(format!(
            "{member} `{shown}`: native clients may use http only on a loopback address \
             (127.0.0.1 or [::1], RFC 8252 §7.3)"
        ))),
        (_, ApplicationType::Web) => Err(ClientMetadataError::redirect(format!(
            "{member} `{shown}`: web clients must use https; private-use schemes are for \
             application_type native"
        ))),
        (scheme, ApplicationType::Native) if scheme.contains('.') => Ok(()),
        (scheme, ApplicationType::Native) => Err(ClientMetadataError::redirect(format!(
            "{member} `{shown}`: the private-use scheme `{scheme}` must be a reverse domain name \
             with a dot, e.g. com.example.app:/callback (RFC 8252 §7.1)"
        ))),
    }
}

/// A URL the server or the user's browser will fetch or follow (jwks_uri, logo, policy …):
/// absolute https; http only on loopback (development, tests). `fragment_ok` for pages people read.
fn parse_https_url(member: &str, raw: &str, fragment_ok: bool) -> MetadataResult<Url> {
    check_raw(member, raw, false)?;
    let shown = raw.escape_debug();
    let url = Url::parse(raw)
        .map_err(|e| ClientMetadataError::metadata(format!("{member} `{shown}` is not an absolute URL ({e})")))?;
    let secure = url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(url.host()));
    if !secure {
        return Err(ClientMetadataError::metadata(format!(
            "{member} `{shown}` must use https (http only on localhost, 127.0.0.1 or [::1])"
        )));
    }
    if !fragment_ok && url.fragment().is_some() {
        return Err(ClientMetadataError::metadata(format!("{member} `{shown}` must not contain a fragment (#…)")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientMetadataError::metadata(format!(
            "{member} `{shown}` must not contain user information (user@)"
        )));
    }
    Ok(url)
}

fn optional_https_url(member: &str, raw: Option<String>) -> MetadataResult<Option<Url>> {
    raw.map(|u| parse_https_url(member, &u, true)).transpose()
}

/// OIDC Core §8.1: without a `sector_identifier_uri`, the sector is the host of the redirect URIs,
/// so they must all share one (otherwise the same user would get different `sub` values depending
/// on the redirect URI used).
fn sector_of(redirect_uris: &[String]) -> MetadataResult<String> {
    let mut sectors = BTreeSet::new();
    for uri in redirect_uris {
        // Already validated as absolute URIs.
        if let Ok(url) = Url::parse(uri) {
            let sector = match url.host_str() {
                Some(host) => host.to_ascii_lowercase(),
                None => url.scheme().to_string(),
            };
            sectors.insert(sector);
        }
    }
    let mut sectors = sectors.into_iter();
    match (sectors.next(), sectors.next()) {
        (Some(sector), None) => Ok(sector),
        (None, _) => Err(ClientMetadataError::metadata(
            "subject_type pairwise needs redirect_uris: the pairwise sector is their host",
        )),
        (Some(a), Some(b)) => Err(ClientMetadataError::metadata(format!(
            "subject_type pairwise needs all redirect_uris on a single host (found {a}, {b} …): \
             sector_identifier_uri is not supported; register one client per host or use \
             subject_type public"
        ))),
    }
}

/// Parses an inline JWK set: public keys only, each usable (for signing keys: a verifier can be
/// built for its algorithm — and for `token_endpoint_auth_signing_alg` when that is set).
fn parse_jwks(jwks: Map<String, Value>, required_alg: Option<&str>) -> MetadataResult<Vec<Jwk>> {
    let set = JwkSet::from_map(jwks)
        .map_err(|e| ClientMetadataError::metadata(format!("jwks is not a valid JWK set: {e}")))?;
    let keys: Vec<Jwk> = set.keys().into_iter().cloned().collect();
    if keys.is_empty() {
        return Err(ClientMetadataError::metadata("jwks has no keys; add the client's public signing key(s)"));
    }
    let mut usable_for_required = required_alg.is_none();
    for (i, jwk) in keys.iter().enumerate() {
        let name = match jwk.key_id() {
            Some(kid) => format!("jwks.keys[{i}] (kid `{}`)", kid.escape_debug()),
            None => format!("jwks.keys[{i}]"),
        };
        if jose::has_private_members(jwk) {
            return Err(ClientMetadataError::metadata(format!(
                "{name} contains private or symmetric key material: register only the public key \
                 (and treat this private key as compromised)"
            )));
        }
        if jose::is_not_for_signatures(jwk) {
            continue;
        }
        let alg = match jwk.algorithm() {
            Some(alg) => alg,
            None => jose::default_alg_of(jwk).ok_or_else(|| {
                ClientMetadataError::metadata(format!(
                    "{name}: key type `{}` (curve {:?}) is not supported; use EC P-256/P-384/P-521, \
                     RSA or Ed25519",
                    jwk.key_type(),
                    jwk.curve()
                ))
            })?,
        };
        jose::verifier_for(alg, jwk)
            .map_err(|e| ClientMetadataError::metadata(format!("{name} is not a usable {alg} key: {e}")))?;
        if let Some(required) = required_alg
            && jose::verifier_for(required, jwk).is_ok()
        {
            usable_for_required = true;
        }
    }
    if !usable_for_required {
        return Err(ClientMetadataError::metadata(format!(
            "jwks has no key usable with token_endpoint_auth_signing_alg {}",
            required_alg.unwrap_or_default()
        )));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> MetadataResult<Client> {
        Client::from_value("app", value)
    }

    fn web() -> Value {
        json!({ "redirect_uris": ["https://app.example.org/cb"] })
    }

    fn with(base: Value, member: &str, value: Value) -> Value {
        let mut base = base;
        base[member] = value;
        base
    }

    #[track_caller]
    fn refused(value: Value, code: MetadataErrorCode, needle: &str) {
        match parse(value) {
            Ok(_) => panic!("accepted, expected {} mentioning `{needle}`", code.as_str()),
            Err(e) => {
                assert_eq!(e.code, code, "{e}");
                assert!(e.description.contains(needle), "`{}` does not mention `{needle}`", e.description);
            }
        }
    }

    fn es256_public_jwk() -> Value {
        let pair = josekit::jws::ES256.generate_key_pair().unwrap();
        let mut jwk = pair.to_jwk_public_key();
        jwk.set_key_id("k1");
        Value::Object(jwk.as_ref().clone())
    }

    #[test]
    fn defaults() {
        let client = parse(web()).unwrap();
        assert_eq!(client.client_id(), "app");
        assert_eq!(client.grant_types(), &[GrantType::AuthorizationCode]);
        assert_eq!(client.response_types(), &["code".to_string()]);
        assert_eq!(client.token_endpoint_auth_method(), TokenEndpointAuthMethod::ClientSecretBasic);
        assert_eq!(client.application_type(), ApplicationType::Web);
        assert_eq!(client.allowed_scopes(), &["openid", "profile", "email", "phone", "offline_access"]);
        assert_eq!(client.subject_type(), SubjectType::Public);
        assert!(!client.is_public());
        assert!(!client.first_party());
        assert!(!client.require_pushed_authorization_requests());
        assert!(client.minimum_acr().is_none());
        assert!(client.allows_grant("authorization_code"));
        assert!(!client.allows_grant("refresh_token"));
        assert!(!client.allows_grant("password"));
        assert!(client.allows_response_type("code"));
    }

    #[test]
    fn full_document_with_extensions() {
        let client = parse(json!({
            "client_id": "app",
            "client_name": "Téléconsultation",
            "redirect_uris": ["https://app.example.org/cb", "https://app.example.org/cb"],
            "post_logout_redirect_uris": ["https://app.example.org/bye"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256",
            "jwks": { "keys": [es256_public_jwk()] },
            "scope": "openid scope_all",
            "id_token_signed_response_alg": "RS256",
            "userinfo_signed_response_alg": "EdDSA",
            "backchannel_logout_uri": "https://app.example.org/bc",
            "backchannel_logout_session_required": true,
            "require_pushed_authorization_requests": true,
            "subject_type": "pairwise",
            "logo_uri": "https://app.example.org/logo.png",
            "tos_uri": "https://app.example.org/tos#fr",
            "contacts": ["ops@example.org"],
            "first_party": true,
            "minimum_acr": "eidas2",
            "access_token_audience": ["https://api.example.org"],
            "access_token_lifetime": 120,
            "refresh_token_idle_lifetime": 1800,
            "refresh_token_absolute_lifetime": 36000,
            "client_secret": "never stored",
            "software_statement_whatever": {"ignored": true}
        }))
        .unwrap();
        assert_eq!(client.redirect_uris().len(), 1, "duplicates removed");
        assert_eq!(client.allowed_scopes(), &["openid", "scope_all"]);
        assert!(matches!(client.keys(), ClientKeys::Inline(k) if k.len() == 1));
        assert_eq!(client.token_endpoint_auth_signing_alg(), Some("ES256"));
        assert_eq!(client.id_token_signed_response_alg(), Some(SigningAlg::RS256));
        assert_eq!(client.userinfo_signed_response_alg(), Some(SigningAlg::EdDSA));
        assert_eq!(client.sector_identifier(), Some("app.example.org"));
        assert_eq!(client.minimum_acr(), Some(AcrLevel::Eidas2));
        assert!(AcrLevel::Eidas3 > AcrLevel::Eidas2);
        assert!(client.first_party());
        assert!(client.backchannel_logout_session_required());
        assert_eq!(client.access_token_lifetime(), Some(Duration::from_secs(120)));
        assert!(client.allows_grant("refresh_token"));
        // The stored document keeps unknown members but never the client_id or a secret.
        assert!(client.metadata().contains_key("software_statement_whatever"));
        assert!(!client.metadata().contains_key("client_secret"));
        assert!(!client.metadata().contains_key("client_id"));
    }

    #[test]
    fn not_an_object_or_wrong_types_are_refused_with_the_member_named() {
        refused(json!(["x"]), MetadataErrorCode::InvalidClientMetadata, "JSON object");
        refused(
            json!({ "redirect_uris": "https://app.example.org/cb" }),
            MetadataErrorCode::InvalidClientMetadata,
            "redirect_uris",
        );
        refused(json!({ "redirect_uris": [3] }), MetadataErrorCode::InvalidClientMetadata, "redirect_uris[0]");
        refused(with(web(), "first_party", json!("yes")), MetadataErrorCode::InvalidClientMetadata, "first_party");
        refused(
            with(web(), "access_token_lifetime", json!(-5)),
            MetadataErrorCode::InvalidClientMetadata,
            "access_token_lifetime",
        );
        assert!(Client::from_metadata("app", "{not json").is_err());
    }

    #[test]
    fn unknown_members_are_ignored() {
        let client = parse(with(web(), "frontchannel_logout_uri", json!(42))).unwrap();
        assert_eq!(client.metadata()["frontchannel_logout_uri"], json!(42));
        let client = parse(with(web(), "client_name#fr", json!("Appli"))).unwrap();
        assert!(client.client_name().is_none());
    }

    #[test]
    fn client_id_shape_and_agreement() {
        assert!(Client::from_value("", web()).is_err());
        assert!(Client::from_value("a:b", web()).is_err());
        assert!(Client::from_value("a b", web()).is_err());
        assert!(Client::from_value(&"a".repeat(129), web()).is_err());
        assert!(Client::from_value("a-B.c_d~9", web()).is_ok());
        refused(with(web(), "client_id", json!("other")), MetadataErrorCode::InvalidClientMetadata, "differs");
    }

    #[test]
    fn redirect_uris_must_be_absolute_without_fragment_or_userinfo() {
        let uri = |u: &str| json!({ "redirect_uris": [u] });
        refused(uri("/cb"), MetadataErrorCode::InvalidRedirectUri, "absolute");
        refused(uri("app.example.org/cb"), MetadataErrorCode::InvalidRedirectUri, "absolute");
        refused(uri("https://app.example.org/cb#x"), MetadataErrorCode::InvalidRedirectUri, "fragment");
        refused(uri("https://app.example.org/cb#"), MetadataErrorCode::InvalidRedirectUri, "fragment");
        refused(uri("https://user@app.example.org/cb"), MetadataErrorCode::InvalidRedirectUri, "user information");
        refused(uri(" https://app.example.org/cb"), MetadataErrorCode::InvalidRedirectUri, "spaces");
        refused(uri("https://app.example.org/c\nb"), MetadataErrorCode::InvalidRedirectUri, "control");
        assert!(parse(uri("https://app.example.org/cb?tenant=1")).is_ok());
    }

    #[test]
    fn web_clients_use_https_except_on_loopback() {
        let uri = |u: &str| json!({ "redirect_uris": [u] });
        refused(uri("http://app.example.org/cb"), MetadataErrorCode::InvalidRedirectUri, "https");
        refused(uri("com.example.app:/cb"), MetadataErrorCode::InvalidRedirectUri, "native");
        refused(uri("javascript:alert(1)"), MetadataErrorCode::InvalidRedirectUri, "https");
        for ok in [
            "http://localhost:3000/cb",
            "http://127.0.0.1:3000/cb",
            "http://[::1]:3000/cb",
            "https://app.example.org/cb",
        ] {
            assert!(parse(uri(ok)).is_ok(), "{ok}");
        }
        // Loopback means these exact hosts, not look-alikes.
        refused(uri("http://127.0.0.2/cb"), MetadataErrorCode::InvalidRedirectUri, "https");
        refused(uri("http://localhost.example.org/cb"), MetadataErrorCode::InvalidRedirectUri, "https");
    }

    #[test]
    fn native_clients_use_loopback_http_private_schemes_or_https() {
        let native = |u: &str| json!({ "application_type": "native", "redirect_uris": [u] });
        for ok in [
            "http://127.0.0.1/cb",
            "http://[::1]:8080/cb",
            "http://localhost/cb",
            "com.example.app:/oauth2redirect",
            "fr.sante.app://cb",
            "https://app.example.org/cb",
        ] {
            assert!(parse(native(ok)).is_ok(), "{ok}");
        }
        refused(native("http://app.example.org/cb"), MetadataErrorCode::InvalidRedirectUri, "loopback");
        refused(native("myapp:/cb"), MetadataErrorCode::InvalidRedirectUri, "reverse domain");
        refused(native("javascript:alert(1)"), MetadataErrorCode::InvalidRedirectUri, "reverse domain");
        refused(native("com.example.app:/cb#frag"), MetadataErrorCode::InvalidRedirectUri, "fragment");
        refused(
            json!({ "application_type": "desktop", "redirect_uris": ["https://a.example/cb"] }),
            MetadataErrorCode::InvalidClientMetadata,
            "application_type",
        );
    }

    #[test]
    fn post_logout_redirect_uris_follow_the_same_rules() {
        refused(
            with(web(), "post_logout_redirect_uris", json!(["http://app.example.org/bye"])),
            MetadataErrorCode::InvalidRedirectUri,
            "post_logout_redirect_uris[0]",
        );
        assert!(parse(with(web(), "post_logout_redirect_uris", json!(["https://app.example.org/bye"]))).is_ok());
    }

    #[test]
    fn authorization_code_needs_a_redirect_uri() {
        refused(json!({}), MetadataErrorCode::InvalidRedirectUri, "at least one");
        refused(json!({ "redirect_uris": [] }), MetadataErrorCode::InvalidRedirectUri, "at least one");
        // A machine-to-machine client needs none.
        let m2m = parse(json!({ "grant_types": ["client_credentials"] })).unwrap();
        assert!(m2m.response_types().is_empty());
        assert!(m2m.allows_grant("client_credentials"));
    }

    #[test]
    fn grant_and_response_types() {
        refused(with(web(), "grant_types", json!(["implicit"])), MetadataErrorCode::InvalidClientMetadata, "implicit");
        refused(with(web(), "grant_types", json!([])), MetadataErrorCode::InvalidClientMetadata, "empty");
        refused(
            with(web(), "grant_types", json!(["refresh_token"])),
            MetadataErrorCode::InvalidClientMetadata,
            "refresh_token needs authorization_code",
        );
        refused(
            with(web(), "response_types", json!(["code id_token"])),
            MetadataErrorCode::InvalidClientMetadata,
            "only `code`",
        );
        refused(
            with(web(), "response_types", json!(["token"])),
            MetadataErrorCode::InvalidClientMetadata,
            "only `code`",
        );
        refused(
            with(web(), "response_types", json!([])),
            MetadataErrorCode::InvalidClientMetadata,
            "must contain `code`",
        );
        refused(
            json!({ "grant_types": ["client_credentials"], "response_types": ["code"] }),
            MetadataErrorCode::InvalidClientMetadata,
            "needs the authorization_code grant",
        );
        assert!(parse(with(web(), "response_types", json!(["code"]))).is_ok());
    }

    #[test]
    fn auth_methods() {
        refused(
            with(web(), "token_endpoint_auth_method", json!("client_secret_jwt")),
            MetadataErrorCode::InvalidClientMetadata,
            "client_secret_jwt",
        );
        refused(
            with(web(), "token_endpoint_auth_method", json!("tls_client_auth")),
            MetadataErrorCode::InvalidClientMetadata,
            "exactly one of tls_client_auth_subject_dn",
        );
        let mut tls = with(web(), "token_endpoint_auth_method", json!("tls_client_auth"));
        tls["tls_client_auth_subject_dn"] = json!("CN=App,O=Hôpital");
        let tls = parse(tls).unwrap();
        assert_eq!(tls.tls_client_auth_name(), Some(&CertificateName::SubjectDn("CN=App,O=Hôpital".into())));
        assert!(!tls.token_endpoint_auth_method().uses_secret());
        let mut two = with(web(), "token_endpoint_auth_method", json!("tls_client_auth"));
        two["tls_client_auth_subject_dn"] = json!("CN=App");
        two["tls_client_auth_san_dns"] = json!("app.example.org");
        refused(two, MetadataErrorCode::InvalidClientMetadata, "exactly one");
        refused(
            with(web(), "token_endpoint_auth_method", json!("self_signed_tls_client_auth")),
            MetadataErrorCode::InvalidClientMetadata,
            "x5c",
        );
        let public = parse(with(web(), "token_endpoint_auth_method", json!("none"))).unwrap();
        assert!(public.is_public());
        refused(
            json!({
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "client_credentials"],
                "redirect_uris": ["https://app.example.org/cb"],
            }),
            MetadataErrorCode::InvalidClientMetadata,
            "client_credentials",
        );
        assert!(parse(with(web(), "token_endpoint_auth_method", json!("client_secret_post"))).is_ok());
    }

    #[test]
    fn private_key_jwt_needs_exactly_one_key_source() {
        let pkj = with(web(), "token_endpoint_auth_method", json!("private_key_jwt"));
        refused(pkj.clone(), MetadataErrorCode::InvalidClientMetadata, "jwks");
        let inline = with(pkj.clone(), "jwks", json!({ "keys": [es256_public_jwk()] }));
        assert!(matches!(parse(inline.clone()).unwrap().keys(), ClientKeys::Inline(_)));
        let remote = with(pkj.clone(), "jwks_uri", json!("https://app.example.org/jwks"));
        assert!(matches!(parse(remote).unwrap().keys(), ClientKeys::Remote(_)));
        refused(
            with(inline, "jwks_uri", json!("https://app.example.org/jwks")),
            MetadataErrorCode::InvalidClientMetadata,
            "both",
        );
        refused(
            with(pkj.clone(), "jwks_uri", json!("http://app.example.org/jwks")),
            MetadataErrorCode::InvalidClientMetadata,
            "https",
        );
        refused(with(pkj.clone(), "jwks", json!({ "keys": [] })), MetadataErrorCode::InvalidClientMetadata, "no keys");
        refused(
            with(pkj.clone(), "jwks", json!({ "keys": "nope" })),
            MetadataErrorCode::InvalidClientMetadata,
            "JWK set",
        );
        let mut enc_only = es256_public_jwk();
        enc_only["use"] = json!("enc");
        refused(
            with(pkj.clone(), "jwks", json!({ "keys": [enc_only] })),
            MetadataErrorCode::InvalidClientMetadata,
            "signing key",
        );
        let private = {
            let pair = josekit::jws::ES256.generate_key_pair().unwrap();
            Value::Object(pair.to_jwk_private_key().as_ref().clone())
        };
        refused(
            with(pkj.clone(), "jwks", json!({ "keys": [private] })),
            MetadataErrorCode::InvalidClientMetadata,
            "private",
        );
        refused(
            with(pkj.clone(), "jwks", json!({ "keys": [{"kty": "oct", "k": "c2VjcmV0"}] })),
            MetadataErrorCode::InvalidClientMetadata,
            "symmetric",
        );
        let mut broken = es256_public_jwk();
        broken["x"] = json!("AAAA");
        refused(
            with(pkj.clone(), "jwks", json!({ "keys": [broken] })),
            MetadataErrorCode::InvalidClientMetadata,
            "not a usable ES256 key",
        );
        let mut inline = with(pkj, "jwks", json!({ "keys": [es256_public_jwk()] }));
        inline["token_endpoint_auth_signing_alg"] = json!("HS256");
        refused(inline.clone(), MetadataErrorCode::InvalidClientMetadata, "HS256");
        inline["token_endpoint_auth_signing_alg"] = json!("RS256");
        refused(inline, MetadataErrorCode::InvalidClientMetadata, "no key usable");
    }

    #[test]
    fn signing_algs_scope_acr_and_lifetimes() {
        refused(
            with(web(), "id_token_signed_response_alg", json!("none")),
            MetadataErrorCode::InvalidClientMetadata,
            "id_token_signed_response_alg",
        );
        refused(
            with(web(), "userinfo_signed_response_alg", json!("HS256")),
            MetadataErrorCode::InvalidClientMetadata,
            "userinfo_signed_response_alg",
        );
        refused(with(web(), "scope", json!("")), MetadataErrorCode::InvalidClientMetadata, "empty");
        refused(with(web(), "scope", json!("openid \"x\"")), MetadataErrorCode::InvalidClientMetadata, "scope token");
        refused(with(web(), "minimum_acr", json!("eidas4")), MetadataErrorCode::InvalidClientMetadata, "minimum_acr");
        refused(
            with(web(), "access_token_lifetime", json!(0)),
            MetadataErrorCode::InvalidClientMetadata,
            "greater than zero",
        );
        refused(
            with(web(), "access_token_lifetime", json!(86401)),
            MetadataErrorCode::InvalidClientMetadata,
            "at most",
        );
        let mut idle_too_long = with(web(), "refresh_token_idle_lifetime", json!(3600));
        idle_too_long["refresh_token_absolute_lifetime"] = json!(1800);
        refused(idle_too_long, MetadataErrorCode::InvalidClientMetadata, "must not exceed");
        refused(
            with(web(), "access_token_audience", json!(["https://api.example.org", "a b"])),
            MetadataErrorCode::InvalidClientMetadata,
            "access_token_audience[1]",
        );
        refused(with(web(), "contacts", json!([""])), MetadataErrorCode::InvalidClientMetadata, "contacts[0]");
    }

    #[test]
    fn signing_algorithms_must_be_enabled_on_the_server() {
        let client = parse(with(web(), "id_token_signed_response_alg", json!("RS256"))).unwrap();
        assert!(client.check_enabled_algorithms(&[SigningAlg::ES256, SigningAlg::RS256]).is_ok());
        let error = client.check_enabled_algorithms(&[SigningAlg::ES256]).unwrap_err();
        assert_eq!(error.code, MetadataErrorCode::InvalidClientMetadata);
        assert!(error.description.contains("id_token_signed_response_alg RS256"), "{error}");
        let client = parse(with(web(), "userinfo_signed_response_alg", json!("EdDSA"))).unwrap();
        assert!(client.check_enabled_algorithms(&[SigningAlg::ES256]).is_err());
        assert!(parse(web()).unwrap().check_enabled_algorithms(&[SigningAlg::ES256]).is_ok());
    }

    #[test]
    fn informational_and_logout_urls_must_be_https() {
        for member in ["logo_uri", "client_uri", "policy_uri", "tos_uri", "backchannel_logout_uri"] {
            refused(
                with(web(), member, json!("http://app.example.org/x")),
                MetadataErrorCode::InvalidClientMetadata,
                member,
            );
            refused(with(web(), member, json!("not a url")), MetadataErrorCode::InvalidClientMetadata, member);
            assert!(parse(with(web(), member, json!("https://app.example.org/x"))).is_ok());
        }
        refused(
            with(web(), "backchannel_logout_uri", json!("https://app.example.org/x#y")),
            MetadataErrorCode::InvalidClientMetadata,
            "fragment",
        );
    }

    #[test]
    fn pairwise_needs_a_single_redirect_host() {
        refused(
            json!({
                "subject_type": "pairwise",
                "redirect_uris": ["https://a.example.org/cb", "https://b.example.org/cb"],
            }),
            MetadataErrorCode::InvalidClientMetadata,
            "single host",
        );
        refused(
            json!({ "subject_type": "pairwise", "grant_types": ["client_credentials"] }),
            MetadataErrorCode::InvalidClientMetadata,
            "needs redirect_uris",
        );
        refused(
            with(web(), "sector_identifier_uri", json!("https://app.example.org/sector.json")),
            MetadataErrorCode::InvalidClientMetadata,
            "sector_identifier_uri",
        );
        refused(with(web(), "subject_type", json!("secret")), MetadataErrorCode::InvalidClientMetadata, "subject_type");
        let client = parse(json!({
            "subject_type": "pairwise",
            "redirect_uris": ["https://App.example.org/cb", "https://app.example.org:8443/other"],
        }))
        .unwrap();
        assert_eq!(client.sector_identifier(), Some("app.example.org"));
        let client = parse(with(web(), "subject_type", json!("public"))).unwrap();
        assert_eq!(client.sector_identifier(), None);
    }

    fn client_with(app: &str, uris: &[&str]) -> Client {
        parse(json!({ "application_type": app, "redirect_uris": uris })).unwrap()
    }

    #[test]
    fn redirect_matching_is_exact() {
        let client = client_with("web", &["https://app.example.org/cb", "https://app.example.org/q?a=1"]);
        assert!(client.redirect_uri_allowed("https://app.example.org/cb"));
        assert!(!client.redirect_uri_allowed("https://app.example.org/cb/"), "trailing slash");
        assert!(!client.redirect_uri_allowed("https://app.example.org/CB"), "path case");
        assert!(!client.redirect_uri_allowed("https://app.example.org/cb?x=1"), "query added");
        assert!(client.redirect_uri_allowed("https://app.example.org/q?a=1"));
        assert!(!client.redirect_uri_allowed("https://app.example.org/q?a=2"), "query differs");
        assert!(!client.redirect_uri_allowed("https://app.example.org/q"), "query removed");
        assert!(!client.redirect_uri_allowed("https://app.example.org:443/cb"), "no normalisation");
        assert!(!client.redirect_uri_allowed("https://app.example.org/cb#x"));
        assert!(!client.redirect_uri_allowed("https://app.example.org"));
        assert!(!client.redirect_uri_allowed(""));
    }

    #[test]
    fn native_loopback_ip_redirects_ignore_only_the_port() {
        let client =
            client_with("native", &["http://127.0.0.1/cb", "http://[::1]:1234/cb", "http://localhost:5000/cb"]);
        assert!(client.redirect_uri_allowed("http://127.0.0.1/cb"));
        assert!(client.redirect_uri_allowed("http://127.0.0.1:51234/cb"));
        assert!(client.redirect_uri_allowed("http://[::1]:9/cb"));
        assert!(client.redirect_uri_allowed("http://[::1]/cb"));
        // Everything but the port must still match exactly.
        assert!(!client.redirect_uri_allowed("http://127.0.0.1:51234/cb/"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1:51234/CB"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1:51234/cb?x=1"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1:51234/cb#x"));
        assert!(!client.redirect_uri_allowed("https://127.0.0.1:51234/cb"));
        assert!(!client.redirect_uri_allowed("http://[::1]:9/other"));
        // The IPv4 and IPv6 loopbacks are distinct registrations.
        let v4_only = client_with("native", &["http://127.0.0.1/cb"]);
        assert!(!v4_only.redirect_uri_allowed("http://[::1]:80/cb"));
        // Not a port, or not a loopback host.
        assert!(!client.redirect_uri_allowed("http://127.0.0.1:0/cb"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1:65536/cb"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1:/cb"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1.evil.example:80/cb"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1:80@evil.example/cb"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1@evil.example/cb"));
        // localhost never gets port flexibility.
        assert!(client.redirect_uri_allowed("http://localhost:5000/cb"));
        assert!(!client.redirect_uri_allowed("http://localhost:5001/cb"));
        assert!(!client.redirect_uri_allowed("http://localhost/cb"));
    }

    #[test]
    fn web_loopback_redirects_get_no_port_flexibility() {
        let client = client_with("web", &["http://127.0.0.1:3000/cb"]);
        assert!(client.redirect_uri_allowed("http://127.0.0.1:3000/cb"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1:3001/cb"));
        assert!(!client.redirect_uri_allowed("http://127.0.0.1/cb"));
    }

    #[test]
    fn post_logout_matching_is_exact_even_for_native_loopback() {
        let client = parse(json!({
            "application_type": "native",
            "redirect_uris": ["http://127.0.0.1/cb"],
            "post_logout_redirect_uris": ["http://127.0.0.1/bye"],
        }))
        .unwrap();
        assert!(client.post_logout_redirect_uri_allowed("http://127.0.0.1/bye"));
        assert!(!client.post_logout_redirect_uri_allowed("http://127.0.0.1:4000/bye"));
        assert!(!client.post_logout_redirect_uri_allowed("http://127.0.0.1/bye/"));
    }
}

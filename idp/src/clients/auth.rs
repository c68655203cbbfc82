//! Client authentication at the token, PAR, introspection and revocation endpoints (RFC 6749
//! §2.3, RFC 7521/7523, OIDC Core §9), as ordered steps:
//!
//! 1. read the credentials offered — `Authorization: Basic`, `client_secret` in the body, a
//!    `client_assertion`, or none — and refuse a request offering more than one method;
//! 2. find the client (an unknown one fails exactly like a wrong secret);
//! 3. require the method the client registered;
//! 4. check the credential: secret digests compared in constant time, or the assertion's
//!    signature, claims and single use;
//! 5. check that a `client_id` body parameter, if any, names the same client.
//!
//! Every `invalid_client` error carries a `WWW-Authenticate: Basic` challenge: the status is 401,
//! which RFC 9110 §15.5.2 says must carry a challenge, and Basic is the only HTTP scheme that
//! applies at these endpoints (the default `Bearer` would be wrong here).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use josekit::jwk::Jwk;
use josekit::jws;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::jose::{self, ASSERTION_SIGNING_ALGS};
use super::model::{Client, ClientKeys, TokenEndpointAuthMethod};
use super::registry::{CachedClient, ClientRegistry, secret_digest};
use crate::ephemeral::EphemeralStore;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::UnixTime;

/// RFC 7523 §2.2 `client_assertion_type`.
pub const JWT_BEARER_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Clock skew tolerated on assertion times (`exp`, `iat`, `nbf`).
pub const ASSERTION_LEEWAY_SECS: i64 = 60;
/// Longest assertion lifetime accepted (from `iat`, or from now without one): an assertion is a
/// one-shot credential; a long-lived one is a bearer password in disguise.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 600;
/// Assertions longer than this are refused before any parsing.
const MAX_ASSERTION_LEN: usize = 16 * 1024;
const MAX_JTI_LEN: usize = 256;

/// The one message for "no such client" and "wrong secret": telling them apart would let anyone
/// probe for client ids and then target their secrets.
const FAILED: &str = "client authentication failed (unknown client or wrong credentials)";

/// A client that proved its identity (or, for `none`, a public client that only named itself).
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    pub client: Arc<Client>,
    pub method: TokenEndpointAuthMethod,
    /// RFC 8705: the x5t#S256 of the certificate the client authenticated with; the access tokens
    /// it gets are bound to that certificate (`cnf`).
    pub certificate_thumbprint: Option<String>,
}

fn invalid_client(description: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidClient, description).with_challenge("Basic")
}

/// A stand-in digest compared against when the client is unknown, so that an unknown client costs
/// the same hashing and comparison as a wrong secret.
const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

/// The single value of a form parameter. RFC 6749 §3.1: parameters must not repeat, and one sent
/// without a value is treated as omitted.
fn single<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, OAuthError> {
    let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    let first = values.next();
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(format!("the parameter `{name}` is repeated")));
    }
    Ok(first.map(String::as_str).filter(|v| !v.is_empty()))
}

/// Decodes one half of Basic credentials: RFC 6749 §2.3.1 has clients form-urlencode the id and
/// secret before base64.
fn form_decode(part: &str) -> Option<String> {
    let plus_decoded = part.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_decoded).decode_utf8().ok().map(|s| s.into_owned())
}

/// `Authorization: Basic …` credentials, if that is the scheme used. Another scheme is not a
/// client authentication attempt and is left to the endpoint.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_request("more than one Authorization header"));
    }
    let malformed = || {
        invalid_client(
            "malformed Basic credentials: expected base64 of form-urlencoded client_id, `:`, \
             form-urlencoded client_secret",
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let value = value.trim();
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let id = form_decode(id).ok_or_else(malformed)?;
    let secret = form_decode(secret).ok_or_else(malformed)?;
    if id.is_empty() {
        return Err(malformed());
    }
    Ok(Some((id, secret)))
}

/// Checks the TLS client certificate of a client registered for `tls_client_auth` or
/// `self_signed_tls_client_auth` (RFC 8705). The certificate lives in the request's TLS layer and
/// its trust store in the card service, so the caller supplies the check.
pub trait CertificateCheck: Sync {
    fn authenticate(&self, client: Arc<Client>) -> Result<AuthenticatedClient, OAuthError>;
}

/// For callers without a TLS layer: certificate clients cannot authenticate.
pub struct NoCertificate;

impl CertificateCheck for NoCertificate {
    fn authenticate(&self, client: Arc<Client>) -> Result<AuthenticatedClient, OAuthError> {
        Err(invalid_client(format!(
            "this client authenticates with its TLS certificate ({}), which this request does not carry",
            client.token_endpoint_auth_method()
        )))
    }
}

impl ClientRegistry {
    /// Authenticates the client of a token, PAR, introspection or revocation request.
    ///
    /// `params` is the form body; `audience` the values accepted as an assertion's `aud` (the
    /// issuer and the URL of the endpoint being called); `ephemeral` records assertion `jti`s to
    /// refuse replays; `certificate` checks certificate clients (RFC 8705); `now` is Unix seconds.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        params: &[(String, String)],
        audience: &[String],
        ephemeral: &dyn EphemeralStore,
        certificate: &dyn CertificateCheck,
        now: UnixTime,
    ) -> Result<AuthenticatedClient, OAuthError> {
        let basic = basic_credentials(headers)?;
        let body_client_id = single(params, "client_id")?;
        let body_secret = single(params, "client_secret")?;
        let assertion = single(params, "client_assertion")?;
        let assertion_type = single(params, "client_assertion_type")?;

        let mut offered = Vec::new();
        if basic.is_some() {
            offered.push("client_secret_basic (Authorization header)");
        }
        if body_secret.is_some() {
            offered.push("client_secret_post (client_secret)");
        }
        if assertion.is_some() || assertion_type.is_some() {
            offered.push("private_key_jwt (client_assertion)");
        }
        if offered.len() > 1 {
            return Err(OAuthError::invalid_request(format!(
                "use exactly one client authentication method; this request uses {}",
                offered.join(" and ")
            )));
        }

        if let Some((id, secret)) = basic {
            let client = self.secret_auth(&id, &secret, TokenEndpointAuthMethod::ClientSecretBasic).await?;
            return finish(client, body_client_id, TokenEndpointAuthMethod::ClientSecretBasic);
        }
        if let Some(secret) = body_secret {
            let id = body_client_id
                .ok_or_else(|| invalid_client("client_secret_post needs client_id in the request body"))?;
            let client = self.secret_auth(id, secret, TokenEndpointAuthMethod::ClientSecretPost).await?;
            return finish(client, body_client_id, TokenEndpointAuthMethod::ClientSecretPost);
        }
        if assertion.is_some() || assertion_type.is_some() {
            if assertion_type != Some(JWT_BEARER_ASSERTION_TYPE) {
                return Err(OAuthError::invalid_request(format!(
                    "client_assertion_type must be {JWT_BEARER_ASSERTION_TYPE}"
                )));
            }
            let assertion = assertion.ok_or_else(|| {
                OAuthError::invalid_request("client_assertion_type was sent without client_assertion")
            })?;
            let client = self.assertion_auth(assertion, body_client_id, audience, ephemeral, now).await?;
            return finish(client, body_client_id, TokenEndpointAuthMethod::PrivateKeyJwt);
        }

        // No credentials in the request: a public client, or a client whose credential is its TLS
        // certificate (RFC 8705 §2); either way it must say who it is.
        let id = body_client_id.ok_or_else(|| {
            invalid_client(
                "client authentication is required: send client credentials, or client_id for a \
                 public client",
            )
        })?;
        let entry = self.lookup(id).await?.ok_or_else(|| invalid_client(FAILED))?;
        if entry.client.token_endpoint_auth_method().uses_certificate() {
            return certificate.authenticate(Arc::clone(&entry.client));
        }
        require_method(&entry.client, TokenEndpointAuthMethod::None)?;
        finish(Arc::clone(&entry.client), body_client_id, TokenEndpointAuthMethod::None)
    }

    async fn lookup(&self, client_id: &str) -> Result<Option<Arc<CachedClient>>, OAuthError> {
        Ok(self.cached(client_id).await?)
    }

    /// `client_secret_basic` / `client_secret_post`: the SHA-256 of the presented secret must
    /// equal the stored digest, compared in constant time. Unknown clients go through the same
    /// hashing and comparison and get the same error.
    async fn secret_auth(
        &self,
        client_id: &str,
        secret: &str,
        method: TokenEndpointAuthMethod,
    ) -> Result<Arc<Client>, OAuthError> {
        let entry = self.lookup(client_id).await?;
        if let Some(entry) = &entry {
            require_method(&entry.client, method)?;
        }
        let presented = secret_digest(secret);
        let stored = entry.as_ref().and_then(|e| e.secret_digest).unwrap_or(DUMMY_DIGEST);
        let equal: bool = presented.ct_eq(&stored).into();
        match entry {
            Some(entry) if equal && entry.secret_digest.is_some() => Ok(Arc::clone(&entry.client)),
            _ => Err(invalid_client(FAILED)),
        }
    }

    /// `private_key_jwt` (RFC 7523 §3): a JWS by the client, `iss` = `sub` = client_id, `aud` one
    /// of ours, short-lived, and used once.
    async fn assertion_auth(
        &self,
        assertion: &str,
        body_client_id: Option<&str>,
        audience: &[String],
        ephemeral: &dyn EphemeralStore,
        now: UnixTime,
    ) -> Result<Arc<Client>, OAuthError> {
        if assertion.len() > MAX_ASSERTION_LEN {
            return Err(invalid_client("the client assertion is too large"));
        }
        let not_a_jws = || invalid_client("the client assertion is not a signed JWT (compact JWS)");
        let parts: Vec<&str> = assertion.split('.').collect();
        if parts.len() != 3 {
            return Err(not_a_jws());
        }
        let header = josekit::jwt::decode_header(assertion).map_err(|_| not_a_jws())?;
        let alg = match header.claim("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(not_a_jws()),
        };
        if !ASSERTION_SIGNING_ALGS.contains(&alg.as_str()) {
            return Err(invalid_client(format!(
                "client assertions must be signed with an asymmetric algorithm ({}); `{}` is not \
                 accepted",
                ASSERTION_SIGNING_ALGS.join(", "),
                alg.escape_debug()
            )));
        }
        let kid = match header.claim("kid") {
            Some(Value::String(kid)) => Some(kid.clone()),
            None => None,
            Some(_) => return Err(not_a_jws()),
        };

        // Which client's keys to verify with: the client_id parameter, else the (not yet
        // verified) subject. Everything is checked again on the verified claims below.
        let claimed_id = match body_client_id {
            Some(id) => id.to_string(),
            None => unverified_subject(parts[1])
                .ok_or_else(|| invalid_client("the client assertion has no `sub` naming the client"))?,
        };
        let entry = self.lookup(&claimed_id).await?.ok_or_else(|| invalid_client(FAILED))?;
        let client = Arc::clone(&entry.client);
        require_method(&client, TokenEndpointAuthMethod::PrivateKeyJwt)?;
        if let Some(required) = client.token_endpoint_auth_signing_alg()
            && required != alg
        {
            return Err(invalid_client(format!(
                "this client's assertions must be signed with {required} \
                 (token_endpoint_auth_signing_alg), not {alg}"
            )));
        }

        let payload = self.verify_signature(&client, assertion, &alg, kid.as_deref()).await?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| invalid_client("the client assertion's payload is not a JSON object"))?;
        let exp = check_claims(&claims, client.client_id(), audience, now)?;

        let jti = match claims.get("jti") {
            Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_LEN => jti,
            _ => {
                return Err(invalid_client(format!(
                    "the client assertion needs a `jti` (a unique string of at most {MAX_JTI_LEN} \
                     characters) so that it can be used only once"
                )));
            }
        };
        // Remembered until the assertion could no longer pass the `exp` check anyway.
        let ttl_secs = exp.saturating_add(ASSERTION_LEEWAY_SECS).saturating_sub(now).max(1);
        let ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(1));
        let key = format!("jti:{}:{}", client.client_id(), jti);
        if !ephemeral.put_if_absent(&key, b"1", ttl).await? {
            return Err(invalid_client(
                "the client assertion was already used (its jti was seen before): create a new \
                 assertion, with a new jti, for every request",
            ));
        }
        Ok(client)
    }

    /// Verifies the signature with the client's registered keys: those with the header's `kid`
    /// (all keys when there is none) that fit `alg`. With a `jwks_uri`, a failure caused by an
    /// unknown key refetches the set once (rate limited) — the client may have rotated.
    async fn verify_signature(
        &self,
        client: &Client,
        assertion: &str,
        alg: &str,
        kid: Option<&str>,
    ) -> Result<Vec<u8>, OAuthError> {
        let failed = || {
            invalid_client(
                "the client assertion's signature could not be verified with the client's \
                 registered keys (jwks / jwks_uri)",
            )
        };
        match client.keys() {
            ClientKeys::None => Err(failed()),
            ClientKeys::Inline(keys) => verify_with(keys, assertion, alg, kid).ok_or_else(failed),
            ClientKeys::Remote(uri) => {
                let unavailable = |e: super::remote_jwks::FetchError| {
                    tracing::warn!(client_id = client.client_id(), error = %e, "private_key_jwt: client keys unavailable");
                    invalid_client(
                        "the client's jwks_uri could not be fetched; the assertion cannot be \
                         verified",
                    )
                };
                let keys = self.remote_jwks.keys(uri, false).await.map_err(unavailable)?;
                if let Some(payload) = verify_with(&keys, assertion, alg, kid) {
                    return Ok(payload);
                }
                let key_unknown = match kid {
                    Some(kid) => !keys.iter().any(|k| k.key_id() == Some(kid)),
                    None => true,
                };
                if !key_unknown {
                    return Err(failed());
                }
                let keys = self.remote_jwks.keys(uri, true).await.map_err(unavailable)?;
                verify_with(&keys, assertion, alg, kid).ok_or_else(failed)
            }
        }
    }
}

/// The payload if one candidate key verifies the JWS.
fn verify_with(keys: &[Jwk], assertion: &str, alg: &str, kid: Option<&str>) -> Option<Vec<u8>> {
    keys.iter()
        .filter(|k| kid.is_none() || k.key_id() == kid)
        .filter(|k| !jose::is_not_for_signatures(k))
        .filter_map(|k| jose::verifier_for(alg, k).ok())
        .find_map(|verifier| jws::deserialize_compact(assertion, &*verifier).ok().map(|(payload, _)| payload))
}

/// The `sub` of a not-yet-verified JWS payload, only to choose whose keys to verify with.
fn unverified_subject(payload_b64: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    match claims.get("sub") {
        Some(Value::String(sub)) => Some(sub.clone()),
        _ => None,
    }
}

/// A NumericDate claim (RFC 7519 §2); fractional seconds are truncated.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, OAuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| invalid_client(format!("`{name}` of the client assertion is not a valid time"))),
        Some(_) => {
            Err(invalid_client(format!("`{name}` of the client assertion must be a number (seconds since 1970)")))
        }
    }
}

/// RFC 7523 §3 claim checks on a verified assertion. Returns `exp`.
fn check_claims(
    claims: &Map<String, Value>,
    client_id: &str,
    audience: &[String],
    now: UnixTime,
) -> Result<i64, OAuthError> {
    let iss = claims.get("iss").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    if iss != Some(client_id) || sub != Some(client_id) {
        return Err(invalid_client("the client assertion's `iss` and `sub` must both be the client_id"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => audience.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(|aud| audience.iter().any(|a| a == aud)),
        _ => false,
    };
    if !aud_ok {
        return Err(invalid_client(format!(
            "the client assertion's `aud` must contain one of: {}",
            audience.join(", ")
        )));
    }
    let exp = numeric_date(claims, "exp")?.ok_or_else(|| invalid_client("the client assertion needs an `exp`"))?;
    if now > exp.saturating_add(ASSERTION_LEEWAY_SECS) {
        return Err(invalid_client("the client assertion has expired"));
    }
    let iat = numeric_date(claims, "iat")?;
    if iat.is_some_and(|iat| iat > now.saturating_add(ASSERTION_LEEWAY_SECS)) {
        return Err(invalid_client("the client assertion is issued in the future (`iat`); check the client's clock"));
    }
    if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(ASSERTION_LEEWAY_SECS)) {
        return Err(invalid_client("the client assertion is not valid yet (`nbf`)"));
    }
    let start = iat.unwrap_or(now);
    if exp.saturating_sub(start) > MAX_ASSERTION_LIFETIME_SECS {
        return Err(invalid_client(format!(
            "the client assertion lives too long: `exp` may be at most {} minutes after `iat` (or \
             now)",
            MAX_ASSERTION_LIFETIME_SECS / 60
        )));
    }
    Ok(exp)
}

fn require_method(client: &Client, used: TokenEndpointAuthMethod) -> Result<(), OAuthError> {
    let registered = client.token_endpoint_auth_method();
    if registered == used {
        return Ok(());
    }
    Err(invalid_client(if registered == TokenEndpointAuthMethod::None {
        format!("this client is public (token_endpoint_auth_method none): send only client_id, not {used} credentials")
    } else if used == TokenEndpointAuthMethod::None {
        format!("client authentication is required: this client is registered for {registered}")
    } else {
        format!("this client is registered for {registered}; {used} is not accepted for it")
    }))
}

/// Step 5: a `client_id` body parameter must name the authenticated client.
fn finish(
    client: Arc<Client>,
    body_client_id: Option<&str>,
    method: TokenEndpointAuthMethod,
) -> Result<AuthenticatedClient, OAuthError> {
    if let Some(id) = body_client_id
        && id != client.client_id()
    {
        return Err(invalid_client("the client_id parameter does not match the authenticated client"));
    }
    Ok(AuthenticatedClient { client, method, certificate_thumbprint: None })
}

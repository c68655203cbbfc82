//! Minting and checking the tokens Habilis signs: ID tokens (OIDC Core §2) and JWT access tokens
//! (RFC 9068), plus the revocation markers that make introspection and userinfo see a revocation at
//! once (kept in the ephemeral store, shared by every instance, for as long as a token can live).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::app::AppState;
use crate::config::SigningAlg;
use crate::error::{OAuthError, OAuthErrorCode};

/// How a user authenticated, as carried into tokens.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthContext {
    pub auth_time: i64,
    /// Absent when the login reached no level of the ladder (e.g. password only).
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub sid: Option<String>,
}

/// The claims of a Habilis access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Value,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Habilis: the grant this token comes from (revoking the grant revokes the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// Habilis: the account behind `sub` (differs from `sub` for pairwise clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// RFC 8705 §3.1: the certificate the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// RFC 9396: the `patient_access` details this token grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<crate::habilitation::rar::GrantedAccess>>,
    /// RFC 8693 §4.1: the client acting on the subject's behalf (token exchange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
}

/// RFC 8705 / RFC 7800 confirmation: the SHA-256 thumbprint of the client certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

impl AccessClaims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }
    /// The account behind a user's token (`uid` for pairwise subjects, else `sub`); `None` for an
    /// application's own token (client credentials: `sub` is the client).
    pub fn account_id(&self) -> Option<&str> {
        self.uid.as_deref().or_else(|| (self.sub != self.client_id).then_some(self.sub.as_str()))
    }
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }
}

/// What to put in a new access token.
pub struct AccessTokenRequest<'a> {
    pub client_id: &'a str,
    pub subject: &'a str,
    pub account_id: Option<&'a str>,
    pub scope: &'a str,
    pub audience: Vec<String>,
    pub auth: Option<&'a AuthContext>,
    pub grant_id: Option<&'a str>,
    pub lifetime: i64,
    /// x5t#S256 of the client certificate the token is bound to (RFC 8705).
    pub certificate_thumbprint: Option<&'a str>,
    /// Granted `patient_access` details (RFC 9396).
    pub authorization_details: Option<Vec<crate::habilitation::rar::GrantedAccess>>,
    /// RFC 8693 `act` claim.
    pub act: Option<Value>,
}

pub struct MintedAccessToken {
    pub token: String,
    pub claims: AccessClaims,
    pub expires_in: i64,
}

fn signing_error(e: crate::keys::KeyError) -> OAuthError {
    tracing::error!(error = %e, "signing failed");
    OAuthError::server_error()
}

pub fn new_jti() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn mint_access_token(
    state: &AppState,
    request: AccessTokenRequest<'_>,
    now: i64,
) -> Result<MintedAccessToken, OAuthError> {
    let aud = match request.audience.len() {
        0 => Value::String(state.issuer_string()),
        1 => Value::String(request.audience[0].clone()),
        _ => json!(request.audience),
    };
    let claims = AccessClaims {
        iss: state.issuer_string(),
        sub: request.subject.to_string(),
        aud,
        client_id: request.client_id.to_string(),
        scope: request.scope.to_string(),
        jti: new_jti(),
        iat: now,
        exp: now + request.lifetime,
        auth_time: request.auth.map(|a| a.auth_time),
        acr: request.auth.and_then(|a| a.acr.clone()),
        amr: request.auth.map(|a| a.amr.clone()).filter(|amr| !amr.is_empty()),
        sid: request.auth.and_then(|a| a.sid.clone()),
        gid: request.grant_id.map(str::to_string),
        uid: request.account_id.filter(|id| *id != request.subject).map(str::to_string),
        cnf: request.certificate_thumbprint.map(|t| Confirmation { x5t_s256: t.to_string() }),
        authorization_details: request.authorization_details,
        act: request.act,
    };
    let map = to_map(&claims)?;
    let token = state.keys.sign(None, "at+jwt", &map).map_err(signing_error)?;
    Ok(MintedAccessToken { token, claims, expires_in: request.lifetime })
}

pub struct IdTokenRequest<'a> {
    pub client_id: &'a str,
    pub subject: &'a str,
    pub nonce: Option<&'a str>,
    pub auth: &'a AuthContext,
    pub access_token: Option<&'a str>,
    pub alg: Option<SigningAlg>,
    pub lifetime: i64,
    /// Claims requested for the ID token (e.g. through the `claims` parameter).
    pub extra: Map<String, Value>,
}

pub fn mint_id_token(state: &AppState, request: IdTokenRequest<'_>, now: i64) -> Result<String, OAuthError> {
    let alg = request.alg.unwrap_or(state.keys.default_alg());
    let mut claims = request.extra;
    claims.insert("iss".into(), json!(state.issuer_string()));
    claims.insert("sub".into(), json!(request.subject));
    claims.insert("aud".into(), json!(request.client_id));
    claims.insert("azp".into(), json!(request.client_id));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + request.lifetime));
    claims.insert("auth_time".into(), json!(request.auth.auth_time));
    if let Some(nonce) = request.nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    if let Some(acr) = &request.auth.acr {
        claims.insert("acr".into(), json!(acr));
    }
    if !request.auth.amr.is_empty() {
        claims.insert("amr".into(), json!(request.auth.amr));
    }
    if let Some(sid) = &request.auth.sid {
        claims.insert("sid".into(), json!(sid));
    }
    if let Some(at) = request.access_token {
        claims.insert("at_hash".into(), json!(left_half_hash(alg, at)));
    }
    state.keys.sign(Some(alg), "JWT", &claims).map_err(signing_error)
}

/// OIDC Core §3.1.3.6: base64url of the left half of the hash used by the signing algorithm.
pub fn left_half_hash(alg: SigningAlg, value: &str) -> String {
    let digest: Vec<u8> = match alg {
        SigningAlg::ES256 | SigningAlg::RS256 => sha2::Sha256::digest(value.as_bytes()).to_vec(),
        // Ed25519 signs with SHA-512 internally; the OpenID Foundation's guidance is SHA-512 here.
        SigningAlg::EdDSA => sha2::Sha512::digest(value.as_bytes()).to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

fn to_map<T: Serialize>(value: &T) -> Result<Map<String, Value>, OAuthError> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(OAuthError::server_error()),
    }
}

fn jti_key(jti: &str) -> String {
    format!("revoked:jti:{jti}")
}

fn grant_key(gid: &str) -> String {
    format!("revoked:grant:{gid}")
}

/// Marks one access token revoked until it would have expired anyway. The marker's value is
/// that time: verification compares it with its own `now`, so the marker's lifetime is a property
/// of the data (and testable on a shifted clock), not only of the store's TTL.
pub async fn revoke_access_token(state: &AppState, claims: &AccessClaims, now: i64) -> Result<(), OAuthError> {
    let until = claims.exp.max(now) + 60;
    put_marker(state, &jti_key(&claims.jti), until, now).await
}

/// The longest an access token of any client can live: the global lifetime or the longest a
/// client's `access_token_lifetime` may be set to, whichever is longer.
pub fn longest_access_token_lifetime(state: &AppState) -> std::time::Duration {
    state
        .config
        .tokens
        .access_token_lifetime
        .max(std::time::Duration::from_secs(crate::clients::MAX_ACCESS_TOKEN_LIFETIME))
}

/// Until when a grant revoked at `now` must stay marked: the longest lifetime any client's access
/// token can have, plus clock-skew slack. Tokens carry their client's lifetime, which may exceed
/// the global `tokens.access_token_lifetime` (up to 24 h): a marker sized on the global lifetime
/// expired while a 600 s token of a revoked grant was still accepted.
pub fn grant_marker_until(state: &AppState, now: i64) -> i64 {
    now.saturating_add(longest_access_token_lifetime(state).as_secs() as i64 + 120)
}

/// Marks every access token of a grant revoked (the grant row itself is revoked in the store by
/// the caller; this makes the revocation visible without a database read on the hot path). The
/// marker is durable: it survives restarts and a Redis that comes back empty (`ephemeral::durable`).
pub async fn mark_grant_revoked(state: &AppState, grant_id: &str, now: i64) -> Result<(), OAuthError> {
    put_marker(state, &grant_key(grant_id), grant_marker_until(state, now), now).await
}

async fn put_marker(state: &AppState, key: &str, until: i64, now: i64) -> Result<(), OAuthError> {
    let ttl = std::time::Duration::from_secs(u64::try_from(until - now).unwrap_or(0).max(1));
    state.ephemeral.put(key, until.to_string().as_bytes(), ttl).await?;
    Ok(())
}

/// Markers written before they carried their end held `1`: any value below this is such a legacy
/// marker, which revokes for as long as its TTL keeps it.
const FIRST_MARKER_TIME: i64 = 1_000_000_000;

/// Whether a marker read from the store still revokes at `now`. A value that is not a time (a
/// legacy or unreadable marker) revokes: when in doubt, refuse.
fn marker_live(value: Option<&[u8]>, now: i64) -> bool {
    let Some(value) = value else { return false };
    match std::str::from_utf8(value).ok().and_then(|s| s.parse::<i64>().ok()) {
        Some(until) if until >= FIRST_MARKER_TIME => until > now,
        _ => true,
    }
}

/// Whether a grant carries a live revocation marker (set before the grant row is revoked, see
/// `token::revoke_grant`).
pub async fn grant_marked_revoked(state: &AppState, grant_id: &str, now: i64) -> Result<bool, OAuthError> {
    Ok(marker_live(state.ephemeral.get(&grant_key(grant_id)).await?.as_deref(), now))
}

/// Why an access token is not acceptable (for introspection: all of them mean `active: false`).
pub fn invalid_token(description: &'static str) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidToken, description).with_challenge("Bearer")
}

/// Access tokens whose signature was already verified, keyed by the SHA-256 of the whole token.
/// ECDSA verification costs ~60 µs; resource servers introspect the same token many times during
/// its few minutes of life. Only the signature check is cached: expiry and revocation are checked
/// on every call. Bounded: a full shard drops its expired entries, then everything.
pub struct VerifiedTokens {
    shards: Vec<std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<AccessClaims>>>>,
    per_shard: usize,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> VerifiedTokens {
        let shards = (0..16).map(|_| std::sync::Mutex::new(std::collections::HashMap::new())).collect();
        VerifiedTokens { shards, per_shard: (capacity / 16).max(16) }
    }

    fn shard(
        &self,
        digest: &[u8; 32],
    ) -> &std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<AccessClaims>>> {
        &self.shards[usize::from(digest[0]) % self.shards.len()]
    }

    fn get(&self, digest: &[u8; 32]) -> Option<std::sync::Arc<AccessClaims>> {
        self.shard(digest).lock().ok()?.get(digest).cloned()
    }

    fn insert(&self, digest: [u8; 32], claims: std::sync::Arc<AccessClaims>, now: i64) {
        if let Ok(mut map) = self.shard(&digest).lock() {
            if map.len() >= self.per_shard {
                map.retain(|_, c| c.exp > now);
                if map.len() >= self.per_shard {
                    map.clear();
                }
            }
            map.insert(digest, claims);
        }
    }
}

/// Verifies signature, type, issuer, expiry and revocation of an access token.
pub async fn verify_access_token(state: &AppState, token: &str, now: i64) -> Result<AccessClaims, OAuthError> {
    if token.len() > 8192 || token.split('.').count() != 3 {
        return Err(invalid_token("the access token is malformed"));
    }
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    let claims = match state.verified_tokens.get(&digest) {
        Some(claims) => claims,
        None => {
            let claims = std::sync::Arc::new(verify_signature(state, token)?);
            state.verified_tokens.insert(digest, claims.clone(), now);
            claims
        }
    };
    if claims.exp <= now {
        return Err(invalid_token("the access token has expired"));
    }
    // Both markers in one round trip.
    let jti = jti_key(&claims.jti);
    let grant = claims.gid.as_deref().map(grant_key);
    let keys: Vec<&str> = std::iter::once(jti.as_str()).chain(grant.as_deref()).collect();
    let markers = state.ephemeral.get_many(&keys).await?;
    if markers.iter().any(|marker| marker_live(marker.as_deref(), now)) {
        return Err(invalid_token("the access token has been revoked"));
    }
    Ok(AccessClaims::clone(&claims))
}

/// The uncached part: type, signature, issuer.
fn verify_signature(state: &AppState, token: &str) -> Result<AccessClaims, OAuthError> {
    let typ_ok = token
        .split('.')
        .next()
        .and_then(|h| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h.get("typ").and_then(Value::as_str).map(|t| t.eq_ignore_ascii_case("at+jwt")))
        .unwrap_or(false);
    if !typ_ok {
        return Err(invalid_token("not an access token (typ must be at+jwt)"));
    }
    let map = state.keys.verify(token).map_err(|_| invalid_token("the access token signature does not verify"))?;
    let claims: AccessClaims = serde_json::from_value(Value::Object(map))
        .map_err(|_| invalid_token("the access token is missing required claims"))?;
    if claims.iss != state.issuer_string() {
        return Err(invalid_token("the access token was issued by another issuer"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_example() {
        // OIDC Core Appendix A.3: access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", RS256.
        assert_eq!(
            left_half_hash(SigningAlg::RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn revocation_markers_are_durable_and_carry_their_end() {
        assert!(crate::ephemeral::is_durable(&jti_key("j")) && crate::ephemeral::is_durable(&grant_key("g")));
        let end = 1_900_000_000;
        assert!(marker_live(Some(end.to_string().as_bytes()), end - 1));
        assert!(!marker_live(Some(end.to_string().as_bytes()), end), "a marker ends at its time");
        assert!(!marker_live(None, 0));
        assert!(marker_live(Some(b"1"), end), "a legacy marker revokes while it exists");
        assert!(marker_live(Some(b"not a time"), end), "an unreadable marker revokes");
    }
}

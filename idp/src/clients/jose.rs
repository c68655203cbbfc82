//! The few JOSE helpers client handling needs, on top of josekit (never hand-written crypto):
//! which algorithms a client may sign its assertions with, and a verifier for (alg, JWK).

use josekit::jwk::Jwk;
use josekit::jws::{self, JwsVerifier};

/// Algorithms accepted for `private_key_jwt` assertions (and `token_endpoint_auth_signing_alg`):
/// asymmetric only. HMAC (`client_secret_jwt`) would need the secret in clear on the server, and
/// `none` is no signature at all. Also what discovery should advertise as
/// `token_endpoint_auth_signing_alg_values_supported`.
pub const ASSERTION_SIGNING_ALGS: &[&str] =
    &["ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"];

/// JWK members that only a private (or symmetric) key has. A client that publishes one of them has
/// leaked its key: such keys are refused rather than used.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

pub(crate) fn has_private_members(jwk: &Jwk) -> bool {
    PRIVATE_MEMBERS.iter().any(|m| jwk.parameter(m).is_some())
}

/// Whether the key is meant for something other than signatures (`use: enc`, or `key_ops` without
/// `verify`). Such keys may sit in a client's JWKS for other purposes; they are never used here.
pub(crate) fn is_not_for_signatures(jwk: &Jwk) -> bool {
    jwk.key_use().is_some_and(|u| u != "sig") || !jwk.is_for_key_operation("verify")
}

/// The algorithm a key is most likely meant for when its JWK has no `alg`: the one its type and
/// curve imply. Used only to check, at registration, that the key is usable at all.
pub(crate) fn default_alg_of(jwk: &Jwk) -> Option<&'static str> {
    match (jwk.key_type(), jwk.curve()) {
        ("EC", Some("P-256")) => Some("ES256"),
        ("EC", Some("P-384")) => Some("ES384"),
        ("EC", Some("P-521")) => Some("ES512"),
        ("RSA", _) => Some("RS256"),
        ("OKP", Some("Ed25519" | "Ed448")) => Some("EdDSA"),
        _ => None,
    }
}

/// A verifier for `alg` from a public JWK. The JWK's own `kid` is dropped from the verifier:
/// callers select keys by `kid` themselves (a token without `kid` may then be checked against
/// every key of the set, which josekit would otherwise refuse).
pub(crate) fn verifier_for(alg: &str, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, String> {
    macro_rules! build {
        ($algorithm:expr) => {{
            let mut verifier = $algorithm.verifier_from_jwk(jwk).map_err(|e| e.to_string())?;
            verifier.remove_key_id();
            Ok(Box::new(verifier) as Box<dyn JwsVerifier>)
        }};
    }
    match alg {
        "ES256" => build!(jws::ES256),
        "ES384" => build!(jws::ES384),
        "ES512" => build!(jws::ES512),
        "PS256" => build!(jws::PS256),
        "PS384" => build!(jws::PS384),
        "PS512" => build!(jws::PS512),
        "RS256" => build!(jws::RS256),
        "RS384" => build!(jws::RS384),
        "RS512" => build!(jws::RS512),
        "EdDSA" => build!(jws::EdDSA),
        other => Err(format!("the algorithm `{other}` is not accepted")),
    }
}

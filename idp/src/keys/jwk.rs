//! Key material: generation, RFC 7638 thumbprints, public JWKs, sealing of private JWKs, and the
//! prepared signer/verifier objects kept in the key set so that signing never parses a JWK.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::{Ed25519, Jwk, KeyPair};
use josekit::jws::{self, JwsSigner, JwsVerifier};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::{KeyError, MasterKey};
use crate::config::SigningAlg;
use crate::store::{SigningKeyRecord, UnixTime};

/// RSA modulus size. 2048 bits is what relying parties universally accept for RS256; RS256 exists
/// here for their compatibility, ES256 is the default.
const RSA_BITS: u32 = 2048;

/// A decrypted, ready-to-use key. Immutable: a changed record (same kid, other sealed bytes) yields a
/// new `KeyMaterial`.
pub(super) struct KeyMaterial {
    pub kid: String,
    pub alg: SigningAlg,
    /// The sealed bytes it was opened from: lets a reload reuse this object when the record is
    /// unchanged instead of decrypting and parsing again.
    pub sealed: Vec<u8>,
    /// Public JWK as published: members derived from the private key, plus `kid`, `alg`, `use`.
    pub public_jwk: Map<String, Value>,
    pub signer: Box<dyn JwsSigner>,
    pub verifier: Box<dyn JwsVerifier>,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never delegate to the signer's Debug: it holds the private key.
        f.debug_struct("KeyMaterial").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// A private JWK whose string members (notably `d`, `p`, `q` …) are overwritten when dropped.
/// josekit keeps JWK members as plain `String`s; this is the best that can be done around it.
pub(super) struct SecretJwk(Jwk);

impl Drop for SecretJwk {
    fn drop(&mut self) {
        let jwk = std::mem::replace(&mut self.0, Jwk::new(""));
        let map: Map<String, Value> = jwk.into();
        for (_, value) in map {
            if let Value::String(mut s) = value {
                s.zeroize();
            }
        }
    }
}

/// The JWK key type and public members (RFC 7638 §3.2 required members, minus `kty`) of an algorithm.
fn shape(alg: SigningAlg) -> (&'static str, &'static [&'static str], Option<&'static str>) {
    match alg {
        SigningAlg::ES256 => ("EC", &["crv", "x", "y"], Some("P-256")),
        SigningAlg::RS256 => ("RSA", &["e", "n"], None),
        SigningAlg::EdDSA => ("OKP", &["crv", "x"], Some("Ed25519")),
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url without padding) of an EC, RSA or OKP key: the hash
/// of the required public members in lexicographic order, serialised without whitespace. Used as
/// `kid`, so a key id is stable, derived from the key itself and cannot be reused for another key.
pub fn thumbprint(jwk: &Jwk) -> Result<String, KeyError> {
    let members: &[&str] = match jwk.key_type() {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        other => {
            return Err(KeyError::Crypto(format!("no thumbprint for key type `{other}`")));
        }
    };
    // Built by hand rather than by serialising a map: serde_json's map order depends on a feature
    // (`preserve_order`) that any crate in the tree may switch on.
    let mut canonical = String::from("{");
    for (i, name) in members.iter().enumerate() {
        let value = jwk
            .parameter(name)
            .and_then(Value::as_str)
            .ok_or_else(|| KeyError::Crypto(format!("JWK lacks the member `{name}`")))?;
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&Value::String((*name).to_string()).to_string());
        canonical.push(':');
        canonical.push_str(&Value::String(value.to_string()).to_string());
    }
    canonical.push('}');
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// The public JWK of `private`, built from an allow-list of public members (so no private member
/// can leak into the JWKS), after checking the key type and curve fit `alg`.
fn public_jwk(private: &Jwk, alg: SigningAlg) -> Result<Jwk, String> {
    let (kty, members, curve) = shape(alg);
    if private.key_type() != kty {
        return Err(format!("key type `{}` does not fit {}", private.key_type(), alg.as_str()));
    }
    if let Some(curve) = curve
        && private.curve() != Some(curve)
    {
        return Err(format!("curve {:?} does not fit {}", private.curve(), alg.as_str()));
    }
    let mut public = Jwk::new(kty);
    for name in members {
        let value = private.parameter(name).ok_or_else(|| format!("the member `{name}` is missing"))?;
        public.set_parameter(name, Some(value.clone())).map_err(|e| e.to_string())?;
    }
    Ok(public)
}

/// Generates a private key for `alg` (CPU-heavy for RSA: call it on a blocking thread).
pub(super) fn generate_private(alg: SigningAlg) -> Result<SecretJwk, KeyError> {
    let jwk = match alg {
        SigningAlg::ES256 => jws::ES256.generate_key_pair().map(|k| k.to_jwk_key_pair()),
        SigningAlg::RS256 => jws::RS256.generate_key_pair(RSA_BITS).map(|k| k.to_jwk_key_pair()),
        SigningAlg::EdDSA => jws::EdDSA.generate_key_pair(Ed25519).map(|k| k.to_jwk_key_pair()),
    }
    .map_err(|e| KeyError::Crypto(format!("generating a {} key: {e}", alg.as_str())))?;
    Ok(SecretJwk(jwk))
}

/// Generates a key on the blocking pool and seals it into a record ready for the store.
pub(super) async fn generate_record(
    master: &MasterKey,
    alg: SigningAlg,
    created_at: UnixTime,
    activates_at: UnixTime,
) -> Result<SigningKeyRecord, KeyError> {
    let private = tokio::task::spawn_blocking(move || generate_private(alg))
        .await
        .map_err(|e| KeyError::Crypto(format!("key generation task failed: {e}")))??;
    seal_record(master, alg, private, created_at, activates_at)
}

/// Derives kid and public JWK from `private`, then seals the private JWK under the master key with
/// the kid as AAD (a sealed key moved to another row does not open).
pub(super) fn seal_record(
    master: &MasterKey,
    alg: SigningAlg,
    mut private: SecretJwk,
    created_at: UnixTime,
    activates_at: UnixTime,
) -> Result<SigningKeyRecord, KeyError> {
    let mut public = public_jwk(&private.0, alg).map_err(KeyError::Crypto)?;
    let kid = thumbprint(&public)?;
    for jwk in [&mut public, &mut private.0] {
        jwk.set_key_id(kid.clone());
        jwk.set_algorithm(alg.as_str());
        jwk.set_key_use("sig");
    }
    // Sized up front (an RSA-2048 private JWK is ~1.7 kB) so that no reallocation leaves a copy of
    // the private key in freed memory.
    let mut plaintext = Zeroizing::new(Vec::with_capacity(8192));
    serde_json::to_writer(&mut *plaintext, private.0.as_ref())
        .map_err(|e| KeyError::Crypto(format!("serialising a JWK: {e}")))?;
    let private_sealed = master.seal(&plaintext, kid.as_bytes())?;
    Ok(SigningKeyRecord {
        kid,
        alg: alg.as_str().to_string(),
        public_jwk: public.to_string(),
        private_sealed,
        created_at,
        activates_at,
        retired_at: None,
    })
}

/// Opens a stored record: decrypts the private JWK, re-derives the public key and checks that its
/// thumbprint is the record's kid. Everything published and verified comes from the sealed (hence
/// authenticated) private key, never from the record's clear-text `public_jwk`, so that write
/// access to the database alone cannot slip a foreign key into the JWKS.
pub(super) fn open_record(master: &MasterKey, record: &SigningKeyRecord) -> Result<KeyMaterial, KeyError> {
    let kid = record.kid.clone();
    let corrupt = |reason: String| KeyError::CorruptKey { kid: kid.clone(), reason };
    let alg = SigningAlg::parse(&record.alg).ok_or_else(|| {
        corrupt(format!("unsupported algorithm `{}` (this version knows ES256, RS256, EdDSA)", record.alg))
    })?;
    let plaintext = master
        .open(&record.private_sealed, record.kid.as_bytes())
        .map_err(|_| KeyError::Undecryptable { kid: kid.clone() })?;
    let private = SecretJwk(Jwk::from_bytes(&*plaintext).map_err(|e| corrupt(format!("not a JWK: {e}")))?);
    let mut public = public_jwk(&private.0, alg).map_err(&corrupt)?;
    if thumbprint(&public)? != record.kid {
        return Err(corrupt("the key's thumbprint does not match its kid".into()));
    }
    public.set_key_id(kid.clone());
    public.set_algorithm(alg.as_str());
    public.set_key_use("sig");

    let jose = |e: josekit::JoseError| corrupt(e.to_string());
    let (signer, verifier): (Box<dyn JwsSigner>, Box<dyn JwsVerifier>) = match alg {
        SigningAlg::ES256 => {
            let mut s = jws::ES256.signer_from_jwk(&private.0).map_err(jose)?;
            let mut v = jws::ES256.verifier_from_jwk(&public).map_err(jose)?;
            s.set_key_id(kid.clone());
            v.set_key_id(kid.clone());
            (Box::new(s), Box::new(v))
        }
        SigningAlg::RS256 => {
            let mut s = jws::RS256.signer_from_jwk(&private.0).map_err(jose)?;
            let mut v = jws::RS256.verifier_from_jwk(&public).map_err(jose)?;
            s.set_key_id(kid.clone());
            v.set_key_id(kid.clone());
            (Box::new(s), Box::new(v))
        }
        SigningAlg::EdDSA => {
            let mut s = jws::EdDSA.signer_from_jwk(&private.0).map_err(jose)?;
            let mut v = jws::EdDSA.verifier_from_jwk(&public).map_err(jose)?;
            s.set_key_id(kid.clone());
            v.set_key_id(kid.clone());
            (Box::new(s), Box::new(v))
        }
    };
    Ok(KeyMaterial { kid, alg, sealed: record.private_sealed.clone(), public_jwk: public.into(), signer, verifier })
}

//! Signed statements about the chain: checkpoints ("the chain had `hash` at `seq`", written by
//! the writer every `audit.checkpoint_interval` when the head moved, and at shutdown) and purge
//! anchors ("records up to `seq` were archived"), each a compact JWS by the current signing key.
//!
//! Checkpoints make truncation and wholesale rewriting detectable: a rewritten chain no longer
//! matches them, and one past the last record means records were cut off. Each is also logged to
//! the `habilis::audit::checkpoint` tracing target, so that a log shipped elsewhere anchors the
//! chain outside the database too.
//!
//! Signing keys rotate and are purged; the audit log outlives them. So the key material a
//! statement needs is copied to `audit_keys` on first use, with its private part still sealed
//! under the master key. [`KeyRing`] accepts a key only if that sealed part opens under the master
//! key and is the private half of the public key: write access to the database alone cannot add
//! a key of one's own, hence cannot forge a checkpoint.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jws::{self, JwsVerifier};
use serde_json::{Map, Value, json};

use crate::config::SigningAlg;
use crate::keys::{KeyError, KeyManager, MasterKey, thumbprint};
use crate::store::{AuditAnchor, AuditCheckpoint, AuditKey, SharedStore, StoreError, UnixTime};

/// `typ` header of checkpoint and anchor JWS.
pub const CHECKPOINT_TYP: &str = "habilis-audit-checkpoint+jwt";
pub const ANCHOR_TYP: &str = "habilis-audit-anchor+jwt";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("signing: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the signing key {0} is not among the stored signing keys")]
    KeyNotStored(String),
    #[error("{0}")]
    Malformed(String),
}

/// The `kid` of a compact JWS's header.
pub fn kid_of(jws: &str) -> Option<String> {
    let header = jws.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("kid")?.as_str().map(str::to_string)
}

/// Signs `claims` with the current default signing key, and makes sure that key is in
/// `audit_keys` before the statement that needs it is stored. Returns `(jws, kid)`.
pub async fn sign_statement(
    store: &SharedStore,
    keys: &KeyManager,
    known: &mut HashSet<String>,
    typ: &str,
    claims: &Map<String, Value>,
    now: UnixTime,
) -> Result<(String, String), CheckpointError> {
    let jws = keys.sign(None, typ, claims)?;
    let kid = kid_of(&jws).ok_or_else(|| CheckpointError::Malformed("the signed statement has no kid".into()))?;
    if !known.contains(&kid) {
        let stored = store.audit().keys().await?;
        if !stored.iter().any(|k| k.kid == kid) {
            let record = store
                .list_signing_keys()
                .await?
                .into_iter()
                .find(|r| r.kid == kid)
                .ok_or_else(|| CheckpointError::KeyNotStored(kid.clone()))?;
            store
                .audit()
                .insert_key(&AuditKey {
                    kid: record.kid,
                    alg: record.alg,
                    public_jwk: record.public_jwk,
                    private_sealed: record.private_sealed,
                    created_at: now,
                })
                .await?;
        }
        known.insert(kid.clone());
    }
    Ok((jws, kid))
}

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The payload of a checkpoint.
pub fn checkpoint_claims(seq: i64, hash: &str, time: UnixTime) -> Map<String, Value> {
    claims(json!({"kind": "checkpoint", "seq": seq, "hash": hash, "time": time}))
}

/// The payload of a purge anchor.
pub fn anchor_claims(seq: i64, hash: &str, time: UnixTime, records: i64) -> Map<String, Value> {
    claims(json!({"kind": "anchor", "seq": seq, "hash": hash, "time": time, "records": records}))
}

/// Writes checkpoints for the writer.
pub struct Checkpointer {
    store: SharedStore,
    keys: Arc<KeyManager>,
    known_kids: HashSet<String>,
    /// The seq of the last checkpoint seen or written.
    last_seq: Option<i64>,
}

impl Checkpointer {
    pub fn new(store: SharedStore, keys: Arc<KeyManager>) -> Checkpointer {
        Checkpointer { store, keys, known_kids: HashSet::new(), last_seq: None }
    }

    /// Signs and stores a checkpoint of the head, unless there is one already at it (the head
    /// did not move, or another instance was first). Returns the checkpoint written.
    pub async fn checkpoint(&mut self, now: UnixTime) -> Result<Option<AuditCheckpoint>, CheckpointError> {
        let snapshot = self.store.audit().snapshot().await?;
        if snapshot.head_seq == 0 {
            return Ok(None);
        }
        if self.last_seq.is_none_or(|last| last < snapshot.head_seq) {
            // Another instance may have checkpointed meanwhile.
            self.last_seq = self.store.audit().last_checkpoint().await?.map(|c| c.seq);
        }
        if self.last_seq.is_some_and(|last| last >= snapshot.head_seq) {
            return Ok(None);
        }
        let (seq, hash) = (snapshot.head_seq, snapshot.head_hash);
        let claims = checkpoint_claims(seq, &hash, now);
        let (jws, kid) =
            sign_statement(&self.store, &self.keys, &mut self.known_kids, CHECKPOINT_TYP, &claims, now).await?;
        let checkpoint = AuditCheckpoint { seq, hash, time: now, kid, jws };
        self.store.audit().insert_checkpoint(&checkpoint).await?;
        self.last_seq = Some(seq);
        tracing::info!(
            target: "habilis::audit::checkpoint",
            seq = checkpoint.seq,
            hash = %checkpoint.hash,
            time = checkpoint.time,
            kid = %checkpoint.kid,
            jws = %checkpoint.jws,
            "audit checkpoint"
        );
        Ok(Some(checkpoint))
    }
}

/// A checkpoint key that passed the checks of [`KeyRing::load`].
struct TrustedKey {
    verifier: Box<dyn JwsVerifier>,
}

/// The keys statements may be signed with: those of `audit_keys` whose sealed private part opens
/// under the master key and matches the public key. The others are remembered with the reason, so
/// that a statement signed by one fails naming it.
pub struct KeyRing {
    trusted: HashMap<String, TrustedKey>,
    rejected: HashMap<String, String>,
}

impl KeyRing {
    /// Without the master key no key can be trusted: every statement then fails, saying why.
    pub fn load(keys: &[AuditKey], master: Option<&MasterKey>) -> KeyRing {
        let mut trusted = HashMap::new();
        let mut rejected = HashMap::new();
        for key in keys {
            let checked = match master {
                Some(master) => trust(key, master),
                None => Err("the master key is not available to check it".to_string()),
            };
            match checked {
                Ok(verifier) => {
                    trusted.insert(key.kid.clone(), TrustedKey { verifier });
                }
                Err(reason) => {
                    rejected.insert(key.kid.clone(), reason);
                }
            }
        }
        KeyRing { trusted, rejected }
    }

    /// Checks a statement's signature and that its payload says `kind` with these seq, hash and
    /// time. The error says what is wrong.
    pub fn verify(
        &self,
        jws: &str,
        kid: &str,
        kind: &str,
        seq: i64,
        hash: &str,
        time: UnixTime,
    ) -> Result<Map<String, Value>, String> {
        let Some(key) = self.trusted.get(kid) else {
            return Err(match self.rejected.get(kid) {
                Some(reason) => format!("signed by key {kid}, which is not a Habilis key: {reason}"),
                None => format!("signed by key {kid}, which is not in audit_keys"),
            });
        };
        if kid_of(jws).as_deref() != Some(kid) {
            return Err(format!("its JWS does not name key {kid}"));
        }
        let (payload, _header) =
            jws::deserialize_compact(jws, &*key.verifier).map_err(|e| format!("invalid signature: {e}"))?;
        let payload: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| "the signed payload is not a JSON object".to_string())?;
        let matches = payload.get("kind").and_then(Value::as_str) == Some(kind)
            && payload.get("seq").and_then(Value::as_i64) == Some(seq)
            && payload.get("hash").and_then(Value::as_str) == Some(hash)
            && payload.get("time").and_then(Value::as_i64) == Some(time);
        if !matches {
            return Err(format!("the signed payload ({}) differs from the stored {kind}", Value::Object(payload)));
        }
        Ok(payload)
    }
}

/// The verifier of a stored key, if it is really a Habilis key.
fn trust(key: &AuditKey, master: &MasterKey) -> Result<Box<dyn JwsVerifier>, String> {
    let alg = SigningAlg::parse(&key.alg).ok_or_else(|| format!("unknown algorithm {}", key.alg))?;
    let private = master
        .open(&key.private_sealed, key.kid.as_bytes())
        .map_err(|_| "its sealed private key does not open under the master key".to_string())?;
    let private = Jwk::from_bytes(&*private).map_err(|e| format!("its private key is not a JWK: {e}"))?;
    let public = Jwk::from_bytes(key.public_jwk.as_bytes()).map_err(|e| format!("its public key is not a JWK: {e}"))?;
    // A thumbprint covers every public member: equal thumbprints, equal public keys.
    let private_print = thumbprint(&private).map_err(|e| e.to_string())?;
    let public_print = thumbprint(&public).map_err(|e| e.to_string())?;
    if private_print != key.kid || public_print != key.kid {
        return Err("its public key is not the one of its sealed private key".into());
    }
    let jose = |e: josekit::JoseError| e.to_string();
    let verifier: Box<dyn JwsVerifier> = match alg {
        SigningAlg::ES256 => Box::new(jws::ES256.verifier_from_jwk(&public).map_err(jose)?),
        SigningAlg::RS256 => Box::new(jws::RS256.verifier_from_jwk(&public).map_err(jose)?),
        SigningAlg::EdDSA => Box::new(jws::EdDSA.verifier_from_jwk(&public).map_err(jose)?),
    };
    Ok(verifier)
}

/// Checks an anchor's signature.
pub fn verify_anchor(ring: &KeyRing, anchor: &AuditAnchor) -> Result<(), String> {
    let payload = ring.verify(&anchor.jws, &anchor.kid, "anchor", anchor.seq, &anchor.hash, anchor.time)?;
    if payload.get("records").and_then(Value::as_i64) != Some(anchor.records) {
        return Err("the signed record count differs from the stored anchor".into());
    }
    Ok(())
}

/// Checks a checkpoint's signature.
pub fn verify_checkpoint(ring: &KeyRing, c: &AuditCheckpoint) -> Result<(), String> {
    ring.verify(&c.jws, &c.kid, "checkpoint", c.seq, &c.hash, c.time).map(|_| ())
}

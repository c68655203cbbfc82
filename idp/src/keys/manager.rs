//! The live key set: what the JWKS publishes, which key signs for each algorithm, and the periodic
//! reload that makes CLI rotations reach every running instance.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use josekit::jws::{self, JwsHeader};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwk::{KeyMaterial, generate_record, open_record};
use super::{KeyError, MasterKey, secs};
use crate::config::{Config, SigningAlg};
use crate::store::{SharedStore, SigningKeyRecord, UnixTime};
use crate::unix_now;

// ---------------------------------------------------------------------------------------------
// Lifecycle rules, shared by the key set and by `describe` so that listing and serving agree.

/// Retired keys no longer sign. A retirement time in the future (not produced by Habilis, but
/// possible in a hand-edited database) takes effect at that time.
pub(super) fn is_retired(record: &SigningKeyRecord, now: UnixTime) -> bool {
    record.retired_at.is_some_and(|at| at <= now)
}

/// Until when a key is published: forever while not retired, then `retention` after retirement —
/// the longest a token it signed can remain valid.
pub(super) fn published_until(record: &SigningKeyRecord, retention: i64) -> Option<UnixTime> {
    record.retired_at.map(|at| at.saturating_add(retention))
}

pub(super) fn is_published(record: &SigningKeyRecord, now: UnixTime, retention: i64) -> bool {
    published_until(record, retention).is_none_or(|until| until > now)
}

/// The signing key of each algorithm (by its `alg` string): the most recently activated among the
/// keys that are activated and not retired. Pending keys never sign, even when no key of their
/// algorithm is active. Ties (two instances generating at once on an empty database) break on
/// `created_at` then `kid`, so every instance picks the same key.
pub(super) fn signers_by_alg(records: &[SigningKeyRecord], now: UnixTime) -> HashMap<&str, &SigningKeyRecord> {
    let mut chosen: HashMap<&str, &SigningKeyRecord> = HashMap::new();
    for record in records.iter().filter(|r| !is_retired(r, now) && r.activates_at <= now) {
        let rank = |r: &SigningKeyRecord| (r.activates_at, r.created_at, r.kid.clone());
        match chosen.get(record.alg.as_str()) {
            Some(current) if rank(current) >= rank(record) => {}
            _ => {
                chosen.insert(record.alg.as_str(), record);
            }
        }
    }
    chosen
}

// ---------------------------------------------------------------------------------------------

/// An immutable snapshot, swapped as a whole: a request sees either the old set or the new one.
struct KeySet {
    /// Every opened key by kid, published or not: lets the next reload skip decrypting unchanged
    /// records.
    materials: HashMap<String, Arc<KeyMaterial>>,
    /// Keys in the JWKS, by kid: the only ones `verify` accepts.
    published: HashMap<String, Arc<KeyMaterial>>,
    /// The signer of each algorithm that has an active key (at most three entries: a linear scan
    /// beats hashing).
    signers: Vec<(SigningAlg, Arc<KeyMaterial>)>,
    /// The JWKS document, ready to serve, and its strong ETag.
    jwks: Bytes,
    etag: String,
}

impl KeySet {
    fn signer(&self, alg: SigningAlg) -> Option<&Arc<KeyMaterial>> {
        self.signers.iter().find(|(a, _)| *a == alg).map(|(_, m)| m)
    }

    /// Builds the set as of `now`. Every record is opened (reusing `previous` where the sealed
    /// bytes are unchanged): a record that does not open is an error, never silently skipped, as
    /// it means a wrong master key or a damaged database.
    fn build(
        records: &[SigningKeyRecord],
        now: UnixTime,
        retention: i64,
        algorithms: &[SigningAlg],
        master: &MasterKey,
        previous: Option<&KeySet>,
    ) -> Result<KeySet, KeyError> {
        let mut materials = HashMap::with_capacity(records.len());
        for record in records {
            let reusable = previous
                .and_then(|p| p.materials.get(&record.kid))
                .filter(|m| m.sealed == record.private_sealed && m.alg.as_str() == record.alg);
            let material = match reusable {
                Some(material) => Arc::clone(material),
                None => Arc::new(open_record(master, record)?),
            };
            materials.insert(record.kid.clone(), material);
        }

        let mut published_records: Vec<&SigningKeyRecord> =
            records.iter().filter(|r| is_published(r, now, retention)).collect();
        // A stable order keeps the body, hence the ETag, identical across reloads and instances.
        published_records.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        let mut published = HashMap::with_capacity(published_records.len());
        let mut jwks_keys = Vec::with_capacity(published_records.len());
        for record in published_records {
            if let Some(material) = materials.get(&record.kid) {
                jwks_keys.push(Value::Object(material.public_jwk.clone()));
                published.insert(record.kid.clone(), Arc::clone(material));
            }
        }

        // Only configured algorithms sign; keys of other algorithms stay published (and verifiable)
        // so that tokens they signed remain valid until the operator retires them.
        let chosen = signers_by_alg(records, now);
        let signers = algorithms
            .iter()
            .filter_map(|alg| {
                let record = chosen.get(alg.as_str())?;
                materials.get(&record.kid).map(|m| (*alg, Arc::clone(m)))
            })
            .collect();

        let mut body = Map::new();
        body.insert("keys".into(), Value::Array(jwks_keys));
        let jwks = serde_json::to_vec(&Value::Object(body))
            .map_err(|e| KeyError::Crypto(format!("serialising the JWKS: {e}")))?;
        let digest = Sha256::digest(&jwks);
        let etag = format!("\"{}\"", &hex::encode(digest)[..16]);
        Ok(KeySet { materials, published, signers, jwks: Bytes::from(jwks), etag })
    }

    fn describe_signers(&self) -> String {
        let parts: Vec<String> = self.signers.iter().map(|(alg, m)| format!("{}={}", alg.as_str(), m.kid)).collect();
        parts.join(" ")
    }
}

/// Signs tokens, verifies them, and serves the JWKS; shared by all requests as `Arc<KeyManager>`.
///
/// Reads are lock-free (`ArcSwap`): signing costs one atomic load plus the signature itself.
pub struct KeyManager {
    store: SharedStore,
    master: Arc<MasterKey>,
    algorithms: Vec<SigningAlg>,
    default_alg: SigningAlg,
    /// How long a retired key stays published, in seconds.
    retention: i64,
    set: ArcSwap<KeySet>,
    /// Serialises reloads so that a slow one cannot overwrite the result of a newer one.
    reload_lock: tokio::sync::Mutex<()>,
    /// Keys generated by `start` itself (kid, alg, activation), for the audit log once the
    /// application state (and its audit service) exists.
    generated: Vec<(String, SigningAlg, UnixTime)>,
}

impl fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.set.load();
        f.debug_struct("KeyManager")
            .field("algorithms", &self.algorithms)
            .field("default_alg", &self.default_alg)
            .field("signers", &set.describe_signers())
            .field("published", &set.published.len())
            .finish_non_exhaustive()
    }
}

/// The lease that serialises key generation between instances sharing one database.
const GENERATION_LEASE: &str = "signing-key-generation";
/// How long one instance may hold it (generating an RS256 key takes well under a second).
const GENERATION_LEASE_SECS: i64 = 30;

/// Generates a key for each configured algorithm that has none usable, under a database lease, and
/// returns every stored key with the kids generated. Without the lease, two instances started
/// together on an empty database each generated their own key and published different JWKS until
/// their next reload. The holder re-reads the keys once it holds the lease (another instance may
/// just have generated them); the others wait for the lease to end, then use what it generated.
async fn generate_missing(
    store: &dyn crate::store::Store,
    master: &MasterKey,
    algorithms: &[SigningAlg],
    now: UnixTime,
) -> Result<(Vec<SigningKeyRecord>, Vec<(String, SigningAlg, UnixTime)>), KeyError> {
    let owner = uuid::Uuid::new_v4().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(GENERATION_LEASE_SECS as u64 + 5);
    let leases = store.lifecycle();
    // Lease times are wall-clock seconds whatever `now` the keys are judged at (tests shift that).
    while !leases.acquire_lease(GENERATION_LEASE, &owner, unix_now() + GENERATION_LEASE_SECS, unix_now()).await? {
        if std::time::Instant::now() >= deadline {
            return Err(KeyError::Store(crate::store::StoreError::Unavailable(
                "another instance holds the key-generation lease and has not finished: check the other instances' logs"
                    .into(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = async {
        let mut records = store.list_signing_keys().await?;
        let mut generated = Vec::new();
        for &alg in algorithms {
            if records.iter().any(|r| r.alg == alg.as_str() && !is_retired(r, now)) {
                continue;
            }
            let record = generate_record(master, alg, now, now).await?;
            store.insert_signing_key(&record).await?;
            tracing::info!(kid = %record.kid, alg = alg.as_str(), "generated a signing key");
            generated.push((record.kid.clone(), alg, now));
            records.push(record);
        }
        Ok::<_, KeyError>((records, generated))
    }
    .await;
    if let Err(e) = leases.release_lease(GENERATION_LEASE, &owner, unix_now()).await {
        tracing::warn!(error = %e, "could not release the key-generation lease; it lapses by itself");
    }
    result
}

impl KeyManager {
    /// Loads the master key (see [`MasterKey::load_or_create`]) and starts the manager: what
    /// `habilis serve` does. Also returns where the master key came from, for the start-up log.
    pub async fn bootstrap(
        store: SharedStore,
        config: &Config,
    ) -> Result<(Arc<KeyManager>, super::MasterKeySource), KeyError> {
        let store_has_keys = !store.list_signing_keys().await?.is_empty();
        let (master, source) = MasterKey::load_or_create(config, store_has_keys)?;
        let manager = KeyManager::start(store, master, config).await?;
        Ok((manager, source))
    }

    /// [`KeyManager::start_at`] the current time.
    pub async fn start(store: SharedStore, master: MasterKey, config: &Config) -> Result<Arc<KeyManager>, KeyError> {
        KeyManager::start_at(store, master, config, unix_now()).await
    }

    /// Loads and opens every stored key (failing, with the kid, if one does not decrypt), then
    /// generates a key — active at once — for each configured algorithm that has no usable key
    /// (every algorithm on a fresh database; a newly enabled one later). Existing keys are never
    /// replaced.
    pub async fn start_at(
        store: SharedStore,
        master: MasterKey,
        config: &Config,
        now: UnixTime,
    ) -> Result<Arc<KeyManager>, KeyError> {
        let retention = secs(config.longest_signed_token_lifetime());
        let algorithms = config.keys.algorithms.clone();
        let master = Arc::new(master);

        super::admin::purge_before(&*store, now, retention).await?;
        let mut records = store.list_signing_keys().await?;
        // Opening first means a wrong master key fails here, before anything is written.
        let mut set = KeySet::build(&records, now, retention, &algorithms, &master, None)?;

        let missing: Vec<SigningAlg> = algorithms
            .iter()
            .copied()
            .filter(|alg| !records.iter().any(|r| r.alg == alg.as_str() && !is_retired(r, now)))
            .collect();
        let mut generated = Vec::new();
        if !missing.is_empty() {
            (records, generated) = generate_missing(&*store, &master, &algorithms, now).await?;
            set = KeySet::build(&records, now, retention, &algorithms, &master, Some(&set))?;
        }
        tracing::info!(signers = %set.describe_signers(), published = set.published.len(), "signing keys loaded");

        Ok(Arc::new(KeyManager {
            store,
            master,
            algorithms,
            default_alg: config.keys.default_algorithm,
            retention,
            set: ArcSwap::from_pointee(set),
            reload_lock: tokio::sync::Mutex::new(()),
            generated,
        }))
    }

    /// Re-reads the store and swaps in the key set as of `now`: rotations and retirements done by
    /// the CLI (or another instance) take effect, pending keys become active, expired ones leave
    /// the JWKS. Keys retired longer than the retention are purged from the store first (a failed
    /// purge is only logged). On error the current set stays in place.
    pub async fn reload(&self, now: UnixTime) -> Result<(), KeyError> {
        let _serialised = self.reload_lock.lock().await;
        if let Err(e) = super::admin::purge_before(&*self.store, now, self.retention).await {
            tracing::warn!(error = %e, "purging expired signing keys failed");
        }
        let records = self.store.list_signing_keys().await?;
        let previous = self.set.load_full();
        let set = KeySet::build(&records, now, self.retention, &self.algorithms, &self.master, Some(&previous))?;
        if set.etag != previous.etag || set.describe_signers() != previous.describe_signers() {
            tracing::info!(
                signers = %set.describe_signers(),
                published = set.published.len(),
                etag = %set.etag,
                "signing key set changed"
            );
        }
        self.set.store(Arc::new(set));
        Ok(())
    }

    /// Reloads every `interval` (see `keys.reload_interval`) until the manager is dropped; errors
    /// are logged and the previous set is kept, so a database hiccup never stops signing.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let manager: Weak<KeyManager> = Arc::downgrade(self);
        let interval = interval.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate; start() has just loaded the set
            loop {
                ticker.tick().await;
                let Some(manager) = manager.upgrade() else {
                    break;
                };
                if let Err(e) = manager.reload(unix_now()).await {
                    tracing::error!(error = %e, "reloading signing keys failed; keeping the previous key set");
                }
            }
        })
    }

    /// Signs `claims` as a compact JWS with header `alg`, `kid` and `typ` (`JWT`, `at+jwt`,
    /// `logout+jwt` …), using the active key of `alg` (`None`: `keys.default_algorithm`).
    ///
    /// Claims are serialised exactly as given: put integer `iat`/`exp` in the map (josekit's date
    /// setters would write fractional seconds). This is the token hot path: no JWK parsing, no
    /// store access, no lock — one atomic load, one JSON serialisation, one signature.
    pub fn sign(&self, alg: Option<SigningAlg>, typ: &str, claims: &Map<String, Value>) -> Result<String, KeyError> {
        let alg = alg.unwrap_or(self.default_alg);
        let set = self.set.load();
        let material = set.signer(alg).ok_or_else(|| {
            if self.algorithms.contains(&alg) { KeyError::NoActiveKey(alg) } else { KeyError::AlgorithmNotEnabled(alg) }
        })?;
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Crypto(format!("serialising claims: {e}")))?;
        let mut header = JwsHeader::new();
        header.set_token_type(typ);
        jws::serialize_compact(&payload, &header, &*material.signer)
            .map_err(|e| KeyError::Crypto(format!("signing with {}: {e}", material.kid)))
    }

    /// Verifies a compact JWS signed by one of the published keys (chosen by its `kid` header; the
    /// header `alg` must be that key's algorithm) and returns its claims. Does not check `exp`,
    /// `iss`, `aud` …: callers decide what an acceptable token is (an expired `id_token_hint` is
    /// fine, for instance).
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, KeyError> {
        let set = self.set.load();
        let unknown_kid: RefCell<Option<String>> = RefCell::new(None);
        let result = jws::deserialize_compact_with_selector(token, |header| {
            let Some(kid) = header.key_id() else {
                return Ok(None);
            };
            match set.published.get(kid) {
                Some(material) => Ok(Some(&*material.verifier)),
                None => {
                    *unknown_kid.borrow_mut() = Some(kid.to_string());
                    Ok(None)
                }
            }
        });
        let payload = match result {
            Ok((payload, _header)) => payload,
            Err(e) => {
                return Err(match unknown_kid.into_inner() {
                    Some(kid) => KeyError::UnknownKid(kid),
                    None => KeyError::InvalidToken(e.to_string()),
                });
            }
        };
        serde_json::from_slice::<Map<String, Value>>(&payload)
            .map_err(|e| KeyError::InvalidToken(format!("the payload is not a JSON object: {e}")))
    }

    /// The JWKS body and its ETag (quoted), precomputed: serving them copies a pointer.
    pub fn jwks(&self) -> (Bytes, String) {
        let set = self.set.load();
        (set.jwks.clone(), set.etag.clone())
    }

    /// The configured algorithms that have an active key, in configuration order: what discovery
    /// advertises as `id_token_signing_alg_values_supported` and the like.
    pub fn signing_algs(&self) -> Vec<SigningAlg> {
        let set = self.set.load();
        self.algorithms.iter().copied().filter(|alg| set.signer(*alg).is_some()).collect()
    }

    pub fn default_alg(&self) -> SigningAlg {
        self.default_alg
    }

    /// The kid that currently signs for `alg`, if any.
    pub fn active_kid(&self, alg: SigningAlg) -> Option<String> {
        self.set.load().signer(alg).map(|m| m.kid.clone())
    }

    /// The kids in the JWKS, sorted.
    pub fn published_kids(&self) -> Vec<String> {
        let set = self.set.load();
        let mut kids: Vec<String> = set.published.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// The master key, for other secrets sealed at rest (TOTP secrets …). Use an AAD naming the
    /// purpose and the row (e.g. `totp:<credential id>`), so that sealed values cannot be swapped.
    /// The keys this manager generated when it started (kid, alg, when they sign from): what
    /// rotates without an administrator (see `app::build_state`, which audits them).
    pub fn generated_at_start(&self) -> &[(String, SigningAlg, UnixTime)] {
        &self.generated
    }

    pub fn master_key(&self) -> Arc<MasterKey> {
        Arc::clone(&self.master)
    }
}

//! The client registry: every instance keeps the clients in memory, so the token hot path never
//! waits for the database, and notices changes made elsewhere (the CLI, the admin API, another
//! instance) within a second.
//!
//! * Lookups are a read-locked `HashMap` hit. A miss reads the store, so a client created a moment
//!   ago by the CLI works at once on every instance.
//! * A background refresher ([`ClientRegistry::spawn_refresher`]) compares the store's cheap
//!   change detector (`clients_version`: count and highest `updated_at`) and reloads everything
//!   when it moved: edits and removals take effect everywhere without a restart. Every write here
//!   sets `updated_at` above the current highest one, so every change moves that version.
//! * Admin operations ([`ClientRegistry::register`], [`ClientRegistry::rotate_secret`],
//!   [`ClientRegistry::remove`] …) write the store and update this instance's cache immediately.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::model::{Client, ClientMetadataError, MAX_CLIENT_ID_LEN, TokenEndpointAuthMethod, is_unreserved};
use super::remote_jwks::RemoteJwks;
use crate::store::{ClientRecord, SharedStore, StoreError, UnixTime};
use crate::unix_now;

/// How often the refresher asks the store whether clients changed (one cheap query).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the refresher reloads even if the version did not move: the safety net for changes
/// (count, max updated_at) cannot see. Deleting the client holding the highest `updated_at` lowers
/// the maximum, so a deletion followed by an insertion from *another process* within the same
/// second can recreate a version already seen; so can a database edited by hand. Cheap: unchanged
/// records are not parsed again.
const FULL_RELOAD_PERIOD: Duration = Duration::from_secs(10);

/// Shortest secret accepted when an administrator supplies one: 32 characters of the allowed
/// alphabet carry at least 190 bits, the same order as a generated one.
pub const MIN_SECRET_LEN: usize = 32;
const MAX_SECRET_LEN: usize = 512;

/// Why an administrative operation failed. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid client metadata ({0})")]
    Metadata(#[from] ClientMetadataError),
    #[error("no client `{0}`; list clients with `habilis client list`")]
    NotFound(String),
    #[error(
        "client `{client_id}` authenticates with {method}, which uses no client secret; a secret \
         applies only to client_secret_basic and client_secret_post"
    )]
    NoSecretMethod { client_id: String, method: TokenEndpointAuthMethod },
    #[error("the given client secret is unusable: {0}. Omit it to have a strong one generated")]
    WeakSecret(String),
    #[error(
        "client `{client_id}` is stored with metadata that no longer validates ({error}); import \
         corrected metadata for it"
    )]
    Broken { client_id: String, error: ClientMetadataError },
    #[error("stored client `{0}` has a malformed secret hash; rotate its secret")]
    CorruptSecretHash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of [`ClientRegistry::register`].
pub struct Registration {
    pub client: Arc<Client>,
    /// The generated secret, to show once: only its hash is stored. `None` when the method uses no
    /// secret, when the caller supplied the secret, or when an existing secret was kept.
    pub secret: Option<Zeroizing<String>>,
    /// `false` when an existing client was updated.
    pub created: bool,
}

/// A stored client as administrators see it (never with its secret hash).
#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub client_id: String,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// Whether a secret hash is stored.
    pub has_secret: bool,
    /// The stored metadata document as text.
    pub metadata: String,
    /// The validated client, or why the stored metadata no longer validates (such a client is
    /// refused everywhere until fixed).
    pub client: Result<Arc<Client>, ClientMetadataError>,
}

/// What the cache keeps per client: the validated client and the digest its secret must hash to.
pub(crate) struct CachedClient {
    pub(crate) client: Arc<Client>,
    pub(crate) secret_digest: Option<[u8; 32]>,
    /// The stored fields it was built from: a reload reuses this entry when they are unchanged.
    metadata: String,
    secret_hash: Option<String>,
}

impl CachedClient {
    fn built_from(&self, record: &ClientRecord) -> bool {
        self.metadata == record.metadata && self.secret_hash == record.secret_hash
    }
}

struct Cache {
    clients: HashMap<String, Arc<CachedClient>>,
    /// Bumped by every reload and every local write. A cache miss that read the store under an
    /// older generation does not insert its (possibly stale) result: this is what keeps a client
    /// removed during the miss from being resurrected in the cache.
    generation: u64,
    /// The store version the last full load saw.
    version: Option<(i64, UnixTime)>,
}

/// The client registry, shared as `Arc<ClientRegistry>` (inject it; no globals).
pub struct ClientRegistry {
    store: SharedStore,
    cache: RwLock<Cache>,
    /// Serialises reloads so that a slow one cannot overwrite the result of a newer one.
    reload_lock: tokio::sync::Mutex<()>,
    /// The highest `updated_at` this instance has seen or written. Writes go above it, so that
    /// after this instance deletes the client holding the maximum, its next write still produces
    /// a version no instance has seen before.
    high_water: AtomicI64,
    pub(crate) remote_jwks: RemoteJwks,
}

impl std::fmt::Debug for ClientRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("ClientRegistry")
            .field("cached", &cache.clients.len())
            .field("version", &cache.version)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a client secret. A fast hash is right here (unlike passwords): secrets are generated
/// with 256 bits of entropy (or required to be long), so brute force is hopeless whatever the
/// hash cost, and the token endpoint must not spend argon2 time on every request.
pub(crate) fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(secret_digest(secret))
}

fn parse_secret_hash(hash: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hash).ok()?;
    bytes.try_into().ok()
}

/// 32 random bytes, base64url: 43 characters of the URL-unreserved alphabet, so the secret is the
/// same whether or not a client form-encodes it in its Basic credentials.
pub(crate) fn generate_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rng(), bytes.as_mut());
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// Administrator-supplied secrets must be long and use only URL-unreserved characters: RFC 6749
/// §2.3.1 asks clients to form-encode Basic credentials and many do not, so a secret with `+`, `%`
/// or `:` would work with some client libraries and not others.
fn check_given_secret(secret: &str) -> Result<(), RegistryError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(RegistryError::WeakSecret(format!("it must be at least {MIN_SECRET_LEN} characters long")));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(RegistryError::WeakSecret(format!("it must be at most {MAX_SECRET_LEN} characters long")));
    }
    if !secret.bytes().all(is_unreserved) {
        return Err(RegistryError::WeakSecret(
            "it may contain only letters, digits and - . _ ~ (other characters are encoded \
             inconsistently by client libraries)"
                .into(),
        ));
    }
    Ok(())
}

/// Whether `client_id` could be a registered identifier: lets lookups of garbage skip the store.
fn plausible_client_id(client_id: &str) -> bool {
    !client_id.is_empty() && client_id.len() <= MAX_CLIENT_ID_LEN && client_id.bytes().all(is_unreserved)
}

fn to_cached(record: &ClientRecord) -> Result<CachedClient, ClientMetadataError> {
    let client = Client::from_metadata(&record.client_id, &record.metadata)?;
    let secret_digest = match &record.secret_hash {
        None => None,
        Some(hash) => {
            let digest = parse_secret_hash(hash);
            if digest.is_none() {
                tracing::error!(client_id = %record.client_id, "stored client secret hash is malformed; the client cannot authenticate until its secret is rotated");
            }
            digest
        }
    };
    Ok(CachedClient {
        client: Arc::new(client),
        secret_digest,
        metadata: record.metadata.clone(),
        secret_hash: record.secret_hash.clone(),
    })
}

/// A prepared registration, validated but not yet written (lets the CLI validate a whole file
/// before writing anything).
pub struct PreparedRegistration {
    client: Client,
    given_secret: Option<Zeroizing<String>>,
}

/// Hand-written so that a secret can never reach a log through `{:?}`.
impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("client_id", &self.client.client_id())
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("created", &self.created)
            .finish()
    }
}

impl std::fmt::Debug for PreparedRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRegistration")
            .field("client_id", &self.client.client_id())
            .field("given_secret", &self.given_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PreparedRegistration {
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl ClientRegistry {
    /// An empty registry: clients load lazily on first lookup. What the CLI uses.
    pub fn new(store: SharedStore) -> Arc<ClientRegistry> {
        ClientRegistry::with_remote_jwks(store, RemoteJwks::new())
    }

    fn with_remote_jwks(store: SharedStore, remote_jwks: RemoteJwks) -> Arc<ClientRegistry> {
        Arc::new(ClientRegistry {
            store,
            cache: RwLock::new(Cache { clients: HashMap::new(), generation: 0, version: None }),
            reload_lock: tokio::sync::Mutex::new(()),
            high_water: AtomicI64::new(0),
            remote_jwks,
        })
    }

    /// A registry whose `jwks_uri` cache uses shorter timings, for tests.
    #[cfg(test)]
    pub(crate) fn with_jwks_timings(store: SharedStore, ttl: Duration, min_refetch: Duration) -> Arc<ClientRegistry> {
        let mut remote_jwks = RemoteJwks::new();
        remote_jwks.ttl = ttl;
        remote_jwks.min_refetch = min_refetch;
        ClientRegistry::with_remote_jwks(store, remote_jwks)
    }

    /// A registry with every client loaded: what `habilis serve` uses (then
    /// [`ClientRegistry::spawn_refresher`]).
    pub async fn start(store: SharedStore) -> Result<Arc<ClientRegistry>, StoreError> {
        let registry = ClientRegistry::new(store);
        registry.reload().await?;
        Ok(registry)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client `client_id`, if registered (and its stored metadata valid). The hot path: a
    /// read-locked map hit; on a miss, one store read.
    pub async fn get(&self, client_id: &str) -> Result<Option<Arc<Client>>, StoreError> {
        Ok(self.cached(client_id).await?.map(|entry| Arc::clone(&entry.client)))
    }

    pub(crate) async fn cached(&self, client_id: &str) -> Result<Option<Arc<CachedClient>>, StoreError> {
        let generation = {
            let cache = self.read_cache();
            if let Some(entry) = cache.clients.get(client_id) {
                return Ok(Some(Arc::clone(entry)));
            }
            cache.generation
        };
        if !plausible_client_id(client_id) {
            return Ok(None);
        }
        let Some(record) = self.store.client_by_id(client_id).await? else {
            return Ok(None);
        };
        let entry = match to_cached(&record) {
            Ok(entry) => Arc::new(entry),
            Err(e) => {
                tracing::error!(client_id, error = %e, "stored client metadata is invalid; the client is refused until it is fixed");
                return Ok(None);
            }
        };
        let mut cache = self.write_cache();
        if cache.generation == generation {
            cache.clients.entry(client_id.to_string()).or_insert_with(|| Arc::clone(&entry));
        }
        Ok(Some(entry))
    }

    /// Re-reads every client and swaps the cache. Records unchanged since the last load keep
    /// their parsed entry. Clients whose stored metadata no longer validates are left out (and
    /// logged), never fatal: one bad row must not take every client down. On a store error the
    /// current cache stays.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _serialised = self.reload_lock.lock().await;
        // The version is read before the list: a change landing between the two is in the list
        // and also moves the version past what is recorded, so the next check reloads again.
        let version = self.store.clients_version().await?;
        self.high_water.fetch_max(version.1, Ordering::SeqCst);
        let records = self.store.list_clients().await?;
        let previous = self.read_cache().clients.clone();
        let mut clients = HashMap::with_capacity(records.len());
        for record in &records {
            let reusable = previous.get(&record.client_id).filter(|e| e.built_from(record));
            if let Some(entry) = reusable {
                clients.insert(record.client_id.clone(), Arc::clone(entry));
                continue;
            }
            match to_cached(record) {
                Ok(entry) => {
                    clients.insert(record.client_id.clone(), Arc::new(entry));
                }
                Err(e) => {
                    tracing::error!(client_id = %record.client_id, error = %e, "stored client metadata is invalid; the client is refused until it is fixed");
                }
            }
        }
        let mut cache = self.write_cache();
        let changed = cache.version != Some(version);
        cache.clients = clients;
        cache.generation += 1;
        cache.version = Some(version);
        drop(cache);
        if changed {
            tracing::debug!(count = records.len(), "client registry reloaded");
        }
        Ok(())
    }

    /// Reloads when the store's version differs from the last load. Returns whether it reloaded.
    pub async fn refresh_if_changed(&self) -> Result<bool, StoreError> {
        let version = self.store.clients_version().await?;
        self.high_water.fetch_max(version.1, Ordering::SeqCst);
        if self.read_cache().version == Some(version) {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Checks for changes every `interval` ([`DEFAULT_REFRESH_INTERVAL`] in production), with a
    /// full reload every 10 s regardless (see `FULL_RELOAD_PERIOD`), until the registry is
    /// dropped. Errors are logged and the current cache kept: a database hiccup never makes
    /// clients disappear.
    pub fn spawn_refresher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let registry: Weak<ClientRegistry> = Arc::downgrade(self);
        let interval = interval.max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // immediate
            let full_every = (FULL_RELOAD_PERIOD.as_millis() / interval.as_millis().max(1)).max(1);
            let mut ticks: u128 = 0;
            loop {
                ticker.tick().await;
                let Some(registry) = registry.upgrade() else {
                    break;
                };
                ticks += 1;
                let result = if ticks.is_multiple_of(full_every) {
                    registry.reload().await.map(|()| true)
                } else {
                    registry.refresh_if_changed().await
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "refreshing the client registry failed; keeping the cached clients");
                }
            }
        })
    }

    /// Validates a registration without writing it. `metadata_json` is an RFC 7591 document; the
    /// client id comes from `client_id`, else from the document's `client_id`, else is generated;
    /// the secret from `secret`, else from the document's `client_secret`.
    pub fn prepare(
        &self,
        metadata_json: &str,
        client_id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<PreparedRegistration, RegistryError> {
        let value: Value = serde_json::from_str(metadata_json)
            .map_err(|e| ClientMetadataError::metadata(format!("the client metadata is not valid JSON: {e}")))?;
        prepare_value(value, client_id, secret)
    }

    /// [`ClientRegistry::prepare`] for a document already parsed (a JSON object).
    pub fn prepare_document(
        &self,
        document: Value,
        client_id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<PreparedRegistration, RegistryError> {
        prepare_value(document, client_id, secret)
    }

    /// Creates or replaces a client (see [`ClientRegistry::prepare`] for where the id and secret
    /// come from). A secret is generated for `client_secret_*` clients unless one is given, or the
    /// client already exists with a secret (re-importing metadata must not break a running
    /// application). `created_at` survives updates.
    pub async fn register(
        &self,
        metadata_json: &str,
        client_id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Registration, RegistryError> {
        let prepared = self.prepare(metadata_json, client_id, secret)?;
        self.register_prepared(prepared).await
    }

    /// Writes a registration validated by [`ClientRegistry::prepare`].
    pub async fn register_prepared(&self, prepared: PreparedRegistration) -> Result<Registration, RegistryError> {
        let PreparedRegistration { client, given_secret } = prepared;
        let client_id = client.client_id().to_string();
        let existing = self.store.client_by_id(&client_id).await?;
        let method = client.token_endpoint_auth_method();
        let (secret_hash, shown_secret) = if !method.uses_secret() {
            (None, None)
        } else if let Some(given) = &given_secret {
            (Some(hash_secret(given)), None)
        } else if let Some(hash) =
            existing.as_ref().and_then(|r| r.secret_hash.clone()).filter(|h| parse_secret_hash(h).is_some())
        {
            (Some(hash), None)
        } else {
            let generated = generate_secret();
            (Some(hash_secret(&generated)), Some(generated))
        };
        let metadata = serde_json::to_string(client.metadata())
            .map_err(|e| ClientMetadataError::metadata(format!("the metadata cannot be serialised: {e}")))?;
        let now = unix_now();
        let record = ClientRecord {
            client_id: client_id.clone(),
            metadata,
            secret_hash,
            created_at: existing.as_ref().map_or(now, |r| r.created_at),
            updated_at: self.next_updated_at(now).await?,
        };
        self.store.upsert_client(&record).await?;
        let client = Arc::new(client);
        self.cache_local_write(&record, Arc::clone(&client));
        tracing::info!(client_id = %client_id, created = existing.is_none(), method = method.as_str(), "client registered");
        Ok(Registration { client, secret: shown_secret, created: existing.is_none() })
    }

    /// Replaces the secret of a `client_secret_*` client and returns the new one (to show once).
    /// The old secret stops working on this instance at once and on the others within a refresh.
    pub async fn rotate_secret(&self, client_id: &str) -> Result<Zeroizing<String>, RegistryError> {
        let record =
            self.store.client_by_id(client_id).await?.ok_or_else(|| RegistryError::NotFound(client_id.to_string()))?;
        let client = Client::from_metadata(&record.client_id, &record.metadata)
            .map_err(|error| RegistryError::Broken { client_id: client_id.to_string(), error })?;
        let method = client.token_endpoint_auth_method();
        if !method.uses_secret() {
            return Err(RegistryError::NoSecretMethod { client_id: client_id.to_string(), method });
        }
        let secret = generate_secret();
        let record = ClientRecord {
            secret_hash: Some(hash_secret(&secret)),
            updated_at: self.next_updated_at(unix_now()).await?,
            ..record
        };
        self.store.upsert_client(&record).await?;
        self.cache_local_write(&record, Arc::new(client));
        tracing::info!(client_id, "client secret rotated");
        Ok(secret)
    }

    /// Deletes a client. Returns whether it existed. (The database deletes its grants and
    /// consents with it.)
    pub async fn remove(&self, client_id: &str) -> Result<bool, RegistryError> {
        // Remember the maximum before it possibly leaves with this client (see `high_water`).
        let (_, latest) = self.store.clients_version().await?;
        self.high_water.fetch_max(latest, Ordering::SeqCst);
        let removed = self.store.delete_client(client_id).await?;
        let mut cache = self.write_cache();
        cache.clients.remove(client_id);
        cache.generation += 1;
        drop(cache);
        if removed {
            tracing::info!(client_id, "client removed");
        }
        Ok(removed)
    }

    /// Every stored client, fresh from the store, including ones whose metadata no longer
    /// validates (so administrators can see and fix them).
    pub async fn list(&self) -> Result<Vec<ClientEntry>, RegistryError> {
        let records = self.store.list_clients().await?;
        Ok(records.iter().map(entry_of).collect())
    }

    /// One stored client, fresh from the store (see [`ClientRegistry::list`]).
    pub async fn describe(&self, client_id: &str) -> Result<Option<ClientEntry>, RegistryError> {
        Ok(self.store.client_by_id(client_id).await?.as_ref().map(entry_of))
    }

    /// `updated_at` for a write: above every stored `updated_at` and every one this instance has
    /// seen, so the store's version (count, max updated_at) moves with every change — even two
    /// writes within one second, an update of an old client while a newer one holds the maximum,
    /// or an insertion right after this instance deleted the client holding the maximum.
    /// (`max(now, own previous updated_at + 1)` would not do: two clients written in the same
    /// second would share the maximum.) It runs ahead of the clock only by the number of writes
    /// made within one second.
    async fn next_updated_at(&self, now: UnixTime) -> Result<UnixTime, StoreError> {
        let (_, latest) = self.store.clients_version().await?;
        let floor = latest.max(self.high_water.load(Ordering::SeqCst)).saturating_add(1);
        let at = now.max(floor);
        self.high_water.fetch_max(at, Ordering::SeqCst);
        Ok(at)
    }

    /// Puts a client this instance just wrote into its cache (the other instances learn of it
    /// from the store's version).
    fn cache_local_write(&self, record: &ClientRecord, client: Arc<Client>) {
        let entry = Arc::new(CachedClient {
            client,
            secret_digest: record.secret_hash.as_deref().and_then(parse_secret_hash),
            metadata: record.metadata.clone(),
            secret_hash: record.secret_hash.clone(),
        });
        let mut cache = self.write_cache();
        cache.clients.insert(record.client_id.clone(), entry);
        cache.generation += 1;
    }
}

fn prepare_value(
    value: Value,
    client_id: Option<&str>,
    secret: Option<&str>,
) -> Result<PreparedRegistration, RegistryError> {
    let Value::Object(mut document) = value else {
        return Err(ClientMetadataError::metadata("the client metadata must be a JSON object").into());
    };
    let inner_secret = match document.remove("client_secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Zeroizing::new(s)),
        Some(_) => {
            return Err(ClientMetadataError::metadata("`client_secret` must be a string").into());
        }
    };
    let given_secret = match (secret, inner_secret) {
        (Some(a), Some(b)) if a != b.as_str() => {
            return Err(RegistryError::WeakSecret(
                "two different secrets were given (in the document and separately)".into(),
            ));
        }
        (Some(a), _) => Some(Zeroizing::new(a.to_string())),
        (None, b) => b,
    };
    let inner_id = match document.remove("client_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ClientMetadataError::metadata("`client_id` must be a string").into());
        }
    };
    let client_id = match (client_id, inner_id) {
        (Some(a), Some(b)) if a != b => {
            return Err(ClientMetadataError::metadata(format!(
                "the document's client_id `{}` differs from the one given (`{a}`)",
                b.escape_debug()
            ))
            .into());
        }
        (Some(a), _) => a.to_string(),
        (None, Some(b)) => b,
        (None, None) => uuid::Uuid::new_v4().simple().to_string(),
    };
    let client = Client::from_value(&client_id, Value::Object(document))?;
    let method = client.token_endpoint_auth_method();
    if let Some(given) = &given_secret {
        if !method.uses_secret() {
            return Err(RegistryError::NoSecretMethod { client_id, method });
        }
        check_given_secret(given)?;
    }
    Ok(PreparedRegistration { client, given_secret })
}

fn entry_of(record: &ClientRecord) -> ClientEntry {
    ClientEntry {
        client_id: record.client_id.clone(),
        created_at: record.created_at,
        updated_at: record.updated_at,
        has_secret: record.secret_hash.is_some(),
        metadata: record.metadata.clone(),
        client: Client::from_metadata(&record.client_id, &record.metadata).map(Arc::new),
    }
}

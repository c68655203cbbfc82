//! Ephemeral entries that must outlive the ephemeral store itself: revocation markers
//! (`revoked:…`, see `oidc::tokens`) and lockouts (`throttle-lock:…`, see `authn::throttle`).
//!
//! Everything else in the ephemeral store may be lost at no cost to security — a lost session or
//! login in progress only means logging in again. A lost revocation marker makes a revoked token
//! valid again, and a lost lockout reopens guessing: the in-memory store forgets both at every
//! restart, and Redis when it restarts empty, is flushed or evicts. [`DurableMarkers`] wraps the
//! configured ephemeral store and, for those key classes only:
//!
//! - writes the entry to the database first (`durable_markers`, through [`MarkerStore`]), then to
//!   the ephemeral store, so a marker the caller was told about is durable;
//! - reads it from the ephemeral store together with a *restored* sentinel, in the same round trip
//!   (`MGET` on Redis). The sentinel is set after the ephemeral store was filled from the database;
//!   its absence means the ephemeral store lost its contents since, and the live markers are
//!   restored (once, whatever the concurrency) before the read is answered.
//!
//! The hot path therefore still reads only the ephemeral store; the database is read at start-up
//! and after a loss. Redis must not evict these keys behind the sentinel's back: run it with
//! `maxmemory-policy noeviction` (README, "Production").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{EphemeralError, EphemeralResult, EphemeralStore, SharedEphemeral};
use crate::store::{DurableMarker, SharedStore, StoreError};

/// The key classes kept durably. Keys are chosen by their owners (`oidc::tokens`,
/// `authn::throttle`); the tests of those modules check their keys fall in one of these classes.
pub const DURABLE_PREFIXES: &[&str] = &["revoked:", "throttle-lock:"];

/// Durable classes whose presence is confirmed with the database when found: a lock lifted by
/// another process (`habilis user unlock` does not share the server's memory) is gone from the
/// database first. The cost is one indexed read per attempt at a locked scope, which is refused
/// before any hashing; revocation markers, read on every token, are not confirmed.
const CONFIRMED_PREFIXES: &[&str] = &["throttle-lock:"];

/// Set once the ephemeral store holds every live durable marker.
const RESTORED: &str = "durable-markers:restored";
/// The sentinel's lifetime: a week, after which the markers are simply restored again (harmless:
/// restoring never overwrites an entry already there).
const RESTORED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether `key` belongs to a durable class.
pub fn is_durable(key: &str) -> bool {
    DURABLE_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn store_failed(e: StoreError) -> EphemeralError {
    EphemeralError::Unavailable(format!("durable markers: {e}"))
}

/// The configured ephemeral store, with the durable key classes written through to the database.
pub struct DurableMarkers {
    inner: SharedEphemeral,
    store: SharedStore,
    /// Makes concurrent restorations one: the first restores, the others find the sentinel.
    restoring: tokio::sync::Mutex<()>,
}

impl DurableMarkers {
    pub fn new(inner: SharedEphemeral, store: SharedStore) -> DurableMarkers {
        DurableMarkers { inner, store, restoring: tokio::sync::Mutex::new(()) }
    }

    /// Restores the live markers into the ephemeral store unless the sentinel says it holds them.
    /// Called at start-up, and by reads that find the sentinel gone. Returns how many markers were
    /// restored (0 when there was nothing to do).
    pub async fn ensure_restored(&self) -> EphemeralResult<usize> {
        if self.inner.get(RESTORED).await?.is_some() {
            return Ok(0);
        }
        self.restore().await
    }

    async fn restore(&self) -> EphemeralResult<usize> {
        let _one_at_a_time = self.restoring.lock().await;
        if self.inner.get(RESTORED).await?.is_some() {
            return Ok(0);
        }
        let now = unix_now();
        let markers = self.store.markers().live_markers(now).await.map_err(store_failed)?;
        for marker in &markers {
            let ttl = Duration::from_secs(u64::try_from(marker.expires_at - now).unwrap_or(1).max(1));
            // Never overwrite: an entry written since the database was read is at least as new.
            self.inner.put_if_absent(&marker.key, marker.value.as_bytes(), ttl).await?;
        }
        self.inner.put(RESTORED, b"1", RESTORED_TTL).await?;
        tracing::info!(markers = markers.len(), backend = self.inner.kind(), "revocations and lockouts restored");
        Ok(markers.len())
    }
}

#[async_trait]
impl EphemeralStore for DurableMarkers {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> EphemeralResult<()> {
        if is_durable(key) {
            let value = std::str::from_utf8(value)
                .map_err(|_| EphemeralError::Unavailable(format!("durable marker {key}: the value is not text")))?;
            let lifetime = i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(i64::MAX);
            let marker = DurableMarker {
                key: key.to_owned(),
                value: value.to_owned(),
                expires_at: unix_now().saturating_add(lifetime),
            };
            self.store.markers().put_marker(&marker).await.map_err(store_failed)?;
        }
        self.inner.put(key, value, ttl).await
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> EphemeralResult<bool> {
        if !is_durable(key) {
            return self.inner.put_if_absent(key, value, ttl).await;
        }
        // A lost entry must not make the key look absent.
        self.ensure_restored().await?;
        if self.inner.get(key).await?.is_some() {
            return Ok(false);
        }
        self.put(key, value, ttl).await?;
        Ok(true)
    }

    async fn get(&self, key: &str) -> EphemeralResult<Option<Vec<u8>>> {
        if !is_durable(key) {
            return self.inner.get(key).await;
        }
        Ok(self.get_many(&[key]).await?.pop().flatten())
    }

    async fn get_many(&self, keys: &[&str]) -> EphemeralResult<Vec<Option<Vec<u8>>>> {
        if !keys.iter().any(|key| is_durable(key)) {
            return self.inner.get_many(keys).await;
        }
        let mut with_sentinel = Vec::with_capacity(keys.len() + 1);
        with_sentinel.push(RESTORED);
        with_sentinel.extend_from_slice(keys);
        let mut values = self.inner.get_many(&with_sentinel).await?;
        if values.first().is_some_and(Option::is_some) {
            values.remove(0);
        } else {
            // The ephemeral store lost its contents: answer only once the markers are back.
            self.restore().await?;
            values = self.inner.get_many(keys).await?;
        }
        for (key, value) in keys.iter().zip(values.iter_mut()) {
            if value.is_some()
                && CONFIRMED_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
                && self.store.markers().marker(key).await.map_err(store_failed)?.is_none()
            {
                self.inner.delete(key).await?;
                // An unlock also forgets the failure count (`authn::throttle` keys): otherwise the
                // next failure would lock again at once.
                if let Some(scope) = key.strip_prefix("throttle-lock:") {
                    self.inner.delete(&format!("throttle-fail:{scope}")).await?;
                }
                *value = None;
            }
        }
        Ok(values)
    }

    async fn take(&self, key: &str) -> EphemeralResult<Option<Vec<u8>>> {
        if !is_durable(key) {
            return self.inner.take(key).await;
        }
        self.ensure_restored().await?;
        let value = self.inner.take(key).await?;
        self.store.markers().delete_marker(key).await.map_err(store_failed)?;
        Ok(value)
    }

    async fn delete(&self, key: &str) -> EphemeralResult<()> {
        if is_durable(key) {
            self.store.markers().delete_marker(key).await.map_err(store_failed)?;
        }
        self.inner.delete(key).await
    }

    async fn incr(&self, key: &str, ttl: Duration) -> EphemeralResult<u64> {
        self.inner.incr(key, ttl).await
    }

    async fn decr(&self, key: &str) -> EphemeralResult<u64> {
        self.inner.decr(key).await
    }

    async fn ping(&self) -> EphemeralResult<()> {
        self.inner.ping().await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::authn::throttle::test_backends::{ephemerals, stores};
    use crate::ephemeral::MemoryStore;

    const HOUR: Duration = Duration::from_secs(3600);

    /// What a restart of the in-memory store, or Redis restarted empty, leaves: nothing, not even
    /// the sentinel. Deletes through the inner store, so the database keeps its rows.
    async fn lose_everything(inner: &SharedEphemeral, keys: &[&str]) {
        for key in keys.iter().chain([&RESTORED]) {
            inner.delete(key).await.unwrap();
        }
    }

    #[tokio::test]
    async fn durable_entries_survive_the_loss_of_the_ephemeral_store() {
        for (store, _dir) in stores().await {
            for inner in ephemerals().await {
                let durable = DurableMarkers::new(inner.clone(), store.clone());
                durable.ensure_restored().await.unwrap();
                durable.put("revoked:grant:g1", b"1900000000", HOUR).await.unwrap();
                durable.put("throttle-lock:login:kit", b"1900000000", HOUR).await.unwrap();
                durable.put("sess:abc", b"session", HOUR).await.unwrap();
                lose_everything(&inner, &["revoked:grant:g1", "throttle-lock:login:kit", "sess:abc"]).await;
                assert_eq!(inner.get("revoked:grant:g1").await.unwrap(), None, "{}: really lost", inner.kind());

                // Read through the wrapper: the loss is seen and repaired before the answer.
                assert_eq!(
                    durable.get_many(&["revoked:jti:x", "revoked:grant:g1"]).await.unwrap(),
                    vec![None, Some(b"1900000000".to_vec())],
                    "{} on {:?}",
                    inner.kind(),
                    store.backend()
                );
                assert_eq!(durable.get("throttle-lock:login:kit").await.unwrap(), Some(b"1900000000".to_vec()));
                // Only the durable classes: a session is not brought back.
                assert_eq!(durable.get("sess:abc").await.unwrap(), None);
            }
        }
    }

    #[tokio::test]
    async fn a_restart_restores_from_the_database_and_deletes_are_durable() {
        for (store, _dir) in stores().await {
            let before = DurableMarkers::new(Arc::new(MemoryStore::new(1000)), store.clone());
            before.ensure_restored().await.unwrap();
            before.put("revoked:jti:kept", b"1900000000", HOUR).await.unwrap();
            before.put("throttle-lock:login:unlocked", b"1900000000", HOUR).await.unwrap();
            before.delete("throttle-lock:login:unlocked").await.unwrap();
            // An expired row is not restored, and the purge removes it.
            store
                .markers()
                .put_marker(&DurableMarker { key: "revoked:jti:old".into(), value: "1".into(), expires_at: 10 })
                .await
                .unwrap();

            let after = DurableMarkers::new(Arc::new(MemoryStore::new(1000)), store.clone());
            assert_eq!(after.ensure_restored().await.unwrap(), 1, "{:?}", store.backend());
            assert_eq!(after.ensure_restored().await.unwrap(), 0, "restored once");
            assert!(after.get("revoked:jti:kept").await.unwrap().is_some());
            assert!(after.get("throttle-lock:login:unlocked").await.unwrap().is_none());
            assert!(after.get("revoked:jti:old").await.unwrap().is_none());
            assert!(store.markers().purge_markers(unix_now()).await.unwrap() >= 1);
            assert_eq!(store.markers().live_markers(0).await.unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn concurrent_reads_after_a_loss_restore_once() {
        for (store, _dir) in stores().await {
            let inner: SharedEphemeral = Arc::new(MemoryStore::new(1000));
            let durable = Arc::new(DurableMarkers::new(inner.clone(), store.clone()));
            durable.put("revoked:grant:g", b"1900000000", HOUR).await.unwrap();
            lose_everything(&inner, &["revoked:grant:g"]).await;
            let mut readers = tokio::task::JoinSet::new();
            for _ in 0..50 {
                let durable = durable.clone();
                readers.spawn(async move { durable.get("revoked:grant:g").await.unwrap() });
            }
            while let Some(seen) = readers.join_next().await {
                assert_eq!(seen.unwrap(), Some(b"1900000000".to_vec()), "no reader answered before the restore");
            }
        }
    }

    #[tokio::test]
    async fn a_lock_lifted_by_another_process_is_lifted_here() {
        for (store, _dir) in stores().await {
            let server = DurableMarkers::new(Arc::new(MemoryStore::new(1000)), store.clone());
            server.ensure_restored().await.unwrap();
            server.put("throttle-lock:login:kit", b"1900000000", HOUR).await.unwrap();
            server.put("revoked:grant:g", b"1900000000", HOUR).await.unwrap();
            // The CLI: its own (empty) memory store over the same database.
            let cli = DurableMarkers::new(Arc::new(MemoryStore::new(1000)), store.clone());
            cli.delete("throttle-lock:login:kit").await.unwrap();
            assert_eq!(server.get("throttle-lock:login:kit").await.unwrap(), None, "{:?}", store.backend());
            assert!(server.get("revoked:grant:g").await.unwrap().is_some());
        }
    }

    #[test]
    fn only_revocations_and_locks_are_durable() {
        assert!(is_durable("revoked:grant:x") && is_durable("throttle-lock:ip:1.2.3.4"));
        assert!(!is_durable("throttle-fail:login:x") && !is_durable("sess:x") && !is_durable("code:x"));
    }
}

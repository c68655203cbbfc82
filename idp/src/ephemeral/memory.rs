//! In-memory ephemeral store for embedded mode (a single instance).
//!
//! It sits on the token hot path (codes are taken, replay caches and rate counters are touched on
//! every request), so it is built for short critical sections rather than features:
//!
//! * The map is split into [`SHARDS`] shards, each behind a `std::sync::Mutex`; a key always lives
//!   in the shard its hash selects, so concurrent requests rarely contend. No lock is ever held
//!   across an `.await` (the trait methods do all their work synchronously).
//! * Expiry is checked on every read (an expired entry behaves exactly like an absent one), and
//!   each shard is swept of expired entries at most once per [`SWEEP_INTERVAL`], driven by writes,
//!   so memory does not grow with dead entries even for keys that are never read again.
//! * The number of entries is bounded. When the store is full, expired entries are swept first;
//!   if it is still full, a write that would create a new key fails with
//!   [`EphemeralError::Full`]. Live entries are never evicted: silently dropping a pending
//!   authorization code or an OTP challenge would turn memory pressure into baffling login
//!   failures, whereas an explicit error is visible and points at the fix (raise the bound or
//!   use Redis).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{EphemeralError, EphemeralResult, EphemeralStore};

/// Number of independently locked shards. A power of two well above the core count keeps lock
/// contention negligible without making whole-store sweeps noticeably more expensive.
const SHARDS: usize = 16;

/// Minimum time between two amortised sweeps of the same shard. A sweep is O(shard size), so it
/// must not run on every write; once a second keeps dead entries to about a second's worth.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Stand-in for "forever" when `now + ttl` does not fit in an [`Instant`] (absurd TTLs).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A value as stored. Counters are kept as integers so `incr` does not parse and format strings on
/// every call; `get` renders them in decimal, which is what Redis returns for a counter, so both
/// backends agree.
#[derive(Debug)]
enum Value {
    Bytes(Vec<u8>),
    Counter(u64),
}

impl Value {
    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Bytes(bytes) => bytes.clone(),
            Self::Counter(n) => n.to_string().into_bytes(),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Bytes(bytes) => bytes,
            Self::Counter(n) => n.to_string().into_bytes(),
        }
    }

    /// The current count, accepting a decimal byte value like Redis `INCR` does.
    fn as_count(&self) -> Option<u64> {
        match self {
            Self::Counter(n) => Some(*n),
            Self::Bytes(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires_at: Instant,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

#[derive(Debug)]
struct Shard {
    map: HashMap<String, Entry>,
    /// A lower bound on the expiry of every entry in the shard (exact right after a sweep).
    /// Sweeping before this instant cannot free anything, so it is skipped: a store full of live
    /// entries costs no O(n) work per rejected write.
    earliest_expiry: Option<Instant>,
    /// When the next amortised sweep may run.
    next_sweep: Instant,
}

impl Shard {
    fn note_expiry(&mut self, expires_at: Instant) {
        self.earliest_expiry = Some(self.earliest_expiry.map_or(expires_at, |earliest| earliest.min(expires_at)));
    }

    /// Removes expired entries if any can exist; returns how many were removed.
    fn sweep(&mut self, now: Instant) -> usize {
        match self.earliest_expiry {
            Some(earliest) if earliest <= now => {}
            _ => return 0,
        }
        let before = self.map.len();
        let mut earliest = None::<Instant>;
        self.map.retain(|_, entry| {
            let live = entry.is_live(now);
            if live {
                earliest = Some(earliest.map_or(entry.expires_at, |e| e.min(entry.expires_at)));
            }
            live
        });
        self.earliest_expiry = earliest;
        before - self.map.len()
    }
}

/// The embedded-mode [`EphemeralStore`]: process memory, bounded, with TTLs. Not shared between
/// instances, so only valid when a single instance serves the issuer.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    /// Selects the shard. Randomly keyed so that crafted keys cannot pile into one shard.
    hasher: RandomState,
    /// Entries currently held (live or not yet swept), across all shards. Only changed while the
    /// owning shard is locked; a new key must first reserve its slot here, which is what makes the
    /// bound exact under concurrency.
    len: AtomicUsize,
    max_entries: usize,
}

impl MemoryStore {
    /// A store holding at most `max_entries` entries (live or expired-but-not-yet-swept).
    pub fn new(max_entries: usize) -> Self {
        let now = Instant::now();
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard { map: HashMap::new(), earliest_expiry: None, next_sweep: now + SWEEP_INTERVAL }))
            .collect();
        Self { shards, hasher: RandomState::new(), len: AtomicUsize::new(0), max_entries }
    }

    /// Number of entries held, including expired ones not yet swept (for metrics and tests).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the store holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured bound.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    fn shard_index(&self, key: &str) -> usize {
        // Truncation is intended: only the low bits pick the shard.
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Locks one shard. A poisoned lock only means another thread panicked while holding it; every
    /// mutation below leaves the map consistent at each step, so the data is still usable and a
    /// single panic must not take the whole store (and every login) down with it.
    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sweep_locked(&self, shard: &mut Shard, now: Instant) {
        let removed = shard.sweep(now);
        if removed > 0 {
            self.len.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Sweeps every shard, one lock at a time (never two at once, so no lock-order deadlock).
    fn sweep_all(&self, now: Instant) {
        for index in 0..SHARDS {
            let mut shard = self.lock(index);
            self.sweep_locked(&mut shard, now);
            shard.next_sweep = now + SWEEP_INTERVAL;
        }
    }

    /// Claims one slot for a new key, if the bound allows.
    fn try_reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |len| (len < self.max_entries).then_some(len + 1))
            .is_ok()
    }

    /// Locks `key`'s shard for a write, with room for `key`: on return either the key is present
    /// (live or expired: its slot is reused) or a slot has been reserved for it, in which case the
    /// caller must insert it before releasing the guard. Fails with `Full` only after expired
    /// entries in every shard have been swept.
    fn lock_for_write(&self, key: &str, now: Instant) -> EphemeralResult<MutexGuard<'_, Shard>> {
        let index = self.shard_index(key);
        for swept_all in [false, true] {
            let mut shard = self.lock(index);
            if now >= shard.next_sweep {
                self.sweep_locked(&mut shard, now);
                shard.next_sweep = now + SWEEP_INTERVAL;
            }
            if shard.map.contains_key(key) || self.try_reserve() {
                return Ok(shard);
            }
            if !swept_all {
                // Release our shard before visiting all of them.
                drop(shard);
                self.sweep_all(now);
            }
        }
        Err(EphemeralError::Full(self.max_entries))
    }

    /// Removes `key` (whatever its state), keeping the count in step.
    fn remove(&self, key: &str) -> Option<Entry> {
        let mut shard = self.lock(self.shard_index(key));
        let entry = shard.map.remove(key);
        if entry.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        entry
    }
}

/// Inserts or replaces `key`, reusing the existing `String` key when there is one (no allocation
/// for the common overwrite).
fn store(shard: &mut Shard, key: &str, value: Value, expires_at: Instant) {
    let entry = Entry { value, expires_at };
    match shard.map.get_mut(key) {
        Some(slot) => *slot = entry,
        None => {
            shard.map.insert(key.to_owned(), entry);
        }
    }
    shard.note_expiry(expires_at);
}

fn expiry(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl).or_else(|| now.checked_add(FAR_FUTURE)).unwrap_or(now)
}

/// The operations proper, with the clock passed in: the trait implementation below supplies
/// `Instant::now()`, and tests supply instants of their choosing to check expiry and sweeping
/// without sleeping.
impl MemoryStore {
    fn put_at(&self, key: &str, value: &[u8], ttl: Duration, now: Instant) -> EphemeralResult<()> {
        let mut shard = self.lock_for_write(key, now)?;
        store(&mut shard, key, Value::Bytes(value.to_vec()), expiry(now, ttl));
        Ok(())
    }

    fn put_if_absent_at(&self, key: &str, value: &[u8], ttl: Duration, now: Instant) -> EphemeralResult<bool> {
        let mut shard = self.lock_for_write(key, now)?;
        if shard.map.get(key).is_some_and(|entry| entry.is_live(now)) {
            return Ok(false);
        }
        store(&mut shard, key, Value::Bytes(value.to_vec()), expiry(now, ttl));
        Ok(true)
    }

    fn get_at(&self, key: &str, now: Instant) -> Option<Vec<u8>> {
        let mut shard = self.lock(self.shard_index(key));
        match shard.map.get(key) {
            Some(entry) if entry.is_live(now) => Some(entry.value.to_bytes()),
            Some(_) => {
                // Expired: drop it now rather than waiting for a sweep.
                shard.map.remove(key);
                self.len.fetch_sub(1, Ordering::Relaxed);
                None
            }
            None => None,
        }
    }

    fn take_at(&self, key: &str, now: Instant) -> Option<Vec<u8>> {
        // Removal happens under the shard lock, so exactly one concurrent caller gets the entry.
        self.remove(key).filter(|entry| entry.is_live(now)).map(|entry| entry.value.into_bytes())
    }

    fn incr_at(&self, key: &str, ttl: Duration, now: Instant) -> EphemeralResult<u64> {
        let mut shard = self.lock_for_write(key, now)?;
        // A live entry continues its window; an absent or expired one starts a new one from 0.
        let current = match shard.map.get(key) {
            Some(entry) if entry.is_live(now) => {
                let count = entry
                    .value
                    .as_count()
                    .ok_or_else(|| EphemeralError::Unavailable("incr on a value that is not a counter".into()))?;
                Some((count, entry.expires_at))
            }
            _ => None,
        };
        let (count, expires_at) = match current {
            // Same rule as the Redis script: the expiry is (re)set only when the count becomes 1.
            Some((count, expires_at)) if count != 0 => (count.saturating_add(1), expires_at),
            _ => (1, expiry(now, ttl)),
        };
        store(&mut shard, key, Value::Counter(count), expires_at);
        Ok(count)
    }

    fn decr_at(&self, key: &str, now: Instant) -> EphemeralResult<u64> {
        let mut shard = self.lock_for_write(key, now)?;
        match shard.map.get(key) {
            Some(entry) if entry.is_live(now) => {
                let count = entry
                    .value
                    .as_count()
                    .ok_or_else(|| EphemeralError::Unavailable("decr on a value that is not a counter".into()))?;
                let (count, expires_at) = (count.saturating_sub(1), entry.expires_at);
                store(&mut shard, key, Value::Counter(count), expires_at);
                Ok(count)
            }
            _ => Ok(0),
        }
    }
}

#[async_trait]
impl EphemeralStore for MemoryStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> EphemeralResult<()> {
        self.put_at(key, value, ttl, Instant::now())
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> EphemeralResult<bool> {
        self.put_if_absent_at(key, value, ttl, Instant::now())
    }

    async fn get(&self, key: &str) -> EphemeralResult<Option<Vec<u8>>> {
        Ok(self.get_at(key, Instant::now()))
    }

    async fn take(&self, key: &str) -> EphemeralResult<Option<Vec<u8>>> {
        Ok(self.take_at(key, Instant::now()))
    }

    async fn delete(&self, key: &str) -> EphemeralResult<()> {
        self.remove(key);
        Ok(())
    }

    async fn incr(&self, key: &str, ttl: Duration) -> EphemeralResult<u64> {
        self.incr_at(key, ttl, Instant::now())
    }

    async fn decr(&self, key: &str) -> EphemeralResult<u64> {
        self.decr_at(key, Instant::now())
    }

    async fn ping(&self) -> EphemeralResult<()> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    //! Memory-only behaviour with a simulated clock. Behaviour shared with Redis is tested through
    //! the trait in `ephemeral::tests`.
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn later(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn expired_entries_behave_as_absent() {
        let store = MemoryStore::new(100);
        let t0 = Instant::now();
        store.put_at("k", b"v", TTL, t0).unwrap();
        store.put_at("t", b"v", TTL, t0).unwrap();
        store.put_at("c", b"v", TTL, t0).unwrap();
        assert_eq!(store.get_at("k", later(t0, 9)), Some(b"v".to_vec()));
        let t1 = later(t0, 10);
        assert_eq!(store.get_at("k", t1), None);
        assert_eq!(store.take_at("t", t1), None);
        assert!(store.put_if_absent_at("k", b"w", TTL, t1).unwrap());
        assert_eq!(store.get_at("k", t1), Some(b"w".to_vec()));
        // An expired non-counter value does not make incr fail: it starts a new window.
        assert_eq!(store.incr_at("c", TTL, t1).unwrap(), 1);
        assert_eq!(store.len(), 2, "expired entries read or taken are dropped");
    }

    #[test]
    fn incr_keeps_the_window_of_its_first_increment() {
        let store = MemoryStore::new(100);
        let t0 = Instant::now();
        assert_eq!(store.incr_at("n", TTL, t0).unwrap(), 1);
        assert_eq!(store.incr_at("n", TTL, later(t0, 9)).unwrap(), 2);
        // A sliding window would still be open here (9 + 10 > 10).
        assert_eq!(store.incr_at("n", TTL, later(t0, 10)).unwrap(), 1);
        assert_eq!(store.get_at("n", later(t0, 11)), Some(b"1".to_vec()));
    }

    #[test]
    fn incr_accepts_decimal_values_like_redis() {
        let store = MemoryStore::new(100);
        let t0 = Instant::now();
        store.put_at("n", b"41", TTL, t0).unwrap();
        assert_eq!(store.incr_at("n", Duration::from_secs(1000), t0).unwrap(), 42);
        // The window of the value that was put is kept.
        assert_eq!(store.get_at("n", later(t0, 10)), None);
        store.put_at("s", b"not a number", TTL, t0).unwrap();
        assert!(matches!(store.incr_at("s", TTL, t0), Err(EphemeralError::Unavailable(_))));
        assert_eq!(store.get_at("s", t0), Some(b"not a number".to_vec()));
    }

    #[test]
    fn writes_sweep_expired_entries_periodically() {
        let store = MemoryStore::new(10_000);
        let t0 = Instant::now();
        for i in 0..1000 {
            store.put_at(&format!("old{i}"), b"v", Duration::from_millis(10), t0).unwrap();
        }
        assert_eq!(store.len(), 1000);
        // Entries are expired, but before the sweep interval writes do not sweep (cost control).
        let mut fresh = 0;
        let early = t0 + Duration::from_millis(500);
        for i in 0..64 {
            store.put_at(&format!("early{i}"), b"v", TTL, early).unwrap();
            fresh += 1;
        }
        assert_eq!(store.len(), 1000 + fresh);
        // After it, one write into each shard clears that shard's dead entries.
        let t1 = t0 + 2 * SWEEP_INTERVAL;
        let mut touched = [false; SHARDS];
        let mut i = 0;
        while touched.iter().any(|t| !t) {
            let key = format!("new{i}");
            touched[store.shard_index(&key)] = true;
            store.put_at(&key, b"v", TTL, t1).unwrap();
            fresh += 1;
            i += 1;
        }
        assert_eq!(store.len(), fresh);
    }

    #[test]
    fn full_store_refuses_new_keys_but_never_evicts_live_ones() {
        let store = MemoryStore::new(8);
        let t0 = Instant::now();
        for i in 0..8 {
            store.put_at(&format!("k{i}"), b"v", TTL, t0).unwrap();
        }
        assert!(matches!(store.put_at("new", b"v", TTL, t0), Err(EphemeralError::Full(8))));
        assert!(matches!(store.put_if_absent_at("new", b"v", TTL, t0), Err(EphemeralError::Full(8))));
        assert!(matches!(store.incr_at("new", TTL, t0), Err(EphemeralError::Full(8))));
        // Existing keys can still be rewritten and counted: no new slot is needed.
        store.put_at("k0", b"w", TTL, t0).unwrap();
        assert!(!store.put_if_absent_at("k1", b"w", TTL, t0).unwrap());
        for i in 0..8 {
            assert!(store.get_at(&format!("k{i}"), t0).is_some());
        }
        // Consuming an entry frees its slot.
        assert!(store.take_at("k7", t0).is_some());
        store.put_at("new", b"v", TTL, t0).unwrap();
        // Once entries expire, new keys fit again (how many expired entries were swept by then
        // depends on which shards the keys fell in).
        let t1 = later(t0, 10);
        for i in 0..8 {
            store.put_at(&format!("after{i}"), b"v", TTL, t1).unwrap();
        }
        assert_eq!(store.len(), 8);
        assert!(matches!(store.put_at("one more", b"v", TTL, t1), Err(EphemeralError::Full(8))));
    }

    #[test]
    fn full_store_sweeps_before_the_periodic_sweep_is_due() {
        let store = MemoryStore::new(4);
        let t0 = Instant::now();
        let short = Duration::from_millis(100);
        for i in 0..4 {
            store.put_at(&format!("k{i}"), b"v", short, t0).unwrap();
        }
        // Well inside the first sweep interval, but after the entries expired.
        let t1 = t0 + Duration::from_millis(200);
        store.put_at("new", b"v", TTL, t1).unwrap();
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn huge_ttls_do_not_overflow() {
        let store = MemoryStore::new(10);
        let t0 = Instant::now();
        store.put_at("k", b"v", Duration::MAX, t0).unwrap();
        assert_eq!(store.incr_at("n", Duration::MAX, t0).unwrap(), 1);
        assert_eq!(store.get_at("k", later(t0, 3600)), Some(b"v".to_vec()));
    }
}

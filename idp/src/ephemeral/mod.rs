//! Short-lived data: authorization codes, PAR requests, browser sessions, login challenges, replay
//! caches and rate counters. One small seam ([`EphemeralStore`]) with two implementations: in-memory
//! (embedded mode, one instance) and Redis (production, any number of instances).

mod durable;
mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::durable::{DurableMarkers, is_durable};
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum EphemeralError {
    #[error("ephemeral store unavailable: {0}")]
    Unavailable(String),
    #[error("ephemeral store is full ({0} entries); raise storage.memory_max_entries or use Redis")]
    Full(usize),
}

pub type EphemeralResult<T> = Result<T, EphemeralError>;

/// Keys are plain strings chosen by callers with a purpose prefix (`code:`, `par:`, `sess:` …);
/// implementations add their own namespace (e.g. the Redis key prefix) on top.
#[async_trait]
pub trait EphemeralStore: Send + Sync + 'static {
    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> EphemeralResult<()>;
    /// Stores only when `key` is absent (or expired). Returns whether it stored: the basis of replay
    /// detection (e.g. a `private_key_jwt` `jti` seen twice).
    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> EphemeralResult<bool>;
    async fn get(&self, key: &str) -> EphemeralResult<Option<Vec<u8>>>;
    /// Several `get`s in one round trip (Redis `MGET`), answers in the order of `keys`. Token
    /// verification reads its revocation markers this way.
    async fn get_many(&self, keys: &[&str]) -> EphemeralResult<Vec<Option<Vec<u8>>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }
    /// Atomic get-and-delete: among any number of concurrent callers, on any number of instances,
    /// exactly one receives the value. Single-use codes are consumed with this.
    async fn take(&self, key: &str) -> EphemeralResult<Option<Vec<u8>>>;
    async fn delete(&self, key: &str) -> EphemeralResult<()>;
    /// Atomic counter. The first increment creates it with expiry `ttl` (a fixed window); later
    /// increments keep that expiry. Returns the value after incrementing.
    async fn incr(&self, key: &str, ttl: Duration) -> EphemeralResult<u64>;
    /// Atomic decrement of a counter made by [`EphemeralStore::incr`], keeping its expiry and never
    /// below 0; an absent counter stays absent. Returns the value after decrementing. Gives back a
    /// reserved attempt (see `authn::throttle`).
    async fn decr(&self, key: &str) -> EphemeralResult<u64>;
    /// A cheap round trip, used by `/readyz`.
    async fn ping(&self) -> EphemeralResult<()>;
    /// "memory" or "redis", for logs and readiness output.
    fn kind(&self) -> &'static str;
}

pub type SharedEphemeral = Arc<dyn EphemeralStore>;

/// Opens the ephemeral store chosen by the configuration: Redis when a URL is given (production,
/// any number of instances), otherwise process memory bounded to `memory_max_entries` (embedded
/// mode, a single instance). Called once at start-up; nothing else branches on the backend.
pub async fn connect(
    redis_url: Option<&str>,
    redis_prefix: &str,
    memory_max_entries: usize,
) -> EphemeralResult<SharedEphemeral> {
    match redis_url {
        Some(url) => {
            let store = RedisStore::connect(url, redis_prefix).await?;
            tracing::info!(
                url = %self::redis::redact_url(url),
                prefix = redis_prefix,
                "ephemeral store: redis"
            );
            Ok(Arc::new(store))
        }
        None => {
            tracing::info!(
                max_entries = memory_max_entries,
                "ephemeral store: memory (valid for a single instance only)"
            );
            Ok(Arc::new(MemoryStore::new(memory_max_entries)))
        }
    }
}

#[cfg(test)]
mod tests {
    //! The contract of [`EphemeralStore`], checked through the trait on both backends: each
    //! `check_*` function below runs once as `memory_backend::<name>` and once as
    //! `redis_backend::<name>` (skipped outside CI when Redis is unreachable).

    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Barrier;
    use tokio::task::JoinSet;

    use super::*;
    use crate::testing::{redis_url, service_unreachable, unique_name};

    /// Long enough to outlive any test, short enough that leftovers in Redis vanish on their own.
    const LONG: Duration = Duration::from_secs(60);
    /// For expiry tests: long enough to do a few operations first, even on a loaded machine.
    const SHORT: Duration = Duration::from_millis(400);
    /// Sleeping this long after a write with `SHORT` is past its expiry.
    const PAST_SHORT: Duration = Duration::from_millis(600);
    const CONCURRENCY: usize = 100;

    fn memory() -> SharedEphemeral {
        Arc::new(MemoryStore::new(10_000))
    }

    /// A Redis store under a prefix unique to this test, so parallel tests never collide; `None`
    /// (the Redis variant is skipped) when Redis is unreachable outside CI.
    async fn redis() -> Option<SharedEphemeral> {
        redis_with_prefix(&format!("{}:", unique_name("t"))).await
    }

    async fn redis_with_prefix(prefix: &str) -> Option<SharedEphemeral> {
        let url = redis_url();
        match RedisStore::connect(&url, prefix).await {
            Ok(store) => Some(Arc::new(store)),
            Err(e) => {
                service_unreachable("Redis", &self::redis::redact_url(&url), &e);
                None
            }
        }
    }

    /// Generates one test per check and backend.
    macro_rules! on_both_backends {
        ($($check:ident),* $(,)?) => {
            mod memory_backend {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $check() {
                        super::$check(super::memory()).await;
                    }
                )*
            }
            mod redis_backend {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $check() {
                        if let Some(store) = super::redis().await {
                            super::$check(store).await;
                        }
                    }
                )*
            }
        };
    }

    on_both_backends!(
        put_get_overwrite_delete,
        entries_expire_after_their_ttl,
        put_if_absent_stores_once_until_expiry,
        take_returns_the_value_once,
        concurrent_takes_have_exactly_one_winner,
        incr_counts_in_a_fixed_window,
        incr_of_a_decimal_value_and_of_a_non_counter,
        concurrent_incr_loses_no_increment,
        ping_answers,
    );

    async fn put_get_overwrite_delete(store: SharedEphemeral) {
        assert_eq!(store.get("k").await.unwrap(), None);
        store.put("k", b"one", LONG).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"one"[..]));
        // Reading does not consume.
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"one"[..]));
        store.put("k", b"two", LONG).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"two"[..]));
        // Binary values survive unchanged.
        let binary = [0u8, 255, 10, 13, 0];
        store.put("bin", &binary, LONG).await.unwrap();
        assert_eq!(store.get("bin").await.unwrap().as_deref(), Some(&binary[..]));
        store.delete("k").await.unwrap();
        store.delete("bin").await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
        // Deleting what is not there is not an error.
        store.delete("k").await.unwrap();
    }

    async fn entries_expire_after_their_ttl(store: SharedEphemeral) {
        store.put("short", b"v", SHORT).await.unwrap();
        store.put("taken", b"v", SHORT).await.unwrap();
        store.put("long", b"v", LONG).await.unwrap();
        assert!(store.get("short").await.unwrap().is_some());
        tokio::time::sleep(PAST_SHORT).await;
        assert_eq!(store.get("short").await.unwrap(), None);
        assert_eq!(store.take("taken").await.unwrap(), None);
        assert!(store.get("long").await.unwrap().is_some());
        // Overwriting resets the TTL.
        store.put("long", b"v", SHORT).await.unwrap();
        tokio::time::sleep(PAST_SHORT).await;
        assert_eq!(store.get("long").await.unwrap(), None);
    }

    async fn put_if_absent_stores_once_until_expiry(store: SharedEphemeral) {
        assert!(store.put_if_absent("jti", b"first", SHORT).await.unwrap());
        assert!(!store.put_if_absent("jti", b"second", LONG).await.unwrap());
        // The refused write changed nothing: neither the value nor the expiry.
        assert_eq!(store.get("jti").await.unwrap().as_deref(), Some(&b"first"[..]));
        tokio::time::sleep(PAST_SHORT).await;
        assert!(store.put_if_absent("jti", b"third", LONG).await.unwrap());
        assert_eq!(store.get("jti").await.unwrap().as_deref(), Some(&b"third"[..]));
        store.delete("jti").await.unwrap();
    }

    async fn take_returns_the_value_once(store: SharedEphemeral) {
        assert_eq!(store.take("code").await.unwrap(), None);
        store.put("code", b"grant", LONG).await.unwrap();
        assert_eq!(store.take("code").await.unwrap().as_deref(), Some(&b"grant"[..]));
        assert_eq!(store.take("code").await.unwrap(), None);
        assert_eq!(store.get("code").await.unwrap(), None);
    }

    /// The property single-use authorization codes rely on: however many requests race to
    /// redeem a code, exactly one gets it. Several rounds, each released by a barrier so the
    /// takes really overlap.
    async fn concurrent_takes_have_exactly_one_winner(store: SharedEphemeral) {
        for round in 0..5 {
            let key = format!("code{round}");
            store.put(&key, b"grant", LONG).await.unwrap();
            let barrier = Arc::new(Barrier::new(CONCURRENCY));
            let mut tasks = JoinSet::new();
            for _ in 0..CONCURRENCY {
                let (store, barrier, key) = (store.clone(), barrier.clone(), key.clone());
                tasks.spawn(async move {
                    barrier.wait().await;
                    store.take(&key).await.unwrap()
                });
            }
            let winners: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
            assert_eq!(
                winners,
                vec![b"grant".to_vec()],
                "round {round} on {}: exactly one take must win",
                store.kind()
            );
        }
    }

    async fn incr_counts_in_a_fixed_window(store: SharedEphemeral) {
        // Only the first step below is timing-sensitive (it must land inside the window), so the
        // window is wide enough for a loaded machine; sleeps never end early, so the last step
        // is always past the window.
        let window = Duration::from_millis(1200);
        assert_eq!(store.incr("n", window).await.unwrap(), 1);
        assert_eq!(store.incr("n", window).await.unwrap(), 2);
        assert_eq!(store.incr("n", window).await.unwrap(), 3);
        // The counter is readable, in decimal on both backends.
        assert_eq!(store.get("n").await.unwrap().as_deref(), Some(&b"3"[..]));
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Later increments do not push the end of the window...
        assert_eq!(store.incr("n", window).await.unwrap(), 4);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // ...so 1.4 s after the first one (> 1.2 s, but < 0.4 + 1.2 s) a new window has begun.
        assert_eq!(store.incr("n", window).await.unwrap(), 1);
        store.delete("n").await.unwrap();
    }

    async fn incr_of_a_decimal_value_and_of_a_non_counter(store: SharedEphemeral) {
        store.put("n", b"41", LONG).await.unwrap();
        assert_eq!(store.incr("n", LONG).await.unwrap(), 42);
        store.put("s", b"not a number", LONG).await.unwrap();
        assert!(matches!(store.incr("s", LONG).await, Err(EphemeralError::Unavailable(_))));
        assert_eq!(store.get("s").await.unwrap().as_deref(), Some(&b"not a number"[..]));
        store.delete("n").await.unwrap();
        store.delete("s").await.unwrap();
    }

    /// Rate limits rely on this: concurrent increments are never lost, and each caller sees a
    /// distinct value.
    async fn concurrent_incr_loses_no_increment(store: SharedEphemeral) {
        let barrier = Arc::new(Barrier::new(CONCURRENCY));
        let mut tasks = JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.spawn(async move {
                barrier.wait().await;
                store.incr("hits", LONG).await.unwrap()
            });
        }
        let seen: HashSet<u64> = tasks.join_all().await.into_iter().collect();
        assert_eq!(seen, (1..=CONCURRENCY as u64).collect::<HashSet<_>>());
        assert_eq!(store.get("hits").await.unwrap().as_deref(), Some(CONCURRENCY.to_string().as_bytes()));
        store.delete("hits").await.unwrap();
    }

    async fn ping_answers(store: SharedEphemeral) {
        store.ping().await.unwrap();
    }

    /// Memory-specific, through the trait with real time: the bound, and recovery once entries
    /// expire. (Finer cases with a simulated clock are in `memory::tests`.)
    #[tokio::test]
    async fn memory_bound_returns_full_then_recovers_after_expiry() {
        let store: SharedEphemeral = Arc::new(MemoryStore::new(3));
        for key in ["a", "b", "c"] {
            store.put(key, b"v", SHORT).await.unwrap();
        }
        assert!(matches!(store.put("d", b"v", LONG).await, Err(EphemeralError::Full(3))));
        assert!(matches!(store.put_if_absent("d", b"v", LONG).await, Err(EphemeralError::Full(3))));
        assert!(matches!(store.incr("d", LONG).await, Err(EphemeralError::Full(3))));
        // Nothing live was evicted to make room.
        for key in ["a", "b", "c"] {
            assert!(store.get(key).await.unwrap().is_some());
        }
        tokio::time::sleep(PAST_SHORT).await;
        store.put("d", b"v", LONG).await.unwrap();
        assert!(store.put_if_absent("e", b"v", LONG).await.unwrap());
        assert_eq!(store.incr("f", LONG).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn memory_treats_expired_entries_as_absent() {
        let store: SharedEphemeral = Arc::new(MemoryStore::new(100));
        for key in ["get", "take", "pia", "incr"] {
            store.put(key, b"old", SHORT).await.unwrap();
        }
        tokio::time::sleep(PAST_SHORT).await;
        assert_eq!(store.get("get").await.unwrap(), None);
        assert_eq!(store.take("take").await.unwrap(), None);
        assert!(store.put_if_absent("pia", b"new", LONG).await.unwrap());
        assert_eq!(store.incr("incr", LONG).await.unwrap(), 1);
    }

    /// Two deployments (or two tests) sharing a Redis under different prefixes never see each
    /// other's keys.
    #[tokio::test]
    async fn redis_prefixes_isolate_stores() {
        let Some(a) = redis().await else { return };
        let Some(b) = redis().await else { return };
        a.put("k", b"from a", LONG).await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), None);
        assert_eq!(b.take("k").await.unwrap(), None);
        assert!(b.put_if_absent("k", b"from b", LONG).await.unwrap());
        assert_eq!(b.incr("n", LONG).await.unwrap(), 1);
        assert_eq!(a.incr("n", LONG).await.unwrap(), 1);
        assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"from a"[..]));
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"from b"[..]));
        for store in [&a, &b] {
            store.delete("k").await.unwrap();
            store.delete("n").await.unwrap();
        }
    }

    #[tokio::test]
    async fn connect_picks_the_configured_backend() {
        let store = connect(None, "ignored:", 10).await.unwrap();
        assert_eq!(store.kind(), "memory");
        store.ping().await.unwrap();

        let url = redis_url();
        let prefix = format!("{}:", unique_name("t"));
        match connect(Some(&url), &prefix, 10).await {
            Ok(store) => {
                assert_eq!(store.kind(), "redis");
                store.ping().await.unwrap();
            }
            Err(e) => {
                service_unreachable("Redis", &self::redis::redact_url(&url), &e);
            }
        }
    }

    /// A Redis that cannot be reached is a prompt, explicit error that does not echo the password.
    #[tokio::test]
    async fn unreachable_redis_is_a_prompt_error_without_secrets() {
        let started = std::time::Instant::now();
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let result = connect(Some("redis://:hunter2@127.0.0.1:1/"), "t:", 10).await;
        let Err(EphemeralError::Unavailable(message)) = result else {
            panic!("expected Unavailable");
        };
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("127.0.0.1:1"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }
}

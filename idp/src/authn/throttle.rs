//! Brute-force defence shared by every factor (password, TOTP, email code, recovery code).
//!
//! A *scope* is what is being guessed against or from: `login:<name>` (one account attacked from
//! many places), `ip:<address>` (one place attacking many accounts) and `challenge:<id>` (one
//! login in progress). Attempts are counted per scope in a fixed window of the ephemeral store;
//! after `max_failures` the scope is locked for `lockout`. The lock is an ephemeral entry with a
//! TTL, so it lifts by itself, and it holds across instances when the ephemeral store is Redis.
//!
//! A guess at a secret **reserves** its attempt before anything is verified:
//!
//! ```text
//! let attempt = throttle.reserve(eph, scope, now)?;   // atomic increment; refused past the limit
//! if verified { throttle.succeeded(eph, scope) }     // account scopes: forget the count
//! else { let f = throttle.failed(eph, scope, attempt, now)?; sleep(delay_for(f.failures)) }
//! ```
//!
//! The increment is atomic in both stores, so among any number of concurrent requests on any
//! number of instances at most `max_failures` attempts per window are ever evaluated: the
//! (max + 1)-th reservation is refused (and sets the lock) even while the earlier ones are still
//! being verified. (Checking a lock first and counting the failure after the verification let 29
//! of 30 parallel guesses through.) The count is never reset by a lock — a reset would let a
//! request that passed the lock check start a fresh count — it expires with its window.
//!
//! [`Throttle::record_failure`] counts a failure after the fact, for what is not a guess at a
//! secret (a refused card or security key).

use std::time::Duration;

use crate::ephemeral::{EphemeralError, EphemeralStore};

/// How many failures lock a scope, for how long, and over which window they are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures within `window` that lock the scope. 0 disables locking (the delay still applies).
    pub max_failures: u32,
    /// How long a locked scope stays locked.
    pub lockout: Duration,
    /// Failures older than this (counted from the first failure of the window) are forgotten.
    pub window: Duration,
}

impl Default for ThrottlePolicy {
    /// Five failures in fifteen minutes lock for fifteen minutes: with 6-digit codes that is at most
    /// ~480 guesses a day per scope, a ~1/2000 chance of guessing one code in a day.
    fn default() -> Self {
        ThrottlePolicy { max_failures: 5, lockout: Duration::from_secs(15 * 60), window: Duration::from_secs(15 * 60) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// Too many recent failures. `until` (Unix seconds) is indicative, for the page; the lock itself
    /// is the TTL of an ephemeral entry.
    #[error("too many failed attempts: try again later")]
    Locked { until: i64 },
    /// The ephemeral store failed. Callers should refuse the attempt (fail closed): a throttle that
    /// lets everything through when Redis is down is no throttle. The detail is for logs only.
    #[error("the service is temporarily unavailable; try again shortly")]
    Storage(String),
}

impl From<EphemeralError> for ThrottleError {
    fn from(e: EphemeralError) -> Self {
        ThrottleError::Storage(e.to_string())
    }
}

/// The outcome of recording one failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Failures counted in the current window, this one included (feed it to [`delay_for`]).
    pub failures: u32,
    /// Set when this failure locked the scope: until when (Unix seconds, indicative).
    pub locked_until: Option<i64>,
}

/// The throttle service: stateless itself (all state is in the ephemeral store), so it can be
/// cloned into the application state freely.
#[derive(Clone, Copy, Debug, Default)]
pub struct Throttle {
    pub policy: ThrottlePolicy,
}

fn failures_key(scope: &str) -> String {
    format!("throttle-fail:{scope}")
}

fn lock_key(scope: &str) -> String {
    format!("throttle-lock:{scope}")
}

/// Whole seconds, rounded up, so that an indicative `until` is never earlier than the real expiry.
fn ceil_secs(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Throttle {
        Throttle { policy }
    }

    /// Refuses while `scope` is locked. Call before verifying anything, so that a locked scope
    /// costs no hashing and gives no oracle (a right code is refused as well as a wrong one).
    pub async fn check(&self, ephemeral: &dyn EphemeralStore, scope: &str, now: i64) -> Result<(), ThrottleError> {
        match ephemeral.get(&lock_key(scope)).await? {
            None => Ok(()),
            Some(value) => {
                // The entry's presence is the lock; its value only informs the page.
                let until = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or_else(|| now.saturating_add(ceil_secs(self.policy.lockout)));
                Err(ThrottleError::Locked { until })
            }
        }
    }

    /// Reserves one attempt at `scope` before it is verified, atomically: `Locked` while the scope
    /// is locked or once `max_failures` attempts were reserved in the window (that refusal sets
    /// the lock). Returns the attempt's number in the window, for [`Throttle::failed`].
    pub async fn reserve(&self, ephemeral: &dyn EphemeralStore, scope: &str, now: i64) -> Result<u32, ThrottleError> {
        self.check(ephemeral, scope, now).await?;
        let attempt =
            u32::try_from(ephemeral.incr(&failures_key(scope), self.policy.window).await?).unwrap_or(u32::MAX);
        if self.policy.max_failures != 0 && attempt > self.policy.max_failures {
            let until = self.lock(ephemeral, scope, now).await?;
            return Err(ThrottleError::Locked { until });
        }
        Ok(attempt)
    }

    /// The reserved `attempt` failed: locks the scope when it was the last one allowed, so the
    /// page can say so at once (the next reservation would be refused anyway).
    pub async fn failed(
        &self,
        ephemeral: &dyn EphemeralStore,
        scope: &str,
        attempt: u32,
        now: i64,
    ) -> Result<Failure, ThrottleError> {
        if self.policy.max_failures == 0 || attempt < self.policy.max_failures {
            return Ok(Failure { failures: attempt, locked_until: None });
        }
        let until = self.lock(ephemeral, scope, now).await?;
        Ok(Failure { failures: attempt, locked_until: Some(until) })
    }

    /// Gives back a reserved attempt that was not a failure at this scope (the right answer from
    /// an address, or an attempt refused by another scope before it was verified).
    pub async fn release(&self, ephemeral: &dyn EphemeralStore, scope: &str) -> Result<(), ThrottleError> {
        ephemeral.decr(&failures_key(scope)).await?;
        Ok(())
    }

    /// Counts one failure for `scope` after the fact and locks it when the count reaches
    /// `max_failures`: for refusals that are not guesses at a secret (see the module comment).
    pub async fn record_failure(
        &self,
        ephemeral: &dyn EphemeralStore,
        scope: &str,
        now: i64,
    ) -> Result<Failure, ThrottleError> {
        let failures =
            u32::try_from(ephemeral.incr(&failures_key(scope), self.policy.window).await?).unwrap_or(u32::MAX);
        self.failed(ephemeral, scope, failures, now).await
    }

    /// Locks `scope` for `lockout` from `now`; returns until when (indicative).
    async fn lock(&self, ephemeral: &dyn EphemeralStore, scope: &str, now: i64) -> Result<i64, ThrottleError> {
        let until = now.saturating_add(ceil_secs(self.policy.lockout));
        ephemeral.put(&lock_key(scope), until.to_string().as_bytes(), self.policy.lockout).await?;
        Ok(until)
    }

    /// Forgets the attempts at `scope` after a successful authentication (the lock, if one was set
    /// meanwhile by parallel guesses, stays). Reset only scopes the
    /// success proves something about — the account's — never the client address's: otherwise an
    /// attacker with an account of their own could wipe their address's count between guesses.
    pub async fn succeeded(&self, ephemeral: &dyn EphemeralStore, scope: &str) -> Result<(), ThrottleError> {
        ephemeral.delete(&failures_key(scope)).await?;
        Ok(())
    }

    /// Lifts the lock of `scope` and forgets its count (an administrator's unlock, see
    /// `authn::lockout`). Returns until when it was locked, if it was.
    pub async fn unlock(
        &self,
        ephemeral: &dyn EphemeralStore,
        scope: &str,
        now: i64,
    ) -> Result<Option<i64>, ThrottleError> {
        let until = match self.check(ephemeral, scope, now).await {
            Ok(()) => None,
            Err(ThrottleError::Locked { until }) => Some(until),
            Err(e) => return Err(e),
        };
        ephemeral.delete(&lock_key(scope)).await?;
        ephemeral.delete(&failures_key(scope)).await?;
        Ok(until)
    }

    /// Failures counted so far in the current window (0 when none).
    pub async fn failures(&self, ephemeral: &dyn EphemeralStore, scope: &str) -> Result<u32, ThrottleError> {
        Ok(ephemeral
            .get(&failures_key(scope))
            .await?
            .and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u32>().ok()))
            .unwrap_or(0))
    }
}

/// How long to hold the answer to a failed attempt, given the failures counted so far (this one
/// included): 0, 0, 1 s, 2 s, 4 s, then 8 s. The first mistakes (a typo) cost nothing; a guesser is
/// slowed, and a failure never answers faster than a success, which would otherwise be a timing
/// signal. Sleep with `tokio::time::sleep` (never block the runtime).
pub fn delay_for(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1 << (n - 2).min(3)),
    }
}

/// Real backends for the tests of the factor modules: every ephemeral-store test runs on memory and,
/// when reachable (always under CI), Redis; every durable-store test on SQLite and, when reachable,
/// PostgreSQL — the same rule as the store and ephemeral modules' own tests.
#[cfg(test)]
#[test]
fn lockouts_are_kept_durably_and_counts_are_not() {
    // A lost lock reopens guessing; a lost count only forgets a few failures (ephemeral::durable).
    assert!(crate::ephemeral::is_durable(&lock_key("login:kit")));
    assert!(!crate::ephemeral::is_durable(&failures_key("login:kit")));
}

#[cfg(test)]
pub(crate) mod test_backends {
    use std::sync::Arc;

    use crate::ephemeral::{MemoryStore, RedisStore, SharedEphemeral};
    use crate::store::{Account, AccountKind, AccountStatus, SharedStore, Store, connect_with};
    use crate::testing::{postgres_schema_url, redis_url, service_unreachable, unique_name};

    /// The Redis URL without its password, for messages.
    fn redacted(url: &str) -> String {
        match url.rsplit_once('@') {
            Some((_, host)) => format!("redis://***@{host}"),
            None => url.to_string(),
        }
    }

    /// A memory store and, when Redis is reachable, a Redis store under a prefix unique to the call.
    pub(crate) async fn ephemerals() -> Vec<SharedEphemeral> {
        let mut stores: Vec<SharedEphemeral> = vec![Arc::new(MemoryStore::new(100_000))];
        let url = redis_url();
        match RedisStore::connect(&url, &format!("{}:", unique_name("t"))).await {
            Ok(store) => stores.push(Arc::new(store)),
            Err(e) => {
                service_unreachable("Redis", &redacted(&url), &e);
            }
        }
        stores
    }

    /// A fresh SQLite store (with the directory that must outlive it) and, when PostgreSQL is
    /// reachable, a store in a fresh schema.
    pub(crate) async fn stores() -> Vec<(SharedStore, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut stores = vec![(connect_with(&url, 2).await.expect("SQLite store"), Some(dir))];
        if let Some(url) = postgres_schema_url().await {
            stores.push((connect_with(&url, 4).await.expect("PostgreSQL store"), None));
        }
        stores
    }

    /// Inserts an account (credentials reference one) and returns its id.
    pub(crate) async fn account(store: &dyn Store) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        store
            .insert_account(&Account {
                id: id.clone(),
                kind: AccountKind::Professional,
                login: unique_name("login"),
                id_nat: None,
                email: Some("kit.doc@example.org".into()),
                given_name: Some("Kit".into()),
                family_name: Some("Doc".into()),
                status: AccountStatus::Active,
                locale: Some("fr".into()),
                created_at: 1_700_000_000,
                updated_at: 1_700_000_000,
                last_authenticated_at: None,
            })
            .await
            .expect("insert account");
        id
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::task::JoinSet;

    use super::test_backends::ephemerals;
    use super::*;

    const NOW: i64 = 1_700_000_000;

    /// A lockout no test outlives, for the tests that do not wait for it to lift.
    fn policy(max_failures: u32) -> Throttle {
        Throttle::new(ThrottlePolicy {
            max_failures,
            lockout: Duration::from_secs(60),
            window: Duration::from_secs(60),
        })
    }

    #[tokio::test]
    async fn locks_after_max_failures() {
        for eph in ephemerals().await {
            let (t, scope) = (policy(3), "acct:a");
            t.check(eph.as_ref(), scope, NOW).await.unwrap();
            for n in 1..=2 {
                let f = t.record_failure(eph.as_ref(), scope, NOW).await.unwrap();
                assert_eq!(f, Failure { failures: n, locked_until: None }, "{}", eph.kind());
                t.check(eph.as_ref(), scope, NOW).await.unwrap();
            }
            let f = t.record_failure(eph.as_ref(), scope, NOW).await.unwrap();
            assert_eq!(f, Failure { failures: 3, locked_until: Some(NOW + 60) }, "{}", eph.kind());
            assert!(matches!(
                t.check(eph.as_ref(), scope, NOW).await,
                Err(ThrottleError::Locked { until }) if until == NOW + 60
            ));
            // Other scopes are unaffected.
            t.check(eph.as_ref(), "acct:b", NOW).await.unwrap();
            t.check(eph.as_ref(), "ip:192.0.2.1", NOW).await.unwrap();
        }
    }

    #[tokio::test]
    async fn lock_lifts_by_itself_after_the_lockout() {
        for eph in ephemerals().await {
            // As configured: failures are counted over the lockout's length.
            let t = Throttle::new(ThrottlePolicy {
                max_failures: 2,
                lockout: Duration::from_millis(800),
                window: Duration::from_millis(800),
            });
            let scope = "acct:a";
            t.record_failure(eph.as_ref(), scope, NOW).await.unwrap();
            let f = t.record_failure(eph.as_ref(), scope, NOW).await.unwrap();
            // Sub-second lockouts round the indicative time up.
            assert_eq!(f.locked_until, Some(NOW + 1));
            assert!(matches!(t.check(eph.as_ref(), scope, NOW).await, Err(ThrottleError::Locked { .. })));
            assert!(matches!(t.reserve(eph.as_ref(), scope, NOW).await, Err(ThrottleError::Locked { .. })));
            tokio::time::sleep(Duration::from_millis(1100)).await;
            t.check(eph.as_ref(), scope, NOW).await.unwrap();
            // The window ended with the lock: a fresh (still delayed) allowance.
            assert_eq!(t.failures(eph.as_ref(), scope).await.unwrap(), 0);
            assert_eq!(t.reserve(eph.as_ref(), scope, NOW).await.unwrap(), 1);
        }
    }

    /// The heart of the defence: 100 guesses at once, at most `max_failures` of them admitted
    /// for evaluation, and the scope locked for the rest — on memory and on Redis.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_reservations_admit_exactly_the_limit() {
        for eph in ephemerals().await {
            let t = policy(5);
            let barrier = Arc::new(tokio::sync::Barrier::new(100));
            let mut tasks = JoinSet::new();
            for _ in 0..100 {
                let (eph, barrier) = (Arc::clone(&eph), Arc::clone(&barrier));
                tasks.spawn(async move {
                    barrier.wait().await;
                    t.reserve(eph.as_ref(), "login:target", NOW).await
                });
            }
            let results = tasks.join_all().await;
            let admitted: Vec<u32> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
            let mut sorted = admitted.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [1, 2, 3, 4, 5], "{}: exactly the limit admitted, each its own number", eph.kind());
            assert!(
                results.iter().all(|r| matches!(r, Ok(_) | Err(ThrottleError::Locked { .. }))),
                "{}: the others are refused as locked",
                eph.kind()
            );
            assert!(matches!(t.check(eph.as_ref(), "login:target", NOW).await, Err(ThrottleError::Locked { .. })));
        }
    }

    #[tokio::test]
    async fn a_released_attempt_is_given_back_and_the_last_failure_locks() {
        for eph in ephemerals().await {
            let t = policy(2);
            let first = t.reserve(eph.as_ref(), "ip:192.0.2.9", NOW).await.unwrap();
            t.release(eph.as_ref(), "ip:192.0.2.9").await.unwrap();
            assert_eq!(t.failures(eph.as_ref(), "ip:192.0.2.9").await.unwrap(), 0, "{}", eph.kind());
            // Releasing never goes below zero nor creates a counter.
            t.release(eph.as_ref(), "ip:192.0.2.9").await.unwrap();
            t.release(eph.as_ref(), "ip:never-seen").await.unwrap();
            assert_eq!(t.failures(eph.as_ref(), "ip:never-seen").await.unwrap(), 0);
            assert_eq!(t.reserve(eph.as_ref(), "ip:192.0.2.9", NOW).await.unwrap(), first);
            let f = t.failed(eph.as_ref(), "ip:192.0.2.9", first, NOW).await.unwrap();
            assert_eq!(f.locked_until, None);
            let second = t.reserve(eph.as_ref(), "ip:192.0.2.9", NOW).await.unwrap();
            let f = t.failed(eph.as_ref(), "ip:192.0.2.9", second, NOW).await.unwrap();
            assert_eq!(f.locked_until, Some(NOW + 60), "{}: the last allowed failure locks", eph.kind());
            assert!(matches!(t.reserve(eph.as_ref(), "ip:192.0.2.9", NOW).await, Err(ThrottleError::Locked { .. })));
        }
    }

    #[tokio::test]
    async fn success_resets_the_count() {
        for eph in ephemerals().await {
            let (t, scope) = (policy(3), "acct:a");
            t.record_failure(eph.as_ref(), scope, NOW).await.unwrap();
            t.record_failure(eph.as_ref(), scope, NOW).await.unwrap();
            assert_eq!(t.failures(eph.as_ref(), scope).await.unwrap(), 2);
            t.succeeded(eph.as_ref(), scope).await.unwrap();
            assert_eq!(t.failures(eph.as_ref(), scope).await.unwrap(), 0);
            t.record_failure(eph.as_ref(), scope, NOW).await.unwrap();
            let f = t.record_failure(eph.as_ref(), scope, NOW).await.unwrap();
            assert_eq!(f, Failure { failures: 2, locked_until: None });
            t.check(eph.as_ref(), scope, NOW).await.unwrap();
        }
    }

    #[tokio::test]
    async fn old_failures_fall_out_of_the_window() {
        for eph in ephemerals().await {
            let t = Throttle::new(ThrottlePolicy {
                max_failures: 3,
                lockout: Duration::from_secs(60),
                window: Duration::from_millis(400),
            });
            t.record_failure(eph.as_ref(), "acct:a", NOW).await.unwrap();
            t.record_failure(eph.as_ref(), "acct:a", NOW).await.unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
            let f = t.record_failure(eph.as_ref(), "acct:a", NOW).await.unwrap();
            assert_eq!(f, Failure { failures: 1, locked_until: None });
        }
    }

    /// Concurrent failures are all counted (the counter is atomic), so a burst locks the scope.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_failures_all_count() {
        for eph in ephemerals().await {
            let t = Throttle::new(ThrottlePolicy { max_failures: 20, ..ThrottlePolicy::default() });
            let mut tasks = JoinSet::new();
            for _ in 0..20 {
                let eph = Arc::clone(&eph);
                tasks.spawn(async move { t.record_failure(eph.as_ref(), "ip:198.51.100.7", NOW).await.unwrap() });
            }
            let locks = tasks.join_all().await.into_iter().filter(|f| f.locked_until.is_some()).count();
            assert_eq!(locks, 1, "{}", eph.kind());
            assert!(matches!(t.check(eph.as_ref(), "ip:198.51.100.7", NOW).await, Err(ThrottleError::Locked { .. })));
            eph.delete(&lock_key("ip:198.51.100.7")).await.unwrap();
        }
    }

    #[tokio::test]
    async fn zero_max_failures_never_locks() {
        for eph in ephemerals().await {
            let t = policy(0);
            for _ in 0..10 {
                assert_eq!(t.record_failure(eph.as_ref(), "acct:a", NOW).await.unwrap().locked_until, None);
            }
            t.check(eph.as_ref(), "acct:a", NOW).await.unwrap();
        }
    }

    #[test]
    fn delay_grows_then_caps() {
        let secs: Vec<u64> = (0..9).map(|n| delay_for(n).as_secs()).collect();
        assert_eq!(secs, [0, 0, 1, 2, 4, 8, 8, 8, 8]);
        assert_eq!(delay_for(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn default_policy() {
        let p = ThrottlePolicy::default();
        assert_eq!((p.max_failures, p.lockout.as_secs(), p.window.as_secs()), (5, 900, 900));
    }
}

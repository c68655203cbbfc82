//! Redis ephemeral store for production: every instance behind the load balancer shares it, so a
//! code issued by one instance can be redeemed on another, and single use holds across instances.
//!
//! Each operation is one Redis command (or one Lua script), so atomicity comes from Redis itself:
//! `take` is `GETDEL`, `put_if_absent` is `SET NX`, and `incr` is a script that increments and
//! sets the window expiry in one step.
//!
//! The connection is a [`ConnectionManager`]: one multiplexed connection shared by all requests,
//! re-established automatically after an error, so `/readyz` turns green again when Redis comes
//! back without restarting the process. Every wait is bounded, so a dead or hung Redis yields
//! [`EphemeralError::Unavailable`] quickly instead of piling up stuck requests.

use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};
use async_trait::async_trait;

use super::{EphemeralError, EphemeralResult, EphemeralStore};

/// Time allowed to open one TCP (and TLS/AUTH) connection.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for Redis to answer one command on an open connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on one store operation as seen by the caller, including waiting for a reconnection
/// in progress (the manager's own retries can take longer than that). Short enough that a request
/// fails fast with a clear error while Redis is down.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound on the initial connection at start-up (connection attempts with retries, plus the
/// capability checks).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection attempts per reconnection cycle. Few, because any later request starts a new
/// cycle anyway; many would only keep requests waiting behind a dead server.
const RECONNECT_RETRIES: usize = 2;
/// Longest pause between two reconnection attempts within a cycle.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
/// Cap on TTLs sent to Redis (`PX` must fit in a signed 64-bit millisecond count); far above any
/// real ephemeral lifetime.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Fixed-window counter: `INCR`, and set the expiry only when the key was just created (value 1),
/// so later increments keep the window's original end. Running both in one script makes it atomic:
/// no caller can observe (or leave behind, by crashing between two commands) a counter without
/// expiry.
const INCR_SCRIPT: &str = r"
local value = redis.call('INCR', KEYS[1])
if value == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return value
";

/// Decrement of such a counter, never below 0 and never creating one; `DECR` keeps the expiry.
const DECR_SCRIPT: &str = r"
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
if value > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
";

/// The production [`EphemeralStore`], backed by Redis >= 6.2 (for `GETDEL`).
#[derive(Clone)]
pub struct RedisStore {
    /// Cheap to clone (shared inner state); each operation clones it because commands need
    /// `&mut`.
    connection: ConnectionManager,
    /// Namespace for every key, so several deployments (or parallel tests) can share one Redis.
    prefix: String,
    incr_script: Script,
    decr_script: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://`, `rediss://` or `redis+unix://`), prefixing every key with
    /// `prefix` (e.g. `habilis:`).
    ///
    /// Fails if Redis cannot be reached or lacks what the store needs (`GETDEL`, Lua scripting):
    /// a misconfigured Redis should stop the start-up with a clear message, not surface later as
    /// failed logins. After start-up, lost connections are re-established automatically.
    pub async fn connect(url: &str, prefix: &str) -> EphemeralResult<Self> {
        let shown = redact_url(url);
        let describe = |e: RedisError| EphemeralError::Unavailable(format!("cannot use Redis at {shown}: {e}"));
        let client = Client::open(url).map_err(describe)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY);

        let setup = async {
            let connection = ConnectionManager::new_with_config(client, config).await.map_err(describe)?;
            let store = Self {
                connection,
                prefix: prefix.to_owned(),
                incr_script: Script::new(INCR_SCRIPT),
                decr_script: Script::new(DECR_SCRIPT),
            };
            store.check_capabilities().await.map_err(describe)?;
            Ok(store)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, setup).await.unwrap_or_else(|_| {
            Err(EphemeralError::Unavailable(format!(
                "cannot use Redis at {shown}: no answer within {CONNECT_TIMEOUT:?}"
            )))
        })
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Probes the commands the store relies on, without writing anything: `GETDEL` on a key that
    /// does not exist (an "unknown command" error on Redis < 6.2) and loading the `incr` script
    /// (fails where scripting is disabled).
    async fn check_capabilities(&self) -> Result<(), RedisError> {
        let mut connection = self.connection.clone();
        ::redis::cmd("GETDEL")
            .arg(self.key("habilis-capability-probe"))
            .query_async::<Option<Vec<u8>>>(&mut connection)
            .await?;
        self.incr_script.load_async(&mut connection).await?;
        Ok(())
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// Runs one Redis operation under [`OPERATION_TIMEOUT`], mapping failures to `Unavailable`.
    /// `op` names the command for the message; keys and values are never included, since they
    /// can be codes or session identifiers.
    async fn run<T>(&self, op: &'static str, fut: impl Future<Output = Result<T, RedisError>>) -> EphemeralResult<T> {
        match tokio::time::timeout(OPERATION_TIMEOUT, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(EphemeralError::Unavailable(format!("redis {op}: {e}"))),
            Err(_) => Err(EphemeralError::Unavailable(format!("redis {op}: no answer within {OPERATION_TIMEOUT:?}"))),
        }
    }
}

/// TTL in whole milliseconds for `PX`/`PEXPIRE`: at least 1 (Redis rejects 0), at most
/// [`MAX_TTL_MS`].
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MS)
}

/// A form of the Redis URL safe to log: scheme, host, port (or socket path) only. The password —
/// and anything else in user info or query — is left out.
pub(super) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", parsed.scheme()),
            (Some(host), None) => format!("{}://{host}", parsed.scheme()),
            (None, _) => format!("{}://{}", parsed.scheme(), parsed.path()),
        },
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[async_trait]
impl EphemeralStore for RedisStore {
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> EphemeralResult<()> {
        let mut connection = self.connection.clone();
        let command = ::redis::cmd("SET").arg(self.key(key)).arg(value).arg("PX").arg(ttl_ms(ttl)).to_owned();
        self.run("SET", command.query_async::<()>(&mut connection)).await
    }

    async fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> EphemeralResult<bool> {
        let mut connection = self.connection.clone();
        let command = ::redis::cmd("SET").arg(self.key(key)).arg(value).arg("NX").arg("PX").arg(ttl_ms(ttl)).to_owned();
        // `OK` when stored, nil when the key already existed.
        let reply = self.run("SET NX", command.query_async::<Option<String>>(&mut connection)).await?;
        Ok(reply.is_some())
    }

    async fn get(&self, key: &str) -> EphemeralResult<Option<Vec<u8>>> {
        let mut connection = self.connection.clone();
        let command = ::redis::cmd("GET").arg(self.key(key)).to_owned();
        self.run("GET", command.query_async(&mut connection)).await
    }

    async fn get_many(&self, keys: &[&str]) -> EphemeralResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        let mut command = ::redis::cmd("MGET");
        for key in keys {
            command.arg(self.key(key));
        }
        self.run("MGET", command.query_async(&mut connection)).await
    }

    async fn take(&self, key: &str) -> EphemeralResult<Option<Vec<u8>>> {
        let mut connection = self.connection.clone();
        let command = ::redis::cmd("GETDEL").arg(self.key(key)).to_owned();
        self.run("GETDEL", command.query_async(&mut connection)).await
    }

    async fn delete(&self, key: &str) -> EphemeralResult<()> {
        let mut connection = self.connection.clone();
        let command = ::redis::cmd("DEL").arg(self.key(key)).to_owned();
        self.run("DEL", command.query_async::<()>(&mut connection)).await
    }

    async fn incr(&self, key: &str, ttl: Duration) -> EphemeralResult<u64> {
        let mut connection = self.connection.clone();
        let mut invocation = self.incr_script.prepare_invoke();
        invocation.key(self.key(key)).arg(ttl_ms(ttl));
        self.run("INCR", invocation.invoke_async::<u64>(&mut connection)).await
    }

    async fn decr(&self, key: &str) -> EphemeralResult<u64> {
        let mut connection = self.connection.clone();
        let mut invocation = self.decr_script.prepare_invoke();
        invocation.key(self.key(key));
        self.run("DECR", invocation.invoke_async::<u64>(&mut connection)).await
    }

    async fn ping(&self) -> EphemeralResult<()> {
        let mut connection = self.connection.clone();
        let command = ::redis::cmd("PING");
        self.run("PING", command.query_async::<()>(&mut connection)).await
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    //! Redis-specific behaviour: connection loss and a hung server. The store's contract is tested
    //! on both backends in `ephemeral::tests`.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::testing::{redis_url, service_unreachable, unique_name};

    async fn store() -> Option<RedisStore> {
        let url = redis_url();
        match RedisStore::connect(&url, &format!("{}:", unique_name("t"))).await {
            Ok(store) => Some(store),
            Err(e) => {
                service_unreachable("Redis", &redact_url(&url), &e);
                None
            }
        }
    }

    async fn client_id(store: &RedisStore) -> i64 {
        let mut connection = store.connection.clone();
        ::redis::cmd("CLIENT").arg("ID").query_async(&mut connection).await.unwrap()
    }

    /// What `/readyz` relies on: after the connection is lost (here: killed by the server), the
    /// store reconnects by itself and works again, with no restart.
    #[tokio::test]
    async fn reconnects_after_the_connection_is_killed() {
        let Some(store) = store().await else { return };
        store.put("k", b"v", Duration::from_secs(60)).await.unwrap();
        let before = client_id(&store).await;

        // Kill exactly our connection (not those of tests running in parallel).
        let admin = Client::open(redis_url()).unwrap();
        let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
        ::redis::cmd("CLIENT").arg("KILL").arg("ID").arg(before).query_async::<()>(&mut admin).await.unwrap();

        // The first command may fail (it discovers the loss); within a few seconds it works.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match store.ping().await {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("while reconnecting: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no reconnection within 10 s: {e}"),
            }
        }
        assert_ne!(client_id(&store).await, before, "a new connection is in use");
        assert_eq!(store.take("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }

    /// A TCP proxy to Redis that can be frozen: once frozen it keeps connections open but
    /// forwards nothing, like a hung server or a network black hole.
    async fn freezable_proxy(upstream: String) -> (String, Arc<AtomicBool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let flag = flag.clone();
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let mut buffer = vec![0u8; 16 * 1024];
                    while let Ok(n) = client_read.read(&mut buffer).await {
                        if n == 0 {
                            break;
                        }
                        if flag.load(Ordering::SeqCst) {
                            // Swallow the request; keep the connection open.
                            continue;
                        }
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (format!("redis://{address}"), frozen)
    }

    /// A Redis that stops answering must turn into a prompt `Unavailable`, not a request that
    /// hangs forever.
    #[tokio::test]
    async fn a_hung_redis_is_an_error_not_a_hang() {
        let url = redis_url();
        let Ok(parsed) = url::Url::parse(&url) else {
            return;
        };
        if parsed.password().is_some() || parsed.username() != "" {
            // The proxy URL below carries no credentials; not worth handling here.
            eprintln!("skipping: TEST_REDIS_URL has credentials");
            return;
        }
        let upstream = format!("{}:{}", parsed.host_str().unwrap_or("127.0.0.1"), parsed.port().unwrap_or(6379));
        let (proxy_url, frozen) = freezable_proxy(upstream).await;
        let prefix = format!("{}:", unique_name("t"));
        let store = match RedisStore::connect(&proxy_url, &prefix).await {
            Ok(store) => store,
            Err(e) => {
                service_unreachable("Redis", &redact_url(&url), &e);
                return;
            }
        };
        store.ping().await.unwrap();

        frozen.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let result = store.get("k").await;
        let elapsed = started.elapsed();
        assert!(matches!(result, Err(EphemeralError::Unavailable(_))), "{result:?}");
        assert!(elapsed <= OPERATION_TIMEOUT + Duration::from_millis(500), "took {elapsed:?}");
    }

    #[test]
    fn redacted_url_has_no_credentials() {
        assert_eq!(
            redact_url("redis://user:s3cret@cache.internal:6380/2?protocol=resp3"),
            "redis://cache.internal:6380"
        );
        assert_eq!(redact_url("rediss://:s3cret@cache.internal"), "rediss://cache.internal");
        assert_eq!(redact_url("redis+unix:///run/redis.sock"), "redis+unix:///run/redis.sock");
        assert!(!redact_url("not a url s3cret").contains("s3cret"));
    }

    #[test]
    fn ttl_is_clamped_to_what_redis_accepts() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(2)), 2000);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
    }
}

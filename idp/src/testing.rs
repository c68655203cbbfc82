//! Support for tests (unit tests here and black-box tests in `tests/`): where to find PostgreSQL and
//! Redis, and the rule that under CI (`CI` set) they must be reachable — a test fails rather than
//! silently skipping the production backends.
#![doc(hidden)]

/// Default PostgreSQL used by tests; override with `TEST_DATABASE_URL`.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Default Redis used by tests; override with `TEST_REDIS_URL`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| !v.is_empty() && v != "false" && v != "0").unwrap_or(false)
}

pub fn pg_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_string())
}

/// Decides what to do when an external service is unreachable: under CI this panics (the test
/// fails); elsewhere it prints why the variant is skipped and returns `false`.
pub fn service_unreachable(service: &str, url: &str, error: &dyn std::fmt::Display) -> bool {
    if in_ci() {
        panic!(
            "{service} at {url} is unreachable ({error}) and CI is set: the {service} variant of this \
             test must run. Start {service} or fix TEST_DATABASE_URL / TEST_REDIS_URL."
        );
    }
    eprintln!(
        "skipping the {service} variant: {service} at {url} is unreachable ({error}); set CI=true to make this fatal"
    );
    false
}

/// A short unique name usable as a PostgreSQL schema or a Redis key prefix.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Creates a fresh PostgreSQL schema for one test and returns a database URL whose connections use
/// it (`search_path`), so tests run in parallel without seeing each other's rows. Schemas left by
/// earlier runs are dropped after an hour. `None` when PostgreSQL is unreachable outside CI.
pub async fn postgres_schema_url() -> Option<String> {
    use sqlx::{Connection, Executor};
    let url = pg_url();
    let connect = tokio::time::timeout(std::time::Duration::from_secs(5), sqlx::PgConnection::connect(&url)).await;
    let mut conn = match connect {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            service_unreachable("PostgreSQL", &url, &e);
            return None;
        }
        Err(_) => {
            service_unreachable("PostgreSQL", &url, &"connection timed out");
            return None;
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let stale: Vec<(String,)> = sqlx::query_as(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'hab\\_t\\_%' AND split_part(nspname, '_', 3)::bigint < $1",
    )
    .bind((now as i64) - 3600)
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    for (schema,) in stale {
        let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))).await;
    }
    let schema = format!("hab_t_{now}_{}", uuid::Uuid::new_v4().simple());
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\""))).await.expect("create a test schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{separator}options=-c%20search_path%3D{schema}"))
}

/// The Redis keys matching `pattern` (a `SCAN MATCH` glob, e.g. `prefix:int:*`).
pub async fn redis_keys(url: &str, pattern: &str) -> Result<Vec<String>, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut connection = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// Deletes every Redis key under `prefix`: what a Redis restarted empty (or flushed) leaves to the
/// instances using that prefix. Returns how many keys were deleted.
pub async fn flush_redis_prefix(url: &str, prefix: &str) -> Result<usize, String> {
    let keys = redis_keys(url, &format!("{prefix}*")).await?;
    if keys.is_empty() {
        return Ok(0);
    }
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut connection = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut connection).await.map_err(|e| e.to_string())?;
    }
    Ok(keys.len())
}

//! [`MarkerStore`] in SQL, for both backends (same macro pattern as the main store).

use super::*;

macro_rules! sql_marker_store {
    ($store:ident) => {
        #[async_trait]
        impl MarkerStore for $store {
            async fn put_marker(&self, marker: &DurableMarker) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO durable_markers (key, value, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                )
                .bind(&marker.key)
                .bind(&marker.value)
                .bind(marker.expires_at)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(())
            }

            async fn marker(&self, key: &str) -> StoreResult<Option<DurableMarker>> {
                Ok(sqlx::query_as::<_, (String, String, i64)>(
                    "SELECT key, value, expires_at FROM durable_markers WHERE key = $1",
                )
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(|(key, value, expires_at)| DurableMarker { key, value, expires_at }))
            }

            async fn delete_marker(&self, key: &str) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query("DELETE FROM durable_markers WHERE key = $1")
                    .bind(key)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn live_markers(&self, now: UnixTime) -> StoreResult<Vec<DurableMarker>> {
                Ok(sqlx::query_as::<_, (String, String, i64)>(
                    "SELECT key, value, expires_at FROM durable_markers WHERE expires_at > $1 ORDER BY key",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(|(key, value, expires_at)| DurableMarker { key, value, expires_at })
                .collect())
            }

            async fn purge_markers(&self, now: UnixTime) -> StoreResult<u64> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM durable_markers WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected())
            }
        }
    };
}

sql_marker_store!(SqliteStore);
sql_marker_store!(PgStore);

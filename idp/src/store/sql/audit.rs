//! [`AuditStore`] in SQL, for both backends (the macro pattern of the main store). Appending is one
//! transaction per batch that reads and locks the head row (`SELECT … FOR UPDATE` on PostgreSQL,
//! `BEGIN IMMEDIATE` on SQLite, which takes the database's write lock at once), links the batch to
//! it with `crate::audit::chain`, inserts it and moves the head: concurrent writers (instances on
//! one PostgreSQL, the CLI beside a server on SQLite) queue on that lock and extend one chain.
//!
//! Only the batch insert differs: one `INSERT … SELECT FROM UNNEST(arrays)` round trip on
//! PostgreSQL, a prepared statement in a loop on SQLite (each execution is a function call there).

use super::*;
use crate::audit::chain;

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    time: i64,
    event: String,
    outcome: String,
    client_id: Option<String>,
    request_id: Option<String>,
    acr: Option<String>,
    actor: Option<String>,
    subject: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    details: String,
    personal_digest: String,
    pseudonymised_at: Option<i64>,
    prev_hash: String,
    hash: String,
}

impl From<AuditRow> for StoredAuditRecord {
    fn from(r: AuditRow) -> Self {
        StoredAuditRecord {
            seq: r.seq,
            time: r.time,
            event: r.event,
            outcome: r.outcome,
            client_id: r.client_id,
            request_id: r.request_id,
            acr: r.acr,
            actor: r.actor,
            subject: r.subject,
            ip: r.ip,
            user_agent: r.user_agent,
            details: r.details,
            personal_digest: r.personal_digest,
            pseudonymised_at: r.pseudonymised_at,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    seq: i64,
    hash: String,
    time: i64,
    kid: String,
    jws: String,
}

impl From<CheckpointRow> for AuditCheckpoint {
    fn from(r: CheckpointRow) -> Self {
        AuditCheckpoint { seq: r.seq, hash: r.hash, time: r.time, kid: r.kid, jws: r.jws }
    }
}

#[derive(sqlx::FromRow)]
struct AnchorRow {
    seq: i64,
    hash: String,
    time: i64,
    records: i64,
    archive_sha256: String,
    kid: String,
    jws: String,
}

impl From<AnchorRow> for AuditAnchor {
    fn from(r: AnchorRow) -> Self {
        AuditAnchor {
            seq: r.seq,
            hash: r.hash,
            time: r.time,
            records: r.records,
            archive_sha256: r.archive_sha256,
            kid: r.kid,
            jws: r.jws,
        }
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    alg: String,
    public_jwk: String,
    private_sealed: Vec<u8>,
    created_at: i64,
}

impl From<KeyRow> for AuditKey {
    fn from(r: KeyRow) -> Self {
        AuditKey {
            kid: r.kid,
            alg: r.alg,
            public_jwk: r.public_jwk,
            private_sealed: r.private_sealed,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct HourlyCountRow {
    hour_bucket: i64,
    event: String,
    password_factor: i64,
    n: i64,
}

/// The query of [`AuditStore::hourly_counts`] for `events` event names (bound as `$3`…): one pass
/// over the `time` index, grouped by hour, event and password factor. Integer division of the
/// BIGINT `time` gives the hour on both backends; the factor test is a `LIKE` on the compact JSON
/// the writer stores (`serde_json`), as SQLite and PostgreSQL have no JSON function in common.
fn hourly_counts_sql(events: usize) -> String {
    let event_parameters: Vec<String> = (0..events).map(|i| format!("${}", i + 3)).collect();
    format!(
        "SELECT time / 3600 AS hour_bucket, event, \
         CAST(CASE WHEN details LIKE '%\"factor\":\"password\"%' THEN 1 ELSE 0 END AS BIGINT) AS password_factor, \
         COUNT(*) AS n FROM audit_records WHERE time >= $1 AND time < $2 AND event IN ({}) \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        event_parameters.join(", ")
    )
}

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    seq: i64,
    hash: String,
    min_seq: Option<i64>,
    max_seq: Option<i64>,
}

macro_rules! audit_columns {
    () => {
        "seq, time, event, outcome, client_id, request_id, acr, actor, subject, ip, user_agent, details, \
         personal_digest, pseudonymised_at, prev_hash, hash"
    };
}

/// The optional filters of a search, `$1`…`$6` (then `$7` the seq bound, `$8` the limit).
macro_rules! audit_filters {
    () => {
        "($1 IS NULL OR time >= $1) AND ($2 IS NULL OR time < $2) AND ($3 IS NULL OR event = $3) \
         AND ($4 IS NULL OR actor IN ($4, 'account:' || $4) OR subject IN ($4, 'account:' || $4)) AND ($5 IS NULL OR client_id = $5) \
         AND ($6 IS NULL OR outcome = $6)"
    };
}

/// The SQLite insert of a batch: its rows travel as one JSON array of 16-element arrays (the
/// columns of [`audit_columns`], in order), unpacked inside SQLite by `json_each`. One parameter
/// instead of 16 per record: binding each value costs SQLite a lock, a copy and an allocation,
/// and sqlx two more allocations, which made most of the writer's cost on the token path. Text
/// comes back out of JSON exactly as it went in (the chain hashes it).
const SQLITE_INSERT_FROM_JSON: &str = concat!(
    "INSERT INTO audit_records (",
    audit_columns!(),
    ") SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, \
     value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, value ->> 12, value ->> 13, value ->> 14, \
     value ->> 15 FROM jsonb_each(?1)"
);

/// The rows of [`SQLITE_INSERT_FROM_JSON`].
fn sqlite_rows_json(records: &[StoredAuditRecord]) -> String {
    let rows: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.seq,
                r.time,
                &r.event,
                &r.outcome,
                &r.client_id,
                &r.request_id,
                &r.acr,
                &r.actor,
                &r.subject,
                &r.ip,
                &r.user_agent,
                &r.details,
                &r.personal_digest,
                r.pseudonymised_at,
                &r.prev_hash,
                &r.hash,
            )
        })
        .collect();
    // Strings, integers and options: serialising them cannot fail.
    serde_json::to_string(&rows).expect("JSON of strings and integers")
}

impl SqliteStore {
    async fn insert_audit_records(
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        records: &[StoredAuditRecord],
    ) -> StoreResult<()> {
        sqlx::query(SQLITE_INSERT_FROM_JSON)
            .bind(sqlite_rows_json(records))
            .execute(&mut **tx)
            .await
            .map_err(write_error("audit record"))?;
        Ok(())
    }
}

impl PgStore {
    async fn insert_audit_records(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        records: &[StoredAuditRecord],
    ) -> StoreResult<()> {
        fn column<T>(records: &[StoredAuditRecord], f: impl Fn(&StoredAuditRecord) -> T) -> Vec<T> {
            records.iter().map(f).collect()
        }
        sqlx::query(concat!(
            "INSERT INTO audit_records (",
            audit_columns!(),
            ") SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], \
             $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], $13::TEXT[], $14::BIGINT[], \
             $15::TEXT[], $16::TEXT[])"
        ))
        .bind(column(records, |r| r.seq))
        .bind(column(records, |r| r.time))
        .bind(column(records, |r| r.event.clone()))
        .bind(column(records, |r| r.outcome.clone()))
        .bind(column(records, |r| r.client_id.clone()))
        .bind(column(records, |r| r.request_id.clone()))
        .bind(column(records, |r| r.acr.clone()))
        .bind(column(records, |r| r.actor.clone()))
        .bind(column(records, |r| r.subject.clone()))
        .bind(column(records, |r| r.ip.clone()))
        .bind(column(records, |r| r.user_agent.clone()))
        .bind(column(records, |r| r.details.clone()))
        .bind(column(records, |r| r.personal_digest.clone()))
        .bind(column(records, |r| r.pseudonymised_at))
        .bind(column(records, |r| r.prev_hash.clone()))
        .bind(column(records, |r| r.hash.clone()))
        .execute(&mut **tx)
        .await
        .map_err(write_error("audit record"))?;
        Ok(())
    }
}

/// Replaces every occurrence of each identifier in `text` by `pseudonym` (longest identifiers
/// first, so that one contained in another does not leave a fragment of it).
fn replace_identifiers(text: &str, identifiers: &[String], pseudonym: &str) -> String {
    let mut sorted: Vec<&String> = identifiers.iter().filter(|i| !i.is_empty()).collect();
    sorted.sort_by_key(|i| std::cmp::Reverse(i.len()));
    let mut out = text.to_string();
    for identifier in sorted {
        if out.contains(identifier.as_str()) {
            out = out.replace(identifier.as_str(), pseudonym);
        }
    }
    out
}

macro_rules! sql_audit_store {
    ($store:ident, $backend:expr) => {
        #[async_trait]
        impl AuditStore for $store {
            async fn append(&self, batch: &[NewAuditRecord]) -> StoreResult<Vec<StoredAuditRecord>> {
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                // The digests do not depend on the chain: computed before the head is locked.
                let digests: Vec<String> = batch.iter().map(chain::digest_of).collect();
                let _writer = self.writer().await?;
                let (begin, read_head) = match $backend {
                    Backend::Sqlite => ("BEGIN IMMEDIATE", "SELECT seq, hash FROM audit_head WHERE id = 1"),
                    Backend::Postgres => ("BEGIN", "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"),
                };
                let mut tx = self.pool.begin_with(begin).await.map_err(unavailable)?;
                let (head_seq, head_hash): (i64, String) = sqlx::query_as(read_head)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))?;
                let stored = chain::link(head_seq, &head_hash, batch, &digests);
                Self::insert_audit_records(&mut tx, &stored).await?;
                let last = stored.last().expect("a non-empty batch");
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(last.seq)
                    .bind(&last.hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)?;
                Ok(stored)
            }

            async fn records_from(&self, from_seq: i64, limit: i64) -> StoreResult<Vec<StoredAuditRecord>> {
                let rows = sqlx::query_as::<_, AuditRow>(concat!(
                    "SELECT ",
                    audit_columns!(),
                    " FROM audit_records WHERE seq >= $1 ORDER BY seq LIMIT $2"
                ))
                .bind(from_seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn search(&self, q: &AuditQuery) -> StoreResult<Vec<StoredAuditRecord>> {
                let (sql, bound) = match q.after_seq {
                    Some(after) => (
                        concat!(
                            "SELECT ",
                            audit_columns!(),
                            " FROM audit_records WHERE ",
                            audit_filters!(),
                            " AND seq > $7 ORDER BY seq LIMIT $8"
                        ),
                        after,
                    ),
                    None => (
                        concat!(
                            "SELECT ",
                            audit_columns!(),
                            " FROM audit_records WHERE ",
                            audit_filters!(),
                            " AND seq < $7 ORDER BY seq DESC LIMIT $8"
                        ),
                        q.before_seq.unwrap_or(i64::MAX),
                    ),
                };
                let rows = sqlx::query_as::<_, AuditRow>(sql)
                    .bind(q.since)
                    .bind(q.until)
                    .bind(&q.event)
                    .bind(&q.account_id)
                    .bind(&q.client_id)
                    .bind(&q.outcome)
                    .bind(bound)
                    .bind(q.limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn records_about(&self, account_id: &str) -> StoreResult<Vec<StoredAuditRecord>> {
                let rows = sqlx::query_as::<_, AuditRow>(concat!(
                    "SELECT ",
                    audit_columns!(),
                    " FROM audit_records WHERE actor IN ($1, 'account:' || $1) OR subject IN ($1, 'account:' || $1) ORDER BY seq"
                ))
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn pseudonymise(
                &self,
                account_id: &str,
                pseudonym: &str,
                identifiers: &[String],
                at: UnixTime,
            ) -> StoreResult<u64> {
                let _writer = self.writer().await?;
                let (begin, select) = match $backend {
                    Backend::Sqlite => (
                        "BEGIN IMMEDIATE",
                        concat!("SELECT ", audit_columns!(), " FROM audit_records WHERE actor IN ($1, 'account:' || $1) OR subject IN ($1, 'account:' || $1)"),
                    ),
                    Backend::Postgres => (
                        "BEGIN",
                        concat!(
                            "SELECT ",
                            audit_columns!(),
                            " FROM audit_records WHERE actor IN ($1, 'account:' || $1) OR subject IN ($1, 'account:' || $1) FOR UPDATE"
                        ),
                    ),
                };
                let mut tx = self.pool.begin_with(begin).await.map_err(unavailable)?;
                let rows = sqlx::query_as::<_, AuditRow>(select)
                    .bind(account_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                let mut identifiers = identifiers.to_vec();
                identifiers.push(account_id.to_string());
                // Administrators' actions name them `account:<id>`: both forms go.
                let as_actor = format!("account:{account_id}");
                let swap = |v: Option<String>| {
                    v.map(|v| if v == account_id || v == as_actor { pseudonym.to_string() } else { v })
                };
                let mut changed = 0;
                for row in rows {
                    let details = replace_identifiers(&row.details, &identifiers, pseudonym);
                    // personal_digest stays: the chain keeps verifying; pseudonymised_at tells the
                    // verifier not to expect the personal fields to match it any more.
                    sqlx::query(
                        "UPDATE audit_records SET actor = $2, subject = $3, ip = NULL, user_agent = NULL, \
                         details = $4, pseudonymised_at = COALESCE(pseudonymised_at, $5) WHERE seq = $1",
                    )
                    .bind(row.seq)
                    .bind(swap(row.actor))
                    .bind(swap(row.subject))
                    .bind(details)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    changed += 1;
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(changed)
            }

            async fn insert_checkpoint(&self, c: &AuditCheckpoint) -> StoreResult<()> {
                let _writer = self.writer().await?;
                // Several instances may checkpoint the same head: the first one stays.
                sqlx::query(
                    "INSERT INTO audit_checkpoints (seq, hash, time, kid, jws) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (seq) DO NOTHING",
                )
                .bind(c.seq)
                .bind(&c.hash)
                .bind(c.time)
                .bind(&c.kid)
                .bind(&c.jws)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(())
            }

            async fn checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>> {
                let rows = sqlx::query_as::<_, CheckpointRow>(
                    "SELECT seq, hash, time, kid, jws FROM audit_checkpoints ORDER BY seq",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn head(&self) -> StoreResult<Option<(i64, String)>> {
                sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)
            }

            async fn snapshot(&self) -> StoreResult<ChainSnapshot> {
                let row = sqlx::query_as::<_, SnapshotRow>(
                    "SELECT h.seq, h.hash, (SELECT MIN(seq) FROM audit_records) AS min_seq, \
                     (SELECT MAX(seq) FROM audit_records) AS max_seq FROM audit_head h WHERE h.id = 1",
                )
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| StoreError::Corrupt("the audit_head row is missing".into()))?;
                Ok(ChainSnapshot { head_seq: row.seq, head_hash: row.hash, min_seq: row.min_seq, max_seq: row.max_seq })
            }

            async fn last_checkpoint(&self) -> StoreResult<Option<AuditCheckpoint>> {
                let row = sqlx::query_as::<_, CheckpointRow>(
                    "SELECT seq, hash, time, kid, jws FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(row.map(Into::into))
            }

            async fn insert_key(&self, k: &AuditKey) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO audit_keys (kid, alg, public_jwk, private_sealed, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kid) DO NOTHING",
                )
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.public_jwk)
                .bind(&k.private_sealed)
                .bind(k.created_at)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(())
            }

            async fn keys(&self) -> StoreResult<Vec<AuditKey>> {
                let rows = sqlx::query_as::<_, KeyRow>(
                    "SELECT kid, alg, public_jwk, private_sealed, created_at FROM audit_keys ORDER BY created_at, kid",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn anchors(&self) -> StoreResult<Vec<AuditAnchor>> {
                let rows = sqlx::query_as::<_, AnchorRow>(
                    "SELECT seq, hash, time, records, archive_sha256, kid, jws FROM audit_anchors ORDER BY seq",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn last_seq_before(&self, before: UnixTime) -> StoreResult<Option<i64>> {
                sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(seq) FROM audit_records WHERE time < $1")
                    .bind(before)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)
            }

            async fn purge(&self, anchor: &AuditAnchor) -> StoreResult<u64> {
                let _writer = self.writer().await?;
                let begin = match $backend {
                    Backend::Sqlite => "BEGIN IMMEDIATE",
                    Backend::Postgres => "BEGIN",
                };
                let mut tx = self.pool.begin_with(begin).await.map_err(unavailable)?;
                let hash: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_records WHERE seq = $1")
                    .bind(anchor.seq)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                if hash.as_deref() != Some(anchor.hash.as_str()) {
                    return Err(StoreError::Conflict { entity: "audit record at the anchor's seq" });
                }
                let deleted = sqlx::query("DELETE FROM audit_records WHERE seq <= $1")
                    .bind(anchor.seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .rows_affected();
                sqlx::query("DELETE FROM audit_checkpoints WHERE seq <= $1")
                    .bind(anchor.seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                sqlx::query(
                    "INSERT INTO audit_anchors (seq, hash, time, records, archive_sha256, kid, jws) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(anchor.seq)
                .bind(&anchor.hash)
                .bind(anchor.time)
                .bind(anchor.records)
                .bind(&anchor.archive_sha256)
                .bind(&anchor.kid)
                .bind(&anchor.jws)
                .execute(&mut *tx)
                .await
                .map_err(write_error("audit anchor"))?;
                tx.commit().await.map_err(unavailable)?;
                Ok(deleted)
            }

            async fn hourly_counts(
                &self,
                events: &[&str],
                since: UnixTime,
                until: UnixTime,
            ) -> StoreResult<Vec<HourlyEventCount>> {
                if events.is_empty() {
                    return Ok(Vec::new());
                }
                // Only parameter numbers ($3, $4…) are formatted into the text; every value is bound.
                let sql = sqlx::AssertSqlSafe(hourly_counts_sql(events.len()));
                let mut query = sqlx::query_as::<_, HourlyCountRow>(sql).bind(since).bind(until);
                for event in events {
                    query = query.bind(*event);
                }
                let rows = query.fetch_all(&self.pool).await.map_err(unavailable)?;
                Ok(rows
                    .into_iter()
                    .map(|r| HourlyEventCount {
                        hour: r.hour_bucket,
                        event: r.event,
                        password_factor: r.password_factor != 0,
                        count: r.n,
                    })
                    .collect())
            }
        }
    };
}

sql_audit_store!(SqliteStore, Backend::Sqlite);
sql_audit_store!(PgStore, Backend::Postgres);

#[cfg(test)]
mod tests {
    use super::{hourly_counts_sql, replace_identifiers};

    #[test]
    fn hourly_counts_bind_every_event() {
        let sql = hourly_counts_sql(3);
        assert!(sql.contains("event IN ($3, $4, $5)"), "{sql}");
        assert!(sql.contains(r#"LIKE '%"factor":"password"%'"#), "{sql}");
    }

    #[test]
    fn identifiers_are_replaced_longest_first() {
        let ids = vec!["dupont".to_string(), "dupont@example.org".to_string(), String::new()];
        assert_eq!(
            replace_identifiers(r#"{"email":"dupont@example.org","login":"dupont"}"#, &ids, "p-1"),
            r#"{"email":"p-1","login":"p-1"}"#
        );
        assert_eq!(replace_identifiers("nothing", &ids, "p-1"), "nothing");
    }
}

//! [`LifecycleStore`] in SQL, for both backends (same macro pattern as the main store). The lease
//! is one `INSERT … ON CONFLICT … DO UPDATE … WHERE … RETURNING`, which SQLite (3.35+) and
//! PostgreSQL both execute atomically: of two instances racing for an expired lease, exactly one
//! gets a row back.

use super::*;

#[derive(sqlx::FromRow)]
struct ActivityRow {
    #[sqlx(flatten)]
    account: AccountRow,
    kept_at: Option<i64>,
}

impl TryFrom<ActivityRow> for AccountActivity {
    type Error = StoreError;
    fn try_from(r: ActivityRow) -> StoreResult<AccountActivity> {
        Ok(AccountActivity { account: r.account.try_into()?, kept_at: r.kept_at })
    }
}

#[derive(sqlx::FromRow)]
struct WarningRow {
    account_id: String,
    activity_at: i64,
    stage: i64,
    deletion_at: i64,
    sent_at: i64,
    channel: String,
}

impl From<WarningRow> for InactivityWarning {
    fn from(r: WarningRow) -> Self {
        InactivityWarning {
            account_id: r.account_id,
            activity_at: r.activity_at,
            stage: r.stage,
            deletion_at: r.deletion_at,
            sent_at: r.sent_at,
            channel: r.channel,
        }
    }
}

#[derive(sqlx::FromRow)]
struct KeepTokenRow {
    token_hash: String,
    account_id: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

impl From<KeepTokenRow> for KeepToken {
    fn from(r: KeepTokenRow) -> Self {
        KeepToken {
            token_hash: r.token_hash,
            account_id: r.account_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
            used_at: r.used_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct CredentialInfoRow {
    id: String,
    kind: String,
    name: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl From<CredentialInfoRow> for CredentialInfo {
    fn from(r: CredentialInfoRow) -> Self {
        CredentialInfo { id: r.id, kind: r.kind, name: r.name, created_at: r.created_at, last_used_at: r.last_used_at }
    }
}

macro_rules! activity_select {
    () => {
        concat!("SELECT ", account_columns!(), ", kept_at FROM accounts")
    };
}

macro_rules! sql_lifecycle_store {
    ($store:ident) => {
        #[async_trait]
        impl LifecycleStore for $store {
            async fn acquire_lease(
                &self,
                name: &str,
                owner: &str,
                until: UnixTime,
                now: UnixTime,
            ) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let taken = sqlx::query_scalar::<_, String>(
                    "INSERT INTO job_leases (name, owner, until) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until \
                     WHERE job_leases.until <= $4 OR job_leases.owner = excluded.owner \
                     RETURNING owner",
                )
                .bind(name)
                .bind(owner)
                .bind(until)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(taken.as_deref() == Some(owner))
            }

            async fn release_lease(&self, name: &str, owner: &str, now: UnixTime) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query("UPDATE job_leases SET until = $3 WHERE name = $1 AND owner = $2")
                    .bind(name)
                    .bind(owner)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn lease(&self, name: &str) -> StoreResult<Option<(String, UnixTime)>> {
                sqlx::query_as::<_, (String, i64)>("SELECT owner, until FROM job_leases WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)
            }

            async fn inactive_since(&self, cutoff: UnixTime) -> StoreResult<Vec<AccountActivity>> {
                // activity_at is the latest of three times: it is at or before the cutoff exactly
                // when each of them is (a condition both backends evaluate alike, unlike
                // SQLite's MAX(a, b) and PostgreSQL's GREATEST, which disagree about NULL).
                sqlx::query_as::<_, ActivityRow>(concat!(
                    activity_select!(),
                    " WHERE created_at <= $1 AND (last_authenticated_at IS NULL OR last_authenticated_at <= $1) \
                     AND (kept_at IS NULL OR kept_at <= $1) ORDER BY created_at, id"
                ))
                .bind(cutoff)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(AccountActivity::try_from)
                .collect()
            }

            async fn activity_of(&self, account_id: &str) -> StoreResult<Option<AccountActivity>> {
                sqlx::query_as::<_, ActivityRow>(concat!(activity_select!(), " WHERE id = $1"))
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?
                    .map(AccountActivity::try_from)
                    .transpose()
            }

            async fn claim_warning(&self, w: &InactivityWarning) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "INSERT INTO inactivity_warnings (account_id, activity_at, stage, deletion_at, sent_at, channel) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, activity_at, stage) DO NOTHING",
                )
                .bind(&w.account_id)
                .bind(w.activity_at)
                .bind(w.stage)
                .bind(w.deletion_at)
                .bind(w.sent_at)
                .bind(&w.channel)
                .execute(&self.pool)
                .await
                .map_err(write_error("inactivity warning"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn forget_warning(&self, account_id: &str, activity_at: UnixTime, stage: i64) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "DELETE FROM inactivity_warnings WHERE account_id = $1 AND activity_at = $2 AND stage = $3",
                )
                .bind(account_id)
                .bind(activity_at)
                .bind(stage)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(())
            }

            async fn warnings_of(&self, account_id: &str) -> StoreResult<Vec<InactivityWarning>> {
                Ok(sqlx::query_as::<_, WarningRow>(
                    "SELECT account_id, activity_at, stage, deletion_at, sent_at, channel FROM inactivity_warnings \
                     WHERE account_id = $1 ORDER BY activity_at, stage",
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(InactivityWarning::from)
                .collect())
            }

            async fn insert_keep_token(&self, t: &KeepToken) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO keep_tokens (token_hash, account_id, created_at, expires_at, used_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&t.token_hash)
                .bind(&t.account_id)
                .bind(t.created_at)
                .bind(t.expires_at)
                .bind(t.used_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("keep token"))?;
                Ok(())
            }

            async fn keep_token(&self, token_hash: &str) -> StoreResult<Option<KeepToken>> {
                Ok(sqlx::query_as::<_, KeepTokenRow>(
                    "SELECT token_hash, account_id, created_at, expires_at, used_at FROM keep_tokens WHERE token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(KeepToken::from))
            }

            async fn use_keep_token(&self, token_hash: &str, now: UnixTime) -> StoreResult<Option<KeepToken>> {
                let _writer = self.writer().await?;
                // The spend and the objection commit together: a spent link always kept the account.
                let mut tx = self.pool.begin().await.map_err(unavailable)?;
                let spent = sqlx::query_as::<_, KeepTokenRow>(
                    "UPDATE keep_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                     RETURNING token_hash, account_id, created_at, expires_at, used_at",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
                let Some(spent) = spent else {
                    tx.rollback().await.map_err(unavailable)?;
                    return Ok(None);
                };
                sqlx::query("UPDATE accounts SET kept_at = $2 WHERE id = $1")
                    .bind(&spent.account_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)?;
                Ok(Some(spent.into()))
            }

            async fn credential_infos(&self, account_id: &str) -> StoreResult<Vec<CredentialInfo>> {
                // The secret column is never selected: what leaves here goes into exports.
                Ok(sqlx::query_as::<_, CredentialInfoRow>(
                    "SELECT id, kind, name, created_at, last_used_at FROM credentials WHERE account_id = $1 \
                     ORDER BY created_at, id",
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(CredentialInfo::from)
                .collect())
            }

            async fn grants_of(&self, account_id: &str) -> StoreResult<Vec<Grant>> {
                Ok(sqlx::query_as::<_, GrantRow>(concat!(
                    "SELECT ",
                    grant_columns!(),
                    " FROM grants WHERE account_id = $1 ORDER BY created_at, id"
                ))
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Grant::from)
                .collect())
            }

            async fn delete_account(&self, account_id: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM accounts WHERE id = $1")
                    .bind(account_id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

sql_lifecycle_store!(SqliteStore);
sql_lifecycle_store!(PgStore);

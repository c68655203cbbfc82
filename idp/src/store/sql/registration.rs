//! [`RegistrationStore`] in SQL, for both backends (same macro pattern as the main store).

use super::*;

#[derive(sqlx::FromRow)]
struct InitialAccessTokenRow {
    id: String,
    token_hash: String,
    description: Option<String>,
    created_at: i64,
    expires_at: i64,
    max_uses: i64,
    uses: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<InitialAccessTokenRow> for InitialAccessToken {
    fn from(r: InitialAccessTokenRow) -> Self {
        InitialAccessToken {
            id: r.id,
            token_hash: r.token_hash,
            description: r.description,
            created_at: r.created_at,
            expires_at: r.expires_at,
            max_uses: r.max_uses,
            uses: r.uses,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ClientRegistrationRow {
    client_id: String,
    access_token_hash: String,
    initial_token_id: String,
    created_at: i64,
    updated_at: i64,
}

impl From<ClientRegistrationRow> for ClientRegistrationRecord {
    fn from(r: ClientRegistrationRow) -> Self {
        ClientRegistrationRecord {
            client_id: r.client_id,
            access_token_hash: r.access_token_hash,
            initial_token_id: r.initial_token_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

macro_rules! initial_access_token_columns {
    () => {
        "id, token_hash, description, created_at, expires_at, max_uses, uses, last_used_at, revoked_at"
    };
}

macro_rules! sql_registration_store {
    ($store:ident) => {
        #[async_trait]
        impl RegistrationStore for $store {
            async fn insert_initial_access_token(&self, t: &InitialAccessToken) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(concat!(
                    "INSERT INTO initial_access_tokens (",
                    initial_access_token_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(&t.id)
                .bind(&t.token_hash)
                .bind(&t.description)
                .bind(t.created_at)
                .bind(t.expires_at)
                .bind(t.max_uses)
                .bind(t.uses)
                .bind(t.last_used_at)
                .bind(t.revoked_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("initial access token"))?;
                Ok(())
            }

            async fn initial_access_token(&self, token_hash: &str) -> StoreResult<Option<InitialAccessToken>> {
                Ok(sqlx::query_as::<_, InitialAccessTokenRow>(concat!(
                    "SELECT ",
                    initial_access_token_columns!(),
                    " FROM initial_access_tokens WHERE token_hash = $1"
                ))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(InitialAccessToken::from))
            }

            async fn list_initial_access_tokens(&self) -> StoreResult<Vec<InitialAccessToken>> {
                Ok(sqlx::query_as::<_, InitialAccessTokenRow>(concat!(
                    "SELECT ",
                    initial_access_token_columns!(),
                    " FROM initial_access_tokens ORDER BY created_at DESC, id"
                ))
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(InitialAccessToken::from)
                .collect())
            }

            async fn use_initial_access_token(
                &self,
                token_hash: &str,
                now: UnixTime,
            ) -> StoreResult<Option<InitialAccessToken>> {
                let _writer = self.writer().await?;
                // One conditional UPDATE … RETURNING: atomic on both backends.
                Ok(sqlx::query_as::<_, InitialAccessTokenRow>(concat!(
                    "UPDATE initial_access_tokens SET uses = uses + 1, last_used_at = $2 \
                     WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND uses < max_uses \
                     RETURNING ",
                    initial_access_token_columns!()
                ))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(InitialAccessToken::from))
            }

            async fn revoke_initial_access_token(&self, id: &str, now: UnixTime) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "UPDATE initial_access_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_client_registration(&self, r: &ClientRegistrationRecord) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO client_registrations \
                     (client_id, access_token_hash, initial_token_id, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&r.client_id)
                .bind(&r.access_token_hash)
                .bind(&r.initial_token_id)
                .bind(r.created_at)
                .bind(r.updated_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("client registration"))?;
                Ok(())
            }

            async fn client_registration(&self, client_id: &str) -> StoreResult<Option<ClientRegistrationRecord>> {
                Ok(sqlx::query_as::<_, ClientRegistrationRow>(
                    "SELECT client_id, access_token_hash, initial_token_id, created_at, updated_at \
                     FROM client_registrations WHERE client_id = $1",
                )
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(ClientRegistrationRecord::from))
            }

            async fn swap_registration_token(
                &self,
                client_id: &str,
                current_hash: &str,
                new_hash: &str,
                now: UnixTime,
            ) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "UPDATE client_registrations SET access_token_hash = $3, updated_at = $4 \
                     WHERE client_id = $1 AND access_token_hash = $2",
                )
                .bind(client_id)
                .bind(current_hash)
                .bind(new_hash)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

sql_registration_store!(SqliteStore);
sql_registration_store!(PgStore);

//! The SQL implementation of [`Store`], written once and compiled for SQLite and PostgreSQL by a
//! macro: both backends accept `$n` parameters, `ON CONFLICT` and `RETURNING`, and the schemas use
//! the same column types from Rust's point of view (TEXT, 64-bit integers, bytes).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::*;

mod habilitation;
mod registration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connects to the database named by `url`, applies pending migrations and returns the store.
pub async fn connect(config: &crate::config::Config) -> StoreResult<SharedStore> {
    connect_with(&config.database_url(), config.storage.max_connections).await
}

pub async fn connect_with(url: &str, max_connections: u32) -> StoreResult<SharedStore> {
    let store = open(url, max_connections).await?;
    store.migrate().await?;
    Ok(store.into_shared())
}

/// Opens without migrating (used by `habilis migrate --status`-like tooling and tests).
async fn open(url: &str, max_connections: u32) -> StoreResult<AnySqlStore> {
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // No memory-mapped I/O: a 256 MiB map put up to that much of the file in the
            // process's resident set (issue 19, fault g). Pages go through SQLite's own bounded
            // page cache instead; the OS page cache still serves repeated reads.
            .pragma("mmap_size", "0")
            // Temporary files in memory: above all the statement journal of a multi-row INSERT
            // inside a transaction (the audit writer's), which otherwise spills past 64 KiB to a
            // file created and deleted for each statement (measured: a third of the writer's time
            // went to the file system).
            .pragma("temp_store", "memory");
        restrict_sqlite_files(options.get_filename())?;
        let pool = SqlitePoolOptions::new()
            // One connection: SQLite serialises writers anyway, and in WAL mode each further
            // connection must re-read from the file every page another one changed (measured:
            // 18 reads per refresh with 8 connections), while a single connection keeps its page
            // cache valid. Statements take microseconds, so readers lose little by queueing.
            .max_connections(1)
            // An embedded database has no far end to lose: sqlx's default ping before every
            // acquire would only add a thread hop to each query.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        Ok(AnySqlStore::Sqlite(SqliteStore { pool, writes: tokio::sync::Semaphore::new(1) }))
    } else {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {}", redact(&e.to_string()))))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            // sqlx pings a connection before every acquire by default: one more round trip per
            // query. A connection in steady use is known good; only one that rested is checked.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_BEFORE_PING {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        Ok(AnySqlStore::Postgres(PgStore { pool, writes: tokio::sync::Semaphore::new(max_connections as usize) }))
    }
}

/// The database holds personal data: the file and its `-wal`/`-shm` companions are readable by
/// the owner only, like the master key. The file is created here (empty, mode 0600) before SQLite
/// opens it, and SQLite gives the companions it creates the mode of the main file; files left by
/// an older version (0644) are tightened. In-memory databases have no file.
fn restrict_sqlite_files(path: &std::path::Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path.as_os_str();
    if name.is_empty() || name == ":memory:" || name.to_string_lossy().starts_with("file::memory:") {
        return Ok(());
    }
    let err = |e: std::io::Error| StoreError::Unavailable(format!("database file {}: {e}", path.display()));
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

/// How long a PostgreSQL connection may rest in the pool before it is pinged on acquire (a
/// restarted server or a dropped link then costs no request an error).
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

enum AnySqlStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnySqlStore {
    async fn migrate(&self) -> StoreResult<()> {
        let result = match self {
            AnySqlStore::Sqlite(s) => SQLITE_MIGRATIONS.run(&s.pool).await,
            AnySqlStore::Postgres(s) => POSTGRES_MIGRATIONS.run(&s.pool).await,
        };
        result.map_err(|e| StoreError::Migration(e.to_string()))
    }

    fn into_shared(self) -> SharedStore {
        match self {
            AnySqlStore::Sqlite(s) => Arc::new(s),
            AnySqlStore::Postgres(s) => Arc::new(s),
        }
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(redact(&e.to_string()))
}

/// Maps a write error, turning unique violations into a typed conflict.
fn write_error(entity: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict { entity },
        _ => unavailable(e),
    }
}

/// Removes a password from anything that looks like a URL before it reaches a log.
fn redact(message: &str) -> String {
    match (message.find("://"), message.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &message[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &message[..scheme_end + 3], &credentials[..colon], &message[at..]),
                None => message.to_string(),
            }
        }
        _ => message.to_string(),
    }
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: String,
    kind: String,
    login: String,
    id_nat: Option<String>,
    email: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    status: String,
    locale: Option<String>,
    created_at: i64,
    updated_at: i64,
    last_authenticated_at: Option<i64>,
}

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;
    fn try_from(r: AccountRow) -> StoreResult<Account> {
        Ok(Account {
            kind: AccountKind::parse(&r.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("account {}: kind {}", r.id, r.kind)))?,
            status: AccountStatus::parse(&r.status)
                .ok_or_else(|| StoreError::Corrupt(format!("account {}: status {}", r.id, r.status)))?,
            id: r.id,
            login: r.login,
            id_nat: r.id_nat,
            email: r.email,
            given_name: r.given_name,
            family_name: r.family_name,
            locale: r.locale,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_authenticated_at: r.last_authenticated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    id: String,
    account_id: String,
    kind: String,
    name: Option<String>,
    secret: Vec<u8>,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl From<CredentialRow> for Credential {
    fn from(r: CredentialRow) -> Self {
        Credential {
            id: r.id,
            account_id: r.account_id,
            kind: r.kind,
            name: r.name,
            secret: r.secret,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct InvitationRow {
    token_hash: String,
    account_id: String,
    expires_at: i64,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    client_id: String,
    metadata: String,
    secret_hash: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<ClientRow> for ClientRecord {
    fn from(r: ClientRow) -> Self {
        ClientRecord {
            client_id: r.client_id,
            metadata: r.metadata,
            secret_hash: r.secret_hash,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SigningKeyRow {
    kid: String,
    alg: String,
    public_jwk: String,
    private_sealed: Vec<u8>,
    created_at: i64,
    activates_at: i64,
    retired_at: Option<i64>,
}

impl From<SigningKeyRow> for SigningKeyRecord {
    fn from(r: SigningKeyRow) -> Self {
        SigningKeyRecord {
            kid: r.kid,
            alg: r.alg,
            public_jwk: r.public_jwk,
            private_sealed: r.private_sealed,
            created_at: r.created_at,
            activates_at: r.activates_at,
            retired_at: r.retired_at,
        }
    }
}

/// The account columns, as a literal so queries stay `&'static str` (sqlx refuses dynamic SQL).
macro_rules! account_columns {
    () => {
        "id, kind, login, id_nat, email, given_name, family_name, status, locale, created_at, updated_at, last_authenticated_at"
    };
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: String,
    account_id: String,
    client_id: String,
    session_id: Option<String>,
    scope: String,
    claims: String,
    auth_time: i64,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl From<GrantRow> for Grant {
    fn from(r: GrantRow) -> Self {
        Grant {
            id: r.id,
            account_id: r.account_id,
            client_id: r.client_id,
            session_id: r.session_id,
            scope: r.scope,
            claims: r.claims,
            auth_time: r.auth_time,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    token_hash: String,
    grant_id: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

impl From<RefreshRow> for RefreshToken {
    fn from(r: RefreshRow) -> Self {
        RefreshToken {
            token_hash: r.token_hash,
            grant_id: r.grant_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
            used_at: r.used_at,
        }
    }
}

/// A refresh token with its grant, read in one query on the refresh path.
#[derive(sqlx::FromRow)]
struct RefreshContextRow {
    token_hash: String,
    grant_id: String,
    token_created_at: i64,
    token_expires_at: i64,
    used_at: Option<i64>,
    account_id: String,
    client_id: String,
    session_id: Option<String>,
    scope: String,
    claims: String,
    auth_time: i64,
    grant_created_at: i64,
    grant_expires_at: i64,
    revoked_at: Option<i64>,
    #[sqlx(flatten)]
    account: AccountRow,
}

impl RefreshContextRow {
    fn into_context(self) -> StoreResult<RefreshContext> {
        let r = self;
        let token = RefreshToken {
            token_hash: r.token_hash,
            grant_id: r.grant_id.clone(),
            created_at: r.token_created_at,
            expires_at: r.token_expires_at,
            used_at: r.used_at,
        };
        let grant = Grant {
            id: r.grant_id,
            account_id: r.account_id,
            client_id: r.client_id,
            session_id: r.session_id,
            scope: r.scope,
            claims: r.claims,
            auth_time: r.auth_time,
            created_at: r.grant_created_at,
            expires_at: r.grant_expires_at,
            revoked_at: r.revoked_at,
        };
        Ok(RefreshContext { token, grant, account: r.account.try_into()? })
    }
}

#[derive(sqlx::FromRow)]
struct WebauthnRow {
    credential_id: String,
    account_id: String,
    name: String,
    passkey: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl From<WebauthnRow> for WebauthnCredential {
    fn from(r: WebauthnRow) -> Self {
        WebauthnCredential {
            credential_id: r.credential_id,
            account_id: r.account_id,
            name: r.name,
            passkey: r.passkey,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ConsentRow {
    account_id: String,
    client_id: String,
    scope: String,
    created_at: i64,
    updated_at: i64,
}

impl From<ConsentRow> for Consent {
    fn from(r: ConsentRow) -> Self {
        Consent {
            account_id: r.account_id,
            client_id: r.client_id,
            scope: r.scope,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The atomic spend of a refresh token: only one caller flips `used_at` from NULL. Shared by the
/// plain spend and the rotation, as a literal so queries stay `&'static str`.
macro_rules! spend_refresh_token {
    () => {
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL \
         RETURNING token_hash, grant_id, created_at, expires_at, used_at"
    };
}

/// The grant and account columns of a refresh context (`g` and `a`), after the token's.
macro_rules! refresh_context_columns {
    () => {
        "g.account_id, g.client_id, g.session_id, g.scope, g.claims, g.auth_time, g.created_at AS grant_created_at, \
         g.expires_at AS grant_expires_at, g.revoked_at, \
         a.id, a.kind, a.login, a.id_nat, a.email, a.given_name, a.family_name, a.status, a.locale, a.created_at, \
         a.updated_at, a.last_authenticated_at"
    };
}

macro_rules! grant_columns {
    () => {
        "id, account_id, client_id, session_id, scope, claims, auth_time, created_at, expires_at, revoked_at"
    };
}

// Declared after the column macros above, which it uses (macro_rules are visible in textual order).
mod admin;
mod audit;
mod lifecycle;
mod markers;

/// Implements [`Store`] for one backend. The body is identical for both; only the pool type differs.
macro_rules! sql_store {
    ($store:ident, $pool:ty, $backend:expr) => {
        pub struct $store {
            pool: $pool,
            /// Serialises this instance's writes. SQLite allows one writer at a time and makes the
            /// others sleep in its busy handler (milliseconds each): queueing them here is far
            /// cheaper. PostgreSQL gets as many permits as it has connections.
            writes: tokio::sync::Semaphore,
        }

        impl $store {
            async fn writer(&self) -> StoreResult<tokio::sync::SemaphorePermit<'_>> {
                self.writes.acquire().await.map_err(|_| StoreError::Unavailable("the store is shutting down".into()))
            }

            /// What a spend attempt means: the row it spent, or why it spent nothing.
            async fn spend_outcome(&self, spent: Option<RefreshRow>, token_hash: &str) -> StoreResult<RefreshUse> {
                if let Some(row) = spent {
                    return Ok(RefreshUse::Fresh(row.into()));
                }
                Ok(match self.refresh_token(token_hash).await? {
                    Some(token) => RefreshUse::Reused(token),
                    None => RefreshUse::Unknown,
                })
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            fn habilitations(&self) -> &dyn HabilitationStore {
                self
            }

            fn registrations(&self) -> &dyn RegistrationStore {
                self
            }

            fn admin(&self) -> &dyn AdminStore {
                self
            }

            fn lifecycle(&self) -> &dyn LifecycleStore {
                self
            }

            fn markers(&self) -> &dyn MarkerStore {
                self
            }

            fn audit(&self) -> &dyn AuditStore {
                self
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unavailable)?;
                Ok(())
            }

            async fn insert_account(&self, a: &Account) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(concat!(
                    "INSERT INTO accounts (",
                    account_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ))
                .bind(&a.id)
                .bind(a.kind.as_str())
                .bind(&a.login)
                .bind(&a.id_nat)
                .bind(&a.email)
                .bind(&a.given_name)
                .bind(&a.family_name)
                .bind(a.status.as_str())
                .bind(&a.locale)
                .bind(a.created_at)
                .bind(a.updated_at)
                .bind(a.last_authenticated_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("account"))?;
                Ok(())
            }

            async fn account_by_id(&self, id: &str) -> StoreResult<Option<Account>> {
                sqlx::query_as::<_, AccountRow>(concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?
                    .map(Account::try_from)
                    .transpose()
            }

            async fn account_by_login(&self, login: &str) -> StoreResult<Option<Account>> {
                sqlx::query_as::<_, AccountRow>(concat!("SELECT ", account_columns!(), " FROM accounts WHERE login = $1"))
                    .bind(login)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?
                    .map(Account::try_from)
                    .transpose()
            }

            async fn list_accounts(&self, limit: i64, offset: i64) -> StoreResult<Vec<Account>> {
                sqlx::query_as::<_, AccountRow>(concat!(
                    "SELECT ",
                    account_columns!(),
                    " FROM accounts ORDER BY created_at, id LIMIT $1 OFFSET $2"
                ))
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Account::try_from)
                .collect()
            }

            async fn set_account_status(&self, id: &str, status: AccountStatus, now: UnixTime) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("UPDATE accounts SET status = $1, updated_at = $2 WHERE id = $3")
                    .bind(status.as_str())
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn record_authentication(&self, id: &str, at: UnixTime) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query("UPDATE accounts SET last_authenticated_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn insert_credential(&self, c: &Credential) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO credentials (id, account_id, kind, name, secret, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&c.id)
                .bind(&c.account_id)
                .bind(&c.kind)
                .bind(&c.name)
                .bind(&c.secret)
                .bind(c.created_at)
                .bind(c.last_used_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("credential"))?;
                Ok(())
            }

            async fn credentials_of(&self, account_id: &str, kind: &str) -> StoreResult<Vec<Credential>> {
                Ok(sqlx::query_as::<_, CredentialRow>(
                    "SELECT id, account_id, kind, name, secret, created_at, last_used_at FROM credentials \
                     WHERE account_id = $1 AND kind = $2 ORDER BY created_at, id",
                )
                .bind(account_id)
                .bind(kind)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Credential::from)
                .collect())
            }

            async fn delete_credentials(&self, account_id: &str, kind: &str) -> StoreResult<u64> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM credentials WHERE account_id = $1 AND kind = $2")
                    .bind(account_id)
                    .bind(kind)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected())
            }

            async fn replace_credentials(&self, c: &Credential) -> StoreResult<()> {
                let _writer = self.writer().await?;
                let mut tx = self.pool.begin().await.map_err(unavailable)?;
                sqlx::query("DELETE FROM credentials WHERE account_id = $1 AND kind = $2")
                    .bind(&c.account_id)
                    .bind(&c.kind)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                sqlx::query(
                    "INSERT INTO credentials (id, account_id, kind, name, secret, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&c.id)
                .bind(&c.account_id)
                .bind(&c.kind)
                .bind(&c.name)
                .bind(&c.secret)
                .bind(c.created_at)
                .bind(c.last_used_at)
                .execute(&mut *tx)
                .await
                .map_err(write_error("credential"))?;
                tx.commit().await.map_err(unavailable)
            }

            async fn insert_invitation(&self, i: &Invitation) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query("INSERT INTO invitations (token_hash, account_id, expires_at, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&i.token_hash)
                    .bind(&i.account_id)
                    .bind(i.expires_at)
                    .bind(i.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(write_error("invitation"))?;
                Ok(())
            }

            async fn invitation(&self, token_hash: &str) -> StoreResult<Option<Invitation>> {
                let row = sqlx::query_as::<_, InvitationRow>(
                    "SELECT token_hash, account_id, expires_at, created_at FROM invitations WHERE token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(row.map(|r| Invitation {
                    token_hash: r.token_hash,
                    account_id: r.account_id,
                    expires_at: r.expires_at,
                    created_at: r.created_at,
                }))
            }

            async fn take_invitation(&self, token_hash: &str, now: UnixTime) -> StoreResult<Option<Invitation>> {
                let _writer = self.writer().await?;
                // DELETE … RETURNING is atomic on both backends: two concurrent takers cannot both get a row.
                let row = sqlx::query_as::<_, InvitationRow>(
                    "DELETE FROM invitations WHERE token_hash = $1 RETURNING token_hash, account_id, expires_at, created_at",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(row.filter(|r| r.expires_at > now).map(|r| Invitation {
                    token_hash: r.token_hash,
                    account_id: r.account_id,
                    expires_at: r.expires_at,
                    created_at: r.created_at,
                }))
            }

            async fn upsert_client(&self, c: &ClientRecord) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO clients (client_id, metadata, secret_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (client_id) DO UPDATE SET metadata = excluded.metadata, \
                     secret_hash = excluded.secret_hash, updated_at = excluded.updated_at",
                )
                .bind(&c.client_id)
                .bind(&c.metadata)
                .bind(&c.secret_hash)
                .bind(c.created_at)
                .bind(c.updated_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("client"))?;
                Ok(())
            }

            async fn client_by_id(&self, client_id: &str) -> StoreResult<Option<ClientRecord>> {
                Ok(sqlx::query_as::<_, ClientRow>(
                    "SELECT client_id, metadata, secret_hash, created_at, updated_at FROM clients WHERE client_id = $1",
                )
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(ClientRecord::from))
            }

            async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
                Ok(sqlx::query_as::<_, ClientRow>(
                    "SELECT client_id, metadata, secret_hash, created_at, updated_at FROM clients ORDER BY client_id",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(ClientRecord::from)
                .collect())
            }

            async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn clients_version(&self) -> StoreResult<(i64, UnixTime)> {
                let (count, latest): (i64, Option<i64>) =
                    sqlx::query_as("SELECT COUNT(*), MAX(updated_at) FROM clients")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(unavailable)?;
                Ok((count, latest.unwrap_or(0)))
            }

            async fn insert_signing_key(&self, k: &SigningKeyRecord) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_at, activates_at, retired_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.public_jwk)
                .bind(&k.private_sealed)
                .bind(k.created_at)
                .bind(k.activates_at)
                .bind(k.retired_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("signing key"))?;
                Ok(())
            }

            async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
                Ok(sqlx::query_as::<_, SigningKeyRow>(
                    "SELECT kid, alg, public_jwk, private_sealed, created_at, activates_at, retired_at \
                     FROM signing_keys ORDER BY activates_at, kid",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(SigningKeyRecord::from)
                .collect())
            }

            async fn retire_signing_key(&self, kid: &str, at: UnixTime) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL")
                    .bind(at)
                    .bind(kid)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn purge_signing_keys(&self, retired_before: UnixTime) -> StoreResult<u64> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
                    .bind(retired_before)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected())
            }

            async fn insert_grant(&self, g: &Grant) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(concat!(
                    "INSERT INTO grants (",
                    grant_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
                .bind(&g.id)
                .bind(&g.account_id)
                .bind(&g.client_id)
                .bind(&g.session_id)
                .bind(&g.scope)
                .bind(&g.claims)
                .bind(g.auth_time)
                .bind(g.created_at)
                .bind(g.expires_at)
                .bind(g.revoked_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("grant"))?;
                Ok(())
            }

            async fn grant_by_id(&self, id: &str) -> StoreResult<Option<Grant>> {
                Ok(sqlx::query_as::<_, GrantRow>(concat!("SELECT ", grant_columns!(), " FROM grants WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?
                    .map(Grant::from))
            }

            async fn revoke_grant(&self, id: &str, at: UnixTime) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("UPDATE grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(at)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke_session_grants(&self, session_id: &str, at: UnixTime) -> StoreResult<Vec<Grant>> {
                let _writer = self.writer().await?;
                Ok(sqlx::query_as::<_, GrantRow>(concat!(
                    "UPDATE grants SET revoked_at = $1 WHERE session_id = $2 AND revoked_at IS NULL RETURNING ",
                    grant_columns!()
                ))
                .bind(at)
                .bind(session_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Grant::from)
                .collect())
            }

            async fn insert_refresh_token(&self, t: &RefreshToken) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&t.token_hash)
                .bind(&t.grant_id)
                .bind(t.created_at)
                .bind(t.expires_at)
                .bind(t.used_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("refresh token"))?;
                Ok(())
            }

            async fn use_refresh_token(&self, token_hash: &str, at: UnixTime) -> StoreResult<RefreshUse> {
                let _writer = self.writer().await?;
                let spent = sqlx::query_as::<_, RefreshRow>(spend_refresh_token!())
                    .bind(at)
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                self.spend_outcome(spent, token_hash).await
            }

            async fn rotate_refresh_token(&self, token_hash: &str, at: UnixTime, successor: &RefreshToken) -> StoreResult<RefreshUse> {
                // One hand-off to the database (a thread hop for SQLite, a round trip for
                // PostgreSQL) instead of two: the conditional UPDATE is the atomic spend, and the
                // successor is inserted only when it spent a row — a CTE on PostgreSQL, a second
                // statement guarded by changes() on SQLite (whose writes this instance
                // serialises). A crash between SQLite's two statements only loses the successor:
                // the client logs in again.
                let _writer = self.writer().await?;
                let sql = match $backend {
                    Backend::Sqlite => concat!(
                        spend_refresh_token!(),
                        "; INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at) \
                         SELECT $3, $4, $5, $6 WHERE changes() = 1"
                    ),
                    Backend::Postgres => concat!(
                        "WITH spent AS (",
                        spend_refresh_token!(),
                        "), successor AS (INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at) \
                         SELECT $3, $4, $5, $6 FROM spent) SELECT * FROM spent"
                    ),
                };
                let spent = sqlx::query_as::<_, RefreshRow>(sql)
                    .bind(at)
                    .bind(token_hash)
                    .bind(&successor.token_hash)
                    .bind(&successor.grant_id)
                    .bind(successor.created_at)
                    .bind(successor.expires_at)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(write_error("refresh token"))?;
                self.spend_outcome(spent.into_iter().next(), token_hash).await
            }

            async fn rotate_refresh_token_checked(
                &self,
                token_hash: &str,
                client_id: &str,
                at: UnixTime,
                successor_hash: &str,
                successor_idle_expiry: UnixTime,
            ) -> StoreResult<Option<RefreshContext>> {
                // The spend, the successor and the read of the grant and account in one hand-off
                // (a thread hop for SQLite, a round trip for PostgreSQL): every condition the
                // refresh grant checks before spending is part of the spend itself, so a token
                // that fails one is left untouched for the caller to explain.
                let _writer = self.writer().await?;
                let sql = match $backend {
                    // One transaction (one commit, one set of locks), not one per statement.
                    Backend::Sqlite => concat!(
                        "BEGIN IMMEDIATE; \
                         UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL \
                         AND expires_at > $1 AND EXISTS (SELECT 1 FROM grants g JOIN accounts a ON a.id = g.account_id \
                         WHERE g.id = refresh_tokens.grant_id AND g.client_id = $3 AND g.revoked_at IS NULL \
                         AND g.expires_at > $1 AND a.status = 'active'); \
                         INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at) \
                         SELECT $4, g.id, $1, MIN($5, g.expires_at) FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id \
                         WHERE t.token_hash = $2 AND changes() = 1; \
                         SELECT t.token_hash, t.grant_id, t.created_at AS token_created_at, \
                         t.expires_at AS token_expires_at, t.used_at, ",
                        refresh_context_columns!(),
                        " FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id JOIN accounts a ON a.id = g.account_id \
                         WHERE t.token_hash = $4; COMMIT"
                    ),
                    Backend::Postgres => concat!(
                        "WITH spent AS (UPDATE refresh_tokens t SET used_at = $1 FROM grants g JOIN accounts a ON a.id = g.account_id \
                         WHERE t.token_hash = $2 AND t.used_at IS NULL AND t.expires_at > $1 AND g.id = t.grant_id \
                         AND g.client_id = $3 AND g.revoked_at IS NULL AND g.expires_at > $1 AND a.status = 'active' \
                         RETURNING t.grant_id, LEAST($5, g.expires_at) AS successor_expires_at), \
                         successor AS (INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at) \
                         SELECT $4, grant_id, $1, successor_expires_at FROM spent) \
                         SELECT $4 AS token_hash, s.grant_id, $1 AS token_created_at, \
                         s.successor_expires_at AS token_expires_at, NULL::BIGINT AS used_at, ",
                        refresh_context_columns!(),
                        " FROM spent s JOIN grants g ON g.id = s.grant_id JOIN accounts a ON a.id = g.account_id"
                    ),
                };
                let mut connection = self.pool.acquire().await.map_err(unavailable)?;
                let rows = sqlx::query_as::<_, RefreshContextRow>(sql)
                    .bind(at)
                    .bind(token_hash)
                    .bind(client_id)
                    .bind(successor_hash)
                    .bind(successor_idle_expiry)
                    .fetch_all(&mut *connection)
                    .await;
                if rows.is_err() && $backend == Backend::Sqlite {
                    // A statement failed between BEGIN and COMMIT: the pooled connection must not
                    // stay inside that transaction. (Nothing to do if it was never opened.)
                    let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                }
                let rows = rows.map_err(write_error("refresh token"))?;
                rows.into_iter().next().map(RefreshContextRow::into_context).transpose()
            }

            async fn refresh_context(&self, token_hash: &str) -> StoreResult<Option<RefreshContext>> {
                let row = sqlx::query_as::<_, RefreshContextRow>(concat!(
                    "SELECT t.token_hash, t.grant_id, t.created_at AS token_created_at, t.expires_at AS token_expires_at, \
                     t.used_at, ",
                    refresh_context_columns!(),
                    " FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id JOIN accounts a ON a.id = g.account_id \
                     WHERE t.token_hash = $1"
                ))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
                row.map(RefreshContextRow::into_context).transpose()
            }

            async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>> {
                Ok(sqlx::query_as::<_, RefreshRow>(
                    "SELECT token_hash, grant_id, created_at, expires_at, used_at FROM refresh_tokens WHERE token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(RefreshToken::from))
            }

            async fn consent(&self, account_id: &str, client_id: &str) -> StoreResult<Option<Consent>> {
                Ok(sqlx::query_as::<_, ConsentRow>(
                    "SELECT account_id, client_id, scope, created_at, updated_at FROM consents WHERE account_id = $1 AND client_id = $2",
                )
                .bind(account_id)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(Consent::from))
            }

            async fn upsert_consent(&self, c: &Consent) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO consents (account_id, client_id, scope, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (account_id, client_id) DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at",
                )
                .bind(&c.account_id)
                .bind(&c.client_id)
                .bind(&c.scope)
                .bind(c.created_at)
                .bind(c.updated_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("consent"))?;
                Ok(())
            }

            async fn insert_webauthn_credential(&self, c: &WebauthnCredential) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO webauthn_credentials (credential_id, account_id, name, passkey, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&c.credential_id)
                .bind(&c.account_id)
                .bind(&c.name)
                .bind(&c.passkey)
                .bind(c.created_at)
                .bind(c.last_used_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("WebAuthn credential"))?;
                Ok(())
            }

            async fn webauthn_credentials_of(&self, account_id: &str) -> StoreResult<Vec<WebauthnCredential>> {
                Ok(sqlx::query_as::<_, WebauthnRow>(
                    "SELECT credential_id, account_id, name, passkey, created_at, last_used_at FROM webauthn_credentials \
                     WHERE account_id = $1 ORDER BY created_at, credential_id",
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(WebauthnCredential::from)
                .collect())
            }

            async fn webauthn_credential(&self, credential_id: &str) -> StoreResult<Option<WebauthnCredential>> {
                Ok(sqlx::query_as::<_, WebauthnRow>(
                    "SELECT credential_id, account_id, name, passkey, created_at, last_used_at FROM webauthn_credentials \
                     WHERE credential_id = $1",
                )
                .bind(credential_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(WebauthnCredential::from))
            }

            async fn record_webauthn_use(&self, credential_id: &str, passkey: &str, at: UnixTime) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "UPDATE webauthn_credentials SET passkey = $1, last_used_at = $2 WHERE credential_id = $3",
                )
                .bind(passkey)
                .bind(at)
                .bind(credential_id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn rename_webauthn_credential(&self, account_id: &str, credential_id: &str, name: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "UPDATE webauthn_credentials SET name = $1 WHERE account_id = $2 AND credential_id = $3",
                )
                .bind(name)
                .bind(account_id)
                .bind(credential_id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_webauthn_credential(&self, account_id: &str, credential_id: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM webauthn_credentials WHERE account_id = $1 AND credential_id = $2")
                    .bind(account_id)
                    .bind(credential_id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn consents_of(&self, account_id: &str) -> StoreResult<Vec<Consent>> {
                Ok(sqlx::query_as::<_, ConsentRow>(
                    "SELECT account_id, client_id, scope, created_at, updated_at FROM consents WHERE account_id = $1 ORDER BY client_id",
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Consent::from)
                .collect())
            }

            async fn delete_consent(&self, account_id: &str, client_id: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM consents WHERE account_id = $1 AND client_id = $2")
                    .bind(account_id)
                    .bind(client_id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

sql_store!(SqliteStore, SqlitePool, Backend::Sqlite);
sql_store!(PgStore, PgPool, Backend::Postgres);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("error connecting to postgres://u:secret@h/db"), "error connecting to postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("plain message"), "plain message");
    }
}

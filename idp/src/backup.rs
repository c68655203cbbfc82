//! `habilis backup` and `habilis restore`: a consistent copy of the durable store, and its way back.
//!
//! - Embedded SQLite: an online backup (`VACUUM INTO`, which reads one consistent snapshot while
//!   the server keeps serving), checked (`integrity_check`) before it is called done. A restore
//!   checks the file the same way, refuses one made by a newer Habilis, keeps the database it
//!   replaces beside it, and swaps the file in with a rename (never a half-written database).
//! - PostgreSQL: `pg_dump --format=custom` of Habilis's schema and `pg_restore --clean`, run with
//!   the configured URL (its password passed through `PGPASSWORD`, never on a command line).
//!
//! The master key is not in the database and so not in a backup: the stored signing keys and TOTP
//! secrets are sealed under it. It must be backed up apart (README, "Backups").
//!
//! Backups are a storage concern that cannot hide behind the `Store` seam (a file copy, an external
//! tool), which is why this module knows the backends.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists: choose another file, or pass --force to overwrite it")]
    OutputExists(PathBuf),
    #[error("{0} does not exist or cannot be read")]
    InputMissing(PathBuf),
    #[error("{path} is not a usable Habilis backup: {reason}")]
    NotABackup { path: PathBuf, reason: String },
    #[error(
        "{path} was made by a newer Habilis (schema version {found}, this one knows up to {known}): restore it with that version or newer"
    )]
    NewerSchema { path: PathBuf, found: i64, known: i64 },
    #[error(
        "the database {0} looks in use ({0}-wal exists): stop Habilis before restoring. If it crashed, start and stop it once (or pass --force)"
    )]
    DatabaseInUse(PathBuf),
    #[error(
        "the database {0} exists: restoring replaces it (it is kept as a .pre-restore copy). Pass --force to go ahead"
    )]
    WouldReplace(String),
    #[error(
        "`{tool}` is needed for a PostgreSQL {what} and was not found: install the PostgreSQL client tools (Debian: apt-get install postgresql-client), or follow README \"Backups\" by hand"
    )]
    ToolMissing { tool: &'static str, what: &'static str },
    #[error("`{tool}` failed ({status}): {stderr}")]
    ToolFailed { tool: &'static str, status: String, stderr: String },
    #[error("database error: {0}")]
    Database(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

fn database(e: impl std::fmt::Display) -> BackupError {
    BackupError::Database(e.to_string())
}

/// What a backup or a restore holds: the row count of each table.
#[derive(Debug, Default)]
pub struct Summary {
    pub tables: Vec<(String, i64)>,
    pub bytes: u64,
}

impl Summary {
    /// The rows of `table`, if it exists.
    pub fn rows(&self, table: &str) -> Option<i64> {
        self.tables.iter().find(|(name, _)| name == table).map(|(_, rows)| *rows)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let interesting = ["accounts", "clients", "relationships", "habilitation_profiles", "audit_records"];
        let shown: Vec<String> =
            interesting.iter().filter_map(|table| self.rows(table).map(|rows| format!("{table} {rows}"))).collect();
        write!(f, "{} tables", self.tables.len())?;
        if !shown.is_empty() {
            write!(f, " ({})", shown.join(", "))?;
        }
        if self.bytes > 0 {
            write!(f, ", {:.1} MiB", self.bytes as f64 / (1024.0 * 1024.0))?;
        }
        Ok(())
    }
}

/// Where the configured database lives.
enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

fn target(config: &Config) -> Result<Target, BackupError> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(&url).map_err(database)?;
        Ok(Target::Sqlite(options.get_filename().to_path_buf()))
    } else {
        Ok(Target::Postgres(url))
    }
}

/// Writes a backup of the configured database to `output`.
pub async fn backup(config: &Config, output: &Path, force: bool) -> Result<Summary, BackupError> {
    if output.exists() && !force {
        return Err(BackupError::OutputExists(output.to_path_buf()));
    }
    match target(config)? {
        Target::Sqlite(database_file) => backup_sqlite(config, &database_file, output).await,
        Target::Postgres(url) => backup_postgres(&url, output).await,
    }
}

/// Replaces the configured database by the backup in `input`.
pub async fn restore(config: &Config, input: &Path, force: bool) -> Result<Summary, BackupError> {
    if std::fs::metadata(input).is_err() {
        return Err(BackupError::InputMissing(input.to_path_buf()));
    }
    match target(config)? {
        Target::Sqlite(database_file) => restore_sqlite(&database_file, input, force).await,
        Target::Postgres(url) => restore_postgres(&url, input, force).await,
    }
}

async fn backup_sqlite(config: &Config, database_file: &Path, output: &Path) -> Result<Summary, BackupError> {
    // Opening through the store applies pending migrations, so a backup always has the schema of
    // the Habilis that made it, and an absent database is created rather than reported as missing.
    crate::app::ensure_data_dir(config).map_err(|e| BackupError::Database(e.to_string()))?;
    drop(crate::store::connect(config).await.map_err(database)?);
    if output.exists() {
        std::fs::remove_file(output).map_err(io(format!("removing the old {}", output.display())))?;
    }
    // `VACUUM INTO` writes next to the target then we rename, so a crash leaves no half backup.
    let partial = sibling(output, "partial");
    let _ = std::fs::remove_file(&partial);
    let mut connection = open_sqlite(database_file, false).await?;
    let spinner = spinner(format!("backing up {}", database_file.display()));
    let vacuum = sqlx::query("VACUUM INTO ?").bind(partial.display().to_string()).execute(&mut connection).await;
    spinner.finish_and_clear();
    vacuum.map_err(database)?;
    connection.close().await.map_err(database)?;
    let summary = check_sqlite(&partial).await?;
    sync_file(&partial)?;
    std::fs::rename(&partial, output).map_err(io(format!("renaming the backup to {}", output.display())))?;
    restrict_permissions(output)?;
    Ok(summary)
}

async fn restore_sqlite(database_file: &Path, input: &Path, force: bool) -> Result<Summary, BackupError> {
    let summary = check_sqlite(input).await?;
    let wal = suffixed(database_file, "-wal");
    if database_file.exists() {
        if wal.exists() && !force {
            return Err(BackupError::DatabaseInUse(database_file.to_path_buf()));
        }
        if !force {
            return Err(BackupError::WouldReplace(database_file.display().to_string()));
        }
    }
    if let Some(parent) = database_file.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    let incoming = sibling(database_file, "restoring");
    std::fs::copy(input, &incoming).map_err(io(format!("copying {} into place", input.display())))?;
    sync_file(&incoming)?;
    if database_file.exists() {
        let kept = sibling(database_file, &format!("pre-restore-{}", crate::unix_now()));
        std::fs::rename(database_file, &kept)
            .map_err(io(format!("keeping the current database as {}", kept.display())))?;
        eprintln!("the database it replaces is kept as {}", kept.display());
    }
    // The old database's journal must not be replayed onto the restored file.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(suffixed(database_file, suffix));
    }
    std::fs::rename(&incoming, database_file)
        .map_err(io(format!("moving the restored database to {}", database_file.display())))?;
    restrict_permissions(database_file)?;
    Ok(summary)
}

/// Checks that `path` is a sound SQLite database made by this Habilis or an older one, and counts
/// its rows.
async fn check_sqlite(path: &Path) -> Result<Summary, BackupError> {
    let not_a_backup = |reason: String| BackupError::NotABackup { path: path.to_path_buf(), reason };
    let mut connection = open_sqlite(path, true).await.map_err(|e| not_a_backup(e.to_string()))?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut connection)
        .await
        .map_err(|e| not_a_backup(format!("not an SQLite database ({e})")))?;
    if integrity != "ok" {
        return Err(not_a_backup(format!("integrity check failed: {integrity}")));
    }
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut connection)
        .await
        .map_err(|_| not_a_backup("it holds no Habilis schema".into()))?;
    let version = version.ok_or_else(|| not_a_backup("it holds no Habilis schema".into()))?;
    let known = latest_sqlite_migration();
    if version > known {
        return Err(BackupError::NewerSchema { path: path.to_path_buf(), found: version, known });
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name NOT LIKE '\\_sqlx\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut connection)
    .await
    .map_err(database)?;
    let mut summary = Summary { bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0), ..Default::default() };
    for name in names {
        // The names come from the file's own catalogue; quoted as identifiers all the same.
        let sql = format!("SELECT COUNT(*) FROM \"{}\"", name.replace('"', "\"\""));
        let rows: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut connection).await.map_err(database)?;
        summary.tables.push((name, rows));
    }
    connection.close().await.map_err(database)?;
    Ok(summary)
}

fn latest_sqlite_migration() -> i64 {
    static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

async fn open_sqlite(path: &Path, read_only: bool) -> Result<SqliteConnection, BackupError> {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(database)
}

async fn backup_postgres(url: &str, output: &Path) -> Result<Summary, BackupError> {
    let connection = PostgresTarget::parse(url)?;
    let schema = connection.current_schema(url).await?;
    let partial = sibling(output, "partial");
    let spinner = spinner(format!("pg_dump of schema {schema}"));
    let result = connection
        .run(
            "pg_dump",
            "backup",
            &["--format=custom", "--no-owner", "--no-privileges", "--schema", &schema, "--file"],
            &[partial.as_os_str()],
        )
        .await;
    spinner.finish_and_clear();
    result?;
    sync_file(&partial)?;
    std::fs::rename(&partial, output).map_err(io(format!("renaming the backup to {}", output.display())))?;
    restrict_permissions(output)?;
    Ok(Summary { bytes: std::fs::metadata(output).map(|m| m.len()).unwrap_or(0), ..Default::default() })
}

async fn restore_postgres(url: &str, input: &Path, force: bool) -> Result<Summary, BackupError> {
    let connection = PostgresTarget::parse(url)?;
    let schema = connection.current_schema(url).await?;
    if !force && connection.schema_has_tables(url, &schema).await? {
        return Err(BackupError::WouldReplace(format!("schema {schema} of {}", connection.display)));
    }
    let spinner = spinner(format!("pg_restore into schema {schema}"));
    let result = connection
        .run(
            "pg_restore",
            "restore",
            &["--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error"],
            &[input.as_os_str()],
        )
        .await;
    spinner.finish_and_clear();
    result?;
    Ok(Summary { bytes: std::fs::metadata(input).map(|m| m.len()).unwrap_or(0), ..Default::default() })
}

/// The PostgreSQL URL as the client tools take it: the password moved to `PGPASSWORD`.
struct PostgresTarget {
    url_without_password: String,
    password: Option<String>,
    display: String,
}

impl PostgresTarget {
    fn parse(url: &str) -> Result<PostgresTarget, BackupError> {
        let mut parsed =
            url::Url::parse(url).map_err(|e| BackupError::Database(format!("invalid PostgreSQL URL: {e}")))?;
        let password =
            parsed.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
        let _ = parsed.set_password(None);
        let display = format!("{}{}", parsed.host_str().unwrap_or("localhost"), parsed.path());
        Ok(PostgresTarget { url_without_password: parsed.to_string(), password, display })
    }

    /// The schema Habilis's tables live in (`public` unless the URL sets a `search_path`).
    async fn current_schema(&self, url: &str) -> Result<String, BackupError> {
        let mut connection = sqlx::PgConnection::connect(url).await.map_err(database)?;
        let schema: Option<String> =
            sqlx::query_scalar("SELECT current_schema()").fetch_one(&mut connection).await.map_err(database)?;
        let _ = connection.close().await;
        schema.ok_or_else(|| BackupError::Database("the connection has no current schema".into()))
    }

    async fn schema_has_tables(&self, url: &str, schema: &str) -> Result<bool, BackupError> {
        let mut connection = sqlx::PgConnection::connect(url).await.map_err(database)?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = $1")
            .bind(schema)
            .fetch_one(&mut connection)
            .await
            .map_err(database)?;
        let _ = connection.close().await;
        Ok(count > 0)
    }

    async fn run(
        &self,
        tool: &'static str,
        what: &'static str,
        flags: &[&str],
        paths: &[&std::ffi::OsStr],
    ) -> Result<(), BackupError> {
        let mut command = tokio::process::Command::new(tool);
        command.args(flags).args(paths).arg("--dbname").arg(&self.url_without_password);
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        let output = match command.output().await {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BackupError::ToolMissing { tool, what }),
            Err(e) => return Err(io(format!("running {tool}"))(e)),
        };
        if !output.status.success() {
            return Err(BackupError::ToolFailed {
                tool,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

/// A ticking spinner on stderr while one long step runs (hidden when stderr is not a terminal).
fn spinner(message: String) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::new_spinner().with_message(message);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

/// `path` with `.suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    suffixed(path, &format!(".{suffix}"))
}

/// `path` with `suffix` appended as is (`habilis.db` → `habilis.db-wal`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn sync_file(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io(format!("syncing {}", path.display())))
}

/// A backup holds every account: readable by its owner only.
fn restrict_permissions(path: &Path) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("restricting the permissions of {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url_for_the_environment() {
        let target = PostgresTarget::parse("postgres://habilis:s%40cret@db.internal:5432/habilis?sslmode=require")
            .expect("a valid URL");
        assert_eq!(target.password.as_deref(), Some("s@cret"));
        assert!(!target.url_without_password.contains("cret"), "{}", target.url_without_password);
        assert!(target.url_without_password.contains("sslmode=require"));
        assert_eq!(target.display, "db.internal/habilis");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "not a database at all, but long enough to have a header").unwrap();
        let error = check_sqlite(&path).await.expect_err("refused");
        assert!(matches!(error, BackupError::NotABackup { .. }), "{error}");
    }

    #[tokio::test]
    async fn an_sqlite_round_trip_keeps_rows_and_refuses_to_overwrite_silently() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().join("data"), ..Default::default() };
        let output = dir.path().join("habilis.backup");
        let summary = backup(&config, &output, false).await.expect("a backup");
        assert!(summary.rows("accounts").is_some(), "{summary}");
        assert!(matches!(backup(&config, &output, false).await, Err(BackupError::OutputExists(_))));
        // The database exists: a restore must be asked for explicitly.
        assert!(matches!(
            restore(&config, &output, false).await,
            Err(BackupError::WouldReplace(_) | BackupError::DatabaseInUse(_))
        ));
        restore(&config, &output, true).await.expect("a forced restore");
        let kept: Vec<_> = std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("pre-restore"))
            .collect();
        assert_eq!(kept.len(), 1, "the replaced database is kept");
    }
}

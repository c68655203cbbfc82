//! The `habilis` command line: argument definitions and what each command does. `main.rs` only maps
//! the outcome to an exit code (0 success, 1 failure, 2 configuration or usage error).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sha2::Digest;

use crate::config::{Config, ConfigError, SigningAlg};
use crate::ids::IdNat;
use crate::store::{Account, AccountKind, AccountStatus, Credential, Invitation};
use crate::unix_now;

#[derive(Parser, Debug)]
#[command(
    name = "habilis",
    version,
    about = "Habilis: a strong-authentication OpenID Connect provider for French health professionals",
    long_about = "Habilis: a strong-authentication OpenID Connect provider for French health professionals.\n\n\
        With no configuration, `habilis serve` runs the embedded mode: a SQLite database, generated keys and a \
        mail outbox under ./habilis-data, ephemeral data in memory, listening on 127.0.0.1:8080.\n\
        Configuration: a TOML file (--config, see habilis.example.toml) and HABILIS_<SECTION>__<KEY> variables."
)]
pub struct Cli {
    /// Configuration file (TOML). Environment variables HABILIS_<SECTION>__<KEY> override it.
    #[arg(long, short = 'c', global = true, env = "HABILIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded mode (SQLite database, master key, mail outbox).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (applies pending migrations first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage signing keys: list, rotate, retire.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage OIDC clients (relying applications): import RFC 7591 metadata, list, show, remove,
    /// rotate secrets, issue initial access tokens for dynamic registration (registration-token).
    /// Changes reach running servers within a second.
    #[command(subcommand)]
    Client(crate::clients::cli::ClientCommand),
    /// Manage habilitation profiles (Cedar-validated): put FILE, list, show, remove.
    #[command(subcommand)]
    Profile(crate::habilitation::cli::ProfileCommand),
    /// Import data: professionals' practice data from a CSV file.
    #[command(subcommand)]
    Import(crate::habilitation::cli::ImportCommand),
    /// Administration roles: grant, revoke, list (platform_admin, org_admin of one organisation,
    /// auditor).
    #[command(subcommand)]
    Admin(crate::admin::cli::AdminCommand),
    /// Inactive accounts (CNIL rule): `lifecycle run [--dry-run] [--now RFC3339]` warns accounts
    /// nearing lifecycle.inactive_after and deletes those past it, once (the server does it every
    /// lifecycle.run_every).
    #[command(subcommand)]
    Lifecycle(crate::lifecycle::cli::LifecycleCommand),
    /// A person's data: `person export ID|LOGIN` (everything held on them, as JSON) and
    /// `person erase ID|LOGIN` (deletion, audit records pseudonymised).
    #[command(subcommand)]
    Person(crate::person::cli::PersonCommand),
    /// The tamper-evident audit log: `audit verify [--archive FILE]` checks the hash chain and its
    /// signed checkpoints (naming the first bad record), `audit export --since WHEN` writes JSON
    /// lines, `audit purge --archive FILE [--before WHEN]` archives then deletes old records.
    #[command(subcommand)]
    Audit(crate::audit::cli::AuditCommand),
    /// Back up the database to FILE: an online, consistent copy of the embedded SQLite database
    /// (the server may keep running), or `pg_dump --format=custom` of Habilis's schema on
    /// PostgreSQL. The master key is not in it: keep a copy of the master key apart.
    Backup {
        /// The backup file to write (mode 0600).
        file: PathBuf,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Restore the database from a backup made by `habilis backup`, after checking it. Stop
    /// Habilis first. On SQLite the replaced database is kept beside it (`.pre-restore-<time>`).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace an existing database (required when there is one).
        #[arg(long)]
        force: bool,
    },
    /// Generate a TEST PKI for CPS card login: a root, a "PERSONNES"-like intermediate, card
    /// certificates with the real subject layout (valid, staff, revoked, expired, wrong usage, no
    /// idNat, unknown CA) as PEM and PKCS#12 (password `habilis`), an organisation certificate
    /// for RFC 8705 clients, the card listener's server certificate and a CRL. Never for real cards.
    DevPki {
        /// Directory to write (created; refused when it holds something other than a dev PKI).
        dir: std::path::PathBuf,
        /// Host names or IP addresses of the card listener's certificate (repeatable).
        #[arg(long = "server-name", default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string()])]
        server_names: Vec<String>,
        /// URL where the CRL will be published, written into the cards' CRL distribution point.
        #[arg(long)]
        crl_url: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 (env HABILIS_SERVER__LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Public issuer URL; https unless the host is loopback (env HABILIS_SERVER__ISSUER).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a configuration file (and the environment) without starting anything.
    Check {
        /// The file to check; defaults to --config.
        file: Option<PathBuf>,
    },
    /// Print the effective configuration, secrets hidden.
    Show,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List signing keys and their state.
    List,
    /// Create a new key: published now, signing after keys.activation_delay.
    Rotate {
        /// Algorithm of the new key.
        #[arg(long, value_enum, default_value_t = AlgArg::ES256)]
        alg: AlgArg,
        /// Start signing with it immediately (only when no relying party caches the JWKS, e.g. tests).
        #[arg(long)]
        activate_now: bool,
    },
    /// Stop signing with a key; it stays published until the tokens it signed have expired.
    Retire { kid: String },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
#[allow(clippy::upper_case_acronyms)]
pub enum AlgArg {
    #[value(name = "ES256")]
    ES256,
    #[value(name = "RS256")]
    RS256,
    #[value(name = "EdDSA")]
    EdDSA,
}

impl From<AlgArg> for SigningAlg {
    fn from(a: AlgArg) -> Self {
        match a {
            AlgArg::ES256 => SigningAlg::ES256,
            AlgArg::RS256 => SigningAlg::RS256,
            AlgArg::EdDSA => SigningAlg::EdDSA,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account. Without --password-stdin an invitation link is printed: the person sets
    /// their own password and second factor; passwords are never taken on the command line.
    Add(UserAddArgs),
    /// List the consents an account gave to third-party applications.
    Consents {
        /// The account's login (idNat, email…).
        login: String,
    },
    /// List an account's security keys and passkeys.
    Passkeys {
        /// The account's login (idNat, email…).
        login: String,
    },
    /// Revoke one of an account's security keys or passkeys (a lost or stolen key).
    RevokePasskey {
        login: String,
        /// The credential id shown by `habilis user passkeys`.
        credential_id: String,
    },
    /// Approve an account created from a CPS card (card.unknown_id_nat = "pending"): it becomes
    /// active and the card logs in.
    Approve {
        /// The account's login (the idNat).
        login: String,
    },
    /// Withdraw an account's consent to an application: it will ask again at the next login.
    RevokeConsent { login: String, client_id: String },
    /// Lift the lockout of an account's password and code steps (after repeated failures) and
    /// forget its failure counts. Takes effect on running servers too; audited.
    Unlock {
        /// The account's login (idNat, email…).
        login: String,
    },
    /// List accounts.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Professional,
    Patient,
    Administrator,
}

#[derive(Args, Debug)]
pub struct UserAddArgs {
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// National id of a professional: 8 + RPPS (Luhn-checked) or 0 + ADELI. It is their login.
    #[arg(long, value_name = "IDNAT")]
    pub id_nat: Option<String>,
    /// Login of a patient or administrator (defaults to --email).
    #[arg(long)]
    pub login: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long)]
    pub given_name: Option<String>,
    #[arg(long)]
    pub family_name: Option<String>,
    /// Preferred language (fr or en).
    #[arg(long)]
    pub locale: Option<String>,
    /// Read the initial password from standard input (one line) instead of sending an invitation.
    #[arg(long)]
    pub password_stdin: bool,
}

/// What went wrong in a command, split by exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// Loads the configuration, with command-line flags as the strongest layer (they go through the
/// same validation as everything else, so errors name the same keys).
pub fn load_config(
    cli: &Cli,
    file_override: Option<&PathBuf>,
    extra: Vec<(String, String)>,
) -> Result<Config, ConfigError> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(dir) = &cli.data_dir {
        env.push(("HABILIS_DATA_DIR".into(), dir.display().to_string()));
    }
    env.extend(extra);
    Config::load(file_override.or(cli.config.as_ref()).map(|p| p.as_path()), env)
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Serve(args) => {
            let mut extra = Vec::new();
            if let Some(listen) = &args.listen {
                extra.push(("HABILIS_SERVER__LISTEN".to_string(), listen.clone()));
            }
            if let Some(issuer) = &args.issuer {
                extra.push(("HABILIS_SERVER__ISSUER".to_string(), issuer.clone()));
            }
            let config = load_config(&cli, None, extra)?;
            serve(config).await
        }
        Command::Migrate => {
            let config = load_config(&cli, None, Vec::new())?;
            crate::app::ensure_data_dir(&config).map_err(failed)?;
            let store = crate::store::connect(&config).await.map_err(failed)?;
            println!("migrations applied ({} database)", store.backend().as_str());
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = load_config(&cli, file.as_ref(), Vec::new())?;
            // The same refusals as `serve`, not only the syntax.
            crate::cps::service::check(&config).map_err(failed)?;
            for warning in config.warnings() {
                println!("warning: {warning}");
            }
            println!("configuration is valid (issuer {})", config.issuer_string());
            Ok(())
        }
        Command::Config(ConfigCommand::Show) => {
            let mut config = load_config(&cli, None, Vec::new())?;
            if config.keys.master_key.is_some() {
                config.keys.master_key = Some("(hidden)".into());
            }
            if let Some(url) = &config.storage.database_url {
                config.storage.database_url = Some(redact_url(url));
            }
            if let Some(url) = &config.storage.redis_url {
                config.storage.redis_url = Some(redact_url(url));
            }
            if let Some(url) = &config.mail.smtp_url {
                config.mail.smtp_url = url::Url::parse(&redact_url(url.as_str())).ok();
            }
            print!("{}", toml::to_string_pretty(&config).map_err(failed)?);
            Ok(())
        }
        Command::Keys(command) => {
            let config = load_config(&cli, None, Vec::new())?;
            keys_command(config, command).await
        }
        Command::User(command) => {
            let config = load_config(&cli, None, Vec::new())?;
            user_command(config, command).await
        }
        Command::Backup { file, force } => {
            let config = load_config(&cli, None, Vec::new())?;
            let summary = crate::backup::backup(&config, file, *force).await.map_err(failed)?;
            println!("backup written to {}: {summary}", file.display());
            println!("Keep the master key apart from it: the backup is useless without it, and unsafe beside it.");
            Ok(())
        }
        Command::Restore { file, force } => {
            let config = load_config(&cli, None, Vec::new())?;
            let summary = crate::backup::restore(&config, file, *force).await.map_err(failed)?;
            // Opening applies the migrations of this version to a backup made by an older one.
            let store = crate::store::connect(&config).await.map_err(failed)?;
            println!("restored from {} ({} database): {summary}", file.display(), store.backend().as_str());
            Ok(())
        }
        Command::DevPki { dir, server_names, crl_url } => {
            let summary = crate::cps::devpki::generate(dir, server_names, crl_url.as_deref())
                .map_err(|e| CliError::Failed(format!("{e:#}")))?;
            println!("test PKI written to {} (TEST ONLY: never trust it for real cards)", summary.dir.display());
            for (file, description) in &summary.files {
                println!("  {file:<28} {description}");
            }
            println!(
                "Use it with card.mode = \"on\", card.trust_anchors = [\"{}/trust-bundle.pem\"], card.crl_sources = [\"{}/crl.der\"],\n\
                 card.tls_certificate / card.tls_key = server.pem / server.key.pem (card.mode = \"demo\" does all this by itself).",
                summary.dir.display(),
                summary.dir.display()
            );
            Ok(())
        }
        Command::Client(command) => {
            let config = load_config(&cli, None, Vec::new())?;
            crate::app::ensure_data_dir(&config).map_err(failed)?;
            let store = crate::store::connect(&config).await.map_err(failed)?;
            crate::clients::cli::run(&config, store, command).await.map_err(CliError::Failed)
        }
        Command::Profile(command) => {
            let config = load_config(&cli, None, Vec::new())?;
            crate::app::ensure_data_dir(&config).map_err(failed)?;
            let store = crate::store::connect(&config).await.map_err(failed)?;
            crate::habilitation::cli::profile_command(&config, store, command).await.map_err(CliError::Failed)
        }
        Command::Import(command) => {
            let config = load_config(&cli, None, Vec::new())?;
            crate::app::ensure_data_dir(&config).map_err(failed)?;
            let store = crate::store::connect(&config).await.map_err(failed)?;
            crate::habilitation::cli::import_command(store, command).await.map_err(CliError::Failed)
        }
        Command::Admin(command) => {
            let config = load_config(&cli, None, Vec::new())?;
            crate::app::ensure_data_dir(&config).map_err(failed)?;
            let store = crate::store::connect(&config).await.map_err(failed)?;
            // Role changes are audited in the durable log, flushed before exiting.
            let audit = crate::audit::cli::cli_audit(&config, &store);
            let result = crate::admin::cli::run(store, &audit, command).await.map_err(CliError::Failed);
            audit.shutdown().await;
            result
        }
        Command::Lifecycle(command) => {
            let config = load_config(&cli, None, Vec::new())?;
            crate::lifecycle::cli::run(config, command).await.map_err(CliError::Failed)
        }
        Command::Person(command) => {
            let config = load_config(&cli, None, Vec::new())?;
            crate::person::cli::run(config, command).await.map_err(CliError::Failed)
        }
        Command::Audit(command) => {
            let config = load_config(&cli, None, Vec::new())?;
            crate::audit::cli::run(config, command).await.map_err(CliError::Failed)
        }
    }
}

fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => raw.to_string(),
    }
}

async fn serve(config: Config) -> Result<(), CliError> {
    crate::telemetry::init_logging(&config.log);
    let started = std::time::Instant::now();
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let mut config = config;
    let requested = config.server.listen;
    let listener = tokio::net::TcpListener::bind(requested)
        .await
        .map_err(|source| failed(crate::app::StartError::Listen { addr: requested, source }))?;
    // `--listen 127.0.0.1:0` picks a free port: use the one bound (and derive the issuer from it).
    let listen = listener.local_addr().map_err(failed)?;
    config.server.listen = listen;
    let state = crate::app::build_state(config).await.map_err(failed)?;
    if state.config.admin_console.enabled {
        match crate::console::register_client(&state).await {
            Ok(()) => tracing::info!(url = %crate::console::public_url(&state), "admin console at this address"),
            Err(e) => tracing::error!(error = %e, "the admin console's client could not be registered"),
        }
    }
    // Signal handlers are registered before the banner announces the server as ready.
    let shutdown = crate::app::shutdown_signal();
    let issuer = state.issuer_string();
    tracing::info!(
        issuer = %issuer,
        database = state.store.backend().as_str(),
        ephemeral = state.ephemeral.kind(),
        ready_in_ms = started.elapsed().as_millis() as u64,
        "Habilis is ready"
    );
    let mail = state.mailer.describe();
    println!(
        "Habilis is ready on {listen}\n  issuer:      {issuer}\n  discovery:   {issuer}/.well-known/openid-configuration\n  \
         jwks:        {issuer}/jwks\n  health:      {issuer}/readyz   metrics: {issuer}/metrics\n  data:        {}\n  mail:        {mail}",
        state.config.data_dir.display()
    );
    if let Some(card) = &state.card {
        println!("  card login:  {}{} (from the login page)", card.public_url, crate::cps::login::CARD_PATH);
        if let Some(dir) = &card.demo_pki {
            println!(
                "  test cards:  {}/cards/*.p12 (password `habilis`): import one in the browser, and trust {}/root-ca.pem",
                dir.display(),
                dir.display()
            );
        }
    }
    if state.config.admin_console.enabled {
        println!(
            "  admin:       {} (for accounts with an administration role, e.g. `habilis user add --kind administrator`)",
            crate::console::public_url(&state)
        );
    }
    println!("Point an OpenID Connect client at the discovery URL; create accounts with `habilis user add --help`.");
    let _ = std::io::stdout().flush();
    crate::app::serve(state, listener, shutdown).await.map_err(failed)?;
    tracing::info!("stopped");
    Ok(())
}

async fn keys_command(config: Config, command: &KeysCommand) -> Result<(), CliError> {
    crate::app::ensure_data_dir(&config).map_err(failed)?;
    let store = crate::store::connect(&config).await.map_err(failed)?;
    let now = unix_now();
    let retention = config.longest_signed_token_lifetime();
    match command {
        KeysCommand::List => {
            let records = store.list_signing_keys().await.map_err(failed)?;
            if records.is_empty() {
                println!("no signing keys yet: they are generated when `habilis serve` first starts");
                return Ok(());
            }
            println!("{:<45} {:<6} {:<18} {:<20} {:<20}", "KID", "ALG", "STATE", "SIGNS FROM", "RETIRED");
            for status in crate::keys::describe(&records, now, retention) {
                println!(
                    "{:<45} {:<6} {:<18} {:<20} {:<20}",
                    status.kid,
                    status.alg,
                    status.state.as_str(),
                    format_time(status.activates_at),
                    status.retired_at.map(format_time).unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        KeysCommand::Rotate { alg, activate_now } => {
            let has_keys = !store.list_signing_keys().await.map_err(failed)?.is_empty();
            let (master, _) = crate::keys::MasterKey::load_or_create(&config, has_keys).map_err(failed)?;
            let activates_at = if *activate_now { now } else { now + config.keys.activation_delay.as_secs() as i64 };
            let record =
                crate::keys::rotate(store.as_ref(), &master, (*alg).into(), activates_at, now).await.map_err(failed)?;
            println!(
                "new {} key {} published now; it signs from {} (running servers pick it up within {})",
                record.alg,
                record.kid,
                format_time(record.activates_at),
                humantime::format_duration(config.keys.reload_interval)
            );
            Ok(())
        }
        KeysCommand::Retire { kid } => {
            crate::keys::retire(store.as_ref(), kid, now, &config.keys.algorithms).await.map_err(failed)?;
            println!(
                "key {kid} no longer signs; it stays in the JWKS until {} so the tokens it signed still verify",
                format_time(now + retention.as_secs() as i64)
            );
            Ok(())
        }
    }
}

fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

async fn user_command(config: Config, command: &UserCommand) -> Result<(), CliError> {
    crate::app::ensure_data_dir(&config).map_err(failed)?;
    let store = crate::store::connect(&config).await.map_err(failed)?;
    match command {
        UserCommand::List { limit, offset } => {
            let accounts = store.list_accounts(*limit, *offset).await.map_err(failed)?;
            println!("{:<36} {:<13} {:<30} {:<9} NAME", "ID", "KIND", "LOGIN", "STATUS");
            for a in accounts {
                let name = [a.given_name.as_deref(), a.family_name.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                println!("{:<36} {:<13} {:<30} {:<9} {name}", a.id, a.kind.as_str(), a.login, a.status.as_str());
            }
            Ok(())
        }
        UserCommand::Add(args) => add_user(&config, &store, args).await,
        UserCommand::Consents { login } => {
            let account = find_account(&store, login).await?;
            let consents = store.consents_of(&account.id).await.map_err(failed)?;
            if consents.is_empty() {
                println!("{} has given no consent", account.login);
            }
            for c in consents {
                println!("{:<30} {:<40} since {}", c.client_id, c.scope, format_time(c.updated_at));
            }
            Ok(())
        }
        UserCommand::Passkeys { login } => {
            let account = find_account(&store, login).await?;
            let keys = store.webauthn_credentials_of(&account.id).await.map_err(failed)?;
            if keys.is_empty() {
                println!("{} has no security key or passkey", account.login);
            }
            for key in keys {
                let used = key.last_used_at.map(format_time).unwrap_or_else(|| "never".into());
                println!(
                    "{:<45} {:<30} added {}  last used {used}",
                    key.credential_id,
                    key.name,
                    format_time(key.created_at)
                );
            }
            Ok(())
        }
        UserCommand::RevokePasskey { login, credential_id } => {
            let account = find_account(&store, login).await?;
            if !store.delete_webauthn_credential(&account.id, credential_id).await.map_err(failed)? {
                return Err(CliError::Failed(format!(
                    "{} has no key {credential_id}; see `habilis user passkeys {}`",
                    account.login, account.login
                )));
            }
            let audit = crate::audit::cli::cli_audit(&config, &store);
            audit.record(
                crate::audit::AuditEvent::WebauthnRevoked {
                    account_id: account.id.clone(),
                    credential_id: credential_id.clone(),
                    by: "administrator (cli)".into(),
                },
                Default::default(),
            );
            audit.shutdown().await;
            println!("key {credential_id} of {} revoked", account.login);
            Ok(())
        }
        UserCommand::Approve { login } => {
            let account = find_account(&store, login).await?;
            let requests =
                store.credentials_of(&account.id, crate::cps::login::APPROVAL_REQUEST).await.map_err(failed)?;
            if requests.is_empty() {
                return Err(CliError::Failed(format!(
                    "{} is not waiting for approval (status {}); see `habilis user list`",
                    account.login,
                    account.status.as_str()
                )));
            }
            let now = crate::unix_now();
            store.set_account_status(&account.id, crate::store::AccountStatus::Active, now).await.map_err(failed)?;
            store.delete_credentials(&account.id, crate::cps::login::APPROVAL_REQUEST).await.map_err(failed)?;
            println!("{} approved: the account is active", account.login);
            Ok(())
        }
        UserCommand::Unlock { login } => unlock_user(&config, &store, login).await,
        UserCommand::RevokeConsent { login, client_id } => {
            let account = find_account(&store, login).await?;
            if store.delete_consent(&account.id, client_id).await.map_err(failed)? {
                let audit = crate::audit::cli::cli_audit(&config, &store);
                audit.record(
                    crate::audit::AuditEvent::ConsentWithdrawn {
                        account_id: account.id.clone(),
                        client_id: client_id.clone(),
                        actor: "cli".into(),
                    },
                    crate::audit::AuditContext { client_id: Some(client_id.clone()), ..Default::default() },
                );
                audit.shutdown().await;
                println!("consent of {} to {client_id} withdrawn", account.login);
                Ok(())
            } else {
                Err(CliError::Failed(format!(
                    "{} has no consent for {client_id}; see `habilis user consents {login}`",
                    account.login
                )))
            }
        }
    }
}

async fn add_user(config: &Config, store: &crate::store::SharedStore, args: &UserAddArgs) -> Result<(), CliError> {
    let kind = match args.kind {
        KindArg::Professional => AccountKind::Professional,
        KindArg::Patient => AccountKind::Patient,
        KindArg::Administrator => AccountKind::Administrator,
    };
    let email = match &args.email {
        Some(e) if !looks_like_email(e) => {
            return Err(CliError::Usage(format!("--email `{e}` is not an email address")));
        }
        Some(e) => Some(e.trim().to_ascii_lowercase()),
        None => None,
    };
    let (login, id_nat) = match kind {
        AccountKind::Professional => {
            let raw = args
                .id_nat
                .as_deref()
                .ok_or_else(|| CliError::Usage("a professional needs --id-nat (8 + RPPS, or 0 + ADELI)".into()))?;
            let id = IdNat::parse(raw).map_err(|e| CliError::Usage(format!("--id-nat {raw}: {e}")))?;
            (id.as_str().to_string(), Some(id.as_str().to_string()))
        }
        _ => {
            if args.id_nat.is_some() {
                return Err(CliError::Usage("--id-nat is for professionals only".into()));
            }
            let login = args.login.clone().or_else(|| email.clone()).ok_or_else(|| {
                CliError::Usage("give --login or --email: it is what the person types to log in".into())
            })?;
            (login.trim().to_ascii_lowercase(), None)
        }
    };
    if login.is_empty() || login.len() > 254 {
        return Err(CliError::Usage("the login must have between 1 and 254 characters".into()));
    }
    if let Some(locale) = &args.locale
        && locale != "fr"
        && locale != "en"
    {
        return Err(CliError::Usage("--locale must be fr or en".into()));
    }
    let password_hash = if args.password_stdin {
        let password = read_password_line()?;
        let hasher = crate::authn::password::PasswordHasher::new(&config.password).map_err(failed)?;
        Some(hasher.hash(password).await.map_err(|e| CliError::Usage(e.to_string()))?)
    } else {
        None
    };
    let now = unix_now();
    let account = Account {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        login: login.clone(),
        id_nat,
        email,
        given_name: args.given_name.clone(),
        family_name: args.family_name.clone(),
        status: if password_hash.is_some() { AccountStatus::Active } else { AccountStatus::Invited },
        locale: args.locale.clone(),
        created_at: now,
        updated_at: now,
        last_authenticated_at: None,
    };
    store.insert_account(&account).await.map_err(|e| match e {
        crate::store::StoreError::Conflict { .. } => {
            CliError::Failed(format!("an account with login {login} already exists"))
        }
        other => failed(other),
    })?;
    if let Some(hash) = password_hash {
        store.insert_credential(&Credential::password(&account.id, hash, now)).await.map_err(failed)?;
        println!("created {} account {} (login {login}) with the given password", kind.as_str(), account.id);
    } else {
        let token = random_token();
        let expires_at = now + config.tokens.invitation_lifetime.as_secs() as i64;
        store
            .insert_invitation(&Invitation {
                token_hash: sha256_hex(&token),
                account_id: account.id.clone(),
                expires_at,
                created_at: now,
            })
            .await
            .map_err(failed)?;
        println!(
            "created {} account {} (login {login}), waiting for its owner.\nSend this single-use invitation link (valid until {}):\n{}/invitation?token={token}",
            kind.as_str(),
            account.id,
            format_time(expires_at),
            config.issuer_string()
        );
    }
    Ok(())
}

/// `habilis user unlock LOGIN`: through the same durable markers as the server (the database is
/// the authority for locks, so a server on the in-memory store sees the unlock at its next check).
async fn unlock_user(config: &Config, store: &crate::store::SharedStore, login: &str) -> Result<(), CliError> {
    let account = find_account(store, login).await?;
    let ephemeral = crate::ephemeral::connect(
        config.storage.redis_url.as_deref(),
        &config.storage.redis_prefix,
        config.storage.memory_max_entries,
    )
    .await
    .map_err(failed)?;
    let markers = crate::ephemeral::DurableMarkers::new(ephemeral, store.clone());
    let now = crate::unix_now();
    let was = crate::authn::lockout::unlock(&markers, &account.login, now).await.map_err(failed)?;
    let audit = crate::audit::cli::cli_audit(config, store);
    audit.record(
        crate::audit::AuditEvent::AccountChanged {
            account_id: account.id.clone(),
            actor: "cli".into(),
            change: "unlocked".into(),
            before: Some(serde_json::json!({ "locked_until": was }).to_string()),
            after: Some(serde_json::json!({ "locked_until": null }).to_string()),
        },
        Default::default(),
    );
    audit.shutdown().await;
    match was {
        Some(until) => println!("{} unlocked (it was locked until {})", account.login, format_time(until)),
        None => println!("{} was not locked; its failure counts are reset", account.login),
    }
    Ok(())
}

async fn find_account(store: &crate::store::SharedStore, login: &str) -> Result<Account, CliError> {
    let normalised = crate::authn::login::normalise_login(login);
    store
        .account_by_login(&normalised)
        .await
        .map_err(failed)?
        .ok_or_else(|| CliError::Failed(format!("no account with login {normalised}; see `habilis user list`")))
}

fn read_password_line() -> Result<zeroize::Zeroizing<String>, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (input is shown; prefer piping it): ");
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    stdin.lock().read_line(&mut line).map_err(failed)?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
    if trimmed.is_empty() {
        return Err(CliError::Usage("--password-stdin: no password on standard input".into()));
    }
    Ok(trimmed)
}

/// A plausible email address (the mail relay has the last word).
pub fn looks_like_email(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// 256 bits from the OS generator, base64url: unguessable single-use tokens.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn sha256_hex(value: &str) -> String {
    hex::encode(sha2::Sha256::digest(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn email_shape() {
        assert!(looks_like_email("a@b.fr"));
        assert!(!looks_like_email("a@b"));
        assert!(!looks_like_email("@b.fr"));
        assert!(!looks_like_email("a b@c.fr"));
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}

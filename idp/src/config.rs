//! One typed configuration. Sources, later ones winning: built-in defaults (the embedded mode), an
//! optional TOML file, then environment variables `HABILIS_<SECTION>__<KEY>` (top-level keys:
//! `HABILIS_<KEY>`). Unknown keys are rejected and every value is validated before anything starts,
//! with an error that names the key. The reference is `habilis.example.toml`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// A configuration problem: which key, and why. The CLI exits with code 2 on these.
#[derive(Debug, thiserror::Error)]
#[error("configuration error at `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError { key: key.into(), reason: reason.into() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded mode keeps its SQLite database, master key, mail outbox.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub mail: MailConfig,
    pub keys: KeysConfig,
    pub tokens: TokensConfig,
    pub session: SessionConfig,
    pub oidc: OidcConfig,
    pub login: LoginConfig,
    pub password: PasswordConfig,
    pub card: CardConfig,
    pub webauthn: WebauthnConfig,
    pub habilitation: HabilitationConfig,
    pub registration: RegistrationConfig,
    pub admin: AdminConfig,
    pub admin_console: AdminConsoleConfig,
    pub lifecycle: LifecycleConfig,
    pub audit: AuditConfig,
    pub alerts: AlertsConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Public base URL; defaults to `http://<listen>`. Must be https unless its host is loopback.
    pub issuer: Option<Url>,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://…` or `postgres://…`; defaults to `sqlite://<data_dir>/habilis.db`.
    pub database_url: Option<String>,
    pub max_connections: u32,
    /// `redis://…`; when absent the ephemeral store is in memory (single instance only).
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub memory_max_entries: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// `smtps://host:465` (implicit TLS) or `smtp://host:587` (STARTTLS required; `?tls=opportunistic`,
    /// or `?tls=none` on loopback hosts only); credentials as `user:password@`. Absent = outbox folder.
    pub smtp_url: Option<Url>,
    pub from: String,
    /// Defaults to `<data_dir>/outbox`.
    pub outbox_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    ES256,
    RS256,
    EdDSA,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::ES256 => "ES256",
            SigningAlg::RS256 => "RS256",
            SigningAlg::EdDSA => "EdDSA",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(SigningAlg::ES256),
            "RS256" => Some(SigningAlg::RS256),
            "EdDSA" => Some(SigningAlg::EdDSA),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Base64 of 32 random bytes. Prefer `master_key_file` or the env variable `HABILIS_KEYS__MASTER_KEY`.
    pub master_key: Option<String>,
    /// Defaults to `<data_dir>/master.key`, created (mode 0600) on first start.
    pub master_key_file: Option<PathBuf>,
    /// Algorithms with a signing key; the JWKS publishes one key (or more during rotation) per algorithm.
    pub algorithms: Vec<SigningAlg>,
    pub default_algorithm: SigningAlg,
    /// A rotated key is published this long before it starts signing, so relying parties' JWKS caches see it.
    #[serde(with = "humantime_serde")]
    pub activation_delay: Duration,
    /// How often every instance re-reads the key set (rotation done by the CLI takes effect within this).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// `Cache-Control: max-age` of the JWKS.
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    #[serde(with = "humantime_serde")]
    pub access_token_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub id_token_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub authorization_code_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_token_idle_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_token_absolute_lifetime: Duration,
    #[serde(with = "humantime_serde")]
    pub invitation_lifetime: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// The lowest assurance level any login may end at: `eidas1` (two factors), `eidas2`, `eidas3`,
    /// or `none` (a password alone suffices — for tests and demonstrations only; warned at start).
    pub minimum_acr: String,
    /// Failed attempts (any factor) before an account is locked.
    pub max_failures: u32,
    /// How long a lockout lasts; it ends by itself.
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    /// Failed attempts allowed from one client address in `lockout`, across accounts.
    pub max_failures_per_address: u32,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            minimum_acr: "eidas1".into(),
            max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            max_failures_per_address: 100,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// Require every client to use pushed authorization requests (RFC 9126), not only those that
    /// registered `require_pushed_authorization_requests`.
    pub require_pushed_authorization_requests: bool,
    /// Lifetime of a `request_uri` returned by the PAR endpoint.
    #[serde(with = "humantime_serde")]
    pub par_lifetime: Duration,
    /// How often a back-channel logout is attempted before giving up.
    pub backchannel_logout_attempts: u32,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            require_pushed_authorization_requests: false,
            par_lifetime: Duration::from_secs(60),
            backchannel_logout_attempts: 3,
        }
    }
}

/// Dynamic client registration (RFC 7591 `POST /register`, RFC 7592 `/register/{client_id}`).
/// Registration always needs an initial access token issued by an administrator
/// (`habilis client registration-token issue`): there is no open registration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Serve the registration endpoints and advertise `registration_endpoint` in discovery.
    pub enabled: bool,
    /// Scopes a self-registered client may ask for; a registration without `scope` gets all of
    /// them. Privileged scopes (e.g. `relationships`) stay with clients an administrator imports.
    pub allowed_scopes: Vec<String>,
    /// Refused tokens (initial or registration access tokens) from one client address before the
    /// address is locked out of the registration endpoints for `lockout`.
    pub max_failures_per_address: u32,
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            enabled: true,
            allowed_scopes: ["openid", "profile", "email", "phone", "offline_access"].map(String::from).to_vec(),
            max_failures_per_address: 20,
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

/// The admin REST API's scopes (`admin`, `audit`) at the authorization endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The weakest login after which a browser gets an `admin` or `audit` token: `eidas1`, `eidas2`
    /// (default: a security key or passkey) or `eidas3`. A weaker session steps up first.
    pub minimum_acr: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { minimum_acr: "eidas2".into() }
    }
}

/// The admin console (crate `habilis-admin`) that `habilis serve` mounts at `/admin`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConsoleConfig {
    /// Mount the console at `<issuer>/admin`.
    pub enabled: bool,
    /// Its client at Habilis: registered (or updated) at every start with the redirect URI
    /// `<issuer>/admin/callback`, the scopes `openid profile admin audit` and a secret derived
    /// from the master key (so every instance sharing the master key agrees on it).
    pub client_id: String,
}

impl Default for AdminConsoleConfig {
    fn default() -> Self {
        AdminConsoleConfig { enabled: true, client_id: "habilis-admin".into() }
    }
}

/// Inactive accounts (CNIL rule for secure health messaging): an account without authentication for
/// `inactive_after` (at most one year) is deleted, after a warning by mail `warn_before` the
/// deletion (and a reminder `remind_before` it) carrying a "keep my account" link. See
/// `crate::lifecycle`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Run the job in `habilis serve` (`habilis lifecycle run` works either way).
    pub enabled: bool,
    /// Inactivity after which an account is deleted; at most one year.
    #[serde(with = "humantime_serde")]
    pub inactive_after: Duration,
    /// How long before the deletion the warning goes out.
    #[serde(with = "humantime_serde")]
    pub warn_before: Duration,
    /// A reminder this long before the deletion (absent: no reminder); shorter than `warn_before`.
    #[serde(with = "humantime_serde")]
    pub remind_before: Option<Duration>,
    /// How often the job runs (on one instance at a time).
    #[serde(with = "humantime_serde")]
    pub run_every: Duration,
    /// Longest validity of a "keep my account" link (absent: until the announced deletion date,
    /// which always ends it).
    #[serde(with = "humantime_serde")]
    pub keep_link_validity: Option<Duration>,
}

/// The CNIL rule: at most one year without authentication.
pub const MAX_INACTIVITY: Duration = Duration::from_secs(365 * 24 * 3600);

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            enabled: true,
            inactive_after: MAX_INACTIVITY,
            warn_before: Duration::from_secs(30 * 24 * 3600),
            remind_before: Some(Duration::from_secs(7 * 24 * 3600)),
            run_every: Duration::from_secs(3600),
            keep_link_validity: None,
        }
    }
}

impl LifecycleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.inactive_after > MAX_INACTIVITY {
            return Err(ConfigError::new(
                "lifecycle.inactive_after",
                "must be at most 365 days: the CNIL rule deletes accounts after at most one year without authentication",
            ));
        }
        if self.inactive_after < Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("lifecycle.inactive_after", "must be at least one day"));
        }
        if self.warn_before.is_zero() || self.warn_before >= self.inactive_after {
            return Err(ConfigError::new(
                "lifecycle.warn_before",
                "must be greater than zero and shorter than lifecycle.inactive_after",
            ));
        }
        if let Some(remind) = self.remind_before
            && (remind.is_zero() || remind >= self.warn_before)
        {
            return Err(ConfigError::new(
                "lifecycle.remind_before",
                "must be greater than zero and shorter than lifecycle.warn_before (remove it for no reminder)",
            ));
        }
        if self.run_every < Duration::from_secs(60) || self.run_every > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("lifecycle.run_every", "must be between 1 minute and 1 day"));
        }
        if self.keep_link_validity.is_some_and(|v| v < Duration::from_secs(3600)) {
            return Err(ConfigError::new("lifecycle.keep_link_validity", "must be at least one hour"));
        }
        Ok(())
    }
}

/// The durable audit log (see `crate::audit`): batching of its writer, signed checkpoints, and
/// the retention `habilis audit purge` applies by default.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Write events to the hash-chained log in the database. `false` keeps only the
    /// `habilis::audit` log lines: for benchmarking, never in production.
    pub durable: bool,
    /// Most records per database transaction.
    pub batch_size: usize,
    /// Longest a record waits in the queue before its batch is written.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// How often a signed checkpoint is written (when the log grew), and at shutdown.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Longest a token response waits for its audit record to commit (group commit); past it the
    /// request gets `503 temporarily_unavailable` and the record is written when the database is back.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// How long records are kept: `habilis audit purge` archives and deletes older ones when no
    /// `--before` is given. Absent: records are kept until purged explicitly.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            durable: true,
            batch_size: 512,
            flush_interval: Duration::from_millis(20),
            checkpoint_interval: Duration::from_secs(60),
            commit_timeout: Duration::from_secs(5),
            retention: None,
        }
    }
}

impl AuditConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(ConfigError::new("audit.batch_size", "must be between 1 and 10000"));
        }
        if self.flush_interval.is_zero() || self.flush_interval > Duration::from_secs(10) {
            return Err(ConfigError::new("audit.flush_interval", "must be between 1ms and 10s"));
        }
        if self.checkpoint_interval < Duration::from_secs(1) || self.checkpoint_interval > Duration::from_secs(86_400) {
            return Err(ConfigError::new("audit.checkpoint_interval", "must be between 1s and 1 day"));
        }
        if self.commit_timeout < Duration::from_millis(100) || self.commit_timeout > Duration::from_secs(60) {
            return Err(ConfigError::new("audit.commit_timeout", "must be between 100ms and 60s"));
        }
        if self.retention.is_some_and(|r| r < Duration::from_secs(86_400)) {
            return Err(ConfigError::new("audit.retention", "must be at least one day (remove it to keep everything)"));
        }
        Ok(())
    }
}

/// Security alerts evaluated in the server over sliding windows of audit events (see
/// `crate::alerts`), delivered by webhook and/or email. A threshold of 0 turns its rule off.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Evaluate the rules in `habilis serve`.
    pub enabled: bool,
    /// `failed_login_spike`: this many failed logins (any account, any address) within
    /// `failed_login_window`.
    pub failed_login_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub failed_login_window: Duration,
    /// `address_failing_many_accounts`: one address failing for this many distinct accounts within
    /// `address_window`.
    pub address_accounts_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub address_window: Duration,
    /// `forged_proxy_header`: alert on any client-certificate header from an untrusted address.
    pub forged_proxy_header: bool,
    /// `revocation_list_stale`: a CRL in use issued longer ago than this (checked every
    /// `revocation_check_interval`). Keep it below `card.crl_max_staleness`, where card logins stop.
    #[serde(with = "humantime_serde")]
    pub revocation_list_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub revocation_check_interval: Duration,
    /// A rule (per address for the per-address rule, per source for CRLs) fires at most once per
    /// cooldown.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Where alerts are POSTed as JSON (`{rule, severity, summary, details, time, instance}`).
    pub webhook_url: Option<Url>,
    /// Signs each webhook body: header `X-Habilis-Signature: sha256=<hex HMAC-SHA256>`. Prefer the
    /// env variable `HABILIS_ALERTS__WEBHOOK_SECRET`.
    pub webhook_secret: Option<String>,
    /// Timeout of one webhook attempt.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Further attempts after a failed one (waiting 1s, 2s, 4s… in between).
    pub webhook_retries: u32,
    /// Addresses that receive each alert by email (through the `[mail]` settings).
    pub email_to: Vec<String>,
    /// The `instance` of the alerts (default: the host name).
    pub instance: Option<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            failed_login_threshold: 50,
            failed_login_window: Duration::from_secs(5 * 60),
            address_accounts_threshold: 10,
            address_window: Duration::from_secs(10 * 60),
            forged_proxy_header: true,
            revocation_list_max_age: Duration::from_secs(24 * 3600),
            revocation_check_interval: Duration::from_secs(5 * 60),
            cooldown: Duration::from_secs(15 * 60),
            webhook_url: None,
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(5),
            webhook_retries: 3,
            email_to: Vec::new(),
            instance: None,
        }
    }
}

impl AlertsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let day = Duration::from_secs(24 * 3600);
        for (key, window) in [
            ("alerts.failed_login_window", self.failed_login_window),
            ("alerts.address_window", self.address_window),
            ("alerts.cooldown", self.cooldown),
        ] {
            if window < Duration::from_secs(1) || window > day {
                return Err(ConfigError::new(key, "must be between 1s and 1 day"));
            }
        }
        if self.revocation_check_interval < Duration::from_secs(1) || self.revocation_check_interval > day {
            return Err(ConfigError::new("alerts.revocation_check_interval", "must be between 1s and 1 day"));
        }
        if self.revocation_list_max_age < Duration::from_secs(1) {
            return Err(ConfigError::new("alerts.revocation_list_max_age", "must be at least 1s"));
        }
        if let Some(url) = &self.webhook_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(ConfigError::new("alerts.webhook_url", "must be an http or https URL"));
        }
        if self.webhook_secret.as_deref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::new("alerts.webhook_secret", "must be at least 16 characters"));
        }
        if self.webhook_timeout < Duration::from_millis(100) || self.webhook_timeout > Duration::from_secs(60) {
            return Err(ConfigError::new("alerts.webhook_timeout", "must be between 100ms and 60s"));
        }
        if self.webhook_retries > 10 {
            return Err(ConfigError::new("alerts.webhook_retries", "must be at most 10"));
        }
        for (i, address) in self.email_to.iter().enumerate() {
            if address.parse::<lettre::Address>().is_err() {
                return Err(ConfigError::new(format!("alerts.email_to[{i}]"), "must be an email address"));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A browser session unused for this long ends (Pro Santé Connect: 30 min).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A browser session ends this long after its login, however active (Pro Santé Connect: 4 h).
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// How long a login page (an interaction) may stay open once its first form was posted.
    #[serde(with = "humantime_serde")]
    pub interaction_lifetime: Duration,
    /// How long a login page nobody has answered yet is kept: anonymous state, bounded by
    /// `[limits]`. The first form posted extends it to `interaction_lifetime`.
    #[serde(with = "humantime_serde")]
    pub unanswered_interaction_lifetime: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(4 * 3600),
            interaction_lifetime: Duration::from_secs(30 * 60),
            unanswered_interaction_lifetime: Duration::from_secs(10 * 60),
        }
    }
}

/// Bounds on what anonymous requests may make the server store (login pages, pushed requests,
/// passkey challenges, password-reset requests): see `oidc::admission`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The window the counts below are kept over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// New anonymous entries per window from one client address (IPv6: one /64). Generous by
    /// default: a hospital's professionals often share one address. 0: no per-address limit.
    pub anonymous_per_address: u32,
    /// New anonymous entries per window for one client (`client_id`). 0: no per-client limit.
    pub anonymous_per_client: u32,
    /// The most anonymous entries ever alive at once, all senders together. Once this window's
    /// share is used, new anonymous work is refused (503) while sessions and logins already under
    /// way carry on.
    pub anonymous_entries: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            window: Duration::from_secs(60),
            anonymous_per_address: 300,
            anonymous_per_client: 6000,
            anonymous_entries: 50_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// argon2id memory cost in KiB (OWASP: 19456 with 2 iterations).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub min_length: usize,
}

/// Which authenticators may be registered as security keys or passkeys.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttestationMode {
    /// Any authenticator (no attestation asked).
    None,
    /// Only models listed in `webauthn.allowed_authenticators`, proven by their attestation.
    Required,
}

/// An authenticator model allowed when attestation is required: its AAGUID and the vendor's
/// attestation root certificate (PEM or DER).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowedAuthenticator {
    pub aaguid: String,
    pub ca: PathBuf,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    pub attestation: AttestationMode,
    pub allowed_authenticators: Vec<AllowedAuthenticator>,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        WebauthnConfig { attestation: AttestationMode::None, allowed_authenticators: Vec::new() }
    }
}

/// Habilitations: relationship kinds apps may create, and where the Cedar policies come from.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HabilitationConfig {
    /// The relationship kinds apps may create and profiles may cover (an extensible list).
    pub relationship_kinds: Vec<String>,
    /// A folder with `schema.cedarschema`, `profile.cedar` and `base.cedar` replacing the embedded
    /// policies (absent: the ones built into the binary, from the repository's `policies/`).
    pub policies_dir: Option<PathBuf>,
    /// Longest validity of a relationship created through the API (absent: no limit).
    #[serde(with = "humantime_serde")]
    pub max_relationship_duration: Option<Duration>,
}

impl Default for HabilitationConfig {
    fn default() -> Self {
        HabilitationConfig {
            relationship_kinds: [
                "second_opinion_expert",
                "coordinating_doctor",
                "treating",
                "care_team",
                "teleconsultation",
            ]
            .into_iter()
            .map(str::to_string)
            .collect(),
            policies_dir: None,
            max_relationship_duration: None,
        }
    }
}

/// Whether CPS card login runs, and on which trust anchors.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CardMode {
    /// `demo` for the embedded mode (a loopback http issuer), `off` otherwise.
    Auto,
    Off,
    /// Card login on the configured trust anchors (`card.trust_anchors`).
    On,
    /// Card login on a test PKI generated in `<data_dir>/dev-pki` (see `habilis dev-pki`).
    Demo,
}

/// What happens when a valid card's idNat matches no account.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnknownIdNat {
    /// The login is refused; an administrator must create the account first.
    Refuse,
    /// An account is created from the certificate, disabled until an administrator approves it.
    Pending,
    /// An active account is created from the certificate.
    Provision,
}

/// Whether a card whose revocation status cannot be established (no CRL, or a stale one) may log in.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationSetting {
    /// Refuse (fail closed): the default, and the only safe choice.
    Enforce,
    /// Let the login through, logged and audited on every use. An emergency switch only.
    FailOpen,
}

/// How a TLS-terminating reverse proxy forwards the client certificate.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProxyHeaderFormat {
    /// nginx `$ssl_client_escaped_cert`: the URL-encoded PEM of the leaf.
    Nginx,
    /// Envoy `x-forwarded-client-cert`: `Cert="<url-encoded PEM>"` (and `Chain=`) elements.
    Xfcc,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardConfig {
    pub mode: CardMode,
    /// Direct mode: address of the TLS listener that asks for an (optional) client certificate.
    /// Its routes are the card login and the RFC 8705 mTLS aliases of the token endpoints.
    pub listen: Option<SocketAddr>,
    /// The URL browsers open for card login (the card listener, or the proxy host that asks for
    /// the certificate). Default: `https://<issuer host>:<listen port>`.
    pub public_url: Option<Url>,
    /// Server certificate chain and private key (PEM) of the card listener.
    pub tls_certificate: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// IGC-Santé roots and intermediates: PEM, DER or PKCS#7 bundles.
    pub trust_anchors: Vec<PathBuf>,
    /// Accept test trust anchors (IGC-Santé TEST chains, `habilis dev-pki`) with an https issuer.
    pub allow_test_anchors: bool,
    /// Key usages every card certificate must carry (RFC 5280 names).
    pub key_usage: Vec<String>,
    /// Extended key usages every card certificate must carry (`clientAuth` or dotted OIDs).
    pub extended_key_usage: Vec<String>,
    /// Certificate policy OIDs, one of which a card must carry; empty = not checked.
    pub policies: Vec<String>,
    /// CRL sources (http(s) URLs or files), besides the distribution points of the cards seen.
    pub crl_sources: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub crl_refresh_interval: Duration,
    /// A CRL issued longer ago than this is stale: card logins then fail closed.
    #[serde(with = "humantime_serde")]
    pub crl_max_staleness: Duration,
    pub revocation: RevocationSetting,
    pub unknown_id_nat: UnknownIdNat,
    /// Proxy mode: the request header carrying the client certificate (e.g. `x-ssl-client-cert`).
    pub proxy_header: Option<String>,
    pub proxy_header_format: ProxyHeaderFormat,
    /// Addresses or CIDRs of the proxies allowed to send `proxy_header`; from anyone else it is
    /// ignored, logged and audited as a forgery attempt.
    pub trusted_proxies: Vec<String>,
}

impl Default for CardConfig {
    fn default() -> Self {
        CardConfig {
            mode: CardMode::Auto,
            listen: None,
            public_url: None,
            tls_certificate: None,
            tls_key: None,
            trust_anchors: Vec::new(),
            allow_test_anchors: false,
            key_usage: vec!["digitalSignature".into()],
            extended_key_usage: vec!["clientAuth".into()],
            policies: Vec::new(),
            crl_sources: Vec::new(),
            crl_refresh_interval: Duration::from_secs(3600),
            crl_max_staleness: Duration::from_secs(48 * 3600),
            revocation: RevocationSetting::Enforce,
            unknown_id_nat: UnknownIdNat::Refuse,
            proxy_header: None,
            proxy_header_format: ProxyHeaderFormat::Nginx,
            trusted_proxies: Vec::new(),
        }
    }
}

impl CardConfig {
    /// The CIDRs of `trusted_proxies` (validated by `Config::validate`).
    pub fn trusted_proxy_nets(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies.iter().filter_map(|s| parse_net(s).ok()).collect()
    }
}

/// `10.0.0.0/8`, `127.0.0.1` (a single address) or `::1`.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    s.parse::<IpAddr>().map(ipnet::IpNet::from).map_err(|_| format!("`{s}` is neither an address nor a CIDR"))
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directives; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./habilis-data"),
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            mail: MailConfig::default(),
            keys: KeysConfig::default(),
            tokens: TokensConfig::default(),
            session: SessionConfig::default(),
            oidc: OidcConfig::default(),
            login: LoginConfig::default(),
            password: PasswordConfig::default(),
            card: CardConfig::default(),
            webauthn: WebauthnConfig::default(),
            habilitation: HabilitationConfig::default(),
            registration: RegistrationConfig::default(),
            admin: AdminConfig::default(),
            admin_console: AdminConsoleConfig::default(),
            lifecycle: LifecycleConfig::default(),
            audit: AuditConfig::default(),
            alerts: AlertsConfig::default(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            issuer: None,
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            database_url: None,
            max_connections: 10,
            redis_url: None,
            redis_prefix: "habilis:".into(),
            memory_max_entries: 200_000,
        }
    }
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig { smtp_url: None, from: "Habilis <no-reply@localhost>".into(), outbox_dir: None }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            master_key: None,
            master_key_file: None,
            algorithms: vec![SigningAlg::ES256, SigningAlg::RS256],
            default_algorithm: SigningAlg::ES256,
            activation_delay: Duration::from_secs(600),
            reload_interval: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(300),
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            access_token_lifetime: Duration::from_secs(300),
            id_token_lifetime: Duration::from_secs(300),
            authorization_code_lifetime: Duration::from_secs(60),
            refresh_token_idle_lifetime: Duration::from_secs(30 * 60),
            refresh_token_absolute_lifetime: Duration::from_secs(10 * 3600),
            invitation_lifetime: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig { argon2_memory_kib: 19_456, argon2_iterations: 2, argon2_parallelism: 1, min_length: 12 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

/// Environment variables that configure Habilis start with this prefix.
pub const ENV_PREFIX: &str = "HABILIS_";

/// Names of `HABILIS_*` variables that belong to the CLI rather than the config file.
const NON_CONFIG_ENV: &[&str] = &["HABILIS_CONFIG"];

impl Config {
    /// Loads defaults ← file ← the given environment, then validates.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut root = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(path.display().to_string(), format!("cannot read the configuration file: {e}"))
                })?;
                text.parse::<toml::Table>().map_err(|e| {
                    ConfigError::new(path.display().to_string(), format!("not valid TOML: {}", e.message()))
                })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut root, env)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::new(if key == "." { "(root)".to_string() } else { key }, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads from the process environment.
    pub fn load_from_process(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(file, std::env::vars())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        let issuer = self.issuer();
        validate_issuer(&issuer)?;
        if let Some(url) = &self.storage.database_url {
            let ok = url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://");
            if !ok {
                return Err(ConfigError::new(
                    "storage.database_url",
                    "must start with sqlite:, postgres:// or postgresql://",
                ));
            }
        }
        if self.storage.max_connections == 0 {
            return Err(ConfigError::new("storage.max_connections", "must be at least 1"));
        }
        let kinds = &self.habilitation.relationship_kinds;
        if kinds.is_empty() {
            return Err(ConfigError::new("habilitation.relationship_kinds", "list at least one relationship kind"));
        }
        for (i, kind) in kinds.iter().enumerate() {
            let ok = !kind.is_empty()
                && kind.len() <= 64
                && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok || kinds[..i].contains(kind) {
                return Err(ConfigError::new(
                    format!("habilitation.relationship_kinds[{i}]"),
                    "must be a distinct identifier of lower-case letters, digits and _ (e.g. care_team)",
                ));
            }
        }
        if let Some(url) = &self.storage.redis_url {
            let parsed =
                Url::parse(url).map_err(|e| ConfigError::new("storage.redis_url", format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                return Err(ConfigError::new("storage.redis_url", "must start with redis:// or rediss://"));
            }
        }
        if self.storage.memory_max_entries < 100 {
            return Err(ConfigError::new("storage.memory_max_entries", "must be at least 100"));
        }
        if self.limits.window.is_zero() || self.limits.window.as_secs() > 3600 {
            return Err(ConfigError::new("limits.window", "must be between 1 s and 1 h"));
        }
        if self.limits.anonymous_entries == 0 {
            return Err(ConfigError::new("limits.anonymous_entries", "must be greater than zero"));
        }
        // The anonymous entries and their counters must fit in the memory store with room left
        // for sessions, codes and everything else.
        if self.storage.redis_url.is_none()
            && self.limits.anonymous_entries.saturating_mul(2) > self.storage.memory_max_entries as u64
        {
            return Err(ConfigError::new(
                "limits.anonymous_entries",
                format!(
                    "must be at most half of storage.memory_max_entries ({}); lower it or raise storage.memory_max_entries",
                    self.storage.memory_max_entries / 2
                ),
            ));
        }
        if self.session.unanswered_interaction_lifetime > self.session.interaction_lifetime {
            return Err(ConfigError::new(
                "session.unanswered_interaction_lifetime",
                "must not exceed session.interaction_lifetime",
            ));
        }
        if let Some(url) = &self.mail.smtp_url {
            crate::mail::SmtpSettings::from_url(url).map_err(|e| ConfigError::new("mail.smtp_url", e.to_string()))?;
        }
        if !self.mail.from.contains('@') {
            return Err(ConfigError::new("mail.from", "must be an address such as `Habilis <no-reply@example.org>`"));
        }
        if self.keys.algorithms.is_empty() {
            return Err(ConfigError::new("keys.algorithms", "needs at least one algorithm (ES256, RS256, EdDSA)"));
        }
        if !self.keys.algorithms.contains(&self.keys.default_algorithm) {
            return Err(ConfigError::new("keys.default_algorithm", "must be one of keys.algorithms"));
        }
        if let Some(key) = &self.keys.master_key {
            crate::keys::MasterKey::from_base64(key).map_err(|e| ConfigError::new("keys.master_key", e.to_string()))?;
        }
        let lifetimes = [
            ("tokens.access_token_lifetime", self.tokens.access_token_lifetime, 24 * 3600),
            ("tokens.id_token_lifetime", self.tokens.id_token_lifetime, 24 * 3600),
            ("tokens.authorization_code_lifetime", self.tokens.authorization_code_lifetime, 600),
            ("tokens.refresh_token_idle_lifetime", self.tokens.refresh_token_idle_lifetime, 90 * 24 * 3600),
            ("tokens.refresh_token_absolute_lifetime", self.tokens.refresh_token_absolute_lifetime, 365 * 24 * 3600),
            ("tokens.invitation_lifetime", self.tokens.invitation_lifetime, 30 * 24 * 3600),
            ("keys.reload_interval", self.keys.reload_interval, 3600),
            ("session.idle_timeout", self.session.idle_timeout, 24 * 3600),
            ("oidc.par_lifetime", self.oidc.par_lifetime, 600),
            ("session.absolute_timeout", self.session.absolute_timeout, 7 * 24 * 3600),
            ("session.interaction_lifetime", self.session.interaction_lifetime, 24 * 3600),
            ("session.unanswered_interaction_lifetime", self.session.unanswered_interaction_lifetime, 24 * 3600),
        ];
        for (key, value, max_secs) in lifetimes {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be greater than zero"));
            }
            if value.as_secs() > max_secs {
                return Err(ConfigError::new(
                    key,
                    format!("must be at most {}", humantime::format_duration(Duration::from_secs(max_secs))),
                ));
            }
        }
        if self.tokens.refresh_token_idle_lifetime > self.tokens.refresh_token_absolute_lifetime {
            return Err(ConfigError::new(
                "tokens.refresh_token_idle_lifetime",
                "must not exceed tokens.refresh_token_absolute_lifetime",
            ));
        }
        if !["none", "eidas1", "eidas2", "eidas3"].contains(&self.login.minimum_acr.as_str()) {
            return Err(ConfigError::new("login.minimum_acr", "must be eidas1, eidas2, eidas3 or none"));
        }
        if self.login.max_failures == 0 || self.login.max_failures_per_address == 0 {
            return Err(ConfigError::new("login.max_failures", "failure limits must be at least 1"));
        }
        let p = &self.password;
        if p.argon2_memory_kib < 8 * 1024 {
            return Err(ConfigError::new(
                "password.argon2_memory_kib",
                "must be at least 8192 (OWASP minimum is 19456 with 2 iterations)",
            ));
        }
        if p.argon2_iterations == 0 || p.argon2_parallelism == 0 {
            return Err(ConfigError::new(
                "password.argon2_iterations",
                "iterations and parallelism must be at least 1",
            ));
        }
        if p.min_length < 12 {
            return Err(ConfigError::new("password.min_length", "must be at least 12"));
        }
        self.validate_card()?;
        if self.webauthn.attestation == AttestationMode::Required && self.webauthn.allowed_authenticators.is_empty() {
            return Err(ConfigError::new(
                "webauthn.allowed_authenticators",
                "attestation = required needs the allowed models: { aaguid = \"…\", ca = \"vendor-root.pem\" }",
            ));
        }
        for (i, a) in self.webauthn.allowed_authenticators.iter().enumerate() {
            if uuid::Uuid::parse_str(&a.aaguid).is_err() {
                return Err(ConfigError::new(
                    format!("webauthn.allowed_authenticators[{i}].aaguid"),
                    "must be a UUID such as ee882879-721c-4913-9775-3dfcce97072a",
                ));
            }
        }
        self.validate_registration()?;
        if !["eidas1", "eidas2", "eidas3"].contains(&self.admin.minimum_acr.as_str()) {
            return Err(ConfigError::new("admin.minimum_acr", "must be eidas1, eidas2 or eidas3"));
        }
        let id = &self.admin_console.client_id;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(ConfigError::new(
                "admin_console.client_id",
                "must be 1 to 64 letters, digits, '-', '_' or '.' (e.g. habilis-admin)",
            ));
        }
        self.lifecycle.validate()?;
        self.audit.validate()?;
        self.alerts.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", format!("not a valid filter: {e}")))?;
        Ok(())
    }

    /// The issuer identifier: configured, or `http://<listen>` for the embedded mode.
    pub fn issuer(&self) -> Url {
        match &self.server.issuer {
            Some(url) => url.clone(),
            None => {
                let listen = self.server.listen;
                let host = if listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { listen.ip().to_string() };
                let host = if listen.is_ipv6() && !listen.ip().is_unspecified() { format!("[{host}]") } else { host };
                Url::parse(&format!("http://{host}:{}", listen.port())).expect("a socket address forms a valid URL")
            }
        }
    }

    /// The issuer as it appears in tokens and discovery: no trailing slash.
    pub fn issuer_string(&self) -> String {
        self.issuer().as_str().trim_end_matches('/').to_string()
    }

    pub fn database_url(&self) -> String {
        match &self.storage.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("habilis.db").display()),
        }
    }

    pub fn master_key_file(&self) -> PathBuf {
        self.keys.master_key_file.clone().unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.mail.outbox_dir.clone().unwrap_or_else(|| self.data_dir.join("outbox"))
    }

    /// The longest time a token signed by a key can stay valid: how long a retired key stays published.
    pub fn longest_signed_token_lifetime(&self) -> Duration {
        self.tokens.access_token_lifetime.max(self.tokens.id_token_lifetime) + Duration::from_secs(60)
    }

    /// Warnings about settings that are legal but unsafe in production; printed loudly at start.
    /// The card mode once `auto` is resolved: `demo` in the embedded mode, `off` otherwise.
    pub fn card_mode(&self) -> CardMode {
        match self.card.mode {
            CardMode::Auto if self.issuer().scheme() == "http" => CardMode::Demo,
            CardMode::Auto => CardMode::Off,
            other => other,
        }
    }

    /// Whether this deployment faces real users: an https issuer on a non-loopback host.
    pub fn is_production(&self) -> bool {
        let issuer = self.issuer();
        issuer.scheme() == "https" && !host_is_loopback(&issuer)
    }

    fn validate_registration(&self) -> Result<(), ConfigError> {
        let r = &self.registration;
        if r.allowed_scopes.is_empty() {
            return Err(ConfigError::new("registration.allowed_scopes", "list at least one scope (e.g. openid)"));
        }
        for (i, scope) in r.allowed_scopes.iter().enumerate() {
            if !crate::oidc::authorize::SUPPORTED_SCOPES.contains(&scope.as_str()) {
                return Err(ConfigError::new(
                    format!("registration.allowed_scopes[{i}]"),
                    format!(
                        "`{}` is not a scope Habilis supports ({})",
                        scope.escape_debug(),
                        crate::oidc::authorize::SUPPORTED_SCOPES.join(", ")
                    ),
                ));
            }
        }
        if r.max_failures_per_address == 0 {
            return Err(ConfigError::new("registration.max_failures_per_address", "must be at least 1"));
        }
        if r.lockout.is_zero() || r.lockout.as_secs() > 24 * 3600 {
            return Err(ConfigError::new("registration.lockout", "must be between 1s and 24h"));
        }
        Ok(())
    }

    fn validate_card(&self) -> Result<(), ConfigError> {
        let c = &self.card;
        for (i, p) in c.trusted_proxies.iter().enumerate() {
            parse_net(p).map_err(|e| ConfigError::new(format!("card.trusted_proxies[{i}]"), e))?;
        }
        if let Some(h) = &c.proxy_header {
            if axum::http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ConfigError::new("card.proxy_header", "is not a valid HTTP header name"));
            }
            if c.trusted_proxies.is_empty() {
                return Err(ConfigError::new(
                    "card.trusted_proxies",
                    "must list the proxy addresses when card.proxy_header is set (the header is trusted from them only)",
                ));
            }
        }
        for (i, source) in c.crl_sources.iter().enumerate() {
            if source.contains("://") && !(source.starts_with("http://") || source.starts_with("https://")) {
                return Err(ConfigError::new(
                    format!("card.crl_sources[{i}]"),
                    "must be an http(s) URL or a file path",
                ));
            }
        }
        if c.crl_refresh_interval < Duration::from_secs(1) || c.crl_refresh_interval > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("card.crl_refresh_interval", "must be between 1s and 24h"));
        }
        if c.crl_max_staleness < c.crl_refresh_interval {
            return Err(ConfigError::new(
                "card.crl_max_staleness",
                "must be at least card.crl_refresh_interval (otherwise every CRL is stale before the next refresh)",
            ));
        }
        if let Some(url) = &c.public_url
            && url.scheme() != "https"
        {
            return Err(ConfigError::new("card.public_url", "must be an https URL (client certificates need TLS)"));
        }
        if self.card_mode() == CardMode::On {
            if c.trust_anchors.is_empty() {
                return Err(ConfigError::new(
                    "card.trust_anchors",
                    "card.mode = on needs the IGC-Santé roots and intermediates (PEM, DER or PKCS#7 files)",
                ));
            }
            if c.listen.is_none() && c.proxy_header.is_none() {
                return Err(ConfigError::new(
                    "card.listen",
                    "card.mode = on needs a way in: card.listen (direct TLS) or card.proxy_header (behind a proxy)",
                ));
            }
            if c.listen.is_some() && (c.tls_certificate.is_none() || c.tls_key.is_none()) {
                return Err(ConfigError::new(
                    "card.tls_certificate",
                    "the card listener needs card.tls_certificate and card.tls_key (PEM files)",
                ));
            }
            if c.listen.is_none() && c.public_url.is_none() {
                return Err(ConfigError::new(
                    "card.public_url",
                    "behind a proxy, set the URL of the proxy host that asks for the card certificate",
                ));
            }
        }
        if self.card_mode() == CardMode::Demo && self.is_production() && !c.allow_test_anchors {
            return Err(ConfigError::new(
                "card.mode",
                "demo uses a test PKI and is refused with a production issuer; use card.mode = on with the IGC-Santé anchors",
            ));
        }
        Ok(())
    }

    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.card.revocation == RevocationSetting::FailOpen && self.card_mode() != CardMode::Off {
            warnings.push(
                "card.revocation = fail-open: cards are accepted when their revocation status is unknown; every such login is audited"
                    .into(),
            );
        }
        if self.card_mode() == CardMode::Demo {
            warnings.push("card login runs on a generated TEST PKI (card.mode = demo): never for real cards".into());
        }
        if self.issuer().scheme() == "http" {
            warnings.push(format!(
                "the issuer {} uses plain http: acceptable on this machine only; set server.issuer to an https URL in production",
                self.issuer_string()
            ));
        }
        if self.storage.redis_url.is_none() {
            warnings.push("ephemeral data is in memory: run a single instance, or set storage.redis_url".into());
        }
        if self.login.minimum_acr == "none" {
            warnings.push(
                "login.minimum_acr = none: a password alone opens a session; never use this for health professionals"
                    .into(),
            );
        }
        if !self.audit.durable {
            warnings.push(
                "audit.durable = false: audit events are NOT written to the tamper-evident log, only to the \
                 habilis::audit log lines; a benchmarking switch, never for production"
                    .into(),
            );
        }
        if self.keys.master_key.is_some() {
            warnings.push(
                "keys.master_key is set inline: prefer keys.master_key_file or the HABILIS_KEYS__MASTER_KEY variable"
                    .into(),
            );
        }
        warnings
    }
}

fn validate_issuer(issuer: &Url) -> Result<(), ConfigError> {
    if issuer.cannot_be_a_base() || issuer.host().is_none() {
        return Err(ConfigError::new("server.issuer", "must be an absolute URL with a host"));
    }
    if issuer.query().is_some() || issuer.fragment().is_some() {
        return Err(ConfigError::new(
            "server.issuer",
            "must not have a query or fragment (OpenID Connect Discovery §3)",
        ));
    }
    match issuer.scheme() {
        "https" => Ok(()),
        "http" if host_is_loopback(issuer) => Ok(()),
        "http" => Err(ConfigError::new(
            "server.issuer",
            format!("must use https unless its host is loopback (got {issuer}); put Habilis behind TLS"),
        )),
        other => Err(ConfigError::new("server.issuer", format!("scheme `{other}` is not allowed; use https"))),
    }
}

fn host_is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Applies `HABILIS_SECTION__KEY=value` overrides onto the TOML tree. Values are read as TOML literals
/// when they parse as one (numbers, booleans, arrays such as `["ES256"]`), otherwise as strings.
fn apply_env(root: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> =
        env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX) && !NON_CONFIG_ENV.contains(&k.as_str())).collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|segment| segment.is_empty()) {
            return Err(ConfigError::new(name, "malformed variable name; use HABILIS_<SECTION>__<KEY>"));
        }
        let value = env_value(&raw);
        let mut table = &mut *root;
        for segment in &path[..path.len() - 1] {
            let entry = table.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::new(name.clone(), format!("`{segment}` is not a section")));
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

fn env_value(raw: &str) -> toml::Value {
    let trimmed = raw.trim();
    let looks_literal = trimmed == "true"
        || trimmed == "false"
        || trimmed.starts_with('[')
        || (!trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '-' || c == '_' || c == '.'));
    if looks_literal
        && let Ok(table) = format!("v = {trimmed}").parse::<toml::Table>()
        && let Some(value) = table.get("v")
    {
        return value.clone();
    }
    toml::Value::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml_text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("habilis.toml");
        std::fs::write(&path, toml_text).unwrap();
        Config::load(Some(&path), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_are_the_embedded_mode() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!(config.issuer_string(), "http://127.0.0.1:8080");
        assert!(config.database_url().starts_with("sqlite://"));
        assert!(config.storage.redis_url.is_none());
        assert_eq!(config.keys.default_algorithm, SigningAlg::ES256);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n", &[]).unwrap_err();
        assert!(err.key.contains("lisen") || err.reason.contains("lisen"), "{err}");
        let err = load_str("[nonsense]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
    }

    #[test]
    fn bad_duration_is_named() {
        let err = load_str("[tokens]\naccess_token_lifetime = \"ten minutes\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "tokens.access_token_lifetime", "{err}");
    }

    #[test]
    fn bad_url_is_named() {
        let err = load_str("[server]\nissuer = \"not a url\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "server.issuer", "{err}");
        let err = load_str("[storage]\ndatabase_url = \"mysql://x\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "storage.database_url", "{err}");
    }

    #[test]
    fn http_issuer_only_on_loopback() {
        assert!(load_str("[server]\nissuer = \"http://localhost:9000\"\n", &[]).is_ok());
        assert!(load_str("[server]\nissuer = \"http://[::1]:9000\"\n", &[]).is_ok());
        assert!(load_str("[server]\nissuer = \"https://idp.example.org\"\n", &[]).is_ok());
        let err = load_str("[server]\nissuer = \"http://idp.example.org\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "server.issuer");
    }

    #[test]
    fn environment_overrides_file() {
        let config = load_str(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("HABILIS_SERVER__LISTEN", "127.0.0.1:9999"),
                ("HABILIS_DATA_DIR", "/tmp/somewhere"),
                ("HABILIS_TOKENS__ACCESS_TOKEN_LIFETIME", "2m"),
                ("HABILIS_KEYS__ALGORITHMS", "[\"ES256\"]"),
                ("HABILIS_STORAGE__MAX_CONNECTIONS", "3"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 9999);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/somewhere"));
        assert_eq!(config.tokens.access_token_lifetime, Duration::from_secs(120));
        assert_eq!(config.keys.algorithms, vec![SigningAlg::ES256]);
        assert_eq!(config.storage.max_connections, 3);
    }

    #[test]
    fn unknown_environment_key_is_named() {
        let err = load_str("", &[("HABILIS_SERVER__LISTN", "1")]).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn bad_environment_duration_is_named() {
        let err = load_str("", &[("HABILIS_TOKENS__ID_TOKEN_LIFETIME", "soon")]).unwrap_err();
        assert_eq!(err.key, "tokens.id_token_lifetime");
    }

    #[test]
    fn card_mode_follows_the_issuer_and_refuses_unsafe_settings() {
        assert_eq!(load_str("", &[]).unwrap().card_mode(), CardMode::Demo, "embedded mode: demo cards");
        let production = "[server]\nissuer = \"https://habilis.example.org\"\n";
        assert_eq!(load_str(production, &[]).unwrap().card_mode(), CardMode::Off);
        let err = load_str(&format!("{production}[card]\nmode = \"demo\"\n"), &[]).unwrap_err();
        assert_eq!(err.key, "card.mode", "a test PKI is refused in production");
        let err = load_str(&format!("{production}[card]\nmode = \"on\"\n"), &[]).unwrap_err();
        assert_eq!(err.key, "card.trust_anchors");
        let on = format!("{production}[card]\nmode = \"on\"\ntrust_anchors = [\"/etc/igc.pem\"]\n");
        assert_eq!(load_str(&on, &[]).unwrap_err().key, "card.listen", "needs a way in");
        let listener = format!("{on}listen = \"127.0.0.1:8443\"\n");
        assert_eq!(load_str(&listener, &[]).unwrap_err().key, "card.tls_certificate");
        let proxy = format!("{on}proxy_header = \"x-ssl-client-cert\"\npublic_url = \"https://carte.example.org\"\n");
        assert_eq!(load_str(&proxy, &[]).unwrap_err().key, "card.trusted_proxies", "the header needs its proxies");
        let proxied = format!("{proxy}trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n");
        let config = load_str(&proxied, &[]).unwrap();
        assert_eq!(config.card.trusted_proxy_nets().len(), 2);
        let err = load_str(&format!("{proxy}trusted_proxies = [\"10.0.0.0/33\"]\n"), &[]).unwrap_err();
        assert_eq!(err.key, "card.trusted_proxies[0]");
        let err = load_str("[card]\ncrl_refresh_interval = \"2h\"\ncrl_max_staleness = \"1h\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "card.crl_max_staleness");
        let fail_open = load_str("[card]\nrevocation = \"fail-open\"\n", &[]).unwrap();
        assert!(fail_open.warnings().iter().any(|w| w.contains("fail-open")), "fail-open is warned about at start");
    }

    #[test]
    fn required_attestation_needs_valid_allowed_models() {
        let err = load_str("[habilitation]\nrelationship_kinds = [\"care team\"]\n", &[]).unwrap_err();
        assert_eq!(err.key, "habilitation.relationship_kinds[0]");
        let err = load_str("[habilitation]\nrelationship_kinds = []\n", &[]).unwrap_err();
        assert_eq!(err.key, "habilitation.relationship_kinds");
        let err = load_str("[webauthn]\nattestation = \"required\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "webauthn.allowed_authenticators");
        let bad = "[webauthn]\nattestation = \"required\"\nallowed_authenticators = [{ aaguid = \"nope\", ca = \"/x.pem\" }]\n";
        assert_eq!(load_str(bad, &[]).unwrap_err().key, "webauthn.allowed_authenticators[0].aaguid");
        let good = bad.replace("nope", "ee882879-721c-4913-9775-3dfcce97072a");
        assert!(load_str(&good, &[]).is_ok());
    }

    #[test]
    fn registration_settings_are_checked() {
        let config = load_str("[registration]\nallowed_scopes = [\"openid\", \"profile\"]\n", &[]).unwrap();
        assert!(config.registration.enabled, "on by default (an initial access token is always needed)");
        let err = load_str("[registration]\nallowed_scopes = [\"openid\", \"admin\"]\n", &[]).unwrap_err();
        assert_eq!(err.key, "registration.allowed_scopes[1]", "{err}");
        let err = load_str("[registration]\nallowed_scopes = []\n", &[]).unwrap_err();
        assert_eq!(err.key, "registration.allowed_scopes", "{err}");
        let err = load_str("[registration]\nmax_failures_per_address = 0\n", &[]).unwrap_err();
        assert_eq!(err.key, "registration.max_failures_per_address", "{err}");
        let config = load_str("", &[("HABILIS_REGISTRATION__ENABLED", "false")]).unwrap();
        assert!(!config.registration.enabled);
    }

    #[test]
    fn the_reference_config_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("habilis.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // Every key of the reference must be known (it is loaded with deny_unknown_fields)...
        let uncommented: String = text
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|rest| rest.contains(" = ") && !rest.starts_with(' ')).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ref.toml");
        std::fs::write(&file, &uncommented).unwrap();
        Config::load(Some(&file), Vec::new()).expect("the reference config, uncommented, must load");
        // ...and every key of the defaults must be documented there.
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        for (section, value) in defaults.as_table().unwrap() {
            match value {
                toml::Value::Table(keys) => {
                    assert!(text.contains(&format!("[{section}]")), "section [{section}] is not documented");
                    for key in keys.keys() {
                        assert!(text.contains(&format!("{key} =")), "{section}.{key} is not documented");
                    }
                }
                _ => assert!(text.contains(&format!("{section} =")), "{section} is not documented"),
            }
        }
    }
}

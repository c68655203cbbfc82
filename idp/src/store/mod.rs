//! Durable storage: one small seam ([`Store`]) with one SQL implementation compiled for SQLite and
//! PostgreSQL. The backend is chosen once, at start-up ([`connect`]); nothing else in the code base
//! knows which database it talks to.

mod admin;
mod audit;
mod habilitation;
mod lifecycle;
mod markers;
mod registration;
mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use admin::*;
pub use audit::*;
pub use habilitation::*;
pub use lifecycle::*;
pub use markers::*;
pub use registration::*;
pub use sql::{Backend, connect, connect_with};

/// Everything that can go wrong talking to the database, without leaking SQL to callers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{entity} already exists")]
    Conflict { entity: &'static str },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Seconds since the Unix epoch. Times are stored as integers so that both backends agree exactly.
pub type UnixTime = i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Professional,
    Patient,
    Administrator,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Professional => "professional",
            AccountKind::Patient => "patient",
            AccountKind::Administrator => "administrator",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "professional" => Some(AccountKind::Professional),
            "patient" => Some(AccountKind::Patient),
            "administrator" => Some(AccountKind::Administrator),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Created by an administrator; the owner has not yet accepted the invitation.
    Invited,
    Active,
    Disabled,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Invited => "invited",
            AccountStatus::Active => "active",
            AccountStatus::Disabled => "disabled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "invited" => Some(AccountStatus::Invited),
            "active" => Some(AccountStatus::Active),
            "disabled" => Some(AccountStatus::Disabled),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Stable internal identifier (UUID); the OIDC `sub` is derived from it.
    pub id: String,
    pub kind: AccountKind,
    /// What the person types to log in: the idNat for professionals, an email or chosen id otherwise.
    pub login: String,
    pub id_nat: Option<String>,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub status: AccountStatus,
    pub locale: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    pub last_authenticated_at: Option<UnixTime>,
}

/// A factor or secret attached to an account. `secret` is always hashed (passwords, recovery codes)
/// or encrypted (TOTP) by the caller before it reaches the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub name: Option<String>,
    pub secret: Vec<u8>,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
}

impl Credential {
    /// A password credential holding an argon2 PHC string (never the password itself).
    pub fn password(account_id: &str, phc: String, now: UnixTime) -> Credential {
        Credential {
            id: uuid::Uuid::new_v4().to_string(),
            account_id: account_id.to_string(),
            kind: "password".into(),
            name: None,
            secret: phc.into_bytes(),
            created_at: now,
            last_used_at: None,
        }
    }
}

/// A single-use invitation: only the hash of the token is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub token_hash: String,
    pub account_id: String,
    pub expires_at: UnixTime,
    pub created_at: UnixTime,
}

/// A registered OIDC client. `metadata` is the RFC 7591 document (JSON text) validated by the
/// client registry; the store only keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub metadata: String,
    /// Hash of the client secret (confidential clients using client_secret_*), never the secret.
    pub secret_hash: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// A signing key as stored: the private part is encrypted under the master key (see `keys`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    /// Public JWK (JSON text) as published in the JWKS.
    pub public_jwk: String,
    /// AES-GCM sealed private JWK; see `keys::MasterKey`.
    pub private_sealed: Vec<u8>,
    pub created_at: UnixTime,
    /// The key is published from creation but signs only from this time on.
    pub activates_at: UnixTime,
    /// Once retired a key no longer signs; it stays published until the tokens it signed expire.
    pub retired_at: Option<UnixTime>,
}

/// A grant: what one authorization (a code redemption) gave one client for one account. Refresh
/// tokens belong to a grant; revoking the grant revokes every token issued from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub account_id: String,
    pub client_id: String,
    pub session_id: Option<String>,
    pub scope: String,
    /// JSON: acr, amr, auth_time and other claims fixed at authorization time.
    pub claims: String,
    pub auth_time: UnixTime,
    pub created_at: UnixTime,
    /// Absolute end of the refresh-token family.
    pub expires_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

/// A refresh token, stored as the SHA-256 of its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    pub token_hash: String,
    pub grant_id: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub used_at: Option<UnixTime>,
}

/// A WebAuthn credential of an account (security key or passkey).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebauthnCredential {
    /// base64url of the credential id, unique across accounts.
    pub credential_id: String,
    pub account_id: String,
    pub name: String,
    /// The webauthn-rs `Passkey` as JSON (public key, counter, backup flags).
    pub passkey: String,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
}

/// What the refresh grant reads in one query: the presented token, its grant and the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshContext {
    pub token: RefreshToken,
    pub grant: Grant,
    pub account: Account,
}

/// What happened when a refresh token was presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshUse {
    /// First use: the token is now spent; the caller issues its successor.
    Fresh(RefreshToken),
    /// Already spent: a sign of theft. The caller revokes the grant.
    Reused(RefreshToken),
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    pub account_id: String,
    pub client_id: String,
    pub scope: String,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// The durable storage seam. Small on purpose: each method is one statement (or one transaction).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// A cheap round trip, used by `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Patients, relationships, profiles and practice data.
    fn habilitations(&self) -> &dyn HabilitationStore;
    /// Initial access tokens and registrations of self-registered clients (RFC 7591, RFC 7592).
    fn registrations(&self) -> &dyn RegistrationStore;
    /// Administration roles, organisations' departments and members, account search.
    fn admin(&self) -> &dyn AdminStore;
    /// Inactivity clock, warnings, keep-my-account links, job leases; person export and erasure.
    fn lifecycle(&self) -> &dyn LifecycleStore;
    /// The durable copy of revocation markers and lockouts (see `ephemeral::durable`).
    fn markers(&self) -> &dyn MarkerStore;
    /// The hash-chained audit log, its checkpoints, anchors and keys.
    fn audit(&self) -> &dyn AuditStore;

    // Accounts
    async fn insert_account(&self, account: &Account) -> StoreResult<()>;
    async fn account_by_id(&self, id: &str) -> StoreResult<Option<Account>>;
    /// Login identifiers are unique case-insensitively; callers pass the normalised form.
    async fn account_by_login(&self, login: &str) -> StoreResult<Option<Account>>;
    async fn list_accounts(&self, limit: i64, offset: i64) -> StoreResult<Vec<Account>>;
    async fn set_account_status(&self, id: &str, status: AccountStatus, now: UnixTime) -> StoreResult<bool>;
    /// Records a successful authentication (the inactive-account rule counts from it).
    async fn record_authentication(&self, id: &str, at: UnixTime) -> StoreResult<()>;

    // Credentials
    async fn insert_credential(&self, credential: &Credential) -> StoreResult<()>;
    async fn credentials_of(&self, account_id: &str, kind: &str) -> StoreResult<Vec<Credential>>;
    /// Removes every credential of `kind` of the account; returns how many there were.
    async fn delete_credentials(&self, account_id: &str, kind: &str) -> StoreResult<u64>;
    /// Replaces every credential of `kind` of the account by `credential` (e.g. a password change).
    async fn replace_credentials(&self, credential: &Credential) -> StoreResult<()>;

    // Invitations
    async fn insert_invitation(&self, invitation: &Invitation) -> StoreResult<()>;
    /// Looks at an invitation without consuming it (to show the page; consumption is `take_invitation`).
    async fn invitation(&self, token_hash: &str) -> StoreResult<Option<Invitation>>;
    /// Consumes the invitation atomically: exactly one caller gets it, expired ones are never returned.
    async fn take_invitation(&self, token_hash: &str, now: UnixTime) -> StoreResult<Option<Invitation>>;

    // Clients
    async fn upsert_client(&self, client: &ClientRecord) -> StoreResult<()>;
    async fn client_by_id(&self, client_id: &str) -> StoreResult<Option<ClientRecord>>;
    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>>;
    async fn delete_client(&self, client_id: &str) -> StoreResult<bool>;
    /// Highest `updated_at` of all clients and their count: a cheap change detector for caches.
    async fn clients_version(&self) -> StoreResult<(i64, UnixTime)>;

    // Signing keys
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    async fn retire_signing_key(&self, kid: &str, at: UnixTime) -> StoreResult<bool>;
    /// Deletes keys retired before `before` (they no longer verify any unexpired token).
    async fn purge_signing_keys(&self, retired_before: UnixTime) -> StoreResult<u64>;

    // Grants and refresh tokens
    async fn insert_grant(&self, grant: &Grant) -> StoreResult<()>;
    async fn grant_by_id(&self, id: &str) -> StoreResult<Option<Grant>>;
    /// Revokes a grant (and so its refresh tokens and the access tokens tied to it). Returns whether
    /// it was active.
    async fn revoke_grant(&self, id: &str, at: UnixTime) -> StoreResult<bool>;
    /// Revokes every grant of a browser session (logout). Returns the revoked grants.
    async fn revoke_session_grants(&self, session_id: &str, at: UnixTime) -> StoreResult<Vec<Grant>>;
    async fn insert_refresh_token(&self, token: &RefreshToken) -> StoreResult<()>;
    /// Spends a refresh token atomically: of concurrent callers exactly one gets `Fresh`.
    async fn use_refresh_token(&self, token_hash: &str, at: UnixTime) -> StoreResult<RefreshUse>;
    /// Spends a refresh token and stores its successor: of concurrent callers exactly one gets
    /// `Fresh`, and only that caller writes a successor.
    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        at: UnixTime,
        successor: &RefreshToken,
    ) -> StoreResult<RefreshUse>;
    /// The refresh grant's fast path: spends `token_hash` only when it is unspent and unexpired,
    /// of `client_id`, of an unrevoked, unexpired grant of an active account, and stores its
    /// successor (expiring at `successor_idle_expiry`, capped by the grant's end), all atomically
    /// and in one hand-off. Returns the successor with its grant and account; `None` when any
    /// condition failed, in which case nothing was written.
    async fn rotate_refresh_token_checked(
        &self,
        token_hash: &str,
        client_id: &str,
        at: UnixTime,
        successor_hash: &str,
        successor_idle_expiry: UnixTime,
    ) -> StoreResult<Option<RefreshContext>>;
    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshToken>>;
    /// A refresh token with its grant and account, in one read (the refresh grant's hot path).
    async fn refresh_context(&self, token_hash: &str) -> StoreResult<Option<RefreshContext>>;

    // WebAuthn credentials
    /// Stores a new credential; a credential id already registered (to anyone) is `Conflict`.
    async fn insert_webauthn_credential(&self, credential: &WebauthnCredential) -> StoreResult<()>;
    async fn webauthn_credentials_of(&self, account_id: &str) -> StoreResult<Vec<WebauthnCredential>>;
    async fn webauthn_credential(&self, credential_id: &str) -> StoreResult<Option<WebauthnCredential>>;
    /// Records a use: the updated credential (counter, backup state) and the time.
    async fn record_webauthn_use(&self, credential_id: &str, passkey: &str, at: UnixTime) -> StoreResult<bool>;
    async fn rename_webauthn_credential(&self, account_id: &str, credential_id: &str, name: &str) -> StoreResult<bool>;
    async fn delete_webauthn_credential(&self, account_id: &str, credential_id: &str) -> StoreResult<bool>;

    // Consents
    async fn consent(&self, account_id: &str, client_id: &str) -> StoreResult<Option<Consent>>;
    async fn upsert_consent(&self, consent: &Consent) -> StoreResult<()>;
    async fn delete_consent(&self, account_id: &str, client_id: &str) -> StoreResult<bool>;
    async fn consents_of(&self, account_id: &str) -> StoreResult<Vec<Consent>>;
}

pub type SharedStore = Arc<dyn Store>;

#[cfg(test)]
mod tests;

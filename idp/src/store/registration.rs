//! Durable data of dynamic client registration (RFC 7591, RFC 7592): the initial access tokens
//! administrators issue, and the registration access token of each self-registered client. A seam
//! of its own ([`RegistrationStore`]), like the habilitation data; the SQL implementation lives
//! beside the main one (`sql`). Tokens reach the store hashed, never in clear.

use async_trait::async_trait;

use super::{StoreResult, UnixTime};

/// An initial access token as stored: what it allows and how much of it is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialAccessToken {
    /// Public identifier, shown by `registration-token list` and used to revoke it.
    pub id: String,
    /// SHA-256 (hex) of the token.
    pub token_hash: String,
    pub description: Option<String>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    /// Registrations it allows in all (at least 1).
    pub max_uses: i64,
    /// Registrations made with it so far.
    pub uses: i64,
    pub last_used_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
}

/// A self-registered client's registration: the hash of the token that manages it (RFC 7592) and
/// the initial access token it was registered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRegistrationRecord {
    pub client_id: String,
    /// SHA-256 (hex) of the registration access token.
    pub access_token_hash: String,
    pub initial_token_id: String,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

#[async_trait]
pub trait RegistrationStore: Send + Sync {
    // Initial access tokens
    async fn insert_initial_access_token(&self, token: &InitialAccessToken) -> StoreResult<()>;
    async fn initial_access_token(&self, token_hash: &str) -> StoreResult<Option<InitialAccessToken>>;
    /// Every token, newest first (revoked and expired ones included: the list is an audit aid).
    async fn list_initial_access_tokens(&self) -> StoreResult<Vec<InitialAccessToken>>;
    /// Counts one use atomically, only if the token is unrevoked, unexpired at `now` and has a use
    /// left: of concurrent callers holding its last use, exactly one gets the token back.
    async fn use_initial_access_token(
        &self,
        token_hash: &str,
        now: UnixTime,
    ) -> StoreResult<Option<InitialAccessToken>>;
    /// Revokes a token by id. Returns whether an unrevoked token was revoked.
    async fn revoke_initial_access_token(&self, id: &str, now: UnixTime) -> StoreResult<bool>;

    // Registrations (the client row itself belongs to the main store)
    async fn insert_client_registration(&self, registration: &ClientRegistrationRecord) -> StoreResult<()>;
    async fn client_registration(&self, client_id: &str) -> StoreResult<Option<ClientRegistrationRecord>>;
    /// Replaces the registration access token hash, only if it is still `current_hash`: of two
    /// concurrent updates with the same token, exactly one wins. Returns whether it was replaced.
    async fn swap_registration_token(
        &self,
        client_id: &str,
        current_hash: &str,
        new_hash: &str,
        now: UnixTime,
    ) -> StoreResult<bool>;
}

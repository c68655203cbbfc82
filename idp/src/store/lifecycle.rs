//! Durable data of the account lifecycle (issue 10): the inactivity clock of each account, the
//! warnings sent per inactivity period, the single-use "keep my account" links, the leases that
//! make a scheduled job run on one instance at a time, and the reads and the deletion that person
//! export and erasure need. A seam of its own ([`LifecycleStore`]); the SQL implementation lives
//! beside the main one (`sql/lifecycle.rs`).

use async_trait::async_trait;
use serde::Serialize;

use super::{Account, Grant, StoreResult, UnixTime};

/// An account as the inactivity rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountActivity {
    pub account: Account,
    /// The last objection to the deletion ("keep my account"), if any.
    pub kept_at: Option<UnixTime>,
}

impl AccountActivity {
    /// What the inactivity clock counts from: the latest of the last authentication, the last
    /// objection and, for an account that never authenticated, its creation.
    pub fn activity_at(&self) -> UnixTime {
        let a = &self.account;
        a.last_authenticated_at.unwrap_or(a.created_at).max(a.created_at).max(self.kept_at.unwrap_or(i64::MIN))
    }
}

/// One warning of an inactivity period. `(account_id, activity_at, stage)` is unique: claiming it
/// is what makes a warning go out once only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InactivityWarning {
    pub account_id: String,
    /// The activity time the period counts from ([`AccountActivity::activity_at`]).
    pub activity_at: UnixTime,
    /// 1 for the first warning, 2 for the reminder.
    pub stage: i64,
    /// The deletion date the warning announced.
    pub deletion_at: UnixTime,
    pub sent_at: UnixTime,
    /// `email`, or `none` when the account has no reachable channel.
    pub channel: String,
}

/// A "keep my account" link, stored as the SHA-256 of its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepToken {
    pub token_hash: String,
    pub account_id: String,
    pub created_at: UnixTime,
    /// The announced deletion date: the link works until then.
    pub expires_at: UnixTime,
    pub used_at: Option<UnixTime>,
}

/// A factor's metadata, never its secret (person export).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialInfo {
    pub id: String,
    pub kind: String,
    pub name: Option<String>,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
}

#[async_trait]
pub trait LifecycleStore: Send + Sync {
    // Leases
    /// Takes the lease `name` for `owner` until `until` when it is free, expired at `now`, or
    /// already `owner`'s (a renewal): one atomic conditional upsert. Returns whether `owner` holds it.
    async fn acquire_lease(&self, name: &str, owner: &str, until: UnixTime, now: UnixTime) -> StoreResult<bool>;
    /// Ends `owner`'s lease at `now` (nothing happens when another owner holds it).
    async fn release_lease(&self, name: &str, owner: &str, now: UnixTime) -> StoreResult<()>;
    /// The current holder of `name` and until when, if the row exists.
    async fn lease(&self, name: &str) -> StoreResult<Option<(String, UnixTime)>>;

    // Inactivity
    /// Accounts whose activity time ([`AccountActivity::activity_at`]) is at or before `cutoff`,
    /// oldest first.
    async fn inactive_since(&self, cutoff: UnixTime) -> StoreResult<Vec<AccountActivity>>;
    /// The account with its inactivity clock.
    async fn activity_of(&self, account_id: &str) -> StoreResult<Option<AccountActivity>>;
    /// Records a warning unless one of the same period and stage exists. Returns whether this
    /// caller claimed it (and so must send it).
    async fn claim_warning(&self, warning: &InactivityWarning) -> StoreResult<bool>;
    /// Forgets a claimed warning that could not be sent, so that a later run tries again.
    async fn forget_warning(&self, account_id: &str, activity_at: UnixTime, stage: i64) -> StoreResult<()>;
    /// Every warning of the account, oldest first.
    async fn warnings_of(&self, account_id: &str) -> StoreResult<Vec<InactivityWarning>>;

    // Keep-my-account links
    async fn insert_keep_token(&self, token: &KeepToken) -> StoreResult<()>;
    /// Looks at a link without consuming it (to show the page).
    async fn keep_token(&self, token_hash: &str) -> StoreResult<Option<KeepToken>>;
    /// Consumes an unused, unexpired link and records the objection (`accounts.kept_at = now`),
    /// atomically: of concurrent callers exactly one gets the token.
    async fn use_keep_token(&self, token_hash: &str, now: UnixTime) -> StoreResult<Option<KeepToken>>;

    // Person export and erasure
    /// Metadata of every credential of the account (password, TOTP, recovery codes…), no secret.
    async fn credential_infos(&self, account_id: &str) -> StoreResult<Vec<CredentialInfo>>;
    /// Every grant of the account, revoked and expired ones included, oldest first.
    async fn grants_of(&self, account_id: &str) -> StoreResult<Vec<Grant>>;
    /// Deletes the account; the schema's cascades remove its credentials, passkeys, invitations,
    /// grants and refresh tokens, consents, practice data, memberships, roles, relationships as a
    /// professional and lifecycle rows, and unlink patient records from it. Returns whether it existed.
    async fn delete_account(&self, account_id: &str) -> StoreResult<bool>;
}

//! The durable copy of ephemeral entries that must not be lost with the ephemeral store:
//! revocation markers and lockouts (see `ephemeral::durable`). A seam of its own
//! ([`MarkerStore`]); the SQL implementation lives beside the main one (`sql/markers.rs`).

use async_trait::async_trait;

use super::{StoreResult, UnixTime};

/// One durable entry: the ephemeral key, its value and when it stops mattering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableMarker {
    pub key: String,
    pub value: String,
    pub expires_at: UnixTime,
}

#[async_trait]
pub trait MarkerStore: Send + Sync {
    /// Stores or replaces `marker` (a later revocation or lock of the same key wins).
    async fn put_marker(&self, marker: &DurableMarker) -> StoreResult<()>;
    /// The marker stored under `key`, live or not.
    async fn marker(&self, key: &str) -> StoreResult<Option<DurableMarker>>;
    /// Forgets `key` (an unlock).
    async fn delete_marker(&self, key: &str) -> StoreResult<()>;
    /// The markers still live at `now` (expires_at after it), for restoring the ephemeral store.
    async fn live_markers(&self, now: UnixTime) -> StoreResult<Vec<DurableMarker>>;
    /// Deletes the markers expired at `now`; returns how many.
    async fn purge_markers(&self, now: UnixTime) -> StoreResult<u64>;
}

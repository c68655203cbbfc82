//! Durable audit log (issue 10): an append-only, hash-chained table of records and the signed
//! checkpoints that anchor it. A seam of its own ([`AuditStore`]); the chain rules (what a hash
//! covers) live in `crate::audit::chain`, the store only keeps and returns rows in order.
//!
//! Personal data and the chain: a record's personal fields (actor, subject, ip, user agent,
//! details) are hashed into `personal_digest`, and the chain commits to that digest, not to the
//! fields themselves. Erasing a person (`pseudonymise`) replaces those fields by a pseudonym and
//! keeps the digest, so the chain still verifies while every other field stays tamper-evident.

use async_trait::async_trait;

use super::{StoreResult, UnixTime};

/// A record to append; `seq`, `prev_hash`, `personal_digest` and `hash` are given by the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditRecord {
    pub time: UnixTime,
    /// The event name (`AuditEvent::name`).
    pub event: String,
    /// `success`, `failure`, `denied` or `info`.
    pub outcome: String,
    pub client_id: Option<String>,
    pub request_id: Option<String>,
    pub acr: Option<String>,
    /// Who acted (an account id, `cli`, `scheduler`, `client:<id>`…).
    pub actor: Option<String>,
    /// The account the event is about.
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The event's own fields, as a JSON object.
    pub details: String,
}

/// A record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAuditRecord {
    /// 1, 2, 3… without gaps: a gap is a deletion.
    pub seq: i64,
    pub time: UnixTime,
    pub event: String,
    pub outcome: String,
    pub client_id: Option<String>,
    pub request_id: Option<String>,
    pub acr: Option<String>,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: String,
    /// SHA-256 (hex) of the personal fields as first written.
    pub personal_digest: String,
    /// Set when the personal fields were replaced by a pseudonym (erasure, inactive-account deletion).
    pub pseudonymised_at: Option<UnixTime>,
    /// `hash` of record `seq - 1` (a fixed genesis value for the first record, or the archived
    /// head after a purge).
    pub prev_hash: String,
    pub hash: String,
}

/// A signed statement "the chain had `hash` at `seq`", written periodically by the writer so that
/// truncation and wholesale rewriting are detected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub seq: i64,
    pub hash: String,
    pub time: UnixTime,
    /// The signing key that signed `jws`.
    pub kid: String,
    /// Compact JWS over `{seq, hash, time}`.
    pub jws: String,
}

/// Filters of an audit search (admin API, export). `None` fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub since: Option<UnixTime>,
    pub until: Option<UnixTime>,
    pub event: Option<String>,
    /// Matches records whose actor or subject is this account id (bare, or `account:<id>` as
    /// administrators' actions name their actor).
    pub account_id: Option<String>,
    pub client_id: Option<String>,
    pub outcome: Option<String>,
    /// Keyset pagination: records with `seq` greater than this.
    pub after_seq: Option<i64>,
    /// Keyset pagination of the newest-first order: records with `seq` lower than this (ignored
    /// when `after_seq` is set).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// A signed statement "records up to `seq` (whose last had `hash`) were archived and purged": the
/// remaining log verifies from record `seq + 1`, whose `prev_hash` must be `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditAnchor {
    pub seq: i64,
    pub hash: String,
    /// When the purge happened.
    pub time: UnixTime,
    /// How many records the purge removed (those after the previous anchor).
    pub records: i64,
    /// SHA-256 (hex) of the archive file the purged records were written to. Not signed (the
    /// archive holds the signed anchor, so it cannot cover its own digest); the `audit_purged`
    /// record, which is chained, carries it too.
    pub archive_sha256: String,
    pub kid: String,
    /// Compact JWS over `{kind: "anchor", seq, hash, time, records}`.
    pub jws: String,
}

/// The key material a checkpoint or anchor needs to be verified, copied from the signing keys on
/// first use (signing keys rotate and are purged; the audit log outlives them). `private_sealed`
/// is the sealed private key exactly as in `signing_keys` (AAD: the kid): verification accepts the
/// key only if it opens under the master key and matches `public_jwk`, so that write access to the
/// database alone cannot introduce a key of one's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditKey {
    pub kid: String,
    pub alg: String,
    pub public_jwk: String,
    pub private_sealed: Vec<u8>,
    pub created_at: UnixTime,
}

/// The chain's extent, read in one statement (one snapshot): the head row, kept by `append` in
/// the same transaction as the records, and the lowest and highest `seq` actually present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainSnapshot {
    /// `(seq, hash)` of the head row (`(0, GENESIS)` on a fresh log).
    pub head_seq: i64,
    pub head_hash: String,
    pub min_seq: Option<i64>,
    pub max_seq: Option<i64>,
}

/// How many records of one event fell in one hour: a point of the admin dashboard's trends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourlyEventCount {
    /// The hour: `time / 3600` (it starts at `hour * 3600`, Unix seconds).
    pub hour: i64,
    pub event: String,
    /// Whether the records name the factor `password` in `details` (`"factor":"password"`): splits
    /// failed logins into wrong passwords and wrong one-time codes without a JSON function, which
    /// SQLite and PostgreSQL spell differently. False for events without a factor.
    pub password_factor: bool,
    pub count: i64,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `batch` after the current head of the chain, atomically, computing each record's
    /// links with `crate::audit::chain`. Several instances may append concurrently (PostgreSQL):
    /// the head is locked for the transaction so that they form one chain. Returns the stored
    /// records.
    async fn append(&self, batch: &[NewAuditRecord]) -> StoreResult<Vec<StoredAuditRecord>>;
    /// Records in `seq` order, from `from_seq` (inclusive), at most `limit`.
    async fn records_from(&self, from_seq: i64, limit: i64) -> StoreResult<Vec<StoredAuditRecord>>;
    /// Filtered records, newest first unless `after_seq` is set (then ascending from it).
    async fn search(&self, query: &AuditQuery) -> StoreResult<Vec<StoredAuditRecord>>;
    /// Every record whose actor or subject is `account_id` (bare or `account:<id>`), in `seq` order
    /// (person export).
    async fn records_about(&self, account_id: &str) -> StoreResult<Vec<StoredAuditRecord>>;
    /// Replaces the personal fields of every record whose actor or subject is `account_id` (bare
    /// or `account:<id>`): actor/subject → `pseudonym`, ip and user agent cleared, and every
    /// occurrence of each string of `identifiers` (id, idNat, email, login…) in `details` →
    /// `pseudonym`. Keeps `personal_digest`; sets `pseudonymised_at`. Returns how many changed.
    async fn pseudonymise(
        &self,
        account_id: &str,
        pseudonym: &str,
        identifiers: &[String],
        at: UnixTime,
    ) -> StoreResult<u64>;
    async fn insert_checkpoint(&self, checkpoint: &AuditCheckpoint) -> StoreResult<()>;
    /// Every checkpoint, in `seq` order.
    async fn checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>>;
    /// The last record's `seq` and `hash` (`None`: empty log).
    async fn head(&self) -> StoreResult<Option<(i64, String)>>;

    // Added for the writer, verification and retention.

    /// The head row and the extent of the records, in one snapshot (see [`ChainSnapshot`]).
    async fn snapshot(&self) -> StoreResult<ChainSnapshot>;
    /// The checkpoint with the highest `seq`.
    async fn last_checkpoint(&self) -> StoreResult<Option<AuditCheckpoint>>;
    /// Stores a checkpoint key unless one with its kid is there already.
    async fn insert_key(&self, key: &AuditKey) -> StoreResult<()>;
    /// Every checkpoint key.
    async fn keys(&self) -> StoreResult<Vec<AuditKey>>;
    /// Every purge anchor, in `seq` order.
    async fn anchors(&self) -> StoreResult<Vec<AuditAnchor>>;
    /// The highest `seq` of the records written before `before` (the end of a purge).
    async fn last_seq_before(&self, before: UnixTime) -> StoreResult<Option<i64>>;
    /// Purges atomically: deletes the records and checkpoints up to `anchor.seq` and stores the
    /// anchor. Refuses (`Conflict`) unless record `anchor.seq` is there with hash `anchor.hash`.
    /// Returns how many records were deleted.
    async fn purge(&self, anchor: &AuditAnchor) -> StoreResult<u64>;

    // Added for the admin dashboard's indicators.

    /// Records of `events` written from `since` (included) to `until` (excluded), counted per
    /// hour, event and whether their factor is the password. Hours without records are absent.
    async fn hourly_counts(
        &self,
        events: &[&str],
        since: UnixTime,
        until: UnixTime,
    ) -> StoreResult<Vec<HourlyEventCount>>;
}

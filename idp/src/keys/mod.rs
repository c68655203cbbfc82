//! Signing keys, the JWKS, rotation, and encryption of secrets at rest.
//!
//! * [`MasterKey`] seals secrets (private signing keys, TOTP secrets …) with AES-256-GCM before they
//!   reach the database. It comes from `keys.master_key` / `HABILIS_KEYS__MASTER_KEY`, or from a file
//!   created (mode 0600) on first start — and never again once the database holds sealed keys.
//! * [`KeyManager`] holds the published key set (JWKS) and one prepared signer per algorithm, swapped
//!   atomically when the store changes: every instance re-reads the store periodically, so a rotation
//!   done with the CLI reaches all of them without a restart.
//! * [`rotate`], [`retire`], [`purge`] and [`describe`] are the administrative operations behind
//!   `habilis keys rotate|retire|list`; they work on the store directly, without a running server.
//!
//! Life of a key: created *pending* (published, not signing) → *active* (signs from `activates_at`)
//! → *retired* (no longer signs, still published until every token it signed has expired) →
//! *expired* (removed from the JWKS, then purged from the store).

mod admin;
mod jwk;
mod manager;
mod master;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::config::SigningAlg;
use crate::store::{StoreError, UnixTime};

pub use admin::{KeyState, KeyStatus, default_activation, describe, purge, retire, rotate};
pub use jwk::thumbprint;
pub use manager::KeyManager;
pub use master::{MasterKey, MasterKeySource};

/// Everything that can go wrong with keys. Messages are meant for operators (logs, CLI output): they
/// say what to do, and never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    #[error(
        "the database holds signing keys sealed under a master key that is not available: {} does not exist. \
         Restore that file from your backup, or set HABILIS_KEYS__MASTER_KEY (or keys.master_key_file) to the \
         master key in use. Habilis will not generate a new master key over existing keys.",
        path.display()
    )]
    MasterKeyMissing { path: PathBuf },
    #[error("master key file {}: {source}", path.display())]
    MasterKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sealed data could not be opened: wrong master key or corrupted data")]
    Unseal,
    #[error(
        "signing key {kid} cannot be decrypted: wrong master key or corrupted key record; check \
         keys.master_key_file / HABILIS_KEYS__MASTER_KEY — Habilis will not regenerate keys over existing ones"
    )]
    Undecryptable { kid: String },
    #[error("signing key {kid} is invalid: {reason}")]
    CorruptKey { kid: String, reason: String },
    #[error("no active signing key for {}: run `habilis keys rotate --alg {}`", .0.as_str(), .0.as_str())]
    NoActiveKey(SigningAlg),
    #[error("the signing algorithm {} is not enabled (keys.algorithms)", .0.as_str())]
    AlgorithmNotEnabled(SigningAlg),
    #[error("no signing key with kid `{0}`")]
    UnknownKid(String),
    #[error("signing key {kid} is already retired (since {retired_at})")]
    AlreadyRetired { kid: String, retired_at: UnixTime },
    #[error("refusing to retire {kid}: {reason}")]
    RetireRefused { kid: String, reason: String },
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("key operation failed: {0}")]
    Crypto(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A duration in whole seconds as a [`UnixTime`] offset, saturating (durations come from validated
/// configuration, so saturation never happens in practice).
fn secs(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

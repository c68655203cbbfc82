//! Administrative key operations (`habilis keys list|rotate|retire`). They act on the store
//! directly — no running server needed — and running instances pick the changes up at their next
//! reload (`keys.reload_interval`).

use std::time::Duration;

use serde::Serialize;

use super::jwk::generate_record;
use super::manager::{is_retired, published_until, signers_by_alg};
use super::{KeyError, MasterKey, secs};
use crate::config::{Config, SigningAlg};
use crate::store::{SigningKeyRecord, Store, UnixTime};

/// Where a key is in its life, as `habilis keys list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Published, signs from `activates_at`.
    Pending,
    /// Signs for its algorithm.
    Active,
    /// Activated and not retired, but a newer key of its algorithm signs: retire it.
    Superseded,
    /// No longer signs; published until `published_until` so tokens it signed still verify.
    RetiredPublished,
    /// Retired and past retention: no longer published; purged at the next reload.
    Expired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Superseded => "superseded",
            KeyState::RetiredPublished => "retired-published",
            KeyState::Expired => "expired",
        }
    }
}

/// One line of `habilis keys list`. Contains nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    pub kid: String,
    pub alg: String,
    pub state: KeyState,
    pub created_at: UnixTime,
    pub activates_at: UnixTime,
    pub retired_at: Option<UnixTime>,
    /// For retired keys: when they leave the JWKS.
    pub published_until: Option<UnixTime>,
}

/// When a key rotated now should start signing: after `keys.activation_delay`, so that relying
/// parties' cached JWKS already contain it when the first token signed with it arrives.
pub fn default_activation(config: &Config, now: UnixTime) -> UnixTime {
    now.saturating_add(secs(config.keys.activation_delay))
}

/// Creates a key for `alg`, published at once and signing from `activates_at` (see
/// [`default_activation`]; pass `now` for an emergency rotation — a past time counts as `now`).
/// The previous key keeps signing until then; retire it afterwards with [`retire`].
pub async fn rotate(
    store: &dyn Store,
    master: &MasterKey,
    alg: SigningAlg,
    activates_at: UnixTime,
    now: UnixTime,
) -> Result<SigningKeyRecord, KeyError> {
    let record = generate_record(master, alg, now, activates_at.max(now)).await?;
    store.insert_signing_key(&record).await?;
    tracing::info!(kid = %record.kid, alg = alg.as_str(), activates_at = record.activates_at, "rotated: new signing key");
    Ok(record)
}

/// Retires `kid` at `now`: it stops signing (on every instance after its next reload) and stays
/// published for the retention period.
///
/// Refused when an algorithm of `algorithms` (`keys.algorithms`) would be left without an
/// *active* key. That is stricter than "without an active or pending key" on purpose: retiring
/// the active key while its successor is still pending would make signing with that algorithm
/// fail until the successor activates. Not atomic with concurrent retirements (an operator tool).
pub async fn retire(
    store: &dyn Store,
    kid: &str,
    now: UnixTime,
    algorithms: &[SigningAlg],
) -> Result<SigningKeyRecord, KeyError> {
    let records = store.list_signing_keys().await?;
    let Some(target) = records.iter().find(|r| r.kid == kid) else {
        return Err(KeyError::UnknownKid(kid.to_string()));
    };
    if let Some(retired_at) = target.retired_at {
        return Err(KeyError::AlreadyRetired { kid: kid.to_string(), retired_at });
    }
    if let Some(alg) = SigningAlg::parse(&target.alg).filter(|alg| algorithms.contains(alg)) {
        let others: Vec<&SigningKeyRecord> =
            records.iter().filter(|r| r.kid != kid && r.alg == target.alg && !is_retired(r, now)).collect();
        if !others.iter().any(|r| r.activates_at <= now) {
            let alg = alg.as_str();
            let reason = match others.iter().map(|r| r.activates_at).min() {
                Some(at) => format!(
                    "{alg} would have no active signing key until {} (when the pending key activates); retire it \
                     after that, or rotate with immediate activation first",
                    format_time(at)
                ),
                None => format!(
                    "it is the last {alg} key and {alg} is in keys.algorithms; rotate first \
                     (`habilis keys rotate --alg {alg}`) or remove {alg} from keys.algorithms"
                ),
            };
            return Err(KeyError::RetireRefused { kid: kid.to_string(), reason });
        }
    }
    if !store.retire_signing_key(kid, now).await? {
        // Deleted or retired by someone else between our read and our write.
        return Err(KeyError::UnknownKid(kid.to_string()));
    }
    tracing::info!(kid, alg = %target.alg, "retired signing key");
    Ok(SigningKeyRecord { retired_at: Some(now), ..target.clone() })
}

/// Deletes keys retired more than `retention` ago (`Config::longest_signed_token_lifetime`): no
/// unexpired token can carry their kid any more. Returns how many were deleted.
pub async fn purge(store: &dyn Store, now: UnixTime, retention: Duration) -> Result<u64, KeyError> {
    purge_before(store, now, secs(retention)).await
}

pub(super) async fn purge_before(store: &dyn Store, now: UnixTime, retention: i64) -> Result<u64, KeyError> {
    let purged = store.purge_signing_keys(now.saturating_sub(retention)).await?;
    if purged > 0 {
        tracing::info!(purged, "purged expired signing keys");
    }
    Ok(purged)
}

/// The state of each key at `now`, for listing; sorted by algorithm then creation. Uses the same
/// rules as the running key set, so the listing says exactly what the servers do (after reload).
pub fn describe(records: &[SigningKeyRecord], now: UnixTime, retention: Duration) -> Vec<KeyStatus> {
    let retention = secs(retention);
    let signers = signers_by_alg(records, now);
    let mut statuses: Vec<KeyStatus> = records
        .iter()
        .map(|r| {
            let until = published_until(r, retention);
            let state = if is_retired(r, now) {
                if until.is_some_and(|u| u > now) { KeyState::RetiredPublished } else { KeyState::Expired }
            } else if r.activates_at > now {
                KeyState::Pending
            } else if signers.get(r.alg.as_str()).is_some_and(|s| s.kid == r.kid) {
                KeyState::Active
            } else {
                KeyState::Superseded
            };
            KeyStatus {
                kid: r.kid.clone(),
                alg: r.alg.clone(),
                state,
                created_at: r.created_at,
                activates_at: r.activates_at,
                retired_at: r.retired_at,
                published_until: until,
            }
        })
        .collect();
    statuses.sort_by(|a, b| (&a.alg, a.created_at, &a.kid).cmp(&(&b.alg, b.created_at, &b.kid)));
    statuses
}

/// RFC 3339 for operator messages; the raw number if out of range.
fn format_time(at: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| at.to_string())
}

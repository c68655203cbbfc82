//! Recovery codes: the way back in when the second factor (authenticator app, security key) is
//! lost, without an administrator.
//!
//! [`generate`] makes [`CODE_COUNT`] single-use codes of 12 characters (60 random bits) shown once as
//! `xxxx-xxxx-xxxx`, from Crockford's base-32 alphabet: no `i`, `l`, `o` or `u`, so nothing reads
//! as something else, and a typed `o`, `i` or `l` is understood as `0` or `1`. Each code is a
//! credential of kind [`KIND`] whose `secret` is `salt (16 bytes) || SHA-256(salt || code)`: the
//! database never holds a usable code, and with 60 bits per code a stolen hash cannot be reversed by
//! guessing. Generating again replaces every previous code.
//!
//! [`redeem`] normalises what was typed, compares in constant time, and consumes the code
//! atomically: of concurrent redemptions of one code exactly one succeeds, on both backends.
//!
//! Consumption today relies only on what [`Store`] offers: redeeming inserts a tombstone
//! credential (kind `recovery-used`, id `recovery-used:<code id>`) whose primary key can be inserted
//! once. When the store gains `delete_credential`, [`consume`] becomes that one `DELETE` and the
//! tombstones go (see the comments on [`consume`] and [`replace_all`]).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::store::{Credential, Store, StoreError};

/// Credential kind of a recovery code.
pub const KIND: &str = "recovery";
/// Codes per generation.
pub const CODE_COUNT: usize = 10;

/// Kind of the tombstone recording a spent code (until the store can delete one credential).
const USED_KIND: &str = "recovery-used";
/// Crockford's base 32 (lower case): 32 symbols, 5 bits each, without i, l, o, u.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const CODE_LEN: usize = 12;
const GROUP_LEN: usize = 4;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The account has no unused recovery code.
    #[error("no recovery codes are available for this account")]
    NotEnrolled,
    /// Wrong, or already used (also by a concurrent request).
    #[error("this recovery code is not valid")]
    Invalid,
    /// Not 12 characters of the alphabet once spaces and dashes are removed: a typing slip.
    #[error("a recovery code has 12 letters and digits, like 7k3m-x9qa-2bd4")]
    Malformed,
    /// The database failed or holds a damaged code. The detail is for logs only.
    #[error("the service is temporarily unavailable; try again shortly")]
    Storage(String),
}

impl From<StoreError> for RecoveryError {
    fn from(e: StoreError) -> Self {
        RecoveryError::Storage(e.to_string())
    }
}

/// Replaces every recovery code of the account by [`CODE_COUNT`] new ones and returns them, formatted
/// `xxxx-xxxx-xxxx`, for the user to save. They are shown this once: only hashes are kept.
pub async fn generate(store: &dyn Store, account_id: &str, now: i64) -> Result<Zeroizing<Vec<String>>, RecoveryError> {
    let mut codes = Zeroizing::new(Vec::with_capacity(CODE_COUNT));
    let mut credentials = Vec::with_capacity(CODE_COUNT);
    for _ in 0..CODE_COUNT {
        let code = random_code();
        let salt: [u8; SALT_LEN] = rand::random();
        let mut secret = Vec::with_capacity(SALT_LEN + HASH_LEN);
        secret.extend_from_slice(&salt);
        secret.extend_from_slice(&digest(&salt, &code));
        credentials.push(Credential {
            id: uuid::Uuid::new_v4().to_string(),
            account_id: account_id.to_string(),
            kind: KIND.to_string(),
            name: None,
            secret,
            created_at: now,
            last_used_at: None,
        });
        codes.push(format_code(&code));
    }
    replace_all(store, &credentials).await?;
    Ok(codes)
}

/// Redeems one code: on success it can never be used again, and the number of unused codes left is
/// returned (the page should urge generating new ones when it gets low). Failures are for the
/// caller to count in the [`super::throttle`].
pub async fn redeem(store: &dyn Store, account_id: &str, code: &str, now: i64) -> Result<usize, RecoveryError> {
    let code = normalise(code).ok_or(RecoveryError::Malformed)?;
    let unused = unused_codes(store, account_id).await?;
    if unused.is_empty() {
        return Err(RecoveryError::NotEnrolled);
    }
    // Every unused code is compared (no early exit) and each comparison is constant-time, so the
    // time taken says nothing about which code, if any, was close.
    let mut matched: Option<&Credential> = None;
    for credential in &unused {
        let Some((salt, hash)) = split_secret(&credential.secret) else {
            return Err(RecoveryError::Storage(format!("recovery code {} is damaged", credential.id)));
        };
        if bool::from(digest(salt, &code).as_slice().ct_eq(hash)) {
            matched = matched.or(Some(credential));
        }
    }
    let Some(credential) = matched else {
        return Err(RecoveryError::Invalid);
    };
    if !consume(store, credential, now).await? {
        // Another request consumed it between our read and now.
        return Err(RecoveryError::Invalid);
    }
    Ok(unused_codes(store, account_id).await?.len())
}

/// How many unused recovery codes the account has (for the settings page and the journey: offer
/// "use a recovery code" only when there are some).
pub async fn remaining(store: &dyn Store, account_id: &str) -> Result<usize, RecoveryError> {
    Ok(unused_codes(store, account_id).await?.len())
}

/// The account's recovery codes not yet consumed.
async fn unused_codes(store: &dyn Store, account_id: &str) -> Result<Vec<Credential>, RecoveryError> {
    let codes = store.credentials_of(account_id, KIND).await?;
    let used = store.credentials_of(account_id, USED_KIND).await?;
    Ok(codes.into_iter().filter(|c| !used.iter().any(|u| u.id == tombstone_id(&c.id))).collect())
}

fn tombstone_id(credential_id: &str) -> String {
    format!("{USED_KIND}:{credential_id}")
}

/// Marks `credential` as spent; returns whether this call did it (false: someone else did first).
///
/// Atomic through the primary key: the tombstone's id can be inserted once, on SQLite and
/// PostgreSQL alike. With a store method `delete_credential(account_id, id) -> bool` this becomes
/// `store.delete_credential(&credential.account_id, &credential.id).await` and [`unused_codes`] a
/// plain `credentials_of(account_id, KIND)`.
async fn consume(store: &dyn Store, credential: &Credential, now: i64) -> Result<bool, RecoveryError> {
    let tombstone = Credential {
        id: tombstone_id(&credential.id),
        account_id: credential.account_id.clone(),
        kind: USED_KIND.to_string(),
        name: None,
        secret: Vec::new(),
        created_at: now,
        last_used_at: Some(now),
    };
    match store.insert_credential(&tombstone).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the account's recovery codes by `credentials` (all of [`KIND`], same account, at least
/// one). `replace_credentials` removes every previous code and inserts the first new one in one
/// transaction, so old codes stop working at once; the others follow. If that is interrupted the
/// call fails and the user, who has not been shown the codes, generates again. With a store method
/// `replace_credential_set(account_id, kind, &[Credential])` (one transaction) this is one call.
async fn replace_all(store: &dyn Store, credentials: &[Credential]) -> Result<(), RecoveryError> {
    let Some((first, rest)) = credentials.split_first() else {
        return Ok(());
    };
    store.replace_credentials(first).await?;
    for credential in rest {
        store.insert_credential(credential).await?;
    }
    Ok(())
}

/// 12 characters drawn uniformly from [`ALPHABET`] by the thread CSPRNG.
fn random_code() -> Zeroizing<String> {
    let bytes: Zeroizing<[u8; CODE_LEN]> = Zeroizing::new(rand::random());
    // 32 divides 256: masking keeps the draw uniform.
    Zeroizing::new(bytes.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])).collect())
}

/// `7k3mx9qa2bd4` → `7k3m-x9qa-2bd4`.
fn format_code(code: &str) -> String {
    let mut out = String::with_capacity(CODE_LEN + CODE_LEN / GROUP_LEN);
    for (i, c) in code.chars().enumerate() {
        if i > 0 && i % GROUP_LEN == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// The canonical form of what the user typed: case folded, spaces and dashes (including the
/// typographic ones word processors put in) removed, `o` read as `0` and `i`/`l` as `1`. `None` unless
/// exactly 12 alphabet characters remain.
fn normalise(input: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(CODE_LEN));
    for c in input.chars() {
        if c.is_whitespace() || matches!(c, '-' | '_' | '\u{2010}'..='\u{2015}' | '\u{2212}') {
            continue;
        }
        let c = match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        if out.len() == CODE_LEN {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

fn digest(salt: &[u8], code: &str) -> [u8; HASH_LEN] {
    Sha256::new().chain_update(salt).chain_update(code.as_bytes()).finalize().into()
}

fn split_secret(secret: &[u8]) -> Option<(&[u8], &[u8])> {
    (secret.len() == SALT_LEN + HASH_LEN).then(|| secret.split_at(SALT_LEN))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use tokio::sync::Barrier;
    use tokio::task::JoinSet;

    use super::*;
    use crate::authn::throttle::test_backends::{account, stores};

    const NOW: i64 = 1_700_000_000;

    #[tokio::test]
    async fn ten_readable_distinct_codes_stored_hashed() {
        for (store, _dir) in stores().await {
            let acct = account(store.as_ref()).await;
            let codes = generate(store.as_ref(), &acct, NOW).await.unwrap();
            assert_eq!(codes.len(), CODE_COUNT);
            assert_eq!(codes.iter().collect::<HashSet<_>>().len(), CODE_COUNT);
            for code in codes.iter() {
                assert_eq!(code.len(), 14, "{code}");
                let groups: Vec<&str> = code.split('-').collect();
                assert_eq!(groups.len(), 3, "{code}");
                assert!(groups.iter().all(|g| g.len() == 4 && g.bytes().all(|b| ALPHABET.contains(&b))), "{code}");
            }
            let stored = store.credentials_of(&acct, KIND).await.unwrap();
            assert_eq!(stored.len(), CODE_COUNT);
            for credential in &stored {
                assert_eq!(credential.secret.len(), SALT_LEN + HASH_LEN);
                for code in codes.iter() {
                    let bare = code.replace('-', "");
                    let hay = &credential.secret;
                    assert!(!hay.windows(bare.len()).any(|w| w == bare.as_bytes()));
                }
            }
            assert_eq!(remaining(store.as_ref(), &acct).await.unwrap(), CODE_COUNT);
        }
    }

    #[tokio::test]
    async fn each_code_works_once() {
        for (store, _dir) in stores().await {
            let backend = store.backend().as_str();
            let acct = account(store.as_ref()).await;
            let codes = generate(store.as_ref(), &acct, NOW).await.unwrap();
            for (i, code) in codes.iter().enumerate() {
                assert_eq!(redeem(store.as_ref(), &acct, code, NOW).await.unwrap(), CODE_COUNT - 1 - i, "{backend}");
                if i + 1 < CODE_COUNT {
                    assert!(matches!(redeem(store.as_ref(), &acct, code, NOW).await, Err(RecoveryError::Invalid)));
                }
            }
            // All spent.
            assert!(matches!(redeem(store.as_ref(), &acct, &codes[0], NOW).await, Err(RecoveryError::NotEnrolled)));
            assert_eq!(remaining(store.as_ref(), &acct).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn wrong_code_other_account_and_no_codes() {
        for (store, _dir) in stores().await {
            let (alice, bob) = (account(store.as_ref()).await, account(store.as_ref()).await);
            assert!(matches!(
                redeem(store.as_ref(), &alice, "aaaa-aaaa-aaaa", NOW).await,
                Err(RecoveryError::NotEnrolled)
            ));
            let codes = generate(store.as_ref(), &alice, NOW).await.unwrap();
            assert!(matches!(redeem(store.as_ref(), &alice, "zzzz-zzzz-zzzz", NOW).await, Err(RecoveryError::Invalid)));
            // Bob cannot use Alice's code, even after getting codes of his own.
            generate(store.as_ref(), &bob, NOW).await.unwrap();
            assert!(matches!(redeem(store.as_ref(), &bob, &codes[0], NOW).await, Err(RecoveryError::Invalid)));
            assert_eq!(redeem(store.as_ref(), &alice, &codes[0], NOW).await.unwrap(), CODE_COUNT - 1);
        }
    }

    #[tokio::test]
    async fn generating_again_replaces_every_previous_code() {
        for (store, _dir) in stores().await {
            let acct = account(store.as_ref()).await;
            let old = generate(store.as_ref(), &acct, NOW).await.unwrap();
            redeem(store.as_ref(), &acct, &old[0], NOW).await.unwrap();
            let new = generate(store.as_ref(), &acct, NOW + 1).await.unwrap();
            assert_eq!(remaining(store.as_ref(), &acct).await.unwrap(), CODE_COUNT);
            for code in old.iter() {
                assert!(matches!(redeem(store.as_ref(), &acct, code, NOW).await, Err(RecoveryError::Invalid)));
            }
            assert_eq!(redeem(store.as_ref(), &acct, &new[3], NOW).await.unwrap(), CODE_COUNT - 1);
        }
    }

    /// Redeeming accepts what people type or paste; the misread-character mapping is checked
    /// deterministically in `normalisation` (a random code may contain no 0 or 1).
    #[tokio::test]
    async fn typed_variants_are_accepted() {
        for (store, _dir) in stores().await {
            let acct = account(store.as_ref()).await;
            let codes = generate(store.as_ref(), &acct, NOW).await.unwrap();
            for (i, code) in codes.iter().take(5).enumerate() {
                let bare = code.replace('-', "");
                let typed = match i {
                    0 => code.to_uppercase(),
                    1 => format!("  {bare}\t"),
                    2 => format!("{} {} {}", &bare[..4], &bare[4..8], &bare[8..]),
                    3 => format!("{}\u{2013}{}\u{2013}{}", &bare[..4], &bare[4..8], &bare[8..]),
                    _ => bare.replace('0', "O").replace('1', "l"),
                };
                assert_eq!(redeem(store.as_ref(), &acct, &typed, NOW).await.unwrap(), CODE_COUNT - 1 - i, "{typed}");
            }
        }
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalise("ABCD-EFGH-JKMN").as_deref().map(String::as_str), Some("abcdefghjkmn"));
        assert_eq!(normalise("oOiI-lL01-2345").as_deref().map(String::as_str), Some("001111012345"));
        for bad in ["", "abcd-efgh-jkm", "abcd-efgh-jkmnp", "abcd-efgh-jkmu", "abcd-efgh-jkm!", "abcd-efgh-jkmé"] {
            assert!(normalise(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn malformed_input_is_refused_before_any_lookup() {
        for (store, _dir) in stores().await {
            let acct = account(store.as_ref()).await;
            generate(store.as_ref(), &acct, NOW).await.unwrap();
            assert!(matches!(redeem(store.as_ref(), &acct, "1234", NOW).await, Err(RecoveryError::Malformed)));
            assert_eq!(remaining(store.as_ref(), &acct).await.unwrap(), CODE_COUNT);
        }
    }

    /// The property the recovery flow relies on: however many requests race to redeem one code,
    /// exactly one succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_redemptions_of_one_code_have_exactly_one_winner() {
        for (store, _dir) in stores().await {
            let backend = store.backend().as_str();
            let acct = account(store.as_ref()).await;
            let codes = generate(store.as_ref(), &acct, NOW).await.unwrap();
            for round in 0..3 {
                let n = 16;
                let barrier = Arc::new(Barrier::new(n));
                let mut tasks = JoinSet::new();
                for _ in 0..n {
                    let (store, barrier, acct, code) =
                        (Arc::clone(&store), Arc::clone(&barrier), acct.clone(), codes[round].clone());
                    tasks.spawn(async move {
                        barrier.wait().await;
                        redeem(store.as_ref(), &acct, &code, NOW).await
                    });
                }
                let results = tasks.join_all().await;
                let wins = results.iter().filter(|r| r.is_ok()).count();
                assert_eq!(wins, 1, "{backend} round {round}: {results:?}");
                assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(RecoveryError::Invalid))), "{results:?}");
            }
            assert_eq!(remaining(store.as_ref(), &acct).await.unwrap(), CODE_COUNT - 3);
        }
    }
}

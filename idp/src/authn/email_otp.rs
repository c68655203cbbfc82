//! One-time codes sent by email (amr `otp`, with `pwd` it makes `eidas1`).
//!
//! A code is 6 uniformly random digits, valid for 10 minutes, bound to one account and one
//! *challenge* (a random id the login page carries). Only its SHA-256 (salted with the challenge id)
//! is kept, under `otp:<challenge id>` in the ephemeral store: a dump of Redis or a debug log shows no
//! code. (That hash only hides codes from casual reading: 10^6 candidates are hashed in well under a
//! second, so the real protections are the short validity and the attempt limit.)
//!
//! Guessing is bounded three ways: 5 attempts per challenge (counted atomically, so concurrent
//! guesses cannot exceed it; the 6th is refused even when right and destroys the challenge), at most
//! one code per minute and five per hour per account, and a new code replaces the previous one.
//! Success consumes the challenge with the store's atomic `take`: of concurrent submissions of the
//! right code exactly one succeeds.
//!
//! Sending the mail is the caller's: [`issue`] returns the code to put in the message.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::ephemeral::{EphemeralError, EphemeralStore};

/// How long an emailed code can be used, in minutes: the default [`EmailOtpPolicy::validity`], and
/// what the mail tells the user.
pub const CODE_LIFETIME_MINUTES: u32 = 10;

/// Limits of the email-code factor. [`EmailOtpPolicy::default`] is the production policy; tests
/// shorten the durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmailOtpPolicy {
    /// How long a code can be used.
    pub validity: Duration,
    /// Verification attempts per challenge; the next one is refused even with the right code.
    pub max_attempts: u32,
    /// Minimum time between two codes for one account.
    pub resend_interval: Duration,
    /// At most this many codes per account in `send_window`.
    pub max_sends: u32,
    pub send_window: Duration,
}

impl Default for EmailOtpPolicy {
    fn default() -> Self {
        EmailOtpPolicy {
            validity: Duration::from_secs(u64::from(CODE_LIFETIME_MINUTES) * 60),
            max_attempts: 5,
            resend_interval: Duration::from_secs(60),
            max_sends: 5,
            send_window: Duration::from_secs(60 * 60),
        }
    }
}

/// What went wrong; the messages can be shown to the user as they are.
#[derive(Debug, thiserror::Error)]
pub enum EmailOtpError {
    #[error("a code was sent recently: wait {retry_after_secs} s before asking for another")]
    ResendTooSoon { retry_after_secs: u64 },
    /// Expired, already used, replaced by a newer code, or never issued: the user asks for a new code.
    #[error("this code has expired or was already used: ask for a new one")]
    Expired,
    #[error("incorrect code ({remaining_attempts} attempts left)")]
    Invalid { remaining_attempts: u32 },
    #[error("too many incorrect codes: ask for a new one")]
    TooManyAttempts,
    /// Not six digits: a typing slip, not counted as an attempt.
    #[error("enter the 6-digit code received by email")]
    Malformed,
    /// The ephemeral store failed or holds something unreadable. The detail is for logs only.
    #[error("the service is temporarily unavailable; try again shortly")]
    Storage(String),
}

impl From<EphemeralError> for EmailOtpError {
    fn from(e: EphemeralError) -> Self {
        EmailOtpError::Storage(e.to_string())
    }
}

/// A code just issued: the caller mails `code` and keeps `challenge_id` with the login (in the
/// session or a hidden field: it is not secret on its own, it only names the challenge).
pub struct IssuedCode {
    pub challenge_id: String,
    /// The 6 digits, wiped from memory on drop.
    pub code: Zeroizing<String>,
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode").field("challenge_id", &self.challenge_id).field("code", &"******").finish()
    }
}

/// What the ephemeral store keeps for a challenge.
#[derive(Serialize, Deserialize)]
struct Challenge {
    account_id: String,
    /// Hex SHA-256 of `challenge id || ":" || code`.
    code_hash: String,
    issued_at: i64,
}

const CHALLENGE_ID_BYTES: usize = 16;

fn challenge_key(challenge_id: &str) -> String {
    format!("otp:{challenge_id}")
}
fn attempts_key(challenge_id: &str) -> String {
    format!("otp-attempts:{challenge_id}")
}
fn resend_key(account_id: &str) -> String {
    format!("otp-resend:{account_id}")
}
fn sends_key(account_id: &str) -> String {
    format!("otp-sends:{account_id}")
}
fn sends_since_key(account_id: &str) -> String {
    format!("otp-sends-since:{account_id}")
}
fn latest_key(account_id: &str) -> String {
    format!("otp-latest:{account_id}")
}

fn code_hash(challenge_id: &str, code: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(challenge_id.as_bytes())
        .chain_update(b":")
        .chain_update(code.as_bytes())
        .finalize()
        .into()
}

/// Challenge ids are ours (32 lowercase hex digits); anything else is refused before it becomes a
/// store key.
fn is_challenge_id(s: &str) -> bool {
    s.len() == 2 * CHALLENGE_ID_BYTES && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Accepts what people type or paste: surrounding or inner spaces ("123 456"). Six ASCII digits or
/// nothing.
fn normalise(code: &str) -> Option<Zeroizing<String>> {
    let digits: Zeroizing<String> = Zeroizing::new(code.chars().filter(|c| !c.is_whitespace()).collect());
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

fn ceil_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(i64::MAX)
}

fn read_i64(value: Option<Vec<u8>>) -> Option<i64> {
    value.and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()))
}

/// Seconds left until `since + period`, at least 1 (a `Retry-After` of 0 invites a busy loop).
fn retry_after(since: i64, period: Duration, now: i64) -> u64 {
    let left = since.saturating_add(ceil_secs(period)).saturating_sub(now);
    u64::try_from(left.clamp(1, ceil_secs(period).max(1))).unwrap_or(1)
}

/// Issues a code for `account_id` under the default policy. See [`issue_with`].
pub async fn issue(ephemeral: &dyn EphemeralStore, account_id: &str, now: i64) -> Result<IssuedCode, EmailOtpError> {
    issue_with(&EmailOtpPolicy::default(), ephemeral, account_id, now).await
}

/// Issues a code for `account_id`: enforces the resend limits, stores the hashed code for
/// `validity`, and invalidates the account's previous pending code (only the latest mail works, so
/// the attempt limit cannot be multiplied by asking for more codes).
pub async fn issue_with(
    policy: &EmailOtpPolicy,
    ephemeral: &dyn EphemeralStore,
    account_id: &str,
    now: i64,
) -> Result<IssuedCode, EmailOtpError> {
    issue_inner(policy, ephemeral, account_id, now, false).await
}

/// The first code of a new login: sent even within the resend interval of an earlier login's
/// code (someone logging in again right away must not wait a minute), but it still starts a new
/// interval for resends and counts towards the hourly cap.
pub async fn issue_for_new_login(
    ephemeral: &dyn EphemeralStore,
    account_id: &str,
    now: i64,
) -> Result<IssuedCode, EmailOtpError> {
    issue_inner(&EmailOtpPolicy::default(), ephemeral, account_id, now, true).await
}

async fn issue_inner(
    policy: &EmailOtpPolicy,
    ephemeral: &dyn EphemeralStore,
    account_id: &str,
    now: i64,
    new_login: bool,
) -> Result<IssuedCode, EmailOtpError> {
    // One code per interval: the marker's value is when it was set, to compute the wait.
    let resend = resend_key(account_id);
    if new_login {
        ephemeral.put(&resend, now.to_string().as_bytes(), policy.resend_interval).await?;
    } else if !ephemeral.put_if_absent(&resend, now.to_string().as_bytes(), policy.resend_interval).await? {
        let sent_at = read_i64(ephemeral.get(&resend).await?).unwrap_or(now);
        return Err(EmailOtpError::ResendTooSoon {
            retry_after_secs: retry_after(sent_at, policy.resend_interval, now),
        });
    }
    // At most `max_sends` per window (a fixed window starting with its first code).
    let sent = ephemeral.incr(&sends_key(account_id), policy.send_window).await?;
    if sent == 1 {
        ephemeral.put(&sends_since_key(account_id), now.to_string().as_bytes(), policy.send_window).await?;
    }
    if sent > u64::from(policy.max_sends) {
        let since = read_i64(ephemeral.get(&sends_since_key(account_id)).await?).unwrap_or(now);
        return Err(EmailOtpError::ResendTooSoon { retry_after_secs: retry_after(since, policy.send_window, now) });
    }

    let challenge_id = hex::encode(rand::random::<[u8; CHALLENGE_ID_BYTES]>());
    // `random_range` samples without modulo bias: every code is equally likely.
    let code = Zeroizing::new(format!("{:06}", rand::rng().random_range(0..1_000_000u32)));
    let record = Challenge {
        account_id: account_id.to_string(),
        code_hash: hex::encode(code_hash(&challenge_id, &code)),
        issued_at: now,
    };
    let record = serde_json::to_vec(&record).map_err(|e| EmailOtpError::Storage(e.to_string()))?;

    let latest = latest_key(account_id);
    if let Some(previous) = ephemeral.get(&latest).await?
        && let Ok(previous) = std::str::from_utf8(&previous)
        && is_challenge_id(previous)
    {
        ephemeral.delete(&challenge_key(previous)).await?;
    }
    ephemeral.put(&challenge_key(&challenge_id), &record, policy.validity).await?;
    ephemeral.put(&latest, challenge_id.as_bytes(), policy.validity).await?;
    Ok(IssuedCode { challenge_id, code })
}

/// Verifies `code` for the challenge under the default policy. See [`verify_with`].
pub async fn verify(
    ephemeral: &dyn EphemeralStore,
    challenge_id: &str,
    account_id: &str,
    code: &str,
) -> Result<(), EmailOtpError> {
    verify_with(&EmailOtpPolicy::default(), ephemeral, challenge_id, account_id, code).await
}

/// Verifies `code` for the challenge `challenge_id` issued to `account_id`, consuming the challenge
/// on success. Each call with a well-formed code counts as an attempt, right or wrong, and the
/// count is atomic; a challenge of another account is just a wrong code.
pub async fn verify_with(
    policy: &EmailOtpPolicy,
    ephemeral: &dyn EphemeralStore,
    challenge_id: &str,
    account_id: &str,
    code: &str,
) -> Result<(), EmailOtpError> {
    if !is_challenge_id(challenge_id) {
        return Err(EmailOtpError::Expired);
    }
    let code = normalise(code).ok_or(EmailOtpError::Malformed)?;
    let key = challenge_key(challenge_id);
    let attempts_key = attempts_key(challenge_id);
    let Some(stored) = ephemeral.get(&key).await? else {
        // A challenge destroyed for too many attempts keeps saying so while its counter lives.
        let attempts = read_i64(ephemeral.get(&attempts_key).await?).unwrap_or(0);
        return Err(if attempts > i64::from(policy.max_attempts) {
            EmailOtpError::TooManyAttempts
        } else {
            EmailOtpError::Expired
        });
    };
    let record: Challenge = serde_json::from_slice(&stored)
        .map_err(|e| EmailOtpError::Storage(format!("unreadable email OTP challenge: {e}")))?;

    // Counted before comparing, atomically: concurrent guesses each get a distinct number, so no
    // more than `max_attempts` of them are ever compared. The counter outlives the challenge (it is
    // created later with the same TTL).
    let attempts = ephemeral.incr(&attempts_key, policy.validity).await?;
    if attempts > u64::from(policy.max_attempts) {
        ephemeral.delete(&key).await?;
        return Err(EmailOtpError::TooManyAttempts);
    }

    let expected = hex::decode(&record.code_hash).unwrap_or_default();
    let presented = code_hash(challenge_id, &code);
    let right_code: bool = presented.as_slice().ct_eq(&expected).into();
    if !right_code || record.account_id != account_id {
        let remaining = u64::from(policy.max_attempts).saturating_sub(attempts);
        return Err(EmailOtpError::Invalid { remaining_attempts: u32::try_from(remaining).unwrap_or(0) });
    }
    // Right: consume. Of concurrent right submissions only one `take` returns the challenge.
    match ephemeral.take(&key).await? {
        Some(_) => {
            ephemeral.delete(&attempts_key).await?;
            Ok(())
        }
        None => Err(EmailOtpError::Expired),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Barrier;
    use tokio::task::JoinSet;

    use super::*;
    use crate::authn::throttle::test_backends::ephemerals;

    const NOW: i64 = 1_700_000_000;

    fn account() -> String {
        uuid::Uuid::new_v4().to_string()
    }

    /// A code other than `code`.
    fn wrong(code: &str) -> String {
        if code == "000000" { "000001".into() } else { "000000".into() }
    }

    #[tokio::test]
    async fn right_code_works_once() {
        for eph in ephemerals().await {
            let acct = account();
            let issued = issue(eph.as_ref(), &acct, NOW).await.unwrap();
            assert_eq!(issued.code.len(), 6);
            assert!(issued.code.bytes().all(|b| b.is_ascii_digit()));
            verify(eph.as_ref(), &issued.challenge_id, &acct, &issued.code).await.unwrap();
            // Replay of the same code and challenge.
            assert!(matches!(
                verify(eph.as_ref(), &issued.challenge_id, &acct, &issued.code).await,
                Err(EmailOtpError::Expired)
            ));
        }
    }

    #[tokio::test]
    async fn code_is_stored_hashed() {
        for eph in ephemerals().await {
            let acct = account();
            let issued = issue(eph.as_ref(), &acct, NOW).await.unwrap();
            let stored = eph.get(&challenge_key(&issued.challenge_id)).await.unwrap().unwrap();
            let text = String::from_utf8(stored).unwrap();
            assert!(!text.contains(issued.code.as_str()), "{text}");
            assert!(text.contains(&hex::encode(code_hash(&issued.challenge_id, &issued.code))));
        }
    }

    #[tokio::test]
    async fn spaces_are_tolerated_and_non_digits_are_malformed() {
        for eph in ephemerals().await {
            let acct = account();
            let issued = issue(eph.as_ref(), &acct, NOW).await.unwrap();
            for bad in ["", "12345", "1234567", "12345a", "１２３４５６"] {
                assert!(
                    matches!(
                        verify(eph.as_ref(), &issued.challenge_id, &acct, bad).await,
                        Err(EmailOtpError::Malformed)
                    ),
                    "{bad}"
                );
            }
            // Malformed input did not use up attempts.
            assert_eq!(eph.get(&attempts_key(&issued.challenge_id)).await.unwrap(), None);
            let spaced = format!(" {} {} ", &issued.code[..3], &issued.code[3..]);
            verify(eph.as_ref(), &issued.challenge_id, &acct, &spaced).await.unwrap();
        }
    }

    #[tokio::test]
    async fn wrong_code_counts_down_then_sixth_attempt_is_refused_even_when_right() {
        for eph in ephemerals().await {
            let acct = account();
            let issued = issue(eph.as_ref(), &acct, NOW).await.unwrap();
            let bad = wrong(&issued.code);
            for remaining in (0..5).rev() {
                let result = verify(eph.as_ref(), &issued.challenge_id, &acct, &bad).await;
                assert!(
                    matches!(result, Err(EmailOtpError::Invalid { remaining_attempts }) if remaining_attempts == remaining),
                    "{} {result:?}",
                    eph.kind()
                );
            }
            assert!(matches!(
                verify(eph.as_ref(), &issued.challenge_id, &acct, &issued.code).await,
                Err(EmailOtpError::TooManyAttempts)
            ));
            // The challenge is destroyed, and keeps answering "too many attempts".
            assert_eq!(eph.get(&challenge_key(&issued.challenge_id)).await.unwrap(), None);
            assert!(matches!(
                verify(eph.as_ref(), &issued.challenge_id, &acct, &issued.code).await,
                Err(EmailOtpError::TooManyAttempts)
            ));
        }
    }

    #[tokio::test]
    async fn another_accounts_challenge_is_a_wrong_code() {
        for eph in ephemerals().await {
            let (alice, mallory) = (account(), account());
            let issued = issue(eph.as_ref(), &alice, NOW).await.unwrap();
            assert!(matches!(
                verify(eph.as_ref(), &issued.challenge_id, &mallory, &issued.code).await,
                Err(EmailOtpError::Invalid { remaining_attempts: 4 })
            ));
            verify(eph.as_ref(), &issued.challenge_id, &alice, &issued.code).await.unwrap();
        }
    }

    #[tokio::test]
    async fn unknown_and_garbage_challenges_are_expired() {
        for eph in ephemerals().await {
            let acct = account();
            for id in ["", "nope", "../../etc", &"0".repeat(32), &"A".repeat(32)] {
                assert!(matches!(verify(eph.as_ref(), id, &acct, "123456").await, Err(EmailOtpError::Expired)), "{id}");
            }
        }
    }

    #[tokio::test]
    async fn code_expires() {
        let policy = EmailOtpPolicy { validity: Duration::from_millis(400), ..EmailOtpPolicy::default() };
        for eph in ephemerals().await {
            let acct = account();
            let issued = issue_with(&policy, eph.as_ref(), &acct, NOW).await.unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert!(matches!(
                verify_with(&policy, eph.as_ref(), &issued.challenge_id, &acct, &issued.code).await,
                Err(EmailOtpError::Expired)
            ));
        }
    }

    #[tokio::test]
    async fn resend_is_throttled_per_minute() {
        for eph in ephemerals().await {
            let acct = account();
            issue(eph.as_ref(), &acct, NOW).await.unwrap();
            assert!(matches!(
                issue(eph.as_ref(), &acct, NOW).await,
                Err(EmailOtpError::ResendTooSoon { retry_after_secs: 60 })
            ));
            assert!(matches!(
                issue(eph.as_ref(), &acct, NOW + 45).await,
                Err(EmailOtpError::ResendTooSoon { retry_after_secs: 15 })
            ));
            // Another account is not affected.
            issue(eph.as_ref(), &account(), NOW).await.unwrap();
        }
    }

    #[tokio::test]
    async fn at_most_five_codes_per_hour_and_a_new_code_replaces_the_previous() {
        let policy = EmailOtpPolicy { resend_interval: Duration::from_millis(300), ..EmailOtpPolicy::default() };
        for eph in ephemerals().await {
            let acct = account();
            let mut issued = Vec::new();
            for i in 0..5 {
                issued.push(issue_with(&policy, eph.as_ref(), &acct, NOW + i).await.unwrap());
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            assert!(matches!(
                issue_with(&policy, eph.as_ref(), &acct, NOW + 600).await,
                Err(EmailOtpError::ResendTooSoon { retry_after_secs: 3000 })
            ));
            // Only the latest code works.
            for old in &issued[..4] {
                assert!(matches!(
                    verify_with(&policy, eph.as_ref(), &old.challenge_id, &acct, &old.code).await,
                    Err(EmailOtpError::Expired)
                ));
            }
            let last = &issued[4];
            verify_with(&policy, eph.as_ref(), &last.challenge_id, &acct, &last.code).await.unwrap();
        }
    }

    /// Several submissions of the right code at once (a double click, or an attacker racing the
    /// user): exactly one succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_right_codes_have_exactly_one_winner() {
        for eph in ephemerals().await {
            for _round in 0..5 {
                let acct = account();
                let issued = issue(eph.as_ref(), &acct, NOW).await.unwrap();
                let tasks_n = 5; // = max attempts: every submission is compared.
                let barrier = Arc::new(Barrier::new(tasks_n));
                let mut tasks = JoinSet::new();
                for _ in 0..tasks_n {
                    let (eph, barrier, acct) = (Arc::clone(&eph), Arc::clone(&barrier), acct.clone());
                    let (id, code) = (issued.challenge_id.clone(), issued.code.to_string());
                    tasks.spawn(async move {
                        barrier.wait().await;
                        verify(eph.as_ref(), &id, &acct, &code).await
                    });
                }
                let results = tasks.join_all().await;
                assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{}: {results:?}", eph.kind());
                assert!(results.iter().all(|r| matches!(r, Ok(()) | Err(EmailOtpError::Expired))), "{results:?}");
            }
        }
    }

    #[test]
    fn retry_after_is_never_zero_and_debug_hides_the_code() {
        assert_eq!(retry_after(NOW, Duration::from_secs(60), NOW), 60);
        assert_eq!(retry_after(NOW, Duration::from_secs(60), NOW + 100), 1);
        assert_eq!(retry_after(NOW, Duration::from_millis(300), NOW), 1);
        let issued = IssuedCode { challenge_id: "c".into(), code: Zeroizing::new("123456".into()) };
        assert!(!format!("{issued:?}").contains("123456"));
    }
}

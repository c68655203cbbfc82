//! Authenticator apps (RFC 6238 TOTP, amr `otp`; with `pwd` it makes `eidas1`).
//!
//! Parameters are the ones every app understands: HMAC-SHA-1, 6 digits, 30-second steps, a 160-bit
//! random secret, issuer "Habilis". Apps that are offered SHA-256 sometimes silently use SHA-1, so
//! nothing else is worth it.
//!
//! Enrolment is two steps: [`begin_enrolment`] makes a secret and its QR code (nothing stored), and
//! [`confirm_enrolment`] stores it only once the user has proved their app computes the same codes.
//! The secret is stored sealed under the master key (AES-256-GCM) with the credential id as AAD, so
//! the database alone yields nothing and a sealed secret copied to another row does not open.
//!
//! [`verify`] accepts the current step and one on each side (clock drift, slow typing), compares in
//! constant time, and accepts each (credential, step) once (RFC 6238 §5.2): a step is claimed
//! atomically in the ephemeral store, and a step at or before the last one accepted is refused too, so
//! a code seen over the user's shoulder cannot be used after the user's own, newer one.

use std::time::Duration;

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Secret, Totp};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ephemeral::{EphemeralError, EphemeralStore};
use crate::keys::MasterKey;
use crate::store::{Credential, Store, StoreError};

/// Credential kind of an authenticator app.
pub const KIND: &str = "totp";
/// Shown by the app next to the account name.
pub const ISSUER: &str = "Habilis";

const STEP_SECS: u64 = 30;
const DIGITS: u8 = 6;
const SECRET_LEN: usize = 20;
/// Steps accepted on each side of the current one.
const SKEW: u16 = 1;
/// How long replay markers live. A step is acceptable until the end of the step after it, at most
/// 90 s after it is first accepted (when the client clock is a step ahead); 120 s covers that.
const REPLAY_TTL: Duration = Duration::from_secs(120);
/// The account label in the app; longer ones are cut (and would make a denser QR code).
const MAX_LABEL_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("no authenticator app is set up for this account")]
    NotEnrolled,
    #[error("incorrect or expired code")]
    Invalid,
    /// The right code, already accepted once: the user waits for the next one.
    #[error("this code has already been used: wait for the next one")]
    Replayed,
    /// Not six digits: a typing slip.
    #[error("enter the 6-digit code shown by your authenticator app")]
    Malformed,
    /// The database or ephemeral store failed, or a sealed secret does not open (wrong master key,
    /// damaged row). The detail is for logs only.
    #[error("the service is temporarily unavailable; try again shortly")]
    Storage(String),
    /// A bug or bad input from the caller (e.g. a pending secret that is not ours). For logs only.
    #[error("an internal error occurred")]
    Internal(String),
}

impl From<StoreError> for TotpError {
    fn from(e: StoreError) -> Self {
        TotpError::Storage(e.to_string())
    }
}

impl From<EphemeralError> for TotpError {
    fn from(e: EphemeralError) -> Self {
        TotpError::Storage(e.to_string())
    }
}

impl From<totp_rs::TotpError> for TotpError {
    fn from(e: totp_rs::TotpError) -> Self {
        TotpError::Internal(format!("totp: {e:?}"))
    }
}

/// A secret being enrolled, for the enrolment page. Everything in it reveals the secret, so it is
/// wiped on drop and not printable.
///
/// Keep `secret_base32` on the server between the two steps (e.g. in the login session), not in a
/// hidden form field: a forged confirmation carrying an attacker's secret would otherwise enrol the
/// attacker's app on the victim's account if CSRF protection ever failed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PendingTotp {
    /// The secret in base 32 (RFC 4648, 32 characters), for typing into an app by hand.
    pub secret_base32: String,
    /// `otpauth://totp/Habilis:<label>?secret=…&issuer=Habilis`, for a link on mobile.
    pub otpauth_uri: String,
    /// The URI as a QR code: a bare `<svg>` element (no XML prolog) made only of a rectangle and
    /// a path of numbers, so it can be embedded inline (`|safe` in the template) without scripts,
    /// styles or links. Give it an accessible name in the page (e.g. `role="img" aria-label`).
    pub qr_svg: String,
}

impl std::fmt::Debug for PendingTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingTotp(..)")
    }
}

/// Starts enrolling an authenticator app: a fresh 160-bit secret, its `otpauth` URI and QR code.
/// Nothing is stored. `account_label` is what the app shows under "Habilis" (the login or email);
/// colons, which the URI format forbids, and control characters are removed.
pub fn begin_enrolment(account_label: &str) -> Result<PendingTotp, TotpError> {
    let secret = Zeroizing::new(rand::random::<[u8; SECRET_LEN]>());
    let totp = totp(&secret, Some(&label(account_label)))?;
    let otpauth_uri = totp.to_url()?;
    let qr_svg = qr_svg(&otpauth_uri)?;
    Ok(PendingTotp { secret_base32: totp.secret().to_base32(), otpauth_uri, qr_svg })
}

/// Rebuilds the page data (URI, QR code) of a pending secret, e.g. to show the enrolment page
/// again after a mistyped confirmation code.
pub fn pending_from_secret(secret_base32: &str, account_label: &str) -> Result<PendingTotp, TotpError> {
    let bytes = decode_secret(secret_base32).ok_or(TotpError::Malformed)?;
    let totp = totp(&bytes, Some(&label(account_label)))?;
    let otpauth_uri = totp.to_url()?;
    let qr_svg = qr_svg(&otpauth_uri)?;
    Ok(PendingTotp { secret_base32: secret_base32.to_string(), otpauth_uri, qr_svg })
}

/// Completes enrolment when `code` is valid for `pending_secret` (the `secret_base32` of
/// [`begin_enrolment`]) at `now`: stores the sealed secret as the account's authenticator app,
/// replacing any previous one, and returns the new credential id. The caller must have
/// authenticated the account (and asked for the old factor before replacing one).
///
/// The confirmation code is not recorded as used: it proves the app, it does not log in.
pub async fn confirm_enrolment(
    store: &dyn Store,
    master: &MasterKey,
    account_id: &str,
    pending_secret: &str,
    code: &str,
    now: i64,
) -> Result<String, TotpError> {
    let code = normalise(code).ok_or(TotpError::Malformed)?;
    let secret = decode_secret(pending_secret)
        .ok_or_else(|| TotpError::Internal("the pending TOTP secret is not 20 bytes of base 32".into()))?;
    if matching_steps(&totp(&secret, None)?, &code, now).is_empty() {
        return Err(TotpError::Invalid);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let sealed = master.seal(secret.as_ref(), &aad(&id)).map_err(|e| TotpError::Internal(format!("sealing: {e}")))?;
    store
        .replace_credentials(&Credential {
            id: id.clone(),
            account_id: account_id.to_string(),
            kind: KIND.to_string(),
            name: None,
            secret: sealed,
            created_at: now,
            last_used_at: None,
        })
        .await?;
    Ok(id)
}

/// Whether the account has an authenticator app (for the journey: which second factors to offer).
pub async fn is_enrolled(store: &dyn Store, account_id: &str) -> Result<bool, TotpError> {
    Ok(!store.credentials_of(account_id, KIND).await?.is_empty())
}

/// Verifies a code from the account's authenticator app at `now`; each code is accepted once.
/// Failures are for the caller to count in the [`super::throttle`].
///
/// `last_used_at` is not updated: the store has no method for it yet.
pub async fn verify(
    store: &dyn Store,
    ephemeral: &dyn EphemeralStore,
    master: &MasterKey,
    account_id: &str,
    code: &str,
    now: i64,
) -> Result<(), TotpError> {
    let code = normalise(code).ok_or(TotpError::Malformed)?;
    let credentials = store.credentials_of(account_id, KIND).await?;
    if credentials.is_empty() {
        return Err(TotpError::NotEnrolled);
    }
    for credential in &credentials {
        let opened = master
            .open(&credential.secret, &aad(&credential.id))
            .map_err(|e| TotpError::Storage(format!("TOTP credential {}: {e}", credential.id)))?;
        let secret: Zeroizing<[u8; SECRET_LEN]> = Zeroizing::new(opened.as_slice().try_into().map_err(|_| {
            TotpError::Storage(format!("TOTP credential {} has a secret of wrong length", credential.id))
        })?);
        let steps = matching_steps(&totp(&secret, None)?, &code, now);
        if steps.is_empty() {
            continue;
        }
        return claim(ephemeral, &credential.id, &steps).await;
    }
    Err(TotpError::Invalid)
}

/// Accepts the latest of `steps` (the steps the code matched, ascending) for `credential_id` unless
/// it was already accepted or is not after the last accepted step.
async fn claim(ephemeral: &dyn EphemeralStore, credential_id: &str, steps: &[u64]) -> Result<(), TotpError> {
    let last_key = format!("totp-last:{credential_id}");
    let last =
        ephemeral.get(&last_key).await?.and_then(|v| std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u64>().ok()));
    let Some(step) = steps.iter().copied().filter(|s| last.is_none_or(|last| *s > last)).max() else {
        return Err(TotpError::Replayed);
    };
    // The atomic part: of concurrent submissions of one code exactly one claims its step.
    if !ephemeral.put_if_absent(&format!("totp-used:{credential_id}:{step}"), b"1", REPLAY_TTL).await? {
        return Err(TotpError::Replayed);
    }
    // Best effort (read-then-write): a concurrent acceptance of another step may leave the lower of
    // the two here; both steps are claimed above all the same, so nothing can be replayed.
    ephemeral.put(&last_key, step.to_string().as_bytes(), REPLAY_TTL).await?;
    Ok(())
}

/// The steps among current−1, current, current+1 whose code is `code`, ascending. Every candidate
/// is computed and compared in constant time.
fn matching_steps(totp: &Totp, code: &str, now: i64) -> Vec<u64> {
    let Ok(now) = u64::try_from(now) else {
        return Vec::new();
    };
    let current = now / STEP_SECS;
    (current.saturating_sub(u64::from(SKEW))..=current.saturating_add(u64::from(SKEW)))
        .filter(|step| {
            let expected = Zeroizing::new(totp.generate(step * STEP_SECS).to_string());
            bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
        })
        .collect()
}

fn totp(secret: &[u8; SECRET_LEN], label: Option<&str>) -> Result<Totp, TotpError> {
    let builder = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_step_duration(STEP_SECS)
        .with_skew(SKEW)
        .with_secret(Secret::new_stack(*secret))
        .with_issuer(Some(ISSUER));
    let builder = match label {
        Some(label) => builder.with_account_name(label),
        None => builder,
    };
    Ok(builder.build()?)
}

/// The label shown in the app: no colon (the URI format's separator), no control characters, at most
/// [`MAX_LABEL_CHARS`]; never empty.
fn label(account_label: &str) -> String {
    let cleaned: String =
        account_label.chars().filter(|c| *c != ':' && !c.is_control()).take(MAX_LABEL_CHARS).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() { "account".to_string() } else { cleaned.to_string() }
}

fn qr_svg(uri: &str) -> Result<String, TotpError> {
    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)
        .map_err(|e| TotpError::Internal(format!("QR code: {e}")))?;
    let mut image = code.render::<svg::Color>().min_dimensions(200, 200).quiet_zone(true).build();
    // Drop the `<?xml …?>` prolog, which has no place inside an HTML document.
    let start = image.find("<svg").ok_or_else(|| TotpError::Internal("QR code: no <svg> element".into()))?;
    let svg = image[start..].to_string();
    image.zeroize();
    Ok(svg)
}

fn decode_secret(base32: &str) -> Option<Zeroizing<[u8; SECRET_LEN]>> {
    let text: Zeroizing<String> =
        Zeroizing::new(base32.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect());
    let secret = Secret::try_from_base32(text.as_str()).ok()?;
    secret.as_bytes().try_into().ok().map(Zeroizing::new)
}

/// Accepts what people type: spaces inside ("123 456") or around. Six ASCII digits or nothing.
fn normalise(code: &str) -> Option<Zeroizing<String>> {
    let digits: Zeroizing<String> = Zeroizing::new(code.chars().filter(|c| !c.is_whitespace()).collect());
    (digits.len() == usize::from(DIGITS) && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// Binds a sealed secret to its credential.
fn aad(credential_id: &str) -> Vec<u8> {
    [b"totp:".as_slice(), credential_id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Barrier;
    use tokio::task::JoinSet;

    use super::*;
    use crate::authn::throttle::test_backends::{account, ephemerals, stores};
    use crate::ephemeral::SharedEphemeral;
    use crate::store::SharedStore;

    /// Mid-step, so that ±1 step is unambiguous.
    const NOW: i64 = 1_700_000_010;
    const STEP: i64 = 30;

    /// The code an app holding `secret_base32` shows at `time`, computed independently with totp-rs.
    fn app_code(secret_base32: &str, time: i64) -> String {
        let secret = Secret::try_from_base32(secret_base32).unwrap();
        let totp = Builder::new().with_secret(secret).build().unwrap();
        totp.generate(u64::try_from(time).unwrap()).to_string()
    }

    fn other_code(code: &str) -> String {
        let n: u32 = code.parse().unwrap();
        format!("{:06}", (n + 1) % 1_000_000)
    }

    /// Every combination of durable and ephemeral backend available.
    async fn backends() -> Vec<(SharedStore, SharedEphemeral, Option<tempfile::TempDir>)> {
        // A store per combination, so that each SQLite store owns its directory.
        let mut out = Vec::new();
        for eph in ephemerals().await {
            for (store, dir) in stores().await {
                out.push((store, Arc::clone(&eph), dir));
            }
        }
        out
    }

    /// An account with an enrolled app; returns (account id, credential id, secret in base 32).
    async fn enrolled(store: &dyn Store, master: &MasterKey) -> (String, String, String) {
        let acct = account(store).await;
        let pending = begin_enrolment("899700427885").unwrap();
        let code = app_code(&pending.secret_base32, NOW);
        let id = confirm_enrolment(store, master, &acct, &pending.secret_base32, &code, NOW).await.unwrap();
        (acct, id, pending.secret_base32.clone())
    }

    #[test]
    fn enrolment_offers_a_standard_uri_and_an_inline_safe_svg() {
        let pending = begin_enrolment("Dr Kit: Doc\n<script>").unwrap();
        assert_eq!(pending.secret_base32.len(), 32);
        assert_eq!(Secret::try_from_base32(&pending.secret_base32).unwrap().as_bytes().len(), SECRET_LEN);
        let uri = &pending.otpauth_uri;
        assert!(uri.starts_with("otpauth://totp/Habilis:Dr%20Kit%20Doc%3Cscript%3E?"), "{uri}");
        assert!(uri.contains(&format!("secret={}", pending.secret_base32)), "{uri}");
        assert!(uri.contains("issuer=Habilis"), "{uri}");
        // Defaults (SHA-1, 6 digits, 30 s) are implied, as the Key URI format recommends.
        assert!(!uri.contains("algorithm=") && !uri.contains("digits=") && !uri.contains("period="), "{uri}");
        // totp-rs reads its own URI back to the same parameters.
        let parsed = Totp::from_url(uri).unwrap();
        assert_eq!((parsed.digits(), parsed.step(), parsed.algorithm()), (6, 30, Algorithm::SHA1));

        let svg = &pending.qr_svg;
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        assert!(svg.ends_with("</svg>"));
        for forbidden in ["<?xml", "script", "href", "style", " on", "<foreignObject", "<!"] {
            assert!(!svg.contains(forbidden), "{forbidden}");
        }
        // Only these elements, and the path data is numbers and commands.
        let elements: Vec<&str> = svg.match_indices('<').map(|(i, _)| &svg[i..i + 5]).collect();
        assert!(elements.iter().all(|e| ["<svg ", "<rect", "<path", "</svg"].contains(e)), "{elements:?}");

        assert_eq!(label(":::"), "account");
        assert_eq!(label(&"é".repeat(100)).chars().count(), MAX_LABEL_CHARS);
        assert_eq!(format!("{pending:?}"), "PendingTotp(..)");
    }

    #[tokio::test]
    async fn confirmation_needs_a_right_code_and_stores_the_secret_sealed() {
        let master = MasterKey::generate();
        for (store, _eph, dir) in backends().await {
            let acct = account(store.as_ref()).await;
            let pending = begin_enrolment("kit@example.org").unwrap();
            let code = app_code(&pending.secret_base32, NOW);
            let wrong = other_code(&code);
            assert!(matches!(
                confirm_enrolment(store.as_ref(), &master, &acct, &pending.secret_base32, &wrong, NOW).await,
                Err(TotpError::Invalid)
            ));
            assert!(matches!(
                confirm_enrolment(store.as_ref(), &master, &acct, &pending.secret_base32, "12x456", NOW).await,
                Err(TotpError::Malformed)
            ));
            assert!(matches!(
                confirm_enrolment(store.as_ref(), &master, &acct, "not base32!", &code, NOW).await,
                Err(TotpError::Internal(_))
            ));
            assert!(!is_enrolled(store.as_ref(), &acct).await.unwrap());
            let id =
                confirm_enrolment(store.as_ref(), &master, &acct, &pending.secret_base32, &code, NOW).await.unwrap();
            assert!(is_enrolled(store.as_ref(), &acct).await.unwrap());

            let raw = Secret::try_from_base32(&pending.secret_base32).unwrap().as_bytes().to_vec();
            let stored = store.credentials_of(&acct, KIND).await.unwrap();
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].id, id);
            assert!(!stored[0].secret.windows(raw.len()).any(|w| w == raw.as_slice()));
            assert_eq!(master.open(&stored[0].secret, &aad(&id)).unwrap().as_slice(), raw.as_slice());
            // Bound to its credential: the sealed blob does not open as another one.
            assert!(master.open(&stored[0].secret, &aad("another-id")).is_err());
            assert!(MasterKey::generate().open(&stored[0].secret, &aad(&id)).is_err());

            // Nothing in the SQLite files (database and WAL) holds the secret, raw or in base 32.
            if let Some(dir) = dir {
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                    assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_slice()));
                    let b32 = pending.secret_base32.as_bytes();
                    assert!(!bytes.windows(b32.len()).any(|w| w == b32));
                }
            }
        }
    }

    #[tokio::test]
    async fn current_and_adjacent_steps_are_accepted_two_away_refused() {
        let master = MasterKey::generate();
        for (store, eph, _dir) in backends().await {
            let (acct, _, secret) = enrolled(store.as_ref(), &master).await;
            let verify_at = |code: String| {
                let (store, eph, acct, master) = (store.clone(), eph.clone(), acct.clone(), &master);
                async move { verify(store.as_ref(), eph.as_ref(), master, &acct, &code, NOW).await }
            };
            for offset in [-2, 2] {
                assert!(
                    matches!(verify_at(app_code(&secret, NOW + offset * STEP)).await, Err(TotpError::Invalid)),
                    "{offset}"
                );
            }
            // In increasing order: each accepted step is after the previous one.
            for offset in [-1, 0, 1] {
                verify_at(app_code(&secret, NOW + offset * STEP)).await.unwrap();
            }
            assert!(matches!(verify_at(other_code(&app_code(&secret, NOW))).await, Err(TotpError::Invalid)));
        }
    }

    #[tokio::test]
    async fn a_code_is_accepted_once_and_older_codes_are_refused_after_a_newer_one() {
        let master = MasterKey::generate();
        for (store, eph, _dir) in backends().await {
            let (acct, _, secret) = enrolled(store.as_ref(), &master).await;
            let now_code = app_code(&secret, NOW);
            verify(store.as_ref(), eph.as_ref(), &master, &acct, &now_code, NOW).await.unwrap();
            // Replay, within the same step and in the next one.
            for at in [NOW, NOW + STEP] {
                assert!(matches!(
                    verify(store.as_ref(), eph.as_ref(), &master, &acct, &now_code, at).await,
                    Err(TotpError::Replayed)
                ));
            }
            // The previous step's code is still in the window but older than the accepted one.
            let previous = app_code(&secret, NOW - STEP);
            assert!(matches!(
                verify(store.as_ref(), eph.as_ref(), &master, &acct, &previous, NOW).await,
                Err(TotpError::Replayed)
            ));
            // The next step's code is fine.
            let next = app_code(&secret, NOW + STEP);
            verify(store.as_ref(), eph.as_ref(), &master, &acct, &next, NOW + STEP).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_submissions_of_one_code_have_exactly_one_winner() {
        let master = Arc::new(MasterKey::generate());
        for (store, eph, _dir) in backends().await {
            let (acct, _, secret) = enrolled(store.as_ref(), &master).await;
            let code = app_code(&secret, NOW);
            let n = 16;
            let barrier = Arc::new(Barrier::new(n));
            let mut tasks = JoinSet::new();
            for _ in 0..n {
                let (store, eph, master, barrier) = (store.clone(), eph.clone(), master.clone(), barrier.clone());
                let (acct, code) = (acct.clone(), code.clone());
                tasks.spawn(async move {
                    barrier.wait().await;
                    verify(store.as_ref(), eph.as_ref(), &master, &acct, &code, NOW).await
                });
            }
            let results = tasks.join_all().await;
            assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
            assert!(results.iter().all(|r| matches!(r, Ok(()) | Err(TotpError::Replayed))), "{results:?}");
        }
    }

    #[tokio::test]
    async fn not_enrolled_malformed_and_spaced_codes() {
        let master = MasterKey::generate();
        for (store, eph, _dir) in backends().await {
            let stranger = account(store.as_ref()).await;
            assert!(matches!(
                verify(store.as_ref(), eph.as_ref(), &master, &stranger, "123456", NOW).await,
                Err(TotpError::NotEnrolled)
            ));
            let (acct, _, secret) = enrolled(store.as_ref(), &master).await;
            for bad in ["", "12345", "1234567", "12345a", "+12345", "１２３４５６"] {
                assert!(
                    matches!(
                        verify(store.as_ref(), eph.as_ref(), &master, &acct, bad, NOW).await,
                        Err(TotpError::Malformed)
                    ),
                    "{bad}"
                );
            }
            let code = app_code(&secret, NOW + STEP);
            let spaced = format!(" {} {} ", &code[..3], &code[3..]);
            verify(store.as_ref(), eph.as_ref(), &master, &acct, &spaced, NOW + STEP).await.unwrap();
        }
    }

    #[tokio::test]
    async fn enrolling_again_replaces_the_previous_app() {
        let master = MasterKey::generate();
        for (store, eph, _dir) in backends().await {
            let (acct, old_id, old_secret) = enrolled(store.as_ref(), &master).await;
            let pending = begin_enrolment("kit").unwrap();
            let code = app_code(&pending.secret_base32, NOW);
            let new_id =
                confirm_enrolment(store.as_ref(), &master, &acct, &pending.secret_base32, &code, NOW).await.unwrap();
            assert_ne!(new_id, old_id);
            assert_eq!(store.credentials_of(&acct, KIND).await.unwrap().len(), 1);
            let old_code = app_code(&old_secret, NOW + STEP);
            assert!(matches!(
                verify(store.as_ref(), eph.as_ref(), &master, &acct, &old_code, NOW + STEP).await,
                Err(TotpError::Invalid)
            ));
            let new_code = app_code(&pending.secret_base32, NOW + STEP);
            verify(store.as_ref(), eph.as_ref(), &master, &acct, &new_code, NOW + STEP).await.unwrap();
        }
    }

    /// With another master key (a misconfigured deployment) verification fails loudly as a storage
    /// error rather than looking like a wrong code.
    #[tokio::test]
    async fn a_secret_that_does_not_open_is_a_storage_error() {
        let master = MasterKey::generate();
        for (store, eph, _dir) in backends().await {
            let (acct, _, secret) = enrolled(store.as_ref(), &master).await;
            let code = app_code(&secret, NOW);
            assert!(matches!(
                verify(store.as_ref(), eph.as_ref(), &MasterKey::generate(), &acct, &code, NOW).await,
                Err(TotpError::Storage(_))
            ));
        }
    }
}

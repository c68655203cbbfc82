//! Keys against a real SQLite store in a temporary data directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::*;
use crate::config::{Config, SigningAlg};
use crate::store::{SharedStore, SigningKeyRecord, connect_with};

const T0: UnixTime = 1_700_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    config: Config,
    store: SharedStore,
}

async fn fixture(algorithms: &[SigningAlg]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    std::fs::create_dir_all(&config.data_dir).unwrap();
    config.keys.algorithms = algorithms.to_vec();
    config.keys.default_algorithm = algorithms[0];
    let store = open_store(&config).await;
    Fixture { dir, config, store }
}

async fn open_store(config: &Config) -> SharedStore {
    let url = format!("sqlite://{}?mode=rwc", config.data_dir.join("habilis.db").display());
    connect_with(&url, 2).await.unwrap()
}

fn retention(config: &Config) -> i64 {
    config.longest_signed_token_lifetime().as_secs() as i64
}

fn claims(iat: UnixTime) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "iss": "https://idp.example.org",
        "sub": "248289761001",
        "aud": ["client-1"],
        "iat": iat,
        "exp": iat + 300,
        "nested": {"n": 1}
    }) else {
        unreachable!()
    };
    map
}

fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn header(token: &str) -> Value {
    segment(token, 0)
}

fn jwks_kids(manager: &KeyManager) -> Vec<String> {
    let (body, _) = manager.jwks();
    let jwks: Value = serde_json::from_slice(&body).unwrap();
    let mut kids: Vec<String> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
    kids.sort();
    kids
}

fn sorted(mut kids: Vec<String>) -> Vec<String> {
    kids.sort();
    kids
}

// ------------------------------------------------------------------------------------------------
// Master key

#[test]
fn seal_open_round_trip() {
    let key = MasterKey::generate();
    let sealed = key.seal(b"private jwk", b"kid-1").unwrap();
    assert_eq!(sealed[0], 1, "format version byte");
    assert_eq!(sealed.len(), 1 + 12 + b"private jwk".len() + 16);
    assert_eq!(&**key.open(&sealed, b"kid-1").unwrap(), b"private jwk");
    // Random nonces: sealing twice never gives the same bytes.
    assert_ne!(sealed, key.seal(b"private jwk", b"kid-1").unwrap());
    // Through base64 and back, the key is the same key.
    let again = MasterKey::from_base64(&key.to_base64()).unwrap();
    assert_eq!(&**again.open(&sealed, b"kid-1").unwrap(), b"private jwk");
}

#[test]
fn open_with_another_master_key_fails() {
    let sealed = MasterKey::generate().seal(b"secret", b"aad").unwrap();
    assert!(matches!(MasterKey::generate().open(&sealed, b"aad"), Err(KeyError::Unseal)));
}

#[test]
fn tampered_sealed_data_fails() {
    let key = MasterKey::generate();
    let sealed = key.seal(b"secret value", b"aad").unwrap();
    for i in 0..sealed.len() {
        let mut tampered = sealed.clone();
        tampered[i] ^= 0x01;
        assert!(key.open(&tampered, b"aad").is_err(), "flipping byte {i} must be detected");
    }
    assert!(key.open(&sealed[..sealed.len() - 1], b"aad").is_err());
    assert!(key.open(&sealed[..5], b"aad").is_err());
    assert!(key.open(&[], b"aad").is_err());
}

#[test]
fn aad_mismatch_fails() {
    let key = MasterKey::generate();
    let sealed = key.seal(b"secret", b"kid-A").unwrap();
    assert!(key.open(&sealed, b"kid-B").is_err());
    assert!(key.open(&sealed, b"").is_err());
}

#[test]
fn from_base64_accepts_common_forms_and_never_echoes_the_value() {
    let key = MasterKey::generate();
    let text = key.to_base64();
    let sealed = key.seal(b"x", b"").unwrap();
    let unpadded = text.trim_end_matches('=').to_string();
    let url_safe = text.replace('+', "-").replace('/', "_");
    for form in [format!("{}\n", *text), format!("  {}  ", *text), unpadded, url_safe] {
        let parsed = MasterKey::from_base64(&form).unwrap();
        assert_eq!(&**parsed.open(&sealed, b"").unwrap(), b"x");
    }
    let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let err = MasterKey::from_base64(&short).unwrap_err().to_string();
    assert!(err.contains("16 bytes"), "{err}");
    assert!(!err.contains(&short), "the error must not repeat the value: {err}");
    let err = MasterKey::from_base64("not base64 at all!").unwrap_err().to_string();
    assert!(!err.contains("at all"), "{err}");
}

#[test]
fn debug_prints_nothing_secret() {
    let key = MasterKey::generate();
    let printed = format!("{key:?} {key:#?}");
    assert!(!printed.contains(&*key.to_base64()));
    assert!(!printed.contains(key.to_base64().trim_end_matches('=')));
    assert_eq!(format!("{key:?}"), "MasterKey(..)");
}

#[test]
fn load_or_create_generates_a_0600_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().join("fresh").join("data"), ..Config::default() };
    let (key, source) = MasterKey::load_or_create(&config, false).unwrap();
    let path = config.master_key_file();
    assert_eq!(source, MasterKeySource::Generated(path.clone()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "master key file mode is {mode:o}");
    let dir_mode = std::fs::metadata(&config.data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "created data dir mode is {dir_mode:o}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(text.trim(), &*key.to_base64());
    // A second call reads the same key back instead of generating another.
    let (again, source) = MasterKey::load_or_create(&config, true).unwrap();
    assert_eq!(source, MasterKeySource::File(path));
    assert_eq!(*again.to_base64(), *key.to_base64());
}

#[test]
fn load_or_create_refuses_to_generate_when_store_has_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    let err = MasterKey::load_or_create(&config, true).unwrap_err();
    assert!(matches!(err, KeyError::MasterKeyMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("HABILIS_KEYS__MASTER_KEY"), "{message}");
    assert!(message.contains("master.key"), "{message}");
    assert!(message.contains("Restore"), "{message}");
    assert!(!config.master_key_file().exists(), "no key may be generated over existing keys");
}

#[test]
fn load_or_create_reads_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    let original = MasterKey::generate();
    let path = dir.path().join("elsewhere.key");
    std::fs::write(&path, format!("{}\n", *original.to_base64())).unwrap();
    // Group/other-readable: still read (with a warning in the log).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    config.keys.master_key_file = Some(path.clone());
    let sealed = original.seal(b"secret", b"aad").unwrap();
    let (key, source) = MasterKey::load_or_create(&config, true).unwrap();
    assert_eq!(source, MasterKeySource::File(path.clone()));
    assert_eq!(&**key.open(&sealed, b"aad").unwrap(), b"secret");
    // A damaged file is an error naming the file, not a reason to generate a new key.
    std::fs::write(&path, "garbage").unwrap();
    let err = MasterKey::load_or_create(&config, false).unwrap_err().to_string();
    assert!(err.contains("elsewhere.key"), "{err}");
}

#[test]
fn load_or_create_prefers_the_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    let configured = MasterKey::generate();
    config.keys.master_key = Some(configured.to_base64().to_string());
    let (key, source) = MasterKey::load_or_create(&config, true).unwrap();
    assert_eq!(source, MasterKeySource::Config);
    assert_eq!(*key.to_base64(), *configured.to_base64());
    assert!(!config.master_key_file().exists());
}

// ------------------------------------------------------------------------------------------------
// Key material

#[test]
fn thumbprint_matches_the_rfc7638_example() {
    let jwk = josekit::jwk::Jwk::from_bytes(
        br#"{"kty":"RSA","e":"AQAB","alg":"RS256","kid":"2011-04-29","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}"#,
    )
    .unwrap();
    assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
}

// ------------------------------------------------------------------------------------------------
// Key manager

/// Every file under `dir`, recursively (the SQLite database with its -wal and -shm files included).
fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(all_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn start_generates_configured_keys_and_writes_nothing_private_in_clear() {
    let algs = [SigningAlg::ES256, SigningAlg::RS256, SigningAlg::EdDSA];
    let f = fixture(&algs).await;
    let (manager, source) = KeyManager::bootstrap(f.store.clone(), &f.config).await.unwrap();
    assert!(matches!(source, MasterKeySource::Generated(_)));
    assert_eq!(manager.signing_algs(), algs.to_vec());

    let records = f.store.list_signing_keys().await.unwrap();
    assert_eq!(records.len(), 3);
    let master = manager.master_key();
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for record in &records {
        assert_eq!(manager.active_kid(SigningAlg::parse(&record.alg).unwrap()).as_deref(), Some(&*record.kid));
        assert_eq!(record.activates_at, record.created_at, "first keys are active at once");
        // kid = RFC 7638 thumbprint of the public key.
        let public = josekit::jwk::Jwk::from_bytes(record.public_jwk.as_bytes()).unwrap();
        assert_eq!(thumbprint(&public).unwrap(), record.kid);
        let private: Value =
            serde_json::from_slice(&master.open(&record.private_sealed, record.kid.as_bytes()).unwrap()).unwrap();
        for member in ["d", "p", "q", "dp", "dq", "qi"] {
            if let Some(value) = private[member].as_str() {
                secrets.push((format!("{} {member} (base64url)", record.alg), value.as_bytes().to_vec()));
                secrets.push((format!("{} {member} (raw)", record.alg), URL_SAFE_NO_PAD.decode(value).unwrap()));
            }
            assert!(record.public_jwk.find(&format!("\"{member}\"")).is_none(), "{member} in public_jwk");
        }
    }
    assert!(secrets.iter().filter(|(name, _)| name.contains(" d ")).count() == 6, "a d per key");

    // The JWKS carries kid, alg and use, and no private member.
    let (body, _) = manager.jwks();
    let jwks: Value = serde_json::from_slice(&body).unwrap();
    for key in jwks["keys"].as_array().unwrap() {
        assert_eq!(key["use"], "sig");
        assert!(key["kid"].is_string() && key["alg"].is_string());
        for member in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(member).is_none(), "{member} published");
        }
    }

    let files = all_files(f.dir.path());
    assert!(files.iter().any(|p| p.to_string_lossy().ends_with("habilis.db")));
    // Positive control: the scan does read where the rows live (the kids are stored in clear).
    let everything: Vec<u8> = files.iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    for record in &records {
        assert!(contains(&everything, record.kid.as_bytes()), "kid {} not found on disk", record.kid);
    }
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(!contains(&bytes, b"BEGIN"), "{} contains BEGIN", file.display());
        assert!(!contains(&bytes, b"PRIVATE KEY"), "{} contains PRIVATE KEY", file.display());
        for (name, secret) in &secrets {
            assert!(!contains(&bytes, secret), "{} contains the private {name}", file.display());
        }
    }
    drop(manager);
    f.store.ping().await.unwrap();
}

#[tokio::test]
async fn start_keeps_existing_keys_and_adds_newly_enabled_algorithms() {
    let mut f = fixture(&[SigningAlg::ES256]).await;
    let master_b64 = MasterKey::generate().to_base64();
    let master = || MasterKey::from_base64(&master_b64).unwrap();
    let first = KeyManager::start_at(f.store.clone(), master(), &f.config, T0).await.unwrap();
    let es = first.active_kid(SigningAlg::ES256).unwrap();

    let again = KeyManager::start_at(f.store.clone(), master(), &f.config, T0 + 10).await.unwrap();
    assert_eq!(again.active_kid(SigningAlg::ES256).unwrap(), es, "restart must not regenerate");
    assert_eq!(f.store.list_signing_keys().await.unwrap().len(), 1);

    f.config.keys.algorithms = vec![SigningAlg::ES256, SigningAlg::EdDSA];
    let more = KeyManager::start_at(f.store.clone(), master(), &f.config, T0 + 20).await.unwrap();
    assert_eq!(more.active_kid(SigningAlg::ES256).unwrap(), es);
    assert!(more.active_kid(SigningAlg::EdDSA).is_some());
    assert_eq!(f.store.list_signing_keys().await.unwrap().len(), 2);
}

#[tokio::test]
async fn start_with_a_wrong_master_key_names_the_kid() {
    let f = fixture(&[SigningAlg::ES256]).await;
    let manager = KeyManager::start_at(f.store.clone(), MasterKey::generate(), &f.config, T0).await.unwrap();
    let kid = manager.active_kid(SigningAlg::ES256).unwrap();

    let err = KeyManager::start_at(f.store.clone(), MasterKey::generate(), &f.config, T0 + 1).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, KeyError::Undecryptable { .. }), "{err:?}");
    assert!(message.contains(&kid), "{message}");
    assert!(message.contains("wrong master key or corrupted key record"), "{message}");
    assert!(message.contains("HABILIS_KEYS__MASTER_KEY"), "{message}");
    assert!(message.contains("will not regenerate"), "{message}");
    assert_eq!(f.store.list_signing_keys().await.unwrap().len(), 1, "nothing generated over existing keys");
}

#[tokio::test]
async fn bootstrap_refuses_when_the_master_key_file_is_lost() {
    let f = fixture(&[SigningAlg::ES256]).await;
    let (first, _) = KeyManager::bootstrap(f.store.clone(), &f.config).await.unwrap();
    let kid = first.active_kid(SigningAlg::ES256).unwrap();
    let (second, source) = KeyManager::bootstrap(f.store.clone(), &f.config).await.unwrap();
    assert_eq!(source, MasterKeySource::File(f.config.master_key_file()));
    assert_eq!(second.active_kid(SigningAlg::ES256).unwrap(), kid);

    std::fs::remove_file(f.config.master_key_file()).unwrap();
    let err = KeyManager::bootstrap(f.store.clone(), &f.config).await.unwrap_err();
    assert!(matches!(err, KeyError::MasterKeyMissing { .. }), "{err:?}");
    assert!(!f.config.master_key_file().exists());
}

#[tokio::test]
async fn sign_and_verify_each_algorithm() {
    let algs = [SigningAlg::ES256, SigningAlg::RS256, SigningAlg::EdDSA];
    let f = fixture(&algs).await;
    let manager = KeyManager::start_at(f.store.clone(), MasterKey::generate(), &f.config, T0).await.unwrap();
    let (body, _) = manager.jwks();
    let jwks = josekit::jwk::JwkSet::from_bytes(&body).unwrap();
    let claims = claims(T0);
    for (alg, typ) in [(SigningAlg::ES256, "JWT"), (SigningAlg::RS256, "at+jwt"), (SigningAlg::EdDSA, "logout+jwt")] {
        let token = manager.sign(Some(alg), typ, &claims).unwrap();
        let kid = manager.active_kid(alg).unwrap();
        let h = header(&token);
        assert_eq!(h["alg"], alg.as_str());
        assert_eq!(h["kid"], kid.as_str());
        assert_eq!(h["typ"], typ);
        // Integer dates are written as integers (never 1700000000.0).
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert!(raw.contains(&format!("\"iat\":{T0}")) && !raw.contains(&format!("{T0}.")), "{raw}");
        assert_eq!(manager.verify(&token).unwrap(), claims);

        // A relying party holding only the published JWKS verifies it too.
        let jwk = &jwks.get(&kid)[0];
        let verified = match alg {
            SigningAlg::ES256 => {
                josekit::jws::deserialize_compact(&token, &josekit::jws::ES256.verifier_from_jwk(jwk).unwrap())
            }
            SigningAlg::RS256 => {
                josekit::jws::deserialize_compact(&token, &josekit::jws::RS256.verifier_from_jwk(jwk).unwrap())
            }
            SigningAlg::EdDSA => {
                josekit::jws::deserialize_compact(&token, &josekit::jws::EdDSA.verifier_from_jwk(jwk).unwrap())
            }
        };
        assert!(verified.is_ok(), "{alg:?}: {verified:?}");
    }
    // None = the default algorithm.
    let token = manager.sign(None, "JWT", &claims).unwrap();
    assert_eq!(header(&token)["alg"], "ES256");
}

#[tokio::test]
async fn verify_rejects_forgeries() {
    let f = fixture(&[SigningAlg::ES256, SigningAlg::EdDSA]).await;
    let manager = KeyManager::start_at(f.store.clone(), MasterKey::generate(), &f.config, T0).await.unwrap();
    let token = manager.sign(None, "JWT", &claims(T0)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();

    // Modified payload.
    let other = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(T0 + 1)).unwrap());
    assert!(matches!(manager.verify(&format!("{}.{other}.{}", parts[0], parts[2])), Err(KeyError::InvalidToken(_))));
    // alg "none", or another published key's algorithm under this kid.
    for alg in ["none", "EdDSA", "HS256"] {
        let mut h = header(&token);
        h["alg"] = json!(alg);
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap());
        assert!(manager.verify(&format!("{h}.{}.{}", parts[1], parts[2])).is_err(), "alg {alg}");
        assert!(manager.verify(&format!("{h}.{}.", parts[1])).is_err(), "alg {alg}, empty signature");
    }
    // Unknown kid, missing kid.
    let mut h = header(&token);
    h["kid"] = json!("nope");
    let unknown = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap());
    assert!(
        matches!(manager.verify(&format!("{unknown}.{}.{}", parts[1], parts[2])), Err(KeyError::UnknownKid(k)) if k == "nope")
    );
    h.as_object_mut().unwrap().remove("kid");
    let no_kid = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap());
    assert!(manager.verify(&format!("{no_kid}.{}.{}", parts[1], parts[2])).is_err());
    // Not a JWS at all.
    assert!(manager.verify("garbage").is_err());
    assert!(manager.verify("").is_err());
}

#[tokio::test]
async fn rotation_sequence() {
    let f = fixture(&[SigningAlg::ES256]).await;
    let store = f.store.clone();
    let master_b64 = MasterKey::generate().to_base64();
    let master = MasterKey::from_base64(&master_b64).unwrap();
    let retention = retention(&f.config);
    let manager =
        KeyManager::start_at(store.clone(), MasterKey::from_base64(&master_b64).unwrap(), &f.config, T0).await.unwrap();
    let algs = f.config.keys.algorithms.clone();

    // t0: A signs.
    let a = manager.active_kid(SigningAlg::ES256).unwrap();
    let token_a = manager.sign(None, "JWT", &claims(T0)).unwrap();
    assert_eq!(header(&token_a)["kid"], a.as_str());
    let (body0, etag0) = manager.jwks();
    assert!(etag0.starts_with('"') && etag0.ends_with('"') && etag0.len() == 18, "{etag0}");
    manager.reload(T0 + 1).await.unwrap();
    assert_eq!(manager.jwks(), (body0.clone(), etag0.clone()), "ETag is stable while the set is unchanged");

    // t1: rotate, B published, activates at t1 + 600; A still signs.
    let t1 = T0 + 100;
    let activation = default_activation(&f.config, t1);
    assert_eq!(activation, t1 + 600);
    let b = rotate(&*store, &master, SigningAlg::ES256, activation, t1).await.unwrap().kid;
    assert_ne!(a, b);
    // Running instances see nothing until they reload.
    assert_eq!(manager.jwks().1, etag0);
    manager.reload(t1).await.unwrap();
    assert_eq!(jwks_kids(&manager), sorted(vec![a.clone(), b.clone()]));
    let etag1 = manager.jwks().1;
    assert_ne!(etag1, etag0, "ETag changes with the key set");
    assert_eq!(header(&manager.sign(None, "JWT", &claims(t1)).unwrap())["kid"], a.as_str());
    // Retiring A now would leave ES256 without an active key until B activates: refused.
    let err = retire(&*store, &a, t1, &algs).await.unwrap_err();
    assert!(matches!(err, KeyError::RetireRefused { .. }), "{err:?}");
    manager.reload(t1 + 599).await.unwrap();
    assert_eq!(manager.active_kid(SigningAlg::ES256).unwrap(), a);
    assert_eq!(manager.jwks().1, etag1);

    // t1 + 600: B signs; A's token still verifies.
    manager.reload(t1 + 600).await.unwrap();
    assert_eq!(manager.active_kid(SigningAlg::ES256).unwrap(), b);
    assert_eq!(header(&manager.sign(None, "JWT", &claims(t1 + 600)).unwrap())["kid"], b.as_str());
    assert_eq!(manager.verify(&token_a).unwrap(), claims(T0));
    assert_eq!(manager.jwks().1, etag1, "activation does not change the published set");

    // t2: retire A. It no longer signs, stays published, its tokens verify until t2 + retention.
    let t2 = t1 + 700;
    let retired = retire(&*store, &a, t2, &algs).await.unwrap();
    assert_eq!(retired.retired_at, Some(t2));
    manager.reload(t2).await.unwrap();
    assert_eq!(manager.active_kid(SigningAlg::ES256).unwrap(), b);
    assert_eq!(header(&manager.sign(None, "JWT", &claims(t2)).unwrap())["kid"], b.as_str());
    assert_eq!(jwks_kids(&manager), sorted(vec![a.clone(), b.clone()]));
    assert_eq!(manager.jwks().1, etag1);
    assert!(manager.verify(&token_a).is_ok());
    manager.reload(t2 + retention - 1).await.unwrap();
    assert!(manager.verify(&token_a).is_ok());
    assert_eq!(jwks_kids(&manager), sorted(vec![a.clone(), b.clone()]));

    // After the retention A is gone from the JWKS, then from the store.
    manager.reload(t2 + retention).await.unwrap();
    assert_eq!(jwks_kids(&manager), vec![b.clone()]);
    let etag2 = manager.jwks().1;
    assert_ne!(etag2, etag1);
    assert!(matches!(manager.verify(&token_a), Err(KeyError::UnknownKid(k)) if k == a));
    assert_eq!(store.list_signing_keys().await.unwrap().len(), 2, "not purged at the boundary");
    manager.reload(t2 + retention + 1).await.unwrap();
    let left: Vec<String> = store.list_signing_keys().await.unwrap().into_iter().map(|r| r.kid).collect();
    assert_eq!(left, vec![b.clone()], "purged once past retention");
    assert_eq!(manager.jwks().1, etag2);
}

#[tokio::test]
async fn pending_keys_never_sign() {
    let f = fixture(&[SigningAlg::ES256, SigningAlg::EdDSA]).await;
    let master_b64 = MasterKey::generate().to_base64();
    let master = MasterKey::from_base64(&master_b64).unwrap();
    let manager = KeyManager::start_at(f.store.clone(), MasterKey::from_base64(&master_b64).unwrap(), &f.config, T0)
        .await
        .unwrap();
    let ed = manager.active_kid(SigningAlg::EdDSA).unwrap();
    // An EdDSA successor, pending; then the current EdDSA key is retired (by hand, bypassing the
    // CLI's check) — EdDSA must fail rather than sign with the pending key.
    let pending = rotate(&*f.store, &master, SigningAlg::EdDSA, T0 + 600, T0).await.unwrap();
    assert!(f.store.retire_signing_key(&ed, T0 + 1).await.unwrap());
    manager.reload(T0 + 1).await.unwrap();
    assert!(matches!(
        manager.sign(Some(SigningAlg::EdDSA), "JWT", &claims(T0)),
        Err(KeyError::NoActiveKey(SigningAlg::EdDSA))
    ));
    assert_eq!(manager.signing_algs(), vec![SigningAlg::ES256]);
    assert!(manager.sign(None, "JWT", &claims(T0)).is_ok(), "other algorithms are unaffected");
    assert!(jwks_kids(&manager).contains(&pending.kid));
    manager.reload(T0 + 600).await.unwrap();
    assert_eq!(manager.active_kid(SigningAlg::EdDSA).unwrap(), pending.kid);
}

#[tokio::test]
async fn keys_of_a_disabled_algorithm_stay_published_and_verifiable() {
    let mut f = fixture(&[SigningAlg::ES256, SigningAlg::RS256]).await;
    let master_b64 = MasterKey::generate().to_base64();
    let master = || MasterKey::from_base64(&master_b64).unwrap();
    let before = KeyManager::start_at(f.store.clone(), master(), &f.config, T0).await.unwrap();
    let rs = before.active_kid(SigningAlg::RS256).unwrap();
    let token = before.sign(Some(SigningAlg::RS256), "JWT", &claims(T0)).unwrap();

    f.config.keys.algorithms = vec![SigningAlg::ES256];
    let after = KeyManager::start_at(f.store.clone(), master(), &f.config, T0 + 5).await.unwrap();
    assert!(jwks_kids(&after).contains(&rs));
    assert_eq!(after.verify(&token).unwrap(), claims(T0));
    assert!(matches!(after.sign(Some(SigningAlg::RS256), "JWT", &claims(T0)), Err(KeyError::AlgorithmNotEnabled(_))));
    assert_eq!(after.signing_algs(), vec![SigningAlg::ES256]);
    // It can be retired although it is the last RS256 key: RS256 is no longer configured.
    retire(&*f.store, &rs, T0 + 6, &f.config.keys.algorithms).await.unwrap();
}

#[tokio::test]
async fn reload_keeps_the_previous_set_when_a_record_does_not_open() {
    let f = fixture(&[SigningAlg::ES256]).await;
    let manager = KeyManager::start_at(f.store.clone(), MasterKey::generate(), &f.config, T0).await.unwrap();
    let a = manager.active_kid(SigningAlg::ES256).unwrap();
    let before = manager.jwks();
    // A key sealed under another master key appears in the store.
    rotate(&*f.store, &MasterKey::generate(), SigningAlg::ES256, T0 + 10, T0 + 10).await.unwrap();
    let err = manager.reload(T0 + 20).await.unwrap_err();
    assert!(matches!(err, KeyError::Undecryptable { .. }), "{err:?}");
    assert_eq!(manager.jwks(), before);
    assert_eq!(manager.active_kid(SigningAlg::ES256).unwrap(), a);
    assert!(manager.sign(None, "JWT", &claims(T0)).is_ok());
}

#[tokio::test]
async fn a_record_with_a_swapped_kid_or_public_key_is_rejected() {
    let f = fixture(&[SigningAlg::ES256]).await;
    let master_b64 = MasterKey::generate().to_base64();
    let master = MasterKey::from_base64(&master_b64).unwrap();
    let manager = KeyManager::start_at(f.store.clone(), MasterKey::from_base64(&master_b64).unwrap(), &f.config, T0)
        .await
        .unwrap();
    let a = f.store.list_signing_keys().await.unwrap().remove(0);
    let b = super::jwk::generate_record(&master, SigningAlg::ES256, T0, T0).await.unwrap();

    // B's sealed key under A's kid: the AAD binds the sealed key to its kid.
    let swapped = SigningKeyRecord { kid: "swapped".into(), private_sealed: b.private_sealed.clone(), ..a.clone() };
    assert!(matches!(super::jwk::open_record(&master, &swapped), Err(KeyError::Undecryptable { .. })));
    // A foreign public key in the clear-text column is ignored: the JWKS is derived from the
    // sealed private key.
    let forged = SigningKeyRecord { kid: b.kid.clone(), public_jwk: a.public_jwk.clone(), ..b.clone() };
    f.store.insert_signing_key(&forged).await.unwrap();
    manager.reload(T0 + 1).await.unwrap();
    let (body, _) = manager.jwks();
    let jwks: Value = serde_json::from_slice(&body).unwrap();
    let published = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == b.kid.as_str()).unwrap();
    let expected: Value = serde_json::from_str(&b.public_jwk).unwrap();
    assert_eq!(published["x"], expected["x"]);
    assert_ne!(published["x"], serde_json::from_str::<Value>(&a.public_jwk).unwrap()["x"]);
}

#[tokio::test]
async fn retire_checks() {
    let f = fixture(&[SigningAlg::ES256]).await;
    let master_b64 = MasterKey::generate().to_base64();
    let master = MasterKey::from_base64(&master_b64).unwrap();
    let manager = KeyManager::start_at(f.store.clone(), MasterKey::from_base64(&master_b64).unwrap(), &f.config, T0)
        .await
        .unwrap();
    let algs = f.config.keys.algorithms.clone();
    let a = manager.active_kid(SigningAlg::ES256).unwrap();

    let err = retire(&*f.store, "unknown", T0, &algs).await.unwrap_err();
    assert!(matches!(err, KeyError::UnknownKid(_)), "{err:?}");
    let err = retire(&*f.store, &a, T0, &algs).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("last ES256 key") && message.contains("rotate"), "{message}");

    // A pending successor is not enough (signing would stop until it activates) …
    let b = rotate(&*f.store, &master, SigningAlg::ES256, T0 + 600, T0).await.unwrap();
    let message = retire(&*f.store, &a, T0 + 1, &algs).await.unwrap_err().to_string();
    assert!(message.contains("no active signing key until"), "{message}");
    // … but the pending key itself can be retired while A is active.
    retire(&*f.store, &b.kid, T0 + 1, &algs).await.unwrap();
    let err = retire(&*f.store, &b.kid, T0 + 2, &algs).await.unwrap_err();
    assert!(matches!(err, KeyError::AlreadyRetired { retired_at, .. } if retired_at == T0 + 1), "{err:?}");
    // An emergency rotation (immediate activation) lets A go at once.
    let c = rotate(&*f.store, &master, SigningAlg::ES256, T0 + 3, T0 + 3).await.unwrap();
    retire(&*f.store, &a, T0 + 3, &algs).await.unwrap();
    manager.reload(T0 + 3).await.unwrap();
    assert_eq!(manager.active_kid(SigningAlg::ES256).unwrap(), c.kid);
}

#[tokio::test]
async fn describe_lists_each_state() {
    let f = fixture(&[SigningAlg::ES256]).await;
    let master = MasterKey::generate();
    let retention = f.config.longest_signed_token_lifetime();
    let r = retention.as_secs() as i64;
    let store = &*f.store;
    let old = rotate(store, &master, SigningAlg::ES256, T0, T0).await.unwrap();
    let superseded = rotate(store, &master, SigningAlg::ES256, T0 + 1, T0 + 1).await.unwrap();
    let active = rotate(store, &master, SigningAlg::ES256, T0 + 2, T0 + 2).await.unwrap();
    let pending = rotate(store, &master, SigningAlg::ES256, T0 + 1000, T0 + 3).await.unwrap();
    let retired = rotate(store, &master, SigningAlg::ES256, T0 + 4, T0 + 4).await.unwrap();
    store.retire_signing_key(&old.kid, T0 + 5).await.unwrap();
    store.retire_signing_key(&retired.kid, T0 + 5 + r).await.unwrap();

    let now = T0 + 10 + r;
    let statuses = describe(&store.list_signing_keys().await.unwrap(), now, retention);
    let state = |kid: &str| statuses.iter().find(|s| s.kid == kid).unwrap().state;
    assert_eq!(state(&old.kid), KeyState::Expired);
    assert_eq!(state(&superseded.kid), KeyState::Superseded);
    assert_eq!(state(&active.kid), KeyState::Active);
    assert_eq!(state(&pending.kid), KeyState::Pending);
    assert_eq!(state(&retired.kid), KeyState::RetiredPublished);
    let retired_status = statuses.iter().find(|s| s.kid == retired.kid).unwrap();
    assert_eq!(retired_status.published_until, Some(T0 + 5 + 2 * r));
    assert_eq!(serde_json::to_value(retired_status).unwrap()["state"], "retired-published");
    assert_eq!(KeyState::RetiredPublished.as_str(), "retired-published");

    // Purge removes exactly the expired key.
    assert_eq!(purge(store, now, retention).await.unwrap(), 1);
    assert!(store.list_signing_keys().await.unwrap().iter().all(|k| k.kid != old.kid));
}

#[tokio::test]
async fn reloader_picks_up_a_rotation_and_stops_with_the_manager() {
    let f = fixture(&[SigningAlg::ES256]).await;
    let master_b64 = MasterKey::generate().to_base64();
    let master = MasterKey::from_base64(&master_b64).unwrap();
    let manager =
        KeyManager::start(f.store.clone(), MasterKey::from_base64(&master_b64).unwrap(), &f.config).await.unwrap();
    let handle = manager.spawn_reloader(Duration::from_secs(1));
    // One second ahead so that B ranks after A (created by start() in this very second).
    let now = crate::unix_now() + 1;
    let b = rotate(&*f.store, &master, SigningAlg::ES256, now, now).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while manager.active_kid(SigningAlg::ES256).as_deref() != Some(&*b.kid) {
        assert!(std::time::Instant::now() < deadline, "the reloader did not pick up the rotation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(manager);
    tokio::time::timeout(Duration::from_secs(5), handle).await.unwrap().unwrap();
}

#[test]
fn key_manager_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<KeyManager>();
    check::<Arc<KeyManager>>();
    check::<MasterKey>();
}

/// Instances started together on an empty database (SQLite here, and PostgreSQL when reachable)
/// generate one key per algorithm between them and publish the same JWKS from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_started_together_generate_one_key_set() {
    let f = fixture(&[SigningAlg::ES256, SigningAlg::RS256]).await;
    let mut stores = vec![f.store.clone()];
    if let Some(url) = crate::testing::postgres_schema_url().await {
        stores.push(connect_with(&url, 4).await.unwrap());
    }
    for store in stores {
        let master = MasterKey::generate();
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (store, config) = (store.clone(), f.config.clone());
            let master = MasterKey::from_base64(&master.to_base64()).unwrap();
            starts.spawn(async move { KeyManager::start_at(store, master, &config, T0).await.unwrap() });
        }
        let managers = starts.join_all().await;
        let stored = store.list_signing_keys().await.unwrap();
        assert_eq!(stored.len(), 2, "{}: one key per algorithm, not one per instance", store.backend().as_str());
        let jwks = managers[0].jwks().0;
        assert!(managers.iter().all(|m| m.jwks().0 == jwks), "every instance publishes the same JWKS");
        let generated: usize = managers.iter().map(|m| m.generated_at_start().len()).sum();
        assert_eq!(generated, 2, "exactly one instance generated each key");
    }
}

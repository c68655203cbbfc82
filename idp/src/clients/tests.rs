//! Registry and client-authentication tests. Everything that touches the store runs on SQLite and,
//! when reachable (always under CI), on PostgreSQL — each test in its own database or schema.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use josekit::jwk::Jwk;
use josekit::jws::{self, JwsHeader};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::ephemeral::MemoryStore;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{ClientRecord, SharedStore, connect_with};
use crate::unix_now;

const ISSUER: &str = "https://idp.example.org";
const TOKEN_ENDPOINT: &str = "https://idp.example.org/token";

/// A fresh SQLite store and, when reachable, a fresh PostgreSQL one (same as the store's own
/// `test_stores`, which is private to the store module).
async fn stores() -> Vec<(SharedStore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let mut stores = vec![(connect_with(&url, 4).await.expect("SQLite store"), Some(dir))];
    if let Some(url) = crate::testing::postgres_schema_url().await {
        stores.push((connect_with(&url, 4).await.expect("PostgreSQL store"), None));
    }
    stores
}

fn audience() -> Vec<String> {
    vec![ISSUER.to_string(), TOKEN_ENDPOINT.to_string()]
}

fn ephemeral() -> MemoryStore {
    MemoryStore::new(10_000)
}

fn web_client(id: &str, method: &str) -> String {
    json!({
        "client_id": id,
        "redirect_uris": ["https://app.example.org/cb"],
        "token_endpoint_auth_method": method,
    })
    .to_string()
}

fn basic(id: &str, secret: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
    headers
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn auth(
    registry: &ClientRegistry,
    headers: &HeaderMap,
    params: &[(String, String)],
    ephemeral: &MemoryStore,
) -> Result<AuthenticatedClient, OAuthError> {
    registry.authenticate(headers, params, &audience(), ephemeral, &super::NoCertificate, unix_now()).await
}

#[track_caller]
fn assert_invalid_client(result: Result<AuthenticatedClient, OAuthError>, needle: &str) -> OAuthError {
    let error = result.expect_err("authentication must fail");
    assert_eq!(error.code, OAuthErrorCode::InvalidClient, "{error}");
    assert_eq!(error.challenge, Some("Basic"), "{error}");
    assert!(error.description.contains(needle), "`{}` lacks `{needle}`", error.description);
    error
}

#[track_caller]
fn assert_invalid_request(result: Result<AuthenticatedClient, OAuthError>, needle: &str) {
    let error = result.expect_err("authentication must fail");
    assert_eq!(error.code, OAuthErrorCode::InvalidRequest, "{error}");
    assert!(error.description.contains(needle), "`{}` lacks `{needle}`", error.description);
}

// ---------------------------------------------------------------------------------------------
// Registry

#[tokio::test]
async fn register_then_get_and_secret_never_stored_in_clear() {
    for (store, _guard) in stores().await {
        let backend = store.backend().as_str();
        let registry = ClientRegistry::new(store.clone());
        let outcome = registry.register(&web_client("app", "client_secret_basic"), None, None).await.unwrap();
        assert!(outcome.created, "{backend}");
        let shown = format!("{outcome:?}");
        let secret = outcome.secret.expect("a generated secret");
        assert!(!shown.contains(secret.as_str()), "Debug must not print the secret: {shown}");
        assert_eq!(secret.len(), 43, "32 bytes in base64url");
        let client = registry.get("app").await.unwrap().expect("registered");
        assert_eq!(client.client_id(), "app");
        // Another instance (fresh cache) finds it at once through the store.
        let other = ClientRegistry::new(store.clone());
        assert!(other.get("app").await.unwrap().is_some(), "{backend}");
        assert!(other.get("nobody").await.unwrap().is_none(), "{backend}");
        assert!(other.get("not a valid id").await.unwrap().is_none(), "{backend}");

        let record = store.client_by_id("app").await.unwrap().unwrap();
        let hash = record.secret_hash.clone().expect("a secret hash");
        assert_ne!(hash, secret.as_str(), "{backend}");
        assert_eq!(hash, hex::encode(Sha256::digest(secret.as_bytes())), "{backend}");
        assert!(!record.metadata.contains(secret.as_str()), "{backend}");
        assert!(!record.metadata.contains("client_id"), "{backend}");

        // A secret given in the document is hashed and dropped from the stored metadata.
        let given = "a-given-secret-of-at-least-32-characters";
        let mut doc: Value = serde_json::from_str(&web_client("given", "client_secret_post")).unwrap();
        doc["client_secret"] = json!(given);
        let outcome = registry.register(&doc.to_string(), None, None).await.unwrap();
        assert!(outcome.secret.is_none(), "a given secret is not echoed");
        let record = store.client_by_id("given").await.unwrap().unwrap();
        assert!(!record.metadata.contains(given), "{backend}");
        assert_ne!(record.secret_hash.as_deref(), Some(given), "{backend}");
        assert_eq!(record.secret_hash, Some(hex::encode(Sha256::digest(given.as_bytes()))), "{backend}");
    }
}

#[tokio::test]
async fn secret_rules_and_generated_ids() {
    for (store, _guard) in stores().await {
        let registry = ClientRegistry::new(store.clone());
        let short = registry.register(&web_client("a", "client_secret_basic"), None, Some("too-short")).await;
        assert!(matches!(short, Err(RegistryError::WeakSecret(_))), "{short:?}");
        let odd = registry
            .register(&web_client("a", "client_secret_basic"), None, Some("contains+plus/and:colon=0123456789abcdef"))
            .await;
        assert!(matches!(odd, Err(RegistryError::WeakSecret(_))), "{odd:?}");
        let not_applicable =
            registry.register(&web_client("a", "none"), None, Some("a-given-secret-of-at-least-32-characters")).await;
        assert!(matches!(not_applicable, Err(RegistryError::NoSecretMethod { .. })), "{not_applicable:?}");
        let conflicting_id = registry.register(&web_client("a", "none"), Some("b"), None).await;
        assert!(matches!(conflicting_id, Err(RegistryError::Metadata(_))), "{conflicting_id:?}");
        // Nothing was written by the failures.
        assert!(store.list_clients().await.unwrap().is_empty());

        // Public and private_key_jwt clients get no secret; an id is generated when none is given.
        let outcome = registry
            .register(
                &json!({ "redirect_uris": ["https://app.example.org/cb"], "token_endpoint_auth_method": "none" })
                    .to_string(),
                None,
                None,
            )
            .await
            .unwrap();
        assert!(outcome.secret.is_none());
        assert_eq!(outcome.client.client_id().len(), 32);
        let record = store.client_by_id(outcome.client.client_id()).await.unwrap().unwrap();
        assert_eq!(record.secret_hash, None);
    }
}

#[tokio::test]
async fn reimport_keeps_the_secret_and_rotation_replaces_it() {
    for (store, _guard) in stores().await {
        let backend = store.backend().as_str();
        let registry = ClientRegistry::new(store.clone());
        let eph = ephemeral();
        let first = registry.register(&web_client("app", "client_secret_basic"), None, None).await.unwrap();
        let secret = first.secret.unwrap();
        let created_at = store.client_by_id("app").await.unwrap().unwrap().created_at;

        // Re-importing (an update) keeps the running application's secret and created_at.
        let mut doc: Value = serde_json::from_str(&web_client("app", "client_secret_basic")).unwrap();
        doc["client_name"] = json!("Renamed");
        let again = registry.register(&doc.to_string(), None, None).await.unwrap();
        assert!(!again.created, "{backend}");
        assert!(again.secret.is_none(), "{backend}");
        assert_eq!(registry.get("app").await.unwrap().unwrap().client_name(), Some("Renamed"));
        assert_eq!(store.client_by_id("app").await.unwrap().unwrap().created_at, created_at);
        auth(&registry, &basic("app", &secret), &[], &eph).await.unwrap();

        let rotated = registry.rotate_secret("app").await.unwrap();
        assert_ne!(rotated.as_str(), secret.as_str());
        assert_invalid_client(auth(&registry, &basic("app", &secret), &[], &eph).await, "failed");
        auth(&registry, &basic("app", &rotated), &[], &eph).await.unwrap();
        // Another instance sees the rotation after its refresh.
        let other = ClientRegistry::start(store.clone()).await.unwrap();
        auth(&other, &basic("app", &rotated), &[], &eph).await.unwrap();

        assert!(matches!(registry.rotate_secret("nobody").await, Err(RegistryError::NotFound(_))));
        registry.register(&web_client("public", "none"), None, None).await.unwrap();
        assert!(matches!(registry.rotate_secret("public").await, Err(RegistryError::NoSecretMethod { .. })));
    }
}

#[tokio::test]
async fn every_write_moves_the_store_version() {
    for (store, _guard) in stores().await {
        let backend = store.backend().as_str();
        let registry = ClientRegistry::new(store.clone());
        let mut seen = vec![store.clients_version().await.unwrap()];
        // Several writes within the same second, including an update of an older client while a
        // newer one holds the highest updated_at: each must change the version.
        for step in ["a", "b", "a", "b", "a"] {
            registry.register(&web_client(step, "none"), None, None).await.unwrap();
            let version = store.clients_version().await.unwrap();
            assert!(!seen.contains(&version), "{backend}: {step} did not move {version:?}");
            seen.push(version);
        }
        registry.rotate_secret("a").await.unwrap_err(); // public: no write
        registry.remove("a").await.unwrap();
        let version = store.clients_version().await.unwrap();
        assert!(!seen.contains(&version), "{backend}: removal did not move the version");
    }
}

#[tokio::test]
async fn other_instances_see_updates_and_removals_after_refresh() {
    for (store, _guard) in stores().await {
        let backend = store.backend().as_str();
        let admin = ClientRegistry::new(store.clone());
        admin.register(&web_client("app", "none"), None, None).await.unwrap();
        let instance = ClientRegistry::start(store.clone()).await.unwrap();
        assert!(instance.get("app").await.unwrap().unwrap().client_name().is_none());
        assert!(!instance.refresh_if_changed().await.unwrap(), "{backend}: nothing changed");

        let mut doc: Value = serde_json::from_str(&web_client("app", "none")).unwrap();
        doc["client_name"] = json!("Updated");
        admin.register(&doc.to_string(), None, None).await.unwrap();
        // Cached until the refresh: no database round trip on the hot path.
        assert!(instance.get("app").await.unwrap().unwrap().client_name().is_none());
        assert!(instance.refresh_if_changed().await.unwrap(), "{backend}");
        assert_eq!(instance.get("app").await.unwrap().unwrap().client_name(), Some("Updated"), "{backend}");

        assert!(admin.remove("app").await.unwrap());
        assert!(!admin.remove("app").await.unwrap());
        assert!(admin.get("app").await.unwrap().is_none(), "the writer forgets at once");
        assert!(instance.get("app").await.unwrap().is_some(), "still cached");
        assert!(instance.refresh_if_changed().await.unwrap());
        assert!(instance.get("app").await.unwrap().is_none(), "{backend}");
    }
}

#[tokio::test]
async fn the_background_refresher_applies_changes_within_its_interval() {
    for (store, _guard) in stores().await {
        let backend = store.backend().as_str();
        let admin = ClientRegistry::new(store.clone());
        admin.register(&web_client("app", "none"), None, None).await.unwrap();
        let instance = ClientRegistry::start(store.clone()).await.unwrap();
        let refresher = instance.spawn_refresher(Duration::from_millis(100));
        let mut doc: Value = serde_json::from_str(&web_client("app", "none")).unwrap();
        doc["client_name"] = json!("Updated");
        admin.register(&doc.to_string(), None, None).await.unwrap();
        admin.remove("app").await.unwrap();
        admin.register(&web_client("new", "none"), None, None).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let removed = instance.get("app").await.unwrap().is_none();
            let list_has_new = instance.get("new").await.unwrap().is_some();
            if removed && list_has_new {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{backend}: not refreshed in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        refresher.abort();
    }
}

#[tokio::test]
async fn invalid_stored_metadata_is_refused_but_not_fatal() {
    for (store, _guard) in stores().await {
        let registry = ClientRegistry::new(store.clone());
        registry.register(&web_client("good", "none"), None, None).await.unwrap();
        store
            .upsert_client(&ClientRecord {
                client_id: "bad".into(),
                metadata: r#"{"redirect_uris":["http://insecure.example.org/cb"]}"#.into(),
                secret_hash: None,
                created_at: 1,
                updated_at: 1,
            })
            .await
            .unwrap();
        registry.reload().await.unwrap();
        assert!(registry.get("good").await.unwrap().is_some());
        assert!(registry.get("bad").await.unwrap().is_none());
        let entries = registry.list().await.unwrap();
        assert_eq!(entries.len(), 2);
        let bad = entries.iter().find(|e| e.client_id == "bad").unwrap();
        assert!(bad.client.is_err());
        assert!(matches!(registry.rotate_secret("bad").await, Err(RegistryError::Broken { .. })));
    }
}

// ---------------------------------------------------------------------------------------------
// Secret-based and public authentication

async fn registry_with_clients(store: SharedStore) -> (Arc<ClientRegistry>, String, String) {
    let registry = ClientRegistry::new(store);
    let basic_secret =
        registry.register(&web_client("basic-app", "client_secret_basic"), None, None).await.unwrap().secret.unwrap();
    let post_secret =
        registry.register(&web_client("post-app", "client_secret_post"), None, None).await.unwrap().secret.unwrap();
    registry.register(&web_client("spa", "none"), None, None).await.unwrap();
    (registry, basic_secret.as_str().to_string(), post_secret.as_str().to_string())
}

#[tokio::test]
async fn secret_and_public_authentication() {
    for (store, _guard) in stores().await {
        let backend = store.backend().as_str();
        let (registry, basic_secret, post_secret) = registry_with_clients(store).await;
        let eph = ephemeral();
        let none = HeaderMap::new();

        // client_secret_basic, with and without a matching client_id in the body.
        let ok = auth(&registry, &basic("basic-app", &basic_secret), &[], &eph).await.unwrap();
        assert_eq!(ok.client.client_id(), "basic-app", "{backend}");
        assert_eq!(ok.method, TokenEndpointAuthMethod::ClientSecretBasic);
        let with_id = form(&[("client_id", "basic-app"), ("grant_type", "x")]);
        auth(&registry, &basic("basic-app", &basic_secret), &with_id, &eph).await.unwrap();
        // The scheme name is case-insensitive; credentials are form-urlencoded (`-` as %2D).
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode(format!("basic%2Dapp:{basic_secret}"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("bAsIc {encoded}")).unwrap());
        auth(&registry, &headers, &[], &eph).await.unwrap();

        // client_secret_post.
        let params = form(&[("client_id", "post-app"), ("client_secret", &post_secret)]);
        let ok = auth(&registry, &none, &params, &eph).await.unwrap();
        assert_eq!(ok.method, TokenEndpointAuthMethod::ClientSecretPost);
        assert_invalid_client(
            auth(&registry, &none, &form(&[("client_secret", &post_secret)]), &eph).await,
            "client_id",
        );

        // none: a public client names itself.
        let ok = auth(&registry, &none, &form(&[("client_id", "spa")]), &eph).await.unwrap();
        assert_eq!(ok.method, TokenEndpointAuthMethod::None);
        assert!(ok.client.is_public());
        assert_invalid_client(auth(&registry, &none, &[], &eph).await, "required");
    }
}

#[tokio::test]
async fn unknown_client_and_wrong_secret_fail_identically() {
    for (store, _guard) in stores().await {
        let (registry, basic_secret, post_secret) = registry_with_clients(store).await;
        let eph = ephemeral();
        let none = HeaderMap::new();
        let wrong_basic =
            assert_invalid_client(auth(&registry, &basic("basic-app", "wrong-secret"), &[], &eph).await, "failed");
        let unknown_basic =
            assert_invalid_client(auth(&registry, &basic("nobody", &basic_secret), &[], &eph).await, "failed");
        let wrong_post = assert_invalid_client(
            auth(&registry, &none, &form(&[("client_id", "post-app"), ("client_secret", "wrong-secret")]), &eph).await,
            "failed",
        );
        let unknown_post = assert_invalid_client(
            auth(&registry, &none, &form(&[("client_id", "nobody"), ("client_secret", &post_secret)]), &eph).await,
            "failed",
        );
        let unknown_public =
            assert_invalid_client(auth(&registry, &none, &form(&[("client_id", "nobody")]), &eph).await, "failed");
        for other in [&unknown_basic, &wrong_post, &unknown_post, &unknown_public] {
            assert_eq!(other.code, wrong_basic.code);
            assert_eq!(other.description, wrong_basic.description);
            assert_eq!(other.challenge, wrong_basic.challenge);
        }
        // An empty secret is a wrong secret too.
        assert_invalid_client(auth(&registry, &basic("basic-app", ""), &[], &eph).await, "failed");
    }
}

#[tokio::test]
async fn the_registered_method_is_required() {
    for (store, _guard) in stores().await {
        let (registry, basic_secret, post_secret) = registry_with_clients(store).await;
        let eph = ephemeral();
        let none = HeaderMap::new();
        // A basic client posting its secret in the body.
        assert_invalid_client(
            auth(&registry, &none, &form(&[("client_id", "basic-app"), ("client_secret", &basic_secret)]), &eph).await,
            "client_secret_basic",
        );
        // A post client using the header.
        assert_invalid_client(auth(&registry, &basic("post-app", &post_secret), &[], &eph).await, "client_secret_post");
        // A confidential client sending no credentials at all.
        assert_invalid_client(auth(&registry, &none, &form(&[("client_id", "basic-app")]), &eph).await, "required");
        // A public client sending a secret.
        assert_invalid_client(auth(&registry, &basic("spa", "whatever"), &[], &eph).await, "public");
    }
}

#[tokio::test]
async fn malformed_and_ambiguous_requests() {
    let (store, _guard) = stores().await.remove(0);
    let (registry, basic_secret, _) = registry_with_clients(store).await;
    let eph = ephemeral();
    let none = HeaderMap::new();
    // Two methods at once.
    assert_invalid_request(
        auth(&registry, &basic("basic-app", &basic_secret), &form(&[("client_secret", &basic_secret)]), &eph).await,
        "exactly one",
    );
    assert_invalid_request(
        auth(
            &registry,
            &none,
            &form(&[
                ("client_id", "basic-app"),
                ("client_secret", &basic_secret),
                ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
                ("client_assertion", "a.b.c"),
            ]),
            &eph,
        )
        .await,
        "exactly one",
    );
    // Repeated parameters.
    assert_invalid_request(
        auth(&registry, &none, &form(&[("client_id", "spa"), ("client_id", "spa")]), &eph).await,
        "repeated",
    );
    // A client_id in the body naming another client.
    assert_invalid_client(
        auth(&registry, &basic("basic-app", &basic_secret), &form(&[("client_id", "spa")]), &eph).await,
        "does not match",
    );
    // Broken Basic credentials.
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
    assert_invalid_client(auth(&registry, &headers, &[], &eph).await, "malformed");
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic"));
    assert_invalid_client(auth(&registry, &headers, &[], &eph).await, "malformed");
    let mut headers = HeaderMap::new();
    let no_colon = format!("Basic {}", STANDARD.encode("basic-app"));
    headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&no_colon).unwrap());
    assert_invalid_client(auth(&registry, &headers, &[], &eph).await, "malformed");
    // Another scheme is not client authentication.
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
    let ok = auth(&registry, &headers, &form(&[("client_id", "spa")]), &eph).await.unwrap();
    assert_eq!(ok.method, TokenEndpointAuthMethod::None);
    // Wrong assertion type, or a type without an assertion.
    assert_invalid_request(
        auth(&registry, &none, &form(&[("client_assertion_type", "urn:other"), ("client_assertion", "a.b.c")]), &eph)
            .await,
        "client_assertion_type",
    );
    assert_invalid_request(
        auth(&registry, &none, &form(&[("client_assertion_type", JWT_BEARER_ASSERTION_TYPE)]), &eph).await,
        "without client_assertion",
    );
}

// ---------------------------------------------------------------------------------------------
// private_key_jwt

struct Key {
    private: Jwk,
    public: Jwk,
}

fn es256_key(kid: &str) -> Key {
    let pair = jws::ES256.generate_key_pair().unwrap();
    let mut private = pair.to_jwk_private_key();
    private.set_key_id(kid);
    let mut public = pair.to_jwk_public_key();
    public.set_key_id(kid);
    Key { private, public }
}

/// Signs an assertion; integer NumericDates written directly (josekit's setters write fractions).
fn sign(key: &Key, kid: Option<&str>, claims: Value) -> String {
    let signer = jws::ES256.signer_from_jwk(&key.private).unwrap();
    let mut header = JwsHeader::new();
    header.set_token_type("JWT");
    if let Some(kid) = kid {
        header.set_key_id(kid);
    }
    let payload = serde_json::to_vec(&claims).unwrap();
    jws::serialize_compact(&payload, &header, &signer).unwrap()
}

fn claims(client_id: &str, now: i64) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_ENDPOINT,
        "iat": now,
        "exp": now + 60,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

fn assertion_form(assertion: &str) -> Vec<(String, String)> {
    form(&[("client_assertion_type", JWT_BEARER_ASSERTION_TYPE), ("client_assertion", assertion)])
}

fn jwt_client(id: &str, keys: Value) -> String {
    let mut doc = json!({
        "client_id": id,
        "redirect_uris": ["https://app.example.org/cb"],
        "grant_types": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_method": "private_key_jwt",
    });
    for (k, v) in keys.as_object().unwrap() {
        doc[k] = v.clone();
    }
    doc.to_string()
}

#[tokio::test]
async fn private_key_jwt_with_inline_jwks() {
    for (store, _guard) in stores().await {
        let backend = store.backend().as_str();
        let registry = ClientRegistry::new(store);
        let key = es256_key("k1");
        let jwks = json!({ "jwks": { "keys": [Value::Object(key.public.as_ref().clone())] } });
        let outcome = registry.register(&jwt_client("jwt-app", jwks), None, None).await.unwrap();
        assert!(outcome.secret.is_none(), "no secret for private_key_jwt");
        registry.register(&web_client("other", "none"), None, None).await.unwrap();
        let eph = ephemeral();
        let none = HeaderMap::new();
        let now = unix_now();

        // Accepted: with kid, without kid, with the issuer as audience (in an array), with a
        // matching client_id parameter.
        let ok = auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), claims("jwt-app", now))), &eph)
            .await
            .unwrap();
        assert_eq!(ok.client.client_id(), "jwt-app", "{backend}");
        assert_eq!(ok.method, TokenEndpointAuthMethod::PrivateKeyJwt);
        auth(&registry, &none, &assertion_form(&sign(&key, None, claims("jwt-app", now))), &eph).await.unwrap();
        let mut c = claims("jwt-app", now);
        c["aud"] = json!(["https://elsewhere.example", ISSUER]);
        auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), c)), &eph).await.unwrap();
        let mut params = assertion_form(&sign(&key, Some("k1"), claims("jwt-app", now)));
        params.push(("client_id".into(), "jwt-app".into()));
        auth(&registry, &none, &params, &eph).await.unwrap();

        // Replay of the very same assertion.
        let assertion = sign(&key, Some("k1"), claims("jwt-app", now));
        auth(&registry, &none, &assertion_form(&assertion), &eph).await.unwrap();
        assert_invalid_client(auth(&registry, &none, &assertion_form(&assertion), &eph).await, "already used");

        // Expired (beyond the 60 s leeway), but within the leeway is fine.
        let mut c = claims("jwt-app", now);
        c["iat"] = json!(now - 200);
        c["exp"] = json!(now - 61);
        assert_invalid_client(
            auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), c)), &eph).await,
            "expired",
        );
        let mut c = claims("jwt-app", now);
        c["exp"] = json!(now - 30);
        auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), c)), &eph).await.unwrap();

        // Wrong audience.
        let mut c = claims("jwt-app", now);
        c["aud"] = json!("https://idp.example.org/other");
        assert_invalid_client(auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), c)), &eph).await, "aud");
        // iss ≠ sub.
        let mut c = claims("jwt-app", now);
        c["iss"] = json!("other");
        assert_invalid_client(
            auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), c)), &eph).await,
            "`iss` and `sub`",
        );
        // Missing exp, missing jti, lifetime over 10 minutes, iat in the future.
        let mut c = claims("jwt-app", now);
        c.as_object_mut().unwrap().remove("exp");
        assert_invalid_client(auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), c)), &eph).await, "`exp`");
        let mut c = claims("jwt-app", now);
        c.as_object_mut().unwrap().remove("jti");
        assert_invalid_client(auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), c)), &eph).await, "`jti`");
        let mut c = claims("jwt-app", now);
        c["exp"] = json!(now + 3600);
        assert_invalid_client(
            auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), c)), &eph).await,
            "too long",
        );
        let mut c = claims("jwt-app", now);
        c["iat"] = json!(now + 300);
        c["exp"] = json!(now + 360);
        assert_invalid_client(
            auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), c)), &eph).await,
            "future",
        );

        // Signed by a key the client did not register (same kid, or none).
        let stranger = es256_key("k1");
        assert_invalid_client(
            auth(&registry, &none, &assertion_form(&sign(&stranger, Some("k1"), claims("jwt-app", now))), &eph).await,
            "signature",
        );
        assert_invalid_client(
            auth(&registry, &none, &assertion_form(&sign(&stranger, None, claims("jwt-app", now))), &eph).await,
            "signature",
        );
        // Unknown client, and a client registered for another method.
        assert_invalid_client(
            auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), claims("nobody", now))), &eph).await,
            "failed",
        );
        assert_invalid_client(
            auth(&registry, &none, &assertion_form(&sign(&key, Some("k1"), claims("other", now))), &eph).await,
            "public",
        );
        // A body client_id naming another client than the assertion.
        let mut params = assertion_form(&sign(&key, Some("k1"), claims("jwt-app", now)));
        params.push(("client_id".into(), "other".into()));
        assert!(auth(&registry, &none, &params, &eph).await.is_err());

        // HMAC and unsigned assertions are refused whatever they claim.
        let hs = {
            let signer = jws::HS256.signer_from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
            let payload = serde_json::to_vec(&claims("jwt-app", now)).unwrap();
            jws::serialize_compact(&payload, &JwsHeader::new(), &signer).unwrap()
        };
        assert_invalid_client(auth(&registry, &none, &assertion_form(&hs), &eph).await, "HS256");
        let unsigned = {
            let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&claims("jwt-app", now)).unwrap());
            format!("{header}.{payload}.")
        };
        assert_invalid_client(auth(&registry, &none, &assertion_form(&unsigned), &eph).await, "none");
        assert_invalid_client(auth(&registry, &none, &assertion_form("not-a-jwt"), &eph).await, "not a signed JWT");
    }
}

/// A tiny JWKS server on 127.0.0.1:0 that counts its hits; the key set can be swapped.
async fn jwks_server(keys: Vec<Jwk>) -> (String, Arc<Mutex<Vec<Jwk>>>, Arc<AtomicUsize>) {
    use axum::routing::get;
    let published = Arc::new(Mutex::new(keys));
    let hits = Arc::new(AtomicUsize::new(0));
    let (p, h) = (Arc::clone(&published), Arc::clone(&hits));
    let app = axum::Router::new().route(
        "/jwks",
        get(move || {
            let (p, h) = (Arc::clone(&p), Arc::clone(&h));
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let keys: Vec<Value> = p.lock().unwrap().iter().map(|k| Value::Object(k.as_ref().clone())).collect();
                axum::Json(json!({ "keys": keys }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/jwks"), published, hits)
}

#[tokio::test]
async fn private_key_jwt_with_jwks_uri_caches_and_refetches_on_rotation() {
    for (store, _guard) in stores().await {
        let backend = store.backend().as_str();
        let min_refetch = Duration::from_millis(800);
        let registry = ClientRegistry::with_jwks_timings(store, Duration::from_secs(300), min_refetch);
        let old = es256_key("old");
        let (uri, published, hits) = jwks_server(vec![old.public.clone()]).await;
        registry.register(&jwt_client("remote-app", json!({ "jwks_uri": uri })), None, None).await.unwrap();
        let eph = ephemeral();
        let none = HeaderMap::new();
        let now = unix_now();
        let run = |key: &Key, kid: &str| assertion_form(&sign(key, Some(kid), claims("remote-app", now)));

        auth(&registry, &none, &run(&old, "old"), &eph).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{backend}: first use fetches");
        auth(&registry, &none, &run(&old, "old"), &eph).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{backend}: then the set is cached");

        // The client rotates. Right after a fetch, an unknown kid does not refetch (rate limit)...
        let new = es256_key("new");
        *published.lock().unwrap() = vec![new.public.clone()];
        assert_invalid_client(auth(&registry, &none, &run(&new, "new"), &eph).await, "signature");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{backend}: refetch is rate limited");
        // ...once the interval has passed, the unknown kid triggers one refetch and succeeds.
        tokio::time::sleep(min_refetch + Duration::from_millis(200)).await;
        auth(&registry, &none, &run(&new, "new"), &eph).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2, "{backend}: refetched on the new kid");
        // A bogus kid right after does not cause another fetch.
        let bogus = es256_key("bogus");
        assert_invalid_client(auth(&registry, &none, &run(&bogus, "bogus"), &eph).await, "signature");
        assert_eq!(hits.load(Ordering::SeqCst), 2, "{backend}");
        // A known kid with a bad signature never refetches.
        tokio::time::sleep(min_refetch + Duration::from_millis(200)).await;
        let impostor = es256_key("new");
        assert_invalid_client(auth(&registry, &none, &run(&impostor, "new"), &eph).await, "signature");
        assert_eq!(hits.load(Ordering::SeqCst), 2, "{backend}");
    }
}

#[tokio::test]
async fn unreachable_jwks_uri_is_invalid_client() {
    let (store, _guard) = stores().await.remove(0);
    let registry = ClientRegistry::new(store);
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    registry
        .register(&jwt_client("remote-app", json!({ "jwks_uri": "http://127.0.0.1:1/jwks" })), None, None)
        .await
        .unwrap();
    let key = es256_key("k");
    let eph = ephemeral();
    let result = auth(
        &registry,
        &HeaderMap::new(),
        &assertion_form(&sign(&key, Some("k"), claims("remote-app", unix_now()))),
        &eph,
    )
    .await;
    assert_invalid_client(result, "jwks_uri");
}

// ---------------------------------------------------------------------------------------------
// CLI

#[tokio::test]
async fn cli_import_show_list_rotate_remove() {
    for (store, _guard) in stores().await {
        let config = crate::config::Config::default();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clients.json");
        std::fs::write(
            &file,
            json!([
                { "client_id": "one", "client_name": "One", "redirect_uris": ["https://one.example.org/cb"] },
                { "client_id": "two", "redirect_uris": ["https://two.example.org/cb"], "token_endpoint_auth_method": "none" }
            ])
            .to_string(),
        )
        .unwrap();
        let import = cli::ClientCommand::Import { file: file.clone(), client_id: None };
        cli::run(&config, store.clone(), &import).await.unwrap();
        assert_eq!(store.list_clients().await.unwrap().len(), 2);
        // Re-import is an update.
        cli::run(&config, store.clone(), &import).await.unwrap();
        assert_eq!(store.list_clients().await.unwrap().len(), 2);

        // A bad entry anywhere: nothing is written, and the message names the entry.
        std::fs::write(
            &file,
            json!([
                { "client_id": "three", "redirect_uris": ["https://three.example.org/cb"] },
                { "client_id": "four", "redirect_uris": ["http://four.example.org/cb"] }
            ])
            .to_string(),
        )
        .unwrap();
        let error = cli::run(&config, store.clone(), &import).await.unwrap_err();
        assert!(error.contains("client #2") && error.contains("https"), "{error}");
        assert!(store.client_by_id("three").await.unwrap().is_none());
        // An algorithm the server has not enabled.
        std::fs::write(
            &file,
            json!({ "redirect_uris": ["https://x.example.org/cb"], "id_token_signed_response_alg": "EdDSA" })
                .to_string(),
        )
        .unwrap();
        let error = cli::run(&config, store.clone(), &import).await.unwrap_err();
        assert!(error.contains("keys.algorithms"), "{error}");
        let with_id = cli::ClientCommand::Import { file: file.clone(), client_id: Some("x".into()) };
        std::fs::write(&file, "[]").unwrap();
        assert!(cli::run(&config, store.clone(), &with_id).await.is_err());

        cli::run(&config, store.clone(), &cli::ClientCommand::List).await.unwrap();
        cli::run(&config, store.clone(), &cli::ClientCommand::Show { client_id: "one".into() }).await.unwrap();
        assert!(cli::run(&config, store.clone(), &cli::ClientCommand::Show { client_id: "zzz".into() }).await.is_err());
        let before = store.client_by_id("one").await.unwrap().unwrap().secret_hash;
        cli::run(&config, store.clone(), &cli::ClientCommand::RotateSecret { client_id: "one".into() }).await.unwrap();
        let after = store.client_by_id("one").await.unwrap().unwrap().secret_hash;
        assert_ne!(before, after);
        let error = cli::run(&config, store.clone(), &cli::ClientCommand::RotateSecret { client_id: "two".into() })
            .await
            .unwrap_err();
        assert!(error.contains("none"), "{error}");
        cli::run(&config, store.clone(), &cli::ClientCommand::Remove { client_id: "one".into() }).await.unwrap();
        assert!(
            cli::run(&config, store.clone(), &cli::ClientCommand::Remove { client_id: "one".into() }).await.is_err()
        );
        assert_eq!(store.list_clients().await.unwrap().len(), 1);
    }
}

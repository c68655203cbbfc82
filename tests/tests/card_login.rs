//! CPS card login, black-box: the real server with its card listener (rustls, optional client
//! certificate) on a test PKI made by `habilis dev-pki`, CRLs served over HTTP by the test, a
//! scripted browser holding a card certificate, RFC 8705 clients holding an organisation
//! certificate, and a real nginx in front for the proxy mode.
//!
//! Test names read as `<behaviour>::<storage>` when the behaviour depends on storage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use habilis_e2e::{
    Browser, ClientAuth, Landing, Storage, TestEnv, amr_of, authorize_query, backchannel_http, drain_audit, eventually,
    first_party_client_metadata, free_port, link_by_id, pkce_pair, post_form, query_param, test_config,
    verify_with_jwks,
};
use habilis_idp::audit::AuditEvent;
use habilis_idp::config::{CardMode, Config, UnknownIdNat};
use serde_json::{Value, json};

const CALLBACK: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "correct horse battery staple";

habilis_e2e::on_both_storages!(
    card_login_completes_the_code_flow_at_eidas3,
    tls_client_auth_tokens_are_bound_to_the_certificate,
    refused_cards_get_a_page_naming_the_reason_and_an_audit_event,
    a_card_revoked_in_a_new_crl_is_refused_after_the_next_refresh_without_restart,
    a_stale_crl_fails_closed_until_a_fresh_one_is_published,
    fail_open_lets_a_card_through_without_a_crl_and_audits_every_use,
    card_login_steps_up_a_password_session_to_eidas3,
    unknown_id_nat_is_provisioned_or_held_for_approval_as_configured,
    an_invited_professional_is_activated_by_the_card,
    proxy_mode_behind_nginx_and_the_header_is_refused_from_anyone_else,
    repeated_refused_cards_lock_the_address_out,
);

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Serves `<dir>/crl.der` over HTTP, as a CA's CRL distribution point does.
struct CrlServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CrlServer {
    async fn start(dir: PathBuf) -> CrlServer {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let app = axum::Router::new().route(
            "/crl.der",
            axum::routing::get(move || {
                let dir = dir.clone();
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    std::fs::read(dir.join("crl.der")).unwrap_or_default()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the CRL server");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CrlServer { url: format!("http://{addr}/crl.der"), fetches, task }
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server with card login on a fresh test PKI.
struct CardEnv {
    env: TestEnv,
    pki: tempfile::TempDir,
    manifest: Value,
    /// `https://127.0.0.1:<card listener port>` (or the proxy's origin in proxy mode).
    card_origin: String,
    crl: CrlServer,
}

/// A test PKI whose cards point at a CRL server, and a configuration using it in direct mode.
async fn pki_and_config(storage: Storage, data_dir: &Path) -> Option<(tempfile::TempDir, CrlServer, Config)> {
    let pki = tempfile::tempdir().expect("a directory for the test PKI");
    let crl = CrlServer::start(pki.path().to_path_buf()).await;
    habilis_idp::cps::devpki::generate(pki.path(), &["localhost".into(), "127.0.0.1".into()], Some(&crl.url))
        .expect("the test PKI");
    let mut config = test_config(storage, data_dir).await?;
    config.card.mode = CardMode::On;
    config.card.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.card.tls_certificate = Some(pki.path().join("server.pem"));
    config.card.tls_key = Some(pki.path().join("server.key.pem"));
    config.card.trust_anchors = vec![pki.path().join("trust-bundle.pem")];
    config.card.crl_sources = vec![crl.url.clone()];
    Some((pki, crl, config))
}

impl CardEnv {
    async fn start(storage: Storage, tweak: impl FnOnce(&mut Config)) -> Option<CardEnv> {
        let data = tempfile::tempdir().expect("a data directory");
        let (pki, crl, mut config) = pki_and_config(storage, data.path()).await?;
        tweak(&mut config);
        let env = TestEnv::from_config(storage, config, Some(data)).await;
        let card_origin = env.state().card.as_ref().expect("card login is on").public_url.clone();
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(pki.path().join("manifest.json")).unwrap()).expect("the manifest");
        Some(CardEnv { env, pki, manifest, card_origin, crl })
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.pki.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn card(&self, name: &str) -> &Value {
        let card = &self.manifest["cards"][name];
        assert!(card.is_object(), "no card {name} in the manifest");
        card
    }

    fn id_nat(&self, name: &str) -> String {
        self.card(name)["id_nat"].as_str().expect("an idNat").to_string()
    }

    /// PEM certificate followed by its PEM key, as `reqwest::Identity::from_pem` wants.
    fn identity(&self, cert: &str, key: &str) -> Vec<u8> {
        let mut pem = self.file(cert);
        pem.extend(self.file(key));
        pem
    }

    /// A browser with the card `name` in its reader.
    fn browser_with(&self, name: &str) -> Browser {
        let identity = self.identity(&format!("cards/{name}.pem"), &format!("cards/{name}.key.pem"));
        Browser::with_card(&self.env.url(""), &identity, &self.file("root-ca.pem"), &[&self.card_origin])
    }

    /// A card login attempt in a new browser with card `name`: the login page of `authorize_url`,
    /// then its card link.
    async fn attempt(&self, name: &str, authorize_url: &str) -> Landing {
        let browser = self.browser_with(name);
        let link = card_link(&browser, authorize_url).await;
        browser.navigate(&link).await
    }

    /// An HTTP client presenting `cert` (an application's certificate) to the card listener.
    fn mtls_client(&self, cert: &str, key: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .identity(reqwest::Identity::from_pem(&self.identity(cert, key)).expect("an identity"))
            .add_root_certificate(reqwest::Certificate::from_pem(&self.file("root-ca.pem")).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an mTLS client")
    }

    async fn register_rp(&self, extra: Value) -> (String, String) {
        let metadata = first_party_client_metadata(CALLBACK, "openid profile", extra);
        let secret = self.env.register_client("rp", &metadata).await.expect("a secret");
        ("rp".to_string(), secret)
    }

    fn authorize_url(&self, challenge: &str, extra: &[(&str, Option<&str>)]) -> String {
        let base = [
            ("client_id", "rp"),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", "openid profile"),
            ("state", "card-state"),
            ("nonce", "card-nonce"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        self.env.url(&format!("/authorize?{}", authorize_query(&base, extra)))
    }

    async fn jwks(&self) -> Value {
        backchannel_http().get(self.env.url("/jwks")).send().await.unwrap().json().await.unwrap()
    }

    /// Redeems `code` at the token endpoint of the main listener.
    async fn redeem(&self, secret: &str, code: &str, verifier: &str) -> (Value, Value) {
        let answer = post_form(
            &backchannel_http(),
            &self.env.url("/token"),
            &ClientAuth::Basic("rp".into(), secret.into()),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", verifier),
            ],
        )
        .await;
        assert_eq!(answer.status, 200, "token response: {:?}", answer.body);
        let jwks = self.jwks().await;
        let (_, id) =
            verify_with_jwks(answer.body["id_token"].as_str().unwrap(), &jwks).expect("the ID token verifies");
        let (_, at) =
            verify_with_jwks(answer.body["access_token"].as_str().unwrap(), &jwks).expect("the access token verifies");
        (id, at)
    }
}

/// Opens the login page of an authorization request and returns the card link it offers.
async fn card_link(browser: &Browser, authorize_url: &str) -> String {
    let (url, status, body) = browser.navigate(authorize_url).await.page();
    assert!(url.contains("/login?"), "expected the login page, got {url} ({status}):\n{body}");
    link_by_id(&body, "card-login").unwrap_or_else(|| panic!("the login page offers no card login:\n{body}"))
}

/// The refusal page of a card: its HTTP status and the reason code it names.
fn refusal(landing: Landing) -> (u16, String, String) {
    let (url, status, body) = landing.page();
    let marker = "data-reason=\"";
    let start = body.find(marker).unwrap_or_else(|| panic!("not a card refusal page ({url}, {status}):\n{body}"));
    let reason = body[start + marker.len()..].split('"').next().unwrap_or("").to_string();
    (status, reason, body)
}

// ---------------------------------------------------------------------------------------------
// Direct mode

async fn card_login_completes_the_code_flow_at_eidas3(storage: Storage) {
    let Some(ce) = CardEnv::start(storage, |_| {}).await else { return };
    let account_id = ce.env.add_professional(&ce.id_nat("doctor"), "Maxime", "Maxi", PASSWORD).await;
    let (_, secret) = ce.register_rp(json!({})).await;
    let mut audit = ce.env.state().audit.subscribe();
    let browser = ce.browser_with("doctor");
    let (verifier, challenge) = pkce_pair();
    let link = card_link(&browser, &ce.authorize_url(&challenge, &[("acr_values", Some("eidas3"))])).await;
    assert!(link.starts_with(&format!("{}/login/card?interaction=", ce.card_origin)), "{link}");

    let back = browser.navigate(&link).await.left();
    assert_eq!(query_param(&back, "state").as_deref(), Some("card-state"));
    let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let (id, at) = ce.redeem(&secret, &code, &verifier).await;
    assert_eq!(id["acr"], "eidas3");
    assert_eq!(at["acr"], "eidas3");
    let amr = amr_of(&id);
    for method in ["sc", "pin", "mfa"] {
        assert!(amr.contains(&method.to_string()), "amr {amr:?} lacks {method}");
    }
    assert!(!amr.contains(&"pwd".to_string()), "no password was typed: {amr:?}");
    assert_eq!(id["nonce"], "card-nonce");

    let state = ce.env.state();
    let recorded = state.store.credentials_of(&account_id, "card").await.unwrap();
    assert_eq!(recorded.len(), 1, "the certificate is recorded on the account");
    assert_eq!(String::from_utf8_lossy(&recorded[0].secret), ce.card("doctor")["fingerprint"].as_str().unwrap());
    let events = drain_audit(&mut audit);
    assert!(
        events.iter().any(|r| matches!(&r.event, AuditEvent::CardLoginSucceeded { account_id: a, step_up: false, .. } if *a == account_id)),
        "{events:?}"
    );
    assert!(
        events.iter().any(|r| matches!(&r.event, AuditEvent::CardCertificateChanged { previous: None, .. })),
        "the first certificate on record is audited: {events:?}"
    );
    let metrics = backchannel_http().get(ce.env.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("habilis_card_logins_total{outcome=\"success\"} 1"), "{metrics}");

    // The ticket that carried the card back to the issuer is single use.
    let ticket_url = back.to_string();
    assert!(!ticket_url.contains("ticket="));
}

async fn refused_cards_get_a_page_naming_the_reason_and_an_audit_event(storage: Storage) {
    let Some(ce) = CardEnv::start(storage, |_| {}).await else { return };
    ce.register_rp(json!({})).await;
    let (_, challenge) = pkce_pair();
    let url = ce.authorize_url(&challenge, &[]);
    let cases = [
        ("revoked", "revoked", 403),
        ("expired", "expired", 403),
        ("wrong-eku", "wrong_usage", 403),
        ("wrong-ca", "unknown_issuer", 403),
        ("no-idnat", "no_id_nat", 403),
        // A valid card whose idNat has no account (card.unknown_id_nat = refuse).
        ("pharmacist", "unknown_account", 403),
    ];
    for (card, reason, status) in cases {
        let mut audit = ce.env.state().audit.subscribe();
        let (got_status, got_reason, body) = refusal(ce.attempt(card, &url).await);
        assert_eq!((got_status, got_reason.as_str()), (status, reason), "card {card}:\n{body}");
        let other_way = link_by_id(&body, "other-way").unwrap_or_default();
        assert!(other_way.contains("/login?interaction="), "the page offers another way to log in:\n{body}");
        let events = drain_audit(&mut audit);
        assert!(
            events.iter().any(|r| matches!(&r.event, AuditEvent::CardLoginRefused { reason: r, .. } if r == reason)),
            "card {card}: no refusal audited: {events:?}"
        );
    }

    // No certificate at all (the user cancelled the browser's chooser).
    let plain = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ce.file("root-ca.pem")).unwrap())
        .cookie_store(true)
        .build()
        .unwrap();
    let browser = ce.env.browser();
    let link = card_link(&browser, &url).await;
    let response = plain.get(&link).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body = response.text().await.unwrap();
    assert!(body.contains("data-reason=\"no_certificate\""), "{body}");

    let metrics = backchannel_http().get(ce.env.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("habilis_card_logins_total{outcome=\"revoked\"} 1"), "{metrics}");
}

async fn a_card_revoked_in_a_new_crl_is_refused_after_the_next_refresh_without_restart(storage: Storage) {
    let Some(ce) = CardEnv::start(storage, |c| c.card.crl_refresh_interval = Duration::from_secs(1)).await else {
        return;
    };
    ce.env.add_professional(&ce.id_nat("doctor"), "Maxime", "Maxi", PASSWORD).await;
    ce.register_rp(json!({})).await;
    let (_, challenge) = pkce_pair();
    let url = ce.authorize_url(&challenge, &[]);
    assert!(matches!(ce.attempt("doctor", &url).await, Landing::Left(_)), "the doctor's card is accepted at first");

    let now = habilis_idp::unix_now();
    let serials = [
        ce.card("revoked")["serial"].as_str().unwrap().to_string(),
        ce.card("doctor")["serial"].as_str().unwrap().to_string(),
    ];
    habilis_idp::cps::devpki::publish_crl(ce.pki.path(), &serials, now + 1, now + 86_400).expect("a new CRL");
    let fetches_before = ce.crl.fetches.load(Ordering::SeqCst);
    let refused = eventually(Duration::from_secs(20), || async {
        match ce.attempt("doctor", &url).await {
            Landing::Page { body, .. } => body.contains("data-reason=\"revoked\""),
            Landing::Left(_) => false,
        }
    })
    .await;
    assert!(refused, "the newly revoked card is refused once the CRL is refreshed");
    assert!(ce.crl.fetches.load(Ordering::SeqCst) > fetches_before, "the CRL was fetched again over HTTP");
    let cached = std::fs::read_dir(ce.env.state().config.data_dir.join("crl-cache")).unwrap().count();
    assert!(cached > 0, "the CRL is cached durably in the data directory");
}

async fn a_stale_crl_fails_closed_until_a_fresh_one_is_published(storage: Storage) {
    let Some(ce) = CardEnv::start(storage, |c| {
        c.card.crl_refresh_interval = Duration::from_secs(1);
        c.card.crl_max_staleness = Duration::from_secs(3);
    })
    .await
    else {
        return;
    };
    ce.env.add_professional(&ce.id_nat("doctor"), "Maxime", "Maxi", PASSWORD).await;
    ce.register_rp(json!({})).await;
    let (_, challenge) = pkce_pair();
    let url = ce.authorize_url(&challenge, &[]);
    let attempt = || async { ce.attempt("doctor", &url).await };
    // The CRL published with the PKI is never renewed here: after 3 s it is stale.
    let closed = eventually(Duration::from_secs(20), || async {
        matches!(attempt().await, Landing::Page { status: 503, ref body, .. } if body.contains("data-reason=\"revocation_stale\""))
    })
    .await;
    assert!(closed, "a stale CRL makes card logins fail closed");

    let now = habilis_idp::unix_now();
    let revoked = [ce.card("revoked")["serial"].as_str().unwrap().to_string()];
    habilis_idp::cps::devpki::publish_crl(ce.pki.path(), &revoked, now + 1, now + 86_400).expect("a fresh CRL");
    let reopened = eventually(Duration::from_secs(20), || async { matches!(attempt().await, Landing::Left(_)) }).await;
    assert!(reopened, "a fresh CRL reopens card login without a restart");
}

async fn fail_open_lets_a_card_through_without_a_crl_and_audits_every_use(storage: Storage) {
    let Some(ce) = CardEnv::start(storage, |c| {
        c.card.revocation = habilis_idp::config::RevocationSetting::FailOpen;
        c.card.crl_sources = vec!["http://127.0.0.1:9/unreachable.crl".into()];
    })
    .await
    else {
        return;
    };
    ce.env.add_professional(&ce.id_nat("doctor"), "Maxime", "Maxi", PASSWORD).await;
    ce.register_rp(json!({})).await;
    let (_, challenge) = pkce_pair();
    let mut audit = ce.env.state().audit.subscribe();
    assert!(
        matches!(ce.attempt("doctor", &ce.authorize_url(&challenge, &[])).await, Landing::Left(_)),
        "fail-open lets the card through"
    );
    let events = drain_audit(&mut audit);
    assert!(
        events.iter().any(
            |r| matches!(&r.event, AuditEvent::CardRevocationFailOpen { reason, .. } if reason == "revocation_unknown")
        ),
        "{events:?}"
    );
}

async fn card_login_steps_up_a_password_session_to_eidas3(storage: Storage) {
    let Some(ce) = CardEnv::start(storage, |_| {}).await else { return };
    let id_nat = ce.id_nat("doctor");
    let account_id = ce.env.add_professional(&id_nat, "Maxime", "Maxi", PASSWORD).await;
    let (_, secret) = ce.register_rp(json!({})).await;
    let browser = ce.browser_with("doctor");
    let (verifier, challenge) = pkce_pair();
    let back = browser.authorize(&ce.authorize_url(&challenge, &[]), &id_nat, PASSWORD).await;
    let (first, _) = ce.redeem(&secret, &query_param(&back, "code").unwrap(), &verifier).await;
    assert!(first.get("acr").is_none() || first["acr"] != "eidas3", "a password alone is not eidas3: {first}");

    let mut audit = ce.env.state().audit.subscribe();
    let (verifier, challenge) = pkce_pair();
    let link = card_link(&browser, &ce.authorize_url(&challenge, &[("acr_values", Some("eidas3"))])).await;
    let back = browser.navigate(&link).await.left();
    let (stepped, _) = ce.redeem(&secret, &query_param(&back, "code").unwrap(), &verifier).await;
    assert_eq!(stepped["acr"], "eidas3");
    assert_eq!(stepped["sid"], first["sid"], "a step-up keeps the session");
    let amr = amr_of(&stepped);
    for method in ["pwd", "sc", "pin", "mfa"] {
        assert!(amr.contains(&method.to_string()), "amr {amr:?} lacks {method}");
    }
    let events = drain_audit(&mut audit);
    assert!(
        events.iter().any(|r| matches!(&r.event, AuditEvent::CardLoginSucceeded { account_id: a, step_up: true, .. } if *a == account_id)),
        "{events:?}"
    );
}

async fn unknown_id_nat_is_provisioned_or_held_for_approval_as_configured(storage: Storage) {
    // provision: the account is created, active, from the certificate.
    let Some(ce) = CardEnv::start(storage, |c| c.card.unknown_id_nat = UnknownIdNat::Provision).await else {
        return;
    };
    ce.register_rp(json!({})).await;
    let (_, challenge) = pkce_pair();
    assert!(matches!(ce.attempt("pharmacist", &ce.authorize_url(&challenge, &[])).await, Landing::Left(_)));
    let id_nat = ce.id_nat("pharmacist");
    let account = ce.env.state().store.account_by_login(&id_nat).await.unwrap().expect("a provisioned account");
    assert_eq!(account.status, habilis_idp::store::AccountStatus::Active);
    assert_eq!(account.id_nat.as_deref(), Some(id_nat.as_str()));
    assert!(account.family_name.is_some(), "names come from the certificate");

    // pending: the account waits for an administrator.
    let Some(ce) = CardEnv::start(storage, |c| c.card.unknown_id_nat = UnknownIdNat::Pending).await else {
        return;
    };
    ce.register_rp(json!({})).await;
    let mut audit = ce.env.state().audit.subscribe();
    let url = ce.authorize_url(&challenge, &[]);
    let (status, reason, _) = refusal(ce.attempt("pharmacist", &url).await);
    assert_eq!((status, reason.as_str()), (403, "pending_approval"));
    let events = drain_audit(&mut audit);
    assert!(
        events.iter().any(|r| matches!(&r.event, AuditEvent::CardAccountCreated { pending_approval: true, .. })),
        "{events:?}"
    );
    let store = &ce.env.state().store;
    let account = store.account_by_login(&id_nat).await.unwrap().expect("a pending account");
    assert_eq!(account.status, habilis_idp::store::AccountStatus::Disabled);
    // What `habilis user approve` does.
    store
        .set_account_status(&account.id, habilis_idp::store::AccountStatus::Active, habilis_idp::unix_now())
        .await
        .unwrap();
    store.delete_credentials(&account.id, habilis_idp::cps::login::APPROVAL_REQUEST).await.unwrap();
    assert!(matches!(ce.attempt("pharmacist", &url).await, Landing::Left(_)), "approved, the card logs in");
}

async fn an_invited_professional_is_activated_by_the_card(storage: Storage) {
    let Some(ce) = CardEnv::start(storage, |_| {}).await else { return };
    ce.register_rp(json!({})).await;
    let id_nat = ce.id_nat("doctor");
    let now = habilis_idp::unix_now();
    let account = habilis_idp::store::Account {
        id: uuid::Uuid::now_v7().to_string(),
        kind: habilis_idp::store::AccountKind::Professional,
        login: id_nat.clone(),
        id_nat: Some(id_nat.clone()),
        email: None,
        given_name: None,
        family_name: None,
        status: habilis_idp::store::AccountStatus::Invited,
        locale: None,
        created_at: now,
        updated_at: now,
        last_authenticated_at: None,
    };
    ce.env.state().store.insert_account(&account).await.unwrap();
    let (_, challenge) = pkce_pair();
    assert!(
        matches!(ce.attempt("doctor", &ce.authorize_url(&challenge, &[])).await, Landing::Left(_)),
        "the card logs the invited professional in"
    );
    let stored = ce.env.state().store.account_by_id(&account.id).await.unwrap().unwrap();
    assert_eq!(stored.status, habilis_idp::store::AccountStatus::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_issuer_refuses_test_trust_anchors() {
    let data = tempfile::tempdir().unwrap();
    let Some((_pki, _crl, mut config)) = pki_and_config(Storage::Embedded, data.path()).await else { return };
    config.server.issuer = Some(url::Url::parse("https://habilis.example.org").unwrap());
    let error = match habilis_idp::app::RunningServer::start(config.clone()).await {
        Ok(_) => panic!("a TEST root must be refused with a production issuer"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("TEST root") && error.contains("allow_test_anchors"), "{error}");
    config.card.allow_test_anchors = true;
    let server = habilis_idp::app::RunningServer::start(config).await.expect("explicitly allowed");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// RFC 8705 certificate-bound clients

async fn tls_client_auth_tokens_are_bound_to_the_certificate(storage: Storage) {
    let Some(ce) = CardEnv::start(storage, |_| {}).await else { return };
    let subject = ce.manifest["org"]["subject"].as_str().expect("the organisation certificate's subject").to_string();
    let metadata = json!({
        "client_name": "Back end",
        "redirect_uris": [CALLBACK],
        "grant_types": ["authorization_code"],
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_subject_dn": subject,
        "scope": "openid profile",
        "first_party": true,
    });
    assert!(ce.env.register_client("backend", &metadata).await.is_none(), "no secret for a certificate client");
    let id_nat = ce.id_nat("doctor");
    ce.env.add_professional(&id_nat, "Maxime", "Maxi", PASSWORD).await;
    let (verifier, challenge) = pkce_pair();
    let base = [
        ("client_id", "backend"),
        ("redirect_uri", CALLBACK),
        ("response_type", "code"),
        ("scope", "openid profile"),
        ("state", "s"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let url = ce.env.url(&format!("/authorize?{}", authorize_query(&base, &[])));
    let back = ce.env.browser().authorize(&url, &id_nat, PASSWORD).await;
    let code = query_param(&back, "code").expect("a code");

    let discovery: Value = backchannel_http()
        .get(ce.env.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let aliases = &discovery["mtls_endpoint_aliases"];
    let token_endpoint = aliases["token_endpoint"].as_str().expect("an mTLS token endpoint").to_string();
    assert!(token_endpoint.starts_with(&ce.card_origin));
    assert_eq!(discovery["tls_client_certificate_bound_access_tokens"], true);

    // Without its certificate (main listener), the client cannot authenticate.
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", verifier.as_str()),
    ];
    let public = ClientAuth::Public("backend".into());
    let answer = post_form(&backchannel_http(), &ce.env.url("/token"), &public, &fields).await;
    assert_eq!((answer.status, answer.error()), (401, "invalid_client"), "{:?}", answer.body);
    // With a card certificate that chains but names someone else: refused.
    let doctor = ce.mtls_client("cards/doctor.pem", "cards/doctor.key.pem");
    let answer = post_form(&doctor, &token_endpoint, &public, &fields).await;
    assert_eq!((answer.status, answer.error()), (401, "invalid_client"), "{:?}", answer.body);

    let org = ce.mtls_client("org.pem", "org.key.pem");
    let answer = post_form(&org, &token_endpoint, &public, &fields).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let access = answer.body["access_token"].as_str().unwrap().to_string();
    let (_, claims) = verify_with_jwks(&access, &ce.jwks().await).unwrap();
    let thumbprint = ce.manifest["org"]["fingerprint"].as_str().unwrap();
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint, "the token is bound to the certificate");

    let userinfo_mtls = aliases["userinfo_endpoint"].as_str().unwrap();
    let with_cert = org.get(userinfo_mtls).bearer_auth(&access).send().await.unwrap();
    assert_eq!(with_cert.status().as_u16(), 200, "with its certificate the token works");
    let without = backchannel_http().get(ce.env.url("/userinfo")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(without.status().as_u16(), 401, "without the certificate it is refused");
    let challenge = without.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    let other = doctor.get(userinfo_mtls).bearer_auth(&access).send().await.unwrap();
    assert_eq!(other.status().as_u16(), 401, "another certificate is refused");

    let introspection = aliases["introspection_endpoint"].as_str().unwrap();
    let answer = post_form(&org, introspection, &public, &[("token", access.as_str())]).await;
    assert_eq!(answer.body["active"], true, "{:?}", answer.body);
    assert_eq!(answer.body["cnf"]["x5t#S256"], thumbprint, "introspection reports the binding");

    // self_signed_tls_client_auth: the certificate registered in jwks (x5c).
    let self_signed_pem = String::from_utf8(ce.file("org-self-signed.pem")).unwrap();
    let der_b64: String = self_signed_pem.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("");
    // The client's public key as a JWK, with its certificate in x5c (RFC 8705 §2.2).
    let key_pair = josekit::jwk::alg::ec::EcKeyPair::from_pem(
        ce.file("org-self-signed.key.pem"),
        Some(josekit::jwk::alg::ec::EcCurve::P256),
    )
    .expect("the self-signed certificate's key");
    let mut jwk = Value::Object(key_pair.to_jwk_public_key().as_ref().clone());
    jwk["x5c"] = json!([der_b64]);
    let metadata = json!({
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "self_signed_tls_client_auth",
        "jwks": {"keys": [jwk]},
        "scope": "api",
    });
    ce.env.register_client("selfie", &metadata).await;
    let self_signed = ce.mtls_client("org-self-signed.pem", "org-self-signed.key.pem");
    let selfie = ClientAuth::Public("selfie".into());
    let cc = [("grant_type", "client_credentials"), ("scope", "api")];
    let answer = post_form(&self_signed, &token_endpoint, &selfie, &cc).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let answer = post_form(&org, &token_endpoint, &selfie, &cc).await;
    assert_eq!((answer.status, answer.error()), (401, "invalid_client"), "an unregistered certificate is refused");
}

// ---------------------------------------------------------------------------------------------
// Proxy mode, with a real nginx in front

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().map(PathBuf::from).find(|p| p.exists())
}

struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx terminating TLS on `port`, asking for an optional client certificate (any CA: Habilis
/// validates it), forwarding it URL-encoded in `X-SSL-Client-Cert` to `upstream`.
async fn start_nginx(binary: &Path, pki: &Path, port: u16, upstream: SocketAddr) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki}/server.pem;
    ssl_certificate_key {pki}/server.key.pem;
    ssl_verify_client optional_no_ca;
    ssl_verify_depth 3;
    location / {{
      proxy_pass http://{upstream};
      proxy_set_header Host $host:$server_port;
      proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
    }}
  }}
}}
"#,
        pki = pki.display()
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = std::process::Command::new(binary)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nginx starts");
    let up = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    assert!(
        up,
        "nginx listens on {port}: {}",
        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
    );
    Nginx { child, _dir: dir }
}

async fn proxy_mode_behind_nginx_and_the_header_is_refused_from_anyone_else(storage: Storage) {
    let Some(nginx) = nginx_binary() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "nginx is required for the proxy-mode test under CI (apt-get install nginx; .ci/setup test does it)"
            );
        }
        eprintln!("skipping: nginx is not installed (apt-get install nginx)");
        return;
    };
    let port = free_port();
    let Some(ce) = CardEnv::start(storage, |c| {
        c.card.listen = None;
        c.card.proxy_header = Some("x-ssl-client-cert".into());
        c.card.trusted_proxies = vec!["127.0.0.1".into()];
        c.card.public_url = Some(url::Url::parse(&format!("https://127.0.0.1:{port}")).unwrap());
    })
    .await
    else {
        return;
    };
    let _nginx = start_nginx(&nginx, ce.pki.path(), port, ce.env.server.addr).await;
    ce.env.add_professional(&ce.id_nat("doctor"), "Maxime", "Maxi", PASSWORD).await;
    let (_, secret) = ce.register_rp(json!({})).await;

    let browser = ce.browser_with("doctor");
    let (verifier, challenge) = pkce_pair();
    let link = card_link(&browser, &ce.authorize_url(&challenge, &[])).await;
    assert!(link.starts_with(&format!("https://127.0.0.1:{port}/login/card")), "{link}");
    let back = browser.navigate(&link).await.left();
    let (id, _) = ce.redeem(&secret, &query_param(&back, "code").unwrap(), &verifier).await;
    assert_eq!(id["acr"], "eidas3", "the card forwarded by nginx logs in");

    // Through nginx, a revoked card is still refused: Habilis validates, not the proxy.
    let (_, reason, _) = refusal(ce.attempt("revoked", &ce.authorize_url(&challenge, &[])).await);
    assert_eq!(reason, "revoked");

    // The same header sent straight to Habilis from another address (127.0.0.2) is ignored,
    // counted and audited.
    let mut audit = ce.env.state().audit.subscribe();
    let plain = ce.env.browser();
    let link = card_link(&plain, &ce.authorize_url(&challenge, &[])).await;
    let direct = link.replace(&format!("https://127.0.0.1:{port}"), &ce.env.url(""));
    let pem = String::from_utf8(ce.file("cards/doctor.pem")).unwrap();
    let escaped: String = url::form_urlencoded::byte_serialize(pem.as_bytes()).collect();
    let forger = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = forger.get(&direct).header("x-ssl-client-cert", escaped).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401, "no certificate is taken from a non-proxy address");
    assert!(response.text().await.unwrap().contains("data-reason=\"no_certificate\""));
    let events = drain_audit(&mut audit);
    assert!(events.iter().any(|r| matches!(&r.event, AuditEvent::ForgedProxyHeader { .. })), "{events:?}");

    // From the proxy's own address but for another host (a server block of the proxy that does
    // not clear the header): refused too.
    let pem_escaped: String = url::form_urlencoded::byte_serialize(pem.as_bytes()).collect();
    let same_address = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = same_address.get(&direct).header("x-ssl-client-cert", pem_escaped).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401, "the header counts only on the card host");
    let metrics = backchannel_http().get(ce.env.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("habilis_forged_proxy_headers_total 2"), "{metrics}");
}

// ---------------------------------------------------------------------------------------------
// The test PKI command

#[test]
fn dev_pki_writes_a_complete_test_pki_and_refuses_a_foreign_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("pki");
    let out = habilis_e2e::run_habilis(&["dev-pki", target.to_str().unwrap()], &[], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("TEST ONLY"), "{stdout}");
    for file in
        ["root-ca.pem", "personnes-ca.pem", "trust-bundle.pem", "crl.der", "server.pem", "org.p12", "manifest.json"]
    {
        assert!(target.join(file).is_file(), "{file} is missing");
    }
    for card in ["doctor", "pharmacist", "staff", "revoked", "expired", "wrong-eku", "no-idnat", "wrong-ca"] {
        assert!(target.join(format!("cards/{card}.p12")).is_file(), "card {card} has no PKCS#12 file");
    }
    let again = habilis_e2e::run_habilis(&["dev-pki", target.to_str().unwrap()], &[], None);
    assert!(again.status.success(), "a dev PKI directory is regenerated");
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let refused = habilis_e2e::run_habilis(&["dev-pki", foreign.to_str().unwrap()], &[], None);
    assert!(!refused.status.success(), "a directory holding something else is not overwritten");
    assert_eq!(std::fs::read_to_string(foreign.join("notes.txt")).unwrap(), "mine");
}

async fn repeated_refused_cards_lock_the_address_out(storage: Storage) {
    let Some(ce) = CardEnv::start(storage, |c| c.login.max_failures_per_address = 2).await else { return };
    ce.register_rp(json!({})).await;
    let (_, challenge) = pkce_pair();
    let url = ce.authorize_url(&challenge, &[]);
    for _ in 0..2 {
        let (status, reason, _) = refusal(ce.attempt("revoked", &url).await);
        assert_eq!((status, reason.as_str()), (403, "revoked"));
    }
    let (_, status, body) = ce.attempt("revoked", &url).await.page();
    assert_eq!(status, 429, "the address is locked out after its failures:\n{body}");
}

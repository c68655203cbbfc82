//! Security keys and passkeys, black-box: the real server (issuer `http://localhost:<port>`, a
//! WebAuthn relying party) and a software authenticator (webauthn-authenticator-rs) playing the
//! browser's part of each ceremony through the JSON endpoints the login pages call.

use habilis_e2e::{
    Browser, ClientAuth, Landing, Storage, TestEnv, amr_of, authorize_query, backchannel_http, drain_audit, enrol_totp,
    first_party_client_metadata, fresh_totp_code, hidden_input, pkce_pair, post_form, query_param, test_config,
    verify_with_jwks,
};
use habilis_idp::audit::AuditEvent;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const CALLBACK: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "correct horse battery staple";
const ID_NAT: &str = "899700427885";

habilis_e2e::on_both_storages!(
    register_then_log_in_passwordless_and_as_second_factor,
    wrong_origin_revoked_key_and_counter_regression_are_refused_and_audited,
    required_attestation_admits_only_the_allowed_models,
    refused_assertions_lock_the_address_out,
);

struct Rp {
    env: TestEnv,
    secret: String,
    totp: totp_rs::Totp,
}

/// A WebAuthn relying party needs a domain name: the issuer is `http://localhost:<port>`. Logins
/// need two factors (the production floor).
fn localhost(config: &mut habilis_idp::config::Config) {
    config.server.issuer = Some(url::Url::parse("http://localhost:0").unwrap());
    config.login.minimum_acr = "eidas1".into();
}

async fn rp(storage: Storage) -> Option<Rp> {
    rp_with(storage, |_| {}).await
}

async fn rp_with(storage: Storage, tweak: impl FnOnce(&mut habilis_idp::config::Config)) -> Option<Rp> {
    let env = TestEnv::start_with(storage, |c| {
        localhost(c);
        tweak(c);
    })
    .await?;
    let account_id = env.add_professional(ID_NAT, "Maxime", "Maxi", PASSWORD).await;
    let totp = enrol_totp(&env, &account_id, ID_NAT).await;
    let secret = env
        .register_client("rp", &first_party_client_metadata(CALLBACK, "openid profile", json!({})))
        .await
        .expect("a secret");
    Some(Rp { env, secret, totp })
}

impl Rp {
    fn origin(&self) -> Url {
        Url::parse(&self.env.base_url).unwrap()
    }

    fn browser(&self) -> Browser {
        Browser::new(&self.env.base_url)
    }

    fn authorize_url(&self, challenge: &str, acr: Option<&str>) -> String {
        let base = [
            ("client_id", "rp"),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", "openid profile"),
            ("state", "st"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        format!("{}/authorize?{}", self.env.base_url, authorize_query(&base, &[("acr_values", acr)]))
    }

    async fn id_token(&self, back: &url::Url, verifier: &str) -> Value {
        let code = query_param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
        let answer = post_form(
            &backchannel_http(),
            &self.env.url("/token"),
            &ClientAuth::Basic("rp".into(), self.secret.clone()),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", verifier),
            ],
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let jwks = backchannel_http().get(self.env.url("/jwks")).send().await.unwrap().json().await.unwrap();
        verify_with_jwks(answer.body["id_token"].as_str().unwrap(), &jwks).expect("the ID token verifies").1
    }

    /// Password then authenticator-app code: an eidas1 session.
    async fn log_in_eidas1(&self, browser: &Browser, last: &mut Option<u64>) -> Value {
        let (verifier, challenge) = pkce_pair();
        let landing = browser.navigate(&self.authorize_url(&challenge, None)).await;
        let landing = browser.log_in(landing, ID_NAT, PASSWORD).await;
        let (url, _, body) = landing.page();
        assert!(url.contains("/login?"), "expected the second-factor page: {url}");
        let code = fresh_totp_code(&self.totp, last).await;
        let fields = [
            ("interaction", hidden_input(&body, "interaction").unwrap()),
            ("csrf", hidden_input(&body, "csrf").unwrap()),
            ("method", "totp".to_string()),
            ("code", code),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let back = browser.submit("/login/code", &fields).await.left();
        self.id_token(&back, &verifier).await
    }

    async fn post_json(&self, browser: &Browser, path: &str, body: &Value) -> (u16, Value) {
        let response = browser.http.post(format!("{}{path}", self.env.base_url)).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers the authenticator's key through the session of `browser`.
    async fn register<A: WebauthnAuthenticator>(
        &self,
        browser: &Browser,
        authenticator: &mut A,
        name: &str,
    ) -> (u16, Value) {
        let session = browser.cookie_values("habilis-session").pop().expect("a session cookie");
        // What the account page embeds: the session's CSRF token.
        let csrf = habilis_idp::cli::sha256_hex(&format!("passkeys:{session}"));
        let (status, started) =
            self.post_json(browser, "/account/passkeys/register/start", &json!({ "csrf": csrf })).await;
        if status != 200 {
            return (status, started);
        }
        let options: CreationChallengeResponse = serde_json::from_value(started["options"].clone()).unwrap();
        let credential = authenticator.do_registration(self.origin(), options).expect("the authenticator registers");
        let body = json!({ "csrf": csrf, "ceremony": started["ceremony"], "name": name, "credential": credential });
        self.post_json(browser, "/account/passkeys/register/finish", &body).await
    }

    /// Starts an authorization and returns the login page's interaction and CSRF token.
    async fn login_page(&self, browser: &Browser, acr: Option<&str>) -> (String, String, String) {
        let (verifier, challenge) = pkce_pair();
        let (url, status, body) = browser.navigate(&self.authorize_url(&challenge, acr)).await.page();
        assert!(url.contains("/login?"), "expected a login page, got {url} ({status})");
        (hidden_input(&body, "interaction").unwrap(), hidden_input(&body, "csrf").unwrap(), verifier)
    }

    /// Starts an assertion ceremony and lets the authenticator sign it: the finish request, not
    /// yet sent.
    async fn sign(
        &self,
        browser: &Browser,
        authenticator: &mut SoftPasskey,
        interaction: &str,
        csrf: &str,
        login: Option<&str>,
        origin: Url,
    ) -> Value {
        let mut start = json!({ "interaction": interaction, "csrf": csrf });
        if let Some(login) = login {
            start["login"] = json!(login);
        }
        let (status, started) = self.post_json(browser, "/webauthn/authenticate/start", &start).await;
        assert_eq!(status, 200, "{started}");
        let options: RequestChallengeResponse = serde_json::from_value(started["options"].clone()).unwrap();
        let credential = authenticator.do_authentication(origin, options).expect("the authenticator signs");
        json!({ "interaction": interaction, "csrf": csrf, "ceremony": started["ceremony"], "credential": credential })
    }

    /// One assertion ceremony: start, authenticator, finish. Returns the finish answer and the
    /// finish request (to replay it).
    async fn assert_key(
        &self,
        browser: &Browser,
        authenticator: &mut SoftPasskey,
        interaction: &str,
        csrf: &str,
        login: Option<&str>,
        origin: Url,
    ) -> ((u16, Value), Value) {
        let finish = self.sign(browser, authenticator, interaction, csrf, login, origin).await;
        (self.post_json(browser, "/webauthn/authenticate/finish", &finish).await, finish)
    }
}

async fn register_then_log_in_passwordless_and_as_second_factor(storage: Storage) {
    let Some(rp) = rp(storage).await else { return };
    let mut last = None;
    let mut authenticator = SoftPasskey::new(true);

    // The login page loads the WebAuthn script: scripts from this origin only, nothing inline.
    let probe = rp.browser();
    let authorize = url::Url::parse(&rp.authorize_url(&pkce_pair().1, None)).unwrap();
    let redirect = probe.http.get(authorize.clone()).send().await.unwrap();
    let login_page = authorize.join(redirect.headers()["location"].to_str().unwrap()).unwrap();
    let login = probe.http.get(login_page).send().await.unwrap();
    let csp = login.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");

    // Registration needs a session: none → refused.
    let stranger = rp.browser();
    let (status, body) = rp.post_json(&stranger, "/account/passkeys/register/start", &json!({ "csrf": "x" })).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("login_required")));

    let browser = rp.browser();
    let first = rp.log_in_eidas1(&browser, &mut last).await;
    assert_eq!(first["acr"], "eidas1");
    let (status, body) = rp.register(&browser, &mut authenticator, "YubiKey bureau").await;
    assert_eq!(status, 200, "{body}");
    let keys = rp.env.state().store.webauthn_credentials_of(&first_account(&rp).await).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].name, "YubiKey bureau");

    // Step-up of the eidas1 session to eidas2 with the key.
    let (interaction, csrf, verifier) = rp.login_page(&browser, Some("eidas2")).await;
    let ((status, body), _) = rp.assert_key(&browser, &mut authenticator, &interaction, &csrf, None, rp.origin()).await;
    assert_eq!(status, 200, "{body}");
    let back = browser.navigate(body["redirect"].as_str().unwrap()).await.left();
    let stepped = rp.id_token(&back, &verifier).await;
    assert_eq!(stepped["acr"], "eidas2");
    assert_eq!(stepped["sid"], first["sid"], "a step-up keeps the session");

    // Passwordless in a new browser: the login, then the key (with user verification).
    let fresh = rp.browser();
    let mut audit = rp.env.state().audit.subscribe();
    let (interaction, csrf, verifier) = rp.login_page(&fresh, Some("eidas2")).await;
    let ((status, body), finish) =
        rp.assert_key(&fresh, &mut authenticator, &interaction, &csrf, Some(ID_NAT), rp.origin()).await;
    assert_eq!(status, 200, "{body}");
    let back = fresh.navigate(body["redirect"].as_str().unwrap()).await.left();
    let id = rp.id_token(&back, &verifier).await;
    assert_eq!(id["acr"], "eidas2");
    let amr = amr_of(&id);
    assert!(amr.contains(&"hwk".into()) && amr.contains(&"user".into()) && amr.contains(&"mfa".into()), "{amr:?}");
    assert!(!amr.contains(&"pwd".into()), "no password was typed: {amr:?}");
    assert!(
        drain_audit(&mut audit).iter().any(|r| matches!(r.event, AuditEvent::WebauthnLoginSucceeded { .. })),
        "the key login is audited"
    );

    // A replayed finish request: the ceremony is single use.
    let (status, body) = rp.post_json(&fresh, "/webauthn/authenticate/finish", &finish).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("ceremony_expired")), "{body}");
    assert!(
        drain_audit(&mut audit).iter().any(|r| matches!(r.event, AuditEvent::WebauthnRefused { .. })),
        "the replay is audited"
    );

    // Password then key (second factor) in another browser.
    let other = rp.browser();
    let (verifier, challenge) = pkce_pair();
    let landing = other.navigate(&rp.authorize_url(&challenge, Some("eidas2"))).await;
    let (_, _, page) = other.log_in(landing, ID_NAT, PASSWORD).await.page();
    let interaction = hidden_input(&page, "interaction").unwrap();
    let csrf = hidden_input(&page, "csrf").unwrap();
    let ((status, body), _) = rp.assert_key(&other, &mut authenticator, &interaction, &csrf, None, rp.origin()).await;
    assert_eq!(status, 200, "{body}");
    let back = other.navigate(body["redirect"].as_str().unwrap()).await.left();
    let id = rp.id_token(&back, &verifier).await;
    assert_eq!(id["acr"], "eidas2");
    assert!(amr_of(&id).contains(&"pwd".into()));
}

async fn first_account(rp: &Rp) -> String {
    rp.env.state().store.account_by_login(ID_NAT).await.unwrap().expect("the account").id
}

async fn wrong_origin_revoked_key_and_counter_regression_are_refused_and_audited(storage: Storage) {
    let Some(rp) = rp(storage).await else { return };
    let mut last = None;
    let mut authenticator = SoftPasskey::new(true);
    let browser = rp.browser();
    rp.log_in_eidas1(&browser, &mut last).await;
    let (status, body) = rp.register(&browser, &mut authenticator, "key").await;
    assert_eq!(status, 200, "{body}");
    let account = first_account(&rp).await;
    let store = &rp.env.state().store;
    let mut audit = rp.env.state().audit.subscribe();

    // An assertion made on another origin (a site on another port of the same host, which the
    // authenticator accepts for the relying-party id but Habilis does not).
    let phishing = Url::parse("http://localhost:1").unwrap();
    let fresh = rp.browser();
    let (interaction, csrf, _) = rp.login_page(&fresh, Some("eidas2")).await;
    let ((status, _), _) = rp.assert_key(&fresh, &mut authenticator, &interaction, &csrf, Some(ID_NAT), phishing).await;
    assert_eq!(status, 401, "an assertion for another origin is refused");

    // Counter regression (a cloned key): the stored counter is ahead of the authenticator's.
    let key = store.webauthn_credentials_of(&account).await.unwrap().remove(0);
    let mut passkey: Value = serde_json::from_str(&key.passkey).unwrap();
    passkey["cred"]["counter"] = json!(1_000_000);
    store.record_webauthn_use(&key.credential_id, &passkey.to_string(), 1).await.unwrap();
    let cloned = rp.browser();
    let (interaction, csrf, _) = rp.login_page(&cloned, Some("eidas2")).await;
    let ((status, _), _) =
        rp.assert_key(&cloned, &mut authenticator, &interaction, &csrf, Some(ID_NAT), rp.origin()).await;
    assert_eq!(status, 401, "a counter going backwards is refused");
    store.record_webauthn_use(&key.credential_id, &key.passkey, 1).await.unwrap();

    // Revoked between the start and the finish of a ceremony.
    let late = rp.browser();
    let (interaction, csrf, _) = rp.login_page(&late, Some("eidas2")).await;
    let finish = rp.sign(&late, &mut authenticator, &interaction, &csrf, Some(ID_NAT), rp.origin()).await;
    assert!(store.delete_webauthn_credential(&account, &key.credential_id).await.unwrap());
    let (status, body) = rp.post_json(&late, "/webauthn/authenticate/finish", &finish).await;
    assert_eq!(status, 401, "a revoked key is refused: {body}");

    let refusals =
        drain_audit(&mut audit).into_iter().filter(|r| matches!(r.event, AuditEvent::WebauthnRefused { .. })).count();
    assert!(refusals >= 3, "each refusal is audited ({refusals})");

    // An unknown login gets a challenge shaped like a real one (no account enumeration).
    let probe = rp.browser();
    let (interaction, csrf, _) = rp.login_page(&probe, Some("eidas2")).await;
    let (status, started) = rp
        .post_json(
            &probe,
            "/webauthn/authenticate/start",
            &json!({ "interaction": interaction, "csrf": csrf, "login": "899700218896" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(started["options"]["publicKey"]["allowCredentials"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceremony_started_on_one_instance_finishes_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut config) = test_config(Storage::Services, dir.path()).await else { return };
    localhost(&mut config);
    let first = TestEnv::from_config(Storage::Services, config.clone(), None).await;
    // The second instance: same database, same Redis prefix, same issuer (a load balancer's).
    config.server.issuer = Some(url::Url::parse(&first.base_url).unwrap());
    let second = TestEnv::from_config(Storage::Services, config, None).await;
    let account_id = first.add_professional(ID_NAT, "Maxime", "Maxi", PASSWORD).await;
    let totp = enrol_totp(&first, &account_id, ID_NAT).await;
    let secret =
        first.register_client("rp", &first_party_client_metadata(CALLBACK, "openid profile", json!({}))).await.unwrap();
    let rp = Rp { env: first, secret, totp };
    let mut last = None;
    let mut authenticator = SoftPasskey::new(true);
    let browser = rp.browser();
    rp.log_in_eidas1(&browser, &mut last).await;
    let (status, body) = rp.register(&browser, &mut authenticator, "key").await;
    assert_eq!(status, 200, "{body}");

    let fresh = rp.browser();
    let (interaction, csrf, verifier) = rp.login_page(&fresh, Some("eidas2")).await;
    let finish = rp.sign(&fresh, &mut authenticator, &interaction, &csrf, Some(ID_NAT), rp.origin()).await;
    // Finished on the second instance.
    // The browser's cookies are for the host `localhost`, whatever the port.
    let second_url = format!("http://localhost:{}/webauthn/authenticate/finish", second.server.addr.port());
    let response = fresh.http.post(second_url).json(&finish).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    let back = fresh.navigate(body["redirect"].as_str().unwrap()).await;
    let Landing::Left(back) = back else { panic!("the login did not end: {back:?}") };
    assert_eq!(rp.id_token(&back, &verifier).await["acr"], "eidas2");
}

async fn required_attestation_admits_only_the_allowed_models(storage: Storage) {
    use crypto_glue::der::Encode;
    use webauthn_authenticator_rs::softtoken::{AAGUID, SoftToken};
    let (mut approved, vendor_ca) = SoftToken::new(true).expect("a software token and its attestation CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("vendor-root.der");
    std::fs::write(&ca_file, vendor_ca.to_der().unwrap()).unwrap();
    let allowed = habilis_idp::config::AllowedAuthenticator {
        aaguid: AAGUID.to_string(),
        ca: ca_file,
        description: "approved software token".into(),
    };
    let Some(rp) = rp_with(storage, |c| {
        c.webauthn.attestation = habilis_idp::config::AttestationMode::Required;
        c.webauthn.allowed_authenticators = vec![allowed];
    })
    .await
    else {
        return;
    };
    let browser = rp.browser();
    rp.log_in_eidas1(&browser, &mut None).await;
    let (status, body) = rp.register(&browser, &mut SoftPasskey::new(true), "unapproved").await;
    assert_eq!(status, 401, "a model without an approved attestation is refused: {body}");
    assert!(body["error_description"].as_str().unwrap_or("").contains("approved"), "{body}");
    let (status, body) = rp.register(&browser, &mut approved, "approved").await;
    assert_eq!(status, 200, "an allowed model with its attestation is registered: {body}");
}

async fn refused_assertions_lock_the_address_out(storage: Storage) {
    let Some(rp) = rp_with(storage, |c| c.login.max_failures_per_address = 1).await else { return };
    let mut authenticator = SoftPasskey::new(true);
    let browser = rp.browser();
    rp.log_in_eidas1(&browser, &mut None).await;
    let (status, _) = rp.register(&browser, &mut authenticator, "key").await;
    assert_eq!(status, 200);
    let fresh = rp.browser();
    let (interaction, csrf, _) = rp.login_page(&fresh, Some("eidas2")).await;
    let phishing = Url::parse("http://localhost:1").unwrap();
    let ((status, _), _) = rp.assert_key(&fresh, &mut authenticator, &interaction, &csrf, Some(ID_NAT), phishing).await;
    assert_eq!(status, 401);
    let start = json!({ "interaction": interaction, "csrf": csrf, "login": ID_NAT });
    let (status, body) = rp.post_json(&fresh, "/webauthn/authenticate/start", &start).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("locked")), "{body}");
}

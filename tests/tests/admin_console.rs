//! The admin scopes at the authorization endpoint, and the admin console (crate `habilis-admin`,
//! mounted at `/admin`) in headless Chromium.
//!
//! - `admin_scopes_at_authorize`: a client registered with `admin`/`audit` gets them only for an
//!   account holding an administration role, and only after an eidas2 login (an eidas1 session
//!   steps up with a security key); a patient or a professional without role gets a token without
//!   them (the scope is dropped), with no step-up asked.
//! - `console_in_chromium`: an administrator logs in to the console (password, authenticator-app
//!   code, then a passkey of Chromium's virtual authenticator for eidas2), creates an organisation
//!   and appoints an organisation administrator; that administrator logs in (another browser) and
//!   invites a professional, whose invitation arrives in the SMTP sink, and assigns that
//!   professional a habilitation profile in the organisation (checked through the admin API). The
//!   platform administrator's session then reads both actions on the console's audit page
//!   (filtered by actor, then by event; records reach the log asynchronously, so the page is
//!   reloaded until they do), downloads the export through the console, and visits the clients,
//!   relationships and signing keys pages (rotating a key). The actions are also checked in the
//!   audit events the server emits. Screenshots in `<target>/screenshots/admin-*.png`. Skipped
//!   (with a message) outside CI without Chromium.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use habilis_e2e::smtp_sink::SmtpSink;
use habilis_e2e::{
    AccountSpec, Browser, ClientAuth, Storage, TestEnv, authorize_query, backchannel_http, create_account_with_locale,
    drain_audit, enrol_totp, first_party_client_metadata, free_port, fresh_totp_code, hidden_input, pkce_pair,
    post_form, production_login, query_param, target_dir,
};
use habilis_idp::audit::AuditEvent;
use habilis_idp::store::AccountKind;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const PASSWORD: &str = "correct horse battery staple";
const CALLBACK: &str = "http://127.0.0.1:9/callback";
const ADMIN: &str = "admin@habilis.test";
const ORG_ADMIN: &str = "899700020029";
const PRO: &str = "899700427885";
const PATIENT: &str = "patient@example.org";
const INVITEE: &str = "899700010012";
const INVITEE_EMAIL: &str = "nouvelle.recrue@example.org";
/// A habilitation profile that applies only to the professionals it is assigned to.
const ASSIGNED_PROFILE: &str = "coordination-soins";
const PAGE_WAIT: Duration = Duration::from_secs(20);

fn spec(kind: AccountKind, login: &str, given: &str, family: &str) -> AccountSpec {
    let id_nat = (kind == AccountKind::Professional).then(|| login.to_string());
    let email = if login.contains('@') { login.to_string() } else { format!("{}@example.org", given.to_lowercase()) };
    AccountSpec {
        kind,
        login: login.into(),
        id_nat,
        email: Some(email),
        given_name: Some(given.into()),
        family_name: Some(family.into()),
    }
}

/// A WebAuthn relying party needs a domain name (`localhost`); logins need two factors.
fn localhost(config: &mut habilis_idp::config::Config) {
    config.server.issuer = Some(url::Url::parse("http://localhost:0").unwrap());
    config.login.minimum_acr = "eidas1".into();
}

// ---------------------------------------------------------------------------------------------
// The protocol

struct Rp {
    env: TestEnv,
    secret: String,
}

impl Rp {
    fn authorize_url(&self, scope: &str, challenge: &str) -> String {
        let base = [
            ("client_id", "console-like"),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", scope),
            ("state", "st"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        format!("{}/authorize?{}", self.env.base_url, authorize_query(&base, &[]))
    }

    async fn tokens(&self, back: &url::Url, verifier: &str) -> Value {
        let code = query_param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
        let answer = post_form(
            &backchannel_http(),
            &self.env.url("/token"),
            &ClientAuth::Basic("console-like".into(), self.secret.clone()),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", verifier),
            ],
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.body
    }

    /// Password then authenticator-app code, for `scope`: where the browser ends.
    async fn log_in(
        &self,
        browser: &Browser,
        scope: &str,
        login: &str,
        app: &totp_rs::Totp,
        last: &mut Option<u64>,
    ) -> (habilis_e2e::Landing, String) {
        let (verifier, challenge) = pkce_pair();
        let landing = browser.navigate(&self.authorize_url(scope, &challenge)).await;
        let landing = browser.log_in(landing, login, PASSWORD).await;
        let (url, _, body) = landing.page();
        assert!(url.contains("/login?"), "expected the second-factor page: {url}");
        let code = fresh_totp_code(app, last).await;
        let fields = [
            ("interaction", hidden_input(&body, "interaction").unwrap()),
            ("csrf", hidden_input(&body, "csrf").unwrap()),
            ("method", "totp".to_string()),
            ("code", code),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        (browser.submit("/login/code", &fields).await, verifier)
    }

    async fn post_json(&self, browser: &Browser, path: &str, body: &Value) -> (u16, Value) {
        let response = browser.http.post(format!("{}{path}", self.env.base_url)).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn scopes_of(tokens: &Value) -> Vec<String> {
    let access = tokens["access_token"].as_str().expect("an access token");
    let (_, claims) = habilis_e2e::jwt_parts(access);
    claims["scope"].as_str().unwrap_or("").split(' ').map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_scopes_at_authorize() {
    let env = TestEnv::start_with(Storage::Embedded, localhost).await.expect("the embedded server starts");
    let state = env.state();
    let admin =
        create_account_with_locale(state, &spec(AccountKind::Administrator, ADMIN, "Ada", "Admin"), PASSWORD, None)
            .await;
    let pro =
        create_account_with_locale(state, &spec(AccountKind::Professional, PRO, "Kit", "Doc"), PASSWORD, None).await;
    let patient =
        create_account_with_locale(state, &spec(AccountKind::Patient, PATIENT, "Pat", "Ient"), PASSWORD, None).await;
    let metadata = first_party_client_metadata(CALLBACK, "openid profile admin audit", json!({}));
    let secret = env.register_client("console-like", &metadata).await.expect("a secret");
    let rp = Rp { env, secret };

    // A patient and a professional without role: the scope is dropped, no stronger login asked.
    for (login, account) in [(PATIENT, &patient), (PRO, &pro)] {
        let app = enrol_totp(&rp.env, account, login).await;
        let browser = Browser::new(&rp.env.base_url);
        let (landing, verifier) = rp.log_in(&browser, "openid admin audit", login, &app, &mut None).await;
        let tokens = rp.tokens(&landing.left(), &verifier).await;
        assert_eq!(scopes_of(&tokens), ["openid"], "{login} gets no admin scope");
        let answer = backchannel_http()
            .get(rp.env.url("/api/admin/v1/organisations"))
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{login}'s token does not open the admin API");
    }

    // The administrator: an eidas1 session, then a security key.
    let app = enrol_totp(&rp.env, &admin, ADMIN).await;
    let mut last = None;
    let browser = Browser::new(&rp.env.base_url);
    let (landing, verifier) = rp.log_in(&browser, "openid profile", ADMIN, &app, &mut last).await;
    let tokens = rp.tokens(&landing.left(), &verifier).await;
    assert_eq!(scopes_of(&tokens), ["openid", "profile"]);
    let origin = Url::parse(&rp.env.base_url).unwrap();
    let mut key = SoftPasskey::new(true);
    let session = browser.cookie_values("habilis-session").pop().expect("a session cookie");
    let csrf = habilis_idp::cli::sha256_hex(&format!("passkeys:{session}"));
    let (status, started) = rp.post_json(&browser, "/account/passkeys/register/start", &json!({ "csrf": csrf })).await;
    assert_eq!(status, 200, "{started}");
    let options: CreationChallengeResponse = serde_json::from_value(started["options"].clone()).unwrap();
    let credential = key.do_registration(origin.clone(), options).expect("the authenticator registers");
    let body = json!({ "csrf": csrf, "ceremony": started["ceremony"], "name": "key", "credential": credential });
    let (status, answer) = rp.post_json(&browser, "/account/passkeys/register/finish", &body).await;
    assert_eq!(status, 200, "{answer}");

    // The eidas1 session asks for admin: no code, the login journey asks for the key (step-up).
    let (verifier, challenge) = pkce_pair();
    let (url, status, body) = browser.navigate(&rp.authorize_url("openid admin audit", &challenge)).await.page();
    assert!(url.contains("/login?"), "an eidas1 session steps up for admin scopes, got {url} ({status})");
    let interaction = hidden_input(&body, "interaction").unwrap();
    let csrf = hidden_input(&body, "csrf").unwrap();
    let (status, started) = rp
        .post_json(&browser, "/webauthn/authenticate/start", &json!({ "interaction": interaction, "csrf": csrf }))
        .await;
    assert_eq!(status, 200, "{started}");
    let options: RequestChallengeResponse = serde_json::from_value(started["options"].clone()).unwrap();
    let credential = key.do_authentication(origin, options).expect("the authenticator signs");
    let finish =
        json!({ "interaction": interaction, "csrf": csrf, "ceremony": started["ceremony"], "credential": credential });
    let (status, finished) = rp.post_json(&browser, "/webauthn/authenticate/finish", &finish).await;
    assert_eq!(status, 200, "{finished}");
    let back = browser.navigate(finished["redirect"].as_str().unwrap()).await.left();
    let tokens = rp.tokens(&back, &verifier).await;
    assert_eq!(scopes_of(&tokens), ["openid", "admin", "audit"]);
    let (_, id) = habilis_e2e::jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["acr"], "eidas2");
    let answer = backchannel_http()
        .get(rp.env.url("/api/admin/v1/organisations"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "the administrator's token opens the admin API");

    // Not for clients registered without them.
    let plain = first_party_client_metadata(CALLBACK, "openid profile", json!({}));
    rp.env.register_client("plain", &plain).await;
    let query = authorize_query(
        &[
            ("client_id", "plain"),
            ("redirect_uri", CALLBACK),
            ("response_type", "code"),
            ("scope", "openid admin"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
        &[],
    );
    let refused = browser.navigate(&format!("/authorize?{query}")).await.left();
    assert_eq!(query_param(&refused, "error").as_deref(), Some("invalid_scope"));
    rp.env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Chromium

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// Chromium and chromedriver; `None` (after saying why) when missing outside CI, a failure under CI.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    match (find_program(&["chromium", "chromium-browser", "google-chrome"]), find_program(&["chromedriver"])) {
        (Some(c), Some(d)) => Some((c, d)),
        _ if habilis_idp::testing::in_ci() => {
            panic!("chromium or chromedriver not found and CI is set: install them with .ci/setup")
        }
        _ => {
            eprintln!("skipping the admin console browser test: chromium or chromedriver not found");
            None
        }
    }
}

struct Chromedriver {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Chromedriver {
    async fn start(program: &Path) -> anyhow::Result<Chromedriver> {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", dir.path().join("chromedriver.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let driver = Chromedriver { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = backchannel_http().get(format!("{}/status", driver.url)).send().await
                && let Ok(status) = r.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return Ok(driver);
            }
            ensure!(std::time::Instant::now() < deadline, "chromedriver did not become ready within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A headless Chromium session in French, with a virtual platform authenticator.
    async fn browser(&self, chromium: &Path, profile: &Path) -> anyhow::Result<Client> {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-background-networking", "--disable-sync", "--window-size=1100,1000",
                         "--lang=fr", "--accept-lang=fr-FR,fr", format!("--user-data-dir={}", profile.display())],
                "prefs": { "intl.accept_languages": "fr-FR,fr" },
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .map_err(|e| anyhow!("Chromium did not start through chromedriver: {e}"))?;
        let session = browser.session_id().await?.ok_or_else(|| anyhow!("no WebDriver session"))?;
        let response = backchannel_http()
            .post(format!("{}/session/{session}/webauthn/authenticator", self.url))
            .json(&json!({ "protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
                           "hasUserVerification": true, "isUserVerified": true }))
            .send()
            .await?;
        ensure!(response.status().is_success(), "virtual authenticator refused: {}", response.text().await?);
        Ok(browser)
    }

    async fn console(&self, browser: &Client) -> Vec<String> {
        let Ok(Some(session)) = browser.session_id().await else { return Vec::new() };
        let Ok(response) = backchannel_http()
            .post(format!("{}/session/{session}/se/log", self.url))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
        else {
            return Vec::new();
        };
        let log: Value = response.json().await.unwrap_or_default();
        log["value"]
            .as_array()
            .map(|e| e.iter().map(|e| e["message"].as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            std::thread::sleep(Duration::from_millis(200));
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn screenshot(browser: &Client, name: &str) -> anyhow::Result<()> {
    let dir = target_dir().join("screenshots");
    std::fs::create_dir_all(&dir)?;
    let png = browser.screenshot().await?;
    let path = dir.join(format!("admin-{name}.png"));
    std::fs::write(&path, png)?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}

async fn wait_for(browser: &Client, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
    match browser.wait().at_most(PAGE_WAIT).for_element(Locator::Css(css)).await {
        Ok(element) => Ok(element),
        Err(e) => {
            let url = browser.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let source = browser.source().await.unwrap_or_default();
            Err(anyhow!("no `{css}` on {url} within {PAGE_WAIT:?} ({e}):\n{source}"))
        }
    }
}

async fn fill(browser: &Client, id: &str, text: &str) -> anyhow::Result<()> {
    browser.find(Locator::Id(id)).await?.send_keys(text).await?;
    Ok(())
}

/// Clicks what leads to another page (a link, a form's button) and returns once that page has
/// loaded. Finding an element right after a click could otherwise find it on the page being left
/// (the same nav link, the same search button), which the browser then reports as a "stale
/// element reference": the old document is marked, and the click counts as done once the current
/// document is a new one, fully loaded.
async fn click(browser: &Client, css: &str) -> anyhow::Result<()> {
    let element = browser.find(Locator::Css(css)).await?;
    browser.execute("window.__habilisLeaving = true", vec![]).await?;
    element.click().await?;
    let deadline = std::time::Instant::now() + PAGE_WAIT;
    loop {
        // While the navigation is under way the script may fail (no document yet): try again.
        let loaded = browser
            .execute("return window.__habilisLeaving === undefined && document.readyState === 'complete'", vec![])
            .await;
        if matches!(loaded, Ok(Value::Bool(true))) {
            return Ok(());
        }
        ensure!(std::time::Instant::now() < deadline, "clicking `{css}` led to no new page within {PAGE_WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks what acts within the page (an option, a disclosure): no new page is awaited.
async fn click_in_page(browser: &Client, css: &str) -> anyhow::Result<()> {
    browser.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

/// An eidas1 login (password, authenticator-app code) through a plain first-party app, then a
/// passkey registered on the account page with the browser's virtual authenticator.
async fn enrol_passkey(browser: &Client, env: &TestEnv, login: &str, app: &totp_rs::Totp) -> anyhow::Result<()> {
    let (_, challenge) = pkce_pair();
    let query = authorize_query(
        &[
            ("client_id", "account-app"),
            ("redirect_uri", &format!("{}/healthz", env.base_url)),
            ("response_type", "code"),
            ("scope", "openid"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
        &[],
    );
    browser.goto(&format!("{}/authorize?{query}", env.base_url)).await?;
    wait_for(browser, "input#login").await?;
    fill(browser, "login", login).await?;
    fill(browser, "password", PASSWORD).await?;
    click(browser, "form[action=\"/login\"] button[type=submit]").await?;
    wait_for(browser, "input#code").await?;
    fill(browser, "code", &fresh_totp_code(app, &mut None).await).await?;
    click(browser, "form[action=\"/login/code\"] button[type=submit]").await?;
    let deadline = std::time::Instant::now() + PAGE_WAIT;
    while browser.current_url().await?.path() != "/healthz" {
        ensure!(std::time::Instant::now() < deadline, "the eidas1 login did not end: {}", browser.source().await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.goto(&format!("{}/account/passkeys", env.base_url)).await?;
    let add = wait_for(browser, "button#passkey-register").await?;
    fill(browser, "passkey-name", "Chromium").await?;
    add.click().await?;
    browser
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::XPath("//li[strong='Chromium']"))
        .await
        .map_err(|e| anyhow!("the passkey is not listed ({e})"))?;
    Ok(())
}

/// Opens the console: Habilis asks for the passkey (step-up of the eidas1 session) and the
/// browser comes back to the dashboard.
async fn open_console(browser: &Client, env: &TestEnv, shot: &str) -> anyhow::Result<()> {
    browser.goto(&format!("{}/admin/", env.base_url)).await?;
    let key = wait_for(browser, "button#key-login:not([hidden])").await?;
    screenshot(browser, &format!("{shot}-step-up")).await?;
    key.click().await?;
    wait_for(browser, "#count-accounts").await?;
    screenshot(browser, &format!("{shot}-dashboard")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium() {
    let Some((chromium, driver_program)) = browser_programs() else { return };
    let sink = SmtpSink::start().await;
    let smtp_url = sink.url();
    let env = TestEnv::start_with(Storage::Embedded, |c| {
        production_login(c, &smtp_url);
        localhost(c);
    })
    .await
    .expect("the embedded server starts");
    habilis_idp::console::register_client(env.state()).await.expect("the console's client is registered");
    let healthz = format!("{}/healthz", env.base_url);
    env.register_client("account-app", &first_party_client_metadata(&healthz, "openid", json!({}))).await;
    let state = env.state();
    let admin = create_account_with_locale(
        state,
        &spec(AccountKind::Administrator, ADMIN, "Ada", "Admin"),
        PASSWORD,
        Some("fr"),
    )
    .await;
    let org_admin = create_account_with_locale(
        state,
        &spec(AccountKind::Professional, ORG_ADMIN, "Olga", "Cadre"),
        PASSWORD,
        Some("fr"),
    )
    .await;
    let admin_app = enrol_totp(&env, &admin, ADMIN).await;
    let org_admin_app = enrol_totp(&env, &org_admin, ORG_ADMIN).await;
    let profile = json!({"name": ASSIGNED_PROFILE, "description": "Coordination des soins", "kinds": ["treating"],
        "actions": ["read"], "clients": ["account-app"], "requires_assignment": true});
    state
        .habilitations
        .put_profile(&state.store, serde_json::from_value(profile).unwrap(), habilis_idp::unix_now())
        .await
        .expect("the profile is stored");
    let mut audit = state.audit.subscribe();

    let mut driver = Chromedriver::start(&driver_program).await.expect("chromedriver starts");
    let (p1, p2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = driver.browser(&chromium, p1.path()).await.expect("Chromium starts");
    let outcome = administrator_journey(&first, &env, &admin_app).await;
    let mut console = driver.console(&first).await;
    // The administrator's browser stays open (and logged in to the console) while the
    // organisation administrator acts, then reads the audit log.
    let outcome = match outcome {
        Ok(()) => {
            let second = driver.browser(&chromium, p2.path()).await.expect("Chromium starts");
            let outcome = org_admin_journey(&second, &env, &org_admin_app).await;
            console.extend(driver.console(&second).await);
            let _ = second.close().await;
            match outcome {
                Ok(()) => oversight_journey(&first, &env).await,
                failed => failed,
            }
        }
        failed => failed,
    };
    console.extend(driver.console(&first).await);
    let _ = first.close().await;
    driver.stop();
    if let Err(e) = outcome {
        panic!("{e:#}\nbrowser console:\n{}", console.join("\n"));
    }
    assert!(!console.iter().any(|l| l.contains("Content Security Policy")), "CSP violations: {console:#?}");

    // The invitation reached the professional.
    let mail = sink.wait_for(INVITEE_EMAIL, Duration::from_secs(15)).await.expect("the invitation mail");
    assert!(mail.subject().is_some_and(|s| !s.is_empty()), "an invitation with a subject");

    // The actions, as the server emits them to the audit log (the console read them back above).
    let events: Vec<AuditEvent> = drain_audit(&mut audit).into_iter().map(|r| r.event).collect();
    let by = |actor: &str| format!("account:{actor}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AuditEvent::OrganisationChanged { actor, before: None, .. } if *actor == by(&admin))),
        "organisation created by the administrator: {events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, AuditEvent::AdminRoleChanged { account_id, actor, before: None, .. }
            if *account_id == org_admin && *actor == by(&admin))),
        "org_admin granted by the administrator: {events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, AuditEvent::AccountChanged { actor, change, .. }
            if change == "invited" && *actor == by(&org_admin))),
        "professional invited by the organisation administrator: {events:#?}"
    );

    // The profile the organisation administrator assigned, through the admin API and the audit log.
    let invitee = state.store.account_by_login(INVITEE).await.unwrap().expect("the invited professional");
    let organisation = state.store.admin().memberships_of(&invitee.id).await.unwrap().pop().expect("a member");
    let token = habilis_e2e::admin::admin_token(&env, &admin, "admin");
    let held: Value = backchannel_http()
        .get(env.url(&format!("/api/admin/v1/accounts/{}/profiles", invitee.id)))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(held["items"].as_array().map(Vec::len), Some(1), "{held}");
    assert_eq!(held["items"][0]["profile"], ASSIGNED_PROFILE, "{held}");
    assert_eq!(held["items"][0]["organisation_id"], organisation.organisation_id.as_str(), "{held}");
    assert_eq!(held["items"][0]["assigned_by"], by(&org_admin), "{held}");
    assert!(
        events.iter().any(|e| matches!(e, AuditEvent::ProfileAssigned { account_id, profile, organisation_id, actor }
            if *account_id == invitee.id && profile == ASSIGNED_PROFILE
                && organisation_id.as_deref() == Some(organisation.organisation_id.as_str()) && *actor == by(&org_admin))),
        "profile assigned by the organisation administrator: {events:#?}"
    );
    env.stop().await;
}

async fn administrator_journey(browser: &Client, env: &TestEnv, app: &totp_rs::Totp) -> anyhow::Result<()> {
    enrol_passkey(browser, env, ADMIN, app).await?;
    open_console(browser, env, "administrator").await?;
    let lang = browser.execute("return document.documentElement.lang", vec![]).await?;
    ensure!(lang == "fr", "the console follows the browser's language: {lang}");
    let who = wait_for(browser, "#who").await?.text().await?;
    ensure!(who.contains("Ada Admin") && who.contains("eidas2"), "logged in as {who:?}");

    // An organisation.
    click(browser, "nav a[href$=\"/organisations\"]").await?;
    wait_for(browser, "input#org-name").await?;
    fill(browser, "org-name", "Clinique des Lilas").await?;
    fill(browser, "org-identifier-type", "FINESS").await?;
    fill(browser, "org-identifier", "750000001").await?;
    click(browser, "button#org-submit").await?;
    wait_for(browser, "#done").await?;
    let table = wait_for(browser, "table#organisations").await?.text().await?;
    ensure!(table.contains("Clinique des Lilas"), "the new organisation is listed: {table}");
    screenshot(browser, "organisation-created").await?;

    // Its administrator.
    click(browser, "nav a[href$=\"/roles\"]").await?;
    wait_for(browser, "input#grant-login").await?;
    fill(browser, "grant-login", ORG_ADMIN).await?;
    click(browser, "button#grant-submit").await?;
    wait_for(browser, "#done").await?;
    let grants = wait_for(browser, "table#grants").await?.text().await?;
    ensure!(grants.contains("org_admin") && grants.contains("Clinique des Lilas"), "the grant is listed: {grants}");
    screenshot(browser, "org-admin-granted").await?;

    // The accounts page, in English after the switch.
    click(browser, "a[hreflang=\"en\"]").await?;
    click(browser, "nav a[href$=\"/accounts\"]").await?;
    let table = wait_for(browser, "table#accounts").await?.text().await?;
    ensure!(table.contains(ORG_ADMIN) && table.contains("Active"), "accounts listed in English: {table}");
    screenshot(browser, "accounts-en").await?;
    Ok(())
}

/// The audit records of the page shown, by event name.
async fn audit_events(browser: &Client) -> anyhow::Result<Vec<String>> {
    let mut events = Vec::new();
    for row in browser.find_all(Locator::Css("table#audit tr[data-event]")).await? {
        events.extend(row.attr("data-event").await?);
    }
    Ok(events)
}

/// The platform administrator, still logged in to the console in the first browser: the audit
/// log shows what the organisation administrator did; the export, clients, relationships and
/// keys pages work; then the logout.
async fn oversight_journey(browser: &Client, env: &TestEnv) -> anyhow::Result<()> {
    // The organisation administrator's actions, filtered by actor (a login the console resolves).
    click(browser, "nav a#nav-audit").await?;
    wait_for(browser, "form#audit-filters").await?;
    fill(browser, "account", ORG_ADMIN).await?;
    click(browser, "button#audit-search").await?;
    wait_for(browser, "button#audit-search").await?;
    // The audit writer batches its records: reload until both are in the durable log.
    let deadline = std::time::Instant::now() + PAGE_WAIT;
    loop {
        let events = audit_events(browser).await?;
        if events.iter().any(|e| e == "account_changed") && events.iter().any(|e| e == "profile_assigned") {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "the org admin's actions are not listed: {events:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.refresh().await?;
        wait_for(browser, "button#audit-search").await?;
    }
    let url = browser.current_url().await?;
    ensure!(url.query().is_some_and(|q| q.contains("account=")), "the filter is in the address: {url}");
    let table = wait_for(browser, "table#audit").await?.text().await?;
    ensure!(table.contains("Olga Cadre"), "the actor is named: {table}");
    ensure!(table.contains("Nina Recrue"), "the invited professional is named as the subject: {table}");
    let events = audit_events(browser).await?;
    ensure!(
        events.iter().all(|e| ["account_changed", "profile_assigned", "admin_access_denied"].contains(&e.as_str())
            || e.starts_with("admin_")),
        "only the organisation administrator's actions are listed: {events:?}"
    );
    // The details of the assignment, expanded.
    click_in_page(browser, "tr[data-event=\"profile_assigned\"] + tr.record-details summary").await?;
    let details =
        wait_for(browser, "tr[data-event=\"profile_assigned\"] + tr.record-details pre").await?.text().await?;
    ensure!(details.contains(ASSIGNED_PROFILE), "the record's details hold the profile: {details}");
    screenshot(browser, "audit").await?;

    // The export, downloaded through the console with the browser's session cookie.
    let export = wait_for(browser, "a#audit-export").await?.attr("href").await?.context("an export link")?;
    let cookies = browser.get_all_cookies().await?;
    let cookie = cookies.iter().map(|c| format!("{}={}", c.name(), c.value())).collect::<Vec<_>>().join("; ");
    let response =
        backchannel_http().get(env.url(&export)).header("cookie", cookie).send().await.context("the export")?;
    ensure!(response.status() == 200, "the export answers {}", response.status());
    let disposition = response.headers().get("content-disposition").and_then(|v| v.to_str().ok()).unwrap_or("");
    ensure!(disposition.starts_with("attachment") && disposition.contains(".jsonl"), "a download: {disposition}");
    let lines = response.text().await?;
    let exported: Vec<Value> = lines.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    ensure!(
        exported.iter().any(|r| r["event"] == "profile_assigned")
            && exported.iter().all(|r| r["actor"].as_str().is_some_and(|a| a.starts_with("account:"))),
        "the export holds the filtered records: {lines}"
    );

    // Filtered by event: the link of the event name.
    click(browser, "tr[data-event=\"profile_assigned\"] td a[href*=\"event=\"]").await?;
    wait_for(browser, "table#audit").await?;
    let events = audit_events(browser).await?;
    ensure!(!events.is_empty() && events.iter().all(|e| e == "profile_assigned"), "filtered by event: {events:?}");

    // The registered clients, with the details of one.
    click(browser, "nav a#nav-clients").await?;
    let table = wait_for(browser, "table#clients").await?.text().await?;
    ensure!(table.contains("account-app"), "the clients are listed: {table}");
    click(browser, "tr[data-client=\"account-app\"] a").await?;
    let metadata = wait_for(browser, "pre#client-metadata").await?.text().await?;
    ensure!(metadata.contains("redirect_uris"), "the client's metadata: {metadata}");

    // Relationships: none yet, and no refusal for a platform administrator.
    click(browser, "nav a#nav-relationships").await?;
    wait_for(browser, "select#status").await?;
    ensure!(browser.find(Locator::Id("error")).await.is_err(), "a platform administrator searches every organisation");

    // The signing keys, and a rotation.
    click(browser, "nav a#nav-keys").await?;
    wait_for(browser, "table#keys").await?;
    let before = browser.find_all(Locator::Css("table#keys tbody tr")).await?.len();
    click(browser, "button#rotate-submit").await?;
    wait_for(browser, "#done").await?;
    let after = browser.find_all(Locator::Css("table#keys tbody tr")).await?.len();
    ensure!(after == before + 1, "the new key is listed ({before} then {after} keys)");
    screenshot(browser, "keys").await?;

    click(browser, "button#logout").await?;
    wait_for(browser, "#info").await?;
    screenshot(browser, "logged-out").await?;
    Ok(())
}

async fn org_admin_journey(browser: &Client, env: &TestEnv, app: &totp_rs::Totp) -> anyhow::Result<()> {
    enrol_passkey(browser, env, ORG_ADMIN, app).await?;
    // Straight to a page of the console: the login comes first, then the page asked for.
    browser.goto(&format!("{}/admin/accounts?q=", env.base_url)).await?;
    let key = wait_for(browser, "button#key-login:not([hidden])").await?;
    screenshot(browser, "org-admin-step-up").await?;
    key.click().await?;
    wait_for(browser, "input#invite-email").await?;
    let url = browser.current_url().await?;
    ensure!(
        url.path() == "/admin/accounts" && url.query() == Some("q="),
        "back on the page asked for after the login: {url}"
    );
    // What only platform administrators may do is not offered (the API would refuse it).
    ensure!(browser.find(Locator::Css("nav a#nav-roles")).await.is_err(), "no roles page for an org admin");
    click(browser, "nav a[href$=\"/organisations\"]").await?;
    wait_for(browser, "form[role=\"search\"]").await?;
    ensure!(browser.find(Locator::Id("org-name")).await.is_err(), "no organisation creation for an org admin");
    click(browser, "nav a[href$=\"/accounts\"]").await?;
    wait_for(browser, "input#invite-email").await?;
    fill(browser, "invite-id-nat", INVITEE).await?;
    fill(browser, "invite-email", INVITEE_EMAIL).await?;
    fill(browser, "invite-given-name", "Nina").await?;
    fill(browser, "invite-family-name", "Recrue").await?;
    let organisation = browser.find(Locator::Css("#invite-organisation option:nth-child(2)")).await?;
    ensure!(organisation.text().await? == "Clinique des Lilas", "the org admin's organisation is offered");
    organisation.click().await?;
    click(browser, "button#invite-submit").await?;
    wait_for(browser, "#done").await?;
    let table = wait_for(browser, "table#accounts").await?.text().await?;
    ensure!(table.contains(INVITEE), "the invited professional is listed in the organisation: {table}");
    screenshot(browser, "professional-invited").await?;

    // The professional's page: assign the profile inside the organisation (the only scope offered).
    click(browser, &format!("tr[data-login=\"{INVITEE}\"] a")).await?;
    wait_for(browser, "select#assign-profile").await?;
    ensure!(browser.find(Locator::Id("no-assignment")).await.is_ok(), "no profile assigned yet");
    click_in_page(browser, &format!("#assign-profile option[value=\"{ASSIGNED_PROFILE}\"]")).await?;
    let scope = browser.find(Locator::Css("#assign-scope option")).await?.text().await?;
    ensure!(scope == "Clinique des Lilas", "the scope offered is the organisation: {scope}");
    let scopes = browser.find_all(Locator::Css("#assign-scope option")).await?.len();
    ensure!(scopes == 1, "an organisation administrator is offered no platform-wide assignment");
    click(browser, "button#assign-submit").await?;
    wait_for(browser, "#done").await?;
    let assigned = wait_for(browser, "table#assigned-profiles").await?.text().await?;
    ensure!(
        assigned.contains(ASSIGNED_PROFILE) && assigned.contains("Clinique des Lilas"),
        "the assignment is listed: {assigned}"
    );
    screenshot(browser, "assign-profile").await?;
    Ok(())
}

//! The login journey in a real browser: headless Chromium, driven through chromedriver (WebDriver,
//! the `fantoccini` crate), against a server in this process. The browser fills the login form,
//! the test reads the emailed code from a real SMTP server and types it, and the browser lands on
//! the relying party's redirect URI — a small HTTP listener here that shows the code it received.
//! In French and in English, with screenshots of each page in `<target>/screenshots/`.
//!
//! Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`, done by
//! `.ci/setup`). Under CI (`CI` set) these tests must run: a missing or broken browser fails them.
//! Elsewhere they are skipped, with a message, when the programs are not installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use habilis_e2e::smtp_sink::SmtpSink;
use habilis_e2e::{
    AccountSpec, ClientAuth, TestEnv, backchannel_http, create_account_with_locale, free_port, pkce_pair, post_form,
    production_login, target_dir, verify_with_jwks,
};
use habilis_idp::store::AccountKind;
use serde_json::{Value, json};

const PRO: &str = "899700427885";
const PRO_EMAIL: &str = "kit@example.org";
const PASSWORD: &str = "correct horse battery staple";
const CLIENT: &str = "rp-browser";
const STATE: &str = "st-browser";
/// How long the browser may take to show a page.
const PAGE_WAIT: Duration = Duration::from_secs(20);
const MAIL_WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Chromium and chromedriver

/// `name` on the `PATH`, if it is there.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The Chromium and chromedriver programs; `None` (after saying why) when they are missing outside
/// CI. Under CI a missing program fails the test.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program(&["chromedriver"]);
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        (chromium, driver) => {
            let missing = [("chromium", chromium.is_none()), ("chromedriver", driver.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" and ");
            if habilis_idp::testing::in_ci() {
                panic!(
                    "{missing} not found on the PATH and CI is set: the browser tests must run. \
                     Install them with .ci/setup (apt-get install chromium chromium-driver)."
                );
            }
            eprintln!(
                "skipping the browser test: {missing} not found (apt-get install chromium chromium-driver); \
                 set CI=true to make this fatal"
            );
            None
        }
    }
}

/// A chromedriver process on a free port of 127.0.0.1, in its own process group (with the
/// browsers it starts), stopped when dropped.
struct Chromedriver {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Chromedriver {
    async fn start(program: &Path) -> anyhow::Result<Chromedriver> {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut driver = Chromedriver { child, url, log, _dir: dir };
        let http = backchannel_http();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = http.get(format!("{}/status", driver.url)).send().await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return Ok(driver);
            }
            if let Ok(Some(exit)) = driver.child.try_wait() {
                return Err(anyhow!("chromedriver exited with {exit}: {}", driver.log_tail()));
            }
            if std::time::Instant::now() > deadline {
                driver.stop();
                return Err(anyhow!("chromedriver did not become ready within 20 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The end of chromedriver's log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A new browser session: headless Chromium with a fresh profile, asking for `languages`
    /// (an `Accept-Language` value such as `fr-FR,fr`).
    async fn browser(&self, chromium: &Path, languages: &str, profile: &Path) -> anyhow::Result<Client> {
        let primary = languages.split(',').next().unwrap_or("fr");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=900,1000",
                    format!("--lang={primary}"),
                    format!("--accept-lang={languages}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": { "intl.accept_languages": languages },
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .map_err(|e| anyhow!("Chromium did not start through chromedriver: {e}\n{}", self.log_tail()))
    }

    /// What the page logged to the browser console (CSP violations land there), oldest first.
    async fn console(&self, browser: &Client) -> Vec<String> {
        let Ok(Some(session)) = browser.session_id().await else { return Vec::new() };
        let response = backchannel_http()
            .post(format!("{}/session/{session}/se/log", self.url))
            .json(&json!({ "type": "browser" }))
            .send()
            .await;
        let Ok(response) = response else { return Vec::new() };
        let log: Value = response.json().await.unwrap_or_default();
        log["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The whole group: chromedriver and any browser it left behind.
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

// ---------------------------------------------------------------------------------------------
// The relying party's redirect URI

/// Listens on 127.0.0.1 and answers `GET /cb?…` with a page showing the parameters it received.
struct Callback {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Callback {
    async fn start() -> Callback {
        use axum::extract::Query;
        use axum::response::Html;
        use std::collections::BTreeMap;
        let app = axum::Router::new().route(
            "/cb",
            axum::routing::get(|Query(params): Query<BTreeMap<String, String>>| async move {
                let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
                let rows: String =
                    params.iter().map(|(k, v)| format!("<p id=\"{}\">{}</p>\n", escape(k), escape(v))).collect();
                Html(format!("<!doctype html><title>Relying party</title><h1>Back at the application</h1>\n{rows}"))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the callback listener");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Callback { url: format!("http://{addr}/cb"), task }
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The journey

/// What each language's pages say (a few words to recognise them by).
struct Words {
    lang: &'static str,
    accept_language: &'static str,
    login_title: &'static str,
    login_label: &'static str,
    password_label: &'static str,
    second_factor_title: &'static str,
    code_label: &'static str,
    bad_code: &'static str,
    error_title: &'static str,
    mail_subject: &'static str,
}

const FRENCH: Words = Words {
    lang: "fr",
    accept_language: "fr-FR,fr",
    login_title: "Connexion",
    login_label: "Identifiant",
    password_label: "Mot de passe",
    second_factor_title: "Vérification en deux étapes",
    code_label: "Code à 6 chiffres",
    bad_code: "Code incorrect",
    error_title: "Connexion impossible",
    mail_subject: "Votre code de connexion Habilis",
};

const ENGLISH: Words = Words {
    lang: "en",
    accept_language: "en-GB,en",
    login_title: "Log in",
    login_label: "Login",
    password_label: "Password",
    second_factor_title: "Two-step verification",
    code_label: "6-digit code",
    bad_code: "Incorrect code",
    error_title: "Cannot log in",
    mail_subject: "Your Habilis sign-in code",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_journey_in_chromium_in_french() {
    journey_in_chromium(&FRENCH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_journey_in_chromium_in_english() {
    journey_in_chromium(&ENGLISH).await;
}

async fn journey_in_chromium(words: &Words) {
    let Some((chromium, driver_program)) = browser_programs() else { return };
    let sink = SmtpSink::start().await;
    let callback = Callback::start().await;
    let smtp_url = sink.url();
    let env = TestEnv::start_with(habilis_e2e::Storage::Embedded, |c| production_login(c, &smtp_url))
        .await
        .expect("the embedded server starts");
    let spec = AccountSpec {
        kind: AccountKind::Professional,
        login: PRO.into(),
        id_nat: Some(PRO.into()),
        email: Some(PRO_EMAIL.into()),
        given_name: Some("KIT".into()),
        family_name: Some("DOC0042788".into()),
    };
    // No preferred language on the account: the mail follows the browser's.
    create_account_with_locale(env.state(), &spec, PASSWORD, None).await;
    let metadata = json!({
        "client_name": "Messagerie Santé",
        "redirect_uris": [callback.url],
        "grant_types": ["authorization_code"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "openid profile",
        "first_party": true,
    });
    let secret = env.register_client(CLIENT, &metadata).await.expect("a secret");

    let mut driver = match Chromedriver::start(&driver_program).await {
        Ok(d) => d,
        Err(e) => panic!("chromedriver: {e:#}"),
    };
    let profile = tempfile::tempdir().expect("a profile directory");
    let browser = match driver.browser(&chromium, words.accept_language, profile.path()).await {
        Ok(b) => b,
        Err(e) => panic!("{e:#}"),
    };
    let outcome = run_journey(&browser, &env, &sink, &callback, &secret, words).await;
    let console = driver.console(&browser).await;
    let _ = browser.close().await;
    driver.stop();
    if let Err(e) = outcome {
        panic!("the {} journey in Chromium failed: {e:#}\n\nbrowser console:\n{}", words.lang, console.join("\n"));
    }
    let violations: Vec<&String> = console.iter().filter(|l| l.contains("Content Security Policy")).collect();
    assert!(violations.is_empty(), "the pages broke their own CSP:\n{violations:#?}");
}

fn screenshot_dir() -> PathBuf {
    let dir = target_dir().join("screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

async fn screenshot(browser: &Client, name: &str) -> anyhow::Result<PathBuf> {
    let png = browser.screenshot().await.context("take a screenshot")?;
    ensure!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))?;
    eprintln!("screenshot: {}", path.display());
    Ok(path)
}

/// Waits for `css` on the current page.
async fn wait_for(browser: &Client, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
    let found = browser.wait().at_most(PAGE_WAIT).for_element(Locator::Css(css)).await;
    match found {
        Ok(element) => Ok(element),
        Err(e) => {
            let url = browser.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let source = browser.source().await.unwrap_or_default();
            Err(anyhow!("no `{css}` on {url} within {PAGE_WAIT:?} ({e}):\n{source}"))
        }
    }
}

/// The page's language (`<html lang>`) and its first heading.
async fn lang_and_heading(browser: &Client) -> anyhow::Result<(String, String)> {
    let lang = browser.execute("return document.documentElement.lang", vec![]).await?;
    let heading = wait_for(browser, "h1").await?.text().await?;
    Ok((lang.as_str().unwrap_or("").to_string(), heading))
}

/// The label text of input `#id`, and its `autocomplete`.
async fn labelled(browser: &Client, id: &str) -> anyhow::Result<(String, String)> {
    let label = browser.find(Locator::Css(&format!("label[for=\"{id}\"]"))).await?.text().await?;
    let autocomplete = browser.find(Locator::Id(id)).await?.attr("autocomplete").await?.unwrap_or_default();
    Ok((label.trim().to_string(), autocomplete))
}

/// Whether the theme's stylesheet applies (the CSP allows it): the primary button is the accent
/// colour, not the browser's default grey.
async fn styled(browser: &Client) -> anyhow::Result<String> {
    let colour = browser
        .execute(
            "const b = document.querySelector('button[type=submit]'); return b ? getComputedStyle(b).backgroundColor : ''",
            vec![],
        )
        .await?;
    Ok(colour.as_str().unwrap_or("").to_string())
}

/// rgb() of `--accent` in themes/default/static/style.css.
const ACCENT: &str = "rgb(0, 85, 140)";

async fn run_journey(
    browser: &Client,
    env: &TestEnv,
    sink: &SmtpSink,
    callback: &Callback,
    secret: &str,
    words: &Words,
) -> anyhow::Result<()> {
    let lang = words.lang;
    let (verifier, challenge) = pkce_pair();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", callback.url.as_str()),
            ("scope", "openid profile"),
            ("state", STATE),
            ("nonce", "n-browser"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .finish();

    // 0. An error page (an unknown application), in the browser's language.
    browser.goto(&env.url("/authorize?client_id=nobody&response_type=code&scope=openid")).await?;
    let (page_lang, heading) = lang_and_heading(browser).await?;
    ensure!(page_lang == lang, "the error page is in {page_lang:?}");
    ensure!(heading == words.error_title, "error page heading {heading:?}");
    let code_shown = wait_for(browser, "p.hint code").await?.text().await?;
    ensure!(!code_shown.is_empty(), "the error page shows an error code");
    screenshot(browser, &format!("error-{lang}")).await?;

    // 1. The login page.
    browser.goto(&env.url(&format!("/authorize?{query}"))).await?;
    wait_for(browser, "input#login").await?;
    let (page_lang, heading) = lang_and_heading(browser).await?;
    ensure!(page_lang == lang, "the login page is in {page_lang:?}, the browser asks for {lang}");
    ensure!(heading == words.login_title, "login page heading {heading:?}");
    let title = browser.title().await?;
    ensure!(title.contains(words.login_title), "title {title:?}");
    ensure!(labelled(browser, "login").await? == (words.login_label.into(), "username".into()), "the login input");
    ensure!(
        labelled(browser, "password").await? == (words.password_label.into(), "current-password".into()),
        "the password input"
    );
    ensure!(styled(browser).await? == ACCENT, "the stylesheet applies (CSP): button {:?}", styled(browser).await?);
    let body = browser.find(Locator::Css("main")).await?.text().await?;
    ensure!(body.contains("Messagerie Santé"), "the page names the application: {body}");
    screenshot(browser, &format!("login-{lang}")).await?;

    // 2. The password, typed as a person does, and the second-factor page.
    browser.find(Locator::Id("login")).await?.send_keys(PRO).await?;
    browser.find(Locator::Id("password")).await?.send_keys(PASSWORD).await?;
    browser.find(Locator::Css("form[action=\"/login\"] button[type=submit]")).await?.click().await?;
    wait_for(browser, "input#code").await?;
    let (_, heading) = lang_and_heading(browser).await?;
    ensure!(heading == words.second_factor_title, "second-factor heading {heading:?}");
    ensure!(labelled(browser, "code").await? == (words.code_label.into(), "one-time-code".into()), "the code input");
    let focused = browser.active_element().await?.attr("id").await?;
    ensure!(focused.as_deref() == Some("code"), "the code input has the focus (autofocus): {focused:?}");
    screenshot(browser, &format!("second-factor-{lang}")).await?;

    // 3. The code from the mail; a wrong one first, to see the error.
    let mail = sink.wait_for(PRO_EMAIL, MAIL_WAIT).await.ok_or_else(|| anyhow!("no mail to {PRO_EMAIL}"))?;
    ensure!(mail.subject().as_deref() == Some(words.mail_subject), "mail subject {:?}", mail.subject());
    let code = mail.one_time_code().ok_or_else(|| anyhow!("no code in the mail"))?;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    browser.find(Locator::Id("code")).await?.send_keys(wrong).await?;
    browser.find(Locator::Css("form[action=\"/login/code\"] button[type=submit]")).await?.click().await?;
    let error = wait_for(browser, "p.error").await?.text().await?;
    ensure!(error.contains(words.bad_code), "the wrong code is refused with {error:?}");
    let described = browser.find(Locator::Id("code")).await?.attr("aria-describedby").await?;
    ensure!(described.as_deref() == Some("form-error"), "the error is tied to the input: {described:?}");
    screenshot(browser, &format!("second-factor-error-{lang}")).await?;
    let input = browser.find(Locator::Id("code")).await?;
    input.clear().await?;
    input.send_keys(&code).await?;
    browser.find(Locator::Css("form[action=\"/login/code\"] button[type=submit]")).await?.click().await?;

    // 4. The authenticator-app offer (after an emailed code): "later".
    let later = wait_for(browser, "button[value=\"later\"]").await?;
    screenshot(browser, &format!("totp-offer-{lang}")).await?;
    later.click().await?;

    // 5. Back at the application with a code.
    let shown = wait_for(browser, "p#code").await?.text().await?;
    let current = browser.current_url().await?;
    ensure!(current.as_str().starts_with(&callback.url), "the browser is at {current}, not the redirect URI");
    let pairs: std::collections::HashMap<String, String> = current.query_pairs().into_owned().collect();
    ensure!(pairs.get("state").map(String::as_str) == Some(STATE), "state in {current}");
    ensure!(!pairs.contains_key("error"), "an error came back: {current}");
    let code_param = pairs.get("code").cloned().ok_or_else(|| anyhow!("no code in {current}"))?;
    ensure!(shown == code_param, "the relying party shows the code it received");
    screenshot(browser, &format!("back-at-the-application-{lang}")).await?;

    // The code is good: tokens at eidas1.
    let http = backchannel_http();
    let answer = post_form(
        &http,
        &env.url("/token"),
        &ClientAuth::Basic(CLIENT.into(), secret.into()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code_param),
            ("redirect_uri", &callback.url),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    ensure!(answer.status == 200, "token response {}: {}", answer.status, answer.body);
    let jwks: Value = http.get(env.url("/jwks")).send().await?.json().await?;
    let (_, id) = verify_with_jwks(answer.body["id_token"].as_str().unwrap_or(""), &jwks).map_err(|e| anyhow!(e))?;
    ensure!(id["acr"] == "eidas1" && id["amr"] == json!(["pwd", "otp", "mfa"]), "ID token {id}");

    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Passkeys in Chromium, with a virtual authenticator

/// Adds a virtual platform authenticator (resident keys, user verification) to the browser
/// session: the WebDriver "Virtual Authenticators" extension that chromedriver implements.
async fn add_virtual_authenticator(driver: &Chromedriver, browser: &Client) -> anyhow::Result<()> {
    let session = browser.session_id().await?.ok_or_else(|| anyhow!("no WebDriver session"))?;
    let response = backchannel_http()
        .post(format!("{}/session/{session}/webauthn/authenticator", driver.url))
        .json(&json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
        }))
        .send()
        .await?;
    ensure!(response.status().is_success(), "virtual authenticator refused: {}", response.text().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_registered_and_used_in_chromium() {
    let Some((chromium, driver_program)) = browser_programs() else { return };
    let env = TestEnv::start_with(habilis_e2e::Storage::Embedded, |c| {
        // WebAuthn needs a domain name: localhost.
        c.server.issuer = Some(url::Url::parse("http://localhost:0").unwrap());
        c.login.minimum_acr = "eidas1".into();
    })
    .await
    .expect("the embedded storage is always available");
    let spec = AccountSpec {
        kind: AccountKind::Professional,
        login: PRO.into(),
        id_nat: Some(PRO.into()),
        email: None,
        given_name: Some("Kit".into()),
        family_name: Some("Doc".into()),
    };
    let account_id = create_account_with_locale(env.state(), &spec, PASSWORD, Some("en")).await;
    let app = habilis_e2e::enrol_totp(&env, &account_id, PRO).await;
    let callback = Callback::start().await;
    let metadata = json!({
        "client_name": "Téléconsultation", "redirect_uris": [callback.url], "first_party": true,
        "grant_types": ["authorization_code"], "token_endpoint_auth_method": "client_secret_basic",
        "scope": "openid profile",
    });
    let secret = env.register_client(CLIENT, &metadata).await.expect("a secret");
    let mut driver = Chromedriver::start(&driver_program).await.expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(&chromium, "en-GB,en", profile.path()).await.expect("Chromium starts");
    let outcome = passkey_journey(&driver, &browser, &env, &callback, &secret, &app).await;
    let console = driver.console(&browser).await;
    let _ = browser.close().await;
    driver.stop();
    if let Err(e) = outcome {
        panic!("{e:#}\nbrowser console:\n{}", console.join("\n"));
    }
    assert!(!console.iter().any(|line| line.contains("Content Security Policy")), "CSP violations: {console:?}");
}

async fn passkey_journey(
    driver: &Chromedriver,
    browser: &Client,
    env: &TestEnv,
    callback: &Callback,
    secret: &str,
    app: &totp_rs::Totp,
) -> anyhow::Result<()> {
    add_virtual_authenticator(driver, browser).await?;
    let authorize = |challenge: &str, acr: Option<&str>| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.extend_pairs([
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", callback.url.as_str()),
            ("scope", "openid profile"),
            ("state", STATE),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ]);
        if let Some(acr) = acr {
            query.append_pair("acr_values", acr);
        }
        format!("{}/authorize?{}", env.base_url, query.finish())
    };

    // 1. A two-factor login (password, authenticator app) through the pages.
    let (_, challenge) = pkce_pair();
    browser.goto(&authorize(&challenge, None)).await?;
    wait_for(browser, "input#login").await?;
    browser.find(Locator::Id("login")).await?.send_keys(PRO).await?;
    browser.find(Locator::Id("password")).await?.send_keys(PASSWORD).await?;
    browser.find(Locator::Css("form[action=\"/login\"] button[type=submit]")).await?.click().await?;
    wait_for(browser, "input#code").await?;
    let code = habilis_e2e::fresh_totp_code(app, &mut None).await;
    browser.find(Locator::Id("code")).await?.send_keys(&code).await?;
    browser.find(Locator::Css("form[action=\"/login/code\"] button[type=submit]")).await?.click().await?;
    wait_for(browser, "p#code").await?;

    // 2. The account page registers a passkey with the browser's authenticator.
    browser.goto(&format!("{}/account/passkeys", env.base_url)).await?;
    let add = wait_for(browser, "button#passkey-register").await?;
    browser.find(Locator::Id("passkey-name")).await?.send_keys("Chromium passkey").await?;
    add.click().await?;
    browser
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::XPath("//li[strong='Chromium passkey']"))
        .await
        .map_err(|e| anyhow!("the new key is not listed ({e})"))?;
    screenshot(browser, "passkey-registered").await?;

    // 3. A new browser session (no cookies): the passkey alone logs in, at eidas2.
    browser.delete_all_cookies().await?;
    let (verifier, challenge) = pkce_pair();
    browser.goto(&authorize(&challenge, Some("eidas2"))).await?;
    let button = wait_for(browser, "button#passkey-login").await?;
    screenshot(browser, "passkey-login").await?;
    // The page also offers the passkey through conditional mediation as soon as it loads, which the
    // virtual authenticator may answer before the click: the button can be gone already.
    let _ = button.click().await;
    let code = wait_for(browser, "p#code").await?.text().await?;
    screenshot(browser, "passkey-logged-in").await?;
    let answer = post_form(
        &backchannel_http(),
        &env.url("/token"),
        &ClientAuth::Basic(CLIENT.into(), secret.into()),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &callback.url),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    ensure!(answer.status == 200, "token response {:?}", answer.body);
    let jwks: Value = backchannel_http().get(env.url("/jwks")).send().await?.json().await?;
    let (_, id) = verify_with_jwks(answer.body["id_token"].as_str().unwrap_or(""), &jwks).map_err(|e| anyhow!(e))?;
    ensure!(id["acr"] == "eidas2", "passkey login acr {:?}", id["acr"]);
    Ok(())
}

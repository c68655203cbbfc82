//! Black-box tests of the login journey at the production floor (`login.minimum_acr = "eidas1"`):
//! a password, then the second factor the session lacks (a code mailed through a real SMTP server,
//! an authenticator app, a recovery code), then the authorization code and tokens that say how the
//! person logged in (`acr`, `amr`). A server in this process, a scripted browser (cookies, no
//! JavaScript), and the pages read as a person would read them.
//!
//! Test names read as `<behaviour>::<storage>` when the behaviour depends on storage (counters,
//! single-use markers and TTLs live in the ephemeral store: memory or Redis).

use std::collections::HashMap;
use std::time::Duration;

use habilis_e2e::smtp_sink::{ReceivedMail, SmtpSink};
use habilis_e2e::{
    AccountSpec, Browser, ClientAuth, Landing, Storage, TestEnv, backchannel_http, create_account_with_locale,
    hidden_input, pkce_pair, post_form, production_login, query_param, verify_with_jwks,
};
use habilis_idp::config::Config;
use habilis_idp::store::AccountKind;
use habilis_idp::web::i18n::{Lang, Texts, texts};
use serde_json::{Value, json};

/// A professional (login = idNat, Luhn-valid), their mailbox and password.
const PRO: &str = "899700427885";
const PRO_EMAIL: &str = "kit@example.org";
/// A patient (login = email address).
const PATIENT: &str = "jeanne.martin@example.org";
const PASSWORD: &str = "correct horse battery staple";
/// Where the test relying parties receive codes. Nothing listens there: the browser stops at the
/// redirect and the test reads it.
const CALLBACK: &str = "http://127.0.0.1:9/cb";
const CLIENT: &str = "rp-main";
const SCOPE: &str = "openid profile email";
const STATE: &str = "st-9d27";
const NONCE: &str = "n-51c0";
/// How long a mail may take to reach the SMTP sink (it is sent in the background).
const MAIL_WAIT: Duration = Duration::from_secs(15);
/// How long to wait before concluding that no mail was sent.
const NO_MAIL_WAIT: Duration = Duration::from_secs(3);

habilis_e2e::on_both_storages!(
    professional_logs_in_with_password_and_the_emailed_code,
    patient_logs_in_with_email_address_and_the_emailed_code_in_english,
    professional_logs_in_with_an_authenticator_app,
    prompt_login_and_max_age_zero_ask_for_both_factors_again,
    step_up_from_a_password_session_asks_only_for_the_second_factor,
    emailed_code_is_accepted_once,
    code_of_an_earlier_mail_is_refused_once_a_new_one_was_sent,
    sixth_attempt_at_an_emailed_code_is_refused_even_when_right,
    authenticator_code_is_accepted_once,
    recovery_code_is_accepted_once,
    lockout_after_max_failures_lifts_after_the_delay,
    a_lockout_survives_a_restart_with_an_empty_ephemeral_store,
    the_holder_is_told_of_a_lock_and_the_cli_lifts_it_on_the_running_server,
    fifty_parallel_passwords_evaluate_at_most_the_limit,
    fifty_parallel_authenticator_codes_evaluate_at_most_the_limit,
    fifty_parallel_emailed_codes_evaluate_at_most_the_limit,
    a_right_password_gives_no_fresh_allowance_of_codes,
);

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A server at the production floor mailing through an SMTP sink, with one first-party client.
struct Journey {
    env: TestEnv,
    sink: SmtpSink,
    auth: ClientAuth,
    http: reqwest::Client,
}

fn client_metadata(extra: Value) -> Value {
    habilis_e2e::first_party_client_metadata(CALLBACK, SCOPE, extra)
}

async fn journey_with(storage: Storage, tweak: impl FnOnce(&mut Config)) -> Option<Journey> {
    let sink = SmtpSink::start().await;
    let smtp_url = sink.url();
    let env = TestEnv::start_with(storage, |config| {
        production_login(config, &smtp_url);
        tweak(config);
    })
    .await?;
    let secret = env.register_client(CLIENT, &client_metadata(json!({}))).await.expect("a generated secret");
    Some(Journey { env, sink, auth: ClientAuth::Basic(CLIENT.into(), secret), http: backchannel_http() })
}

async fn journey(storage: Storage) -> Option<Journey> {
    journey_with(storage, |_| {}).await
}

impl Journey {
    /// The professional, with a preferred language when `locale` is set.
    async fn add_pro(&self, locale: Option<&str>) -> String {
        let spec = AccountSpec {
            kind: AccountKind::Professional,
            login: PRO.into(),
            id_nat: Some(PRO.into()),
            email: Some(PRO_EMAIL.into()),
            given_name: Some("KIT".into()),
            family_name: Some("DOC0042788".into()),
        };
        create_account_with_locale(self.env.state(), &spec, PASSWORD, locale).await
    }

    async fn add_patient(&self, locale: Option<&str>) -> String {
        let spec = AccountSpec {
            kind: AccountKind::Patient,
            login: PATIENT.into(),
            id_nat: None,
            email: Some(PATIENT.into()),
            given_name: None,
            family_name: None,
        };
        create_account_with_locale(self.env.state(), &spec, PASSWORD, locale).await
    }

    fn browser(&self) -> Browser {
        self.env.browser()
    }

    /// An authorization request of `client_id`; `overrides` replace (`Some`) or remove (`None`)
    /// parameters, and add new ones.
    fn authorize_url(&self, client_id: &str, challenge: &str, overrides: &[(&str, Option<&str>)]) -> String {
        let base = [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", CALLBACK),
            ("scope", SCOPE),
            ("state", STATE),
            ("nonce", NONCE),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        self.env.url(&format!("/authorize?{}", habilis_e2e::authorize_query(&base, overrides)))
    }

    /// The next mail to `to`, with its 6-digit code.
    /// The next one-time code mailed to `to`. Lock notifications, which a test that locks the
    /// login also receives, are passed over.
    async fn mailed_code(&self, to: &str) -> (String, ReceivedMail) {
        loop {
            let mail = self
                .sink
                .wait_for(to, MAIL_WAIT)
                .await
                .unwrap_or_else(|| panic!("no mail to {to} within {MAIL_WAIT:?}"));
            if mail.subject().is_some_and(|s| s.contains("verrouillé") || s.contains("locked")) {
                continue;
            }
            let code = mail.one_time_code().unwrap_or_else(|| panic!("no 6-digit code in the mail:\n{}", mail.data));
            return (code, mail);
        }
    }

    /// Asserts that no mail reaches `to` for a little while.
    async fn assert_no_mail(&self, to: &str, why: &str) {
        if let Some(mail) = self.sink.wait_for(to, NO_MAIL_WAIT).await {
            panic!("{why}: a mail to {to} arrived anyway:\n{}", mail.data);
        }
    }

    /// Redeems the code in `back` (a redirect to the client) and returns the verified claims of the
    /// ID token and of the access token.
    async fn redeem(&self, back: &url::Url, verifier: &str) -> (Value, Value) {
        assert_eq!(query_param(back, "error"), None, "{back}");
        assert_eq!(query_param(back, "state").as_deref(), Some(STATE), "{back}");
        let code = query_param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
        let answer = post_form(
            &self.http,
            &self.env.url("/token"),
            &self.auth,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", verifier),
            ],
        )
        .await;
        assert_eq!(answer.status, 200, "token response: {:?}", answer.body);
        let jwks: Value =
            self.http.get(self.env.url("/jwks")).send().await.unwrap().json().await.expect("the JWKS is JSON");
        let id_token = answer.body["id_token"].as_str().expect("an ID token");
        let (_, id) = verify_with_jwks(id_token, &jwks).expect("the ID token verifies");
        assert_eq!(id["nonce"], NONCE, "{id}");
        let access = answer.body["access_token"].as_str().expect("an access token");
        let (_, at) = verify_with_jwks(access, &jwks).expect("the access token verifies");
        (id, at)
    }
}

/// The claims of a login with a password and a one-time code (DOMAIN.md "Assurance levels").
fn assert_eidas1(id: &Value, at: &Value) {
    for (what, claims) in [("ID token", id), ("access token", at)] {
        assert_eq!(claims["acr"], "eidas1", "{what}: {claims}");
        assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]), "{what}: {claims}");
        assert!(claims["auth_time"].as_i64().is_some_and(|t| t > 0), "{what}: {claims}");
    }
}

// ---------------------------------------------------------------------------------------------
// Reading and filling pages

/// A page of the server.
#[derive(Debug)]
struct Page {
    url: String,
    status: u16,
    body: String,
}

impl Page {
    fn of(landing: Landing) -> Page {
        let (url, status, body) = landing.page();
        Page { url, status, body }
    }

    fn path(&self) -> String {
        url::Url::parse(&self.url).map(|u| u.path().to_string()).unwrap_or_default()
    }

    fn is_password_form(&self) -> bool {
        self.path() == "/login" && self.body.contains(r#"action="/login""#) && self.body.contains(r#"name="password""#)
    }

    fn is_second_factor(&self) -> bool {
        self.path().starts_with("/login") && self.body.contains(r#"action="/login/code""#)
    }

    fn is_totp_offer(&self) -> bool {
        self.path() == "/login/totp" && self.body.contains(r#"action="/login/totp""#)
    }

    fn hidden(&self, name: &str) -> String {
        hidden_input(&self.body, name).unwrap_or_else(|| panic!("no hidden {name} in {}:\n{}", self.url, self.body))
    }

    /// The method the second-factor page asks for (`email`, `totp`, `recovery`).
    fn method(&self) -> String {
        self.hidden("method")
    }

    /// The page as text, HTML entities decoded (to look for messages with apostrophes).
    fn text(&self) -> String {
        unescape(&self.body)
    }

    fn shows(&self, message: &str) -> bool {
        self.text().contains(message)
    }

    fn lang(&self) -> Option<String> {
        let start = self.body.find("<html lang=\"")? + "<html lang=\"".len();
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].to_string())
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Submits the password form of `page`.
async fn enter_password(browser: &Browser, page: &Page, login: &str, password: &str) -> Landing {
    assert!(page.is_password_form(), "expected the password form, got {} ({}):\n{}", page.url, page.status, page.body);
    browser
        .submit(
            "/login",
            &[
                ("interaction", &page.hidden("interaction")),
                ("csrf", &page.hidden("csrf")),
                ("login", login),
                ("password", password),
            ],
        )
        .await
}

/// The form fields of the second-factor page `page` with `code`.
fn code_form(page: &Page, code: &str) -> Vec<(String, String)> {
    assert!(
        page.is_second_factor(),
        "expected the second-factor page, got {} ({}):\n{}",
        page.url,
        page.status,
        page.body
    );
    vec![
        ("interaction".into(), page.hidden("interaction")),
        ("csrf".into(), page.hidden("csrf")),
        ("method".into(), page.method()),
        ("code".into(), code.to_string()),
    ]
}

/// Submits `code` on the second-factor page `page`.
async fn enter_code(browser: &Browser, page: &Page, code: &str) -> Landing {
    let form = code_form(page, code);
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    browser.submit("/login/code", &fields).await
}

/// Follows the page's link to another second-factor method.
async fn switch_method(browser: &Browser, page: &Page, method: &str) -> Page {
    let interaction = page.hidden("interaction");
    let link = format!("/login?interaction={interaction}&amp;method={method}");
    assert!(page.body.contains(&link), "the page offers no link to {method}:\n{}", page.body);
    Page::of(browser.navigate(&format!("/login?interaction={interaction}&method={method}")).await)
}

/// "Send a new code" on the second-factor page `page`.
async fn ask_for_a_new_code(browser: &Browser, page: &Page) -> Page {
    assert!(page.is_second_factor(), "{}", page.body);
    assert!(page.body.contains(r#"action="/login/email""#), "the page offers a new code:\n{}", page.body);
    Page::of(
        browser
            .submit("/login/email", &[("interaction", &page.hidden("interaction")), ("csrf", &page.hidden("csrf"))])
            .await,
    )
}

/// Declines the authenticator-app offer shown after a login with an emailed code ("later").
async fn decline_totp_offer(browser: &Browser, page: &Page) -> Landing {
    assert!(
        page.is_totp_offer(),
        "expected the authenticator-app offer, got {} ({}):\n{}",
        page.url,
        page.status,
        page.body
    );
    browser
        .submit(
            "/login/totp",
            &[("interaction", &page.hidden("interaction")), ("csrf", &page.hidden("csrf")), ("decision", "later")],
        )
        .await
}

/// The landing after a completed login: the redirect to the client, past the authenticator-app
/// offer (declined) if it is shown.
async fn past_totp_offer(browser: &Browser, landing: Landing) -> url::Url {
    match landing {
        Landing::Left(url) => url,
        landing => {
            let page = Page::of(landing);
            decline_totp_offer(browser, &page).await.left()
        }
    }
}

/// A whole login with the password and the emailed code, from the authorization request to the
/// redirect to the client.
async fn log_in_with_emailed_code(j: &Journey, browser: &Browser, url: &str, login: &str, mailbox: &str) -> url::Url {
    let page = Page::of(browser.navigate(url).await);
    let page = Page::of(enter_password(browser, &page, login, PASSWORD).await);
    assert_eq!(page.method(), "email", "{}", page.body);
    let (code, _) = j.mailed_code(mailbox).await;
    past_totp_offer(browser, enter_code(browser, &page, &code).await).await
}

/// An authenticator app enrolled for `account_id` the way the enrolment page does it; the app is
/// built from the `otpauth://` URI, as a phone reading the QR code would.
async fn enrol_totp(env: &TestEnv, account_id: &str) -> totp_rs::Totp {
    habilis_e2e::enrol_totp(env, account_id, PRO).await
}

const STEP: u64 = 30;

/// A code of `app` for a time step after `last` (the server accepts each step once, and only steps
/// after the last one accepted) that the server accepts now (current step ± 1). Waits for the next
/// step when needed. Returns (code, step).
async fn fresh_totp(app: &totp_rs::Totp, last: Option<u64>) -> (String, u64) {
    loop {
        let now = habilis_idp::unix_now() as u64;
        let current = now / STEP;
        let step = last.map_or(current, |l| current.max(l + 1));
        if step <= current + 1 {
            return (app.generate(step * STEP).to_string(), step);
        }
        tokio::time::sleep(Duration::from_millis(((current + 1) * STEP - now) * 1000 + 200)).await;
    }
}

fn wrong_code(right: &str) -> &'static str {
    if right == "000000" { "000001" } else { "000000" }
}

fn fr() -> &'static Texts {
    texts(Lang::Fr)
}

fn en() -> &'static Texts {
    texts(Lang::En)
}

fn assert_redirect_error(back: &url::Url, error: &str) {
    let expected = url::Url::parse(CALLBACK).unwrap();
    assert_eq!(
        (back.host_str(), back.port(), back.path()),
        (expected.host_str(), expected.port(), expected.path()),
        "redirected to {back}"
    );
    assert_eq!(query_param(back, "error").as_deref(), Some(error), "{back}");
    assert!(query_param(back, "error_description").is_some_and(|d| !d.is_empty()), "{back}");
    assert_eq!(query_param(back, "state").as_deref(), Some(STATE), "{back}");
    assert_eq!(query_param(back, "code"), None, "{back}");
}

// ---------------------------------------------------------------------------------------------
// 1. Whole flows

/// idNat + password, then the code read from the real mail (in French, the account's language),
/// then the authenticator-app offer (declined), then tokens at `eidas1`.
async fn professional_logs_in_with_password_and_the_emailed_code(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    let account_id = j.add_pro(Some("fr")).await;
    let browser = j.browser();
    let (verifier, challenge) = pkce_pair();

    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    assert_eq!(page.status, 200);
    assert!(page.is_password_form(), "{}", page.body);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.is_second_factor(), "the password alone does not end the login:\n{}", page.body);
    assert_eq!(page.method(), "email", "no authenticator app: the code comes by email");
    assert!(page.body.contains("k***@example.org"), "the page names the (masked) mailbox:\n{}", page.body);
    assert!(!page.body.contains(PRO_EMAIL), "the page does not show the whole address");

    let (code, mail) = j.mailed_code(PRO_EMAIL).await;
    assert_eq!(mail.to, vec![PRO_EMAIL.to_string()]);
    assert_eq!(mail.from, "no-reply@habilis.test");
    assert_eq!(mail.subject().as_deref(), Some("Votre code de connexion Habilis"), "a French mail");
    let text = mail.text_body().expect("a text part");
    assert!(text.contains("Ne communiquez jamais ce code"), "{text}");
    assert!(text.contains("Test RP"), "the mail names the application: {text}");
    assert!(!mail.subject().unwrap_or_default().contains(&code), "no code in the subject");

    let after_code = Page::of(enter_code(&browser, &page, &code).await);
    assert!(after_code.is_totp_offer(), "an authenticator app is offered after an email code:\n{}", after_code.body);
    let back = decline_totp_offer(&browser, &after_code).await.left();
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);
    assert_eq!(id["sub"], account_id);
    assert!(id["sid"].as_str().is_some_and(|s| !s.is_empty()), "{id}");
}

/// A patient logs in with their email address (typed in another case), and the mail comes in
/// English, the account's language, although the pages are in French.
async fn patient_logs_in_with_email_address_and_the_emailed_code_in_english(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    let account_id = j.add_patient(Some("en")).await;
    let browser = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    assert_eq!(page.lang().as_deref(), Some("fr"));
    let page = Page::of(enter_password(&browser, &page, "  Jeanne.Martin@Example.ORG ", PASSWORD).await);
    assert!(page.is_second_factor(), "{}", page.body);
    assert!(page.body.contains("j***@example.org"), "{}", page.body);
    let (code, mail) = j.mailed_code(PATIENT).await;
    assert_eq!(mail.subject().as_deref(), Some("Your Habilis sign-in code"), "an English mail");
    let text = mail.text_body().expect("a text part");
    assert!(text.contains("Never share this code"), "{text}");
    let html = mail.html_body().expect("an HTML part");
    assert!(html.contains(&code), "the HTML part carries the code too");
    let back = past_totp_offer(&browser, enter_code(&browser, &page, &code).await).await;
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);
    assert_eq!(id["sub"], account_id);
}

/// With an authenticator app the second-factor page asks for its code first, no mail is sent,
/// and the tokens say `eidas1` all the same.
async fn professional_logs_in_with_an_authenticator_app(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    let account_id = j.add_pro(None).await;
    let app = enrol_totp(&j.env, &account_id).await;
    let browser = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert!(page.is_second_factor(), "{}", page.body);
    assert_eq!(page.method(), "totp", "the authenticator app is the preferred method");
    assert!(page.shows(fr().totp_prompt), "{}", page.body);
    // The other methods are offered as links.
    assert!(page.body.contains("method=email"), "{}", page.body);
    let (code, _) = fresh_totp(&app, None).await;
    let back = enter_code(&browser, &page, &code).await.left();
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);
    assert_eq!(id["sub"], account_id);
    j.assert_no_mail(PRO_EMAIL, "no email code when the authenticator app is used").await;
}

/// The offer after an emailed code, accepted: the page's key enrols an app (computed here from the
/// key shown), the recovery codes are shown once, and both work at the next logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticator_enrolled_from_the_offer_and_its_recovery_codes_work_next_time() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    j.add_pro(None).await;
    let browser = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    let (code, _) = j.mailed_code(PRO_EMAIL).await;
    let offer = Page::of(enter_code(&browser, &page, &code).await);
    assert!(offer.is_totp_offer(), "{}", offer.body);
    assert!(offer.body.contains("<svg"), "a QR code:\n{}", offer.body);
    let secret = {
        let start =
            offer.body.find(r#"<code class="secret">"#).expect("the key is shown") + r#"<code class="secret">"#.len();
        let end = offer.body[start..].find("</code>").unwrap() + start;
        offer.body[start..end].trim().replace(' ', "")
    };
    let app = totp_rs::Totp::from_url(format!("otpauth://totp/Habilis:{PRO}?secret={secret}&issuer=Habilis"))
        .expect("the key shown makes an authenticator");
    let (code, first_step) = fresh_totp(&app, None).await;
    let codes_page = Page::of(
        browser
            .submit(
                "/login/totp",
                &[
                    ("interaction", &offer.hidden("interaction")),
                    ("csrf", &offer.hidden("csrf")),
                    ("decision", "enrol"),
                    ("code", &code),
                ],
            )
            .await,
    );
    assert_eq!(codes_page.status, 200, "{}", codes_page.body);
    let recovery: Vec<String> = codes_page
        .body
        .split("<li><code>")
        .skip(1)
        .filter_map(|rest| rest.split("</code>").next())
        .map(str::to_string)
        .collect();
    assert_eq!(recovery.len(), 10, "ten recovery codes are shown:\n{}", codes_page.body);
    let back = browser.navigate(&format!("/authorize/resume?interaction={}", codes_page.hidden("interaction"))).await;
    let (id, at) = j.redeem(&back.left(), &verifier).await;
    assert_eidas1(&id, &at);

    // Next login: the app is asked for first.
    let second = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(second.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&second, &page, PRO, PASSWORD).await);
    assert_eq!(page.method(), "totp", "{}", page.body);
    let (code, _) = fresh_totp(&app, Some(first_step)).await;
    let back = enter_code(&second, &page, &code).await.left();
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);

    // And a recovery code shown on the page works (once).
    let third = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(third.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&third, &page, PRO, PASSWORD).await);
    let page = switch_method(&third, &page, "recovery").await;
    let back = enter_code(&third, &page, &recovery[3].to_uppercase()).await.left();
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);
}

// ---------------------------------------------------------------------------------------------
// 2. Levels: what cannot be reached, fresh logins, step-up

/// Runs an authorization request that asks for more than email codes and authenticator apps can
/// give: it must end with `unmet_authentication_requirements` at the client — at once, or after the
/// factors Habilis can check — and never loop on the second-factor page.
async fn assert_unreachable_level(browser: &Browser, app: &totp_rs::Totp, last_step: Option<u64>, url: &str) {
    let mut landing = browser.navigate(url).await;
    let mut last_step = last_step;
    let mut codes_accepted = 0;
    for _ in 0..6 {
        let page = match landing {
            Landing::Left(back) => {
                assert_redirect_error(&back, "unmet_authentication_requirements");
                return;
            }
            landing => Page::of(landing),
        };
        if page.is_password_form() {
            landing = enter_password(browser, &page, PRO, PASSWORD).await;
        } else if page.is_second_factor() {
            assert_eq!(
                codes_accepted, 0,
                "a second factor was accepted and the journey asks for one again instead of answering \
                 unmet_authentication_requirements: it cannot end ({})",
                page.url
            );
            let page = if page.method() == "totp" { page } else { switch_method(browser, &page, "totp").await };
            let (code, step) = fresh_totp(app, last_step).await;
            last_step = Some(step);
            landing = enter_code(browser, &page, &code).await;
            codes_accepted += 1;
        } else {
            panic!("unexpected page {} ({}):\n{}", page.url, page.status, page.body);
        }
    }
    panic!("the journey did not end within 6 steps");
}

/// An essential `acr` claim of `eidas2` (phishing-resistant, not offered yet): the documented
/// `unmet_authentication_requirements`, with and without a session at `eidas1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn essential_acr_eidas2_is_unmet_authentication_requirements() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    let account_id = j.add_pro(None).await;
    let app = enrol_totp(&j.env, &account_id).await;
    let claims = r#"{"id_token":{"acr":{"essential":true,"values":["eidas2"]}}}"#;
    let (_, challenge) = pkce_pair();
    let eidas2 = j.authorize_url(CLIENT, &challenge, &[("claims", Some(claims))]);

    // With a session at eidas1: at once.
    let browser = j.browser();
    let (verifier, plain_challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &plain_challenge, &[])).await);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    let (code, step) = fresh_totp(&app, None).await;
    let back = enter_code(&browser, &page, &code).await.left();
    j.redeem(&back, &verifier).await;
    assert_redirect_error(&browser.navigate(&eidas2).await.left(), "unmet_authentication_requirements");

    // Without a session.
    let fresh = j.browser();
    assert_unreachable_level(&fresh, &app, Some(step), &eidas2).await;
}

/// A client registered with `minimum_acr: "eidas2"`: every request of it is unmet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_minimum_acr_eidas2_is_unmet_authentication_requirements() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    let account_id = j.add_pro(None).await;
    let app = enrol_totp(&j.env, &account_id).await;
    j.env.register_client("rp-strong", &client_metadata(json!({ "minimum_acr": "eidas2" }))).await;
    let (_, challenge) = pkce_pair();
    let browser = j.browser();
    assert_unreachable_level(&browser, &app, None, &j.authorize_url("rp-strong", &challenge, &[])).await;
}

/// `acr_values=eidas2`: DOMAIN.md says levels are "enforced per client and per request
/// (`acr_values`, `claims` essential acr, `max_age`)", so a request naming only a level Habilis
/// cannot reach is answered `unmet_authentication_requirements` rather than silently downgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acr_values_eidas2_is_unmet_authentication_requirements() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    let account_id = j.add_pro(None).await;
    let app = enrol_totp(&j.env, &account_id).await;
    let (_, challenge) = pkce_pair();
    let browser = j.browser();
    let url = j.authorize_url(CLIENT, &challenge, &[("acr_values", Some("eidas2"))]);
    assert_unreachable_level(&browser, &app, None, &url).await;
}

/// `prompt=login` and `max_age=0` ignore the session: the password page again, then a second
/// factor again, and a later `auth_time`.
async fn prompt_login_and_max_age_zero_ask_for_both_factors_again(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    let account_id = j.add_pro(None).await;
    let app = enrol_totp(&j.env, &account_id).await;
    let browser = j.browser();

    // A first login: password + authenticator.
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    let (code, step) = fresh_totp(&app, None).await;
    let back = enter_code(&browser, &page, &code).await.left();
    let (first, _) = j.redeem(&back, &verifier).await;
    // The session alone is enough for a plain request.
    let (verifier, challenge) = pkce_pair();
    let back = browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await.left();
    j.redeem(&back, &verifier).await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // prompt=login: both factors again (the emailed code, this time).
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[("prompt", Some("login"))])).await);
    assert!(page.is_password_form(), "prompt=login shows the password page despite the session:\n{}", page.body);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert!(page.is_second_factor(), "prompt=login asks for a second factor again:\n{}", page.body);
    let page = switch_method(&browser, &page, "email").await;
    let (code, _) = j.mailed_code(PRO_EMAIL).await;
    let back = enter_code(&browser, &page, &code).await.left();
    let (second, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&second, &at);
    assert!(second["auth_time"].as_i64() > first["auth_time"].as_i64(), "a new auth_time: {first} / {second}");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // max_age=0: the same.
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[("max_age", Some("0"))])).await);
    assert!(page.is_password_form(), "max_age=0 shows the password page despite the session:\n{}", page.body);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert!(page.is_second_factor(), "max_age=0 asks for a second factor again:\n{}", page.body);
    assert_eq!(page.method(), "totp");
    let (code, _) = fresh_totp(&app, Some(step)).await;
    let back = enter_code(&browser, &page, &code).await.left();
    let (third, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&third, &at);
    assert!(third["auth_time"].as_i64() > second["auth_time"].as_i64(), "a new auth_time: {second} / {third}");
}

/// A fresh login by email code right after another one (a second application with `prompt=login`
/// a few seconds later) gets a code it can use: the person is not left on a page that says a code
/// was sent while none was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthentication_by_email_right_after_a_login_gets_a_usable_code() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    j.add_pro(None).await;
    let browser = j.browser();
    let (verifier, challenge) = pkce_pair();
    let back = log_in_with_emailed_code(&j, &browser, &j.authorize_url(CLIENT, &challenge, &[]), PRO, PRO_EMAIL).await;
    j.redeem(&back, &verifier).await;

    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[("prompt", Some("login"))])).await);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert!(page.is_second_factor(), "{}", page.body);
    assert_eq!(page.method(), "email");
    let mail = j.sink.wait_for(PRO_EMAIL, MAIL_WAIT).await;
    let Some(mail) = mail else {
        panic!(
            "no code was mailed for the new login (the page shows \"{}\" next to \"{}\"): the person \
             cannot log in for up to a minute",
            page.shows(fr().resend_too_soon),
            fr().email_code_sent
        );
    };
    let code = mail.one_time_code().expect("a code");
    let back = enter_code(&browser, &page, &code).await.left();
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);
}

/// With `login.minimum_acr = "none"`, a password-only session made for client A; client B requires
/// `eidas1`: the same session is raised by a second factor alone (no password page), keeps its
/// `sid`, and B's tokens say `eidas1`.
async fn step_up_from_a_password_session_asks_only_for_the_second_factor(storage: Storage) {
    let Some(j) = journey_with(storage, |c| c.login.minimum_acr = "none".into()).await else { return };
    let account_id = j.add_pro(None).await;
    let secret_b =
        j.env.register_client("rp-b", &client_metadata(json!({ "minimum_acr": "eidas1" }))).await.expect("a secret");
    let browser = j.browser();

    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let back = enter_password(&browser, &page, PRO, PASSWORD).await.left();
    let (id_a, at_a) = j.redeem(&back, &verifier).await;
    assert!(id_a.get("acr").is_none(), "a password alone reaches no level: {id_a}");
    assert_eq!(id_a["amr"], json!(["pwd"]));
    assert!(at_a.get("acr").is_none(), "{at_a}");

    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url("rp-b", &challenge, &[])).await);
    assert!(!page.is_password_form(), "step-up must not ask for the password again:\n{}", page.body);
    assert!(page.is_second_factor(), "{}", page.body);
    assert_eq!(page.method(), "email");
    let (code, _) = j.mailed_code(PRO_EMAIL).await;
    let back = past_totp_offer(&browser, enter_code(&browser, &page, &code).await).await;
    let b = Journey { auth: ClientAuth::Basic("rp-b".into(), secret_b), ..j };
    let (id_b, at_b) = b.redeem(&back, &verifier).await;
    assert_eidas1(&id_b, &at_b);
    assert_eq!(id_b["sub"], account_id);
    assert_eq!(id_b["sid"], id_a["sid"], "a step-up keeps the session's public sid");
    assert_eq!(id_b["aud"], "rp-b");
}

// ---------------------------------------------------------------------------------------------
// 3. Refusals

/// The accepted code form, posted again (back button, double click, an attacker who saw it): refused
/// as used, and the first login still completes.
async fn emailed_code_is_accepted_once(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    j.add_pro(Some("fr")).await;
    let browser = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    let (code, _) = j.mailed_code(PRO_EMAIL).await;
    let form = code_form(&page, &code);
    let post = || browser.http.post(j.env.url("/login/code")).form(&form).send();

    let first = post().await.unwrap();
    assert_eq!(first.status().as_u16(), 303, "the right code is accepted");
    let next = first.headers()["location"].to_str().unwrap().to_string();

    let again = Page::of(browser.follow(post().await.unwrap()).await);
    assert_eq!(again.status, 401, "the same code twice is refused:\n{}", again.body);
    assert!(again.shows(fr().code_expired), "{}", again.body);

    let back = past_totp_offer(&browser, browser.navigate(&next).await).await;
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);
}

/// Only the latest mailed code works: after "send a new code" the code of the first mail is
/// refused. (The resend limit is one code a minute, so this test waits a minute.)
async fn code_of_an_earlier_mail_is_refused_once_a_new_one_was_sent(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    j.add_pro(Some("en")).await;
    let browser = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    let (old_code, _) = j.mailed_code(PRO_EMAIL).await;
    // At once: refused, politely, and no mail.
    let too_soon = ask_for_a_new_code(&browser, &page).await;
    assert_eq!(too_soon.status, 200, "{}", too_soon.body);
    assert!(too_soon.shows(fr().resend_too_soon), "{}", too_soon.body);
    j.assert_no_mail(PRO_EMAIL, "a second code within a minute").await;

    tokio::time::sleep(Duration::from_secs(61)).await;
    let resent = ask_for_a_new_code(&browser, &page).await;
    assert!(resent.shows(fr().code_resent), "{}", resent.body);
    let (new_code, mail) = j.mailed_code(PRO_EMAIL).await;
    assert_eq!(mail.subject().as_deref(), Some("Your Habilis sign-in code"));
    if new_code == old_code {
        // One chance in a million: the test cannot tell the codes apart.
        return;
    }
    let refused = Page::of(enter_code(&browser, &resent, &old_code).await);
    assert_eq!(refused.status, 401, "the first mail's code no longer works:\n{}", refused.body);
    assert!(refused.is_second_factor());
    let back = past_totp_offer(&browser, enter_code(&browser, &refused, &new_code).await).await;
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);
}

/// Five wrong codes, then the right one: refused (the challenge is spent), with the message that
/// asks for a new code. The account lockout is set high so that only the code's own limit acts.
async fn sixth_attempt_at_an_emailed_code_is_refused_even_when_right(storage: Storage) {
    let Some(j) = journey_with(storage, |c| c.login.max_failures = 50).await else { return };
    j.add_pro(None).await;
    let browser = j.browser();
    let (_, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let mut page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    let (code, _) = j.mailed_code(PRO_EMAIL).await;
    for attempt in 1..=5 {
        page = Page::of(enter_code(&browser, &page, wrong_code(&code)).await);
        assert_eq!(page.status, 401, "attempt {attempt}:\n{}", page.body);
        assert!(page.shows(fr().bad_code), "attempt {attempt}:\n{}", page.body);
    }
    let sixth = Page::of(enter_code(&browser, &page, &code).await);
    assert_eq!(sixth.status, 401, "the 6th attempt is refused even with the right code:\n{}", sixth.body);
    assert!(sixth.shows(fr().code_expired), "{}", sixth.body);
}

/// An authenticator code is accepted once: the same code in another browser right after is refused
/// as already used; the app's next code works.
async fn authenticator_code_is_accepted_once(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    let account_id = j.add_pro(None).await;
    let app = enrol_totp(&j.env, &account_id).await;
    let (code, step) = fresh_totp(&app, None).await;

    let first = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(first.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&first, &page, PRO, PASSWORD).await);
    let back = enter_code(&first, &page, &code).await.left();
    j.redeem(&back, &verifier).await;

    let second = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(second.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&second, &page, PRO, PASSWORD).await);
    let replay = Page::of(enter_code(&second, &page, &code).await);
    assert_eq!(replay.status, 401, "a used authenticator code is refused:\n{}", replay.body);
    assert!(replay.shows(fr().code_replayed), "{}", replay.body);
    let (next, _) = fresh_totp(&app, Some(step)).await;
    let back = enter_code(&second, &replay, &next).await.left();
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);
}

/// A recovery code works once; another one of the set still works.
async fn recovery_code_is_accepted_once(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    let account_id = j.add_pro(None).await;
    enrol_totp(&j.env, &account_id).await;
    let codes =
        habilis_idp::authn::recovery::generate(j.env.state().store.as_ref(), &account_id, habilis_idp::unix_now())
            .await
            .expect("recovery codes");

    let first = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(first.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&first, &page, PRO, PASSWORD).await);
    let page = switch_method(&first, &page, "recovery").await;
    assert_eq!(page.method(), "recovery");
    assert!(page.shows(fr().recovery_prompt), "{}", page.body);
    let back = enter_code(&first, &page, &codes[0]).await.left();
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);

    let second = j.browser();
    let (verifier, challenge) = pkce_pair();
    let page = Page::of(second.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&second, &page, PRO, PASSWORD).await);
    let page = switch_method(&second, &page, "recovery").await;
    let reused = Page::of(enter_code(&second, &page, &codes[0]).await);
    assert_eq!(reused.status, 401, "a used recovery code is refused:\n{}", reused.body);
    assert!(reused.shows(fr().bad_code), "{}", reused.body);
    let back = enter_code(&second, &reused, &codes[1]).await.left();
    j.redeem(&back, &verifier).await;
}

/// `login.max_failures = 3`, a short `login.lockout`: the third wrong password locks the login name
/// (the page says so), the right password is refused while locked, and accepted once the delay has
/// passed. Wrong codes at the second factor count the same way.
///
/// The lockout is 5 s rather than 2 s: the answer to the third failure is itself held 2 s by the
/// progressive delay, which starts after the lock is set, so a 2 s lock would be over before the
/// page saying "locked" arrives.
const LOCKOUT: Duration = Duration::from_secs(5);

async fn lockout_after_max_failures_lifts_after_the_delay(storage: Storage) {
    let Some(j) = journey_with(storage, |c| {
        c.login.max_failures = 3;
        c.login.lockout = LOCKOUT;
    })
    .await
    else {
        return;
    };
    j.add_pro(Some("fr")).await;
    let browser = j.browser();
    let (verifier, challenge) = pkce_pair();
    let mut page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    for attempt in 1..=3 {
        page = Page::of(enter_password(&browser, &page, PRO, "wrong password").await);
        assert_eq!(page.status, 401, "attempt {attempt}:\n{}", page.body);
        let expected = if attempt < 3 { fr().bad_credentials } else { fr().locked };
        assert!(page.shows(expected), "attempt {attempt} shows \"{expected}\":\n{}", page.body);
    }
    let locked = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert_eq!(locked.status, 429, "the right password is refused while locked:\n{}", locked.body);
    assert!(locked.shows(fr().locked), "{}", locked.body);
    assert!(locked.is_password_form(), "the form is still there");

    tokio::time::sleep(LOCKOUT).await;
    let page = Page::of(enter_password(&browser, &locked, PRO, PASSWORD).await);
    assert_eq!(page.status, 200, "the lockout has lifted:\n{}", page.body);
    assert!(page.is_second_factor(), "{}", page.body);

    // Wrong codes lock the same way.
    let (code, _) = j.mailed_code(PRO_EMAIL).await;
    let mut page = page;
    for attempt in 1..=3 {
        page = Page::of(enter_code(&browser, &page, wrong_code(&code)).await);
        assert_eq!(page.status, 401, "code attempt {attempt}:\n{}", page.body);
        let expected = if attempt < 3 { fr().bad_code } else { fr().locked };
        assert!(page.shows(expected), "code attempt {attempt} shows \"{expected}\":\n{}", page.body);
    }
    let locked = Page::of(enter_code(&browser, &page, &code).await);
    assert!(locked.shows(fr().locked), "the right code is refused while locked:\n{}", locked.body);
    tokio::time::sleep(LOCKOUT).await;
    let back = past_totp_offer(&browser, enter_code(&browser, &locked, &code).await).await;
    let (id, at) = j.redeem(&back, &verifier).await;
    assert_eidas1(&id, &at);
}

/// A journey whose professional's login was locked (for ten minutes) by three wrong passwords
/// from `browser`, which shows the lock on `page`.
async fn locked_by_three_failures(storage: Storage) -> Option<(Journey, Browser, Page)> {
    let j = journey_with(storage, |c| {
        c.login.max_failures = 3;
        c.login.lockout = Duration::from_secs(600);
    })
    .await?;
    j.add_pro(Some("fr")).await;
    let browser = j.browser();
    let (_, challenge) = pkce_pair();
    let mut page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    for _ in 1..=3 {
        page = Page::of(enter_password(&browser, &page, PRO, "wrong password").await);
    }
    assert!(page.shows(fr().locked), "{}", page.body);
    Some((j, browser, page))
}

/// Issue 19: a lockout is durable. The embedded defaults' in-memory store forgets everything at a
/// restart, and Redis when it comes back empty: a lock kept only there let guessing start again
/// right after a restart. Three wrong passwords lock the login for ten minutes; after a restart
/// with an empty ephemeral store, a new browser with the right password is still refused.
async fn a_lockout_survives_a_restart_with_an_empty_ephemeral_store(storage: Storage) {
    let Some((j, _, _)) = locked_by_three_failures(storage).await else { return };

    let Journey { env, sink, auth, http } = j;
    let j = Journey { env: env.restart_with_empty_ephemeral_store().await, sink, auth, http };
    let browser = j.browser();
    let (_, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    assert!(page.is_password_form(), "a fresh login starts after the restart:\n{}", page.body);
    let locked = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert_eq!(locked.status, 429, "the lock outlived the restart:\n{}", locked.body);
    assert!(locked.shows(fr().locked), "{}", locked.body);
}

/// Issue 19: when repeated failures lock a login, its holder gets a mail in their language with
/// the time the lock ends and what to do; `habilis user unlock LOGIN`, run beside the server (its
/// own process: it does not share the embedded server's memory), lifts it at once, and the right
/// password is then accepted in the same login page.
async fn the_holder_is_told_of_a_lock_and_the_cli_lifts_it_on_the_running_server(storage: Storage) {
    let Some((j, browser, page)) = locked_by_three_failures(storage).await else { return };
    let mail = j.sink.wait_for(PRO_EMAIL, MAIL_WAIT).await.expect("a lock notification");
    let subject = mail.subject().unwrap_or_default();
    assert!(subject.contains("verrouillé"), "in the holder's language: {subject}");
    let text = mail.text_body().unwrap_or_default();
    assert!(text.contains("(UTC)") && text.contains("carte CPS"), "says until when and what to do:\n{text}");

    let config = &j.env.state().config;
    let mut vars = vec![("HABILIS_DATA_DIR", config.data_dir.display().to_string())];
    if let Some(url) = &config.storage.database_url {
        vars.push(("HABILIS_STORAGE__DATABASE_URL", url.clone()));
    }
    if let Some(url) = &config.storage.redis_url {
        vars.push(("HABILIS_STORAGE__REDIS_URL", url.clone()));
        vars.push(("HABILIS_STORAGE__REDIS_PREFIX", config.storage.redis_prefix.clone()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = habilis_e2e::run_habilis(&["user", "unlock", PRO], &vars, None);
    let printed = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("unlocked (it was locked until"), "{printed}");

    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert_eq!(page.status, 200, "unlocked on the running server:\n{}", page.body);
    assert!(page.is_second_factor(), "{}", page.body);
}

/// An unknown login and a wrong password get the same answer: status, message, and the same page
/// apart from the echoed login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_login_and_wrong_password_get_the_same_answer() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    j.add_pro(None).await;
    let unknown = "899700999995";
    let mut answers = Vec::new();
    for (login, password) in [(PRO, "wrong password"), (unknown, PASSWORD), (unknown, "wrong password")] {
        let browser = j.browser();
        let (_, challenge) = pkce_pair();
        let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
        let answer = Page::of(enter_password(&browser, &page, login, password).await);
        assert_eq!(answer.status, 401, "{login}:\n{}", answer.body);
        assert!(answer.shows(fr().bad_credentials), "{login}:\n{}", answer.body);
        assert!(answer.is_password_form());
        // What differs by construction: the interaction, its CSRF token, the echoed login.
        let normalised = answer
            .body
            .replace(&page.hidden("interaction"), "INTERACTION")
            .replace(&page.hidden("csrf"), "CSRF")
            .replace(login, "LOGIN");
        answers.push((login, normalised));
    }
    assert_eq!(answers[0].1, answers[1].1, "wrong password vs unknown login");
    assert_eq!(answers[1].1, answers[2].1);
}

// ---------------------------------------------------------------------------------------------
// 4. Pages

/// French by default; English with `ui_locales=en` or `Accept-Language: en` — pages and, for an
/// account without a preferred language, the mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_french_by_default_and_english_on_request() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    j.add_pro(None).await;
    j.add_patient(None).await;
    let (_, challenge) = pkce_pair();

    let browser = j.browser();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    assert_eq!(page.lang().as_deref(), Some("fr"));
    for text in ["Connexion", "Identifiant", "Mot de passe", "Continuer"] {
        assert!(page.shows(text), "French page without {text}:\n{}", page.body);
    }
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert_eq!(page.lang().as_deref(), Some("fr"));
    assert!(page.shows("Vérification en deux étapes"), "{}", page.body);
    let (_, mail) = j.mailed_code(PRO_EMAIL).await;
    assert_eq!(mail.subject().as_deref(), Some("Votre code de connexion Habilis"), "French by default");

    // ui_locales=en (it wins over the browser's languages).
    let browser = Browser::with_accept_language(&j.env.url(""), "fr-FR,fr;q=0.9");
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[("ui_locales", Some("en"))])).await);
    assert_eq!(page.lang().as_deref(), Some("en"), "{}", page.body);
    for text in ["Log in", "Login", "Password", "Continue"] {
        assert!(page.shows(text), "English page without {text}:\n{}", page.body);
    }
    let failed = Page::of(enter_password(&browser, &page, PATIENT, "wrong password").await);
    assert!(failed.shows(en().bad_credentials), "{}", failed.body);
    let page = Page::of(enter_password(&browser, &failed, PATIENT, PASSWORD).await);
    assert_eq!(page.lang().as_deref(), Some("en"));
    assert!(page.shows("Two-step verification"), "{}", page.body);
    let (_, mail) = j.mailed_code(PATIENT).await;
    assert_eq!(mail.subject().as_deref(), Some("Your Habilis sign-in code"), "the mail follows the page's language");

    // Accept-Language: en.
    let browser = Browser::with_accept_language(&j.env.url(""), "en-GB,en;q=0.8,fr;q=0.5");
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    assert_eq!(page.lang().as_deref(), Some("en"), "{}", page.body);
    assert!(page.shows("Log in"));
}

/// Errors shown inside a login that asked for English are in English.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_inside_an_english_login_are_in_english() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    j.add_pro(None).await;
    let browser = j.browser();
    let (_, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[("ui_locales", Some("en"))])).await);
    assert_eq!(page.lang().as_deref(), Some("en"));
    // A stale form (wrong CSRF token): an error page.
    let error = Page::of(
        browser
            .submit(
                "/login",
                &[
                    ("interaction", &page.hidden("interaction")),
                    ("csrf", "stale"),
                    ("login", PRO),
                    ("password", PASSWORD),
                ],
            )
            .await,
    );
    assert_eq!(error.status, 400, "{}", error.body);
    assert!(error.body.contains("<code>invalid_request</code>"), "{}", error.body);
    assert_eq!(error.lang().as_deref(), Some("en"), "the login asked for English (ui_locales=en):\n{}", error.body);
}

/// The message of an error page is in the page's language, like the rest of the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_page_messages_are_in_the_page_language() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    let mut messages = Vec::new();
    for language in ["fr-FR,fr", "en-GB,en"] {
        let browser = Browser::with_accept_language(&j.env.url(""), language);
        let page = Page::of(browser.navigate("/authorize?client_id=nobody&response_type=code&scope=openid").await);
        assert_eq!(page.status, 400, "{}", page.body);
        assert_eq!(page.lang().as_deref(), Some(&language[..2]), "{}", page.body);
        let start = page.body.find(r#"<p class="error" role="alert">"#).expect("an error message")
            + r#"<p class="error" role="alert">"#.len();
        let end = page.body[start..].find("</p>").unwrap() + start;
        messages.push(unescape(&page.body[start..end]));
    }
    assert_ne!(
        messages[0], messages[1],
        "the French and English error pages show the same message (untranslated): {:?}",
        messages[0]
    );
}

/// Once every recovery code is spent, the second-factor page stops offering "recovery code".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_recovery_codes_are_no_longer_offered() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    let account_id = j.add_pro(None).await;
    let store = j.env.state().store.clone();
    let now = habilis_idp::unix_now();
    let codes = habilis_idp::authn::recovery::generate(store.as_ref(), &account_id, now).await.unwrap();
    for code in codes.iter() {
        habilis_idp::authn::recovery::redeem(store.as_ref(), &account_id, code, now).await.expect("spend the code");
    }
    assert_eq!(habilis_idp::authn::recovery::remaining(store.as_ref(), &account_id).await.unwrap(), 0);
    let browser = j.browser();
    let (_, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(&browser, &page, PRO, PASSWORD).await);
    assert!(page.is_second_factor(), "{}", page.body);
    assert!(
        !page.body.contains("method=recovery"),
        "\"{}\" is offered although no recovery code is left:\n{}",
        fr().method_recovery,
        page.body
    );
}

/// The attributes of every `<TAG …>` in `html` (double-quoted values, as the templates write them).
fn tags(html: &str, tag: &str) -> Vec<HashMap<String, String>> {
    let open = format!("<{tag}");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        if !after.starts_with(|c: char| c.is_whitespace() || c == '>') {
            rest = after;
            continue;
        }
        let end = after.find('>').unwrap_or(after.len());
        let mut attributes = HashMap::new();
        let mut s = after[..end].trim();
        while !s.is_empty() {
            let name_end = s.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(s.len());
            let name = s[..name_end].trim_end_matches('/').to_string();
            s = s[name_end..].trim_start();
            let value = if let Some(v) = s.strip_prefix('=') {
                let v = v.trim_start();
                let v = v.strip_prefix('"').unwrap_or(v);
                let close = v.find('"').unwrap_or(v.len());
                let value = unescape(&v[..close]);
                s = v.get(close + 1..).unwrap_or("").trim_start();
                value
            } else {
                String::new()
            };
            if !name.is_empty() {
                attributes.insert(name.to_ascii_lowercase(), value);
            }
        }
        out.push(attributes);
        rest = &after[end..];
    }
    out
}

/// The text of `<label for="ID">…</label>`.
fn label_for(html: &str, id: &str) -> Option<String> {
    let marker = format!("<label for=\"{id}\">");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find("</label>")? + start;
    Some(unescape(&html[start..end]).trim().to_string())
}

/// Every visible input of `page` has an id, a non-empty label for it, and an `autocomplete`; and
/// the inputs named in `expected` have the given `autocomplete`.
fn assert_labelled_inputs(page: &Page, expected: &[(&str, &str)]) {
    let inputs = tags(&page.body, "input");
    let visible: Vec<_> = inputs.iter().filter(|i| i.get("type").map(String::as_str) != Some("hidden")).collect();
    assert!(!visible.is_empty(), "no visible input in {}", page.url);
    for input in &visible {
        let id = input.get("id").unwrap_or_else(|| panic!("an input without id in {}: {input:?}", page.url));
        let label = label_for(&page.body, id).unwrap_or_else(|| panic!("no <label for=\"{id}\"> in {}", page.url));
        assert!(!label.is_empty(), "the label of {id} is empty");
        assert!(input.contains_key("autocomplete"), "input {id} has no autocomplete in {}", page.url);
    }
    for (name, autocomplete) in expected {
        let input = visible
            .iter()
            .find(|i| i.get("name").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no input {name} in {}:\n{}", page.url, page.body));
        assert_eq!(input.get("autocomplete").map(String::as_str), Some(*autocomplete), "input {name} in {}", page.url);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_have_labelled_inputs_with_the_right_autocomplete() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    let account_id = j.add_pro(None).await;
    enrol_totp(&j.env, &account_id).await;
    habilis_idp::authn::recovery::generate(j.env.state().store.as_ref(), &account_id, habilis_idp::unix_now())
        .await
        .unwrap();
    let browser = j.browser();
    let (_, challenge) = pkce_pair();
    let login = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    assert_labelled_inputs(&login, &[("login", "username"), ("password", "current-password")]);
    let input = |page: &Page, name: &str, attribute: &str| {
        tags(&page.body, "input")
            .into_iter()
            .find(|i| i.get("name").map(String::as_str) == Some(name))
            .and_then(|i| i.get(attribute).cloned())
    };
    assert_eq!(input(&login, "password", "type").as_deref(), Some("password"));

    let totp = Page::of(enter_password(&browser, &login, PRO, PASSWORD).await);
    assert_eq!(totp.method(), "totp");
    assert_labelled_inputs(&totp, &[("code", "one-time-code")]);
    assert_eq!(input(&totp, "code", "inputmode").as_deref(), Some("numeric"));

    let email = switch_method(&browser, &totp, "email").await;
    assert_eq!(email.method(), "email");
    assert_labelled_inputs(&email, &[("code", "one-time-code")]);
    assert_eq!(input(&email, "code", "inputmode").as_deref(), Some("numeric"));

    let recovery = switch_method(&browser, &email, "recovery").await;
    assert_eq!(recovery.method(), "recovery");
    assert_labelled_inputs(&recovery, &[("code", "off")]);
}

/// A `Location` made absolute on the server.
fn absolute(env: &TestEnv, location: &str) -> String {
    if location.starts_with('/') { env.url(location) } else { location.to_string() }
}

/// The directives of a CSP header value.
fn csp_directives(value: &str) -> HashMap<String, Vec<String>> {
    value
        .split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_string).collect()))
        })
        .collect()
}

fn assert_strict_csp(response: &reqwest::Response, what: &str) {
    let csp = response
        .headers()
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"))
        .to_str()
        .unwrap()
        .to_string();
    for unsafe_source in ["'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "data:", "http:", "https:"] {
        let directives = csp_directives(&csp);
        for (name, sources) in &directives {
            if unsafe_source == "data:" && name == "img-src" {
                continue; // inline images (the QR code) are harmless
            }
            assert!(!sources.iter().any(|s| s == unsafe_source), "{what}: {name} allows {unsafe_source}: {csp}");
        }
    }
    let directives = csp_directives(&csp);
    assert_eq!(directives.get("default-src"), Some(&vec!["'none'".to_string()]), "{what}: {csp}");
    assert_eq!(directives.get("frame-ancestors"), Some(&vec!["'none'".to_string()]), "{what}: {csp}");
    assert!(directives.contains_key("form-action"), "{what}: forms post only to us: {csp}");
    assert!(
        directives.get("script-src").is_none_or(|s| s == &vec!["'none'".to_string()]),
        "{what}: no scripts needed: {csp}"
    );
    assert_eq!(response.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{what}");
    assert_eq!(response.headers().get("x-content-type-options").and_then(|v| v.to_str().ok()), Some("nosniff"));
}

/// Nothing in the page that a strict CSP would block (so it looks as designed): no inline script,
/// style element or style attribute, no event handler attribute.
fn assert_no_inline_code(body: &str, what: &str) {
    let lower = body.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "{what}: an inline script");
    assert!(!lower.contains("<style"), "{what}: an inline style element");
    assert!(!lower.contains(" style=\""), "{what}: a style attribute (blocked by the CSP):\n{body}");
    assert!(!lower.contains(" onclick=") && !lower.contains(" onload=") && !lower.contains(" onsubmit="), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_a_strict_content_security_policy() {
    let Some(j) = journey(Storage::Embedded).await else { return };
    j.add_pro(None).await;
    let browser = j.browser();
    let (_, challenge) = pkce_pair();

    let response = browser.http.get(j.authorize_url(CLIENT, &challenge, &[])).send().await.unwrap();
    let login_url = response.headers()["location"].to_str().unwrap().to_string();
    let response = browser.http.get(absolute(&j.env, &login_url)).send().await.unwrap();
    assert_strict_csp(&response, "the login page");
    let login = Page {
        url: response.url().to_string(),
        status: response.status().as_u16(),
        body: response.text().await.unwrap(),
    };
    assert_no_inline_code(&login.body, "the login page");

    let form = [
        ("interaction", login.hidden("interaction")),
        ("csrf", login.hidden("csrf")),
        ("login", PRO.to_string()),
        ("password", PASSWORD.to_string()),
    ];
    let response = browser.http.post(j.env.url("/login")).form(&form).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let next = response.headers()["location"].to_str().unwrap().to_string();
    let response = browser.http.get(absolute(&j.env, &next)).send().await.unwrap();
    assert_strict_csp(&response, "the second-factor page");
    let second = Page {
        url: response.url().to_string(),
        status: response.status().as_u16(),
        body: response.text().await.unwrap(),
    };
    assert_no_inline_code(&second.body, "the second-factor page");

    let (code, _) = j.mailed_code(PRO_EMAIL).await;
    let form = code_form(&second, &code);
    let response = browser.http.post(j.env.url("/login/code")).form(&form).send().await.unwrap();
    let next = response.headers()["location"].to_str().unwrap().to_string();
    let response = browser.http.get(absolute(&j.env, &next)).send().await.unwrap();
    assert_strict_csp(&response, "the authenticator-app offer");
    let offer = response.text().await.unwrap();
    assert_no_inline_code(&offer, "the authenticator-app offer");

    let response = browser.http.get(j.env.url("/authorize?client_id=nobody&response_type=code")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_strict_csp(&response, "an error page");
    assert_no_inline_code(&response.text().await.unwrap(), "an error page");

    // The stylesheet the CSP allows is served.
    let css = browser.http.get(j.env.url("/static/style.css")).send().await.unwrap();
    assert_eq!(css.status().as_u16(), 200);
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
}

// ---------------------------------------------------------------------------------------------
// Guessing in parallel (issue 19): each guess reserves its attempt before it is verified, so no
// burst gets more guesses evaluated than the limit.

const PARALLEL_GUESSES: usize = 50;
/// `login.max_failures` in these tests (the default).
const GUESS_LIMIT: usize = 5;

/// How many guesses of `factor` the server evaluated, from the audit records: each evaluated
/// guess is a success or a failure for a reason other than the lock; refused ones say "locked".
fn evaluated(records: &[habilis_idp::audit::AuditRecord], factor: &str) -> (usize, usize) {
    use habilis_idp::audit::AuditEvent;
    let mut failed = 0;
    let mut succeeded = 0;
    for record in records {
        match &record.event {
            AuditEvent::LoginFailed { factor: f, reason, .. } if f == factor && reason != "locked" => failed += 1,
            AuditEvent::LoginSucceeded { factor: f, .. } if f == factor => succeeded += 1,
            _ => {}
        }
    }
    (failed, succeeded)
}

/// Sends every form of `forms` to `path` at once (one browser: one login in progress).
async fn all_at_once(browser: &Browser, path: &str, forms: Vec<Vec<(String, String)>>) -> Vec<Page> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(forms.len()));
    let sends = forms.into_iter().map(|form| {
        let barrier = barrier.clone();
        async move {
            let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            barrier.wait().await;
            Page::of(browser.submit(path, &fields).await)
        }
    });
    join_all_local(sends.map(Box::pin).collect()).await
}

/// Polls every future until all are done, in one task.
async fn join_all_local<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if results[i].is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    results.into_iter().map(|r| r.expect("every future completed")).collect()
}

fn password_form(page: &Page, password: &str) -> Vec<(String, String)> {
    vec![
        ("interaction".into(), page.hidden("interaction")),
        ("csrf".into(), page.hidden("csrf")),
        ("login".into(), PRO.into()),
        ("password".into(), password.into()),
    ]
}

/// 50 wrong passwords at once: at most the limit are evaluated, the rest refused as locked; the
/// right password sent after them is refused too (a success before the limit would rightly reset
/// the count, so the right one is not raced against the wrong ones).
async fn fifty_parallel_passwords_evaluate_at_most_the_limit(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    j.add_pro(None).await;
    let mut audit = j.env.state().audit.subscribe();
    let browser = j.browser();
    let (_, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    assert!(page.is_password_form(), "{}", page.body);
    let forms = (0..PARALLEL_GUESSES).map(|i| password_form(&page, &format!("wrong {i}"))).collect();
    let pages = all_at_once(&browser, "/login", forms).await;
    assert!(pages.iter().all(|p| p.status != 500), "no server error under the burst");
    let (failed, succeeded) = evaluated(&habilis_e2e::drain_audit(&mut audit), "password");
    assert_eq!(succeeded, 0);
    assert!(
        (1..=GUESS_LIMIT).contains(&failed),
        "at most {GUESS_LIMIT} of {PARALLEL_GUESSES} parallel passwords evaluated, not {failed}"
    );
    let locked = pages.iter().filter(|p| p.status == 429 && p.shows(fr().locked)).count();
    assert!(locked >= PARALLEL_GUESSES - GUESS_LIMIT, "the rest were refused as locked ({locked})");

    // Another browser, the same login, the right password: refused, nothing evaluated.
    let other = j.browser();
    let page = Page::of(other.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let right = Page::of(enter_password(&other, &page, PRO, PASSWORD).await);
    assert_eq!(right.status, 429, "the right password is refused once the limit is reached:\n{}", right.body);
    assert!(right.shows(fr().locked), "{}", right.body);
    assert_eq!(
        evaluated(&habilis_e2e::drain_audit(&mut audit), "password"),
        (0, 0),
        "a locked login evaluates nothing"
    );
}

/// Logs the professional in up to the second-factor page, with the given method.
async fn at_second_factor(j: &Journey, browser: &Browser, method: Option<&str>) -> Page {
    let (_, challenge) = pkce_pair();
    let page = Page::of(browser.navigate(&j.authorize_url(CLIENT, &challenge, &[])).await);
    let page = Page::of(enter_password(browser, &page, PRO, PASSWORD).await);
    match method {
        Some(method) if page.method() != method => switch_method(browser, &page, method).await,
        _ => page,
    }
}

/// Sends 50 wrong codes (none is `right`) at once from the second-factor `page`: no server error,
/// at most the limit evaluated (from the audit records). Returns the audit subscription, for what
/// the test checks next.
async fn wrong_codes_at_once(
    j: &Journey,
    browser: &Browser,
    page: &Page,
    right: &str,
    factor: &str,
) -> tokio::sync::broadcast::Receiver<habilis_idp::audit::AuditRecord> {
    let mut audit = j.env.state().audit.subscribe();
    let forms = (0..PARALLEL_GUESSES).map(|_| code_form(page, wrong_code(right))).collect();
    let pages = all_at_once(browser, "/login/code", forms).await;
    assert!(pages.iter().all(|p| p.status != 500), "no server error under the burst");
    let (failed, succeeded) = evaluated(&habilis_e2e::drain_audit(&mut audit), factor);
    assert_eq!(succeeded, 0);
    assert!(failed <= GUESS_LIMIT, "at most {GUESS_LIMIT} of {PARALLEL_GUESSES} codes evaluated, not {failed}");
    audit
}

/// 50 wrong authenticator codes at once: at most the limit evaluated; the right code afterwards
/// is refused (locked).
async fn fifty_parallel_authenticator_codes_evaluate_at_most_the_limit(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    let account_id = j.add_pro(None).await;
    let app = enrol_totp(&j.env, &account_id).await;
    let browser = j.browser();
    let page = at_second_factor(&j, &browser, Some("totp")).await;
    assert_eq!(page.method(), "totp", "{}", page.body);
    let (code, _) = fresh_totp(&app, None).await;
    let mut audit = wrong_codes_at_once(&j, &browser, &page, &code, "totp").await;
    let right = Page::of(enter_code(&browser, &page, &code).await);
    assert!(right.shows(fr().locked), "the right code is refused once the limit is reached:\n{}", right.body);
    let (failed, succeeded) = evaluated(&habilis_e2e::drain_audit(&mut audit), "totp");
    assert_eq!((failed, succeeded), (0, 0), "a locked login evaluates nothing");
}

/// 50 wrong emailed codes at once: at most the limit evaluated; the right code afterwards is
/// refused.
async fn fifty_parallel_emailed_codes_evaluate_at_most_the_limit(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    j.add_pro(None).await;
    let browser = j.browser();
    let page = at_second_factor(&j, &browser, None).await;
    assert_eq!(page.method(), "email", "{}", page.body);
    let (code, _) = j.mailed_code(PRO_EMAIL).await;
    wrong_codes_at_once(&j, &browser, &page, &code, "email_otp").await;
    let right = Page::of(enter_code(&browser, &page, &code).await);
    assert_ne!(right.status, 200, "the right code is refused once the limit is reached:\n{}", right.body);
    assert!(right.shows(fr().locked) || right.shows(fr().code_expired), "{}", right.body);
}

/// Someone who knows the password cannot buy more code guesses by logging in again: the codes'
/// count is kept apart from the password's, so three wrong codes in one login and two in the next
/// reach the limit of five and lock the codes.
async fn a_right_password_gives_no_fresh_allowance_of_codes(storage: Storage) {
    let Some(j) = journey(storage).await else { return };
    let account_id = j.add_pro(None).await;
    let app = enrol_totp(&j.env, &account_id).await;
    let (code, _) = fresh_totp(&app, None).await;
    let first = j.browser();
    let mut page = at_second_factor(&j, &first, Some("totp")).await;
    for attempt in 1..=3 {
        page = Page::of(enter_code(&first, &page, wrong_code(&code)).await);
        assert!(page.shows(fr().bad_code), "attempt {attempt}:\n{}", page.body);
    }
    let second = j.browser();
    let mut page = at_second_factor(&j, &second, Some("totp")).await;
    assert!(page.is_second_factor(), "the password is still accepted:\n{}", page.body);
    for attempt in 4..=5 {
        page = Page::of(enter_code(&second, &page, wrong_code(&code)).await);
        let expected = if attempt < 5 { fr().bad_code } else { fr().locked };
        assert!(page.shows(expected), "attempt {attempt} shows \"{expected}\":\n{}", page.body);
    }
    let right = Page::of(enter_code(&second, &page, &code).await);
    assert!(right.shows(fr().locked), "the right code is refused while the codes are locked:\n{}", right.body);
}

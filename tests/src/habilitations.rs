//! Shared fixture of the habilitation suites: a server at the production login floor (password +
//! emailed code) mailing through an SMTP sink, three apps (a second-opinion site, a
//! teleconsultation app, a messaging app), the profiles the scenarios rely on, and helpers to log
//! in, redeem codes and call the APIs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::smtp_sink::SmtpSink;
use crate::{
    Answer, Browser, ClientAuth, Landing, Storage, TestEnv, answer, backchannel_http, hidden_input, post_form,
    production_login, query_param,
};

pub const SECOND_OPINION: &str = "second-opinion";
pub const TELECONSULT: &str = "teleconsult";
pub const MESSAGING: &str = "messaging";
pub const CALLBACK: &str = "https://app.example.org/callback";
pub const PASSWORD: &str = "correct horse battery staple 42";
/// What the apps may ask for at /authorize.
pub const USER_SCOPE: &str = "openid profile email offline_access relationships scope_all";
/// Everything registered for the apps (user scopes plus back-end ones).
const CLIENT_SCOPE: &str = "openid profile email offline_access relationships scope_all decisions admin";
const MAIL_WAIT: Duration = Duration::from_secs(20);

/// Test idNat values (RPPS test range 997…, valid Luhn): expert E, coordinator C, other expert F.
pub const EXPERT: &str = "899700427885";
pub const COORDINATOR: &str = "899700010012";
pub const OTHER_EXPERT: &str = "899700020029";

/// The profiles of the scenarios (admin API JSON).
pub fn standard_profiles() -> Vec<Value> {
    vec![
        json!({"name": "expert", "description": "Expert solicited by the patient",
            "kinds": ["second_opinion_expert"], "actions": ["read", "comment"],
            "datatypes": ["report", "imaging"], "clients": [SECOND_OPINION], "min_acr": "eidas1"}),
        json!({"name": "coordinator", "description": "Coordinating doctor of the site",
            "kinds": ["coordinating_doctor"], "actions": ["read", "share"],
            "datatypes": ["report", "imaging"], "clients": [SECOND_OPINION], "min_acr": "eidas1"}),
        json!({"name": "teleconsultation", "kinds": ["treating"], "actions": ["read", "write", "teleconsult"],
            "datatypes": ["report", "prescription"], "clients": [TELECONSULT], "min_acr": "eidas1"}),
        json!({"name": "messaging", "kinds": ["treating"], "actions": ["read", "message"],
            "datatypes": ["report"], "clients": [MESSAGING], "min_acr": "eidas1"}),
        json!({"name": "card-only", "description": "Writing to the care-team record needs the card",
            "kinds": ["care_team"], "actions": ["write"], "datatypes": ["report"],
            "clients": [TELECONSULT], "min_acr": "eidas3"}),
    ]
}

/// A `patient_access` detail for an INS.
pub fn patient_access(ins_value: &str, oid: &str, actions: &[&str]) -> Value {
    json!({"type": "patient_access", "patient": {"ins": {"value": ins_value, "oid": oid}}, "actions": actions})
}

/// A valid NIR with its key (test identities are accepted outside production).
pub fn nir(body13: &str) -> String {
    habilis_idp::habilitation::patient::with_nir_key(body13)
}

pub struct HabilitationEnv {
    pub env: TestEnv,
    pub sink: SmtpSink,
    pub http: reqwest::Client,
    secrets: Vec<(String, String)>,
}

impl HabilitationEnv {
    pub async fn start(storage: Storage) -> Option<HabilitationEnv> {
        Self::start_with(storage, |_| {}).await
    }

    pub async fn start_with(
        storage: Storage,
        tweak: impl FnOnce(&mut habilis_idp::config::Config),
    ) -> Option<HabilitationEnv> {
        let sink = SmtpSink::start().await;
        let smtp_url = sink.url();
        let env = TestEnv::start_with(storage, |config| {
            production_login(config, &smtp_url);
            tweak(config);
        })
        .await?;
        let mut secrets = Vec::new();
        for (client, audiences) in
            [(SECOND_OPINION, json!([])), (TELECONSULT, json!([MESSAGING])), (MESSAGING, json!([]))]
        {
            let metadata = crate::first_party_client_metadata(
                CALLBACK,
                CLIENT_SCOPE,
                json!({
                    "grant_types": ["authorization_code", "refresh_token", "client_credentials",
                        "urn:ietf:params:oauth:grant-type:token-exchange"],
                    "token_exchange_audiences": audiences,
                }),
            );
            let secret = env.register_client(client, &metadata).await.expect("a secret");
            secrets.push((client.to_string(), secret));
        }
        let he = HabilitationEnv { env, sink, http: backchannel_http(), secrets };
        for profile in standard_profiles() {
            he.put_profile(&profile).await;
        }
        Some(he)
    }

    /// Creates or replaces a profile through the server (as the admin API does).
    pub async fn put_profile(&self, profile: &Value) {
        let definition = serde_json::from_value(profile.clone()).expect("a profile definition");
        let state = self.env.state();
        state
            .habilitations
            .put_profile(&state.store, definition, habilis_idp::unix_now())
            .await
            .unwrap_or_else(|e| panic!("profile {profile}: {e}"));
    }

    pub fn auth(&self, client: &str) -> ClientAuth {
        let secret = self.secrets.iter().find(|(c, _)| c == client).map(|(_, s)| s.clone()).expect("a known client");
        ClientAuth::Basic(client.to_string(), secret)
    }

    pub async fn add_professional(&self, id_nat: &str, given: &str, family: &str) -> String {
        self.env.add_professional(id_nat, given, family, PASSWORD).await
    }

    pub async fn add_patient(&self, email: &str) -> String {
        self.env.add_patient(email, PASSWORD).await
    }

    /// A client-credentials token of `client` with `scope`.
    pub async fn app_token(&self, client: &str, scope: &str) -> String {
        let answer = self.token(client, &[("grant_type", "client_credentials"), ("scope", scope)]).await;
        assert_eq!(answer.status, 200, "client_credentials for {client}: {:?}", answer.body);
        answer.body["access_token"].as_str().expect("an access token").to_string()
    }

    /// A token-endpoint request of `client`.
    pub async fn token(&self, client: &str, fields: &[(&str, &str)]) -> Answer {
        post_form(&self.http, &self.env.url("/token"), &self.auth(client), fields).await
    }

    pub fn authorize_url(&self, client: &str, challenge: &str, extra: &[(&str, Option<&str>)]) -> String {
        let base = [
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", CALLBACK),
            ("scope", USER_SCOPE),
            ("state", "hab-state"),
            ("nonce", "hab-nonce"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        self.env.url(&format!("/authorize?{}", crate::authorize_query(&base, extra)))
    }

    /// Logs in from `url` with the password and the code mailed to `mailbox` and returns where the
    /// browser was sent: the client's redirect (code or error).
    pub async fn log_in_with_emailed_code(&self, browser: &Browser, url: &str, login: &str, mailbox: &str) -> url::Url {
        let landing = browser.navigate(url).await;
        let Landing::Page { .. } = landing else { return landing.left() };
        let landing = browser.log_in(landing, login, PASSWORD).await;
        let (page_url, status, body) = match landing {
            Landing::Left(url) => return url,
            Landing::Page { url, status, body } => (url, status, body),
        };
        assert!(body.contains(r#"action="/login/code""#), "expected the code page, got {page_url} ({status}):\n{body}");
        let mail = self.sink.wait_for(mailbox, MAIL_WAIT).await.unwrap_or_else(|| panic!("no mail to {mailbox}"));
        let code = mail.one_time_code().expect("a code in the mail");
        let field = |name: &str| hidden_input(&body, name).unwrap_or_else(|| panic!("no {name} in\n{body}"));
        let landing = browser
            .submit(
                "/login/code",
                &[
                    ("interaction", &field("interaction")),
                    ("csrf", &field("csrf")),
                    ("method", &field("method")),
                    ("code", &code),
                ],
            )
            .await;
        match landing {
            Landing::Left(url) => url,
            // The authenticator-app offer after an emailed code: "later".
            Landing::Page { url, body, .. } if url.contains("/login/totp") => {
                let field = |name: &str| hidden_input(&body, name).unwrap_or_else(|| panic!("no {name} in\n{body}"));
                browser
                    .submit(
                        "/login/totp",
                        &[("interaction", &field("interaction")), ("csrf", &field("csrf")), ("decision", "later")],
                    )
                    .await
                    .left()
            }
            other => other.left(),
        }
    }

    /// Redeems the code of `back` for `client`.
    pub async fn redeem(&self, client: &str, back: &url::Url, verifier: &str) -> Answer {
        let code = query_param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
        self.token(
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    /// A whole login of `login` in a new browser for `client`, asking for `details` (if any);
    /// returns the token response (status and body).
    pub async fn user_tokens(&self, client: &str, login: &str, mailbox: &str, details: Option<&Value>) -> Answer {
        let browser = self.env.browser();
        let (verifier, challenge) = crate::pkce_pair();
        let details_json = details.map(Value::to_string);
        let url = self.authorize_url(client, &challenge, &[("authorization_details", details_json.as_deref())]);
        let back = self.log_in_with_emailed_code(&browser, &url, login, mailbox).await;
        if let Some(error) = query_param(&back, "error") {
            return Answer {
                status: 0,
                headers: Default::default(),
                body: json!({"error": error, "error_description": query_param(&back, "error_description")}),
            };
        }
        self.redeem(client, &back, &verifier).await
    }

    /// A JSON API call with a bearer token.
    pub async fn api(&self, method: reqwest::Method, path: &str, token: &str, body: Option<&Value>) -> Answer {
        let mut request = self.http.request(method, self.env.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))).await
    }

    /// Creates a relationship through the relationships API with `token` (an app's or a patient's).
    pub async fn relate(&self, token: &str, id_nat: &str, patient: &Value, kind: &str) -> Answer {
        let body = json!({"professional": {"id_nat": id_nat}, "patient": patient, "kind": kind});
        self.api(reqwest::Method::POST, "/api/v1/relationships", token, Some(&body)).await
    }

    /// The INS reference of `value` (NIR OID), as the APIs take it.
    pub fn ins(value: &str) -> Value {
        json!({"ins": {"value": value, "oid": habilis_idp::habilitation::patient::OID_NIR}})
    }

    /// Introspects `token` as `client`.
    pub async fn introspect(&self, client: &str, token: &str) -> Value {
        let answer = post_form(&self.http, &self.env.url("/introspect"), &self.auth(client), &[("token", token)]).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.body
    }

    /// The verified claims of a token of this server.
    pub async fn claims(&self, token: &str) -> Value {
        let jwks: Value = self.http.get(self.env.url("/jwks")).send().await.unwrap().json().await.unwrap();
        crate::verify_with_jwks(token, &jwks).expect("the token verifies").1
    }
}

//! The admin API fixture shared by the admin REST API tests: a server with the admin console's
//! client registered, two organisations and one account per role (Patricia, platform
//! administrator; Alice and Bob, organisation administrators of A and B; Audrey, auditor), each with
//! an access token as the console gets at login, plus the calls and assertions those tests share.

use habilis_idp::audit::{AuditEvent, AuditRecord};
use habilis_idp::config::Config;
use habilis_idp::store::AccountKind;
use reqwest::Method;
use serde_json::{Value, json};

use crate::{AccountSpec, Answer, Storage, TestEnv, answer, backchannel_http, create_account};

/// Where the admin API is served.
pub const API_BASE: &str = "/api/admin/v1";
/// The client id of the admin console, the admin API's first-party client.
pub const CONSOLE_CLIENT: &str = "admin-console";
/// The password of every account the fixture creates.
pub const PASSWORD: &str = "correct horse battery staple 42";

/// A server with the admin console's client, organisations A and B and one account per role, with
/// their access tokens (`platform`, `alice`, `bob`, `auditor`) for the admin API.
pub struct AdminEnv {
    pub env: TestEnv,
    /// A back-channel client for the admin API.
    pub http: reqwest::Client,
    /// Patricia's token: a platform administrator.
    pub platform: String,
    /// Alice's token: the organisation administrator of `org_a`.
    pub alice: String,
    /// Bob's token: the organisation administrator of `org_b`.
    pub bob: String,
    /// Audrey's token: an auditor.
    pub auditor: String,
    /// Organisation ids.
    pub org_a: String,
    pub org_b: String,
    /// Account ids.
    pub platform_id: String,
    pub alice_id: String,
    pub bob_id: String,
    pub auditor_id: String,
}

impl AdminEnv {
    /// The fixture on a server with the test defaults; `None` when that storage is unavailable
    /// outside CI.
    pub async fn start(storage: Storage) -> Option<AdminEnv> {
        Self::start_with(storage, |_| {}).await
    }

    /// Like [`AdminEnv::start`], with the configuration adjusted by `tweak` before the start.
    pub async fn start_with(storage: Storage, tweak: impl FnOnce(&mut Config)) -> Option<AdminEnv> {
        let env = TestEnv::start_with(storage, tweak).await?;
        let metadata = crate::first_party_client_metadata(
            "https://console.example.org/callback",
            "openid admin audit",
            json!({"grant_types": ["authorization_code", "client_credentials"]}),
        );
        env.register_client(CONSOLE_CLIENT, &metadata).await;
        let account = |kind, login: &str| AccountSpec {
            kind,
            login: login.into(),
            id_nat: None,
            email: Some(login.into()),
            given_name: None,
            family_name: None,
        };
        let state = env.state();
        let platform_id =
            create_account(state, &account(AccountKind::Administrator, "patricia@example.org"), PASSWORD).await;
        let alice_id = create_account(state, &account(AccountKind::Professional, "alice@example.org"), PASSWORD).await;
        let bob_id = create_account(state, &account(AccountKind::Professional, "bob@example.org"), PASSWORD).await;
        let auditor_id =
            create_account(state, &account(AccountKind::Professional, "audrey@example.org"), PASSWORD).await;
        let mut ae = AdminEnv {
            platform: admin_token(&env, &platform_id, "admin"),
            alice: admin_token(&env, &alice_id, "admin"),
            bob: admin_token(&env, &bob_id, "admin"),
            auditor: admin_token(&env, &auditor_id, "audit"),
            env,
            http: backchannel_http(),
            org_a: String::new(),
            org_b: String::new(),
            platform_id,
            alice_id,
            bob_id,
            auditor_id,
        };
        ae.org_a = ae.create_organisation("Hôpital A").await;
        ae.org_b = ae.create_organisation("Clinique B").await;
        for (account, role, org) in [
            (&ae.alice_id, "org_admin", Some(&ae.org_a)),
            (&ae.bob_id, "org_admin", Some(&ae.org_b)),
            (&ae.auditor_id, "auditor", None),
        ] {
            let body = json!({"account_id": account, "role": role, "organisation_id": org});
            let granted = ae.call(Method::POST, "/roles", &ae.platform, Some(&body)).await;
            assert_eq!(granted.status, 201, "{:?}", granted.body);
        }
        Some(ae)
    }

    /// Creates an organisation as the platform administrator; returns its id.
    pub async fn create_organisation(&self, name: &str) -> String {
        let created = self.call(Method::POST, "/organisations", &self.platform, Some(&json!({"name": name}))).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        created.body["id"].as_str().expect("an id").to_string()
    }

    /// A call to the admin API (`path` below /api/admin/v1) with a bearer token.
    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<&Value>) -> Answer {
        let url = self.env.url(&format!("{API_BASE}{path}"));
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"))).await
    }
}

/// An access token of `account_id` for the admin back end, as the console gets at login.
pub fn admin_token(env: &TestEnv, account_id: &str, scope: &str) -> String {
    habilis_idp::oidc::tokens::mint_access_token(
        env.state(),
        habilis_idp::oidc::tokens::AccessTokenRequest {
            client_id: CONSOLE_CLIENT,
            subject: account_id,
            account_id: Some(account_id),
            scope,
            audience: Vec::new(),
            auth: None,
            grant_id: None,
            lifetime: 600,
            certificate_thumbprint: None,
            authorization_details: None,
            act: None,
        },
        habilis_idp::unix_now(),
    )
    .expect("a token")
    .token
}

/// Asserts an error answer: status, code, and a description containing `text`.
#[track_caller]
pub fn refused(answer: &Answer, status: u16, error: &str, text: &str) {
    assert_eq!((answer.status, answer.error()), (status, error), "{:?}", answer.body);
    let description = answer.body["error_description"].as_str().unwrap_or("");
    assert!(description.contains(text), "expected `{text}` in {:?}", answer.body);
}

/// The refusals audited among `events`: (actor, operation, organisations).
pub fn denials(events: &[AuditRecord]) -> Vec<(String, String, Vec<String>)> {
    events
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::AdminAccessDenied { actor, operation, organisations, .. } => {
                Some((actor.clone(), operation.clone(), organisations.clone()))
            }
            _ => None,
        })
        .collect()
}

//! Dynamic client registration, black box: RFC 7591 `POST /register` with initial access tokens
//! that administrators issue (the domain API and the `habilis client registration-token` CLI), and
//! RFC 7592 management at `registration_client_uri`. A registered client is then used for real: the
//! `openidconnect` crate registers it and runs the authorization code flow with PKCE.
//! Every test runs on SQLite + memory and on PostgreSQL + Redis.

use std::time::Duration;

use habilis_e2e::{
    Answer, ClientAuth, Storage, TestEnv, answer, backchannel_http, pkce_pair, post_form, query_param, run_habilis,
};
use habilis_idp::audit::AuditEvent;
use habilis_idp::clients::registration::{IssueRequest, issue_initial_access_token, revoke_initial_access_token};
use serde_json::{Value, json};

habilis_e2e::on_both_storages!(
    registered_client_completes_a_code_flow_with_the_openidconnect_crate,
    initial_access_token_is_required_and_limited,
    metadata_errors_use_rfc7591_codes,
    registration_management_reads_updates_and_deletes,
    cli_issues_lists_and_revokes_initial_access_tokens,
    refused_tokens_lock_the_address_out,
    disabled_registration_is_neither_served_nor_advertised,
);

/// A professional (login = idNat, Luhn-valid) and their password.
const PRO: &str = "899700427885";
const PASSWORD: &str = "correct horse battery staple";
/// Where registered relying parties receive codes: the browser stops at the redirect.
const CALLBACK: &str = "https://rp.example.org/cb";

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Issues an initial access token through the domain API (as the CLI and the admin API do).
async fn initial_token(env: &TestEnv, max_uses: i64, expires_in: Duration) -> (String, String) {
    let state = env.state();
    let request = IssueRequest { expires_in, max_uses, description: Some("test".into()) };
    let issued = issue_initial_access_token(state.store.as_ref(), &state.audit, "test", &request, now())
        .await
        .expect("an initial access token");
    (issued.record.id.clone(), issued.token.to_string())
}

fn now() -> i64 {
    habilis_idp::unix_now()
}

/// A confidential web client with code + refresh, as an application would register.
fn web_metadata() -> Value {
    json!({
        "client_name": "Cardio Suivi",
        "redirect_uris": [CALLBACK],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "contacts": ["dsi@example.org"],
    })
}

/// `POST /register` with `token` as Bearer (none when `None`) and `body` as JSON text.
async fn register_raw(env: &TestEnv, token: Option<&str>, body: &str) -> Answer {
    let mut request =
        backchannel_http().post(env.url("/register")).header("content-type", "application/json").body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request.send().await.expect("POST /register")).await
}

async fn register(env: &TestEnv, token: &str, metadata: &Value) -> Answer {
    register_raw(env, Some(token), &metadata.to_string()).await
}

/// A request to the client configuration endpoint with `token` as Bearer.
async fn manage(env: &TestEnv, method: reqwest::Method, client_id: &str, token: &str, body: Option<&Value>) -> Answer {
    let mut request = backchannel_http().request(method, env.url(&format!("/register/{client_id}"))).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    answer(request.send().await.expect("a request to the client configuration endpoint")).await
}

#[track_caller]
fn assert_error(answer: &Answer, status: u16, error: &str) {
    assert_eq!((answer.status, answer.error()), (status, error), "{:?}", answer.body);
    assert!(
        answer.body["error_description"].as_str().is_some_and(|d| !d.is_empty()),
        "a specific error_description: {}",
        answer.body
    );
}

/// 401 with `WWW-Authenticate: Bearer … error="invalid_token"` (RFC 6750 §3).
#[track_caller]
fn assert_invalid_token(answer: &Answer) {
    assert_error(answer, 401, "invalid_token");
    let challenge = answer.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""), "{challenge}");
}

fn str_of<'a>(answer: &'a Answer, member: &str) -> &'a str {
    answer.body[member].as_str().unwrap_or_else(|| panic!("`{member}` in {}", answer.body))
}

/// Logs the professional in with `client_id` (PKCE) and redeems the code: the token response.
async fn code_flow(env: &TestEnv, client_id: &str, auth: &ClientAuth) -> Answer {
    let (verifier, challenge) = pkce_pair();
    let query = habilis_e2e::authorize_query(
        &[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", CALLBACK),
            ("scope", "openid profile offline_access"),
            ("state", "st"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
        &[],
    );
    let back = env.browser().authorize(&env.url(&format!("/authorize?{query}")), PRO, PASSWORD).await;
    let code = query_param(&back, "code").unwrap_or_else(|| panic!("a code: {back}"));
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", verifier.as_str()),
    ];
    post_form(&backchannel_http(), &env.url("/token"), auth, &fields).await
}

async fn client_credentials(env: &TestEnv, auth: &ClientAuth) -> Answer {
    post_form(&backchannel_http(), &env.url("/token"), auth, &[("grant_type", "client_credentials")]).await
}

// ---------------------------------------------------------------------------------------------
// RFC 7591

/// Discovery advertises the endpoint; the `openidconnect` crate registers a client with an
/// initial access token, then runs a code flow with PKCE as that client: the registered client
/// works end to end. The raw response has the RFC 7591 §3.2.1 shape.
async fn registered_client_completes_a_code_flow_with_the_openidconnect_crate(storage: Storage) {
    use openidconnect::core::{
        CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreClientRegistrationRequest, CoreGrantType,
        CoreProviderMetadata, CoreResponseType,
    };
    use openidconnect::registration::EmptyAdditionalClientMetadata;
    use openidconnect::{
        AccessToken, AuthorizationCode, ClientName, CsrfToken, IssuerUrl, LocalizedClaim, Nonce, OAuth2TokenResponse,
        PkceCodeChallenge, RedirectUrl, ResponseTypes, Scope, TokenResponse,
    };

    let Some(env) = TestEnv::start(storage).await else { return };
    let account_id = env.add_professional(PRO, "KIT", "DOC0042788", PASSWORD).await;
    let mut audit = env.state().audit.subscribe();
    let (token_id, token) = initial_token(&env, 2, Duration::from_secs(3600)).await;

    let http = openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let issuer = IssuerUrl::new(env.base_url.clone()).unwrap();
    let metadata = CoreProviderMetadata::discover_async(issuer, &http).await.expect("discovery");
    let endpoint = metadata.registration_endpoint().expect("registration_endpoint in discovery").clone();
    assert_eq!(endpoint.as_str(), format!("{}/register", env.base_url));

    let mut name = LocalizedClaim::new();
    name.insert(None, ClientName::new("Cardio Suivi".into()));
    let registered = CoreClientRegistrationRequest::new(
        vec![RedirectUrl::new(CALLBACK.into()).unwrap()],
        EmptyAdditionalClientMetadata::default(),
    )
    .set_client_name(Some(name))
    .set_grant_types(Some(vec![CoreGrantType::AuthorizationCode, CoreGrantType::RefreshToken]))
    .set_response_types(Some(vec![ResponseTypes::new(vec![CoreResponseType::Code])]))
    .set_token_endpoint_auth_method(Some(CoreClientAuthMethod::ClientSecretBasic))
    .set_initial_access_token(Some(AccessToken::new(token.clone())))
    .register_async(&endpoint, &http)
    .await
    .expect("the openidconnect crate registers a client");
    let client_id = registered.client_id().clone();
    let secret = registered.client_secret().expect("a generated client_secret").clone();
    assert!(secret.secret().len() >= 43, "high entropy");
    assert!(registered.registration_access_token().is_some());
    assert_eq!(
        registered.registration_client_uri().map(|u| u.as_str().to_string()),
        Some(format!("{}/register/{}", env.base_url, client_id.as_str()))
    );
    assert!(registered.client_id_issued_at().is_some());
    assert_eq!(registered.client_secret_expires_at().map(|t| t.timestamp()), Some(0), "never expires");
    let events = habilis_e2e::drain_audit(&mut audit);
    let event = events.iter().find(|r| r.event.name() == "client_registered").expect("a client_registered event");
    match &event.event {
        AuditEvent::ClientRegistered { client_id: id, actor, metadata } => {
            assert_eq!(id, client_id.as_str());
            assert_eq!(actor, &format!("initial_access_token:{token_id}"));
            assert!(metadata.contains("Cardio Suivi") && !metadata.contains(secret.secret()), "{metadata}");
        }
        other => panic!("{other:?}"),
    }

    // The registered client runs the authorization code flow with PKCE.
    let client = CoreClient::from_provider_metadata(metadata, client_id.clone(), Some(secret))
        .set_redirect_uri(RedirectUrl::new(CALLBACK.to_string()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();
    let back = env.browser().authorize(auth_url.as_str(), PRO, PASSWORD).await;
    assert_eq!(query_param(&back, "state").as_deref(), Some(csrf.secret().as_str()), "{back}");
    let code = query_param(&back, "code").unwrap_or_else(|| panic!("a code: {back}"));
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("a token endpoint in discovery")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("the registered client redeems its code");
    let id_token = response.id_token().expect("an ID token");
    let claims = id_token.claims(&client.id_token_verifier(), &nonce).expect("a valid ID token");
    assert_eq!(claims.subject().as_str(), account_id);
    assert_eq!(claims.audiences().first().map(|a| a.as_str()), Some(client_id.as_str()));
    assert!(response.refresh_token().is_some(), "offline_access with the refresh_token grant");

    // The raw answer: 201, no-store, the RFC 7591 §3.2.1 members, defaults made explicit.
    let raw = register(&env, &token, &web_metadata()).await;
    assert_eq!(raw.status, 201, "{:?}", raw.body);
    assert_eq!(raw.headers.get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
    let body = &raw.body;
    assert!(str_of(&raw, "client_id").len() >= 32, "{body}");
    assert!(str_of(&raw, "client_secret").len() >= 43, "{body}");
    assert_eq!(body["client_secret_expires_at"], 0);
    assert!(body["client_id_issued_at"].as_i64().is_some_and(|t| (t - now()).abs() < 60), "{body}");
    assert!(str_of(&raw, "registration_access_token").len() >= 43, "{body}");
    assert_eq!(body["scope"], "openid profile email phone offline_access", "the allowed scopes by default");
    assert_eq!(body["response_types"], json!(["code"]));
    assert_eq!(body["application_type"], "web");
    assert_eq!(body["client_name"], "Cardio Suivi");
    // A public native client gets no secret.
    let (_, other) = initial_token(&env, 1, Duration::from_secs(60)).await;
    let native = json!({
        "application_type": "native", "token_endpoint_auth_method": "none",
        "redirect_uris": ["http://127.0.0.1/callback"], "scope": "openid",
    });
    let public = register(&env, &other, &native).await;
    assert_eq!(public.status, 201, "{:?}", public.body);
    assert!(public.body.get("client_secret").is_none() && public.body.get("client_secret_expires_at").is_none());
    env.stop().await;
}

/// No registration without a valid initial access token: missing, unknown, expired, revoked or
/// used up → 401 invalid_token. A refused registration (bad metadata) does not spend a use.
async fn initial_access_token_is_required_and_limited(storage: Storage) {
    let Some(env) = TestEnv::start(storage).await else { return };
    let metadata = web_metadata();

    assert_invalid_token(&register_raw(&env, None, &metadata.to_string()).await);
    assert_invalid_token(&register(&env, "not-a-token", &metadata).await);

    let (_, expired) = initial_token(&env, 1, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let answer = register(&env, &expired, &metadata).await;
    assert_invalid_token(&answer);
    assert!(answer.body["error_description"].as_str().unwrap().contains("expired"), "{:?}", answer.body);

    let (revoked_id, revoked) = initial_token(&env, 5, Duration::from_secs(3600)).await;
    let state = env.state();
    assert!(revoke_initial_access_token(state.store.as_ref(), &state.audit, "test", &revoked_id, now()).await.unwrap());
    let answer = register(&env, &revoked, &metadata).await;
    assert_invalid_token(&answer);
    assert!(answer.body["error_description"].as_str().unwrap().contains("revoked"), "{:?}", answer.body);

    // Single use: a refused attempt first, which spends nothing, then the one use, then no more.
    let (_, single) = initial_token(&env, 1, Duration::from_secs(3600)).await;
    let bad = json!({ "redirect_uris": ["http://rp.example.org/cb"] });
    assert_error(&register(&env, &single, &bad).await, 400, "invalid_redirect_uri");
    assert_eq!(register(&env, &single, &metadata).await.status, 201);
    let answer = register(&env, &single, &metadata).await;
    assert_invalid_token(&answer);
    assert!(answer.body["error_description"].as_str().unwrap().contains("used"), "{:?}", answer.body);

    // Limited use: exactly N registrations, even when they race.
    let (_, limited) = initial_token(&env, 3, Duration::from_secs(3600)).await;
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (url, token, body) = (env.url("/register"), limited.clone(), metadata.to_string());
        attempts.spawn(async move {
            let request = backchannel_http().post(url).bearer_auth(token).header("content-type", "application/json");
            request.body(body).send().await.expect("POST /register").status().as_u16()
        });
    }
    let statuses = attempts.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 3, "{statuses:?}");
    env.stop().await;
}

/// Each metadata error is a 400 with its RFC 7591 §3.2.2 code and a description naming the
/// problem; the validation is `habilis client import`'s, narrowed for self-registered clients.
async fn metadata_errors_use_rfc7591_codes(storage: Storage) {
    let Some(env) = TestEnv::start(storage).await else { return };
    let (_, token) = initial_token(&env, 1, Duration::from_secs(3600)).await;
    let with = |member: &str, value: Value| {
        let mut metadata = web_metadata();
        metadata[member] = value;
        metadata
    };
    let es256 = {
        let pair = josekit::jws::ES256.generate_key_pair().unwrap();
        Value::Object(pair.to_jwk_public_key().as_ref().clone())
    };
    let mut both_key_sources = with("token_endpoint_auth_method", json!("private_key_jwt"));
    both_key_sources["jwks"] = json!({ "keys": [es256] });
    both_key_sources["jwks_uri"] = json!("https://rp.example.org/jwks");
    let cases: Vec<(Value, &str, &str)> = vec![
        (with("redirect_uris", json!(["http://rp.example.org/cb"])), "invalid_redirect_uri", "https"),
        (with("redirect_uris", json!(["https://rp.example.org/cb#x"])), "invalid_redirect_uri", "fragment"),
        (with("redirect_uris", json!(["/cb"])), "invalid_redirect_uri", "absolute"),
        (with("redirect_uris", json!([])), "invalid_redirect_uri", "at least one"),
        (
            json!({ "application_type": "native", "redirect_uris": ["http://192.0.2.1/cb"] }),
            "invalid_redirect_uri",
            "loopback",
        ),
        (with("redirect_uris", json!("https://rp.example.org/cb")), "invalid_client_metadata", "redirect_uris"),
        (with("grant_types", json!(["implicit"])), "invalid_client_metadata", "implicit"),
        (with("grant_types", json!(["refresh_token"])), "invalid_client_metadata", "authorization_code"),
        (with("response_types", json!(["token"])), "invalid_client_metadata", "code"),
        (
            with("token_endpoint_auth_method", json!("client_secret_jwt")),
            "invalid_client_metadata",
            "client_secret_jwt",
        ),
        (
            with("token_endpoint_auth_method", json!("private_key_jwt")),
            "invalid_client_metadata",
            "private_key_jwt needs",
        ),
        (both_key_sources, "invalid_client_metadata", "both"),
        (
            with("id_token_signed_response_alg", json!("none")),
            "invalid_client_metadata",
            "id_token_signed_response_alg",
        ),
        (with("userinfo_signed_response_alg", json!("EdDSA")), "invalid_client_metadata", "not enabled"),
        (with("scope", json!("openid relationships")), "invalid_client_metadata", "relationships"),
        (with("first_party", json!(true)), "invalid_client_metadata", "first_party"),
        (
            with("access_token_audience", json!(["https://api.example.org"])),
            "invalid_client_metadata",
            "administrators",
        ),
        (with("client_secret", json!("x".repeat(40))), "invalid_client_metadata", "client_secret"),
        (with("client_id", json!("my-own-id")), "invalid_client_metadata", "client_id"),
        (json!(["not", "an", "object"]), "invalid_client_metadata", "JSON object"),
        (
            with("software_statement", json!("eyJhbGciOiJFUzI1NiJ9.e30.sig")),
            "unapproved_software_statement",
            "software",
        ),
    ];
    for (metadata, code, needle) in cases {
        let answer = register(&env, &token, &metadata).await;
        assert_error(&answer, 400, code);
        let description = answer.body["error_description"].as_str().unwrap();
        assert!(description.contains(needle), "`{description}` should mention `{needle}` for {metadata}");
    }
    let answer = register_raw(&env, Some(&token), "{not json").await;
    assert_error(&answer, 400, "invalid_client_metadata");
    // None of these spent the single use.
    assert_eq!(register(&env, &token, &web_metadata()).await.status, 201);
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// RFC 7592

/// Read, update (token rotated) and delete with the registration access token; anything else
/// is 401 invalid_token. A deleted client gets no more tokens, and its grants are gone.
async fn registration_management_reads_updates_and_deletes(storage: Storage) {
    let Some(env) = TestEnv::start(storage).await else { return };
    env.add_professional(PRO, "KIT", "DOC0042788", PASSWORD).await;
    let mut audit = env.state().audit.subscribe();
    let (_, initial) = initial_token(&env, 2, Duration::from_secs(3600)).await;
    let registered = register(&env, &initial, &web_metadata()).await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let client_id = str_of(&registered, "client_id").to_string();
    let secret = str_of(&registered, "client_secret").to_string();
    let access = str_of(&registered, "registration_access_token").to_string();
    let uri = str_of(&registered, "registration_client_uri").to_string();
    assert_eq!(uri, format!("{}/register/{client_id}", env.base_url));
    let auth = ClientAuth::Basic(client_id.clone(), secret.clone());
    let other = register(&env, &initial, &web_metadata()).await;
    let other_id = str_of(&other, "client_id").to_string();
    let other_access = str_of(&other, "registration_access_token").to_string();

    // Read.
    let read = manage(&env, reqwest::Method::GET, &client_id, &access, None).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(read.body["client_id"], client_id.as_str());
    assert_eq!(read.body["client_name"], "Cardio Suivi");
    assert_eq!(read.body["registration_access_token"], access.as_str());
    assert_eq!(read.body["registration_client_uri"], uri.as_str());
    assert!(read.body.get("client_secret").is_none(), "a secret is shown once only: {}", read.body);
    assert_eq!(read.body["client_id_issued_at"], registered.body["client_id_issued_at"]);
    // Wrong token, another client's token, the initial access token, an unknown client: 401.
    assert_invalid_token(&manage(&env, reqwest::Method::GET, &client_id, "wrong", None).await);
    assert_invalid_token(&manage(&env, reqwest::Method::GET, &client_id, &other_access, None).await);
    assert_invalid_token(&manage(&env, reqwest::Method::GET, &client_id, &initial, None).await);
    assert_invalid_token(&manage(&env, reqwest::Method::GET, "no-such-client", &access, None).await);
    assert_invalid_token(&manage(&env, reqwest::Method::DELETE, &other_id, &access, None).await);
    let no_token = answer(backchannel_http().get(&uri).send().await.unwrap()).await;
    assert_invalid_token(&no_token);

    // A grant to revoke later, and the client credentials grant, before the update.
    let first_tokens = code_flow(&env, &client_id, &auth).await;
    assert_eq!(first_tokens.status, 200, "{:?}", first_tokens.body);
    let refresh_token = first_tokens.body["refresh_token"].as_str().expect("a refresh token").to_string();

    // Update: the same validation, client_id required, client_secret (if sent) must match.
    let mut changed = web_metadata();
    changed["client_name"] = json!("Cardio Suivi v2");
    changed["client_id"] = json!(client_id);
    let mut without_id = changed.clone();
    without_id.as_object_mut().unwrap().remove("client_id");
    assert_error(
        &manage(&env, reqwest::Method::PUT, &client_id, &access, Some(&without_id)).await,
        400,
        "invalid_request",
    );
    let mut wrong_secret = changed.clone();
    wrong_secret["client_secret"] = json!("y".repeat(43));
    assert_error(
        &manage(&env, reqwest::Method::PUT, &client_id, &access, Some(&wrong_secret)).await,
        400,
        "invalid_request",
    );
    let mut bad_uri = changed.clone();
    bad_uri["redirect_uris"] = json!(["https://rp.example.org/cb#frag"]);
    assert_error(
        &manage(&env, reqwest::Method::PUT, &client_id, &access, Some(&bad_uri)).await,
        400,
        "invalid_redirect_uri",
    );
    assert_invalid_token(&manage(&env, reqwest::Method::PUT, &client_id, "wrong", Some(&changed)).await);
    let mut with_secret = changed.clone();
    with_secret["client_secret"] = json!(secret);
    let updated = manage(&env, reqwest::Method::PUT, &client_id, &access, Some(&with_secret)).await;
    assert_eq!(updated.status, 200, "refused requests left the token valid: {:?}", updated.body);
    assert_eq!(updated.body["client_name"], "Cardio Suivi v2");
    assert!(updated.body.get("client_secret").is_none(), "the secret is kept, not reissued: {}", updated.body);
    let rotated = str_of(&updated, "registration_access_token").to_string();
    assert_ne!(rotated, access, "the registration access token rotates on update");
    assert_invalid_token(&manage(&env, reqwest::Method::GET, &client_id, &access, None).await);
    let read = manage(&env, reqwest::Method::GET, &client_id, &rotated, None).await;
    assert_eq!((read.status, &read.body["client_name"]), (200, &json!("Cardio Suivi v2")));
    assert_eq!(client_credentials(&env, &auth).await.status, 200, "the secret still works after the update");
    let records = habilis_e2e::drain_audit(&mut audit);
    let update = records.iter().find(|r| r.event.name() == "client_updated").expect("a client_updated event");
    match &update.event {
        AuditEvent::ClientUpdated { client_id: id, actor, before, after } => {
            assert_eq!(id, &client_id);
            assert_eq!(actor, &format!("registration_access_token:{client_id}"));
            assert!(before.contains("\"Cardio Suivi\"") && after.contains("Cardio Suivi v2"), "{before} → {after}");
            assert!(!before.contains(&secret) && !after.contains(&secret), "never a secret in the audit");
        }
        other => panic!("{other:?}"),
    }

    // Delete: 204, then nothing works any more for that client.
    assert_invalid_token(&manage(&env, reqwest::Method::DELETE, &client_id, &access, None).await);
    let deleted = manage(&env, reqwest::Method::DELETE, &client_id, &rotated, None).await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
    assert_invalid_token(&manage(&env, reqwest::Method::GET, &client_id, &rotated, None).await);
    assert_eq!(client_credentials(&env, &auth).await.error(), "invalid_client");
    let fields = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str())];
    let refreshed = post_form(&backchannel_http(), &env.url("/token"), &auth, &fields).await;
    assert_eq!((refreshed.status, refreshed.error()), (401, "invalid_client"), "{:?}", refreshed.body);
    let state = env.state();
    assert!(state.store.client_by_id(&client_id).await.unwrap().is_none());
    let grants_left = state.store.refresh_token(&habilis_idp::cli::sha256_hex(&refresh_token)).await.unwrap();
    assert!(grants_left.is_none(), "the client's refresh tokens went with it");
    let records = habilis_e2e::drain_audit(&mut audit);
    assert!(
        records.iter().any(|r| matches!(&r.event, AuditEvent::ClientDeleted { client_id: id, .. } if id == &client_id)),
        "a client_deleted event"
    );
    // The other client is untouched.
    assert_eq!(manage(&env, reqwest::Method::GET, &other_id, &other_access, None).await.status, 200);
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Administrators' side, configuration

/// `habilis client registration-token issue | list | revoke` on the server's own database; the
/// printed token registers a client at the running server.
async fn cli_issues_lists_and_revokes_initial_access_tokens(storage: Storage) {
    let Some(env) = TestEnv::start(storage).await else { return };
    let config = &env.state().config;
    let mut vars = vec![("HABILIS_DATA_DIR".to_string(), config.data_dir.display().to_string())];
    if let Some(url) = &config.storage.database_url {
        vars.push(("HABILIS_STORAGE__DATABASE_URL".into(), url.clone()));
    }
    let run = |args: &[&str]| {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = run_habilis(args, &vars, None);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let (code, help, _) = run(&["client", "--help"]);
    assert_eq!(code, 0);
    assert!(help.contains("registration-token"), "{help}");
    let (code, help, _) = run(&["client", "registration-token", "--help"]);
    assert_eq!(code, 0);
    assert!(help.contains("issue") && help.contains("list") && help.contains("revoke"), "{help}");

    let (code, stdout, stderr) = run(&[
        "client",
        "registration-token",
        "issue",
        "--expires-in",
        "2h",
        "--max-uses",
        "2",
        "--description",
        "cardio app",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let token = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("token:"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| panic!("the token is printed: {stdout}"));
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("issued initial access token "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("the token id is printed: {stdout}"));
    assert!(stdout.contains("/register") && stdout.contains("curl"), "how to use it: {stdout}");
    assert!(stdout.contains("not be shown again"), "{stdout}");

    let (code, listed, _) = run(&["client", "registration-token", "list"]);
    assert_eq!(code, 0);
    let line = listed.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{id} listed: {listed}"));
    assert!(line.contains("usable") && line.contains("0/2") && line.contains("cardio app"), "{line}");
    assert!(!listed.contains(&token), "never the token itself: {listed}");

    assert_eq!(register(&env, &token, &web_metadata()).await.status, 201);
    let (_, listed, _) = run(&["client", "registration-token", "list"]);
    assert!(listed.lines().any(|l| l.starts_with(&id) && l.contains("1/2")), "{listed}");

    let (code, stdout, _) = run(&["client", "registration-token", "revoke", &id]);
    assert_eq!(code, 0, "{stdout}");
    assert_invalid_token(&register(&env, &token, &web_metadata()).await);
    let (code, _, stderr) = run(&["client", "registration-token", "revoke", &id]);
    assert_eq!(code, 1);
    assert!(stderr.contains("registration-token list"), "says what to do: {stderr}");
    let (_, listed, _) = run(&["client", "registration-token", "list"]);
    assert!(listed.lines().any(|l| l.starts_with(&id) && l.contains("revoked")), "{listed}");

    let (code, _, stderr) = run(&["client", "registration-token", "issue", "--max-uses", "0"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--max-uses"), "{stderr}");
    let (code, _, stderr) = run(&["client", "registration-token", "issue", "--expires-in", "400days"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--expires-in"), "{stderr}");
    env.stop().await;
}

/// Refused tokens count against the client address; past the limit even a valid token is
/// refused until the lockout ends.
async fn refused_tokens_lock_the_address_out(storage: Storage) {
    let Some(env) = TestEnv::start_with(storage, |c| c.registration.max_failures_per_address = 3).await else {
        return;
    };
    let (_, token) = initial_token(&env, 1, Duration::from_secs(3600)).await;
    for _ in 0..3 {
        assert_invalid_token(&register(&env, "guess", &web_metadata()).await);
    }
    let locked = register(&env, &token, &web_metadata()).await;
    assert_eq!((locked.status, locked.error()), (503, "temporarily_unavailable"), "{:?}", locked.body);
    assert!(locked.headers.get("retry-after").is_some());
    assert_eq!(manage(&env, reqwest::Method::GET, "any", "guess", None).await.status, 503);
    env.stop().await;
}

async fn disabled_registration_is_neither_served_nor_advertised(storage: Storage) {
    let Some(env) = TestEnv::start_with(storage, |c| c.registration.enabled = false).await else { return };
    let discovery: Value = backchannel_http()
        .get(env.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(discovery.get("registration_endpoint").is_none(), "{discovery}");
    let (_, token) = initial_token(&env, 1, Duration::from_secs(3600)).await;
    assert_eq!(register(&env, &token, &web_metadata()).await.status, 404);
    env.stop().await;
}

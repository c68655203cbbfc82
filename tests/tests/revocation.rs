//! Black-box tests of revocation under attack: parallel code replay must never leave the winner's
//! grant alive, and a client presenting another client's code must not consume it.
//!
//! Test names read as `<behaviour>::<storage>` when the behaviour depends on storage.

use habilis_e2e::{Answer, Browser, ClientAuth, Storage, TestEnv, backchannel_http, pkce_pair, post_form, query_param};
use serde_json::{Value, json};

const PRO: &str = "899700427885";
const PASSWORD: &str = "correct horse battery staple";
const CALLBACK: &str = "http://127.0.0.1:9/cb";
const SCOPE: &str = "openid profile email offline_access";

habilis_e2e::on_both_storages!(
    parallel_code_replay_never_leaves_the_winners_grant_alive,
    a_password_reset_revokes_every_grant_of_the_account,
);

struct Rp {
    env: TestEnv,
    account_id: String,
    client_id: String,
    auth: ClientAuth,
    http: reqwest::Client,
}

fn client_metadata(extra: Value) -> Value {
    habilis_e2e::first_party_client_metadata(CALLBACK, SCOPE, extra)
}

async fn rp(storage: Storage) -> Option<Rp> {
    let env = TestEnv::start(storage).await?;
    let account_id = env.add_professional(PRO, "KIT", "DOC0042788", PASSWORD).await;
    let client_id = "rp-main".to_string();
    let secret = env.register_client(&client_id, &client_metadata(json!({}))).await.expect("a generated secret");
    let auth = ClientAuth::Basic(client_id.clone(), secret);
    Some(Rp { env, account_id, client_id, auth, http: backchannel_http() })
}

async fn obtain_code(rp: &Rp, browser: &Browser) -> (String, String) {
    let (verifier, challenge) = pkce_pair();
    let base = [
        ("response_type", "code"),
        ("client_id", rp.client_id.as_str()),
        ("redirect_uri", CALLBACK),
        ("scope", SCOPE),
        ("state", "st-rev"),
        ("nonce", "n-rev"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let url = rp.env.url(&format!("/authorize?{}", habilis_e2e::authorize_query(&base, &[])));
    let back = browser.authorize(&url, PRO, PASSWORD).await;
    assert_eq!(query_param(&back, "error"), None, "{back}");
    (query_param(&back, "code").expect("a code"), verifier)
}

async fn redeem(rp: &Rp, auth: &ClientAuth, code: &str, verifier: &str) -> Answer {
    let fields =
        [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", CALLBACK), ("code_verifier", verifier)];
    post_form(&rp.http, &rp.env.url("/token"), auth, &fields).await
}

async fn refresh(rp: &Rp, refresh_token: &str) -> Answer {
    let fields = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    post_form(&rp.http, &rp.env.url("/token"), &rp.auth, &fields).await
}

async fn introspect(rp: &Rp, token: &str) -> Answer {
    post_form(&rp.http, &rp.env.url("/introspect"), &rp.auth, &[("token", token)]).await
}

fn assert_error(answer: &Answer, status: u16, error: &str) {
    assert_eq!((answer.status, answer.error()), (status, error), "{:?}", answer.body);
    assert!(answer.body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{:?}", answer.body);
}

/// 20 parallel redemptions of one code, 50 times: exactly one wins each time, and the replays
/// always revoke the winner's grant — its refresh token is refused and its access token inactive,
/// whatever the interleaving (the winner inserting its grant after a loser revoked it included).
async fn parallel_code_replay_never_leaves_the_winners_grant_alive(storage: Storage) {
    let Some(rp) = rp(storage).await else { return };
    let rp = std::sync::Arc::new(rp);
    for round in 0..50 {
        let browser = rp.env.browser();
        let (code, verifier) = obtain_code(&rp, &browser).await;
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (rp, code, verifier) = (rp.clone(), code.clone(), verifier.clone());
            tasks.push(tokio::spawn(async move { redeem(&rp, &rp.auth, &code, &verifier).await }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let answer = task.await.unwrap();
            if answer.status == 200 {
                winners.push(answer);
            } else {
                assert_error(&answer, 400, "invalid_grant");
            }
        }
        assert!(winners.len() <= 1, "round {round}: {} redemptions of one code succeeded", winners.len());
        // Zero winners is possible only if the winner's own post-insert check saw a replay marker.
        for winner in winners {
            let access = winner.body["access_token"].as_str().expect("access_token").to_string();
            let refresh_token = winner.body["refresh_token"].as_str().expect("refresh_token").to_string();
            assert_error(&refresh(&rp, &refresh_token).await, 400, "invalid_grant");
            assert_eq!(introspect(&rp, &access).await.body, json!({ "active": false }), "round {round}");
        }
    }
}

/// Another client presenting a code gets `invalid_grant` and the code stays redeemable by the
/// client it was issued to (the client is checked before the code is consumed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_client_presenting_a_code_does_not_consume_it() {
    let rp = rp(Storage::Embedded).await.unwrap();
    let secret = rp.env.register_client("rp-other", &client_metadata(json!({}))).await.expect("a secret");
    let other = ClientAuth::Basic("rp-other".into(), secret);
    let browser = rp.env.browser();
    let (code, verifier) = obtain_code(&rp, &browser).await;
    let foreign = redeem(&rp, &other, &code, &verifier).await;
    assert_error(&foreign, 400, "invalid_grant");
    assert_eq!(foreign.body["error_description"], "the authorization code was issued to another client");
    let rightful = redeem(&rp, &rp.auth, &code, &verifier).await;
    assert_eq!(rightful.status, 200, "{:?}", rightful.body);
}

/// Completing a password reset ends what the old password opened: the grants obtained before it
/// are revoked (refresh refused, access token inactive). The reset link is seeded the way
/// `send_reset_link` stores it (the mail round trip is tested elsewhere); the form is driven
/// through the real pages, CSRF included.
async fn a_password_reset_revokes_every_grant_of_the_account(storage: Storage) {
    let Some(rp) = rp(storage).await else { return };
    let browser = rp.env.browser();
    let (code, verifier) = obtain_code(&rp, &browser).await;
    let before = redeem(&rp, &rp.auth, &code, &verifier).await;
    assert_eq!(before.status, 200, "{:?}", before.body);
    let access = before.body["access_token"].as_str().unwrap().to_string();
    let refresh_token = before.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(introspect(&rp, &access).await.body["active"], true);

    let link = habilis_idp::testing::unique_name("reset-link");
    let key = format!("pwreset:{}", habilis_idp::cli::sha256_hex(&link));
    let ttl = std::time::Duration::from_secs(900);
    rp.env.state().ephemeral.put(&key, rp.account_id.as_bytes(), ttl).await.unwrap();
    let stranger = rp.env.browser();
    let (_, status, form) = stranger.navigate(&format!("/password/reset?token={link}")).await.page();
    assert_eq!(status, 200, "{form}");
    let csrf = habilis_e2e::hidden_input(&form, "csrf").expect("a CSRF field");
    let new_password = "an entirely different passphrase, 2026";
    let fields =
        [("token", link.as_str()), ("csrf", csrf.as_str()), ("password", new_password), ("confirm", new_password)];
    let (_, status, done) = stranger.submit("/password/reset", &fields).await.page();
    assert_eq!(status, 200, "{done}");

    assert_error(&refresh(&rp, &refresh_token).await, 400, "invalid_grant");
    assert_eq!(introspect(&rp, &access).await.body, json!({ "active": false }));
}

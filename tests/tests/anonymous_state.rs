//! Issue 19: anonymous requests cannot fill the ephemeral store. Every valid `GET /authorize`
//! stores a login page for whoever sent it; without a bound, one client filled the in-memory store
//! in a second and every real login then failed for half an hour. Checked from outside, with
//! floods of 50 parallel requests, on SQLite + memory and PostgreSQL + Redis.

use std::net::IpAddr;
use std::time::Duration;

use habilis_e2e::{Browser, ClientAuth, Storage, TestEnv, backchannel_http, pkce_pair, post_form, query_param};
use serde_json::json;

const PRO: &str = "899700427885";
const PASSWORD: &str = "correct horse battery staple";
const CALLBACK: &str = "http://127.0.0.1:9/cb";
const CLIENT: &str = "rp-main";
const FLOOD: usize = 50;

habilis_e2e::on_both_storages!(
    a_flood_from_one_address_is_refused_while_other_addresses_log_in,
    the_shared_budget_bounds_live_anonymous_entries_and_signed_in_users_carry_on,
    fifty_parallel_pushed_requests_of_one_client_admit_exactly_its_share,
);

async fn server(
    storage: Storage,
    tweak: impl FnOnce(&mut habilis_idp::config::Config),
) -> Option<(TestEnv, ClientAuth)> {
    let env = TestEnv::start_with(storage, tweak).await?;
    env.add_professional(PRO, "KIT", "DOC0042788", PASSWORD).await;
    let metadata = habilis_e2e::first_party_client_metadata(CALLBACK, "openid profile", json!({}));
    let secret = env.register_client(CLIENT, &metadata).await.expect("a generated secret");
    Some((env, ClientAuth::Basic(CLIENT.into(), secret)))
}

fn authorize_path(challenge: &str) -> String {
    let query = habilis_e2e::authorize_query(
        &[
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", CALLBACK),
            ("scope", "openid profile"),
            ("state", "s"),
            ("nonce", "n"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
        &[],
    );
    format!("/authorize?{query}")
}

fn address(last: u16) -> IpAddr {
    IpAddr::from([127, 0, (last >> 8) as u8 + 1, (last & 0xff) as u8])
}

/// `FLOOD` parallel authorization requests, from `from(i)`; returns the statuses and one refusal
/// page.
async fn flood(env: &TestEnv, from: impl Fn(usize) -> IpAddr) -> (Vec<u16>, Option<String>) {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(FLOOD));
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        let http = reqwest::Client::builder()
            .local_address(from(i))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let url = env.url(&authorize_path(&pkce_pair().1));
        let barrier = barrier.clone();
        senders.spawn(async move {
            barrier.wait().await;
            let response = http.get(url).send().await.expect("an answer, never a reset");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        });
    }
    let mut statuses = Vec::new();
    let mut refusal = None;
    while let Some(sent) = senders.join_next().await {
        let (status, body) = sent.unwrap();
        if status >= 400 {
            refusal.get_or_insert(body);
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    (statuses, refusal)
}

fn admitted(statuses: &[u16]) -> usize {
    statuses.iter().filter(|s| (300..400).contains(*s)).count()
}

/// A full login from `browser` ending in a token response.
async fn log_in(env: &TestEnv, auth: &ClientAuth, browser: &Browser) {
    let (verifier, challenge) = pkce_pair();
    let back = browser.authorize(&env.url(&authorize_path(&challenge)), PRO, PASSWORD).await;
    let code = query_param(&back, "code").unwrap_or_else(|| panic!("a code: {back}"));
    let answer = post_form(
        &backchannel_http(),
        &env.url("/token"),
        auth,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

/// 20 new logins a minute per address. A user from 127.0.0.1 opens the login page first; then 50
/// parallel requests from the same address: exactly 19 more are admitted, the others get a 429
/// page that says what to do. The user who started before finishes, and a user from another
/// address logs in from start to end.
async fn a_flood_from_one_address_is_refused_while_other_addresses_log_in(storage: Storage) {
    let Some((env, auth)) = server(storage, |c| c.limits.anonymous_per_address = 20).await else { return };
    let early = Browser::from_address(&format!("http://{}", env.server.addr), address(0));
    let login_page = early.navigate(&env.url(&authorize_path(&pkce_pair().1))).await;
    assert!(matches!(&login_page, habilis_e2e::Landing::Page { status: 200, .. }), "{login_page:?}");

    let (statuses, refusal) = flood(&env, |_| address(0)).await;
    assert_eq!(admitted(&statuses), 19, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), FLOOD - 19, "{statuses:?}");
    let refusal = refusal.expect("a refusal page");
    assert!(refusal.contains("<html") && refusal.contains("wait a minute"), "{refusal}");

    // The login under way from the flooded address carries on.
    let back = early.log_in(login_page, PRO, PASSWORD).await.left();
    assert!(query_param(&back, "code").is_some(), "{back}");

    // Another address is another sender.
    let other = Browser::from_address(&format!("http://{}", env.server.addr), address(1));
    log_in(&env, &auth, &other).await;
    let metrics = reqwest::get(env.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("habilis_admission_refusals_total{work=\"interaction\",reason=\"address\"} 31"),
        "{}",
        metrics.lines().filter(|l| l.contains("admission")).collect::<Vec<_>>().join("\n")
    );
}

/// A bound of 110 live anonymous entries, 10-minute unanswered login pages, 1-minute windows:
/// at most 110 / (10 + 1) = 10 new login pages per window, whoever sends them. A user logged in
/// before; then 50 parallel requests from 50 addresses: exactly 10 are admitted, the others get
/// 503, the store holds at most the bound (counted in Redis), and the signed-in user still gets a
/// code for a new login at once.
async fn the_shared_budget_bounds_live_anonymous_entries_and_signed_in_users_carry_on(storage: Storage) {
    let Some((env, auth)) = server(storage, |c| {
        c.limits.anonymous_per_address = 0;
        c.limits.anonymous_entries = 110;
        c.session.unanswered_interaction_lifetime = Duration::from_secs(600);
    })
    .await
    else {
        return;
    };
    let signed_in = Browser::from_address(&format!("http://{}", env.server.addr), address(500));
    log_in(&env, &auth, &signed_in).await;

    let (statuses, refusal) = flood(&env, |i| address(i as u16 + 1)).await;
    assert_eq!(admitted(&statuses), 9, "the signed-in user's login page took one: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), FLOOD - 9, "{statuses:?}");
    assert!(refusal.unwrap().contains("logins already under way carry on"));

    let config = &env.state().config;
    if let Some(url) = &config.storage.redis_url {
        let prefix = &config.storage.redis_prefix;
        let pages = habilis_idp::testing::redis_keys(url, &format!("{prefix}int:*")).await.unwrap();
        assert!(pages.len() <= 10, "{} login pages stored: {pages:?}", pages.len());
        let every = habilis_idp::testing::redis_keys(url, &format!("{prefix}*")).await.unwrap();
        assert!(every.len() <= 110, "{} entries: {every:?}", every.len());
    }

    // A browser with a session is not anonymous: its next login goes straight to the code.
    let back = signed_in.navigate(&env.url(&authorize_path(&pkce_pair().1))).await.left();
    assert!(query_param(&back, "code").is_some(), "{back}");
}

/// The per-client share, at `/par` (pushed from the client's back end: one address for all its
/// users, so only the client's share and the shared budget apply): 50 parallel pushes with a
/// share of 20 admit exactly 20; the others get 429 `temporarily_unavailable` with a description.
async fn fifty_parallel_pushed_requests_of_one_client_admit_exactly_its_share(storage: Storage) {
    let Some((env, auth)) = server(storage, |c| {
        c.limits.anonymous_per_address = 0;
        c.limits.anonymous_per_client = 20;
    })
    .await
    else {
        return;
    };
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(FLOOD));
    let mut pushes = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let (barrier, auth, url) = (barrier.clone(), auth.clone(), env.url("/par"));
        pushes.spawn(async move {
            let challenge = pkce_pair().1;
            let fields = [
                ("response_type", "code"),
                ("client_id", CLIENT),
                ("redirect_uri", CALLBACK),
                ("scope", "openid profile"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ];
            barrier.wait().await;
            post_form(&backchannel_http(), &url, &auth, &fields).await
        });
    }
    let mut created = 0;
    let mut refused = 0;
    while let Some(answer) = pushes.join_next().await {
        let answer = answer.unwrap();
        match answer.status {
            201 => created += 1,
            429 => {
                assert_eq!(answer.error(), "temporarily_unavailable", "{:?}", answer.body);
                assert!(answer.body["error_description"].as_str().is_some_and(|d| d.contains("wait a minute")));
                refused += 1;
            }
            other => panic!("unexpected {other}: {:?}", answer.body),
        }
    }
    assert_eq!((created, refused), (20, FLOOD - 20));
}

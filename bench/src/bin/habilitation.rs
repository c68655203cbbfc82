//! Habilitation benchmark helper, run against the database of a server started by
//! `bench/habilitations.sh` (same HABILIS_* environment):
//!
//! habilitation inprocess PROFESSIONALS SAMPLES
//!     evaluates SAMPLES random `patient_access` requests in process (relationship lookups in the
//!     database + Cedar) and prints latency percentiles, then the Cedar evaluation alone.
//! habilitation subject_tokens
//!     prints two access tokens of professional #1 (issued to client `bench`): one plain, one
//!     carrying two `patient_access` details — the subject tokens of the token-exchange load.
//! habilitation refresh BASE_URL CLIENT_SECRET WORKERS SECONDS [details]
//!     refresh-token rotation load for professional #1 (one token family per worker, stored
//!     directly), grants without or with two `patient_access` details: token issuance with
//!     details against a plain one on the same grant type.
//!
//! The generated data (see habilitations.sh): professional i (login 8 + i padded to 11 digits) has
//! `treating` relationships with patients (i * 7 + k) mod N for k in 0..10.

use std::time::Instant;

use habilis_idp::habilitation::patient::{Ins, OID_NIR, PatientRef};
use habilis_idp::habilitation::rar::{PatientAccess, TYPE_PATIENT_ACCESS};

fn professional_login(i: u64) -> String {
    format!("8{i:011}")
}

/// The NIR of generated patient j: 13 digits from j, then its key.
fn patient_ins(j: u64) -> String {
    habilis_idp::habilitation::patient::with_nir_key(&format!("1{:012}", j))
}

fn request(patient: u64, action: &str) -> PatientAccess {
    PatientAccess {
        kind: TYPE_PATIENT_ACCESS.to_string(),
        patient: PatientRef::Ins { ins: Ins { value: patient_ins(patient), oid: OID_NIR.to_string() } },
        actions: vec![action.to_string()],
        datatypes: Vec::new(),
        relationship: None,
        purpose: None,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut micros: Vec<f64>) {
    micros.sort_by(|a, b| a.total_cmp(b));
    let mean = micros.iter().sum::<f64>() / micros.len() as f64;
    println!(
        "{what}: {} samples, mean {mean:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        micros.len(),
        percentile(&micros, 0.5),
        percentile(&micros, 0.99),
        micros.last().copied().unwrap_or(0.0)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config = habilis_idp::config::Config::load_from_process(None).expect("the HABILIS_* configuration");
    let state = habilis_idp::app::build_state(config).await.expect("the state");
    match args.get(1).map(String::as_str) {
        Some("inprocess") => {
            let n: u64 = args.get(2).and_then(|a| a.parse().ok()).expect("PROFESSIONALS");
            let samples: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20_000);
            let mut rng_state: u64 = 0x9e3779b97f4a7c15;
            let mut next = move || {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                rng_state
            };
            let mut accounts = Vec::new();
            for _ in 0..200 {
                let i = next() % n;
                let account = state.store.account_by_login(&professional_login(i)).await.unwrap().expect("generated");
                accounts.push((i, account));
            }
            let mut micros = Vec::with_capacity(samples);
            let (mut granted, mut denied) = (0, 0);
            for s in 0..samples {
                let (i, account) = &accounts[s % accounts.len()];
                // Half the requests name a patient of the professional, half another one.
                let patient = if s % 2 == 0 { (i * 7 + next() % 10) % n } else { next() % n };
                let detail = request(patient, "read");
                let started = Instant::now();
                let outcome = state
                    .habilitations
                    .evaluate(&state.store, &detail, account, "bench", Some("eidas1"), habilis_idp::unix_now())
                    .await;
                micros.push(started.elapsed().as_secs_f64() * 1e6);
                if outcome.is_ok() { granted += 1 } else { denied += 1 }
            }
            report(&format!("in-process decision (lookups + Cedar; {granted} granted, {denied} denied)"), micros);
            let compiled = state.habilitations.compiled();
            let facts = habilis_bench::treating_relationship("r", "active");
            let context = habilis_bench::bench_context(false);
            let mut cedar = Vec::with_capacity(samples);
            for _ in 0..samples {
                let started = Instant::now();
                let decision = compiled.evaluate("bench-treating", "read", &facts, &context);
                cedar.push(started.elapsed().as_secs_f64() * 1e6);
                assert!(decision.allowed, "{decision:?}");
            }
            report("Cedar evaluation alone", cedar);
        }
        Some("subject_tokens") => {
            let account = state.store.account_by_login(&professional_login(1)).await.unwrap().expect("professional 1");
            let now = habilis_idp::unix_now();
            let auth = habilis_idp::oidc::tokens::AuthContext {
                auth_time: now,
                acr: Some("eidas1".into()),
                amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
                sid: None,
            };
            let mut details = Vec::new();
            for k in 0..2 {
                let detail = request(7 + k, "read");
                let granted = state
                    .habilitations
                    .evaluate(&state.store, &detail, &account, "bench", Some("eidas1"), now)
                    .await
                    .expect("professional 1 treats patients 7 and 8");
                details.push(granted);
            }
            for with in [None, Some(details)] {
                let minted = habilis_idp::oidc::tokens::mint_access_token(
                    &state,
                    habilis_idp::oidc::tokens::AccessTokenRequest {
                        client_id: "bench",
                        subject: &account.id,
                        account_id: Some(&account.id),
                        scope: "openid",
                        audience: vec!["bench".into()],
                        auth: Some(&auth),
                        grant_id: None,
                        lifetime: 3600,
                        certificate_thumbprint: None,
                        authorization_details: with,
                        act: None,
                    },
                    now,
                )
                .expect("a token");
                println!("{}", minted.token);
            }
        }
        Some("refresh") => {
            let base = args.get(2).expect("BASE_URL").clone();
            let secret = args.get(3).expect("CLIENT_SECRET").clone();
            let workers: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(32);
            let seconds: u64 = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(10);
            let with_details = args.get(6).is_some_and(|a| a == "details");
            refresh_load(&state, base, secret, workers, seconds, with_details).await;
        }
        _ => {
            eprintln!("usage: habilitation inprocess PROFESSIONALS [SAMPLES] | subject_tokens | refresh …");
            std::process::exit(2);
        }
    }
}

/// Creates one refresh-token family per worker for professional #1, then rotates them for
/// `seconds` from `workers` concurrent loops; prints requests/s.
async fn refresh_load(
    state: &habilis_idp::app::AppState,
    base: String,
    secret: String,
    workers: usize,
    seconds: u64,
    with_details: bool,
) {
    let account = state.store.account_by_login(&professional_login(1)).await.unwrap().expect("professional 1");
    let now = habilis_idp::unix_now();
    let mut details = Vec::new();
    if with_details {
        for k in 0..2 {
            let granted = state
                .habilitations
                .evaluate(&state.store, &request(7 + k, "read"), &account, "bench", Some("eidas1"), now)
                .await
                .expect("professional 1 treats patients 7 and 8");
            details.push(granted);
        }
    }
    let context = habilis_idp::oidc::token::GrantContext {
        auth: habilis_idp::oidc::tokens::AuthContext {
            auth_time: now,
            acr: Some("eidas1".into()),
            amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
            sid: None,
        },
        claims: None,
        resource: Vec::new(),
        authorization_details: details,
    };
    let mut tokens = Vec::new();
    for _ in 0..workers {
        let grant = habilis_idp::store::Grant {
            id: uuid::Uuid::new_v4().to_string(),
            account_id: account.id.clone(),
            client_id: "bench".into(),
            session_id: None,
            scope: "openid offline_access".into(),
            claims: serde_json::to_string(&context).unwrap(),
            auth_time: now,
            created_at: now,
            expires_at: now + 86_400,
            revoked_at: None,
        };
        state.store.insert_grant(&grant).await.unwrap();
        let value = habilis_idp::cli::random_token();
        let token = habilis_idp::store::RefreshToken {
            token_hash: habilis_idp::cli::sha256_hex(&value),
            grant_id: grant.id.clone(),
            created_at: now,
            expires_at: now + 3600,
            used_at: None,
        };
        state.store.insert_refresh_token(&token).await.unwrap();
        tokens.push(value);
    }
    let http = reqwest::Client::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut token in tokens {
        let (http, base, secret) = (http.clone(), base.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let response = http
                    .post(format!("{base}/token"))
                    .basic_auth("bench", Some(&secret))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", token.as_str())])
                    .send()
                    .await
                    .expect("the token endpoint answers");
                let body: serde_json::Value = response.json().await.expect("JSON");
                token = body["refresh_token"].as_str().unwrap_or_else(|| panic!("a rotated token: {body}")).to_string();
                if with_details {
                    assert_eq!(body["authorization_details"].as_array().map(Vec::len), Some(2), "{body}");
                }
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "refresh rotation ({}): {:.0} req/s ({total} in {elapsed:.1} s, {workers} workers)",
        if with_details { "two patient_access details" } else { "plain" },
        total as f64 / elapsed
    );
}

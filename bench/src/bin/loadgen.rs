//! A small load generator for the flows wrk cannot script: refresh-token rotation (every request
//! needs the token the previous one returned) and complete authorization-code flows (authorize →
//! login form → resume → token). Loopback only; bounded in time; prints requests/s and latency
//! percentiles.
//!
//! loadgen SCENARIO BASE_URL CLIENT_ID CLIENT_SECRET LOGIN PASSWORD [CONNECTIONS] [SECONDS]
//! LOGIN may contain `{}`, replaced by the worker number (one account per worker). With a second
//! factor, OUTBOX names the server's mail outbox, where the email codes are read.
//! SCENARIO: refresh | code_flow | print_access_token (one flow, prints the access token)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest;

const REDIRECT_URI: &str = "http://127.0.0.1:9/cb";

struct Target {
    base: String,
    client_id: String,
    secret: String,
    /// `{}` in the login is replaced by the worker number (one account per worker).
    login: String,
    password: String,
    /// The server's mail outbox (embedded mode): where the email codes are read from.
    outbox: Option<std::path::PathBuf>,
}

/// Waits for the email code sent to `recipient` in the outbox, and deletes the message.
async fn email_code(outbox: &std::path::Path, recipient: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(entries) = std::fs::read_dir(outbox) {
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                let text = text.replace('\r', "");
                let to_me = text.lines().any(|l| l.starts_with("To:") && l.contains(recipient));
                if !to_me {
                    continue;
                }
                let code = text.lines().map(str::trim).find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()));
                if let Some(code) = code {
                    let _ = std::fs::remove_file(&path);
                    return Ok(code.to_string());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(format!("no email code for {recipient}"))
}

fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

fn location(r: &reqwest::Response) -> Option<String> {
    r.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// One complete code flow with a fresh browser; returns the token response.
async fn code_flow(t: &Target, api: &reqwest::Client, worker: usize) -> Result<serde_json::Value, String> {
    let login = t.login.replace("{}", &worker.to_string());
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier: String = (0..43).map(|_| (b'a' + rand::random::<u8>() % 26) as char).collect();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let authorize = format!(
        "{}/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid%20offline_access&state=s&code_challenge={challenge}&code_challenge_method=S256",
        t.base,
        t.client_id,
        urlencode(REDIRECT_URI)
    );
    let r = browser.get(&authorize).send().await.map_err(|e| e.to_string())?;
    let login_url = format!("{}{}", t.base, location(&r).ok_or("no redirect to login")?);
    let page =
        browser.get(&login_url).send().await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
    let interaction = hidden(&page, "interaction").ok_or("no interaction")?;
    let csrf = hidden(&page, "csrf").ok_or("no csrf")?;
    let r = browser
        .post(format!("{}/login", t.base))
        .form(&[
            ("interaction", interaction.as_str()),
            ("csrf", csrf.as_str()),
            ("login", login.as_str()),
            ("password", t.password.as_str()),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let mut next = location(&r).ok_or("login failed")?;
    if next.starts_with("/login?") {
        // Second factor by email: the page sends the code, read back from the outbox.
        let _ = browser.get(format!("{}{next}", t.base)).send().await.map_err(|e| e.to_string())?;
        let outbox = t.outbox.as_deref().ok_or("a second factor is required: pass the outbox directory")?;
        let code = email_code(outbox, &login).await?;
        let r = browser
            .post(format!("{}/login/code", t.base))
            .form(&[
                ("interaction", interaction.as_str()),
                ("csrf", csrf.as_str()),
                ("method", "email"),
                ("code", code.as_str()),
            ])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        next = location(&r).ok_or("second factor refused")?;
        if next.starts_with("/login/totp") {
            let r = browser
                .post(format!("{}/login/totp", t.base))
                .form(&[("interaction", interaction.as_str()), ("csrf", csrf.as_str()), ("decision", "later")])
                .send()
                .await
                .map_err(|e| e.to_string())?;
            next = location(&r).ok_or("enrolment offer not skipped")?;
        }
    }
    let resume = format!("{}{next}", t.base);
    let r = browser.get(&resume).send().await.map_err(|e| e.to_string())?;
    let callback = location(&r).ok_or("no code")?;
    let code = callback.split("code=").nth(1).and_then(|s| s.split('&').next()).ok_or("no code")?.to_string();
    let tokens: serde_json::Value = api
        .post(format!("{}/token", t.base))
        .basic_auth(&t.client_id, Some(&t.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if tokens["refresh_token"].is_string() { Ok(tokens) } else { Err(format!("no refresh token: {tokens}")) }
}

async fn refresh(t: &Target, api: &reqwest::Client, token: &str) -> Result<String, String> {
    let tokens: serde_json::Value = api
        .post(format!("{}/token", t.base))
        .basic_auth(&t.client_id, Some(&t.secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    tokens["refresh_token"].as_str().map(str::to_string).ok_or_else(|| format!("refresh failed: {tokens}"))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!(
            "usage: loadgen refresh|code_flow BASE_URL CLIENT_ID CLIENT_SECRET LOGIN PASSWORD [CONNECTIONS] [SECONDS]"
        );
        std::process::exit(2);
    }
    let scenario = args[1].clone();
    let target = Arc::new(Target {
        base: args[2].clone(),
        client_id: args[3].clone(),
        secret: args[4].clone(),
        login: args[5].clone(),
        password: args[6].clone(),
        outbox: std::env::var_os("OUTBOX").map(std::path::PathBuf::from),
    });
    let connections: usize = args.get(7).and_then(|v| v.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.get(8).and_then(|v| v.parse().ok()).unwrap_or(10);
    let api = reqwest::Client::builder().pool_max_idle_per_host(connections).build().expect("client");
    if scenario == "print_access_token" {
        let first: usize = std::env::var("FIRST_ACCOUNT").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let tokens = code_flow(&target, &api, first).await.expect("code flow");
        println!("{}", tokens["access_token"].as_str().unwrap_or_default());
        return;
    }

    // Refresh: each worker first gets its own token family (not measured).
    let mut seeds = Vec::new();
    if scenario == "refresh" {
        for i in 0..connections {
            let tokens = code_flow(&target, &api, i).await.expect("setup code flow");
            seeds.push(tokens["refresh_token"].as_str().unwrap_or_default().to_string());
        }
    }
    // Code flows each use a fresh account (the email-code throttle allows one code a minute per
    // account): accounts are numbered from FIRST_ACCOUNT (default: after the refresh workers').
    let next_account = Arc::new(std::sync::atomic::AtomicUsize::new(
        std::env::var("FIRST_ACCOUNT").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..connections {
        let (target, api, stop, next_account) = (target.clone(), api.clone(), stop.clone(), next_account.clone());
        let scenario = scenario.clone();
        let mut token = seeds.get(i).cloned().unwrap_or_default();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let result = match scenario.as_str() {
                    "refresh" => refresh(&target, &api, &token).await.map(|t| token = t),
                    _ => code_flow(&target, &api, next_account.fetch_add(1, Ordering::Relaxed)).await.map(|_| ()),
                };
                match result {
                    Ok(()) => latencies.push(t0.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if errors < 3 {
                            eprintln!("error: {e}");
                        }
                        if scenario == "refresh" {
                            break;
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.expect("worker");
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    println!(
        "{scenario}: {} ok, {errors} errors in {elapsed:.1} s = {:.0}/s; latency p50 {:?} p99 {:?} ({connections} connections)",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

//! Black-box test of the security alerts: a failed-login spike against the real login page fires
//! `failed_login_spike` to a test webhook (signed body), by email through a real SMTP sink, in the
//! audit log (`alert_raised`) and in the Prometheus metrics; the cooldown keeps a continuing spike
//! from firing again. Alerts depend on no storage (the rules run in memory over audit events), so
//! one server on the embedded storage is enough.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use habilis_e2e::smtp_sink::SmtpSink;
use habilis_e2e::{Storage, TestEnv, authorize_query, backchannel_http, first_party_client_metadata, pkce_pair};
use habilis_idp::audit::AuditEvent;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const CLIENT: &str = "rp-alerts";
const CALLBACK: &str = "http://127.0.0.1:9/cb";
const SECRET: &str = "a webhook secret of some length";
const SECURITY: &str = "security@example.org";
const THRESHOLD: usize = 4;

/// A webhook receiver: every POST's signature header and body.
async fn webhook() -> (String, mpsc::UnboundedReceiver<(Option<String>, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let signature =
                    headers.get(habilis_idp::alerts::SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let _ = tx.send((signature, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the webhook");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), rx)
}

/// One wrong password on the login page of a fresh authorization request; returns the status.
async fn fail_once(env: &TestEnv, login: &str) -> u16 {
    let browser = env.browser();
    let (_, challenge) = pkce_pair();
    let query = authorize_query(
        &[
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", CALLBACK),
            ("scope", "openid"),
            ("state", "s"),
            ("nonce", "n"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
        &[],
    );
    let landing = browser.navigate(&format!("/authorize?{query}")).await;
    let (_, status, _) = browser.log_in(landing, login, "not the password").await.page();
    status
}

async fn metric(env: &TestEnv, line_start: &str) -> Option<String> {
    let text = backchannel_http().get(env.url("/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find(|l| l.starts_with(line_start)).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_login_spike_alerts_the_webhook_and_by_mail() {
    let sink = SmtpSink::start().await;
    let (hook_url, mut hook) = webhook().await;
    let smtp_url = sink.url();
    let Some(env) = TestEnv::start_with(Storage::Embedded, |config| {
        config.mail.smtp_url = Some(url::Url::parse(&smtp_url).unwrap());
        config.mail.from = "habilis@example.org".into();
        config.alerts.enabled = true;
        config.alerts.failed_login_threshold = THRESHOLD as u32;
        config.alerts.failed_login_window = Duration::from_secs(300);
        // One address failing for many accounts is another rule: kept out of this test's way.
        config.alerts.address_accounts_threshold = 0;
        config.alerts.webhook_url = Some(url::Url::parse(&hook_url).unwrap());
        config.alerts.webhook_secret = Some(SECRET.into());
        config.alerts.email_to = vec![SECURITY.into()];
        config.alerts.instance = Some("habilis-test".into());
    })
    .await
    else {
        return;
    };
    env.register_client(CLIENT, &first_party_client_metadata(CALLBACK, "openid", json!({}))).await;
    env.add_professional("899700427885", "Kit", "Martin", "correct horse battery staple").await;
    // A wrong password for the professional, then unknown login names (each login name failing
    // again would wait the progressive delay, and be locked out: not what a spike looks like).
    let mut logins = std::iter::once("899700427885".to_string()).chain((1..).map(|i| format!("nobody{i}@example.org")));
    let mut audit = env.state().audit.subscribe();

    // Below the threshold: nothing fires.
    for _ in 0..THRESHOLD - 1 {
        assert_eq!(fail_once(&env, &logins.next().unwrap()).await, 401);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), hook.recv()).await.is_err(),
        "no alert below the threshold"
    );

    // The threshold-th failure fires, once.
    assert_eq!(fail_once(&env, &logins.next().unwrap()).await, 401);
    let (signature, body) = tokio::time::timeout(Duration::from_secs(15), hook.recv())
        .await
        .expect("the webhook receives the alert")
        .expect("the receiver is running");
    assert_eq!(
        signature.as_deref(),
        Some(habilis_idp::alerts::signature(SECRET, &body).as_str()),
        "the body is signed with the webhook secret"
    );
    let alert: Value = serde_json::from_slice(&body).expect("a JSON alert");
    assert_eq!(alert["rule"], "failed_login_spike", "{alert}");
    assert_eq!(alert["severity"], "warning", "{alert}");
    assert_eq!(alert["instance"], "habilis-test", "{alert}");
    assert_eq!(alert["details"]["count"], THRESHOLD, "{alert}");
    assert!(alert["time"].as_str().is_some_and(|t| t.ends_with('Z')), "RFC 3339 time: {alert}");

    let mail = sink.wait_for(SECURITY, Duration::from_secs(15)).await.expect("the alert mail");
    let subject = mail.subject().unwrap_or_default();
    assert!(subject.contains("failed_login_spike"), "{subject}");
    assert!(mail.text_body().unwrap_or_default().contains("habilis-test"));

    // Audited and counted.
    let raised = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match audit.recv().await {
                Ok(record) => {
                    if let AuditEvent::AlertRaised { rule, .. } = &record.event {
                        break rule.clone();
                    }
                }
                Err(e) => panic!("audit stream ended: {e}"),
            }
        }
    })
    .await
    .expect("alert_raised is audited");
    assert_eq!(raised, "failed_login_spike");
    assert_eq!(
        metric(&env, "habilis_alerts_total{rule=\"failed_login_spike\"}").await.as_deref(),
        Some("habilis_alerts_total{rule=\"failed_login_spike\"} 1")
    );

    // The spike goes on: within the cooldown, no second alert.
    for _ in 0..THRESHOLD {
        assert_eq!(fail_once(&env, &logins.next().unwrap()).await, 401);
    }
    assert!(tokio::time::timeout(Duration::from_secs(1), hook.recv()).await.is_err(), "one alert per cooldown");
    assert_eq!(
        metric(&env, "habilis_alerts_total{rule=\"failed_login_spike\"}").await.as_deref(),
        Some("habilis_alerts_total{rule=\"failed_login_spike\"} 1")
    );
    env.stop().await;
}

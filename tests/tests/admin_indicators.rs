//! The admin dashboard's security indicators (`GET /api/admin/v1/indicators`, issue 9), on SQLite
//! with the memory store and on PostgreSQL with Redis: events recorded by the server's audit writer
//! now, and older records in the durable log, are counted in their hour; platform administrators and
//! auditors read the indicators, organisation administrators are refused (403, audited); the window
//! is checked.

use habilis_e2e::admin::{AdminEnv, refused};
use habilis_e2e::{Storage, drain_audit};
use habilis_idp::audit::{AuditContext, AuditEvent};
use habilis_idp::store::NewAuditRecord;
use reqwest::Method;
use serde_json::Value;

habilis_e2e::on_both_storages!(
    recorded_events_are_counted_per_hour,
    platform_administrators_and_auditors_only,
    the_window_is_checked,
);

const HOUR: i64 = 3600;

/// The counts of one series, oldest hour first.
fn counts(body: &Value, series: &str) -> Vec<i64> {
    body["series"][series]["hours"]
        .as_array()
        .unwrap_or_else(|| panic!("series {series} in {body}"))
        .iter()
        .map(|h| h["count"].as_i64().expect("a count"))
        .collect()
}

fn total(body: &Value, series: &str) -> i64 {
    body["series"][series]["total"].as_i64().unwrap_or_else(|| panic!("total of {series} in {body}"))
}

/// A record of the durable log written `hours_ago` hours before `now`, as the writer stores it.
fn past_record(now: i64, hours_ago: i64, event: &str, details: &str) -> NewAuditRecord {
    NewAuditRecord {
        time: (now / HOUR - hours_ago) * HOUR + 60,
        event: event.into(),
        outcome: "failure".into(),
        client_id: None,
        request_id: None,
        acr: None,
        actor: None,
        subject: None,
        ip: Some("192.0.2.9".into()),
        user_agent: None,
        details: details.into(),
    }
}

async fn recorded_events_are_counted_per_hour(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let state = ae.env.state();
    let failed = |factor: &str, reason: &str| AuditEvent::LoginFailed {
        account_id: Some(ae.bob_id.clone()),
        login_hash: None,
        factor: factor.into(),
        reason: reason.into(),
    };
    let context = || AuditContext { ip: Some("192.0.2.7".into()), ..Default::default() };
    let started = habilis_idp::unix_now();
    // This hour: two wrong passwords, one wrong code, a refused card, a lockout, one complete
    // two-factor login (its password step is no login of its own), a passkey login and an alert.
    for event in [
        failed("password", "bad_password"),
        failed("password", "bad_password"),
        failed("totp", "bad_code"),
        AuditEvent::CardLoginRefused { reason: "revoked".into(), id_nat: None, fingerprint: None, subject: None },
        AuditEvent::LockedOut {
            account_id: Some(ae.bob_id.clone()),
            login_hash: None,
            factor: "totp".into(),
            until: 0,
        },
        AuditEvent::LoginSucceeded { account_id: ae.alice_id.clone(), factor: "password".into() },
        AuditEvent::LoginSucceeded { account_id: ae.alice_id.clone(), factor: "email_otp".into() },
        AuditEvent::WebauthnLoginSucceeded { account_id: ae.alice_id.clone(), credential_id: "cred".into() },
        AuditEvent::AlertRaised {
            rule: "failed_logins".into(),
            severity: "warning".into(),
            summary: "many failures".into(),
            details: "{}".into(),
        },
        AuditEvent::AuthorizationCodeReplayed { grant_id: "not counted".into() },
    ] {
        state.audit.record(event, context());
    }
    state.audit.flush().await;
    // Earlier activity, already in the durable log: two and five hours ago, and out of the window.
    let code = r#"{"account_id":null,"factor":"email_otp","login_hash":"abc","reason":"expired_code"}"#;
    let password = r#"{"account_id":null,"factor":"password","login_hash":"abc","reason":"bad_password"}"#;
    state
        .store
        .audit()
        .append(&[
            past_record(started, 2, "login_failed", code),
            past_record(started, 2, "login_failed", password),
            past_record(started, 5, "locked_out", r#"{"factor":"password","until":0}"#),
            past_record(started, 30, "login_failed", password),
        ])
        .await
        .expect("older records");

    let answer = ae.call(Method::GET, "/indicators?hours=6", &ae.platform, None).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = &answer.body;
    let now = body["now"].as_i64().expect("now");
    assert_eq!(body["hours"], 6);
    assert_eq!(body["since"].as_i64(), Some((now / HOUR - 5) * HOUR), "the window ends with the current hour");
    let starts: Vec<i64> =
        body["series"]["lockouts"]["hours"].as_array().unwrap().iter().map(|h| h["start"].as_i64().unwrap()).collect();
    assert_eq!(starts, (0..6).map(|i| (now / HOUR - 5 + i) * HOUR).collect::<Vec<_>>());
    if started / HOUR == now / HOUR {
        // Hour by hour (unless the hour turned during the test: then the totals below suffice).
        assert_eq!(counts(body, "failed_logins"), vec![0, 0, 0, 2, 0, 4]);
        assert_eq!(counts(body, "code_failures"), vec![0, 0, 0, 1, 0, 1]);
        assert_eq!(counts(body, "lockouts"), vec![1, 0, 0, 0, 0, 1]);
        assert_eq!(counts(body, "successful_logins"), vec![0, 0, 0, 0, 0, 2]);
        assert_eq!(counts(body, "alerts"), vec![0, 0, 0, 0, 0, 1]);
    }
    let totals: Vec<i64> = ["failed_logins", "code_failures", "lockouts", "successful_logins", "alerts"]
        .iter()
        .map(|s| total(body, s))
        .collect();
    assert_eq!(totals, vec![6, 2, 2, 2, 1], "{body}");

    // The default window is a day: the record of 30 hours ago is outside it, not a week's.
    let day = ae.call(Method::GET, "/indicators", &ae.auditor, None).await;
    assert_eq!(day.status, 200, "{:?}", day.body);
    assert_eq!((day.body["hours"].as_i64(), counts(&day.body, "failed_logins").len()), (Some(24), 24));
    assert_eq!(total(&day.body, "failed_logins"), 6);
    let week = ae.call(Method::GET, "/indicators?hours=168", &ae.platform, None).await;
    assert_eq!(total(&week.body, "failed_logins"), 7, "the week holds the record of 30 hours ago");

    // Current values: the signing keys in use, the revocation lists, the writer's backlog.
    let keys = body["signing_keys"].as_array().expect("signing_keys");
    assert!(!keys.is_empty(), "a key signs: {body}");
    for key in keys {
        assert!(key["kid"].is_string() && key["alg"].is_string(), "{key}");
        let age = key["age_seconds"].as_i64().expect("an age");
        assert_eq!(age, now - key["created_at"].as_i64().unwrap(), "{key}");
    }
    let lists = body["revocation_lists"].as_array().expect("revocation_lists");
    if body["card_login"] == false {
        assert!(lists.is_empty(), "no card login, no revocation list: {body}");
    }
    for list in lists {
        assert!(list["source"].is_string() && list["age_seconds"].as_i64().is_some_and(|a| a >= 0), "{list}");
    }
    assert!(body["audit_backlog"].as_u64().is_some(), "{body}");
}

async fn platform_administrators_and_auditors_only(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut events = ae.env.state().audit.subscribe();
    for token in [&ae.platform, &ae.auditor] {
        let answer = ae.call(Method::GET, "/indicators", token, None).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    let answer = ae.call(Method::GET, "/indicators", &ae.alice, None).await;
    refused(&answer, 403, "access_denied", "platform-wide");
    let denied = habilis_e2e::admin::denials(&drain_audit(&mut events));
    assert_eq!(denied, vec![(format!("account:{}", ae.alice_id), "read".to_string(), Vec::new())], "audited");
    let anonymous = ae.http.get(ae.env.url("/api/admin/v1/indicators")).send().await.expect("an answer");
    assert_eq!(anonymous.status(), 401, "a bearer token is required");
}

async fn the_window_is_checked(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    for bad in ["hours=0", "hours=169", "hours=-1", "hours=abc", "hours=24&since=0"] {
        let answer = ae.call(Method::GET, &format!("/indicators?{bad}"), &ae.platform, None).await;
        assert_eq!((answer.status, answer.error()), (400, "invalid_request"), "{bad}: {:?}", answer.body);
    }
    let one = ae.call(Method::GET, "/indicators?hours=1", &ae.platform, None).await;
    assert_eq!(one.status, 200, "{:?}", one.body);
    assert_eq!(counts(&one.body, "alerts").len(), 1);
}

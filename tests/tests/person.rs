//! A person's data: `habilis person export|erase` (the real binary on a server's database) and the
//! admin API's `/accounts/{id}/export` and `/accounts/{id}/erase`, on both storages.

use habilis_e2e::admin::{AdminEnv, denials, refused};
use habilis_e2e::{Storage, TestEnv, drain_audit, enrol_totp, on_both_storages, run_habilis};
use habilis_idp::audit::{AuditContext, AuditEvent};
use habilis_idp::store::Membership;
use reqwest::Method;

const PASSWORD: &str = "correct horse battery staple 42";
const SECTIONS: [&str; 12] = [
    "account",
    "factors",
    "passkeys",
    "consents",
    "grants",
    "organisations",
    "roles",
    "practice",
    "relationships",
    "patients",
    "inactivity",
    "audit",
];

on_both_storages!(cli_export_and_erase, admin_api_export_and_erase);

/// The environment of a `habilis` command working on the server's data.
fn cli_env(env: &TestEnv) -> Vec<(String, String)> {
    let config = &env.state().config;
    let mut vars = vec![
        ("HABILIS_DATA_DIR".to_string(), config.data_dir.display().to_string()),
        ("HABILIS_SERVER__ISSUER".into(), env.base_url.clone()),
        ("HABILIS_CARD__MODE".into(), "off".into()),
        ("HABILIS_ADMIN_CONSOLE__ENABLED".into(), "false".into()),
    ];
    if let Some(url) = &config.storage.database_url {
        vars.push(("HABILIS_STORAGE__DATABASE_URL".into(), url.clone()));
    }
    if let Some(url) = &config.storage.redis_url {
        vars.push(("HABILIS_STORAGE__REDIS_URL".into(), url.clone()));
        vars.push(("HABILIS_STORAGE__REDIS_PREFIX".into(), config.storage.redis_prefix.clone()));
    }
    vars
}

async fn habilis(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let vars = cli_env(env);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_habilis(&args, &vars, None)
    })
    .await
    .expect("the command ran")
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "habilis failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// The password hash and TOTP secret of the account, as stored: what an export must not contain.
async fn secrets_of(env: &TestEnv, account_id: &str) -> Vec<String> {
    let store = &env.state().store;
    let mut secrets = Vec::new();
    for kind in ["password", "totp"] {
        for credential in store.credentials_of(account_id, kind).await.unwrap() {
            secrets.push(String::from_utf8_lossy(&credential.secret).to_string());
            secrets.push(hex_of(&credential.secret));
        }
    }
    assert!(secrets.iter().any(|s| s.starts_with("$argon2")), "the password hash is known");
    secrets
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_no_secret(json: &serde_json::Value, secrets: &[String]) {
    let text = json.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 16) {
        assert!(!text.contains(secret.as_str()), "a secret leaked into the export");
    }
    assert!(!text.contains("$argon2"), "a password hash leaked into the export");
}

/// A login of the person, recorded in the durable audit log with their address and user agent.
async fn audited_login(env: &TestEnv, account_id: &str) {
    let context = AuditContext {
        ip: Some("192.0.2.44".into()),
        user_agent: Some("Camille's browser".into()),
        ..Default::default()
    };
    env.state()
        .audit
        .record(AuditEvent::LoginSucceeded { account_id: account_id.to_string(), factor: "password".into() }, context);
    env.state().audit.flush().await;
}

/// After an erasure: no record names the person any more, their records carry the pseudonym with
/// the personal fields cleared, and the chain still verifies (`habilis audit verify`).
async fn assert_pseudonymised(env: &TestEnv, account_id: &str, pseudonym: &str) {
    env.state().audit.flush().await;
    let log = env.state().store.audit();
    assert!(log.records_about(account_id).await.unwrap().is_empty(), "a record still names the person");
    let records = log.records_about(pseudonym).await.unwrap();
    let login = records.iter().find(|r| r.event == "login_succeeded").expect("the login, pseudonymised");
    assert!(login.pseudonymised_at.is_some(), "{login:?}");
    assert_eq!(login.subject.as_deref(), Some(pseudonym));
    assert_eq!((login.ip.as_deref(), login.user_agent.as_deref()), (None, None), "{login:?}");
    assert!(!login.details.contains(account_id), "{}", login.details);
    let verify = habilis(env, &["audit", "verify"]).await;
    assert!(
        verify.status.success(),
        "the chain verifies after the erasure:\n{}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// The export's audit section holds the person's login, with its address.
fn assert_exported_login(export: &serde_json::Value) {
    let audit = export["audit"].as_array().expect("an audit section");
    assert!(
        audit.iter().any(|r| r["event"] == "login_succeeded" && r["ip"] == "192.0.2.44"),
        "the login is in the export: {audit:?}"
    );
}

async fn cli_export_and_erase(storage: Storage) {
    let Some(env) = TestEnv::start_with(storage, |c| c.lifecycle.enabled = false).await else { return };
    let id = env.add_professional("899700427885", "Camille", "Durand", PASSWORD).await;
    enrol_totp(&env, &id, "Camille").await;
    let secrets = secrets_of(&env, &id).await;
    audited_login(&env, &id).await;

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&habilis(&env, &["person", "export", "899700427885"]).await)).expect("JSON");
    for section in SECTIONS {
        assert!(json.get(section).is_some(), "no {section} in {json}");
    }
    assert_eq!(json["account"]["id"], id.as_str());
    let kinds: Vec<&str> = json["factors"].as_array().unwrap().iter().filter_map(|f| f["kind"].as_str()).collect();
    assert!(kinds.contains(&"password") && kinds.contains(&"totp"), "{kinds:?}");
    assert_no_secret(&json, &secrets);
    assert_exported_login(&json);

    // Erasure asks for confirmation; without a terminal it needs --yes.
    let unconfirmed = habilis(&env, &["person", "erase", &id]).await;
    assert!(!unconfirmed.status.success());
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"), "{unconfirmed:?}");
    assert!(env.state().store.account_by_id(&id).await.unwrap().is_some(), "nothing erased without confirmation");

    let out = stdout(&habilis(&env, &["person", "erase", &id, "--yes"]).await);
    assert!(out.contains("erased"), "{out}");
    let pseudonym = out.split_whitespace().find(|w| w.starts_with("pseudonym:")).expect("the pseudonym").to_string();
    assert!(env.state().store.account_by_id(&id).await.unwrap().is_none(), "the account is gone");
    assert!(env.state().store.credentials_of(&id, "totp").await.unwrap().is_empty(), "its factors too");
    let again = habilis(&env, &["person", "export", &id]).await;
    assert!(!again.status.success(), "an erased person has nothing to export");

    assert!(pseudonym.starts_with("pseudonym:"), "{pseudonym}");
    assert_pseudonymised(&env, &id, &pseudonym).await;
}

async fn admin_api_export_and_erase(storage: Storage) {
    let Some(ae) = AdminEnv::start_with(storage, |c| c.lifecycle.enabled = false).await else { return };
    let state = ae.env.state();
    let id = ae.env.add_professional("899700427885", "Camille", "Durand", PASSWORD).await;
    let membership = Membership {
        account_id: id.clone(),
        organisation_id: ae.org_a.clone(),
        department_id: None,
        created_at: habilis_idp::unix_now(),
    };
    state.store.admin().upsert_membership(&membership).await.unwrap();
    let secrets = secrets_of(&ae.env, &id).await;
    audited_login(&ae.env, &id).await;
    let export = format!("/accounts/{id}/export");
    let erase = format!("/accounts/{id}/erase");
    let mut audit = state.audit.subscribe();

    // Only platform administrators: not the account's organisation administrator, nor an auditor.
    for token in [&ae.alice, &ae.auditor] {
        let answer = ae.call(Method::GET, &export, token, None).await;
        refused(&answer, 403, "access_denied", "only platform administrators");
        let answer = ae.call(Method::POST, &erase, token, None).await;
        refused(&answer, 403, "access_denied", "only platform administrators");
    }
    let denied = denials(&drain_audit(&mut audit));
    assert_eq!(denied.len(), 4, "each refusal is audited: {denied:?}");
    assert!(denied.iter().all(|(_, operation, _)| operation == "administer"), "{denied:?}");
    assert!(denied.iter().any(|(actor, _, _)| *actor == format!("account:{}", ae.alice_id)));

    let answer = ae.call(Method::GET, &export, &ae.platform, None).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    for section in SECTIONS {
        assert!(answer.body.get(section).is_some(), "no {section}");
    }
    assert_eq!(answer.body["organisations"][0]["organisation_id"], ae.org_a.as_str());
    assert_no_secret(&answer.body, &secrets);
    assert_exported_login(&answer.body);
    let exported = drain_audit(&mut audit);
    assert!(
        exported.iter().any(|r| r.event.name() == "person_exported" && r.event.subject() == Some(id.as_str())),
        "{exported:?}"
    );

    let own = ae.call(Method::POST, &format!("/accounts/{}/erase", ae.platform_id), &ae.platform, None).await;
    refused(&own, 400, "invalid_request", "your own account");

    let answer = ae.call(Method::POST, &erase, &ae.platform, None).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let pseudonym = answer.body["pseudonym"].as_str().expect("a pseudonym").to_string();
    assert!(state.store.account_by_id(&id).await.unwrap().is_none());
    let gone = ae.call(Method::GET, &format!("/accounts/{id}"), &ae.platform, None).await;
    assert_eq!(gone.status, 404);
    refused(&ae.call(Method::POST, &erase, &ae.platform, None).await, 404, "not_found", "no such account");
    let erased = drain_audit(&mut audit);
    let deleted = erased.iter().find(|r| r.event.name() == "account_deleted").expect("account_deleted");
    assert_eq!(deleted.event.subject(), Some(pseudonym.as_str()));
    assert_eq!(deleted.event.actor(), Some(format!("account:{}", ae.platform_id).as_str()));

    assert!(pseudonym.starts_with("pseudonym:"), "{pseudonym}");
    assert_pseudonymised(&ae.env, &id, &pseudonym).await;
}

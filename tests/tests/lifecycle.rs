//! Inactive accounts (CNIL rule), end to end: a server in this process, `habilis lifecycle run`
//! as the real binary on the same database with a shifted clock (`--now`), mail through the real
//! SMTP path to a sink, and the "keep my account" page driven like a browser.
//!
//! Timeline (inactive_after 365 days, warn_before 30 days): two accounts created at T0 are warned
//! at T0 + 340 days; one follows its link and confirms (the objection); at T0 + 365 days the other
//! is deleted (it can no longer log in) while the first is kept — and warned again for its new
//! period. Each step is audited (the server's objection is checked on its audit stream).

use std::process::Output;
use std::time::Duration;

use habilis_e2e::smtp_sink::{ReceivedMail, SmtpSink};
use habilis_e2e::{
    AccountSpec, Browser, Landing, Storage, TEST_MAIL_FROM, TestEnv, create_account_with_locale, hidden_input,
    on_both_storages, pkce_pair, run_habilis,
};
use habilis_idp::store::AccountKind;

const DAY: i64 = 24 * 3600;
const PASSWORD: &str = "correct horse battery staple 42";
const CALLBACK: &str = "https://rp.example.org/callback";

on_both_storages!(
    warning_objection_and_deletion,
    concurrent_runs_warn_once,
    dry_run_changes_nothing,
    the_last_platform_administrator_is_kept,
);

/// A server whose lifecycle job is off (the test runs it with the CLI), mailing through `sink`.
async fn server(storage: Storage, sink: &SmtpSink) -> Option<TestEnv> {
    let smtp = sink.url();
    TestEnv::start_with(storage, move |config| {
        config.lifecycle.enabled = false;
        config.mail.smtp_url = Some(url::Url::parse(&smtp).expect("an SMTP URL"));
        config.mail.from = TEST_MAIL_FROM.into();
    })
    .await
}

/// The environment of a `habilis` command working on the server's data, mail and issuer.
fn cli_env(env: &TestEnv, sink: &SmtpSink) -> Vec<(String, String)> {
    let config = &env.state().config;
    let mut vars = vec![
        ("HABILIS_DATA_DIR".to_string(), config.data_dir.display().to_string()),
        ("HABILIS_SERVER__ISSUER".into(), env.base_url.clone()),
        ("HABILIS_MAIL__SMTP_URL".into(), sink.url()),
        ("HABILIS_MAIL__FROM".into(), TEST_MAIL_FROM.into()),
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

/// `habilis lifecycle run --now T [EXTRA]` on the server's data; returns its output (asserting success).
async fn lifecycle_run(env: &TestEnv, sink: &SmtpSink, now: i64, extra: &[&str]) -> String {
    let vars = cli_env(env, sink);
    let now = habilis_idp::lifecycle::format_time(now);
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        let mut args = vec!["lifecycle", "run", "--now", now.as_str()];
        args.extend(extra.iter().map(String::as_str));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_habilis(&args, &vars, None)
    })
    .await
    .expect("the command ran");
    success(&output)
}

fn success(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "habilis failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The report line of `account_id`, split in columns.
fn row(report: &str, account_id: &str) -> Option<Vec<String>> {
    report.lines().find(|l| l.starts_with(account_id)).map(|l| l.split_whitespace().map(str::to_string).collect())
}

/// Creates an active account with an email, a password and a language; returns its id.
async fn account(env: &TestEnv, email: &str, locale: &str) -> String {
    let spec = AccountSpec {
        kind: AccountKind::Patient,
        login: email.to_string(),
        id_nat: None,
        email: Some(email.to_string()),
        given_name: Some("Camille".into()),
        family_name: Some("Martin".into()),
    };
    create_account_with_locale(env.state(), &spec, PASSWORD, Some(locale)).await
}

/// The keep-my-account link in a warning mail.
fn keep_link(mail: &ReceivedMail) -> String {
    let text = mail.text_body().expect("a text part");
    let start = text.find("http").expect("a link in the mail");
    let link = text[start..].split_whitespace().next().unwrap().to_string();
    assert!(link.contains("/account/keep?token="), "{link}");
    link
}

/// The mails received so far to `recipient`.
fn mails_to(sink: &SmtpSink, recipient: &str) -> Vec<ReceivedMail> {
    sink.received().into_iter().filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(recipient))).collect()
}

/// Tries to log in through a first-party client: whether the login succeeded.
async fn can_log_in(env: &TestEnv, login: &str) -> bool {
    let browser = env.browser();
    let (_, challenge) = pkce_pair();
    let query = habilis_e2e::authorize_query(
        &[
            ("response_type", "code"),
            ("client_id", "rp"),
            ("redirect_uri", CALLBACK),
            ("scope", "openid"),
            ("state", "s"),
            ("nonce", "n"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
        &[],
    );
    let landing = browser.navigate(&env.url(&format!("/authorize?{query}"))).await;
    match browser.log_in(landing, login, PASSWORD).await {
        Landing::Left(url) => url.as_str().starts_with(CALLBACK) && url.query().is_some_and(|q| q.contains("code=")),
        Landing::Page { .. } => false,
    }
}

async fn warning_objection_and_deletion(storage: Storage) {
    let sink = SmtpSink::start().await;
    let Some(env) = server(storage, &sink).await else { return };
    let metadata = habilis_e2e::first_party_client_metadata(CALLBACK, "openid", serde_json::json!({}));
    env.register_client("rp", &metadata).await;
    let keeper = account(&env, "keeper@example.org", "en").await;
    let leaver = account(&env, "leaver@example.fr", "fr").await;
    let t0 = habilis_idp::unix_now();
    let mut audit = env.state().audit.subscribe();

    // T0 + 340 days: both are within 30 days of the limit: one warning each, in their language.
    let report = lifecycle_run(&env, &sink, t0 + 340 * DAY, &[]).await;
    for id in [&keeper, &leaver] {
        let columns = row(&report, id).unwrap_or_else(|| panic!("{id} not in the report:\n{report}"));
        assert_eq!((columns[2].as_str(), columns[7].as_str()), ("warn", "sent"), "{report}");
    }
    let to_keeper = mails_to(&sink, "keeper@example.org");
    assert_eq!(to_keeper.len(), 1, "one warning");
    let subject = to_keeper[0].subject().unwrap();
    assert!(subject.starts_with("Your Habilis account will be deleted on "), "{subject}");
    assert!(!subject.contains("http"), "no link in a subject");
    let to_leaver = mails_to(&sink, "leaver@example.fr");
    assert_eq!(to_leaver.len(), 1);
    let subject = to_leaver[0].subject().unwrap();
    assert!(subject.starts_with("Votre compte Habilis sera supprimé le "), "{subject}");
    let deletion_date = habilis_idp::lifecycle::format_date(t0 + 365 * DAY, "en");
    let text = to_keeper[0].text_body().unwrap();
    assert!(text.contains(&deletion_date), "the deletion date is stated ({deletion_date}):\n{text}");
    assert!(text.contains("/terms"), "the terms are linked:\n{text}");

    // The link: a GET (what a mail scanner does) shows a page and consumes nothing.
    let link = keep_link(&to_keeper[0]);
    let local = link.replace(&env.base_url, &format!("http://{}", env.server.addr));
    let browser = Browser::with_accept_language(&format!("http://{}", env.server.addr), "en");
    let mut page = String::new();
    for _ in 0..2 {
        let Landing::Page { status, body, .. } = browser.navigate(&local).await else { panic!("a page") };
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Keep my account") && body.contains(&deletion_date), "{body}");
        page = body;
    }
    // A form without the CSRF cookie's twin is refused.
    let token = hidden_input(&page, "token").expect("the link's token in the form");
    let Landing::Page { status, .. } = browser.submit("/account/keep", &[("token", &token), ("csrf", "forged")]).await
    else {
        panic!("a page")
    };
    assert_eq!(status, 400);
    // The objection, strictly after T0 (the clock restarts from it).
    while habilis_idp::unix_now() <= t0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let csrf = hidden_input(&page, "csrf").unwrap();
    let Landing::Page { status, body, .. } =
        browser.submit("/account/keep", &[("token", &token), ("csrf", &csrf)]).await
    else {
        panic!("a page")
    };
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("your account is kept"), "{body}");
    let kept = habilis_e2e::drain_audit(&mut audit);
    assert!(
        kept.iter().any(|r| r.event.name() == "account_kept" && r.event.subject() == Some(keeper.as_str())),
        "the objection is audited: {kept:?}"
    );
    // The link is single-use.
    let Landing::Page { status, body, .. } = browser.navigate(&local).await else { panic!("a page") };
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("no longer valid"), "{body}");

    // T0 + 365 days: the limit of the first period. The leaver is deleted; the keeper, whose clock
    // restarted, is only warned for its new period (with a later date).
    let report = lifecycle_run(&env, &sink, t0 + 365 * DAY, &[]).await;
    let columns = row(&report, &leaver).unwrap_or_else(|| panic!("{report}"));
    assert_eq!((columns[2].as_str(), columns[7].as_str()), ("delete", "deleted"), "{report}");
    let columns = row(&report, &keeper).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(columns[2], "warn", "{report}");
    assert!(env.state().store.account_by_id(&leaver).await.unwrap().is_none(), "the leaver is gone");
    assert!(env.state().store.account_by_id(&keeper).await.unwrap().is_some(), "the keeper stays");
    assert!(!can_log_in(&env, "leaver@example.fr").await, "a deleted account cannot log in");
    assert!(can_log_in(&env, "keeper@example.org").await, "the kept account logs in");
    assert_eq!(mails_to(&sink, "leaver@example.fr").len(), 1, "no mail at deletion");

    // Each step is in the durable audit log (the runs are CLI processes writing to it); the
    // leaver's records carry a pseudonym, and the chain still verifies.
    env.state().audit.flush().await;
    let log = env.state().store.audit();
    let events_of =
        |records: &[habilis_idp::store::StoredAuditRecord]| records.iter().map(|r| r.event.clone()).collect::<Vec<_>>();
    let keeper_events = events_of(&log.records_about(&keeper).await.unwrap());
    for event in ["inactivity_warning_sent", "account_kept"] {
        assert!(keeper_events.iter().any(|e| e == event), "{event} about the keeper: {keeper_events:?}");
    }
    assert!(log.records_about(&leaver).await.unwrap().is_empty(), "no record names the deleted account");
    let deletion = log
        .search(&habilis_idp::store::AuditQuery {
            event: Some("account_deleted".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let deletion = deletion.first().expect("account_deleted is audited");
    assert!(deletion.details.contains("inactive"), "{deletion:?}");
    let pseudonym = deletion.subject.clone().expect("the pseudonym");
    let leaver_events = events_of(&log.records_about(&pseudonym).await.unwrap());
    assert!(leaver_events.iter().any(|e| e == "inactivity_warning_sent"), "{leaver_events:?}");
    let vars = cli_env(&env, &sink);
    let verify = tokio::task::spawn_blocking(move || {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_habilis(&["audit", "verify"], &vars, None)
    })
    .await
    .unwrap();
    success(&verify);
}

/// An inactive administrator is warned like anyone, but the last platform administrator is not
/// deleted at the limit (Habilis would be left without anyone to administer it); once another
/// exists, the inactive one goes.
async fn the_last_platform_administrator_is_kept(storage: Storage) {
    let sink = SmtpSink::start().await;
    let Some(env) = server(storage, &sink).await else { return };
    let spec = AccountSpec {
        kind: AccountKind::Administrator,
        login: "root@example.org".into(),
        id_nat: None,
        email: Some("root@example.org".into()),
        given_name: None,
        family_name: None,
    };
    let admin = create_account_with_locale(env.state(), &spec, PASSWORD, Some("en")).await;
    let t0 = habilis_idp::unix_now();
    lifecycle_run(&env, &sink, t0 + 340 * DAY, &[]).await;
    assert_eq!(mails_to(&sink, "root@example.org").len(), 1, "the administrator is warned");
    let report = lifecycle_run(&env, &sink, t0 + 366 * DAY, &[]).await;
    let columns = row(&report, &admin).unwrap_or_else(|| panic!("{report}"));
    assert_eq!((columns[2].as_str(), columns[7].as_str()), ("delete", "kept_last_platform_admin"), "{report}");
    assert!(env.state().store.account_by_id(&admin).await.unwrap().is_some(), "kept");

    // Another (active) platform administrator: the inactive one is deleted at the next run.
    let other = AccountSpec { login: "second@example.org".into(), email: Some("second@example.org".into()), ..spec };
    create_account_with_locale(env.state(), &other, PASSWORD, Some("en")).await;
    let report = lifecycle_run(&env, &sink, t0 + 367 * DAY, &[]).await;
    let columns = row(&report, &admin).unwrap_or_else(|| panic!("{report}"));
    assert_eq!((columns[2].as_str(), columns[7].as_str()), ("delete", "deleted"), "{report}");
    assert!(env.state().store.account_by_id(&admin).await.unwrap().is_none(), "deleted");
}

async fn dry_run_changes_nothing(storage: Storage) {
    let sink = SmtpSink::start().await;
    let Some(env) = server(storage, &sink).await else { return };
    let id = account(&env, "dry@example.org", "en").await;
    let t0 = habilis_idp::unix_now();
    let report = lifecycle_run(&env, &sink, t0 + 366 * DAY, &["--dry-run"]).await;
    assert!(report.contains("dry run: nothing changed"), "{report}");
    let columns = row(&report, &id).unwrap_or_else(|| panic!("{report}"));
    assert_eq!((columns[2].as_str(), columns[7].as_str()), ("warn", "planned"), "{report}");
    assert!(sink.received().is_empty(), "no mail in a dry run");
    let lifecycle = env.state().store.lifecycle();
    assert!(lifecycle.warnings_of(&id).await.unwrap().is_empty(), "no warning recorded");
    assert!(lifecycle.lease(habilis_idp::lifecycle::RUN_LEASE).await.unwrap().is_none(), "no lease taken");
    // Even far past the limit, a dry run deletes nothing (and an unwarned account is warned first).
    let report = lifecycle_run(&env, &sink, t0 + 800 * DAY, &["--dry-run", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&report).unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!(json["items"][0]["action"], "warn", "{json}");
    assert!(env.state().store.account_by_id(&id).await.unwrap().is_some());
    // The real run warns; a dry run at the announced date says it would delete, and does not.
    lifecycle_run(&env, &sink, t0 + 340 * DAY, &[]).await;
    let report = lifecycle_run(&env, &sink, t0 + 365 * DAY, &["--dry-run"]).await;
    let columns = row(&report, &id).unwrap_or_else(|| panic!("{report}"));
    assert_eq!(columns[2], "delete", "{report}");
    assert!(env.state().store.account_by_id(&id).await.unwrap().is_some(), "still there after a dry run");
}

async fn concurrent_runs_warn_once(storage: Storage) {
    let sink = SmtpSink::start().await;
    let Some(env) = server(storage, &sink).await else { return };
    let mut emails = Vec::new();
    for i in 0..4 {
        let email = format!("user{i}@example.org");
        account(&env, &email, "fr").await;
        emails.push(email);
    }
    let now = habilis_idp::lifecycle::format_time(habilis_idp::unix_now() + 340 * DAY);
    let vars = cli_env(&env, &sink);
    // Two processes started together on the same database.
    let outputs = tokio::task::spawn_blocking(move || {
        let children: Vec<_> = (0..2)
            .map(|_| {
                let mut command = std::process::Command::new(habilis_e2e::habilis_binary());
                command.args(["lifecycle", "run", "--now", &now]);
                for (k, _) in std::env::vars() {
                    if k.starts_with("HABILIS_") || k == "RUST_LOG" {
                        command.env_remove(&k);
                    }
                }
                for (k, v) in &vars {
                    command.env(k, v);
                }
                command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
                command.spawn().expect("spawn habilis")
            })
            .collect();
        children.into_iter().map(|c| c.wait_with_output().expect("wait")).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let reports: Vec<String> = outputs.iter().map(success).collect();
    for email in &emails {
        let mails = mails_to(&sink, email);
        assert_eq!(mails.len(), 1, "{email} got {} warnings; reports:\n{}", mails.len(), reports.join("\n---\n"));
    }
    let sent: usize = reports.iter().map(|r| r.lines().filter(|l| l.trim_end().ends_with(" sent")).count()).sum();
    assert_eq!(sent, emails.len(), "each warning sent by one run: {reports:?}");
    // A later run finds nothing more to send.
    let again = lifecycle_run(&env, &sink, habilis_idp::unix_now() + 341 * DAY, &[]).await;
    assert!(again.contains("no account to warn or delete"), "{again}");
    assert_eq!(sink.received().len(), emails.len());
}

#[tokio::test]
async fn terms_state_the_cadence() {
    let Some(env) = TestEnv::start_with(Storage::Embedded, |config| {
        config.lifecycle.enabled = false;
        config.lifecycle.inactive_after = Duration::from_secs(200 * DAY as u64);
        config.lifecycle.warn_before = Duration::from_secs(20 * DAY as u64);
        config.lifecycle.remind_before = Some(Duration::from_secs(3 * DAY as u64));
    })
    .await
    else {
        return;
    };
    for (lang, expected) in [
        ("fr", ["<strong>200&nbsp;jours</strong>", "<strong>20&nbsp;jours</strong>", "<strong>3&nbsp;jours</strong>"]),
        ("en", ["<strong>200&nbsp;days</strong>", "<strong>20&nbsp;days</strong>", "<strong>3&nbsp;days</strong>"]),
    ] {
        let browser = Browser::with_accept_language(&format!("http://{}", env.server.addr), lang);
        let Landing::Page { status, body, .. } = browser.navigate("/terms").await else { panic!("a page") };
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("<html lang=\"{lang}\">")), "{body}");
        for text in expected {
            assert!(body.contains(text), "{lang}: {text} missing:\n{body}");
        }
    }
}

use super::*;
use crate::store::{Account, AccountKind, AccountStatus, KeepToken};

const DAY: i64 = 24 * 3600;

fn policy() -> Policy {
    Policy { inactive_after: 365 * DAY, warn_before: 30 * DAY, remind_before: Some(7 * DAY), keep_link_validity: None }
}

fn warning(activity_at: i64, stage: i64, deletion_at: i64) -> InactivityWarning {
    InactivityWarning { account_id: "a".into(), activity_at, stage, deletion_at, sent_at: 0, channel: "email".into() }
}

#[test]
fn decide_follows_the_cadence() {
    let p = policy();
    let t0 = 1_700_000_000;
    let limit = t0 + 365 * DAY;
    assert_eq!(decide(&p, t0, &[], t0 + 100 * DAY), Decision::None, "recently active");
    assert_eq!(decide(&p, t0, &[], limit - 30 * DAY - 1), Decision::None, "a second before the warning");
    assert_eq!(
        decide(&p, t0, &[], limit - 30 * DAY),
        Decision::Warn { stage: 1, deletion_at: limit, reminder: false },
        "the warning, announcing the limit"
    );
    let first = [warning(t0, 1, limit)];
    assert_eq!(decide(&p, t0, &first, limit - 8 * DAY), Decision::None, "warned, reminder not due");
    assert_eq!(
        decide(&p, t0, &first, limit - 7 * DAY),
        Decision::Warn { stage: 2, deletion_at: limit, reminder: true },
        "the reminder"
    );
    let both = [warning(t0, 1, limit), warning(t0, 2, limit)];
    assert_eq!(decide(&p, t0, &both, limit - 1), Decision::None, "both sent");
    assert_eq!(decide(&p, t0, &both, limit), Decision::Delete { deletion_at: limit }, "the limit");
    assert_eq!(decide(&p, t0, &first, limit + DAY), Decision::Delete { deletion_at: limit }, "missed reminder");
}

#[test]
fn decide_never_deletes_without_a_warning() {
    let p = policy();
    let t0 = 1_700_000_000;
    let limit = t0 + 365 * DAY;
    // The job was off: an account already past its limit is warned first, with the minimum notice.
    let late = limit + 100 * DAY;
    let decision = decide(&p, t0, &[], late);
    assert_eq!(decision, Decision::Warn { stage: 2, deletion_at: late + 7 * DAY, reminder: false });
    let sent = [warning(t0, 2, late + 7 * DAY)];
    assert_eq!(decide(&p, t0, &sent, late + DAY), Decision::None, "no second mail for the same stage");
    assert_eq!(decide(&p, t0, &sent, late + 7 * DAY), Decision::Delete { deletion_at: late + 7 * DAY });
    // First seen 3 days before the limit: the notice still lasts 7 days.
    let decision = decide(&p, t0, &[], limit - 3 * DAY);
    assert_eq!(decision, Decision::Warn { stage: 2, deletion_at: limit + 4 * DAY, reminder: false });
}

#[test]
fn decide_starts_over_with_each_period_and_without_reminders() {
    let t0 = 1_700_000_000;
    let old = [warning(t0 - 400 * DAY, 1, t0 - 35 * DAY), warning(t0 - 400 * DAY, 2, t0 - 35 * DAY)];
    // A login (new activity time) makes the old period's warnings irrelevant.
    assert_eq!(decide(&policy(), t0, &old, t0 + DAY), Decision::None);
    let no_reminder = Policy { remind_before: None, ..policy() };
    let limit = t0 + 365 * DAY;
    let first = [warning(t0, 1, limit)];
    assert_eq!(decide(&no_reminder, t0, &first, limit - DAY), Decision::None);
    assert_eq!(
        decide(&no_reminder, t0, &[], limit + DAY),
        Decision::Warn { stage: 1, deletion_at: limit + 31 * DAY, reminder: false },
        "without reminders the minimum notice is warn_before"
    );
}

#[test]
fn activity_counts_from_the_latest_event() {
    let mut a = account("x", 1000);
    let at = |a: &Account, kept| AccountActivity { account: a.clone(), kept_at: kept }.activity_at();
    assert_eq!(at(&a, None), 1000, "never logged in: creation");
    a.last_authenticated_at = Some(5000);
    assert_eq!(at(&a, None), 5000);
    assert_eq!(at(&a, Some(7000)), 7000, "an objection restarts the clock");
    assert_eq!(at(&a, Some(3000)), 5000);
}

#[test]
fn dates_are_written_for_people() {
    // 2026-03-01T12:00:00Z
    assert_eq!(format_date(1_772_366_400, "fr"), "1er mars 2026");
    assert_eq!(format_date(1_772_366_400, "en"), "1 March 2026");
    assert_eq!(format_date(1_772_366_400 + 11 * DAY, "fr"), "12 mars 2026");
    assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
}

#[test]
fn configuration_refuses_more_than_a_year() {
    let load = |env: &[(&str, &str)]| {
        crate::config::Config::load(None, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    };
    let err = load(&[("HABILIS_LIFECYCLE__INACTIVE_AFTER", "366days")]).unwrap_err();
    assert_eq!(err.key, "lifecycle.inactive_after");
    assert!(err.to_string().contains("at most 365 days"), "{err}");
    let err = load(&[("HABILIS_LIFECYCLE__REMIND_BEFORE", "30days")]).unwrap_err();
    assert_eq!(err.key, "lifecycle.remind_before", "{err}");
    let err = load(&[("HABILIS_LIFECYCLE__WARN_BEFORE", "400days")]).unwrap_err();
    assert_eq!(err.key, "lifecycle.warn_before", "{err}");
    let err = load(&[("HABILIS_LIFECYCLE__RUN_EVERY", "1s")]).unwrap_err();
    assert_eq!(err.key, "lifecycle.run_every", "{err}");
    let config = load(&[("HABILIS_LIFECYCLE__INACTIVE_AFTER", "180days")]).unwrap();
    assert_eq!(config.lifecycle.inactive_after.as_secs() as i64, 180 * DAY);
    let defaults = crate::config::Config::default().lifecycle;
    assert_eq!(Policy::from_config(&defaults), Policy { remind_before: Some(7 * DAY), ..policy() });
}

fn account(login: &str, created_at: i64) -> Account {
    Account {
        id: uuid::Uuid::new_v4().to_string(),
        kind: AccountKind::Patient,
        login: login.into(),
        id_nat: None,
        email: Some(format!("{login}@example.org")),
        given_name: None,
        family_name: None,
        status: AccountStatus::Active,
        locale: Some("en".into()),
        created_at,
        updated_at: created_at,
        last_authenticated_at: None,
    }
}

/// A fresh SQLite store and, when reachable (always under CI), a fresh PostgreSQL one.
async fn test_stores() -> Vec<(crate::store::SharedStore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let mut stores = vec![(crate::store::connect_with(&url, 4).await.expect("SQLite store"), Some(dir))];
    if let Some(url) = crate::testing::postgres_schema_url().await {
        stores.push((crate::store::connect_with(&url, 4).await.expect("PostgreSQL store"), None));
    }
    stores
}

#[tokio::test]
async fn leases_are_exclusive_until_they_expire() {
    for (store, _guard) in test_stores().await {
        let backend = store.backend().as_str();
        let leases = store.lifecycle();
        assert!(leases.acquire_lease("job", "a", 200, 100).await.unwrap(), "{backend}: free");
        assert!(!leases.acquire_lease("job", "b", 300, 150).await.unwrap(), "{backend}: held by a");
        assert!(leases.acquire_lease("job", "a", 400, 150).await.unwrap(), "{backend}: renewal");
        assert_eq!(leases.lease("job").await.unwrap(), Some(("a".to_string(), 400)));
        assert!(leases.acquire_lease("job", "b", 600, 400).await.unwrap(), "{backend}: expired");
        leases.release_lease("job", "a", 450).await.unwrap();
        assert_eq!(leases.lease("job").await.unwrap(), Some(("b".to_string(), 600)), "{backend}: not a's to end");
        leases.release_lease("job", "b", 450).await.unwrap();
        assert!(leases.acquire_lease("job", "c", 700, 450).await.unwrap(), "{backend}: released");
        // Many contenders at once: exactly one wins.
        let attempts: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.lifecycle().acquire_lease("race", &format!("o{i}"), 2000, 1000).await.unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for attempt in attempts {
            won += usize::from(attempt.await.unwrap());
        }
        assert_eq!(won, 1, "{backend}");
    }
}

#[tokio::test]
async fn warnings_are_claimed_once_and_keep_links_spent_once() {
    for (store, _guard) in test_stores().await {
        let backend = store.backend().as_str();
        let a = account("claims", 1000);
        store.insert_account(&a).await.unwrap();
        let lifecycle = store.lifecycle();
        let w = InactivityWarning { account_id: a.id.clone(), ..warning(1000, 1, 5000) };
        assert!(lifecycle.claim_warning(&w).await.unwrap(), "{backend}");
        assert!(!lifecycle.claim_warning(&w).await.unwrap(), "{backend}: a second claim fails");
        lifecycle.forget_warning(&a.id, 1000, 1).await.unwrap();
        assert!(lifecycle.claim_warning(&w).await.unwrap(), "{backend}: claimable again once forgotten");
        assert_eq!(lifecycle.warnings_of(&a.id).await.unwrap(), vec![w.clone()]);

        let link = |hash: &str, expires_at| KeepToken {
            token_hash: hash.into(),
            account_id: a.id.clone(),
            created_at: 1000,
            expires_at,
            used_at: None,
        };
        lifecycle.insert_keep_token(&link("h1", 5000)).await.unwrap();
        lifecycle.insert_keep_token(&link("h2", 2000)).await.unwrap();
        assert!(lifecycle.use_keep_token("h2", 2000).await.unwrap().is_none(), "{backend}: expired");
        assert!(lifecycle.use_keep_token("nope", 2000).await.unwrap().is_none());
        let spent = lifecycle.use_keep_token("h1", 3000).await.unwrap().expect("spent");
        assert_eq!(spent.account_id, a.id);
        assert!(lifecycle.use_keep_token("h1", 3001).await.unwrap().is_none(), "{backend}: single use");
        assert_eq!(lifecycle.keep_token("h1").await.unwrap().unwrap().used_at, Some(3000));
        let activity = lifecycle.activity_of(&a.id).await.unwrap().unwrap();
        assert_eq!((activity.kept_at, activity.activity_at()), (Some(3000), 3000), "{backend}");

        // Candidates: activity at or before the cutoff.
        let b = account("candidate", 500);
        store.insert_account(&b).await.unwrap();
        let ids = |v: Vec<AccountActivity>| v.into_iter().map(|c| c.account.login).collect::<Vec<_>>();
        assert_eq!(ids(lifecycle.inactive_since(2999).await.unwrap()), vec!["candidate"], "{backend}");
        assert_eq!(ids(lifecycle.inactive_since(3000).await.unwrap()), vec!["candidate", "claims"], "{backend}");

        // Deleting the account takes its lifecycle rows with it.
        assert!(lifecycle.delete_account(&a.id).await.unwrap());
        assert!(!lifecycle.delete_account(&a.id).await.unwrap());
        assert!(lifecycle.warnings_of(&a.id).await.unwrap().is_empty(), "{backend}");
        assert!(lifecycle.keep_token("h1").await.unwrap().is_none(), "{backend}");
    }
}

/// Application states on SQLite and (when reachable, always under CI) PostgreSQL, mail into the
/// outbox folder of each data directory.
pub(crate) async fn test_states() -> Vec<(AppState, tempfile::TempDir)> {
    let mut states = Vec::new();
    let mut urls = vec![None];
    if let Some(url) = crate::testing::postgres_schema_url().await {
        urls.push(Some(url));
    }
    for url in urls {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::config::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.keys.algorithms = vec![crate::config::SigningAlg::ES256];
        config.password.argon2_memory_kib = 8192;
        config.password.argon2_iterations = 1;
        config.card.mode = crate::config::CardMode::Off;
        config.storage.database_url = url;
        states.push((crate::app::build_state(config).await.expect("test state"), dir));
    }
    states
}

/// The recipients of the mails in the outbox, one entry per mail.
fn outbox_recipients(dir: &tempfile::TempDir) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.path().join("outbox")) else { return Vec::new() };
    let mut to: Vec<String> = entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|mail| mail.lines().find_map(|l| l.strip_prefix("To: ").map(str::to_string)))
        .collect();
    to.sort();
    to
}

#[tokio::test]
async fn runs_warn_once_then_delete_at_the_limit() {
    for (state, dir) in test_states().await {
        let backend = state.store.backend().as_str();
        let now = crate::unix_now();
        let old = account("old", now - 340 * DAY);
        let mut silent = account("silent", now - 340 * DAY);
        silent.email = None;
        let recent = account("recent", now - 10 * DAY);
        for a in [&old, &silent, &recent] {
            state.store.insert_account(a).await.unwrap();
        }
        let options = |now, dry_run| RunOptions { now, dry_run, actor: "cli".into() };

        let dry = run(&state, &options(now, true)).await.unwrap();
        assert_eq!(dry.count("warn"), 2, "{backend}: {dry:?}");
        assert!(dry.items.iter().all(|i| i.outcome == "planned"));
        assert!(state.store.lifecycle().warnings_of(&old.id).await.unwrap().is_empty(), "{backend}: dry");
        assert!(state.store.lifecycle().lease(RUN_LEASE).await.unwrap().is_none(), "{backend}: no lease");
        assert!(outbox_recipients(&dir).is_empty(), "{backend}: no mail in a dry run");

        // Two runs at once: one acts, the other finds the lease taken or nothing left to do.
        let (first, second) = (options(now, false), options(now, false));
        let (a, b) = tokio::join!(run(&state, &first), run(&state, &second));
        let reports = [a.unwrap(), b.unwrap()];
        let sent: usize = reports
            .iter()
            .flat_map(|r| &r.items)
            .filter(|i| i.outcome == "sent" || i.outcome == "undeliverable")
            .count();
        assert_eq!(sent, 2, "{backend}: {reports:?}");
        assert_eq!(outbox_recipients(&dir), vec!["old@example.org"], "{backend}: one mail");
        let silent_item = reports.iter().flat_map(|r| &r.items).find(|i| i.login == "silent").unwrap();
        assert_eq!(silent_item.channel.as_deref(), Some("none"), "{backend}");

        let again = run(&state, &options(now + 60, false)).await.unwrap();
        assert!(again.items.is_empty(), "{backend}: nothing new: {again:?}");

        // The limit: both warned accounts go (the one without a channel too); the recent one stays.
        let limit = old.created_at + 365 * DAY;
        let reminder = run(&state, &options(limit - 7 * DAY, false)).await.unwrap();
        assert_eq!(reminder.count("warn"), 2, "{backend}: reminders {reminder:?}");
        let last = run(&state, &options(limit, false)).await.unwrap();
        assert_eq!(last.count("delete"), 2, "{backend}: {last:?}");
        assert!(last.items.iter().all(|i| i.outcome == "deleted"), "{backend}: {last:?}");
        assert!(state.store.account_by_id(&old.id).await.unwrap().is_none());
        assert!(state.store.account_by_id(&silent.id).await.unwrap().is_none());
        assert!(state.store.account_by_id(&recent.id).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn an_objection_restarts_the_clock() {
    for (state, _dir) in test_states().await {
        let backend = state.store.backend().as_str();
        let now = crate::unix_now();
        let a = account("objector", now - 340 * DAY);
        state.store.insert_account(&a).await.unwrap();
        let mut events = state.audit.subscribe();
        let warned = run(&state, &RunOptions { now, dry_run: false, actor: "cli".into() }).await.unwrap();
        assert_eq!(warned.count("warn"), 1, "{backend}");
        let sent = events.recv().await.unwrap();
        assert_eq!(sent.event.name(), "inactivity_warning_sent", "{backend}");
        // The link the mail carried is only in the mail; spend the stored one as the page would.
        let token = crate::cli::random_token();
        let link = KeepToken {
            token_hash: crate::cli::sha256_hex(&token),
            account_id: a.id.clone(),
            created_at: now,
            expires_at: a.created_at + 365 * DAY,
            used_at: None,
        };
        state.store.lifecycle().insert_keep_token(&link).await.unwrap();
        state.store.lifecycle().use_keep_token(&link.token_hash, now + 5).await.unwrap().expect("spent");
        let at_limit = run(&state, &RunOptions { now: a.created_at + 365 * DAY, dry_run: false, actor: "cli".into() })
            .await
            .unwrap();
        assert_eq!(at_limit.count("delete"), 0, "{backend}: kept: {at_limit:?}");
        assert!(state.store.account_by_id(&a.id).await.unwrap().is_some(), "{backend}");
    }
}

#[test]
fn warning_mail_states_the_date_and_carries_the_link() {
    let templates = crate::mail::MailTemplates::new();
    let link = "https://idp.example/account/keep?token=abc";
    let context = |reminder: bool, date: &str| {
        minijinja::context! {
            link => link, terms_link => "https://idp.example/terms", login => "jean<b>@example.org",
            deletion_date => date, last_activity_date => "-", link_expiry_date => date,
            inactive_days => 365, reminder => reminder,
        }
    };
    let fr = templates.render("inactivity_warning", "fr", context(false, "12 mars 2027")).unwrap();
    assert_eq!(fr.subject, "Votre compte Habilis sera supprimé le 12 mars 2027");
    assert!(fr.text.contains(link) && fr.text.contains("365 jours"), "{}", fr.text);
    assert!(fr.text.contains("jean<b>@example.org"), "the text part is not escaped");
    assert!(fr.html.contains("jean&lt;b&gt;@example.org"), "the HTML part is escaped");
    assert!(!fr.subject.contains("token") && !fr.text.contains("{{"));
    let en = templates.render("inactivity_warning", "en", context(true, "12 March 2027")).unwrap();
    assert_eq!(en.subject, "Reminder: your Habilis account will be deleted on 12 March 2027");
    assert!(en.text.contains("To keep your account, open this link"), "{}", en.text);
    let preheader_end = en.html.find("</div>").unwrap();
    assert!(!en.html[..preheader_end].contains("token"), "no link in the preheader");
}

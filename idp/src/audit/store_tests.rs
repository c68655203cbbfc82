//! The durable audit log on SQLite and PostgreSQL: the store (append, reads, search,
//! pseudonymisation, checkpoints, purge), the writer, checkpoints and verification together.

use std::sync::Arc;

use super::chain::{self, GENESIS};
use super::checkpoint::Checkpointer;
use super::verify::{Quiet, verify_store};
use super::*;
use crate::authn::throttle::test_backends::stores;
use crate::config::{Config, SigningAlg};
use crate::keys::{KeyManager, MasterKey};
use crate::store::{AuditQuery, HourlyEventCount, SharedStore, StoredAuditRecord};

fn record(n: i64, actor: &str, event: &str) -> NewAuditRecord {
    NewAuditRecord {
        time: 1_700_000_000 + n,
        event: event.into(),
        outcome: if n % 2 == 0 { "success".into() } else { "failure".into() },
        client_id: Some(format!("client-{}", n % 3)),
        request_id: Some(format!("req-{n}")),
        acr: None,
        actor: Some(actor.into()),
        subject: Some(actor.into()),
        ip: Some("192.0.2.7".into()),
        user_agent: Some("agent".into()),
        details: format!(r#"{{"n":{n},"email":"{actor}@example.org"}}"#),
    }
}

async fn keys_for(store: &SharedStore) -> (Arc<KeyManager>, MasterKey) {
    let mut config = Config::default();
    config.keys.algorithms = vec![SigningAlg::ES256];
    let master = MasterKey::generate();
    let copy = MasterKey::from_base64(&master.to_base64()).unwrap();
    (KeyManager::start(store.clone(), master, &config).await.expect("keys"), copy)
}

#[tokio::test]
async fn append_links_batches_into_one_chain() {
    for (store, _dir) in stores().await {
        let backend = store.backend().as_str();
        let audit = store.audit();
        assert_eq!(audit.head().await.unwrap(), None, "{backend}");
        let empty = audit.snapshot().await.unwrap();
        assert_eq!((empty.head_seq, empty.head_hash.as_str(), empty.max_seq), (0, GENESIS, None), "{backend}");
        assert!(audit.append(&[]).await.unwrap().is_empty());

        let first: Vec<_> = (1..=3).map(|n| record(n, "acc-a", "token_issued")).collect();
        let stored = audit.append(&first).await.unwrap();
        assert_eq!(stored.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3], "{backend}");
        let second: Vec<_> = (4..=5).map(|n| record(n, "acc-b", "card_login_refused")).collect();
        let more = audit.append(&second).await.unwrap();
        assert_eq!(more[0].prev_hash, stored[2].hash, "{backend}: the second batch links to the first");

        let all = audit.records_from(1, 100).await.unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[..3], stored[..], "{backend}: stored as returned");
        assert_eq!(all[0].prev_hash, GENESIS);
        for pair in all.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash, "{backend}");
        }
        for r in &all {
            assert_eq!(chain::check(r), chain::RecordCheck { personal_ok: Some(true), hash_ok: true }, "{backend}");
        }
        assert_eq!(audit.records_from(4, 1).await.unwrap()[0].seq, 4);
        assert_eq!(audit.head().await.unwrap(), Some((5, all[4].hash.clone())), "{backend}");
        let snapshot = audit.snapshot().await.unwrap();
        assert_eq!((snapshot.head_seq, snapshot.min_seq, snapshot.max_seq), (5, Some(1), Some(5)), "{backend}");
        assert_eq!(snapshot.head_hash, all[4].hash);
        assert_eq!(audit.last_seq_before(1_700_000_004).await.unwrap(), Some(3), "{backend}");
        assert_eq!(audit.last_seq_before(0).await.unwrap(), None);
    }
}

#[tokio::test]
async fn search_filters_and_pages_both_ways() {
    for (store, _dir) in stores().await {
        let backend = store.backend().as_str();
        let audit = store.audit();
        let batch: Vec<_> = (1..=12)
            .map(|n| {
                record(n, if n <= 6 { "acc-a" } else { "acc-b" }, if n % 4 == 0 { "special" } else { "token_issued" })
            })
            .collect();
        audit.append(&batch).await.unwrap();
        let seqs = |rows: Vec<StoredAuditRecord>| rows.into_iter().map(|r| r.seq).collect::<Vec<_>>();
        let q = |f: &dyn Fn(&mut AuditQuery)| {
            let mut q = AuditQuery { limit: 100, ..Default::default() };
            f(&mut q);
            q
        };
        // Newest first by default; ascending after after_seq; descending before before_seq.
        assert_eq!(seqs(audit.search(&q(&|q| q.limit = 3)).await.unwrap()), vec![12, 11, 10], "{backend}");
        assert_eq!(seqs(audit.search(&q(&|q| q.before_seq = Some(10))).await.unwrap())[..2], [9, 8]);
        assert_eq!(
            seqs(
                audit
                    .search(&q(&|q| {
                        q.after_seq = Some(9);
                        q.limit = 2
                    }))
                    .await
                    .unwrap()
            ),
            vec![10, 11]
        );
        assert_eq!(seqs(audit.search(&q(&|q| q.event = Some("special".into()))).await.unwrap()), vec![12, 8, 4]);
        assert_eq!(seqs(audit.search(&q(&|q| q.account_id = Some("acc-b".into()))).await.unwrap()).len(), 6);
        assert_eq!(
            seqs(audit.search(&q(&|q| q.client_id = Some("client-0".into()))).await.unwrap()),
            vec![12, 9, 6, 3]
        );
        assert_eq!(seqs(audit.search(&q(&|q| q.outcome = Some("failure".into()))).await.unwrap()).len(), 6);
        let window = q(&|q| {
            q.since = Some(1_700_000_003);
            q.until = Some(1_700_000_006);
            q.after_seq = Some(0);
        });
        assert_eq!(
            seqs(audit.search(&window).await.unwrap()),
            vec![3, 4, 5],
            "{backend}: since included, until excluded"
        );
        let combined = q(&|q| {
            q.account_id = Some("acc-a".into());
            q.event = Some("special".into());
        });
        assert_eq!(seqs(audit.search(&combined).await.unwrap()), vec![4], "{backend}");
        assert_eq!(seqs(audit.records_about("acc-b").await.unwrap()), (7..=12).collect::<Vec<_>>(), "{backend}");
        assert!(audit.records_about("nobody").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn pseudonymisation_keeps_the_chain_verifiable() {
    for (store, _dir) in stores().await {
        let backend = store.backend().as_str();
        let audit = store.audit();
        let mut batch = vec![record(1, "acc-a", "token_issued"), record(2, "acc-b", "token_issued")];
        // acc-b acting on acc-a.
        let mut cross = record(3, "acc-b", "account_changed");
        cross.subject = Some("acc-a".into());
        cross.details = r#"{"login":"acc-a","email":"acc-a@example.org"}"#.into();
        batch.push(cross);
        // acc-a acting as an administrator (actor `account:<id>`) on acc-b.
        let mut as_admin = record(4, "account:acc-a", "admin_account_changed");
        as_admin.subject = Some("acc-b".into());
        as_admin.details = "{}".into();
        batch.push(as_admin);
        audit.append(&batch).await.unwrap();
        let query = AuditQuery { account_id: Some("acc-a".into()), limit: 10, ..Default::default() };
        assert_eq!(audit.search(&query).await.unwrap().len(), 3, "{backend}: both forms of the id match");
        assert_eq!(audit.records_about("acc-a").await.unwrap().len(), 3, "{backend}");
        let ids = vec!["acc-a@example.org".to_string(), "acc-a".to_string()];
        assert_eq!(audit.pseudonymise("acc-a", "pseudo-1", &ids, 1_800_000_000).await.unwrap(), 3, "{backend}");
        let all = audit.records_from(1, 10).await.unwrap();
        assert_eq!(all[0].actor.as_deref(), Some("pseudo-1"));
        assert_eq!((all[0].ip.as_deref(), all[0].user_agent.as_deref()), (None, None));
        assert!(!all[0].details.contains("acc-a"), "{backend}: {}", all[0].details);
        assert_eq!(all[0].pseudonymised_at, Some(1_800_000_000));
        assert_eq!((all[2].actor.as_deref(), all[2].subject.as_deref()), (Some("acc-b"), Some("pseudo-1")));
        assert_eq!(all[2].details, r#"{"login":"pseudo-1","email":"pseudo-1"}"#);
        assert_eq!(all[1].pseudonymised_at, None, "{backend}: another person's record is untouched");
        assert_eq!(all[1].ip.as_deref(), Some("192.0.2.7"));
        for r in &all {
            assert!(chain::check(r).hash_ok, "{backend}: the chain still holds at {}", r.seq);
        }
        assert_eq!((all[3].actor.as_deref(), all[3].subject.as_deref()), (Some("pseudo-1"), Some("acc-b")));
        assert!(audit.records_about("acc-a").await.unwrap().is_empty());
        assert_eq!(audit.records_about("pseudo-1").await.unwrap().len(), 3);
    }
}

#[tokio::test]
async fn checkpoints_keys_and_statements_verify() {
    for (store, _dir) in stores().await {
        let backend = store.backend().as_str();
        let (keys, master) = keys_for(&store).await;
        let audit = store.audit();
        let mut checkpointer = Checkpointer::new(store.clone(), keys.clone());
        assert!(checkpointer.checkpoint(100).await.unwrap().is_none(), "{backend}: nothing to checkpoint");
        audit.append(&[record(1, "a", "e"), record(2, "a", "e")]).await.unwrap();
        let c = checkpointer.checkpoint(100).await.unwrap().expect("a checkpoint");
        assert_eq!((c.seq, c.time), (2, 100));
        assert!(checkpointer.checkpoint(101).await.unwrap().is_none(), "{backend}: the head did not move");
        // Another instance checkpointing the same head adds nothing.
        let mut other = Checkpointer::new(store.clone(), keys.clone());
        assert!(other.checkpoint(102).await.unwrap().is_none(), "{backend}");
        audit.insert_checkpoint(&c).await.unwrap();
        assert_eq!(audit.checkpoints().await.unwrap(), vec![c.clone()]);
        assert_eq!(audit.last_checkpoint().await.unwrap(), Some(c.clone()));
        let stored_keys = audit.keys().await.unwrap();
        assert_eq!(stored_keys.len(), 1, "{backend}: the signing key was copied once");
        assert_eq!(stored_keys[0].kid, c.kid);
        audit.insert_key(&stored_keys[0]).await.unwrap();
        assert_eq!(audit.keys().await.unwrap().len(), 1);

        let (verified, _) = verify_store(audit, Some(&master), &mut Quiet).await.unwrap();
        assert_eq!((verified.records, verified.checkpoints), (2, 1), "{backend}");
        // Without the master key, no checkpoint can be trusted.
        let e = verify_store(audit, None, &mut Quiet).await.unwrap_err();
        assert!(e.to_string().contains("master key"), "{backend}: {e}");
        // Nor with another master key.
        let e = verify_store(audit, Some(&MasterKey::generate()), &mut Quiet).await.unwrap_err();
        assert!(e.to_string().contains("does not open under the master key"), "{backend}: {e}");
    }
}

#[tokio::test]
async fn the_writer_batches_and_loses_nothing_at_shutdown() {
    for (store, _dir) in stores().await {
        let backend = store.backend().as_str();
        let (keys, master) = keys_for(&store).await;
        let settings = WriterSettings { batch_size: 64, ..Default::default() };
        let audit = Audit::durable(store.clone(), settings, Some(keys));
        let mut rx = audit.subscribe();
        for i in 0..300 {
            audit.record(
                AuditEvent::ForgedProxyHeader { header: format!("x-{i}") },
                AuditContext { ip: Some("192.0.2.1".into()), acr: Some("eidas1".into()), ..Default::default() },
            );
        }
        assert!(rx.try_recv().is_ok(), "{backend}: subscribers still get records");
        audit.flush().await;
        assert_eq!(audit.backlog(), 0, "{backend}");
        assert_eq!(store.audit().snapshot().await.unwrap().head_seq, 300, "{backend}");
        for i in 0..50 {
            audit.record(AuditEvent::ForgedProxyHeader { header: format!("late-{i}") }, AuditContext::default());
        }
        audit.shutdown().await;
        let all = store.audit().records_from(1, 1000).await.unwrap();
        assert_eq!(all.len(), 350, "{backend}: every record is written at shutdown");
        let first = &all[0];
        assert_eq!((first.event.as_str(), first.outcome.as_str()), ("forged_proxy_header", "failure"));
        assert_eq!((first.acr.as_deref(), first.ip.as_deref()), (Some("eidas1"), Some("192.0.2.1")));
        assert_eq!(first.details, r#"{"header":"x-0"}"#, "{backend}: details without the event tag");
        let last_checkpoint = store.audit().last_checkpoint().await.unwrap().expect("a checkpoint at shutdown");
        assert_eq!(last_checkpoint.seq, 350, "{backend}");
        verify_store(store.audit(), Some(&master), &mut Quiet).await.unwrap();
    }
}

/// Two instances (two pools, two writers) on one PostgreSQL append concurrently to one chain.
#[tokio::test]
async fn concurrent_writers_on_postgresql_form_one_chain() {
    let Some(url) = crate::testing::postgres_schema_url().await else { return };
    let a = crate::store::connect_with(&url, 4).await.unwrap();
    let b = crate::store::connect_with(&url, 4).await.unwrap();
    let (keys, master) = keys_for(&a).await;
    let settings =
        WriterSettings { batch_size: 16, flush_interval: std::time::Duration::from_millis(1), ..Default::default() };
    let writer_a = Audit::durable(a.clone(), settings.clone(), Some(keys.clone()));
    let writer_b = Audit::durable(b.clone(), settings, Some(keys));
    let record = |audit: &Audit, who: &str, i: usize| {
        audit.record(AuditEvent::ForgedProxyHeader { header: format!("{who}-{i}") }, AuditContext::default())
    };
    for i in 0..400 {
        record(&writer_a, "a", i);
        record(&writer_b, "b", i);
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    tokio::join!(writer_a.shutdown(), writer_b.shutdown());
    let all = a.audit().records_from(1, 10_000).await.unwrap();
    assert_eq!(all.len(), 800);
    assert!(all.iter().any(|r| r.details.contains("\"a-")) && all.iter().any(|r| r.details.contains("\"b-")));
    let (verified, _) = verify_store(b.audit(), Some(&master), &mut Quiet).await.unwrap();
    assert_eq!((verified.records, verified.last_seq), (800, 800));
}

#[tokio::test]
async fn purge_archives_then_leaves_a_verifiable_log() {
    for (store, dir) in stores().await {
        let backend = store.backend().as_str();
        let (keys, master) = keys_for(&store).await;
        let audit = store.audit();
        let batch: Vec<_> = (1..=30).map(|n| record(n, "acc", "token_issued")).collect();
        audit.append(&batch[..20]).await.unwrap();
        Checkpointer::new(store.clone(), keys.clone()).checkpoint(1).await.unwrap();
        audit.append(&batch[20..]).await.unwrap();
        Checkpointer::new(store.clone(), keys.clone()).checkpoint(2).await.unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let _keep = dir;
        let path = tmp.path().join("first.jsonl");
        // Records 1..=10 (time < 1_700_000_011).
        let summary = archive::purge(&store, &keys, 1_700_000_011, &path, 3).await.unwrap().expect("a purge");
        assert_eq!((summary.records, summary.first_seq, summary.last_seq), (10, 1, 10), "{backend}");
        assert!(archive::purge(&store, &keys, 1_700_000_011, &tmp.path().join("x"), 4).await.unwrap().is_none());
        assert!(
            archive::purge(&store, &keys, 1_700_000_016, &path, 4).await.is_err(),
            "{backend}: an existing archive is never overwritten"
        );
        let anchors = audit.anchors().await.unwrap();
        assert_eq!(anchors.len(), 1);
        assert_eq!(anchors[0].archive_sha256, summary.archive_sha256);
        assert_eq!(audit.snapshot().await.unwrap().min_seq, Some(11));
        let (verified, _) = verify_store(audit, Some(&master), &mut Quiet).await.unwrap();
        assert_eq!((verified.records, verified.first_seq, verified.anchor_seq), (20, Some(11), Some(10)), "{backend}");
        // A second purge starts from the anchor; its archive carries the previous anchor.
        let second = tmp.path().join("second.jsonl");
        let summary = archive::purge(&store, &keys, 1_700_000_026, &second, 5).await.unwrap().unwrap();
        assert_eq!((summary.first_seq, summary.last_seq), (11, 25), "{backend}");
        let (verified, _) = verify_store(audit, Some(&master), &mut Quiet).await.unwrap();
        assert_eq!((verified.records, verified.first_seq), (5, Some(26)), "{backend}");
        assert!(audit.checkpoints().await.unwrap().iter().all(|c| c.seq > 25), "{backend}: covered checkpoints go");
        // The archives verify on their own, and detect tampering.
        let (archived, _) = archive::verify_archive(&path, Some(&master)).unwrap();
        assert_eq!((archived.records, archived.last_seq), (10, 10));
        let (archived, _) = archive::verify_archive(&second, Some(&master)).unwrap();
        assert_eq!((archived.records, archived.first_seq, archived.checkpoints), (15, Some(11), 1), "{backend}");
        let text = std::fs::read_to_string(&second).unwrap();
        let tampered = tmp.path().join("tampered.jsonl");
        std::fs::write(&tampered, text.replacen("\"token_issued\"", "\"token_revoked\"", 1)).unwrap();
        let e = archive::verify_archive(&tampered, Some(&master)).unwrap_err();
        assert_eq!(e.seq(), Some(11), "{backend}: {e}");
        assert!(archive::verify_archive(&second, None).is_err(), "{backend}: signatures need the master key");
        // New records keep linking to the head.
        audit.append(&[record(99, "acc", "late")]).await.unwrap();
        verify_store(audit, Some(&master), &mut Quiet).await.unwrap();
    }
}

/// The dashboard's hourly counts: grouped by hour (`time / 3600`), event and password factor,
/// within `[since, until)`, only for the events asked for.
#[tokio::test]
async fn hourly_counts_group_by_hour_event_and_factor() {
    const HOUR: i64 = 1_700_002_800 / 3600; // a whole hour: 472_223
    for (store, _dir) in stores().await {
        let backend = store.backend().as_str();
        let audit = store.audit();
        let at = |offset: i64, event: &str, details: &str| {
            let mut r = record(0, "acc", event);
            r.time = HOUR * 3600 + offset;
            r.details = details.into();
            r
        };
        let password = r#"{"account_id":"acc","factor":"password","login_hash":null,"reason":"bad_password"}"#;
        let code = r#"{"account_id":"acc","factor":"otp","login_hash":null,"reason":"bad_code"}"#;
        audit
            .append(&[
                at(-1, "login_failed", password), // the hour before: outside the window
                at(0, "login_failed", password),  // first second of the first hour
                at(10, "login_failed", code),
                at(20, "login_failed", code),
                at(30, "locked_out", r#"{"factor":"otp","until":0}"#),
                at(3599, "token_issued", "{}"),     // not asked for
                at(3600, "login_failed", password), // second hour
                at(3600 + 5, "alert_raised", r#"{"rule":"r"}"#),
                at(7200, "login_failed", password), // `until`: excluded
            ])
            .await
            .unwrap();
        let events = ["login_failed", "locked_out", "alert_raised"];
        let counts = audit.hourly_counts(&events, HOUR * 3600, (HOUR + 2) * 3600).await.unwrap();
        let count = |hour: i64, event: &str, password_factor: bool, count: i64| HourlyEventCount {
            hour,
            event: event.into(),
            password_factor,
            count,
        };
        assert_eq!(
            counts,
            vec![
                count(HOUR, "locked_out", false, 1),
                count(HOUR, "login_failed", false, 2),
                count(HOUR, "login_failed", true, 1),
                count(HOUR + 1, "alert_raised", false, 1),
                count(HOUR + 1, "login_failed", true, 1),
            ],
            "{backend}"
        );
        assert!(audit.hourly_counts(&[], 0, i64::MAX).await.unwrap().is_empty(), "{backend}");
        let none = audit.hourly_counts(&["login_failed"], 0, HOUR * 3600 - 1).await.unwrap();
        assert!(none.is_empty(), "{backend}: {none:?}");
    }
}

/// Whatever text a record holds comes back byte for byte (the chain hashes the exact text): quotes,
/// backslashes, escapes, control characters, non-ASCII, long values, nulls.
#[tokio::test]
async fn append_keeps_every_text_exactly() {
    for (store, _dir) in stores().await {
        let backend = store.backend().as_str();
        let audit = store.audit();
        let tricky = [
            r#"{"quote":"\"","backslash":"\\","unicode":"\u00e9"}"#.to_string(),
            "tab\tnewline\ncarriage\r bell\u{7} end".to_string(),
            "accents éàü, emoji 🩺, CJK 医生, RTL שלום".to_string(),
            "x".repeat(20_000),
            "[1, 2] {} null true \"not json".to_string(),
        ];
        let batch: Vec<NewAuditRecord> = tricky
            .iter()
            .enumerate()
            .map(|(i, text)| NewAuditRecord {
                user_agent: Some(text.clone()),
                details: text.clone(),
                acr: None,
                client_id: (i % 2 == 0).then(|| text.clone()),
                ..record(i as i64, "acc-τ", "token_issued")
            })
            .collect();
        let stored = audit.append(&batch).await.unwrap();
        let read = audit.records_from(1, 100).await.unwrap();
        assert_eq!(read, stored, "{backend}");
        for (r, text) in read.iter().zip(&tricky) {
            assert_eq!(&r.details, text, "{backend}");
            assert_eq!(r.user_agent.as_ref(), Some(text), "{backend}");
            assert_eq!(r.acr, None, "{backend}");
            assert_eq!(chain::check(r), chain::RecordCheck { personal_ok: Some(true), hash_ok: true }, "{backend}");
        }
        assert_eq!(read[1].client_id, None, "{backend}: null stays null");
        assert_eq!(read[0].pseudonymised_at, None, "{backend}");
    }
}

/// The SQLite URL and, when PostgreSQL is reachable, a fresh schema's URL, for the tests that
/// also need a raw connection beside the store.
async fn urls(dir: &tempfile::TempDir) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())];
    urls.extend(crate::testing::postgres_schema_url().await);
    urls
}

async fn raw_execute(url: &str, sql: &'static str) {
    use sqlx::{Connection, Executor};
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        conn.execute(sql).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        conn.execute(sql).await.unwrap();
    }
}

/// Group commit: with a batching interval far longer than the commit timeout, 50 concurrent
/// committed records all return in time (a committed record does not wait for the interval), and
/// each is in the database when its call returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_records_are_in_the_log_when_the_call_returns() {
    let dir = tempfile::tempdir().unwrap();
    for url in urls(&dir).await {
        let store = crate::store::connect_with(&url, 4).await.unwrap();
        let backend = store.backend().as_str();
        let settings = WriterSettings {
            flush_interval: std::time::Duration::from_secs(10),
            commit_timeout: std::time::Duration::from_secs(3),
            ..Default::default()
        };
        let audit = Arc::new(Audit::durable(store.clone(), settings, None));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let (audit, store) = (audit.clone(), store.clone());
            tasks.spawn(async move {
                let header = format!("committed-{i}");
                audit
                    .record_committed(AuditEvent::ForgedProxyHeader { header: header.clone() }, AuditContext::default())
                    .await
                    .expect("committed in time");
                let all = store.audit().records_from(1, 1000).await.unwrap();
                assert!(all.iter().any(|r| r.details.contains(&header)), "{header} not in the log on return");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap_or_else(|e| panic!("{backend}: {e}"));
        }
        // A plain record queued after them still waits for its batch, and is written all the same.
        audit.record(AuditEvent::ForgedProxyHeader { header: "plain".into() }, AuditContext::default());
        audit.shutdown().await;
        assert_eq!(store.audit().records_from(1, 1000).await.unwrap().len(), 51, "{backend}");
    }
}

/// While the log cannot be written the caller is refused after the commit timeout (so the token
/// it guards is never handed out), the record stays queued, and it is written once the database
/// is back, in order, without a restart.
#[tokio::test]
async fn a_record_not_committed_in_time_is_refused_then_written_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    for url in urls(&dir).await {
        let store = crate::store::connect_with(&url, 2).await.unwrap();
        let backend = store.backend().as_str();
        let settings = WriterSettings { commit_timeout: std::time::Duration::from_millis(300), ..Default::default() };
        let audit = Audit::durable(store.clone(), settings, None);
        audit
            .record_committed(AuditEvent::ForgedProxyHeader { header: "before".into() }, AuditContext::default())
            .await
            .expect("written while the database works");
        raw_execute(&url, "ALTER TABLE audit_records RENAME TO audit_records_away").await;
        let refused = audit
            .record_committed(AuditEvent::ForgedProxyHeader { header: "during".into() }, AuditContext::default())
            .await;
        assert!(refused.is_err(), "{backend}: a record that cannot be written is not reported committed");
        raw_execute(&url, "ALTER TABLE audit_records_away RENAME TO audit_records").await;
        audit.flush().await;
        let all = store.audit().records_from(1, 1000).await.unwrap();
        let headers: Vec<_> = all.iter().map(|r| r.details.as_str()).collect();
        assert_eq!(headers, [r#"{"header":"before"}"#, r#"{"header":"during"}"#], "{backend}");
        audit.shutdown().await;
    }
}

//! The tamper-evident audit log, end to end, on SQLite and PostgreSQL: records written by a real
//! server's writer, then modified, deleted, inserted and truncated directly in the database —
//! `habilis audit verify` (the real binary) fails naming the record; the untouched log, and a log
//! with a pseudonymised person, verify; a checkpoint signed by a foreign key is refused. Also:
//! graceful shutdown loses no event, two instances on one PostgreSQL form one chain, and the admin
//! API's search and export.

use std::time::Duration;

use habilis_e2e::admin::AdminEnv;
use habilis_e2e::{Storage, TestEnv, run_habilis, test_config};
use habilis_idp::audit::{Audit, AuditContext, AuditEvent, WriterSettings, chain, checkpoint};
use habilis_idp::config::{Config, SigningAlg};
use habilis_idp::store::{AuditCheckpoint, AuditKey, NewAuditRecord, SharedStore};
use reqwest::Method;

habilis_e2e::on_both_storages!(
    tampering_is_detected_and_names_the_record,
    export_and_purge_keep_the_log_verifiable,
    graceful_shutdown_writes_every_event,
    admin_api_searches_and_exports_for_auditors_only,
);

/// The environment under which the CLI finds the server's data.
fn cli_env(config: &Config) -> Vec<(&'static str, String)> {
    let mut env = vec![("HABILIS_DATA_DIR", config.data_dir.display().to_string())];
    if let Some(url) = &config.storage.database_url {
        env.push(("HABILIS_STORAGE__DATABASE_URL", url.clone()));
    }
    if let Some(key) = &config.keys.master_key {
        env.push(("HABILIS_KEYS__MASTER_KEY", key.clone()));
    }
    env
}

/// `habilis ARGS`: success, and stdout + stderr.
fn habilis(args: &[&str], env: &[(&'static str, String)]) -> (bool, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = run_habilis(args, &env, None);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// `habilis audit verify` must fail naming record `seq`, with `words` in the explanation.
#[track_caller]
fn fails_at(env: &[(&'static str, String)], seq: i64, words: &str) {
    let (ok, out) = habilis(&["audit", "verify"], env);
    assert!(!ok, "verification should fail at record {seq}: {out}");
    assert!(out.contains("AUDIT LOG VERIFICATION FAILED"), "{out}");
    assert!(out.contains(&format!("record {seq} (")), "expected record {seq} to be named: {out}");
    assert!(out.contains(words), "expected `{words}` in: {out}");
}

#[track_caller]
fn verifies(env: &[(&'static str, String)]) -> String {
    let (ok, out) = habilis(&["audit", "verify"], env);
    assert!(ok, "the log should verify: {out}");
    assert!(out.contains("audit log verified"), "{out}");
    out
}

/// Direct access to the database, as an attacker with write access to it would have.
enum Db {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Db {
    async fn open(config: &Config) -> Db {
        use sqlx::Connection;
        match &config.storage.database_url {
            Some(url) => Db::Pg(sqlx::PgConnection::connect(url).await.expect("PostgreSQL")),
            None => Db::Sqlite(sqlx::SqliteConnection::connect(&config.database_url()).await.expect("SQLite")),
        }
    }

    async fn exec(&mut self, sql: &str) {
        use sqlx::Executor;
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Db::Sqlite(c) => c.execute(sql).await.map(|_| ()),
            Db::Pg(c) => c.execute(sql).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn scalar(&mut self, sql: &str) -> String {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Db::Sqlite(c) => sqlx::query_scalar::<_, String>(sql).fetch_one(c).await,
            Db::Pg(c) => sqlx::query_scalar::<_, String>(sql).fetch_one(c).await,
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Keeps a copy of the audit tables, to undo a tampering.
    async fn save(&mut self) {
        for table in ["audit_records", "audit_head", "audit_checkpoints", "audit_keys"] {
            self.exec(&format!("CREATE TABLE saved_{table} AS SELECT * FROM {table}")).await;
        }
    }

    async fn restore(&mut self) {
        for table in ["audit_records", "audit_head", "audit_checkpoints", "audit_keys"] {
            self.exec(&format!("DELETE FROM {table}")).await;
            self.exec(&format!("INSERT INTO {table} SELECT * FROM saved_{table}")).await;
        }
    }
}

/// A server whose data directory (SQLite file, master key) outlives it, so that the CLI can verify
/// its log once it stopped (the directory goes when the returned guard is dropped).
async fn server(storage: Storage, tweak: impl FnOnce(&mut Config)) -> Option<(TestEnv, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("a data directory");
    let mut config = test_config(storage, dir.path()).await?;
    tweak(&mut config);
    Some((TestEnv::from_config(storage, config, None).await, dir))
}

/// Records `n` events through the server's writer, about `account`.
fn record_events(audit: &Audit, account: &str, n: usize) {
    for i in 0..n {
        let event = if i % 3 == 0 {
            AuditEvent::WebauthnRegistered { account_id: account.into(), credential_id: format!("cred-{i}") }
        } else {
            AuditEvent::ForgedProxyHeader { header: format!("x-forged-{i}") }
        };
        let context = AuditContext {
            ip: Some("192.0.2.44".into()),
            user_agent: Some("test agent".into()),
            request_id: Some(format!("req-{i}")),
            client_id: Some("rp".into()),
            acr: Some("eidas1".into()),
        };
        audit.record(event, context);
    }
}

/// How many of `records` [`record_events`] made. The server records events of its own besides: its
/// first signing keys at start, and the alert that the forged proxy headers raise.
fn recorded_by_the_test(records: &[habilis_idp::store::StoredAuditRecord]) -> usize {
    records.iter().filter(|r| matches!(r.event.as_str(), "webauthn_registered" | "forged_proxy_header")).count()
}

async fn tampering_is_detected_and_names_the_record(storage: Storage) {
    let Some((env, _dir)) = server(storage, |_| {}).await else { return };
    let config: Config = (*env.state().config).clone();
    let store: SharedStore = env.state().store.clone();
    let keys = env.state().keys.clone();
    record_events(&env.state().audit, "acc-victim", 200);
    env.state().audit.flush().await;
    // A checkpoint in the middle (the writer writes one every audit.checkpoint_interval), then
    // more records and the last checkpoint, at shutdown.
    let middle = checkpoint::Checkpointer::new(store.clone(), keys.clone())
        .checkpoint(habilis_idp::unix_now())
        .await
        .expect("a checkpoint")
        .expect("the head moved");
    record_events(&env.state().audit, "acc-other", 100);
    env.stop().await;
    let snapshot = store.audit().snapshot().await.unwrap();
    let head = snapshot.head_seq;
    assert!(head >= 300, "{head}");
    let last = store.audit().last_checkpoint().await.unwrap().expect("a checkpoint at shutdown");
    assert_eq!(last.seq, head, "the shutdown checkpoint covers every record");

    let cli = cli_env(&config);
    let out = verifies(&cli);
    assert!(out.contains(&format!("{head} record(s)")), "{out}");
    let mut db = Db::open(&config).await;
    db.save().await;

    // UPDATE a chained field, then a personal one.
    db.exec("UPDATE audit_records SET outcome = 'success' WHERE seq = 57").await;
    fails_at(&cli, 57, "does not match its hash");
    db.restore().await;
    db.exec("UPDATE audit_records SET actor = 'acc-innocent', subject = 'acc-innocent' WHERE seq = 58").await;
    fails_at(&cli, 58, "personal_digest");
    db.restore().await;
    // UPDATE with the hashes recomputed (the attacker knows the algorithm): the next link breaks.
    let record_60 = store.audit().records_from(60, 1).await.unwrap().remove(0);
    let mut forged = record_60.clone();
    forged.time -= 3600;
    let rehash = chain::record_hash(&chain::Link {
        prev_hash: &forged.prev_hash,
        seq: forged.seq,
        time: forged.time,
        event: &forged.event,
        outcome: &forged.outcome,
        client_id: forged.client_id.as_deref(),
        request_id: forged.request_id.as_deref(),
        acr: forged.acr.as_deref(),
        personal_digest: &forged.personal_digest,
    });
    db.exec(&format!("UPDATE audit_records SET time = {}, hash = '{rehash}' WHERE seq = 60", forged.time)).await;
    fails_at(&cli, 61, "prev_hash is not the hash of record 60");
    db.restore().await;

    // DELETE one record.
    db.exec("DELETE FROM audit_records WHERE seq = 120").await;
    fails_at(&cli, 121, "record 120 is missing");
    db.restore().await;
    // DELETE the first one.
    db.exec("DELETE FROM audit_records WHERE seq = 1").await;
    fails_at(&cli, 2, "record 1 is missing");
    db.restore().await;

    // INSERT one, correctly linked and hashed, after the head.
    let tail = store.audit().records_from(head, 1).await.unwrap().remove(0);
    let forged = NewAuditRecord {
        time: tail.time,
        event: "admin_role_changed".into(),
        outcome: "info".into(),
        client_id: None,
        request_id: None,
        acr: None,
        actor: Some("cli".into()),
        subject: Some("acc-attacker".into()),
        ip: None,
        user_agent: None,
        details: r#"{"after":"platform_admin"}"#.into(),
    };
    let digest = chain::digest_of(&forged);
    let linked = chain::link(head, &tail.hash, &[forged], &[digest]).remove(0);
    db.exec(&format!(
        "INSERT INTO audit_records (seq, time, event, outcome, actor, subject, details, personal_digest, prev_hash, hash) \
         VALUES ({}, {}, 'admin_role_changed', 'info', 'cli', 'acc-attacker', '{}', '{}', '{}', '{}')",
        linked.seq, linked.time, linked.details, linked.personal_digest, linked.prev_hash, linked.hash
    ))
    .await;
    fails_at(&cli, head + 1, "inserted outside Habilis");
    // ... even when the attacker also moves the head: the chain is fine, but nothing signed it;
    // the next checkpoint would. Here the head row names it: that alone is not detectable, which
    // is why checkpoints are frequent and logged outside the database.
    db.restore().await;

    // Rewrite an event's own fields (details are personal data: covered by personal_digest).
    db.exec("UPDATE audit_records SET details = '{\"header\":\"x-innocent\"}' WHERE seq = 150").await;
    fails_at(&cli, 150, "personal_digest");
    db.restore().await;

    // TRUNCATE the tail and fix up the head: the tail checkpoint is beyond the log.
    let cut = head - 20;
    let cut_hash = db.scalar(&format!("SELECT hash FROM audit_records WHERE seq = {cut}")).await;
    db.exec(&format!("DELETE FROM audit_records WHERE seq > {cut}")).await;
    db.exec(&format!("UPDATE audit_head SET seq = {cut}, hash = '{cut_hash}'")).await;
    fails_at(&cli, cut, "truncation");
    // ... and with that checkpoint deleted too, the earlier one still is beyond a deeper cut.
    let cut = middle.seq - 5;
    let cut_hash = db.scalar(&format!("SELECT hash FROM audit_records WHERE seq = {cut}")).await;
    db.exec(&format!("DELETE FROM audit_records WHERE seq > {cut}")).await;
    db.exec(&format!("DELETE FROM audit_checkpoints WHERE seq > {}", middle.seq)).await;
    db.exec(&format!("UPDATE audit_head SET seq = {cut}, hash = '{cut_hash}'")).await;
    fails_at(&cli, cut, &format!("checkpoint exists at seq {}", middle.seq));
    db.restore().await;
    // TRUNCATE without touching the head.
    db.exec(&format!("DELETE FROM audit_records WHERE seq > {}", head - 3)).await;
    fails_at(&cli, head - 3, "cut off");
    db.restore().await;
    verifies(&cli);

    // A checkpoint signed by a foreign key (another deployment's, with its key copied in).
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign_store = habilis_idp::store::connect_with(
        &format!("sqlite://{}?mode=rwc", foreign_dir.path().join("f.db").display()),
        1,
    )
    .await
    .unwrap();
    let mut foreign_config = Config::default();
    foreign_config.keys.algorithms = vec![SigningAlg::ES256];
    let foreign_keys = habilis_idp::keys::KeyManager::start(
        foreign_store.clone(),
        habilis_idp::keys::MasterKey::generate(),
        &foreign_config,
    )
    .await
    .unwrap();
    let target = store.audit().records_from(100, 1).await.unwrap().remove(0);
    let claims = checkpoint::checkpoint_claims(100, &target.hash, target.time);
    let jws = foreign_keys.sign(None, checkpoint::CHECKPOINT_TYP, &claims).unwrap();
    let kid = checkpoint::kid_of(&jws).unwrap();
    let record = foreign_store.list_signing_keys().await.unwrap().into_iter().find(|k| k.kid == kid).unwrap();
    store
        .audit()
        .insert_key(&AuditKey {
            kid: record.kid,
            alg: record.alg,
            public_jwk: record.public_jwk,
            private_sealed: record.private_sealed,
            created_at: 0,
        })
        .await
        .unwrap();
    store
        .audit()
        .insert_checkpoint(&AuditCheckpoint { seq: 100, hash: target.hash, time: target.time, kid, jws })
        .await
        .unwrap();
    let (ok, out) = habilis(&["audit", "verify"], &cli);
    assert!(!ok, "{out}");
    assert!(out.contains("checkpoint at seq 100 is not valid"), "{out}");
    assert!(out.contains("does not open under the master key"), "{out}");
    db.restore().await;

    // A person erased: their records pseudonymised (with the erasure record), the log verifies;
    // marking another record pseudonymised to rewrite it does not.
    let ids = vec!["acc-victim".to_string()];
    let changed =
        store.audit().pseudonymise("acc-victim", "pseudo-victim", &ids, habilis_idp::unix_now()).await.unwrap();
    assert!(changed >= 60, "{changed}");
    let writer = Audit::durable(store.clone(), WriterSettings::default(), None);
    writer.record(
        AuditEvent::AccountDeleted {
            pseudonym: "pseudo-victim".into(),
            reason: "erasure".into(),
            actor: "cli".into(),
            relationships_ended: 0,
        },
        AuditContext::default(),
    );
    writer.shutdown().await;
    let out = verifies(&cli);
    assert!(out.contains(&format!("{changed} pseudonymised")), "{out}");
    let innocent = db.scalar("SELECT CAST(MAX(seq) AS TEXT) FROM audit_records WHERE subject = 'acc-other'").await;
    db.exec(&format!(
        "UPDATE audit_records SET actor = 'acc-attacker', subject = 'someone-else', pseudonymised_at = 1 WHERE seq = {innocent}"
    ))
    .await;
    fails_at(&cli, innocent.parse().unwrap(), "no erasure record");
}

/// `habilis audit export` writes JSON lines that chain (each `prev_hash` is the previous line's
/// `hash`); `habilis audit purge` archives the old records, and both the remaining log and the
/// archive verify on their own; a touched archive does not.
async fn export_and_purge_keep_the_log_verifiable(storage: Storage) {
    let Some((env, dir)) = server(storage, |_| {}).await else { return };
    let config: Config = (*env.state().config).clone();
    let cli = cli_env(&config);
    record_events(&env.state().audit, "acc-old", 60);
    env.state().audit.flush().await;
    // Records are timed to the second: the purge limit falls between the two batches.
    let limit = habilis_idp::unix_now() + 1;
    while habilis_idp::unix_now() <= limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    record_events(&env.state().audit, "acc-new", 30);
    let store = env.state().store.clone();
    env.stop().await;
    let head = store.audit().snapshot().await.unwrap().head_seq;

    let export = dir.path().join("export.jsonl");
    let (ok, out) =
        habilis(&["audit", "export", "--since", "1h", "--format", "jsonl", "-o", &export.display().to_string()], &cli);
    assert!(ok, "{out}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len() as i64, head, "every record of the last hour: {out}");
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["seq"].as_i64(), pair[0]["seq"].as_i64().map(|s| s + 1));
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "the export chains");
    }
    let (ok, out) = habilis(&["audit", "export", "--since", "1h", "--event", "webauthn_registered"], &cli);
    assert!(ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with('{')).count(), 30, "60 + 30 events, one in three: {out}");
    let (ok, out) = habilis(&["audit", "export", "--since", "yesterday-ish"], &cli);
    assert!(!ok && out.contains("--since"), "a bad time is named: {out}");

    let archive = dir.path().join("archive.jsonl");
    let archive_arg = archive.display().to_string();
    let before = habilis_idp::audit::cli::format_time(limit);
    let (ok, out) = habilis(&["audit", "purge", "--before", &before, "--archive", &archive_arg], &cli);
    assert!(ok, "purge: {out}");
    let remaining = store.audit().records_from(1, 10_000).await.unwrap();
    assert!(remaining.iter().all(|r| r.time >= limit), "only records from the limit on remain");
    assert!(remaining.iter().any(|r| r.subject.as_deref() == Some("acc-new")));
    assert!(!remaining.iter().any(|r| r.subject.as_deref() == Some("acc-old")), "the old records went");
    let out = verifies(&cli);
    assert!(out.contains("audit log verified"), "{out}");
    let (ok, out) = habilis(&["audit", "verify", "--archive", &archive_arg], &cli);
    assert!(ok, "the archive verifies on its own: {out}");
    // More to purge (everything up to now), into the same archive file: refused, nothing lost.
    let now = habilis_idp::audit::cli::format_time(habilis_idp::unix_now());
    let (ok, out) = habilis(&["audit", "purge", "--before", &now, "--archive", &archive_arg], &cli);
    assert!(!ok && out.contains("archive"), "an existing archive is never overwritten: {out}");
    let after = store.audit().records_from(1, 10_000).await.unwrap();
    assert_eq!(after.first().map(|r| r.seq), remaining.first().map(|r| r.seq), "nothing more was purged");

    // One record of the archive altered: its verification fails.
    let text = std::fs::read_to_string(&archive).unwrap();
    let touched = text.replacen("acc-old", "acc-xyz", 1);
    assert_ne!(text, touched);
    std::fs::write(&archive, touched).unwrap();
    let (ok, out) = habilis(&["audit", "verify", "--archive", &archive_arg], &cli);
    assert!(!ok && out.contains("AUDIT LOG VERIFICATION FAILED"), "{out}");
}

async fn graceful_shutdown_writes_every_event(storage: Storage) {
    // Nothing is written before the shutdown unless it drains the queue: batches close only at
    // 10,000 records or after 10 s.
    let Some((env, _dir)) = server(storage, |config| {
        config.audit.batch_size = 10_000;
        config.audit.flush_interval = Duration::from_secs(10);
    })
    .await
    else {
        return;
    };
    let config: Config = (*env.state().config).clone();
    let store = env.state().store.clone();
    // What the server recorded at start (e.g. its first signing keys) is written first.
    env.state().audit.flush().await;
    let before = store.audit().snapshot().await.unwrap().head_seq;
    record_events(&env.state().audit, "acc-1", 1_500);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(env.state().audit.backlog() > 0, "the events wait in the queue");
    env.stop().await;
    let snapshot = store.audit().snapshot().await.unwrap();
    let written = store.audit().records_from(before + 1, 10_000).await.unwrap();
    assert_eq!(recorded_by_the_test(&written), 1_500, "every event was written at shutdown");
    assert_eq!(store.audit().last_checkpoint().await.unwrap().map(|c| c.seq), Some(snapshot.head_seq));
    let out = verifies(&cli_env(&config));
    assert!(out.contains("1 checkpoint(s)") || out.contains("checkpoint(s)"), "{out}");
}

/// Two instances on one PostgreSQL database, recording at the same time: one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgresql_form_one_chain() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let Some(mut config_a) = test_config(Storage::Services, dir_a.path()).await else { return };
    let master = habilis_idp::keys::MasterKey::generate().to_base64().to_string();
    config_a.keys.master_key = Some(master);
    config_a.audit.batch_size = 32;
    config_a.audit.flush_interval = Duration::from_millis(1);
    let mut config_b = config_a.clone();
    config_b.data_dir = dir_b.path().to_path_buf();
    let a = TestEnv::from_config(Storage::Services, config_a.clone(), None).await;
    let b = TestEnv::from_config(Storage::Services, config_b, None).await;
    let (audit_a, audit_b) = (a.state().audit.clone(), b.state().audit.clone());
    let write = |audit: std::sync::Arc<Audit>, who: &'static str| {
        tokio::spawn(async move {
            for round in 0..10 {
                record_events(&audit, who, 50);
                if round % 2 == 0 {
                    audit.flush().await;
                }
            }
        })
    };
    let (ra, rb) = tokio::join!(write(audit_a, "acc-a"), write(audit_b, "acc-b"));
    ra.unwrap();
    rb.unwrap();
    let store = a.state().store.clone();
    tokio::join!(a.stop(), b.stop());
    let all = store.audit().records_from(1, 10_000).await.unwrap();
    assert_eq!(recorded_by_the_test(&all), 1_000);
    let records: Vec<_> = all.into_iter().filter(|r| r.event == "webauthn_registered").collect();
    // Interleaved: both instances' batches alternate in one chain.
    let owners: Vec<&str> = records.iter().filter_map(|r| r.subject.as_deref()).collect();
    let switches = owners.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches > 2, "the two writers interleaved ({switches} switches)");
    let total = store.audit().snapshot().await.unwrap().head_seq;
    let out = verifies(&cli_env(&config_a));
    assert!(out.contains(&format!("{total} record(s)")), "{out}");
}

async fn admin_api_searches_and_exports_for_auditors_only(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let audit = &ae.env.state().audit;
    record_events(audit, &ae.bob_id, 30);
    audit.flush().await;
    let mut events = audit.subscribe();

    // Newest first, filtered, paged with cursors.
    let page = ae.call(Method::GET, "/audit?event=forged_proxy_header&limit=7", &ae.auditor, None).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    assert!(items.iter().all(|r| r["event"] == "forged_proxy_header"));
    assert!(items[0]["seq"].as_i64() > items[1]["seq"].as_i64(), "newest first");
    assert_eq!(items[0]["details"]["header"].as_str().map(|h| h.starts_with("x-forged-")), Some(true));
    assert_eq!(items[0]["acr"], "eidas1");
    let mut seen = items.len();
    let mut cursor = page.body["next_cursor"].as_str().map(str::to_string);
    while let Some(c) = cursor {
        let next = ae
            .call(Method::GET, &format!("/audit?event=forged_proxy_header&limit=7&cursor={c}"), &ae.auditor, None)
            .await;
        assert_eq!(next.status, 200, "{:?}", next.body);
        seen += next.body["items"].as_array().unwrap().len();
        cursor = next.body["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, 20, "every forged_proxy_header record, once");
    let about_bob = ae
        .call(Method::GET, &format!("/audit?account_id={}&after_seq=0&limit=200", ae.bob_id), &ae.platform, None)
        .await;
    assert_eq!(about_bob.status, 200, "{:?}", about_bob.body);
    let items = about_bob.body["items"].as_array().unwrap();
    assert!(items.len() >= 10);
    assert!(items[0]["seq"].as_i64() < items[1]["seq"].as_i64(), "after_seq: in seq order");
    let bad = ae.call(Method::GET, "/audit?outcome=perhaps", &ae.auditor, None).await;
    habilis_e2e::admin::refused(&bad, 400, "invalid_request", "outcome");

    // Export: JSON lines that re-hash to the chain.
    let url = ae.env.url("/api/admin/v1/audit/export?since=0&event=webauthn_registered&limit=4");
    let response = ae.http.get(&url).bearer_auth(&ae.auditor).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let next: i64 = response.headers()["habilis-next-after-seq"].to_str().unwrap().parse().unwrap();
    let text = response.text().await.unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["seq"].as_i64(), Some(next));
    for line in &lines {
        let record: habilis_idp::audit::archive::RecordLine = serde_json::from_value(line.clone()).unwrap();
        assert!(chain::check(&record.into()).hash_ok, "an exported line re-hashes to its chain hash");
    }
    let rest = ae
        .http
        .get(ae.env.url(&format!("/api/admin/v1/audit/export?event=webauthn_registered&after_seq={next}")))
        .bearer_auth(&ae.platform)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    assert!(rest.headers().get("habilis-next-after-seq").is_none(), "the last part");
    assert_eq!(rest.text().await.unwrap().lines().count(), 6);
    let exported = habilis_e2e::drain_audit(&mut events);
    assert!(
        exported.iter().any(|r| matches!(&r.event, AuditEvent::AuditExported { actor, records: 4, .. } if actor.contains(&ae.auditor_id))),
        "exports are audited: {exported:?}"
    );

    // Organisation administrators and accounts without a role are refused; refusals are audited.
    for path in ["/audit", "/audit/export"] {
        let refused = ae.call(Method::GET, path, &ae.alice, None).await;
        habilis_e2e::admin::refused(&refused, 403, "access_denied", "audit log");
    }
    let denials = habilis_e2e::admin::denials(&habilis_e2e::drain_audit(&mut events));
    assert_eq!(denials.len(), 2, "{denials:?}");
    assert!(denials.iter().all(|(actor, operation, _)| actor.contains(&ae.alice_id) && operation == "read"));
    let professional = habilis_e2e::admin::admin_token(&ae.env, &ae.bob_id, "audit");
    let refused = ae.call(Method::GET, "/audit", &professional, None).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
}

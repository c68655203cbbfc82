//! `habilis backup` → wipe → `habilis restore`, through the real binary, on SQLite (an online backup
//! taken while the server runs) and on PostgreSQL (pg_dump / pg_restore of the test's schema): the
//! accounts, clients (their secrets still work), relationships and the audit chain come back.

use habilis_e2e::habilitations::{EXPERT, HabilitationEnv, TELECONSULT, nir};
use habilis_e2e::{Storage, TestEnv, backchannel_http, post_form, run_habilis};
use habilis_idp::config::Config;

habilis_e2e::on_both_storages!(backup_wipe_restore_keeps_accounts_clients_relationships_and_audit);

/// The environment under which the CLI finds the test server's data.
fn cli_env(config: &Config) -> Vec<(&'static str, String)> {
    let mut env = vec![("HABILIS_DATA_DIR", config.data_dir.display().to_string())];
    if let Some(url) = &config.storage.database_url {
        env.push(("HABILIS_STORAGE__DATABASE_URL", url.clone()));
    }
    env
}

fn habilis(args: &[&str], env: &[(&'static str, String)]) -> (bool, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = run_habilis(args, &env, None);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

async fn wipe(config: &Config) {
    match &config.storage.database_url {
        None => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(config.data_dir.join(format!("habilis.db{suffix}")));
            }
            assert!(!config.data_dir.join("habilis.db").exists());
        }
        Some(url) => {
            use sqlx::{Connection, Executor};
            let mut connection = sqlx::PgConnection::connect(url).await.expect("PostgreSQL");
            let schema: String =
                sqlx::query_scalar("SELECT current_schema()").fetch_one(&mut connection).await.expect("a schema");
            let drop = format!("DROP SCHEMA \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\"");
            connection.execute(sqlx::AssertSqlSafe(drop)).await.expect("wipe the schema");
        }
    }
}

async fn backup_wipe_restore_keeps_accounts_clients_relationships_and_audit(storage: Storage) {
    if storage == Storage::Services && !pg_tools_present() {
        // The README's test command installs them (`.ci/setup test`); a bare machine may lack them.
        assert!(!habilis_idp::testing::in_ci(), "pg_dump and pg_restore are required under CI");
        eprintln!("skipping the PostgreSQL backup test: pg_dump/pg_restore are not installed");
        return;
    }
    let data = tempfile::tempdir().expect("a data directory");
    let data_dir = data.path().to_path_buf();
    let Some(he) = HabilitationEnv::start_with(storage, |config| config.data_dir = data_dir.clone()).await else {
        return;
    };
    let config: Config = (*he.env.state().config).clone();
    let expert_id = he.add_professional(EXPERT, "Emma", "Expert").await;
    let app = he.app_token(TELECONSULT, "relationships").await;
    let created = he.relate(&app, EXPERT, &HabilitationEnv::ins(&nir("1750599123456")), "treating").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let relationship_id = created.body["id"].as_str().expect("a relationship id").to_string();
    let client_auth = he.auth(TELECONSULT);
    let env = cli_env(&config);
    // The relationship's creation is in the durable log before the backup is taken.
    he.env.state().audit.flush().await;

    let backup_file = data.path().join("habilis.backup");
    let backup_arg = backup_file.display().to_string();
    if storage == Storage::Embedded {
        // SQLite: online, while the server keeps running.
        let (ok, out) = habilis(&["backup", &backup_arg], &env);
        assert!(ok, "backup: {out}");
        assert!(out.contains("accounts"), "the summary counts accounts: {out}");
        stop(he.env).await;
    } else {
        stop(he.env).await;
        let (ok, out) = habilis(&["backup", &backup_arg], &env);
        assert!(ok, "backup: {out}");
    }
    let (ok, out) = habilis(&["backup", &backup_arg], &env);
    assert!(!ok && out.contains("--force"), "an existing backup is not overwritten silently: {out}");

    wipe(&config).await;
    let (ok, out) = habilis(&["restore", &data.path().join("missing.backup").display().to_string()], &env);
    assert!(!ok && out.contains("missing.backup"), "a missing file is named: {out}");
    let (ok, out) = habilis(&["restore", &backup_arg], &env);
    assert!(ok, "restore: {out}");
    let (ok, out) = habilis(&["restore", &backup_arg], &env);
    assert!(!ok && out.contains("--force"), "restoring over data needs --force: {out}");

    let he = TestEnv::from_config(storage, config.clone(), None).await;
    let state = he.state();
    let expert = state.store.account_by_login(EXPERT).await.expect("the store").expect("the expert is back");
    assert_eq!(expert.id, expert_id);
    assert!(state.store.client_by_id(TELECONSULT).await.expect("the store").is_some(), "the client is back");
    let relationship =
        state.store.habilitations().relationship(&relationship_id).await.expect("the store").expect("relationship");
    assert_eq!(relationship.professional_id, expert_id);
    let created =
        habilis_idp::store::AuditQuery { event: Some("relationship_created".into()), limit: 10, ..Default::default() };
    let records = state.store.audit().search(&created).await.expect("the audit log");
    assert!(
        records.iter().any(|r| r.details.contains(&relationship_id)),
        "the relationship's creation is in the restored audit log: {records:?}"
    );
    // The client's secret (stored hashed) and the signing keys (sealed under the master key, which
    // stayed in the data directory) work as before.
    let token = post_form(
        &backchannel_http(),
        &he.url("/token"),
        &client_auth,
        &[("grant_type", "client_credentials"), ("scope", "relationships")],
    )
    .await;
    assert_eq!(token.status, 200, "the restored client still authenticates: {:?}", token.body);
    stop(he).await;

    let (ok, out) = habilis(&["audit", "verify"], &env);
    assert!(ok, "the restored audit chain verifies: {out}");
    assert!(out.contains("audit log verified"), "{out}");
}

async fn stop(env: TestEnv) {
    env.stop().await;
}

fn pg_tools_present() -> bool {
    ["pg_dump", "pg_restore"].iter().all(|tool| {
        std::process::Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
    })
}

//! The habilitation commands of the `habilis` binary, on the embedded SQLite database and on
//! PostgreSQL: `habilis profile put|list|show|remove` (Cedar-validated) and
//! `habilis import professionals FILE [--dry-run]` (a CSV checked whole before anything is written).

use habilis_e2e::{Storage, run_habilis};

habilis_e2e::on_both_storages!(profile_commands_validate_with_cedar, professionals_import_checks_then_writes);

/// The environment of a CLI run: a data directory and, for PostgreSQL, a fresh schema.
async fn cli_env(storage: Storage, dir: &std::path::Path) -> Option<Vec<(String, String)>> {
    let mut env = vec![("HABILIS_DATA_DIR".to_string(), dir.display().to_string())];
    if storage == Storage::Services {
        env.push(("HABILIS_STORAGE__DATABASE_URL".into(), habilis_idp::testing::postgres_schema_url().await?));
    }
    Some(env)
}

fn run(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_habilis(args, &env, None);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn profile_commands_validate_with_cedar(storage: Storage) {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = cli_env(storage, dir.path()).await else { return };
    let file = dir.path().join("profiles.json");
    std::fs::write(
        &file,
        r#"[{"name": "expert", "kinds": ["second_opinion_expert"], "actions": ["read", "comment"],
             "datatypes": ["report"], "clients": ["second-opinion"], "min_acr": "eidas2"},
            {"name": "broken", "kinds": ["treating"], "actions": ["read"], "clients": ["x"],
             "condition": "resource.nonexistent == 1"}]"#,
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["profile", "put", file.to_str().unwrap()], &env);
    assert_eq!(code, 1, "one profile refused: {stdout}\n{stderr}");
    assert!(stdout.contains("created expert"), "{stdout}");
    assert!(stderr.contains("broken") && stderr.contains("nonexistent"), "Cedar's diagnostic is shown: {stderr}");
    let (code, stdout, _) = run(&["profile", "list"], &env);
    assert_eq!(code, 0);
    assert!(stdout.contains("expert") && stdout.contains("eidas2") && !stdout.contains("broken"), "{stdout}");
    let (code, stdout, _) = run(&["profile", "show", "expert"], &env);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(shown["actions"], serde_json::json!(["read", "comment"]));
    let (code, _, stderr) = run(&["profile", "show", "nobody"], &env);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("habilis profile list"), "the error says what to do: {stderr}");
    let (code, stdout, _) = run(&["profile", "remove", "expert"], &env);
    assert_eq!((code, stdout.trim()), (0, "removed expert"));
}

async fn professionals_import_checks_then_writes(storage: Storage) {
    let dir = tempfile::tempdir().unwrap();
    let Some(env) = cli_env(storage, dir.path()).await else { return };
    let header = "id_nat;given_name;family_name;email;profession_code;structure_id;structure_name";
    let good = dir.path().join("team.csv");
    std::fs::write(
        &good,
        format!(
            "{header}\n899700427885;KIT;DOC0042788;kit@example.fr;10;R102671;CABINET M DOC0042788\n\
             899700427885;KIT;DOC0042788;;10;F0B0193488;HOPITAL GENERIQUE\n899700010012;ANNE;PHARMA;anne@example.fr;21;;\n"
        ),
    )
    .unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("{header}\n899700427886;KIT;DOC;kit@example.fr;10;;\n899700010012;ANNE;;x;1;;\n"))
        .unwrap();

    let (code, stdout, stderr) = run(&["import", "professionals", bad.to_str().unwrap()], &env);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("line 2") && stderr.contains("line 3"), "every error with its line: {stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");

    let (code, stdout, stderr) = run(&["import", "professionals", good.to_str().unwrap(), "--dry-run"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 professionals read: 2 would be created"), "{stdout}");
    let (_, listed, _) = run(&["user", "list"], &env);
    assert!(!listed.contains("899700427885"), "a dry run writes nothing: {listed}");

    let (code, stdout, stderr) = run(&["import", "professionals", good.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 were created (invited), 0 were updated"), "{stdout}");
    let (_, listed, _) = run(&["user", "list"], &env);
    assert!(listed.contains("899700427885") && listed.contains("invited"), "{listed}");
    let (code, stdout, _) = run(&["import", "professionals", good.to_str().unwrap()], &env);
    assert_eq!(code, 0);
    assert!(stdout.contains("0 were created (invited), 2 were updated"), "a second import updates: {stdout}");
}

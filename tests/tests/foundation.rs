//! Black-box tests of the foundation: the real `habilis` binary on an empty data directory, its CLI
//! and configuration errors, keys at rest, and readiness against real PostgreSQL/Redis.

use std::time::Duration;

use habilis_e2e::{HabilisProcess, TcpProxy, all_files, eventually, run_habilis};
use serde_json::Value;

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

#[tokio::test]
async fn embedded_serve_starts_from_an_empty_directory_and_serves_discovery_and_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = HabilisProcess::start(&data, &[], &[]).expect("habilis serve starts");
    let out = server.startup_output.join("\n");
    assert!(out.contains(&format!("issuer:      {}", server.base_url)), "{out}");
    assert!(out.contains("/.well-known/openid-configuration"), "{out}");

    let client = http();
    let discovery = client.get(format!("{}/.well-known/openid-configuration", server.base_url)).send().await.unwrap();
    assert_eq!(discovery.status(), 200);
    assert_eq!(discovery.headers()["content-type"], "application/json");
    assert!(discovery.headers().contains_key("x-request-id"));
    assert_eq!(discovery.headers()["x-content-type-options"], "nosniff");
    assert!(discovery.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let etag = discovery.headers()["etag"].to_str().unwrap().to_string();
    let doc: Value = discovery.json().await.unwrap();
    assert_eq!(doc["issuer"], server.base_url);
    let jwks_uri = doc["jwks_uri"].as_str().unwrap().to_string();
    assert_eq!(jwks_uri, format!("{}/jwks", server.base_url));
    let algs: Vec<&str> =
        doc["id_token_signing_alg_values_supported"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(algs.contains(&"ES256") && algs.contains(&"RS256"), "{algs:?}");

    let again = client
        .get(format!("{}/.well-known/openid-configuration", server.base_url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let jwks = client.get(&jwks_uri).send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    assert!(jwks.headers()["cache-control"].to_str().unwrap().contains("max-age="));
    let jwks: Value = jwks.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(keys.len() >= 2, "{jwks}");
    for key in keys {
        assert!(key["kid"].is_string(), "{key}");
        assert_eq!(key["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none(), "the JWKS must not carry private member {private}: {key}");
        }
    }

    // Health, readiness and metrics.
    assert_eq!(client.get(format!("{}/healthz", server.base_url)).send().await.unwrap().status(), 200);
    let ready: Value = client.get(format!("{}/readyz", server.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["database"]["backend"], "sqlite");
    assert_eq!(ready["ephemeral"]["backend"], "memory");
    let metrics = client.get(format!("{}/metrics", server.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("habilis_http_requests_total{"), "{metrics}");
    assert!(metrics.contains("route=\"/.well-known/openid-configuration\""), "{metrics}");
    assert!(metrics.contains("habilis_http_request_duration_seconds_bucket"), "{metrics}");

    // Unknown routes: a JSON error, not a panic or an HTML page.
    let missing = client.get(format!("{}/nope", server.base_url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    // A caller's request id is propagated.
    let traced =
        client.get(format!("{}/healthz", server.base_url)).header("x-request-id", "req-42").send().await.unwrap();
    assert_eq!(traced.headers()["x-request-id"], "req-42");

    // The data directory: SQLite database and an owner-only master key; nothing private in clear.
    let master = data.join("master.key");
    assert!(master.exists() && data.join("habilis.db").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&master).unwrap().permissions().mode() & 0o077, 0, "master.key must be 0600");
    // The database holds personal data: owner-only too, with its write-ahead log.
    for name in ["habilis.db", "habilis.db-wal", "habilis.db-shm"] {
        let path = data.join(name);
        if path.exists() {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{name} must be 0600, is {mode:o}");
        }
    }
    // The demo card PKI (dev-pki/) holds test-only keys in clear on purpose: they are imported
    // into browsers, and a production issuer refuses that PKI.
    assert!(data.join("dev-pki/manifest.json").exists(), "the embedded mode generates the demo card PKI");
    for file in all_files(&data) {
        if file == master || file.starts_with(data.join("dev-pki")) {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("BEGIN"), "{} holds PEM material", file.display());
        assert!(!text.contains("\"d\":\""), "{} holds a private JWK in clear", file.display());
    }

    // SIGTERM: a graceful, successful exit.
    let status = server.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    // Second start on the same directory reuses the keys.
    let server = HabilisProcess::start(&data, &[], &[]).expect("restart");
    let jwks2: Value = http().get(format!("{}/jwks", server.base_url)).send().await.unwrap().json().await.unwrap();
    let kids = |v: &Value| {
        let mut k: Vec<String> =
            v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(kids(&jwks), kids(&jwks2));
}

#[test]
fn configuration_errors_exit_2_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nlisen = \"127.0.0.1:1\"\n", "lisen"),
        ("[server]\nissuer = \"not a url\"\n", "server.issuer"),
        ("[server]\nissuer = \"http://idp.example.org\"\n", "server.issuer"),
        ("[tokens]\naccess_token_lifetime = \"ten minutes\"\n", "tokens.access_token_lifetime"),
        ("[storage]\nredis_url = \"http://localhost\"\n", "storage.redis_url"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = run_habilis(&["config", "check", file.to_str().unwrap()], &[], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: stderr should name {key}: {stderr}");
    }
    // Environment overrides are validated the same way, also for `serve`.
    let out = run_habilis(
        &["serve", "--data-dir", dir.path().join("d").to_str().unwrap()],
        &[("HABILIS_TOKENS__ID_TOKEN_LIFETIME", "soon")],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens.id_token_lifetime"));
    let out = run_habilis(&["serve", "--listen", "nowhere"], &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
    // And a valid file passes.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nissuer = \"https://auth.example.org\"\n").unwrap();
    let out = run_habilis(&["config", "check", good.to_str().unwrap()], &[], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The reference configuration shipped with the sources is valid.
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../idp/habilis.example.toml");
    let out = run_habilis(&["config", "check", reference], &[], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_wrong_or_missing_master_key_refuses_to_start_and_never_regenerates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    // `keys rotate` on a fresh directory creates the master key and a first key.
    let out = run_habilis(&["keys", "rotate", "--activate-now", "--data-dir", data_s], &[], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let master_before = std::fs::read(data.join("master.key")).unwrap();

    // Another master key (valid base64 of 32 bytes) cannot open the stored keys.
    let other = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    let out = run_habilis(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_s],
        &[("HABILIS_KEYS__MASTER_KEY", other)],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("master key"), "{stderr}");

    // A missing master key file with keys in the database: refuse, do not generate a new one.
    std::fs::rename(data.join("master.key"), dir.path().join("master.key.bak")).unwrap();
    let out = run_habilis(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data_s], &[], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!data.join("master.key").exists(), "a master key must not be regenerated over existing keys");

    // Restoring the file makes it start again.
    std::fs::rename(dir.path().join("master.key.bak"), data.join("master.key")).unwrap();
    assert_eq!(std::fs::read(data.join("master.key")).unwrap(), master_before);
    let server = HabilisProcess::start(&data, &[], &[]).expect("starts with the right master key");
    assert!(server.terminate().success());
}

#[tokio::test]
async fn keys_rotated_by_the_cli_reach_the_running_server_and_retired_keys_stay_published() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let env = [("HABILIS_KEYS__RELOAD_INTERVAL", "1s"), ("HABILIS_KEYS__ALGORITHMS", "[\"ES256\"]")];
    let server = HabilisProcess::start(&data, &[], &env).unwrap();
    let jwks_url = format!("{}/jwks", server.base_url);
    let kids = || async {
        let v: Value = http().get(&jwks_url).send().await.unwrap().json().await.unwrap();
        v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let first = kids().await;
    assert_eq!(first.len(), 1);

    let out = run_habilis(&["keys", "rotate", "--alg", "ES256", "--data-dir", data_s], &env, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        eventually(Duration::from_secs(10), || async { kids().await.len() == 2 }).await,
        "the new key is published"
    );

    let listing = run_habilis(&["keys", "list", "--data-dir", data_s], &env, None);
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(listing.contains("pending") && listing.contains("active"), "{listing}");

    let out = run_habilis(&["keys", "retire", &first[0], "--data-dir", data_s], &env, None);
    // Retiring the only active key while the other is still pending is allowed (the pending one
    // takes over) or refused with an explanation; either way the key stays published.
    let _ = out;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(kids().await.contains(&first[0]), "a retired key stays in the JWKS until its tokens expire");
    let unknown = run_habilis(&["keys", "retire", "no-such-kid", "--data-dir", data_s], &env, None);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such-kid"));
    assert!(server.terminate().success());
}

#[test]
fn user_add_validates_identifiers_and_never_takes_passwords_as_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let bad = run_habilis(
        &["user", "add", "--kind", "professional", "--id-nat", "899700427886", "--data-dir", data_s],
        &[],
        None,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Luhn"), "{}", String::from_utf8_lossy(&bad.stderr));

    let ok = run_habilis(
        &[
            "user",
            "add",
            "--kind",
            "professional",
            "--id-nat",
            "899700427885",
            "--given-name",
            "KIT",
            "--family-name",
            "DOC0042788",
            "--email",
            "kit@example.org",
            "--data-dir",
            data_s,
        ],
        &[],
        None,
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains("/invitation?token="), "{stdout}");

    let dup = run_habilis(
        &["user", "add", "--kind", "professional", "--id-nat", "899700427885", "--data-dir", data_s],
        &[],
        None,
    );
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    let short = run_habilis(
        &["user", "add", "--kind", "patient", "--email", "p@example.org", "--password-stdin", "--data-dir", data_s],
        &[],
        Some("short\n"),
    );
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12"));

    let patient = run_habilis(
        &[
            "user",
            "add",
            "--kind",
            "patient",
            "--email",
            "Jeanne@Example.org",
            "--password-stdin",
            "--data-dir",
            data_s,
        ],
        &[],
        Some("a long enough passphrase\n"),
    );
    assert!(patient.status.success(), "{}", String::from_utf8_lossy(&patient.stderr));
    let list = run_habilis(&["user", "list", "--data-dir", data_s], &[], None);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("jeanne@example.org") && list.contains("active"), "{list}");
    assert!(list.contains("899700427885") && list.contains("invited"), "{list}");
    let db = std::fs::read(data.join("habilis.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("a long enough passphrase"));
}

/// `/readyz` follows the database and Redis: unready while they are unreachable, ready again once
/// they answer, without a restart. Runs against real PostgreSQL and Redis (mandatory under CI).
#[tokio::test]
async fn readiness_follows_postgres_and_redis_and_recovers_without_restart() {
    let Some(pg_url) = habilis_idp::testing::postgres_schema_url().await else {
        return;
    };
    let redis_url = habilis_idp::testing::redis_url();
    let pg_addr = socket_of(&pg_url, 5432);
    let redis_addr = socket_of(&redis_url, 6379);
    if let Err(e) = tokio::net::TcpStream::connect(redis_addr).await {
        habilis_idp::testing::service_unreachable("Redis", &redis_url, &e);
        return;
    }
    let pg_proxy = TcpProxy::start(pg_addr).await;
    let redis_proxy = TcpProxy::start(redis_addr).await;
    let proxied_pg = pg_url.replacen(&format!("{}", pg_addr), &pg_proxy.addr.to_string(), 1);
    assert_ne!(proxied_pg, pg_url, "the database URL goes through the proxy");
    let dir = tempfile::tempdir().unwrap();
    let mut config = habilis_idp::config::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    config.storage.database_url = Some(proxied_pg);
    config.storage.redis_url = Some(format!("redis://{}", redis_proxy.addr));
    config.storage.redis_prefix = format!("{}:", habilis_idp::testing::unique_name("ready"));
    let server = habilis_idp::app::RunningServer::start(config).await.expect("server on PostgreSQL + Redis");
    let url = format!("{}/readyz", server.base_url);
    let status = || async { http().get(&url).send().await.map(|r| r.status().as_u16()).unwrap_or(0) };
    assert_eq!(status().await, 200);
    let body: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["database"]["backend"], "postgres");
    assert_eq!(body["ephemeral"]["backend"], "redis");

    pg_proxy.disable();
    assert!(
        eventually(Duration::from_secs(15), || async { status().await == 503 }).await,
        "unready without the database"
    );
    let body: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
    assert_ne!(body["database"]["status"], "ok", "{body}");
    pg_proxy.enable();
    assert!(
        eventually(Duration::from_secs(20), || async { status().await == 200 }).await,
        "ready again with the database"
    );

    redis_proxy.disable();
    assert!(eventually(Duration::from_secs(15), || async { status().await == 503 }).await, "unready without Redis");
    redis_proxy.enable();
    assert!(eventually(Duration::from_secs(20), || async { status().await == 200 }).await, "ready again with Redis");
    server.stop().await;
}

fn socket_of(url: &str, default_port: u16) -> std::net::SocketAddr {
    let parsed = url::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap();
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    format!("{host}:{}", parsed.port().unwrap_or(default_port)).parse().unwrap()
}

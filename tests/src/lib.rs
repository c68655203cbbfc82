//! Support for Habilis black-box tests: run the real `habilis` binary (or an in-process server) on
//! an ephemeral port with its own data, and tools to break its dependencies on purpose.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `habilis` binary of this workspace, built (once per test process) if missing or stale.
pub fn habilis_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "habilis-idp", "--bin", "habilis"])
                .status()
                .expect("run cargo build for the habilis binary");
            assert!(status.success(), "building the habilis binary failed");
            // This test executable lives in <target>/<profile>/deps/.
            let exe = std::env::current_exe().expect("current test executable");
            let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir");
            let binary = profile_dir.join("habilis");
            assert!(binary.exists(), "no habilis binary at {}", binary.display());
            binary
        })
        .clone()
}

/// Runs `habilis ARGS` to completion with a clean `HABILIS_*` environment plus `env`.
pub fn run_habilis(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> std::process::Output {
    let mut command = Command::new(habilis_binary());
    command.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    clean_env(&mut command);
    for (k, v) in env {
        command.env(k, v);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn habilis");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().expect("wait for habilis")
}

fn clean_env(command: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("HABILIS_") || k == "RUST_LOG" {
            command.env_remove(&k);
        }
    }
}

/// A `habilis serve` process. Stopped with SIGTERM when dropped.
pub struct HabilisProcess {
    child: Child,
    pub addr: SocketAddr,
    pub base_url: String,
    pub startup_output: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl HabilisProcess {
    /// Starts `habilis serve --listen 127.0.0.1:0 EXTRA_ARGS` and waits for its ready line.
    pub fn start(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Result<HabilisProcess, String> {
        let mut command = Command::new(habilis_binary());
        command.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(data_dir).args(extra_args);
        clean_env(&mut command);
        for (k, v) in env {
            command.env(k, v);
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| e.to_string())?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let stderr = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    stderr.lock().unwrap().push(line);
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        let mut addr = None;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("Habilis is ready on ") {
                        addr = rest.trim().parse::<SocketAddr>().ok();
                    }
                    let done = line.starts_with("Point an OpenID Connect client");
                    lines.push(line);
                    if done {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        std::thread::sleep(Duration::from_millis(200));
                        return Err(format!(
                            "habilis exited with {status}; stderr:\n{}",
                            stderr.lock().unwrap().join("\n")
                        ));
                    }
                }
                Err(_) => break,
            }
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            return Err(format!(
                "habilis did not become ready; stdout: {lines:?}; stderr:\n{}",
                stderr.lock().unwrap().join("\n")
            ));
        };
        Ok(HabilisProcess { child, addr, base_url: format!("http://{addr}"), startup_output: lines, stderr })
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("habilis did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HabilisProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            std::thread::sleep(Duration::from_millis(100));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP forwarder that can be switched off (refusing and cutting connections) and on again:
/// it makes a database or Redis "unreachable" for one server without touching the real service.
pub struct TcpProxy {
    pub addr: SocketAddr,
    enabled: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let enabled = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (en, gen_) = (enabled.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                if !en.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let (en, gen_) = (en.clone(), gen_.clone());
                let my_generation = gen_.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    tokio::pin!(copy);
                    loop {
                        tokio::select! {
                            _ = &mut copy => break,
                            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                                if !en.load(Ordering::SeqCst) || gen_.load(Ordering::SeqCst) != my_generation {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        TcpProxy { addr, enabled, generation }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }
}

/// Every file below `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// In-process servers for OIDC flow tests: a `TestEnv` (server + its data), accounts and clients
// created through the server's own services, a scripted browser, and small protocol helpers.

use habilis_idp::app::{AppState, RunningServer};
use habilis_idp::config::Config;
use serde_json::Value;

/// Where a test server keeps its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// SQLite in the data directory, ephemeral data in memory (the embedded mode).
    Embedded,
    /// PostgreSQL (a fresh schema per test) and Redis (a fresh key prefix per test).
    Services,
}

/// A test configuration: data in `data_dir`, fast password hashing and, for
/// [`Storage::Services`], a fresh PostgreSQL schema and Redis prefix. `None` when PostgreSQL or
/// Redis is unreachable outside CI (under CI that panics: the variant must run).
pub async fn test_config(storage: Storage, data_dir: &Path) -> Option<Config> {
    let mut config = Config { data_dir: data_dir.to_path_buf(), ..Default::default() };
    config.password.argon2_memory_kib = 8192;
    config.password.argon2_iterations = 1;
    // The protocol tests log in with a password alone; the login-journey tests set the
    // production floor (eidas1) back.
    config.login.minimum_acr = "none".into();
    // Card login (on by itself in the embedded mode) only where a test sets it up.
    config.card.mode = habilis_idp::config::CardMode::Off;
    if storage == Storage::Services {
        config.storage.database_url = Some(habilis_idp::testing::postgres_schema_url().await?);
        let redis_url = habilis_idp::testing::redis_url();
        if let Err(e) = redis_reachable(&redis_url).await {
            habilis_idp::testing::service_unreachable("Redis", &redis_url, &e);
            return None;
        }
        config.storage.redis_url = Some(redis_url);
        config.storage.redis_prefix = format!("{}:", habilis_idp::testing::unique_name("t"));
    }
    Some(config)
}

async fn redis_reachable(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
    let port = parsed.port().unwrap_or(6379);
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connection timed out".into()),
    }
}

/// A server running in this process with its own data (directory, schema, Redis prefix).
pub struct TestEnv {
    pub server: RunningServer,
    pub base_url: String,
    pub storage: Storage,
    _dir: Option<tempfile::TempDir>,
}

impl TestEnv {
    /// A server on `storage` with the test defaults; `None` when that storage is unavailable
    /// outside CI.
    pub async fn start(storage: Storage) -> Option<TestEnv> {
        Self::start_with(storage, |_| {}).await
    }

    /// Like [`TestEnv::start`], with the configuration adjusted by `tweak` before the start.
    pub async fn start_with(storage: Storage, tweak: impl FnOnce(&mut Config)) -> Option<TestEnv> {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let mut config = test_config(storage, dir.path()).await?;
        tweak(&mut config);
        Some(Self::from_config(storage, config, Some(dir)).await)
    }

    /// Starts a server on a prepared configuration (the caller keeps its data directory alive,
    /// or hands it over in `dir`).
    pub async fn from_config(storage: Storage, config: Config, dir: Option<tempfile::TempDir>) -> TestEnv {
        let server = RunningServer::start(config).await.expect("the test server starts");
        TestEnv { base_url: server.base_url.clone(), server, storage, _dir: dir }
    }

    pub fn state(&self) -> &AppState {
        &self.server.state
    }

    /// `path` on this server (the address it listens on, which may differ from the issuer).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    /// A browser with an empty cookie jar, pointed at this server.
    pub fn browser(&self) -> Browser {
        Browser::new(&format!("http://{}", self.server.addr))
    }

    /// An active professional account (login = idNat) with a password; returns the account id.
    pub async fn add_professional(&self, id_nat: &str, given: &str, family: &str, password: &str) -> String {
        let spec = AccountSpec {
            kind: habilis_idp::store::AccountKind::Professional,
            login: id_nat.to_string(),
            id_nat: Some(id_nat.to_string()),
            email: Some(format!("{}@example.org", given.to_lowercase())),
            given_name: Some(given.to_string()),
            family_name: Some(family.to_string()),
        };
        create_account(self.state(), &spec, password).await
    }

    /// An active patient account (login = lower-case email) with a password; returns its id.
    pub async fn add_patient(&self, email: &str, password: &str) -> String {
        let spec = AccountSpec {
            kind: habilis_idp::store::AccountKind::Patient,
            login: email.to_lowercase(),
            id_nat: None,
            email: Some(email.to_lowercase()),
            given_name: None,
            family_name: None,
        };
        create_account(self.state(), &spec, password).await
    }

    /// Registers a client (RFC 7591 metadata); returns its generated secret, if its method uses one.
    pub async fn register_client(&self, client_id: &str, metadata: &Value) -> Option<String> {
        register_client(self.state(), client_id, metadata).await
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }

    /// Stops the server and starts a new one on the same address, database and data directory
    /// with an **empty** ephemeral store: a fresh in-memory store (what a restart on the embedded
    /// defaults leaves), or the Redis prefix flushed (Redis restarted empty along with the
    /// instance). Sessions and logins in progress are gone; what is durable must not be.
    pub async fn restart_with_empty_ephemeral_store(self) -> TestEnv {
        let mut config = Config::clone(&self.server.state.config);
        // The new server listens on another port; it keeps the issuer, as a restarted
        // deployment behind its public URL does.
        config.server.issuer = Some(url::Url::parse(&self.base_url).expect("the issuer is a URL"));
        let TestEnv { server, storage, _dir, .. } = self;
        server.stop().await;
        flush_redis_of(&config).await;
        Self::from_config(storage, config, _dir).await
    }

    /// Empties the running server's Redis prefix (Redis restarted or flushed under a running
    /// instance); `false` on the embedded storage, whose memory store cannot be reached from here.
    pub async fn flush_redis(&self) -> bool {
        flush_redis_of(&self.server.state.config).await
    }
}

/// Deletes every key of `config`'s Redis prefix; `false` when it uses no Redis.
async fn flush_redis_of(config: &Config) -> bool {
    let Some(url) = &config.storage.redis_url else { return false };
    habilis_idp::testing::flush_redis_prefix(url, &config.storage.redis_prefix)
        .await
        .expect("the test's Redis prefix is flushed");
    true
}

/// What to create in [`create_account`].
pub struct AccountSpec {
    pub kind: habilis_idp::store::AccountKind,
    pub login: String,
    pub id_nat: Option<String>,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
}

/// Creates an active account with a password through the server's store and hasher.
pub async fn create_account(state: &AppState, spec: &AccountSpec, password: &str) -> String {
    create_account_with_locale(state, spec, password, None).await
}

/// Registers a client through the server's registry; returns the generated secret, if any.
pub async fn register_client(state: &AppState, client_id: &str, metadata: &Value) -> Option<String> {
    let registration = state
        .clients
        .register(&metadata.to_string(), Some(client_id), None)
        .await
        .unwrap_or_else(|e| panic!("register client {client_id}: {e}"));
    registration.secret.map(|s| s.as_str().to_string())
}

/// Where a navigation ended: a page of the server, or a redirect leaving it (to a client).
#[derive(Debug)]
pub enum Landing {
    Page { url: String, status: u16, body: String },
    Left(url::Url),
}

impl Landing {
    /// The URL the server sent the browser to, outside the server; panics (with the page) otherwise.
    pub fn left(self) -> url::Url {
        match self {
            Landing::Left(url) => url,
            Landing::Page { url, status, body } => {
                panic!("expected a redirect to the client, got the page {url} ({status}):\n{body}")
            }
        }
    }

    /// The page shown; panics if the browser was sent away.
    pub fn page(self) -> (String, u16, String) {
        match self {
            Landing::Page { url, status, body } => (url, status, body),
            Landing::Left(url) => panic!("expected a page of the server, got a redirect to {url}"),
        }
    }
}

/// A scripted browser: a cookie jar, no automatic redirects (they are followed here, only within
/// the server, so that the redirect to the client can be inspected).
pub struct Browser {
    pub http: reqwest::Client,
    pub origin: String,
    /// Other origins of the same server (the card host) whose redirects are followed too.
    pub other_origins: Vec<String>,
    /// Every `Set-Cookie` header the server sent during navigations, in order.
    pub set_cookies: Mutex<Vec<String>>,
}

impl Browser {
    pub fn new(origin: &str) -> Browser {
        Self::build(origin, reqwest::Client::builder(), Vec::new())
    }

    /// A browser whose connections come from `address` (any 127.x.y.z reaches a loopback
    /// server): another user, as far as per-address limits can tell.
    pub fn from_address(origin: &str, address: std::net::IpAddr) -> Browser {
        Self::build(origin, reqwest::Client::builder().local_address(address), Vec::new())
    }

    /// A browser holding a client certificate (a CPS card: PEM certificate then PEM key), trusting
    /// `root_pem` for https, that also follows redirects within `other_origins`.
    pub fn with_card(origin: &str, identity_pem: &[u8], root_pem: &[u8], other_origins: &[&str]) -> Browser {
        let identity = reqwest::Identity::from_pem(identity_pem).expect("a PEM certificate and key");
        let root = reqwest::Certificate::from_pem(root_pem).expect("a PEM root certificate");
        let builder = reqwest::Client::builder().identity(identity).add_root_certificate(root);
        Self::build(origin, builder, other_origins.iter().map(|o| o.trim_end_matches('/').to_string()).collect())
    }

    fn build(origin: &str, builder: reqwest::ClientBuilder, other_origins: Vec<String>) -> Browser {
        let http = builder
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("the browser's HTTP client");
        Browser {
            http,
            origin: origin.trim_end_matches('/').to_string(),
            other_origins,
            set_cookies: Mutex::new(Vec::new()),
        }
    }

    /// The values the server last set for cookie `name` during navigations (latest last).
    pub fn cookie_values(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}=");
        self.set_cookies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| c.strip_prefix(&prefix))
            .map(|rest| rest.split(';').next().unwrap_or("").to_string())
            .collect()
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') { format!("{}{url}", self.origin) } else { url.to_string() }
    }

    /// GET `url` (absolute, or a path on the server) and follow redirects within the server.
    pub async fn navigate(&self, url: &str) -> Landing {
        let url = self.absolute(url);
        let response = self.http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.follow(response).await
    }

    /// POST a form to `url` and follow redirects within the server.
    pub async fn submit(&self, url: &str, fields: &[(&str, &str)]) -> Landing {
        let url = self.absolute(url);
        let response = self.http.post(&url).form(fields).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
        self.follow(response).await
    }

    /// Follows 3xx responses while they stay on the server.
    pub async fn follow(&self, mut response: reqwest::Response) -> Landing {
        for _ in 0..20 {
            let current = response.url().clone();
            for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
                if let Ok(value) = value.to_str() {
                    self.set_cookies.lock().unwrap().push(value.to_string());
                }
            }
            if !response.status().is_redirection() {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                return Landing::Page { url: current.to_string(), status, body };
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("a redirect without Location from {current}"))
                .to_string();
            let next = current.join(&location).unwrap_or_else(|e| panic!("bad Location {location}: {e}"));
            let origin = next.origin().ascii_serialization();
            if origin != self.origin && !self.other_origins.contains(&origin) {
                return Landing::Left(next);
            }
            response = self.http.get(next.clone()).send().await.unwrap_or_else(|e| panic!("GET {next}: {e}"));
        }
        panic!("more than 20 redirects");
    }

    /// Fills in the login form shown by `landing` (a `/login` page).
    pub async fn log_in(&self, landing: Landing, login: &str, password: &str) -> Landing {
        let (url, status, body) = landing.page();
        let path = url::Url::parse(&url).map(|u| u.path().to_string()).unwrap_or_default();
        assert_eq!(path, "/login", "expected the login page, got {url} ({status}):\n{body}");
        let interaction = hidden_input(&body, "interaction").expect("the login form's interaction");
        let csrf = hidden_input(&body, "csrf").expect("the login form's csrf token");
        self.submit(
            "/login",
            &[("interaction", &interaction), ("csrf", &csrf), ("login", login), ("password", password)],
        )
        .await
    }

    /// Answers the consent page shown by `landing` with `decision` (`allow` or `deny`).
    pub async fn consent(&self, landing: Landing, decision: &str) -> Landing {
        let (url, status, body) = landing.page();
        let path = url::Url::parse(&url).map(|u| u.path().to_string()).unwrap_or_default();
        assert_eq!(path, "/consent", "expected the consent page, got {url} ({status}):\n{body}");
        let interaction = hidden_input(&body, "interaction").expect("the consent form's interaction");
        let csrf = hidden_input(&body, "csrf").expect("the consent form's csrf token");
        self.submit("/consent", &[("interaction", &interaction), ("csrf", &csrf), ("decision", decision)]).await
    }

    /// Runs an authorization request to its end: logs in when asked, allows consent when asked,
    /// and returns the redirect to the client.
    pub async fn authorize(&self, authorize_url: &str, login: &str, password: &str) -> url::Url {
        let mut landing = self.navigate(authorize_url).await;
        for _ in 0..3 {
            landing = match landing {
                Landing::Left(url) => return url,
                Landing::Page { ref url, .. } if url.contains("/login?") => self.log_in(landing, login, password).await,
                Landing::Page { ref url, .. } if url.contains("/consent?") => self.consent(landing, "allow").await,
                other => return other.left(),
            };
        }
        landing.left()
    }
}

/// The value of `<input type="hidden" name="NAME" value="…">` in a page, HTML entities decoded.
pub fn hidden_input(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html_unescape(&html[start..end]))
}

/// The `href` of the link `<a … id="ID" href="…">` in a page, HTML entities decoded.
pub fn link_by_id(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\" href=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html_unescape(&html[start..end]))
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&amp;", "&")
}

/// The single value of query parameter `name` of `url`.
pub fn query_param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// A PKCE pair (RFC 7636, S256): (code_verifier, code_challenge).
pub fn pkce_pair() -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Header and claims of a compact JWS, without verifying anything.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    let decode = |part: &str| -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url JWS part");
        serde_json::from_slice(&bytes).expect("a JSON JWS part")
    };
    (decode(parts[0]), decode(parts[1]))
}

/// Verifies a compact JWS against a JWK set document (the server's `/jwks`), with the key named by
/// its `kid`; returns (header, claims).
pub fn verify_with_jwks(token: &str, jwks: &Value) -> Result<(Value, Value), String> {
    use josekit::jws::{ES256, EdDSA, RS256};
    let (header, _) = jwt_parts(token);
    let kid = header["kid"].as_str().ok_or("the JWS header has no kid")?;
    let alg = header["alg"].as_str().ok_or("the JWS header has no alg")?;
    let keys = jwks["keys"].as_array().ok_or("the JWKS has no keys")?;
    let key = keys.iter().find(|k| k["kid"] == kid).ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let jwk = josekit::jwk::Jwk::from_map(key.as_object().cloned().unwrap_or_default()).map_err(|e| e.to_string())?;
    let verifier: Box<dyn josekit::jws::JwsVerifier> = match alg {
        "ES256" => Box::new(ES256.verifier_from_jwk(&jwk).map_err(|e| e.to_string())?),
        "RS256" => Box::new(RS256.verifier_from_jwk(&jwk).map_err(|e| e.to_string())?),
        "EdDSA" => Box::new(EdDSA.verifier_from_jwk(&jwk).map_err(|e| e.to_string())?),
        other => return Err(format!("unexpected alg {other}")),
    };
    let (payload, _) = josekit::jws::deserialize_compact(token, verifier.as_ref()).map_err(|e| e.to_string())?;
    let claims: Value = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
    Ok((header, claims))
}

/// How a test authenticates a client at a back-channel endpoint.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// `client_secret_basic`: (client_id, secret).
    Basic(String, String),
    /// `client_secret_post`: (client_id, secret).
    Post(String, String),
    /// A public client naming itself with `client_id`.
    Public(String),
    /// `private_key_jwt`: (client_id, assertion).
    Assertion(String, String),
    /// Nothing at all.
    Anonymous,
}

/// The answer of a back-channel endpoint: status, headers and JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

/// POSTs a form to a back-channel endpoint with client authentication.
pub async fn post_form(http: &reqwest::Client, url: &str, auth: &ClientAuth, fields: &[(&str, &str)]) -> Answer {
    let mut form: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut request = http.post(url);
    match auth {
        ClientAuth::Basic(id, secret) => {
            request = request.basic_auth(form_urlencode(id), Some(form_urlencode(secret)));
        }
        ClientAuth::Post(id, secret) => {
            form.push(("client_id".into(), id.clone()));
            form.push(("client_secret".into(), secret.clone()));
        }
        ClientAuth::Public(id) => form.push(("client_id".into(), id.clone())),
        ClientAuth::Assertion(id, assertion) => {
            form.push(("client_id".into(), id.clone()));
            form.push((
                "client_assertion_type".into(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            form.push(("client_assertion".into(), assertion.clone()));
        }
        ClientAuth::Anonymous => {}
    }
    let response = request.form(&form).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    answer(response).await
}

/// Status, headers and JSON body of a response.
pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, headers, body }
}

fn form_urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A plain HTTP client for back-channel calls (no cookies, no redirects).
pub fn backchannel_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// A relying party's back-channel logout endpoint (OIDC Back-Channel Logout §2.5) listening on
/// 127.0.0.1: every `logout_token` POSTed to it is kept, in order.
pub struct LogoutReceiver {
    pub url: String,
    received: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl LogoutReceiver {
    pub async fn start() -> LogoutReceiver {
        Self::start_failing(0).await
    }

    /// A receiver that answers 503 to its first `failures` deliveries (those tokens are not kept).
    pub async fn start_failing(failures: usize) -> LogoutReceiver {
        use axum::routing::post;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let remaining_failures = Arc::new(std::sync::atomic::AtomicUsize::new(failures));
        let app = axum::Router::new().route(
            "/backchannel-logout",
            post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                let remaining_failures = remaining_failures.clone();
                async move {
                    let fail = remaining_failures
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if fail {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let is_form = headers
                        .get(axum::http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
                    let token = url::form_urlencoded::parse(&body)
                        .find(|(k, _)| k == "logout_token")
                        .map(|(_, v)| v.into_owned());
                    match token {
                        Some(token) if is_form => {
                            let _ = tx.send(token);
                            axum::http::StatusCode::OK
                        }
                        _ => axum::http::StatusCode::BAD_REQUEST,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the logout receiver");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        LogoutReceiver { url: format!("http://{addr}/backchannel-logout"), received: tokio::sync::Mutex::new(rx), task }
    }

    /// The next logout token received within `timeout`.
    pub async fn next(&self, timeout: Duration) -> Option<String> {
        let mut rx = self.received.lock().await;
        tokio::time::timeout(timeout, rx.recv()).await.ok().flatten()
    }
}

impl Drop for LogoutReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub mod admin;
pub mod habilitations;
pub mod smtp_sink;

// ---------------------------------------------------------------------------------------------
// Login-journey helpers: the production assurance floor with mail through a real SMTP server,
// accounts with a preferred language, browsers that ask for a language, and where the build
// directory is (for artefacts such as screenshots).

/// Where the login-journey tests' mail comes from.
pub const TEST_MAIL_FROM: &str = "Habilis <no-reply@habilis.test>";

/// Puts back the production login floor that [`test_config`] lowers for the protocol tests
/// (`login.minimum_acr = "eidas1"`: a password and a one-time code), and sends mail through
/// `smtp_url` (e.g. [`smtp_sink::SmtpSink::url`]).
pub fn production_login(config: &mut Config, smtp_url: &str) {
    config.login.minimum_acr = "eidas1".into();
    config.mail.smtp_url = Some(url::Url::parse(smtp_url).expect("an SMTP URL"));
    config.mail.from = TEST_MAIL_FROM.into();
}

/// Like [`create_account`], with a preferred language (`fr`, `en`) recorded on the account.
pub async fn create_account_with_locale(
    state: &AppState,
    spec: &AccountSpec,
    password: &str,
    locale: Option<&str>,
) -> String {
    use habilis_idp::store::{Account, AccountStatus};
    let now = habilis_idp::unix_now();
    let account = Account {
        id: uuid::Uuid::new_v4().to_string(),
        kind: spec.kind,
        login: spec.login.clone(),
        id_nat: spec.id_nat.clone(),
        email: spec.email.clone(),
        given_name: spec.given_name.clone(),
        family_name: spec.family_name.clone(),
        status: AccountStatus::Active,
        locale: locale.map(str::to_string),
        created_at: now,
        updated_at: now,
        last_authenticated_at: None,
    };
    state.store.insert_account(&account).await.expect("insert the account");
    add_password(state, &account.id, password).await;
    account.id
}

/// Gives `account_id` the password `password` (hashed by the server's hasher).
pub async fn add_password(state: &AppState, account_id: &str, password: &str) {
    use habilis_idp::store::Credential;
    let hasher = state.passwords.clone();
    let owned = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hasher.hash_blocking(&owned))
        .await
        .expect("the hashing task")
        .expect("hash the password");
    state
        .store
        .insert_credential(&Credential::password(account_id, hash, habilis_idp::unix_now()))
        .await
        .expect("insert the password credential");
}

impl Browser {
    /// A browser with an empty cookie jar that sends `Accept-Language: accept_language` with every
    /// request, as a browser configured for that language does.
    pub fn with_accept_language(origin: &str, accept_language: &str) -> Browser {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT_LANGUAGE,
            reqwest::header::HeaderValue::from_str(accept_language).expect("an Accept-Language value"),
        );
        Self::build(origin, reqwest::Client::builder().default_headers(headers), Vec::new())
    }
}

/// The build directory (`CARGO_TARGET_DIR`, or `target/` of the workspace), found from this test
/// executable's path (`<target>/<profile>/deps/<test>`), for artefacts such as screenshots.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for programs that must be told their port).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address").port()
}

/// The query of an authorization request: `base` parameters, then `overrides` replacing (`Some`)
/// or removing (`None`) parameters, or adding new ones.
pub fn authorize_query(base: &[(&str, &str)], overrides: &[(&str, Option<&str>)]) -> String {
    let mut params: Vec<(String, String)> = base.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for (name, value) in overrides {
        params.retain(|(k, _)| k != name);
        if let Some(value) = value {
            params.push((name.to_string(), value.to_string()));
        }
    }
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish()
}

/// Metadata of a confidential, first-party web client (`client_secret_basic`, code + refresh)
/// redirecting to `callback`, with `extra` members merged in.
pub fn first_party_client_metadata(callback: &str, scope: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut metadata = serde_json::json!({
        "client_name": "Test RP",
        "redirect_uris": [callback],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": scope,
        "first_party": true,
    });
    if let (Some(target), serde_json::Value::Object(extra)) = (metadata.as_object_mut(), extra) {
        target.extend(extra);
    }
    metadata
}

/// Enrols an authenticator app on the account (as the enrolment page does) and returns the app.
pub async fn enrol_totp(env: &TestEnv, account_id: &str, label: &str) -> totp_rs::Totp {
    let state = env.state();
    let pending = habilis_idp::authn::totp::begin_enrolment(label).expect("an enrolment");
    let app = totp_rs::Totp::from_url(&pending.otpauth_uri).expect("the app reads the otpauth URI");
    let now = habilis_idp::unix_now();
    let code = app.generate(now as u64).to_string();
    habilis_idp::authn::totp::confirm_enrolment(
        state.store.as_ref(),
        &state.keys.master_key(),
        account_id,
        &pending.secret_base32,
        &code,
        now,
    )
    .await
    .expect("the enrolment is confirmed");
    app
}

/// A code of the authenticator app for a time step after `last` (a code is accepted once); waits
/// for the next step when needed.
pub async fn fresh_totp_code(app: &totp_rs::Totp, last: &mut Option<u64>) -> String {
    const STEP: u64 = 30;
    loop {
        let now = habilis_idp::unix_now() as u64;
        let current = now / STEP;
        let step = last.map_or(current, |l| current.max(l + 1));
        if step <= current + 1 {
            *last = Some(step);
            return app.generate(step * STEP).to_string();
        }
        tokio::time::sleep(Duration::from_millis(((current + 1) * STEP - now) * 1000 + 200)).await;
    }
}

/// Runs `async fn NAME(storage: Storage)` of the calling test file once per storage, as the tests
/// `NAME::sqlite_memory` and `NAME::postgres_redis`.
#[macro_export]
macro_rules! on_both_storages {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_memory() {
                super::$name($crate::Storage::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_redis() {
                super::$name($crate::Storage::Services).await
            }
        }
    )*};
}

/// Every audit record a subscriber has received so far.
pub fn drain_audit(
    audit: &mut tokio::sync::broadcast::Receiver<habilis_idp::audit::AuditRecord>,
) -> Vec<habilis_idp::audit::AuditRecord> {
    let mut records = Vec::new();
    while let Ok(record) = audit.try_recv() {
        records.push(record);
    }
    records
}

/// The `amr` values of decoded token claims.
pub fn amr_of(claims: &Value) -> Vec<String> {
    claims["amr"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

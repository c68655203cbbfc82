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

//! The card-login service held in the application state: the validator on the configured (or
//! demo) trust anchors, the CRL cache and its refresher, the card listener's TLS settings, and the
//! rules for reading a certificate forwarded by a trusted proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{CardMode, Config, ProxyHeaderFormat, RevocationSetting};
use crate::cps::crl::CrlCache;
use crate::cps::trust::TrustStore;
use crate::cps::validate::{CardRejection, CardValidator, RevocationMode, UsagePolicy, ValidatedCard};

/// Why card login could not be set up (the server refuses to start, naming the setting).
#[derive(Debug, thiserror::Error)]
#[error("card login: {0}")]
pub struct CardSetupError(pub String);

pub struct CardLogin {
    pub validator: CardValidator,
    pub crls: CrlCache,
    pub trust: Arc<TrustStore>,
    pub revocation: RevocationMode,
    /// The base URL browsers open for card login (no trailing slash).
    pub public_url: String,
    /// The bound card listener, taken by `serve` (direct mode only).
    listener: Mutex<Option<std::net::TcpListener>>,
    pub listen_addr: Option<SocketAddr>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub proxy_header: Option<axum::http::HeaderName>,
    pub proxy_format: ProxyHeaderFormat,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where the demo PKI lives (demo mode), for the start banner.
    pub demo_pki: Option<PathBuf>,
}

/// The trust-anchor rule shared by `habilis serve` and `habilis config check`: TEST roots (the
/// IGC-Santé TEST chains, `habilis dev-pki`) are refused with a production issuer unless
/// `card.allow_test_anchors` says this is a test platform.
fn refuse_test_anchors(trust: &TrustStore, config: &Config) -> Result<(), CardSetupError> {
    if trust.contains_test_anchor() && config.is_production() && !config.card.allow_test_anchors {
        return Err(CardSetupError(
            "card.trust_anchors holds a TEST root, refused with a production issuer; set card.allow_test_anchors = true only for a test platform"
                .into(),
        ));
    }
    Ok(())
}

/// What `habilis config check` verifies of card login beyond the configuration's own validation:
/// the configured trust anchors load and pass the rule `serve` applies ([`refuse_test_anchors`]).
/// Demo mode's generated PKI is not created here (a check writes nothing); config validation
/// already refuses demo mode with a production issuer.
pub fn check(config: &Config) -> Result<(), CardSetupError> {
    if config.card_mode() != CardMode::On || config.card.trust_anchors.is_empty() {
        return Ok(());
    }
    let trust = TrustStore::load(&config.card.trust_anchors)
        .map_err(|e| CardSetupError(format!("card.trust_anchors: {e:#}")))?;
    refuse_test_anchors(&trust, config)
}

impl CardLogin {
    /// Sets up card login as configured; `None` when it is off.
    pub fn start(config: &Config) -> Result<Option<Arc<CardLogin>>, CardSetupError> {
        let mode = config.card_mode();
        if mode == CardMode::Off {
            return Ok(None);
        }
        let c = &config.card;
        let mut anchors = c.trust_anchors.clone();
        let mut crl_sources = c.crl_sources.clone();
        let mut tls_files = c.tls_certificate.clone().zip(c.tls_key.clone());
        let mut listen = c.listen;
        let mut demo_pki = None;
        if mode == CardMode::Demo {
            let dir = config.data_dir.join("dev-pki");
            if !dir.join("manifest.json").exists() {
                let issuer = config.issuer();
                let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
                if let Some(host) = issuer.host_str()
                    && !names.iter().any(|n| n == host)
                {
                    names.push(host.to_string());
                }
                crate::cps::devpki::generate(&dir, &names, None).map_err(|e| {
                    CardSetupError(format!("could not generate the demo PKI in {}: {e:#}", dir.display()))
                })?;
            }
            refresh_demo_crl(&dir)?;
            if anchors.is_empty() {
                anchors.push(dir.join("trust-bundle.pem"));
            }
            if crl_sources.is_empty() {
                crl_sources.push(dir.join("crl.der").display().to_string());
            }
            if tls_files.is_none() {
                tls_files = Some((dir.join("server.pem"), dir.join("server.key.pem")));
            }
            if listen.is_none() && c.proxy_header.is_none() {
                listen = Some(SocketAddr::from(([127, 0, 0, 1], 8443)));
            }
            demo_pki = Some(dir);
        }
        let trust =
            Arc::new(TrustStore::load(&anchors).map_err(|e| CardSetupError(format!("card.trust_anchors: {e:#}")))?);
        refuse_test_anchors(&trust, config)?;
        let policy = UsagePolicy {
            key_usage: c.key_usage.clone(),
            extended_key_usage: c.extended_key_usage.clone(),
            policies: c.policies.clone(),
        };
        let crls = CrlCache::open(&config.data_dir.join("crl-cache"), crl_sources, c.crl_max_staleness)
            .map_err(|e| CardSetupError(format!("CRL cache: {e:#}")))?;
        let (listener, listen_addr, tls) = match listen {
            None => (None, None, None),
            Some(addr) => {
                let (cert, key) = tls_files
                    .ok_or_else(|| CardSetupError("card.listen needs card.tls_certificate and card.tls_key".into()))?;
                let tls = crate::cps::listener::server_config(&cert, &key, &trust)
                    .map_err(|e| CardSetupError(format!("card.tls_certificate: {e:#}")))?;
                let bound = bind_card_listener(addr, mode == CardMode::Demo && c.listen.is_none())?;
                let local = bound.local_addr().map_err(|e| CardSetupError(e.to_string()))?;
                (Some(bound), Some(local), Some(tls))
            }
        };
        let public_url = match (&c.public_url, listen_addr) {
            (Some(url), _) => url.as_str().trim_end_matches('/').to_string(),
            (None, Some(addr)) => {
                let issuer = config.issuer();
                let host = issuer.host_str().unwrap_or("localhost").to_string();
                let host = if host.contains(':') { format!("[{host}]") } else { host };
                format!("https://{host}:{}", addr.port())
            }
            (None, None) => return Err(CardSetupError("card.public_url is required behind a proxy".into())),
        };
        let proxy_header = match &c.proxy_header {
            Some(h) => Some(
                axum::http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| CardSetupError("card.proxy_header is not a header name".into()))?,
            ),
            None => None,
        };
        let revocation = match c.revocation {
            RevocationSetting::Enforce => RevocationMode::Enforce,
            RevocationSetting::FailOpen => RevocationMode::FailOpen,
        };
        Ok(Some(Arc::new(CardLogin {
            validator: CardValidator::new(trust.clone(), policy),
            crls,
            trust,
            revocation,
            public_url,
            listener: Mutex::new(listener),
            listen_addr,
            tls,
            proxy_header,
            proxy_format: c.proxy_header_format,
            trusted_proxies: c.trusted_proxy_nets(),
            demo_pki,
        })))
    }

    /// Validates a presented chain against the anchors and the current CRLs.
    pub fn validate(&self, chain: &[Vec<u8>], now: i64) -> Result<ValidatedCard, CardRejection> {
        let snapshot = self.crls.snapshot();
        let result = self.validator.validate(chain, &snapshot, self.revocation, now);
        // Learn the CRL locations only from certificates whose chain verified (otherwise anyone
        // could make the server fetch URLs of their choosing).
        match &result {
            Ok(card) if card.revocation != crate::cps::validate::RevocationStatus::Good => {
                self.crls.note_distribution_points(&card.card.crl_distribution_points);
            }
            Err(CardRejection::RevocationUnknown | CardRejection::RevocationStale) => {
                if let Some(Ok(parsed)) = chain.first().map(|der| crate::cps::certificate::parse_card(der)) {
                    self.crls.note_distribution_points(&parsed.crl_distribution_points);
                }
            }
            _ => {}
        }
        result
    }

    /// Where the card login of interaction `interaction_id` starts (on the card host).
    pub fn entry_url(&self, interaction_id: &str) -> String {
        format!("{}{}?interaction={interaction_id}", self.public_url, crate::cps::login::CARD_PATH)
    }

    /// Takes the bound card listener (once).
    pub fn take_listener(&self) -> Option<std::net::TcpListener> {
        self.listener.lock().ok().and_then(|mut l| l.take())
    }

    /// Whether the request's `Host` is the card host of `public_url` (port defaulting to 443).
    pub fn is_card_host(&self, headers: &axum::http::HeaderMap) -> bool {
        let Ok(expected) = url::Url::parse(&self.public_url) else { return false };
        let Some(host) = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()) else { return false };
        let Ok(presented) = url::Url::parse(&format!("https://{host}")) else { return false };
        presented.host_str().map(str::to_ascii_lowercase) == expected.host_str().map(str::to_ascii_lowercase)
            && presented.port_or_known_default() == expected.port_or_known_default()
    }

    /// Whether `peer` may forward a client certificate in the proxy header.
    pub fn is_trusted_proxy(&self, peer: &SocketAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer.ip()))
    }

    /// Fetches every CRL source once, auditing failures. Bounded so that an unreachable
    /// distribution point delays nothing for long (the durable cache covers restarts).
    pub async fn refresh_crls(&self, state: &crate::app::AppState) {
        if let Some(dir) = &self.demo_pki
            && let Err(e) = refresh_demo_crl(dir)
        {
            tracing::warn!(error = %e, "demo CRL not re-signed");
        }
        let refresh = self.crls.refresh(&state.http, crate::unix_now());
        let report = match tokio::time::timeout(std::time::Duration::from_secs(15), refresh).await {
            Ok(report) => report,
            Err(_) => {
                tracing::warn!("CRL refresh timed out; the cached lists stay in use until they are stale");
                return;
            }
        };
        for (source, error) in report.failed {
            tracing::warn!(%source, %error, "CRL refresh failed; the cached list stays in use until it is stale");
            state
                .audit
                .record(crate::audit::AuditEvent::RevocationListRefreshFailed { source, error }, Default::default());
        }
        let now = crate::unix_now();
        for entry in self.crls.snapshot().entries() {
            state.metrics.revocation_list_age(&entry.source, now.saturating_sub(entry.this_update));
        }
    }

    /// Refreshes the CRLs every `interval` (the first refresh is done at start, see `build_state`).
    pub fn spawn_crl_refresher(self: &Arc<Self>, state: crate::app::AppState, interval: std::time::Duration) {
        let card = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(card) = card.upgrade() else { return };
                card.refresh_crls(&state).await;
            }
        });
    }
}

/// The demo PKI's CRL is re-signed when older than a day, so a long-running demo never reaches
/// `card.crl_max_staleness` (a real CA publishes daily; the demo plays that part).
fn refresh_demo_crl(dir: &std::path::Path) -> Result<(), CardSetupError> {
    let failed = |e: String| CardSetupError(format!("demo CRL in {}: {e}", dir.display()));
    let now = crate::unix_now();
    let current = std::fs::read(dir.join("crl.der")).map_err(|e| failed(e.to_string()))?;
    let entry = crate::cps::crl::CrlEntry::from_der(current, "demo".into(), now).map_err(failed)?;
    if now - entry.this_update < 24 * 3600 {
        return Ok(());
    }
    let manifest: serde_json::Value = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| failed("manifest.json unreadable".into()))?;
    let revoked: Vec<String> = manifest["cards"]
        .as_object()
        .map(|cards| {
            cards
                .values()
                .filter(|c| c["expected"] == "revoked")
                .filter_map(|c| c["serial"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    crate::cps::devpki::publish_crl(dir, &revoked, now, now + 2 * 24 * 3600).map_err(|e| failed(format!("{e:#}")))?;
    Ok(())
}

/// Binds the card listener; in the demo a busy default port falls back to an ephemeral one.
fn bind_card_listener(addr: SocketAddr, may_fall_back: bool) -> Result<std::net::TcpListener, CardSetupError> {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => Ok(l),
        Err(e) if may_fall_back => {
            tracing::warn!(%addr, error = %e, "demo card listener port busy: using an ephemeral port");
            std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                .map_err(|e| CardSetupError(format!("cannot bind the card listener: {e}")))
        }
        Err(e) => Err(CardSetupError(format!("cannot bind card.listen {addr}: {e}"))),
    }
}

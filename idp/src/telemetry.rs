//! Logs (`tracing`, text or JSON, one span per request carrying its request id) and metrics
//! (Prometheus text format). The metrics registry lives in the application state, not in a global,
//! so every test server has its own.

use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::{LogConfig, LogFormat};

/// Installs the global `tracing` subscriber (the one process-wide thing: the binary calls it once).
pub fn init_logging(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    pub grant_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    pub dependency: String,
}

/// The application's metrics. Later features add their counters here.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<RouteLabels, Counter>,
    pub http_duration: Family<RouteOnly, Histogram>,
    pub dependency_errors: Family<DependencyLabels, Counter>,
    pub signing_keys_published: Gauge,
    pub tokens_issued: Family<GrantLabels, Counter>,
    /// Card logins by outcome (`success` or the rejection code).
    pub card_logins: Family<OutcomeLabels, Counter>,
    /// Client-certificate headers received from addresses that are not trusted proxies.
    pub forged_proxy_headers: Counter,
    /// Seconds since the oldest CRL in use was issued.
    pub revocation_list_age: Gauge,
    /// Habilitation decisions (`patient_access` evaluations) by outcome (`granted`, `denied`).
    pub habilitation_decisions: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("habilis");
        let http_requests = Family::<RouteLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", http_requests.clone());
        let http_duration = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
        });
        registry.register("http_request_duration_seconds", "HTTP request latency by route", http_duration.clone());
        let dependency_errors = Family::<DependencyLabels, Counter>::default();
        registry.register(
            "dependency_errors",
            "Failures talking to the database or the ephemeral store",
            dependency_errors.clone(),
        );
        let signing_keys_published = Gauge::default();
        registry.register(
            "signing_keys_published",
            "Keys currently published in the JWKS",
            signing_keys_published.clone(),
        );
        let tokens_issued = Family::<GrantLabels, Counter>::default();
        registry.register("tokens_issued", "Token responses by grant type", tokens_issued.clone());
        let card_logins = Family::<OutcomeLabels, Counter>::default();
        registry.register("card_logins", "CPS card logins by outcome", card_logins.clone());
        let forged_proxy_headers = Counter::default();
        registry.register(
            "forged_proxy_headers",
            "Client-certificate headers sent by addresses that are not trusted proxies",
            forged_proxy_headers.clone(),
        );
        let revocation_list_age = Gauge::default();
        registry.register(
            "revocation_list_age_seconds",
            "Age of the oldest certificate revocation list in use",
            revocation_list_age.clone(),
        );
        let habilitation_decisions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "habilitation_decisions",
            "Evaluations of patient_access requests by outcome",
            habilitation_decisions.clone(),
        );
        Metrics {
            habilitation_decisions,
            card_logins,
            forged_proxy_headers,
            revocation_list_age,
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            dependency_errors,
            signing_keys_published,
            tokens_issued,
        }
    }

    pub fn token_issued(&self, grant_type: &str) {
        self.tokens_issued.get_or_create(&GrantLabels { grant_type: grant_type.to_string() }).inc();
    }

    pub fn habilitation_decision(&self, granted: bool) {
        let outcome = if granted { "granted" } else { "denied" };
        self.habilitation_decisions.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    pub fn card_login(&self, outcome: &str) {
        self.card_logins.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    pub fn dependency_error(&self, dependency: &str) {
        self.dependency_errors.get_or_create(&DependencyLabels { dependency: dependency.to_string() }).inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Middleware: counts requests and observes latency per matched route (never per raw path, which
/// would let a scanner explode the label set).
pub async fn track_http(State(metrics): State<std::sync::Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics.http_duration.get_or_create(&RouteOnly { route: route.clone() }).observe(started.elapsed().as_secs_f64());
    metrics.http_requests.get_or_create(&RouteLabels { method, route, status }).inc();
    response
}

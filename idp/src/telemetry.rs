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
pub struct AdmissionLabels {
    pub work: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    pub grant_type: String,
}

/// The application's metrics. Later features add their counters here.
///
/// The security counters (logins, code failures, lockouts, tokens, decisions, alerts) are
/// incremented where their audit event is recorded, not derived from the audit broadcast: a
/// lagging broadcast receiver drops records, a counter must not.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<RouteLabels, Counter>,
    pub http_duration: Family<RouteOnly, Histogram>,
    /// Failures of the database (`store="database"`) or the ephemeral store (`"ephemeral"`).
    pub storage_errors: Family<StoreLabels, Counter>,
    /// Anonymous work refused (`oidc::admission`) by kind and reason (`address`, `client`,
    /// `saturated`).
    pub admission_refusals: Family<AdmissionLabels, Counter>,
    pub signing_keys_published: Gauge,
    pub tokens_issued: Family<GrantLabels, Counter>,
    /// Card logins by outcome (`success` or the rejection code).
    pub card_logins: Family<OutcomeLabels, Counter>,
    /// Client-certificate headers received from addresses that are not trusted proxies.
    pub forged_proxy_headers: Counter,
    /// Seconds since each CRL in use was issued, by source (URL or file).
    pub revocation_list_age: Family<SourceLabels, Gauge>,
    /// Habilitation decisions (`patient_access` evaluations) by outcome (`granted`, `denied`) and
    /// where they were asked (`via`).
    pub habilitation_decisions: Family<DecisionLabels, Counter>,
    /// Login steps by factor (`password`, `email_otp`, `totp`, `recovery_code`, `card`,
    /// `webauthn`) and outcome (`success`, `failure`).
    pub logins: Family<LoginLabels, Counter>,
    /// Wrong or expired one-time codes by kind (`email_otp`, `totp`, `recovery_code`).
    pub code_failures: Family<KindLabels, Counter>,
    /// Login names locked by repeated failures, by the factor of the failure that locked them.
    pub lockouts: Family<FactorLabels, Counter>,
    /// Records queued for the durable audit log, not yet written (set at scrape time).
    pub audit_backlog: Gauge,
    /// Alerts fired, by rule.
    pub alerts: Family<RuleLabels, Counter>,
    /// Audit records the alert engine missed because it lagged behind the broadcast.
    pub alert_events_dropped: Counter,
    /// Alert notifications that could not be delivered after their retries, by channel.
    pub alert_delivery_failures: Family<ChannelLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub outcome: String,
    pub via: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub factor: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FactorLabels {
    pub factor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
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
        let storage_errors = Family::<StoreLabels, Counter>::default();
        registry.register(
            "storage_errors",
            "Failures of the database or the ephemeral store, by store",
            storage_errors.clone(),
        );
        let admission_refusals = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_refusals",
            "Anonymous work (login pages, pushed requests, passkey challenges, reset requests) refused, by kind and reason",
            admission_refusals.clone(),
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
        let revocation_list_age = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "revocation_list_age_seconds",
            "Age of each certificate revocation list in use (since it was issued), by source",
            revocation_list_age.clone(),
        );
        let habilitation_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "habilitation_decisions",
            "Evaluations of patient_access requests by outcome and where they were asked",
            habilitation_decisions.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register("logins", "Login steps by factor and outcome", logins.clone());
        let code_failures = Family::<KindLabels, Counter>::default();
        registry.register("code_failures", "Wrong or expired one-time codes by kind", code_failures.clone());
        let lockouts = Family::<FactorLabels, Counter>::default();
        registry.register("lockouts", "Login names locked by repeated failures", lockouts.clone());
        let audit_backlog = Gauge::default();
        registry.register("audit_backlog", "Audit records not yet written to the durable log", audit_backlog.clone());
        let alerts = Family::<RuleLabels, Counter>::default();
        registry.register("alerts", "Alerts fired by rule", alerts.clone());
        let alert_events_dropped = Counter::default();
        registry.register(
            "alert_events_dropped",
            "Audit records the alert engine missed because it lagged behind",
            alert_events_dropped.clone(),
        );
        let alert_delivery_failures = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "alert_delivery_failures",
            "Alert notifications not delivered after their retries, by channel",
            alert_delivery_failures.clone(),
        );
        Metrics {
            logins,
            code_failures,
            lockouts,
            audit_backlog,
            alerts,
            alert_events_dropped,
            alert_delivery_failures,
            habilitation_decisions,
            card_logins,
            forged_proxy_headers,
            revocation_list_age,
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            storage_errors,
            admission_refusals,
            signing_keys_published,
            tokens_issued,
        }
    }

    pub fn token_issued(&self, grant_type: &str) {
        self.tokens_issued.get_or_create(&GrantLabels { grant_type: grant_type.to_string() }).inc();
    }

    pub fn habilitation_decision(&self, granted: bool, via: &str) {
        let outcome = if granted { "granted" } else { "denied" };
        self.habilitation_decisions
            .get_or_create(&DecisionLabels { outcome: outcome.to_string(), via: via.to_string() })
            .inc();
    }

    /// One login step: `factor` as in `habilis_logins_total`, `success` or a failure.
    pub fn login(&self, factor: &str, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.logins.get_or_create(&LoginLabels { factor: factor.to_string(), outcome: outcome.to_string() }).inc();
    }

    pub fn code_failure(&self, kind: &str) {
        self.code_failures.get_or_create(&KindLabels { kind: kind.to_string() }).inc();
    }

    pub fn lockout(&self, factor: &str) {
        self.lockouts.get_or_create(&FactorLabels { factor: factor.to_string() }).inc();
    }

    pub fn alert(&self, rule: &str) {
        self.alerts.get_or_create(&RuleLabels { rule: rule.to_string() }).inc();
    }

    pub fn alert_delivery_failure(&self, channel: &str) {
        self.alert_delivery_failures.get_or_create(&ChannelLabels { channel: channel.to_string() }).inc();
    }

    pub fn revocation_list_age(&self, source: &str, age_seconds: i64) {
        self.revocation_list_age.get_or_create(&SourceLabels { source: source.to_string() }).set(age_seconds);
    }

    pub fn card_login(&self, outcome: &str) {
        self.card_logins.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    pub fn admission_refusal(&self, work: &str, reason: &str) {
        self.admission_refusals
            .get_or_create(&AdmissionLabels { work: work.to_string(), reason: reason.to_string() })
            .inc();
    }

    /// A failure of `store` (`database` or `ephemeral`).
    pub fn storage_error(&self, store: &str) {
        self.storage_errors.get_or_create(&StoreLabels { store: store.to_string() }).inc();
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
    // Storage errors become HTTP errors in `crate::error` (no state there): they are counted
    // through this request's metrics.
    let response = STORAGE_ERRORS.scope(metrics.clone(), next.run(request)).await;
    let status = response.status().as_u16();
    metrics.http_duration.get_or_create(&RouteOnly { route: route.clone() }).observe(started.elapsed().as_secs_f64());
    metrics.http_requests.get_or_create(&RouteLabels { method, route, status }).inc();
    response
}

tokio::task_local! {
    /// The metrics of the server handling the current request (set by [`track_http`]).
    static STORAGE_ERRORS: std::sync::Arc<Metrics>;
}

/// Counts a failure of `store` (`database`, `ephemeral`) against the server handling the current
/// request. The central place is where storage errors become HTTP errors (`crate::error`), which
/// has no application state: the request's metrics are found through a task-local set by
/// [`track_http`], so each test server still counts its own. Outside a request (background
/// tasks), nothing is counted here: those call [`Metrics::storage_error`] directly.
pub fn count_storage_error(store: &str) {
    let _ = STORAGE_ERRORS.try_with(|metrics| metrics.storage_error(store));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn storage_errors_are_counted_against_the_request_metrics() {
        let metrics = std::sync::Arc::new(Metrics::new());
        count_storage_error("database"); // outside a request: no server to count against
        STORAGE_ERRORS.scope(metrics.clone(), async { count_storage_error("ephemeral") }).await;
        let text = metrics.encode();
        assert!(text.contains("habilis_storage_errors_total{store=\"ephemeral\"} 1"), "{text}");
        assert!(!text.contains("store=\"database\""), "{text}");
    }

    #[test]
    fn security_counters_carry_their_labels() {
        let metrics = Metrics::new();
        metrics.login("password", false);
        metrics.code_failure("totp");
        metrics.lockout("password");
        metrics.habilitation_decision(true, "token");
        metrics.revocation_list_age("http://crl.example/ca.crl", 42);
        metrics.alert("failed_login_spike");
        metrics.audit_backlog.set(3);
        let text = metrics.encode();
        for expected in [
            "habilis_logins_total{factor=\"password\",outcome=\"failure\"} 1",
            "habilis_code_failures_total{kind=\"totp\"} 1",
            "habilis_lockouts_total{factor=\"password\"} 1",
            "habilis_habilitation_decisions_total{outcome=\"granted\",via=\"token\"} 1",
            "habilis_revocation_list_age_seconds{source=\"http://crl.example/ca.crl\"} 42",
            "habilis_alerts_total{rule=\"failed_login_spike\"} 1",
            "habilis_audit_backlog 3",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}

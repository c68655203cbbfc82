//! Typed audit events (ARCHITECTURE.md §7: audit is a side effect of the domain). Each event is one
//! variant of [`AuditEvent`]; [`Audit::record`] stamps it with its context and hands it to the
//! sinks: the `habilis::audit` tracing target (structured, one JSON object per event with
//! `log.format = json`) and subscribers such as tests and alerting, through a broadcast channel.
//! The tamper-evident durable log (hash chain, checkpoints, export) builds on this seam.

mod event;

use serde::Serialize;
use tokio::sync::broadcast;

pub use event::{AuditEvent, Outcome};

/// Who and where: the context every record carries besides the event.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct AuditContext {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub client_id: Option<String>,
}

impl AuditContext {
    /// The context of an HTTP request: peer address, user agent and request id.
    pub fn from_request(headers: &axum::http::HeaderMap, peer: Option<std::net::SocketAddr>) -> AuditContext {
        let header = |name: &str| {
            headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(256).collect::<String>())
        };
        AuditContext {
            ip: peer.map(|p| p.ip().to_string()),
            user_agent: header("user-agent"),
            request_id: header("x-request-id"),
            client_id: None,
        }
    }
}

/// One audit record.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub time: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    #[serde(flatten)]
    pub context: AuditContext,
}

/// The audit service held in the application state.
pub struct Audit {
    subscribers: broadcast::Sender<AuditRecord>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit { subscribers: broadcast::channel(1024).0 }
    }
}

impl Audit {
    pub fn record(&self, event: AuditEvent, context: AuditContext) {
        let record = AuditRecord { time: crate::unix_now(), event, context };
        // Serialised only when the log level keeps it.
        if tracing::enabled!(target: "habilis::audit", tracing::Level::INFO) {
            match serde_json::to_string(&record) {
                Ok(json) => tracing::info!(target: "habilis::audit", event = record.event.name(), record = %json),
                Err(e) => tracing::error!(target: "habilis::audit", error = %e, "audit record not serialisable"),
            }
        }
        // No subscriber is normal; a lagging one loses the oldest records, never blocks the caller.
        let _ = self.subscribers.send(record);
    }

    /// A receiver of every record from now on (tests, alerting).
    pub fn subscribe(&self) -> broadcast::Receiver<AuditRecord> {
        self.subscribers.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_reach_subscribers_with_their_context() {
        let audit = Audit::default();
        let mut rx = audit.subscribe();
        let context = AuditContext { ip: Some("192.0.2.1".into()), ..Default::default() };
        audit.record(AuditEvent::ForgedProxyHeader { header: "x-ssl-client-cert".into() }, context.clone());
        let record = rx.recv().await.expect("a record");
        assert_eq!(record.event.name(), "forged_proxy_header");
        assert_eq!(record.context, context);
        let json = serde_json::to_value(&record).expect("serialisable");
        assert_eq!(json["event"], "forged_proxy_header");
        assert_eq!(json["ip"], "192.0.2.1");
    }
}

//! Typed audit events (ARCHITECTURE.md §7: audit is a side effect of the domain). Each event is one
//! variant of [`AuditEvent`]; [`Audit::record`] stamps it with its context and hands it to the
//! sinks: the `habilis::audit` tracing target (structured, one JSON object per event with
//! `log.format = json`), subscribers such as tests and alerting (a broadcast channel), and the
//! durable log: a hash-chained table written in batches by a background task ([`writer`]), with
//! signed checkpoints ([`checkpoint`]), verification ([`verify`]), export and archive-before-purge
//! ([`archive`]) and the `habilis audit` commands ([`cli`]).

pub mod archive;
pub mod chain;
pub mod checkpoint;
pub mod cli;
mod event;
pub mod verify;
mod writer;

#[cfg(test)]
mod store_tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

pub use event::{AuditEvent, Outcome};
pub use writer::WriterSettings;

use crate::keys::KeyManager;
use crate::store::{NewAuditRecord, SharedStore};

/// Who and where: the context every record carries besides the event.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct AuditContext {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub client_id: Option<String>,
    /// The authentication level of the session or token the event happened under, when known.
    pub acr: Option<String>,
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
            acr: None,
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

impl AuditRecord {
    /// The row of the durable log: the event's own fields (without its `event` tag) become
    /// `details`; the context's strings are taken, not copied. What the writer does with each
    /// queued record, off the request path.
    pub fn into_new(self) -> NewAuditRecord {
        let details = details_of(&self.event);
        let context = self.context;
        NewAuditRecord {
            time: self.time,
            event: self.event.name().to_string(),
            outcome: self.event.outcome().as_str().to_string(),
            client_id: context.client_id,
            request_id: context.request_id,
            acr: context.acr,
            actor: self.event.actor().map(str::to_string),
            subject: self.event.subject().map(str::to_string),
            ip: context.ip,
            user_agent: context.user_agent,
            details,
        }
    }
}

/// The event's fields as a JSON object, without its `event` tag.
///
/// The event is internally tagged, so serde writes `{"event":"<name>"` first: that prefix is cut
/// from the text rather than building a `serde_json::Value` tree to remove it (the writer does
/// this for every record, on the cores requests need).
fn details_of(event: &AuditEvent) -> String {
    let mut json = match serde_json::to_string(event) {
        Ok(json) => json,
        // Every variant is a struct of strings, numbers and lists: unreachable in practice, and an
        // audit record is never dropped for it.
        Err(e) => return serde_json::json!({"unserialisable": e.to_string()}).to_string(),
    };
    let tag_end = 1 + "\"event\":\"".len() + event.name().len() + 1;
    let tagged = json
        .get(1..tag_end)
        .is_some_and(|tag| tag.strip_prefix("\"event\":\"").and_then(|t| t.strip_suffix('"')) == Some(event.name()));
    if !tagged {
        // Not the expected shape: the slow, general way.
        return match serde_json::to_value(event) {
            Ok(serde_json::Value::Object(mut fields)) => {
                fields.remove("event");
                serde_json::Value::Object(fields).to_string()
            }
            Ok(other) => other.to_string(),
            Err(e) => serde_json::json!({"unserialisable": e.to_string()}).to_string(),
        };
    }
    // `{"event":"x","a":1}` → `{"a":1}`; `{"event":"x"}` → `{}`.
    let cut_end = if json.as_bytes().get(tag_end) == Some(&b',') { tag_end + 1 } else { tag_end };
    json.replace_range(1..cut_end, "");
    json
}

/// The queue to the durable log's writer task.
struct Durable {
    tx: mpsc::UnboundedSender<writer::Command>,
    backlog: Arc<AtomicUsize>,
    /// Rung after queueing a committed record, so the writer stops waiting for more.
    wake: Arc<Notify>,
    /// Longest a committed record is waited for (`audit.commit_timeout`).
    commit_timeout: std::time::Duration,
}

/// A record that had to be durable before the caller went on is not (the database is unreachable
/// or too slow, or the writer has stopped). The record stays queued and is written when the
/// database is back; the caller must not hand out what the record describes.
#[derive(Debug, thiserror::Error)]
#[error("the audit log could not record this in time; try again shortly")]
pub struct NotDurable;

/// The audit service held in the application state.
pub struct Audit {
    subscribers: broadcast::Sender<AuditRecord>,
    /// `None`: records go to the tracing output and subscribers only (`Audit::default()` in unit
    /// tests, `audit.durable = false`).
    durable: Option<Durable>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit { subscribers: broadcast::channel(1024).0, durable: None }
    }
}

impl Audit {
    /// An audit service that also writes to the durable log of `store`, through a writer task
    /// spawned on the current Tokio runtime. With `keys`, the writer signs checkpoints (the
    /// server); without (one-shot CLI commands), the server's next checkpoint covers their records.
    pub fn durable(store: SharedStore, settings: WriterSettings, keys: Option<Arc<KeyManager>>) -> Audit {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let checkpointer = keys.map(|keys| checkpoint::Checkpointer::new(store.clone(), keys));
        let wake = Arc::new(Notify::new());
        let commit_timeout = settings.commit_timeout;
        let task = writer::Writer { store, rx, backlog: backlog.clone(), settings, checkpointer, wake: wake.clone() };
        tokio::spawn(task.run());
        Audit { subscribers: broadcast::channel(1024).0, durable: Some(Durable { tx, backlog, wake, commit_timeout }) }
    }

    /// Records an event: synchronous and cheap (no database work, no waiting), so it can be
    /// called on any request path.
    pub fn record(&self, event: AuditEvent, context: AuditContext) {
        self.queue(event, context, None);
    }

    /// Records an event and returns once it is committed to the durable log (group commit: see
    /// the writer). For what must never reach anyone without its trace — an issued token: the
    /// token endpoint answers only after this. Fails after `audit.commit_timeout` (the record
    /// stays queued and is written later). Without a durable log it returns at once.
    pub async fn record_committed(&self, event: AuditEvent, context: AuditContext) -> Result<(), NotDurable> {
        let Some(durable) = &self.durable else {
            self.queue(event, context, None);
            return Ok(());
        };
        let (ack, committed) = oneshot::channel();
        self.queue(event, context, Some(ack));
        durable.wake.notify_one();
        match tokio::time::timeout(durable.commit_timeout, committed).await {
            Ok(Ok(())) => Ok(()),
            // Dropped: the writer stopped or gave the batch up at shutdown.
            Ok(Err(_)) => Err(NotDurable),
            Err(_) => {
                tracing::error!(
                    target: "habilis::audit",
                    timeout_ms = durable.commit_timeout.as_millis() as u64,
                    "an audit record was not committed in time: the response it guards is refused"
                );
                Err(NotDurable)
            }
        }
    }

    fn queue(&self, event: AuditEvent, context: AuditContext, ack: Option<oneshot::Sender<()>>) {
        let record = AuditRecord { time: crate::unix_now(), event, context };
        // Serialised only when the log level keeps it.
        if tracing::enabled!(target: "habilis::audit", tracing::Level::INFO) {
            match serde_json::to_string(&record) {
                Ok(json) => tracing::info!(target: "habilis::audit", event = record.event.name(), record = %json),
                Err(e) => tracing::error!(target: "habilis::audit", error = %e, "audit record not serialisable"),
            }
        }
        match &self.durable {
            Some(durable) => {
                // No subscriber is normal; a lagging one loses the oldest records, never blocks.
                if self.subscribers.receiver_count() > 0 {
                    let _ = self.subscribers.send(record.clone());
                }
                durable.backlog.fetch_add(1, Ordering::Relaxed);
                if let Err(mpsc::error::SendError(_)) = durable.tx.send(writer::Command::Record(Box::new(record), ack))
                {
                    // Only after shutdown(): the writer has stopped.
                    durable.backlog.fetch_sub(1, Ordering::Relaxed);
                    tracing::error!(
                        target: "habilis::audit",
                        "audit record after the writer stopped: only in this log output, not in the durable log"
                    );
                }
            }
            None => {
                let _ = self.subscribers.send(record);
            }
        }
    }

    /// A receiver of every record from now on (tests, alerting).
    pub fn subscribe(&self) -> broadcast::Receiver<AuditRecord> {
        self.subscribers.subscribe()
    }

    /// Whether records reach the durable log.
    pub fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    /// Records queued for the durable log and not yet written (the `habilis_audit_backlog`
    /// gauge). Grows while the database is unreachable; 0 without a durable log.
    pub fn backlog(&self) -> usize {
        self.durable.as_ref().map(|d| d.backlog.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Waits until every record recorded before this call is in the durable log (or given up at
    /// shutdown; see the writer). Returns at once without a durable log.
    pub async fn flush(&self) {
        self.send_and_wait(writer::Command::Flush).await;
    }

    /// Writes every queued record and a final checkpoint, then stops the writer: what `habilis
    /// serve` does once the HTTP server has stopped, and CLI commands before they exit. Records
    /// made afterwards only reach the tracing output.
    pub async fn shutdown(&self) {
        self.send_and_wait(writer::Command::Shutdown).await;
    }

    async fn send_and_wait(&self, command: impl FnOnce(oneshot::Sender<()>) -> writer::Command) {
        let Some(durable) = &self.durable else { return };
        let (ack, done) = oneshot::channel();
        if durable.tx.send(command(ack)).is_ok() {
            let _ = done.await;
        }
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

    #[test]
    fn details_are_the_events_fields_without_its_tag() {
        let events = [
            AuditEvent::ForgedProxyHeader { header: "x-ssl-client-cert".into() },
            AuditEvent::RegistrationTokenRevoked { token_id: "t\"1".into(), actor: "account:a".into() },
            AuditEvent::RegistrationTokenIssued {
                token_id: "t2".into(),
                actor: "client:c".into(),
                description: None,
                expires_at: 5,
                max_uses: 1,
            },
        ];
        for event in events {
            let details = details_of(&event);
            let mut expected = serde_json::to_value(&event).unwrap();
            expected.as_object_mut().unwrap().remove("event");
            assert_eq!(serde_json::from_str::<serde_json::Value>(&details).unwrap(), expected, "{details}");
            assert!(!details.contains("\"event\""), "{details}");
        }
    }
}

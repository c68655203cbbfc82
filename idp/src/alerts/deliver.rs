//! Delivery of fired alerts: a signed JSON webhook (with timeout and retries) and email through
//! the configured mailer. Each delivery runs in its own task: nothing here ever waits on the
//! request path or on the rules.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::rules::Alert;
use crate::config::AlertsConfig;
use crate::mail::{OutgoingMail, SharedMailer};
use crate::telemetry::Metrics;

/// The header carrying the body's HMAC-SHA256 when `alerts.webhook_secret` is set.
pub const SIGNATURE_HEADER: &str = "x-habilis-signature";

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The value of [`SIGNATURE_HEADER`] for `body`: `sha256=<hex>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), body)))
}

/// What the webhook receives.
#[derive(Serialize)]
struct Payload<'a> {
    rule: &'static str,
    severity: &'static str,
    summary: &'a str,
    details: &'a serde_json::Value,
    /// RFC 3339, UTC.
    time: String,
    instance: &'a str,
}

/// The channels of one server, built once.
pub struct Delivery {
    http: reqwest::Client,
    mailer: SharedMailer,
    metrics: Arc<Metrics>,
    webhook_url: Option<url::Url>,
    webhook_secret: Option<String>,
    timeout: Duration,
    retries: u32,
    email_to: Vec<String>,
    instance: String,
}

impl Delivery {
    pub fn new(
        config: &AlertsConfig,
        http: reqwest::Client,
        mailer: SharedMailer,
        metrics: Arc<Metrics>,
        instance: String,
    ) -> Delivery {
        Delivery {
            http,
            mailer,
            metrics,
            webhook_url: config.webhook_url.clone(),
            webhook_secret: config.webhook_secret.clone(),
            timeout: config.webhook_timeout,
            retries: config.webhook_retries,
            email_to: config.email_to.clone(),
            instance,
        }
    }

    /// Sends `alert` on every configured channel, in the background.
    pub fn dispatch(self: &Arc<Self>, alert: &Alert) {
        if self.webhook_url.is_some() {
            let this = self.clone();
            let body = self.body(alert);
            tokio::spawn(async move { this.post(body).await });
        }
        if !self.email_to.is_empty() {
            let this = self.clone();
            let alert = alert.clone();
            tokio::spawn(async move { this.mail(&alert).await });
        }
    }

    fn body(&self, alert: &Alert) -> Vec<u8> {
        let payload = Payload {
            rule: alert.rule.as_str(),
            severity: alert.severity.as_str(),
            summary: &alert.summary,
            details: &alert.details,
            time: rfc3339(alert.time),
            instance: &self.instance,
        };
        // A struct of strings and a JSON value: serialising cannot fail.
        serde_json::to_vec(&payload).unwrap_or_default()
    }

    async fn post(&self, body: Vec<u8>) {
        let Some(url) = &self.webhook_url else { return };
        let signature = self.webhook_secret.as_deref().map(|secret| signature(secret, &body));
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1).min(6))).await;
            }
            let mut request = self
                .http
                .post(url.clone())
                .timeout(self.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(signature) = &signature {
                request = request.header(SIGNATURE_HEADER, signature);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    tracing::warn!(status = response.status().as_u16(), attempt, "alert webhook refused the alert")
                }
                Err(e) => tracing::warn!(error = %e, attempt, "alert webhook unreachable"),
            }
        }
        self.metrics.alert_delivery_failure("webhook");
        tracing::error!(url = %url, "alert not delivered to the webhook after its retries");
    }

    async fn mail(&self, alert: &Alert) {
        let details = serde_json::to_string_pretty(&alert.details).unwrap_or_default();
        let subject = format!("[Habilis {}] {}: {}", alert.severity.as_str(), alert.rule.as_str(), alert.summary);
        let text = format!(
            "{}\n\nRule: {}\nSeverity: {}\nTime: {}\nInstance: {}\n\n{details}\n",
            alert.summary,
            alert.rule.as_str(),
            alert.severity.as_str(),
            rfc3339(alert.time),
            self.instance
        );
        let html = format!("<pre>{}</pre>", escape_html(&text));
        for to in &self.email_to {
            let mail = OutgoingMail {
                to: to.clone(),
                to_name: None,
                subject: subject.clone(),
                text: text.clone(),
                html: html.clone(),
            };
            let mut delivered = false;
            for attempt in 0..=2u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
                match self.mailer.send(&mail).await {
                    Ok(()) => {
                        delivered = true;
                        break;
                    }
                    Err(e) if e.is_transient() => tracing::warn!(error = %e, attempt, "alert mail not sent yet"),
                    Err(e) => {
                        tracing::warn!(error = %e, "alert mail refused");
                        break;
                    }
                }
            }
            if !delivered {
                self.metrics.alert_delivery_failure("email");
                tracing::error!(rule = alert.rule.as_str(), "alert not delivered by email");
            }
        }
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Unix seconds as RFC 3339 (UTC).
fn rfc3339(time: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(time)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| time.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
        assert!(signature("Jefe", b"what do ya want for nothing?").starts_with("sha256=5bdcc146"));
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}

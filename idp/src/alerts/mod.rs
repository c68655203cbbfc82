//! Security alerts evaluated in the server (`[alerts]`): rules over sliding windows of audit
//! events, delivered by webhook and email, each alert audited (`alert_raised`) and counted
//! (`habilis_alerts_total{rule}`).
//!
//! * `failed_login_spike`: at least N failed logins (any factor, any account) within W.
//! * `address_failing_many_accounts`: one client address failing for N distinct accounts within W.
//! * `forged_proxy_header`: any client-certificate header from an address that is not a trusted
//!   proxy.
//! * `revocation_list_stale`: a CRL in use issued longer ago than a limit (checked periodically).
//!
//! The engine is one task fed by the audit broadcast ([`crate::audit::Audit::subscribe`]): request
//! handlers only record events, as they do anyway, and never wait for the rules or a delivery.
//! When the engine lags behind the broadcast, the records it missed are counted
//! (`habilis_alert_events_dropped_total`) and it carries on. The rules themselves ([`rules`]) are a
//! pure state machine driven by the records' own times.

pub mod deliver;
pub mod rules;

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

pub use deliver::{SIGNATURE_HEADER, hmac_sha256, signature};
pub use rules::{Alert, Rule, Rules, Severity, Thresholds};

use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};

/// Starts the alert engine of `habilis serve`, unless `alerts.enabled = false`.
pub fn spawn(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let config = &state.config.alerts;
    if !config.enabled {
        tracing::info!("alerts: disabled (alerts.enabled = false)");
        return None;
    }
    if config.webhook_url.is_none() && config.email_to.is_empty() {
        tracing::warn!("alerts: no alerts.webhook_url nor alerts.email_to: alerts are only audited and counted");
    }
    // Subscribed now, so that nothing recorded once the server serves is missed.
    let mut records = state.audit.subscribe();
    let instance = config.instance.clone().unwrap_or_else(|| host_name(&state));
    let delivery = Arc::new(deliver::Delivery::new(
        config,
        state.http.clone(),
        state.mailer.clone(),
        state.metrics.clone(),
        instance,
    ));
    let mut rules = Rules::new(Thresholds::from(config));
    let check_every = config.revocation_check_interval;
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(check_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = records.recv() => match received {
                    Ok(record) => {
                        for alert in rules.observe(&record) {
                            raise(&state, &delivery, alert);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        state.metrics.alert_events_dropped.inc_by(missed);
                        tracing::warn!(missed, "alerts: the engine lagged behind the audit events; some were not evaluated");
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = ticks.tick() => {
                    let now = crate::unix_now();
                    let lists = revocation_lists(&state, now);
                    for alert in rules.check_revocation_lists(&lists, now) {
                        raise(&state, &delivery, alert);
                    }
                    rules.sweep(now);
                }
            }
        }
    }))
}

/// The CRLs in use: `(source, thisUpdate)`; also refreshes the age gauges.
pub fn revocation_lists(state: &AppState, now: i64) -> Vec<(String, i64)> {
    let Some(card) = &state.card else { return Vec::new() };
    let snapshot = card.crls.snapshot();
    snapshot
        .entries()
        .iter()
        .map(|entry| {
            state.metrics.revocation_list_age(&entry.source, now.saturating_sub(entry.this_update));
            (entry.source.clone(), entry.this_update)
        })
        .collect()
}

/// Audits, counts and delivers one alert.
fn raise(state: &AppState, delivery: &Arc<deliver::Delivery>, alert: Alert) {
    let rule = alert.rule.as_str();
    tracing::warn!(rule, severity = alert.severity.as_str(), summary = %alert.summary, "security alert");
    state.metrics.alert(rule);
    state.audit.record(
        AuditEvent::AlertRaised {
            rule: rule.to_string(),
            severity: alert.severity.as_str().to_string(),
            summary: alert.summary.clone(),
            details: alert.details.to_string(),
        },
        AuditContext { ip: alert.address.clone(), ..Default::default() },
    );
    delivery.dispatch(&alert);
}

/// The `instance` of alerts by default: the host name, else the issuer's host.
fn host_name(state: &AppState) -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| state.config.issuer().host_str().unwrap_or("habilis").to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_alert_settings_are_checked() {
        let load = |vars: &[(&str, &str)]| {
            Config::load(None, vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
        };
        let config = load(&[
            ("HABILIS_ALERTS__FAILED_LOGIN_THRESHOLD", "5"),
            ("HABILIS_ALERTS__WEBHOOK_URL", "https://alerts.example.org/hook"),
            ("HABILIS_ALERTS__EMAIL_TO", "[\"security@example.org\"]"),
            ("HABILIS_ALERTS__COOLDOWN", "1m"),
        ])
        .unwrap();
        assert_eq!(config.alerts.failed_login_threshold, 5);
        assert_eq!(config.alerts.cooldown, std::time::Duration::from_secs(60));
        assert_eq!(config.alerts.email_to, ["security@example.org"]);
        for (var, value, key) in [
            ("HABILIS_ALERTS__WEBHOOK_URL", "ftp://example.org", "alerts.webhook_url"),
            ("HABILIS_ALERTS__WEBHOOK_SECRET", "short", "alerts.webhook_secret"),
            ("HABILIS_ALERTS__EMAIL_TO", "[\"not an address\"]", "alerts.email_to[0]"),
            ("HABILIS_ALERTS__COOLDOWN", "0s", "alerts.cooldown"),
            ("HABILIS_ALERTS__WEBHOOK_RETRIES", "11", "alerts.webhook_retries"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.key, key, "{var}={value}: {err}");
        }
    }
}

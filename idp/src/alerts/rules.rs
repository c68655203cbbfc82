//! The alert rules as a pure state machine: audit records (and revocation-list ages) in, alerts
//! out. Time comes from the records themselves (or the `now` argument), never from a clock, so
//! windows, thresholds and cooldowns are unit-tested with made-up times.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;
use serde_json::json;

use crate::audit::{AuditEvent, AuditRecord};
use crate::config::AlertsConfig;

/// The rules, by their stable names (the `rule` of the webhook and of `habilis_alerts_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    FailedLoginSpike,
    AddressFailingManyAccounts,
    ForgedProxyHeader,
    RevocationListStale,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::FailedLoginSpike => "failed_login_spike",
            Rule::AddressFailingManyAccounts => "address_failing_many_accounts",
            Rule::ForgedProxyHeader => "forged_proxy_header",
            Rule::RevocationListStale => "revocation_list_stale",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Rule::FailedLoginSpike | Rule::AddressFailingManyAccounts => Severity::Warning,
            // An attack on the card path, or card logins about to stop (fail closed).
            Rule::ForgedProxyHeader | Rule::RevocationListStale => Severity::Critical,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert fired.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub rule: Rule,
    pub severity: Severity,
    pub summary: String,
    pub details: serde_json::Value,
    /// Unix seconds.
    pub time: i64,
    /// The client address the alert is about, when there is one (for the audit record).
    #[serde(skip)]
    pub address: Option<String>,
}

/// The thresholds of [`AlertsConfig`], in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub failed_login_threshold: u32,
    pub failed_login_window: i64,
    pub address_accounts_threshold: u32,
    pub address_window: i64,
    pub forged_proxy_header: bool,
    pub revocation_list_max_age: i64,
    pub cooldown: i64,
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl From<&AlertsConfig> for Thresholds {
    fn from(c: &AlertsConfig) -> Self {
        Thresholds {
            failed_login_threshold: c.failed_login_threshold,
            failed_login_window: secs(c.failed_login_window),
            address_accounts_threshold: c.address_accounts_threshold,
            address_window: secs(c.address_window),
            forged_proxy_header: c.forged_proxy_header,
            revocation_list_max_age: secs(c.revocation_list_max_age),
            cooldown: secs(c.cooldown),
        }
    }
}

/// Addresses tracked at once by the per-address rule: a bound on memory when failures come from
/// very many addresses (each is forgotten once its window is over).
const MAX_ADDRESSES: usize = 100_000;
/// Failures remembered per address within the window (enough for any sensible threshold).
const MAX_FAILURES_PER_ADDRESS: usize = 10_000;

/// The state of the rules: recent failures and when each rule last fired.
pub struct Rules {
    thresholds: Thresholds,
    /// Times of the recent failed logins, service-wide, oldest first.
    failures: VecDeque<i64>,
    /// Per client address: (time, account key) of its recent failures, oldest first.
    by_address: HashMap<String, VecDeque<(i64, String)>>,
    /// When each (rule, key) last fired; the key is the address or CRL source, or empty.
    last_fired: HashMap<(Rule, String), i64>,
}

/// A failed login as the rules see it.
struct FailedLogin<'a> {
    address: Option<&'a str>,
    /// Which account was tried: an account id, or a keyed hash of an unknown login, or a card.
    account: Option<String>,
}

fn failed_login(record: &AuditRecord) -> Option<FailedLogin<'_>> {
    let account = match &record.event {
        AuditEvent::LoginFailed { account_id, login_hash, .. } => {
            account_id.clone().or_else(|| login_hash.as_ref().map(|h| format!("login:{h}")))
        }
        AuditEvent::CardLoginRefused { id_nat, fingerprint, .. } => {
            id_nat.as_ref().map(|i| format!("id_nat:{i}")).or_else(|| fingerprint.as_ref().map(|f| format!("card:{f}")))
        }
        _ => return None,
    };
    Some(FailedLogin { address: record.context.ip.as_deref(), account })
}

impl Rules {
    pub fn new(thresholds: Thresholds) -> Rules {
        Rules { thresholds, failures: VecDeque::new(), by_address: HashMap::new(), last_fired: HashMap::new() }
    }

    /// Feeds one audit record (at its own time); returns the alerts it fires.
    pub fn observe(&mut self, record: &AuditRecord) -> Vec<Alert> {
        let now = record.time;
        let mut alerts = Vec::new();
        if let Some(failure) = failed_login(record) {
            alerts.extend(self.failed_login_spike(now));
            if let (Some(address), Some(account)) = (failure.address, failure.account) {
                alerts.extend(self.address_failing(address, account, now));
            }
        }
        if let AuditEvent::ForgedProxyHeader { header } = &record.event
            && self.thresholds.forged_proxy_header
            && self.cooled(Rule::ForgedProxyHeader, "", now)
        {
            let address = record.context.ip.clone();
            alerts.push(Alert {
                rule: Rule::ForgedProxyHeader,
                severity: Rule::ForgedProxyHeader.severity(),
                summary: format!(
                    "client-certificate header {header} sent by {}, which is not a trusted proxy",
                    address.as_deref().unwrap_or("an unknown address")
                ),
                details: json!({ "header": header, "address": address, "count": 1 }),
                time: now,
                address,
            });
        }
        alerts
    }

    fn failed_login_spike(&mut self, now: i64) -> Option<Alert> {
        let threshold = self.thresholds.failed_login_threshold;
        if threshold == 0 {
            return None;
        }
        let window = self.thresholds.failed_login_window;
        self.failures.push_back(now);
        while self.failures.front().is_some_and(|t| *t <= now - window) {
            self.failures.pop_front();
        }
        // Never more than the threshold is needed to decide.
        while self.failures.len() > threshold as usize {
            self.failures.pop_front();
        }
        let count = self.failures.len();
        if count < threshold as usize || !self.cooled(Rule::FailedLoginSpike, "", now) {
            return None;
        }
        Some(Alert {
            rule: Rule::FailedLoginSpike,
            severity: Rule::FailedLoginSpike.severity(),
            summary: format!("{count} failed logins in the last {window} s"),
            details: json!({ "count": count, "threshold": threshold, "window_seconds": window }),
            time: now,
            address: None,
        })
    }

    fn address_failing(&mut self, address: &str, account: String, now: i64) -> Option<Alert> {
        let threshold = self.thresholds.address_accounts_threshold;
        if threshold == 0 {
            return None;
        }
        let window = self.thresholds.address_window;
        if !self.by_address.contains_key(address) && self.by_address.len() >= MAX_ADDRESSES {
            self.sweep(now);
            if self.by_address.len() >= MAX_ADDRESSES {
                tracing::warn!("alerts: too many addresses failing at once; this one is not tracked");
                return None;
            }
        }
        let recent = self.by_address.entry(address.to_string()).or_default();
        recent.push_back((now, account));
        while recent.front().is_some_and(|(t, _)| *t <= now - window) || recent.len() > MAX_FAILURES_PER_ADDRESS {
            recent.pop_front();
        }
        let accounts = recent.iter().map(|(_, a)| a.as_str()).collect::<HashSet<_>>().len();
        if accounts < threshold as usize || !self.cooled(Rule::AddressFailingManyAccounts, address, now) {
            return None;
        }
        Some(Alert {
            rule: Rule::AddressFailingManyAccounts,
            severity: Rule::AddressFailingManyAccounts.severity(),
            summary: format!("{address} failed to log in to {accounts} different accounts in the last {window} s"),
            details: json!({
                "address": address, "count": accounts, "threshold": threshold, "window_seconds": window,
            }),
            time: now,
            address: Some(address.to_string()),
        })
    }

    /// Checks the revocation lists in use: `(source, thisUpdate)` each; returns the alerts for
    /// those older than the limit.
    pub fn check_revocation_lists(&mut self, lists: &[(String, i64)], now: i64) -> Vec<Alert> {
        let max = self.thresholds.revocation_list_max_age;
        let mut alerts = Vec::new();
        for (source, this_update) in lists {
            let age = now.saturating_sub(*this_update);
            if age <= max || !self.cooled(Rule::RevocationListStale, source, now) {
                continue;
            }
            alerts.push(Alert {
                rule: Rule::RevocationListStale,
                severity: Rule::RevocationListStale.severity(),
                summary: format!("the revocation list from {source} was issued {age} s ago (limit {max} s)"),
                details: json!({ "source": source, "age_seconds": age, "max_age_seconds": max, "issued_at": this_update }),
                time: now,
                address: None,
            });
        }
        alerts
    }

    /// Whether `rule` (for `key`) may fire at `now`; if so, starts its cooldown.
    fn cooled(&mut self, rule: Rule, key: &str, now: i64) -> bool {
        let slot = (rule, key.to_string());
        match self.last_fired.get(&slot) {
            Some(last) if now - last < self.thresholds.cooldown => false,
            _ => {
                self.last_fired.insert(slot, now);
                true
            }
        }
    }

    /// Forgets what no window or cooldown needs any more (called periodically).
    pub fn sweep(&mut self, now: i64) {
        let window = self.thresholds.address_window;
        self.by_address.retain(|_, recent| recent.back().is_some_and(|(t, _)| *t > now - window));
        let cooldown = self.thresholds.cooldown;
        self.last_fired.retain(|_, last| now - *last < cooldown);
    }

    /// Addresses currently tracked (for tests of the memory bound).
    pub fn tracked_addresses(&self) -> usize {
        self.by_address.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditContext;

    fn thresholds() -> Thresholds {
        Thresholds {
            failed_login_threshold: 3,
            failed_login_window: 60,
            address_accounts_threshold: 3,
            address_window: 60,
            forged_proxy_header: true,
            revocation_list_max_age: 100,
            cooldown: 300,
        }
    }

    fn failure(time: i64, ip: &str, account: &str) -> AuditRecord {
        AuditRecord {
            time,
            event: AuditEvent::LoginFailed {
                account_id: Some(account.into()),
                login_hash: None,
                factor: "password".into(),
                reason: "bad_password".into(),
            },
            context: AuditContext { ip: Some(ip.into()), ..Default::default() },
        }
    }

    fn rules_of(alerts: &[Alert]) -> Vec<&'static str> {
        alerts.iter().map(|a| a.rule.as_str()).collect()
    }

    #[test]
    fn a_spike_fires_once_at_the_threshold_then_waits_for_the_cooldown() {
        let mut rules = Rules::new(Thresholds { address_accounts_threshold: 0, ..thresholds() });
        assert!(rules.observe(&failure(1000, "192.0.2.1", "a")).is_empty());
        assert!(rules.observe(&failure(1001, "192.0.2.2", "a")).is_empty());
        let fired = rules.observe(&failure(1002, "192.0.2.3", "a"));
        assert_eq!(rules_of(&fired), ["failed_login_spike"]);
        assert_eq!(fired[0].details["count"], 3);
        assert_eq!(fired[0].severity, Severity::Warning);
        // Still spiking, within the cooldown: silent.
        for t in 1003..1100 {
            assert!(rules.observe(&failure(t, "192.0.2.4", "b")).is_empty(), "at {t}");
        }
        // After the cooldown (fired at 1002 + 300), the next failure of a spike fires again.
        for t in 1290..1301 {
            assert!(rules.observe(&failure(t, "192.0.2.4", "b")).is_empty(), "at {t}");
        }
        assert_eq!(rules_of(&rules.observe(&failure(1302, "192.0.2.4", "b"))), ["failed_login_spike"]);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_fire() {
        let mut rules = Rules::new(Thresholds { address_accounts_threshold: 0, ..thresholds() });
        // One failure every 30 s: never three within 60 s.
        for i in 0..20 {
            assert!(rules.observe(&failure(1000 + 30 * i, "192.0.2.1", "a")).is_empty(), "failure {i}");
        }
        // Three within the window do.
        assert!(rules.observe(&failure(1600, "192.0.2.1", "a")).is_empty());
        assert_eq!(rules_of(&rules.observe(&failure(1601, "192.0.2.1", "a"))), ["failed_login_spike"]);
    }

    #[test]
    fn one_address_failing_for_many_accounts_fires_per_address() {
        let mut rules = Rules::new(Thresholds { failed_login_threshold: 0, ..thresholds() });
        // The same account again and again is not "many accounts".
        for t in 0..10 {
            assert!(rules.observe(&failure(1000 + t, "192.0.2.1", "a")).is_empty());
        }
        assert!(rules.observe(&failure(1010, "192.0.2.1", "b")).is_empty());
        let fired = rules.observe(&failure(1011, "192.0.2.1", "c"));
        assert_eq!(rules_of(&fired), ["address_failing_many_accounts"]);
        assert_eq!(fired[0].details["count"], 3);
        assert_eq!(fired[0].address.as_deref(), Some("192.0.2.1"));
        // The cooldown is per address: another address fires on its own.
        assert!(rules.observe(&failure(1012, "192.0.2.1", "d")).is_empty());
        assert!(rules.observe(&failure(1012, "192.0.2.9", "a")).is_empty());
        assert!(rules.observe(&failure(1013, "192.0.2.9", "b")).is_empty());
        assert_eq!(rules_of(&rules.observe(&failure(1014, "192.0.2.9", "c"))), ["address_failing_many_accounts"]);
        // Accounts tried outside the window are forgotten.
        let mut rules = Rules::new(Thresholds { failed_login_threshold: 0, ..thresholds() });
        assert!(rules.observe(&failure(1000, "192.0.2.1", "a")).is_empty());
        assert!(rules.observe(&failure(1030, "192.0.2.1", "b")).is_empty());
        assert!(rules.observe(&failure(1061, "192.0.2.1", "c")).is_empty(), "a is out of the window");
    }

    #[test]
    fn unknown_logins_count_by_their_hash_and_need_an_address() {
        let mut rules = Rules::new(Thresholds { failed_login_threshold: 0, ..thresholds() });
        let unknown = |time, hash: &str, ip: Option<&str>| AuditRecord {
            time,
            event: AuditEvent::LoginFailed {
                account_id: None,
                login_hash: Some(hash.into()),
                factor: "password".into(),
                reason: "unknown_account".into(),
            },
            context: AuditContext { ip: ip.map(str::to_string), ..Default::default() },
        };
        assert!(rules.observe(&unknown(1000, "h1", None)).is_empty());
        assert!(rules.observe(&unknown(1001, "h2", None)).is_empty());
        assert!(rules.observe(&unknown(1002, "h3", None)).is_empty(), "no address: nothing to attribute");
        assert!(rules.observe(&unknown(1003, "h1", Some("192.0.2.7"))).is_empty());
        assert!(rules.observe(&unknown(1004, "h2", Some("192.0.2.7"))).is_empty());
        assert_eq!(
            rules_of(&rules.observe(&unknown(1005, "h3", Some("192.0.2.7")))),
            ["address_failing_many_accounts"]
        );
    }

    #[test]
    fn forged_proxy_headers_fire_at_once_then_cool_down() {
        let forged = |time| AuditRecord {
            time,
            event: AuditEvent::ForgedProxyHeader { header: "x-ssl-client-cert".into() },
            context: AuditContext { ip: Some("192.0.2.66".into()), ..Default::default() },
        };
        let mut rules = Rules::new(thresholds());
        let fired = rules.observe(&forged(1000));
        assert_eq!(rules_of(&fired), ["forged_proxy_header"]);
        assert_eq!(fired[0].severity, Severity::Critical);
        assert!(fired[0].summary.contains("192.0.2.66"), "{}", fired[0].summary);
        assert!(rules.observe(&forged(1299)).is_empty());
        assert_eq!(rules_of(&rules.observe(&forged(1300))), ["forged_proxy_header"]);
        let mut off = Rules::new(Thresholds { forged_proxy_header: false, ..thresholds() });
        assert!(off.observe(&forged(1000)).is_empty());
    }

    #[test]
    fn stale_revocation_lists_fire_per_source() {
        let mut rules = Rules::new(thresholds());
        let lists = vec![("http://crl.example/a.crl".to_string(), 900), ("/etc/b.crl".to_string(), 950)];
        assert!(rules.check_revocation_lists(&lists, 1000).is_empty(), "100 s is the limit, not beyond");
        let fired = rules.check_revocation_lists(&lists, 1001);
        assert_eq!(rules_of(&fired), ["revocation_list_stale"]);
        assert_eq!(fired[0].details["source"], "http://crl.example/a.crl");
        assert_eq!(fired[0].details["age_seconds"], 101);
        let fired = rules.check_revocation_lists(&lists, 1060);
        assert_eq!(fired.len(), 1, "a fired in its cooldown; b fires now: {fired:?}");
        assert_eq!(fired[0].details["source"], "/etc/b.crl");
        assert!(rules.check_revocation_lists(&lists, 1300).is_empty());
        assert_eq!(rules.check_revocation_lists(&lists, 1301).len(), 1, "a again after its cooldown");
    }

    #[test]
    fn other_events_are_ignored_and_old_state_is_swept() {
        let mut rules = Rules::new(thresholds());
        let success = AuditRecord {
            time: 1000,
            event: AuditEvent::LoginSucceeded { account_id: "a".into(), factor: "password".into() },
            context: AuditContext { ip: Some("192.0.2.1".into()), ..Default::default() },
        };
        for _ in 0..10 {
            assert!(rules.observe(&success).is_empty());
        }
        rules.observe(&failure(1000, "192.0.2.1", "a"));
        rules.observe(&failure(1000, "192.0.2.2", "a"));
        assert_eq!(rules.tracked_addresses(), 2);
        rules.sweep(1059);
        assert_eq!(rules.tracked_addresses(), 2);
        rules.sweep(1060);
        assert_eq!(rules.tracked_addresses(), 0);
    }
}

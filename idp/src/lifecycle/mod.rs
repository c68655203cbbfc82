//! Inactive accounts (the CNIL rule for secure health messaging, DOMAIN.md "Obligations that shape
//! features"): an account without authentication for `lifecycle.inactive_after` (at most one year)
//! is deleted, after a warning through the owner's channel that lets them object.
//!
//! - The clock of an account counts from its *activity time*: the latest of its last
//!   authentication, its last objection ("keep my account") and its creation. A period is named
//!   by that time: a login or an objection starts a new one.
//! - [`decide`] (pure) says what a period needs at a given time: nothing, a warning (stage 1
//!   `warn_before` the limit, stage 2 the reminder `remind_before` it) or the deletion. An account
//!   is never deleted without a warning recorded for its period: when the job first sees an account
//!   already past its limit (the job was off), it warns now and announces a deletion at least
//!   `remind_before` (or `warn_before`) away. The deletion date a period's first warning announced
//!   is the one that holds.
//! - [`run`] applies the decisions once under a lease in the database (`job_leases`), so that
//!   several instances, or a CLI run beside a server, never act at once; and each warning is
//!   claimed in the database before it is sent (`inactivity_warnings`), so none goes out twice
//!   even if two runs overlap.
//! - [`spawn_scheduler`] runs it every `lifecycle.run_every` in `habilis serve`, once across
//!   instances (a second lease marks the period as done).
//! - Deletion is [`crate::person::delete_person`], shared with erasure on request.

pub mod cli;
pub mod notify;
pub mod web;

use std::time::Duration;

use serde::Serialize;

use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::config::LifecycleConfig;
use crate::store::{AccountActivity, InactivityWarning, StoreError, UnixTime};

/// The lease of one run: held while the job acts.
pub const RUN_LEASE: &str = "lifecycle";
/// The lease of the schedule: the instance that takes it runs this period's job.
pub const SCHEDULE_LEASE: &str = "lifecycle:schedule";
/// How long a run's lease lasts unless renewed (a crashed run frees it after this).
const RUN_LEASE_TTL: i64 = 10 * 60;
/// The run renews its lease when it is this old (mail to a slow relay can take a while).
const RENEW_AFTER: i64 = RUN_LEASE_TTL / 3;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("the lifecycle lease was lost (another run took it over); stopped after {done} accounts")]
    LeaseLost { done: usize },
}

/// The rule in seconds, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub inactive_after: i64,
    pub warn_before: i64,
    pub remind_before: Option<i64>,
    pub keep_link_validity: Option<i64>,
}

impl Policy {
    pub fn from_config(config: &LifecycleConfig) -> Policy {
        let secs = |d: Duration| d.as_secs() as i64;
        Policy {
            inactive_after: secs(config.inactive_after),
            warn_before: secs(config.warn_before),
            remind_before: config.remind_before.map(secs),
            keep_link_validity: config.keep_link_validity.map(secs),
        }
    }

    /// The shortest notice a first warning gives: an account warned late is deleted no sooner.
    fn minimum_notice(&self) -> i64 {
        self.remind_before.unwrap_or(self.warn_before)
    }

    /// Accounts whose activity time is at or before this may need something at `now`.
    pub fn candidates_cutoff(&self, now: UnixTime) -> UnixTime {
        now - (self.inactive_after - self.warn_before)
    }
}

/// What one inactivity period needs at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    None,
    /// Send warning `stage` announcing `deletion_at`; `reminder` when an earlier one went out.
    Warn {
        stage: i64,
        deletion_at: UnixTime,
        reminder: bool,
    },
    /// The announced date has come.
    Delete {
        deletion_at: UnixTime,
    },
}

/// What `period` (the warnings recorded for the account's current activity time) needs at `now`.
pub fn decide(policy: &Policy, activity_at: UnixTime, period: &[InactivityWarning], now: UnixTime) -> Decision {
    let limit = activity_at + policy.inactive_after;
    let period: Vec<&InactivityWarning> = period.iter().filter(|w| w.activity_at == activity_at).collect();
    let stage_of = |deletion_at: UnixTime| match policy.remind_before {
        Some(remind) if now >= deletion_at - remind => 2,
        _ => 1,
    };
    // The first warning of the period fixed the date.
    match period.iter().map(|w| w.deletion_at).min() {
        None if now < limit - policy.warn_before => Decision::None,
        None => {
            let deletion_at = limit.max(now + policy.minimum_notice());
            Decision::Warn { stage: stage_of(deletion_at), deletion_at, reminder: false }
        }
        Some(deletion_at) if now >= deletion_at => Decision::Delete { deletion_at },
        Some(deletion_at) => {
            let stage = stage_of(deletion_at);
            if period.iter().any(|w| w.stage >= stage) {
                Decision::None
            } else {
                Decision::Warn { stage, deletion_at, reminder: true }
            }
        }
    }
}

/// How a run was started.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The clock of the decisions (`--now` shifts it); records carry the real time.
    pub now: UnixTime,
    /// Decide and report, change nothing (no lease, no mail, no deletion).
    pub dry_run: bool,
    /// `scheduler` or `cli`: who acts, in audit records.
    pub actor: String,
}

/// What a run did (or, dry, would do) to one account.
#[derive(Clone, Debug, Serialize)]
pub struct ReportItem {
    pub account_id: String,
    pub login: String,
    /// `warn`, `delete` or `none`.
    pub action: &'static str,
    pub activity_at: UnixTime,
    pub deletion_at: UnixTime,
    /// For `warn`: 1 (warning) or 2 (reminder).
    pub stage: Option<i64>,
    /// For `warn`: `email`, or `none` when the account has no reachable channel.
    pub channel: Option<String>,
    /// What happened: `sent`, `undeliverable`, `already_sent` (another run claimed it),
    /// `delivery_failed`, `deleted`, `already_deleted`, `skipped_active` (logged in meanwhile),
    /// `failed: …`, or `planned` in a dry run.
    pub outcome: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub now: UnixTime,
    pub dry_run: bool,
    /// Set when another run holds the lease: nothing was done.
    pub skipped: Option<String>,
    pub items: Vec<ReportItem>,
}

impl RunReport {
    pub fn count(&self, action: &str) -> usize {
        self.items.iter().filter(|i| i.action == action).count()
    }
}

/// A name for this process in leases: host, process id and a random part.
pub fn lease_owner() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "habilis".into());
    format!("{host}:{}:{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Runs the job once: takes the run lease (unless dry), decides for every candidate account and
/// acts. When another run holds the lease, returns at once with `skipped` set.
pub async fn run(state: &AppState, options: &RunOptions) -> Result<RunReport, LifecycleError> {
    let policy = Policy::from_config(&state.config.lifecycle);
    let store = state.store.lifecycle();
    let mut report = RunReport { now: options.now, dry_run: options.dry_run, ..Default::default() };
    let owner = lease_owner();
    // Leases are about real concurrency: they use the real clock even when `--now` shifts the
    // decisions' clock (a shifted lease would lock other instances out for months).
    if !options.dry_run
        && !store.acquire_lease(RUN_LEASE, &owner, crate::unix_now() + RUN_LEASE_TTL, crate::unix_now()).await?
    {
        let holder = store.lease(RUN_LEASE).await?;
        report.skipped = Some(match holder {
            Some((who, until)) => {
                format!("another run holds the lifecycle lease ({who}, until {})", format_time(until))
            }
            None => "another run holds the lifecycle lease".into(),
        });
        return Ok(report);
    }
    let result = run_locked(state, &policy, options, &owner, &mut report).await;
    if !options.dry_run {
        // Housekeeping under the same lease: revocation markers and lockouts past their expiry
        // (real clock: they are about real tokens).
        match state.store.markers().purge_markers(crate::unix_now()).await {
            Ok(purged) if purged > 0 => tracing::info!(purged, "lifecycle: expired revocation markers purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lifecycle: could not purge expired revocation markers"),
        }
    }
    if !options.dry_run
        && let Err(e) = store.release_lease(RUN_LEASE, &owner, crate::unix_now()).await
    {
        // Not fatal: the lease expires by itself after RUN_LEASE_TTL.
        tracing::warn!(error = %e, "lifecycle: could not release the run lease");
    }
    result.map(|()| report)
}

async fn run_locked(
    state: &AppState,
    policy: &Policy,
    options: &RunOptions,
    owner: &str,
    report: &mut RunReport,
) -> Result<(), LifecycleError> {
    let store = state.store.lifecycle();
    let candidates = store.inactive_since(policy.candidates_cutoff(options.now)).await?;
    let mut renewed_at = crate::unix_now();
    for (done, candidate) in candidates.into_iter().enumerate() {
        let now = crate::unix_now();
        if !options.dry_run && now - renewed_at >= RENEW_AFTER {
            if !store.acquire_lease(RUN_LEASE, owner, now + RUN_LEASE_TTL, now).await? {
                return Err(LifecycleError::LeaseLost { done });
            }
            renewed_at = now;
        }
        if let Some(item) = handle(state, policy, options, &candidate).await? {
            report.items.push(item);
        }
    }
    Ok(())
}

/// Decides for one account and acts; `None` when it needs nothing (not reported).
async fn handle(
    state: &AppState,
    policy: &Policy,
    options: &RunOptions,
    candidate: &AccountActivity,
) -> Result<Option<ReportItem>, LifecycleError> {
    let store = state.store.lifecycle();
    let account = &candidate.account;
    let activity_at = candidate.activity_at();
    let warnings = store.warnings_of(&account.id).await?;
    let decision = decide(policy, activity_at, &warnings, options.now);
    let mut item = ReportItem {
        account_id: account.id.clone(),
        login: account.login.clone(),
        action: "none",
        activity_at,
        deletion_at: activity_at + policy.inactive_after,
        stage: None,
        channel: None,
        outcome: if options.dry_run { "planned".into() } else { String::new() },
    };
    match decision {
        Decision::None => return Ok(None),
        Decision::Warn { stage, deletion_at, reminder } => {
            item.action = "warn";
            item.stage = Some(stage);
            item.deletion_at = deletion_at;
            let channel = notify::channel_of(account);
            item.channel = Some(channel.to_string());
            if !options.dry_run {
                let warning = InactivityWarning {
                    account_id: account.id.clone(),
                    activity_at,
                    stage,
                    deletion_at,
                    sent_at: options.now,
                    channel: channel.to_string(),
                };
                item.outcome = notify::warn(state, policy, candidate, &warning, reminder, &options.actor).await?;
            }
        }
        Decision::Delete { deletion_at } => {
            item.action = "delete";
            item.deletion_at = deletion_at;
            if !options.dry_run {
                // The account may have logged in (or been deleted) since the candidates were
                // read: look again right before deleting.
                let fresh = store.activity_of(&account.id).await?;
                item.outcome = match fresh {
                    None => "already_deleted".into(),
                    Some(f) if f.activity_at() != activity_at => "skipped_active".into(),
                    // Deleting it would leave no one able to administer Habilis: kept, and
                    // reported at each run until another platform administrator exists.
                    Some(_) if is_last_platform_admin(state, account).await? => {
                        tracing::warn!(
                            account = %account.id,
                            "lifecycle: the last platform administrator is inactive but is not deleted; \
                             appoint another platform administrator"
                        );
                        "kept_last_platform_admin".into()
                    }
                    Some(_) => {
                        let deleted = crate::person::delete_person(
                            state,
                            account,
                            crate::person::DeletionReason::Inactive,
                            &options.actor,
                            AuditContext::default(),
                        )
                        .await;
                        match deleted {
                            Ok(_) => "deleted".into(),
                            Err(crate::person::PersonError::NotFound) => "already_deleted".into(),
                            // One account's failure does not hold the others back; it is tried
                            // again at the next run.
                            Err(e) => {
                                tracing::error!(account = %account.id, error = %e, "lifecycle: deletion failed");
                                format!("failed: {e}")
                            }
                        }
                    }
                };
            }
        }
    }
    Ok(Some(item))
}

/// Whether `account` is a platform administrator (an administrator account, or one holding the
/// platform-wide role) and no other active account is.
async fn is_last_platform_admin(state: &AppState, account: &crate::store::Account) -> Result<bool, LifecycleError> {
    use crate::store::{AccountFilter, AccountKind, AccountStatus, AdminRole};
    let admin = state.store.admin();
    let platform_grants: Vec<String> = admin
        .list_roles(None)
        .await?
        .into_iter()
        .filter(|g| g.role == AdminRole::PlatformAdmin && g.organisation_id.is_none())
        .map(|g| g.account_id)
        .collect();
    let is_platform_admin = account.kind == AccountKind::Administrator || platform_grants.contains(&account.id);
    if !is_platform_admin {
        return Ok(false);
    }
    let filter = AccountFilter {
        kind: Some(AccountKind::Administrator),
        status: Some(AccountStatus::Active),
        limit: 2,
        ..Default::default()
    };
    if admin.search_accounts(&filter).await?.iter().any(|a| a.id != account.id) {
        return Ok(false);
    }
    for other in platform_grants.iter().filter(|id| **id != account.id) {
        if state.store.account_by_id(other).await?.is_some_and(|a| a.status == AccountStatus::Active) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs the job every `lifecycle.run_every` in this server, on one instance at a time: each tick
/// tries the schedule lease (held for the period) and only its taker runs.
pub fn spawn_scheduler(state: AppState) {
    if !state.config.lifecycle.enabled {
        tracing::info!("lifecycle: the inactive-account job is disabled (lifecycle.enabled = false)");
        return;
    }
    let every = state.config.lifecycle.run_every;
    let owner = lease_owner();
    tokio::spawn(async move {
        // A first run soon after start (not during it), then one per period.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_RUN_DELAY, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            scheduled_run(&state, &owner, every).await;
        }
    });
}

const FIRST_RUN_DELAY: Duration = Duration::from_secs(30);

async fn scheduled_run(state: &AppState, owner: &str, every: Duration) {
    let now = crate::unix_now();
    // Held a little less than a period, so that the instance that ran last time may take it
    // again at its next tick despite timer drift.
    let until = now + (every.as_secs() as i64) * 9 / 10;
    match state.store.lifecycle().acquire_lease(SCHEDULE_LEASE, owner, until, now).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!("lifecycle: another instance runs this period's job");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "lifecycle: cannot take the schedule lease; next try next period");
            return;
        }
    }
    let options = RunOptions { now, dry_run: false, actor: "scheduler".into() };
    match run(state, &options).await {
        Ok(report) if report.skipped.is_some() => {
            tracing::info!(reason = report.skipped.as_deref().unwrap_or(""), "lifecycle: run skipped");
        }
        Ok(report) => tracing::info!(
            warned = report.count("warn"),
            deleted = report.count("delete"),
            "lifecycle: inactive accounts checked"
        ),
        Err(e) => tracing::error!(error = %e, "lifecycle: the inactive-account job failed; next try next period"),
    }
}

/// A time as RFC 3339 (UTC), for reports.
pub fn format_time(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// A date for people, in their language (UTC): "12 mars 2026", "12 March 2026".
pub fn format_date(t: UnixTime, lang: &str) -> String {
    const FR: [&str; 12] = [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ];
    const EN: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let Ok(date) = time::OffsetDateTime::from_unix_timestamp(t) else { return t.to_string() };
    let month = usize::from(u8::from(date.month())) - 1;
    let english = lang.starts_with("en");
    let day = match (english, date.day()) {
        (false, 1) => "1er".to_string(),
        (_, day) => day.to_string(),
    };
    format!("{day} {} {}", if english { EN[month] } else { FR[month] }, date.year())
}

/// Records an audit event of this module with an empty request context.
pub(crate) fn audit(state: &AppState, event: AuditEvent) {
    state.audit.record(event, AuditContext::default());
}

#[cfg(test)]
pub(crate) mod tests;

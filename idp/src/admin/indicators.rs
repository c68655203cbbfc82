//! The admin dashboard's live security indicators (`/api/admin/v1/indicators`, issue 9): per hour
//! over the last `hours` hours, failed logins, lockouts, one-time code failures, successful logins
//! and alerts, counted from the durable audit log in one grouped query; and the current state of
//! what ages: the revocation lists in use, the signing keys, the audit writer's backlog.
//!
//! Read from the audit log, so authorised like it: platform administrators and auditors; an
//! organisation administrator is refused (403, audited), the log being platform-wide.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::{actor, authorize, query};
use crate::app::AppState;
use crate::error::OAuthError;
use crate::keys::KeyState;
use crate::store::HourlyEventCount;

pub const PATH: &str = "/api/admin/v1/indicators";

/// The window when the caller gives none, and the longest (a week).
pub const DEFAULT_HOURS: i64 = 24;
pub const MAX_HOURS: i64 = 168;
const HOUR: i64 = 3600;

/// The audit events the series are made of.
const LOGIN_FAILED: &str = "login_failed";
const CARD_LOGIN_REFUSED: &str = "card_login_refused";
const LOCKED_OUT: &str = "locked_out";
const LOGIN_SUCCEEDED: &str = "login_succeeded";
const CARD_LOGIN_SUCCEEDED: &str = "card_login_succeeded";
const WEBAUTHN_LOGIN_SUCCEEDED: &str = "webauthn_login_succeeded";
const ALERT_RAISED: &str = "alert_raised";
const COUNTED_EVENTS: &[&str] = &[
    LOGIN_FAILED,
    CARD_LOGIN_REFUSED,
    LOCKED_OUT,
    LOGIN_SUCCEEDED,
    CARD_LOGIN_SUCCEEDED,
    WEBAUTHN_LOGIN_SUCCEEDED,
    ALERT_RAISED,
];

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IndicatorsQuery {
    /// The window, in hours ending with the current one: 1 to 168 (default 24).
    pub hours: Option<i64>,
}

impl IndicatorsQuery {
    fn hours(&self) -> Result<i64, OAuthError> {
        match self.hours {
            None => Ok(DEFAULT_HOURS),
            Some(h) if (1..=MAX_HOURS).contains(&h) => Ok(h),
            Some(_) => Err(OAuthError::invalid_request(format!("hours must be between 1 and {MAX_HOURS}"))),
        }
    }
}

/// The records of one hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct HourCount {
    /// The hour's first second (Unix seconds, a multiple of 3600).
    pub start: i64,
    pub count: i64,
}

/// One indicator over the window: every hour, oldest first (the last one is the current, partial,
/// hour), and their total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Series {
    pub total: i64,
    pub hours: Vec<HourCount>,
}

/// The counted indicators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct IndicatorSeries {
    /// Refused login steps (`login_failed`, any factor) and refused cards (`card_login_refused`).
    pub failed_logins: Series,
    /// Logins locked after repeated failures (`locked_out`).
    pub lockouts: Series,
    /// Refused one-time codes: `login_failed` whose factor is not the password.
    pub code_failures: Series,
    /// Completed logins: a second factor (`login_succeeded` other than the password step), a card
    /// (`card_login_succeeded`) or a security key (`webauthn_login_succeeded`).
    pub successful_logins: Series,
    /// Security alerts raised (`alert_raised`).
    pub alerts: Series,
}

/// A certificate revocation list in use by card login.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RevocationListAge {
    /// Where it comes from (URL or file).
    pub source: String,
    /// Its `thisUpdate` (Unix seconds).
    pub this_update: i64,
    /// Seconds since `thisUpdate`.
    pub age_seconds: i64,
}

/// A signing key that signs now (one per enabled algorithm).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SigningKeyAge {
    pub kid: String,
    pub alg: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Seconds since `created_at`.
    pub age_seconds: i64,
}

/// The dashboard's indicators.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Indicators {
    /// The window, in hours.
    pub hours: i64,
    /// The first hour's first second (Unix seconds).
    pub since: i64,
    /// When these figures were computed (Unix seconds).
    pub now: i64,
    pub series: IndicatorSeries,
    /// Whether card login runs on this server (without it there are no revocation lists).
    pub card_login: bool,
    pub revocation_lists: Vec<RevocationListAge>,
    pub signing_keys: Vec<SigningKeyAge>,
    /// Audit records this instance has accepted but not yet written to the durable log.
    pub audit_backlog: u64,
}

#[utoipa::path(
    get, path = PATH, tag = "audit", params(IndicatorsQuery),
    responses(
        (status = 200, description = "Hourly security counts over the window (from the audit log) and the current \
            ages of the revocation lists and signing keys", body = Indicators),
        (status = 400, description = "hours is not between 1 and 168", body = ErrorBody),
        (status = 403, description = "Not a platform administrator or auditor (refusals are audited)",
            body = ErrorBody),
    )
)]
pub async fn show(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Json<Indicators>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let from_audit_log = TargetFacts::of("audit_log", None);
    authorize(&state, &headers, &actor, Operation::Read, &from_audit_log, "the security indicators")?;
    let q: IndicatorsQuery = query(&uri)?;
    let hours = q.hours()?;
    let first_hour = now.div_euclid(HOUR) - (hours - 1);
    let since = first_hour * HOUR;
    // `now` included: the current hour is partial, and what happened this second counts.
    let counts = state.store.audit().hourly_counts(COUNTED_EVENTS, since, now + 1).await?;
    let revocation_lists = crate::alerts::revocation_lists(&state, now)
        .into_iter()
        .map(|(source, this_update)| RevocationListAge { source, this_update, age_seconds: (now - this_update).max(0) })
        .collect();
    let records = state.store.list_signing_keys().await?;
    let signing_keys = crate::keys::describe(&records, now, state.config.longest_signed_token_lifetime())
        .into_iter()
        .filter(|k| k.state == KeyState::Active)
        .map(|k| SigningKeyAge {
            age_seconds: (now - k.created_at).max(0),
            kid: k.kid,
            alg: k.alg,
            created_at: k.created_at,
        })
        .collect();
    Ok(Json(Indicators {
        hours,
        since,
        now,
        series: series(&counts, first_hour, hours),
        card_login: state.card.is_some(),
        revocation_lists,
        signing_keys,
        audit_backlog: state.audit.backlog() as u64,
    }))
}

/// The indicators from the store's hourly counts, every hour of the window present.
fn series(counts: &[HourlyEventCount], first_hour: i64, hours: i64) -> IndicatorSeries {
    let build = |counts_in: &dyn Fn(&HourlyEventCount) -> bool| {
        let mut per_hour: Vec<HourCount> =
            (0..hours).map(|i| HourCount { start: (first_hour + i) * HOUR, count: 0 }).collect();
        for c in counts.iter().filter(|c| counts_in(c)) {
            if let Some(slot) = usize::try_from(c.hour - first_hour).ok().and_then(|i| per_hour.get_mut(i)) {
                slot.count += c.count;
            }
        }
        Series { total: per_hour.iter().map(|h| h.count).sum(), hours: per_hour }
    };
    IndicatorSeries {
        failed_logins: build(&|c| c.event == LOGIN_FAILED || c.event == CARD_LOGIN_REFUSED),
        lockouts: build(&|c| c.event == LOCKED_OUT),
        code_failures: build(&|c| c.event == LOGIN_FAILED && !c.password_factor),
        // The password step of a two-factor login is audited as a success of its own: not a login.
        successful_logins: build(&|c| {
            (c.event == LOGIN_SUCCEEDED && !c.password_factor)
                || c.event == CARD_LOGIN_SUCCEEDED
                || c.event == WEBAUTHN_LOGIN_SUCCEEDED
        }),
        alerts: build(&|c| c.event == ALERT_RAISED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(hour: i64, event: &str, password_factor: bool, count: i64) -> HourlyEventCount {
        HourlyEventCount { hour, event: event.into(), password_factor, count }
    }

    #[test]
    fn the_window_is_checked() {
        assert_eq!(IndicatorsQuery::default().hours().unwrap(), DEFAULT_HOURS);
        assert_eq!(IndicatorsQuery { hours: Some(168) }.hours().unwrap(), 168);
        for bad in [0, -3, 169] {
            let e = IndicatorsQuery { hours: Some(bad) }.hours().unwrap_err();
            assert!(e.description.contains("hours"), "{bad}");
        }
    }

    #[test]
    fn counts_fill_every_hour_of_their_series() {
        let counts = [
            count(99, LOGIN_FAILED, true, 7), // before the window: ignored
            count(100, LOGIN_FAILED, true, 2),
            count(100, LOGIN_FAILED, false, 3),
            count(100, LOGIN_SUCCEEDED, true, 9),
            count(100, LOGIN_SUCCEEDED, false, 4),
            count(101, CARD_LOGIN_REFUSED, false, 1),
            count(101, WEBAUTHN_LOGIN_SUCCEEDED, false, 1),
            count(102, LOCKED_OUT, false, 1),
            count(102, ALERT_RAISED, false, 2),
        ];
        let s = series(&counts, 100, 3);
        let per_hour = |s: &Series| s.hours.iter().map(|h| h.count).collect::<Vec<_>>();
        assert_eq!(s.failed_logins.hours[0].start, 360_000);
        assert_eq!((per_hour(&s.failed_logins), s.failed_logins.total), (vec![5, 1, 0], 6));
        assert_eq!(per_hour(&s.code_failures), vec![3, 0, 0]);
        assert_eq!(per_hour(&s.successful_logins), vec![4, 1, 0], "password steps are not logins");
        assert_eq!((per_hour(&s.lockouts), per_hour(&s.alerts)), (vec![0, 0, 1], vec![0, 0, 2]));
    }
}

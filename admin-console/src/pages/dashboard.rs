//! The dashboard: how many accounts and organisations the person can see, and the live security
//! indicators of `GET /api/admin/v1/indicators` (issue 9) — per-hour failed logins, lockouts,
//! code failures, successful logins and alerts, each as its total and a small bar chart, and the
//! ages of the revocation lists and signing keys, flagged when too old.
//!
//! The charts are inline SVG built here and drawn by the template: no script, no `style`
//! attribute (the CSP allows neither), only geometry attributes and CSS classes. Each chart has a
//! `<title>` and a `<desc>` (a text summary), and each bar a `<title>` with its hour and count.

use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

use super::oversight::datetime;
use super::{Fail, St, fail, logged_in, now, render};
use crate::api::ApiError;
use crate::i18n::Lang;

/// The window asked for: the last 24 hours.
const WINDOW_HOURS: &str = "24";
/// A revocation list older than this is flagged: it is normally re-issued every few hours, and card
/// logins fail closed once it passes `crl_max_staleness` (48 h by default).
const REVOCATION_LIST_WARNING: i64 = 24 * 3_600;
/// A signing key older than this is flagged: time to rotate.
const SIGNING_KEY_WARNING: i64 = 90 * 86_400;

/// The series of the indicators, in the order shown: (key in the API's `series`, text key).
const SERIES: &[(&str, &str)] = &[
    ("failed_logins", "ind_failed_logins"),
    ("lockouts", "ind_lockouts"),
    ("code_failures", "ind_code_failures"),
    ("successful_logins", "ind_successful_logins"),
    ("alerts", "ind_alerts"),
];

/// Chart geometry, in SVG user units: one slot per hour, bars a little narrower than their slot.
const SLOT_WIDTH: i64 = 10;
const BAR_WIDTH: i64 = 8;
const CHART_HEIGHT: i64 = 40;

/// One bar of a chart.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Bar {
    x: i64,
    y: i64,
    width: i64,
    height: i64,
    /// "2026-11-29 14:00 UTC: 3", the bar's text alternative.
    title: String,
}

/// One indicator as the template draws it.
#[derive(Debug, Serialize)]
struct Chart {
    id: &'static str,
    label: &'static str,
    total: i64,
    width: i64,
    height: i64,
    bars: Vec<Bar>,
    /// The chart's text alternative: total and busiest hour.
    summary: String,
}

/// How long ago, for a person: minutes under an hour, hours under two days, then days.
fn human_age(lang: Lang, seconds: i64) -> String {
    let seconds = seconds.max(0);
    if seconds < 3_600 {
        format!("{} min", seconds / 60)
    } else if seconds < 2 * 86_400 {
        format!("{} h", seconds / 3_600)
    } else {
        let days = seconds / 86_400;
        match lang {
            Lang::Fr => format!("{days} jours"),
            Lang::En => format!("{days} days"),
        }
    }
}

/// An hour's start as `YYYY-MM-DD HH:00 UTC`.
fn hour_label(start: i64) -> String {
    datetime(start).replacen(":00:00 UTC", ":00 UTC", 1)
}

/// The chart of one series of the API (`{"total", "hours": [{"start", "count"}]}`).
fn chart(lang: Lang, id: &'static str, label: &'static str, series: &Value) -> Chart {
    let texts = lang.texts();
    let hours: Vec<(i64, i64)> = series["hours"]
        .as_array()
        .map(|hours| {
            hours.iter().map(|h| (h["start"].as_i64().unwrap_or(0), h["count"].as_i64().unwrap_or(0))).collect()
        })
        .unwrap_or_default();
    let peak = hours.iter().map(|(_, count)| *count).max().unwrap_or(0);
    let bars = hours
        .iter()
        .enumerate()
        .filter(|(_, (_, count))| *count > 0)
        .map(|(slot, (start, count))| {
            // Scaled to the busiest hour; any non-zero hour stays visible.
            let height = (count * CHART_HEIGHT / peak.max(1)).max(1);
            Bar {
                x: slot as i64 * SLOT_WIDTH + (SLOT_WIDTH - BAR_WIDTH) / 2,
                y: CHART_HEIGHT - height,
                width: BAR_WIDTH,
                height,
                title: format!("{}: {count}", hour_label(*start)),
            }
        })
        .collect();
    let total = series["total"].as_i64().unwrap_or(0);
    let summary = match hours.iter().filter(|(_, c)| *c == peak && peak > 0).map(|(start, _)| *start).next_back() {
        Some(busiest) => {
            format!("{} {total}; {} {} ({peak})", texts["ind_total"], texts["ind_busiest_hour"], hour_label(busiest))
        }
        None => format!("{} 0", texts["ind_total"]),
    };
    Chart {
        id,
        label: texts.get(label).copied().unwrap_or(label),
        total,
        width: (hours.len() as i64).max(1) * SLOT_WIDTH,
        height: CHART_HEIGHT,
        bars,
        summary,
    }
}

/// The indicators as the template shows them.
fn indicators_view(lang: Lang, indicators: &Value) -> Value {
    let charts: Vec<Chart> =
        SERIES.iter().map(|(id, label)| chart(lang, id, label, &indicators["series"][*id])).collect();
    let aged = |items: &Value, limit: i64, fields: &[&str]| -> Vec<Value> {
        items
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| {
                        let age = item["age_seconds"].as_i64().unwrap_or(0);
                        let mut view = json!({ "age": human_age(lang, age), "warn": age > limit });
                        for field in fields {
                            view[*field] = item[*field].clone();
                        }
                        view
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    json!({
        "hours": indicators["hours"],
        "charts": charts,
        "card_login": indicators["card_login"].as_bool().unwrap_or(false),
        "revocation_lists": aged(&indicators["revocation_lists"], REVOCATION_LIST_WARNING, &["source"]),
        "signing_keys": aged(&indicators["signing_keys"], SIGNING_KEY_WARNING, &["kid", "alg"]),
        "audit_backlog": indicators["audit_backlog"],
    })
}

/// How many items a list holds, honestly: the number when one page of 200 holds them all,
/// `None` when the caller may not list them.
fn count(result: &Result<Value, ApiError>) -> Value {
    match result {
        Ok(page) => json!({
            "n": page["items"].as_array().map_or(0, Vec::len),
            "more": !page["next_cursor"].is_null(),
        }),
        Err(_) => Value::Null,
    }
}

pub(super) async fn dashboard(axum::extract::State(console): St, headers: HeaderMap) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let token = session.access_token.as_str();
    // The indicators come from the audit log: only tokens with the `audit` scope (platform
    // administrators, auditors) may read them. Not asking otherwise spares the log a refusal on
    // every visit of an organisation administrator; the API still decides for the others.
    let forbidden = || ApiError { status: 403, code: "access_denied".into(), description: String::new() };
    let read_indicators = async {
        if session.has_scope("audit") {
            console.api.get(token, "/indicators", &[("hours", WINDOW_HOURS)]).await
        } else {
            Err(forbidden())
        }
    };
    let (accounts, organisations, indicators) = tokio::join!(
        console.api.get(token, "/accounts", &[("limit", "200")]),
        console.api.get(token, "/organisations", &[("limit", "200")]),
        read_indicators,
    );
    if let (Err(e), Err(_)) = (&accounts, &organisations)
        && (e.needs_login() || e.status == 0)
    {
        return fail(&console, &headers, Some(&session), Fail::api(lang, e.clone()));
    }
    // Organisation administrators may not read the platform's indicators: a note, not an error.
    let texts = lang.texts();
    let (indicators, note) = match &indicators {
        Ok(found) => (indicators_view(lang, found), None),
        Err(e) if e.needs_login() => return fail(&console, &headers, Some(&session), Fail::Login),
        Err(e) if e.status == 403 => (Value::Null, Some(texts["ind_forbidden"])),
        Err(e) => {
            tracing::warn!(status = e.status, code = %e.code, "the dashboard's indicators are unavailable");
            (Value::Null, Some(texts["ind_unavailable"]))
        }
    };
    let page = json!({
        "nav": "dashboard",
        "accounts": count(&accounts),
        "organisations": count(&organisations),
        "indicators": indicators,
        "indicators_note": note,
        "generated": datetime(now()),
    });
    render(&console, &headers, Some(&session), "dashboard.html", page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(counts: &[i64]) -> Value {
        let hours: Vec<Value> = counts
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"start": 1_700_002_800 + i as i64 * 3_600, "count": c}))
            .collect();
        json!({"total": counts.iter().sum::<i64>(), "hours": hours})
    }

    #[test]
    fn ages_read_like_a_person_says_them() {
        assert_eq!(human_age(Lang::En, 3 * 3_600 + 59), "3 h");
        assert_eq!(human_age(Lang::En, 12 * 86_400 + 5), "12 days");
        assert_eq!(human_age(Lang::Fr, 12 * 86_400), "12 jours");
        assert_eq!(human_age(Lang::Fr, 47 * 3_600), "47 h");
        assert_eq!(human_age(Lang::En, 150), "2 min");
        assert_eq!(human_age(Lang::En, -5), "0 min", "a clock behind is no negative age");
    }

    #[test]
    fn bars_are_scaled_to_the_busiest_hour() {
        let c = chart(Lang::En, "failed_logins", "ind_failed_logins", &sample(&[0, 2, 4, 1]));
        assert_eq!((c.label, c.total, c.width, c.height), ("Failed logins", 7, 40, CHART_HEIGHT));
        let geometry: Vec<(i64, i64, i64)> = c.bars.iter().map(|b| (b.x, b.y, b.height)).collect();
        assert_eq!(geometry, vec![(11, 20, 20), (21, 0, 40), (31, 30, 10)], "empty hours have no bar");
        assert_eq!(c.bars[1].title, "2023-11-15 01:00 UTC: 4");
        assert_eq!(c.summary, "Total 7; busiest hour 2023-11-15 01:00 UTC (4)");
        let quiet = chart(Lang::Fr, "alerts", "ind_alerts", &sample(&[0, 0]));
        assert!(quiet.bars.is_empty());
        assert_eq!(quiet.summary, "Total 0");
        let tiny = chart(Lang::En, "lockouts", "ind_lockouts", &sample(&[1, 100]));
        assert_eq!(tiny.bars[0].height, 1, "a single event stays visible next to a hundred");
    }

    #[test]
    fn the_dashboard_renders_with_and_without_indicators() {
        let env = super::super::templates().expect("the templates parse");
        let context = |lang: Lang, page: Value| {
            let mut context = json!({
                "t": lang.texts(), "lang": lang.code(), "prefix": "/admin", "user": "Ada", "acr": "eidas2",
                "csrf": "tok", "can_admin": true, "can_audit": true, "nav": "dashboard",
                "accounts": {"n": 3, "more": false}, "organisations": {"n": 1, "more": false},
                "generated": "2026-11-29 07:00:00 UTC",
            });
            if let (Some(target), Value::Object(extra)) = (context.as_object_mut(), page) {
                target.extend(extra);
            }
            context
        };
        let api = json!({
            "hours": 3, "since": 1_700_002_800, "now": 1_700_010_000, "card_login": true, "audit_backlog": 2,
            "series": {
                "failed_logins": sample(&[1, 0, 3]), "lockouts": sample(&[0, 0, 1]),
                "code_failures": sample(&[0, 0, 2]), "successful_logins": sample(&[5, 4, 0]),
                "alerts": sample(&[0, 0, 0]),
            },
            "revocation_lists": [
                {"source": "https://crl.example/fresh.crl", "this_update": 0, "age_seconds": 3 * 3_600},
                {"source": "/etc/habilis/old.crl", "this_update": 0, "age_seconds": 30 * 3_600},
            ],
            "signing_keys": [{"kid": "k-old", "alg": "ES256", "created_at": 0, "age_seconds": 120 * 86_400}],
        });
        let page = json!({"indicators": indicators_view(Lang::En, &api), "indicators_note": null});
        let html =
            env.get_template("dashboard.html").unwrap().render(minijinja::value::Serde(&context(Lang::En, page)));
        let html = html.unwrap();
        assert!(html.contains("id=\"count-accounts\""), "{html}");
        assert!(html.contains("<svg") && html.contains("role=\"img\""), "{html}");
        assert!(html.contains("<title>2023-11-15 01:00 UTC: 3</title>"), "bars have a text alternative: {html}");
        assert!(html.contains("id=\"total-failed_logins\">4<"), "{html}");
        assert!(!html.contains("style="), "the CSP forbids inline styles: {html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("3 h") && html.contains("30 h") && html.contains("120 days"), "{html}");
        assert_eq!(html.matches("class=\"warn\"").count(), 2, "the 30 h list and the 120-day key: {html}");
        assert!(!html.contains("cannot be read through the admin API"), "the obsolete note is gone");

        let refused = json!({"indicators": null, "indicators_note": Lang::Fr.texts()["ind_forbidden"]});
        let html =
            env.get_template("dashboard.html").unwrap().render(minijinja::value::Serde(&context(Lang::Fr, refused)));
        let html = html.unwrap();
        assert!(html.contains("id=\"indicators-note\"") && !html.contains("<svg"), "{html}");
        assert!(html.contains("id=\"count-accounts\""), "{html}");
    }
}

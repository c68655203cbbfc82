//! The pages that oversee the platform: registered clients, care relationships (search, revoke),
//! the audit log (search, export) and the signing keys (list, rotate). They follow the rules of
//! every page: a session, the CSRF token on every form, and the API deciding what the caller may
//! do — a refusal (403) is shown in the API's own words.

use std::collections::{BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Fail, St, done_text, fail, field, form, form_session, logged_in, now, render, see_other};
use crate::Console;
use crate::api::{ApiError, segment};
use crate::i18n::Lang;

/// Records per audit page: enough to read, small enough to resolve the accounts they name.
const AUDIT_PAGE: &str = "50";
/// Records per export download (the API's own default): the API says where to go on.
const EXPORT_LIMIT: &str = "10000";
/// The API's header naming the `after_seq` of the rest of a cut export.
const NEXT_AFTER_SEQ: &str = "habilis-next-after-seq";

/// The query string of the next page: the filters, with the API's cursor.
fn next_query(filters: &[(&str, &str)], page: &Value) -> Option<String> {
    let cursor = page["next_cursor"].as_str()?;
    let pairs = filters.iter().filter(|(k, v)| *k != "cursor" && !v.is_empty()).copied().chain([("cursor", cursor)]);
    Some(url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
}

/// An API refusal or invalid filter, shown on the page itself (with its filters kept); a lost
/// session or an unreachable Habilis ends the request as on every other page.
fn inline_error(lang: Lang, e: ApiError) -> Result<(StatusCode, String), Fail> {
    match Fail::api(lang, e) {
        Fail::Message(status, text) if status.is_client_error() => Ok((status, text)),
        other => Err(other),
    }
}

/// Organisation names by id, where the caller may list organisations.
fn organisation_names(organisations: &Result<Value, ApiError>) -> HashMap<String, String> {
    let Ok(page) = organisations else { return HashMap::new() };
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|o| Some((o["id"].as_str()?.to_string(), o["name"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Clients

pub(super) async fn clients(
    State(console): St,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let filters = [("q", get("q")), ("cursor", get("cursor"))];
    let mut query = filters.to_vec();
    query.push(("limit", "50"));
    let found = match console.api.get(&session.access_token, "/clients", &query).await {
        Ok(page) => page,
        Err(e) => return fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    };
    let page = json!({
        "nav": "clients", "items": found["items"], "next": next_query(&filters, &found), "q": get("q"),
    });
    render(&console, &headers, Some(&session), "clients.html", page)
}

pub(super) async fn client(State(console): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    match console.api.get(&session.access_token, &format!("/clients/{}", segment(&id)), &[]).await {
        Ok(client) => {
            let metadata = serde_json::to_string_pretty(&client["metadata"]).unwrap_or_default();
            let page = json!({ "nav": "clients", "client": client, "metadata": metadata });
            render(&console, &headers, Some(&session), "client.html", page)
        }
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Relationships

/// The filters of the relationship search, as the API names them.
const RELATIONSHIP_FILTERS: &[&str] =
    &["professional", "organisation", "status", "ins_value", "ins_oid", "local_id", "namespace", "cursor"];

/// A patient as people read it: the INS, or the local identifier and its namespace.
fn patient_label(patient: &Value) -> String {
    match (patient["ins"]["value"].as_str(), patient["local_id"].as_str()) {
        (Some(ins), _) => format!("INS {ins}"),
        (None, Some(local)) => format!("{local} ({})", patient["namespace"].as_str().unwrap_or("")),
        (None, None) => String::new(),
    }
}

pub(super) async fn relationships(
    State(console): St,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let filters: Vec<(&str, &str)> =
        RELATIONSHIP_FILTERS.iter().map(|k| (*k, q.get(*k).map(|v| v.trim()).unwrap_or(""))).collect();
    let mut query = filters.clone();
    query.push(("limit", "50"));
    let token = session.access_token.as_str();
    let (found, organisations) = tokio::join!(
        console.api.get(token, "/relationships", &query),
        console.api.get(token, "/organisations", &[("limit", "200")]),
    );
    let names = organisation_names(&organisations);
    let (items, next, error, status) = match found {
        Ok(page) => {
            let items: Vec<Value> = page["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|r| {
                            let mut r = r.clone();
                            let organisation = r["organisation_id"].as_str().map(|id| names.get(id).map_or(id, |n| n));
                            r["organisation_name"] = json!(organisation);
                            r["patient_label"] = json!(patient_label(&r["patient"]));
                            r
                        })
                        .collect()
                })
                .unwrap_or_default();
            (items, next_query(&filters, &page), None, StatusCode::OK)
        }
        Err(e) => match inline_error(lang, e) {
            Ok((status, text)) => (Vec::new(), None, Some(text), status),
            Err(f) => return fail(&console, &headers, Some(&session), f),
        },
    };
    // The filters without the cursor: where a revocation brings the person back.
    let current = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(filters.iter().filter(|(k, v)| *k != "cursor" && !v.is_empty()))
        .finish();
    let mut page = json!({
        "nav": "relationships", "items": items, "next": next, "error": error, "current": current,
        "organisations": organisations.map(|o| o["items"].clone()).unwrap_or(json!([])),
        "done": done_text(lang, q.get("done")),
    });
    for (k, v) in &filters {
        page[*k] = json!(v);
    }
    let mut response = render(&console, &headers, Some(&session), "relationships.html", page);
    *response.status_mut() = status;
    response
}

pub(super) async fn revoke_relationship(
    State(console): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let lang = Lang::negotiate(&headers);
    let fields = form(&body);
    let session = match form_session(&console, &headers, &fields) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let path = format!("/relationships/{}/revoke", segment(&id));
    match console.api.send(&session.access_token, Method::POST, &path, None).await {
        Ok(_) => {
            // Back to the same search: only its known filters, re-encoded.
            let back = url::form_urlencoded::parse(field(&fields, "back").as_bytes())
                .filter(|(k, _)| RELATIONSHIP_FILTERS.contains(&k.as_ref()) && k != "cursor")
                .collect::<Vec<_>>();
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(back)
                .append_pair("done", "revoked")
                .finish();
            see_other(&console, &format!("/relationships?{query}"))
        }
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Audit log

/// The audit filters of a console request, as the API takes them.
struct AuditFilters {
    pairs: Vec<(&'static str, String)>,
}

impl AuditFilters {
    fn as_query(&self) -> Vec<(&str, &str)> {
        self.pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// A time typed in the form (`datetime-local`, read as UTC), or as the API takes it (Unix
/// seconds, RFC 3339).
fn api_time(value: &str) -> String {
    let value = value.trim();
    let digits_at =
        |positions: &[usize]| positions.iter().all(|i| value.as_bytes().get(*i).is_some_and(u8::is_ascii_digit));
    let local_shape = value.get(10..11) == Some("T") && digits_at(&[0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15]);
    match value.len() {
        16 if local_shape => format!("{value}:00Z"),
        19 if local_shape => format!("{value}Z"),
        _ => value.to_string(),
    }
}

/// The account filter: the API matches an account id against the actor or the subject of a
/// record exactly, and the actor of an administrator's action is recorded as `account:<id>`. A
/// login or an id typed in the form becomes the id, prefixed when the account is looked for as
/// the actor; a value with a `:` (`account:…`, `client:…`, `cli`…) is taken as it is.
async fn account_filter(console: &Console, token: &str, value: &str, as_actor: bool) -> Result<String, ApiError> {
    if value.is_empty() || value.contains(':') {
        return Ok(value.to_string());
    }
    let id = match console.api.get(token, &format!("/accounts/{}", segment(value)), &[]).await {
        Ok(found) => found["account"]["id"].as_str().unwrap_or(value).to_string(),
        Err(e) if e.status == 404 || e.status == 400 => {
            let found = console.api.get(token, "/accounts", &[("q", value), ("limit", "200")]).await?;
            found["items"]
                .as_array()
                .and_then(|items| {
                    items.iter().find(|a| a["login"].as_str().is_some_and(|l| l.eq_ignore_ascii_case(value)))
                })
                .and_then(|a| a["id"].as_str())
                .unwrap_or(value)
                .to_string()
        }
        Err(e) => return Err(e),
    };
    Ok(if as_actor { format!("account:{id}") } else { id })
}

async fn audit_filters(console: &Console, token: &str, q: &HashMap<String, String>) -> Result<AuditFilters, ApiError> {
    let get = |k: &str| q.get(k).map(|v| v.trim()).unwrap_or("");
    let account = account_filter(console, token, get("account"), get("account_as") != "subject").await?;
    let pairs = [
        ("since", api_time(get("since"))),
        ("until", api_time(get("until"))),
        ("event", get("event").to_string()),
        ("account_id", account),
        ("client_id", get("client").to_string()),
        ("outcome", get("outcome").to_string()),
    ];
    Ok(AuditFilters { pairs: pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect() })
}

/// How the person filtered, to fill the form again and build the links.
fn audit_form(q: &HashMap<String, String>) -> Vec<(&'static str, String)> {
    ["since", "until", "event", "account", "account_as", "client", "outcome"]
        .into_iter()
        .map(|k| (k, q.get(k).map(|v| v.trim().to_string()).unwrap_or_default()))
        .collect()
}

/// Names of the accounts a page of records mentions (`account:<id>` actors, subject ids), as
/// `Given Family (login)`; ids the caller may not read stay ids.
async fn account_labels(console: &Console, token: &str, records: &[Value]) -> HashMap<String, String> {
    let ids: BTreeSet<String> = records
        .iter()
        .flat_map(|r| [r["actor"].as_str(), r["subject"].as_str()])
        .flatten()
        .map(|v| v.strip_prefix("account:").unwrap_or(v))
        .filter(|v| !v.is_empty() && !v.contains(':') && *v != "cli" && *v != "scheduler")
        .map(str::to_string)
        .collect();
    let mut lookups = tokio::task::JoinSet::new();
    for id in ids {
        let (api, token) = (console.api.clone(), token.to_string());
        lookups.spawn(async move {
            let found = api.get(&token, &format!("/accounts/{}", segment(&id)), &[]).await.ok()?;
            let account = &found["account"];
            let login = account["login"].as_str()?;
            let name = [account["given_name"].as_str(), account["family_name"].as_str()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            Some((id, if name.is_empty() { login.to_string() } else { format!("{name} ({login})") }))
        });
    }
    let mut labels = HashMap::new();
    while let Some(done) = lookups.join_next().await {
        if let Ok(Some((id, label))) = done {
            labels.insert(id, label);
        }
    }
    labels
}

/// A record as the page shows it: readable time and names, the rest in its details.
fn audit_row(record: &Value, labels: &HashMap<String, String>) -> Value {
    let label = |value: Option<&str>| {
        value.map(|v| labels.get(v.strip_prefix("account:").unwrap_or(v)).cloned().unwrap_or_else(|| v.to_string()))
    };
    let extra = json!({
        "seq": record["seq"], "request_id": record["request_id"], "acr": record["acr"],
        "user_agent": record["user_agent"], "pseudonymised_at": record["pseudonymised_at"],
        "details": record["details"], "hash": record["hash"], "prev_hash": record["prev_hash"],
    });
    json!({
        "seq": record["seq"],
        "time": record["time"],
        "event": record["event"],
        "outcome": record["outcome"],
        "actor": record["actor"],
        "actor_label": label(record["actor"].as_str()),
        "subject": record["subject"],
        "subject_label": label(record["subject"].as_str()),
        "client_id": record["client_id"],
        "ip": record["ip"],
        "details": serde_json::to_string_pretty(&extra).unwrap_or_default(),
    })
}

pub(super) async fn audit(
    State(console): St,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let token = session.access_token.as_str();
    let form_values = audit_form(&q);
    let form_query: Vec<(&str, &str)> =
        form_values.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (*k, v.as_str())).collect();
    let searched = match audit_filters(&console, token, &q).await {
        Ok(filters) => {
            let mut query = filters.as_query();
            query.extend([("limit", AUDIT_PAGE), ("cursor", q.get("cursor").map(String::as_str).unwrap_or(""))]);
            console.api.get(token, "/audit", &query).await
        }
        Err(e) => Err(e),
    };
    let (rows, next, error, status) = match searched {
        Ok(page) => {
            let records = page["items"].as_array().cloned().unwrap_or_default();
            let labels = account_labels(&console, token, &records).await;
            let rows: Vec<Value> = records.iter().map(|r| audit_row(r, &labels)).collect();
            (rows, next_query(&form_query, &page), None, StatusCode::OK)
        }
        Err(e) => match inline_error(lang, e) {
            Ok((status, text)) => (Vec::new(), None, Some(text), status),
            Err(f) => return fail(&console, &headers, Some(&session), f),
        },
    };
    let export = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form_query.iter()).finish();
    let mut page = json!({
        "nav": "audit", "rows": rows, "next": next, "error": error, "export": export,
        "outcomes": ["success", "failure", "denied", "info"],
    });
    for (k, v) in &form_values {
        page[*k] = json!(v);
    }
    let mut response = render(&console, &headers, Some(&session), "audit.html", page);
    *response.status_mut() = status;
    response
}

/// The export of the filtered records (JSON lines, in `seq` order), downloaded through the
/// console: the browser never holds the access token.
pub(super) async fn audit_export(
    State(console): St,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let token = session.access_token.as_str();
    let exported = match audit_filters(&console, token, &q).await {
        Ok(filters) => {
            let mut query = filters.as_query();
            query.push(("limit", EXPORT_LIMIT));
            let after_seq = q.get("after_seq").map(String::as_str).unwrap_or("");
            query.push(("after_seq", after_seq));
            console.api.get_raw(token, "/audit/export", &query).await
        }
        Err(e) => Err(e),
    };
    let (api_headers, body) = match exported {
        Ok(answer) => answer,
        Err(e) => return fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    };
    let filename = format!("attachment; filename=\"habilis-audit-{}.jsonl\"", now());
    let mut response = body.into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    if let Ok(value) = HeaderValue::from_str(&filename) {
        response_headers.insert(header::CONTENT_DISPOSITION, value);
    }
    // A cut export says where the rest starts, as the API does.
    if let Some(next) = api_headers.get(NEXT_AFTER_SEQ).and_then(|v| v.to_str().ok())
        && let Ok(value) = HeaderValue::from_str(next)
    {
        response_headers.insert(HeaderName::from_static(NEXT_AFTER_SEQ), value);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Signing keys

/// How old something created at `created_at` is, in days and hours (minutes when younger).
fn age(lang: Lang, created_at: i64, now: i64) -> String {
    let seconds = (now - created_at).max(0);
    let (days, hours, minutes) = (seconds / 86_400, seconds % 86_400 / 3_600, seconds % 3_600 / 60);
    let day = if lang == Lang::Fr { "j" } else { "d" };
    match (days, hours) {
        (0, 0) => format!("{minutes} min"),
        (0, h) => format!("{h} h"),
        (d, h) => format!("{d} {day} {h} h"),
    }
}

pub(super) async fn keys(State(console): St, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let listed = match console.api.get(&session.access_token, "/keys", &[]).await {
        Ok(page) => page,
        Err(e) => return fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    };
    let now = now();
    let items: Vec<Value> = listed["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|k| {
                    let mut k = k.clone();
                    k["age"] = json!(age(lang, k["created_at"].as_i64().unwrap_or(now), now));
                    k
                })
                .collect()
        })
        .unwrap_or_default();
    let page = json!({ "nav": "keys", "items": items, "done": done_text(lang, q.get("done")) });
    render(&console, &headers, Some(&session), "keys.html", page)
}

pub(super) async fn rotate_key(State(console): St, headers: HeaderMap, body: Bytes) -> Response {
    let lang = Lang::negotiate(&headers);
    let fields = form(&body);
    let session = match form_session(&console, &headers, &fields) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    // An emergency rotation signs with the new key at once; otherwise after the activation delay.
    let request = json!({ "activate_now": field(&fields, "activate_now") == "on" });
    match console.api.send(&session.access_token, Method::POST, "/keys/rotate", Some(request)).await {
        Ok(_) => see_other(&console, "/keys?done=rotated"),
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Times

/// The `datetime` filter of the templates: Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn datetime(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3_600, rest % 3_600 / 60, rest % 60)
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_and_read_in_utc() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(datetime(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(datetime(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(api_time("2026-11-29T05:42"), "2026-11-29T05:42:00Z");
        assert_eq!(api_time("2026-11-29T05:42:07"), "2026-11-29T05:42:07Z");
        assert_eq!(api_time("1700000000"), "1700000000", "Unix seconds go as they are");
        assert_eq!(api_time("2026-11-29T05:42:00+01:00"), "2026-11-29T05:42:00+01:00");
    }

    #[test]
    fn key_ages() {
        assert_eq!(age(Lang::Fr, 0, 3 * 86_400 + 4 * 3_600), "3 j 4 h");
        assert_eq!(age(Lang::En, 0, 3 * 86_400), "3 d 0 h");
        assert_eq!(age(Lang::En, 0, 7_300), "2 h");
        assert_eq!(age(Lang::En, 100, 40), "0 min", "a clock behind the key's is no negative age");
    }

    #[test]
    fn next_pages_keep_the_filters() {
        let page = json!({"next_cursor": "abc"});
        let next = next_query(&[("event", "profile_assigned"), ("outcome", ""), ("cursor", "old")], &page);
        assert_eq!(next.as_deref(), Some("event=profile_assigned&cursor=abc"));
        assert_eq!(next_query(&[("q", "x")], &json!({"next_cursor": null})), None);
    }

    #[test]
    fn the_pages_render() {
        let env = super::super::templates().expect("the templates parse");
        let base = |page: Value| {
            let mut context = json!({
                "t": Lang::En.texts(), "lang": "en", "prefix": "/admin", "user": "Ada", "acr": "eidas2",
                "csrf": "tok", "can_admin": false, "can_audit": true,
            });
            if let (Some(target), Value::Object(extra)) = (context.as_object_mut(), page) {
                target.extend(extra);
            }
            context
        };
        let record = json!({"seq": 7, "time": 1_700_000_000, "event": "profile_assigned", "outcome": "info",
            "actor": "account:a1", "subject": "a2", "client_id": null, "ip": "127.0.0.1", "details": {"profile": "p"}});
        let labels = HashMap::from([("a1".to_string(), "Org Admin (org-admin)".to_string())]);
        let audit = base(json!({"nav": "audit", "rows": [audit_row(&record, &labels)], "outcomes": ["info"],
            "export": "event=profile_assigned", "next": "cursor=x"}));
        let html = env.get_template("audit.html").unwrap().render(minijinja::value::Serde(&audit)).unwrap();
        assert!(html.contains("2023-11-14 22:13:20 UTC") && html.contains("Org Admin (org-admin)"), "{html}");
        assert!(html.contains("<details>") && html.contains("&quot;profile&quot;"), "details are expandable");
        assert!(html.contains("audit/export?event=profile_assigned\" download"), "{html}");
        let keys = base(json!({"nav": "keys", "items": [{"kid": "k1", "alg": "ES256", "state": "active",
            "active": true, "created_at": 0, "activates_at": 0, "retired_at": null, "published_until": null,
            "age": "3 d 0 h"}]}));
        let html = env.get_template("keys.html").unwrap().render(minijinja::value::Serde(&keys)).unwrap();
        assert!(
            html.contains("Active (signing)") && !html.contains("rotate-submit"),
            "an auditor has no rotate button"
        );
        // An organisation administrator who is also an auditor holds both scopes, not the power.
        let mut both = keys.clone();
        both["can_admin"] = json!(true);
        let html = env.get_template("keys.html").unwrap().render(minijinja::value::Serde(&both)).unwrap();
        assert!(!html.contains("rotate-submit"), "{html}");
        both["is_platform"] = json!(true);
        let html = env.get_template("keys.html").unwrap().render(minijinja::value::Serde(&both)).unwrap();
        assert!(html.contains("rotate-submit"), "a platform administrator rotates");
        let relationships = base(
            json!({"nav": "relationships", "items": [], "error": "organisation administrators act only inside their own organisation (access_denied)"}),
        );
        let html =
            env.get_template("relationships.html").unwrap().render(minijinja::value::Serde(&relationships)).unwrap();
        assert!(html.contains("only inside their own organisation"), "the API's refusal is shown");
        let clients = base(json!({"nav": "clients", "items": [{"client_id": "app", "client_name": "App",
            "valid": true, "self_registered": false, "created_at": 0, "token_endpoint_auth_method": "private_key_jwt"}]}));
        let html = env.get_template("clients.html").unwrap().render(minijinja::value::Serde(&clients)).unwrap();
        assert!(html.contains("/clients/app\"") && html.contains("nav-audit"), "{html}");
    }

    #[test]
    fn patients_are_labelled() {
        assert_eq!(patient_label(&json!({"ins": {"value": "123", "oid": "1.2"}})), "INS 123");
        assert_eq!(patient_label(&json!({"local_id": "42", "namespace": "app"})), "42 (app)");
    }
}

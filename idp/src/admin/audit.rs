//! The audit log in the admin API (`/api/admin/v1/audit`): search (pages of records, newest
//! first, or in `seq` order from `after_seq` for incremental collection) and export (JSON lines,
//! as `habilis audit export`). For platform administrators and auditors only: the log is
//! platform-wide, so organisation administrators are refused (and the refusal audited). Exports
//! are themselves audited (`audit_exported`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::{Actor, PageQuery, actor, audit_context, authorize, encode_cursor, query, split_page};
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::audit::archive::RecordLine;
use crate::error::OAuthError;
use crate::store::{AuditQuery, StoredAuditRecord};

pub const PATH: &str = "/api/admin/v1/audit";
pub const EXPORT_PATH: &str = "/api/admin/v1/audit/export";

/// Records per export response when the caller gives no limit, and the most.
pub const EXPORT_DEFAULT_LIMIT: i64 = 10_000;
pub const EXPORT_MAX_LIMIT: i64 = 50_000;
/// Header of an export response that was cut at its limit: pass it as `after_seq` for the rest.
pub const NEXT_AFTER_SEQ: &str = "habilis-next-after-seq";

/// One record of the audit log.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AuditRecordView {
    /// Position in the chain: 1, 2, 3… without gaps.
    pub seq: i64,
    /// Unix seconds.
    pub time: i64,
    pub event: String,
    /// `success`, `failure`, `denied` or `info`.
    pub outcome: String,
    pub client_id: Option<String>,
    pub request_id: Option<String>,
    pub acr: Option<String>,
    /// Who acted: `account:<id>`, an account id, `cli`, `scheduler`, `client:<id>`…
    pub actor: Option<String>,
    /// The account the event is about.
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The event's own fields.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Set when the person's data was erased: personal fields replaced by a pseudonym.
    pub pseudonymised_at: Option<i64>,
    pub personal_digest: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<StoredAuditRecord> for AuditRecordView {
    fn from(r: StoredAuditRecord) -> Self {
        AuditRecordView {
            details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::String(r.details)),
            seq: r.seq,
            time: r.time,
            event: r.event,
            outcome: r.outcome,
            client_id: r.client_id,
            request_id: r.request_id,
            acr: r.acr,
            actor: r.actor,
            subject: r.subject,
            ip: r.ip,
            user_agent: r.user_agent,
            pseudonymised_at: r.pseudonymised_at,
            personal_digest: r.personal_digest,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// A page of records.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecordView>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditSearchQuery {
    /// From this time (included): Unix seconds or RFC 3339.
    pub since: Option<String>,
    /// Before this time (excluded): Unix seconds or RFC 3339.
    pub until: Option<String>,
    /// Only this event, e.g. `card_login_refused`.
    pub event: Option<String>,
    /// Only records whose actor or subject is this account id.
    pub account_id: Option<String>,
    pub client_id: Option<String>,
    /// `success`, `failure`, `denied` or `info`.
    pub outcome: Option<String>,
    /// Records after this seq, in seq order (to collect the log incrementally); without it,
    /// newest first.
    pub after_seq: Option<i64>,
    /// Search: 1 to 200 (default 50). Export: 1 to 50000 (default 10000).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (search only).
    pub cursor: Option<String>,
}

fn audit_target() -> TargetFacts {
    TargetFacts::of("audit_log", None)
}

/// A time filter: Unix seconds or RFC 3339.
fn parse_time(name: &str, value: Option<&str>) -> Result<Option<i64>, OAuthError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    if let Ok(seconds) = value.parse::<i64>() {
        return Ok(Some(seconds));
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| Some(t.unix_timestamp()))
        .map_err(|_| OAuthError::invalid_request(format!("{name} must be Unix seconds or an RFC 3339 time")))
}

/// The filters of a query, checked.
fn filters(q: &AuditSearchQuery) -> Result<AuditQuery, OAuthError> {
    if let Some(outcome) = &q.outcome
        && !["success", "failure", "denied", "info"].contains(&outcome.as_str())
    {
        return Err(OAuthError::invalid_request("outcome must be success, failure, denied or info"));
    }
    for (name, value) in [("event", &q.event), ("account_id", &q.account_id), ("client_id", &q.client_id)] {
        if value.as_ref().is_some_and(|v| v.is_empty() || v.len() > 256) {
            return Err(OAuthError::invalid_request(format!("{name} must have 1 to 256 characters")));
        }
    }
    if q.after_seq.is_some_and(|s| s < 0) {
        return Err(OAuthError::invalid_request("after_seq must not be negative"));
    }
    Ok(AuditQuery {
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
        event: q.event.clone(),
        account_id: q.account_id.clone(),
        client_id: q.client_id.clone(),
        outcome: q.outcome.clone(),
        after_seq: q.after_seq,
        before_seq: None,
        limit: 0,
    })
}

async fn reader(state: &AppState, headers: &HeaderMap, what: &str) -> Result<Actor, OAuthError> {
    let actor = actor(state, headers, crate::unix_now()).await?;
    authorize(state, headers, &actor, Operation::Read, &audit_target(), what)?;
    Ok(actor)
}

#[utoipa::path(
    get, path = PATH, tag = "audit", params(AuditSearchQuery),
    responses(
        (status = 200, description = "A page of audit records: newest first, or in seq order after `after_seq`",
            body = AuditPage),
        (status = 400, description = "Invalid filter, limit or cursor", body = ErrorBody),
        (status = 403, description = "Not a platform administrator or auditor (refusals are audited)",
            body = ErrorBody),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<AuditPage>, OAuthError> {
    reader(&state, &headers, "the audit log").await?;
    let q: AuditSearchQuery = query(&uri)?;
    let page = PageQuery { limit: q.limit, cursor: q.cursor.clone() };
    let limit = page.limit()?;
    let mut search = filters(&q)?;
    if let Some(parts) = page.cursor(2)? {
        let seq =
            parts[1].parse::<i64>().map_err(|_| OAuthError::invalid_request("cursor is not one this API returned"))?;
        match parts[0].as_str() {
            "asc" => search.after_seq = Some(seq),
            "desc" => {
                search.after_seq = None;
                search.before_seq = Some(seq);
            }
            _ => return Err(OAuthError::invalid_request("cursor is not one this API returned")),
        }
    }
    search.limit = limit + 1;
    let ascending = search.after_seq.is_some();
    let rows = state.store.audit().search(&search).await?;
    let (rows, more) = split_page(rows, limit);
    let next_cursor = match (more, rows.last()) {
        (true, Some(last)) => Some(encode_cursor(&[if ascending { "asc" } else { "desc" }, &last.seq.to_string()])),
        _ => None,
    };
    Ok(Json(AuditPage { items: rows.into_iter().map(AuditRecordView::from).collect(), next_cursor }))
}

#[utoipa::path(
    get, path = EXPORT_PATH, tag = "audit", params(AuditSearchQuery),
    responses(
        (status = 200, description = "Matching records in seq order, one JSON object per line (the format of \
            `habilis audit export`: `details` is the stored JSON text, with `personal_digest`, `prev_hash` and \
            `hash` so that lines can be checked against the chain). Cut at `limit`: then the header \
            `habilis-next-after-seq` gives the `after_seq` of the rest. Audited (`audit_exported`).",
            body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "Invalid filter or limit", body = ErrorBody),
        (status = 403, description = "Not a platform administrator or auditor (refusals are audited)",
            body = ErrorBody),
    )
)]
pub async fn export(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Response, OAuthError> {
    let actor = reader(&state, &headers, "the audit log (export)").await?;
    let q: AuditSearchQuery = query(&uri)?;
    if q.cursor.is_some() {
        return Err(OAuthError::invalid_request("the export pages with after_seq (see habilis-next-after-seq)"));
    }
    let limit = match q.limit {
        None => EXPORT_DEFAULT_LIMIT,
        Some(n) if (1..=EXPORT_MAX_LIMIT).contains(&n) => n,
        Some(_) => return Err(OAuthError::invalid_request(format!("limit must be between 1 and {EXPORT_MAX_LIMIT}"))),
    };
    let mut search = filters(&q)?;
    let mut after = search.after_seq.unwrap_or(0);
    let mut body = Vec::new();
    let mut count: i64 = 0;
    let mut next = None;
    // Read in pages of at most 10,000 rows; one response holds at most `limit` records.
    while count < limit {
        let want = (limit - count).min(crate::audit::verify::PAGE_SIZE);
        search.after_seq = Some(after);
        search.limit = want + 1;
        let rows = state.store.audit().search(&search).await?;
        let (rows, more) = split_page(rows, want);
        let Some(last) = rows.last().map(|r| r.seq) else { break };
        for record in rows {
            serde_json::to_writer(&mut body, &RecordLine::from(record)).map_err(|_| OAuthError::server_error())?;
            body.push(b'\n');
            count += 1;
        }
        after = last;
        if !more {
            break;
        }
        if count >= limit {
            next = Some(last);
        }
    }
    state.audit.record(
        AuditEvent::AuditExported {
            actor: actor.id.clone(),
            since: search.since,
            until: search.until,
            filters: describe(&q),
            records: count as u64,
        },
        audit_context(&headers),
    );
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response();
    if let Some(next) = next
        && let Ok(value) = HeaderValue::from_str(&next.to_string())
    {
        response.headers_mut().insert(HeaderName::from_static(NEXT_AFTER_SEQ), value);
    }
    Ok(response)
}

fn describe(q: &AuditSearchQuery) -> Option<String> {
    let parts: Vec<String> =
        [("event", &q.event), ("account_id", &q.account_id), ("client_id", &q.client_id), ("outcome", &q.outcome)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .chain(q.after_seq.map(|s| format!("after_seq={s}")))
            .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        let q = AuditSearchQuery {
            since: Some("2023-11-14T22:13:20Z".into()),
            until: Some("1700000100".into()),
            ..Default::default()
        };
        let f = filters(&q).unwrap();
        assert_eq!((f.since, f.until), (Some(1_700_000_000), Some(1_700_000_100)));
        let bad = AuditSearchQuery { outcome: Some("maybe".into()), ..Default::default() };
        assert!(filters(&bad).unwrap_err().description.contains("outcome"));
        let bad = AuditSearchQuery { since: Some("yesterday".into()), ..Default::default() };
        assert!(filters(&bad).unwrap_err().description.contains("since"));
        let bad = AuditSearchQuery { after_seq: Some(-1), ..Default::default() };
        assert!(filters(&bad).is_err());
    }
}

//! Organisations and their departments (`/api/admin/v1/organisations`). Platform administrators
//! create, disable and delete organisations; organisation administrators see and change only
//! their own (name, identifier, departments); auditors read.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::{
    Actor, PageQuery, actor, audit_context, authorize, contains_pattern, encode_cursor, json_body, query,
    required_text, snapshot, split_page,
};
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::{Department, Organisation, OrganisationFilter, OrganisationRecord, StoreError};

pub const PATH: &str = "/api/admin/v1/organisations";
pub const ITEM_PATH: &str = "/api/admin/v1/organisations/{id}";
pub const DEPARTMENTS_PATH: &str = "/api/admin/v1/organisations/{id}/departments";
pub const DEPARTMENT_PATH: &str = "/api/admin/v1/organisations/{id}/departments/{department_id}";

const NAME_MAX: usize = 200;
const IDENTIFIER_MAX: usize = 64;

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OrganisationView {
    pub id: String,
    pub name: String,
    /// Kind of the identifier (e.g. `FINESS`, `SIRET`).
    pub identifier_type: Option<String>,
    pub identifier: Option<String>,
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub disabled_at: Option<i64>,
}

impl From<OrganisationRecord> for OrganisationView {
    fn from(o: OrganisationRecord) -> Self {
        OrganisationView {
            id: o.id,
            name: o.name,
            identifier_type: o.identifier_type,
            identifier: o.identifier,
            disabled: o.disabled_at.is_some(),
            created_at: o.created_at,
            updated_at: o.updated_at,
            disabled_at: o.disabled_at,
        }
    }
}

/// A page of organisations, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganisationPage {
    pub items: Vec<OrganisationView>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrganisationQuery {
    /// Part of the name (case-insensitive).
    pub q: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrganisation {
    pub name: String,
    /// Given together with `identifier`.
    #[serde(default)]
    pub identifier_type: Option<String>,
    #[serde(default)]
    pub identifier: Option<String>,
}

/// Changes to an organisation; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganisationPatch {
    #[serde(default)]
    pub name: Option<String>,
    /// Given together with `identifier`.
    #[serde(default)]
    pub identifier_type: Option<String>,
    #[serde(default)]
    pub identifier: Option<String>,
    /// Disable (true) or enable (false): platform administrators only.
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DepartmentView {
    pub id: String,
    pub organisation_id: String,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<Department> for DepartmentView {
    fn from(d: Department) -> Self {
        DepartmentView { id: d.id, organisation_id: d.organisation_id, name: d.name, created_at: d.created_at }
    }
}

/// The departments of an organisation (never more than one page).
#[derive(Debug, Serialize, ToSchema)]
pub struct DepartmentPage {
    pub items: Vec<DepartmentView>,
    /// Always null.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDepartment {
    pub name: String,
}

fn organisation_target(id: Option<&str>) -> TargetFacts {
    TargetFacts::of("organisation", id)
}

fn not_found() -> OAuthError {
    OAuthError::new(OAuthErrorCode::NotFound, "no such organisation")
}

/// The organisation `id`, or 404.
pub async fn load(state: &AppState, id: &str) -> Result<OrganisationRecord, OAuthError> {
    state.store.admin().organisation_record(id).await?.ok_or_else(not_found)
}

/// An identifier pair, both or neither.
fn identifier(kind: Option<&str>, value: Option<&str>) -> Result<(Option<String>, Option<String>), OAuthError> {
    match (kind, value) {
        (None, None) => Ok((None, None)),
        (Some(kind), Some(value)) => Ok((
            Some(required_text("identifier_type", kind, 32)?),
            Some(required_text("identifier", value, IDENTIFIER_MAX)?),
        )),
        _ => Err(OAuthError::invalid_request("identifier_type and identifier go together")),
    }
}

fn conflict(e: StoreError, what: &'static str) -> OAuthError {
    match e {
        StoreError::Conflict { .. } => OAuthError::new(OAuthErrorCode::Conflict, what),
        other => other.into(),
    }
}

fn audit_organisation(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    id: &str,
    before: Option<&OrganisationView>,
    after: Option<&OrganisationView>,
) {
    state.audit.record(
        AuditEvent::OrganisationChanged {
            organisation_id: id.to_string(),
            actor: actor.id.clone(),
            before: before.and_then(snapshot),
            after: after.and_then(snapshot),
        },
        audit_context(headers),
    );
}

#[utoipa::path(
    get, path = PATH, tag = "organisations", params(OrganisationQuery),
    responses(
        (status = 200, description = "A page of organisations; an organisation administrator sees only its own",
            body = OrganisationPage),
        (status = 400, description = "Invalid filter, limit or cursor", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<OrganisationPage>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let q: OrganisationQuery = query(&uri)?;
    let page = PageQuery { limit: q.limit, cursor: q.cursor };
    let limit = page.limit()?;
    let pattern = contains_pattern(q.q.as_deref())?;
    // Asking the rules, not refusing: who may not read every organisation lists those it may read.
    let everything = state.admin_policy.evaluate(&actor.facts, Operation::Read, &organisation_target(None)).allowed;
    if !everything {
        let mut items = Vec::new();
        for id in &actor.facts.organisations {
            let readable = state.admin_policy.evaluate(&actor.facts, Operation::Read, &organisation_target(Some(id)));
            if let (true, Some(o)) = (readable.allowed, state.store.admin().organisation_record(id).await?) {
                let matches = pattern.as_deref().is_none_or(|p| like(&o.name.to_lowercase(), p));
                if matches {
                    items.push(OrganisationView::from(o));
                }
            }
        }
        items.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        return Ok(Json(OrganisationPage { items, next_cursor: None }));
    }
    let after = page.cursor(2)?.map(|mut parts| {
        let id = parts.pop().unwrap_or_default();
        (parts.pop().unwrap_or_default(), id)
    });
    let rows =
        state.store.admin().search_organisations(&OrganisationFilter { pattern, after, limit: limit + 1 }).await?;
    let (rows, more) = split_page(rows, limit);
    let next_cursor = more.then(|| rows.last().map(|o| encode_cursor(&[&o.name, &o.id]))).flatten();
    Ok(Json(OrganisationPage { items: rows.into_iter().map(OrganisationView::from).collect(), next_cursor }))
}

/// The in-memory equivalent of `LIKE '%text%'` for the patterns of [`contains_pattern`].
fn like(value: &str, pattern: &str) -> bool {
    let inner = pattern.strip_prefix('%').and_then(|p| p.strip_suffix('%')).unwrap_or(pattern);
    let mut literal = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        literal.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
    }
    value.contains(&literal)
}

#[utoipa::path(
    post, path = PATH, tag = "organisations", request_body = NewOrganisation,
    responses(
        (status = 201, description = "Created", body = OrganisationView),
        (status = 400, description = "Invalid organisation", body = ErrorBody),
        (status = 403, description = "Only platform administrators create organisations", body = ErrorBody),
        (status = 409, description = "An organisation already has this identifier", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let request: NewOrganisation = json_body(&body)?;
    authorize(&state, &headers, &actor, Operation::Administer, &organisation_target(None), "new organisation")?;
    let name = required_text("name", &request.name, NAME_MAX)?;
    let (identifier_type, identifier) = identifier(request.identifier_type.as_deref(), request.identifier.as_deref())?;
    let organisation =
        Organisation { id: uuid::Uuid::new_v4().to_string(), name, identifier_type, identifier, created_at: now };
    state
        .store
        .habilitations()
        .insert_organisation(&organisation)
        .await
        .map_err(|e| conflict(e, "an organisation already has this identifier"))?;
    let view = OrganisationView::from(load(&state, &organisation.id).await?);
    audit_organisation(&state, &headers, &actor, &view.id, None, Some(&view));
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    get, path = ITEM_PATH, tag = "organisations", params(("id" = String, Path, description = "Organisation id")),
    responses(
        (status = 200, description = "The organisation", body = OrganisationView),
        (status = 403, description = "Another organisation", body = ErrorBody),
        (status = 404, description = "No such organisation", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<OrganisationView>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let organisation = load(&state, &id).await?;
    authorize(
        &state,
        &headers,
        &actor,
        Operation::Read,
        &organisation_target(Some(&id)),
        &format!("organisation {id}"),
    )?;
    Ok(Json(organisation.into()))
}

#[utoipa::path(
    patch, path = ITEM_PATH, tag = "organisations", params(("id" = String, Path, description = "Organisation id")),
    request_body = OrganisationPatch,
    responses(
        (status = 200, description = "Changed", body = OrganisationView),
        (status = 400, description = "Invalid change", body = ErrorBody),
        (status = 403, description = "Another organisation, or (dis|en)abling without being a platform administrator",
            body = ErrorBody),
        (status = 404, description = "No such organisation", body = ErrorBody),
        (status = 409, description = "Another organisation has this identifier", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<OrganisationView>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let before = load(&state, &id).await?;
    let patch: OrganisationPatch = json_body(&body)?;
    let what = format!("organisation {id}");
    let target = organisation_target(Some(&id));
    authorize(&state, &headers, &actor, Operation::Write, &target, &what)?;
    if patch.disabled.is_some() {
        authorize(&state, &headers, &actor, Operation::Administer, &target, &what)?;
    }
    let mut after = before.clone();
    if let Some(name) = &patch.name {
        after.name = required_text("name", name, NAME_MAX)?;
    }
    if patch.identifier_type.is_some() || patch.identifier.is_some() {
        (after.identifier_type, after.identifier) =
            identifier(patch.identifier_type.as_deref(), patch.identifier.as_deref())?;
    }
    match patch.disabled {
        Some(true) if before.disabled_at.is_none() => after.disabled_at = Some(now),
        Some(false) => after.disabled_at = None,
        _ => {}
    }
    after.updated_at = now;
    if !state
        .store
        .admin()
        .update_organisation(&after)
        .await
        .map_err(|e| conflict(e, "another organisation has this identifier"))?
    {
        return Err(not_found());
    }
    let (before, after) = (OrganisationView::from(before), OrganisationView::from(after));
    audit_organisation(&state, &headers, &actor, &id, Some(&before), Some(&after));
    Ok(Json(after))
}

#[utoipa::path(
    delete, path = ITEM_PATH, tag = "organisations", params(("id" = String, Path, description = "Organisation id")),
    responses(
        (status = 204, description = "Deleted, with its departments and org_admin grants"),
        (status = 403, description = "Only platform administrators delete organisations", body = ErrorBody),
        (status = 404, description = "No such organisation", body = ErrorBody),
        (status = 409, description = "It still has members: remove them or disable it instead", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let before = load(&state, &id).await?;
    authorize(
        &state,
        &headers,
        &actor,
        Operation::Administer,
        &organisation_target(Some(&id)),
        &format!("organisation {id}"),
    )?;
    match state.store.admin().delete_organisation(&id).await? {
        None => Err(not_found()),
        Some(false) => Err(OAuthError::new(
            OAuthErrorCode::Conflict,
            "the organisation still has members; remove them first, or disable it instead",
        )),
        Some(true) => {
            audit_organisation(&state, &headers, &actor, &id, Some(&before.into()), None);
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

#[utoipa::path(
    get, path = DEPARTMENTS_PATH, tag = "organisations", params(("id" = String, Path, description = "Organisation id")),
    responses(
        (status = 200, description = "Its departments, by name", body = DepartmentPage),
        (status = 403, description = "Another organisation", body = ErrorBody),
        (status = 404, description = "No such organisation", body = ErrorBody),
    )
)]
pub async fn list_departments(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<DepartmentPage>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    load(&state, &id).await?;
    let target = TargetFacts::of("department", Some(&id));
    authorize(&state, &headers, &actor, Operation::Read, &target, &format!("departments of organisation {id}"))?;
    let items = state.store.admin().departments_of(&id).await?.into_iter().map(DepartmentView::from).collect();
    Ok(Json(DepartmentPage { items, next_cursor: None }))
}

#[utoipa::path(
    post, path = DEPARTMENTS_PATH, tag = "organisations", params(("id" = String, Path, description = "Organisation id")),
    request_body = NewDepartment,
    responses(
        (status = 201, description = "Created", body = DepartmentView),
        (status = 400, description = "Invalid department, or the organisation is disabled", body = ErrorBody),
        (status = 403, description = "Another organisation", body = ErrorBody),
        (status = 404, description = "No such organisation", body = ErrorBody),
        (status = 409, description = "The organisation already has a department of this name", body = ErrorBody),
    )
)]
pub async fn create_department(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let organisation = load(&state, &id).await?;
    let request: NewDepartment = json_body(&body)?;
    let target = TargetFacts::of("department", Some(&id));
    authorize(&state, &headers, &actor, Operation::Write, &target, &format!("departments of organisation {id}"))?;
    if organisation.disabled_at.is_some() {
        return Err(OAuthError::invalid_request("the organisation is disabled"));
    }
    let department = Department {
        id: uuid::Uuid::new_v4().to_string(),
        organisation_id: id.clone(),
        name: required_text("name", &request.name, NAME_MAX)?,
        created_at: now,
    };
    state
        .store
        .admin()
        .insert_department(&department)
        .await
        .map_err(|e| conflict(e, "the organisation already has a department of this name"))?;
    let view = DepartmentView::from(department);
    audit_department(&state, &headers, &actor, &view, None, Some(&view));
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    delete, path = DEPARTMENT_PATH, tag = "organisations",
    params(("id" = String, Path, description = "Organisation id"), ("department_id" = String, Path, description = "Department id")),
    responses(
        (status = 204, description = "Deleted; its members stay in the organisation"),
        (status = 403, description = "Another organisation", body = ErrorBody),
        (status = 404, description = "No such organisation or department", body = ErrorBody),
    )
)]
pub async fn remove_department(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, department_id)): Path<(String, String)>,
) -> Result<StatusCode, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    load(&state, &id).await?;
    let department = state
        .store
        .admin()
        .departments_of(&id)
        .await?
        .into_iter()
        .find(|d| d.id == department_id)
        .ok_or_else(|| OAuthError::new(OAuthErrorCode::NotFound, "no such department in this organisation"))?;
    let target = TargetFacts::of("department", Some(&id));
    authorize(&state, &headers, &actor, Operation::Write, &target, &format!("department {department_id}"))?;
    if !state.store.admin().delete_department(&id, &department_id).await? {
        return Err(OAuthError::new(OAuthErrorCode::NotFound, "no such department in this organisation"));
    }
    let view = DepartmentView::from(department);
    audit_department(&state, &headers, &actor, &view, Some(&view), None);
    Ok(StatusCode::NO_CONTENT)
}

fn audit_department(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    department: &DepartmentView,
    before: Option<&DepartmentView>,
    after: Option<&DepartmentView>,
) {
    state.audit.record(
        AuditEvent::DepartmentChanged {
            department_id: department.id.clone(),
            organisation_id: department.organisation_id.clone(),
            actor: actor.id.clone(),
            before: before.and_then(snapshot),
            after: after.and_then(snapshot),
        },
        audit_context(headers),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_like_matches_the_sql_pattern() {
        let pattern = contains_pattern(Some("Saint_Jo")).unwrap().unwrap();
        assert!(like("clinique saint_joseph", &pattern));
        assert!(!like("clinique saintxjoseph", &pattern), "_ is literal");
        assert!(like("50% off", &contains_pattern(Some("50%")).unwrap().unwrap()));
    }

    #[test]
    fn identifiers_go_in_pairs() {
        assert_eq!(identifier(None, None).unwrap(), (None, None));
        assert_eq!(
            identifier(Some("FINESS"), Some(" 750000001 ")).unwrap(),
            (Some("FINESS".into()), Some("750000001".into()))
        );
        assert!(identifier(Some("FINESS"), None).unwrap_err().description.contains("go together"));
        assert!(identifier(None, Some("1")).is_err());
    }
}

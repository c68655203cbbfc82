//! The admin API's OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations
//! and the request and response types (`ToSchema`), served at `GET /api/admin/v1/openapi.json`.
//! Every route of [`super::routes`] must be listed in `paths(…)` below: the unit test here and the
//! black-box test `admin_api` fail otherwise.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{
    accounts, assignments, audit, clients, indicators, keys, me, organisations, persons, profiles, relationships,
    roles, settings,
};
use crate::habilitation::{professionals_api, profiles_api};

pub const PATH: &str = "/api/admin/v1/openapi.json";

/// Every error of the admin API (the OAuth error shape of all Habilis endpoints).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `invalid_request` (400), `invalid_token` (401), `insufficient_scope` or
    /// `access_denied` (403), `not_found` (404), `conflict` (409), `temporarily_unavailable` (503).
    pub error: String,
    /// What is wrong, for a person.
    pub error_description: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Habilis administration API",
        description = "Accounts, organisations, roles, habilitation profiles and practice data, clients and \
            initial access tokens, relationships, signing keys and the effective settings.\n\n\
            Bearer tokens are Habilis access tokens addressed to Habilis with scope `admin` (platform and \
            organisation administrators, administration back ends) or `audit` (read-only). Organisation \
            administrators act only inside their organisations; auditors only read. Lists answer \
            `{\"items\": [...], \"next_cursor\": ...}`: pass `next_cursor` back as `cursor` for the next page \
            (null on the last one). Errors answer `{\"error\", \"error_description\"}`."
    ),
    paths(
        document,
        me::show,
        roles::list,
        roles::grant,
        roles::revoke,
        organisations::list,
        organisations::create,
        organisations::show,
        organisations::update,
        organisations::remove,
        organisations::list_departments,
        organisations::create_department,
        organisations::remove_department,
        accounts::search,
        accounts::invite,
        accounts::show,
        accounts::disable,
        accounts::enable,
        accounts::add_membership,
        accounts::remove_membership,
        accounts::reset_factors,
        accounts::sessions,
        accounts::kill_sessions,
        accounts::unlock,
        assignments::list,
        assignments::assign,
        assignments::unassign,
        persons::export,
        persons::erase,
        profiles_api::list,
        profiles_api::show,
        profiles_api::put,
        profiles_api::remove,
        professionals_api::show,
        professionals_api::put,
        clients::list,
        clients::register,
        clients::show,
        clients::update,
        clients::remove,
        clients::rotate_secret,
        clients::list_tokens,
        clients::issue_token,
        clients::revoke_token,
        relationships::search,
        relationships::show,
        relationships::create,
        relationships::revoke,
        keys::list,
        keys::rotate,
        keys::retire,
        settings::show,
        audit::search,
        audit::export,
        indicators::show,
        profiles::preview,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "roles", description = "Administration roles: platform_admin, org_admin (one organisation), auditor"),
        (name = "organisations", description = "Organisations and their departments"),
        (name = "accounts", description = "Accounts: search, invitation, status, membership, factors, sessions, habilitation profile assignments, personal data export and erasure"),
        (name = "profiles", description = "Habilitation profiles (Cedar-validated) and their \"who would be allowed\" preview"),
        (name = "professionals", description = "Professionals' practice data"),
        (name = "clients", description = "Clients (platform-wide) and the initial access tokens of dynamic registration"),
        (name = "relationships", description = "Professional–patient relationships: search, create, revoke"),
        (name = "keys", description = "Signing keys: list (public facts only), rotate, retire"),
        (name = "settings", description = "The running configuration, secrets redacted"),
        (name = "audit", description = "The tamper-evident audit log: search, JSON-lines export and the dashboard's hourly security indicators (platform administrators and auditors)"),
        (name = "meta", description = "This document, and the caller's own powers"),
    )
)]
pub struct AdminApiDoc;

/// Declares the bearer scheme the document's `security` refers to.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[utoipa::path(
    get, path = PATH, tag = "meta", security(()),
    responses((status = 200, description = "This OpenAPI 3 document", body = serde_json::Value))
)]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(AdminApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every served route has its operation in the document, and the document has no other.
    #[test]
    fn document_matches_the_routes() {
        let value = serde_json::to_value(AdminApiDoc::openapi()).expect("the document serialises");
        let paths = value["paths"].as_object().expect("paths");
        let mut documented: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
                methods.into_iter().map(move |m| (m.to_uppercase(), path.clone()))
            })
            .filter(|(m, _)| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()))
            .collect();
        let mut served: Vec<(String, String)> =
            super::super::routes().iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
        documented.sort();
        served.sort();
        assert_eq!(served, documented);
    }

    #[test]
    fn document_declares_version_security_and_error_schema() {
        let value = serde_json::to_value(AdminApiDoc::openapi()).expect("the document serialises");
        assert!(value["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", value["openapi"]);
        assert_eq!(value["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(value["components"]["schemas"]["ErrorBody"].is_object());
        assert!(value["components"]["schemas"]["AccountPage"].is_object(), "bodies' schemas are collected");
    }
}

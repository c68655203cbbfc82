//! `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3, RFC 8414). The
//! document is built once at start from what is enabled — the grant registry, the signing keys,
//! the ladder levels a login method can reach — and served from memory with an ETag.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::clients::{ASSERTION_SIGNING_ALGS, AcrLevel};
use crate::config::Config;
use crate::oidc::{authorize, introspect, jwks, logout, par, registration, revoke, token, userinfo};

pub const PATH: &str = "/.well-known/openid-configuration";

/// Claims Habilis can put in ID tokens or userinfo responses.
pub const CLAIMS_SUPPORTED: &[&str] = &[
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "sid",
    "azp",
    "at_hash",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "locale",
    "updated_at",
    "email",
    "email_verified",
    // Pro Santé Connect–compatible claims (scope `scope_all`).
    "SubjectNameID",
    "SubjectRole",
    "SubjectRefPro",
    "SubjectOrganization",
    "SubjectOrganizationID",
    "otherIds",
    "Palier_Authentification",
    "authorization_details",
];

/// Client authentication methods of the back-channel endpoints.
pub const AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "private_key_jwt", "none"];

/// The serialised discovery document and its ETag.
pub struct DiscoveryDocument {
    pub body: Bytes,
    pub etag: String,
}

impl DiscoveryDocument {
    /// `mtls_base`: the base URL of the card listener, when it runs (RFC 8705 endpoint aliases and
    /// certificate client authentication).
    pub fn build(
        config: &Config,
        signing_algs: &[&str],
        grant_types: &[&str],
        mtls_base: Option<&str>,
    ) -> DiscoveryDocument {
        let issuer = config.issuer_string();
        let endpoint = |path: &str| json!(format!("{issuer}{path}"));
        let achievable: Vec<&str> = [AcrLevel::Eidas1, AcrLevel::Eidas2, AcrLevel::Eidas3]
            .into_iter()
            .filter(|l| crate::authn::journey::Levels::of(config).achievable(*l))
            .map(AcrLevel::as_str)
            .collect();
        let mut doc = Map::new();
        doc.insert("issuer".into(), json!(issuer));
        doc.insert("authorization_endpoint".into(), endpoint(authorize::PATH));
        doc.insert("token_endpoint".into(), endpoint(token::PATH));
        doc.insert("userinfo_endpoint".into(), endpoint(userinfo::PATH));
        doc.insert("jwks_uri".into(), endpoint(jwks::PATH));
        doc.insert("pushed_authorization_request_endpoint".into(), endpoint(par::PATH));
        doc.insert(
            "require_pushed_authorization_requests".into(),
            json!(config.oidc.require_pushed_authorization_requests),
        );
        doc.insert("introspection_endpoint".into(), endpoint(introspect::PATH));
        doc.insert("revocation_endpoint".into(), endpoint(revoke::PATH));
        doc.insert("end_session_endpoint".into(), endpoint(logout::PATH));
        if config.registration.enabled {
            // RFC 8414 §2 / OIDC Discovery §3: registration needs an initial access token.
            doc.insert("registration_endpoint".into(), endpoint(registration::PATH));
        }
        doc.insert("scopes_supported".into(), json!(authorize::SUPPORTED_SCOPES));
        doc.insert("response_types_supported".into(), json!(["code"]));
        doc.insert("response_modes_supported".into(), json!(["query", "form_post"]));
        doc.insert("grant_types_supported".into(), json!(grant_types));
        doc.insert("code_challenge_methods_supported".into(), json!(["S256"]));
        doc.insert("subject_types_supported".into(), json!(["public", "pairwise"]));
        doc.insert("id_token_signing_alg_values_supported".into(), json!(signing_algs));
        doc.insert("userinfo_signing_alg_values_supported".into(), json!(signing_algs));
        for name in ["token_endpoint", "introspection_endpoint", "revocation_endpoint"] {
            let mut methods: Vec<&str> = if name == "token_endpoint" {
                AUTH_METHODS.to_vec()
            } else {
                AUTH_METHODS.iter().copied().filter(|m| *m != "none" || name == "revocation_endpoint").collect()
            };
            if mtls_base.is_some() {
                methods.extend(["tls_client_auth", "self_signed_tls_client_auth"]);
            }
            doc.insert(format!("{name}_auth_methods_supported"), json!(methods));
            doc.insert(format!("{name}_auth_signing_alg_values_supported"), json!(ASSERTION_SIGNING_ALGS));
        }
        if let Some(base) = mtls_base {
            // RFC 8705 §5: where a client presents its certificate; tokens it gets are bound to it.
            let alias = |path: &str| json!(format!("{base}{path}"));
            doc.insert(
                "mtls_endpoint_aliases".into(),
                json!({
                    "token_endpoint": alias(token::PATH),
                    "pushed_authorization_request_endpoint": alias(par::PATH),
                    "userinfo_endpoint": alias(userinfo::PATH),
                    "introspection_endpoint": alias(introspect::PATH),
                    "revocation_endpoint": alias(revoke::PATH),
                }),
            );
            doc.insert("tls_client_certificate_bound_access_tokens".into(), Value::Bool(true));
        }
        if !achievable.is_empty() {
            doc.insert("acr_values_supported".into(), json!(achievable));
        }
        doc.insert("claims_supported".into(), json!(CLAIMS_SUPPORTED));
        doc.insert("claim_types_supported".into(), json!(["normal"]));
        doc.insert("claims_parameter_supported".into(), Value::Bool(true));
        doc.insert("request_parameter_supported".into(), Value::Bool(false));
        doc.insert("request_uri_parameter_supported".into(), Value::Bool(false));
        doc.insert("authorization_response_iss_parameter_supported".into(), Value::Bool(true));
        doc.insert("backchannel_logout_supported".into(), Value::Bool(true));
        doc.insert("backchannel_logout_session_supported".into(), Value::Bool(true));
        doc.insert("frontchannel_logout_supported".into(), Value::Bool(false));
        doc.insert("ui_locales_supported".into(), json!(["fr", "en"]));
        // RFC 9396 §10 and the AuthZEN-style decision endpoint (same policies as tokens).
        doc.insert(
            "authorization_details_types_supported".into(),
            json!([crate::habilitation::rar::TYPE_PATIENT_ACCESS]),
        );
        doc.insert("access_evaluation_endpoint".into(), endpoint(crate::habilitation::decision::EVALUATION_PATH));
        doc.insert("access_evaluations_endpoint".into(), endpoint(crate::habilitation::decision::EVALUATIONS_PATH));
        let body = Bytes::from(serde_json::to_vec(&Value::Object(doc)).unwrap_or_default());
        let etag = crate::web::etag_of(&body);
        DiscoveryDocument { body, etag }
    }
}

pub async fn discovery(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let doc = &state.discovery;
    crate::web::cached_json(&headers, doc.body.clone(), &doc.etag, 3600)
}

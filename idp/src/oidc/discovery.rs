//! `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4). The document is built
//! once at start from the enabled features and served from memory with an ETag.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::config::Config;

pub const PATH: &str = "/.well-known/openid-configuration";

/// The serialised discovery document and its ETag.
pub struct DiscoveryDocument {
    pub body: Bytes,
    pub etag: String,
}

impl DiscoveryDocument {
    pub fn build(config: &Config, signing_algs: &[&str]) -> DiscoveryDocument {
        let issuer = config.issuer_string();
        let mut doc = Map::new();
        doc.insert("issuer".into(), json!(issuer));
        doc.insert("jwks_uri".into(), json!(format!("{issuer}{}", super::jwks::PATH)));
        doc.insert("subject_types_supported".into(), json!(["public"]));
        doc.insert("id_token_signing_alg_values_supported".into(), json!(signing_algs));
        doc.insert("claims_parameter_supported".into(), Value::Bool(false));
        doc.insert("request_parameter_supported".into(), Value::Bool(false));
        doc.insert("request_uri_parameter_supported".into(), Value::Bool(false));
        doc.insert("ui_locales_supported".into(), json!(["fr", "en"]));
        let body = Bytes::from(serde_json::to_vec(&Value::Object(doc)).unwrap_or_default());
        let etag = crate::web::etag_of(&body);
        DiscoveryDocument { body, etag }
    }
}

pub async fn discovery(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let doc = &state.discovery;
    crate::web::cached_json(&headers, doc.body.clone(), &doc.etag, 3600)
}

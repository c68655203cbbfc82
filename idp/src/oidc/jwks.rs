//! `GET /jwks`: the published signing keys, served from memory (a pointer copy) with an ETag.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::app::AppState;

pub const PATH: &str = "/jwks";

pub async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (body, etag) = state.keys.jwks();
    crate::web::cached_json(&headers, body, &etag, state.config.keys.jwks_max_age.as_secs())
}

//! Pushed authorization requests (RFC 9126): the client sends its authorization request over an
//! authenticated back channel and gets a single-use, short-lived `request_uri` to put in the
//! browser redirect. The request is validated here exactly as at `/authorize`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::app::AppState;
use crate::cps::presented::MtlsCertificate;
use crate::error::OAuthError;
use crate::oidc::authorize::{Failure, PAR_URN_PREFIX, validate};
use crate::oidc::token::{authenticate_client, form_params, no_store};

pub const PATH: &str = "/par";

pub async fn push(
    State(state): State<AppState>,
    certificate: MtlsCertificate,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = crate::unix_now();
    match handle(&state, &headers, &certificate, &body, now).await {
        Ok((request_uri, expires_in)) => no_store(
            (StatusCode::CREATED, axum::Json(json!({ "request_uri": request_uri, "expires_in": expires_in })))
                .into_response(),
        ),
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    certificate: &MtlsCertificate,
    body: &[u8],
    now: i64,
) -> Result<(String, u64), OAuthError> {
    let params = form_params(headers, body)?;
    let client = authenticate_client(state, headers, certificate, &params, PATH, now).await?;
    if params.contains("request_uri") {
        return Err(OAuthError::invalid_request("request_uri must not be pushed"));
    }
    // The authenticated client is the client of the request, whether or not it repeated client_id.
    let mut params = params;
    if !params.contains("client_id") {
        params.insert("client_id", client.client.client_id().to_string());
    }
    let request = validate(state, &params, Some(&client.client), now).await.map_err(|failure| match failure {
        Failure::Page(error) | Failure::Redirect { error, .. } => error,
    })?;
    // Pushed from the client's back end: one address for all its users, so only the client's
    // share and the shared budget apply.
    let work = crate::oidc::admission::Work::PushedRequest;
    crate::oidc::admission::admit(state, work, None, Some(&request.client_id)).await?;
    let id = crate::cli::random_token();
    let ttl = state.config.oidc.par_lifetime;
    let bytes = serde_json::to_vec(&request).map_err(|_| OAuthError::server_error())?;
    state.ephemeral.put(&format!("par:{id}"), &bytes, ttl).await?;
    Ok((format!("{PAR_URN_PREFIX}{id}"), ttl.as_secs()))
}

//! The registration endpoints, served when `registration.enabled` (the default):
//! `POST /register` (RFC 7591 §3, with an initial access token as Bearer) and
//! `GET | PUT | DELETE /register/{client_id}` (RFC 7592, with the client's registration access
//! token). Each request goes through the same steps: address lockout → bearer token → the domain
//! operation (`clients::registration`) → RFC 7591/7592 response. Refused tokens count against the
//! client address, which is locked out after `registration.max_failures_per_address`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::app::AppState;
use crate::audit::AuditContext;
use crate::authn::throttle::{Throttle, ThrottleError, ThrottlePolicy};
use crate::clients::MetadataErrorCode;
use crate::clients::registration::{
    DynamicRegistration, RegisteredClient, RegistrationError, RegistrationPolicy, client_information,
};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::token::no_store;
use crate::oidc::userinfo::bearer_token;

pub const PATH: &str = "/register";
/// RFC 7592 client configuration endpoint; `registration_client_uri` points here.
pub const ITEM_PATH: &str = "/register/{client_id}";

/// `POST /register`: registers a client; 201 with its client information (RFC 7591 §3.2.1).
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let request = Request { state: &state, peer, method: &method, headers: &headers, uri: &uri };
    request
        .run(async |service, token| {
            let document = json_body(&body)?;
            let registered = service.register(&token, document, crate::unix_now()).await?;
            Ok(request.client_response(StatusCode::CREATED, registered))
        })
        .await
}

/// `GET /register/{client_id}`: the client's current registration (RFC 7592 §2.1).
pub async fn read(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(client_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let request = Request { state: &state, peer, method: &method, headers: &headers, uri: &uri };
    request
        .run(async |service, token| {
            let registered = service.read(&client_id, &token).await?;
            Ok(request.client_response(StatusCode::OK, registered))
        })
        .await
}

/// `PUT /register/{client_id}`: replaces the client's metadata and rotates its registration
/// access token (RFC 7592 §2.2).
pub async fn update(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(client_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let request = Request { state: &state, peer, method: &method, headers: &headers, uri: &uri };
    request
        .run(async |service, token| {
            let document = json_body(&body)?;
            let registered = service.update(&client_id, &token, document, crate::unix_now()).await?;
            Ok(request.client_response(StatusCode::OK, registered))
        })
        .await
}

/// `DELETE /register/{client_id}`: deletes the client, its grants and consents; 204
/// (RFC 7592 §2.3).
pub async fn delete(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(client_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let request = Request { state: &state, peer, method: &method, headers: &headers, uri: &uri };
    request
        .run(async |service, token| {
            service.delete(&client_id, &token).await?;
            Ok(no_store(StatusCode::NO_CONTENT.into_response()))
        })
        .await
}

/// One request to a registration endpoint.
struct Request<'a> {
    state: &'a AppState,
    peer: SocketAddr,
    method: &'a Method,
    headers: &'a HeaderMap,
    uri: &'a Uri,
}

impl Request<'_> {
    /// The steps every registration request takes around its operation `op`, which gets the
    /// domain service and the presented bearer token.
    async fn run<F>(&self, op: F) -> Response
    where
        F: AsyncFnOnce(DynamicRegistration<'_>, String) -> Result<Response, RegistrationError>,
    {
        let state = self.state;
        let now = crate::unix_now();
        let scope = format!("registration-ip:{}", self.peer.ip());
        match throttle(state).check(state.ephemeral.as_ref(), &scope, now).await {
            Ok(()) => {}
            Err(ThrottleError::Locked { .. }) => {
                return locked_out();
            }
            Err(ThrottleError::Storage(e)) => {
                // Fail closed: without the counter, token guessing could not be limited.
                tracing::error!(error = %e, "registration: the failure counter is unavailable");
                return OAuthError::new(OAuthErrorCode::TemporarilyUnavailable, "try again shortly").into_response();
            }
        }
        let token = match bearer_token(self.method, self.headers, self.uri, &[]) {
            Ok(token) => token,
            Err(e) => return e.into_response(),
        };
        let mtls = state.card.as_ref().is_some_and(|card| card.tls.is_some());
        let service = DynamicRegistration {
            registry: &state.clients,
            store: state.store.as_ref(),
            audit: &state.audit,
            context: AuditContext::from_request(self.headers, Some(self.peer)),
            policy: RegistrationPolicy::from_config(&state.config, mtls),
        };
        match op(service, token).await {
            Ok(response) => response,
            Err(error) => {
                if matches!(error, RegistrationError::InvalidToken(_))
                    && let Err(e) = throttle(state).record_failure(state.ephemeral.as_ref(), &scope, now).await
                {
                    tracing::error!(error = %e, "registration: could not count a refused token");
                }
                oauth_error(error).into_response()
            }
        }
    }

    /// RFC 7591 §3.2.1 / RFC 7592 §3: the client information, the secret generated by this
    /// operation (if any), the registration access token and the client configuration URI.
    fn client_response(&self, status: StatusCode, registered: RegisteredClient) -> Response {
        let client_id = registered.client.client_id();
        let mut info = client_information(&registered.client, registered.client_id_issued_at);
        if let Some(secret) = &registered.client_secret {
            info.insert("client_secret".into(), Value::String(secret.to_string()));
        }
        info.insert(
            "registration_access_token".into(),
            Value::String(registered.registration_access_token.to_string()),
        );
        info.insert(
            "registration_client_uri".into(),
            Value::String(format!("{}{PATH}/{client_id}", self.state.issuer_string())),
        );
        no_store((status, axum::Json(Value::Object(info))).into_response())
    }
}

fn throttle(state: &AppState) -> Throttle {
    let r = &state.config.registration;
    Throttle::new(ThrottlePolicy { max_failures: r.max_failures_per_address, lockout: r.lockout, window: r.lockout })
}

fn locked_out() -> Response {
    let mut response = OAuthError::new(
        OAuthErrorCode::TemporarilyUnavailable,
        "too many refused tokens from this address; try again later",
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    response
}

/// The request body: RFC 7591 client metadata, a JSON object.
fn json_body(body: &[u8]) -> Result<Value, RegistrationError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(crate::clients::ClientMetadataError::metadata("the request body must be a JSON object").into()),
        Err(e) => Err(crate::clients::ClientMetadataError::metadata(format!(
            "the request body is not valid JSON ({e}); send the client metadata as application/json"
        ))
        .into()),
    }
}

/// Domain failures in RFC 7591 §3.2.2 / RFC 7592 vocabulary.
fn oauth_error(error: RegistrationError) -> OAuthError {
    match error {
        RegistrationError::InvalidToken(description) => {
            OAuthError::new(OAuthErrorCode::InvalidToken, description).with_challenge("Bearer")
        }
        RegistrationError::Metadata(e) => {
            let code = match e.code {
                MetadataErrorCode::InvalidRedirectUri => OAuthErrorCode::InvalidRedirectUri,
                MetadataErrorCode::InvalidClientMetadata => OAuthErrorCode::InvalidClientMetadata,
            };
            OAuthError::new(code, e.description)
        }
        e @ RegistrationError::SoftwareStatement => {
            OAuthError::new(OAuthErrorCode::UnapprovedSoftwareStatement, e.to_string())
        }
        RegistrationError::InvalidRequest(description) | RegistrationError::Usage(description) => {
            OAuthError::invalid_request(description)
        }
        RegistrationError::Store(e) => e.into(),
        RegistrationError::Registry(e) => {
            tracing::error!(error = %e, "registration failed");
            OAuthError::server_error()
        }
    }
}

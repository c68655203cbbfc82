//! Protocol errors in OAuth vocabulary (RFC 6749 §5.2, OIDC Core §3.1.2.6, RFC 9126, RFC 6750).
//! Domain code returns these; only [`IntoResponse`] turns them into HTTP, at the edge.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The OAuth/OIDC error codes Habilis emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
    /// `temporarily_unavailable` with HTTP 429: this sender (address, client) sent too much; the
    /// service itself is fine (see `oidc::admission`).
    TooManyRequests,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    InvalidRequestUri,
    InvalidRequestObject,
    InvalidToken,
    InsufficientScope,
    UnmetAuthenticationRequirements,
    InvalidAuthorizationDetails,
    InsufficientUserAuthentication,
    UnsupportedTokenType,
    RequestNotSupported,
    RegistrationNotSupported,
    /// RFC 7591 §3.2.2.
    InvalidRedirectUri,
    InvalidClientMetadata,
    UnapprovedSoftwareStatement,
    InvalidTarget,
    NotFound,
    /// APIs: the change conflicts with the current state (HTTP 409).
    Conflict,
}

impl OAuthErrorCode {
    pub fn as_str(self) -> &'static str {
        use OAuthErrorCode::*;
        match self {
            InvalidRequest => "invalid_request",
            InvalidClient => "invalid_client",
            InvalidGrant => "invalid_grant",
            UnauthorizedClient => "unauthorized_client",
            UnsupportedGrantType => "unsupported_grant_type",
            UnsupportedResponseType => "unsupported_response_type",
            InvalidScope => "invalid_scope",
            AccessDenied => "access_denied",
            ServerError => "server_error",
            TemporarilyUnavailable | TooManyRequests => "temporarily_unavailable",
            LoginRequired => "login_required",
            ConsentRequired => "consent_required",
            InteractionRequired => "interaction_required",
            InvalidRequestUri => "invalid_request_uri",
            InvalidRequestObject => "invalid_request_object",
            InvalidToken => "invalid_token",
            InsufficientScope => "insufficient_scope",
            UnmetAuthenticationRequirements => "unmet_authentication_requirements",
            InvalidAuthorizationDetails => "invalid_authorization_details",
            InsufficientUserAuthentication => "insufficient_user_authentication",
            UnsupportedTokenType => "unsupported_token_type",
            RequestNotSupported => "request_not_supported",
            RegistrationNotSupported => "registration_not_supported",
            InvalidRedirectUri => "invalid_redirect_uri",
            InvalidClientMetadata => "invalid_client_metadata",
            UnapprovedSoftwareStatement => "unapproved_software_statement",
            InvalidTarget => "invalid_target",
            NotFound => "not_found",
            Conflict => "conflict",
        }
    }

    /// The HTTP status used when the error is returned directly (not by redirect).
    pub fn status(self) -> StatusCode {
        use OAuthErrorCode::*;
        match self {
            InvalidClient | InvalidToken => StatusCode::UNAUTHORIZED,
            InsufficientScope | AccessDenied => StatusCode::FORBIDDEN,
            ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            NotFound => StatusCode::NOT_FOUND,
            Conflict => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error to show a client: code, human description, and the HTTP status it maps to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: Cow<'static, str>,
    /// For 401 responses: the `WWW-Authenticate` challenge scheme (`Basic` or `Bearer`).
    pub challenge: Option<&'static str>,
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        OAuthError { code, description: description.into(), challenge: None }
    }
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }
    pub fn server_error() -> Self {
        Self::new(OAuthErrorCode::ServerError, "an internal error occurred; it has been logged with the request id")
    }
    pub fn with_challenge(mut self, scheme: &'static str) -> Self {
        self.challenge = Some(scheme);
        self
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        crate::telemetry::count_storage_error("database");
        OAuthError::new(OAuthErrorCode::TemporarilyUnavailable, "the service is temporarily unavailable; retry shortly")
    }
}

impl From<crate::ephemeral::EphemeralError> for OAuthError {
    fn from(e: crate::ephemeral::EphemeralError) -> Self {
        tracing::error!(error = %e, "ephemeral store failure");
        crate::telemetry::count_storage_error("ephemeral");
        OAuthError::new(OAuthErrorCode::TemporarilyUnavailable, "the service is temporarily unavailable; retry shortly")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = json!({ "error": self.code.as_str(), "error_description": self.description });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // RFC 6750 §3: 401s carry a challenge, and so does a 403 insufficient_scope.
        if status == StatusCode::UNAUTHORIZED || self.code == OAuthErrorCode::InsufficientScope {
            let scheme = self.challenge.unwrap_or("Bearer");
            let value = format!("{scheme} realm=\"habilis\", error=\"{}\"", self.code.as_str());
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

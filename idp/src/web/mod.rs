//! HTTP concerns shared by every route: security headers, conditional GETs for cached documents,
//! pages and their strings.

pub mod i18n;
pub mod pages;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tower_http::set_header::SetResponseHeaderLayer;

/// The default security headers, set on every response unless a handler set its own (pages relax
/// the CSP to load their own stylesheet; APIs keep the strictest one).
pub fn security_headers(https: bool) -> Vec<SetResponseHeaderLayer<HeaderValue>> {
    let mut layers = vec![
        SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        ),
        SetResponseHeaderLayer::if_not_present(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    if https {
        layers.push(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        ));
    }
    layers
}

/// A JSON document served from memory with an ETag, answering `If-None-Match` with 304.
/// Discovery and the JWKS are public and cacheable; cross-origin reads are allowed so that
/// browser-based relying parties can fetch them.
pub fn cached_json(request_headers: &HeaderMap, body: Bytes, etag: &str, max_age_secs: u64) -> Response {
    let cache_control = format!("public, max-age={max_age_secs}");
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|candidate| candidate.trim() == etag || candidate.trim() == "*"));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cache_control) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// Whether the request body is declared as a form (`application/x-www-form-urlencoded`).
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// A readable error page for a browser (the request cannot go back to the client). The error is
/// logged; the page says what to do next and shows the error code.
pub fn pages_error(
    state: &crate::app::AppState,
    headers: &HeaderMap,
    client_name: Option<&str>,
    error: crate::error::OAuthError,
) -> Response {
    pages_error_in(state, i18n::Lang::negotiate(None, headers), client_name, error)
}

/// [`pages_error`] in a known language (e.g. the `ui_locales` of the login in progress).
pub fn pages_error_in(
    state: &crate::app::AppState,
    lang: i18n::Lang,
    client_name: Option<&str>,
    error: crate::error::OAuthError,
) -> Response {
    tracing::info!(error = error.code.as_str(), description = %error.description, "error page shown");
    let status = match error.code.status() {
        StatusCode::UNAUTHORIZED => StatusCode::BAD_REQUEST,
        other => other,
    };
    state.pages.error_page(status, lang, &error.description, error.code.as_str(), client_name)
}

/// A strong ETag for a body: the first 16 hex digits of its SHA-256.
pub fn etag_of(body: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    format!("\"{}\"", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_gives_304() {
        let body = Bytes::from_static(b"{}");
        let etag = etag_of(&body);
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&format!("\"other\", {etag}")).unwrap());
        assert_eq!(cached_json(&headers, body.clone(), &etag, 60).status(), StatusCode::NOT_MODIFIED);
        let fresh = cached_json(&HeaderMap::new(), body, &etag, 60);
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(fresh.headers()[header::CACHE_CONTROL], "public, max-age=60");
        assert_eq!(fresh.headers()[header::ETAG], etag.as_str());
    }
}

//! The admin REST API of Habilis (`/api/admin/v1`), called with the logged-in person's access
//! token. The console uses nothing else of Habilis.

use reqwest::Method;
use serde_json::Value;

/// Where the admin API lives under the issuer.
pub const BASE: &str = "/api/admin/v1";

/// An answer of the API other than success: its status and its JSON error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// 0 when Habilis could not be reached.
    pub status: u16,
    pub code: String,
    pub description: String,
}

impl ApiError {
    /// The token is no longer accepted: the person must log in again.
    pub fn needs_login(&self) -> bool {
        self.status == 401
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(http: reqwest::Client, issuer: &url::Url) -> Api {
        Api { http, base: format!("{}{BASE}", issuer.as_str().trim_end_matches('/')) }
    }

    /// `GET path?query` (the query pairs with an empty value are left out).
    pub async fn get(&self, token: &str, path: &str, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        let pairs: Vec<(&str, &str)> = query.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
        self.call(token, Method::GET, path, &pairs, None).await
    }

    pub async fn send(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Result<Value, ApiError> {
        self.call(token, method, path, &[], body).await
    }

    /// `GET path?query` of an endpoint that answers something other than JSON (the audit
    /// export): its body and headers, or the API's error.
    pub async fn get_raw(
        &self,
        token: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(reqwest::header::HeaderMap, axum::body::Bytes), ApiError> {
        let pairs: Vec<(&str, &str)> = query.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
        let response = self.request(token, Method::GET, path, &pairs, None).send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(error_of(status, &body));
        }
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(unreachable)?;
        Ok((headers, body))
    }

    fn request(
        &self,
        token: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
    }

    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let response = self.request(token, method, path, query, body).send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(error_of(status, &body))
    }
}

fn unreachable(e: reqwest::Error) -> ApiError {
    tracing::warn!(error = %e, "the admin API cannot be reached");
    ApiError { status: 0, code: "unreachable".into(), description: e.to_string() }
}

/// The API's JSON error (`{"error", "error_description"}`).
fn error_of(status: u16, body: &Value) -> ApiError {
    ApiError {
        status,
        code: body["error"].as_str().unwrap_or("error").to_string(),
        description: body["error_description"].as_str().unwrap_or("").to_string(),
    }
}

/// A path segment, percent-encoded (ids come from the API, but a URL is no place for trust).
pub fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

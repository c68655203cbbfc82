//! `habilis-admin`: the Habilis administration console.
//!
//! Server-rendered pages (minijinja, templates embedded, no script), in French and English. The
//! console is an ordinary OpenID Connect client of Habilis, built on the `openidconnect` crate:
//! authorization code + PKCE + nonce, scopes `openid profile admin audit`, a login at `eidas2` or
//! stronger asked for (`acr_values`) and checked in the ID token. It then calls only the admin
//! REST API, with the person's access token kept server-side in a sealed `HttpOnly` cookie
//! ([`session`]); every form carries the session's CSRF token.
//!
//! [`router`] serves it under any prefix: `habilis serve` mounts it at `/admin`, and the
//! `habilis-admin` binary runs it as its own process.

pub mod api;
pub mod i18n;
mod pages;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use openidconnect::core::CoreProviderMetadata;

/// How the console reaches Habilis and where it is served.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    /// The issuer of Habilis (discovery, tokens, the admin API).
    pub issuer: url::Url,
    /// Where the console is served, without trailing slash (e.g. `https://idp.example/admin`):
    /// links and the redirect URI `<public_url>/callback` are made from it.
    pub public_url: url::Url,
    pub client_id: String,
    pub client_secret: String,
    /// The login level asked for and required (`eidas2` by default).
    pub acr: String,
}

impl ConsoleConfig {
    /// The console's path prefix (`/admin`, or empty when served at the root).
    pub fn prefix(&self) -> String {
        self.public_url.path().trim_end_matches('/').to_string()
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/callback", self.public_url.as_str().trim_end_matches('/'))
    }
}

/// Levels of the assurance ladder, in order.
pub const LEVELS: &[&str] = &["eidas1", "eidas2", "eidas3"];

/// Whether `reached` is at least `required` on the ladder.
pub fn acr_satisfies(reached: &str, required: &str) -> bool {
    let rank = |l: &str| LEVELS.iter().position(|x| *x == l);
    matches!((rank(reached), rank(required)), (Some(r), Some(q)) if r >= q)
}

/// The console's state, shared by its handlers.
pub struct Console {
    pub config: ConsoleConfig,
    pub jar: session::CookieJar,
    pub api: api::Api,
    pub http: reqwest::Client,
    templates: minijinja::Environment<'static>,
    metadata: tokio::sync::OnceCell<CoreProviderMetadata>,
    csp: HeaderValue,
}

impl Console {
    pub fn new(config: ConsoleConfig) -> anyhow::Result<Arc<Console>> {
        anyhow::ensure!(LEVELS.contains(&config.acr.as_str()), "the console's acr must be eidas1, eidas2 or eidas3");
        anyhow::ensure!(!config.client_secret.is_empty(), "the console needs its client secret");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(15))
            .build()?;
        let secure = config.public_url.scheme() == "https";
        let issuer_origin = config.issuer.origin().ascii_serialization();
        // Forms post to the console; the logout form's redirect goes on to Habilis.
        let csp = HeaderValue::from_str(&format!(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {issuer_origin}; \
             frame-ancestors 'none'; base-uri 'none'"
        ))?;
        Ok(Arc::new(Console {
            jar: session::CookieJar::new(&config.client_secret, secure),
            api: api::Api::new(http.clone(), &config.issuer),
            http,
            templates: pages::templates()?,
            metadata: tokio::sync::OnceCell::new(),
            csp,
            config,
        }))
    }

    /// Habilis' discovery document, fetched at the first login (Habilis may start after the
    /// console, or be the process serving it) and kept.
    pub async fn metadata(&self) -> Result<CoreProviderMetadata, String> {
        self.metadata
            .get_or_try_init(|| async {
                let issuer = openidconnect::IssuerUrl::new(self.config.issuer.as_str().trim_end_matches('/').into())
                    .map_err(|e| e.to_string())?;
                CoreProviderMetadata::discover_async(issuer, &self.http).await.map_err(|e| {
                    tracing::warn!(error = %e, "Habilis discovery failed");
                    e.to_string()
                })
            })
            .await
            .cloned()
    }
}

/// The console's routes (relative to where it is mounted), with its security headers.
pub fn router(console: Arc<Console>) -> Router {
    use tower_http::set_header::SetResponseHeaderLayer;
    let csp = console.csp.clone();
    pages::routes()
        .layer(axum::middleware::from_fn_with_state(console.clone(), pages::return_after_login))
        .with_state(console)
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, csp))
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder() {
        assert!(acr_satisfies("eidas2", "eidas2"));
        assert!(acr_satisfies("eidas3", "eidas2"));
        assert!(!acr_satisfies("eidas1", "eidas2"));
        assert!(!acr_satisfies("", "eidas1"));
        assert!(!acr_satisfies("gold", "eidas1"));
    }

    #[test]
    fn prefix_and_redirect_uri() {
        let config = ConsoleConfig {
            issuer: url::Url::parse("https://idp.example").unwrap(),
            public_url: url::Url::parse("https://idp.example/admin").unwrap(),
            client_id: "habilis-admin".into(),
            client_secret: "s".into(),
            acr: "eidas2".into(),
        };
        assert_eq!(config.prefix(), "/admin");
        assert_eq!(config.redirect_uri(), "https://idp.example/admin/callback");
        let root = ConsoleConfig { public_url: url::Url::parse("http://127.0.0.1:8090/").unwrap(), ..config };
        assert_eq!(root.prefix(), "");
        assert_eq!(root.redirect_uri(), "http://127.0.0.1:8090/callback");
    }
}

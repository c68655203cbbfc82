//! Server-rendered pages: templates from the theme (embedded at build time, autoescaped because
//! their names end in `.html`), a page CSP that allows only the theme's own stylesheet, and the
//! stylesheet itself.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

use super::i18n::{Lang, Texts, texts};

macro_rules! theme_file {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../themes/default/", $name))
    };
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", theme_file!("templates/base.html")),
    ("login.html", theme_file!("templates/login.html")),
    ("consent.html", theme_file!("templates/consent.html")),
    ("second_factor.html", theme_file!("templates/second_factor.html")),
    ("set_password.html", theme_file!("templates/set_password.html")),
    ("forgot_password.html", theme_file!("templates/forgot_password.html")),
    ("totp_setup.html", theme_file!("templates/totp_setup.html")),
    ("recovery_codes.html", theme_file!("templates/recovery_codes.html")),
    ("error.html", theme_file!("templates/error.html")),
    ("form_post.html", theme_file!("templates/form_post.html")),
    ("logout.html", theme_file!("templates/logout.html")),
    ("message.html", theme_file!("templates/message.html")),
    ("card_refused.html", theme_file!("templates/card_refused.html")),
    ("card_required.html", theme_file!("templates/card_required.html")),
    ("passkeys.html", theme_file!("templates/passkeys.html")),
    ("keep_account.html", theme_file!("templates/keep_account.html")),
    ("terms.html", theme_file!("templates/terms.html")),
];

const STYLESHEET: &str = theme_file!("static/style.css");
const WEBAUTHN_SCRIPT: &str = theme_file!("static/webauthn.js");

/// The page CSP: nothing but our stylesheet, forms posting back to us only.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The theme's one script (WebAuthn); pages that include it get `script-src 'self'` and
/// `connect-src 'self'`, the others no script at all.
const SCRIPT_TAG: &str = "<script src=\"/static/webauthn.js\"";

/// The CSP of a rendered page: scripts only where the page loads the theme's script.
fn csp_of(html: &str, base: &str) -> String {
    if html.contains(SCRIPT_TAG) {
        base.replacen("default-src 'none';", "default-src 'none'; script-src 'self'; connect-src 'self';", 1)
    } else {
        base.to_string()
    }
}

pub struct Pages {
    env: Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

impl Pages {
    pub fn new() -> Pages {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are part of the binary; a syntax error is caught by the tests below.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "invalid template");
            }
        }
        Pages { env }
    }

    /// Renders `name` with `context` merged with the language and its strings (`lang`, `t`).
    pub fn render<C: Serialize>(&self, name: &str, lang: Lang, context: C) -> Result<String, minijinja::Error> {
        let template = self.env.get_template(name)?;
        template.render(minijinja::context! { lang => lang.code(), t => minijinja::value::Serde(texts(lang)), ..minijinja::Value::from(minijinja::value::Serde(&context)) })
    }

    /// A complete HTML response with the page security headers.
    pub fn page<C: Serialize>(&self, status: StatusCode, name: &str, lang: Lang, context: C) -> Response {
        match self.render(name, lang, context) {
            Ok(html) => {
                let csp = csp_of(&html, PAGE_CSP);
                with_page_headers((status, Html(html)).into_response(), &csp)
            }
            Err(e) => {
                tracing::error!(template = name, error = %e, "page rendering failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }

    /// A page shown on behalf of a client: its logo (when registered, https) is displayed and
    /// allowed by the page CSP, from its own origin only.
    pub fn client_page<C: Serialize>(
        &self,
        status: StatusCode,
        name: &str,
        lang: Lang,
        context: C,
        logo: Option<&url::Url>,
        redirect_uri: Option<&str>,
    ) -> Response {
        let logo = logo.filter(|u| {
            u.scheme() == "https" || u.host_str() == Some("127.0.0.1") || u.host_str() == Some("localhost")
        });
        let context = minijinja::context! { client_logo => logo.map(|u| u.to_string()), ..minijinja::Value::from(minijinja::value::Serde(&context)) };
        match self.render(name, lang, context) {
            Ok(html) => {
                let csp = csp_of(&html, &client_csp(logo, redirect_uri));
                with_page_headers((status, Html(html)).into_response(), &csp)
            }
            Err(e) => {
                tracing::error!(template = name, error = %e, "page rendering failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }

    /// The readable error page shown when an authorization request cannot be redirected back.
    pub fn error_page(
        &self,
        status: StatusCode,
        lang: Lang,
        description: &str,
        code: &str,
        client_name: Option<&str>,
    ) -> Response {
        let message = super::i18n::error_message(lang, code);
        // Descriptions written for people (they end with what to do) are shown as they are in
        // English pages; in French the translated message leads and the description is the detail.
        let (message, detail) = match lang {
            Lang::En => (description, None),
            Lang::Fr => (message, Some(description)),
        };
        self.page(
            status,
            "error.html",
            lang,
            minijinja::context! { message => message, detail => detail, code => code, client_name => client_name },
        )
    }

    pub fn texts(&self, lang: Lang) -> &'static Texts {
        texts(lang)
    }
}

/// The CSP of a page shown during a client's login: the client's logo origin may be loaded, and
/// forms may lead (through Habilis' redirects) to the client's redirect URI — CSP `form-action`
/// also governs the redirects that follow a form submission.
pub fn client_csp(logo: Option<&url::Url>, redirect_uri: Option<&str>) -> String {
    let mut csp = PAGE_CSP.to_string();
    if let Some(url) = logo {
        csp = csp
            .replace("img-src 'self' data:", &format!("img-src 'self' data: {}", url.origin().ascii_serialization()));
    }
    if let Some(origin) =
        redirect_uri.and_then(|u| url::Url::parse(u).ok()).map(|u| u.origin()).filter(|o| o.is_tuple())
    {
        csp = csp.replace("form-action 'self'", &format!("form-action 'self' {}", origin.ascii_serialization()));
    }
    csp
}

/// Pages must never be cached (they carry CSRF tokens and personal data) nor framed.
pub fn with_page_headers(mut response: Response, csp: &str) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The WebAuthn script of the login and key pages (same origin, so `script-src 'self'` allows it).
pub async fn webauthn_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        WEBAUTHN_SCRIPT,
    )
        .into_response()
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        STYLESHEET,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_pages_may_post_towards_the_redirect_uri_only() {
        let csp = client_csp(None, Some("https://app.example:8443/cb?x=1"));
        assert!(csp.contains("form-action 'self' https://app.example:8443;"), "{csp}");
        assert_eq!(client_csp(None, Some("com.example.app:/cb")), PAGE_CSP, "opaque origins add nothing");
        let logo = url::Url::parse("https://cdn.example/logo.png").unwrap();
        assert!(client_csp(Some(&logo), None).contains("img-src 'self' data: https://cdn.example;"));
    }

    #[test]
    fn every_template_compiles_and_escapes() {
        let pages = Pages::new();
        for (name, _) in TEMPLATES {
            assert!(pages.env.get_template(name).is_ok(), "{name} does not compile");
        }
        let html = pages
            .render(
                "login.html",
                Lang::En,
                minijinja::context! { interaction => "i", csrf => "c", login_hint => "<script>x</script>", error => "" },
            )
            .unwrap();
        assert!(html.contains("&lt;script&gt;x") && !html.contains("<script>x"), "values must be escaped");
        assert!(html.contains("autocomplete=\"username\"") && html.contains("autocomplete=\"current-password\""));
        assert!(html.contains("<label for=\"login\">"));
        let fr = pages
            .render("error.html", Lang::Fr, minijinja::context! { message => "m", code => "invalid_request" })
            .unwrap();
        assert!(fr.contains("lang=\"fr\"") && fr.contains("Connexion impossible"));
    }
}

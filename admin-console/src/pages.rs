//! The console's pages and forms. Every page needs a session (else: the login at Habilis); every
//! form checks the session's CSRF token; every failure is a page that says what went wrong.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::api::{ApiError, segment};
use crate::i18n::{LANG_COOKIE, Lang};
use crate::session::{PendingLogin, Session, random_token, same_token};
use crate::{Console, acr_satisfies};

mod dashboard;
mod oversight;

type St = State<Arc<Console>>;

/// What the console asks Habilis for (`openid` is added by the OIDC client).
const REQUESTED_SCOPES: &[&str] = &["openid", "profile", "admin", "audit"];

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/", get(dashboard::dashboard))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/logout", post(logout))
        .route("/logged-out", get(logged_out))
        .route("/accounts", get(accounts))
        .route("/accounts/invite", post(invite))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/{action}", post(set_status))
        .route("/accounts/{id}/profiles", post(assign_profile))
        .route("/accounts/{id}/profiles/remove", post(unassign_profile))
        .route("/organisations", get(organisations).post(create_organisation))
        .route("/roles", get(roles).post(grant_role))
        .route("/profiles", get(profiles))
        .route("/profiles/{name}", get(profile))
        .route("/clients", get(oversight::clients))
        .route("/clients/{id}", get(oversight::client))
        .route("/relationships", get(oversight::relationships))
        .route("/relationships/{id}/revoke", post(oversight::revoke_relationship))
        .route("/audit", get(oversight::audit))
        .route("/audit/export", get(oversight::audit_export))
        .route("/keys", get(oversight::keys))
        .route("/keys/rotate", post(oversight::rotate_key))
        .route("/lang/{code}", get(switch_lang))
        .route("/static/console.css", get(stylesheet))
        .fallback(not_found)
}

/// The embedded templates (autoescaped: their names end in `.html`).
pub fn templates() -> anyhow::Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    for (name, source) in [
        ("base.html", include_str!("../templates/base.html")),
        ("dashboard.html", include_str!("../templates/dashboard.html")),
        ("accounts.html", include_str!("../templates/accounts.html")),
        ("account.html", include_str!("../templates/account.html")),
        ("organisations.html", include_str!("../templates/organisations.html")),
        ("roles.html", include_str!("../templates/roles.html")),
        ("profiles.html", include_str!("../templates/profiles.html")),
        ("profile.html", include_str!("../templates/profile.html")),
        ("message.html", include_str!("../templates/message.html")),
        ("clients.html", include_str!("../templates/clients.html")),
        ("client.html", include_str!("../templates/client.html")),
        ("relationships.html", include_str!("../templates/relationships.html")),
        ("audit.html", include_str!("../templates/audit.html")),
        ("keys.html", include_str!("../templates/keys.html")),
    ] {
        env.add_template(name, source)?;
    }
    env.add_filter("datetime", oversight::datetime);
    Ok(env)
}

/// Why a request ends without its page.
enum Fail {
    /// No session, or Habilis no longer accepts its token: log in (again).
    Login,
    /// A page saying what went wrong (a text key, or the API's own words).
    Message(StatusCode, String),
}

impl Fail {
    fn text(status: StatusCode, lang: Lang, key: &str) -> Fail {
        Fail::Message(status, lang.texts().get(key).copied().unwrap_or(key).to_string())
    }

    fn api(lang: Lang, e: ApiError) -> Fail {
        if e.needs_login() {
            return Fail::Login;
        }
        if e.status == 0 {
            return Fail::text(StatusCode::BAD_GATEWAY, lang, "habilis_down");
        }
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let text = if e.description.is_empty() { e.code } else { format!("{} ({})", e.description, e.code) };
        Fail::Message(status, text)
    }
}

fn render(console: &Console, headers: &HeaderMap, session: Option<&Session>, name: &str, page: Value) -> Response {
    let lang = Lang::negotiate(headers);
    let mut context = json!({
        "t": lang.texts(),
        "lang": lang.code(),
        "prefix": console.config.prefix(),
        "user": session.map(|s| s.name.clone()),
        "acr": session.map(|s| s.acr.clone()),
        "csrf": session.map(|s| s.csrf.clone()),
        // What the role allows, to show only the links and buttons that can work (the API
        // still decides): platform administrators hold both scopes, organisation
        // administrators only `admin`, auditors only `audit`.
        "can_admin": session.is_some_and(|s| s.has_scope("admin")),
        "can_audit": session.is_some_and(|s| s.has_scope("audit")),
        // Platform-wide changes (organisations, roles, keys): `GET /me` said so at login.
        "is_platform": session.is_some_and(|s| s.platform),
    });
    if let (Some(target), Value::Object(extra)) = (context.as_object_mut(), page) {
        target.extend(extra);
    }
    let rendered = console.templates.get_template(name).and_then(|t| t.render(minijinja::value::Serde(&context)));
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, template = name, "a console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

fn fail(console: &Console, headers: &HeaderMap, session: Option<&Session>, failure: Fail) -> Response {
    match failure {
        Fail::Login => {
            // `return_after_login` adds where to come back to.
            let mut response = Redirect::to(&format!("{}/login", console.config.prefix())).into_response();
            response.headers_mut().append(header::SET_COOKIE, console.jar.clear_session());
            response.extensions_mut().insert(LoginNeeded);
            response
        }
        Fail::Message(status, message) => {
            let mut response = render(
                console,
                headers,
                session,
                "message.html",
                json!({ "error": message, "title_key": "error_title" }),
            );
            *response.status_mut() = status;
            response
        }
    }
}

/// Marks a response sending the person to the login (no session, or its token expired).
#[derive(Clone, Copy)]
struct LoginNeeded;

/// Middleware: a person sent to the login comes back, after it, to the page they were on — the
/// page asked for, or for a form post the page holding the form (the form must be sent again:
/// what it held is not kept across the login).
pub async fn return_after_login(State(console): St, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // Relative to where the console is mounted (`nest_service` strips the prefix).
    let asked = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let mut response = next.run(request).await;
    if response.extensions().get::<LoginNeeded>().is_none() {
        return response;
    }
    let back = if method == HttpMethod::GET { asked } else { page_of_form(&asked) };
    if let Some(back) = return_path(&back).filter(|b| b != "/") {
        let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", &back).finish();
        let location = format!("{}/login?{query}", console.config.prefix());
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    response
}

/// The page that holds the form a post went to.
fn page_of_form(action: &str) -> String {
    let path = action.split('?').next().unwrap_or("/");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["accounts", "invite"] => "/accounts".into(),
        ["accounts", id, _, ..] => format!("/accounts/{id}"),
        [first, ..] => format!("/{first}"),
        [] => "/".into(),
    }
}

/// `next` if it is a console page to come back to after the login: a path below the console
/// (never another site: `//host`, `/\host`, a scheme), not a login step, of reasonable length.
pub fn return_path(next: &str) -> Option<String> {
    if next.len() > 2000 || !next.starts_with('/') || next.starts_with("//") || next.contains('\\') {
        return None;
    }
    if next.chars().any(char::is_control) {
        return None;
    }
    // Resolved against a stand-in origin, it must stay on it.
    let base = url::Url::parse("http://console.invalid/").ok()?;
    let resolved = base.join(next).ok()?;
    if resolved.origin() != base.origin() {
        return None;
    }
    let path = resolved.path();
    // `/.//host` normalises to `//host`: a protocol-relative address once prefixed by nothing.
    if path.starts_with("//") {
        return None;
    }
    if ["/login", "/callback", "/logout", "/logged-out", "/static/"].iter().any(|p| path.starts_with(p)) {
        return None;
    }
    Some(match resolved.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    })
}

/// The session of the request, while its token is valid.
fn logged_in(console: &Console, headers: &HeaderMap) -> Result<Session, Fail> {
    let session = console.jar.session(headers).ok_or(Fail::Login)?;
    if session.expires_at <= now() + 5 {
        return Err(Fail::Login);
    }
    Ok(session)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A urlencoded form body (a malformed one just lacks fields).
fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The session of a form post, with its CSRF token checked.
fn form_session(console: &Console, headers: &HeaderMap, fields: &HashMap<String, String>) -> Result<Session, Fail> {
    let session = logged_in(console, headers)?;
    let sent = fields.get("csrf").map(String::as_str).unwrap_or("");
    if !same_token(sent, &session.csrf) {
        return Err(Fail::text(StatusCode::FORBIDDEN, Lang::negotiate(headers), "csrf"));
    }
    Ok(session)
}

fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> &'a str {
    fields.get(name).map(|v| v.trim()).unwrap_or("")
}

/// The confirmation shown after a form (`?done=`), if it is one the console knows.
fn done_text(lang: Lang, done: Option<&String>) -> Option<&'static str> {
    let key = match done.map(String::as_str)? {
        "invited" => "done_invited",
        "disabled" => "done_disabled",
        "enabled" => "done_enabled",
        "unlocked" => "done_unlocked",
        "organisation" => "done_organisation",
        "granted" => "done_granted",
        "assigned" => "done_assigned",
        "unassigned" => "done_unassigned",
        "revoked" => "done_revoked",
        "rotated" => "done_rotated",
        _ => return None,
    };
    lang.texts().get(key).copied()
}

fn see_other(console: &Console, path: &str) -> Response {
    Redirect::to(&format!("{}{path}", console.config.prefix())).into_response()
}

// ---------------------------------------------------------------------------------------------
// Login and logout (OpenID Connect)

async fn login(State(console): St, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let lang = Lang::negotiate(&headers);
    let metadata = match console.metadata().await {
        Ok(m) => m,
        Err(_) => return fail(&console, &headers, None, Fail::text(StatusCode::BAD_GATEWAY, lang, "habilis_down")),
    };
    let redirect = match RedirectUrl::new(console.config.redirect_uri()) {
        Ok(r) => r,
        Err(e) => {
            return fail(&console, &headers, None, Fail::Message(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
        }
    };
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(console.config.client_id.clone()),
        Some(ClientSecret::new(console.config.client_secret.clone())),
    )
    .set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scopes(REQUESTED_SCOPES.iter().filter(|s| **s != "openid").map(|s| Scope::new(s.to_string())))
        .add_auth_context_value(AuthenticationContextClass::new(console.config.acr.clone()))
        .add_extra_param("ui_locales", lang.code())
        .set_pkce_challenge(challenge)
        .url();
    let pending = PendingLogin {
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        created_at: now(),
        return_to: q.get("next").and_then(|n| return_path(n)),
    };
    let mut response = Redirect::to(url.as_str()).into_response();
    if let Some(cookie) = console.jar.set_pending(&pending) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn callback(State(console): St, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let lang = Lang::negotiate(&headers);
    match finish_login(&console, &headers, &q).await {
        Ok((session, return_to)) => {
            let mut response = see_other(&console, return_to.as_deref().unwrap_or("/"));
            if let Some(cookie) = console.jar.set_session(&session) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response.headers_mut().append(header::SET_COOKIE, console.jar.clear_pending());
            response
        }
        Err(message) => {
            tracing::info!(reason = %message, "console login refused");
            let mut response = render(
                &console,
                &headers,
                None,
                "message.html",
                json!({ "error": message, "title_key": "error_title", "login_link": true }),
            );
            *response.status_mut() = StatusCode::FORBIDDEN;
            response.headers_mut().append(header::SET_COOKIE, console.jar.clear_pending());
            let _ = lang;
            response
        }
    }
}

/// Checks the authorization response and redeems its code: the session and the page to show, or
/// why not.
async fn finish_login(
    console: &Console,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<(Session, Option<String>), String> {
    let lang = Lang::negotiate(headers);
    let texts = lang.texts();
    let pending = console.jar.pending(headers).ok_or("no login is under way in this browser (or it took too long)")?;
    if now() - pending.created_at > crate::session::LOGIN_LIFETIME {
        return Err("the login took too long; start again".into());
    }
    let state = q.get("state").map(String::as_str).unwrap_or("");
    if !same_token(state, &pending.state) {
        return Err("the answer does not belong to this browser's login (state)".into());
    }
    // RFC 9207: the answer comes from the expected issuer.
    if let Some(iss) = q.get("iss")
        && iss.trim_end_matches('/') != console.config.issuer.as_str().trim_end_matches('/')
    {
        return Err("the answer comes from another issuer".into());
    }
    if let Some(error) = q.get("error") {
        let description = q.get("error_description").map(String::as_str).unwrap_or("");
        return Err(format!("Habilis refused the login: {description} ({error})"));
    }
    let code = q.get("code").ok_or("the answer holds no authorization code")?;
    let metadata = console.metadata().await.map_err(|_| texts["habilis_down"].to_string())?;
    let redirect = RedirectUrl::new(console.config.redirect_uri()).map_err(|e| e.to_string())?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(console.config.client_id.clone()),
        Some(ClientSecret::new(console.config.client_secret.clone())),
    )
    .set_redirect_uri(redirect);
    let response = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .map_err(|e| e.to_string())?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
        .request_async(&console.http)
        .await
        .map_err(|e| format!("the code could not be redeemed: {e}"))?;
    let id_token = response.id_token().ok_or("Habilis sent no ID token")?;
    let claims = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce.clone()))
        .map_err(|e| format!("the ID token is not valid: {e}"))?;
    let acr = claims.auth_context_ref().map(|a| a.as_str().to_string()).unwrap_or_default();
    if !acr_satisfies(&acr, &console.config.acr) {
        return Err(format!(
            "the login reached {} where {} is required",
            if acr.is_empty() { "no level" } else { &acr },
            console.config.acr
        ));
    }
    let mut scopes: Vec<String> =
        response.scopes().map(|s| s.iter().map(|s| s.to_string()).collect()).unwrap_or_default();
    if !scopes.is_empty() && !scopes.iter().any(|s| s == "admin" || s == "audit") {
        return Err(texts["no_role"].to_string());
    }
    // No `scope` in the answer means every scope asked for was granted (RFC 6749, 5.1).
    if scopes.is_empty() {
        scopes = REQUESTED_SCOPES.iter().map(|s| s.to_string()).collect();
    }
    // Habilis puts the profile claims in userinfo, not in the ID token.
    let info: Option<openidconnect::core::CoreUserInfoClaims> =
        match client.user_info(response.access_token().clone(), Some(claims.subject().clone())) {
            Ok(request) => request.request_async(&console.http).await.ok(),
            Err(_) => None,
        };
    let given = info.as_ref().and_then(|i| i.given_name()).and_then(|n| n.get(None)).map(|n| n.as_str().to_string());
    let family = info.as_ref().and_then(|i| i.family_name()).and_then(|n| n.get(None)).map(|n| n.as_str().to_string());
    let name = match (given, family) {
        (Some(g), Some(f)) => format!("{g} {f}"),
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => claims.subject().as_str().to_string(),
    };
    // What this token may do, as the admin API's rules see it (the scopes do not tell whether it
    // manages platform-wide things).
    let access_token = response.access_token().secret().clone();
    let me = match console.api.get(&access_token, "/me", &[]).await {
        Ok(me) => me,
        Err(e) if e.status == 403 => return Err(texts["no_role"].to_string()),
        Err(e) if e.status == 0 => return Err(texts["habilis_down"].to_string()),
        Err(e) => return Err(format!("the admin API refused this login: {} ({})", e.description, e.code)),
    };
    let lifetime = response.expires_in().map_or(300, |d| d.as_secs() as i64);
    let session = Session {
        access_token,
        id_token: id_token.to_string(),
        expires_at: now() + lifetime,
        csrf: random_token(),
        name,
        acr,
        scopes,
        platform: me["platform_admin"].as_bool().unwrap_or(false),
    };
    Ok((session, pending.return_to.clone()))
}

async fn logout(State(console): St, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    // A logout without a valid session still ends what is left of it here.
    let session = form_session(&console, &headers, &fields).ok();
    let logged_out = format!("{}/logged-out", console.config.public_url.as_str().trim_end_matches('/'));
    let mut target = logged_out.clone();
    if let Some(session) = &session {
        let discovery =
            format!("{}/.well-known/openid-configuration", console.config.issuer.as_str().trim_end_matches('/'));
        let end_session = match console.http.get(discovery).send().await {
            Ok(r) => r.json::<Value>().await.ok().and_then(|d| d["end_session_endpoint"].as_str().map(str::to_string)),
            Err(_) => None,
        };
        if let Some(endpoint) = end_session.and_then(|e| url::Url::parse(&e).ok()) {
            let mut url = endpoint;
            url.query_pairs_mut()
                .append_pair("id_token_hint", &session.id_token)
                .append_pair("client_id", &console.config.client_id)
                .append_pair("post_logout_redirect_uri", &logged_out);
            target = url.to_string();
        }
    }
    let mut response = Redirect::to(&target).into_response();
    response.headers_mut().append(header::SET_COOKIE, console.jar.clear_session());
    response
}

async fn logged_out(State(console): St, headers: HeaderMap) -> Response {
    render(&console, &headers, None, "message.html", json!({ "info_key": "logged_out", "login_link": true }))
}

// ---------------------------------------------------------------------------------------------
// Pages

async fn accounts(State(console): St, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let token = session.access_token.as_str();
    let filter = [("q", get("q")), ("kind", get("kind")), ("status", get("status")), ("cursor", get("cursor"))];
    let mut query = filter.to_vec();
    query.push(("limit", "50"));
    let (found, organisations) = tokio::join!(
        console.api.get(token, "/accounts", &query),
        console.api.get(token, "/organisations", &[("limit", "200")]),
    );
    let found = match found {
        Ok(page) => page,
        Err(e) => return fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    };
    let next = found["next_cursor"].as_str().map(|cursor| {
        let pairs = filter.iter().filter(|(k, _)| *k != "cursor").map(|(k, v)| (*k, *v)).chain([("cursor", cursor)]);
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
    });
    let page = json!({
        "nav": "accounts",
        "items": found["items"],
        "next": next,
        "q": get("q"), "kind": get("kind"), "status": get("status"),
        "organisations": organisations.map(|o| o["items"].clone()).unwrap_or(json!([])),
        "done": done_text(lang, q.get("done")),
    });
    render(&console, &headers, Some(&session), "accounts.html", page)
}

async fn invite(State(console): St, headers: HeaderMap, body: Bytes) -> Response {
    let lang = Lang::negotiate(&headers);
    let fields = form(&body);
    let session = match form_session(&console, &headers, &fields) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let mut request = json!({ "kind": field(&fields, "kind"), "email": field(&fields, "email") });
    for name in ["id_nat", "given_name", "family_name", "organisation_id"] {
        let value = field(&fields, name);
        if !value.is_empty() {
            request[name] = json!(value);
        }
    }
    request["locale"] = json!(lang.code());
    match console.api.send(&session.access_token, Method::POST, "/accounts", Some(request)).await {
        Ok(_) => see_other(&console, "/accounts?done=invited"),
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

async fn set_status(
    State(console): St,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let lang = Lang::negotiate(&headers);
    let fields = form(&body);
    let session = match form_session(&console, &headers, &fields) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    // Where to go back to: the list for a status change, the account's page for an unlock.
    let back = match action.as_str() {
        "disable" => "/accounts?done=disabled".to_string(),
        "enable" => "/accounts?done=enabled".to_string(),
        "unlock" => format!("/accounts/{}?done=unlocked", segment(&id)),
        _ => return fail(&console, &headers, Some(&session), Fail::text(StatusCode::NOT_FOUND, lang, "not_found")),
    };
    let path = format!("/accounts/{}/{action}", segment(&id));
    match console.api.send(&session.access_token, Method::POST, &path, None).await {
        Ok(_) => see_other(&console, &back),
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

/// An account, with the habilitation profiles it holds and the form to assign one (in the
/// organisations where the API says the caller may).
async fn account(
    State(console): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let token = session.access_token.as_str();
    let path = format!("/accounts/{}", segment(&id));
    let profiles_path = format!("{path}/profiles");
    let (detail, assignments, organisations) = tokio::join!(
        console.api.get(token, &path, &[]),
        console.api.get(token, &profiles_path, &[]),
        console.api.get(token, "/organisations", &[("limit", "200")]),
    );
    let (detail, assignments) = match (detail, assignments) {
        (Ok(d), Ok(a)) => (d, a),
        (Err(e), _) | (_, Err(e)) => return fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    };
    // Organisations by name where the caller may list them, else by id.
    let names: HashMap<String, String> = organisations
        .ok()
        .and_then(|page| page["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|o| Some((o["id"].as_str()?.to_string(), o["name"].as_str()?.to_string())))
        .collect();
    let texts = lang.texts();
    let name_of = |id: Option<&str>| match id {
        None => texts.get("platform_wide").copied().unwrap_or("").to_string(),
        Some(id) => names.get(id).cloned().unwrap_or_else(|| id.to_string()),
    };
    let memberships: Vec<String> = detail["organisations"]
        .as_array()
        .map(|m| m.iter().map(|m| name_of(Some(m["organisation_id"].as_str().unwrap_or("")))).collect())
        .unwrap_or_default();
    let assigned: Vec<Value> = assignments["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|a| {
                    let mut a = a.clone();
                    a["scope"] = json!(name_of(a["organisation_id"].as_str()));
                    a
                })
                .collect()
        })
        .unwrap_or_default();
    let assignable = &assignments["assignable"];
    let mut scopes: Vec<Value> = assignable["organisations"]
        .as_array()
        .map(|o| o.iter().filter_map(|o| o.as_str()).map(|o| json!({"value": o, "label": name_of(Some(o))})).collect())
        .unwrap_or_default();
    if assignable["platform_wide"] == true {
        scopes.push(json!({"value": "", "label": name_of(None)}));
    }
    let page = json!({
        "nav": "accounts",
        "account": detail["account"],
        "locked_until": detail["locked_until"],
        "memberships": memberships,
        "assigned": assigned,
        "profiles": assignable["profiles"],
        "scopes": scopes,
        "done": done_text(lang, q.get("done")),
    });
    render(&console, &headers, Some(&session), "account.html", page)
}

async fn assign_profile(State(console): St, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let lang = Lang::negotiate(&headers);
    let fields = form(&body);
    let session = match form_session(&console, &headers, &fields) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let profile = field(&fields, "profile");
    if profile.is_empty() {
        return fail(&console, &headers, Some(&session), Fail::text(StatusCode::BAD_REQUEST, lang, "choose_profile"));
    }
    let organisation = field(&fields, "organisation_id");
    let request = if organisation.is_empty() { json!({}) } else { json!({ "organisation_id": organisation }) };
    let path = format!("/accounts/{}/profiles/{}", segment(&id), segment(profile));
    match console.api.send(&session.access_token, Method::PUT, &path, Some(request)).await {
        Ok(_) => see_other(&console, &format!("/accounts/{}?done=assigned", segment(&id))),
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

async fn unassign_profile(State(console): St, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let lang = Lang::negotiate(&headers);
    let fields = form(&body);
    let session = match form_session(&console, &headers, &fields) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let mut path = format!("/accounts/{}/profiles/{}", segment(&id), segment(field(&fields, "profile")));
    let organisation = field(&fields, "organisation_id");
    if !organisation.is_empty() {
        let query =
            url::form_urlencoded::Serializer::new(String::new()).append_pair("organisation_id", organisation).finish();
        path = format!("{path}?{query}");
    }
    match console.api.send(&session.access_token, Method::DELETE, &path, None).await {
        Ok(_) => see_other(&console, &format!("/accounts/{}?done=unassigned", segment(&id))),
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

async fn organisations(State(console): St, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let query = [("q", get("q")), ("cursor", get("cursor")), ("limit", "50")];
    let found = match console.api.get(&session.access_token, "/organisations", &query).await {
        Ok(page) => page,
        Err(e) => return fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    };
    let next = found["next_cursor"].as_str().map(|cursor| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("q", get("q")), ("cursor", cursor)])
            .finish()
    });
    let page = json!({
        "nav": "organisations", "items": found["items"], "next": next, "q": get("q"),
        "done": done_text(lang, q.get("done")),
    });
    render(&console, &headers, Some(&session), "organisations.html", page)
}

async fn create_organisation(State(console): St, headers: HeaderMap, body: Bytes) -> Response {
    let lang = Lang::negotiate(&headers);
    let fields = form(&body);
    let session = match form_session(&console, &headers, &fields) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let mut request = json!({ "name": field(&fields, "name") });
    for name in ["identifier_type", "identifier"] {
        let value = field(&fields, name);
        if !value.is_empty() {
            request[name] = json!(value);
        }
    }
    match console.api.send(&session.access_token, Method::POST, "/organisations", Some(request)).await {
        Ok(_) => see_other(&console, "/organisations?done=organisation"),
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

async fn roles(State(console): St, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let token = session.access_token.as_str();
    let (grants, organisations) = tokio::join!(
        console.api.get(token, "/roles", &[]),
        console.api.get(token, "/organisations", &[("limit", "200")])
    );
    let organisations = match organisations {
        Ok(page) => page["items"].clone(),
        Err(e) => return fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    };
    // Organisation administrators may not list every grant: the form is what matters to them.
    let (grants, grants_error) = match grants {
        Ok(page) => (page["items"].clone(), None),
        Err(e) if e.needs_login() => return fail(&console, &headers, Some(&session), Fail::Login),
        Err(e) => (json!([]), Some(e.description)),
    };
    let page = json!({
        "nav": "roles", "grants": grants, "grants_error": grants_error, "organisations": organisations,
        "done": done_text(lang, q.get("done")),
    });
    render(&console, &headers, Some(&session), "roles.html", page)
}

async fn grant_role(State(console): St, headers: HeaderMap, body: Bytes) -> Response {
    let lang = Lang::negotiate(&headers);
    let fields = form(&body);
    let session = match form_session(&console, &headers, &fields) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    let login = field(&fields, "login");
    let token = session.access_token.as_str();
    // The API names accounts by id; people name them by login.
    let found = match console.api.get(token, "/accounts", &[("q", login), ("limit", "200")]).await {
        Ok(page) => page,
        Err(e) => return fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    };
    let account_id = found["items"].as_array().and_then(|items| {
        items
            .iter()
            .find(|a| a["login"].as_str().is_some_and(|l| !login.is_empty() && l.eq_ignore_ascii_case(login)))
            .and_then(|a| a["id"].as_str().map(str::to_string))
    });
    let Some(account_id) = account_id else {
        return fail(&console, &headers, Some(&session), Fail::text(StatusCode::BAD_REQUEST, lang, "unknown_login"));
    };
    let request = json!({
        "account_id": account_id, "role": "org_admin", "organisation_id": field(&fields, "organisation_id"),
    });
    match console.api.send(token, Method::POST, "/roles", Some(request)).await {
        Ok(_) => see_other(&console, "/roles?done=granted"),
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

async fn profiles(State(console): St, headers: HeaderMap) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    match console.api.get(&session.access_token, "/profiles", &[]).await {
        Ok(list) => {
            let page = json!({ "nav": "profiles", "profiles": list["profiles"] });
            render(&console, &headers, Some(&session), "profiles.html", page)
        }
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

async fn profile(State(console): St, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let lang = Lang::negotiate(&headers);
    let session = match logged_in(&console, &headers) {
        Ok(s) => s,
        Err(f) => return fail(&console, &headers, None, f),
    };
    match console.api.get(&session.access_token, &format!("/profiles/{}", segment(&name)), &[]).await {
        Ok(profile) => {
            let page = json!({ "nav": "profiles", "profile": profile });
            render(&console, &headers, Some(&session), "profile.html", page)
        }
        Err(e) => fail(&console, &headers, Some(&session), Fail::api(lang, e)),
    }
}

async fn switch_lang(State(console): St, Path(code): Path<String>) -> Response {
    let Some(lang) = Lang::parse(&code) else { return see_other(&console, "/") };
    let mut response = see_other(&console, "/");
    let cookie = format!("{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax", lang.code());
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"))],
        include_str!("../static/console.css"),
    )
        .into_response()
}

async fn not_found(State(console): St, headers: HeaderMap) -> Response {
    let session = console.jar.session(&headers);
    fail(
        &console,
        &headers,
        session.as_ref(),
        Fail::text(StatusCode::NOT_FOUND, Lang::negotiate(&headers), "not_found"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_in_the_console() {
        assert_eq!(
            return_path("/audit?event=login_failed&cursor=x").as_deref(),
            Some("/audit?event=login_failed&cursor=x")
        );
        assert_eq!(return_path("/accounts/a%20b").as_deref(), Some("/accounts/a%20b"));
        assert_eq!(return_path("/accounts/../keys").as_deref(), Some("/keys"), "normalised");
        for other_site in [
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "",
            "/\u{0}x",
            "/.//evil.example/x",
        ] {
            assert_eq!(return_path(other_site), None, "{other_site:?}");
        }
        for login_step in ["/login?next=/x", "/callback?code=c", "/logout", "/logged-out", "/static/console.css"] {
            assert_eq!(return_path(login_step), None, "{login_step}");
        }
        assert_eq!(return_path(&format!("/audit?q={}", "x".repeat(2000))), None, "bounded");
    }

    #[test]
    fn form_posts_return_to_the_page_of_their_form() {
        assert_eq!(page_of_form("/accounts/invite"), "/accounts");
        assert_eq!(page_of_form("/accounts/a1/disable"), "/accounts/a1");
        assert_eq!(page_of_form("/accounts/a1/profiles/remove"), "/accounts/a1");
        assert_eq!(page_of_form("/relationships/r1/revoke"), "/relationships");
        assert_eq!(page_of_form("/keys/rotate"), "/keys");
        assert_eq!(page_of_form("/organisations"), "/organisations");
    }
}

//! The application state (built once, injected into every handler; no globals) and the router.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::authn::password::PasswordHasher;
use crate::authn::session::{SessionSettings, Sessions};
use crate::clients::ClientRegistry;
use crate::config::Config;
use crate::ephemeral::SharedEphemeral;
use crate::keys::{KeyManager, MasterKey};
use crate::oidc::discovery::DiscoveryDocument;
use crate::store::SharedStore;
use crate::telemetry::Metrics;
use crate::web::pages::Pages;

/// Why Habilis could not start. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}; choose another with --data-dir or HABILIS_DATA_DIR")]
    DataDir { path: String, source: std::io::Error },
    #[error("database: {0}; check storage.database_url and that the database is running")]
    Store(#[from] crate::store::StoreError),
    #[error("ephemeral store: {0}; check storage.redis_url and that Redis is running")]
    Ephemeral(#[from] crate::ephemeral::EphemeralError),
    #[error("signing keys: {0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error("password hashing parameters: {0}; check the [password] section")]
    Password(#[from] crate::authn::password::PasswordError),
    #[error("mail: {0}; check the [mail] section")]
    Mail(#[from] crate::mail::MailError),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("{0}; check the [card] section")]
    Card(String),
    #[error("{0}; check the [webauthn] section")]
    Webauthn(String),
    #[error(
        "habilitation policies: {0}; fix the profile (habilis profile put) or the files of habilitation.policies_dir"
    )]
    Habilitation(String),
    #[error("{0}; fix policies/admin.cedar or policies/admin.cedarschema")]
    Admin(String),
    #[error("cannot listen on {addr}: {source}; is another process using it? choose another with --listen")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Everything a handler may need. Cloned for every request by the router, so it is one `Arc`
/// (a single reference-count increment) around [`Services`].
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services of one Habilis instance, built once at start.
pub struct Services {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub ephemeral: SharedEphemeral,
    pub keys: Arc<KeyManager>,
    pub metrics: Arc<Metrics>,
    pub discovery: Arc<DiscoveryDocument>,
    pub clients: Arc<ClientRegistry>,
    pub pages: Arc<Pages>,
    pub sessions: Sessions,
    pub passwords: PasswordHasher,
    /// An argon2 hash verified for unknown accounts so that they cost the same as known ones.
    dummy_hash: Arc<tokio::sync::OnceCell<String>>,
    /// Outgoing HTTP (back-channel logout, remote JWKS).
    pub http: reqwest::Client,
    pub grants: Arc<crate::oidc::token::GrantRegistry>,
    pub verified_tokens: Arc<crate::oidc::tokens::VerifiedTokens>,
    pub mailer: crate::mail::SharedMailer,
    pub mail_templates: Arc<crate::mail::MailTemplates>,
    pub audit: Arc<crate::audit::Audit>,
    /// The WebAuthn relying party (security keys, passkeys), when the issuer allows it.
    pub webauthn: Option<Arc<webauthn_rs::prelude::Webauthn>>,
    /// The authenticator models allowed (`webauthn.attestation = "required"`); `None`: any.
    pub webauthn_attestation: Option<Arc<webauthn_rs::prelude::AttestationCaList>>,
    /// CPS card login, when enabled (`card.mode`).
    pub card: Option<Arc<crate::cps::service::CardLogin>>,
    /// Habilitation profiles (Cedar) and the evaluation of `patient_access` requests.
    pub habilitations: Arc<crate::habilitation::service::Habilitations>,
    /// The administration rules (Cedar) of the admin API.
    pub admin_policy: Arc<crate::admin::policy::AdminPolicy>,
    /// `config.issuer_string()`, computed once: it is read several times per token request.
    issuer: String,
}

impl Services {
    /// The issuer identifier (no trailing slash), as in tokens and discovery.
    pub fn issuer_string(&self) -> String {
        self.issuer.clone()
    }

    pub async fn dummy_password_hash(&self) -> String {
        let hasher = self.passwords.clone();
        self.dummy_hash
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    hasher.hash_blocking("habilis-dummy-password-for-equal-timing").unwrap_or_default()
                })
                .await
                .unwrap_or_default()
            })
            .await
            .clone()
    }
}

/// Creates the data directory (owner-only: it holds the master key and the embedded database).
pub fn ensure_data_dir(config: &Config) -> Result<(), StartError> {
    let path = &config.data_dir;
    let err = |source| StartError::DataDir { path: path.display().to_string(), source };
    if !path.exists() {
        std::fs::create_dir_all(path).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
    }
    Ok(())
}

/// How often an instance looks for habilitation profiles changed by another instance.
const PROFILE_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Opens storage, loads keys and assembles the state. Background tasks (key reload) are started here.
pub async fn build_state(config: Config) -> Result<AppState, StartError> {
    ensure_data_dir(&config)?;
    let store = crate::store::connect(&config).await?;
    let ephemeral = crate::ephemeral::connect(
        config.storage.redis_url.as_deref(),
        &config.storage.redis_prefix,
        config.storage.memory_max_entries,
    )
    .await?;
    // Revocation markers and lockouts are written through to the database and restored from it
    // whenever the ephemeral store comes back empty (see `ephemeral::durable`).
    let durable = crate::ephemeral::DurableMarkers::new(ephemeral, store.clone());
    durable.ensure_restored().await?;
    let ephemeral: SharedEphemeral = Arc::new(durable);
    let store_has_keys = !store.list_signing_keys().await?.is_empty();
    let (master, _source) = MasterKey::load_or_create(&config, store_has_keys)?;
    let keys = KeyManager::start(store.clone(), master, &config).await?;
    keys.spawn_reloader(config.keys.reload_interval);
    let algs: Vec<&str> = keys.signing_algs().into_iter().map(|a| a.as_str()).collect();
    let grants = Arc::new(crate::oidc::token::GrantRegistry::standard());
    let clients = ClientRegistry::start(store.clone()).await?;
    clients.spawn_refresher(crate::clients::DEFAULT_REFRESH_INTERVAL);
    let passwords = PasswordHasher::new(&config.password)?;
    let mailer = crate::mail::from_config(&config)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| StartError::Http(e.to_string()))?;
    let card = crate::cps::service::CardLogin::start(&config).map_err(|e| StartError::Card(e.to_string()))?;
    let webauthn = crate::authn::passkeys::relying_party(&config).map_err(StartError::Webauthn)?.map(Arc::new);
    let webauthn_attestation =
        crate::authn::passkeys::attestation_policy(&config).map_err(StartError::Webauthn)?.map(Arc::new);
    let habilitations = Arc::new(
        crate::habilitation::service::Habilitations::load(&config, &store)
            .await
            .map_err(|e| StartError::Habilitation(e.to_string()))?,
    );
    habilitations.enable_relationship_cache(ephemeral.clone());
    crate::habilitation::service::spawn_refresher(&habilitations, store.clone(), PROFILE_REFRESH_INTERVAL);
    let admin_policy =
        Arc::new(crate::admin::policy::AdminPolicy::embedded().map_err(|e| StartError::Admin(e.to_string()))?);
    let mtls_base = card.as_ref().filter(|c| c.tls.is_some()).map(|c| c.public_url.clone());
    let discovery = Arc::new(DiscoveryDocument::build(&config, &algs, &grants.grant_types(), mtls_base.as_deref()));
    // The durable audit log's writer (batches, retries, signed checkpoints); drained by `serve`
    // once the HTTP server has stopped.
    let audit = Arc::new(if config.audit.durable {
        crate::audit::Audit::durable(
            store.clone(),
            crate::audit::WriterSettings::from_config(&config.audit),
            Some(keys.clone()),
        )
    } else {
        tracing::warn!(
            "audit.durable = false: audit events are NOT written to the tamper-evident log (benchmarking only)"
        );
        crate::audit::Audit::default()
    });
    let state = AppState(Arc::new(Services {
        issuer: config.issuer_string(),
        sessions: Sessions { settings: SessionSettings::from_config(&config) },
        config: Arc::new(config),
        store,
        ephemeral,
        keys,
        metrics: Arc::new(Metrics::new()),
        discovery,
        clients,
        pages: Arc::new(Pages::new()),
        passwords,
        dummy_hash: Arc::new(tokio::sync::OnceCell::new()),
        http,
        grants,
        verified_tokens: Arc::new(crate::oidc::tokens::VerifiedTokens::new(100_000)),
        mailer,
        mail_templates: Arc::new(crate::mail::MailTemplates::new()),
        audit,
        webauthn,
        webauthn_attestation,
        card,
        habilitations,
        admin_policy,
    }));
    // Keys generated at start (first start, or an algorithm newly enabled) rotate without an
    // administrator: audited like an administrator's rotation, by `system`.
    for (kid, alg, activates_at) in state.keys.generated_at_start() {
        state.audit.record(
            crate::audit::AuditEvent::SigningKeyRotated {
                kid: kid.clone(),
                alg: alg.as_str().to_string(),
                actor: "system".into(),
                activates_at: *activates_at,
            },
            Default::default(),
        );
    }
    if let Some(card) = &state.card {
        // Revocation lists before the first card login (from the cache at once, then fetched).
        card.refresh_crls(&state).await;
        card.spawn_crl_refresher(state.clone(), state.config.card.crl_refresh_interval);
    }
    Ok(state)
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let https = state.config.issuer().scheme() == "https";
    let router = Router::new()
        .route(crate::oidc::discovery::PATH, get(crate::oidc::discovery::discovery))
        .route(crate::oidc::jwks::PATH, get(crate::oidc::jwks::jwks))
        .route(
            crate::oidc::authorize::PATH,
            get(crate::oidc::authorize::authorize_get).post(crate::oidc::authorize::authorize_post),
        )
        .route(crate::oidc::token::PATH, axum::routing::post(crate::oidc::token::token))
        .route(crate::oidc::par::PATH, axum::routing::post(crate::oidc::par::push))
        .route(crate::oidc::userinfo::PATH, get(crate::oidc::userinfo::userinfo).post(crate::oidc::userinfo::userinfo))
        .route(crate::oidc::introspect::PATH, axum::routing::post(crate::oidc::introspect::introspect))
        .route(crate::oidc::revoke::PATH, axum::routing::post(crate::oidc::revoke::revoke))
        .route(crate::oidc::logout::PATH, get(crate::oidc::logout::end_session).post(crate::oidc::logout::end_session))
        .route(crate::oidc::authorize::RESUME_PATH, get(crate::oidc::authorize::resume))
        .route("/login", get(crate::authn::login::page).post(crate::authn::login::submit))
        .route("/login/code", axum::routing::post(crate::authn::login::submit_code))
        .route("/login/totp", get(crate::authn::login::totp_page).post(crate::authn::login::totp_submit))
        .route(
            "/invitation",
            get(crate::authn::account::invitation_page).post(crate::authn::account::invitation_submit),
        )
        .route("/password/forgot", get(crate::authn::account::forgot_page).post(crate::authn::account::forgot_submit))
        .route("/password/reset", get(crate::authn::account::reset_page).post(crate::authn::account::reset_submit))
        .route("/login/email", axum::routing::post(crate::authn::login::resend))
        .route("/login/continue", get(crate::authn::login::continue_login))
        .route("/webauthn/authenticate/start", axum::routing::post(crate::authn::passkeys::authenticate_start))
        .route("/webauthn/authenticate/finish", axum::routing::post(crate::authn::passkeys::authenticate_finish))
        .route("/account/passkeys", get(crate::authn::passkeys::page))
        .route("/account/passkeys/rename", axum::routing::post(crate::authn::passkeys::rename))
        .route("/account/passkeys/revoke", axum::routing::post(crate::authn::passkeys::revoke))
        .route("/static/webauthn.js", get(crate::web::pages::webauthn_script))
        .route("/account/passkeys/register/start", axum::routing::post(crate::authn::passkeys::register_start))
        .route("/account/passkeys/register/finish", axum::routing::post(crate::authn::passkeys::register_finish))
        .route(crate::cps::login::CARD_PATH, get(crate::cps::login::card_login))
        .route(crate::cps::login::COMPLETE_PATH, get(crate::cps::login::complete))
        .route("/consent", get(crate::oidc::consent::page).post(crate::oidc::consent::submit))
        .route(
            crate::lifecycle::web::KEEP_PATH,
            get(crate::lifecycle::web::keep_page).post(crate::lifecycle::web::keep_submit),
        )
        .route(crate::lifecycle::web::TERMS_PATH, get(crate::lifecycle::web::terms))
        .route("/static/style.css", get(crate::web::pages::stylesheet))
        // Browsers ask for it on every page; answering "nothing here" keeps consoles and logs clean.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            crate::habilitation::relationships_api::PATH,
            get(crate::habilitation::relationships_api::list).post(crate::habilitation::relationships_api::create),
        )
        .route("/api/v1/relationships/{id}/revoke", axum::routing::post(crate::habilitation::relationships_api::revoke))
        .route(
            crate::habilitation::relationships_api::PATIENTS_PATH,
            axum::routing::post(crate::habilitation::relationships_api::link_patient),
        )
        .route("/api/v1/relationships/{id}/expire", axum::routing::post(crate::habilitation::relationships_api::expire))
        .route(
            crate::habilitation::decision::EVALUATION_PATH,
            axum::routing::post(crate::habilitation::decision::evaluation),
        )
        .route(
            crate::habilitation::decision::EVALUATIONS_PATH,
            axum::routing::post(crate::habilitation::decision::evaluations),
        )
        // Every /api/admin/v1 route, profiles and practice data included (one table, checked
        // against the OpenAPI document).
        .merge(crate::admin::router())
        .route(crate::habilitation::decision::METADATA_PATH, get(crate::habilitation::decision::metadata))
        .merge(registration_routes(&state))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found);
    // The admin console (its own routes, CSP and cookies), when enabled.
    let router = match crate::console::router(&state) {
        Some(console) => router.nest_service(crate::console::MOUNT, console),
        None => router,
    };
    with_common_layers(router, state, https)
}

/// RFC 7591/7592 dynamic client registration, when `registration.enabled`.
fn registration_routes(state: &AppState) -> Router<AppState> {
    use crate::oidc::registration;
    if !state.config.registration.enabled {
        return Router::new();
    }
    Router::new()
        .route(registration::PATH, axum::routing::post(registration::register))
        .route(registration::ITEM_PATH, get(registration::read).put(registration::update).delete(registration::delete))
}

/// The layers every listener shares: metrics, security headers, body limit, timeout, request id
/// and its tracing span.
pub fn with_common_layers(router: Router<AppState>, state: AppState, https: bool) -> Router {
    let mut router =
        router.layer(axum::middleware::from_fn_with_state(state.metrics.clone(), crate::telemetry::track_http));
    for layer in crate::web::security_headers(https) {
        router = router.layer(layer);
    }
    router
        .layer(RequestBodyLimitLayer::new(state.config.server.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, state.config.server.request_timeout))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %request_id)
                })
                .on_request(())
                .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database and the ephemeral store answer within a second each. A load balancer
/// takes the instance out while this fails; it comes back by itself once they answer again.
async fn readyz(State(state): State<AppState>) -> Response {
    let limit = Duration::from_secs(1);
    let database = match tokio::time::timeout(limit, state.store.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_string(),
    };
    let ephemeral = match tokio::time::timeout(limit, state.ephemeral.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "error: timed out".to_string(),
    };
    if database != "ok" {
        state.metrics.storage_error("database");
        tracing::warn!(%database, "not ready: database");
    }
    if ephemeral != "ok" {
        state.metrics.storage_error("ephemeral");
        tracing::warn!(%ephemeral, "not ready: ephemeral store");
    }
    let ready = database == "ok" && ephemeral == "ok";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ready" } else { "unready" },
        "database": { "backend": state.store.backend().as_str(), "status": database },
        "ephemeral": { "backend": state.ephemeral.kind(), "status": ephemeral },
    });
    (status, [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], axum::Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.signing_keys_published.set(state.keys.published_kids().len() as i64);
    // Gauges read at scrape time, so that they are current whatever refreshes them.
    state.metrics.audit_backlog.set(i64::try_from(state.audit.backlog()).unwrap_or(i64::MAX));
    crate::alerts::revocation_lists(&state, crate::unix_now());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> crate::error::OAuthError {
    crate::error::OAuthError::new(
        crate::error::OAuthErrorCode::NotFound,
        "no such endpoint; see /.well-known/openid-configuration",
    )
}

/// Serves until `shutdown` resolves, then stops accepting connections and lets in-flight requests
/// finish, for at most `server.shutdown_grace`.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.server.shutdown_grace;
    let audit = state.audit.clone();
    let card_handle = start_card_listener(&state);
    // The inactive-account job (every lifecycle.run_every, once across instances).
    crate::lifecycle::spawn_scheduler(state.clone());
    // The alert rules, fed by the audit events (never on the request path).
    crate::alerts::spawn(state.clone());
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let (drain_started_tx, drain_started_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        if let Some(handle) = &card_handle {
            handle.graceful_shutdown(Some(grace));
        }
        let _ = drain_started_tx.send(());
    });
    let deadline = async move {
        if drain_started_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        result = server => result,
        _ = deadline => {
            tracing::warn!(grace = ?grace, "shutdown grace period over: closing remaining connections");
            Ok(())
        }
    };
    // No request is running any more: every audit event they recorded reaches the durable log,
    // followed by a last checkpoint.
    audit.shutdown().await;
    result
}

/// Starts the card listener (direct mode) when card login has one; its handle stops it.
fn start_card_listener(state: &AppState) -> Option<axum_server::Handle<SocketAddr>> {
    let card = state.card.as_ref()?;
    let (listener, tls) = (card.take_listener()?, card.tls.clone()?);
    let handle = axum_server::Handle::new();
    let server = crate::cps::listener::serve_card_listener(state.clone(), listener, tls, handle.clone());
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the card listener stopped");
        }
    });
    Some(handle)
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // Register the handlers now, not at the future's first poll: a SIGTERM arriving between the
    // "ready" banner and the first poll must drain the server, not kill it.
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match terminate.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match interrupt.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => {},
                _ = int => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A server running in this process on an ephemeral port: what in-process tests use.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub base_url: String,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Binds 127.0.0.1:0, sets the issuer to the bound address (unless configured) and serves.
    pub async fn start(mut config: Config) -> Result<RunningServer, StartError> {
        let requested = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener =
            TcpListener::bind(requested).await.map_err(|source| StartError::Listen { addr: requested, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: requested, source })?;
        config.server.listen = addr;
        // An issuer configured with port 0 (e.g. `http://localhost:0`) means the port just bound.
        if let Some(issuer) = config.server.issuer.as_mut()
            && issuer.port() == Some(0)
        {
            let _ = issuer.set_port(Some(addr.port()));
        }
        let state = build_state(config).await?;
        let base_url = state.issuer_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(serve(state.clone(), listener, async move {
            let _ = rx.await;
        }));
        Ok(RunningServer { addr, base_url, state, shutdown: Some(tx), handle: Some(handle) })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An application state on a temporary SQLite database and in-memory ephemeral store, for unit
/// tests of handlers and pipeline steps.
#[cfg(test)]
pub async fn test_state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    config.keys.algorithms = vec![crate::config::SigningAlg::ES256];
    config.password.argon2_memory_kib = 8192;
    config.password.argon2_iterations = 1;
    (build_state(config).await.expect("test state"), dir)
}

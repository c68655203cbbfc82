//! Clients in the admin API (`/api/admin/v1/clients`) and the initial access tokens of dynamic
//! registration (`/api/admin/v1/initial-access-tokens`). Clients are platform-wide: platform
//! administrators manage them, auditors read them, organisation administrators do neither.
//!
//! Everything goes through the client registry, exactly as `habilis client …` does: registration
//! validates the RFC 7591 document with [`ClientRegistry::prepare_document`] (then checks the
//! signing algorithms against `keys.algorithms`, like `client import`); an edit is a JSON merge
//! patch (RFC 7396) of the stored document, validated the same way; deletion removes the grants
//! (refresh tokens) and consents with the client. A secret is shown once (registration, rotation,
//! or an edit that switches to a `client_secret_*` method); only its hash is stored and no view
//! ever carries it. Initial access tokens use `clients::registration`'s own operations.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::{Actor, PageQuery, actor, audit_context, authorize, encode_cursor, json_body, query, split_page};
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::clients::registration::{
    IssueRequest, MAX_INITIAL_TOKEN_LIFETIME, MAX_INITIAL_TOKEN_USES, RegistrationError, TokenState,
    issue_initial_access_token, revoke_initial_access_token,
};
use crate::clients::{ClientEntry, ClientMetadataError, MetadataErrorCode, RegistryError};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::store::InitialAccessToken;

pub const PATH: &str = "/api/admin/v1/clients";
pub const ITEM_PATH: &str = "/api/admin/v1/clients/{client_id}";
pub const SECRET_PATH: &str = "/api/admin/v1/clients/{client_id}/secret";
pub const TOKENS_PATH: &str = "/api/admin/v1/initial-access-tokens";
pub const TOKEN_PATH: &str = "/api/admin/v1/initial-access-tokens/{id}";

/// Members a metadata edit cannot touch: the identifier is the path's, and secrets are rotated.
const NOT_EDITABLE: &[&str] = &["client_id", "client_secret"];
const DEFAULT_TOKEN_LIFETIME: u64 = 24 * 3600;
const DESCRIPTION_MAX: usize = 200;

/// A client as administrators see it: never its secret, nor the secret's hash.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub client_id: String,
    pub client_name: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// The token endpoint authentication method (`none` for public clients).
    pub token_endpoint_auth_method: Option<String>,
    /// Whether a secret hash is stored (it is never shown).
    pub has_secret: bool,
    /// False when the stored metadata no longer validates: the client is refused until fixed.
    pub valid: bool,
    /// Why the stored metadata does not validate.
    pub error: Option<String>,
    /// Registered by itself (RFC 7591) with an initial access token.
    pub self_registered: bool,
    /// The stored RFC 7591 document (Habilis extensions such as `minimum_acr` included).
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl ClientView {
    fn of(entry: ClientEntry, self_registered: bool) -> ClientView {
        let (client_name, method, error) = match &entry.client {
            Ok(c) => (c.client_name().map(str::to_owned), Some(c.token_endpoint_auth_method().as_str().into()), None),
            Err(e) => (None, None, Some(e.to_string())),
        };
        ClientView {
            valid: error.is_none(),
            client_id: entry.client_id,
            client_name,
            created_at: entry.created_at,
            updated_at: entry.updated_at,
            token_endpoint_auth_method: method,
            has_secret: entry.has_secret,
            error,
            self_registered,
            metadata: serde_json::from_str(&entry.metadata).unwrap_or(Value::Null),
        }
    }
}

/// A client just registered or changed, with its new secret when one was generated.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientWithSecret {
    pub client: ClientView,
    /// Shown once: only its hash is stored. Null when no secret was generated.
    pub client_secret: Option<String>,
}

/// A page of clients, by client_id.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientPage {
    pub items: Vec<ClientView>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClientQuery {
    /// Part of the client_id or name (case-insensitive).
    pub q: Option<String>,
    /// Only clients whose stored metadata validates (`true`) or not (`false`).
    pub valid: Option<bool>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An initial access token as administrators see it (never the token).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct InitialAccessTokenView {
    pub id: String,
    pub description: Option<String>,
    /// `usable`, `revoked`, `expired` or `used up`.
    pub state: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: i64,
    pub uses: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl InitialAccessTokenView {
    fn of(t: &InitialAccessToken, now: i64) -> InitialAccessTokenView {
        InitialAccessTokenView {
            id: t.id.clone(),
            description: t.description.clone(),
            state: TokenState::of(t, now).as_str().to_string(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            max_uses: t.max_uses,
            uses: t.uses,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A token just issued: shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedTokenView {
    /// The token for `Authorization: Bearer` at `POST /register`. Shown once: only its hash is stored.
    pub token: String,
    #[serde(flatten)]
    pub record: InitialAccessTokenView,
}

/// Initial access tokens, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct InitialAccessTokenPage {
    pub items: Vec<InitialAccessTokenView>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// `usable`, `revoked`, `expired` or `used_up`.
    pub state: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInitialAccessToken {
    /// Validity in seconds (default 86400, at most 90 days).
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// How many clients it may register (default 1, at most 10000).
    #[serde(default)]
    pub max_uses: Option<i64>,
    /// Who the token is for (at most 200 characters).
    #[serde(default)]
    pub description: Option<String>,
}

fn client_target() -> TargetFacts {
    TargetFacts::of("client", None)
}

fn not_found() -> OAuthError {
    OAuthError::new(OAuthErrorCode::NotFound, "no such client")
}

/// A registry failure in the admin API's terms.
fn registry_error(e: RegistryError) -> OAuthError {
    match e {
        RegistryError::Metadata(m) => metadata_error(m),
        RegistryError::NotFound(_) => not_found(),
        e @ (RegistryError::NoSecretMethod { .. } | RegistryError::WeakSecret(_)) => {
            OAuthError::invalid_request(e.to_string())
        }
        RegistryError::Broken { error, .. } => OAuthError::new(
            OAuthErrorCode::Conflict,
            format!("the stored metadata no longer validates ({error}); correct it first (PATCH)"),
        ),
        RegistryError::CorruptSecretHash(_) => {
            OAuthError::new(OAuthErrorCode::Conflict, "the stored secret hash is malformed; rotate the secret")
        }
        RegistryError::Store(e) => e.into(),
    }
}

/// RFC 7591 error codes, as the registration endpoint answers them.
fn metadata_error(m: ClientMetadataError) -> OAuthError {
    let code = match m.code {
        MetadataErrorCode::InvalidRedirectUri => OAuthErrorCode::InvalidRedirectUri,
        MetadataErrorCode::InvalidClientMetadata => OAuthErrorCode::InvalidClientMetadata,
    };
    OAuthError::new(code, m.description)
}

fn registration_error(e: RegistrationError) -> OAuthError {
    match e {
        RegistrationError::Store(e) => e.into(),
        RegistrationError::Usage(text) | RegistrationError::InvalidRequest(text) => OAuthError::invalid_request(text),
        other => {
            tracing::error!(error = %other, "initial access token operation failed");
            OAuthError::server_error()
        }
    }
}

fn audit_client(
    state: &AppState,
    headers: &HeaderMap,
    actor: &Actor,
    client_id: &str,
    change: &str,
    before: Option<&ClientView>,
    after: Option<&ClientView>,
) {
    state.audit.record(
        AuditEvent::ClientChanged {
            client_id: client_id.to_string(),
            actor: actor.id.clone(),
            change: change.to_string(),
            before: before.and_then(|v| serde_json::to_string(&v.metadata).ok()),
            after: after.and_then(|v| serde_json::to_string(&v.metadata).ok()),
        },
        audit_context(headers),
    );
}

/// The client `client_id` as stored, or 404.
async fn load(state: &AppState, client_id: &str) -> Result<ClientView, OAuthError> {
    let entry = state.clients.describe(client_id).await.map_err(registry_error)?.ok_or_else(not_found)?;
    let self_registered = state.store.registrations().client_registration(client_id).await?.is_some();
    Ok(ClientView::of(entry, self_registered))
}

/// Validates `document` for `client_id` as `habilis client import` does, and writes it.
async fn register_document(
    state: &AppState,
    document: Value,
    client_id: Option<&str>,
) -> Result<Option<String>, OAuthError> {
    let prepared = state.clients.prepare_document(document, client_id, None).map_err(registry_error)?;
    prepared.client().check_enabled_algorithms(&state.config.keys.algorithms).map_err(metadata_error)?;
    let registration = state.clients.register_prepared(prepared).await.map_err(registry_error)?;
    Ok(registration.secret.map(|s| s.as_str().to_owned()))
}

#[utoipa::path(
    get, path = PATH, tag = "clients", params(ClientQuery),
    responses(
        (status = 200, description = "A page of clients", body = ClientPage),
        (status = 400, description = "Invalid filter, limit or cursor", body = ErrorBody),
        (status = 403, description = "Not a platform administrator or auditor", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Result<Json<ClientPage>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    let q: ClientQuery = query(&uri)?;
    authorize(&state, &headers, &actor, Operation::Read, &client_target(), "clients")?;
    let page = PageQuery { limit: q.limit, cursor: q.cursor };
    let limit = page.limit()?;
    let after = page.cursor(1)?.and_then(|mut parts| parts.pop());
    let needle = super::contains_pattern(q.q.as_deref())?.map(|_| q.q.as_deref().unwrap_or("").trim().to_lowercase());
    let mut entries = state.clients.list().await.map_err(registry_error)?;
    entries.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let matching: Vec<ClientEntry> = entries
        .into_iter()
        .filter(|e| after.as_deref().is_none_or(|a| e.client_id.as_str() > a))
        .filter(|e| q.valid.is_none_or(|v| e.client.is_ok() == v))
        .filter(|e| {
            needle.as_deref().is_none_or(|n| {
                e.client_id.to_lowercase().contains(n)
                    || e.client
                        .as_ref()
                        .ok()
                        .and_then(|c| c.client_name())
                        .is_some_and(|name| name.to_lowercase().contains(n))
            })
        })
        .take(limit as usize + 1)
        .collect();
    let (rows, more) = split_page(matching, limit);
    let next_cursor = more.then(|| rows.last().map(|e| encode_cursor(&[&e.client_id]))).flatten();
    let mut items = Vec::with_capacity(rows.len());
    for entry in rows {
        let self_registered = state.store.registrations().client_registration(&entry.client_id).await?.is_some();
        items.push(ClientView::of(entry, self_registered));
    }
    Ok(Json(ClientPage { items, next_cursor }))
}

#[utoipa::path(
    post, path = PATH, tag = "clients",
    request_body(content = Object, description = "RFC 7591 client metadata (Habilis extensions included), as for \
        `habilis client import`; `client_id` and `client_secret` are optional (generated when absent)"),
    responses(
        (status = 201, description = "Registered; the generated secret is shown once", body = ClientWithSecret),
        (status = 400, description = "Invalid metadata (`invalid_client_metadata`, `invalid_redirect_uri`) or secret",
            body = ErrorBody),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
        (status = 409, description = "A client already has this client_id", body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    authorize(&state, &headers, &actor, Operation::Write, &client_target(), "new client")?;
    let document: Value = json_body(&body)?;
    // The id is settled first, so that an existing client is refused rather than replaced.
    let client_id = match document.get("client_id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().simple().to_string(),
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err(OAuthError::new(OAuthErrorCode::InvalidClientMetadata, "`client_id` must be a string")),
    };
    if state.store.client_by_id(&client_id).await?.is_some() {
        return Err(OAuthError::new(
            OAuthErrorCode::Conflict,
            "a client already has this client_id; change it with PATCH /clients/{client_id}",
        ));
    }
    let secret = register_document(&state, document, Some(&client_id)).await?;
    let view = load(&state, &client_id).await?;
    audit_client(&state, &headers, &actor, &client_id, "registered", None, Some(&view));
    Ok((StatusCode::CREATED, Json(ClientWithSecret { client: view, client_secret: secret })))
}

#[utoipa::path(
    get, path = ITEM_PATH, tag = "clients", params(("client_id" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "The client (never its secret)", body = ClientView),
        (status = 403, description = "Not a platform administrator or auditor", body = ErrorBody),
        (status = 404, description = "No such client", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Result<Json<ClientView>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    authorize(&state, &headers, &actor, Operation::Read, &client_target(), &format!("client {client_id}"))?;
    Ok(Json(load(&state, &client_id).await?))
}

/// RFC 7396: `patch` merged into `target` (null removes a member).
fn merge_patch(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(&key);
            }
            Value::Object(inner) => {
                let slot = target.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(key, other);
            }
        }
    }
}

#[utoipa::path(
    patch, path = ITEM_PATH, tag = "clients", params(("client_id" = String, Path, description = "Client id")),
    request_body(content = Object, description = "A JSON merge patch (RFC 7396) of the metadata: e.g. \
        `{\"redirect_uris\": [...], \"minimum_acr\": \"eidas2\", \"logo_uri\": null}`; null removes a member. \
        `client_id` and `client_secret` cannot be changed here"),
    responses(
        (status = 200, description = "Changed; a secret generated by the change (switch to client_secret_*) is shown once",
            body = ClientWithSecret),
        (status = 400, description = "The resulting metadata is invalid", body = ErrorBody),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
        (status = 404, description = "No such client", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ClientWithSecret>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    authorize(&state, &headers, &actor, Operation::Write, &client_target(), &format!("client {client_id}"))?;
    let before = load(&state, &client_id).await?;
    let patch = match json_body::<Value>(&body)? {
        Value::Object(patch) if !patch.is_empty() => patch,
        Value::Object(_) => return Err(OAuthError::invalid_request("the patch is empty: name the members to change")),
        _ => return Err(OAuthError::invalid_request("the body must be a JSON merge patch (an object)")),
    };
    if let Some(member) = NOT_EDITABLE.iter().find(|m| patch.contains_key(**m)) {
        return Err(OAuthError::invalid_request(format!(
            "{member} cannot be changed by an edit (the client_id is the path's; rotate the secret with POST {SECRET_PATH})"
        )));
    }
    let mut document = before.metadata.as_object().cloned().unwrap_or_default();
    merge_patch(&mut document, patch);
    let secret = register_document(&state, Value::Object(document), Some(&client_id)).await?;
    let after = load(&state, &client_id).await?;
    audit_client(&state, &headers, &actor, &client_id, "updated", Some(&before), Some(&after));
    Ok(Json(ClientWithSecret { client: after, client_secret: secret }))
}

#[utoipa::path(
    post, path = SECRET_PATH, tag = "clients", params(("client_id" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "The new secret, shown once; the old one stops working", body = ClientWithSecret),
        (status = 400, description = "The client authenticates without a secret", body = ErrorBody),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
        (status = 404, description = "No such client", body = ErrorBody),
        (status = 409, description = "The stored metadata no longer validates", body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Result<Json<ClientWithSecret>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    authorize(&state, &headers, &actor, Operation::Write, &client_target(), &format!("client {client_id}"))?;
    let before = load(&state, &client_id).await?;
    let secret = state.clients.rotate_secret(&client_id).await.map_err(registry_error)?;
    let after = load(&state, &client_id).await?;
    audit_client(&state, &headers, &actor, &client_id, "secret_rotated", Some(&before), Some(&after));
    Ok(Json(ClientWithSecret { client: after, client_secret: Some(secret.as_str().to_owned()) }))
}

#[utoipa::path(
    delete, path = ITEM_PATH, tag = "clients", params(("client_id" = String, Path, description = "Client id")),
    responses(
        (status = 204, description = "Deleted, with its grants (refresh tokens) and consents"),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
        (status = 404, description = "No such client", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Result<StatusCode, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    authorize(&state, &headers, &actor, Operation::Write, &client_target(), &format!("client {client_id}"))?;
    let before = load(&state, &client_id).await?;
    if !state.clients.remove(&client_id).await.map_err(registry_error)? {
        return Err(not_found());
    }
    audit_client(&state, &headers, &actor, &client_id, "deleted", Some(&before), None);
    Ok(StatusCode::NO_CONTENT)
}

fn token_target() -> TargetFacts {
    TargetFacts::of("initial_access_token", None)
}

fn parse_state(text: &str) -> Result<TokenState, OAuthError> {
    match text {
        "usable" => Ok(TokenState::Usable),
        "revoked" => Ok(TokenState::Revoked),
        "expired" => Ok(TokenState::Expired),
        "used_up" => Ok(TokenState::UsedUp),
        _ => Err(OAuthError::invalid_request("state must be usable, revoked, expired or used_up")),
    }
}

#[utoipa::path(
    get, path = TOKENS_PATH, tag = "clients", params(TokenQuery),
    responses(
        (status = 200, description = "Initial access tokens, newest first (never the tokens themselves)",
            body = InitialAccessTokenPage),
        (status = 400, description = "Invalid filter, limit or cursor", body = ErrorBody),
        (status = 403, description = "Not a platform administrator or auditor", body = ErrorBody),
    )
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<InitialAccessTokenPage>, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    let q: TokenQuery = query(&uri)?;
    authorize(&state, &headers, &actor, Operation::Read, &token_target(), "initial access tokens")?;
    let wanted = q.state.as_deref().map(parse_state).transpose()?;
    let page = PageQuery { limit: q.limit, cursor: q.cursor };
    let limit = page.limit()?;
    let after = page.cursor(1)?.and_then(|mut parts| parts.pop());
    let tokens = state.store.registrations().list_initial_access_tokens().await?;
    let start = match &after {
        None => 0,
        Some(id) => match tokens.iter().position(|t| &t.id == id) {
            Some(i) => i + 1,
            None => return Err(OAuthError::invalid_request("cursor is not one this API returned")),
        },
    };
    let rows: Vec<&InitialAccessToken> = tokens[start..]
        .iter()
        .filter(|t| wanted.is_none_or(|s| TokenState::of(t, now) == s))
        .take(limit as usize + 1)
        .collect();
    let (rows, more) = split_page(rows, limit);
    let next_cursor = more.then(|| rows.last().map(|t| encode_cursor(&[&t.id]))).flatten();
    Ok(Json(InitialAccessTokenPage {
        items: rows.into_iter().map(|t| InitialAccessTokenView::of(t, now)).collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    post, path = TOKENS_PATH, tag = "clients", request_body = NewInitialAccessToken,
    responses(
        (status = 201, description = "Issued; the token is shown once", body = IssuedTokenView),
        (status = 400, description = "Invalid lifetime, uses or description", body = ErrorBody),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
    )
)]
pub async fn issue_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    authorize(&state, &headers, &actor, Operation::Write, &token_target(), "new initial access token")?;
    let request: NewInitialAccessToken = if body.is_empty() {
        NewInitialAccessToken { expires_in: None, max_uses: None, description: None }
    } else {
        json_body(&body)?
    };
    let expires_in = request.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME);
    if expires_in == 0 || expires_in > MAX_INITIAL_TOKEN_LIFETIME.as_secs() {
        return Err(OAuthError::invalid_request(format!(
            "expires_in must be between 1 and {} seconds (90 days)",
            MAX_INITIAL_TOKEN_LIFETIME.as_secs()
        )));
    }
    let max_uses = request.max_uses.unwrap_or(1);
    if !(1..=MAX_INITIAL_TOKEN_USES).contains(&max_uses) {
        return Err(OAuthError::invalid_request(format!("max_uses must be between 1 and {MAX_INITIAL_TOKEN_USES}")));
    }
    let description = request.description.map(|d| d.trim().to_string()).filter(|d| !d.is_empty());
    if description.as_deref().is_some_and(|d| d.chars().count() > DESCRIPTION_MAX || d.chars().any(char::is_control)) {
        return Err(OAuthError::invalid_request(format!(
            "description must be at most {DESCRIPTION_MAX} printable characters"
        )));
    }
    let issue = IssueRequest { expires_in: Duration::from_secs(expires_in), max_uses, description };
    let issued = issue_initial_access_token(state.store.as_ref(), &state.audit, &actor.id, &issue, now)
        .await
        .map_err(registration_error)?;
    let view = IssuedTokenView {
        token: issued.token.as_str().to_owned(),
        record: InitialAccessTokenView::of(&issued.record, now),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    delete, path = TOKEN_PATH, tag = "clients", params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked: it registers no further client (those it registered stay)"),
        (status = 403, description = "Not a platform administrator", body = ErrorBody),
        (status = 404, description = "No unrevoked token has this id", body = ErrorBody),
    )
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, OAuthError> {
    let now = crate::unix_now();
    let actor = actor(&state, &headers, now).await?;
    authorize(&state, &headers, &actor, Operation::Write, &token_target(), &format!("initial access token {id}"))?;
    if !revoke_initial_access_token(state.store.as_ref(), &state.audit, &actor.id, &id, now)
        .await
        .map_err(registration_error)?
    {
        return Err(OAuthError::new(OAuthErrorCode::NotFound, "no unrevoked initial access token has this id"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}).as_object().cloned().unwrap();
        let patch = json!({"a": null, "b": {"c": null, "x": 4}, "e": [2], "n": "new"}).as_object().cloned().unwrap();
        merge_patch(&mut target, patch);
        assert_eq!(Value::Object(target), json!({"b": {"d": 3, "x": 4}, "e": [2], "n": "new"}));
    }

    #[test]
    fn token_states_parse() {
        assert_eq!(parse_state("used_up").unwrap(), TokenState::UsedUp);
        assert!(parse_state("used up").unwrap_err().description.contains("state must be"));
    }
}

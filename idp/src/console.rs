//! The admin console (crate `habilis-admin`) inside `habilis serve`: mounted at [`MOUNT`] when
//! `admin_console.enabled`, an ordinary OIDC client of this Habilis whose client is registered
//! at start ([`register_client`]) with a secret derived from the master key, so that every
//! instance sharing the master key serves the same console without any secret in the config.

use serde_json::json;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::app::AppState;

/// Where `habilis serve` mounts the console.
pub const MOUNT: &str = "/admin";

/// The console's public URL: `<issuer>/admin`.
pub fn public_url(state: &AppState) -> String {
    format!("{}{MOUNT}", state.issuer_string())
}

/// The console client's secret: SHA-256 of a label and the master key, hex.
pub fn client_secret(state: &AppState) -> Zeroizing<String> {
    let master = state.keys.master_key().to_base64();
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"habilis admin console client secret v1\0");
    hasher.update(master.as_bytes());
    Zeroizing::new(hex::encode(hasher.finalize()))
}

/// The console client's metadata (RFC 7591): a confidential, first-party web client that may ask
/// for the admin scopes.
pub fn client_metadata(state: &AppState) -> serde_json::Value {
    let base = public_url(state);
    json!({
        "client_name": "Habilis — console d'administration",
        "redirect_uris": [format!("{base}/callback")],
        "post_logout_redirect_uris": [format!("{base}/logged-out")],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "openid profile admin audit",
        "first_party": true,
    })
}

/// Registers (or refreshes) the console's client. Called by `habilis serve` at start, when the
/// console is enabled.
pub async fn register_client(state: &AppState) -> Result<(), crate::clients::RegistryError> {
    let secret = client_secret(state);
    state
        .clients
        .register(&client_metadata(state).to_string(), Some(&state.config.admin_console.client_id), Some(&secret))
        .await?;
    Ok(())
}

/// The console's router, when enabled (a configuration it refuses is logged and not mounted).
pub fn router(state: &AppState) -> Option<axum::Router> {
    if !state.config.admin_console.enabled {
        return None;
    }
    let config = habilis_admin::ConsoleConfig {
        issuer: url::Url::parse(&state.issuer_string()).ok()?,
        public_url: url::Url::parse(&public_url(state)).ok()?,
        client_id: state.config.admin_console.client_id.clone(),
        client_secret: client_secret(state).to_string(),
        acr: state.config.admin.minimum_acr.clone(),
    };
    match habilis_admin::Console::new(config) {
        Ok(console) => Some(habilis_admin::router(console)),
        Err(e) => {
            tracing::error!(error = %e, "the admin console cannot start; /admin is not served");
            None
        }
    }
}

//! The running configuration, read-only (`GET /api/admin/v1/settings`), for platform
//! administrators and auditors: every key of `habilis.example.toml` with its effective value,
//! plus what the server derived from them (issuer, database URL, file locations, card mode).
//!
//! Secrets never leave: [`redacted`] walks the whole document rather than listing fields, so a
//! setting added later is covered too —
//! - a value whose key names a secret (`master_key`, `*password*`, `*secret*`, `*private_key*`,
//!   `*_token`, `*api_key*`, `*passphrase*`, `credentials`) is replaced by `"[redacted]"` (null
//!   stays null: "not set" is worth knowing);
//! - any string that is a URL loses the password of its user-info and the values of query
//!   parameters that name secrets (`postgres://u:…@h/db?sslpassword=…`, `redis://:…@h`,
//!   `smtps://u:…@h`);
//! - a libpq-style `key=value` string loses the values of `password`-like keys.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use super::openapi::ErrorBody;
use super::policy::{Operation, TargetFacts};
use super::{actor, authorize};
use crate::app::AppState;
use crate::config::Config;
use crate::error::OAuthError;

pub const PATH: &str = "/api/admin/v1/settings";

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Whether a configuration key names a secret (compared lower-case).
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    // Where a secret is kept (a path) is not itself secret.
    if key.ends_with("_file") || key.ends_with("_dir") || key.ends_with("_path") {
        return false;
    }
    key == "master_key"
        || key == "credentials"
        || key.ends_with("_token")
        || ["password", "secret", "private_key", "api_key", "passphrase", "passwd"].iter().any(|s| key.contains(s))
}

/// Query parameters and `key=value` keys whose values are secrets.
fn secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "key", "auth"].iter().any(|s| name.contains(s))
}

/// A string with its embedded credentials removed (see the module documentation).
fn redact_string(text: &str) -> String {
    if let Ok(mut url) = url::Url::parse(text)
        && url.has_host()
    {
        let mut changed = false;
        if url.password().is_some() {
            let _ = url.set_password(Some(REDACTED));
            changed = true;
        }
        if url.query_pairs().any(|(k, _)| secret_parameter(&k)) {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if secret_parameter(&k) { REDACTED.to_string() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
            changed = true;
        }
        // Untouched URLs keep their exact text.
        return if changed { url.to_string() } else { text.to_string() };
    }
    if text.contains('=') && text.to_ascii_lowercase().contains("pass") {
        // libpq `host=… password=…` (values may be quoted).
        return text
            .split_whitespace()
            .map(|part| match part.split_once('=') {
                Some((k, _)) if secret_parameter(k) => format!("{k}={REDACTED}"),
                _ => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    text.to_string()
}

fn redact(value: &mut Value, secret: bool) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                redact(inner, secret || secret_key(key));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, secret)),
        _ if secret => *value = Value::String(REDACTED.into()),
        Value::String(text) => *text = redact_string(text),
        _ => {}
    }
}

/// The configuration as JSON with every secret redacted, and what the server derived from it.
pub fn redacted(config: &Config) -> Value {
    let mut settings = serde_json::to_value(config).unwrap_or_else(|e| json!({"error": e.to_string()}));
    let derived = json!({
        "issuer": config.issuer_string(),
        "database_url": config.database_url(),
        "master_key_file": config.master_key_file(),
        "master_key_from": if config.keys.master_key.is_some() { "configuration or environment" } else { "file" },
        "outbox_dir": config.outbox_dir(),
        "card_mode": config.card_mode(),
        "production": config.is_production(),
        "ephemeral_store": if config.storage.redis_url.is_some() { "redis" } else { "memory" },
    });
    if let Value::Object(map) = &mut settings {
        map.insert("derived".into(), derived);
    } else {
        let mut map = Map::new();
        map.insert("derived".into(), derived);
        settings = Value::Object(map);
    }
    redact(&mut settings, false);
    settings
}

#[utoipa::path(
    get, path = PATH, tag = "settings",
    responses(
        (status = 200, description = "The effective configuration (sections as in habilis.example.toml, plus \
            `derived`), every secret replaced by \"[redacted]\"", body = Object),
        (status = 403, description = "Not a platform administrator or auditor", body = ErrorBody),
    )
)]
pub async fn show(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, OAuthError> {
    let actor = actor(&state, &headers, crate::unix_now()).await?;
    authorize(&state, &headers, &actor, Operation::Read, &TargetFacts::of("settings", None), "settings")?;
    Ok(Json(redacted(&state.config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRETS: &[&str] = &[
        "S3cretPg",
        "S3cretSsl",
        "S3cretRedis",
        "S3cretSmtp",
        "bWFzdGVyLWtleS1zZWNyZXQtMzItYnl0ZXMtbG9uZyE=",
        "S3cretKw",
    ];

    fn config_with_secrets() -> Config {
        let mut config = Config::default();
        config.storage.database_url =
            Some("postgres://habilis:S3cretPg@db.internal:5432/habilis?sslpassword=S3cretSsl&sslmode=require".into());
        config.storage.redis_url = Some("redis://:S3cretRedis@cache.internal:6379/0".into());
        config.mail.smtp_url = Some(url::Url::parse("smtps://mailer:S3cretSmtp@smtp.example.org:465").unwrap());
        config.keys.master_key = Some("bWFzdGVyLWtleS1zZWNyZXQtMzItYnl0ZXMtbG9uZyE=".into());
        config
    }

    /// Fails when any secret of the configuration reaches the answer, however encoded.
    #[test]
    fn no_secret_reaches_the_settings() {
        let text = redacted(&config_with_secrets()).to_string();
        for secret in SECRETS.iter().filter(|s| **s != "S3cretKw") {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
            let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            assert!(!text.contains(&encoded), "{secret} leaked encoded: {text}");
        }
    }

    #[test]
    fn what_is_not_secret_stays_readable() {
        let settings = redacted(&config_with_secrets());
        assert_eq!(settings["keys"]["master_key"], REDACTED);
        assert_eq!(
            settings["storage"]["database_url"],
            "postgres://habilis:%5Bredacted%5D@db.internal:5432/habilis?sslpassword=%5Bredacted%5D&sslmode=require"
        );
        assert_eq!(settings["storage"]["redis_url"], "redis://:%5Bredacted%5D@cache.internal:6379/0");
        assert_eq!(settings["mail"]["smtp_url"], "smtps://mailer:%5Bredacted%5D@smtp.example.org:465");
        assert!(settings["derived"]["database_url"].as_str().unwrap().contains("db.internal"));
        assert!(settings["derived"]["database_url"].as_str().unwrap().contains("redacted"));
        assert_eq!(settings["keys"]["default_algorithm"], "ES256");
        assert_eq!(settings["tokens"]["access_token_lifetime"], "5m", "a section called tokens is not a secret");
        assert_eq!(settings["mail"]["from"], "Habilis <no-reply@localhost>");
        // Not set: visible as such.
        assert!(redacted(&Config::default())["keys"]["master_key"].is_null());
    }

    #[test]
    fn keyword_strings_and_secret_names_are_redacted() {
        assert_eq!(redact_string("host=db user=h password=S3cretKw"), "host=db user=h password=[redacted]");
        assert_eq!(redact_string("Habilis <no-reply@localhost>"), "Habilis <no-reply@localhost>");
        for key in ["master_key", "smtp_password", "client_secret", "access_token", "private_key_pem", "api_key"] {
            assert!(secret_key(key), "{key}");
        }
        for key in ["master_key_file", "tokens", "outbox_dir", "max_failures", "keys", "secret_dir"] {
            assert!(!secret_key(key), "{key}");
        }
        // Any future setting named like a secret is redacted, whatever its section.
        let mut value = json!({"new_section": {"webhook_secret": "S3cretKw", "nested": [{"password": 42}]}});
        redact(&mut value, false);
        assert_eq!(value, json!({"new_section": {"webhook_secret": REDACTED, "nested": [{"password": REDACTED}]}}));
    }
}

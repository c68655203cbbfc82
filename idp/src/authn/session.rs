//! The browser SSO session: server-side state in the ephemeral store, referenced by an opaque
//! cookie. The session records which factors were completed and when (the login journey compares
//! that with what a request requires) and which clients it signed into (for logout).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use serde::{Deserialize, Serialize};

use crate::ephemeral::EphemeralStore;
use crate::error::OAuthError;

/// One completed authentication factor.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FactorRecord {
    /// RFC 8176 method value, e.g. `pwd`, `otp`, `hwk`, `sc`.
    pub method: String,
    pub at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// Secret: the cookie value and storage key. Never put in a token.
    pub id: String,
    /// Public session identifier (OIDC `sid`), shared with clients for logout.
    pub sid: String,
    pub account_id: String,
    /// Time of the last full authentication (OIDC `auth_time`).
    pub auth_time: i64,
    pub factors: Vec<FactorRecord>,
    pub created_at: i64,
    pub last_seen: i64,
    /// Clients that received tokens through this session (back-channel logout targets).
    pub clients: Vec<String>,
}

impl Session {
    /// RFC 8176 `amr` values of the factors completed, deduplicated, with `mfa` when two or more
    /// distinct kinds of factor were used.
    pub fn amr(&self) -> Vec<String> {
        let mut amr: Vec<String> = Vec::new();
        for f in &self.factors {
            if !amr.contains(&f.method) {
                amr.push(f.method.clone());
            }
        }
        if amr.len() >= 2 && !amr.iter().any(|m| m == "mfa") {
            amr.push("mfa".into());
        }
        amr
    }

    pub fn add_client(&mut self, client_id: &str) {
        if !self.clients.iter().any(|c| c == client_id) {
            self.clients.push(client_id.to_string());
        }
    }
}

/// Session cookie naming and lifetimes, derived from the configuration.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub cookie_name: &'static str,
    pub secure: bool,
    pub idle: Duration,
    pub absolute: Duration,
}

impl SessionSettings {
    /// `__Host-` cookies need `Secure`, which needs https; an http issuer (loopback only, see
    /// config validation) gets a plain `HttpOnly` cookie instead.
    pub fn from_config(config: &crate::config::Config) -> SessionSettings {
        let secure = config.issuer().scheme() == "https";
        SessionSettings {
            cookie_name: if secure { "__Host-habilis-session" } else { "habilis-session" },
            secure,
            idle: config.session.idle_timeout,
            absolute: config.session.absolute_timeout,
        }
    }

    pub fn set_cookie(&self, session_id: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let value = format!("{}={session_id}; Path=/; HttpOnly; SameSite=Lax{secure}", self.cookie_name);
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    pub fn clear_cookie(&self) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let value = format!("{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}", self.cookie_name);
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The session id carried by the request's cookie, if any.
    pub fn cookie_value(&self, headers: &HeaderMap) -> Option<String> {
        cookie(headers, self.cookie_name)
    }
}

/// The session service held in the application state.
#[derive(Clone, Debug)]
pub struct Sessions {
    pub settings: SessionSettings,
}

impl Sessions {
    /// The session of the request's cookie, if it is still valid.
    pub async fn current(
        &self,
        state: &crate::app::AppState,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<Option<Session>, OAuthError> {
        match self.settings.cookie_value(headers) {
            Some(id) => load(state.ephemeral.as_ref(), &self.settings, &id, now).await,
            None => Ok(None),
        }
    }
}

/// Reads one cookie from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn key(id: &str) -> String {
    format!("sess:{id}")
}

/// Loads the session if it exists and has not passed its absolute or idle limit, and refreshes
/// its idle timer.
pub async fn load(
    store: &dyn EphemeralStore,
    settings: &SessionSettings,
    id: &str,
    now: i64,
) -> Result<Option<Session>, OAuthError> {
    let Some(bytes) = store.get(&key(id)).await? else {
        return Ok(None);
    };
    let Ok(mut session) = serde_json::from_slice::<Session>(&bytes) else {
        return Ok(None);
    };
    if now - session.created_at > settings.absolute.as_secs() as i64
        || now - session.last_seen > settings.idle.as_secs() as i64
    {
        store.delete(&key(id)).await?;
        return Ok(None);
    }
    // An administrator ended every session of the account (account disabled, sessions killed).
    if let Some(cutoff) = store.get(&cutoff_key(&session.account_id)).await?
        && std::str::from_utf8(&cutoff)
            .ok()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| session.created_at <= c)
    {
        store.delete(&key(id)).await?;
        return Ok(None);
    }
    if now > session.last_seen {
        session.last_seen = now;
        save(store, settings, &session).await?;
    }
    Ok(Some(session))
}

pub async fn save(store: &dyn EphemeralStore, settings: &SessionSettings, session: &Session) -> Result<(), OAuthError> {
    let bytes = serde_json::to_vec(session).map_err(|_| OAuthError::server_error())?;
    store.put(&key(&session.id), &bytes, settings.idle).await?;
    Ok(())
}

fn cutoff_key(account_id: &str) -> String {
    format!("sess-cutoff:{account_id}")
}

/// Ends every browser session of `account_id` started at or before `at`, on every instance: a
/// session is looked up by its secret id only, so the account keeps a cut-off time that
/// [`load`] compares with each session's start. It lives as long as a session can.
pub async fn end_all(
    store: &dyn EphemeralStore,
    settings: &SessionSettings,
    account_id: &str,
    at: i64,
) -> Result<(), OAuthError> {
    store.put(&cutoff_key(account_id), at.to_string().as_bytes(), settings.absolute).await?;
    Ok(())
}

pub async fn delete(store: &dyn EphemeralStore, id: &str) -> Result<(), OAuthError> {
    store.delete(&key(id)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amr_adds_mfa_for_two_kinds() {
        let mut s = Session {
            id: "s".into(),
            sid: "p".into(),
            account_id: "a".into(),
            auth_time: 1,
            factors: vec![FactorRecord { method: "pwd".into(), at: 1 }],
            created_at: 1,
            last_seen: 1,
            clients: vec![],
        };
        assert_eq!(s.amr(), vec!["pwd"]);
        s.factors.push(FactorRecord { method: "otp".into(), at: 2 });
        assert_eq!(s.amr(), vec!["pwd", "otp", "mfa"]);
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; habilis-session=abc; b=2"));
        assert_eq!(cookie(&h, "habilis-session").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[tokio::test]
    async fn idle_and_absolute_limits() {
        let store = crate::ephemeral::MemoryStore::new(1000);
        let settings = SessionSettings {
            cookie_name: "habilis-session",
            secure: false,
            idle: Duration::from_secs(100),
            absolute: Duration::from_secs(1000),
        };
        let s = Session {
            id: "x".into(),
            sid: "p".into(),
            account_id: "a".into(),
            auth_time: 0,
            factors: vec![],
            created_at: 0,
            last_seen: 0,
            clients: vec![],
        };
        save(&store, &settings, &s).await.unwrap();
        assert!(load(&store, &settings, "x", 50).await.unwrap().is_some());
        assert!(load(&store, &settings, "x", 140).await.unwrap().is_some(), "activity at 50 extended the idle window");
        assert!(load(&store, &settings, "x", 300).await.unwrap().is_none(), "idle too long");
        let s = Session { last_seen: 990, ..s };
        save(&store, &settings, &s).await.unwrap();
        assert!(load(&store, &settings, "x", 1001).await.unwrap().is_none(), "past the absolute limit");
    }

    #[tokio::test]
    async fn end_all_ends_sessions_started_before_the_cutoff() {
        let store = crate::ephemeral::MemoryStore::new(1000);
        let settings = SessionSettings {
            cookie_name: "habilis-session",
            secure: false,
            idle: Duration::from_secs(100),
            absolute: Duration::from_secs(1000),
        };
        let session = |id: &str, account: &str, at: i64| Session {
            id: id.into(),
            sid: format!("sid-{id}"),
            account_id: account.into(),
            auth_time: at,
            factors: vec![],
            created_at: at,
            last_seen: at,
            clients: vec![],
        };
        save(&store, &settings, &session("old", "a", 10)).await.unwrap();
        save(&store, &settings, &session("other", "b", 10)).await.unwrap();
        end_all(&store, &settings, "a", 20).await.unwrap();
        save(&store, &settings, &session("new", "a", 21)).await.unwrap();
        assert!(load(&store, &settings, "old", 30).await.unwrap().is_none(), "ended");
        assert!(load(&store, &settings, "other", 30).await.unwrap().is_some(), "another account's");
        assert!(load(&store, &settings, "new", 30).await.unwrap().is_some(), "a later login");
    }
}

//! Clients' `jwks_uri` key sets, fetched on demand and cached.
//!
//! * A set is reused for [`RemoteJwks::ttl`] (5 min), so a client's traffic costs one fetch per
//!   five minutes, not one per request.
//! * An assertion signed with a key not in the cached set (the client rotated its keys) triggers a
//!   refetch — at most once per [`RemoteJwks::min_refetch`] (30 s) per URI, so a stream of bogus
//!   `kid`s cannot turn Habilis into a request amplifier against the client's server.
//! * When a refetch fails, the previous set keeps serving for up to [`RemoteJwks::max_stale`]
//!   (1 h): a brief outage of the client's JWKS host does not lock it out.
//! * Fetches time out after 5 s, follow no redirects and read at most 256 KiB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use josekit::jwk::{Jwk, JwkSet};
use url::Url;

use super::jose;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
#[error("fetching the client's jwks_uri {uri} failed: {reason}")]
pub(crate) struct FetchError {
    uri: String,
    reason: String,
}

#[derive(Default)]
struct Slot {
    keys: Option<Arc<Vec<Jwk>>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    last_error: Option<FetchError>,
}

pub(crate) struct RemoteJwks {
    http: Option<reqwest::Client>,
    /// One slot per URI, each behind its own async lock: concurrent requests for one client wait
    /// for a single fetch instead of each fetching, and other clients are not held up.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    pub(crate) ttl: Duration,
    pub(crate) min_refetch: Duration,
    pub(crate) max_stale: Duration,
}

impl RemoteJwks {
    pub(crate) fn new() -> RemoteJwks {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("habilis/", env!("CARGO_PKG_VERSION")))
            .build();
        let http = match http {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client for clients' jwks_uri; private_key_jwt with jwks_uri will fail");
                None
            }
        };
        RemoteJwks {
            http,
            slots: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(300),
            min_refetch: Duration::from_secs(30),
            max_stale: Duration::from_secs(3600),
        }
    }

    /// The key set at `uri`. `refresh` asks for a refetch because the cached set lacked the
    /// needed key; it is honoured only if the last attempt is older than `min_refetch`.
    pub(crate) async fn keys(&self, uri: &Url, refresh: bool) -> Result<Arc<Vec<Jwk>>, FetchError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(slots.entry(uri.as_str().to_string()).or_default())
        };
        let mut slot = slot.lock().await;
        let now = Instant::now();
        let fresh = slot.fetched_at.is_some_and(|at| now.duration_since(at) < self.ttl);
        if fresh
            && !refresh
            && let Some(keys) = &slot.keys
        {
            return Ok(Arc::clone(keys));
        }
        let may_fetch = slot.last_attempt.is_none_or(|at| now.duration_since(at) >= self.min_refetch);
        // A refresh request is rate limited; an expired (or never loaded) set is fetched unless a
        // fetch just failed, so an unreachable host is not hammered either.
        let fetch = if refresh { may_fetch } else { may_fetch || slot.last_error.is_none() };
        if fetch {
            slot.last_attempt = Some(now);
            match self.fetch(uri).await {
                Ok(keys) => {
                    let keys = Arc::new(keys);
                    slot.keys = Some(Arc::clone(&keys));
                    slot.fetched_at = Some(Instant::now());
                    slot.last_error = None;
                    return Ok(keys);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "client jwks_uri fetch failed");
                    slot.last_error = Some(e);
                }
            }
        }
        let usable_stale = slot.fetched_at.is_some_and(|at| now.duration_since(at) < self.max_stale);
        match (&slot.keys, usable_stale) {
            (Some(keys), true) => Ok(Arc::clone(keys)),
            _ => Err(slot
                .last_error
                .clone()
                .unwrap_or_else(|| FetchError { uri: uri.to_string(), reason: "no key set could be loaded".into() })),
        }
    }

    async fn fetch(&self, uri: &Url) -> Result<Vec<Jwk>, FetchError> {
        let error = |reason: String| FetchError { uri: uri.to_string(), reason };
        let http = self.http.as_ref().ok_or_else(|| error("no HTTP client".into()))?;
        let mut response = http
            .get(uri.clone())
            .header(reqwest::header::ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| error(e.to_string()))?;
        if !response.status().is_success() {
            return Err(error(format!("HTTP status {}", response.status())));
        }
        if response.content_length().is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(error(format!("the key set is larger than {MAX_BODY_BYTES} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error(e.to_string()))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(error(format!("the key set is larger than {MAX_BODY_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let set = JwkSet::from_bytes(&body).map_err(|e| error(format!("not a JWK set: {e}")))?;
        let mut keys = Vec::new();
        for jwk in set.keys() {
            if jose::has_private_members(jwk) {
                tracing::error!(uri = %uri, kid = ?jwk.key_id(), "a client's jwks_uri publishes private key material; that key is ignored (tell the client it is compromised)");
                continue;
            }
            keys.push(jwk.clone());
        }
        Ok(keys)
    }
}

//! The console's browser state, kept in sealed cookies: AES-256-GCM under a key derived from the
//! client secret (every instance of the console that shares the secret can read them; nobody
//! else can read or forge them). The access token never reaches page scripts (`HttpOnly`).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// A logged-in administrator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub access_token: String,
    /// For the logout at Habilis (`id_token_hint`).
    pub id_token: String,
    /// When the access token expires (Unix seconds).
    pub expires_at: i64,
    /// The CSRF token of this session's forms.
    pub csrf: String,
    /// Who is logged in, as the ID token names them.
    pub name: String,
    pub acr: String,
    /// The scopes Habilis granted: `admin` (platform and organisation administrators) and
    /// `audit` (platform administrators and auditors). They only choose the links and buttons
    /// shown; the API decides what each call may do.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Whether the token manages platform-wide things (clients, keys, roles, organisations), as
    /// `GET /api/admin/v1/me` answered at login: the scopes alone do not tell (an organisation
    /// administrator who is also an auditor holds both).
    #[serde(default)]
    pub platform: bool,
}

impl Session {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// A login under way: what the callback must find again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub created_at: i64,
    /// The console page to show after the login (a path below the console's prefix, checked by
    /// `pages::return_path`): where the person was when the login was asked for.
    #[serde(default)]
    pub return_to: Option<String>,
}

/// How long a login may take, from the console's redirect to its callback.
pub const LOGIN_LIFETIME: i64 = 600;

/// Seals and opens the console's cookies.
#[derive(Clone)]
pub struct CookieJar {
    key: [u8; 32],
    secure: bool,
}

impl CookieJar {
    /// `secret`: the client secret (the key is derived from it); `secure`: served over https
    /// (`__Host-` names, `Secure`).
    pub fn new(secret: &str, secure: bool) -> CookieJar {
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"habilis-admin cookie key v1\0");
        hasher.update(secret.as_bytes());
        CookieJar { key: hasher.finalize().into(), secure }
    }

    pub fn session_name(&self) -> &'static str {
        if self.secure { "__Host-habilis-admin" } else { "habilis-admin" }
    }

    pub fn login_name(&self) -> &'static str {
        if self.secure { "__Host-habilis-admin-login" } else { "habilis-admin-login" }
    }

    fn seal(&self, name: &str, value: &impl Serialize) -> Option<String> {
        let plaintext = serde_json::to_vec(value).ok()?;
        let cipher = Aes256Gcm::new_from_slice(&self.key).ok()?;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher.encrypt(&Nonce::from(nonce), Payload { msg: &plaintext, aad: name.as_bytes() }).ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    fn open<T: DeserializeOwned>(&self, name: &str, text: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        if bytes.len() < 12 + 16 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let cipher = Aes256Gcm::new_from_slice(&self.key).ok()?;
        let plaintext = cipher.decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad: name.as_bytes() }).ok()?;
        serde_json::from_slice(&plaintext).ok()
    }

    fn set_cookie(&self, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let max_age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
        let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{max_age}{secure}");
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("habilis-admin-invalid=; Max-Age=0"))
    }

    /// The session of the request, if its cookie opens.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let name = self.session_name();
        cookie(headers, name).and_then(|v| self.open(name, &v))
    }

    pub fn set_session(&self, session: &Session) -> Option<HeaderValue> {
        let name = self.session_name();
        Some(self.set_cookie(name, &self.seal(name, session)?, None))
    }

    pub fn clear_session(&self) -> HeaderValue {
        self.set_cookie(self.session_name(), "", Some(0))
    }

    pub fn pending(&self, headers: &HeaderMap) -> Option<PendingLogin> {
        let name = self.login_name();
        cookie(headers, name).and_then(|v| self.open(name, &v))
    }

    pub fn set_pending(&self, pending: &PendingLogin) -> Option<HeaderValue> {
        let name = self.login_name();
        Some(self.set_cookie(name, &self.seal(name, pending)?, Some(LOGIN_LIFETIME)))
    }

    pub fn clear_pending(&self) -> HeaderValue {
        self.set_cookie(self.login_name(), "", Some(0))
    }
}

/// One cookie of the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// A random URL-safe token (32 bytes).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Constant-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            access_token: "at".into(),
            id_token: "idt".into(),
            expires_at: 10,
            csrf: "c".into(),
            name: "Ada".into(),
            acr: "eidas2".into(),
            scopes: vec!["openid".into(), "admin".into()],
            platform: false,
        }
    }

    fn request_with(cookie_header: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookie_header).unwrap());
        h
    }

    #[test]
    fn sealed_cookies_open_only_with_the_same_secret_and_name() {
        let jar = CookieJar::new("secret", true);
        let set = jar.set_session(&session()).unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("__Host-habilis-admin=") && set.contains("Secure") && set.contains("HttpOnly"));
        let value = set.split(';').next().unwrap();
        let opened = jar.session(&request_with(value)).expect("opens");
        assert_eq!(opened.access_token, "at");
        assert!(CookieJar::new("other", true).session(&request_with(value)).is_none(), "another key");
        // The same bytes under the login cookie's name do not open (the name is authenticated).
        let renamed = value.replacen("__Host-habilis-admin=", "__Host-habilis-admin-login=", 1);
        assert!(jar.pending(&request_with(&renamed)).is_none());
        // Tampering is detected, garbage is ignored.
        let mut tampered = value.to_string();
        tampered.pop();
        tampered.push(if value.ends_with('A') { 'B' } else { 'A' });
        assert!(jar.session(&request_with(&tampered)).is_none());
        assert!(jar.session(&request_with("__Host-habilis-admin=%%%")).is_none());
    }

    #[test]
    fn plain_http_cookies_have_no_host_prefix() {
        let jar = CookieJar::new("s", false);
        let set = jar.clear_session();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("habilis-admin=;") && !set.contains("Secure"), "{set}");
    }

    #[test]
    fn tokens_compare() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert_eq!(random_token().len(), 43);
    }
}

//! Subject identifiers and the standard claims released per scope (OIDC Core §5.1, §5.4, §8).

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::clients::{Client, SubjectType};
use crate::store::Account;

/// The `sub` a client sees for an account: the account id, or for pairwise clients a value
/// derived from the client's sector (host of its redirect URIs) so that clients cannot correlate
/// users (OIDC Core §8.1).
/// The scope under which Pro Santé Connect releases its claims; apps built for PSC send it.
pub const PSC_SCOPE: &str = "scope_all";

pub fn subject_for(client: &Client, account_id: &str) -> String {
    match client.subject_type() {
        SubjectType::Public => account_id.to_string(),
        SubjectType::Pairwise => {
            let sector = client.sector_identifier().unwrap_or(client.client_id());
            let digest = sha2::Sha256::digest(format!("habilis-pairwise\x00{sector}\x00{account_id}").as_bytes());
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        }
    }
}

/// Claims of `account` released for `scopes`.
pub fn account_claims(account: &Account, scopes: &[&str]) -> Map<String, Value> {
    let mut claims = Map::new();
    if scopes.contains(&"profile") {
        let name = [account.given_name.as_deref(), account.family_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !name.is_empty() {
            claims.insert("name".into(), json!(name));
        }
        if let Some(v) = &account.given_name {
            claims.insert("given_name".into(), json!(v));
        }
        if let Some(v) = &account.family_name {
            claims.insert("family_name".into(), json!(v));
        }
        claims.insert("preferred_username".into(), json!(account.login));
        if let Some(v) = &account.locale {
            claims.insert("locale".into(), json!(v));
        }
        claims.insert("updated_at".into(), json!(account.updated_at));
    }
    if scopes.contains(&"email")
        && let Some(email) = &account.email
    {
        claims.insert("email".into(), json!(email));
        // Addresses are set by administrators or at enrolment; ownership is proven only by the
        // email one-time code factor, which records it separately.
        claims.insert("email_verified".into(), json!(false));
    }
    claims
}

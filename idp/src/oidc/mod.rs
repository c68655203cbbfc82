//! OpenID Connect endpoints. Discovery is generated from what is enabled: each endpoint module
//! contributes its metadata, so nothing is advertised that is not implemented.

pub mod admission;
pub mod authorize;
pub mod claims;
pub mod consent;
pub mod discovery;
pub mod interaction;
pub mod introspect;
pub mod jwks;
pub mod logout;
pub mod par;
pub mod params;
pub mod registration;
pub mod revoke;
pub mod token;
pub mod tokens;
pub mod userinfo;

//! OpenID Connect endpoints. Discovery is generated from what is enabled: each endpoint module
//! contributes its metadata, so nothing is advertised that is not implemented.

pub mod discovery;
pub mod jwks;
pub mod params;
pub mod tokens;

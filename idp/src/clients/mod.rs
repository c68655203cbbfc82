//! Registered OIDC clients: their validated metadata ([`Client`]), the in-memory registry every
//! endpoint reads ([`ClientRegistry`]), client authentication at the token, PAR, introspection and
//! revocation endpoints ([`ClientRegistry::authenticate`]), and the `habilis client` commands
//! ([`cli`]).
//!
//! Clients are registered by administrators (CLI, later the admin API), or register themselves
//! with an initial access token an administrator issued ([`registration`]: RFC 7591, RFC 7592) —
//! never by open dynamic registration. Metadata follows RFC 7591 either way.

mod auth;
pub mod cli;
mod jose;
mod model;
pub mod registration;
mod registry;
mod remote_jwks;

#[cfg(test)]
mod tests;

pub use auth::{
    ASSERTION_LEEWAY_SECS, AuthenticatedClient, CertificateCheck, JWT_BEARER_ASSERTION_TYPE,
    MAX_ASSERTION_LIFETIME_SECS, NoCertificate,
};
pub use jose::ASSERTION_SIGNING_ALGS;
pub(crate) use model::MAX_ACCESS_TOKEN_LIFETIME;
pub use model::{
    AcrLevel, ApplicationType, CertificateName, Client, ClientKeys, ClientMetadataError, DEFAULT_SCOPE, GrantType,
    MetadataErrorCode, SubjectType, TOKEN_EXCHANGE_GRANT, TokenEndpointAuthMethod, validate_client_id,
};
pub use registry::{
    ClientEntry, ClientRegistry, DEFAULT_REFRESH_INTERVAL, MIN_SECRET_LEN, PreparedRegistration, Registration,
    RegistryError,
};

//! Habilis: a strong-authentication OpenID Connect provider for French health professionals.
//!
//! The crate is both the library used by black-box tests and the `habilis` binary. Module map:
//! `config` (typed configuration), `app` (state and router), `store` (durable data),
//! `ephemeral` (short-lived data), `admin` (the admin REST API), `keys` (signing keys, secrets at rest), `oidc` (protocol
//! endpoints), `authn` (login factors), `web` (HTTP concerns shared by pages and APIs).

pub mod admin;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod authn;
pub mod backup;
pub mod cli;
pub mod clients;
pub mod config;
pub mod console;
pub mod cps;
pub mod ephemeral;
pub mod error;
pub mod habilitation;
pub mod ids;
pub mod keys;
pub mod lifecycle;
pub mod mail;
pub mod oidc;
pub mod person;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod web;

/// Current time as Unix seconds: the unit every stored time uses.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

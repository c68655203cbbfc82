//! Authentication factors. Each factor is its own module; the login journey (acr/amr ladder,
//! step-up) composes them.

pub mod journey;
pub mod login;
pub mod password;
pub mod session;

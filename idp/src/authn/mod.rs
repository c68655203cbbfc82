//! Authentication factors. Each factor is its own module; the login journey (acr/amr ladder,
//! step-up) composes them.

pub mod account;
pub mod email_otp;
pub mod journey;
pub mod lockout;
pub mod login;
pub mod passkeys;
pub mod password;
pub mod recovery;
pub mod session;
pub mod throttle;
pub mod totp;

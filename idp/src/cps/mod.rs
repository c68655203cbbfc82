//! CPS smart-card login (shared/DOMAIN.md, "The CPS card certificate"): the card's X.509
//! certificate reaches Habilis through a TLS client-certificate handshake, either on Habilis' own
//! card listener or through a trusted reverse proxy, and Habilis validates it itself.
//!
//! `certificate` reads the card holder from the DER, `trust` loads the IGC-Santé anchors, `crl`
//! keeps the revocation lists, `validate` ties them into one verdict, `devpki` makes a test PKI.

pub mod certificate;
pub mod crl;
pub mod devpki;
pub mod listener;
pub mod login;
pub mod mtls;
pub mod presented;
pub mod service;
pub mod trust;
pub mod validate;

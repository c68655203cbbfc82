//! Arbitrary bytes as a presented card certificate: reading it must never panic, whatever
//! reaches the card listener or the proxy header.
#![no_main]

use habilis_idp::cps::certificate::{parse_card, pem_or_der_to_der};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(card) = parse_card(data) {
        // An accepted parse is self-consistent.
        assert!(!card.id_nat.as_str().is_empty());
        assert_eq!(card.fingerprint, habilis_idp::cps::certificate::fingerprint(data));
    }
    if let Some(der) = pem_or_der_to_der(data) {
        // Whatever was extracted is one certificate, and reading it does not panic either.
        let _ = parse_card(&der);
    }
});

//! The certification authorities card certificates must chain to: the IGC-Santé roots
//! ("AC RACINE IGC-SANTE FORT", or the TEST chain on a test platform) and the intermediates
//! issuing the cards ("AC IGC-SANTE FORT PERSONNES"), loaded from the files ANS publishes.
//!
//! Self-signed certificates (issuer = subject and the signature verifies with their own key)
//! become trust anchors; every other certificate is an intermediate offered to path building,
//! which is how a bundle holding a root and its intermediates is meant.

use std::path::PathBuf;

use anyhow::{Context, bail};
use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm};

use crate::cps::certificate::{der_children, der_content, name_to_rfc4514, parse_single_certificate};
use crate::cps::devpki::DEV_PKI_ORGANISATION;

/// The anchors and intermediates of the card PKI, as DER. Immutable once built.
#[derive(Debug, Clone)]
pub struct TrustStore {
    anchors: Vec<Vec<u8>>,
    intermediates: Vec<Vec<u8>>,
}

impl TrustStore {
    /// Loads certificates from files: PEM (any number of `CERTIFICATE` blocks, or `PKCS7`
    /// blocks), a DER certificate, or a DER/PEM certs-only PKCS#7 bundle (`.p7b`/`.p7c`, the
    /// form ANS publishes its chains in). Errors name the file and what is wrong with it.
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<TrustStore> {
        if paths.is_empty() {
            bail!("no trust anchor file is configured: give the IGC-Santé root and intermediate certificates");
        }
        let mut labelled = Vec::new();
        for path in paths {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let certs = certificates_from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for (i, der) in certs.into_iter().enumerate() {
                labelled.push((format!("{} (certificate {})", path.display(), i + 1), der));
            }
        }
        TrustStore::build(labelled)
    }

    /// Builds a store from DER certificates (anchors are recognised as in [`TrustStore::load`]).
    pub fn from_der(certs: Vec<Vec<u8>>) -> anyhow::Result<TrustStore> {
        let labelled = certs.into_iter().enumerate().map(|(i, der)| (format!("certificate {}", i + 1), der)).collect();
        TrustStore::build(labelled)
    }

    fn build(certs: Vec<(String, Vec<u8>)>) -> anyhow::Result<TrustStore> {
        if certs.is_empty() {
            bail!("no certificate found: give the IGC-Santé root and intermediate certificates");
        }
        let mut anchors: Vec<Vec<u8>> = Vec::new();
        let mut intermediates: Vec<Vec<u8>> = Vec::new();
        let mut others = Vec::new();
        for (label, der) in certs {
            if anchors.contains(&der) || intermediates.contains(&der) {
                continue; // the same certificate in two files
            }
            let cert =
                parse_single_certificate(&der).with_context(|| format!("{label}: not a valid X.509 certificate"))?;
            if is_self_signed(&der) {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                    .map_err(|e| anyhow::anyhow!("{label}: cannot be used as a trust anchor: {e}"))?;
                anchors.push(der);
            } else {
                if !cert.is_ca() {
                    bail!(
                        "{label} ({}) is not a CA certificate: trust files hold the root and intermediate authorities, not cards or servers",
                        name_to_rfc4514(cert.subject())
                    );
                }
                others.push(name_to_rfc4514(cert.subject()));
                intermediates.push(der);
            }
        }
        if anchors.is_empty() {
            bail!(
                "none of the certificates is a self-signed root (found only {}); add the root authority, e.g. AC RACINE IGC-SANTE FORT",
                others.join("; ")
            );
        }
        Ok(TrustStore { anchors, intermediates })
    }

    /// Self-signed roots, DER.
    pub fn anchors(&self) -> &[Vec<u8>] {
        &self.anchors
    }

    /// Intermediate authorities, DER.
    pub fn intermediates(&self) -> &[Vec<u8>] {
        &self.intermediates
    }

    /// Whether an anchor is a test root: IGC-Santé test chains have the word TEST in their
    /// names, and `devpki` roots have O = "Habilis dev-pki". The word is matched whole
    /// (case-insensitively) in each subject value, so that e.g. "ATTESTATION" is not a test name.
    pub fn contains_test_anchor(&self) -> bool {
        self.anchors.iter().any(|der| {
            let Some(cert) = parse_single_certificate(der) else { return false };
            cert.subject().iter_attributes().any(|attribute| {
                let Ok(value) = attribute.as_str() else { return false };
                value == DEV_PKI_ORGANISATION
                    || value.split(|c: char| !c.is_alphanumeric()).any(|word| word.eq_ignore_ascii_case("TEST"))
            })
        })
    }

    /// One line per certificate: role, subject and end of validity, for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        let roles = self
            .anchors
            .iter()
            .map(|der| ("anchor", der))
            .chain(self.intermediates.iter().map(|der| ("intermediate", der)));
        roles
            .map(|(role, der)| match parse_single_certificate(der) {
                Some(cert) => {
                    let not_after = cert.validity().not_after.timestamp();
                    let until = time::OffsetDateTime::from_unix_timestamp(not_after)
                        .ok()
                        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                        .unwrap_or_else(|| not_after.to_string());
                    format!("{role}: {} (valid until {until})", name_to_rfc4514(cert.subject()))
                }
                None => format!("{role}: unreadable certificate"),
            })
            .collect()
    }
}

/// Reads the certificates of one trust file; the error says what the content is not.
pub fn certificates_from_bytes(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if looks_like_pem(bytes) {
        let mut certs = Vec::new();
        for (i, block) in x509_parser::pem::Pem::iter_from_buffer(bytes).enumerate() {
            let block = block.map_err(|e| format!("PEM block {} cannot be decoded ({e})", i + 1))?;
            match block.label.as_str() {
                "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE" => {
                    // `TRUSTED CERTIFICATE` carries OpenSSL trust settings after the certificate.
                    let der = crate::cps::certificate::first_element(&block.contents)
                        .filter(|der| parse_single_certificate(der).is_some())
                        .ok_or_else(|| {
                            format!("PEM block {} ({}) is not a valid X.509 certificate", i + 1, block.label)
                        })?;
                    certs.push(der.to_vec());
                }
                "PKCS7" | "CMS" => certs.extend(pkcs7_certificates(&block.contents)?),
                "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
                    return Err(format!(
                        "PEM block {} is a private key: trust files must hold certificates only (and keys must not be spread around)",
                        i + 1
                    ));
                }
                // CRLs or parameters next to the certificates are not the trust store's business.
                _ => {}
            }
        }
        if certs.is_empty() {
            return Err("holds no CERTIFICATE or PKCS7 PEM block".into());
        }
        return Ok(certs);
    }
    if parse_single_certificate(bytes).is_some() {
        return Ok(vec![bytes.to_vec()]);
    }
    pkcs7_certificates(bytes).map_err(|pkcs7_error| {
        format!("is neither PEM, nor a DER certificate, nor a DER PKCS#7 bundle ({pkcs7_error})")
    })
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Certificates of a certs-only PKCS#7 SignedData (what `openssl crl2pkcs7 -nocrl` writes and
/// Windows exports as .p7b). Nothing is verified here: there are no signers in such bundles.
fn pkcs7_certificates(der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let pkcs7 = openssl::pkcs7::Pkcs7::from_der(der).map_err(|_| "not a PKCS#7 structure".to_string())?;
    let stack = pkcs7
        .signed()
        .and_then(|signed| signed.certificates())
        .ok_or_else(|| "the PKCS#7 structure carries no certificates".to_string())?;
    let mut certs = Vec::new();
    for cert in stack {
        let der = cert.to_der().map_err(|e| format!("a certificate of the PKCS#7 bundle cannot be encoded: {e}"))?;
        if parse_single_certificate(&der).is_none() {
            return Err("the PKCS#7 bundle holds an invalid certificate".into());
        }
        certs.push(der);
    }
    if certs.is_empty() {
        return Err("the PKCS#7 bundle holds no certificate".into());
    }
    Ok(certs)
}

/// Issuer = subject and the signature verifies with the certificate's own key.
pub(crate) fn is_self_signed(der: &[u8]) -> bool {
    let Some(cert) = parse_single_certificate(der) else { return false };
    cert.issuer().as_raw() == cert.subject().as_raw() && signature_verifies(der, cert.public_key().raw)
}

/// Whether the signature of the certificate `cert_der` verifies with the public key
/// `issuer_spki` (a DER SubjectPublicKeyInfo), with the algorithms webpki supports (the
/// same choice as chain validation: RSA ≥ 2048 PKCS#1/PSS, ECDSA P-256/P-384, Ed25519).
pub(crate) fn signature_verifies(cert_der: &[u8], issuer_spki: &[u8]) -> bool {
    fn split_signed(cert_der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
        let parts = der_children(der_content(cert_der)?)?;
        let [tbs, algorithm, signature] = parts.as_slice() else { return None };
        let signature = der_content(signature)?.split_first().filter(|(unused, _)| **unused == 0)?.1;
        Some((tbs, der_content(algorithm)?, signature))
    }
    fn split_spki(spki: &[u8]) -> Option<(&[u8], &[u8])> {
        let parts = der_children(der_content(spki)?)?;
        let [algorithm, key] = parts.as_slice() else { return None };
        let key = der_content(key)?.split_first().filter(|(unused, _)| **unused == 0)?.1;
        Some((der_content(algorithm)?, key))
    }
    let (Some((tbs, signature_algorithm, signature)), Some((key_algorithm, key))) =
        (split_signed(cert_der), split_spki(issuer_spki))
    else {
        return false;
    };
    webpki::ALL_VERIFICATION_ALGS.iter().any(|algorithm: &&dyn SignatureVerificationAlgorithm| {
        algorithm.public_key_alg_id().as_ref() == key_algorithm
            && algorithm.signature_alg_id().as_ref() == signature_algorithm
            && algorithm.verify_signature(key, tbs, signature).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::cps::certificate::{der_encode, pem_or_der_to_der};

    fn pki() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        crate::cps::devpki::generate(tmp.path(), &["localhost".into()], None).unwrap();
        tmp
    }

    fn der_of(dir: &Path, file: &str) -> Vec<u8> {
        pem_or_der_to_der(&fs::read(dir.join(file)).unwrap()).unwrap()
    }

    /// A certs-only PKCS#7 SignedData, as `openssl crl2pkcs7 -nocrl` writes it.
    fn certs_only_pkcs7(certs: &[&[u8]]) -> Vec<u8> {
        let signed_data_oid = der_encode(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]);
        let data_oid = der_encode(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01]);
        let mut signed_data = der_encode(0x02, &[1]);
        signed_data.extend(der_encode(0x31, &[]));
        signed_data.extend(der_encode(0x30, &data_oid));
        signed_data.extend(der_encode(0xa0, &certs.concat()));
        signed_data.extend(der_encode(0x31, &[]));
        let mut content_info = signed_data_oid;
        content_info.extend(der_encode(0xa0, &der_encode(0x30, &signed_data)));
        der_encode(0x30, &content_info)
    }

    #[test]
    fn loads_a_pem_bundle_and_sorts_anchors_from_intermediates() {
        let tmp = pki();
        let store = TrustStore::load(&[tmp.path().join("trust-bundle.pem")]).unwrap();
        assert_eq!(store.anchors(), [der_of(tmp.path(), "root-ca.pem")]);
        assert_eq!(store.intermediates(), [der_of(tmp.path(), "personnes-ca.pem")]);
        assert!(store.contains_test_anchor());
        let lines = store.describe();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("anchor: CN=AC RACINE HABILIS TEST,O=Habilis dev-pki,C=FR (valid until "),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("intermediate: CN=AC HABILIS TEST PERSONNES"), "{}", lines[1]);
    }

    #[test]
    fn loads_der_certificates_and_pkcs7_bundles_and_deduplicates() {
        let tmp = pki();
        let root = der_of(tmp.path(), "root-ca.pem");
        let intermediate = der_of(tmp.path(), "personnes-ca.pem");
        fs::write(tmp.path().join("root.der"), &root).unwrap();
        let p7b = certs_only_pkcs7(&[&intermediate, &root]);
        fs::write(tmp.path().join("chain.p7b"), &p7b).unwrap();
        let p7_pem = format!(
            "-----BEGIN PKCS7-----\n{}\n-----END PKCS7-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &p7b)
        );
        fs::write(tmp.path().join("chain.p7c.pem"), p7_pem).unwrap();
        let store = TrustStore::load(&[
            tmp.path().join("root.der"),
            tmp.path().join("chain.p7b"),
            tmp.path().join("chain.p7c.pem"),
            tmp.path().join("trust-bundle.pem"),
        ])
        .unwrap();
        assert_eq!(store.anchors(), std::slice::from_ref(&root));
        assert_eq!(store.intermediates(), std::slice::from_ref(&intermediate));

        let from_der = TrustStore::from_der(vec![intermediate.clone(), root.clone()]).unwrap();
        assert_eq!(from_der.anchors(), [root]);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let tmp = pki();
        let missing = tmp.path().join("missing.pem");
        let error = format!("{:#}", TrustStore::load(std::slice::from_ref(&missing)).unwrap_err());
        assert!(error.contains("missing.pem"), "{error}");

        let garbage = tmp.path().join("garbage.crt");
        fs::write(&garbage, b"not a certificate").unwrap();
        let error = format!("{:#}", TrustStore::load(&[garbage]).unwrap_err());
        assert!(error.contains("garbage.crt") && error.contains("neither PEM"), "{error}");

        let key = tmp.path().join("root-ca.key.pem");
        let error = format!("{:#}", TrustStore::load(&[key]).unwrap_err());
        assert!(error.contains("root-ca.key.pem") && error.contains("private key"), "{error}");

        let only_intermediate = tmp.path().join("personnes-ca.pem");
        let error = format!("{:#}", TrustStore::load(&[only_intermediate]).unwrap_err());
        assert!(error.contains("self-signed root") && error.contains("AC HABILIS TEST PERSONNES"), "{error}");

        let card = tmp.path().join("cards/doctor.pem");
        let error = format!("{:#}", TrustStore::load(&[tmp.path().join("root-ca.pem"), card]).unwrap_err());
        assert!(error.contains("doctor.pem") && error.contains("not a CA"), "{error}");

        let broken = tmp.path().join("broken.pem");
        fs::write(&broken, "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n").unwrap();
        let error = format!("{:#}", TrustStore::load(&[broken]).unwrap_err());
        assert!(error.contains("broken.pem") && error.contains("not a valid X.509"), "{error}");

        let empty = tmp.path().join("empty.pem");
        fs::write(&empty, "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n").unwrap();
        let error = format!("{:#}", TrustStore::load(&[empty]).unwrap_err());
        assert!(error.contains("no CERTIFICATE"), "{error}");

        assert!(TrustStore::load(&[]).is_err());
        assert!(TrustStore::from_der(vec![]).is_err());
        assert!(TrustStore::from_der(vec![b"junk".to_vec()]).is_err());
    }

    #[test]
    fn self_signature_is_verified_not_just_names() {
        let tmp = pki();
        let root = der_of(tmp.path(), "root-ca.pem");
        assert!(is_self_signed(&root));
        assert!(is_self_signed(&der_of(tmp.path(), "org-self-signed.pem")));
        assert!(!is_self_signed(&der_of(tmp.path(), "personnes-ca.pem")));
        // Flip a byte of the signature: same names, signature no longer verifies.
        let mut forged = root.clone();
        let last = forged.len() - 3;
        forged[last] ^= 0x01;
        assert!(!is_self_signed(&forged));
        let error = TrustStore::from_der(vec![forged]).unwrap_err().to_string();
        assert!(error.contains("not a CA") || error.contains("self-signed"), "{error}");
    }

    #[test]
    fn test_anchor_detection() {
        let tmp = pki();
        let other = TrustStore::load(&[tmp.path().join("other-root-ca.pem")]).unwrap();
        assert!(other.contains_test_anchor());
        // A production-looking root is not a test anchor (and ATTESTATION is not TEST).
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "AC RACINE IGC-SANTE FORT ATTESTATION");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "ASIP-SANTE");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let production = params.self_signed(&key).unwrap();
        let store = TrustStore::from_der(vec![production.der().to_vec()]).unwrap();
        assert!(!store.contains_test_anchor());
        params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, "IGC-SANTE test");
        let test_root = params.self_signed(&key).unwrap();
        assert!(TrustStore::from_der(vec![test_root.der().to_vec()]).unwrap().contains_test_anchor());
    }
}

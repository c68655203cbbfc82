//! Where a client certificate comes from: the TLS handshake of the card listener (direct mode), or
//! a header set by a TLS-terminating reverse proxy — believed only from the configured proxy
//! addresses. Either way only the certificate travels; its validation is Habilis' own.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{Extensions, HeaderMap};

use crate::config::ProxyHeaderFormat;
use crate::cps::service::CardLogin;

/// The certificate chain a request presents (leaf first), as DER.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// No certificate: the user cancelled the chooser, has no card in the reader, or the request
    /// did not come through a card-login entry point.
    Nothing,
    Chain(Vec<Vec<u8>>),
    /// The proxy header arrived from an address that is not a trusted proxy: an attack indicator.
    Forged {
        header: String,
    },
    /// The trusted proxy sent a header that is not a certificate.
    Unreadable,
}

/// The certificate of this request, from the TLS layer or the trusted proxy's header.
pub fn presented_chain(card: &CardLogin, extensions: &Extensions, headers: &HeaderMap, peer: SocketAddr) -> Presented {
    if let Some(tls) = extensions.get::<Arc<axum_server::tls::TlsInfo>>() {
        return match tls.peer_certificates.is_empty() {
            true => Presented::Nothing,
            false => Presented::Chain(tls.peer_certificates.clone()),
        };
    }
    let Some(name) = &card.proxy_header else { return Presented::Nothing };
    let Some(value) = headers.get(name) else { return Presented::Nothing };
    // Believed only from a trusted proxy, and only on the card host: another server block of the
    // same proxy that forgets to clear the header must not let a client supply a certificate
    // (card certificates are public).
    if !card.is_trusted_proxy(&peer) || !card.is_card_host(headers) {
        return Presented::Forged { header: name.as_str().to_string() };
    }
    let Ok(value) = value.to_str() else { return Presented::Unreadable };
    let value = value.trim();
    // nginx sends an empty value when the browser presented no certificate.
    if value.is_empty() || value == "(null)" || value == "-" {
        return Presented::Nothing;
    }
    let chain = match card.proxy_format {
        ProxyHeaderFormat::Nginx => pem_chain(&percent_decode(value)),
        ProxyHeaderFormat::Xfcc => xfcc_chain(value),
    };
    if chain.is_empty() { Presented::Unreadable } else { Presented::Chain(chain) }
}

fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()
}

/// Every CERTIFICATE block of a PEM text, as DER.
fn pem_chain(pem: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok).map(|c| c.to_vec()).collect()
}

/// Envoy's `x-forwarded-client-cert`: elements separated by `,` (one per proxy hop, the first is
/// the client's), each `key=value` pairs separated by `;`, values optionally quoted. `Cert` holds
/// the URL-encoded PEM leaf, `Chain` the URL-encoded PEM chain.
fn xfcc_chain(value: &str) -> Vec<Vec<u8>> {
    let first = split_unquoted(value, ',').into_iter().next().unwrap_or_default();
    let mut leaf = Vec::new();
    let mut chain = Vec::new();
    for pair in split_unquoted(&first, ';') {
        let Some((key, raw)) = pair.split_once('=') else { continue };
        let raw = raw.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "cert" => leaf = pem_chain(&percent_decode(raw)),
            "chain" => chain = pem_chain(&percent_decode(raw)),
            _ => {}
        }
    }
    if leaf.is_empty() {
        return chain;
    }
    // The chain, when sent, starts with the leaf again.
    let first = leaf[0].clone();
    leaf.extend(chain.into_iter().filter(|c| *c != first));
    leaf
}

fn split_unquoted(value: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for ch in value.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                current.push(ch);
            }
            c if c == separator && !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_pem() -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert =
            rcgen::CertificateParams::new(vec!["client".into()]).expect("params").self_signed(&key).expect("cert");
        (cert.pem(), cert.der().to_vec())
    }

    fn encode(s: &str) -> String {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn nginx_escaped_pem_is_decoded() {
        let (pem, der) = sample_pem();
        assert_eq!(pem_chain(&percent_decode(&encode(&pem))), vec![der]);
    }

    #[test]
    fn xfcc_takes_the_first_element_cert_and_chain() {
        let (pem, der) = sample_pem();
        let (other_pem, other_der) = sample_pem();
        let header = format!(
            "By=spiffe://proxy;Hash=abc;Cert=\"{}\";Chain=\"{}\",By=spiffe://second;Cert=\"{}\"",
            encode(&pem),
            encode(&format!("{pem}{other_pem}")),
            encode(&other_pem)
        );
        assert_eq!(xfcc_chain(&header), vec![der.clone(), other_der]);
        assert_eq!(xfcc_chain("By=x;Hash=y"), Vec::<Vec<u8>>::new());
        assert_eq!(xfcc_chain(&format!("Cert={}", encode(&pem))), vec![der]);
    }

    #[test]
    fn garbage_gives_no_certificate() {
        assert!(pem_chain("not a pem").is_empty());
        assert!(pem_chain("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----").is_empty());
    }
}

/// The TLS client certificate of a request on the card listener (RFC 8705 mTLS endpoints);
/// empty on the main listener.
#[derive(Clone, Debug, Default)]
pub struct MtlsCertificate(Option<Arc<axum_server::tls::TlsInfo>>);

impl MtlsCertificate {
    /// The chain as the client sent it, leaf first; `None` without a certificate.
    pub fn chain(&self) -> Option<&[Vec<u8>]> {
        self.0.as_ref().map(|t| t.peer_certificates.as_slice()).filter(|c| !c.is_empty())
    }

    /// RFC 8705 x5t#S256 of the leaf.
    pub fn thumbprint(&self) -> Option<String> {
        self.chain().and_then(|c| c.first()).map(|leaf| crate::cps::certificate::fingerprint(leaf))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for MtlsCertificate {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(MtlsCertificate(parts.extensions.get::<Arc<axum_server::tls::TlsInfo>>().cloned()))
    }
}

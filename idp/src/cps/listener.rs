//! The card listener (direct mode): TLS terminated by Habilis itself, asking every connection for
//! an *optional* client certificate. The TLS layer accepts any certificate whose handshake
//! signature is valid — proof that the client holds the key (the card, behind its PIN) — and
//! leaves the verdict (chain, dates, usage, revocation, idNat) to the application, so that a
//! wrong, expired or revoked card gets a readable page instead of a browser TLS error
//! (shared/DEPENDENCIES.md). The certificate authorities of the trust store are sent as hints so
//! that browsers offer only card certificates in their chooser.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

use crate::app::AppState;
use crate::cps::trust::TrustStore;

/// Accepts any client certificate at the TLS layer, but only with a valid handshake signature.
#[derive(Debug)]
struct ApplicationValidatesCertificates {
    algorithms: WebPkiSupportedAlgorithms,
    hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for ApplicationValidatesCertificates {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The subject names of the trust store's certificates, as TLS `certificate_authorities` hints.
fn hints(trust: &TrustStore) -> Vec<DistinguishedName> {
    trust
        .anchors()
        .iter()
        .chain(trust.intermediates())
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            Some(DistinguishedName::from(cert.subject().as_raw().to_vec()))
        })
        .collect()
}

/// The rustls settings of the card listener: its certificate chain and key (PEM files) and the
/// optional client-certificate request.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    trust: &TrustStore,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("cannot read {}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert_file.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("{} is not a PEM private key", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(ApplicationValidatesCertificates {
        algorithms: provider.signature_verification_algorithms,
        hints: hints(trust),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the certificate does not match the key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the card router on the card listener until the handle is told to shut down.
pub async fn serve_card_listener(
    state: AppState,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    handle: axum_server::Handle<SocketAddr>,
) -> std::io::Result<()> {
    let app = crate::cps::login::card_router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server =
        axum_server::tls_rustls::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))?;
    server.handle(handle).serve(app).await
}

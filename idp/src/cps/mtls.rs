//! RFC 8705 client authentication on the card listener: `tls_client_auth` (a certificate chaining
//! to the trust store, carrying the name the client registered) and `self_signed_tls_client_auth`
//! (a certificate registered in the client's `jwks`). The TLS handshake already proved that the
//! client holds the certificate's key.

use std::sync::Arc;

use crate::app::AppState;
use crate::clients::{AuthenticatedClient, CertificateName, Client, TokenEndpointAuthMethod};
use crate::cps::presented::MtlsCertificate;
use crate::error::{OAuthError, OAuthErrorCode};

fn invalid_client(description: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidClient, description)
}

/// The certificate check of one request: its TLS certificate against the card trust store.
pub struct RequestCertificate<'a> {
    pub state: &'a AppState,
    pub certificate: &'a MtlsCertificate,
    pub now: i64,
}

impl crate::clients::CertificateCheck for RequestCertificate<'_> {
    fn authenticate(&self, client: Arc<Client>) -> Result<AuthenticatedClient, OAuthError> {
        authenticate(self.state, client, self.certificate, self.now)
    }
}

/// Authenticates `client`, registered for a certificate method, with the request's certificate.
pub fn authenticate(
    state: &AppState,
    client: Arc<Client>,
    certificate: &MtlsCertificate,
    now: i64,
) -> Result<AuthenticatedClient, OAuthError> {
    let method = client.token_endpoint_auth_method();
    let Some(chain) = certificate.chain() else {
        let alias = state.card.as_ref().filter(|c| c.tls.is_some()).map(|c| c.public_url.clone());
        return Err(invalid_client(match alias {
            Some(url) => format!(
                "this client authenticates with its TLS certificate ({method}): call the mTLS endpoints under {url} with it"
            ),
            None => format!("this client authenticates with its TLS certificate ({method}), but no mTLS listener runs"),
        }));
    };
    let thumbprint = crate::cps::certificate::fingerprint(&chain[0]);
    match method {
        TokenEndpointAuthMethod::SelfSignedTlsClientAuth => {
            if !client.self_signed_certificates().iter().any(|t| t == &thumbprint) {
                return Err(invalid_client("the TLS certificate is not one of the certificates registered in jwks"));
            }
        }
        TokenEndpointAuthMethod::TlsClientAuth => {
            let card = state
                .card
                .as_ref()
                .ok_or_else(|| invalid_client("no trust anchors are configured for tls_client_auth"))?;
            let snapshot = card.crls.snapshot();
            card.validator.validate_client_certificate(chain, &snapshot, card.revocation, now).map_err(
                |rejection| invalid_client(format!("the TLS client certificate is not acceptable: {rejection}")),
            )?;
            let expected =
                client.tls_client_auth_name().ok_or_else(|| invalid_client("no certificate name registered"))?;
            if !name_matches(&chain[0], expected) {
                return Err(invalid_client(
                    "the TLS client certificate does not carry the name registered for this client",
                ));
            }
        }
        _ => return Err(invalid_client("this client does not authenticate with a certificate")),
    }
    Ok(AuthenticatedClient { client, method, certificate_thumbprint: Some(thumbprint) })
}

/// Whether the certificate carries the registered name (RFC 8705 §2.1.2).
fn name_matches(der: &[u8], expected: &CertificateName) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
    let sans: Vec<GeneralName<'_>> =
        cert.subject_alternative_name().ok().flatten().map(|ext| ext.value.general_names.clone()).unwrap_or_default();
    match expected {
        CertificateName::SubjectDn(dn) => dn_attributes(dn) == subject_attributes(&cert),
        CertificateName::SanDns(name) => {
            sans.iter().any(|g| matches!(g, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(name)))
        }
        CertificateName::SanUri(uri) => sans.iter().any(|g| matches!(g, GeneralName::URI(u) if u == uri)),
        CertificateName::SanEmail(mail) => {
            sans.iter().any(|g| matches!(g, GeneralName::RFC822Name(m) if m.eq_ignore_ascii_case(mail)))
        }
        CertificateName::SanIp(ip) => {
            let Ok(expected) = ip.parse::<std::net::IpAddr>() else { return false };
            sans.iter().any(|g| match g {
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).map(|b| std::net::IpAddr::from(b) == expected).unwrap_or(false),
                    16 => <[u8; 16]>::try_from(*bytes).map(|b| std::net::IpAddr::from(b) == expected).unwrap_or(false),
                    _ => false,
                },
                _ => false,
            })
        }
    }
}

/// The (type, value) pairs of an RFC 4514 string, types upper-cased, sorted: RDN order differs
/// between RFC 4514 (most specific first) and the DER, and the chain is verified anyway.
fn dn_attributes(dn: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    let push = |part: &str, out: &mut Vec<(String, String)>| {
        if let Some((k, v)) = part.split_once('=') {
            out.push((k.trim().to_ascii_uppercase(), v.trim().to_string()));
        }
    };
    for ch in dn.chars() {
        match ch {
            _ if escaped => {
                current.push(ch);
                escaped = false;
            }
            '\\' => escaped = true,
            ',' | '+' => push(&std::mem::take(&mut current), &mut out),
            _ => current.push(ch),
        }
    }
    push(&current, &mut out);
    out.sort();
    out
}

fn subject_attributes(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<(String, String)> {
    let registry = x509_parser::objects::oid_registry();
    let mut out: Vec<(String, String)> = cert
        .subject()
        .iter_attributes()
        .filter_map(|attr| {
            let name = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                .map(|s| s.to_ascii_uppercase())
                .unwrap_or_else(|_| attr.attr_type().to_id_string());
            Some((name, attr.as_str().ok()?.to_string()))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_strings_compare_as_attribute_sets() {
        assert_eq!(
            dn_attributes("CN=Habilis Test App, O=Hôpital Test"),
            dn_attributes("o=Hôpital Test,cn=Habilis Test App")
        );
        assert_ne!(dn_attributes("CN=App, O=A"), dn_attributes("CN=App, O=B"));
        assert_eq!(dn_attributes(r"CN=Dupont\, Jean"), vec![("CN".to_string(), "Dupont, Jean".to_string())]);
    }

    #[test]
    fn subject_and_san_names_match() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["app.example.org".into()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "Habilis Test App");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Hôpital Test");
        let cert = params.self_signed(&key).expect("cert");
        let der = cert.der().to_vec();
        assert!(name_matches(&der, &CertificateName::SubjectDn("CN=Habilis Test App,O=Hôpital Test".into())));
        assert!(!name_matches(&der, &CertificateName::SubjectDn("CN=Other App,O=Hôpital Test".into())));
        assert!(name_matches(&der, &CertificateName::SanDns("APP.example.org".into())));
        assert!(!name_matches(&der, &CertificateName::SanDns("evil.example.org".into())));
        assert!(!name_matches(b"garbage", &CertificateName::SanDns("app.example.org".into())));
    }
}

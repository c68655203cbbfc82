//! One verdict for a presented card certificate: parse, dates, chain to the IGC-Santé anchors,
//! key usages, revocation, then the holder's idNat.
//!
//! The checks run in that order so the rejection names the most fundamental problem (an
//! expired card from an unknown CA is reported as expired, what the holder can act on; a
//! revoked card without idNat as revoked). Chain and CRL signature checks are rustls-webpki's;
//! the rest reads the certificate with x509-parser.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{
    EndEntityCert, ExpirationPolicy, ExtendedKeyUsageValidator, KeyPurposeIdIter, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

use crate::cps::certificate::{CardCertificate, fingerprint, name_to_rfc4514, parse_card, parse_single_certificate};
use crate::cps::crl::CrlSet;
use crate::cps::trust::TrustStore;

/// Why a card certificate is refused. `code()` is stable (audit, metrics); `Display` is a
/// sentence for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardRejection {
    #[error("the certificate cannot be read (malformed DER)")]
    Malformed,
    #[error("the certificate subject carries no national identifier (idNat) of a health professional")]
    NoIdNat,
    #[error("the certificate carries an invalid idNat: {0}")]
    InvalidIdNat(String),
    #[error("the certificate has expired")]
    Expired,
    #[error("the certificate is not valid yet")]
    NotYetValid,
    #[error("the certificate was not issued by a trusted certification authority")]
    UnknownIssuer,
    #[error("the certificate has been revoked")]
    Revoked,
    #[error("the certificate is not meant for this use: {0}")]
    WrongUsage(String),
    #[error("the revocation status of the certificate is unknown: no usable revocation list for its issuer")]
    RevocationUnknown,
    #[error("the revocation list of the certificate's issuer is out of date")]
    RevocationStale,
    #[error("no client certificate was presented")]
    NoCertificate,
}

impl CardRejection {
    /// Stable snake_case code for audit records and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            CardRejection::Malformed => "malformed",
            CardRejection::NoIdNat => "no_id_nat",
            CardRejection::InvalidIdNat(_) => "invalid_id_nat",
            CardRejection::Expired => "expired",
            CardRejection::NotYetValid => "not_yet_valid",
            CardRejection::UnknownIssuer => "unknown_issuer",
            CardRejection::Revoked => "revoked",
            CardRejection::WrongUsage(_) => "wrong_usage",
            CardRejection::RevocationUnknown => "revocation_unknown",
            CardRejection::RevocationStale => "revocation_stale",
            CardRejection::NoCertificate => "no_certificate",
        }
    }
}

/// What a card certificate must be allowed to do (configuration: the values IGC-Santé puts in
/// card certificates are not confirmed, see shared/DOMAIN.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePolicy {
    /// KeyUsage bits that must all be set, named as in RFC 5280 (`digitalSignature`,
    /// `nonRepudiation` (or `contentCommitment`), `keyEncipherment`, `dataEncipherment`,
    /// `keyAgreement`, `keyCertSign`, `cRLSign`, `encipherOnly`, `decipherOnly`).
    pub key_usage: Vec<String>,
    /// Extended key usages that must all be present: `clientAuth`, `serverAuth`,
    /// `emailProtection`, `codeSigning`, `timeStamping`, `OCSPSigning`, or dotted OIDs.
    pub extended_key_usage: Vec<String>,
    /// Certificate policy OIDs (dotted); when not empty the card must carry at least one.
    pub policies: Vec<String>,
}

impl Default for UsagePolicy {
    fn default() -> Self {
        UsagePolicy {
            key_usage: vec!["digitalSignature".into()],
            extended_key_usage: vec!["clientAuth".into()],
            policies: Vec::new(),
        }
    }
}

impl UsagePolicy {
    /// Checks the names and OIDs, for configuration loading: an unknown name would otherwise
    /// make every card fail with `WrongUsage`.
    pub fn check(&self) -> Result<(), String> {
        for name in &self.key_usage {
            if key_usage_bit(name).is_none() {
                return Err(format!(
                    "unknown key usage `{name}`: use the RFC 5280 names (digitalSignature, nonRepudiation, keyEncipherment, …)"
                ));
            }
        }
        for name in &self.extended_key_usage {
            if eku_oid(name).is_none() {
                return Err(format!(
                    "unknown extended key usage `{name}`: use clientAuth, serverAuth, … or a dotted OID"
                ));
            }
        }
        for oid in &self.policies {
            if parse_dotted_oid(oid).is_none() {
                return Err(format!("certificate policy `{oid}` is not a dotted OID"));
            }
        }
        Ok(())
    }
}

/// Whether the card's revocation status is a hard requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationMode {
    /// No usable, fresh CRL for the issuer: the card is refused.
    Enforce,
    /// No usable, fresh CRL: the card is accepted with [`RevocationStatus::Unchecked`] (an
    /// explicit, logged setting). A card listed in a CRL is refused in both modes.
    FailOpen,
}

/// Outcome of the revocation check of an accepted card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStatus {
    /// Not listed in a fresh CRL of its issuer whose signature verified.
    Good,
    /// FailOpen only: `RevocationUnknown` or `RevocationStale`, what Enforce would have refused.
    Unchecked(CardRejection),
}

/// An accepted card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedCard {
    pub card: CardCertificate,
    pub revocation: RevocationStatus,
    /// Fingerprints (as `CardCertificate::fingerprint`) of the verified path: the card, the
    /// intermediates, then the anchor.
    pub chain_fingerprints: Vec<String>,
}

/// Validates card certificates against a trust store and a usage policy.
pub struct CardValidator {
    trust: Arc<TrustStore>,
    anchors: Vec<TrustAnchor<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
    policy: UsagePolicy,
    /// Policy EKUs as OID arcs, for webpki's EKU check.
    required_ekus: Vec<Vec<usize>>,
}

impl CardValidator {
    pub fn new(trust: Arc<TrustStore>, policy: UsagePolicy) -> Self {
        // `TrustStore` only admits anchors webpki accepts, so nothing is dropped here.
        let anchors = trust
            .anchors()
            .iter()
            .filter_map(|der| {
                let der = CertificateDer::from(der.as_slice());
                webpki::anchor_from_trusted_cert(&der).ok().map(|anchor| anchor.to_owned())
            })
            .collect();
        let intermediates = trust.intermediates().iter().map(|der| CertificateDer::from(der.clone())).collect();
        // An unknown name is kept as an impossible requirement (an empty arc list matches no
        // certificate) so the card fails closed; `validate` names it in the rejection.
        let required_ekus = policy
            .extended_key_usage
            .iter()
            .map(|name| eku_oid(name).map(|oid| oid.iter().map(|arc| *arc as usize).collect()).unwrap_or_default())
            .collect();
        CardValidator { trust, anchors, intermediates, policy, required_ekus }
    }

    /// Validates a presented chain at `now` (Unix seconds). `chain[0]` is the card; the other
    /// certificates are only candidates for path building (clients send anything from nothing
    /// to the whole chain). See the module documentation for the order of the checks.
    pub fn validate(
        &self,
        chain: &[Vec<u8>],
        crls: &CrlSet,
        mode: RevocationMode,
        now: i64,
    ) -> Result<ValidatedCard, CardRejection> {
        let eku = PolicyEku { required: &self.required_ekus };
        let der = chain.first().ok_or(CardRejection::NoCertificate)?;
        let verified = self.verify(chain, crls, mode, now, &eku, UsageRules::Card)?;
        let card = parse_card(der)?;
        Ok(ValidatedCard { card, revocation: verified.revocation, chain_fingerprints: verified.chain_fingerprints })
    }

    /// Validates the certificate of an OIDC client using RFC 8705 `tls_client_auth` (e.g. an
    /// organisation certificate of the same PKI): dates, chain to the same anchors, clientAuth
    /// when the certificate has an EKU extension, and revocation as for cards. The card rules
    /// (the `UsagePolicy` KeyUsage and policies, the idNat) do not apply: such certificates name
    /// an application, not a person. Matching the registered name is the caller's business.
    pub fn validate_client_certificate(
        &self,
        chain: &[Vec<u8>],
        crls: &CrlSet,
        mode: RevocationMode,
        now: i64,
    ) -> Result<ValidatedCertificate, CardRejection> {
        let client_auth = [CLIENT_AUTH.to_vec()];
        let eku = PolicyEku { required: &client_auth };
        let verified = self.verify(chain, crls, mode, now, &eku, UsageRules::ClientApplication)?;
        let der = chain.first().ok_or(CardRejection::NoCertificate)?;
        let cert = parse_single_certificate(der).ok_or(CardRejection::Malformed)?;
        Ok(ValidatedCertificate {
            subject: name_to_rfc4514(cert.subject()),
            fingerprint: fingerprint(der),
            revocation: verified.revocation,
            chain_fingerprints: verified.chain_fingerprints,
        })
    }

    /// The steps shared by cards and client certificates: parse, dates, chain, usage,
    /// revocation.
    fn verify(
        &self,
        chain: &[Vec<u8>],
        crls: &CrlSet,
        mode: RevocationMode,
        now: i64,
        eku: &PolicyEku<'_>,
        rules: UsageRules,
    ) -> Result<Verified, CardRejection> {
        let der = chain.first().ok_or(CardRejection::NoCertificate)?;
        let cert = parse_single_certificate(der).ok_or(CardRejection::Malformed)?;

        // Dates first, from the certificate itself, so they are reported even when the chain
        // is unknown.
        let validity = cert.validity();
        if now < validity.not_before.timestamp() {
            return Err(CardRejection::NotYetValid);
        }
        if now > validity.not_after.timestamp() {
            return Err(CardRejection::Expired);
        }

        let end_entity_der = CertificateDer::from(der.as_slice());
        let end_entity = EndEntityCert::try_from(&end_entity_der).map_err(|_| CardRejection::Malformed)?;
        let mut intermediates = self.intermediates.clone();
        intermediates.extend(chain.iter().skip(1).map(|extra| CertificateDer::from(extra.as_slice())));
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(u64::try_from(now).unwrap_or(0)));

        let path = end_entity
            .verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &self.anchors, &intermediates, time, eku, None, None)
            .map_err(|e| self.chain_rejection(&e, eku))?;
        let mut chain_fingerprints = vec![fingerprint(der)];
        chain_fingerprints.extend(path.intermediate_certificates().map(|cert| fingerprint(cert.der().as_ref())));
        if let Some(anchor_der) = self.anchor_der(path.anchor()) {
            chain_fingerprints.push(fingerprint(anchor_der));
        }

        if rules == UsageRules::Card {
            self.check_usage(&cert)?;
        }

        let revocation = self.check_revocation(&end_entity, &cert, &intermediates, time, crls, mode, now, eku)?;
        Ok(Verified { revocation, chain_fingerprints })
    }

    fn chain_rejection(&self, error: &webpki::Error, eku: &PolicyEku<'_>) -> CardRejection {
        #[allow(deprecated)] // `RequiredEkuNotFound` is still what some paths return
        match error {
            webpki::Error::RequiredEkuNotFound
            | webpki::Error::RequiredEkuNotFoundContext(_)
            | webpki::Error::EmptyEkuExtension => {
                CardRejection::WrongUsage(format!("the extended key usage does not include {}", eku.describe()))
            }
            webpki::Error::CaUsedAsEndEntity => {
                CardRejection::WrongUsage("a certification authority certificate is not a card".into())
            }
            webpki::Error::BadDer
            | webpki::Error::BadDerTime
            | webpki::Error::TrailingData(_)
            | webpki::Error::MalformedExtensions
            | webpki::Error::ExtensionValueInvalid
            | webpki::Error::UnsupportedCertVersion
            | webpki::Error::UnsupportedCriticalExtension
            | webpki::Error::InvalidCertValidity
            | webpki::Error::InvalidSerialNumber => CardRejection::Malformed,
            // Unknown CA, bad signature, unsupported algorithm, an expired intermediate, path
            // constraints: in every case no trusted path exists.
            _ => CardRejection::UnknownIssuer,
        }
    }

    /// The DER of the store's anchor webpki ended the path on.
    fn anchor_der(&self, anchor: &TrustAnchor<'_>) -> Option<&[u8]> {
        self.anchors
            .iter()
            .zip(self.trust.anchors())
            .find(|(candidate, _)| {
                candidate.subject.as_ref() == anchor.subject.as_ref()
                    && candidate.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
            })
            .map(|(_, der)| der.as_slice())
    }

    /// KeyUsage, EKU and policy requirements of the `UsagePolicy`, read from the card.
    fn check_usage(&self, cert: &X509Certificate<'_>) -> Result<(), CardRejection> {
        let malformed = |_| CardRejection::Malformed;
        if !self.policy.key_usage.is_empty() {
            let flags = cert.key_usage().map_err(malformed)?.map(|ku| ku.value.flags);
            let missing: Vec<&str> = self
                .policy
                .key_usage
                .iter()
                .filter(|name| match (key_usage_bit(name), flags) {
                    (Some(bit), Some(flags)) => flags & (1 << bit) == 0,
                    _ => true,
                })
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                let detail = match flags {
                    None => "the certificate has no key usage extension".to_string(),
                    Some(_) => "its key usage lacks".to_string(),
                };
                return Err(CardRejection::WrongUsage(format!("{detail}; required: {}", missing.join(", "))));
            }
        }
        if !self.policy.extended_key_usage.is_empty() {
            let present: Vec<Vec<u64>> = match cert.extended_key_usage().map_err(malformed)? {
                Some(eku) => {
                    let eku = eku.value;
                    let mut oids: Vec<Vec<u64>> = Vec::new();
                    for (flag, name) in [
                        (eku.server_auth, "serverAuth"),
                        (eku.client_auth, "clientAuth"),
                        (eku.code_signing, "codeSigning"),
                        (eku.email_protection, "emailProtection"),
                        (eku.time_stamping, "timeStamping"),
                        (eku.ocsp_signing, "OCSPSigning"),
                    ] {
                        if let (true, Some(oid)) = (flag, eku_oid(name)) {
                            oids.push(oid);
                        }
                    }
                    oids.extend(eku.other.iter().filter_map(|oid| oid.iter().map(|arcs| arcs.collect())));
                    oids
                }
                None => Vec::new(),
            };
            let missing: Vec<&str> = self
                .policy
                .extended_key_usage
                .iter()
                .filter(|name| eku_oid(name).is_none_or(|oid| !present.contains(&oid)))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(CardRejection::WrongUsage(format!(
                    "the extended key usage does not include {}",
                    missing.join(" and ")
                )));
            }
        }
        if !self.policy.policies.is_empty() {
            let mut carried = Vec::new();
            for extension in cert.extensions() {
                if let ParsedExtension::CertificatePolicies(policies) = extension.parsed_extension() {
                    carried.extend(policies.iter().map(|p| p.policy_id.to_id_string()));
                }
            }
            if !self.policy.policies.iter().any(|required| carried.contains(required)) {
                return Err(CardRejection::WrongUsage(format!(
                    "the certificate carries none of the required policies {}",
                    self.policy.policies.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Revocation against the CRL of the card's issuer, with webpki verifying the CRL's
    /// signature with the issuer's key. A listed serial is always a refusal; a missing or
    /// unusable CRL and a stale one are refusals in Enforce mode and `Unchecked` in FailOpen.
    #[allow(clippy::too_many_arguments)]
    fn check_revocation(
        &self,
        end_entity: &EndEntityCert<'_>,
        cert: &X509Certificate<'_>,
        intermediates: &[CertificateDer<'_>],
        time: UnixTime,
        crls: &CrlSet,
        mode: RevocationMode,
        now: i64,
        eku: &PolicyEku<'_>,
    ) -> Result<RevocationStatus, CardRejection> {
        let unchecked = |reason: CardRejection| match mode {
            RevocationMode::Enforce => Err(reason),
            RevocationMode::FailOpen => Ok(RevocationStatus::Unchecked(reason)),
        };
        let Some((entry, crl)) = crls.for_issuer(cert.issuer().as_raw()) else {
            return unchecked(CardRejection::RevocationUnknown);
        };
        let crl_list = [crl];
        let options = match RevocationOptionsBuilder::new(&crl_list) {
            Ok(builder) => builder
                .with_depth(RevocationCheckDepth::EndEntity)
                .with_status_policy(UnknownStatusPolicy::Deny)
                // Freshness is our own rule (`CrlSet::is_stale`), not the CRL's nextUpdate.
                .with_expiration_policy(ExpirationPolicy::Ignore)
                .build(),
            Err(_) => return unchecked(CardRejection::RevocationUnknown),
        };
        let verdict = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            time,
            eku,
            Some(options),
            None,
        );
        match verdict {
            // Checked even when the CRL is stale: a revocation does not expire.
            Err(webpki::Error::CertRevoked) => Err(CardRejection::Revoked),
            Ok(_) if crls.is_stale(entry, now) => unchecked(CardRejection::RevocationStale),
            Ok(_) => Ok(RevocationStatus::Good),
            // The CRL is not authoritative for this card, its signature does not verify with
            // the issuer's key, or it is unusable: the status is unknown.
            Err(_) => unchecked(CardRejection::RevocationUnknown),
        }
    }
}

/// An accepted RFC 8705 client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedCertificate {
    /// RFC 4514 form of the subject.
    pub subject: String,
    /// RFC 8705 `x5t#S256` of the certificate.
    pub fingerprint: String,
    pub revocation: RevocationStatus,
    /// As in [`ValidatedCard::chain_fingerprints`].
    pub chain_fingerprints: Vec<String>,
}

/// What `verify` established.
struct Verified {
    revocation: RevocationStatus,
    chain_fingerprints: Vec<String>,
}

/// Which usage rules apply beyond webpki's EKU check.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UsageRules {
    /// The `UsagePolicy` (KeyUsage, EKU, certificate policies) of card certificates.
    Card,
    /// An application's certificate: webpki's EKU check only.
    ClientApplication,
}

/// id-kp-clientAuth.
const CLIENT_AUTH: &[usize] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];

/// webpki's EKU hook: when a certificate of the path has an EKU extension it must carry every
/// EKU of the policy (anyExtendedKeyUsage counts, as intermediates often use it). A missing
/// extension is accepted here (RFC 5280: no restriction); `check_usage` then requires the
/// policy's EKUs on the card itself.
struct PolicyEku<'a> {
    required: &'a [Vec<usize>],
}

const ANY_EXTENDED_KEY_USAGE: &[usize] = &[2, 5, 29, 37, 0];

impl PolicyEku<'_> {
    /// The required EKUs, named when they have a name, for rejection messages.
    fn describe(&self) -> String {
        let names: Vec<String> = self
            .required
            .iter()
            .map(|oid| {
                let dotted = oid.iter().map(usize::to_string).collect::<Vec<_>>().join(".");
                let known =
                    ["serverAuth", "clientAuth", "codeSigning", "emailProtection", "timeStamping", "OCSPSigning"]
                        .into_iter()
                        .find(|name| {
                            eku_oid(name).is_some_and(|arcs| arcs.iter().map(|a| *a as usize).eq(oid.iter().copied()))
                        });
                known.map(str::to_string).unwrap_or(dotted)
            })
            .collect();
        names.join(" and ")
    }
}

impl ExtendedKeyUsageValidator for PolicyEku<'_> {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present = Vec::new();
        for purpose in iter {
            present.push(purpose?.to_decoded_oid());
        }
        if present.is_empty() || present.iter().any(|oid| oid == ANY_EXTENDED_KEY_USAGE) {
            return Ok(());
        }
        if self.required.iter().all(|oid| present.contains(oid)) {
            Ok(())
        } else {
            Err(webpki::Error::RequiredEkuNotFoundContext(webpki::RequiredEkuNotFoundContext {
                required: webpki::KeyUsage::client_auth(),
                present,
            }))
        }
    }
}

/// Bit number (RFC 5280 4.2.1.3) of a KeyUsage name.
fn key_usage_bit(name: &str) -> Option<u16> {
    Some(match name {
        "digitalSignature" => 0,
        "nonRepudiation" | "contentCommitment" => 1,
        "keyEncipherment" => 2,
        "dataEncipherment" => 3,
        "keyAgreement" => 4,
        "keyCertSign" => 5,
        "cRLSign" => 6,
        "encipherOnly" => 7,
        "decipherOnly" => 8,
        _ => return None,
    })
}

/// OID arcs of an EKU name or dotted OID.
fn eku_oid(name: &str) -> Option<Vec<u64>> {
    let kp = |last: u64| Some(vec![1, 3, 6, 1, 5, 5, 7, 3, last]);
    match name {
        "serverAuth" => kp(1),
        "clientAuth" => kp(2),
        "codeSigning" => kp(3),
        "emailProtection" => kp(4),
        "timeStamping" => kp(8),
        "OCSPSigning" => kp(9),
        other => parse_dotted_oid(other),
    }
}

fn parse_dotted_oid(text: &str) -> Option<Vec<u64>> {
    let arcs: Option<Vec<u64>> = text.split('.').map(|arc| arc.parse().ok()).collect();
    arcs.filter(|arcs| arcs.len() >= 2 && arcs[0] <= 2)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::cps::certificate::pem_or_der_to_der;
    use crate::cps::crl::{CrlEntry, CrlSet};
    use crate::cps::devpki;

    /// A generated dev PKI with its validator and CRL.
    struct Fixture {
        dir: tempfile::TempDir,
        validator: CardValidator,
        crls: CrlSet,
        now: i64,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            devpki::generate(dir.path(), &["localhost".into()], Some("http://crl.habilis.test/personnes.crl")).unwrap();
            let trust = Arc::new(TrustStore::load(&[dir.path().join("trust-bundle.pem")]).unwrap());
            let validator = CardValidator::new(trust, UsagePolicy::default());
            let now = crate::unix_now();
            let crls = crl_set(&fs::read(dir.path().join("crl.der")).unwrap(), now);
            Fixture { dir, validator, crls, now }
        }

        fn card(&self, name: &str) -> Vec<u8> {
            pem_or_der_to_der(&fs::read(self.dir.path().join(format!("cards/{name}.pem"))).unwrap()).unwrap()
        }

        fn file(&self, name: &str) -> Vec<u8> {
            pem_or_der_to_der(&fs::read(self.dir.path().join(name)).unwrap()).unwrap()
        }

        fn validate(&self, name: &str, mode: RevocationMode) -> Result<ValidatedCard, CardRejection> {
            self.validator.validate(&[self.card(name)], &self.crls, mode, self.now)
        }

        fn manifest(&self) -> serde_json::Value {
            serde_json::from_slice(&fs::read(self.dir.path().join("manifest.json")).unwrap()).unwrap()
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    fn crl_set(der: &[u8], fetched_at: i64) -> CrlSet {
        let entry = CrlEntry::from_der(der.to_vec(), "test".into(), fetched_at).unwrap();
        CrlSet::from_entries(vec![entry], Duration::from_secs(48 * 3600))
    }

    #[test]
    fn accepts_the_valid_cards() {
        let f = Fixture::new();
        let manifest = f.manifest();
        for name in ["doctor", "pharmacist", "staff"] {
            let validated = f.validate(name, RevocationMode::Enforce).unwrap();
            assert_eq!(validated.revocation, RevocationStatus::Good);
            assert_eq!(validated.card.id_nat.as_str(), manifest["cards"][name]["id_nat"]);
            assert_eq!(
                validated.chain_fingerprints,
                [
                    validated.card.fingerprint.clone(),
                    fingerprint(&f.file("personnes-ca.pem")),
                    fingerprint(&f.file("root-ca.pem"))
                ]
            );
        }
        assert_eq!(
            f.validate("staff", RevocationMode::Enforce).unwrap().card.staff_suffix.as_deref(),
            Some("CPAT0001")
        );
    }

    #[test]
    fn every_card_gets_the_outcome_the_manifest_announces() {
        let f = Fixture::new();
        let manifest = f.manifest();
        for (name, entry) in manifest["cards"].as_object().unwrap() {
            let outcome = match f.validate(name, RevocationMode::Enforce) {
                Ok(_) => "accepted",
                Err(rejection) => rejection.code(),
            };
            assert_eq!(outcome, entry["expected"], "{name}");
        }
    }

    #[test]
    fn no_certificate() {
        let f = Fixture::new();
        assert_eq!(
            f.validator.validate(&[], &f.crls, RevocationMode::Enforce, f.now),
            Err(CardRejection::NoCertificate)
        );
    }

    #[test]
    fn malformed() {
        let f = Fixture::new();
        let mut truncated = f.card("doctor");
        truncated.truncate(100);
        for input in [b"garbage".to_vec(), truncated, Vec::new()] {
            assert_eq!(
                f.validator.validate(&[input], &f.crls, RevocationMode::Enforce, f.now),
                Err(CardRejection::Malformed)
            );
        }
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let f = Fixture::new();
        assert_eq!(f.validate("expired", RevocationMode::Enforce), Err(CardRejection::Expired));
        let doctor = f.card("doctor");
        let card = parse_card(&doctor).unwrap();
        let before =
            f.validator.validate(std::slice::from_ref(&doctor), &f.crls, RevocationMode::Enforce, card.not_before - 1);
        assert_eq!(before, Err(CardRejection::NotYetValid));
        let after = f.validator.validate(&[doctor], &f.crls, RevocationMode::Enforce, card.not_after + 1);
        assert_eq!(after, Err(CardRejection::Expired));
    }

    #[test]
    fn unknown_issuer_even_when_the_client_sends_its_ca() {
        let f = Fixture::new();
        assert_eq!(f.validate("wrong-ca", RevocationMode::Enforce), Err(CardRejection::UnknownIssuer));
        let with_ca = vec![f.card("wrong-ca"), f.file("other-root-ca.pem")];
        assert_eq!(
            f.validator.validate(&with_ca, &f.crls, RevocationMode::FailOpen, f.now),
            Err(CardRejection::UnknownIssuer)
        );
        // A self-signed certificate is not a card either.
        let self_signed = vec![f.file("org-self-signed.pem")];
        assert_eq!(
            f.validator.validate(&self_signed, &f.crls, RevocationMode::Enforce, f.now),
            Err(CardRejection::UnknownIssuer)
        );
    }

    #[test]
    fn intermediate_sent_by_the_client_completes_the_path() {
        let f = Fixture::new();
        let root_only = Arc::new(TrustStore::load(&[f.path().join("root-ca.pem")]).unwrap());
        let validator = CardValidator::new(root_only, UsagePolicy::default());
        let doctor = f.card("doctor");
        assert_eq!(
            validator.validate(std::slice::from_ref(&doctor), &f.crls, RevocationMode::Enforce, f.now),
            Err(CardRejection::UnknownIssuer)
        );
        let with_intermediate = vec![doctor, f.file("personnes-ca.pem")];
        assert!(validator.validate(&with_intermediate, &f.crls, RevocationMode::Enforce, f.now).is_ok());
    }

    #[test]
    fn revoked_even_in_fail_open() {
        let f = Fixture::new();
        assert_eq!(f.validate("revoked", RevocationMode::Enforce), Err(CardRejection::Revoked));
        assert_eq!(f.validate("revoked", RevocationMode::FailOpen), Err(CardRejection::Revoked));
        // Still revoked when the CRL that lists it has gone stale.
        let stale_now = f.now + 3 * 24 * 3600;
        let revoked = f.card("revoked");
        assert_eq!(
            f.validator.validate(&[revoked], &f.crls, RevocationMode::FailOpen, stale_now),
            Err(CardRejection::Revoked)
        );
    }

    #[test]
    fn wrong_usage() {
        let f = Fixture::new();
        assert!(
            matches!(f.validate("wrong-eku", RevocationMode::Enforce), Err(CardRejection::WrongUsage(m)) if m.contains("clientAuth"))
        );
        // The server certificate has no clientAuth either.
        let server = vec![f.file("server.pem")];
        assert!(matches!(
            f.validator.validate(&server, &f.crls, RevocationMode::FailOpen, f.now),
            Err(CardRejection::WrongUsage(_))
        ));

        let trust = Arc::new(TrustStore::load(&[f.path().join("trust-bundle.pem")]).unwrap());
        let needs_non_repudiation = CardValidator::new(
            trust.clone(),
            UsagePolicy {
                key_usage: vec!["digitalSignature".into(), "nonRepudiation".into()],
                ..UsagePolicy::default()
            },
        );
        let doctor = vec![f.card("doctor")];
        let rejection = needs_non_repudiation.validate(&doctor, &f.crls, RevocationMode::Enforce, f.now);
        assert!(matches!(rejection, Err(CardRejection::WrongUsage(m)) if m.contains("nonRepudiation")));

        let needs_policy = CardValidator::new(
            trust.clone(),
            UsagePolicy { policies: vec!["1.2.250.1.71.4.2.1".into()], ..UsagePolicy::default() },
        );
        let rejection = needs_policy.validate(&doctor, &f.crls, RevocationMode::Enforce, f.now);
        assert!(matches!(rejection, Err(CardRejection::WrongUsage(m)) if m.contains("1.2.250.1.71.4.2.1")));

        let needs_custom_eku = CardValidator::new(
            trust.clone(),
            UsagePolicy { extended_key_usage: vec!["1.2.250.1.71.4.9".into()], ..UsagePolicy::default() },
        );
        let rejection = needs_custom_eku.validate(&doctor, &f.crls, RevocationMode::Enforce, f.now);
        assert!(matches!(rejection, Err(CardRejection::WrongUsage(m)) if m.contains("1.2.250.1.71.4.9")));

        let lenient =
            CardValidator::new(trust, UsagePolicy { key_usage: vec![], extended_key_usage: vec![], policies: vec![] });
        assert!(lenient.validate(&[f.card("wrong-eku")], &f.crls, RevocationMode::Enforce, f.now).is_ok());
    }

    #[test]
    fn revocation_unknown_without_a_crl() {
        let f = Fixture::new();
        let empty = CrlSet::empty();
        let doctor = vec![f.card("doctor")];
        assert_eq!(
            f.validator.validate(&doctor, &empty, RevocationMode::Enforce, f.now),
            Err(CardRejection::RevocationUnknown)
        );
        let accepted = f.validator.validate(&doctor, &empty, RevocationMode::FailOpen, f.now).unwrap();
        assert_eq!(accepted.revocation, RevocationStatus::Unchecked(CardRejection::RevocationUnknown));
    }

    #[test]
    fn revocation_unknown_with_a_crl_signed_by_another_key() {
        // Another dev PKI has an intermediate with the same name but another key: its CRL is
        // found by issuer name, and its signature fails against the real issuer.
        let f = Fixture::new();
        let other = Fixture::new();
        let doctor = vec![f.card("doctor")];
        let rejection = f.validator.validate(&doctor, &other.crls, RevocationMode::Enforce, f.now);
        assert_eq!(rejection, Err(CardRejection::RevocationUnknown));
        // And a forged CRL listing the card does not revoke it either.
        let serial = parse_card(&doctor[0]).unwrap().serial_hex;
        let forged = devpki::publish_crl(other.path(), &[serial], f.now, f.now + 3600).unwrap();
        let rejection =
            f.validator.validate(&doctor, &crl_set(&forged, f.now), RevocationMode::FailOpen, f.now).unwrap();
        assert_eq!(rejection.revocation, RevocationStatus::Unchecked(CardRejection::RevocationUnknown));
    }

    #[test]
    fn revocation_stale() {
        let f = Fixture::new();
        let doctor = vec![f.card("doctor")];
        let later = f.now + 49 * 3600;
        assert_eq!(
            f.validator.validate(&doctor, &f.crls, RevocationMode::Enforce, later),
            Err(CardRejection::RevocationStale)
        );
        let accepted = f.validator.validate(&doctor, &f.crls, RevocationMode::FailOpen, later).unwrap();
        assert_eq!(accepted.revocation, RevocationStatus::Unchecked(CardRejection::RevocationStale));
        // Within the allowed age the same CRL is fine.
        let ok = f.validator.validate(&doctor, &f.crls, RevocationMode::Enforce, f.now + 47 * 3600).unwrap();
        assert_eq!(ok.revocation, RevocationStatus::Good);
    }

    #[test]
    fn no_id_nat_and_invalid_id_nat_come_last() {
        let f = Fixture::new();
        assert_eq!(f.validate("no-idnat", RevocationMode::Enforce), Err(CardRejection::NoIdNat));
        // Without a CRL the revocation problem is reported first.
        let no_id = vec![f.card("no-idnat")];
        assert_eq!(
            f.validator.validate(&no_id, &CrlSet::empty(), RevocationMode::Enforce, f.now),
            Err(CardRejection::RevocationUnknown)
        );
    }

    #[test]
    fn invalid_id_nat() {
        use crate::cps::devpki::test_support::NameAttr::{C, Cn};
        // A card with a bad Luhn digit, issued by the dev PKI's intermediate.
        let f = Fixture::new();
        let key =
            rcgen::KeyPair::from_pem(&fs::read_to_string(f.path().join("personnes-ca.key.pem")).unwrap()).unwrap();
        let doctor = f.card("doctor");
        let subject = devpki::test_support::name_der(&[&[(C, "FR")], &[(Cn, "899700367918")]], true);
        let forged = devpki::replace_names_and_resign(&doctor, None, Some(&subject), &key).unwrap();
        let rejection = f.validator.validate(&[forged], &f.crls, RevocationMode::Enforce, f.now);
        assert!(matches!(rejection, Err(CardRejection::InvalidIdNat(reason)) if reason.contains("Luhn")));
    }

    #[test]
    fn tampered_card_is_an_unknown_issuer() {
        let f = Fixture::new();
        let mut doctor = f.card("doctor");
        let position = doctor.windows(12).position(|w| w == b"899700367917").unwrap();
        doctor[position + 11] = b'8';
        assert_eq!(
            f.validator.validate(&[doctor], &f.crls, RevocationMode::Enforce, f.now),
            Err(CardRejection::UnknownIssuer)
        );
    }

    #[test]
    fn client_certificates_of_applications() {
        let f = Fixture::new();
        let org = vec![f.file("org.pem")];
        let validated = f.validator.validate_client_certificate(&org, &f.crls, RevocationMode::Enforce, f.now).unwrap();
        assert_eq!(validated.subject, "C=FR,O=Hôpital Test,CN=Habilis Test App");
        assert_eq!(validated.fingerprint, fingerprint(&org[0]));
        assert_eq!(validated.revocation, RevocationStatus::Good);
        assert_eq!(validated.chain_fingerprints.len(), 3);
        // No idNat is needed, but the rest applies.
        let self_signed = vec![f.file("org-self-signed.pem")];
        let rejection = f.validator.validate_client_certificate(&self_signed, &f.crls, RevocationMode::Enforce, f.now);
        assert_eq!(rejection, Err(CardRejection::UnknownIssuer));
        let server = vec![f.file("server.pem")];
        let rejection = f.validator.validate_client_certificate(&server, &f.crls, RevocationMode::Enforce, f.now);
        assert!(matches!(&rejection, Err(CardRejection::WrongUsage(m)) if m.contains("clientAuth")), "{rejection:?}");
        let revoked = vec![f.card("revoked")];
        let rejection = f.validator.validate_client_certificate(&revoked, &f.crls, RevocationMode::FailOpen, f.now);
        assert_eq!(rejection, Err(CardRejection::Revoked));
        let unchecked =
            f.validator.validate_client_certificate(&org, &CrlSet::empty(), RevocationMode::FailOpen, f.now).unwrap();
        assert_eq!(unchecked.revocation, RevocationStatus::Unchecked(CardRejection::RevocationUnknown));
        assert_eq!(
            f.validator.validate_client_certificate(&[], &f.crls, RevocationMode::Enforce, f.now),
            Err(CardRejection::NoCertificate)
        );
    }

    #[test]
    fn codes_and_messages() {
        let all = [
            CardRejection::Malformed,
            CardRejection::NoIdNat,
            CardRejection::InvalidIdNat("x".into()),
            CardRejection::Expired,
            CardRejection::NotYetValid,
            CardRejection::UnknownIssuer,
            CardRejection::Revoked,
            CardRejection::WrongUsage("x".into()),
            CardRejection::RevocationUnknown,
            CardRejection::RevocationStale,
            CardRejection::NoCertificate,
        ];
        let codes: Vec<&str> = all.iter().map(CardRejection::code).collect();
        assert_eq!(
            codes,
            [
                "malformed",
                "no_id_nat",
                "invalid_id_nat",
                "expired",
                "not_yet_valid",
                "unknown_issuer",
                "revoked",
                "wrong_usage",
                "revocation_unknown",
                "revocation_stale",
                "no_certificate"
            ]
        );
        for rejection in &all {
            assert!(
                rejection.to_string().starts_with("the ") || rejection.to_string().starts_with("no "),
                "{rejection}"
            );
        }
    }

    #[test]
    fn usage_policy_check() {
        assert_eq!(UsagePolicy::default().check(), Ok(()));
        let policy = UsagePolicy {
            key_usage: vec!["nonRepudiation".into()],
            extended_key_usage: vec!["1.3.6.1.5.5.7.3.2".into(), "emailProtection".into()],
            policies: vec!["1.2.250.1.71.4.2.1".into()],
        };
        assert_eq!(policy.check(), Ok(()));
        assert!(UsagePolicy { key_usage: vec!["signature".into()], ..UsagePolicy::default() }.check().is_err());
        assert!(UsagePolicy { extended_key_usage: vec!["client".into()], ..UsagePolicy::default() }.check().is_err());
        assert!(UsagePolicy { policies: vec!["x.y".into()], ..UsagePolicy::default() }.check().is_err());
    }
}

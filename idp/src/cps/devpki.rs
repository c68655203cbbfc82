//! `habilis dev-pki`: a throw-away PKI shaped like IGC-Santé, so card login can be tried and
//! tested without real CPS cards: a root, an intermediate issuing "cards" whose subjects follow
//! the IGC-Santé layout (multi-valued `CN=<idNat>+SN=…+GN=…` RDN), one card per outcome the
//! validator can give, a CRL, an organisation certificate for RFC 8705 client authentication
//! and a TLS server certificate for the card listener.
//!
//! Every name says TEST and the organisation is [`DEV_PKI_ORGANISATION`], which
//! `TrustStore::contains_test_anchor` recognises so a production issuer refuses these anchors.
//! Keys are ECDSA P-256 (what *ring* can generate); real cards are RSA, which the validator
//! accepts as well.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber, SigningKey,
};
use serde_json::json;
use time::OffsetDateTime;

use crate::cps::certificate::{der_children, der_content, der_element, der_encode, fingerprint, serial_hex};

/// Password of every `.p12` file written by [`generate`].
pub const P12_PASSWORD: &str = "habilis";
/// Organisation (O) of the dev-pki roots; marks them as test anchors.
pub const DEV_PKI_ORGANISATION: &str = "Habilis dev-pki";

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct DevPkiSummary {
    pub dir: PathBuf,
    /// (file relative to `dir`, what it is for)
    pub files: Vec<(String, String)>,
}

const ROOT_CN: &str = "AC RACINE HABILIS TEST";
const INTERMEDIATE_CN: &str = "AC HABILIS TEST PERSONNES";
const OTHER_ROOT_CN: &str = "AC RACINE INCONNUE TEST";
const DAY: i64 = 86_400;

/// One card of the dev PKI and the verdict the validator must give for it.
struct CardSpec {
    name: &'static str,
    id_nat: Option<&'static str>,
    /// Subject RDNs in DER order (first = outermost, printed last in RFC 4514).
    subject: &'static [&'static [(NameAttr, &'static str)]],
    expected: &'static str,
    expired: bool,
    extended_key_usages: &'static [ExtendedKeyUsagePurpose],
    /// Issued by the unknown root instead of the intermediate.
    unknown_issuer: bool,
    description: &'static str,
}

use NameAttr::{C, Cn, Gn, L, O, Ou, Sn, Title};

/// The cards; each one has its own Luhn-valid test RPPS (shared/fixtures/cps-subjects.txt) so
/// that accounts can be mapped to cards one to one.
const CARDS: &[CardSpec] = &[
    CardSpec {
        name: "doctor",
        id_nat: Some("899700367917"),
        subject: &[
            &[(C, "FR")],
            &[(Title, "Médecin")],
            &[(Cn, "899700367917"), (Sn, "MAXIMAXIMAXIMAXIMAXI0036791"), (Gn, "MUMUMUMUMUMUMUMUMUMUMUMUMUM")],
        ],
        expected: "accepted",
        expired: false,
        extended_key_usages: &[ExtendedKeyUsagePurpose::ClientAuth],
        unknown_issuer: false,
        description: "valid doctor card (Médecin), multi-valued RDN CN+SN+GN",
    },
    CardSpec {
        name: "pharmacist",
        id_nat: Some("899700075122"),
        subject: &[
            &[(C, "FR")],
            &[(Title, "Pharmacien")],
            &[(Sn, "PHARMACH0007512"), (Cn, "899700075122"), (Gn, "CAROLE")],
        ],
        expected: "accepted",
        expired: false,
        extended_key_usages: &[ExtendedKeyUsagePurpose::ClientAuth],
        unknown_issuer: false,
        description: "valid pharmacist card (Pharmacien)",
    },
    CardSpec {
        name: "staff",
        id_nat: Some("500000000029751"),
        subject: &[
            &[(C, "FR")],
            &[(O, "TEST")],
            &[(L, "Paris (75)")],
            &[(Ou, "300000000029751")],
            &[(Gn, "PATRICE"), (Sn, "MAITRE0000029750001"), (Cn, "500000000029751/CPAT0001")],
        ],
        expected: "accepted",
        expired: false,
        extended_key_usages: &[ExtendedKeyUsagePurpose::ClientAuth],
        unknown_issuer: false,
        description: "valid staff card (CPA): CN=<idNat>/<card id>, structure in O/OU",
    },
    CardSpec {
        name: "revoked",
        id_nat: Some("899700427885"),
        subject: &[
            &[(C, "FR")],
            &[(Title, "Infirmier")],
            &[(Cn, "899700427885"), (Sn, "REVOQUE0042788"), (Gn, "RENE")],
        ],
        expected: "revoked",
        expired: false,
        extended_key_usages: &[ExtendedKeyUsagePurpose::ClientAuth],
        unknown_issuer: false,
        description: "card listed in crl.der",
    },
    CardSpec {
        name: "expired",
        id_nat: Some("899700218896"),
        subject: &[&[(C, "FR")], &[(Title, "Médecin")], &[(Cn, "899700218896"), (Sn, "EXPIRE0021889"), (Gn, "ELODIE")]],
        expected: "expired",
        expired: true,
        extended_key_usages: &[ExtendedKeyUsagePurpose::ClientAuth],
        unknown_issuer: false,
        description: "card whose validity ended yesterday",
    },
    CardSpec {
        name: "wrong-eku",
        id_nat: Some("899700870589"),
        subject: &[
            &[(C, "FR")],
            &[(Title, "Masseur-Kinésithérapeute")],
            &[(Sn, "MASSAGE0087058"), (Cn, "899700870589"), (Gn, "MICHEL")],
        ],
        expected: "wrong_usage",
        expired: false,
        extended_key_usages: &[ExtendedKeyUsagePurpose::ServerAuth],
        unknown_issuer: false,
        description: "card whose extended key usage is serverAuth only",
    },
    CardSpec {
        name: "no-idnat",
        id_nat: None,
        subject: &[&[(C, "FR")], &[(Title, "Médecin")], &[(Cn, "Jean Dupont")]],
        expected: "no_id_nat",
        expired: false,
        extended_key_usages: &[ExtendedKeyUsagePurpose::ClientAuth],
        unknown_issuer: false,
        description: "card whose CN is a name, not an idNat",
    },
    CardSpec {
        name: "wrong-ca",
        id_nat: Some("899700735741"),
        subject: &[&[(C, "FR")], &[(Title, "Médecin")], &[(Cn, "899700735741"), (Sn, "DOC0073574"), (Gn, "KIT")]],
        expected: "unknown_issuer",
        expired: false,
        extended_key_usages: &[ExtendedKeyUsagePurpose::ClientAuth],
        unknown_issuer: true,
        description: "card issued by other-root-ca, which is not in the trust bundle",
    },
];

/// Writes a complete dev PKI into `dir` (see the module documentation and README.txt there).
///
/// `server_names` become the SANs of the card listener's certificate (DNS names or IP
/// literals); `crl_url`, when given, is put in the cards' CRLDistributionPoints. Refuses a
/// non-empty directory unless it already holds a dev PKI (`manifest.json`), which is replaced.
pub fn generate(dir: &Path, server_names: &[String], crl_url: Option<&str>) -> anyhow::Result<DevPkiSummary> {
    prepare_directory(dir)?;
    let cards_dir = dir.join("cards");
    fs::create_dir_all(&cards_dir).with_context(|| format!("cannot create {}", cards_dir.display()))?;
    let now = OffsetDateTime::now_utc();
    let mut out = Output { dir: dir.to_path_buf(), files: Vec::new() };

    let root = Authority::root(ROOT_CN, now)?;
    out.write("root-ca.pem", root.cert_pem.as_bytes(), "root CA \"AC RACINE HABILIS TEST\" (trust anchor)")?;
    out.write_key("root-ca.key.pem", &root.key, "private key of the root CA")?;
    let intermediate = Authority::intermediate(INTERMEDIATE_CN, &root, now)?;
    out.write("personnes-ca.pem", intermediate.cert_pem.as_bytes(), "intermediate CA issuing the cards")?;
    out.write_key("personnes-ca.key.pem", &intermediate.key, "private key of the intermediate CA (signs crl.der)")?;
    let bundle = format!("{}{}", root.cert_pem, intermediate.cert_pem);
    out.write("trust-bundle.pem", bundle.as_bytes(), "root + intermediate: the card.trust_anchors file")?;
    let other_root = Authority::root(OTHER_ROOT_CN, now)?;
    out.write("other-root-ca.pem", other_root.cert_pem.as_bytes(), "an unrelated root CA (not trusted)")?;
    out.write_key("other-root-ca.key.pem", &other_root.key, "private key of the unrelated root CA")?;

    let mut cards = serde_json::Map::new();
    let mut revoked_serials = Vec::new();
    for spec in CARDS {
        let issuer = if spec.unknown_issuer { &other_root } else { &intermediate };
        let (not_before, not_after) = if spec.expired {
            (now - time::Duration::days(3 * 365), now - time::Duration::days(1))
        } else {
            card_validity(now)
        };
        let leaf = LeafSpec {
            subject: LeafSubject::Rdns(spec.subject),
            not_before,
            not_after,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            extended_key_usages: spec.extended_key_usages.to_vec(),
            crl_url: if spec.unknown_issuer { None } else { crl_url },
            subject_alt_names: Vec::new(),
        };
        let issued = issue_leaf(&leaf, issuer)?;
        let chain: Vec<&[u8]> =
            if spec.unknown_issuer { vec![&other_root.cert_der] } else { vec![&intermediate.cert_der, &root.cert_der] };
        let base = format!("cards/{}", spec.name);
        out.write(&format!("{base}.pem"), pem("CERTIFICATE", &issued.der).as_bytes(), spec.description)?;
        out.write_key(&format!("{base}.key.pem"), &issued.key, "private key of the card")?;
        let friendly = format!("Habilis dev-pki {} ({})", spec.name, spec.id_nat.unwrap_or("no idNat"));
        out.write_p12(&format!("{base}.p12"), &friendly, &issued, &chain)?;
        let serial = serial_of(&issued.der)?;
        if spec.expected == "revoked" {
            revoked_serials.push(serial.clone());
        }
        cards.insert(
            spec.name.to_string(),
            json!({
                "id_nat": spec.id_nat,
                "serial": serial,
                "fingerprint": fingerprint(&issued.der),
                "expected": spec.expected,
                "description": spec.description,
                "certificate": format!("{base}.pem"),
                "key": format!("{base}.key.pem"),
                "p12": format!("{base}.p12"),
            }),
        );
    }

    // Organisation certificates for RFC 8705 client authentication of an OIDC client.
    let org_subject = |dn: &mut DistinguishedName| {
        dn.push(DnType::CommonName, "Habilis Test App");
        dn.push(DnType::OrganizationName, "Hôpital Test");
        dn.push(DnType::CountryName, "FR");
    };
    let org = issue_leaf(
        &LeafSpec {
            subject: LeafSubject::Rcgen(&org_subject),
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(2 * 365),
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            crl_url,
            subject_alt_names: Vec::new(),
        },
        &intermediate,
    )?;
    out.write("org.pem", pem("CERTIFICATE", &org.der).as_bytes(), "organisation certificate (tls_client_auth)")?;
    out.write_key("org.key.pem", &org.key, "private key of the organisation certificate")?;
    out.write_p12("org.p12", "Habilis Test App", &org, &[&intermediate.cert_der, &root.cert_der])?;
    let org_self_signed = self_signed_org(&org_subject, now)?;
    out.write(
        "org-self-signed.pem",
        pem("CERTIFICATE", &org_self_signed.der).as_bytes(),
        "self-signed organisation certificate (self_signed_tls_client_auth)",
    )?;
    out.write_key("org-self-signed.key.pem", &org_self_signed.key, "private key of the self-signed certificate")?;

    // TLS server certificate of the card listener, issued by the root so that importing
    // root-ca.pem as an authority makes the browser trust the listener too.
    let server_names: Vec<String> =
        server_names.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
    if server_names.is_empty() {
        bail!("the server certificate needs at least one name (e.g. localhost)");
    }
    let first_name = server_names[0].clone();
    let server_subject = move |dn: &mut DistinguishedName| {
        dn.push(DnType::CommonName, first_name.as_str());
        dn.push(DnType::OrganizationName, DEV_PKI_ORGANISATION);
    };
    let server = issue_leaf(
        &LeafSpec {
            subject: LeafSubject::Rcgen(&server_subject),
            not_before: now - time::Duration::hours(1),
            // Apple platforms refuse TLS server certificates valid for more than 825 days.
            not_after: now + time::Duration::days(800),
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ServerAuth],
            crl_url: None,
            subject_alt_names: server_names.clone(),
        },
        &root,
    )?;
    out.write("server.pem", pem("CERTIFICATE", &server.der).as_bytes(), "TLS certificate of the card listener")?;
    out.write_key("server.key.pem", &server.key, "private key of the card listener")?;

    let this_update = now.unix_timestamp();
    publish_crl(dir, &revoked_serials, this_update, this_update + DAY)?;
    out.files.push(("crl.der".into(), "CRL of the intermediate (DER), lists the revoked card".into()));
    out.files.push(("crl.pem".into(), "the same CRL in PEM".into()));

    let manifest = json!({
        "generator": "habilis dev-pki",
        "created_at": this_update,
        "p12_password": P12_PASSWORD,
        "crl_url": crl_url,
        "root": {"subject": subject_of(&root.cert_der)?, "fingerprint": fingerprint(&root.cert_der)},
        "intermediate": {"subject": subject_of(&intermediate.cert_der)?, "fingerprint": fingerprint(&intermediate.cert_der)},
        "cards": cards,
        "org": {
            "subject": subject_of(&org.der)?,
            "serial": serial_of(&org.der)?,
            "fingerprint": fingerprint(&org.der),
            "certificate": "org.pem",
            "self_signed_subject": subject_of(&org_self_signed.der)?,
            "self_signed_fingerprint": fingerprint(&org_self_signed.der),
            "self_signed_certificate": "org-self-signed.pem",
        },
        "server_names": server_names,
    });
    let manifest = serde_json::to_vec_pretty(&manifest).context("cannot serialise the manifest")?;
    out.write("README.txt", readme(&server_names, crl_url).as_bytes(), "what each file is for")?;
    // Written last: its presence marks a complete dev PKI.
    out.write("manifest.json", &manifest, "cards, idNats, serials, fingerprints and expected outcomes")?;
    Ok(DevPkiSummary { dir: out.dir, files: out.files })
}

/// Signs a new CRL of the intermediate CA (key read from `dir`) listing `revoked_serials_hex`
/// (as in the manifest; leading zero bytes are ignored), writes `crl.der` and `crl.pem` and
/// returns the DER. The CRL number is `this_update`, so successive CRLs are ordered.
pub fn publish_crl(
    dir: &Path,
    revoked_serials_hex: &[String],
    this_update: i64,
    next_update: i64,
) -> anyhow::Result<Vec<u8>> {
    let cert_path = dir.join("personnes-ca.pem");
    let key_path = dir.join("personnes-ca.key.pem");
    let cert_pem = fs::read_to_string(&cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
    let key_pem = fs::read_to_string(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem).with_context(|| format!("{} is not a usable key", key_path.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
        .with_context(|| format!("{} is not a usable CA certificate", cert_path.display()))?;
    let this_update_time = OffsetDateTime::from_unix_timestamp(this_update).context("this_update is out of range")?;
    let next_update_time = OffsetDateTime::from_unix_timestamp(next_update).context("next_update is out of range")?;
    let mut revoked_certs = Vec::new();
    for serial in revoked_serials_hex {
        let bytes = hex::decode(serial.trim()).with_context(|| format!("serial `{serial}` is not hexadecimal"))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: this_update_time,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let crl_number = u64::try_from(this_update).unwrap_or(0);
    let params = CertificateRevocationListParams {
        this_update: this_update_time,
        next_update: next_update_time,
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer).context("cannot sign the CRL")?;
    let der = crl.der().to_vec();
    write_file(&dir.join("crl.der"), &der, false)?;
    write_file(&dir.join("crl.pem"), pem("X509 CRL", &der).as_bytes(), false)?;
    Ok(der)
}

/// Attribute types used in dev-pki subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameAttr {
    C,
    Cn,
    Sn,
    Gn,
    Title,
    O,
    Ou,
    L,
}

impl NameAttr {
    /// DER content of the attribute type OID (2.5.4.x).
    fn oid(self) -> [u8; 3] {
        let last = match self {
            NameAttr::Cn => 3,
            NameAttr::Sn => 4,
            NameAttr::C => 6,
            NameAttr::L => 7,
            NameAttr::O => 10,
            NameAttr::Ou => 11,
            NameAttr::Title => 12,
            NameAttr::Gn => 42,
        };
        [0x55, 0x04, last]
    }
}

/// DER of a distinguished name: one SET per RDN, each holding its attributes (a multi-valued
/// RDN when there are several). Countries are PrintableString (required by X.520), the rest
/// UTF8String as IGC-Santé does. With `der_sorted`, the attributes of each SET are sorted by
/// their encoding as DER requires; without, they stay in the given order, like some encoders
/// produce and parsers must accept.
pub(crate) fn name_der(rdns: &[&[(NameAttr, &str)]], der_sorted: bool) -> Vec<u8> {
    const PRINTABLE_STRING: u8 = 0x13;
    const UTF8_STRING: u8 = 0x0c;
    let mut sets = Vec::new();
    for rdn in rdns {
        let mut attributes: Vec<Vec<u8>> = rdn
            .iter()
            .map(|(attr, value)| {
                let string_tag = if *attr == NameAttr::C { PRINTABLE_STRING } else { UTF8_STRING };
                let mut content = der_encode(0x06, &attr.oid());
                content.extend(der_encode(string_tag, value.as_bytes()));
                der_encode(0x30, &content)
            })
            .collect();
        if der_sorted {
            attributes.sort();
        }
        sets.extend(der_encode(0x31, &attributes.concat()));
    }
    der_encode(0x30, &sets)
}

/// A CA of the dev PKI.
struct Authority {
    key: KeyPair,
    params: CertificateParams,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl Authority {
    fn root(common_name: &str, now: OffsetDateTime) -> anyhow::Result<Authority> {
        let mut params = ca_params(common_name, now, now + time::Duration::days(20 * 365))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        let key = KeyPair::generate().context("cannot generate a key")?;
        let cert = params.self_signed(&key).context("cannot sign the root certificate")?;
        Ok(Authority { cert_der: cert.der().to_vec(), cert_pem: cert.pem(), key, params })
    }

    fn intermediate(common_name: &str, parent: &Authority, now: OffsetDateTime) -> anyhow::Result<Authority> {
        let mut params = ca_params(common_name, now, now + time::Duration::days(15 * 365))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("cannot generate a key")?;
        let cert = params.signed_by(&key, &parent.issuer()).context("cannot sign the intermediate certificate")?;
        Ok(Authority { cert_der: cert.der().to_vec(), cert_pem: cert.pem(), key, params })
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn ca_params(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "FR");
    dn.push(DnType::OrganizationName, DEV_PKI_ORGANISATION);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = not_before - time::Duration::hours(1);
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Validity of a card: started yesterday (clock skew), three years like a CPS card.
fn card_validity(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    (now - time::Duration::days(1), now + time::Duration::days(3 * 365))
}

/// A 16-byte positive serial whose first byte is 0x01..=0x7f: no sign padding and no leading
/// zero, so its hex (see `certificate::serial_hex`) is always the same 32 characters.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = 1 + bytes[0] % 0x7f;
    SerialNumber::from_slice(&bytes)
}

enum LeafSubject<'a> {
    /// Written by hand: rcgen cannot encode multi-valued RDNs.
    Rdns(&'a [&'a [(NameAttr, &'a str)]]),
    Rcgen(&'a dyn Fn(&mut DistinguishedName)),
}

struct LeafSpec<'a> {
    subject: LeafSubject<'a>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key_usages: Vec<KeyUsagePurpose>,
    extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    crl_url: Option<&'a str>,
    subject_alt_names: Vec<String>,
}

struct Issued {
    key: KeyPair,
    der: Vec<u8>,
}

fn leaf_params(spec: &LeafSpec<'_>) -> anyhow::Result<CertificateParams> {
    let mut params =
        CertificateParams::new(spec.subject_alt_names.clone()).context("invalid server name for the certificate")?;
    let mut dn = DistinguishedName::new();
    match &spec.subject {
        // Replaced after signing by `replace_names_and_resign`.
        LeafSubject::Rdns(_) => dn.push(DnType::CommonName, "subject"),
        LeafSubject::Rcgen(fill) => fill(&mut dn),
    }
    params.distinguished_name = dn;
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = spec.key_usages.clone();
    params.extended_key_usages = spec.extended_key_usages.clone();
    params.use_authority_key_identifier_extension = true;
    if let Some(url) = spec.crl_url {
        params.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![url.to_string()] }];
    }
    Ok(params)
}

fn issue_leaf(spec: &LeafSpec<'_>, issuer: &Authority) -> anyhow::Result<Issued> {
    let params = leaf_params(spec)?;
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params.signed_by(&key, &issuer.issuer()).context("cannot sign a certificate")?;
    let der = match &spec.subject {
        LeafSubject::Rdns(rdns) => {
            replace_names_and_resign(cert.der(), None, Some(&name_der(rdns, true)), &issuer.key)?
        }
        LeafSubject::Rcgen(_) => cert.der().to_vec(),
    };
    Ok(Issued { key, der })
}

fn self_signed_org(subject: &dyn Fn(&mut DistinguishedName), now: OffsetDateTime) -> anyhow::Result<Issued> {
    let spec = LeafSpec {
        subject: LeafSubject::Rcgen(subject),
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::days(2 * 365),
        key_usages: vec![KeyUsagePurpose::DigitalSignature],
        extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
        crl_url: None,
        subject_alt_names: Vec::new(),
    };
    let mut params = leaf_params(&spec)?;
    params.use_authority_key_identifier_extension = false;
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params.self_signed(&key).context("cannot sign the self-signed certificate")?;
    Ok(Issued { der: cert.der().to_vec(), key })
}

/// Rewrites the issuer and/or subject Name of a signed certificate and signs it again with
/// `signer`. rcgen cannot write multi-valued RDNs (nor several OUs), so cards are issued by
/// rcgen with a stand-in subject that is then swapped for a hand-encoded one.
pub(crate) fn replace_names_and_resign(
    cert_der: &[u8],
    issuer: Option<&[u8]>,
    subject: Option<&[u8]>,
    signer: &KeyPair,
) -> anyhow::Result<Vec<u8>> {
    let malformed = || anyhow::anyhow!("rcgen produced a certificate this code cannot rewrite");
    let parts = der_children(der_content(cert_der).ok_or_else(malformed)?).ok_or_else(malformed)?;
    let [tbs, signature_algorithm, _signature] = parts.as_slice() else { return Err(malformed()) };
    let mut fields = der_children(der_content(tbs).ok_or_else(malformed)?).ok_or_else(malformed)?;
    // TBSCertificate: [0] version (optional), serial, signature, issuer, validity, subject, …
    let first = fields.first().and_then(|f| der_element(f)).ok_or_else(malformed)?;
    let offset = usize::from(first.tag == 0xa0);
    if fields.len() < offset + 5 {
        return Err(malformed());
    }
    if let Some(issuer) = issuer {
        fields[offset + 2] = issuer;
    }
    if let Some(subject) = subject {
        fields[offset + 4] = subject;
    }
    let new_tbs = der_encode(0x30, &fields.concat());
    let signature = signer.sign(&new_tbs).context("cannot sign the rewritten certificate")?;
    let mut bit_string = vec![0u8]; // no unused bits
    bit_string.extend(signature);
    let mut content = new_tbs;
    content.extend_from_slice(signature_algorithm);
    content.extend(der_encode(0x03, &bit_string));
    Ok(der_encode(0x30, &content))
}

fn prepare_directory(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() && !dir.join("manifest.json").is_file() {
            bail!(
                "{} is not empty and holds no dev PKI (no manifest.json): refusing to write into it; choose an empty or new directory",
                dir.display()
            );
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

struct Output {
    dir: PathBuf,
    files: Vec<(String, String)>,
}

impl Output {
    fn write(&mut self, name: &str, contents: &[u8], description: &str) -> anyhow::Result<()> {
        write_file(&self.dir.join(name), contents, false)?;
        self.files.push((name.to_string(), description.to_string()));
        Ok(())
    }

    fn write_key(&mut self, name: &str, key: &KeyPair, description: &str) -> anyhow::Result<()> {
        write_file(&self.dir.join(name), key.serialize_pem().as_bytes(), true)?;
        self.files.push((name.to_string(), description.to_string()));
        Ok(())
    }

    /// PKCS#12 with the certificate, its key and the chain. PBE-SHA1-3DES and a SHA-1 MAC are
    /// the algorithms every browser and OS key store imports (OpenSSL 3's AES defaults are
    /// refused by older macOS and Windows versions); the protection of a test key with a
    /// published password is not the point.
    fn write_p12(&mut self, name: &str, friendly_name: &str, issued: &Issued, chain: &[&[u8]]) -> anyhow::Result<()> {
        use openssl::{hash::MessageDigest, nid::Nid, pkcs12::Pkcs12, pkey::PKey, stack::Stack, x509::X509};
        let cert = X509::from_der(&issued.der).context("openssl cannot read a generated certificate")?;
        let pkey = PKey::private_key_from_pkcs8(issued.key.serialized_der()).context("openssl cannot read a key")?;
        let mut ca = Stack::new()?;
        for der in chain {
            ca.push(X509::from_der(der).context("openssl cannot read a CA certificate")?)?;
        }
        let mut builder = Pkcs12::builder();
        builder
            .name(friendly_name)
            .pkey(&pkey)
            .cert(&cert)
            .ca(ca)
            .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
            .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
            .mac_md(MessageDigest::sha1());
        let p12 = builder.build2(P12_PASSWORD).context("cannot build a PKCS#12 file")?;
        let der = p12.to_der().context("cannot encode a PKCS#12 file")?;
        write_file(&self.dir.join(name), &der, true)?;
        self.files.push((name.to_string(), format!("PKCS#12 (password {P12_PASSWORD}) to import in a browser")));
        Ok(())
    }
}

/// Writes a file; `private` ones (keys, PKCS#12) are created with mode 0600.
fn write_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    // The mode above only applies to new files; an older key file may have looser rights.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    file.write_all(contents).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn serial_of(der: &[u8]) -> anyhow::Result<String> {
    let cert =
        crate::cps::certificate::parse_single_certificate(der).context("generated certificate does not parse")?;
    Ok(serial_hex(cert.tbs_certificate.raw_serial()))
}

fn subject_of(der: &[u8]) -> anyhow::Result<String> {
    let cert =
        crate::cps::certificate::parse_single_certificate(der).context("generated certificate does not parse")?;
    Ok(crate::cps::certificate::name_to_rfc4514(&cert.tbs_certificate.subject))
}

fn readme(server_names: &[String], crl_url: Option<&str>) -> String {
    let mut cards = String::new();
    for spec in CARDS {
        cards.push_str(&format!(
            "  cards/{:<11} {:<16} expected: {:<15} {}\n",
            spec.name,
            spec.id_nat.unwrap_or("-"),
            spec.expected,
            spec.description
        ));
    }
    let crl_note = match crl_url {
        Some(url) => format!("The cards issued by the intermediate name {url} as their CRL distribution point."),
        None => "The cards carry no CRL distribution point: configure crl.der as a CRL source.".to_string(),
    };
    format!(
        "Habilis dev-pki: a TEST PKI for trying CPS card login without real cards.
NEVER trust these certificates outside a test platform: every private key is in this directory.

Authorities
  root-ca.pem / root-ca.key.pem            AC RACINE HABILIS TEST (O={DEV_PKI_ORGANISATION}): the trust anchor
  personnes-ca.pem / personnes-ca.key.pem  AC HABILIS TEST PERSONNES: issues the cards, signs the CRL
  trust-bundle.pem                         root + intermediate, for card.trust_anchors
  other-root-ca.pem / .key.pem             an unrelated root; it issued cards/wrong-ca

Cards (cards/NAME.pem certificate, NAME.key.pem key, NAME.p12 both plus the chain)
{cards}
  Subjects follow IGC-Santé: C=FR, title=<profession>, then one multi-valued RDN
  CN=<idNat>+SN=<surname>+GN=<given name>. manifest.json lists each card's idNat, serial,
  fingerprint (RFC 8705 x5t#S256) and the outcome the validator must give.

Revocation
  crl.der / crl.pem   CRL of the intermediate listing cards/revoked, valid one day.
  {crl_note}
  `habilis dev-pki` regenerates everything; a fresh CRL can be signed with the intermediate key.

Organisation certificates (RFC 8705 client authentication of an OIDC client)
  org.pem / org.key.pem / org.p12      CN=Habilis Test App, O=Hôpital Test, issued by the intermediate
                                       (tls_client_auth)
  org-self-signed.pem / .key.pem       the same subject, self-signed (self_signed_tls_client_auth)

Card listener TLS
  server.pem / server.key.pem   issued by the root for: {names}

Trying it in a browser
  1. Trust the listener: import root-ca.pem as a certificate authority trusted for websites
     (Firefox: Settings > Privacy & Security > Certificates > View Certificates > Authorities >
     Import; Chrome/Edge: Settings > Privacy and security > Security > Manage certificates).
  2. Import a card: cards/doctor.p12 with password \"{P12_PASSWORD}\" (Firefox: Your Certificates >
     Import; Chrome/Edge on Windows or macOS: the system certificate manager / Keychain Access,
     double-clicking the .p12 works too).
  3. Open the card login page: the browser asks which certificate to present; choose
     \"Habilis dev-pki doctor\". Try the other cards to see each refusal.
  With curl: curl --cacert root-ca.pem --cert cards/doctor.pem --key cards/doctor.key.pem <URL>

Private keys and .p12 files are written with mode 0600.
",
        names = server_names.join(", ")
    )
}

/// Shared fixtures for the tests of the `cps` modules.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::OnceLock;

    use super::*;
    pub(crate) use super::{NameAttr, name_der};

    /// One CA for tests that only need *some* issued certificate (key generation is the slow
    /// part, so it is made once per test binary).
    fn test_ca() -> &'static Authority {
        static CA: OnceLock<Authority> = OnceLock::new();
        CA.get_or_init(|| {
            Authority::intermediate(
                "AC TEST CERTIFICATE PARSING",
                &Authority::root("AC RACINE TEST", OffsetDateTime::now_utc()).unwrap(),
                OffsetDateTime::now_utc(),
            )
            .unwrap()
        })
    }

    /// A card issued by the test CA with the given subject Name DER and distribution points.
    pub(crate) fn card_with_subject(subject: &[u8], crl_urls: &[&str]) -> Vec<u8> {
        card_with_names(None, subject, crl_urls)
    }

    /// Same as [`card_with_subject`] with an issuer Name of the caller's choosing too.
    pub(crate) fn card_with_names(issuer: Option<&[u8]>, subject: &[u8], crl_urls: &[&str]) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let (not_before, not_after) = card_validity(now);
        let mut params = leaf_params(&LeafSpec {
            subject: LeafSubject::Rdns(&[]),
            not_before,
            not_after,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            crl_url: None,
            subject_alt_names: Vec::new(),
        })
        .unwrap();
        if !crl_urls.is_empty() {
            params.crl_distribution_points =
                vec![CrlDistributionPoint { uris: crl_urls.iter().map(|u| u.to_string()).collect() }];
        }
        let ca = test_ca();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer()).unwrap();
        replace_names_and_resign(cert.der(), issuer, Some(subject), &ca.key).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cps::certificate::parse_card;

    fn read_manifest(dir: &Path) -> serde_json::Value {
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
    }

    #[test]
    fn generates_every_file_with_a_consistent_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let summary = generate(&dir, &names, Some("http://crl.habilis.test/personnes.crl")).unwrap();
        for (file, _) in &summary.files {
            assert!(dir.join(file).is_file(), "{file} listed but missing");
        }
        for file in [
            "root-ca.pem",
            "root-ca.key.pem",
            "personnes-ca.pem",
            "personnes-ca.key.pem",
            "trust-bundle.pem",
            "other-root-ca.pem",
            "other-root-ca.key.pem",
            "org.pem",
            "org.key.pem",
            "org.p12",
            "org-self-signed.pem",
            "org-self-signed.key.pem",
            "server.pem",
            "server.key.pem",
            "crl.der",
            "crl.pem",
            "manifest.json",
            "README.txt",
        ] {
            assert!(dir.join(file).is_file(), "{file} missing");
        }
        let manifest = read_manifest(&dir);
        let cards = manifest["cards"].as_object().unwrap();
        assert_eq!(cards.len(), CARDS.len());
        let mut id_nats = std::collections::HashSet::new();
        for spec in CARDS {
            let entry = &cards[spec.name];
            assert_eq!(entry["expected"], spec.expected);
            let pem = fs::read(dir.join(format!("cards/{}.pem", spec.name))).unwrap();
            let der = crate::cps::certificate::pem_or_der_to_der(&pem).unwrap();
            assert_eq!(entry["fingerprint"], fingerprint(&der));
            let serial = entry["serial"].as_str().unwrap();
            assert_eq!(serial.len(), 32, "{serial}");
            if let Some(id) = spec.id_nat {
                assert!(id_nats.insert(id), "idNat {id} used twice");
                let card = parse_card(&der).unwrap();
                assert_eq!(card.id_nat.as_str(), id);
                assert_eq!(entry["id_nat"], id);
                assert_eq!(card.serial_hex, serial);
                if !spec.unknown_issuer {
                    assert_eq!(card.crl_distribution_points, ["http://crl.habilis.test/personnes.crl"]);
                }
            } else {
                assert!(entry["id_nat"].is_null());
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let key = dir.join(format!("cards/{}.key.pem", spec.name));
                assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
        assert_eq!(manifest["server_names"], serde_json::json!(["localhost", "127.0.0.1"]));
        let doctor = parse_card(
            &crate::cps::certificate::pem_or_der_to_der(&fs::read(dir.join("cards/doctor.pem")).unwrap()).unwrap(),
        )
        .unwrap();
        assert!(doctor.subject.starts_with("CN=899700367917+SN=MAXIMAXIMAXIMAXIMAXI0036791+GN="), "{}", doctor.subject);
        assert_eq!(doctor.title.as_deref(), Some("Médecin"));
        assert!(doctor.issuer.contains("CN=AC HABILIS TEST PERSONNES"));
    }

    #[test]
    fn doctor_subject_is_one_multi_valued_rdn() {
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), &["localhost".into()], None).unwrap();
        let der = crate::cps::certificate::pem_or_der_to_der(&fs::read(tmp.path().join("cards/doctor.pem")).unwrap())
            .unwrap();
        let cert = crate::cps::certificate::parse_single_certificate(&der).unwrap();
        let sizes: Vec<usize> = cert.tbs_certificate.subject.iter_rdn().map(|rdn| rdn.iter().count()).collect();
        assert_eq!(sizes, [1, 1, 3]);
    }

    #[test]
    fn p12_files_open_with_the_password() {
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), &["localhost".into()], None).unwrap();
        for name in ["cards/doctor.p12", "cards/wrong-ca.p12", "org.p12"] {
            let p12 = openssl::pkcs12::Pkcs12::from_der(&fs::read(tmp.path().join(name)).unwrap()).unwrap();
            let parsed = p12.parse2(P12_PASSWORD).unwrap();
            assert!(parsed.pkey.is_some() && parsed.cert.is_some(), "{name}");
            assert!(!parsed.ca.unwrap().is_empty(), "{name} has no chain");
            assert!(p12.parse2("wrong").is_err());
        }
    }

    #[test]
    fn server_certificate_names_and_usage() {
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), &["localhost".into(), "127.0.0.1".into(), "card.habilis.test".into()], None).unwrap();
        let der =
            crate::cps::certificate::pem_or_der_to_der(&fs::read(tmp.path().join("server.pem")).unwrap()).unwrap();
        let cert = crate::cps::certificate::parse_single_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
        assert_eq!(san.len(), 3);
        assert!(cert.extended_key_usage().unwrap().unwrap().value.server_auth);
        // webpki accepts it for the names with the root as anchor.
        let root =
            crate::cps::certificate::pem_or_der_to_der(&fs::read(tmp.path().join("root-ca.pem")).unwrap()).unwrap();
        let root_der = rustls::pki_types::CertificateDer::from(root.as_slice());
        let anchor = webpki::anchor_from_trusted_cert(&root_der).unwrap();
        let server_der = rustls::pki_types::CertificateDer::from(der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&server_der).unwrap();
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            rustls::pki_types::UnixTime::now(),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("card.habilis.test").unwrap();
        ee.verify_is_valid_for_subject_name(&name).unwrap();
    }

    #[test]
    fn refuses_a_foreign_non_empty_directory_but_regenerates_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        let error = generate(tmp.path(), &["localhost".into()], None).unwrap_err();
        assert!(error.to_string().contains("not empty"), "{error}");

        let own = tmp.path().join("pki");
        generate(&own, &["localhost".into()], None).unwrap();
        let first = read_manifest(&own);
        generate(&own, &["localhost".into()], None).unwrap();
        assert_ne!(read_manifest(&own)["cards"]["doctor"]["serial"], first["cards"]["doctor"]["serial"]);
        assert!(generate(&own, &[], None).is_err());
    }

    #[test]
    fn publish_crl_lists_the_given_serials() {
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), &["localhost".into()], None).unwrap();
        let manifest = read_manifest(tmp.path());
        let doctor = manifest["cards"]["doctor"]["serial"].as_str().unwrap().to_string();
        let der =
            publish_crl(tmp.path(), &[doctor.clone(), format!("00{doctor}")], 1_700_000_000, 1_700_086_400).unwrap();
        assert_eq!(fs::read(tmp.path().join("crl.der")).unwrap(), der);
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        assert_eq!(crl.last_update().timestamp(), 1_700_000_000);
        let serials: Vec<String> = crl.iter_revoked_certificates().map(|r| serial_hex(r.raw_serial())).collect();
        assert_eq!(serials, [doctor.clone(), doctor]);
        assert!(publish_crl(tmp.path(), &["zz".into()], 1_700_000_000, 1_700_086_400).is_err());
        assert!(publish_crl(tmp.path(), &[], 1_700_000_000, 1_600_000_000).is_err());
        assert!(publish_crl(&tmp.path().join("missing"), &[], 1_700_000_000, 1_700_086_400).is_err());
    }
}

//! Reads the card holder out of a CPS card certificate (shared/DOMAIN.md, "The CPS card
//! certificate").
//!
//! Everything is read from the DER with x509-parser, never from a flattened subject string:
//! IGC-Santé puts `CN=<idNat>+SN=<name>+GN=<first name>` in one multi-valued RDN and every
//! library prints (and orders) such an RDN differently, so string matching would be fragile and,
//! worse, spoofable through values that contain separators.
//!
//! This module only *reads*; whether the certificate is trusted is `validate`'s business.

use base64::Engine;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::{Class, Tag};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::cps::validate::CardRejection;
use crate::ids::{IdNat, IdNatError};

/// The holder and the facts of a card certificate, as read from its DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardCertificate {
    /// The holder's national identifier, from the subject CN.
    pub id_nat: IdNat,
    /// Surname (SN, 2.5.4.4).
    pub family_name: Option<String>,
    /// Given name (GN, 2.5.4.42).
    pub given_name: Option<String>,
    /// The profession label: `title` (2.5.4.12), or the OU of older cards that have no title.
    pub title: Option<String>,
    /// Staff cards (CPA/CPE): the card identifier after the `/` of the CN, e.g. `CPAT0001`.
    pub staff_suffix: Option<String>,
    /// Organisation (O); on staff cards the structure's name.
    pub organisation: Option<String>,
    /// First organisational unit (OU); on staff cards the structure's identifier.
    pub organisational_unit: Option<String>,
    /// RFC 4514 form of the subject (last RDN first), for display and audit.
    pub subject: String,
    /// RFC 4514 form of the issuer.
    pub issuer: String,
    /// Serial number, see [`serial_hex`].
    pub serial_hex: String,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end (inclusive), Unix seconds.
    pub not_after: i64,
    /// RFC 8705 `x5t#S256`: base64url (no padding) of the SHA-256 of the DER.
    pub fingerprint: String,
    /// http(s) URIs of the CRLDistributionPoints extension, in certificate order.
    pub crl_distribution_points: Vec<String>,
}

/// Reads a card certificate: `Malformed` when the DER is not exactly one X.509 certificate,
/// `NoIdNat` / `InvalidIdNat` when the subject CN carries no usable identifier (see
/// [`id_nat_from_common_name`]). Nothing here says the certificate is trusted.
pub fn parse_card(der: &[u8]) -> Result<CardCertificate, CardRejection> {
    let cert = parse_single_certificate(der).ok_or(CardRejection::Malformed)?;
    read_card(der, &cert)
}

/// RFC 8705 `x5t#S256` thumbprint: base64url without padding of the SHA-256 of the DER.
pub fn fingerprint(der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// The DER of a certificate given either as DER or as PEM (the first `CERTIFICATE` block;
/// text around the blocks, as `openssl` prints it, is ignored). `None` when no certificate
/// can be read. The result always parses as exactly one X.509 certificate.
pub fn pem_or_der_to_der(input: &[u8]) -> Option<Vec<u8>> {
    if is_single_certificate(input) {
        return Some(input.to_vec());
    }
    for block in x509_parser::pem::Pem::iter_from_buffer(input) {
        // A broken block ends the search: what follows cannot be located reliably.
        let block = block.ok()?;
        if !is_certificate_label(&block.label) {
            continue;
        }
        // `TRUSTED CERTIFICATE` blocks carry OpenSSL trust settings after the certificate.
        let der = first_element(&block.contents)?;
        return is_single_certificate(der).then(|| der.to_vec());
    }
    None
}

/// Lower-case hex of a serial number's magnitude: the DER content bytes of the INTEGER with the
/// sign-padding zero bytes removed (at least one byte is kept). `devpki` issues 16-byte
/// serials whose first byte is below 0x80, so their hex is always 32 characters, and CRL
/// entries use the same function: the three places agree on one spelling.
pub fn serial_hex(raw_serial: &[u8]) -> String {
    let first_significant = raw_serial.iter().position(|b| *b != 0).unwrap_or(raw_serial.len().saturating_sub(1));
    hex::encode(raw_serial.get(first_significant..).unwrap_or_default())
}

/// RFC 4514 string of a distinguished name: RDNs from last to first separated by `,`, the
/// attributes of a multi-valued RDN joined with `+`, values escaped (control characters too,
/// so the string is safe in a log line). Attribute types without a well-known short name are
/// written as dotted OIDs; values that are not strings as `#` + hex of their DER.
pub fn name_to_rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> =
        name.iter_rdn().map(|rdn| rdn.iter().map(attribute_to_rfc4514).collect::<Vec<_>>().join("+")).collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// Reads the subject, the extensions and the digest of a parsed certificate.
fn read_card(der: &[u8], cert: &X509Certificate<'_>) -> Result<CardCertificate, CardRejection> {
    let tbs = &cert.tbs_certificate;
    let subject = SubjectAttributes::read(&tbs.subject)?;
    let (id_nat, staff_suffix) = match subject.common_names.as_slice() {
        [] => return Err(CardRejection::NoIdNat),
        [cn] => id_nat_from_common_name(cn)?,
        several => {
            return Err(CardRejection::InvalidIdNat(format!(
                "the subject carries {} common names (CN); exactly one is expected",
                several.len()
            )));
        }
    };
    // Older cards put the profession in OU; on staff cards OU is the structure's identifier,
    // so it is never taken for a profession there.
    let title = match (&subject.title, &staff_suffix) {
        (Some(title), _) => Some(title.clone()),
        (None, None) => subject.organisational_unit.clone(),
        (None, Some(_)) => None,
    };
    Ok(CardCertificate {
        id_nat,
        family_name: subject.family_name,
        given_name: subject.given_name,
        title,
        staff_suffix,
        organisation: subject.organisation,
        organisational_unit: subject.organisational_unit,
        subject: name_to_rfc4514(&tbs.subject),
        issuer: name_to_rfc4514(&tbs.issuer),
        serial_hex: serial_hex(tbs.raw_serial()),
        not_before: tbs.validity.not_before.timestamp(),
        not_after: tbs.validity.not_after.timestamp(),
        fingerprint: fingerprint(der),
        crl_distribution_points: crl_distribution_points(cert),
    })
}

/// Splits a CN into the idNat and, for staff cards, the card suffix.
///
/// Professional cards: the whole CN is the idNat (`8` + RPPS or `0` + ADELI). Staff cards
/// (CPA/CPE): `<idNat>/<card id>`, where the idNat may also be a staff identifier.
fn id_nat_from_common_name(cn: &str) -> Result<(IdNat, Option<String>), CardRejection> {
    let cn = cn.trim();
    match cn.split_once('/') {
        None => Ok((IdNat::parse(cn).map_err(|e| id_nat_rejection(cn, &e))?, None)),
        Some((identifier, suffix)) => {
            let identifier = identifier.trim();
            let suffix = suffix.trim();
            let parsed = IdNat::parse(identifier).or_else(|professional_error| {
                IdNat::parse_staff(identifier).map_err(|staff_error| {
                    // Report the rule that matches the prefix the card used.
                    match professional_error {
                        IdNatError::Prefix(_) => staff_error,
                        other => other,
                    }
                })
            });
            let id_nat = parsed.map_err(|e| id_nat_rejection(identifier, &e))?;
            Ok((id_nat, (!suffix.is_empty()).then(|| suffix.to_string())))
        }
    }
}

/// A value that looks like an identifier (a digit, then letters and digits only) but does not
/// validate is reported as invalid, with the reason; anything else (e.g. a person's name in
/// the CN of a non-CPS certificate) means the certificate carries no idNat at all.
fn id_nat_rejection(candidate: &str, error: &IdNatError) -> CardRejection {
    let looks_like_identifier =
        candidate.starts_with(|c: char| c.is_ascii_digit()) && candidate.chars().all(|c| c.is_ascii_alphanumeric());
    if looks_like_identifier { CardRejection::InvalidIdNat(error.to_string()) } else { CardRejection::NoIdNat }
}

/// The subject attributes Habilis uses, gathered from every RDN whatever its position or
/// grouping. For single-valued fields the first occurrence in DER order wins.
#[derive(Default)]
struct SubjectAttributes {
    common_names: Vec<String>,
    family_name: Option<String>,
    given_name: Option<String>,
    title: Option<String>,
    organisation: Option<String>,
    organisational_unit: Option<String>,
}

impl SubjectAttributes {
    fn read(name: &X509Name<'_>) -> Result<SubjectAttributes, CardRejection> {
        let mut attributes = SubjectAttributes::default();
        for attribute in name.iter_attributes() {
            let oid = attribute.attr_type().to_id_string();
            let slot = match oid.as_str() {
                OID_COMMON_NAME => {
                    // The identity hangs on the CN: an undecodable one is a broken certificate.
                    let value = attribute_string(attribute).ok_or(CardRejection::Malformed)?;
                    attributes.common_names.push(value);
                    continue;
                }
                OID_SURNAME => &mut attributes.family_name,
                OID_GIVEN_NAME => &mut attributes.given_name,
                OID_TITLE => &mut attributes.title,
                OID_ORGANISATION => &mut attributes.organisation,
                OID_ORGANISATIONAL_UNIT => &mut attributes.organisational_unit,
                _ => continue,
            };
            if slot.is_none() {
                *slot = attribute_string(attribute).filter(|v| !v.trim().is_empty());
            }
        }
        Ok(attributes)
    }
}

const OID_COMMON_NAME: &str = "2.5.4.3";
const OID_SURNAME: &str = "2.5.4.4";
const OID_TITLE: &str = "2.5.4.12";
const OID_ORGANISATION: &str = "2.5.4.10";
const OID_ORGANISATIONAL_UNIT: &str = "2.5.4.11";
const OID_GIVEN_NAME: &str = "2.5.4.42";

/// Short names used in RFC 4514 strings (RFC 4514 section 3 plus the usual OpenSSL ones for
/// the attributes found in IGC-Santé certificates).
fn attribute_short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

fn attribute_to_rfc4514(attribute: &AttributeTypeAndValue<'_>) -> String {
    let oid = attribute.attr_type().to_id_string();
    let mut out = attribute_short_name(&oid).map(str::to_string).unwrap_or(oid);
    out.push('=');
    match attribute_string(attribute) {
        Some(value) => escape_rfc4514_value(&value, &mut out),
        None => {
            // RFC 4514 2.4: a value that is not a string is `#` + hex of its BER/DER encoding.
            out.push('#');
            let value = attribute.attr_value();
            let class_bits = (value.class() as u8) << 6;
            let constructed_bit = if value.header.is_constructed() { 0x20 } else { 0 };
            match u8::try_from(value.tag().0) {
                Ok(number) if number < 0x1f => {
                    out.push_str(&hex::encode(der_encode(class_bits | constructed_bit | number, value.data)));
                }
                // High tag numbers do not occur in names; keep the content so nothing is hidden.
                _ => out.push_str(&hex::encode(value.data)),
            }
        }
    }
    out
}

fn escape_rfc4514_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
}

/// The value of a directory string attribute, whatever string type the CA chose.
fn attribute_string(attribute: &AttributeTypeAndValue<'_>) -> Option<String> {
    let value = attribute.attr_value();
    if value.class() != Class::Universal {
        return None;
    }
    let data: &[u8] = value.data;
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => {
            std::str::from_utf8(data).ok().map(str::to_string)
        }
        // UCS-2 / UTF-16 big endian.
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        // UCS-4 big endian.
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|quad| char::from_u32(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]])))
                .collect()
        }
        // T.61 is in practice used for Latin-1 text.
        Tag::TeletexString => Some(data.iter().map(|b| char::from(*b)).collect()),
        _ => None,
    }
}

fn crl_distribution_points(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut urls = Vec::new();
    for extension in cert.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = extension.parsed_extension() else { continue };
        for point in points.iter() {
            let Some(DistributionPointName::FullName(names)) = &point.distribution_point else { continue };
            for name in names {
                if let GeneralName::URI(uri) = name {
                    let lower = uri.to_ascii_lowercase();
                    if (lower.starts_with("http://") || lower.starts_with("https://")) && !urls.iter().any(|u| u == uri)
                    {
                        urls.push((*uri).to_string());
                    }
                }
            }
        }
    }
    urls
}

fn is_certificate_label(label: &str) -> bool {
    matches!(label, "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE")
}

/// Parses `der` as exactly one certificate (trailing bytes are refused: webpki refuses them
/// too, and accepting them would let two different inputs share a parse).
pub(crate) fn parse_single_certificate(der: &[u8]) -> Option<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}

fn is_single_certificate(der: &[u8]) -> bool {
    parse_single_certificate(der).is_some()
}

/// One DER element: its tag byte, the length of its header and of its whole encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DerElement {
    pub(crate) tag: u8,
    pub(crate) header_len: usize,
    pub(crate) total_len: usize,
}

/// Reads the header of the DER element at the start of `input` (single-byte tags, definite
/// lengths only), checking that the whole element is present.
pub(crate) fn der_element(input: &[u8]) -> Option<DerElement> {
    let tag = *input.first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags do not occur in the structures read here
    }
    let first_length_byte = *input.get(1)?;
    let (content_len, header_len) = if first_length_byte < 0x80 {
        (usize::from(first_length_byte), 2)
    } else {
        let count = usize::from(first_length_byte & 0x7f);
        if count == 0 || count > 4 {
            return None; // indefinite length, or longer than anything sane
        }
        let bytes = input.get(2..2 + count)?;
        let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + count)
    };
    let total_len = header_len.checked_add(content_len)?;
    (total_len <= input.len()).then_some(DerElement { tag, header_len, total_len })
}

/// Encodes one DER element (single-byte tag) around `content`.
pub(crate) fn der_encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// The bytes of the first DER element of `input`.
pub(crate) fn first_element(input: &[u8]) -> Option<&[u8]> {
    let element = der_element(input)?;
    input.get(..element.total_len)
}

/// Splits the content of a constructed element into its child elements (whole encodings).
pub(crate) fn der_children(content: &[u8]) -> Option<Vec<&[u8]>> {
    let mut children = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let element = der_element(rest)?;
        let (child, tail) = rest.split_at(element.total_len);
        children.push(child);
        rest = tail;
    }
    Some(children)
}

/// The content bytes of a complete DER element.
pub(crate) fn der_content(element: &[u8]) -> Option<&[u8]> {
    let header = der_element(element)?;
    element.get(header.header_len..header.total_len)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cps::devpki::test_support::{NameAttr, card_with_subject, name_der};
    use crate::ids::IdNatKind;
    use NameAttr::*;

    /// Builds a CA-signed card certificate whose subject is `rdns` (multi-valued RDNs kept in
    /// the given order, i.e. not DER-sorted, like some real-world encoders).
    fn card(rdns: &[&[(NameAttr, &str)]]) -> Vec<u8> {
        card_with_subject(&name_der(rdns, false), &[])
    }

    // Each test below reproduces one line of shared/fixtures/cps-subjects.txt.

    #[test]
    fn professional_card_with_multi_valued_rdn() {
        // CN=899700367917+SN=MAXIMAXIMAXIMAXIMAXI0036791+GN=MUMUMUMUMUMUMUMUMUMUMUMUMUM, T=Médecin, C=FR
        let der = card(&[
            &[(C, "FR")],
            &[(Title, "Médecin")],
            &[(Cn, "899700367917"), (Sn, "MAXIMAXIMAXIMAXIMAXI0036791"), (Gn, "MUMUMUMUMUMUMUMUMUMUMUMUMUM")],
        ]);
        let card = parse_card(&der).unwrap();
        assert_eq!(card.id_nat.as_str(), "899700367917");
        assert_eq!(card.id_nat.kind(), IdNatKind::Rpps);
        assert_eq!(card.family_name.as_deref(), Some("MAXIMAXIMAXIMAXIMAXI0036791"));
        assert_eq!(card.given_name.as_deref(), Some("MUMUMUMUMUMUMUMUMUMUMUMUMUM"));
        assert_eq!(card.title.as_deref(), Some("Médecin"));
        assert_eq!(card.staff_suffix, None);
        assert_eq!(
            card.subject,
            "CN=899700367917+SN=MAXIMAXIMAXIMAXIMAXI0036791+GN=MUMUMUMUMUMUMUMUMUMUMUMUMUM,title=Médecin,C=FR"
        );
    }

    #[test]
    fn common_name_in_the_middle_of_the_rdn() {
        // SN=PHARMACH0007512+CN=899700075122+GN=CAROLE,title=Pharmacien,C=FR
        let der = card(&[
            &[(C, "FR")],
            &[(Title, "Pharmacien")],
            &[(Sn, "PHARMACH0007512"), (Cn, "899700075122"), (Gn, "CAROLE")],
        ]);
        let card = parse_card(&der).unwrap();
        assert_eq!(card.id_nat.as_str(), "899700075122");
        assert_eq!(card.family_name.as_deref(), Some("PHARMACH0007512"));
        assert_eq!(card.given_name.as_deref(), Some("CAROLE"));
        assert_eq!(card.title.as_deref(), Some("Pharmacien"));
    }

    #[test]
    fn common_name_in_the_middle_with_accented_title() {
        // SN=MASSAGE0087058+CN=899700870589+GN=MICHEL,title=Masseur-Kinésithérapeute,C=FR
        let der = card(&[
            &[(C, "FR")],
            &[(Title, "Masseur-Kinésithérapeute")],
            &[(Sn, "MASSAGE0087058"), (Cn, "899700870589"), (Gn, "MICHEL")],
        ]);
        let card = parse_card(&der).unwrap();
        assert_eq!(card.id_nat.as_str(), "899700870589");
        assert_eq!(card.title.as_deref(), Some("Masseur-Kinésithérapeute"));
    }

    #[test]
    fn single_valued_rdns_in_reverse_order() {
        // C=FR/title=Médecin/GN=KIT/SN=DOC0073574/CN=899700735741 (one attribute per RDN)
        let der = card(&[
            &[(C, "FR")],
            &[(Title, "Médecin")],
            &[(Gn, "KIT")],
            &[(Sn, "DOC0073574")],
            &[(Cn, "899700735741")],
        ]);
        let card = parse_card(&der).unwrap();
        assert_eq!(card.id_nat.as_str(), "899700735741");
        assert_eq!(card.given_name.as_deref(), Some("KIT"));
        assert_eq!(card.family_name.as_deref(), Some("DOC0073574"));
        assert_eq!(card.subject, "CN=899700735741,SN=DOC0073574,GN=KIT,title=Médecin,C=FR");
    }

    #[test]
    fn older_card_with_adeli_and_profession_in_ou() {
        // GN=HONORE+SN=MASSEUR1044+CN=00B7010446,OU=Masseur-Kinésithérapeute,O=TEST,C=FR
        let der = card(&[
            &[(C, "FR")],
            &[(O, "TEST")],
            &[(Ou, "Masseur-Kinésithérapeute")],
            &[(Gn, "HONORE"), (Sn, "MASSEUR1044"), (Cn, "00B7010446")],
        ]);
        let card = parse_card(&der).unwrap();
        assert_eq!(card.id_nat.as_str(), "00B7010446");
        assert_eq!(card.id_nat.kind(), IdNatKind::Adeli);
        assert_eq!(card.title.as_deref(), Some("Masseur-Kinésithérapeute"));
        assert_eq!(card.organisation.as_deref(), Some("TEST"));
    }

    #[test]
    fn staff_card() {
        // GN=PATRICE+SN=MAITRE0000029750001+CN=500000000029751/CPAT0001,OU=300000000029751,L=Paris (75),O=TEST,C=FR
        let der = card(&[
            &[(C, "FR")],
            &[(O, "TEST")],
            &[(L, "Paris (75)")],
            &[(Ou, "300000000029751")],
            &[(Gn, "PATRICE"), (Sn, "MAITRE0000029750001"), (Cn, "500000000029751/CPAT0001")],
        ]);
        let card = parse_card(&der).unwrap();
        assert_eq!(card.id_nat.as_str(), "500000000029751");
        assert_eq!(card.id_nat.kind(), IdNatKind::Staff);
        assert_eq!(card.staff_suffix.as_deref(), Some("CPAT0001"));
        assert_eq!(card.organisation.as_deref(), Some("TEST"));
        assert_eq!(card.organisational_unit.as_deref(), Some("300000000029751"));
        // The structure identifier in OU is not a profession.
        assert_eq!(card.title, None);
        assert_eq!(card.given_name.as_deref(), Some("PATRICE"));
    }

    #[test]
    fn staff_card_of_a_professional_keeps_the_rpps() {
        let der = card(&[&[(C, "FR")], &[(Cn, "899700427885/CPE0002")]]);
        let card = parse_card(&der).unwrap();
        assert_eq!(card.id_nat.kind(), IdNatKind::Rpps);
        assert_eq!(card.staff_suffix.as_deref(), Some("CPE0002"));
    }

    #[test]
    fn issuer_with_two_organisational_units() {
        // C=FR, O=ASIP-SANTE, OU=0002 187512751, OU=IGC-SANTE, CN=AC IGC-SANTE FORT PERSONNES
        let issuer = name_der(
            &[
                &[(C, "FR")],
                &[(O, "ASIP-SANTE")],
                &[(Ou, "0002 187512751")],
                &[(Ou, "IGC-SANTE")],
                &[(Cn, "AC IGC-SANTE FORT PERSONNES")],
            ],
            true,
        );
        let subject = name_der(&[&[(C, "FR")], &[(Cn, "899700427885"), (Sn, "X"), (Gn, "Y")]], true);
        let der = crate::cps::devpki::test_support::card_with_names(Some(&issuer), &subject, &[]);
        let card = parse_card(&der).unwrap();
        assert_eq!(card.issuer, "CN=AC IGC-SANTE FORT PERSONNES,OU=IGC-SANTE,OU=0002 187512751,O=ASIP-SANTE,C=FR");
    }

    #[test]
    fn der_sorted_multi_valued_rdn_reads_the_same() {
        let rdns: &[&[(NameAttr, &str)]] =
            &[&[(C, "FR")], &[(Title, "Médecin")], &[(Cn, "899700367917"), (Sn, "MAXI"), (Gn, "MUMU")]];
        let sorted = parse_card(&card_with_subject(&name_der(rdns, true), &[])).unwrap();
        assert_eq!(sorted.id_nat.as_str(), "899700367917");
        assert_eq!(sorted.family_name.as_deref(), Some("MAXI"));
    }

    #[test]
    fn rejections() {
        let no_id = card(&[&[(C, "FR")], &[(Cn, "Jean Dupont")]]);
        assert_eq!(parse_card(&no_id), Err(CardRejection::NoIdNat));

        let no_cn = card(&[&[(C, "FR")], &[(O, "Hôpital Test")]]);
        assert_eq!(parse_card(&no_cn), Err(CardRejection::NoIdNat));

        let bad_luhn = card(&[&[(Cn, "899700367918"), (Sn, "X")]]);
        match parse_card(&bad_luhn) {
            Err(CardRejection::InvalidIdNat(reason)) => assert!(reason.contains("Luhn"), "{reason}"),
            other => panic!("{other:?}"),
        }

        let bad_prefix = card(&[&[(Cn, "399700367917")]]);
        assert!(matches!(parse_card(&bad_prefix), Err(CardRejection::InvalidIdNat(r)) if r.contains("prefix")));

        let bad_staff = card(&[&[(Cn, "5000/CPAT0001")]]);
        assert!(matches!(parse_card(&bad_staff), Err(CardRejection::InvalidIdNat(r)) if r.contains("staff")));

        let bad_staff_rpps = card(&[&[(Cn, "899700367918/CPE1")]]);
        assert!(matches!(parse_card(&bad_staff_rpps), Err(CardRejection::InvalidIdNat(r)) if r.contains("Luhn")));

        let two_cns = card(&[&[(Cn, "899700367917")], &[(Cn, "899700075122")]]);
        assert!(matches!(parse_card(&two_cns), Err(CardRejection::InvalidIdNat(r)) if r.contains("2 common names")));

        assert_eq!(parse_card(b""), Err(CardRejection::Malformed));
        assert_eq!(parse_card(b"\x30\x03\x02\x01\x01"), Err(CardRejection::Malformed));
        let good = card(&[&[(Cn, "899700367917")]]);
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(parse_card(&trailing), Err(CardRejection::Malformed));
        for cut in [1, good.len() / 2, good.len() - 1] {
            assert_eq!(parse_card(&good[..cut]), Err(CardRejection::Malformed));
        }
    }

    #[test]
    fn fingerprint_serial_dates_and_distribution_points() {
        let der = card_with_subject(
            &name_der(&[&[(Cn, "899700367917")]], true),
            &[
                "http://crl.example.test/personnes.crl",
                "ldap://ldap.example.test/cn=x",
                "HTTPS://crl2.example.test/a.crl",
            ],
        );
        let card = parse_card(&der).unwrap();
        assert_eq!(
            card.crl_distribution_points,
            ["http://crl.example.test/personnes.crl", "HTTPS://crl2.example.test/a.crl"]
        );
        assert_eq!(card.fingerprint.len(), 43);
        assert_eq!(card.fingerprint, fingerprint(&der));
        assert!(!card.fingerprint.contains(['=', '+', '/']));
        let x509 = parse_single_certificate(&der).unwrap();
        assert_eq!(card.serial_hex, serial_hex(x509.raw_serial()));
        assert!(card.not_before < card.not_after);
    }

    #[test]
    fn serial_hex_strips_only_sign_padding() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x01, 0x00]), "0100");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "");
    }

    #[test]
    fn rfc4514_escaping() {
        let mut out = String::new();
        escape_rfc4514_value(" #a,b+c\"d\\e<f>g;h\nend ", &mut out);
        assert_eq!(out, "\\ #a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\0Aend\\ ");
        let mut out = String::new();
        escape_rfc4514_value("#x", &mut out);
        assert_eq!(out, "\\#x");
        let der = card(&[&[(O, "Cabinet Martin, Dupont + Associés")], &[(Cn, "899700367917")]]);
        assert_eq!(parse_card(&der).unwrap().subject, "CN=899700367917,O=Cabinet Martin\\, Dupont \\+ Associés");
    }

    #[test]
    fn pem_and_der_inputs() {
        let der = card(&[&[(Cn, "899700367917")]]);
        assert_eq!(pem_or_der_to_der(&der).as_deref(), Some(der.as_slice()));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let pem = format!(
            "Bag Attributes\n    friendlyName: doctor\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n\
             -----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        );
        assert_eq!(pem_or_der_to_der(pem.as_bytes()).as_deref(), Some(der.as_slice()));
        // OpenSSL "trusted certificate" form: trust settings follow the certificate.
        let mut trusted = der.clone();
        trusted.extend_from_slice(&[0x30, 0x00]);
        let trusted_pem = format!(
            "-----BEGIN TRUSTED CERTIFICATE-----\n{}\n-----END TRUSTED CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(&trusted)
        );
        assert_eq!(pem_or_der_to_der(trusted_pem.as_bytes()).as_deref(), Some(der.as_slice()));

        assert_eq!(pem_or_der_to_der(b""), None);
        assert_eq!(pem_or_der_to_der(b"hello"), None);
        assert_eq!(pem_or_der_to_der(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"), None);
        assert_eq!(pem_or_der_to_der(b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"), None);
        assert_eq!(pem_or_der_to_der(b"-----BEGIN CERTIFICATE-----\nMAA="), None);
    }

    #[test]
    fn der_reader_refuses_truncated_and_oversized_lengths() {
        assert_eq!(der_element(&[0x30, 0x00]), Some(DerElement { tag: 0x30, header_len: 2, total_len: 2 }));
        assert_eq!(der_element(&[0x30, 0x01]), None);
        assert_eq!(der_element(&[0x30, 0x80]), None);
        assert_eq!(der_element(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_element(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(der_element(&[0x1f, 0x00]), None);
        assert_eq!(
            der_children(&[0x02, 0x01, 0x05, 0x04, 0x00]),
            Some(vec![&[0x02, 0x01, 0x05][..], &[0x04, 0x00][..]])
        );
        assert_eq!(der_children(&[0x02, 0x02, 0x05]), None);
    }
}

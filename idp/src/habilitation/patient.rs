//! Patient references as apps send them: an INS (`{"ins": {"value", "oid"}}`) or an identifier
//! local to one app (`{"local_id", "namespace"}`), checked before anything is looked up.

use serde::{Deserialize, Serialize};

use crate::store::PatientIdentity;

/// INS OIDs (ANS): NIR, NIA, and the test and demo OIDs that production refuses.
pub const OID_NIR: &str = "1.2.250.1.213.1.4.8";
pub const OID_NIA: &str = "1.2.250.1.213.1.4.9";
pub const OID_TEST: &str = "1.2.250.1.213.1.4.10";
pub const OID_DEMO: &str = "1.2.250.1.213.1.4.11";

const MAX_LOCAL_ID: usize = 128;

/// A patient reference as it appears in requests and tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum PatientRef {
    Ins { ins: Ins },
    Local { local_id: String, namespace: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ins {
    pub value: String,
    pub oid: String,
}

/// Why a patient reference is refused; the text is shown to the app.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatientRefError {
    #[error("patient must be {{\"ins\": {{\"value\", \"oid\"}}}} or {{\"local_id\", \"namespace\"}}")]
    Shape,
    #[error("ins.oid {0} is not an INS OID (NIR 1.2.250.1.213.1.4.8, NIA …4.9, test …4.10, demo …4.11)")]
    UnknownOid(String),
    #[error("ins.oid {0} is a test or demonstration identity, refused in production")]
    TestIdentityInProduction(String),
    #[error("ins.value must be 15 characters: 13 digits (2A/2B allowed for Corsica) and a 2-digit key")]
    InsFormat,
    #[error("ins.value has a wrong key: expected {expected:02}")]
    InsKey { expected: u32 },
    #[error("local_id and namespace must be 1 to 128 printable characters")]
    LocalFormat,
}

impl PatientRef {
    pub fn parse(value: &serde_json::Value) -> Result<PatientRef, PatientRefError> {
        serde_json::from_value(value.clone()).map_err(|_| PatientRefError::Shape)
    }

    /// Checks the reference; `production` refuses test and demo INS OIDs.
    pub fn validate(&self, production: bool) -> Result<(), PatientRefError> {
        match self {
            PatientRef::Ins { ins } => {
                match ins.oid.as_str() {
                    OID_NIR | OID_NIA => {}
                    OID_TEST | OID_DEMO if production => {
                        return Err(PatientRefError::TestIdentityInProduction(ins.oid.clone()));
                    }
                    OID_TEST | OID_DEMO => {}
                    other => return Err(PatientRefError::UnknownOid(truncate(other))),
                }
                check_nir(&ins.value)
            }
            PatientRef::Local { local_id, namespace } => {
                let ok = |s: &str| !s.is_empty() && s.len() <= MAX_LOCAL_ID && !s.chars().any(char::is_control);
                if ok(local_id) && ok(namespace) { Ok(()) } else { Err(PatientRefError::LocalFormat) }
            }
        }
    }

    /// Whether this is a test or demonstration identity.
    pub fn is_test_identity(&self) -> bool {
        matches!(self, PatientRef::Ins { ins } if ins.oid == OID_TEST || ins.oid == OID_DEMO)
    }

    pub fn identity(&self) -> PatientIdentity {
        match self {
            PatientRef::Ins { ins } => PatientIdentity::Ins { value: ins.value.clone(), oid: ins.oid.clone() },
            PatientRef::Local { local_id, namespace } => {
                PatientIdentity::Local { local_id: local_id.clone(), namespace: namespace.clone() }
            }
        }
    }

    pub fn from_identity(identity: &PatientIdentity) -> PatientRef {
        match identity {
            PatientIdentity::Ins { value, oid } => {
                PatientRef::Ins { ins: Ins { value: value.clone(), oid: oid.clone() } }
            }
            PatientIdentity::Local { local_id, namespace } => {
                PatientRef::Local { local_id: local_id.clone(), namespace: namespace.clone() }
            }
        }
    }

    /// A minimised form for pages and logs: the kind and the last characters only.
    pub fn masked(&self) -> String {
        let tail = |s: &str| s.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect::<String>();
        match self {
            PatientRef::Ins { ins } => format!("INS …{}", tail(&ins.value)),
            PatientRef::Local { local_id, namespace } => format!("{namespace} …{}", tail(local_id)),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// NIR/NIA: 13 characters (digits; `2A`/`2B` in the department for Corsica) and the key
/// 97 − (number mod 97).
fn check_nir(value: &str) -> Result<(), PatientRefError> {
    if value.len() != 15 || !value.is_ascii() {
        return Err(PatientRefError::InsFormat);
    }
    let (body, key) = value.split_at(13);
    let body = match &body[5..7] {
        "2A" | "2a" => format!("{}19{}", &body[..5], &body[7..]),
        "2B" | "2b" => format!("{}18{}", &body[..5], &body[7..]),
        _ => body.to_string(),
    };
    if !body.bytes().all(|b| b.is_ascii_digit()) || !key.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PatientRefError::InsFormat);
    }
    let number: u64 = body.parse().map_err(|_| PatientRefError::InsFormat)?;
    let expected = 97 - (number % 97) as u32;
    let given: u32 = key.parse().map_err(|_| PatientRefError::InsFormat)?;
    if given == expected { Ok(()) } else { Err(PatientRefError::InsKey { expected }) }
}

/// Appends the key to a 13-character NIR (tests and fixtures).
pub fn with_nir_key(body: &str) -> String {
    let digits = match &body[5..7] {
        "2A" => format!("{}19{}", &body[..5], &body[7..]),
        "2B" => format!("{}18{}", &body[..5], &body[7..]),
        _ => body.to_string(),
    };
    let number: u64 = digits.parse().expect("13 digits");
    format!("{body}{:02}", 97 - number % 97)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ins(value: &str, oid: &str) -> PatientRef {
        PatientRef::Ins { ins: Ins { value: value.into(), oid: oid.into() } }
    }

    #[test]
    fn valid_nir_keys_pass_and_wrong_keys_name_the_expected_one() {
        let good = with_nir_key("2840375123456");
        assert_eq!(ins(&good, OID_NIR).validate(true), Ok(()));
        let bad = format!("{}{:02}", &good[..13], (good[13..].parse::<u32>().unwrap() + 1) % 98);
        assert!(matches!(ins(&bad, OID_NIR).validate(true), Err(PatientRefError::InsKey { .. })));
        let corsica = with_nir_key("184032A123456");
        assert_eq!(ins(&corsica, OID_NIA).validate(true), Ok(()));
        assert_eq!(ins("12345", OID_NIR).validate(true), Err(PatientRefError::InsFormat));
    }

    #[test]
    fn test_oids_are_refused_in_production_only_and_unknown_oids_always() {
        let value = with_nir_key("1840375123456");
        assert!(matches!(ins(&value, OID_TEST).validate(true), Err(PatientRefError::TestIdentityInProduction(_))));
        assert_eq!(ins(&value, OID_TEST).validate(false), Ok(()));
        assert!(ins(&value, OID_DEMO).is_test_identity());
        assert!(matches!(ins(&value, "1.2.3").validate(false), Err(PatientRefError::UnknownOid(_))));
    }

    #[test]
    fn shapes_are_parsed_strictly() {
        assert!(matches!(PatientRef::parse(&json!({"ins": {"value": "x", "oid": "y"}})), Ok(PatientRef::Ins { .. })));
        assert!(matches!(PatientRef::parse(&json!({"local_id": "a", "namespace": "b"})), Ok(PatientRef::Local { .. })));
        assert_eq!(PatientRef::parse(&json!({"ins": {"val": "x", "oid": "y"}})), Err(PatientRefError::Shape));
        assert_eq!(PatientRef::parse(&json!({"nir": "x"})), Err(PatientRefError::Shape));
        assert_eq!(PatientRef::parse(&json!("x")), Err(PatientRefError::Shape));
        let local = PatientRef::Local { local_id: String::new(), namespace: "n".into() };
        assert_eq!(local.validate(true), Err(PatientRefError::LocalFormat));
    }

    #[test]
    fn masking_keeps_only_the_tail() {
        let value = with_nir_key("1840375123456");
        let masked = ins(&value, OID_NIR).masked();
        assert!(masked.starts_with("INS …") && !masked.contains(&value[..8]));
    }
}

//! RFC 9396 rich authorization requests of type `patient_access`: parsing with limits, and the
//! shape of what is granted (in token responses, JWT access tokens and introspection).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::patient::PatientRef;
use crate::error::{OAuthError, OAuthErrorCode};

pub const TYPE_PATIENT_ACCESS: &str = "patient_access";

/// Bounds that keep a request cheap to evaluate (each detail costs a few lookups).
pub const MAX_DETAILS: usize = 10;
pub const MAX_ACTIONS: usize = 10;
pub const MAX_DATATYPES: usize = 20;
const MAX_TEXT: usize = 64;
const MAX_PURPOSE: usize = 256;

/// One requested `patient_access` detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub patient: PatientRef,
    pub actions: Vec<String>,
    /// Empty: whatever the profile allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datatypes: Vec<String>,
    /// The relationship kind the app relies on (e.g. `second_opinion_expert`); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// What a token carries for one granted detail: the request, narrowed to what policy allows, and
/// the relationship and profile that allow it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub patient: PatientRef,
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datatypes: Vec<String>,
    pub relationship: GrantedRelationship,
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedRelationship {
    pub id: String,
    pub kind: String,
}

impl GrantedAccess {
    /// The request that would be granted this again (refreshes re-evaluate it).
    pub fn as_request(&self) -> PatientAccess {
        PatientAccess {
            kind: self.kind.clone(),
            patient: self.patient.clone(),
            actions: self.actions.clone(),
            datatypes: self.datatypes.clone(),
            relationship: Some(self.relationship.kind.clone()),
            purpose: self.purpose.clone(),
        }
    }
}

/// RFC 9396 §6: details asked for at the token endpoint (or in a token exchange) may only narrow
/// what is held: each must stay within one held detail (same patient, no other actions or data
/// types, the same relationship kind). Absent: everything held.
pub fn narrow(held: &[GrantedAccess], raw: Option<&str>, production: bool) -> Result<Vec<PatientAccess>, OAuthError> {
    let Some(raw) = raw else { return Ok(held.iter().map(GrantedAccess::as_request).collect()) };
    let mut requested = parse(raw, production)?;
    for (i, detail) in requested.iter_mut().enumerate() {
        let covering = held.iter().find(|h| {
            h.patient == detail.patient
                && detail.actions.iter().all(|a| h.actions.contains(a))
                && detail.datatypes.iter().all(|d| h.datatypes.contains(d))
                && detail.relationship.as_ref().is_none_or(|k| *k == h.relationship.kind)
        });
        let Some(covering) = covering else {
            return Err(invalid(format!("authorization_details[{i}] is broader than what was authorized")));
        };
        // No data types named: those held, not all that the profile allows (which may be more).
        if detail.datatypes.is_empty() {
            detail.datatypes = covering.datatypes.clone();
        }
    }
    Ok(requested)
}

pub fn invalid(description: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidAuthorizationDetails, description.into())
}

/// Parses the `authorization_details` parameter: a JSON array of `patient_access` objects.
/// `production` refuses test and demonstration INS.
pub fn parse(raw: &str, production: bool) -> Result<Vec<PatientAccess>, OAuthError> {
    let value: Value =
        serde_json::from_str(raw).map_err(|_| invalid("authorization_details must be a JSON array of objects"))?;
    let Value::Array(items) = value else {
        return Err(invalid("authorization_details must be a JSON array of objects"));
    };
    if items.is_empty() {
        return Err(invalid("authorization_details is empty"));
    }
    if items.len() > MAX_DETAILS {
        return Err(invalid(format!("at most {MAX_DETAILS} authorization_details per request")));
    }
    items.iter().enumerate().map(|(i, item)| parse_one(item, production).map_err(|e| at(i, e))).collect()
}

fn at(index: usize, error: OAuthError) -> OAuthError {
    invalid(format!("authorization_details[{index}]: {}", error.description))
}

fn parse_one(item: &Value, production: bool) -> Result<PatientAccess, OAuthError> {
    let Value::Object(fields) = item else { return Err(invalid("each detail must be an object")) };
    match fields.get("type").and_then(Value::as_str) {
        Some(TYPE_PATIENT_ACCESS) => {}
        Some(other) => {
            return Err(invalid(format!(
                "type `{}` is not supported; supported: {TYPE_PATIENT_ACCESS}",
                other.chars().take(MAX_TEXT).collect::<String>()
            )));
        }
        None => return Err(invalid("type is missing")),
    }
    for key in fields.keys() {
        if !["type", "patient", "actions", "datatypes", "relationship", "purpose"].contains(&key.as_str()) {
            return Err(invalid(format!(
                "unknown field `{}` for type {TYPE_PATIENT_ACCESS}",
                key.chars().take(MAX_TEXT).collect::<String>()
            )));
        }
    }
    let patient = PatientRef::parse(fields.get("patient").unwrap_or(&Value::Null))
        .map_err(|e| invalid(format!("patient: {e}")))?;
    patient.validate(production).map_err(|e| invalid(format!("patient: {e}")))?;
    let actions = strings(fields.get("actions"), "actions", MAX_ACTIONS, true)?;
    for action in &actions {
        if !super::policy::ACTIONS.contains(&action.as_str()) {
            return Err(invalid(format!("unknown action `{action}`; known: {}", super::policy::ACTIONS.join(", "))));
        }
    }
    let datatypes = strings(fields.get("datatypes"), "datatypes", MAX_DATATYPES, false)?;
    let relationship = optional_text(fields.get("relationship"), "relationship", MAX_TEXT)?;
    let purpose = optional_text(fields.get("purpose"), "purpose", MAX_PURPOSE)?;
    Ok(PatientAccess { kind: TYPE_PATIENT_ACCESS.to_string(), patient, actions, datatypes, relationship, purpose })
}

/// A deduplicated array of short identifiers.
fn strings(value: Option<&Value>, name: &str, max: usize, required: bool) -> Result<Vec<String>, OAuthError> {
    let items = match value {
        None if !required => return Ok(Vec::new()),
        None => return Err(invalid(format!("{name} is missing"))),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid(format!("{name} must be an array of strings"))),
    };
    if items.len() > max {
        return Err(invalid(format!("{name} has more than {max} entries")));
    }
    if required && items.is_empty() {
        return Err(invalid(format!("{name} is empty")));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let s = item.as_str().ok_or_else(|| invalid(format!("{name} must be an array of strings")))?;
        if s.is_empty() || s.len() > MAX_TEXT || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b)) {
            return Err(invalid(format!("{name} entries are short identifiers (letters, digits, _-.:)")));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

fn optional_text(value: Option<&Value>, name: &str, max: usize) -> Result<Option<String>, OAuthError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control) => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(invalid(format!("{name} must be a string of 1 to {max} characters"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::habilitation::patient::{OID_NIR, OID_TEST, with_nir_key};
    use serde_json::json;

    fn detail(patient: Value) -> String {
        json!([{"type": "patient_access", "patient": patient, "actions": ["read"]}]).to_string()
    }

    #[test]
    fn a_well_formed_detail_parses_and_deduplicates() {
        let ins = with_nir_key("1840375123456");
        let raw = json!([{"type": "patient_access", "patient": {"ins": {"value": ins, "oid": OID_NIR}},
            "actions": ["read", "read", "comment"], "datatypes": ["report"], "relationship": "care_team"}]);
        let parsed = parse(&raw.to_string(), true).unwrap();
        assert_eq!(parsed[0].actions, vec!["read", "comment"]);
        assert_eq!(parsed[0].relationship.as_deref(), Some("care_team"));
    }

    #[test]
    fn malformed_details_are_invalid_authorization_details_with_a_reason() {
        let ins = with_nir_key("1840375123456");
        let cases: Vec<(String, &str)> =
            vec![
            ("{}".into(), "JSON array"),
            ("[]".into(), "empty"),
            ("not json".into(), "JSON array"),
            (json!([{"type": "payment_initiation"}]).to_string(), "not supported"),
            (json!([{"patient": {}}]).to_string(), "type is missing"),
            (detail(json!({"ins": {"valeur": ins, "oid": OID_NIR}})), "patient:"),
            (detail(json!({"ins": {"value": ins, "oid": OID_TEST}})), "refused in production"),
            (detail(json!({"ins": {"value": "123", "oid": OID_NIR}})), "15 characters"),
            (json!([{"type": "patient_access", "patient": {"local_id": "1", "namespace": "a"}, "actions": ["fly"]}])
                .to_string(), "unknown action"),
            (json!([{"type": "patient_access", "patient": {"local_id": "1", "namespace": "a"}, "actions": []}])
                .to_string(), "actions is empty"),
            (json!([{"type": "patient_access", "patient": {"local_id": "1", "namespace": "a"}, "actions": ["read"],
                "datatypes": vec!["x"; MAX_DATATYPES + 1]}]).to_string(), "more than"),
            (json!(vec![json!({"type": "patient_access", "patient": {"local_id": "1", "namespace": "a"},
                "actions": ["read"]}); MAX_DETAILS + 1]).to_string(), "at most"),
            (json!([{"type": "patient_access", "patient": {"local_id": "1", "namespace": "a"}, "actions": ["read"],
                "locations": ["x"]}]).to_string(), "unknown field"),
        ];
        for (raw, expected) in cases {
            let error = parse(&raw, true).expect_err(&raw);
            assert_eq!(error.code, OAuthErrorCode::InvalidAuthorizationDetails, "{raw}");
            assert!(error.description.contains(expected), "{raw}: {}", error.description);
        }
    }

    #[test]
    fn test_identities_pass_outside_production() {
        let ins = with_nir_key("1840375123456");
        assert!(parse(&detail(json!({"ins": {"value": ins, "oid": OID_TEST}})), false).is_ok());
    }
}

//! Strict parsing of OAuth request parameters (query string or `application/x-www-form-urlencoded`
//! body). RFC 6749 §3.1: parameters must not be repeated; values must be valid UTF-8; sizes are
//! bounded so that a hostile request costs little and never panics.

use std::collections::HashMap;

use crate::error::OAuthError;

/// At most this many parameters per request.
pub const MAX_PARAMS: usize = 64;
/// At most this many bytes per decoded value (a `claims` or `authorization_details` JSON fits).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// Parameters by name; empty values are treated as absent (RFC 6749 §3.1).
#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, String>,
}

impl Params {
    pub fn parse(raw: &[u8]) -> Result<Params, OAuthError> {
        let mut values = HashMap::new();
        if raw.is_empty() {
            return Ok(Params { values });
        }
        for (count, pair) in raw.split(|b| *b == b'&').enumerate() {
            if pair.is_empty() {
                continue;
            }
            if count >= MAX_PARAMS {
                return Err(OAuthError::invalid_request(format!("too many parameters (at most {MAX_PARAMS})")));
            }
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let name =
                decode(name).ok_or_else(|| OAuthError::invalid_request("a parameter name is not valid UTF-8"))?;
            let value = decode(value).ok_or_else(|| {
                OAuthError::invalid_request(format!("parameter `{}` is not valid UTF-8", printable(&name)))
            })?;
            if value.len() > MAX_VALUE_BYTES {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{}` is too long (at most {MAX_VALUE_BYTES} bytes)",
                    printable(&name)
                )));
            }
            if value.is_empty() {
                continue;
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(OAuthError::invalid_request(format!("parameter `{}` is repeated", printable(&name))));
            }
        }
        Ok(Params { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A required parameter, or `invalid_request` naming it.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("missing parameter `{name}`")))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn insert(&mut self, name: &str, value: String) {
        self.values.insert(name.to_string(), value);
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    pub fn into_map(self) -> HashMap<String, String> {
        self.values
    }

    pub fn from_map(values: HashMap<String, String>) -> Params {
        Params { values }
    }
}

fn decode(raw: &[u8]) -> Option<String> {
    // `+` means space in form encoding; then percent-decode and insist on UTF-8.
    let plus_decoded: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_decoded).collect();
    String::from_utf8(bytes).ok()
}

/// A parameter name safe to echo in an error description.
fn printable(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_graphic()).take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes() {
        let p =
            Params::parse(b"response_type=code&scope=openid+profile&redirect_uri=https%3A%2F%2Fa.example%2Fcb&empty=")
                .unwrap();
        assert_eq!(p.get("scope"), Some("openid profile"));
        assert_eq!(p.get("redirect_uri"), Some("https://a.example/cb"));
        assert_eq!(p.get("empty"), None);
        assert!(p.require("state").unwrap_err().description.contains("state"));
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let err = Params::parse(b"scope=openid&scope=email").unwrap_err();
        assert!(err.description.contains("repeated"), "{err}");
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let err = Params::parse(b"state=%FF%FE").unwrap_err();
        assert!(err.description.contains("UTF-8"), "{err}");
        assert!(Params::parse(b"%C3=x").is_err());
    }

    #[test]
    fn oversize_and_too_many_are_refused() {
        let long = format!("state={}", "a".repeat(MAX_VALUE_BYTES + 1));
        assert!(Params::parse(long.as_bytes()).unwrap_err().description.contains("too long"));
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=x")).collect();
        assert!(Params::parse(many.join("&").as_bytes()).unwrap_err().description.contains("too many"));
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [&b"=&=&&=="[..], b"%", b"%%%", b"a=%G1", b"\xff\xfe=\x00", b"=====", b"a"] {
            let _ = Params::parse(raw);
        }
    }
}

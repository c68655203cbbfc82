//! National identifiers of the French health system (see shared/DOMAIN.md): the idNat of a
//! professional. Validation is strict because the idNat is the account key of a professional.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdNatError {
    #[error(
        "an idNat is a type digit followed by the number, e.g. 8 + an 11-digit RPPS (899700427885) or 0 + a 9-character ADELI"
    )]
    Shape,
    #[error("the RPPS number {0} fails its Luhn check digit: check for a typing error")]
    Luhn(String),
    #[error("idNat type prefix `{0}` is not accepted for a professional account: use 8 (RPPS) or 0 (ADELI)")]
    Prefix(char),
}

/// Kind of national identifier behind an idNat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdNatKind {
    /// `8` + RPPS (11 digits, Luhn check digit).
    Rpps,
    /// `0` + ADELI (9 characters).
    Adeli,
}

/// A validated idNat, e.g. `899700427885`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdNat {
    value: String,
    kind: IdNatKind,
}

impl IdNat {
    pub fn parse(input: &str) -> Result<IdNat, IdNatError> {
        let value = input.trim();
        let mut chars = value.chars();
        let prefix = chars.next().ok_or(IdNatError::Shape)?;
        let number = chars.as_str();
        match prefix {
            '8' => {
                if number.len() != 11 || !number.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IdNatError::Shape);
                }
                if !luhn_valid(number) {
                    return Err(IdNatError::Luhn(number.to_string()));
                }
                Ok(IdNat { value: value.to_string(), kind: IdNatKind::Rpps })
            }
            '0' => {
                if number.len() != 9 || !number.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(IdNatError::Shape);
                }
                Ok(IdNat { value: value.to_ascii_uppercase(), kind: IdNatKind::Adeli })
            }
            c if c.is_ascii_digit() => Err(IdNatError::Prefix(c)),
            _ => Err(IdNatError::Shape),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    pub fn kind(&self) -> IdNatKind {
        self.kind
    }
}

impl fmt::Display for IdNat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// Luhn (mod 10) check over a string of ASCII digits whose last digit is the check digit.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rpps_numbers_from_the_fixtures_pass() {
        for rpps in [
            "99700427885",
            "99700218896",
            "10002813839",
            "99700075122",
            "99700870589",
            "99700367917",
            "99700735741",
            "99700252580",
        ] {
            let id = IdNat::parse(&format!("8{rpps}")).unwrap();
            assert_eq!(id.kind(), IdNatKind::Rpps);
        }
    }

    #[test]
    fn wrong_check_digit_is_refused() {
        assert_eq!(IdNat::parse("899700427886"), Err(IdNatError::Luhn("99700427886".into())));
    }

    #[test]
    fn shapes_and_prefixes() {
        assert_eq!(IdNat::parse("8997004278"), Err(IdNatError::Shape));
        assert_eq!(IdNat::parse("89970042788a"), Err(IdNatError::Shape));
        assert_eq!(IdNat::parse(""), Err(IdNatError::Shape));
        assert_eq!(IdNat::parse("x99700427885"), Err(IdNatError::Shape));
        assert_eq!(IdNat::parse("399700427885"), Err(IdNatError::Prefix('3')));
        assert_eq!(IdNat::parse("00b7010446").unwrap().as_str(), "00B7010446");
    }
}

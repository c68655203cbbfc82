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
    #[error(
        "a staff-card identifier is one type digit other than 8 and 0 followed by 8 to 19 digits, e.g. 500000000029751"
    )]
    StaffShape,
}

/// Kind of national identifier behind an idNat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdNatKind {
    /// `8` + RPPS (11 digits, Luhn check digit).
    Rpps,
    /// `0` + ADELI (9 characters).
    Adeli,
    /// Holder of a staff card (CPE for establishment staff, CPA for practice staff): see
    /// [`IdNat::parse_staff`].
    Staff,
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

    /// Parses the identifier of a staff card holder (CPE/CPA), e.g. `500000000029751`.
    ///
    /// Staff such as medical secretaries have no RPPS or ADELI number: their cards carry an
    /// identifier built from a type digit (which register the structure comes from) followed by
    /// the structure's number and a sequence. No check digit is published for that form, so
    /// only its shape can be verified: one type digit other than `8` and `0` (those are RPPS and
    /// ADELI, which [`IdNat::parse`] handles with their own rules) then 8 to 19 ASCII digits.
    /// It is a separate function so that a staff identifier is accepted only where a staff card
    /// is expected (the `CN=<idNat>/<card>` form), never as a professional's identifier.
    pub fn parse_staff(input: &str) -> Result<IdNat, IdNatError> {
        let value = input.trim();
        let bytes = value.as_bytes();
        let (prefix, number) = match bytes.split_first() {
            Some((prefix, number)) => (*prefix, number),
            None => return Err(IdNatError::StaffShape),
        };
        let prefix_ok = prefix.is_ascii_digit() && prefix != b'8' && prefix != b'0';
        let number_ok = (8..=19).contains(&number.len()) && number.iter().all(u8::is_ascii_digit);
        if !prefix_ok || !number_ok {
            return Err(IdNatError::StaffShape);
        }
        Ok(IdNat { value: value.to_string(), kind: IdNatKind::Staff })
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

    #[test]
    fn staff_identifiers() {
        let id = IdNat::parse_staff("500000000029751").unwrap();
        assert_eq!(id.kind(), IdNatKind::Staff);
        assert_eq!(id.as_str(), "500000000029751");
        assert_eq!(IdNat::parse_staff(" 312345678 ").unwrap().as_str(), "312345678");
        assert_eq!(IdNat::parse_staff("31234567890123456789").unwrap().kind(), IdNatKind::Staff);
        // Too short, too long, letters, RPPS/ADELI prefixes, non-ASCII digits.
        for bad in ["", "5", "31234567", "312345678901234567890", "5000000000297a1", "899700427885", "000000000029751"]
        {
            assert_eq!(IdNat::parse_staff(bad), Err(IdNatError::StaffShape), "{bad}");
        }
        assert_eq!(IdNat::parse_staff("5\u{0663}00000000"), Err(IdNatError::StaffShape));
        // A staff identifier is not a professional idNat.
        assert_eq!(IdNat::parse("500000000029751"), Err(IdNatError::Prefix('5')));
    }
}

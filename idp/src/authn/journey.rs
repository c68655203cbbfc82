//! The assurance ladder (shared/DOMAIN.md): which `acr` a set of completed factors reaches.
//! `eidas1` = two factors, `eidas2` = phishing-resistant multi-factor, `eidas3` = qualified
//! hardware credential. A password alone reaches no level: Habilis never claims two factors
//! that did not happen.

use crate::clients::AcrLevel;

/// The level reached by the RFC 8176 `amr` values of a session.
pub fn level_of(amr: &[String]) -> Option<AcrLevel> {
    let has = |m: &str| amr.iter().any(|a| a == m);
    if has("sc") && has("pin") {
        return Some(AcrLevel::Eidas3);
    }
    if (has("hwk") || has("swk")) && (has("user") || has("pin") || has("fpt")) {
        return Some(AcrLevel::Eidas2);
    }
    if has("pwd") && has("otp") {
        return Some(AcrLevel::Eidas1);
    }
    None
}

/// The levels of this deployment: the lowest any login may end at, and the highest some login
/// method reaches. A request that requires more than `highest` fails clearly instead of being
/// silently downgraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Levels {
    /// `login.minimum_acr`; `None` when set to `none`.
    pub floor: Option<AcrLevel>,
    pub highest: AcrLevel,
}

impl Levels {
    /// Password + one-time code (email or TOTP): `eidas1` at most, no floor.
    pub const PASSWORD_AND_CODE: Levels = Levels { floor: None, highest: AcrLevel::Eidas1 };

    pub fn of(config: &crate::config::Config) -> Levels {
        // The CPS card reaches eidas3 (and so satisfies eidas2 requirements); security keys and
        // passkeys with user verification reach eidas2.
        let highest = if config.card_mode() != crate::config::CardMode::Off {
            AcrLevel::Eidas3
        } else if crate::authn::passkeys::available(config) {
            AcrLevel::Eidas2
        } else {
            AcrLevel::Eidas1
        };
        Levels { floor: AcrLevel::parse(&config.login.minimum_acr), highest }
    }

    pub fn achievable(&self, level: AcrLevel) -> bool {
        level <= self.highest
    }
}

/// The levels of the running deployment.
pub fn levels(state: &crate::app::AppState) -> Levels {
    Levels::of(&state.config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amr(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ladder() {
        assert_eq!(level_of(&amr(&["pwd"])), None);
        assert_eq!(level_of(&amr(&["pwd", "otp", "mfa"])), Some(AcrLevel::Eidas1));
        assert_eq!(level_of(&amr(&["hwk", "user", "mfa"])), Some(AcrLevel::Eidas2));
        assert_eq!(level_of(&amr(&["hwk"])), None, "a key without user verification is one factor");
        assert_eq!(level_of(&amr(&["sc", "pin", "hwk", "mfa"])), Some(AcrLevel::Eidas3));
    }
}

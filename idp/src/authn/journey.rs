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

/// Whether some login method of this deployment can reach `level`: password + one-time code
/// (email or TOTP) reach `eidas1`. Phishing-resistant keys and the CPS card come with their own
/// factors; until then a request that requires their level fails clearly instead of being
/// silently downgraded.
pub fn level_achievable(level: AcrLevel) -> bool {
    level == AcrLevel::Eidas1
}

/// The configured lowest level of any login (`login.minimum_acr`); `None` when set to `none`.
pub fn floor(state: &crate::app::AppState) -> Option<AcrLevel> {
    AcrLevel::parse(&state.config.login.minimum_acr)
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

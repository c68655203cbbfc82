//! Passwords: argon2id with parameters from the configuration, hashing on the blocking pool (it is
//! deliberately CPU-heavy and must not stall the async runtime), a minimum length policy.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::PasswordConfig;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must have at least {0} characters")]
    TooShort(usize),
    #[error("the password is too long (at most 1024 bytes)")]
    TooLong,
    #[error("the password is too common or too close to the account's own details")]
    Weak,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Long passwords that are nevertheless among the most used (with punctuation removed), in French
/// and English. Short ones are already refused by the minimum length.
const COMMON_PASSWORDS: &[&str] = &[
    "123456789012",
    "1234567890123",
    "12345678901234",
    "123456789abc",
    "azertyuiop12",
    "azertyuiop123",
    "azertyuiopqs",
    "qwertyuiop12",
    "qwertyuiop123",
    "qwertyuiopas",
    "motdepasse12",
    "motdepasse123",
    "motdepasse2024",
    "motdepasse2025",
    "motdepasse2026",
    "password1234",
    "password12345",
    "password2024",
    "password2025",
    "password2026",
    "passwordpassword",
    "iloveyou1234",
    "jetaime12345",
    "soleil123456",
    "bonjour12345",
    "doudou123456",
    "marseille123",
    "azerty123456",
    "qwerty123456",
    "abcdefghijkl",
    "abcdef123456",
    "changeme1234",
    "welcome12345",
    "bienvenue123",
    "bienvenue1234",
    "administrator",
    "administrateur",
    "letmein12345",
    "trustno11234",
    "football1234",
    "princess1234",
    "sunshine1234",
    "motdepassemotdepasse",
    "0000000000000",
    "111111111111",
    "aaaaaaaaaaaa",
    "habilis12345",
    "habilishabilis",
];

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    min_length: usize,
}

impl PasswordHasher {
    pub fn new(config: &PasswordConfig) -> Result<PasswordHasher, PasswordError> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism, None)
            .map_err(|e| PasswordError::Hashing(e.to_string()))?;
        Ok(PasswordHasher { params, min_length: config.min_length })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Checks the policy (length in characters, not bytes).
    pub fn check_policy(&self, password: &str) -> Result<(), PasswordError> {
        if password.len() > 1024 {
            return Err(PasswordError::TooLong);
        }
        if password.chars().count() < self.min_length {
            return Err(PasswordError::TooShort(self.min_length));
        }
        Ok(())
    }

    /// The policy plus what makes a long password weak anyway: common passwords, one repeated or
    /// sequential pattern, or the account's own login or names inside it.
    pub fn check_policy_for(&self, password: &str, personal: &[&str]) -> Result<(), PasswordError> {
        self.check_policy(password)?;
        let lowered = password.to_lowercase();
        let compact: String = lowered.chars().filter(|c| c.is_alphanumeric()).collect();
        if COMMON_PASSWORDS.iter().any(|p| compact == *p || lowered == *p) {
            return Err(PasswordError::Weak);
        }
        let distinct: std::collections::HashSet<char> = lowered.chars().collect();
        if distinct.len() < 5 {
            return Err(PasswordError::Weak);
        }
        for word in personal.iter().map(|w| w.trim().to_lowercase()).filter(|w| w.chars().count() >= 4) {
            if lowered.contains(&word) {
                return Err(PasswordError::Weak);
            }
        }
        Ok(())
    }

    /// Hashes after checking the policy; returns a PHC string (`$argon2id$v=19$m=…`).
    pub fn hash_blocking(&self, password: &str) -> Result<String, PasswordError> {
        self.check_policy(password)?;
        self.argon2()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hashing(e.to_string()))
    }

    /// Hashes without the policy check: for re-hashing a password that was accepted when it was set.
    pub fn rehash_blocking(&self, password: &str) -> Result<String, PasswordError> {
        self.argon2()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hashing(e.to_string()))
    }

    pub async fn hash(&self, password: zeroize::Zeroizing<String>) -> Result<String, PasswordError> {
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.hash_blocking(&password))
            .await
            .map_err(|e| PasswordError::Hashing(e.to_string()))?
    }

    /// Constant-time verification (argon2 compares digests in constant time).
    pub fn verify_blocking(&self, phc: &str, password: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => self.argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    }

    /// Verification on the blocking pool (argon2 takes tens of milliseconds of CPU).
    pub async fn verify(&self, phc: String, password: zeroize::Zeroizing<String>) -> bool {
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.verify_blocking(&phc, &password)).await.unwrap_or(false)
    }

    /// Whether a stored hash was made with other parameters than the configured ones.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => {
                let same_cost = Params::try_from(&parsed).is_ok_and(|p| {
                    p.m_cost() == self.params.m_cost()
                        && p.t_cost() == self.params.t_cost()
                        && p.p_cost() == self.params.p_cost()
                });
                !same_cost || parsed.algorithm.as_str() != "argon2id"
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 8192,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            min_length: 12,
        })
        .unwrap()
    }

    #[test]
    fn hash_and_verify() {
        let h = hasher();
        let phc = h.hash_blocking("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify_blocking(&phc, "correct horse battery"));
        assert!(!h.verify_blocking(&phc, "correct horse batterY"));
        assert!(!h.verify_blocking("garbage", "correct horse battery"));
        assert!(!h.needs_rehash(&phc));
    }

    #[test]
    fn policy() {
        let h = hasher();
        assert!(matches!(h.hash_blocking("short"), Err(PasswordError::TooShort(12))));
        assert!(matches!(h.check_policy(&"x".repeat(2000)), Err(PasswordError::TooLong)));
        // 12 characters, more bytes: counted as characters.
        assert!(h.check_policy("éééééééééééé").is_ok());
    }

    #[test]
    fn weak_long_passwords_are_refused() {
        let h = hasher();
        assert!(matches!(h.check_policy_for("Motdepasse2025!", &[]), Err(PasswordError::Weak)));
        assert!(matches!(h.check_policy_for("aaaaaaaaaaaab", &[]), Err(PasswordError::Weak)));
        assert!(matches!(h.check_policy_for("dupont is my password", &["Dupont"]), Err(PasswordError::Weak)));
        assert!(h.check_policy_for("cheval agrafe correct batterie", &["Dupont", "899700427885"]).is_ok());
    }

    #[test]
    fn other_parameters_need_rehash() {
        let h = hasher();
        let phc = h.hash_blocking("correct horse battery").unwrap();
        let stronger = PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 19456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            min_length: 12,
        })
        .unwrap();
        assert!(stronger.needs_rehash(&phc));
        assert!(stronger.verify_blocking(&phc, "correct horse battery"));
    }
}

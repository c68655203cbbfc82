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
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

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

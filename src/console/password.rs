//! Console passwords: Argon2id hashes in PHC string form (`$argon2id$v=19$…`), the only form
//! in which a password is stored.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shortest password accepted.
pub(crate) const MIN_LEN: usize = 12;

/// Why a password was not set.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PasswordError {
    /// Too short.
    #[error("a console password needs at least {MIN_LEN} characters")]
    TooShort,
    /// Hashing failed.
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

/// The Argon2id hash (default parameters: 19 MiB, 2 passes) of `password` with a random salt.
pub(crate) fn hash(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).expect("the system's random source");
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored hash `phc`.
pub(crate) fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify_only_the_password() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(verify("correct horse battery", &a));
        assert!(!verify("correct horse batterY", &a));
        assert!(!verify("correct horse battery", "not a hash"));
        assert!(matches!(hash("short"), Err(PasswordError::TooShort)));
    }
}

//! Passwords: hashed with argon2id into the PHC string that `UserRegistered` records (the
//! password itself never reaches an event, a log or a read model), and checked against it.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use domain::values::PasswordHash as RecordedHash;

/// The longest password accepted: hashing cost grows with length, and no person types more.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A PHC hash that no password matches, checked for an unknown user so that a wrong username
/// takes as long to refuse as a wrong password.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3ktc2FsdC0xMjM0$XJUVxjBunL1eWdZsJ3v7y6CIK3jS3i9UxsPpWcszvZ8";

/// Hashes a password with argon2id (RFC 9106 defaults of the `argon2` crate: 19 MiB, t=2, p=1)
/// and a random salt.
pub fn hash(password: &str) -> RecordedHash {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    let phc = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id with default parameters hashes any password")
        .to_string();
    RecordedHash::parse(&phc).expect("an argon2id PHC string")
}

/// Whether `password` matches the recorded hash. A hash that cannot be read matches nothing.
pub fn verify(recorded: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(recorded) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The same work as [`verify`] for a user who does not exist; always `false`.
pub fn verify_decoy(password: &str) -> bool {
    let _ = verify(DECOY, password);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_its_password_only() {
        let recorded = hash("correct horse battery staple");
        assert!(recorded.as_str().starts_with("$argon2id$"));
        assert!(verify(recorded.as_str(), "correct horse battery staple"));
        assert!(!verify(recorded.as_str(), "correct horse battery stapler"));
        assert!(!verify("not a hash", "anything"));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash("same").as_str(), hash("same").as_str());
    }

    #[test]
    fn the_decoy_is_a_valid_hash_that_matches_nothing() {
        assert!(PasswordHash::new(DECOY).is_ok());
        assert!(!verify_decoy(""));
        assert!(!verify(DECOY, "decoy"));
    }

    #[test]
    fn an_overlong_password_is_refused_without_hashing() {
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        let recorded = hash(&long);
        assert!(!verify(recorded.as_str(), &long));
    }
}

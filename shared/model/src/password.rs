//! Passwords as CloudStack's default authenticator (`PBKDF2SHA256`) stores
//! them: `base64(salt):base64(key)`, where the key is PBKDF2-HMAC-SHA256 of
//! the password over a random 64-byte salt, 100,000 rounds, 512 bits. A hash
//! made by CloudStack verifies here, and the reverse.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// PBKDF2 rounds, as CloudStack's authenticator uses.
pub const ROUNDS: u32 = 100_000;
const SALT_BYTES: usize = 64;
const KEY_BYTES: usize = 64;

/// A new hash of `password`, with a fresh random salt.
pub fn hash(password: &str) -> String {
    let salt: [u8; SALT_BYTES] = rand::random();
    format!(
        "{}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(derive(password, &salt))
    )
}

/// Whether `password` matches `stored`. A stored value that is not in this
/// format never matches; the work done is the same either way, so the answer
/// takes as long for a malformed or unknown user as for a wrong password.
pub fn verify(password: &str, stored: &str) -> bool {
    let parsed = stored
        .split_once(':')
        .and_then(|(salt, key)| Some((STANDARD.decode(salt).ok()?, STANDARD.decode(key).ok()?)));
    match parsed {
        Some((salt, key)) if !salt.is_empty() => {
            bool::from(derive(password, &salt).as_slice().ct_eq(&key))
        }
        _ => {
            let _ = derive(password, &[0; SALT_BYTES]);
            false
        }
    }
}

/// The work of one verification, for a user that does not exist.
pub fn verify_nobody(password: &str) -> bool {
    verify(password, "")
}

fn derive(password: &str, salt: &[u8]) -> [u8; KEY_BYTES] {
    let mut key = [0; KEY_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, ROUNDS, &mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_no_other() {
        let stored = hash("s3cret pass");
        assert!(verify("s3cret pass", &stored));
        assert!(!verify("s3cret pas", &stored));
        assert!(!verify("", &stored));
    }

    #[test]
    fn each_hash_has_its_own_salt() {
        assert_ne!(hash("same"), hash("same"));
    }

    #[test]
    fn the_format_is_cloudstacks() {
        let stored = hash("x");
        let (salt, key) = stored.split_once(':').unwrap();
        assert_eq!(STANDARD.decode(salt).unwrap().len(), 64);
        assert_eq!(STANDARD.decode(key).unwrap().len(), 64);
    }

    #[test]
    fn a_known_vector_verifies() {
        // PBKDF2-HMAC-SHA256("password", "salt", 100000, 64 bytes), computed with Python's hashlib.pbkdf2_hmac.
        let stored = format!("{}:{}", STANDARD.encode(b"salt"), KNOWN_KEY);
        assert!(verify("password", &stored));
    }

    #[test]
    fn malformed_stored_values_never_match() {
        for stored in ["", "nocolon", ":", "!!:!!", "c2FsdA==", ":aGFzaA=="] {
            assert!(!verify("password", stored), "{stored:?}");
        }
        assert!(!verify_nobody("password"));
    }

    const KNOWN_KEY: &str =
        "A5Si7eMyyaE+uC6bJGMWBMMd+Xi04vD70sVJlE+deaU2zuqbksYXDLvwFT7zOk/1cyHhe3pfrcM/cCPd0yXaRw==";
}

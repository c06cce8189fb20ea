//! Where a secret shows in plain form in a store's files: the check behind
//! the tests that prove secret keys are sealed at rest (and an operator's
//! audit of an old store).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The ways a secret key (base64url, as API keys are) could sit in a file:
/// as sent, its bytes, their hex (both cases) and standard base64, the
/// base64 of its text, and a prefix long enough to be unmistakable.
pub fn forms(secret: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![
        secret.as_bytes().to_vec(),
        STANDARD.encode(secret).into_bytes(),
    ];
    if let Ok(raw) = URL_SAFE_NO_PAD.decode(secret) {
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase().into_bytes());
        forms.push(hex.into_bytes());
        forms.push(STANDARD.encode(&raw).into_bytes());
        forms.push(raw);
    }
    if secret.len() > 24 {
        forms.push(secret.as_bytes()[..24].to_vec());
    }
    forms
}

/// Where `secret` is, in any of its [`forms`], in the SQLite database `db`
/// and its write-ahead log: one line per finding, none when it is sealed.
pub fn in_sqlite_files(db: &Path, secret: &str) -> Vec<String> {
    let forms = forms(secret);
    let mut found = Vec::new();
    for suffix in ["", "-wal"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let bytes = std::fs::read(&path).unwrap_or_default();
        for (i, form) in forms.iter().enumerate() {
            if bytes.windows(form.len()).any(|w| w == form.as_slice()) {
                found.push(format!("form {i} in {}", Path::new(&path).display()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_found_in_each_form_and_not_elsewhere() {
        let dir = std::env::temp_dir().join(format!("traces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("x.db");
        let secret = URL_SAFE_NO_PAD.encode([7u8; 64]);
        for form in forms(&secret) {
            std::fs::write(&db, [b"head".as_slice(), &form, b"tail"].concat()).unwrap();
            assert_eq!(in_sqlite_files(&db, &secret).len().min(1), 1);
        }
        std::fs::write(&db, b"nothing here").unwrap();
        assert!(in_sqlite_files(&db, &secret).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

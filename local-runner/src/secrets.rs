//! The runner's boundary is its own Unix user. Its Runtime API, Invoke API
//! and Consul stand-in listen on loopback TCP ports that every local user can
//! reach, so each asks for a secret that only the runner's user can read:
//!
//! - an instance's Runtime API: a secret of that instance in the path prefix
//!   of its `AWS_LAMBDA_RUNTIME_API` (lambda_runtime's client takes a URL with
//!   a path but cannot add headers); a process's environment is readable by
//!   its owner and root only, unlike its command line;
//! - the Invoke API and `/local/status`: the runner's token, new at each
//!   start, sent as `Authorization: Bearer`, kept in `local-runner.json`
//!   (mode 0600) for `stratus-local status`, the tests and the benchmarks;
//! - the Consul stand-in: an ACL token (`X-Consul-Token`) made at the first
//!   start and kept in `consul-token` (0600), handed to functions and
//!   processes as `CONSUL_HTTP_TOKEN`.
//!
//! `STRATUS_HOME` itself is kept 0700: it also holds the store (every API
//! key) and `cloudstack.ini`.

use std::path::Path;

use anyhow::Context;
use stratus_secrets::private;

/// A fresh secret: 256 bits from the thread's CSPRNG (ChaCha seeded by the
/// OS), as 64 hex digits (safe in a URL path, a header and a file).
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares a presented secret with the expected one in time that does not
/// depend on where they differ (`subtle`, as the password check does).
pub fn same(presented: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    presented.ct_eq(expected).into()
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The secret kept in `path` (a 0600 file), made and written there when missing.
pub fn load_or_create(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            private::restrict(path, private::FILE_MODE)
                .with_context(|| format!("making {} private (0600)", path.display()))?;
            Ok(text.trim().to_string())
        }
        Ok(_) => create(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn create(path: &Path) -> anyhow::Result<String> {
    let secret = generate();
    private::replace(path, format!("{secret}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_long_fresh_and_compared_whole() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(same(a.as_bytes(), a.clone().as_bytes()));
        assert!(!same(a.as_bytes(), b.as_bytes()));
        assert!(!same(&a.as_bytes()[..63], a.as_bytes()));
        assert!(!same(b"", a.as_bytes()));
    }

    #[test]
    fn private_files_and_home() {
        let home =
            std::env::temp_dir().join(format!("stratus-secrets-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        private::home(&home).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        let nested = home.join("a/b");
        private::home(&nested).unwrap();
        assert_eq!(mode(&home.join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        let shared = home.join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = private::home(&shared).unwrap_err().to_string();
        assert!(e.contains("shared directory"), "{e}");
        assert_eq!(mode(&shared), 0o777, "a shared directory is left as it is");
        let file = home.join("token");
        let first = load_or_create(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(load_or_create(&file).unwrap(), first, "kept across starts");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create(&file).unwrap(), first);
        assert_eq!(mode(&file), 0o600, "made private again");
        let _ = std::fs::remove_dir_all(&home);
    }
}

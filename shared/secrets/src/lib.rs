//! Secrets at rest, as CloudStack keeps its users' secret keys: encrypted,
//! under a key held outside the store.
//!
//! - [`SecretBox`] seals a value with AES-256-GCM (RustCrypto's `aes-gcm`): a
//!   random 96-bit nonce per value, and the row that owns the value (its
//!   kind and ids, see [`SecretBox::seal`]) as associated data, so a sealed
//!   value copied into another row does not open. The stored text is
//!   `v1:` + base64(nonce ‖ ciphertext ‖ tag) ([`Sealed`]); the prefix names
//!   the scheme, so it can change.
//! - The key comes from one interface, [`KeyProvider`], chosen by
//!   `STRATUS_SECRET_KEY` ([`SecretKeySource`]): a 32-byte key in a 0600 file
//!   ([`FileKey`], `$STRATUS_HOME/secret.key` by default, made on first use
//!   with the OS's CSPRNG), or on AWS a data key that KMS decrypts once per
//!   process ([`KmsDataKey`]). A process loads it once, at start.
//! - The key is never logged and never printed: [`DataKey`], [`SecretBox`] and
//!   [`Secret`] show nothing of it in `Debug`, and zero their memory on drop.
//! - [`private`]: 0700 directories and 0600 files for everything that holds a
//!   secret, and tightening of ones made with wider modes.

pub mod aws_refs;
pub mod private;
pub mod traces;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub use stratus_contracts::config::SecretKeySource;

/// The scheme of values sealed now: AES-256-GCM, 12-byte nonce, 16-byte tag.
pub const V1: &str = "v1:";
const NONCE: usize = 12;
const TAG: usize = 16;

/// The KMS encryption context a data key is generated and decrypted with.
pub const KMS_CONTEXT: (&str, &str) = ("purpose", "stratus-secret-key");

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file cannot be used (missing, unreadable, too open, malformed).
    #[error("secret key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    /// The KMS data key could not be had.
    #[error("secret key from KMS: {0}")]
    Kms(String),
    /// A stored value was not sealed (a plain-text value from before sealing).
    #[error(
        "the stored value is not sealed (no {V1} prefix): a plain-text secret from before secrets were encrypted; run the bootstrap to seal it"
    )]
    NotSealed,
    /// A stored value of a scheme this build does not know.
    #[error("the stored value is sealed with an unknown scheme {0:?}")]
    UnknownScheme(String),
    /// A stored value that does not open: another key, another row, or altered.
    #[error(
        "the stored value does not open under the key from {key}: the key is not the one it was sealed with, or the value was moved from another row or altered"
    )]
    DoesNotOpen { key: String },
}

/// A 256-bit key. Its `Debug` shows nothing; its memory is zeroed on drop.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(DataKey(Zeroizing::new(array)))
    }

    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        use rand::TryRngCore;
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng
            .try_fill_bytes(&mut key[..])
            .expect("the operating system's random source");
        DataKey(key)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(redacted)")
    }
}

/// A secret in the clear, for the moment it is needed (a signature check, an
/// answer to its owner). `Debug` shows nothing; zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// A value as stored: `v1:` + base64(nonce ‖ ciphertext ‖ tag). Serialised
/// as that string, so a store created before sealing still decodes (its
/// plain text then reads as [`SecretError::NotSealed`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl Sealed {
    /// A stored value as read (sealed or not).
    pub fn from_stored(text: impl Into<String>) -> Self {
        Sealed(text.into())
    }
    pub fn as_stored(&self) -> &str {
        &self.0
    }
    /// Whether the value carries a scheme prefix (`v1:`), or is plain text from before.
    pub fn is_sealed(&self) -> bool {
        self.0.starts_with(V1)
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Even sealed, a value is not worth printing; a plain-text one must not be.
        if self.is_sealed() {
            write!(f, "Sealed(v1, {} chars)", self.0.len())
        } else {
            f.write_str("Sealed(not sealed, redacted)")
        }
    }
}

/// Seals and opens secrets under one key.
pub struct SecretBox {
    cipher: Aes256Gcm,
    source: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SecretBox {
    /// A box over `key`; `source` says where the key came from (for errors).
    pub fn new(key: &DataKey, source: impl Into<String>) -> Self {
        SecretBox {
            cipher: Aes256Gcm::new_from_slice(&key.0[..]).expect("a 32-byte key"),
            source: source.into(),
        }
    }

    /// The key from `provider`, fetched once.
    pub async fn load(provider: &dyn KeyProvider) -> Result<Self, SecretError> {
        let key = provider.fetch().await?;
        Ok(Self::new(&key, provider.describe()))
    }

    /// Where the key came from (`file /path`, `kms`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Seals `plain` for the row `context` names (e.g. `apikey/<id>/user/<id>`).
    pub fn seal(&self, plain: &str, context: &str) -> Sealed {
        let nonce: [u8; NONCE] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM seals any value under 64 GiB");
        let mut out = Vec::with_capacity(NONCE + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Sealed(format!("{V1}{}", STANDARD.encode(out)))
    }

    /// Opens a value sealed for the row `context` names.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<Secret, SecretError> {
        let text = sealed.as_stored();
        let Some(body) = text.strip_prefix(V1) else {
            return Err(match text.split_once(':') {
                Some((scheme, _)) if scheme.len() <= 4 && scheme.starts_with('v') => {
                    SecretError::UnknownScheme(scheme.to_string())
                }
                _ => SecretError::NotSealed,
            });
        };
        let does_not_open = || SecretError::DoesNotOpen {
            key: self.source.clone(),
        };
        let bytes = STANDARD.decode(body).map_err(|_| does_not_open())?;
        if bytes.len() < NONCE + TAG {
            return Err(does_not_open());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE);
        let mut plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| does_not_open())?;
        let text = String::from_utf8(std::mem::take(&mut plain)).map_err(|e| {
            let mut bytes = e.into_bytes();
            bytes.zeroize();
            does_not_open()
        })?;
        Ok(Secret::new(text))
    }
}

/// Where a process gets its data key: one interface for the local file and AWS.
pub trait KeyProvider: Send + Sync {
    /// Where the key comes from, for messages (never the key).
    fn describe(&self) -> String;
    /// The key; called once per process.
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<DataKey, SecretError>> + Send + '_>>;
}

/// The provider `source` names. `may_create`: whether a missing key file may
/// be made (only while nothing sealed exists: a store holding sealed values
/// with its key file gone must not get a fresh key silently).
pub fn provider(source: &SecretKeySource, may_create: bool) -> Box<dyn KeyProvider> {
    match source {
        SecretKeySource::File(path) => Box::new(FileKey {
            path: path.clone(),
            may_create,
        }),
        SecretKeySource::Kms(blob) => Box::new(KmsDataKey {
            ciphertext: blob.clone(),
        }),
    }
}

/// A 32-byte key in a file (base64, one line) that only its owner may read.
pub struct FileKey {
    pub path: PathBuf,
    /// Make the file (0600, in a 0700 directory) when it does not exist.
    pub may_create: bool,
}

impl FileKey {
    fn error(&self, reason: impl Into<String>) -> SecretError {
        SecretError::KeyFile {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Reads the key, making it first when allowed and missing.
    pub fn read(&self) -> Result<DataKey, SecretError> {
        match std::fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !self.may_create {
                    return Err(self.error(
                        "missing, and the store already holds secrets sealed under a key: restore the file (or set STRATUS_SECRET_KEY to where the key is); a new key would not open them",
                    ));
                }
                self.create()?;
            }
            Err(e) => return Err(self.error(e.to_string())),
            Ok(_) => {}
        }
        let meta = std::fs::metadata(&self.path).map_err(|e| self.error(e.to_string()))?;
        if !meta.is_file() {
            return Err(self.error("not a regular file"));
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(self.error(format!(
                "mode {mode:04o} lets group or others read it; refusing to use it (chmod 600 {})",
                self.path.display()
            )));
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(self.error(format!(
                "owned by uid {}, not by this process's uid {me}; refusing to use it",
                meta.uid()
            )));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(&self.path).map_err(|e| self.error(e.to_string()))?,
        );
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| self.error("not base64 (a 32-byte key, base64 on one line)"))?,
        );
        DataKey::from_bytes(&bytes).ok_or_else(|| {
            self.error(format!(
                "holds {} bytes, not a 32-byte key (base64 on one line)",
                bytes.len()
            ))
        })
    }

    /// Makes the key file atomically: written whole to a private temporary
    /// file, then linked into place only if no other process made it first.
    fn create(&self) -> Result<(), SecretError> {
        // A missing directory is made 0700; an existing one is left as it is
        // (the file itself is 0600): a key file named in a shared directory
        // must not change that directory's mode.
        if let Some(dir) = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            private::dir(dir).map_err(|e| self.error(format!("its directory: {e}")))?;
        }
        let key = DataKey::generate();
        let text = Zeroizing::new(format!("{}\n", STANDARD.encode(&key.0[..])));
        let tmp = self.path.with_extension(format!(
            "tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let result = private::write_new(&tmp, text.as_bytes())
            .and_then(|()| match std::fs::hard_link(&tmp, &self.path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            })
            .map_err(|e| self.error(format!("creating it: {e}")));
        let _ = std::fs::remove_file(&tmp);
        result?;
        tracing::info!(file = %self.path.display(), "made a new secret key file (0600)");
        Ok(())
    }
}

impl KeyProvider for FileKey {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<DataKey, SecretError>> + Send + '_>> {
        Box::pin(async move { self.read() })
    }
}

/// On AWS: a data key made with `aws kms generate-data-key --key-spec AES_256
/// --encryption-context purpose=stratus-secret-key`, whose `CiphertextBlob`
/// (base64) is `STRATUS_SECRET_KEY=kms:<blob>`; KMS decrypts it once per
/// process (cold start), with the same encryption context. The role needs
/// `kms:Decrypt` on the key; the blob alone reveals nothing.
pub struct KmsDataKey {
    /// The base64 `CiphertextBlob`.
    pub ciphertext: String,
}

impl KmsDataKey {
    /// The blob, decoded; checked before any call to KMS.
    pub fn blob(&self) -> Result<Vec<u8>, SecretError> {
        let blob = STANDARD
            .decode(self.ciphertext.trim())
            .map_err(|_| SecretError::Kms("the kms: value is not base64 (a CiphertextBlob as `aws kms generate-data-key` prints it)".into()))?;
        if blob.is_empty() {
            return Err(SecretError::Kms("the kms: value is empty".into()));
        }
        Ok(blob)
    }
}

impl KeyProvider for KmsDataKey {
    fn describe(&self) -> String {
        "kms (a KMS-encrypted data key)".into()
    }
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<DataKey, SecretError>> + Send + '_>> {
        Box::pin(async move {
            let blob = self.blob()?;
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            let answer = aws_refs::bounded(
                "Decrypt",
                aws_sdk_kms::Client::new(&config)
                    .decrypt()
                    .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
                    .encryption_context(KMS_CONTEXT.0, KMS_CONTEXT.1)
                    .send(),
                |e| aws_sdk_kms::error::DisplayErrorContext(e).to_string(),
            )
            .await
            .map_err(SecretError::Kms)?;
            let plain = answer
                .plaintext
                .ok_or_else(|| SecretError::Kms("Decrypt answered no plaintext".into()))?
                .into_inner();
            let plain = Zeroizing::new(plain);
            DataKey::from_bytes(&plain).ok_or_else(|| {
                SecretError::Kms(format!(
                    "the data key has {} bytes, not 32 (make it with --key-spec AES_256)",
                    plain.len()
                ))
            })
        })
    }
}

/// The key file's default place under a state directory.
pub fn default_key_file(home: &Path) -> PathBuf {
    home.join("secret.key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn home() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("stratus-secrets-")
            .tempdir()
            .unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_row_and_hides_its_text() {
        let b = SecretBox::new(&DataKey::generate(), "test");
        let s = b.seal("the-secret", "apikey/1/user/a");
        assert!(s.as_stored().starts_with("v1:"));
        assert!(!s.as_stored().contains("the-secret"));
        assert_eq!(
            b.open(&s, "apikey/1/user/a").unwrap().expose(),
            "the-secret"
        );
        // Another row: the associated data differs.
        let e = b.open(&s, "apikey/2/user/b").unwrap_err();
        assert!(matches!(e, SecretError::DoesNotOpen { .. }), "{e}");
        // A fresh nonce each time.
        assert_ne!(b.seal("the-secret", "x"), b.seal("the-secret", "x"));
        // Another key.
        let other = SecretBox::new(&DataKey::generate(), "other");
        assert!(other.open(&s, "apikey/1/user/a").is_err());
        // Altered.
        let mut t = s.as_stored().to_string();
        let last = t.pop().unwrap();
        t.push(if last == 'A' { 'B' } else { 'A' });
        assert!(b.open(&Sealed::from_stored(t), "apikey/1/user/a").is_err());
        // Plain text from before, and an unknown scheme.
        assert!(matches!(
            b.open(&Sealed::from_stored("plain-secret"), "x"),
            Err(SecretError::NotSealed)
        ));
        assert!(matches!(
            b.open(&Sealed::from_stored("v2:abc"), "x"),
            Err(SecretError::UnknownScheme(_))
        ));
    }

    #[test]
    fn nothing_secret_in_debug_output() {
        let key = DataKey::generate();
        let raw = STANDARD.encode(&key.0[..]);
        let b = SecretBox::new(&key, "file /x");
        let sealed = b.seal("the-secret", "c");
        let opened = b.open(&sealed, "c").unwrap();
        let shown = format!(
            "{key:?} {b:?} {opened:?} {sealed:?} {:?}",
            Sealed::from_stored("plain-secret")
        );
        for hidden in [
            raw.as_str(),
            "the-secret",
            "plain-secret",
            sealed.as_stored(),
        ] {
            assert!(!shown.contains(hidden), "{shown}");
        }
    }

    #[tokio::test]
    async fn the_key_file_is_made_private_once_and_read_back() {
        let tmp = home();
        let home = tmp.path().join("state");
        let path = default_key_file(&home);
        let made = SecretBox::load(&FileKey {
            path: path.clone(),
            may_create: true,
        })
        .await
        .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&home), 0o700);
        let sealed = made.seal("s", "row");
        // A new process: the same file, the same key.
        let again = SecretBox::load(&*provider(&SecretKeySource::File(path.clone()), true))
            .await
            .unwrap();
        assert_eq!(again.open(&sealed, "row").unwrap().expose(), "s");
        assert_eq!(
            std::fs::read_dir(&home).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[tokio::test]
    async fn a_bad_key_file_is_a_clear_error() {
        let tmp = home();
        let home = tmp.path();
        let path = home.join("secret.key");
        let load = |may_create| {
            let p = FileKey {
                path: path.clone(),
                may_create,
            };
            async move { SecretBox::load(&p).await.unwrap_err().to_string() }
        };
        // Missing, where it may not be made.
        let e = load(false).await;
        assert!(e.contains("secret.key: missing"), "{e}");
        assert!(!path.exists());
        // Readable by others.
        std::fs::write(&path, format!("{}\n", STANDARD.encode([7u8; 32]))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(true).await;
        assert!(e.contains("mode 0644 lets group or others read it"), "{e}");
        // Private, but not a key.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "c2hvcnQ=\n").unwrap();
        let e = load(true).await;
        assert!(e.contains("holds 5 bytes, not a 32-byte key"), "{e}");
        std::fs::write(&path, "not base64!\n").unwrap();
        let e = load(true).await;
        assert!(e.contains("not base64"), "{e}");
        // A wrong key: values sealed under another one say so.
        std::fs::write(&path, format!("{}\n", STANDARD.encode([7u8; 32]))).unwrap();
        let b = SecretBox::load(&FileKey {
            path: path.clone(),
            may_create: false,
        })
        .await
        .unwrap();
        let foreign = SecretBox::new(&DataKey::generate(), "elsewhere").seal("s", "row");
        let e = b.open(&foreign, "row").unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "does not open under the key from file {}",
                path.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_kms_blob_is_checked_before_any_call() {
        // The call itself needs AWS; what can be checked without it is checked.
        let e = KmsDataKey {
            ciphertext: "not base64!".into(),
        }
        .blob()
        .unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
        let blob = KmsDataKey {
            ciphertext: "AQIDBA==".into(),
        }
        .blob()
        .unwrap();
        assert_eq!(blob, vec![1, 2, 3, 4]);
        let p = provider(&SecretKeySource::Kms("AQIDBA==".into()), false);
        assert!(p.describe().starts_with("kms"));
    }

    #[test]
    fn private_helpers_tighten_and_never_widen() {
        let tmp = home();
        let home = tmp.path();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        private::dir(&home).unwrap();
        assert_eq!(mode(&home), 0o700);
        let f = home.join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        private::file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"x", "kept its contents");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
        private::restrict(&f, 0o600).unwrap();
        assert_eq!(mode(&f), 0o400);
        let w = home.join("w");
        private::write(&w, b"y").unwrap();
        assert_eq!(mode(&w), 0o600);
    }
}

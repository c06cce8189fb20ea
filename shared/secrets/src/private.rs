//! Files only their owner can read: state directories 0700, files 0600.
//! Each helper also tightens a file or directory made earlier with a wider
//! mode (a store from before, a directory made by `mkdir`), and never widens one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode a directory holding secrets gets.
pub const DIR_MODE: u32 = 0o700;
/// The mode a file holding secrets gets.
pub const FILE_MODE: u32 = 0o600;

/// Makes `dir` (and missing parents, each 0700) and makes it 0700.
pub fn dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    restrict(dir, DIR_MODE)
}

/// Makes `STRATUS_HOME` (a state directory: the store, the keys, the tokens)
/// as [`dir`] does, after refusing one that is not this user's own: owned by
/// another user, or shared (sticky or world-writable, `/tmp` say), which is
/// left as it is.
pub fn home(home: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(home)?;
    let meta = std::fs::metadata(home)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "STRATUS_HOME {} belongs to uid {}, not to this user (uid {me}): choose a directory of your own",
            home.display(),
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode();
    if mode & 0o1002 != 0 {
        return Err(std::io::Error::other(format!(
            "STRATUS_HOME {} is a shared directory (mode {:o}): choose a directory of your own",
            home.display(),
            mode & 0o7777
        )));
    }
    restrict(home, DIR_MODE)
}

/// Removes group and other bits from an existing `path` beyond `mode`
/// (a missing one is left missing).
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let current = meta.permissions().mode() & 0o7777;
    let wanted = current & mode;
    if wanted != current {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Makes `path` an empty 0600 file if it does not exist, and tightens it to
/// 0600 if it does (before SQLite opens it, so its `-wal` and `-shm`, which
/// SQLite makes with the database's mode, are 0600 too).
pub fn file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    restrict(path, FILE_MODE)
}

/// Writes `bytes` to a new file at `path`, 0600 from its creation (it must not exist).
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `path` with `bytes` atomically: written whole to a 0600 file
/// beside it, then renamed over it, so a reader never sees half a file.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = write_new(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` (replacing it), 0600 whatever the file's mode was.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    f.write_all(bytes)
}

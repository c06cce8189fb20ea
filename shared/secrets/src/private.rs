//! Files only their owner can read: state directories 0700, files 0600.
//! Each helper also tightens a file or directory made earlier with a wider
//! mode (a store from before, a directory made by `mkdir`), and never widens one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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

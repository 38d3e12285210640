//! Files and directories only the console's own user may open, whatever the umask: the data
//! directory and everything the console writes into it (database, WAL and shared-memory files,
//! blobs, keys) and clip exports, which hold plaintext frames and keystrokes.
//!
//! ```text
//! directories  0700      files  0600      (public key files: 0644, inside a 0700 directory)
//! ```
//!
//! Under systemd the unit's `UMask=0077` does this already; run by hand with the usual umask
//! 022 (or 000), the console would otherwise leave a readable database and readable evidence.
//! Modes are set explicitly after creating (a umask can only take bits away, and an odd one
//! like 0277 takes too many), and tightened on what an older version left looser.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) 0700; an existing `dir` is made 0700.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    set_mode(dir, DIR_MODE)
}

/// Creates the new file `path` 0600 (it must not exist).
pub fn create_new_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Writes `bytes` to `path`, 0600, whole or not at all (a temporary file beside it, synced,
/// renamed over it).
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = create_new_file(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates `path` 0600 if missing (keeping what it holds), or makes the existing file 0600.
pub fn ensure_file(path: &Path) -> io::Result<()> {
    let f =
        OpenOptions::new().write(true).create(true).truncate(false).mode(FILE_MODE).open(path)?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))
}

/// Sets `path`'s mode to exactly `mode`.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
}

/// Makes an existing file 0600; a file that does not exist is left so.
pub fn tighten_file(path: &Path) -> io::Result<()> {
    match set_mode(path, FILE_MODE) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

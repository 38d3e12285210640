//! A small real filesystem of its own for a test (`mount -t tmpfs`), for disk-full cases that
//! must meet a real ENOSPC. Root only: without it [`Tmpfs::mount`] says why, and the test
//! prints that it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a directory; lazily unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount`'s syntax, e.g. `"1m"`), mode 0700, on `dir`.
    /// `Err` says why it could not (not root, no `CAP_SYS_ADMIN`, no `mount`).
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !crate::process::is_root() {
            return Err("not root, cannot mount a tmpfs".into());
        }
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "rearview-test"])
            .arg(dir)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed ({status}); no CAP_SYS_ADMIN here?"));
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

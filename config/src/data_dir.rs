//! What the agent keeps under its data directory, and the one place those paths come from.
//!
//! ```text
//! DATA/ring/            the ring of sealed segments (rearview_capture::ring)
//! DATA/spool/           the offline spool: clips owed to the console, and clip records
//! DATA/trust.json       the trust store's state (last policy, seen triggers)
//! DATA/identity.json    the device identity from enrollment (0600: holds the device key)
//! DATA/clips.json       (read once and removed: clip records of agents before the spool kept them)
//! ```

use std::path::{Path, PathBuf};

/// An agent data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir(PathBuf);

impl DataDir {
    /// The data directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> DataDir {
        DataDir(path.into())
    }
    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// `DATA/ring`.
    pub fn ring_dir(&self) -> PathBuf {
        self.0.join("ring")
    }
    /// `DATA/spool`.
    pub fn spool_dir(&self) -> PathBuf {
        self.0.join("spool")
    }
    /// `DATA/trust.json`.
    pub fn trust_state(&self) -> PathBuf {
        self.0.join("trust.json")
    }
    /// `DATA/identity.json`.
    pub fn identity(&self) -> PathBuf {
        self.0.join("identity.json")
    }
    /// Where an agent before spool schema 2 kept its clip records.
    pub fn legacy_clips(&self) -> PathBuf {
        self.0.join("clips.json")
    }
}

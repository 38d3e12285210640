//! Indicators seen on the device: files copied to removable media and into watched folders.
//!
//! Both come from inotify (the `notify` crate). A file counts as copied when a writer closes
//! it (`IN_CLOSE_WRITE`) or it is moved in (`IN_MOVED_TO`) under a watched place:
//!
//! * removable media: every mount point under the removable roots (`/media`, `/run/media`,
//!   `/mnt` by default) and the roots themselves. Mount points are re-read from
//!   `/proc/self/mounts` every [`RESCAN`], because a watch on the directory a stick is later
//!   mounted over sees nothing of the stick;
//! * the watched folders of the agent config.
//!
//! Each copy becomes one [`Activity`] (user = owner of the new file, file name, size,
//! destination folder, time); the same path closing again within [`DEBOUNCE`] (an editor
//! saving twice, `cp` closing after `fsync`) is not reported twice. Paths and names are
//! metadata, not content: nothing of the file is read.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use rearview_config::IndicatorKind;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How often mount points are re-read.
pub const RESCAN: Duration = Duration::from_secs(2);
/// Repeated closes of one path within this span are one copy.
pub const DEBOUNCE: Duration = Duration::from_secs(2);

/// One file copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub kind: IndicatorKind,
    /// Login name of the file's owner (who copied it), or the uid as text.
    pub user: String,
    pub uid: u32,
    /// File name (the folder is in `destination`).
    pub file: String,
    pub size: u64,
    pub destination: PathBuf,
    /// UTC microseconds.
    pub at_utc_micros: i64,
}

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct Places {
    pub removable_roots: Vec<PathBuf>,
    pub watched_folders: Vec<PathBuf>,
}

impl Places {
    fn kind_of(&self, path: &Path) -> Option<IndicatorKind> {
        if self.watched_folders.iter().any(|f| path.starts_with(f)) {
            Some(IndicatorKind::WatchedFolderCopy)
        } else if self.removable_roots.iter().any(|r| path.starts_with(r)) {
            Some(IndicatorKind::RemovableMediaCopy)
        } else {
            None
        }
    }
}

/// Runs the watcher on its own thread until `tx` is closed.
pub fn spawn(places: Places, tx: mpsc::Sender<Activity>) -> std::io::Result<()> {
    let (raw_tx, raw_rx) = std_mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = raw_tx.send(res);
    })
    .map_err(std::io::Error::other)?;
    let mut watched: HashSet<PathBuf> = HashSet::new();
    watch_new(&mut watcher, &places, &mut watched);
    std::thread::Builder::new().name("indicators".into()).spawn(move || {
        let mut recent: HashMap<PathBuf, Instant> = HashMap::new();
        let mut last_scan = Instant::now();
        loop {
            if tx.is_closed() {
                return;
            }
            match raw_rx.recv_timeout(RESCAN) {
                Ok(Ok(event)) => {
                    for activity in to_activities(&places, &event, &mut recent) {
                        if tx.blocking_send(activity).is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "file watcher error"),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if last_scan.elapsed() >= RESCAN {
                last_scan = Instant::now();
                watch_new(&mut watcher, &places, &mut watched);
                recent.retain(|_, t| t.elapsed() < DEBOUNCE);
            }
        }
    })?;
    Ok(())
}

/// Adds watches for places not watched yet (new mount points, folders that appeared).
fn watch_new(watcher: &mut impl Watcher, places: &Places, watched: &mut HashSet<PathBuf>) {
    let mut wanted: Vec<PathBuf> = places.watched_folders.clone();
    wanted.extend(places.removable_roots.iter().cloned());
    wanted.extend(mount_points_under(&places.removable_roots));
    for path in wanted {
        if watched.contains(&path) || !path.is_dir() {
            continue;
        }
        match watcher.watch(&path, RecursiveMode::Recursive) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "watching for file copies");
                watched.insert(path);
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot watch"),
        }
    }
    // Unmounted media: forget them so a later mount at the same place is watched again.
    watched.retain(|p| p.is_dir());
}

/// Mount points at or below any of `roots`, from `/proc/self/mounts`.
fn mount_points_under(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(unescape_mount_path)
        .filter(|p| roots.iter().any(|r| p.starts_with(r)))
        .collect()
}

/// `/proc/mounts` writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(s: &str) -> PathBuf {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

fn to_activities(
    places: &Places,
    event: &notify::Event,
    recent: &mut HashMap<PathBuf, Instant>,
) -> Vec<Activity> {
    let copied = matches!(
        event.kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
    ) || matches!(event.kind, EventKind::Modify(ModifyKind::Name(RenameMode::Both)));
    if !copied {
        return Vec::new();
    }
    // A rename "both" event lists (from, to): the destination is the last path.
    let paths: Vec<&PathBuf> = match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            event.paths.last().into_iter().collect()
        }
        _ => event.paths.iter().collect(),
    };
    let mut out = Vec::new();
    for path in paths {
        let Some(kind) = places.kind_of(path) else { continue };
        if recent.get(path).is_some_and(|t| t.elapsed() < DEBOUNCE) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(path) else { continue };
        if !meta.is_file() {
            continue;
        }
        recent.insert(path.clone(), Instant::now());
        let uid = meta.uid();
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        out.push(Activity {
            kind,
            user,
            uid,
            file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            size: meta.len(),
            destination: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            at_utc_micros: rearview_capture::Timestamp::now().utc_micros,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/media/a\\040b"), PathBuf::from("/media/a b"));
        assert_eq!(unescape_mount_path("/mnt/x\\"), PathBuf::from("/mnt/x\\"));
    }

    #[tokio::test]
    async fn copies_into_watched_places_are_reported() {
        let media = tempfile::tempdir().unwrap();
        let folder = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let stick = media.path().join("STICK");
        std::fs::create_dir(&stick).unwrap();
        let places = Places {
            removable_roots: vec![media.path().to_path_buf()],
            watched_folders: vec![folder.path().to_path_buf()],
        };
        let (tx, mut rx) = mpsc::channel(16);
        spawn(places, tx).unwrap();

        std::fs::write(elsewhere.path().join("ignored.txt"), b"x").unwrap();
        std::fs::write(stick.join("roadmap.docx"), vec![7u8; 1234]).unwrap();
        let a = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert_eq!(a.kind, IndicatorKind::RemovableMediaCopy);
        assert_eq!((a.file.as_str(), a.size), ("roadmap.docx", 1234));
        assert_eq!(a.destination, stick);
        assert_eq!(a.uid, nix::unistd::geteuid().as_raw());

        // Moved in (rename within one filesystem) counts as well.
        let staged = folder.path().join(".staged");
        std::fs::write(&staged, b"abc").unwrap();
        let b = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert_eq!((b.kind, b.file.as_str()), (IndicatorKind::WatchedFolderCopy, ".staged"));
        std::fs::rename(&staged, folder.path().join("plan.pdf")).unwrap();
        let c = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        assert_eq!((c.file.as_str(), c.size), ("plan.pdf", 3));
        assert!(rx.try_recv().is_err(), "nothing from outside the watched places");
    }
}

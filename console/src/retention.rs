//! The retention job: once a day, across every replica of the tenant, deletes the clips that
//! expired (see [`crate::store::retention`] for when, for holds, and for what a deletion does in
//! the database), then removes the blobs no clip names any more, and writes what it did to the
//! audit log.
//!
//! ```text
//! who        the process holding the policy-expiry lease (crate::server), checking once a
//!            minute; the run itself is claimed in the database (meta "retention_last_run_ms",
//!            a conditional update), so two processes that both believe they hold the lease
//!            still run it once a day
//! order      expired clips (one transaction each, oldest first) → segments no clip names that
//!            are older than the retention → the blob queue (each blob checked, removed, its
//!            queue row ended)
//! record     one clip.delete audit line per clip (actor console:retention), and a
//!            retention.run line: clips deleted, held clips kept, blobs removed and kept, blob
//!            failures, clips expiring within 7 days
//! failures   a blob store that fails leaves the blob queued (the next run tries again); a
//!            clip a hold came to cover meanwhile is kept; nothing stops the rest of the run
//! ```
//!
//! `POST /api/v1/retention/run` (admin) runs it at once, and records that run as the day's.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::ConsoleError;
use crate::store::retention::{DeleteCause, DAY_MS};
use crate::store::Store;

/// Who the job acts as in the audit log.
pub const ACTOR: &str = "console:retention";
/// How often the job runs.
pub const EVERY_MS: i64 = DAY_MS;
/// Clips the list warns about: those expiring within this long.
pub const WARN_MS: i64 = 7 * DAY_MS;

const LAST_RUN_KEY: &str = "retention_last_run_ms";
const BATCH: i64 = 100;

/// What one run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub clips_deleted: usize,
    /// Expired clips kept because a hold covers them.
    pub clips_held: i64,
    pub blobs_removed: usize,
    /// Queued blobs kept because they are stored again for a newer clip.
    pub blobs_kept: usize,
    pub blob_failures: usize,
    /// Clips (not held) that expire within [`WARN_MS`] after this run.
    pub expiring_soon: i64,
}

/// Stops one process from running two jobs at once (a slow run and the next minute's check).
#[derive(Debug, Default)]
pub struct Running(AtomicBool);

/// Runs the job when a day has passed since the last run (any replica's). None when it was
/// not due or this process is running it already.
pub async fn run_if_due(
    store: &Store,
    running: &Running,
    now: i64,
) -> Result<Option<RunSummary>, ConsoleError> {
    if running.0.swap(true, Ordering::AcqRel) {
        return Ok(None);
    }
    let done = async {
        let claimed = store.write(move |tx| claim(tx, now, false)).await?;
        if !claimed {
            return Ok(None);
        }
        run(store, now).await.map(Some)
    }
    .await;
    running.0.store(false, Ordering::Release);
    done
}

/// Runs the job now (the admin's `retention run`), recorded as the day's run.
pub async fn run_now(store: &Store, now: i64) -> Result<RunSummary, ConsoleError> {
    store.write(move |tx| claim(tx, now, true)).await?;
    run(store, now).await
}

/// Records `now` as the last run if a day has passed since the last one (or `force`); true
/// when this call claimed the run.
fn claim(tx: &crate::store::Tx<'_>, now: i64, force: bool) -> Result<bool, ConsoleError> {
    let last = tx.meta_get(LAST_RUN_KEY)?.and_then(|v| v.parse::<i64>().ok());
    if !force && last.is_some_and(|last| now - last < EVERY_MS) {
        return Ok(false);
    }
    tx.meta_set(LAST_RUN_KEY, &now.to_string())?;
    Ok(true)
}

async fn run(store: &Store, now: i64) -> Result<RunSummary, ConsoleError> {
    let settings = store.read(|tx| tx.retention_settings()).await?;
    let cutoff = now - settings.keep_ms();
    let mut summary = RunSummary::default();
    let why = format!("expired: kept {} days after capture", settings.days);
    let mut skipped = std::collections::HashSet::new();
    loop {
        let ids = store.read(move |tx| tx.clips_expired(cutoff, BATCH)).await?;
        let fresh: Vec<String> = ids.into_iter().filter(|id| !skipped.contains(id)).collect();
        if fresh.is_empty() {
            break;
        }
        for id in fresh {
            let (clip, why) = (id.clone(), why.clone());
            let deleted = store
                .write(move |tx| tx.delete_clip(&clip, DeleteCause::Expired, &why, ACTOR, now))
                .await;
            match deleted {
                Ok(_) => summary.clips_deleted += 1,
                // Deleted by someone else meanwhile, or a hold placed meanwhile: kept.
                Err(ConsoleError::NotFound { .. } | ConsoleError::Conflict { .. }) => {
                    skipped.insert(id);
                }
                Err(e) => {
                    tracing::warn!(clip = ?id, error = ?e.to_string(), "retention: clip not deleted; the next run tries again");
                    skipped.insert(id);
                }
            }
        }
    }
    loop {
        let queued = store.write(move |tx| tx.queue_orphan_segments(cutoff, now, BATCH)).await?;
        if queued == 0 {
            break;
        }
    }
    let removed = remove_queued_blobs(store).await?;
    summary.blobs_removed = removed.removed;
    summary.blobs_kept = removed.kept;
    summary.blob_failures = removed.failures;
    let (_, held) = store.read(move |tx| tx.clips_expiring_count(cutoff)).await?;
    summary.clips_held = held;
    let (soon, _) = store.read(move |tx| tx.clips_expiring_count(cutoff + WARN_MS)).await?;
    summary.expiring_soon = soon;
    let details = serde_json::to_value(&summary).unwrap_or_default();
    let days = settings.days;
    store
        .write(move |tx| {
            let mut details = details;
            details["days"] = serde_json::json!(days);
            tx.audit(ACTOR, "retention.run", "tenant", details)
        })
        .await?;
    tracing::info!(?summary, "retention run");
    Ok(summary)
}

/// What [`remove_queued_blobs`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub removed: usize,
    pub kept: usize,
    pub failures: usize,
}

/// Removes the queued blobs (see "Deleting a clip" in [`crate::store::retention`]): each one
/// stored again is kept; one the blob store fails to remove stays queued.
pub async fn remove_queued_blobs(store: &Store) -> Result<Removed, ConsoleError> {
    let mut done = Removed::default();
    let mut failed = std::collections::HashSet::new();
    loop {
        let limit = BATCH + failed.len() as i64;
        let batch = store.read(move |tx| tx.blob_deletions(limit)).await?;
        let batch: Vec<_> = batch.into_iter().filter(|b| !failed.contains(b)).collect();
        if batch.is_empty() {
            return Ok(done);
        }
        for (device, sha) in batch {
            let (d, s) = (device.clone(), sha.clone());
            let wanted = store.read(move |tx| tx.segment_stored(&d, &s)).await?;
            if wanted {
                let (d, s) = (device.clone(), sha.clone());
                store.write(move |tx| tx.finish_blob_deletion(&d, &s, false)).await?;
                done.kept += 1;
                continue;
            }
            if let Err(e) = store.blobs().remove(&device, &sha).await {
                tracing::warn!(device = ?device, segment = ?sha, error = ?e.to_string(), "retention: blob not removed; it stays queued");
                done.failures += 1;
                failed.insert((device, sha));
                continue;
            }
            let (d, s) = (device.clone(), sha.clone());
            let raced = store.write(move |tx| tx.finish_blob_deletion(&d, &s, true)).await?;
            if raced {
                tracing::warn!(device = ?device, segment = ?sha, "retention: a blob was stored again while it was removed; the console asks the device for it again");
            }
            done.removed += 1;
        }
    }
}

//! File watching (I/O), one for every trigger that follows files: the daemon's config file and
//! workstation mode's auth files. Notices changes with `notify` and debounces bursts.
//!
//! Tools replace files by writing a temporary file and renaming it over the old one, and a
//! Kubernetes ConfigMap mount swaps a `..data` symlink beside the file, so the *directories*
//! are watched, not the files; a directory that does not exist yet is watched through its
//! nearest existing ancestor until it appears. Only writes, creations, renames and removals
//! count: reading a file (our own reads, a log reader) is not a change. Must not read the
//! files: it only says that one of them may have changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A burst of changes is followed at the latest this long after its first change, however long
/// it goes on.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// Waits until `changes` has been quiet for `quiet` (or `max` has passed since the call), so a
/// burst of writes makes one pass. `false` when the sender is gone.
pub async fn settle(changes: &mut mpsc::Receiver<()>, quiet: Duration, max: Duration) -> bool {
    let deadline = Instant::now() + max;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match tokio::time::timeout(quiet.min(left), changes.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// Whether a file-system event can change a file's content (not a read, an open or a chmod).
pub fn is_change(kind: &EventKind) -> bool {
    use notify::event::ModifyKind;
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
#[error("watching {} for changes: {source}", path.display())]
pub struct WatchError {
    pub path: PathBuf,
    #[source]
    pub source: notify::Error,
}

/// Watches the directories of `files` and reports relevant changes.
pub struct FileWatcher {
    watcher: notify::RecommendedWatcher,
    files: Vec<PathBuf>,
    /// Directories currently watched.
    watched: BTreeSet<PathBuf>,
    events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
}

impl FileWatcher {
    pub fn new(files: Vec<PathBuf>) -> Result<Self, WatchError> {
        // notify reports absolute paths, and a relative path's parent (`""` for `config.yaml`)
        // names no directory to watch: compare and watch absolute paths only.
        let files = files
            .into_iter()
            .map(|file| std::path::absolute(&file).unwrap_or(file))
            .collect();
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the watcher is being dropped.
            let _ = tx.send(event);
        })
        .map_err(|source| WatchError {
            path: PathBuf::from("/"),
            source,
        })?;
        let mut this = Self {
            watcher,
            files,
            watched: BTreeSet::new(),
            events,
        };
        this.ensure_watches()?;
        Ok(this)
    }

    /// Watches, for each file, its directory or else the nearest ancestor that exists. Repeats
    /// until nothing new is watched: a directory created between finding the nearest ancestor
    /// and watching it (`mkdir -p` makes several quickly) would otherwise never be watched.
    fn ensure_watches(&mut self) -> Result<(), WatchError> {
        loop {
            let wanted: BTreeSet<PathBuf> = self
                .files
                .iter()
                .filter_map(|file| file.parent().and_then(nearest_existing))
                .filter(|dir| !self.watched.contains(dir))
                .collect();
            if wanted.is_empty() {
                return Ok(());
            }
            for dir in wanted {
                self.watcher
                    .watch(&dir, RecursiveMode::NonRecursive)
                    .map_err(|source| WatchError {
                        path: dir.clone(),
                        source,
                    })?;
                tracing::debug!(dir = %dir.display(), "Watching for auth file changes.");
                self.watched.insert(dir);
            }
        }
    }

    /// Waits until one of the files may have changed; `None` when watching has stopped.
    pub async fn changed(&mut self) -> Option<()> {
        loop {
            let event = self.events.recv().await?;
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    // Lost events (a queue overflow): assume anything may have changed.
                    tracing::warn!(%error, "File watching reported an error; re-reading.");
                    return Some(());
                }
            };
            if event.need_rescan() {
                return Some(());
            }
            if !is_change(&event.kind) {
                continue;
            }
            let touches_file = event
                .paths
                .iter()
                .any(|p| self.files.contains(p) || is_atomic_writer_entry(p, &self.files));
            let touches_dir = event.paths.iter().any(|p| {
                self.files
                    .iter()
                    .any(|f| f.parent().is_some_and(|d| d.starts_with(p)))
            });
            if touches_dir {
                // A directory on the way to a file appeared (or went): watch deeper.
                if let Err(error) = self.ensure_watches() {
                    tracing::warn!(%error, "Could not watch a new directory.");
                }
            }
            if touches_file || touches_dir {
                return Some(());
            }
        }
    }

    /// Forwards changes to `tx` until the receiver is dropped. Signals are coalesced: the
    /// receiver debounces anyway.
    pub async fn forward(mut self, tx: mpsc::Sender<()>) {
        while self.changed().await.is_some() {
            if tx.is_closed() {
                return;
            }
            let _ = tx.try_send(());
        }
    }
}

/// An entry the kubelet's atomic writer swaps beside a ConfigMap or Secret file (`..data`,
/// `..2026_12_01_…`): the file itself is a symlink through it, so its content changed.
fn is_atomic_writer_entry(path: &Path, files: &[PathBuf]) -> bool {
    let in_same_dir = files.iter().any(|f| f.parent() == path.parent());
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    in_same_dir && name.starts_with("..")
}

fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|d| d.is_dir()).map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_burst_settles_once_after_the_quiet_time() {
        let (tx, mut rx) = mpsc::channel(16);
        let quiet = Duration::from_millis(200);
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for _ in 0..10 {
                let _ = tx.try_send(());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tx
        });
        assert_eq!(rx.recv().await, Some(()));
        assert!(settle(&mut rx, quiet, MAX_DELAY).await);
        // Ten writes 50 ms apart, then 200 ms of quiet.
        assert_eq!(start.elapsed(), Duration::from_millis(450 + 200));
        assert!(rx.try_recv().is_err(), "the burst was drained");
        drop(sender.await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_burst_still_settles_at_the_deadline() {
        let (tx, mut rx) = mpsc::channel(16);
        let start = Instant::now();
        tokio::spawn(async move {
            while tx.send(()).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        assert!(settle(&mut rx, Duration::from_millis(200), MAX_DELAY).await);
        assert_eq!(start.elapsed(), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_channel_ends_the_wait() {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        drop(tx);
        assert!(!settle(&mut rx, Duration::from_millis(200), MAX_DELAY).await);
    }
}

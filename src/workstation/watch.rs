//! Workstation mode, trigger (I/O): notices changes to the watched auth files with `notify`.
//!
//! Tools replace these files by writing a temporary file and renaming it over the old one, so
//! the *directories* are watched, not the files; a directory that does not exist yet is
//! watched through its nearest existing ancestor until it appears. Must not read the files:
//! it only says that one of them may have changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

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
            if matches!(event.kind, EventKind::Access(_)) {
                continue;
            }
            let touches_file = event.paths.iter().any(|p| self.files.contains(p));
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

fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|d| d.is_dir()).map(Path::to_path_buf)
}

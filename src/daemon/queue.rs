//! The work queue (orchestration): which namespace is reconciled next, and when.
//!
//! Why not kube-runtime's `applier`: it looks every request up in a reflector store of whole
//! objects and keeps a scheduler entry of several hundred bytes per queued object; at cold
//! start every namespace is queued at once, so at 10,000 namespaces the two were a third of
//! the daemon's heap. What the daemon needs of a queue is small, and this is all of it:
//! - a namespace is in line at most once, due at one time: a change (a watch event, a new
//!   snapshot) makes it due `debounce` from now, so a burst of changes is one reconcile; a
//!   reconcile's own "look again after" makes it due then, unless it is due sooner anyway;
//! - at most `concurrency` reconciles run at a time, and never two of one namespace: one that
//!   falls due while it runs waits in line until the running one ends;
//! - the stop signal ends the taking of work; reconciles already running finish.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

/// How soon a namespace whose reconcile panicked is tried again.
const AFTER_PANIC: Duration = Duration::from_secs(60);

/// Namespaces waiting for a reconcile, each once, by the time it is due.
#[derive(Default)]
struct Line {
    by_due: BTreeSet<(Instant, Arc<str>)>,
    due: HashMap<Arc<str>, Instant>,
}

impl Line {
    /// Something about `name` changed: due at `at`, whenever it was due before (a burst of
    /// changes keeps pushing it back by the debounce).
    fn changed(&mut self, name: &str, at: Instant) {
        let name = self.remove(name).unwrap_or_else(|| name.into());
        self.insert(name, at);
    }

    /// A reconcile asked to look at `name` again at `at`: due then, or sooner if it already is.
    fn revisit(&mut self, name: Arc<str>, at: Instant) {
        let at = self.due.get(&name).map_or(at, |&due| due.min(at));
        self.remove(&name);
        self.insert(name, at);
    }

    fn insert(&mut self, name: Arc<str>, at: Instant) {
        self.by_due.insert((at, Arc::clone(&name)));
        self.due.insert(name, at);
    }

    fn remove(&mut self, name: &str) -> Option<Arc<str>> {
        let (name, at) = self.due.remove_entry(name)?;
        self.by_due.remove(&(at, Arc::clone(&name)));
        Some(name)
    }

    /// When the earliest namespace not in `running` falls due.
    fn next_due(&self, running: &HashSet<Arc<str>>) -> Option<Instant> {
        self.by_due
            .iter()
            .find(|(_, name)| !running.contains(name))
            .map(|(at, _)| *at)
    }

    /// Takes up to `limit` namespaces due by `now` and not in `running`, earliest first.
    fn take_due(
        &mut self,
        now: Instant,
        running: &HashSet<Arc<str>>,
        limit: usize,
    ) -> Vec<Arc<str>> {
        let names: Vec<Arc<str>> = self
            .by_due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter(|(_, name)| !running.contains(name))
            .take(limit)
            .map(|(_, name)| Arc::clone(name))
            .collect();
        for name in &names {
            self.remove(name);
        }
        names
    }

    fn len(&self) -> usize {
        self.due.len()
    }
}

/// Reconciles the namespaces named on `changes` with `reconcile` (which returns when to look
/// again, if ever) until `stop` resolves or `changes` closes; then waits for the reconciles
/// still running.
pub async fn run<F, Fut>(
    mut changes: mpsc::UnboundedReceiver<String>,
    stop: impl Future<Output = ()>,
    concurrency: usize,
    debounce: Duration,
    reconcile: F,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Option<Duration>> + Send + 'static,
{
    let concurrency = concurrency.max(1);
    let mut line = Line::default();
    let mut running: HashSet<Arc<str>> = HashSet::new();
    let mut tasks: JoinSet<Option<Duration>> = JoinSet::new();
    let mut task_names: HashMap<Id, Arc<str>> = HashMap::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let wake = (tasks.len() < concurrency)
            .then(|| line.next_due(&running))
            .flatten();
        tokio::select! {
            () = &mut stop => break,
            change = changes.recv() => match change {
                Some(name) => line.changed(&name, Instant::now() + debounce),
                None => break,
            },
            Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, again) = match ended {
                    Ok((id, again)) => (id, again),
                    Err(error) => {
                        tracing::error!(%error, "A reconcile panicked; trying again later.");
                        (error.id(), Some(AFTER_PANIC))
                    }
                };
                if let Some(name) = task_names.remove(&id) {
                    running.remove(&name);
                    if let Some(after) = again {
                        line.revisit(name, Instant::now() + after);
                    }
                }
            },
            () = sleep_until(wake), if wake.is_some() => {
                let free = concurrency - tasks.len();
                for name in line.take_due(Instant::now(), &running, free) {
                    let handle = tasks.spawn(reconcile(name.to_string()));
                    task_names.insert(handle.id(), Arc::clone(&name));
                    running.insert(name);
                }
            },
        }
    }
    tracing::debug!(
        waiting = line.len(),
        running = tasks.len(),
        "Work queue stopped."
    );
    while tasks.join_next().await.is_some() {}
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_change_pushes_a_namespace_back_and_a_revisit_never_does() {
        let start = Instant::now();
        let mut line = Line::default();
        line.changed("a", start + Duration::from_millis(50));
        line.changed("a", start + Duration::from_millis(80));
        assert_eq!(line.len(), 1);
        assert_eq!(
            line.next_due(&HashSet::new()),
            Some(start + Duration::from_millis(80))
        );
        line.revisit("a".into(), start + Duration::from_secs(5));
        assert_eq!(
            line.next_due(&HashSet::new()),
            Some(start + Duration::from_millis(80))
        );
        line.revisit("a".into(), start + Duration::from_millis(10));
        assert_eq!(
            line.next_due(&HashSet::new()),
            Some(start + Duration::from_millis(10))
        );
    }

    #[test]
    fn running_namespaces_wait_in_line() {
        let start = Instant::now();
        let mut line = Line::default();
        line.changed("busy", start);
        line.changed("free", start + Duration::from_millis(1));
        let running: HashSet<Arc<str>> = HashSet::from(["busy".into()]);
        assert_eq!(
            line.next_due(&running),
            Some(start + Duration::from_millis(1))
        );
        let taken = line.take_due(start + Duration::from_secs(1), &running, 8);
        assert_eq!(taken, vec![Arc::<str>::from("free")]);
        assert_eq!(line.len(), 1, "busy stays in line");
    }

    /// Records each reconcile's start and end, and how many ran at once.
    #[derive(Default)]
    struct Record {
        started: Vec<String>,
        active: HashMap<String, usize>,
        most_at_once: usize,
        overlapped: bool,
    }

    #[tokio::test(start_paused = true)]
    async fn each_namespace_runs_alone_within_the_concurrency_and_bursts_coalesce() {
        let record = Arc::new(Mutex::new(Record::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        for name in ["a", "b", "c", "a", "a", "b"] {
            tx.send(name.to_string()).expect("queue is listening");
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let seen = Arc::clone(&record);
        let queue = tokio::spawn(run(
            rx,
            async move {
                let _ = stop_rx.await;
            },
            2,
            Duration::from_millis(50),
            move |name| {
                let record = Arc::clone(&seen);
                async move {
                    {
                        let mut r = record.lock().expect("not poisoned");
                        r.started.push(name.clone());
                        let count = r.active.entry(name.clone()).or_default();
                        *count += 1;
                        let overlapped = *count > 1;
                        r.overlapped |= overlapped;
                        let total = r.active.values().sum();
                        r.most_at_once = r.most_at_once.max(total);
                    }
                    let takes = if name == "a" { 100 } else { 10 };
                    tokio::time::sleep(Duration::from_millis(takes)).await;
                    let mut r = record.lock().expect("not poisoned");
                    *r.active.entry(name.clone()).or_default() -= 1;
                    // "a" asks for one more look; the others are done.
                    (name == "a" && r.started.iter().filter(|n| *n == "a").count() == 1)
                        .then_some(Duration::from_millis(10))
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(60)).await;
        // "a" changes again while it runs: it runs again only after this run ends.
        tx.send("a".to_string()).expect("queue is listening");
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop_tx.send(()).expect("queue is running");
        queue.await.expect("queue ends");
        let record = record.lock().expect("not poisoned");
        let mut started = record.started.clone();
        started.sort();
        // a: the burst, the change while running (and the revisit, coalesced with it); b and c once.
        assert_eq!(started, vec!["a", "a", "b", "c"]);
        assert!(!record.overlapped, "a namespace ran twice at once");
        assert_eq!(record.most_at_once, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_takes_no_more_work_and_waits_for_running_reconciles() {
        let finished = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send("slow".to_string()).expect("queue is listening");
        tx.send("later".to_string()).expect("queue is listening");
        let done = Arc::clone(&finished);
        run(
            rx,
            tokio::time::sleep(Duration::from_millis(100)),
            1,
            Duration::ZERO,
            move |name| {
                let done = Arc::clone(&done);
                async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    done.lock().expect("not poisoned").push(name);
                    None
                }
            },
        )
        .await;
        let finished = finished.lock().expect("not poisoned");
        assert_eq!(
            finished.len(),
            1,
            "one ran to its end, the other never started"
        );
    }
}

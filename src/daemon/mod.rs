//! Daemon (orchestration): the `run` trigger of the pipeline, driven by watches and timers.
//!
//! ```text
//!  sources task ──watch<Snapshot>──┐                     ┌─► reconcile(namespace):
//!  config file (notify) ─watch<Config>─► dispatcher ─┐    │     plan (pure, from caches)
//!  Lease (leader election) ──────────┘               ├─► queue ───► diff (pure, `now` passed in)
//!  watch caches (ns, Secrets, SAs, RBs) ─ namespace ─┘   (dedup,     apply (leader only)
//!                                          names          backoff)
//! ```
//!
//! - Reconciles are per namespace and read only the watch caches; the work [`queue`]
//!   deduplicates requests, never runs one namespace twice at once, and requeues failures with
//!   per-namespace backoff. A namespace is looked at again only when something it depends on
//!   changes (or a replaced versioned Secret's grace period ends): no periodic resync, so an
//!   idle cluster costs no request and no write.
//! - Sources refresh each registry on its own `refresh` interval in their own task and publish
//!   a [`Snapshot`]; a changed credential re-reconciles exactly the namespaces planned to use it.
//!   A reconcile never calls a source.
//! - Only the Lease holder writes, and it checks just before writing.
//! - Namespaced mode (`namespaces:`): the caches watch only the configured namespaces that
//!   answer a probe list at start (the others are logged, and planned as not found). The
//!   watches are fixed for the daemon's life, so a reload that changes `namespaces:` is
//!   rejected with "changing namespaces needs a restart" and the running config kept:
//!   restarting is simpler and more honest than half-swapping a set of watches. A reload that
//!   changes `shards:` is rejected the same way: replicas of different shard counts would
//!   each own namespaces the other also owns (docs/sharding.md).
//! - A reconcile costs its own namespace, not the cluster: it plans just that namespace from
//!   Secrets prepared once per credential snapshot, and reads only that namespace's cached
//!   objects (re-planning every namespace per reconcile made a 10,000-namespace cold start
//!   quadratic; see the README's Performance section).
//!
//! Jobs, one module each: this one starts and stops everything (lifecycle); [`controller`]
//! reconciles one namespace through [`crate::reconcile`]; [`dispatch`] turns new snapshots,
//! reloads and leadership into namespace requests; [`sources`] reads each registry on its
//! schedule (sooner when its credential expires) and publishes snapshots; [`leases`] renews the
//! leases of dynamic Vault secrets and revokes replaced ones once no cached Secret carries them.
//!
//! Must not hold any state a restart cannot rebuild from the cluster and the sources.

mod controller;
mod dispatch;
mod leases;
mod queue;
mod sources;
pub mod writers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::{mpsc, watch};

use crate::cluster::cache::Caches;
use crate::cluster::lease::{Electors, Leadership, LeaseConfig};
use crate::cluster::snapshot::readable_namespaces;
use crate::cluster::{Throttle, view};
use crate::config::{Config, ConfigError};
use crate::source::SourceContext;
use crate::source::service::{Lookup, Snapshot};
use crate::telemetry::{self, Health, Metrics};
use controller::Context;

/// How the daemon runs.
pub struct DaemonOptions {
    pub config_path: PathBuf,
    /// The config already loaded from `config_path` (`None`: load it at start): the caller
    /// that validated it need not read it twice.
    pub config: Option<Config>,
    pub sources: SourceContext,
    pub throttle: Throttle,
    /// Publish Kubernetes Events for changes and failures.
    pub events: bool,
    /// Namespaces reconciled at the same time.
    pub concurrency: u16,
    /// `None`: no election, this replica always writes.
    pub lease: Option<LeaseConfig>,
    /// Where /healthz, /readyz and /metrics are served (`None`: not at all).
    pub listen: Option<SocketAddr>,
    /// Quiet time after a config file change before it is reloaded.
    pub reload_debounce: Duration,
    /// Requests for one namespace arriving within this window are merged.
    pub debounce: Duration,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    LoadConfig(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] telemetry::ListenError),
    #[error(transparent)]
    WatchConfig(#[from] crate::watch::WatchError),
    #[error(transparent)]
    Lease(#[from] crate::cluster::lease::LeaseError),
    /// Namespaced mode: a configured namespace could not be probed.
    #[error(transparent)]
    Probe(#[from] crate::cluster::ApiError),
}

/// Why one namespace did not converge (the work queue retries it with backoff).
#[derive(Debug, thiserror::Error)]
#[error("namespace {namespace}: {failures} write(s) failed, first: {first}")]
pub struct ReconcileError {
    pub namespace: String,
    pub failures: usize,
    pub first: String,
}

/// A started daemon.
pub struct Running {
    /// The bound address of the HTTP listener.
    pub address: Option<SocketAddr>,
    pub health: Arc<Health>,
    pub leadership: Leadership,
    config: watch::Receiver<Arc<Config>>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The tasks that act (elector, sources, dispatcher live under `task` or here).
    helpers: Vec<tokio::task::AbortHandle>,
}

impl Running {
    /// Stop taking work, finish in-flight reconciles, release the Lease.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until the daemon has stopped, at most `limit`.
    pub async fn wait(self, limit: Duration) -> bool {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_ok() {
            true
        } else {
            abort.abort();
            false
        }
    }

    /// Credential lookups answered from this daemon's sources (its config, reloads included, and
    /// the snapshots its schedule publishes): `run --agent` serves these, reading nothing twice.
    pub fn lookup(&self) -> Lookup {
        Lookup::Daemon {
            config: self.config.clone(),
            snapshot: self.snapshot.clone(),
        }
    }

    /// Ends every task that acts at once, as a crash would (no Lease release).
    pub fn kill(&self) {
        self.task.abort();
        for helper in &self.helpers {
            helper.abort();
        }
    }
}

/// What every reconcile shares.
pub async fn start(client: Client, options: DaemonOptions) -> Result<Running, DaemonError> {
    let config = Arc::new(match options.config {
        Some(config) => config,
        None => Config::load(&options.config_path)?,
    });
    let (config_tx, config_rx) = watch::channel(Arc::clone(&config));
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());

    let ages = snapshot_rx.clone();
    let scrape_config = config_rx.clone();
    metrics.zero_series(config.registries.keys().map(String::as_str));
    let (leadership, elector) = match options.lease.clone() {
        Some(lease) => {
            let (mut elector, leadership) = Electors::new(&client, &lease);
            // A Lease that cannot be used at all stops the start, with its reason.
            elector.first_attempt().await?;
            (leadership, Some(elector))
        }
        None => (Leadership::always(), None),
    };
    let fitness = leadership.clone();
    let expiries = snapshot_rx.clone();
    let health = Arc::new(Health {
        metrics: Arc::clone(&metrics),
        ready: false.into(),
        before_scrape: Box::new(move |metrics| {
            sources::record_ages(metrics, &ages.borrow(), &scrape_config.borrow());
        }),
        unfit: Box::new(move || {
            if !fitness.is_leading() && !fitness.lease_reachable() {
                return Some("a standby that cannot reach its Lease (see the log)".to_string());
            }
            expired_detail(&expiries.borrow())
        }),
    });
    let address = match options.listen {
        Some(listen) => {
            let stop = stop_rx.clone();
            let (bound, _task) = telemetry::serve(listen, Arc::clone(&health), async move {
                let mut stop = stop;
                let _ = stop.wait_for(|s| *s).await;
            })
            .await?;
            Some(bound)
        }
        None => None,
    };

    let reload = watch_config_file(&options.config_path, options.reload_debounce, config_tx)?;

    let openshift = crate::cluster::snapshot::detect_openshift(&client, &options.throttle).await;
    let scope = match &config.namespaces {
        Some(names) => Some(readable_namespaces(&client, &options.throttle, names).await?),
        None => None,
    };
    let (touched_tx, touched_rx) = mpsc::unbounded_channel();
    let caches = Caches::start(
        &client,
        &view::account_names(&config, [], &[]),
        touched_tx.clone(),
        openshift,
        scope.as_deref(),
    );
    let context = Arc::new(Context::new(
        client,
        options.throttle,
        options.events,
        caches,
        controller::Channels {
            config: config_rx.clone(),
            snapshot: snapshot_rx.clone(),
            stopping: stop_rx.clone(),
            touched: touched_tx.clone(),
        },
        leadership.clone(),
        Arc::clone(&metrics),
    ));

    let in_use_caches = context.caches.clone();
    let in_use: sources::InUse = Arc::new(move || versions_in_use(&in_use_caches));
    let sources = tokio::spawn(sources::run_sources(
        config_rx.clone(),
        options.sources,
        snapshot_tx,
        Arc::clone(&metrics),
        in_use,
        stop_rx.clone(),
    ));
    let elector_task = elector.map(|elector| tokio::spawn(elector.run(stop_rx.clone())));
    let mut helpers = vec![sources.abort_handle()];
    helpers.extend(
        elector_task
            .as_ref()
            .map(tokio::task::JoinHandle::abort_handle),
    );
    let main = run_main(
        Arc::clone(&context),
        Arc::clone(&health),
        touched_tx,
        touched_rx,
        options.concurrency,
        options.debounce,
    );
    let task = tokio::spawn(async move {
        let _reload = AbortOnDrop(reload);
        main.await;
        if let Some(elector) = elector_task {
            // The elector stops on the same signal and releases the Lease.
            let _ = elector.await;
        }
        sources.abort();
    });
    Ok(Running {
        address,
        health,
        leadership,
        config: config_rx,
        snapshot: snapshot_rx,
        stop: stop_tx,
        task,
        helpers,
    })
}

/// The `/readyz` detail while a credential has expired: it is no longer served, and the Secrets
/// that need it are held until its source can be read again.
fn expired_detail(snapshot: &Snapshot) -> Option<String> {
    // Expiries are checked against the clock here too, as the metric is: the sources task
    // takes the credential out a moment later, but readiness must not lag the metric.
    let now = std::time::SystemTime::now();
    let passed = snapshot
        .expires_at
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(name, _)| name);
    let names: std::collections::BTreeSet<&String> =
        snapshot.expired.iter().chain(passed).collect();
    if names.is_empty() {
        return None;
    }
    let names: Vec<&str> = names.into_iter().map(String::as_str).collect();
    Some(format!(
        "the credential of registry {} has expired and could not be renewed or read again \
         (see the log); its Secrets are held",
        names.join(", ")
    ))
}

/// `(registry, version)` of every credential some cached managed Secret was rendered from: a
/// replaced lease is revoked only when none carries it.
fn versions_in_use(caches: &Caches) -> leases::VersionsInUse {
    caches
        .secrets()
        .iter()
        .flat_map(crate::model::managed::recorded_source_versions)
        .collect()
}

/// Waits for the caches, then runs the work queue until the stop signal; in-flight reconciles
/// finish first.
async fn run_main(
    context: Arc<Context>,
    health: Arc<Health>,
    touched_tx: mpsc::UnboundedSender<String>,
    touched_rx: mpsc::UnboundedReceiver<String>,
    concurrency: u16,
    debounce: Duration,
) {
    let mut stopping = context.stopping.clone();
    tokio::select! {
        ready = context.caches.wait_until_ready() => if ready.is_err() { return },
        () = stopped(&mut stopping) => return,
    }
    // Accounts earlier configs linked, as recorded on the Secrets: watched so they can be unlinked.
    let config = Arc::clone(&context.config.borrow());
    let recorded = controller::recorded_accounts(&context.caches, &config);
    let added = context.caches.watch_accounts(&recorded);
    for store in added {
        let _ = store.wait_until_ready().await;
    }
    tracing::info!(
        namespaces = context.caches.namespaces.len(),
        "Caches synced."
    );
    let _dispatcher = AbortOnDrop(tokio::spawn(dispatch::dispatch(
        Arc::clone(&context),
        touched_tx,
    )));
    let ready_context = Arc::clone(&context);
    tokio::spawn(async move {
        let mut snapshot = ready_context.snapshot.clone();
        if snapshot.wait_for(|s| s.complete).await.is_ok() {
            health
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("Ready: caches synced and every source delivered.");
        }
    });

    let stop = {
        let mut stopping = context.stopping.clone();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    };
    let reconcile_context = Arc::clone(&context);
    queue::run(
        touched_rx,
        stop,
        usize::from(concurrency),
        debounce,
        move |namespace| {
            let context = Arc::clone(&reconcile_context);
            async move {
                match controller::reconcile(namespace.clone(), Arc::clone(&context)).await {
                    Ok(revisit) => revisit,
                    Err(error) => {
                        tracing::warn!(%error, namespace, "Reconcile failed; requeueing.");
                        Some(controller::error_policy(&namespace, &context))
                    }
                }
            }
        },
    )
    .await;
    tracing::info!("Stopped taking work; in-flight reconciles finished.");
}

/// One namespace: plan from the caches and the latest snapshot, diff, and (as leader) apply.
/// Watches the config file (its directory: a ConfigMap mount swaps a symlink) and publishes each
/// valid new config; an invalid one is logged once (until the file changes again) and the
/// running config kept. A burst is debounced, but never delays the reload past
/// [`crate::watch::MAX_DELAY`].
fn watch_config_file(
    path: &Path,
    debounce: Duration,
    publish: watch::Sender<Arc<Config>>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let watcher = crate::watch::FileWatcher::new(vec![path.to_path_buf()])?;
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let forward = tokio::spawn(watcher.forward(tx));
    let path = path.to_path_buf();
    Ok(tokio::spawn(async move {
        let _forward = AbortOnDrop(forward);
        // What the file held when it was last looked at: an unchanged file is not reloaded
        // (and a rejected one not reported) again.
        let mut last_seen = content_digest(&path);
        while rx.recv().await.is_some() {
            if !crate::watch::settle(&mut rx, debounce, crate::watch::MAX_DELAY).await {
                return;
            }
            let digest = content_digest(&path);
            if digest == last_seen {
                continue;
            }
            last_seen = digest;
            match Config::load(&path) {
                Ok(config) if *publish.borrow().as_ref() == config => {}
                Ok(config) if publish.borrow().namespaces != config.namespaces => {
                    tracing::error!(
                        path = %path.display(),
                        "New config rejected: changing namespaces needs a restart; keeping the \
                         running one."
                    );
                }
                Ok(config) if publish.borrow().shards != config.shards => {
                    tracing::error!(
                        path = %path.display(),
                        "New config rejected: changing shards needs every replica stopped first \
                         (docs/sharding.md); keeping the running one."
                    );
                }
                Ok(config) => {
                    tracing::info!(path = %path.display(), "Config reloaded.");
                    publish.send_replace(Arc::new(config));
                }
                Err(error) => {
                    tracing::error!(%error, "New config rejected; keeping the running one.");
                }
            }
        }
    }))
}

/// SHA-256 of the file's content (`None` when it cannot be read, or is no longer a regular
/// file of at most [`MAX_CONFIG_BYTES`](crate::config::MAX_CONFIG_BYTES): a FIFO put in its
/// place must not block the watch).
fn content_digest(path: &Path) -> Option<[u8; 32]> {
    use sha2::Digest as _;
    let bytes = crate::regular_file::read(path, crate::config::MAX_CONFIG_BYTES).ok()?;
    Some(sha2::Sha256::digest(bytes.as_slice()).into())
}

pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Ends a helper task with the task that started it.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

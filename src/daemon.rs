//! Daemon (orchestration): the `run` trigger of the pipeline, driven by watches and timers.
//!
//! ```text
//!  sources task ──watch<Snapshot>──┐                     ┌─► reconcile(namespace):
//!  config file (notify) ─watch<Config>─► dispatcher ─┐    │     plan (pure, from caches)
//!  Lease (leader election) ──────────┘               ├─► applier ─► diff (pure, `now` passed in)
//!  reflectors (ns, Secrets, SAs, RBs) ─ namespace ───┘   (dedup,     apply (leader only)
//!                                        names            backoff)
//! ```
//!
//! - Reconciles are per namespace and read only the watch caches; kube-runtime's `applier`
//!   deduplicates requests, never runs one namespace twice at once, and requeues failures with
//!   per-namespace backoff. A namespace is looked at again only when something it depends on
//!   changes (or a replaced versioned Secret's grace period ends): no periodic resync, so an
//!   idle cluster costs no request and no write.
//! - Sources refresh each registry on its own `refresh` interval in their own task and publish
//!   a [`Snapshot`]; a changed credential re-reconciles exactly the namespaces planned to use it.
//!   A reconcile never calls a source.
//! - Only the Lease holder writes, and it checks just before writing.
//! - A reconcile costs its own namespace, not the cluster: it plans just that namespace from
//!   Secrets rendered once per credential snapshot, and reads only that namespace's cached
//!   objects (re-planning every namespace per reconcile made a 10,000-namespace cold start
//!   quadratic; see the README's Performance section).
//!
//! Must not hold any state a restart cannot rebuild from the cluster and the sources.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, stream};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{self, Action, ReconcileRequest, applier};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt as _};
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use crate::cluster::cache::{Caches, namespace_info};
use crate::cluster::lease::{Elector, Leadership, LeaseConfig};
use crate::cluster::{ApplyOptions, ProjectOutcome, Throttle, apply_project_from};
use crate::config::{Config, ConfigError};
use crate::diff::{
    Action as DiffAction, DiffPolicy, ObservedProject, diff_project_at, recorded_service_accounts,
    until,
};
use crate::model::managed::{self, CONTENT_HASH_ANNOTATION, PULL_SECRET_ANNOTATION};
use crate::plan::{self, DesiredState, PlanInputs, ProjectPlan, RenderedSecrets};
use crate::source::{Inventory, Resolved, SourceContext};
use crate::telemetry::{
    self, Health, Metrics, ReadLabels, RegistryLabel, ResultLabel, WriteLabels,
};

/// Longest wait before a failed namespace is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How the daemon runs.
pub struct DaemonOptions {
    pub config_path: PathBuf,
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
    #[error("watching config file {path}: {source}")]
    WatchConfig {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Why one namespace did not converge (the applier retries it with backoff).
#[derive(Debug, thiserror::Error)]
#[error("namespace {namespace}: {failures} write(s) failed, first: {first}")]
pub struct ReconcileError {
    pub namespace: String,
    pub failures: usize,
    pub first: String,
}

/// Every registry's last good credential, as the sources task last published it.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub credentials: BTreeMap<String, Resolved>,
    /// When each registry's credential was last read successfully.
    pub read_at: BTreeMap<String, Instant>,
    /// Registries whose credential changed in the refresh that published this snapshot.
    pub changed: BTreeSet<String>,
    /// True once every configured registry has a credential.
    pub complete: bool,
    /// 0 before the first refresh finished.
    pub generation: u64,
}

/// A started daemon.
pub struct Running {
    /// The bound address of the HTTP listener.
    pub address: Option<SocketAddr>,
    pub health: Arc<Health>,
    pub leadership: Leadership,
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

    /// Ends every task that acts at once, as a crash would (no Lease release).
    pub fn kill(&self) {
        self.task.abort();
        for helper in &self.helpers {
            helper.abort();
        }
    }
}

/// What every reconcile shares.
struct Context {
    client: Client,
    throttle: Throttle,
    events: bool,
    caches: Caches,
    config: watch::Receiver<Arc<Config>>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
    /// Consecutive failures per namespace, for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// OpenShift or not (API discovery at start): image-puller bindings exist only there.
    openshift: Option<bool>,
    /// The Secrets of the latest config and snapshot, rendered once for every reconcile.
    rendered: Mutex<Option<Rendered>>,
    /// Problems and held Secrets per namespace, behind the gauges.
    reported: Mutex<Reported>,
}

/// Secrets rendered from one config and one snapshot generation.
struct Rendered {
    config: Arc<Config>,
    generation: u64,
    secrets: Arc<RenderedSecrets>,
}

impl Context {
    /// The rendered Secrets for `config` and `snapshot`, rendering them on first use.
    fn rendered(&self, config: &Arc<Config>, snapshot: &Snapshot) -> Arc<RenderedSecrets> {
        let mut cache = self.rendered.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cache.as_ref()
            && Arc::ptr_eq(&cached.config, config)
            && cached.generation == snapshot.generation
        {
            return Arc::clone(&cached.secrets);
        }
        let secrets = Arc::new(plan::render_secrets(config, &snapshot.credentials));
        *cache = Some(Rendered {
            config: Arc::clone(config),
            generation: snapshot.generation,
            secrets: Arc::clone(&secrets),
        });
        secrets
    }
}

/// Starts the daemon's tasks. Returns once the HTTP listener is bound.
pub async fn start(client: Client, options: DaemonOptions) -> Result<Running, DaemonError> {
    let config = Arc::new(Config::load(&options.config_path)?);
    let (config_tx, config_rx) = watch::channel(Arc::clone(&config));
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());

    let ages = snapshot_rx.clone();
    let scrape_config = config_rx.clone();
    metrics.zero_series(config.registries.keys().map(String::as_str));
    let health = Arc::new(Health {
        metrics: Arc::clone(&metrics),
        ready: false.into(),
        before_scrape: Box::new(move |metrics| {
            record_ages(metrics, &ages.borrow(), &scrape_config.borrow());
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

    let (leadership, elector) = match options.lease.clone() {
        Some(lease) => {
            let (elector, leadership) = Elector::new(&client, lease);
            (leadership, Some(elector))
        }
        None => (Leadership::always(), None),
    };
    let reload = watch_config_file(&options.config_path, options.reload_debounce, config_tx)?;

    let openshift = crate::cluster::observe::detect_openshift(&client, &options.throttle).await;
    let (touched_tx, touched_rx) = mpsc::unbounded_channel();
    let caches = Caches::start(&client, &account_names(&config), touched_tx.clone());
    let context = Arc::new(Context {
        client,
        throttle: options.throttle,
        events: options.events,
        caches,
        config: config_rx.clone(),
        snapshot: snapshot_rx.clone(),
        leadership: leadership.clone(),
        metrics: Arc::clone(&metrics),
        stopping: stop_rx.clone(),
        failures: Mutex::default(),
        openshift,
        rendered: Mutex::default(),
        reported: Mutex::default(),
    });

    let sources = tokio::spawn(run_sources(
        config_rx,
        options.sources,
        snapshot_tx,
        Arc::clone(&metrics),
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
        let _reload = reload;
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
        stop: stop_tx,
        task,
        helpers,
    })
}

/// Waits for the caches, then runs the applier until the stop signal; in-flight reconciles
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
    let instance = context.config.borrow().instance_name().to_string();
    let recorded = recorded_accounts(&context.caches, &instance);
    let added = context.caches.watch_accounts(&recorded);
    for store in added {
        let _ = store.wait_until_ready().await;
    }
    tracing::info!(
        namespaces = context.caches.namespaces.state().len(),
        "Caches synced."
    );
    let _dispatcher = AbortOnDrop(tokio::spawn(dispatch(Arc::clone(&context), touched_tx)));
    let ready_context = Arc::clone(&context);
    tokio::spawn(async move {
        let mut snapshot = ready_context.snapshot.clone();
        if snapshot.wait_for(|s| s.complete).await.is_ok() {
            health.ready.store(true, Ordering::Relaxed);
            tracing::info!("Ready: caches synced and every source delivered.");
        }
    });

    let stop = {
        let mut stopping = context.stopping.clone();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    };
    let queue = stream::unfold(touched_rx, |mut rx| async move {
        let namespace = rx.recv().await?;
        let request = ReconcileRequest::from(ObjectRef::<Namespace>::new(&namespace));
        Some((Ok::<_, std::convert::Infallible>(request), rx))
    })
    .take_until(stop);
    let config = controller::Config::default()
        .concurrency(concurrency.max(1))
        .debounce(debounce);
    let results = applier(
        |ns, ctx| Box::pin(reconcile(ns, ctx)),
        error_policy,
        Arc::clone(&context),
        context.caches.namespaces.clone(),
        queue,
        config,
    );
    results
        .for_each(|result| async move {
            if let Err(error) = result {
                match error {
                    controller::Error::ObjectNotFound(_) => {}
                    controller::Error::ReconcilerFailed(error, _) => {
                        tracing::warn!(%error, "Reconcile failed; requeueing.");
                    }
                    other => tracing::warn!(error = %other, "Controller error."),
                }
            }
        })
        .await;
    tracing::info!("Stopped taking work; in-flight reconciles finished.");
}

/// One namespace: plan from the caches and the latest snapshot, diff, and (as leader) apply.
async fn reconcile(
    namespace: Arc<Namespace>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let name = namespace.name_any();
    let span = tracing::info_span!("reconcile", namespace = %name);
    async move {
        if *context.stopping.borrow() || !context.leadership.is_leading() {
            return Ok(Action::await_change());
        }
        let snapshot = Arc::clone(&context.snapshot.borrow());
        if snapshot.generation == 0 {
            // Nothing read yet: the first snapshot reconciles every namespace.
            return Ok(Action::await_change());
        }
        let started = Instant::now();
        let config = Arc::clone(&context.config.borrow());
        let wanted = plan_one(&context, &namespace, &config, &snapshot);
        let observed = context.caches.observed(&name);
        let now = Timestamp::now();
        let policy = DiffPolicy::full(config.instance_name());
        let diff = diff_project_at(&name, &wanted, &observed, &policy, Some(now));
        context
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(&context.metrics, &name, namespace_report(&diff));
        let revisit = diff
            .revisit_at
            .map(|at| until(now, at) + Duration::from_secs(1));
        for problem in &diff.problems {
            tracing::warn!(reason = problem.reason, "{}", problem.message);
        }
        if diff.actions.is_empty() && diff.held.is_empty() {
            tracing::debug!("Namespace already up to date.");
            return Ok(finish(&context, &name, started, revisit));
        }
        if !context.leadership.is_leading() || *context.stopping.borrow() {
            return Ok(Action::await_change());
        }
        let rotations = count_rotations(&diff.actions, &observed);
        let options = ApplyOptions {
            events: context.events,
            ..ApplyOptions::for_instance(config.instance_name())
        };
        let outcome = apply_project_from(
            &context.client,
            &context.throttle,
            &options,
            &name,
            diff,
            observed.service_accounts,
        )
        .await;
        context.metrics.rotations.inc_by(rotations);
        record_writes(&context.metrics, &outcome);
        if let Some(first) = outcome.failures.first() {
            context
                .metrics
                .reconciles
                .get_or_create(&ResultLabel { result: "error" })
                .inc();
            return Err(ReconcileError {
                namespace: name.clone(),
                failures: outcome.failures.len(),
                first: first.to_string(),
            });
        }
        Ok(finish(&context, &name, started, revisit))
    }
    .instrument(span)
    .await
}

fn finish(context: &Context, name: &str, started: Instant, revisit: Option<Duration>) -> Action {
    context
        .failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(name);
    let metrics = &context.metrics;
    metrics
        .reconciles
        .get_or_create(&ResultLabel { result: "ok" })
        .inc();
    metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics.last_sync.set(unix.as_secs_f64());
    match revisit {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    }
}

/// Exponential backoff per namespace: 1 s, 2 s, 4 s … up to five minutes.
fn error_policy(
    namespace: Arc<Namespace>,
    _error: &ReconcileError,
    context: Arc<Context>,
) -> Action {
    let mut failures = context
        .failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let count = failures.entry(namespace.name_any()).or_insert(0);
    *count = count.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*count - 1).min(9)).min(MAX_BACKOFF);
    Action::requeue(delay)
}

/// The desired state of one namespace (nothing while it terminates). Reads the other
/// namespaces only when this one holds an image puller's binding.
fn plan_one(
    context: &Context,
    namespace: &Namespace,
    config: &Arc<Config>,
    snapshot: &Snapshot,
) -> ProjectPlan {
    let Some(info) = namespace_info(namespace) else {
        return ProjectPlan::default();
    };
    let rendered = context.rendered(config, snapshot);
    let all = if plan::needs_all_namespaces(config, &info.name) {
        context.caches.namespace_infos()
    } else {
        Vec::new()
    };
    plan::plan_namespace(
        PlanInputs {
            config,
            credentials: &snapshot.credentials,
            namespaces: &all,
            openshift: context.openshift,
        },
        &rendered,
        &info,
    )
}

/// The whole desired state for the namespaces in the cache.
fn plan_all(
    caches: &Caches,
    config: &Config,
    snapshot: &Snapshot,
    openshift: Option<bool>,
) -> DesiredState {
    let namespaces = caches.namespace_infos();
    plan::plan(PlanInputs {
        config,
        credentials: &snapshot.credentials,
        namespaces: &namespaces,
        openshift,
    })
}

/// Secret writes whose content replaces an older version of the same pull secret.
fn count_rotations(actions: &[DiffAction], observed: &ObservedProject) -> u64 {
    let previous: BTreeMap<&str, &str> = observed
        .secrets
        .iter()
        .filter_map(|s| {
            let annotations = s.metadata.annotations.as_ref()?;
            Some((
                annotations.get(PULL_SECRET_ANNOTATION)?.as_str(),
                annotations.get(CONTENT_HASH_ANNOTATION)?.as_str(),
            ))
        })
        .collect();
    let rotated = actions.iter().filter(|action| {
        let secret = match action {
            DiffAction::CreateSecret(s) => s,
            DiffAction::RecreateSecret(recreate) => &recreate.secret,
            DiffAction::UpdateSecret { secret, .. } => secret,
            _ => return false,
        };
        previous
            .get(secret.pull_secret.as_str())
            .is_some_and(|hash| *hash != secret.content_hash)
    });
    rotated.count() as u64
}

fn record_writes(metrics: &Metrics, outcome: &ProjectOutcome) {
    for change in &outcome.changes {
        metrics
            .api_writes
            .get_or_create(&WriteLabels {
                verb: change.verb().as_str(),
                result: "ok",
            })
            .inc();
    }
    for failure in &outcome.failures {
        metrics
            .api_writes
            .get_or_create(&WriteLabels {
                verb: failure.verb,
                result: "error",
            })
            .inc();
    }
}

/// Gauges computed from time and the config, just before a scrape: each registry's credential
/// age, its refresh interval and its expiry (+Inf: none known).
fn record_ages(metrics: &Metrics, snapshot: &Snapshot, config: &Config) {
    for (registry, read_at) in &snapshot.read_at {
        metrics
            .credential_age
            .get_or_create(&RegistryLabel {
                registry: registry.clone(),
            })
            .set(read_at.elapsed().as_secs_f64());
    }
    for registry in config.registries.keys() {
        let label = RegistryLabel {
            registry: registry.clone(),
        };
        metrics
            .credential_refresh
            .get_or_create(&label)
            .set(refresh_interval(config, registry).as_secs_f64());
        metrics
            .credential_expiry
            .get_or_create(&label)
            .set(f64::INFINITY);
    }
}

/// What the last reconcile of each namespace reported, so the problem and held gauges are the
/// current totals over every namespace (kept incrementally: a reconcile costs its namespace).
#[derive(Default)]
struct Reported {
    by_namespace: HashMap<String, NamespaceReport>,
}

#[derive(Default, PartialEq, Eq)]
struct NamespaceReport {
    problems: BTreeMap<&'static str, i64>,
    held: i64,
}

impl Reported {
    /// Replaces `namespace`'s report and moves the gauges by the difference.
    fn update(&mut self, metrics: &Metrics, namespace: &str, report: NamespaceReport) {
        let old = self.by_namespace.remove(namespace).unwrap_or_default();
        for (reason, count) in &old.problems {
            metrics
                .problems
                .get_or_create(&crate::telemetry::ReasonLabel { reason })
                .dec_by(*count);
        }
        for (reason, count) in &report.problems {
            metrics
                .problems
                .get_or_create(&crate::telemetry::ReasonLabel { reason })
                .inc_by(*count);
        }
        metrics.held_secrets.inc_by(report.held - old.held);
        if report != NamespaceReport::default() {
            self.by_namespace.insert(namespace.to_string(), report);
        }
    }
}

fn namespace_report(diff: &crate::diff::ProjectDiff) -> NamespaceReport {
    let mut problems = BTreeMap::new();
    for problem in &diff.problems {
        *problems.entry(problem.reason).or_insert(0) += 1;
    }
    let held = diff.held.iter().map(|h| h.kept.len().max(1)).sum::<usize>();
    NamespaceReport {
        problems,
        held: i64::try_from(held).unwrap_or(i64::MAX),
    }
}

/// Service accounts the config links.
fn account_names(config: &Config) -> BTreeSet<String> {
    config
        .pull_secrets
        .iter()
        .flat_map(|p| p.links.keys().cloned())
        .collect()
}

/// Service accounts this instance's Secrets say they are linked from.
fn recorded_accounts(caches: &Caches, instance: &str) -> BTreeSet<String> {
    caches
        .secrets
        .state()
        .iter()
        .filter(|secret| managed::secret_ownership(secret, instance).is_ours())
        .flat_map(|secret| recorded_service_accounts(secret).collect::<Vec<_>>())
        .collect()
}

/// Turns new snapshots, config reloads and leadership gains into namespace requests.
async fn dispatch(context: Arc<Context>, touched: mpsc::UnboundedSender<String>) {
    let mut snapshot = context.snapshot.clone();
    let mut config = context.config.clone();
    let mut leading = context.leadership.changes();
    let mut stopping = context.stopping.clone();
    let mut elected = true;
    // Snapshots also change when only read times moved (every refresh): act on new
    // generations only, or an idle daemon re-reconciles every namespace at every refresh.
    let mut seen_generation = 0u64;
    // Whatever arrived before the caches synced counts as new now.
    snapshot.mark_changed();
    context
        .metrics
        .leader
        .set(i64::from(context.leadership.is_leading()));
    let send_all = |caches: &Caches| {
        for ns in caches.namespace_infos() {
            let _ = touched.send(ns.name);
        }
    };
    loop {
        tokio::select! {
            changed = snapshot.changed() => {
                if changed.is_err() { return; }
                let current = Arc::clone(&snapshot.borrow_and_update());
                if current.generation == seen_generation {
                    continue;
                }
                seen_generation = current.generation;
                if current.generation == 1 {
                    send_all(&context.caches);
                    continue;
                }
                let config = Arc::clone(&context.config.borrow());
                for namespace in namespaces_using(&context.caches, &config, &current) {
                    let _ = touched.send(namespace);
                }
            }
            changed = config.changed() => {
                if changed.is_err() { return; }
                let current = Arc::clone(&config.borrow_and_update());
                context
                    .metrics
                    .zero_series(current.registries.keys().map(String::as_str));
                for store in context.caches.watch_accounts(&account_names(&current)) {
                    let _ = store.wait_until_ready().await;
                }
                send_all(&context.caches);
            }
            changed = leading.changed(), if elected => {
                if changed.is_err() {
                    // No election (or it ended): leadership no longer changes.
                    elected = false;
                    continue;
                }
                let now_leading = *leading.borrow_and_update();
                context.metrics.leader.set(i64::from(now_leading));
                if now_leading {
                    send_all(&context.caches);
                }
            }
            () = stopped(&mut stopping) => return,
        }
    }
}

/// Namespaces planned to hold a Secret of a pull secret using a registry in
/// `snapshot.changed` (rendered, or held because that registry has no credential now).
fn namespaces_using(caches: &Caches, config: &Config, snapshot: &Snapshot) -> BTreeSet<String> {
    if snapshot.changed.is_empty() {
        return BTreeSet::new();
    }
    let uses_changed = |pull_secret: &str| {
        config
            .pull_secrets
            .iter()
            .find(|p| p.name == pull_secret)
            .is_some_and(|p| p.registries.iter().any(|r| snapshot.changed.contains(r)))
    };
    // Which namespaces hold a registry's Secrets does not depend on image pullers.
    let desired = plan_all(caches, config, snapshot, None);
    desired
        .projects
        .iter()
        .filter(|(_, project)| {
            project.secrets.iter().any(|s| uses_changed(&s.pull_secret))
                || project.held.iter().any(|h| uses_changed(&h.pull_secret))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// How often each registry is read: the shortest `refresh` of the pull secrets using it.
fn refresh_interval(config: &Config, registry: &str) -> Duration {
    config
        .pull_secrets
        .iter()
        .filter(|p| p.registries.iter().any(|r| r == registry))
        .map(|p| p.rotation.refresh)
        .min()
        .unwrap_or(Duration::from_secs(300))
}

/// When each registry is read next: every `refresh` after a good read; after a failed one,
/// with jittered exponential backoff from one second, growing to the refresh interval — a
/// failed source is retried long before its next refresh is due.
#[derive(Default)]
struct SourceSchedule {
    next_due: BTreeMap<String, tokio::time::Instant>,
    /// Registries whose last read failed, with their backoff.
    failing: BTreeMap<String, backon::ExponentialBackoff>,
}

/// The first retry of a failed source.
const FIRST_RETRY: Duration = Duration::from_secs(1);

impl SourceSchedule {
    /// Follows `config`: registries it no longer names are dropped, new ones and `reread`
    /// (their source config changed) are due at once.
    fn follow(&mut self, config: &Config, reread: &[String], now: tokio::time::Instant) {
        self.next_due
            .retain(|name, _| config.registries.contains_key(name));
        self.failing
            .retain(|name, _| config.registries.contains_key(name));
        for name in config.registries.keys() {
            self.next_due.entry(name.clone()).or_insert(now);
        }
        for name in reread {
            if config.registries.contains_key(name) {
                self.next_due.insert(name.clone(), now);
                self.failing.remove(name);
            }
        }
    }

    fn due(&self, now: tokio::time::Instant) -> BTreeSet<String> {
        self.next_due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Schedules the registries just read: good ones at their refresh, failed ones at their
    /// next backoff step (never later than the refresh).
    fn after_read(
        &mut self,
        config: &Config,
        read: &BTreeSet<String>,
        failed: &BTreeSet<String>,
        now: tokio::time::Instant,
    ) {
        use backon::BackoffBuilder as _;
        for name in read {
            let refresh = refresh_interval(config, name);
            let wait = if failed.contains(name) {
                let backoff = self.failing.entry(name.clone()).or_insert_with(|| {
                    backon::ExponentialBuilder::default()
                        .with_jitter()
                        .with_min_delay(FIRST_RETRY)
                        .with_max_delay(refresh)
                        .without_max_times()
                        .build()
                });
                backoff.next().unwrap_or(refresh).min(refresh)
            } else {
                self.failing.remove(name);
                refresh
            };
            self.next_due.insert(name.clone(), now + wait);
        }
    }

    fn next_wake(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        self.next_due
            .values()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(300))
    }
}

/// Reads each registry when it is due and publishes a snapshot after every read that changed
/// something (and after the first). A registry whose source config changed on reload is
/// forgotten at once (its old credential is never served under the new config) and read again.
async fn run_sources(
    mut config: watch::Receiver<Arc<Config>>,
    context: SourceContext,
    publish: watch::Sender<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut inventory = Inventory::new();
    let mut schedule = SourceSchedule::default();
    let mut generation = 0u64;
    loop {
        let current = Arc::clone(&config.borrow_and_update());
        let forgotten = inventory.forget_stale(&current);
        let now = tokio::time::Instant::now();
        schedule.follow(&current, &forgotten, now);
        let due = schedule.due(now);
        let mut changed: BTreeSet<String> = forgotten.iter().cloned().collect();
        let mut read_any = false;
        if !due.is_empty() {
            read_any = true;
            let report = inventory.refresh_only(&current, &context, &due).await;
            let failed: BTreeSet<String> =
                report.failures.iter().map(|f| f.registry.clone()).collect();
            schedule.after_read(&current, &due, &failed, tokio::time::Instant::now());
            count_reads(&metrics, &report);
            changed.extend(report.changed.iter().cloned());
        }
        if (read_any && generation == 0) || !changed.is_empty() {
            generation += 1;
            publish.send_replace(Arc::new(snapshot_of(
                &inventory, &current, changed, generation,
            )));
        } else if read_any {
            // Ages still move on: keep read times current for the metric.
            publish.send_modify(|snapshot| {
                let mut updated =
                    snapshot_of(&inventory, &current, BTreeSet::new(), snapshot.generation);
                updated.credentials = snapshot.credentials.clone();
                *snapshot = Arc::new(updated);
            });
        }
        let wake = schedule.next_wake(now);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            changed = config.changed() => if changed.is_err() { return },
            () = stopped(&mut stop) => return,
        }
    }
}

fn count_reads(metrics: &Metrics, report: &crate::source::RefreshReport) {
    for (names, result) in [
        (&report.changed, "changed"),
        (&report.unchanged, "unchanged"),
    ] {
        for registry in names {
            metrics
                .source_reads
                .get_or_create(&ReadLabels {
                    registry: registry.clone(),
                    result,
                })
                .inc();
        }
    }
    for failure in &report.failures {
        let registry = failure.registry.clone();
        metrics
            .source_reads
            .get_or_create(&ReadLabels {
                registry: registry.clone(),
                result: "error",
            })
            .inc();
        metrics
            .source_errors
            .get_or_create(&RegistryLabel { registry })
            .inc();
    }
}

/// The snapshot of what `inventory` holds for `config`.
fn snapshot_of(
    inventory: &Inventory,
    config: &Config,
    changed: BTreeSet<String>,
    generation: u64,
) -> Snapshot {
    let credentials = inventory.credentials();
    let complete = config
        .registries
        .keys()
        .all(|r| credentials.contains_key(r));
    let read_at = config
        .registries
        .keys()
        .filter_map(|r| Some((r.clone(), inventory.get(r)?.read_at)))
        .collect();
    Snapshot {
        credentials,
        read_at,
        changed,
        complete,
        generation,
    }
}

/// Watches the config file's directory (a ConfigMap mount swaps a symlink) and publishes each
/// valid new config; an invalid one is logged once (until the file changes again) and the
/// running config kept. Only writes, creations, renames and removals count: reading a file
/// (the daemon's own reads, a log reader) is not a change. A burst is debounced, but never
/// delays the reload past [`crate::workstation::MAX_DELAY`].
fn watch_config_file(
    path: &Path,
    debounce: Duration,
    publish: watch::Sender<Arc<Config>>,
) -> Result<notify::RecommendedWatcher, DaemonError> {
    use notify::Watcher as _;
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| is_change(&event.kind)) {
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| DaemonError::WatchConfig {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|source| DaemonError::WatchConfig {
            path: path.to_path_buf(),
            source,
        })?;
    let path = path.to_path_buf();
    tokio::spawn(async move {
        // What the file held when it was last looked at: an unchanged file is not reloaded
        // (and a rejected one not reported) again.
        let mut last_seen = content_digest(&path);
        while rx.recv().await.is_some() {
            if !crate::workstation::settle(&mut rx, debounce, crate::workstation::MAX_DELAY).await {
                return;
            }
            let digest = content_digest(&path);
            if digest == last_seen {
                continue;
            }
            last_seen = digest;
            match Config::load(&path) {
                Ok(config) if *publish.borrow().as_ref() == config => {}
                Ok(config) => {
                    tracing::info!(path = %path.display(), "Config reloaded.");
                    publish.send_replace(Arc::new(config));
                }
                Err(error) => {
                    tracing::error!(%error, "New config rejected; keeping the running one.");
                }
            }
        }
    });
    Ok(watcher)
}

/// Whether a file-system event can change a file's content (not a read or an open).
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// SHA-256 of the file's content (`None` when it cannot be read).
fn content_digest(path: &Path) -> Option<[u8; 32]> {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).ok()?;
    Some(sha2::Sha256::digest(&bytes).into())
}

/// Resolves once the stop signal is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Ends a helper task with the task that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_refresh(refresh: Duration) -> Config {
        let yaml = [
            "registries:",
            "  reg: { server: quay.io, from: { helper: x } }",
            "pullSecrets:",
            "  - name: reg-pull",
            "    registries: [reg]",
            "    projects: { names: [a] }",
            &format!("    rotation: {{ refresh: {}s }}", refresh.as_secs()),
        ]
        .join("\n");
        Config::from_yaml(&yaml, Path::new("/config.yaml")).expect("valid config")
    }

    #[test]
    fn a_failed_source_is_retried_with_growing_backoff_capped_at_its_refresh() {
        let config = config_with_refresh(Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        let mut schedule = SourceSchedule::default();
        schedule.follow(&config, &[], start);
        let reg = BTreeSet::from(["reg".to_string()]);
        assert_eq!(schedule.due(start), reg, "new registries are read at once");

        let mut waits = Vec::new();
        let mut now = start;
        for _ in 0..12 {
            schedule.after_read(&config, &reg, &reg, now);
            let next = schedule.next_due["reg"];
            waits.push(next - now);
            now = next;
        }
        // 1 s first (with jitter up to twice that), doubling, never past the refresh interval.
        assert!(
            waits[0] >= FIRST_RETRY && waits[0] <= 2 * FIRST_RETRY,
            "{waits:?}"
        );
        assert!(waits[3] >= Duration::from_secs(8), "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(60)),
            "{waits:?}"
        );
        assert_eq!(waits[11], Duration::from_secs(60), "{waits:?}");

        // A good read resets it: the next read is one refresh away, and a later failure starts
        // over at about a second.
        schedule.after_read(&config, &reg, &BTreeSet::new(), now);
        assert_eq!(schedule.next_due["reg"] - now, Duration::from_secs(60));
        schedule.after_read(&config, &reg, &reg, now);
        assert!(schedule.next_due["reg"] - now <= 2 * FIRST_RETRY);
    }

    #[test]
    fn a_registry_whose_source_changed_is_read_again_at_once() {
        let config = config_with_refresh(Duration::from_secs(3600));
        let start = tokio::time::Instant::now();
        let mut schedule = SourceSchedule::default();
        schedule.follow(&config, &[], start);
        let reg = BTreeSet::from(["reg".to_string()]);
        schedule.after_read(&config, &reg, &BTreeSet::new(), start);
        let later = start + Duration::from_secs(5);
        assert!(schedule.due(later).is_empty(), "next read in an hour");
        schedule.follow(&config, &["reg".to_string()], later);
        assert_eq!(schedule.due(later), reg);
    }
}

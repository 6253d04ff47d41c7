//! The daemon's controller (orchestration): one namespace per reconcile, through
//! [`crate::reconcile::namespace`] on the watch caches and the latest credential snapshot, and
//! (as leader) [`crate::reconcile::apply_writes`]. Records what each reconcile found and did
//! as metrics: writes, rotations, current problems and held Secrets.
//!
//! Healing (docs/healing.md) runs beside the work queue, not in a reconcile: it waits for a
//! pending-pod list shared with the other namespaces that heal about then
//! (`cluster/pod_lists.rs`), and a reconcile waiting there would hold one of the queue's
//! `concurrency` slots while other namespaces' writes wait for it. A look it must make again
//! comes back through the queue as a change of the namespace.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use super::ReconcileError;
use super::writers::{self, Repair, WriterFlaps};
use crate::cluster::ClusterView as _;
use crate::cluster::apply::CONTROLLER_NAME;
use crate::cluster::cache::Caches;
use crate::cluster::lease::Leadership;
use crate::cluster::pod_lists::PendingPods;
use crate::cluster::pods::HealBudget;
use crate::cluster::view;
use crate::cluster::{ApplyOptions, ProjectOutcome, Throttle};
use crate::config::Config;
use crate::diff::{DiffPolicy, ProjectDiff, until};
use crate::model::heal::HealTarget;
use crate::plan::{self, PreparedSecrets, VersionKey};
use crate::reconcile::{self, Inputs};
use crate::source::service::Snapshot;
use crate::telemetry::{ActionLabel, Metrics, ReasonLabel, ResultLabel, WriteLabels};

/// Longest wait before a failed namespace is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How soon a namespace whose replaced Secret pods still name is looked at again (no pod watch
/// tells when they are gone).
const IN_USE_RECHECK: Duration = Duration::from_secs(15);

/// How soon, and how many times, pods still being created (or restarts the rate limit put off)
/// are looked at again after a link.
const HEAL_RECHECK: Duration = Duration::from_secs(3);
const HEAL_RECHECKS: u32 = 10;

/// The channels a controller follows.
pub struct Channels {
    pub config: watch::Receiver<Arc<Config>>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub stopping: watch::Receiver<bool>,
    /// The work queue's changes: a namespace sent here is reconciled again.
    pub touched: mpsc::UnboundedSender<String>,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    throttle: Throttle,
    /// One Event recorder for the process: a recurring Event becomes a series, not a new Event.
    recorder: Option<Recorder>,
    pub caches: Caches,
    pub config: watch::Receiver<Arc<Config>>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub leadership: Leadership,
    pub metrics: Arc<Metrics>,
    pub stopping: watch::Receiver<bool>,
    /// The work queue's changes, for a heal that must look again.
    touched: mpsc::UnboundedSender<String>,
    /// Consecutive failures per namespace, for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The Secrets of the latest config and snapshot, prepared once for every reconcile.
    prepared: Mutex<Option<Prepared>>,
    /// Problems and held Secrets per namespace, behind the gauges.
    reported: Mutex<Reported>,
    /// The key of this process's versioned Secret names, drawn once at start.
    version_key: VersionKey,
    /// The rate limit of healing's pod restarts, for the whole process.
    heal_budget: Arc<HealBudget>,
    /// Healing's pending-pod lists: shared across the cluster unless in namespaced mode.
    pending_pods: Arc<PendingPods>,
    /// Heal targets to look at again per namespace, with the looks left.
    heal_rechecks: Mutex<HashMap<String, HealRecheck>>,
    /// Links this process added and its repairs, per ServiceAccount (other writers).
    flaps: Mutex<WriterFlaps>,
    /// The field managers named in `pullsecretd_write_conflicts_total` so far.
    manager_labels: Mutex<HashSet<String>>,
}

/// Heal targets (each with the Secret just linked or written) to look at again, and how many
/// more looks they get.
struct HealRecheck {
    targets: Vec<(HealTarget, String)>,
    looks_left: u32,
}

/// Secrets prepared from one config and one snapshot generation.
struct Prepared {
    config: Arc<Config>,
    generation: u64,
    secrets: Arc<PreparedSecrets>,
}

impl Context {
    pub fn new(
        client: Client,
        throttle: Throttle,
        events: bool,
        caches: Caches,
        channels: Channels,
        leadership: Leadership,
        metrics: Arc<Metrics>,
    ) -> Self {
        let instance = channels.config.borrow().instance_name().to_string();
        let pending_pods = Arc::new(if caches.is_namespaced() {
            PendingPods::per_namespace()
        } else {
            PendingPods::cluster_wide()
        });
        let recorder = events.then(|| {
            Recorder::new(
                client.clone(),
                Reporter {
                    controller: CONTROLLER_NAME.into(),
                    instance: Some(instance),
                },
            )
        });
        Self {
            client,
            throttle,
            recorder,
            caches,
            config: channels.config,
            snapshot: channels.snapshot,
            leadership,
            metrics,
            stopping: channels.stopping,
            touched: channels.touched,
            failures: Mutex::default(),
            prepared: Mutex::default(),
            reported: Mutex::default(),
            version_key: reconcile::fresh_version_key(),
            heal_budget: Arc::default(),
            pending_pods,
            heal_rechecks: Mutex::default(),
            flaps: Mutex::default(),
            manager_labels: Mutex::default(),
        }
    }

    /// Drops what this replica reported about `namespace` (it no longer writes it).
    fn forget(&self, namespace: &str) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        if reported.by_namespace.contains_key(namespace) {
            reported.update(&self.metrics, namespace, NamespaceReport::default());
        }
    }

    /// Takes `namespace`'s pending heal recheck, if it has one.
    fn take_heal_recheck(&self, namespace: &str) -> Option<HealRecheck> {
        self.heal_rechecks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(namespace)
    }

    /// Remembers `targets` for another look, unless `looks_left` is spent.
    fn keep_heal_recheck(
        &self,
        namespace: &str,
        targets: Vec<(HealTarget, String)>,
        looks_left: u32,
    ) {
        if targets.is_empty() || looks_left == 0 {
            return;
        }
        self.heal_rechecks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                namespace.to_string(),
                HealRecheck {
                    targets,
                    looks_left,
                },
            );
    }

    /// The apply options of this process: its recorder (or none with `--no-events`) and its
    /// restart budget.
    fn apply_options(&self, config: &Config) -> ApplyOptions {
        ApplyOptions {
            events: self.recorder.is_some(),
            recorder: self.recorder.clone(),
            heal_budget: Arc::clone(&self.heal_budget),
            pending_pods: Arc::clone(&self.pending_pods),
            write_log: Some(self.caches.write_log()),
            ..ApplyOptions::for_instance(config.instance_name())
        }
    }

    /// The prepared Secrets for `config` and `snapshot`, preparing them on first use.
    pub(super) fn prepared(
        &self,
        config: &Arc<Config>,
        snapshot: &Snapshot,
    ) -> Arc<PreparedSecrets> {
        let mut cache = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cache.as_ref()
            && Arc::ptr_eq(&cached.config, config)
            && cached.generation == snapshot.generation
        {
            return Arc::clone(&cached.secrets);
        }
        let secrets = Arc::new(plan::prepare_secrets(
            config,
            &snapshot.credentials,
            &self.version_key,
        ));
        *cache = Some(Prepared {
            config: Arc::clone(config),
            generation: snapshot.generation,
            secrets: Arc::clone(&secrets),
        });
        secrets
    }
}

/// When a namespace is looked at again without a change: `None` when only a change brings it
/// back.
pub type Revisit = Option<Duration>;

/// One namespace: plan from the caches and the latest snapshot, diff, and (as leader) apply.
/// A namespace the cache no longer holds (it was deleted) is forgotten instead.
pub async fn reconcile(name: String, context: Arc<Context>) -> Result<Revisit, ReconcileError> {
    let span = tracing::info_span!("reconcile", namespace = %name);
    async move {
        if !context.caches.namespaces.contains(&name) {
            context.forget(&name);
            context
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
            return Ok(None);
        }
        if *context.stopping.borrow() || !context.leadership.owns(&name) {
            // Another replica (or none, for now) answers for it: its gauges are not ours.
            context.forget(&name);
            return Ok(None);
        }
        let snapshot = Arc::clone(&context.snapshot.borrow());
        if snapshot.generation == 0 {
            // Nothing read yet: the first snapshot reconciles every namespace.
            return Ok(None);
        }
        let started = Instant::now();
        let config = Arc::clone(&context.config.borrow());
        let prepared = context.prepared(&config, &snapshot);
        let now = Timestamp::now();
        let policy = DiffPolicy::full(config.instance_name());
        let inputs = Inputs {
            config: &config,
            credentials: &snapshot.credentials,
            prepared: &prepared,
            policy: &policy,
            now: Some(now),
        };
        let mut work = reconcile::namespace(&context.caches, inputs, &name);
        work.diff
            .problems
            .extend(rejection_problems(&snapshot, &work.registries));
        work.diff
            .problems
            .extend(expiry_problems(&snapshot, &work.registries));
        context
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(&context.metrics, &name, namespace_report(&work.diff));
        let gated = context
            .flaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .gate(&name, &mut work.diff.steps, Instant::now());
        let revisit = work
            .diff
            .revisit_at
            .map(|at| until(now, at) + Duration::from_secs(1));
        let revisit = earliest(revisit, gated.wait);
        for problem in &work.diff.problems {
            tracing::warn!(reason = problem.reason, "{}", problem.message);
        }
        let reported_problems = work.diff.problems.len();
        let options = context.apply_options(&config);
        let recheck = context.take_heal_recheck(&name);
        if !needs_apply(&work.diff) {
            tracing::debug!("Namespace already up to date.");
            if let Some(recheck) = recheck {
                let looks_left = recheck.looks_left.saturating_sub(1);
                spawn_heal(&context, &name, recheck.targets, options, looks_left);
            }
            return Ok(finish(&context, &name, started, revisit));
        }
        if !context.leadership.owns(&name) || *context.stopping.borrow() {
            return Ok(None);
        }
        for repair in &gated.repairs {
            report_repair(&context, repair).await;
        }
        let looks_left = match recheck {
            Some(recheck) => {
                work.heal_again = recheck.targets;
                recheck.looks_left.saturating_sub(1)
            }
            None => HEAL_RECHECKS,
        };
        let (outcome, heals) =
            reconcile::apply_writes(&context.client, &context.throttle, &options, &name, work)
                .await;
        let revisit = earliest(
            revisit,
            (!outcome.kept_in_use.is_empty()).then_some(IN_USE_RECHECK),
        );
        context.metrics.rotations.inc_by(outcome.rotations);
        record_writes(&context.metrics, &outcome);
        // Applying can find more (a create meeting someone else's Secret): report those too.
        for problem in outcome.problems.iter().skip(reported_problems) {
            tracing::warn!(reason = problem.reason, "{}", problem.message);
        }
        context
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(&context.metrics, &name, outcome_report(&outcome));
        if !heals.is_empty() {
            spawn_heal(&context, &name, heals, options, looks_left);
        }
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

/// Reports a repeated repair: names the other writer from the account's `managedFields` (a
/// GET: the caches drop them), counts it, logs it, and puts a Warning Event on the account.
async fn report_repair(context: &Context, repair: &Repair) {
    let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(context.client.clone(), &repair.namespace);
    let account = context
        .throttle
        .call(|| api.get(&repair.account))
        .await
        .ok();
    let manager = account
        .as_ref()
        .and_then(|account| writers::other_manager(account, CONTROLLER_NAME));
    let label = writers::manager_label(
        manager.as_deref(),
        &mut context
            .manager_labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    context
        .metrics
        .write_conflicts
        .get_or_create(&crate::telemetry::ManagerLabel { manager: label })
        .inc();
    let links: Vec<String> = repair
        .links
        .iter()
        .map(|(kind, secret)| format!("{secret} ({})", kind.field()))
        .collect();
    let writer = manager.map_or_else(
        || "a writer that left no field manager".to_string(),
        |m| format!("field manager {m:?}"),
    );
    let note = format!(
        "service account {}: the link to {} was removed again ({} repairs in {}), last written \
         by {writer}; re-adding it, and waiting at least {} before the next repair. Tell that \
         writer to leave imagePullSecrets/secrets to pullsecretd (README: Other writers)",
        repair.account,
        links.join(", "),
        repair.count,
        humantime::format_duration(writers::WINDOW),
        humantime::format_duration(repair.next_gap),
    );
    tracing::warn!(
        account = %repair.account,
        repairs = repair.count,
        "{note}"
    );
    let Some(recorder) = &context.recorder else {
        return;
    };
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ServiceAccount".into()),
        name: Some(repair.account.clone()),
        namespace: Some(repair.namespace.clone()),
        uid: account.and_then(|a| a.metadata.uid),
        ..Default::default()
    };
    crate::cluster::events::publish_event(
        recorder,
        kube::runtime::events::EventType::Warning,
        "WriteConflict",
        &note,
        &reference,
    )
    .await;
}

/// A `CredentialExpired` problem (a Warning Event on the namespace) for each registry of this
/// namespace's Secrets whose credential expired (its lease could not be renewed, or its source
/// read again): the `Held` Event says only that the source failed; this one says it expired,
/// and when.
fn expiry_problems(
    snapshot: &Snapshot,
    registries: &BTreeSet<String>,
) -> Vec<crate::plan::Problem> {
    snapshot
        .expired
        .iter()
        .filter(|registry| registries.contains(*registry))
        .map(|registry| {
            let at = snapshot
                .expires_at
                .get(registry)
                .and_then(|at| Timestamp::try_from(*at).ok())
                .map_or_else(String::new, |at| format!(" at {at}"));
            crate::plan::Problem {
                reason: "CredentialExpired",
                message: format!(
                    "the credential of registry {registry} expired{at} and could not be renewed \
                     or read again; it is not served, and its Secrets are held until its source \
                     answers"
                ),
            }
        })
        .collect()
}

/// A `CredentialRejected` problem (a Warning Event on the namespace) for each registry of
/// this namespace's Secrets whose newest credential the registry refused (`verify:`).
fn rejection_problems(
    snapshot: &Snapshot,
    registries: &BTreeSet<String>,
) -> Vec<crate::plan::Problem> {
    snapshot
        .rejected
        .iter()
        .filter(|(registry, _)| registries.contains(*registry))
        .map(|(_, why)| crate::plan::Problem {
            reason: "CredentialRejected",
            message: format!("{why}; its Secrets keep the previous credential"),
        })
        .collect()
}

/// Heals `name`'s pods for `targets` off the work queue (see the module doc): records what was
/// done, reports a problem it met, and when there is more to look at (pods still being
/// created, restarts the rate limit put off) sends the namespace back to the queue after
/// [`HEAL_RECHECK`], `looks_left` more times at most.
fn spawn_heal(
    context: &Arc<Context>,
    name: &str,
    targets: Vec<(HealTarget, String)>,
    options: ApplyOptions,
    looks_left: u32,
) {
    let context = Arc::clone(context);
    let name = name.to_string();
    let span = tracing::info_span!("heal", namespace = %name);
    tokio::spawn(
        async move {
            // Healing writes too (pod deletes, Events): checked as a reconcile checks before it
            // writes. Its round comes within a second, well inside the gap between the renew
            // deadline and the lease duration (docs/sharding.md).
            if *context.stopping.borrow() || !context.leadership.owns(&name) {
                return;
            }
            let mut outcome = ProjectOutcome::default();
            reconcile::heal_namespace(
                &context.client,
                &context.throttle,
                &options,
                &name,
                &targets,
                &mut outcome,
            )
            .await;
            for problem in &outcome.problems {
                tracing::warn!(reason = problem.reason, "{}", problem.message);
            }
            context
                .reported
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add_problems(&context.metrics, &name, &outcome.problems);
            if let Some(after) = after_heal(&context, &name, &outcome, looks_left) {
                tokio::time::sleep(after).await;
                // The queue has stopped when this fails: there is nothing left to look for.
                let _ = context.touched.send(name);
            }
        }
        .instrument(span),
    );
}

/// Records what healing did and keeps what it must look at again; the wait before that look.
fn after_heal(
    context: &Context,
    name: &str,
    outcome: &ProjectOutcome,
    looks_left: u32,
) -> Option<Duration> {
    let heal = &outcome.heal;
    for (action, pods) in [
        ("reported", &heal.reported),
        ("restarted", &heal.restarted),
        ("bare", &heal.bare),
        ("deferred", &heal.deferred),
    ] {
        context
            .metrics
            .stuck_pods
            .get_or_create(&ActionLabel { action })
            .inc_by(pods.len() as u64);
    }
    if heal.recheck.is_empty() || looks_left == 0 {
        return None;
    }
    context.keep_heal_recheck(name, heal.recheck.clone(), looks_left);
    Some(HEAL_RECHECK)
}

fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Something to write, a held Secret to report, or a problem worth an Event. A missing
/// service account alone is not: on plain Kubernetes `builder` is missing everywhere.
fn needs_apply(diff: &ProjectDiff) -> bool {
    !diff.steps.is_empty()
        || !diff.held.is_empty()
        || diff
            .problems
            .iter()
            .any(|p| p.reason != "ServiceAccountMissing")
}

fn finish(context: &Context, name: &str, started: Instant, revisit: Revisit) -> Revisit {
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
    revisit
}

/// Exponential backoff per namespace: 1 s, 2 s, 4 s … up to five minutes.
pub fn error_policy(name: &str, context: &Context) -> Duration {
    let mut failures = context
        .failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let count = failures.entry(name.to_string()).or_insert(0);
    *count = count.saturating_add(1);
    Duration::from_secs(1u64 << (*count - 1).min(9)).min(MAX_BACKOFF)
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

/// What the last reconcile of each namespace reported, so the problem and held gauges are the
/// current totals over every namespace (kept incrementally: a reconcile costs its namespace).
#[derive(Default)]
struct Reported {
    by_namespace: HashMap<String, NamespaceReport>,
}

#[derive(Clone, Default, PartialEq, Eq)]
struct NamespaceReport {
    problems: BTreeMap<&'static str, i64>,
    held: i64,
    /// Replaced Secrets kept because pods name them.
    in_use: i64,
}

impl Reported {
    /// Adds `problems` to `namespace`'s report (healing's, met after the reconcile reported).
    fn add_problems(
        &mut self,
        metrics: &Metrics,
        namespace: &str,
        problems: &[crate::plan::Problem],
    ) {
        if problems.is_empty() {
            return;
        }
        let mut report = self
            .by_namespace
            .get(namespace)
            .cloned()
            .unwrap_or_default();
        for problem in problems {
            *report.problems.entry(problem.reason).or_insert(0) += 1;
        }
        self.update(metrics, namespace, report);
    }

    /// Replaces `namespace`'s report and moves the gauges by the difference.
    fn update(&mut self, metrics: &Metrics, namespace: &str, report: NamespaceReport) {
        let old = self.by_namespace.remove(namespace).unwrap_or_default();
        for (reason, count) in &old.problems {
            metrics
                .problems
                .get_or_create(&ReasonLabel { reason })
                .dec_by(*count);
        }
        for (reason, count) in &report.problems {
            metrics
                .problems
                .get_or_create(&ReasonLabel { reason })
                .inc_by(*count);
        }
        metrics.held_secrets.inc_by(report.held - old.held);
        metrics.versions_in_use.inc_by(report.in_use - old.in_use);
        if report != NamespaceReport::default() {
            self.by_namespace.insert(namespace.to_string(), report);
        }
    }
}

fn namespace_report(diff: &ProjectDiff) -> NamespaceReport {
    report_of(&diff.problems, &diff.held)
}

fn outcome_report(outcome: &ProjectOutcome) -> NamespaceReport {
    NamespaceReport {
        in_use: i64::try_from(outcome.kept_in_use.len()).unwrap_or(i64::MAX),
        ..report_of(&outcome.problems, &outcome.held)
    }
}

fn report_of(found: &[crate::plan::Problem], held: &[crate::diff::Held]) -> NamespaceReport {
    let mut problems = BTreeMap::new();
    for problem in found {
        *problems.entry(problem.reason).or_insert(0) += 1;
    }
    let held = held.iter().map(|h| h.kept.len().max(1)).sum::<usize>();
    NamespaceReport {
        problems,
        held: i64::try_from(held).unwrap_or(i64::MAX),
        in_use: 0,
    }
}

/// The service accounts to watch: the configured ones and, within the budget of recorded
/// names, those this instance's Secrets say they are linked from ([`view::account_names`]).
pub fn recorded_accounts(caches: &Caches, config: &Config) -> BTreeSet<String> {
    let secrets = caches.secrets();
    view::account_names(config, &secrets, &caches.namespaces())
}

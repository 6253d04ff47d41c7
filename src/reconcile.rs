//! Reconcile (orchestration): THE pipeline — plan → diff → apply for one namespace or for a
//! pass over the cluster — that every trigger calls: `once` (a pass, applied), `plan --cluster`
//! (a pass, not applied), `workstation` (a pass in the diff's add-only mode) and the daemon's
//! controller (one namespace at a time, from its watch caches).
//!
//! It reads the cluster only through a [`ClusterView`] and never reads a credential source: it
//! is handed the credentials (and the Secrets prepared from them). It reports what it did as
//! data ([`ProjectOutcome`]): changes, failures, held Secrets, problems and rotations, and it
//! hands apply the service accounts it already read, so a link edit costs no extra GET.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt as _};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::jiff::Timestamp;
use kube::Client;

use crate::cluster::pods::Healer;
use crate::cluster::{self, ApiError, ApplyOptions, Change, ClusterView, ProjectOutcome, Throttle};
use crate::config::{Config, Heal, LinkKind};
use crate::diff::{DiffPolicy, Mode, ObservedProject, ProjectDiff, Step, diff_project_at};
use crate::model::credential::Resolved;
use crate::model::desired::HoldReason;
use crate::model::heal::HealTarget;
use crate::model::managed::{CONTENT_HASH_ANNOTATION, PULL_SECRET_ANNOTATION};
pub use crate::model::outcome::Report;
use crate::plan::{
    self, DesiredState, PlanInputs, PreparedSecrets, Problem, ProjectPlan, VersionKey,
};

/// What one reconcile works from, besides the cluster.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub config: &'a Config,
    /// Each registry's credential; a registry missing here is held.
    pub credentials: &'a BTreeMap<String, Resolved>,
    /// The Secrets prepared from those credentials ([`plan::prepare_secrets`]), once for every
    /// namespace.
    pub prepared: &'a PreparedSecrets,
    pub policy: &'a DiffPolicy,
    /// Decides which replaced versioned Secrets are past their grace (`None`: none is).
    pub now: Option<Timestamp>,
}

/// One namespace's diff, with what apply needs from the read.
#[derive(Debug, Default)]
pub struct NamespaceWork {
    pub diff: ProjectDiff,
    /// The service accounts the diff was made from: a link edit writes against them first.
    pub accounts: Vec<ServiceAccount>,
    /// Secret writes in the diff that replace an older credential of the same pull secret.
    pub rotations: u64,
    /// The planned Secrets whose pull secret heals pods, for after the writes.
    pub heal: Vec<HealTarget>,
    /// Heal targets an earlier pass left to look at again: looked at after the writes too.
    pub heal_again: Vec<(HealTarget, String)>,
    /// The registries the planned Secrets carry, and those a held Secret lacks (whose refused
    /// or expired credentials concern this namespace).
    pub registries: BTreeSet<String>,
}

impl NamespaceWork {
    /// Nothing to write, report or hold.
    pub fn is_idle(&self) -> bool {
        self.diff.steps.is_empty() && self.diff.problems.is_empty() && self.diff.held.is_empty()
    }
}

/// Plans and diffs one namespace against `view`. Reads the other namespaces only when this one
/// holds an image puller's binding. Writes nothing.
pub fn namespace(view: &impl ClusterView, inputs: Inputs<'_>, name: &str) -> NamespaceWork {
    let plan = match view.namespace(name) {
        Some(info) => {
            let all = if plan::needs_all_namespaces(inputs.config, name) {
                view.namespaces()
            } else {
                Vec::new()
            };
            let plan_inputs = PlanInputs {
                config: inputs.config,
                credentials: inputs.credentials,
                namespaces: &all,
                openshift: view.openshift(),
            };
            plan::plan_namespace(plan_inputs, inputs.prepared, &info)
        }
        // Gone or terminating: nothing is wanted there.
        None => ProjectPlan::default(),
    };
    diff_planned(view, inputs, name, plan)
}

/// Diffs a namespace's plan against what `view` holds there.
fn diff_planned(
    view: &impl ClusterView,
    inputs: Inputs<'_>,
    name: &str,
    mut plan: ProjectPlan,
) -> NamespaceWork {
    let observed = view.observed(name);
    let mut diff = diff_project_at(name, &plan, &observed, inputs.policy, inputs.now);
    diff.problems
        .splice(0..0, std::mem::take(&mut plan.problems));
    let rotations = count_rotations(&diff.steps, &observed);
    NamespaceWork {
        diff,
        accounts: observed.service_accounts,
        rotations,
        heal: heal_targets(inputs.config, &plan),
        heal_again: Vec::new(),
        registries: plan
            .secrets
            .iter()
            .flat_map(|secret| secret.registries.iter().cloned())
            .chain(plan.held.iter().flat_map(|held| match &held.reason {
                HoldReason::SourceFailed { registries } => registries.clone(),
                HoldReason::NotRendered { .. } => Vec::new(),
            }))
            .collect(),
    }
}

/// One target per planned Secret whose pull secret does not have `heal: off`.
fn heal_targets(config: &Config, plan: &ProjectPlan) -> Vec<HealTarget> {
    plan.secrets
        .iter()
        .filter_map(|secret| {
            let heal = config
                .pull_secrets
                .iter()
                .find(|p| p.name == secret.pull_secret)?
                .heal;
            let accounts = plan
                .links
                .iter()
                .filter(|l| l.kind == LinkKind::Pull && l.secret == secret.name)
                .map(|l| l.service_account.clone())
                .collect();
            (heal != Heal::Off).then(|| HealTarget {
                pull_secret: secret.pull_secret.clone(),
                heal,
                secret: secret.name.clone(),
                servers: secret.servers.clone(),
                accounts,
            })
        })
        .collect()
}

/// The targets this outcome's changes call for, each with the Secret name newly linked for
/// pull: a first link, or a versioned rotation's new version. Only a pod created before such a
/// link can lack the Secret; a Secret rewritten in place (or recreated under its name) reaches
/// every pod naming it at the kubelet's next attempt, and pods that do not name it were looked
/// at when it was linked.
fn triggered_heals(targets: &[HealTarget], outcome: &ProjectOutcome) -> Vec<(HealTarget, String)> {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for change in &outcome.changes {
        if let Change::Links { added, .. } = change {
            names.extend(
                added
                    .iter()
                    .filter(|(kind, _)| *kind == LinkKind::Pull)
                    .map(|(_, name)| name.as_str()),
            );
        }
    }
    let mut triggered = Vec::new();
    for name in names {
        if let Some(target) = targets.iter().find(|t| t.names(name)) {
            triggered.push((target.clone(), name.to_string()));
        }
    }
    triggered
}

/// Secret writes whose content replaces an older version of the same pull secret.
fn count_rotations(actions: &[Step], observed: &ObservedProject) -> u64 {
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
            Step::CreateSecret(s) => s,
            Step::RecreateSecret(recreate) => &recreate.secret,
            Step::UpdateSecret { secret, .. } => secret,
            _ => return false,
        };
        previous
            .get(secret.pull_secret.as_str())
            .is_some_and(|hash| *hash != secret.content_hash)
    });
    rotated.count() as u64
}

/// The plan and the per-namespace diffs of one pass, before anything is written.
#[derive(Debug)]
pub struct ClusterDiff {
    pub desired: DesiredState,
    /// Namespaces with something to do or report, by name.
    pub namespaces: BTreeMap<String, NamespaceWork>,
}

impl ClusterDiff {
    /// Number of write actions across all namespaces.
    pub fn action_count(&self) -> usize {
        self.namespaces.values().map(|w| w.diff.steps.len()).sum()
    }

    /// Each namespace's diff, by name.
    pub fn diffs(&self) -> BTreeMap<String, &ProjectDiff> {
        self.namespaces
            .iter()
            .map(|(name, work)| (name.clone(), &work.diff))
            .collect()
    }
}

/// Plans every namespace of `view` and diffs each one that is planned for or holds objects
/// with pullsecretd's label. Writes nothing.
pub fn pass(view: &impl ClusterView, inputs: Inputs<'_>) -> ClusterDiff {
    let namespaces = view.namespaces();
    let mut desired = plan::plan(
        PlanInputs {
            config: inputs.config,
            credentials: inputs.credentials,
            namespaces: &namespaces,
            openshift: view.openshift(),
        },
        inputs.prepared,
    );
    let existing: BTreeSet<&str> = namespaces.iter().map(|ns| ns.name.as_str()).collect();
    let names: BTreeSet<String> = desired
        .projects
        .keys()
        .cloned()
        .chain(view.namespaces_with_objects())
        .filter(|name| existing.contains(name.as_str()))
        .collect();
    let mut works = BTreeMap::new();
    for name in names {
        let plan = desired.projects.get(&name).cloned().unwrap_or_default();
        let work = diff_planned(view, inputs, &name, plan);
        if !work.is_idle() {
            works.insert(name, work);
        }
    }
    // The plan table shows each project's plan; its problems are in the diffs now.
    for project in desired.projects.values_mut() {
        project.problems.clear();
    }
    ClusterDiff {
        desired,
        namespaces: works,
    }
}

/// Reads the cluster with a few lists and computes a pass (`mode`: everything, or add-only for
/// workstation passes). Writes nothing.
pub async fn diff_cluster(
    client: &Client,
    throttle: &Throttle,
    config: &Config,
    credentials: &BTreeMap<String, Resolved>,
    mode: Mode,
) -> Result<ClusterDiff, ApiError> {
    let snapshot = cluster::read_snapshot(client, config, throttle).await?;
    // A pass names new versions under a key of its own: what exists is reused by content.
    let prepared = plan::prepare_secrets(config, credentials, &fresh_version_key());
    let policy = DiffPolicy {
        instance: config.instance_name().to_string(),
        mode,
    };
    let inputs = Inputs {
        config,
        credentials,
        prepared: &prepared,
        policy: &policy,
        // Replaced versioned Secrets are judged against the wall clock here, at the I/O edge.
        now: Some(Timestamp::now()),
    };
    Ok(pass(&snapshot, inputs))
}

/// A key for versioned Secret names, drawn from the operating system's random source here, at
/// the I/O edge ([`crate::model::rotation`] says why names are keyed). Should that source fail,
/// the key comes from the standard library's per-process random hasher seed, the time and the
/// pid instead: still unknown outside this process, which is all a name key must be.
pub fn fresh_version_key() -> VersionKey {
    let mut bytes = [0u8; 32];
    if let Err(error) = getrandom::fill(&mut bytes) {
        tracing::warn!(%error, "no OS randomness for versioned names; using a fallback key");
        bytes = fallback_key_bytes();
    }
    VersionKey::from_bytes(bytes)
}

fn fallback_key_bytes() -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    use std::hash::{BuildHasher as _, RandomState};
    let seed = RandomState::new().hash_one(std::process::id());
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(format!("{:?}", std::time::SystemTime::now()));
    hasher.finalize().into()
}

/// Applies one namespace's work: its Secrets, links, deletes and bindings, in the diff's order;
/// then heals the pods the new links may free.
pub async fn apply_namespace(
    client: &Client,
    throttle: &Throttle,
    options: &ApplyOptions,
    name: &str,
    work: NamespaceWork,
) -> ProjectOutcome {
    let (mut outcome, heals) = apply_writes(client, throttle, options, name, work).await;
    if !heals.is_empty() {
        heal_namespace(client, throttle, options, name, &heals, &mut outcome).await;
    }
    outcome
}

/// Applies one namespace's work: its Secrets, links, deletes and bindings, in the diff's order.
/// Returns what was done and the heals it calls for (the pull links it made, and the looks left
/// from before), not yet made: the daemon heals off its work queue.
pub async fn apply_writes(
    client: &Client,
    throttle: &Throttle,
    options: &ApplyOptions,
    name: &str,
    work: NamespaceWork,
) -> (ProjectOutcome, Vec<(HealTarget, String)>) {
    let mut outcome =
        cluster::apply_project_from(client, throttle, options, name, work.diff, work.accounts)
            .await;
    outcome.rotations = work.rotations;
    let mut heals = triggered_heals(&work.heal, &outcome);
    for again in work.heal_again {
        if !heals
            .iter()
            .any(|(t, _)| t.pull_secret == again.0.pull_secret)
        {
            heals.push(again);
        }
    }
    (outcome, heals)
}

/// Heals `name`'s pods for `targets` (triggered by this pass or left to look at again),
/// recording what was done in `outcome`. In add-only mode pods are only reported.
pub async fn heal_namespace(
    client: &Client,
    throttle: &Throttle,
    options: &ApplyOptions,
    name: &str,
    targets: &[(HealTarget, String)],
    outcome: &mut ProjectOutcome,
) {
    let targets: Vec<(HealTarget, String)> = targets
        .iter()
        .cloned()
        .map(|(mut target, secret)| {
            if options.mode == Mode::AddOnly && target.heal == Heal::Restart {
                target.heal = Heal::Report;
            }
            (target, secret)
        })
        .collect();
    let recorder = options.recorder.clone().or_else(|| {
        options
            .events
            .then(|| cluster::apply::recorder(client, &options.instance))
    });
    let healer = Healer {
        client,
        throttle,
        recorder: recorder.as_ref(),
        budget: &options.heal_budget,
        pending: &options.pending_pods,
    };
    match healer.heal(name, &targets).await {
        Ok(healed) => outcome.heal = healed,
        Err(error) if error.status_code() == Some(403) => {
            // Healing is a courtesy: a missing right is a problem to fix, not a failed pass.
            // Looked at again a few times, so a right granted now takes effect.
            let fix = if error.verb == "delete" {
                "add deploy/components/heal-restart (delete on pods), or set heal: report"
            } else {
                "grant list on pods, or set heal: off"
            };
            outcome.problems.push(Problem {
                reason: "HealForbidden",
                message: format!("project {name}: healing stuck pods was refused ({error}); {fix}"),
            });
            outcome.heal.recheck = targets;
        }
        Err(error) => {
            tracing::warn!(namespace = name, %error, "Could not look for stuck pods.");
            outcome.failures.push(error.to_failure());
            outcome.heal.recheck = targets;
        }
    }
}

/// Applies a computed pass, up to `concurrency` namespaces at a time. One namespace's failure
/// never stops the others.
pub async fn apply_diff(
    client: &Client,
    throttle: &Throttle,
    options: &ApplyOptions,
    diff: ClusterDiff,
    concurrency: usize,
) -> Report {
    let mut projects: Vec<ProjectOutcome> =
        stream::iter(diff.namespaces)
            .map(|(name, work)| async move {
                apply_namespace(client, throttle, options, &name, work).await
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    projects.sort_by(|a, b| a.project.cmp(&b.project));
    Report {
        plan_problems: diff.desired.problems,
        projects,
    }
}

/// One full pass: read, plan, diff, write.
pub async fn reconcile_once(
    client: &Client,
    throttle: &Throttle,
    options: &ApplyOptions,
    config: &Config,
    credentials: &BTreeMap<String, Resolved>,
    concurrency: usize,
) -> Result<Report, ApiError> {
    let diff = diff_cluster(client, throttle, config, credentials, options.mode).await?;
    Ok(apply_diff(client, throttle, options, diff, concurrency).await)
}

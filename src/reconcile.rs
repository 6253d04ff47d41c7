//! Reconcile (orchestration): one pass of the pipeline against a cluster.
//!
//! observe → plan → diff per project → apply, with bounded concurrency across projects. Holds
//! no state of its own and never reads a credential source: it is handed the credentials, so
//! the same pass serves `once`, `plan --cluster` (diff only) and, later, the daemon.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt as _};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;

use crate::cluster::{self, ApiError, ApplyOptions, ProjectOutcome, Throttle};
use crate::config::Config;
use crate::diff::{DiffPolicy, Mode, ProjectDiff, diff_project_at};
use crate::plan::{self, DesiredState, PlanInputs, Problem};
use crate::source::Resolved;

/// The plan and the per-project diffs of one pass, before anything is written.
#[derive(Debug)]
pub struct ClusterDiff {
    pub desired: DesiredState,
    /// Projects with something to do or report, by name.
    pub projects: BTreeMap<String, ProjectDiff>,
    /// The service accounts each of those projects was diffed against: a link edit writes
    /// against them first instead of reading them again.
    pub accounts: BTreeMap<String, Vec<ServiceAccount>>,
}

impl ClusterDiff {
    /// Number of write actions across all projects.
    pub fn action_count(&self) -> usize {
        self.projects.values().map(|d| d.actions.len()).sum()
    }
}

/// Reads the cluster and computes what must change (`mode`: everything, or add-only for
/// workstation passes). Writes nothing.
pub async fn diff_cluster(
    client: &Client,
    throttle: &Throttle,
    config: &Config,
    credentials: &BTreeMap<String, Resolved>,
    mode: Mode,
) -> Result<ClusterDiff, ApiError> {
    let state = cluster::observe(client, config, throttle).await?;
    let desired = plan::plan(PlanInputs {
        config,
        credentials,
        namespaces: &state.namespaces,
        openshift: state.openshift,
    });
    // Desired projects, plus those holding managed objects nobody wants any more.
    let existing: BTreeSet<&str> = state.namespaces.iter().map(|ns| ns.name.as_str()).collect();
    let names: BTreeSet<&String> = desired
        .projects
        .keys()
        .chain(state.projects.keys())
        .filter(|name| existing.contains(name.as_str()))
        .collect();
    // Replaced versioned Secrets are judged against the wall clock here, at the I/O edge.
    let now = k8s_openapi::jiff::Timestamp::now();
    let policy = DiffPolicy {
        instance: config.instance_name().to_string(),
        mode,
    };
    let mut projects = BTreeMap::new();
    let mut accounts = BTreeMap::new();
    for name in names {
        let wanted = desired.projects.get(name).cloned().unwrap_or_default();
        let observed = state.project(name);
        let diff = diff_project_at(name, &wanted, &observed, &policy, Some(now));
        if !diff.actions.is_empty() || !diff.problems.is_empty() || !diff.held.is_empty() {
            projects.insert(name.clone(), diff);
            accounts.insert(name.clone(), observed.service_accounts);
        }
    }
    Ok(ClusterDiff {
        desired,
        projects,
        accounts,
    })
}

/// The result of one `once` pass.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems found while planning (a failed source, a missing project).
    pub plan_problems: Vec<Problem>,
    /// One outcome per project that had something to do or report.
    pub projects: Vec<ProjectOutcome>,
}

impl Report {
    /// True when every project converged.
    pub fn converged(&self) -> bool {
        self.projects.iter().all(ProjectOutcome::converged)
    }

    pub fn change_count(&self) -> usize {
        self.projects.iter().map(|p| p.changes.len()).sum()
    }
}

/// Applies a computed diff, up to `concurrency` projects at a time. One project's failure
/// never stops the others.
pub async fn apply_diff(
    client: &Client,
    throttle: &Throttle,
    options: &ApplyOptions,
    diff: ClusterDiff,
    concurrency: usize,
) -> Report {
    let mut accounts = diff.accounts;
    let work: Vec<(String, ProjectDiff, Vec<ServiceAccount>)> = diff
        .projects
        .into_iter()
        .map(|(name, project_diff)| {
            let observed = accounts.remove(&name).unwrap_or_default();
            (name, project_diff, observed)
        })
        .collect();
    let mut projects: Vec<ProjectOutcome> = stream::iter(work)
        .map(|(name, project_diff, observed)| async move {
            cluster::apply_project_from(client, throttle, options, &name, project_diff, observed)
                .await
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

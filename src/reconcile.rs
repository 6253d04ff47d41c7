//! Reconcile (orchestration): one pass of the pipeline against a cluster.
//!
//! observe → plan → diff per project → apply, with bounded concurrency across projects. Holds
//! no state of its own and never reads a credential source: it is handed the credentials, so
//! the same pass serves `once`, `plan --cluster` (diff only) and, later, the daemon.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt as _};
use kube::Client;

use crate::cluster::{self, ApiError, ApplyOptions, ProjectOutcome, Throttle};
use crate::config::Config;
use crate::diff::{ProjectDiff, diff_project_at};
use crate::plan::{self, DesiredState, PlanInputs, Problem};
use crate::source::Resolved;

/// The plan and the per-project diffs of one pass, before anything is written.
#[derive(Debug)]
pub struct ClusterDiff {
    pub desired: DesiredState,
    /// Projects with something to do or report, by name.
    pub projects: BTreeMap<String, ProjectDiff>,
}

impl ClusterDiff {
    /// Number of write actions across all projects.
    pub fn action_count(&self) -> usize {
        self.projects.values().map(|d| d.actions.len()).sum()
    }
}

/// Reads the cluster and computes what must change. Writes nothing.
pub async fn diff_cluster(
    client: &Client,
    throttle: &Throttle,
    config: &Config,
    credentials: &BTreeMap<String, Resolved>,
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
    let mut projects = BTreeMap::new();
    for name in names {
        let wanted = desired.projects.get(name).cloned().unwrap_or_default();
        let diff = diff_project_at(name, &wanted, &state.project(name), config, Some(now));
        if !diff.actions.is_empty() || !diff.problems.is_empty() {
            projects.insert(name.clone(), diff);
        }
    }
    Ok(ClusterDiff { desired, projects })
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
    let mut projects: Vec<ProjectOutcome> = stream::iter(diff.projects)
        .map(|(name, project_diff)| async move {
            cluster::apply_project(client, throttle, options, &name, project_diff).await
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
    let diff = diff_cluster(client, throttle, config, credentials).await?;
    Ok(apply_diff(client, throttle, options, diff, concurrency).await)
}

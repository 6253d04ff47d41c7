//! Render stage (pure): a [`DesiredState`] as a table for people, as JSON and as files for
//! tools; a cluster diff and a `once` outcome as summaries; a `status` report as a table.
//!
//! The table never shows secret values. The files are Secret and RoleBinding manifests built
//! from the k8s-openapi types, and service-account links as `oc secrets link` commands: those
//! append to a service account's lists and never drop a reference pullsecretd does not own,
//! which a ServiceAccount manifest (or `kubectl patch`, docs/service-accounts.md#list-semantics) would. Writing the files is
//! the caller's job.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::{Config, LinkKind, PullerSubject, SourceConfig};
use crate::diff::ProjectDiff;
use crate::diff::Step;
use crate::model::credential::Resolved;
use crate::model::managed::IMAGE_PULLER_ROLE;
pub use crate::model::manifest::{rbac_subject, role_binding_manifest, secret_manifest};
use crate::model::outcome::Report;
use crate::plan::{DesiredLink, DesiredState, HoldReason};
use crate::status::ProjectStatus;

/// `oc secrets link` commands for one project, one per service account and secret.
pub fn link_commands(namespace: &str, links: &[DesiredLink]) -> String {
    let mut grouped: BTreeMap<(&str, &str), Vec<LinkKind>> = BTreeMap::new();
    for link in links {
        let kinds = grouped
            .entry((&link.service_account, &link.secret))
            .or_default();
        if !kinds.contains(&link.kind) {
            kinds.push(link.kind);
        }
    }
    let mut out = String::new();
    for ((service_account, secret), mut kinds) in grouped {
        kinds.sort();
        let kinds: Vec<&str> = kinds.iter().map(|k| k.for_flag()).collect();
        let _ = writeln!(
            out,
            "oc secrets link {} {} --for={} -n {}",
            shell_quote(service_account),
            shell_quote(secret),
            kinds.join(","),
            shell_quote(namespace)
        );
    }
    out
}

fn shell_quote(word: &str) -> String {
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/=".contains(c));
    if plain && !word.is_empty() {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// One file of `plan --output`.
#[derive(Debug)]
pub struct OutputFile {
    /// Path relative to the output directory.
    pub relative_path: String,
    pub contents: String,
    /// Must be written owner-only (0600): it holds credentials, or it is a script run with
    /// `sh` (`links.sh`) that nobody else may read or change.
    pub owner_only: bool,
}

/// Every file `plan --output DIR` writes: per project, each Secret and RoleBinding as a YAML
/// manifest and the links as `links.sh`.
pub fn output_files(state: &DesiredState) -> Result<Vec<OutputFile>, serde_yaml_ng::Error> {
    let mut files = Vec::new();
    for (project, plan) in &state.projects {
        for secret in &plan.secrets {
            files.push(OutputFile {
                relative_path: format!("{project}/secret-{}.yaml", secret.name),
                contents: serde_yaml_ng::to_string(&secret_manifest(project, secret))?,
                owner_only: true,
            });
        }
        for binding in &plan.role_bindings {
            files.push(OutputFile {
                relative_path: format!("{project}/rolebinding-{}.yaml", binding.name),
                contents: serde_yaml_ng::to_string(&role_binding_manifest(project, binding))?,
                owner_only: false,
            });
        }
        // Held Secrets are not written, so nothing may be linked to them here.
        let links: Vec<DesiredLink> = plan
            .links
            .iter()
            .filter(|link| plan.secrets.iter().any(|s| s.name == link.secret))
            .cloned()
            .collect();
        if !links.is_empty() {
            files.push(OutputFile {
                relative_path: format!("{project}/links.sh"),
                contents: format!(
                    "#!/bin/sh\n# Service-account links for project {project}. `oc secrets link` \
                     only appends: references\n# pullsecretd does not own are kept.\nset -e\n{}",
                    link_commands(project, &links)
                ),
                owner_only: true,
            });
        }
    }
    Ok(files)
}

/// The human-readable plan: sources, then each project's Secrets, links and RoleBindings,
/// then problems. Never contains a secret value.
pub fn plan_table(
    config: &Config,
    credentials: &BTreeMap<String, Resolved>,
    state: &DesiredState,
) -> String {
    let mut out = String::new();
    out.push_str("Sources\n");
    let rows = config
        .registries
        .values()
        .map(|registry| {
            let version = credentials
                .get(&registry.name)
                .map_or_else(|| "FAILED".to_string(), |r| short(&r.version));
            vec![
                registry.name.clone(),
                registry.server.to_string(),
                describe_source(&registry.from),
                version,
            ]
        })
        .collect();
    out.push_str(&table(&["REGISTRY", "SERVER", "SOURCE", "VERSION"], rows));

    for (project, plan) in &state.projects {
        let _ = writeln!(out, "\nProject {project}");
        if !plan.secrets.is_empty() || !plan.held.is_empty() {
            out.push_str("  Secrets\n");
            out.push_str(&indent(&table(
                &["NAME", "TYPE", "REGISTRIES"],
                secret_rows(plan),
            )));
        }
        if !plan.links.is_empty() {
            out.push_str("  Service-account links\n");
            let rows = plan
                .links
                .iter()
                .map(|l| {
                    vec![
                        l.service_account.clone(),
                        l.kind.field().to_string(),
                        l.secret.clone(),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(
                &["SERVICE ACCOUNT", "LIST", "SECRET"],
                rows,
            )));
        }
        if !plan.role_bindings.is_empty() {
            out.push_str("  RoleBindings\n");
            let rows = plan
                .role_bindings
                .iter()
                .map(|b| {
                    let subjects: Vec<String> = b.subjects.iter().map(describe_subject).collect();
                    vec![
                        b.name.clone(),
                        format!("ClusterRole/{IMAGE_PULLER_ROLE}"),
                        subjects.join(", "),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(&["NAME", "ROLE", "SUBJECTS"], rows)));
        }
    }
    if state.projects.is_empty() {
        out.push_str("\nNo project is selected: nothing to write.\n");
    }
    if !state.problems.is_empty() {
        out.push_str("\nProblems\n");
        for problem in &state.problems {
            let _ = writeln!(out, "  {}: {}", problem.reason, problem.message);
        }
    }
    out
}

fn secret_rows(plan: &crate::plan::ProjectPlan) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = plan
        .secrets
        .iter()
        .map(|s| {
            let servers: Vec<String> = s.servers.iter().map(ToString::to_string).collect();
            vec![
                s.name.clone(),
                s.secret_type.type_name().to_string(),
                servers.join(", "),
            ]
        })
        .collect();
    rows.extend(plan.held.iter().map(|h| {
        let label = match &h.reason {
            HoldReason::SourceFailed { .. } => "(held: source failed)",
            HoldReason::NotRendered { .. } => "(held: not rendered)",
        };
        vec![
            h.name.clone(),
            label.to_string(),
            "left as it is".to_string(),
        ]
    }));
    rows
}

fn describe_source(source: &SourceConfig) -> String {
    match source {
        SourceConfig::DockerConfig { path } => format!("dockerConfig {}", path.display()),
        SourceConfig::Dockercfg { path } => format!("dockercfg {}", path.display()),
        SourceConfig::ContainersAuth { path } => format!("containersAuth {}", path.display()),
        SourceConfig::Helper { name } => format!("helper docker-credential-{name}"),
        SourceConfig::Vault(source) => format!("vault {}", source.location),
    }
}

fn describe_subject(subject: &PullerSubject) -> String {
    let s = rbac_subject(subject);
    match s.namespace {
        Some(namespace) => format!("{} {namespace}/{}", s.kind, s.name),
        None => format!("{} {}", s.kind, s.name),
    }
}

fn short(version: &str) -> String {
    version.chars().take(12).collect()
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

/// Left-aligned columns separated by two spaces, each line indented by two.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(ToString::to_string).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    out
}

/// `1 change`, `2 changes`, `0 changes`.
pub fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One action as a line for people, e.g. `link default: +reg-pull (imagePullSecrets)`.
pub fn describe_step(step: &Step) -> String {
    match step {
        Step::CreateSecret(secret) => format!("create secret {}", secret.name),
        Step::UpdateSecret { secret, .. } => format!("update secret {}", secret.name),
        Step::RecreateSecret(recreate) => {
            format!(
                "recreate secret {} (its type or immutable data changes: unlink, delete, \
                 create, relink)",
                recreate.secret.name
            )
        }
        Step::EditServiceAccount(edit) => {
            let added = edit
                .add
                .iter()
                .map(|(kind, secret)| format!("+{secret} ({})", kind.field()));
            let removed = edit
                .remove
                .iter()
                .map(|(kind, secret)| format!("-{secret} ({})", kind.field()));
            let changes: Vec<String> = added.chain(removed).collect();
            format!("link serviceaccount {}: {}", edit.name, changes.join(", "))
        }
        Step::DeleteSecret(delete) => format!("delete secret {}", delete.name),
        Step::CreateRoleBinding(binding) => format!("create rolebinding {}", binding.name),
        Step::UpdateRoleBinding { binding, .. } => {
            format!("update rolebinding {} (subjects)", binding.name)
        }
        Step::DeleteRoleBinding(delete) => format!("delete rolebinding {}", delete.name),
    }
}

/// What `once` would change, per project (`plan --cluster`).
pub fn changes_table(projects: &BTreeMap<String, &ProjectDiff>) -> String {
    let mut out = String::from("\nChanges against the cluster\n");
    if projects.is_empty() {
        out.push_str("  None: the cluster matches the config.\n");
        return out;
    }
    for (project, project_diff) in projects {
        let _ = writeln!(out, "  Project {project}");
        for step in &project_diff.steps {
            let _ = writeln!(out, "    {}", describe_step(step));
        }
        for problem in &project_diff.problems {
            let _ = writeln!(out, "    {}: {}", problem.reason, problem.message);
        }
    }
    let actions: usize = projects.values().map(|d| d.steps.len()).sum();
    let _ = writeln!(
        out,
        "  {} in {}.",
        counted(actions, "change", "changes"),
        counted(projects.len(), "project", "projects")
    );
    out
}

/// What `once` did: per project, changes, failures, skipped actions and problems; then totals.
pub fn once_summary(report: &Report) -> String {
    let mut out = String::new();
    // A held pull secret is said per project (HELD) and in the closing error: not here too.
    let unheld = report
        .plan_problems
        .iter()
        .filter(|p| !matches!(p.reason, "SourceFailed" | "NotRendered"));
    for problem in unheld {
        let _ = writeln!(out, "{}: {}", problem.reason, problem.message);
    }
    for project in &report.projects {
        let _ = writeln!(out, "Project {}", project.project);
        for held in &project.held {
            let kept = if held.kept.is_empty() {
                "nothing exists yet".to_string()
            } else {
                held.kept.join(", ")
            };
            let _ = writeln!(
                out,
                "  HELD secret {} ({}): kept as they are: {kept}",
                held.secret.name, held.secret.reason
            );
        }
        for change in &project.changes {
            let _ = writeln!(out, "  {change}");
        }
        for failure in &project.failures {
            let _ = writeln!(out, "  FAILED {failure}");
        }
        for skipped in &project.skipped {
            let _ = writeln!(out, "  SKIPPED {skipped}");
        }
        for (secret, pods) in &project.kept_in_use {
            let _ = writeln!(
                out,
                "  KEPT secret {secret}: pods still name it ({})",
                pods.join(", ")
            );
        }
        write_heal(&mut out, &project.heal);
        for problem in &project.problems {
            let _ = writeln!(out, "  {}: {}", problem.reason, problem.message);
        }
    }
    let failures: usize = report.projects.iter().map(|p| p.failures.len()).sum();
    let _ = writeln!(
        out,
        "{}, {}, in {}{}.",
        counted(report.change_count(), "change", "changes"),
        counted(failures, "failure", "failures"),
        counted(report.projects.len(), "project", "projects"),
        if report.converged() {
            "; converged"
        } else {
            "; NOT converged"
        }
    );
    out
}

/// What healing did in a project, one line per pod.
fn write_heal(out: &mut String, heal: &crate::model::heal::HealOutcome) {
    let lines = [
        ("restarted stuck pod", &heal.restarted),
        ("stuck pod (reported in an Event)", &heal.reported),
        (
            "stuck pod without a controller (reported, not deleted)",
            &heal.bare,
        ),
        ("stuck pod not restarted yet (rate limit)", &heal.deferred),
    ];
    for (what, pods) in lines {
        for pod in pods {
            let _ = writeln!(out, "  {what} {pod}");
        }
    }
}

/// The plan (and, for `plan --cluster`, the changes) as JSON for scripts and pipelines:
/// sources with their versions, per project the Secrets (names, types, hashes and versions,
/// never data), held Secrets with why, links, image pullers and problems.
pub fn plan_json(
    config: &Config,
    credentials: &BTreeMap<String, Resolved>,
    state: &DesiredState,
    changes: Option<&BTreeMap<String, &ProjectDiff>>,
) -> serde_json::Value {
    use serde_json::json;
    let sources: Vec<serde_json::Value> = config
        .registries
        .values()
        .map(|registry| {
            json!({
                "registry": registry.name,
                "server": registry.server.to_string(),
                "source": describe_source(&registry.from),
                "version": credentials.get(&registry.name).map(|r| short(&r.version)),
            })
        })
        .collect();
    let problems = |problems: &[crate::plan::Problem]| -> Vec<serde_json::Value> {
        problems
            .iter()
            .map(|p| json!({"reason": p.reason, "message": p.message}))
            .collect()
    };
    let projects: Vec<serde_json::Value> = state
        .projects
        .iter()
        .map(|(project, plan)| {
            json!({
                "project": project,
                "secrets": plan.secrets.iter().map(|s| json!({
                    "name": s.name,
                    "type": s.secret_type.type_name(),
                    "pull_secret": s.pull_secret,
                    "registries": s.registries,
                    "servers": s.servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "content_hash": s.content_hash,
                    "source_versions": s.source_versions,
                })).collect::<Vec<_>>(),
                "held": plan.held.iter().map(|h| json!({
                    "name": h.name,
                    "pull_secret": h.pull_secret,
                    "reason": match h.reason {
                        HoldReason::SourceFailed { .. } => "source_failed",
                        HoldReason::NotRendered { .. } => "not_rendered",
                    },
                    "message": h.reason.to_string(),
                })).collect::<Vec<_>>(),
                "links": plan.links.iter().map(|l| json!({
                    "service_account": l.service_account,
                    "secret": l.secret,
                    "for": l.kind.for_flag(),
                })).collect::<Vec<_>>(),
                "image_pullers": plan.role_bindings.iter().map(|b| json!({
                    "name": b.name,
                    "subjects": b.subjects.iter().map(describe_subject).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "problems": problems(&plan.problems),
            })
        })
        .collect();
    let mut out = json!({
        "sources": sources,
        "projects": projects,
        "problems": problems(&state.problems),
    });
    if let Some(changes) = changes {
        out["changes"] = changes
            .iter()
            .map(|(project, diff)| {
                json!({
                    "project": project,
                    "steps": diff.steps.iter().map(|step| json!({
                        "verb": step.verb(),
                        "description": describe_step(step),
                    })).collect::<Vec<_>>(),
                    "problems": problems(&diff.problems),
                })
            })
            .collect();
    }
    out
}

/// `pullsecretd status` for people: per project its Secrets (type, pull secret, source
/// versions, age, links), image pullers, the problems pullsecretd reported and its last sync.
pub fn status_table(instance: &str, projects: &[ProjectStatus]) -> String {
    let mut out = String::new();
    if projects.is_empty() {
        let _ = writeln!(
            out,
            "No project holds a Secret or binding of pullsecretd instance {instance}, and it \
             reported nothing (Events expire after an hour on most clusters)."
        );
        return out;
    }
    for project in projects {
        let sync = project.last_sync.as_ref().map_or_else(
            || "no Event of pullsecretd".to_string(),
            |m| format!("last sync {} ago", age(m.age_seconds)),
        );
        let _ = writeln!(out, "Project {} ({sync})", project.project);
        if project.secrets.is_empty() {
            out.push_str("  No Secret of this instance.\n");
        } else {
            let rows = project
                .secrets
                .iter()
                .map(|s| {
                    let versions: Vec<String> = s
                        .source_versions
                        .iter()
                        .map(|(registry, version)| format!("{registry}={}", short(version)))
                        .collect();
                    let mut links: Vec<String> = s
                        .links
                        .iter()
                        .map(|l| format!("{} ({})", l.service_account, l.kind))
                        .collect();
                    links.extend(s.unlinked.iter().map(|a| format!("{a} (UNLINKED)")));
                    links.extend(
                        s.missing_accounts
                            .iter()
                            .map(|a| format!("{a} (no such account yet)")),
                    );
                    vec![
                        s.name.clone(),
                        s.secret_type
                            .trim_start_matches("kubernetes.io/")
                            .to_string(),
                        s.pull_secret.clone(),
                        versions.join(","),
                        s.created
                            .as_ref()
                            .map_or_else(|| "?".to_string(), |m| age(m.age_seconds)),
                        if links.is_empty() {
                            "none".to_string()
                        } else {
                            links.join(", ")
                        },
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "SECRET",
                    "TYPE",
                    "PULL SECRET",
                    "SOURCES",
                    "AGE",
                    "LINKED FROM",
                ],
                rows,
            ));
        }
        if let Some(subjects) = &project.image_pullers {
            let _ = writeln!(out, "  Image pullers: {}", subjects.join(", "));
        }
        for problem in &project.problems {
            let seen = problem
                .last_seen
                .as_ref()
                .map_or_else(String::new, |m| format!(", {} ago", age(m.age_seconds)));
            let times = if problem.count > 1 {
                format!("{}x", problem.count)
            } else {
                String::new()
            };
            let when = format!("{times}{seen}");
            let when = when.trim_start_matches(", ");
            let _ = writeln!(out, "  {} ({when}): {}", problem.reason, problem.message);
        }
    }
    out
}

/// A short age: `45s`, `12m`, `3h`, `2d`.
fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

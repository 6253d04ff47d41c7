//! `pullsecretd plan`: offline, or against a cluster (`--cluster`, writes nothing).
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context as _;

use pullsecretd::config::Config;
use pullsecretd::names::dns1123_label_problem;
use pullsecretd::plan::{self, NamespaceInfo, PlanInputs};
use pullsecretd::{private_fs, reconcile, render};

use super::{held_outcome, read_sources};
use crate::cli::{Failure, KubeArgs, OutputFormat, SourceArgs, bad_input, kube_client, runtime};

pub(crate) fn run_plan(
    sources: &SourceArgs,
    projects: &[String],
    output: Option<&Path>,
    format: OutputFormat,
) -> Result<(), Failure> {
    let config = Config::load(&sources.config).map_err(bad_input)?;
    let namespaces = offline_namespaces(&config, projects).map_err(bad_input)?;
    let runtime = runtime()?;
    let (credentials, failures) = runtime.block_on(read_sources(&config, sources))?;

    // Offline, no version exists to reuse: versioned names are drawn under a key of this run.
    let prepared = plan::prepare_secrets(&config, &credentials, &reconcile::fresh_version_key());
    let mut state = plan::plan(
        PlanInputs {
            config: &config,
            credentials: &credentials,
            namespaces: &namespaces,
            openshift: None,
        },
        &prepared,
    );
    // Offline nothing is known about which projects exist: a project the config names but
    // `--projects` left out was left out on purpose, not found missing.
    state
        .problems
        .retain(|problem| problem.reason != "ProjectNotFound");
    match format {
        OutputFormat::Text => print!("{}", render::plan_table(&config, &credentials, &state)),
        OutputFormat::Json => print_json(&render::plan_json(&config, &credentials, &state, None)),
    }
    if let Some(dir) = output {
        write_output(dir, &state).map_err(|error| Failure { status: 1, error })?;
        // Said on stderr when stdout is JSON, so the JSON stays one document.
        let wrote = format!("Wrote manifests and link commands to {}", dir.display());
        match format {
            OutputFormat::Text => println!("\n{wrote}"),
            OutputFormat::Json => eprintln!("{wrote}"),
        }
    }
    unselected_outcome(&namespaces, &state)?;
    held_outcome(
        &config,
        &failures,
        state.projects.values().flat_map(|p| &p.held),
    )
}

/// Exit 2 when a project given with `--projects` is selected by nothing in the config: the
/// plan above is empty for it, which is rarely what was meant.
fn unselected_outcome(
    namespaces: &[NamespaceInfo],
    state: &plan::DesiredState,
) -> Result<(), Failure> {
    let unselected: Vec<&str> = namespaces
        .iter()
        .map(|ns| ns.name.as_str())
        .filter(|name| !state.projects.contains_key(*name))
        .collect();
    if unselected.is_empty() {
        return Ok(());
    }
    Err(bad_input(anyhow::anyhow!(
        "--projects: no pull secret or image puller in the config names {} (offline, label \
         selectors match nothing: use --cluster to plan against real namespaces)",
        unselected.join(", ")
    )))
}

/// Prints a JSON document on stdout, pretty.
fn print_json(value: &serde_json::Value) {
    println!("{value:#}");
}

pub(crate) fn run_cluster_plan(
    sources: &SourceArgs,
    kube: &KubeArgs,
    format: OutputFormat,
) -> Result<(), Failure> {
    let config = Config::load(&sources.config).map_err(bad_input)?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let (credentials, failures) = read_sources(&config, sources).await?;
        let client = kube_client(kube).await.map_err(bad_input)?;
        let throttle = kube.throttle();
        let diff = reconcile::diff_cluster(
            &client,
            &throttle,
            &config,
            &credentials,
            pullsecretd::diff::Mode::Full,
        )
        .await
        .map_err(|error| Failure {
            status: 1,
            error: error.into(),
        })?;
        let changes = diff.diffs();
        match format {
            OutputFormat::Text => {
                print!(
                    "{}",
                    render::plan_table(&config, &credentials, &diff.desired)
                );
                print!("{}", render::changes_table(&changes));
            }
            OutputFormat::Json => print_json(&render::plan_json(
                &config,
                &credentials,
                &diff.desired,
                Some(&changes),
            )),
        }
        held_outcome(
            &config,
            &failures,
            diff.desired.projects.values().flat_map(|p| &p.held),
        )
    })
}

/// Offline there is no cluster to list: plan for the projects given on the command line, or
/// else for every project the config names.
pub(crate) fn offline_namespaces(
    config: &Config,
    projects: &[String],
) -> anyhow::Result<Vec<NamespaceInfo>> {
    let names: BTreeSet<String> = if projects.is_empty() {
        config
            .pull_secrets
            .iter()
            .flat_map(|p| p.projects.names.iter().cloned())
            .chain(config.image_pullers.iter().map(|p| p.project.clone()))
            .collect()
    } else {
        projects.iter().map(|p| p.trim().to_string()).collect()
    };
    for name in &names {
        if let Some(problem) = dns1123_label_problem(name) {
            anyhow::bail!("--projects: {name:?} is not a valid project name: it {problem}");
        }
    }
    Ok(names.into_iter().map(NamespaceInfo::named).collect())
}

/// Writes `plan --output` files into `dir` (created 0700 if missing). `dir` and each project
/// directory under it must belong to this user and be writable by nobody else; every file is
/// written through a temporary file renamed over its name, so a link planted there is
/// replaced, never followed. Secret manifests and `links.sh` (run with `sh`) are 0600,
/// RoleBindings 0644.
pub(crate) fn write_output(dir: &Path, state: &plan::DesiredState) -> anyhow::Result<()> {
    let files = render::output_files(state).context("rendering manifests")?;
    private_fs::ensure_private_dir(dir).context("--output")?;
    for file in files {
        let (project, name) = file
            .relative_path
            .split_once('/')
            .with_context(|| format!("unexpected output path {}", file.relative_path))?;
        let project_dir = private_fs::private_subdir(dir, project).context("--output")?;
        let mode = if file.owner_only { 0o600 } else { 0o644 };
        private_fs::write_replacing(&project_dir, name, file.contents.as_bytes(), mode)?;
    }
    Ok(())
}

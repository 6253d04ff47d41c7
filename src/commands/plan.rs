//! `pullsecretd plan`: offline, or against a cluster (`--cluster`, writes nothing).
use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;

use pullsecretd::config::Config;
use pullsecretd::names::dns1123_label_problem;
use pullsecretd::plan::{self, NamespaceInfo, PlanInputs};
use pullsecretd::{reconcile, render};

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

    let mut state = plan::plan(PlanInputs {
        config: &config,
        credentials: &credentials,
        namespaces: &namespaces,
        openshift: None,
    });
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

/// Writes `plan --output` files. Directories are created owner-only and Secret manifests are
/// written mode 0600: they hold credentials.
pub(crate) fn write_output(dir: &Path, state: &plan::DesiredState) -> anyhow::Result<()> {
    let files = render::output_files(state).context("rendering manifests")?;
    for file in files {
        let path = dir.join(&file.relative_path);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mode = if file.sensitive { 0o600 } else { 0o644 };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        // `mode` applies only to new files; an existing one must be narrowed too.
        out.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        out.write_all(file.contents.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

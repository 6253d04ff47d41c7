//! The `pullsecretd` binary: parses arguments, calls into the library, maps errors to exit codes.
//!
//! Exit status: 0 success, 1 a failure while doing the job (e.g. writing output), 2 bad input
//! (usage, config, or a credential source that cannot be read). Diagnostics go to stderr and
//! never contain credential values.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use pullsecretd::config::Config;
use pullsecretd::names::dns1123_label_problem;
use pullsecretd::plan::{self, NamespaceInfo, PlanInputs};
use pullsecretd::render;
use pullsecretd::source::{Inventory, SourceContext, VaultSession};

#[derive(Debug, Parser)]
#[command(
    name = "pullsecretd",
    version,
    about = "Keeps registry pull secrets where they are needed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file: exit 0 when valid, 2 with file:line:column when not.
    CheckConfig {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Show the Secrets, service-account links and RoleBindings pullsecretd would write, per
    /// project, without contacting any cluster.
    Plan {
        /// The YAML config file.
        #[arg(long)]
        config: PathBuf,
        /// Plan for these projects (comma-separated) instead of those the config names.
        #[arg(long, value_delimiter = ',')]
        projects: Vec<String>,
        /// Also write manifests (Secrets, RoleBindings) and `oc secrets link` commands here.
        #[arg(long)]
        output: Option<PathBuf>,
        /// How long a docker credential helper may run before it is killed.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        helper_timeout: Duration,
    },
}

/// A failure and the exit status it maps to.
struct Failure {
    status: u8,
    error: anyhow::Error,
}

fn bad_input(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        status: 2,
        error: error.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let outcome = match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Plan {
            config,
            projects,
            output,
            helper_timeout,
        } => run_plan(&config, &projects, output.as_deref(), helper_timeout),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", error_chain(&failure.error));
            ExitCode::from(failure.status)
        }
    }
}

/// The error and its causes, joined by `: `. Library errors often already include their cause
/// in their message; a cause already shown is not repeated.
fn error_chain(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

/// Logs go to stderr; `RUST_LOG` sets the level (default `warn`, with vaultrs' and rustify's
/// own error events off: our errors already say what failed, with the mount and path).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,vaultrs=off,rustify=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn check_config(file: &Path) -> Result<(), Failure> {
    let config = Config::load(file).map_err(bad_input)?;
    println!(
        "{}: valid ({} registries, {} pull secrets, {} image pullers)",
        file.display(),
        config.registries.len(),
        config.pull_secrets.len(),
        config.image_pullers.len()
    );
    Ok(())
}

fn run_plan(
    config_path: &Path,
    projects: &[String],
    output: Option<&Path>,
    helper_timeout: Duration,
) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(bad_input)?;
    let namespaces = offline_namespaces(&config, projects).map_err(bad_input)?;
    let vault = match &config.vault {
        Some(vault) => Some(Arc::new(VaultSession::new(vault).map_err(bad_input)?)),
        None => None,
    };
    let context = SourceContext {
        helper_timeout,
        vault,
        ..SourceContext::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(|error| Failure { status: 1, error })?;
    let mut inventory = Inventory::new();
    let report = runtime.block_on(inventory.refresh(&config, &context));
    let credentials = inventory.credentials();

    let state = plan::plan(PlanInputs {
        config: &config,
        credentials: &credentials,
        namespaces: &namespaces,
    });
    print!("{}", render::plan_table(&config, &credentials, &state));
    if let Some(dir) = output {
        write_output(dir, &state).map_err(|error| Failure { status: 1, error })?;
        println!("\nWrote manifests and link commands to {}", dir.display());
    }
    if report.failures.is_empty() {
        return Ok(());
    }
    for failure in &report.failures {
        eprintln!("error: registry {}: {}", failure.registry, failure.error);
    }
    Err(bad_input(anyhow::anyhow!(
        "{} of {} registries could not be read; their secrets are not planned",
        report.failures.len(),
        config.registries.len()
    )))
}

/// Offline there is no cluster to list: plan for the projects given on the command line, or
/// else for every project the config names.
fn offline_namespaces(config: &Config, projects: &[String]) -> anyhow::Result<Vec<NamespaceInfo>> {
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
fn write_output(dir: &Path, state: &plan::DesiredState) -> anyhow::Result<()> {
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

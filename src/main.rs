//! The `pullsecretd` binary: parses arguments, calls into the library, maps errors to exit codes.
//!
//! Exit status: 0 success, 1 a failure while doing the job (e.g. writing output), 2 bad input
//! (usage, config, or a credential source that cannot be read). Diagnostics go to stderr and
//! never contain credential values.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use kube::config::KubeConfigOptions;

use pullsecretd::agent::{self, AgentClient, CredentialService};
use pullsecretd::cluster::{ApplyOptions, Throttle};
use pullsecretd::config::Config;
use pullsecretd::helper_protocol::{self, Backend, HELPER_NAME, LookupError, NESTED_ENV};
use pullsecretd::names::dns1123_label_problem;
use pullsecretd::plan::{self, NamespaceInfo, PlanInputs};
use pullsecretd::reconcile;
use pullsecretd::render;
use pullsecretd::source::helper::HELPER_PREFIX;
use pullsecretd::source::{Inventory, Resolved, SourceContext, VaultSession};
use pullsecretd::workstation::{self, ConfigSource, WatchedFile, Workstation};
use pullsecretd::{daemon, telemetry};

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
    /// project. Offline unless --cluster is given; never writes to a cluster.
    Plan {
        #[command(flatten)]
        sources: SourceArgs,
        /// Plan for these projects (comma-separated) instead of those the config names.
        #[arg(long, value_delimiter = ',', conflicts_with = "cluster")]
        projects: Vec<String>,
        /// Also write manifests (Secrets, RoleBindings) and `oc secrets link` commands here.
        #[arg(long, conflicts_with = "cluster")]
        output: Option<PathBuf>,
        /// Read the current kube context's cluster and show the changes `once` would make.
        #[arg(long)]
        cluster: bool,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Make the cluster match the config once: write Secrets, link service accounts, grant
    /// image pullers, remove what the config no longer asks for. Exit 0 when everything
    /// converged, 1 when some API call failed, 2 for a bad config or an unreadable source.
    Once {
        #[command(flatten)]
        sources: SourceArgs,
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        writes: WriteArgs,
    },
    /// Run as a daemon: keep every selected project right as namespaces, Secrets, service
    /// accounts, credentials and the config change. Exit 0 after SIGTERM/SIGINT.
    Run(Box<RunArgs>),
    /// Keep the current kube context's projects in sync with the docker/podman auth files as
    /// you log in (`docker login`, `podman login`), and serve credential-helper calls on the
    /// agent socket. Only adds and updates; never deletes.
    Workstation(WorkstationArgs),
    /// The docker credential-helper protocol (also run as `docker-credential-pullsecretd`):
    /// get, list, store, erase or version. Output on stdout, errors on stdout with exit 1.
    CredentialHelper {
        /// get, list, store, erase or version.
        action: Option<String>,
        /// Config to serve from instead of asking a running agent ($PULLSECRETD_CONFIG, else
        /// ~/.config/pullsecretd/config.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `pullsecretd workstation`.
#[derive(Debug, clap::Args)]
struct WorkstationArgs {
    /// Config to sync (default: $PULLSECRETD_CONFIG or ~/.config/pullsecretd/config.yaml if
    /// present, else every registry in the watched files, into the context's namespace).
    #[arg(long)]
    config: Option<PathBuf>,
    /// How long a docker credential helper may run before it is killed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    helper_timeout: Duration,
    /// Quiet time after a file change before syncing.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    debounce: Duration,
    /// Do not serve credential-helper calls on the agent socket.
    #[arg(long)]
    no_agent: bool,
    #[command(flatten)]
    kube: KubeArgs,
}

/// `run`: the daemon's settings beyond the config file.
#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    sources: SourceArgs,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    writes: WriteArgs,
    /// Address of the /healthz, /readyz and /metrics listener.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormatArg,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else pullsecretd).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Name of the leader-election Lease (default: pullsecretd, or pullsecretd-INSTANCE for a
    /// config naming an instance other than the default).
    #[arg(long)]
    lease_name: Option<String>,
    /// This replica's identity in the Lease (default: $POD_NAME, else the host name).
    #[arg(long)]
    identity: Option<String>,
    /// How long a standby waits on a Lease nobody renews before taking it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How long a leader keeps writing after the start of its last good renewal.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    renew_deadline: Duration,
    /// Time between Lease renewals (leader) or attempts (standby).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    retry_period: Duration,
    /// Do not elect a leader: this replica always writes (run exactly one).
    #[arg(long)]
    no_leader_election: bool,
    /// Longest wait for in-flight writes and the Lease release after SIGTERM/SIGINT.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,
    /// Quiet time after the config file changes before it is reloaded.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    reload_debounce: Duration,
    /// Also serve credential-helper calls on the agent socket, as `workstation` does
    /// ($PULLSECRETD_AGENT_SOCKET, else $XDG_RUNTIME_DIR/pullsecretd/agent.sock), from the
    /// config's registries and this process's Vault session. Off by default: in a pod no
    /// helper runs beside the daemon.
    #[arg(long)]
    agent: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// Where credentials come from.
#[derive(Debug, clap::Args)]
struct SourceArgs {
    /// The YAML config file.
    #[arg(long)]
    config: PathBuf,
    /// How long a docker credential helper may run before it is killed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    helper_timeout: Duration,
}

/// Which cluster, and how politely to talk to it.
#[derive(Debug, clap::Args)]
struct KubeArgs {
    /// kubeconfig context to use instead of the current one ($KUBECONFIG or ~/.kube/config;
    /// in a pod, its service account).
    #[arg(long)]
    context: Option<String>,
    /// Average API requests per second (client-side limit).
    #[arg(long, default_value = "20")]
    qps: NonZeroU32,
    /// API requests allowed at once above the average.
    #[arg(long, default_value = "40")]
    burst: NonZeroU32,
    /// Extra attempts for throttled (429), failed (5xx) or timed-out API calls.
    #[arg(long, default_value = "5")]
    retries: usize,
}

impl KubeArgs {
    /// The client-side rate limit and retry policy these flags ask for.
    fn throttle(&self) -> Throttle {
        Throttle::new(self.qps, self.burst, self.retries)
    }
}

/// How `once` writes.
#[derive(Debug, clap::Args)]
struct WriteArgs {
    /// Projects written at the same time.
    #[arg(long, default_value = "8")]
    concurrency: usize,
    /// Do not publish Kubernetes Events for changes and failures.
    #[arg(long)]
    no_events: bool,
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
    // Run as `docker-credential-pullsecretd ACTION` (a symlink or copy): the helper protocol.
    let mut args = std::env::args_os();
    let program = args.next().map(PathBuf::from).unwrap_or_default();
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    if let Some(name) = name.filter(|n| n.starts_with(HELPER_PREFIX)) {
        init_helper_logging();
        let words: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        let action = match words.as_slice() {
            [word] => Some(word.as_str()),
            _ => None,
        };
        return credential_helper(&name, action, None);
    }
    let cli = Cli::parse();
    match &cli.command {
        Command::Run(args) => telemetry::init_logging(
            match args.log_format {
                LogFormatArg::Text => telemetry::LogFormat::Text,
                LogFormatArg::Json => telemetry::LogFormat::Json,
            },
            "info,vaultrs=off,rustify=off",
        ),
        Command::CredentialHelper { .. } => init_helper_logging(),
        _ => init_logging(),
    }
    let outcome = match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Plan {
            sources,
            projects,
            output,
            cluster: false,
            ..
        } => run_plan(&sources, &projects, output.as_deref()),
        Command::Plan {
            sources,
            cluster: true,
            kube,
            ..
        } => run_cluster_plan(&sources, &kube),
        Command::Once {
            sources,
            kube,
            writes,
        } => run_once(&sources, &kube, &writes),
        Command::Run(args) => run_daemon(&args),
        Command::Workstation(args) => run_workstation(args),
        Command::CredentialHelper { action, config } => {
            return credential_helper(
                &format!("{HELPER_PREFIX}{HELPER_NAME}"),
                action.as_deref(),
                config,
            );
        }
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
    sources: &SourceArgs,
    projects: &[String],
    output: Option<&Path>,
) -> Result<(), Failure> {
    let config = Config::load(&sources.config).map_err(bad_input)?;
    let namespaces = offline_namespaces(&config, projects).map_err(bad_input)?;
    let runtime = runtime()?;
    let (credentials, failures) = runtime.block_on(read_sources(&config, sources))?;

    let state = plan::plan(PlanInputs {
        config: &config,
        credentials: &credentials,
        namespaces: &namespaces,
        openshift: None,
    });
    print!("{}", render::plan_table(&config, &credentials, &state));
    if let Some(dir) = output {
        write_output(dir, &state).map_err(|error| Failure { status: 1, error })?;
        println!("\nWrote manifests and link commands to {}", dir.display());
    }
    sources_outcome(&config, &failures)?;
    rendered_outcome(state.projects.values().flat_map(|p| &p.held))
}

/// The async runtime every command that does I/O runs on.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(|error| Failure { status: 1, error })
}

/// Reads every registry once. Failed registries are returned as messages; their Secrets are
/// held by the planner.
async fn read_sources(
    config: &Config,
    sources: &SourceArgs,
) -> Result<(BTreeMap<String, Resolved>, Vec<String>), Failure> {
    let vault = match &config.vault {
        Some(vault) => Some(Arc::new(VaultSession::new(vault).map_err(bad_input)?)),
        None => None,
    };
    let context = SourceContext {
        helper_timeout: sources.helper_timeout,
        vault,
        ..SourceContext::default()
    };
    let mut inventory = Inventory::new();
    let report = inventory.refresh(config, &context).await;
    let failures = report
        .failures
        .iter()
        .map(|f| format!("registry {}: {}", f.registry, f.error))
        .collect();
    Ok((inventory.credentials(), failures))
}

/// Exit 2 when a pull secret could not be rendered (its Secrets are held), after saying which.
fn rendered_outcome<'a>(
    held: impl IntoIterator<Item = &'a plan::HeldSecret>,
) -> Result<(), Failure> {
    let not_rendered: BTreeSet<&str> = held
        .into_iter()
        .filter(|h| matches!(h.reason, plan::HoldReason::NotRendered { .. }))
        .map(|h| h.name.as_str())
        .collect();
    if not_rendered.is_empty() {
        return Ok(());
    }
    Err(bad_input(anyhow::anyhow!(
        "{} secret(s) could not be rendered and are held (left as they are): {}",
        not_rendered.len(),
        not_rendered.into_iter().collect::<Vec<_>>().join(", ")
    )))
}

/// Exit 2 when a registry could not be read, after saying which and why.
fn sources_outcome(config: &Config, failures: &[String]) -> Result<(), Failure> {
    if failures.is_empty() {
        return Ok(());
    }
    for failure in failures {
        eprintln!("error: {failure}");
    }
    Err(bad_input(anyhow::anyhow!(
        "{} of {} registries could not be read; their secrets are held (left as they are)",
        failures.len(),
        config.registries.len()
    )))
}

/// A client for the chosen (or current) kube context.
async fn kube_client(kube: &KubeArgs) -> anyhow::Result<kube::Client> {
    let config = match &kube.context {
        Some(context) => {
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .with_context(|| format!("loading kube context {context}"))?
        }
        None => kube::Config::infer()
            .await
            .context("finding a cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?,
    };
    pullsecretd::cluster::client(config).context("creating the Kubernetes client")
}

fn run_cluster_plan(sources: &SourceArgs, kube: &KubeArgs) -> Result<(), Failure> {
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
        print!(
            "{}",
            render::plan_table(&config, &credentials, &diff.desired)
        );
        print!("{}", render::changes_table(&diff));
        sources_outcome(&config, &failures)?;
        rendered_outcome(diff.desired.projects.values().flat_map(|p| &p.held))
    })
}

fn run_once(sources: &SourceArgs, kube: &KubeArgs, writes: &WriteArgs) -> Result<(), Failure> {
    let config = Config::load(&sources.config).map_err(bad_input)?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let (credentials, failures) = read_sources(&config, sources).await?;
        let client = kube_client(kube).await.map_err(bad_input)?;
        let throttle = kube.throttle();
        let options = ApplyOptions {
            events: !writes.no_events,
            ..ApplyOptions::for_instance(config.instance_name())
        };
        let report = reconcile::reconcile_once(
            &client,
            &throttle,
            &options,
            &config,
            &credentials,
            writes.concurrency,
        )
        .await
        .map_err(|error| Failure {
            status: 1,
            error: error.into(),
        })?;
        print!("{}", render::once_summary(&report));
        if !report.converged() {
            sources_outcome(&config, &failures).ok();
            return Err(Failure {
                status: 1,
                error: anyhow::anyhow!("not every project converged; see the failures above"),
            });
        }
        sources_outcome(&config, &failures)?;
        rendered_outcome(
            report
                .projects
                .iter()
                .flat_map(|p| &p.held)
                .map(|held| &held.secret),
        )
    })
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

/// `run`: starts the daemon and stops it gracefully on SIGTERM/SIGINT.
fn run_daemon(args: &RunArgs) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(|error| Failure { status: 1, error })?;
    runtime.block_on(async {
        let config = Config::load(&args.sources.config).map_err(bad_input)?;
        let vault = match &config.vault {
            Some(vault) => Some(Arc::new(VaultSession::new(vault).map_err(bad_input)?)),
            None => None,
        };
        let client = kube_client(&args.kube).await.map_err(bad_input)?;
        let sources = SourceContext {
            helper_timeout: args.sources.helper_timeout,
            vault,
            ..SourceContext::default()
        };
        let agent = if args.agent {
            Some(serve_agent(&config, &sources).map_err(bad_input)?)
        } else {
            None
        };
        let lease = (!args.no_leader_election).then(|| pullsecretd::cluster::lease::LeaseConfig {
            namespace: args
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "pullsecretd".into()),
            name: args
                .lease_name
                .clone()
                .unwrap_or_else(|| default_lease_name(config.instance_name())),
            identity: args.identity.clone().unwrap_or_else(default_identity),
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        });
        let options = daemon::DaemonOptions {
            config_path: args.sources.config.clone(),
            sources,
            throttle: args.kube.throttle(),
            events: !args.writes.no_events,
            concurrency: u16::try_from(args.writes.concurrency).unwrap_or(u16::MAX),
            lease,
            listen: Some(args.listen),
            reload_debounce: args.reload_debounce,
            debounce: Duration::from_millis(50),
        };
        let running = daemon::start(client, options).await.map_err(bad_input)?;
        if let Some(address) = running.address {
            tracing::info!(%address, "Serving /healthz, /readyz and /metrics.");
        }
        wait_for_signal()
            .await
            .map_err(|error| Failure { status: 1, error })?;
        tracing::info!("Stopping: finishing in-flight writes and releasing the Lease.");
        drop(agent);
        running.stop();
        if running.wait(args.shutdown_timeout).await {
            Ok(())
        } else {
            Err(Failure {
                status: 1,
                error: anyhow::anyhow!("did not stop within {:?}", args.shutdown_timeout),
            })
        }
    })
}

/// The agent socket of `run --agent`: served until dropped, then removed.
struct ServedAgent {
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServedAgent {
    fn drop(&mut self) {
        self.task.abort();
        let _ = fs::remove_file(&self.socket);
    }
}

/// Binds the agent socket where the helper looks for it and serves the config's registries,
/// cached as `workstation` caches them, through the daemon's own sources (one Vault session).
/// The registries are those of the config at start, like the `vault:` block.
fn serve_agent(config: &Config, sources: &SourceContext) -> anyhow::Result<ServedAgent> {
    let socket = agent::socket_path(|name| std::env::var_os(name)).context(
        "--agent: set PULLSECRETD_AGENT_SOCKET or XDG_RUNTIME_DIR to say where the socket goes",
    )?;
    let listener = agent::bind(&socket)?;
    let service = Arc::new(CredentialService::new(
        Some(config.clone()),
        sources.clone(),
        Some(Duration::from_secs(30)),
    ));
    tracing::info!(socket = %socket.display(), "Serving credential-helper calls.");
    let task = tokio::spawn(agent::serve(listener, service));
    Ok(ServedAgent { socket, task })
}

/// SIGTERM or SIGINT.
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// One Lease per instance: two instances never elect one leader between them.
fn default_lease_name(instance: &str) -> String {
    if instance == pullsecretd::model::managed::DEFAULT_INSTANCE {
        "pullsecretd".to_string()
    } else {
        format!("pullsecretd-{instance}")
    }
}

/// `$POD_NAME`, else the host name, else a fixed name.
fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("pullsecretd-{}", std::process::id()))
}

/// Helper mode: docker and skopeo show the helper's stderr to the user, so only errors (which
/// are also the stdout answer) are logged by default; `RUST_LOG` still applies.
fn init_helper_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// Answers one credential-helper call: protocol output (or the error) on stdout, exit 0 or 1.
fn credential_helper(program: &str, action: Option<&str>, config: Option<PathBuf>) -> ExitCode {
    let reply = helper_reply(program, action, config);
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&reply.stdout)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    ExitCode::from(reply.exit_code)
}

fn helper_reply(
    program: &str,
    action: Option<&str>,
    config: Option<PathBuf>,
) -> helper_protocol::Reply {
    let Some(word) = action else {
        return helper_protocol::usage(program);
    };
    if std::env::var_os(NESTED_ENV).is_some() && word != "version" {
        return helper_protocol::Reply::error(
            "pullsecretd was asked for credentials by a credential helper pullsecretd itself \
             runs: a credHelpers or credsStore entry in a file pullsecretd reads points back \
             at pullsecretd",
        );
    }
    let reads_input = helper_protocol::Action::parse(word).is_some_and(|a| a.reads_input());
    let mut input = zeroize::Zeroizing::new(Vec::new());
    if reads_input {
        let mut stdin = std::io::Read::take(std::io::stdin().lock(), helper_protocol::MAX_INPUT);
        if std::io::Read::read_to_end(&mut stdin, &mut input).is_err() {
            return helper_protocol::Reply::error("reading stdin failed");
        }
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return helper_protocol::Reply::error("starting the async runtime failed");
    };
    runtime.block_on(helper_protocol::handle(program, word, &input, || {
        helper_backend(config)
    }))
}

/// A running agent (unless `--config` is given), else this process reading the config's
/// sources itself.
async fn helper_backend(config: Option<PathBuf>) -> Result<Backend, LookupError> {
    let env = |name: &str| std::env::var_os(name);
    if config.is_none()
        && let Some(socket) = agent::socket_path(env)
        && let Some(client) = AgentClient::connect(&socket).await
    {
        return Ok(Backend::Agent(client));
    }
    let path = config
        .or_else(|| helper_protocol::default_config_path(env))
        .ok_or_else(|| LookupError("no config: set PULLSECRETD_CONFIG or HOME".into()))?;
    let config = Config::load(&path).map_err(|e| LookupError(e.to_string()))?;
    let context = source_context(&config, Duration::from_secs(10))
        .map_err(|e| LookupError(error_chain(&e)))?;
    Ok(Backend::Local(Arc::new(CredentialService::new(
        Some(config),
        context,
        None,
    ))))
}

/// How sources are read: helpers with `timeout`, and the config's one Vault session.
fn source_context(config: &Config, timeout: Duration) -> anyhow::Result<SourceContext> {
    let vault = match &config.vault {
        Some(vault) => Some(Arc::new(VaultSession::new(vault)?)),
        None => None,
    };
    Ok(SourceContext {
        helper_timeout: timeout,
        vault,
        ..SourceContext::default()
    })
}

/// `workstation`: watch the auth files, sync on change, serve the agent socket.
fn run_workstation(args: WorkstationArgs) -> Result<(), Failure> {
    let env = |name: &str| std::env::var_os(name);
    let config_path = args
        .config
        .clone()
        .or_else(|| helper_protocol::default_config_path(env).filter(|p| p.is_file()));
    let config = match &config_path {
        Some(path) => Some(Config::load(path).map_err(bad_input)?),
        None => None,
    };
    let mut files = workstation::standard_files(env);
    if let Some(config) = &config {
        files.extend(files_named_in(config));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(|error| Failure { status: 1, error })?;
    runtime.block_on(async move {
        let client = kube_client(&args.kube).await.map_err(bad_input)?;
        let context = match &config {
            Some(config) => source_context(config, args.helper_timeout).map_err(bad_input)?,
            None => SourceContext {
                helper_timeout: args.helper_timeout,
                ..SourceContext::default()
            },
        };
        // The agent keeps what it read for a short while: docker asks once per pull.
        let service = Arc::new(CredentialService::new(
            config.clone(),
            context,
            Some(Duration::from_secs(30)),
        ));
        if !args.no_agent
            && let Some(socket) = agent::socket_path(env)
        {
            let listener = agent::bind(&socket).map_err(bad_input)?;
            eprintln!("Serving credential-helper calls on {}", socket.display());
            tokio::spawn(agent::serve(listener, service.clone()));
        }
        let refresh = config
            .as_ref()
            .and_then(|c| c.pull_secrets.iter().map(|p| p.rotation.refresh).min())
            .unwrap_or(Duration::from_secs(300));
        let source = match config {
            Some(config) => ConfigSource::Fixed(Box::new(config)),
            None => ConfigSource::Default {
                files: files.clone(),
                namespace: client.default_namespace().to_string(),
            },
        };
        let paths = files.iter().map(|f| f.path.clone()).collect();
        let watcher = workstation::watch::FileWatcher::new(paths).map_err(bad_input)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watcher.forward(tx));
        for file in &files {
            eprintln!("Watching {}", file.path.display());
        }
        let throttle = args.kube.throttle();
        Workstation::new(client, throttle, source, service)
            .run(rx, args.debounce, refresh)
            .await;
        Ok(())
    })
}

/// The auth files a config's registries read, so a fixed config follows their changes too.
fn files_named_in(config: &Config) -> Vec<WatchedFile> {
    use pullsecretd::config::SourceConfig;
    use pullsecretd::dockerconfig::AuthFileFormat;
    config
        .registries
        .values()
        .filter_map(|registry| {
            let (path, format) = match &registry.from {
                SourceConfig::DockerConfig { path } => (path, AuthFileFormat::DockerConfig),
                SourceConfig::Dockercfg { path } => (path, AuthFileFormat::Dockercfg),
                SourceConfig::ContainersAuth { path } => (path, AuthFileFormat::ContainersAuth),
                _ => return None,
            };
            Some(WatchedFile {
                path: path.clone(),
                format,
            })
        })
        .collect()
}

//! The command line (binary edge): the clap argument types, and their lowering into what the
//! library takes — the Kubernetes client and its throttle, the source context with the one
//! Vault session of the process, the async runtime, logging, and exit statuses. anyhow is
//! used here and in `commands`, never in the library.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::config::KubeConfigOptions;

use pullsecretd::cluster::Throttle;
use pullsecretd::config::Config;
use pullsecretd::source::{SourceContext, VaultSession};

#[derive(Debug, Parser)]
#[command(
    name = "pullsecretd",
    version,
    about = "Keeps registry pull secrets where they are needed."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write man pages: pullsecretd.1 and one page per subcommand into DIR, or pullsecretd.1
    /// on stdout without --dir.
    Man {
        /// The directory to write the pages into (created if missing), e.g.
        /// ~/.local/share/man/man1.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check a config file: exit 0 when valid, 2 with file:line:column when not.
    CheckConfig {
        /// The YAML config file.
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The YAML config file, spelt as the other commands spell it.
        #[arg(long)]
        config: Option<PathBuf>,
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
        /// text for people, json for scripts (no secret values either way).
        #[arg(short = 'o', long = "format", value_enum, default_value = "text")]
        format: OutputFormat,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Show, per project, what this instance keeps there, read from the cluster: each Secret
    /// with its source versions, age and links, its image pullers, the problems it reported
    /// (its Warning Events) and its last sync. Reads no source; writes nothing.
    Status {
        /// The YAML config file (its instance and the service accounts it links).
        #[arg(long)]
        config: PathBuf,
        /// Only these projects (comma-separated), listed even when they hold nothing.
        #[arg(long, value_delimiter = ',')]
        projects: Vec<String>,
        /// text for people, json for scripts.
        #[arg(short = 'o', long = "format", value_enum, default_value = "text")]
        format: OutputFormat,
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
    /// The kubelet's exec image credential provider (also run as
    /// `pullsecretd-credential-provider`): one CredentialProviderRequest on stdin, one
    /// CredentialProviderResponse on stdout; errors on stderr with exit 1.
    CredentialProvider {
        /// Config to serve from ($PULLSECRETD_CONFIG, else ~/.config/pullsecretd/config.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `pullsecretd workstation`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkstationArgs {
    /// Config to sync (default: $PULLSECRETD_CONFIG or ~/.config/pullsecretd/config.yaml if
    /// present, else every registry in the watched files, into the context's namespace).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// How long a docker credential helper may run before it is killed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) helper_timeout: Duration,
    /// Quiet time after a file change before syncing.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub(crate) debounce: Duration,
    /// Do not serve credential-helper calls on the agent socket.
    #[arg(long)]
    pub(crate) no_agent: bool,
    /// Log format on stderr (text is plain unless stderr is a terminal).
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) log_format: LogFormatArg,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
}

/// `run`: the daemon's settings beyond the config file.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) sources: SourceArgs,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
    #[command(flatten)]
    pub(crate) writes: WriteArgs,
    /// Address of the /healthz, /readyz and /metrics listener.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) log_format: LogFormatArg,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else the kube context's
    /// namespace).
    #[arg(long)]
    pub(crate) lease_namespace: Option<String>,
    /// Name of the leader-election Lease (default: pullsecretd, or pullsecretd-INSTANCE for a
    /// config naming an instance other than the default).
    #[arg(long)]
    pub(crate) lease_name: Option<String>,
    /// This replica's identity in the Lease (default: $POD_NAME, else the host name).
    #[arg(long)]
    pub(crate) identity: Option<String>,
    /// How long a standby waits on a Lease nobody renews before taking it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub(crate) lease_duration: Duration,
    /// How long a leader keeps writing after the start of its last good renewal.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) renew_deadline: Duration,
    /// Time between Lease renewals (leader) or attempts (standby).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) retry_period: Duration,
    /// Do not elect a leader: this replica always writes (run exactly one).
    #[arg(long, conflicts_with = "shards")]
    pub(crate) no_leader_election: bool,
    /// Split the namespaces into N shards, one Lease each (NAME-shard-I): replicas share the
    /// writing, and a replica that dies has its shards taken over (docs/sharding.md). Every
    /// replica must be given the same N. Overrides the config file's `shards:`; default 1.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) shards: Option<u32>,
    /// How long to wait at start for the API server to answer before giving up (exit 2).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) start_timeout: Duration,
    /// Longest wait for in-flight writes and the Lease release after SIGTERM/SIGINT.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub(crate) shutdown_timeout: Duration,
    /// Quiet time after the config file changes before it is reloaded.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) reload_debounce: Duration,
    /// Also serve credential-helper calls on the agent socket, as `workstation` does
    /// ($PULLSECRETD_AGENT_SOCKET, else $XDG_RUNTIME_DIR/pullsecretd/agent.sock), from the
    /// config's registries and this process's Vault session. Off by default: in a pod no
    /// helper runs beside the daemon.
    #[arg(long)]
    pub(crate) agent: bool,
}

/// How `plan` and `status` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum LogFormatArg {
    Text,
    Json,
}

/// Where credentials come from.
#[derive(Debug, clap::Args)]
pub(crate) struct SourceArgs {
    /// The YAML config file.
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// How long a docker credential helper may run before it is killed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) helper_timeout: Duration,
}

/// Which cluster, and how politely to talk to it.
#[derive(Debug, clap::Args)]
pub(crate) struct KubeArgs {
    /// kubeconfig context to use instead of the current one ($KUBECONFIG or ~/.kube/config;
    /// in a pod, its service account).
    #[arg(long)]
    pub(crate) context: Option<String>,
    /// Average API requests per second (client-side limit).
    #[arg(long, default_value = "20")]
    pub(crate) qps: NonZeroU32,
    /// API requests allowed at once above the average.
    #[arg(long, default_value = "40")]
    pub(crate) burst: NonZeroU32,
    /// Extra attempts for throttled (429), failed (5xx) or timed-out API calls.
    #[arg(long, default_value = "5")]
    pub(crate) retries: usize,
}

impl KubeArgs {
    /// The client-side rate limit and retry policy these flags ask for.
    pub(crate) fn throttle(&self) -> Throttle {
        Throttle::new(self.qps, self.burst, self.retries)
    }
}

/// How `once` writes.
#[derive(Debug, clap::Args)]
pub(crate) struct WriteArgs {
    /// Projects written at the same time.
    #[arg(long, default_value = "8")]
    pub(crate) concurrency: usize,
    /// Do not publish Kubernetes Events for changes and failures.
    #[arg(long)]
    pub(crate) no_events: bool,
}

/// A failure and the exit status it maps to.
pub(crate) struct Failure {
    pub(crate) status: u8,
    pub(crate) error: anyhow::Error,
}

pub(crate) fn bad_input(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        status: 2,
        error: error.into(),
    }
}

/// The error and its causes, joined by `: `. Library errors often already include their cause
/// in their message; a cause already shown is not repeated.
pub(crate) fn error_chain(error: &anyhow::Error) -> String {
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
pub(crate) fn init_logging() {
    // What apply finds (held Secrets, failures) is in the command's summary: its own log lines
    // would say it twice.
    pullsecretd::telemetry::init_logging(
        pullsecretd::telemetry::LogFormat::Text,
        "warn,pullsecretd::cluster::apply=error,kube_client=off,vaultrs=off,rustify=off",
    );
}

impl LogFormatArg {
    pub(crate) fn format(self) -> pullsecretd::telemetry::LogFormat {
        match self {
            Self::Text => pullsecretd::telemetry::LogFormat::Text,
            Self::Json => pullsecretd::telemetry::LogFormat::Json,
        }
    }
}

/// The async runtime every command that does I/O runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(|error| Failure { status: 1, error })
}

/// A client for the chosen (or current) kube context.
pub(crate) async fn kube_client(kube: &KubeArgs) -> anyhow::Result<kube::Client> {
    Ok(kube_client_at(kube).await?.0)
}

/// A client for the chosen (or current) kube context, and the API server's URL it talks to.
pub(crate) async fn kube_client_at(kube: &KubeArgs) -> anyhow::Result<(kube::Client, String)> {
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
    let url = config.cluster_url.to_string();
    let client = pullsecretd::cluster::client(config).context("creating the Kubernetes client")?;
    Ok((client, url))
}

/// Helper mode: docker and skopeo show the helper's stderr to the user, so only errors (which
/// are also the stdout answer) are logged by default; `RUST_LOG` still applies.
pub(crate) fn init_helper_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

/// How sources are read: helpers with `timeout`, and the config's one Vault session. The one
/// place a command builds them.
pub(crate) fn source_context(config: &Config, timeout: Duration) -> anyhow::Result<SourceContext> {
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

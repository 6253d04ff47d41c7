//! The `kube-sim` binary: starts the emulator for kubectl, benchmarks and manual testing, writes a
//! kubeconfig, and runs until interrupted. All behaviour lives in the library.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// A faithful in-memory Kubernetes API server for tests (never for production).
#[derive(Parser, Debug)]
#[command(name = "kube-sim", version)]
struct Cli {
    /// Port on 127.0.0.1 (0: pick a free one and print it).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write a kubeconfig for the admin user.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Serve OpenShift's API groups, projects and system:image-puller.
    #[arg(long)]
    openshift: bool,
    /// Accepted for old scripts: the binary always serves HTTPS with a fresh self-signed CA,
    /// because kubectl sends bearer tokens only over TLS (plain HTTP would answer it 401).
    #[arg(long, hide = true)]
    tls: bool,
    /// Where to write the CA certificate (PEM).
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Fixed latency added to every resource request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Bearer token of the admin user.
    #[arg(long, default_value = kube_sim::DEFAULT_TOKEN)]
    token: String,
    /// Extra identity: TOKEN=system:serviceaccount:NS:NAME (repeatable), for TokenReview.
    #[arg(long = "service-account-token", value_name = "TOKEN=USERNAME")]
    sa_tokens: Vec<String>,
    /// Inject errors: VERB:CODE:RATE, e.g. `update:503:0.1`, `*:429:0.05` (repeatable; CODE is
    /// 500, 503 or 429, the latter with Retry-After: 1 and the plain-text body).
    #[arg(long = "error-rate", value_name = "VERB:CODE:RATE")]
    error_rates: Vec<String>,
    /// Enforce RBAC for non-admin identities.
    #[arg(long)]
    rbac: bool,
    /// Run a kubelet for one node: pods are bound to it and their images really pulled from
    /// loopback registries (any other registry fails as unreachable, without traffic).
    #[arg(long)]
    kubelet: bool,
    /// The kubelet's node name.
    #[arg(long, default_value = "kube-sim-node", requires = "kubelet")]
    node_name: String,
    /// First image pull backoff (upstream: 10 s).
    #[arg(long, default_value_t = 10_000, requires = "kubelet")]
    image_backoff_initial_ms: u64,
    /// Image pull backoff cap (upstream: 300 s).
    #[arg(long, default_value_t = 300_000, requires = "kubelet")]
    image_backoff_max_ms: u64,
    /// The kubelet's CredentialProviderConfig file or directory (exec credential providers).
    #[arg(long, requires = "kubelet")]
    image_credential_provider_config: Option<PathBuf>,
    /// Where the credential provider executables are.
    #[arg(long, requires = "kubelet")]
    image_credential_provider_bin_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut opts = kube_sim::Options {
        port: cli.port,
        openshift: cli.openshift,
        // Always TLS: the kubeconfig written below must work with kubectl (see `tls` above).
        tls: true,
        rbac: cli.rbac,
        token: cli.token,
        ..Default::default()
    };
    opts.faults.latency = Duration::from_millis(cli.latency_ms);
    if cli.kubelet {
        opts.kubelet = Some(kube_sim::KubeletOptions {
            node_name: cli.node_name.clone(),
            image_backoff_initial: Duration::from_millis(cli.image_backoff_initial_ms),
            image_backoff_max: Duration::from_millis(cli.image_backoff_max_ms),
            image_credential_provider_config: cli.image_credential_provider_config.clone(),
            image_credential_provider_bin_dir: cli.image_credential_provider_bin_dir.clone(),
            ..Default::default()
        });
    }
    for spec in &cli.error_rates {
        let parts: Vec<&str> = spec.split(':').collect();
        let [verb, code, rate] = parts.as_slice() else {
            return Err(format!("--error-rate wants VERB:CODE:RATE, got {spec:?}").into());
        };
        let error = match *code {
            "500" => kube_sim::InjectedError::Internal,
            "503" => kube_sim::InjectedError::Unavailable,
            "429" => kube_sim::InjectedError::TooManyRequests { retry_after: 1 },
            other => return Err(format!("--error-rate: unsupported code {other}").into()),
        };
        let verb = if *verb == "*" { None } else { Some(*verb) };
        let rule = kube_sim::ErrorRule::new(verb, None, error, None).with_rate(rate.parse()?);
        opts.faults.rules.push(rule);
    }
    for pair in &cli.sa_tokens {
        let (token, user) = pair
            .split_once('=')
            .ok_or("--service-account-token wants TOKEN=USERNAME")?;
        let parts: Vec<&str> = user.split(':').collect();
        let info = match parts.as_slice() {
            ["system", "serviceaccount", ns, name] => kube_sim::UserInfo::service_account(ns, name),
            _ => kube_sim::UserInfo::user(user, &[]),
        };
        opts.identities.insert(token.to_string(), info);
    }
    let handle = kube_sim::Server::start(opts).await?;
    if let Some(path) = &cli.kubeconfig_out {
        handle.write_kubeconfig(path)?;
    }
    if let Some(path) = &cli.ca_out {
        handle.write_ca(path)?;
    }
    println!("kube-sim listening on {}", handle.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

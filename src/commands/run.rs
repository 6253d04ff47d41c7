//! `pullsecretd run`: the daemon, until SIGTERM/SIGINT.
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use pullsecretd::config::Config;
use pullsecretd::credhelper::agent;
use pullsecretd::daemon;

use super::ServedAgent;
use crate::cli::{Failure, RunArgs, bad_input, kube_client_at, source_context};

/// The shard count: `--shards`, else the config's `shards:`, else 1. A config asking for shards
/// cannot run without leader election: the shards' Leases are the only thing keeping two
/// replicas from writing one namespace.
fn shards_to_run(args: &RunArgs, config: &Config) -> anyhow::Result<u32> {
    let shards = args.shards.or(config.shards).unwrap_or(1);
    if args.no_leader_election && shards > 1 {
        anyhow::bail!(
            "the config asks for {shards} shards, which needs leader election: drop \
             --no-leader-election, or shards: from the config"
        );
    }
    Ok(shards)
}

/// `run`: starts the daemon and stops it gracefully on SIGTERM/SIGINT.
pub(crate) fn run_daemon(args: &RunArgs) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(|error| Failure { status: 1, error })?;
    runtime.block_on(async {
        let config = Config::load(&args.sources.config).map_err(bad_input)?;
        let shards = shards_to_run(args, &config).map_err(bad_input)?;
        let sources = source_context(&config, args.sources.helper_timeout).map_err(bad_input)?;
        let (client, url) = kube_client_at(&args.kube).await.map_err(bad_input)?;
        pullsecretd::cluster::wait_until_reachable(&client, &url, args.start_timeout)
            .await
            .map_err(bad_input)?;
        // Bound before the daemon starts: a socket in use is a start-up error.
        let agent_socket = if args.agent {
            Some(bind_agent().map_err(bad_input)?)
        } else {
            None
        };
        let lease = (!args.no_leader_election).then(|| pullsecretd::cluster::lease::LeaseConfig {
            namespace: args
                .lease_namespace
                .clone()
                .or_else(|| {
                    std::env::var("POD_NAMESPACE")
                        .ok()
                        .filter(|ns| !ns.is_empty())
                })
                .unwrap_or_else(|| client.default_namespace().to_string()),
            name: args
                .lease_name
                .clone()
                .unwrap_or_else(|| default_lease_name(config.instance_name())),
            identity: args.identity.clone().unwrap_or_else(default_identity),
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
            shards,
        });
        let options = daemon::DaemonOptions {
            config_path: args.sources.config.clone(),
            config: Some(config),
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
        let agent = agent_socket
            .map(|(socket, listener)| ServedAgent::serve(socket, listener, running.lookup()));
        if let Some(address) = running.address {
            tracing::info!(%address, "Serving /healthz, /readyz and /metrics.");
        }
        super::wait_for_signal()
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

/// Binds the agent socket where the helper looks for it.
fn bind_agent() -> anyhow::Result<(PathBuf, tokio::net::UnixListener)> {
    let socket = agent::socket_path(|name| std::env::var_os(name)).context(
        "--agent: set PULLSECRETD_AGENT_SOCKET or XDG_RUNTIME_DIR to say where the socket goes",
    )?;
    let listener = agent::bind(&socket)?;
    Ok((socket, listener))
}

/// One Lease per instance: two instances never elect one leader between them.
pub(crate) fn default_lease_name(instance: &str) -> String {
    if instance == pullsecretd::model::managed::DEFAULT_INSTANCE {
        "pullsecretd".to_string()
    } else {
        format!("pullsecretd-{instance}")
    }
}

/// `$POD_NAME`, else the host name, else a fixed name.
pub(crate) fn default_identity() -> String {
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

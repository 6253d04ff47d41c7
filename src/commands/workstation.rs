//! `pullsecretd workstation`: sync the user's logins into the kube context's projects and
//! serve the credential-helper agent.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use pullsecretd::config::Config;
use pullsecretd::credhelper::agent;
use pullsecretd::credhelper::protocol;
use pullsecretd::source::SourceContext;
use pullsecretd::source::service::{CredentialService, Lookup};
use pullsecretd::workstation::{self, ConfigSource, WatchedFile, Workstation};

use super::ServedAgent;
use crate::cli::{Failure, WorkstationArgs, bad_input, kube_client, source_context};

/// `workstation`: watch the auth files, sync on change, serve the agent socket.
pub(crate) fn run_workstation(args: WorkstationArgs) -> Result<(), Failure> {
    let env = |name: &str| std::env::var_os(name);
    let config_path = args
        .config
        .clone()
        .or_else(|| protocol::default_config_path(env).filter(|p| p.is_file()));
    let config = match &config_path {
        Some(path) => Some(Config::load(path).map_err(bad_input)?),
        None => None,
    };
    let mut files = workstation::standard_files(env);
    if let Some(config) = &config {
        files.extend(files_named_in(config));
    }
    // A config naming ~/.docker/config.json (as most do) must not watch it twice.
    let mut seen = std::collections::BTreeSet::new();
    files.retain(|file| seen.insert(std::path::absolute(&file.path).unwrap_or(file.path.clone())));
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
        // Served until this function returns; the socket is removed then.
        let _agent = match agent::socket_path(env).filter(|_| !args.no_agent) {
            Some(socket) => {
                let listener = agent::bind(&socket).map_err(bad_input)?;
                Some(ServedAgent::serve(
                    socket,
                    listener,
                    Lookup::Service(service.clone()),
                ))
            }
            None => None,
        };
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
        let watcher = pullsecretd::watch::FileWatcher::new(paths).map_err(bad_input)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watcher.forward(tx));
        for file in &files {
            tracing::info!(file = %file.path.display(), "Watching.");
        }
        // SIGTERM/SIGINT: the pass under way finishes, the socket goes, exit 0.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let signals = tokio::spawn(async move {
            let outcome = super::wait_for_signal().await;
            let _ = stop_tx.send(true);
            outcome
        });
        let throttle = args.kube.throttle();
        Workstation::new(client, throttle, source, service)
            .run(rx, args.debounce, refresh, stop)
            .await;
        if signals.is_finished()
            && let Ok(Err(error)) = signals.await
        {
            return Err(Failure { status: 1, error });
        }
        tracing::info!("Stopped.");
        Ok(())
    })
}

/// The auth files a config's registries read, so a fixed config follows their changes too.
pub(crate) fn files_named_in(config: &Config) -> Vec<WatchedFile> {
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

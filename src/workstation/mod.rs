//! Workstation mode (a trigger): when a developer logs in with `docker login`, `podman login`
//! or `skopeo login`, the pull secrets of their projects follow — through the same
//! observe → plan → diff → apply pass as `once` ([`crate::reconcile`]), run on file changes.
//!
//! A burst of changes is debounced into one pass. A file that vanished or is half-written
//! keeps its last good content (its registries, and each registry's credential). Workstation
//! passes run the diff in its add-only mode: they create and update only Secrets of their own
//! instance (`workstation` unless the config names one) and add links; they never delete,
//! recreate, unlink or take over anything (`once` cleans up), so a file going away can never
//! delete a cluster Secret and a team's Secret in the same namespace is never replaced. Must not
//! run a second copy of the pipeline: it only decides *when* to run it and with which config.

pub mod files;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube::Client;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cluster::{ApiError, ApplyOptions, Throttle};
use crate::config::Config;
use crate::diff::Mode;
use crate::model::managed::WORKSTATION_INSTANCE;
use crate::reconcile;
use crate::source::service::CredentialService;
use crate::watch::{MAX_DELAY, settle};
pub use files::{FileRegistries, WatchedFile, default_config_now, standard_files};

/// Quiet time after the last change before a pass runs.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// Which config the passes use.
pub enum ConfigSource {
    /// A config file, loaded once; its sources are read again on each pass.
    Fixed(Box<Config>),
    /// Built from the watched files on each pass: every registry in them, one pull secret
    /// each, in `namespace` (the kube context's).
    Default {
        files: Vec<WatchedFile>,
        namespace: String,
    },
}

/// Counters for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Passes run.
    pub passes: AtomicU64,
    /// Passes that had something to write.
    pub applies: AtomicU64,
    /// Individual changes made.
    pub changes: AtomicU64,
}

/// Why a pass could not run. Source failures are not errors: those registries are held.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Cluster(#[from] ApiError),
}

/// The workstation's state between passes.
pub struct Workstation {
    client: Client,
    throttle: Throttle,
    options: ApplyOptions,
    concurrency: usize,
    source: ConfigSource,
    /// Shared with the agent: one Vault session and one cache in the process.
    service: Arc<CredentialService>,
    registries: FileRegistries,
    pub stats: Arc<Stats>,
    /// Problems logged by earlier passes (project and message), not logged again.
    logged_problems: std::collections::BTreeSet<String>,
}

impl Workstation {
    pub fn new(
        client: Client,
        throttle: Throttle,
        source: ConfigSource,
        service: Arc<CredentialService>,
    ) -> Self {
        Self {
            client,
            throttle,
            options: ApplyOptions {
                events: false,
                mode: Mode::AddOnly,
                ..ApplyOptions::for_instance(WORKSTATION_INSTANCE)
            },
            concurrency: 4,
            source,
            service,
            registries: FileRegistries::default(),
            stats: Arc::new(Stats::default()),
            logged_problems: std::collections::BTreeSet::new(),
        }
    }

    /// The config for this pass: the fixed one, or the default rebuilt from the files (a file
    /// that does not parse keeps what it named before; its error is logged with file:line).
    /// Either way it runs as the `workstation` instance unless it names another, and never
    /// adopts.
    fn config(&mut self) -> Option<Config> {
        let mut config = self.source_config()?;
        config
            .instance
            .get_or_insert_with(|| WORKSTATION_INSTANCE.to_string());
        for pull_secret in &mut config.pull_secrets {
            pull_secret.adopt = false;
        }
        self.options.instance = config.instance_name().to_string();
        Some(config)
    }

    fn source_config(&mut self) -> Option<Config> {
        match &self.source {
            ConfigSource::Fixed(config) => Some((**config).clone()),
            ConfigSource::Default { files, namespace } => {
                for problem in self.registries.reload(files) {
                    tracing::warn!(%problem, "Keeping the last good content of an auth file.");
                }
                match self.registries.default_config(files, namespace) {
                    Ok(config) => config,
                    Err(error) => {
                        tracing::error!(%error, "The default config is invalid; skipping.");
                        None
                    }
                }
            }
        }
    }

    /// One pass: read the sources, plan, diff against the cluster, apply what is missing.
    pub async fn pass(&mut self) -> Result<(), PassError> {
        self.stats.passes.fetch_add(1, Ordering::Relaxed);
        let Some(config) = self.config() else {
            tracing::info!("No registries in the watched files yet.");
            return Ok(());
        };
        let refreshed = self.service.refresh(Some(config.clone())).await;
        for failure in &refreshed.failures {
            tracing::warn!(%failure, "A registry could not be read; its Secrets are held.");
        }
        let diff = reconcile::diff_cluster(
            &self.client,
            &self.throttle,
            &config,
            &refreshed.credentials,
            Mode::AddOnly,
        )
        .await?;
        if diff.action_count() == 0 {
            let problems = diff
                .namespaces
                .iter()
                .flat_map(|(project, work)| work.diff.problems.iter().map(move |p| (project, p)));
            self.log_new_problems(problems);
            tracing::debug!("Cluster already up to date.");
            return Ok(());
        }
        self.stats.applies.fetch_add(1, Ordering::Relaxed);
        let report = reconcile::apply_diff(
            &self.client,
            &self.throttle,
            &self.options,
            diff,
            self.concurrency,
        )
        .await;
        for project in &report.projects {
            self.stats
                .changes
                .fetch_add(project.changes.len() as u64, Ordering::Relaxed);
            for change in &project.changes {
                tracing::info!(project = %project.project, %change, "Synced.");
            }
            for failure in &project.failures {
                tracing::warn!(project = %project.project, %failure, "A write failed; retrying on the next change.");
            }
        }
        let problems = report
            .projects
            .iter()
            .flat_map(|p| p.problems.iter().map(move |problem| (&p.project, problem)));
        self.log_new_problems(problems);
        Ok(())
    }

    /// Logs each problem once, until it goes away: a pass runs at every change of the files.
    fn log_new_problems<'a>(
        &mut self,
        problems: impl Iterator<Item = (&'a String, &'a crate::plan::Problem)>,
    ) {
        let mut now = std::collections::BTreeSet::new();
        for (project, problem) in problems {
            let key = format!("{project}\u{0}{}", problem.message);
            if !self.logged_problems.contains(&key) {
                tracing::warn!(%project, reason = problem.reason, "{}", problem.message);
            }
            now.insert(key);
        }
        self.logged_problems = now;
    }

    /// Runs a pass now, then one after each debounced burst of `changes`, and every `refresh`
    /// (Vault rotation), until `changes` closes or `stop` turns true. A stop never interrupts
    /// a pass: it is seen between passes, so what a pass started it finishes.
    pub async fn run(
        mut self,
        mut changes: mpsc::Receiver<()>,
        debounce: Duration,
        refresh: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        self.logged_pass().await;
        let mut timer = tokio::time::interval_at(Instant::now() + refresh, refresh);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some(()) = change else { return };
                    tokio::select! {
                        settled = settle(&mut changes, debounce, MAX_DELAY) => if !settled { return },
                        _ = stopped(&mut stop) => return,
                    }
                }
                _ = timer.tick() => {}
                _ = stopped(&mut stop) => return,
            }
            self.logged_pass().await;
        }
    }

    async fn logged_pass(&mut self) {
        if let Err(error) = self.pass().await {
            tracing::warn!(%error, "Sync pass failed; retrying on the next change.");
        }
    }
}

/// Resolves once `stop` is true; never when its sender is gone without saying so.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        std::future::pending::<()>().await;
    }
}

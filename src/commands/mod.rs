//! One module per subcommand (binary edge): each reads its config, lowers its arguments
//! (`crate::cli`), runs one trigger of the library's pipeline and maps the result to an exit
//! status. What several commands share is here: reading every source once and the exit
//! statuses for held Secrets.

pub(crate) mod check;
pub(crate) mod credential_provider;
pub(crate) mod docs;
pub(crate) mod helper;
pub(crate) mod once;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod status;
pub(crate) mod workstation;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::Context as _;

use pullsecretd::config::Config;
use pullsecretd::credhelper::agent;
use pullsecretd::plan as planner;
use pullsecretd::render::counted;
use pullsecretd::source::service::Lookup;
use pullsecretd::source::{Inventory, Resolved};

use crate::cli::{Failure, SourceArgs, bad_input, source_context};

/// Reads every registry once. Failed registries are returned as messages; their Secrets are
/// held by the planner.
pub(crate) async fn read_sources(
    config: &Config,
    sources: &SourceArgs,
) -> Result<(BTreeMap<String, Resolved>, Vec<String>), Failure> {
    let context = source_context(config, sources.helper_timeout).map_err(bad_input)?;
    let mut inventory = Inventory::new();
    let report = inventory.refresh(config, &context).await;
    let failures = report
        .failures
        .iter()
        .map(|f| format!("registry {}: {}", f.registry, f.error))
        .collect();
    Ok((inventory.credentials(), failures))
}

/// Exit 2 when a registry could not be read or a pull secret could not be rendered (their
/// Secrets are held), after saying which: each registry's error on its own line, then one
/// summary as the command's error.
pub(crate) fn held_outcome<'a>(
    config: &Config,
    source_failures: &[String],
    held: impl IntoIterator<Item = &'a planner::HeldSecret>,
) -> Result<(), Failure> {
    let not_rendered: BTreeSet<&str> = held
        .into_iter()
        .filter(|h| matches!(h.reason, planner::HoldReason::NotRendered { .. }))
        .map(|h| h.name.as_str())
        .collect();
    for failure in source_failures {
        eprintln!("error: {failure}");
    }
    let mut parts = Vec::new();
    if !source_failures.is_empty() {
        parts.push(format!(
            "{} of {} could not be read",
            source_failures.len(),
            counted(config.registries.len(), "registry", "registries")
        ));
    }
    if !not_rendered.is_empty() {
        parts.push(format!(
            "{} could not be rendered ({})",
            counted(not_rendered.len(), "secret", "secrets"),
            not_rendered.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if parts.is_empty() {
        return Ok(());
    }
    Err(bad_input(anyhow::anyhow!(
        "{}; their secrets are held (left as they are)",
        parts.join(" and ")
    )))
}

/// An agent socket being served (`workstation`, `run --agent`): served until dropped, then
/// removed, so a stopped process leaves no socket behind.
pub(crate) struct ServedAgent {
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ServedAgent {
    /// Serves credential-helper calls on `listener` (bound at `socket`) from `lookup`.
    pub(crate) fn serve(
        socket: PathBuf,
        listener: tokio::net::UnixListener,
        lookup: Lookup,
    ) -> Self {
        tracing::info!(socket = %socket.display(), "Serving credential-helper calls.");
        let task = tokio::spawn(agent::serve(listener, lookup));
        Self { socket, task }
    }
}

impl Drop for ServedAgent {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Resolves at the first SIGTERM or SIGINT.
pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

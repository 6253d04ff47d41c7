//! One module per subcommand (binary edge): each reads its config, lowers its arguments
//! (`crate::cli`), runs one trigger of the library's pipeline and maps the result to an exit
//! status. What several commands share is here: reading every source once and the exit
//! statuses for held Secrets.

pub(crate) mod check;
pub(crate) mod helper;
pub(crate) mod once;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod workstation;

use std::collections::{BTreeMap, BTreeSet};

use pullsecretd::config::Config;
use pullsecretd::plan as planner;
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

/// Exit 2 when a pull secret could not be rendered (its Secrets are held), after saying which.
pub(crate) fn rendered_outcome<'a>(
    held: impl IntoIterator<Item = &'a planner::HeldSecret>,
) -> Result<(), Failure> {
    let not_rendered: BTreeSet<&str> = held
        .into_iter()
        .filter(|h| matches!(h.reason, planner::HoldReason::NotRendered { .. }))
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
pub(crate) fn sources_outcome(config: &Config, failures: &[String]) -> Result<(), Failure> {
    if failures.is_empty() {
        return Ok(());
    }
    for failure in failures {
        eprintln!("error: {failure}");
    }
    Err(bad_input(anyhow::anyhow!(
        "{} of {} could not be read; their secrets are held (left as they are)",
        failures.len(),
        pullsecretd::render::counted(config.registries.len(), "registry", "registries")
    )))
}

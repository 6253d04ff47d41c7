//! Source stage (I/O through [`resolve_all`]): the last good credential of every registry.
//!
//! A refresh reads every registry once; a registry whose read fails keeps the credential it
//! last read successfully, and the failure is reported with that credential's age. Nothing is
//! dropped or blanked because a source failed: an entry goes only when the config stops naming
//! the registry, or names it with another source (a reload pointing it at another Vault path
//! or file): a credential is never served under a config it was not read with. Must not hold
//! anything but credentials the config still asks for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::verify::{self, CheckRecord, Gate, Rejection};
use super::{Error, Resolved, SourceContext, resolve_all_since};
use crate::config::{Config, RegistryConfig};

/// A registry's last good credential and when it was read.
#[derive(Clone, Debug)]
pub struct LastGood {
    pub resolved: Resolved,
    pub read_at: Instant,
    /// The registry's config it was read with: another config means another credential.
    pub source: RegistryConfig,
}

/// Every registry's last good credential.
#[derive(Debug, Default)]
pub struct Inventory {
    entries: BTreeMap<String, LastGood>,
    /// `verify:` registries whose newest credential the registry refused (not in `entries`).
    rejected: BTreeMap<String, Rejection>,
}

/// What a refresh did.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// Registries read successfully whose version changed (or that are new).
    pub changed: Vec<String>,
    /// Registries read successfully with the version they already had.
    pub unchanged: Vec<String>,
    /// Registries whose read failed; each keeps its last good credential, if any. A changed
    /// credential that `verify:` refused or could not check (and holds) is one of these.
    pub failures: Vec<RefreshFailure>,
    /// The `verify:` checks made against registries.
    pub checks: Vec<CheckRecord>,
    /// Registries whose changed credential was refused in this refresh (not before).
    pub newly_rejected: Vec<String>,
}

/// A registry whose read failed, and how old the credential it keeps is.
#[derive(Debug)]
pub struct RefreshFailure {
    pub registry: String,
    pub error: Error,
    /// Age of the last good credential still served; `None` when there never was one.
    pub last_good_age: Option<Duration>,
}

impl fmt::Display for RefreshFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "registry {}: {}", self.registry, self.error)?;
        match self.last_good_age {
            Some(age) => write!(
                f,
                "; keeping the credential read {} ago",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            ),
            None => f.write_str("; no credential was ever read, so its secrets are held"),
        }
    }
}

impl Inventory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every registry of `config` once and records what it got. Unpinned KV v2 secrets
    /// whose version has not moved are only version-polled (metadata), not read again.
    pub async fn refresh(&mut self, config: &Config, ctx: &SourceContext) -> RefreshReport {
        self.forget_stale(config);
        self.read(config, ctx).await
    }

    /// Reads only the registries named in `due` (the daemon refreshes each on its own
    /// schedule); the others keep what they have.
    pub async fn refresh_only(
        &mut self,
        config: &Config,
        ctx: &SourceContext,
        due: &BTreeSet<String>,
    ) -> RefreshReport {
        let mut subset = config.clone();
        subset.registries.retain(|name, _| due.contains(name));
        self.read(&subset, ctx).await
    }

    /// Drops registries the config no longer names, and those it now names with another
    /// server or source. Returns the names dropped.
    pub fn forget_stale(&mut self, config: &Config) -> Vec<String> {
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(name, entry)| config.registries.get(*name) != Some(&entry.source))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &stale {
            self.entries.remove(name);
        }
        self.rejected
            .retain(|name, _| config.registries.contains_key(name) && !stale.contains(name));
        stale
    }

    async fn read(&mut self, config: &Config, ctx: &SourceContext) -> RefreshReport {
        let resolution = resolve_all_since(config, ctx, &self.credentials()).await;
        let now = Instant::now();
        let mut report = RefreshReport::default();
        for (name, resolved) in resolution.credentials {
            let Some(source) = config.registries.get(&name).cloned() else {
                continue;
            };
            let same = self
                .entries
                .get(&name)
                .is_some_and(|old| old.resolved.version == resolved.version);
            if same {
                // Back to the published version (someone undid a refused change).
                self.rejected.remove(&name);
                report.unchanged.push(name.clone());
            } else {
                if let Gate::Hold(error) = self.gate(&source, &resolved, &mut report).await {
                    report.failures.push(RefreshFailure {
                        registry: name.clone(),
                        error,
                        last_good_age: self
                            .entries
                            .get(&name)
                            .map(|e| now.duration_since(e.read_at)),
                    });
                    continue;
                }
                report.changed.push(name.clone());
            }
            let read_at = now;
            self.entries.insert(
                name,
                LastGood {
                    resolved,
                    read_at,
                    source,
                },
            );
        }
        for (registry, error) in resolution.errors {
            let last_good_age = self
                .entries
                .get(&registry)
                .map(|entry| now.duration_since(entry.read_at));
            report.failures.push(RefreshFailure {
                registry,
                error,
                last_good_age,
            });
        }
        report
    }

    /// Publish, or hold a changed credential of a `verify:` registry (see [`verify::gate`]).
    async fn gate(
        &mut self,
        source: &RegistryConfig,
        resolved: &Resolved,
        report: &mut RefreshReport,
    ) -> Gate {
        let Some(policy) = &source.verify else {
            return Gate::Publish;
        };
        let checks_before = report.checks.len();
        let gate = verify::gate(
            source,
            policy,
            resolved,
            &mut self.rejected,
            &mut report.checks,
        )
        .await;
        let refused_now = report.checks[checks_before..]
            .iter()
            .any(|check| check.result == "rejected");
        if refused_now {
            report.newly_rejected.push(source.name.clone());
        }
        gate
    }

    /// Each `verify:` registry whose newest credential was refused, and why (no value).
    pub fn rejected(&self) -> BTreeMap<String, String> {
        self.rejected
            .iter()
            .map(|(name, rejection)| (name.clone(), rejection.describe(name)))
            .collect()
    }

    /// The last good credential of each registry that has one.
    pub fn credentials(&self) -> BTreeMap<String, Resolved> {
        self.entries
            .iter()
            .map(|(name, entry)| (name.clone(), entry.resolved.clone()))
            .collect()
    }

    /// Records that `registry`'s credential now ends at `expires_at` (its lease was renewed).
    pub fn set_expiry(&mut self, registry: &str, expires_at: std::time::SystemTime) {
        if let Some(entry) = self.entries.get_mut(registry) {
            entry.resolved.expires_at = Some(expires_at);
        }
    }

    pub fn get(&self, registry: &str) -> Option<&LastGood> {
        self.entries.get(registry)
    }
}

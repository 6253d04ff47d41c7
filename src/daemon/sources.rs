//! The daemon's source schedule (source I/O): reads each registry when it is due — every
//! `refresh`, sooner when its credential expires (a lease nearing its end, KV `expires_at`
//! metadata, a JWT `exp`: [`crate::model::expiry`]), after a failure (jittered backoff from one
//! second) or a reload that changed its source — and publishes a [`Snapshot`] after every read
//! that changed something. A reconcile never reads a source; the agent of `run --agent` answers
//! from the same snapshots. Leases of dynamic Vault secrets are kept by [`super::leases`] in the
//! same task. A credential past its expiry is taken out of the snapshot (and reported) at that
//! moment, whether or not its source could be read: it is never served expired.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::leases::{LeaseKeeper, VersionsInUse, jitter};
use super::stopped;
use crate::config::Config;
use crate::model::expiry;
use crate::source::service::Snapshot;
use crate::source::{Inventory, SourceContext};
use crate::telemetry::{Metrics, ReadLabels, RegistryLabel};

/// Which credential versions the cluster's Secrets carry now (from the watch caches).
pub type InUse = Arc<dyn Fn() -> VersionsInUse + Send + Sync>;

/// How often each registry is read: the shortest `refresh` of the pull secrets using it.
pub fn refresh_interval(config: &Config, registry: &str) -> Duration {
    config.refresh_interval(registry)
}

/// When each registry is read next: every `refresh` after a good read; after a failed one,
/// with jittered exponential backoff from one second, growing to the refresh interval — a
/// failed source is retried long before its next refresh is due.
#[derive(Default)]
struct SourceSchedule {
    next_due: BTreeMap<String, tokio::time::Instant>,
    /// Registries whose last read failed, with their backoff.
    failing: BTreeMap<String, backon::ExponentialBackoff>,
}

/// The first retry of a failed source.
const FIRST_RETRY: Duration = Duration::from_secs(1);

impl SourceSchedule {
    /// Follows `config`: registries it no longer names are dropped, new ones and `reread`
    /// (their source config changed) are due at once.
    fn follow(&mut self, config: &Config, reread: &[String], now: tokio::time::Instant) {
        self.next_due
            .retain(|name, _| config.registries.contains_key(name));
        self.failing
            .retain(|name, _| config.registries.contains_key(name));
        for name in config.registries.keys() {
            self.next_due.entry(name.clone()).or_insert(now);
        }
        for name in reread {
            if config.registries.contains_key(name) {
                self.next_due.insert(name.clone(), now);
                self.failing.remove(name);
            }
        }
    }

    fn due(&self, now: tokio::time::Instant) -> BTreeSet<String> {
        self.next_due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Schedules the registries just read: good ones at their refresh or before their
    /// credential's expiry (`expiries`), whichever is sooner; failed ones at their next backoff
    /// step (never later than the refresh).
    fn after_read(
        &mut self,
        config: &Config,
        read: &BTreeSet<String>,
        failed: &BTreeSet<String>,
        expiries: &BTreeMap<String, SystemTime>,
        now: tokio::time::Instant,
    ) {
        use backon::BackoffBuilder as _;
        for name in read {
            let refresh = refresh_interval(config, name);
            let wait = if failed.contains(name) {
                let backoff = self.failing.entry(name.clone()).or_insert_with(|| {
                    backon::ExponentialBuilder::default()
                        .with_jitter()
                        .with_min_delay(FIRST_RETRY)
                        .with_max_delay(refresh)
                        .without_max_times()
                        .build()
                });
                backoff.next().unwrap_or(refresh).min(refresh)
            } else {
                self.failing.remove(name);
                let expires_at = expiries.get(name).copied();
                expiry::next_read_after(refresh, expires_at, SystemTime::now(), jitter())
            };
            self.next_due.insert(name.clone(), now + wait);
        }
    }

    /// Moves `registry`'s next read to `at` when that is sooner (its lease is ending).
    fn read_by(&mut self, registry: &str, at: tokio::time::Instant) {
        if let Some(due) = self.next_due.get_mut(registry)
            && at < *due
        {
            *due = at;
        }
    }

    fn next_wake(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        self.next_due
            .values()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(300))
    }
}

/// Reads each registry when it is due and publishes a snapshot after every read that changed
/// something (and after the first). A registry whose source config changed on reload is
/// forgotten at once (its old credential is never served under the new config) and read again.
pub async fn run_sources(
    mut config: watch::Receiver<Arc<Config>>,
    context: SourceContext,
    publish: watch::Sender<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    in_use: InUse,
    mut stop: watch::Receiver<bool>,
) {
    let mut inventory = Inventory::new();
    let mut schedule = SourceSchedule::default();
    let mut leases = LeaseKeeper::default();
    // The last read's error of each registry whose read failed (texts without values).
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut expired: BTreeSet<String> = BTreeSet::new();
    let mut generation = 0u64;
    loop {
        let current = Arc::clone(&config.borrow_and_update());
        let forgotten = inventory.forget_stale(&current);
        let now = tokio::time::Instant::now();
        schedule.follow(&current, &forgotten, now);
        let due = schedule.due(now);
        let mut changed: BTreeSet<String> = forgotten.iter().cloned().collect();
        let mut read_any = false;
        if !due.is_empty() {
            read_any = true;
            let rejected_before = inventory.rejected();
            let report = inventory.refresh_only(&current, &context, &due).await;
            let mut failed: BTreeSet<String> =
                report.failures.iter().map(|f| f.registry.clone()).collect();
            // A credential that is expired as read is retried on the failure backoff.
            failed.extend(expired_registries(&inventory, &due, SystemTime::now()));
            let expiries = read_deadlines(&inventory, &due);
            let read_at = tokio::time::Instant::now();
            schedule.after_read(&current, &due, &failed, &expiries, read_at);
            count_reads(&metrics, &report);
            changed.extend(report.changed.iter().cloned());
            // A refused credential changes nothing published, but its namespaces are told (and
            // told again when the refusal is over).
            changed.extend(report.newly_rejected.iter().cloned());
            let rejected_now = inventory.rejected();
            changed.extend(
                rejected_before
                    .into_keys()
                    .filter(|name| !rejected_now.contains_key(name)),
            );
            for name in report.changed.iter().chain(&report.unchanged) {
                failures.remove(name);
            }
            for failure in &report.failures {
                failures.insert(failure.registry.clone(), failure.to_string());
            }
        }
        if let Some(session) = &context.vault {
            leases.track(&inventory, &current, now);
            let round = leases.renew_due(session, &current, now).await;
            read_any |= !round.new_expiry.is_empty();
            for (registry, expires_at) in round.new_expiry {
                inventory.set_expiry(&registry, expires_at);
            }
            for (registry, at) in round.read_by {
                schedule.read_by(&registry, at);
            }
            if leases.has_replaced() {
                leases.revoke_unused(session, &current, &in_use()).await;
            }
        }
        let all: BTreeSet<String> = current.registries.keys().cloned().collect();
        let expired_now = expired_registries(&inventory, &all, SystemTime::now());
        for registry in expired_now.symmetric_difference(&expired) {
            changed.insert(registry.clone());
            if expired_now.contains(registry) {
                tracing::error!(
                    %registry,
                    "The registry's credential has expired and could not be renewed or read \
                     again; it is no longer served and its Secrets are held."
                );
            }
        }
        expired = expired_now;
        if (read_any && generation == 0) || !changed.is_empty() {
            generation += 1;
            let mut snapshot = snapshot_of(&inventory, &current, changed, generation);
            snapshot.failures = failures.clone();
            publish.send_replace(Arc::new(snapshot));
        } else if read_any {
            // Ages (and renewed expiries) still move on: keep them current for the metrics.
            publish.send_modify(|snapshot| {
                let mut updated =
                    snapshot_of(&inventory, &current, BTreeSet::new(), snapshot.generation);
                updated.credentials = snapshot.credentials.clone();
                updated.rejected = snapshot.rejected.clone();
                updated.failures = failures.clone();
                *snapshot = Arc::new(updated);
            });
        }
        let wake = [
            Some(schedule.next_wake(now)),
            leases.next_wake(),
            next_expiry(&inventory, &expired),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(300));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            changed = config.changed() => if changed.is_err() { return },
            () = stopped(&mut stop) => return,
        }
    }
}

/// Of `registries`, those whose last good credential has expired by `now`.
fn expired_registries(
    inventory: &Inventory,
    registries: &BTreeSet<String>,
    now: SystemTime,
) -> BTreeSet<String> {
    registries
        .iter()
        .filter(|name| {
            inventory
                .get(name)
                .and_then(|last_good| last_good.resolved.expires_at)
                .is_some_and(|expires_at| expires_at <= now)
        })
        .cloned()
        .collect()
}

/// The expiries that decide when `registries` are read next. A renewable lease's end is left
/// out: the lease keeper renews it and asks for a read when renewing stops working.
fn read_deadlines(
    inventory: &Inventory,
    registries: &BTreeSet<String>,
) -> BTreeMap<String, SystemTime> {
    registries
        .iter()
        .filter_map(|name| {
            let resolved = &inventory.get(name)?.resolved;
            if resolved.lease.as_ref().is_some_and(|lease| lease.renewable) {
                return None;
            }
            Some((name.clone(), resolved.expires_at?))
        })
        .collect()
}

/// When the next credential still served expires, as an instant to wake at.
fn next_expiry(inventory: &Inventory, expired: &BTreeSet<String>) -> Option<tokio::time::Instant> {
    let now = SystemTime::now();
    inventory
        .credentials()
        .into_iter()
        .filter(|(name, _)| !expired.contains(name))
        .filter_map(|(_, resolved)| resolved.expires_at)
        .min()
        .map(|at| tokio::time::Instant::now() + expiry::remaining(at, now))
}

fn count_reads(metrics: &Metrics, report: &crate::source::RefreshReport) {
    for (names, result) in [
        (&report.changed, "changed"),
        (&report.unchanged, "unchanged"),
    ] {
        for registry in names {
            metrics
                .source_reads
                .get_or_create(&ReadLabels {
                    registry: registry.clone(),
                    result,
                })
                .inc();
        }
    }
    crate::source::verify::count_checks(metrics, &report.checks);
    for failure in &report.failures {
        tracing::warn!(
            registry = %failure.registry,
            error = %failure.error,
            last_good_age_seconds = failure.last_good_age.map(|age| age.as_secs()),
            "Reading a registry failed."
        );
        let registry = failure.registry.clone();
        metrics
            .source_reads
            .get_or_create(&ReadLabels {
                registry: registry.clone(),
                result: "error",
            })
            .inc();
        metrics
            .source_errors
            .get_or_create(&RegistryLabel { registry })
            .inc();
    }
}

/// The snapshot of what `inventory` holds for `config`.
fn snapshot_of(
    inventory: &Inventory,
    config: &Config,
    changed: BTreeSet<String>,
    generation: u64,
) -> Snapshot {
    let now = SystemTime::now();
    let mut credentials = inventory.credentials();
    let expires_at: BTreeMap<String, SystemTime> = credentials
        .iter()
        .filter_map(|(name, resolved)| Some((name.clone(), resolved.expires_at?)))
        .collect();
    let expired: BTreeSet<String> = expires_at
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(name, _)| name.clone())
        .collect();
    credentials.retain(|name, _| !expired.contains(name));
    let complete = config
        .registries
        .keys()
        .all(|r| credentials.contains_key(r));
    let read_at = config
        .registries
        .keys()
        .filter_map(|r| Some((r.clone(), inventory.get(r)?.read_at)))
        .collect();
    Snapshot {
        credentials,
        read_at,
        failures: BTreeMap::new(),
        expires_at,
        expired,
        rejected: inventory.rejected(),
        changed,
        complete,
        generation,
    }
}

/// Watches the config file's directory (a ConfigMap mount swaps a symlink) and publishes each
/// valid new config; an invalid one is logged once (until the file changes again) and the
/// running config kept. Only writes, creations, renames and removals count: reading a file
/// (the daemon's own reads, a log reader) is not a change. A burst is debounced, but never
/// delays the reload past [`crate::workstation::MAX_DELAY`].
/// Gauges computed from time and the config, just before a scrape: each registry's credential
/// age, its refresh interval and its expiry (+Inf: none known).
pub fn record_ages(metrics: &Metrics, snapshot: &Snapshot, config: &Config) {
    for (registry, read_at) in &snapshot.read_at {
        metrics
            .credential_age
            .get_or_create(&RegistryLabel {
                registry: registry.clone(),
            })
            .set(read_at.elapsed().as_secs_f64());
    }
    for registry in config.registries.keys() {
        let label = RegistryLabel {
            registry: registry.clone(),
        };
        metrics
            .credential_refresh
            .get_or_create(&label)
            .set(refresh_interval(config, registry).as_secs_f64());
        let until_expiry = snapshot
            .expires_at
            .get(registry)
            .map_or(f64::INFINITY, |at| {
                match at.duration_since(SystemTime::now()) {
                    Ok(left) => left.as_secs_f64(),
                    Err(past) => -past.duration().as_secs_f64(),
                }
            });
        metrics
            .credential_expiry
            .get_or_create(&label)
            .set(until_expiry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config_with_refresh(refresh: Duration) -> Config {
        let yaml = [
            "registries:",
            "  reg: { server: quay.io, from: { helper: x } }",
            "pullSecrets:",
            "  - name: reg-pull",
            "    registries: [reg]",
            "    projects: { names: [a] }",
            &format!("    rotation: {{ refresh: {}s }}", refresh.as_secs()),
        ]
        .join("\n");
        Config::from_yaml(&yaml, Path::new("/config.yaml")).expect("valid config")
    }

    #[test]
    fn a_failed_source_is_retried_with_growing_backoff_capped_at_its_refresh() {
        let config = config_with_refresh(Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        let mut schedule = SourceSchedule::default();
        schedule.follow(&config, &[], start);
        let reg = BTreeSet::from(["reg".to_string()]);
        assert_eq!(schedule.due(start), reg, "new registries are read at once");

        let mut waits = Vec::new();
        let mut now = start;
        for _ in 0..12 {
            schedule.after_read(&config, &reg, &reg, &BTreeMap::new(), now);
            let next = schedule.next_due["reg"];
            waits.push(next - now);
            now = next;
        }
        // 1 s first (with jitter up to twice that), doubling, never past the refresh interval.
        assert!(
            waits[0] >= FIRST_RETRY && waits[0] <= 2 * FIRST_RETRY,
            "{waits:?}"
        );
        assert!(waits[3] >= Duration::from_secs(8), "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(60)),
            "{waits:?}"
        );
        assert_eq!(waits[11], Duration::from_secs(60), "{waits:?}");

        // A good read resets it: the next read is one refresh away, and a later failure starts
        // over at about a second.
        schedule.after_read(&config, &reg, &BTreeSet::new(), &BTreeMap::new(), now);
        assert_eq!(schedule.next_due["reg"] - now, Duration::from_secs(60));
        schedule.after_read(&config, &reg, &reg, &BTreeMap::new(), now);
        assert!(schedule.next_due["reg"] - now <= 2 * FIRST_RETRY);
    }

    #[test]
    fn a_credential_expiring_in_three_seconds_is_read_before_it_although_refresh_is_an_hour() {
        let config = config_with_refresh(Duration::from_secs(3600));
        let start = tokio::time::Instant::now();
        let mut schedule = SourceSchedule::default();
        schedule.follow(&config, &[], start);
        let reg = BTreeSet::from(["reg".to_string()]);
        let expiries = BTreeMap::from([(
            "reg".to_string(),
            SystemTime::now() + Duration::from_secs(3),
        )]);
        schedule.after_read(&config, &reg, &BTreeSet::new(), &expiries, start);
        let wait = schedule.next_due["reg"] - start;
        assert!(
            wait >= Duration::from_millis(1600) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        // A lease ending sooner moves the read earlier, never later.
        schedule.read_by("reg", start + Duration::from_millis(500));
        assert_eq!(schedule.next_due["reg"] - start, Duration::from_millis(500));
        schedule.read_by("reg", start + Duration::from_secs(60));
        assert_eq!(schedule.next_due["reg"] - start, Duration::from_millis(500));
    }

    #[test]
    fn a_registry_whose_source_changed_is_read_again_at_once() {
        let config = config_with_refresh(Duration::from_secs(3600));
        let start = tokio::time::Instant::now();
        let mut schedule = SourceSchedule::default();
        schedule.follow(&config, &[], start);
        let reg = BTreeSet::from(["reg".to_string()]);
        schedule.after_read(&config, &reg, &BTreeSet::new(), &BTreeMap::new(), start);
        let later = start + Duration::from_secs(5);
        assert!(schedule.due(later).is_empty(), "next read in an hour");
        schedule.follow(&config, &["reg".to_string()], later);
        assert_eq!(schedule.due(later), reg);
    }
}

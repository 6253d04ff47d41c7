//! The daemon's lease keeper (source I/O): the leases of dynamic Vault secrets it read, renewed
//! while their credential is in use and revoked once no Secret carries it any more.
//!
//! Why here and not in the source stage: "in use" is a fact about the cluster (which Secrets
//! still record the credential's version in their `source-versions` annotation), and only the
//! daemon holds both the watch caches and the Vault session. The rules (when to renew, when a
//! renewal hit the max TTL, when to revoke) are pure, in [`crate::model::expiry`].
//!
//! Lifecycle of one lease:
//! - a read issues it; it is the *current* lease of the registries that read it;
//! - it is renewed at a third of its TTL (for the TTL it was issued with); a renewal that
//!   grants less has hit the max TTL, and the registries are read again before the end;
//! - a failed renewal is retried with doubling delays; the credential is held (last good) until
//!   its lease ends, then the daemon stops serving it and reports it expired;
//! - once a new read replaced it, it is still renewed while any Secret carries it; when none
//!   has for the rotation grace (the longest `rotation.grace` of the pull secrets using it) it
//!   is revoked, and the engine deletes the login;
//! - a lease that ended on its own is forgotten. A restart forgets every lease: they are not
//!   revoked (Secrets may still carry them) and end at their TTL.
//!
//! Must not log a lease id or a credential; messages name the registry and the Vault path.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::{Config, SourceConfig, VaultLocation};
use crate::model::credential::LeaseGrant;
use crate::model::expiry;
use crate::source::{Inventory, VaultSession};

/// `(registry, version)` pairs some Secret in the cluster was rendered from.
pub type VersionsInUse = BTreeSet<(String, String)>;

/// How often replaced leases are checked for Secrets that still carry them.
const IN_USE_CHECK: Duration = Duration::from_millis(250);
/// First retry of a failed renewal; doubled each time, never past half of what is left.
const FIRST_RENEW_RETRY: Duration = Duration::from_secs(1);

/// One lease and what is known about it.
struct Kept {
    grant: LeaseGrant,
    location: VaultLocation,
    /// Registry → the credential version this lease's credential is for them.
    users: BTreeMap<String, String>,
    expires_at: SystemTime,
    renew_at: Instant,
    /// A renewal hit the max TTL (or the lease is not renewable): it ends at `expires_at`.
    capped: bool,
    failed_renewals: u32,
    /// A newer read replaced it (false while it is current).
    replaced: bool,
    /// Since when no Secret carries it (replaced leases only).
    unused_since: Option<SystemTime>,
}

/// What the keeper asks of the source schedule and the inventory after a round.
#[derive(Debug, Default)]
pub struct KeeperRound {
    /// Registries to read no later than the instant given (their lease is ending).
    pub read_by: BTreeMap<String, Instant>,
    /// Registries whose credential now ends at another time (renewed).
    pub new_expiry: BTreeMap<String, SystemTime>,
}

/// Every lease the daemon holds, by lease id.
#[derive(Default)]
pub struct LeaseKeeper {
    leases: BTreeMap<String, Kept>,
}

impl LeaseKeeper {
    /// Takes note of the leases of the credentials `inventory` holds now: new ones are kept,
    /// ones no registry holds any more are marked replaced.
    pub fn track(&mut self, inventory: &Inventory, config: &Config, now: Instant) {
        let current = current_leases(inventory, config);
        for (id, held) in &current {
            let kept = self.leases.entry(id.clone()).or_insert_with(|| Kept {
                grant: held.grant.clone(),
                location: held.location.clone(),
                users: BTreeMap::new(),
                expires_at: held.expires_at,
                renew_at: now + expiry::renew_after(held.grant.ttl, jitter()),
                capped: !held.grant.renewable,
                failed_renewals: 0,
                replaced: false,
                unused_since: None,
            });
            kept.users.extend(held.users.clone());
        }
        for (id, kept) in &mut self.leases {
            if !kept.replaced && !current.contains_key(id) {
                kept.replaced = true;
                tracing::info!(
                    location = %kept.location,
                    registries = ?kept.users.keys().collect::<Vec<_>>(),
                    "A new credential replaced a leased one; its lease is kept while Secrets carry it."
                );
            }
        }
    }

    /// Renews the leases due for it. The registries of a current lease that cannot be kept
    /// alive any longer (max TTL, or renewal failing) are asked to be read again in time.
    pub async fn renew_due(
        &mut self,
        session: &VaultSession,
        config: &Config,
        now: Instant,
    ) -> KeeperRound {
        let mut round = KeeperRound::default();
        let wall = SystemTime::now();
        self.leases.retain(|_, kept| {
            let alive = kept.expires_at > wall;
            if !alive {
                tracing::info!(location = %kept.location, "A lease ended on its own; forgotten.");
            }
            alive
        });
        for kept in self.leases.values_mut() {
            if kept.capped || kept.renew_at > now {
                continue;
            }
            renew_one(session, kept, now).await;
            if !kept.replaced {
                for registry in kept.users.keys() {
                    round.new_expiry.insert(registry.clone(), kept.expires_at);
                    if kept.capped || kept.failed_renewals > 0 {
                        let refresh = config.refresh_interval(registry);
                        let grace = config.rotation_grace(registry);
                        let wait = expiry::lease_read_after(
                            refresh,
                            kept.expires_at,
                            grace,
                            SystemTime::now(),
                            jitter(),
                        );
                        round.read_by.insert(registry.clone(), now + wait);
                    }
                }
            }
        }
        round
    }

    /// Revokes the replaced leases no Secret has carried for the rotation grace.
    pub async fn revoke_unused(
        &mut self,
        session: &VaultSession,
        config: &Config,
        in_use: &VersionsInUse,
    ) {
        let now = SystemTime::now();
        let mut revoked = Vec::new();
        for (id, kept) in &mut self.leases {
            if !kept.replaced {
                continue;
            }
            let carried = kept
                .users
                .iter()
                .any(|(registry, version)| in_use.contains(&(registry.clone(), version.clone())));
            if carried {
                kept.unused_since = None;
                continue;
            }
            let unused_since = *kept.unused_since.get_or_insert(now);
            let grace = kept
                .users
                .keys()
                .map(|registry| config.rotation_grace(registry))
                .max()
                .unwrap_or_default();
            if !expiry::may_revoke(Some(unused_since), grace, now) {
                continue;
            }
            match session.revoke_lease(&kept.location, &kept.grant).await {
                Ok(()) => {
                    tracing::info!(
                        location = %kept.location,
                        registries = ?kept.users.keys().collect::<Vec<_>>(),
                        grace_seconds = grace.as_secs(),
                        "Revoked a replaced lease: no Secret carries its credential any more."
                    );
                    revoked.push(id.clone());
                }
                Err(error) => {
                    tracing::warn!(%error, "Revoking a replaced lease failed; trying again.");
                }
            }
        }
        for id in revoked {
            self.leases.remove(&id);
        }
    }

    /// When the keeper next has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        let renewals = self
            .leases
            .values()
            .filter(|kept| !kept.capped)
            .map(|kept| kept.renew_at);
        let checks = self
            .leases
            .values()
            .filter(|kept| kept.replaced)
            .map(|_| Instant::now() + IN_USE_CHECK);
        renewals.chain(checks).min()
    }

    /// True while a replaced lease waits for its Secrets to move on.
    pub fn has_replaced(&self) -> bool {
        self.leases.values().any(|kept| kept.replaced)
    }
}

/// One renewal for the TTL the lease was issued with; on failure, the next try is scheduled.
async fn renew_one(session: &VaultSession, kept: &mut Kept, now: Instant) {
    let requested = kept.grant.ttl;
    match session
        .renew_lease(&kept.location, &kept.grant, requested)
        .await
    {
        Ok(renewed) => {
            kept.failed_renewals = 0;
            kept.expires_at = SystemTime::now() + renewed.ttl;
            kept.capped = !renewed.renewable || expiry::renewal_capped(requested, renewed.ttl);
            kept.renew_at = now + expiry::renew_after(renewed.ttl, jitter());
            tracing::debug!(
                location = %kept.location,
                ttl_seconds = renewed.ttl.as_secs(),
                at_max_ttl = kept.capped,
                "Renewed a lease."
            );
        }
        Err(error) => {
            kept.failed_renewals = kept.failed_renewals.saturating_add(1);
            let left = expiry::remaining(kept.expires_at, SystemTime::now());
            let backoff = FIRST_RENEW_RETRY
                .saturating_mul(1 << kept.failed_renewals.saturating_sub(1).min(8));
            let wait = backoff.min(left / 2).max(Duration::from_millis(200));
            kept.renew_at = now + wait;
            tracing::warn!(
                %error,
                seconds_left = left.as_secs(),
                "Renewing a lease failed; the credential is kept until its lease ends."
            );
        }
    }
}

/// A lease as the inventory holds it now.
struct Held {
    grant: LeaseGrant,
    location: VaultLocation,
    expires_at: SystemTime,
    /// Registry → version, for every registry holding it (registries reading one path share
    /// its lease).
    users: BTreeMap<String, String>,
}

/// Lease id → the lease of each credential the inventory holds now.
fn current_leases(inventory: &Inventory, config: &Config) -> BTreeMap<String, Held> {
    let mut current: BTreeMap<String, Held> = BTreeMap::new();
    for (name, registry) in &config.registries {
        let SourceConfig::Vault(source) = &registry.from else {
            continue;
        };
        let Some(last_good) = inventory.get(name) else {
            continue;
        };
        let resolved = &last_good.resolved;
        let (Some(lease), Some(expires_at)) = (&resolved.lease, resolved.expires_at) else {
            continue;
        };
        current
            .entry(lease.id.clone())
            .or_insert_with(|| Held {
                grant: lease.clone(),
                location: source.location.clone(),
                expires_at,
                users: BTreeMap::new(),
            })
            .users
            .insert(name.clone(), resolved.version.clone());
    }
    current
}

/// A number in `[0, 1)` for jitter; 0 when the system has no randomness to give.
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

//! Leader election (kube I/O): `coordination.k8s.io/v1` Leases decide which replica writes
//! which namespaces — one Lease, or one per shard with `shards > 1` (docs/sharding.md).
//!
//! The client-go algorithm per Lease, small enough to own (kube-runtime has none; the
//! third-party crates pin other kube versions): a standby takes the Lease only after watching
//! its record stay unchanged for `lease_duration` on its own monotonic clock; the leader renews
//! every `retry_period` and counts itself leader only until `renew_deadline` (< `lease_duration`)
//! after its last successful renewal began. So a leader that cannot renew stops writing before
//! any standby may start, without asking anyone. On shutdown the leader releases the Lease
//! (empty holder) so a standby takes over at its next try. Renewals PUT the last object read
//! (guarded by its resourceVersion); only a standby reads the Lease, once per `retry_period`.
//! With shards, [`crate::model::shard`] decides when a free shard is taken, asked for or given
//! up, so replicas spread over the shards. Must not touch anything but its Leases.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::shard::{self, Seen, Timing};

/// The annotation by which a replica asks a shard's holder for it (its identity).
pub const WANTED_BY_ANNOTATION: &str = "pullsecretd.io/wanted-by";
/// The annotation recording the shard count a Lease was written under.
pub const SHARDS_ANNOTATION: &str = "pullsecretd.io/shards";

/// Where the Leases are and how they are timed.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    /// The Lease's name; with shards, shard `i`'s Lease is `NAME-shard-i`.
    pub name: String,
    /// This replica's identity in `holderIdentity` (the pod name).
    pub identity: String,
    /// How long a standby waits on an unchanged Lease before taking it.
    pub lease_duration: Duration,
    /// How long a leader goes on writing after the start of its last good renewal.
    pub renew_deadline: Duration,
    /// Time between renewals (leader) or attempts (standby).
    pub retry_period: Duration,
    /// How many shards the namespaces are split into (1: plain leader election).
    pub shards: u32,
}

impl LeaseConfig {
    /// The name of shard `index`'s Lease.
    pub fn lease_name(&self, index: u32) -> String {
        if self.shards <= 1 {
            self.name.clone()
        } else {
            format!("{}-shard-{index}", self.name)
        }
    }

    fn timing(&self) -> Timing {
        Timing {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }
}

/// Why the Lease cannot be used at all: a start-up error, named for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "the Lease namespace {namespace} does not exist: create it, or pass --lease-namespace NS \
         (or --no-leader-election to run exactly one replica)"
    )]
    NamespaceMissing { namespace: String },
    #[error(
        "not allowed to use the Lease {namespace}/{name}: {message} (grant the Role of \
         deploy/base/leader-election.yaml, or pass --no-leader-election)"
    )]
    Forbidden {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("the Lease {namespace}/{name}: {message}")]
    Failed {
        namespace: String,
        name: String,
        message: String,
    },
}

/// One shard's gate: until when this replica may write it, and whether its Lease answers.
struct Gate {
    /// None: always (no election).
    valid_until: Mutex<Option<Instant>>,
    /// The last Lease request succeeded: a standby that can reach its Lease is a healthy one.
    reachable: AtomicBool,
}

impl Gate {
    fn open_until(&self) -> Option<Instant> {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which shards this replica may write now. Cheap to clone and to ask.
#[derive(Clone)]
pub struct Leadership {
    gates: Arc<[Gate]>,
    /// Per shard: whether this replica leads it.
    changes: watch::Receiver<Vec<bool>>,
}

impl Leadership {
    /// A replica that always leads (no election configured).
    pub fn always() -> Self {
        let (_, changes) = watch::channel(vec![true]);
        Self {
            gates: Arc::new([Gate {
                valid_until: Mutex::new(None),
                reachable: AtomicBool::new(true),
            }]),
            changes,
        }
    }

    /// How many shards the namespaces are split into.
    pub fn shards(&self) -> u32 {
        u32::try_from(self.gates.len()).unwrap_or(1)
    }

    /// Some Lease request succeeded last time (always true without an election).
    pub fn lease_reachable(&self) -> bool {
        self.gates
            .iter()
            .any(|gate| gate.reachable.load(Ordering::Relaxed))
    }

    /// True while this replica leads at least one shard.
    pub fn is_leading(&self) -> bool {
        (0..self.shards()).any(|index| self.leads(index))
    }

    /// True while shard `index`'s Lease is held and its last renewal is recent enough.
    pub fn leads(&self, index: u32) -> bool {
        let flagged = self
            .changes
            .borrow()
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .copied()
            .unwrap_or(false);
        let Some(gate) = self.gates.get(usize::try_from(index).unwrap_or(usize::MAX)) else {
            return false;
        };
        flagged && gate.open_until().is_none_or(|until| Instant::now() < until)
    }

    /// True while this replica may write `namespace` (it leads the namespace's shard).
    pub fn owns(&self, namespace: &str) -> bool {
        self.leads(shard::shard_of(namespace, self.shards()))
    }

    /// The shards this replica leads now.
    pub fn led(&self) -> Vec<u32> {
        (0..self.shards())
            .filter(|index| self.leads(*index))
            .collect()
    }

    /// Leadership changes: per shard, whether this replica leads it.
    pub fn changes(&self) -> watch::Receiver<Vec<bool>> {
        self.changes.clone()
    }
}

/// What one replica's electors share: who leads what, as each of them last saw it.
struct Replica {
    leading: watch::Sender<Vec<bool>>,
    /// Per shard, the live holder its elector last saw (None: free, expired or unknown).
    holders: Mutex<BTreeMap<u32, String>>,
}

impl Replica {
    /// How many shards other than `except` this replica leads.
    fn leads_besides(&self, except: u32) -> usize {
        self.leading
            .borrow()
            .iter()
            .enumerate()
            .filter(|(index, leading)| **leading && u32::try_from(*index).ok() != Some(except))
            .count()
    }

    /// How many shards `identity` holds, as this replica's electors last saw them.
    fn held_by(&self, identity: &str) -> usize {
        self.holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|holder| holder.as_str() == identity)
            .count()
    }

    fn saw(&self, index: u32, live_holder: Option<&str>) {
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        match live_holder {
            Some(holder) => holders.insert(index, holder.to_string()),
            None => holders.remove(&index),
        };
    }
}

/// Every shard's elector of one replica.
pub struct Electors {
    electors: Vec<Elector>,
}

impl Electors {
    pub fn new(client: &Client, config: &LeaseConfig) -> (Self, Leadership) {
        let shards = config.shards.max(1);
        let (leading, changes) = watch::channel(vec![false; shards as usize]);
        let replica = Arc::new(Replica {
            leading,
            holders: Mutex::default(),
        });
        let gates: Arc<[Gate]> = (0..shards)
            .map(|_| Gate {
                valid_until: Mutex::new(Some(Instant::now())),
                reachable: AtomicBool::new(false),
            })
            .collect();
        let gates_for_all = Arc::clone(&gates);
        // Tried from this replica's first choice on, so replicas starting together spread out.
        let first = shard::first_choice(&config.identity, shards);
        let electors = (0..shards)
            .map(|offset| (first + offset) % shards)
            .map(|index| Elector {
                api: Api::namespaced(client.clone(), &config.namespace),
                lease_name: config.lease_name(index),
                index,
                config: LeaseConfig {
                    shards,
                    ..config.clone()
                },
                gates: Arc::clone(&gates_for_all),
                replica: Arc::clone(&replica),
                observed: None,
                missing_since: None,
            })
            .collect();
        (Self { electors }, Leadership { gates, changes })
    }

    /// The first acquire-or-renew of every shard, one after another: a Lease that cannot be
    /// used at all — its namespace missing, access forbidden — is an error to stop on, not to
    /// retry forever.
    pub async fn first_attempt(&mut self) -> Result<(), LeaseError> {
        for elector in &mut self.electors {
            elector.first_attempt().await?;
        }
        Ok(())
    }

    /// Runs every shard's elector until `stop` fires; each releases its Lease if held.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        futures::future::join_all(
            self.electors
                .into_iter()
                .map(|elector| elector.run(stop.clone())),
        )
        .await;
    }
}

/// One shard's election loop.
struct Elector {
    api: Api<Lease>,
    lease_name: String,
    index: u32,
    config: LeaseConfig,
    gates: Arc<[Gate]>,
    replica: Arc<Replica>,
    /// The last Lease read or written, and when its record was first seen as it is.
    observed: Option<(Lease, Instant)>,
    /// Since when the Lease has been seen not to exist.
    missing_since: Option<Instant>,
}

impl Elector {
    fn gate(&self) -> &Gate {
        &self.gates[self.index as usize]
    }

    async fn first_attempt(&mut self) -> Result<(), LeaseError> {
        let started = Instant::now();
        match self.try_acquire_or_renew(started).await {
            Ok(leading) => {
                self.gate().reachable.store(true, Ordering::Relaxed);
                self.set_leading(leading.then_some(started + self.config.renew_deadline));
                Ok(())
            }
            Err(error) => Err(self.lease_error(&error)),
        }
    }

    fn lease_error(&self, error: &kube::Error) -> LeaseError {
        let namespace = self.config.namespace.clone();
        let name = self.lease_name.clone();
        match error {
            kube::Error::Api(status)
                if status.code == 404
                    && status
                        .details
                        .as_ref()
                        .is_some_and(|d| d.kind == "namespaces") =>
            {
                LeaseError::NamespaceMissing { namespace }
            }
            kube::Error::Api(status) if status.code == 403 => LeaseError::Forbidden {
                namespace,
                name,
                message: status.message.clone(),
            },
            other => LeaseError::Failed {
                namespace,
                name,
                message: super::describe(other),
            },
        }
    }

    /// Tries to acquire or renew every `retry_period` until `stop` fires, then releases the
    /// Lease if held.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let started = Instant::now();
            let attempt = self.try_acquire_or_renew(started).await;
            self.gate()
                .reachable
                .store(attempt.is_ok(), Ordering::Relaxed);
            match attempt {
                Ok(true) => self.set_leading(Some(started + self.config.renew_deadline)),
                Ok(false) => self.set_leading(None),
                Err(error) => {
                    tracing::warn!(
                        error = %self.lease_error(&error),
                        "Lease request failed; retrying."
                    );
                    // Keep leading until the renew deadline runs out on its own.
                    if !self.is_valid() {
                        self.set_leading(None);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period) => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        self.release().await;
    }

    fn is_valid(&self) -> bool {
        self.gate()
            .open_until()
            .is_some_and(|until| Instant::now() < until)
    }

    fn set_leading(&self, until: Option<Instant>) {
        let now_leading = until.is_some();
        *self
            .gate()
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(until.unwrap_or_else(Instant::now));
        let index = self.index as usize;
        self.replica.leading.send_if_modified(|leading| {
            let Some(slot) = leading.get_mut(index) else {
                return false;
            };
            let changed = *slot != now_leading;
            if changed {
                tracing::info!(
                    identity = %self.config.identity,
                    lease = %self.lease_name,
                    leading = now_leading,
                    "Leadership changed."
                );
            }
            *slot = now_leading;
            changed
        });
        if now_leading {
            self.replica.saw(self.index, Some(&self.config.identity));
        }
    }

    /// True when this replica holds the Lease after the attempt.
    async fn try_acquire_or_renew(&mut self, started: Instant) -> Result<bool, kube::Error> {
        let holding = self
            .observed
            .as_ref()
            .is_some_and(|(lease, _)| holder(lease) == Some(self.config.identity.as_str()));
        if holding && let Some((lease, _)) = &self.observed {
            // Renew from the object we wrote last: no read needed.
            let renewed = self.stamped(lease.clone(), false);
            match self
                .api
                .replace(&self.lease_name, &PostParams::default(), &renewed)
                .await
            {
                Ok(written) => {
                    self.observed = Some((written, started));
                    return Ok(true);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // Someone else wrote it (took it, or asked for it): read below and see.
                }
                Err(error) => return Err(error),
            }
        }
        let Some(current) = self.api.get_opt(&self.lease_name).await? else {
            return self.create_when_due(started).await;
        };
        self.missing_since = None;
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(old, _)| old.spec != current.spec);
        let seen_since = match &self.observed {
            Some((_, since)) if !changed => *since,
            _ => started,
        };
        self.observed = Some((current.clone(), seen_since));
        let me = self.config.identity.as_str();
        let held = self.replica.leads_besides(self.index);
        let seen = Seen {
            holder: holder(&current).filter(|h| !h.is_empty()),
            wanted_by: wanted_by(&current),
        };
        let unchanged_for = started.duration_since(seen_since);
        let live_holder = seen
            .holder
            .filter(|h| *h == me || unchanged_for < self.config.lease_duration);
        self.replica.saw(self.index, live_holder);
        if seen.holder == Some(me) && shard::should_give_up(seen, me, held + 1) {
            self.give_up().await;
            return Ok(false);
        }
        if let Some(other) = live_holder.filter(|h| *h != me) {
            if seen.wanted_by.is_none() && shard::should_ask(held, self.replica.held_by(other)) {
                self.ask_for(current).await?;
            }
            return Ok(false);
        }
        if unchanged_for < shard::patience(seen, me, held, self.config.timing()) {
            return Ok(false);
        }
        let mine = seen.holder == Some(me);
        let taken = self.stamped(current, !mine);
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &taken)
            .await
        {
            Ok(written) => {
                self.observed = Some((written, started));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Creates the missing Lease once it has been missing for this replica's patience.
    async fn create_when_due(&mut self, started: Instant) -> Result<bool, kube::Error> {
        let since = *self.missing_since.get_or_insert(started);
        self.replica.saw(self.index, None);
        let seen = Seen {
            holder: None,
            wanted_by: None,
        };
        let held = self.replica.leads_besides(self.index);
        let patience = shard::patience(seen, &self.config.identity, held, self.config.timing());
        if started.duration_since(since) < patience {
            return Ok(false);
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        let lease = self.stamped(lease, true);
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(written) => {
                self.missing_since = None;
                self.observed = Some((written, started));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Asks the holder for this shard: the `wanted-by` annotation, guarded by the
    /// resourceVersion read (the holder's next renewal then conflicts and reads it).
    async fn ask_for(&mut self, mut lease: Lease) -> Result<(), kube::Error> {
        lease
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                WANTED_BY_ANNOTATION.to_string(),
                self.config.identity.clone(),
            );
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                tracing::info!(lease = %self.lease_name, "Asked for a shard another replica leads more of.");
                let since = self
                    .observed
                    .as_ref()
                    .map_or_else(Instant::now, |(_, s)| *s);
                self.observed = Some((written, since));
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// `lease` held by this replica, renewed now; `acquire` also stamps the acquire time,
    /// counts a transition and clears a request for it.
    fn stamped(&self, mut lease: Lease, acquire: bool) -> Lease {
        let now = MicroTime(Timestamp::now());
        if acquire && let Some(annotations) = lease.metadata.annotations.as_mut() {
            annotations.remove(WANTED_BY_ANNOTATION);
        }
        lease
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                SHARDS_ANNOTATION.to_string(),
                self.config.shards.to_string(),
            );
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if acquire {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX));
        spec.renew_time = Some(now);
        lease
    }

    /// Gives the shard up for the replica that asked: stop writing first, then free the Lease
    /// (the asker waits out the lost-leader gap before it writes).
    async fn give_up(&mut self) {
        tracing::info!(lease = %self.lease_name, "Giving a shard up for a replica that leads fewer.");
        self.release().await;
    }

    /// Gives the Lease up (empty holder) if this replica holds it, so a standby need not wait.
    async fn release(&mut self) {
        self.set_leading(None);
        self.replica.saw(self.index, None);
        let Some((lease, since)) = self.observed.take() else {
            return;
        };
        if holder(&lease) != Some(self.config.identity.as_str()) {
            self.observed = Some((lease, since));
            return;
        }
        let mut released = lease;
        if let Some(spec) = released.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.acquire_time = None;
            spec.lease_duration_seconds = Some(1);
        }
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &released)
            .await
        {
            Ok(written) => {
                tracing::info!(lease = %self.lease_name, "Released the Lease.");
                self.observed = Some((written, Instant::now()));
            }
            Err(error) => tracing::warn!(
                error = %super::describe(&error),
                "Releasing the Lease failed; it expires."
            ),
        }
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

fn wanted_by(lease: &Lease) -> Option<&str> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(WANTED_BY_ANNOTATION)
        .map(String::as_str)
        .filter(|asker| !asker.is_empty())
}

//! Leader election (kube I/O): one `coordination.k8s.io/v1` Lease decides which replica writes.
//!
//! The client-go algorithm, small enough to own (kube-runtime has none; the third-party crates
//! pin other kube versions): a standby takes the Lease only after watching its record stay
//! unchanged for `lease_duration` on its own monotonic clock; the leader renews every
//! `retry_period` and counts itself leader only until `renew_deadline` (< `lease_duration`)
//! after its last successful renewal began. So a leader that cannot renew stops writing before
//! any standby may start, without asking anyone. On shutdown the leader releases the Lease
//! (empty holder) so a standby takes over at its next try. Renewals PUT the last object read
//! (guarded by its resourceVersion); only a standby reads the Lease, once per `retry_period`.
//! Must not touch anything but its one Lease.

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

/// Where the Lease is and how it is timed.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity in `holderIdentity` (the pod name).
    pub identity: String,
    /// How long a standby waits on an unchanged Lease before taking it.
    pub lease_duration: Duration,
    /// How long a leader goes on writing after the start of its last good renewal.
    pub renew_deadline: Duration,
    /// Time between renewals (leader) or attempts (standby).
    pub retry_period: Duration,
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

/// Whether this replica may write now. Cheap to clone and to ask.
#[derive(Clone)]
pub struct Leadership {
    valid_until: Arc<Mutex<Option<Instant>>>,
    changes: watch::Receiver<bool>,
    /// The last Lease request succeeded: a standby that can reach its Lease is a healthy one.
    reachable: Arc<AtomicBool>,
}

impl Leadership {
    /// A replica that always leads (no election configured).
    pub fn always() -> Self {
        let (_, changes) = watch::channel(true);
        Self {
            valid_until: Arc::new(Mutex::new(None)),
            changes,
            reachable: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The last Lease request succeeded (always true without an election).
    pub fn lease_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// True while the Lease is held and its last renewal is recent enough.
    pub fn is_leading(&self) -> bool {
        if !*self.changes.borrow() {
            return false;
        }
        match *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(until) => Instant::now() < until,
            None => true,
        }
    }

    /// Leadership changes (true: became leader).
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }
}

/// The election loop's state.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    valid_until: Arc<Mutex<Option<Instant>>>,
    leading: watch::Sender<bool>,
    reachable: Arc<AtomicBool>,
    /// The last Lease read or written, and when its record was first seen as it is.
    observed: Option<(Lease, Instant)>,
}

impl Elector {
    pub fn new(client: &Client, config: LeaseConfig) -> (Self, Leadership) {
        let (leading, changes) = watch::channel(false);
        let valid_until = Arc::new(Mutex::new(Some(Instant::now())));
        let reachable = Arc::new(AtomicBool::new(false));
        let elector = Self {
            api: Api::namespaced(client.clone(), &config.namespace),
            config,
            valid_until: Arc::clone(&valid_until),
            leading,
            reachable: Arc::clone(&reachable),
            observed: None,
        };
        (
            elector,
            Leadership {
                valid_until,
                changes,
                reachable,
            },
        )
    }

    /// The first acquire-or-renew, at start: a Lease that cannot be used at all — its
    /// namespace missing, access forbidden — is an error to stop on, not to retry forever.
    pub async fn first_attempt(&mut self) -> Result<(), LeaseError> {
        let started = Instant::now();
        match self.try_acquire_or_renew(started).await {
            Ok(leading) => {
                self.reachable.store(true, Ordering::Relaxed);
                self.set_leading(leading.then_some(started + self.config.renew_deadline));
                Ok(())
            }
            Err(error) => Err(self.lease_error(&error)),
        }
    }

    fn lease_error(&self, error: &kube::Error) -> LeaseError {
        let namespace = self.config.namespace.clone();
        let name = self.config.name.clone();
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
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let started = Instant::now();
            let attempt = self.try_acquire_or_renew(started).await;
            self.reachable.store(attempt.is_ok(), Ordering::Relaxed);
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
        self.valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    fn set_leading(&self, until: Option<Instant>) {
        let now_leading = until.is_some();
        *self
            .valid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(until.unwrap_or_else(Instant::now));
        self.leading.send_if_modified(|leading| {
            let changed = *leading != now_leading;
            if changed {
                tracing::info!(
                    identity = %self.config.identity,
                    leading = now_leading,
                    "Leadership changed."
                );
            }
            *leading = now_leading;
            changed
        });
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
                .replace(&self.config.name, &PostParams::default(), &renewed)
                .await
            {
                Ok(written) => {
                    self.observed = Some((written, started));
                    return Ok(true);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // Someone else wrote it: read below and see.
                }
                Err(error) => return Err(error),
            }
        }
        let current = match self.api.get_opt(&self.config.name).await? {
            Some(current) => current,
            None => return self.create(started).await,
        };
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(old, _)| old.spec != current.spec);
        let seen_since = match &self.observed {
            Some((_, since)) if !changed => *since,
            _ => started,
        };
        self.observed = Some((current.clone(), seen_since));
        let free = holder(&current).is_none_or(str::is_empty);
        let mine = holder(&current) == Some(self.config.identity.as_str());
        let expired = started.duration_since(seen_since) >= self.config.lease_duration;
        if !(free || mine || expired) {
            return Ok(false);
        }
        let taken = self.stamped(current, !mine);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &taken)
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

    async fn create(&mut self, started: Instant) -> Result<bool, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        let lease = self.stamped(lease, true);
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(written) => {
                self.observed = Some((written, started));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// `lease` held by this replica, renewed now; `acquire` also stamps the acquire time and
    /// counts a transition.
    fn stamped(&self, mut lease: Lease, acquire: bool) -> Lease {
        let now = MicroTime(Timestamp::now());
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

    /// Gives the Lease up (empty holder) if this replica holds it, so a standby need not wait.
    async fn release(&mut self) {
        self.set_leading(None);
        let Some((lease, _)) = self.observed.take() else {
            return;
        };
        if holder(&lease) != Some(self.config.identity.as_str()) {
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
            .replace(&self.config.name, &PostParams::default(), &released)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.config.name, "Released the Lease."),
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

//! The credential service (source stage, shared): one per process. It keeps the Vault
//! session and each registry's last good credential and answers lookups by registry server —
//! for workstation passes, the credential-helper agent and a helper without an agent. The
//! daemon's own source schedule publishes [`Snapshot`]s; [`Lookup::Daemon`] answers from them,
//! so `run --agent` reads each source once per refresh however many consumers ask, and follows
//! config reloads. Must not touch the cluster, must not answer a source failure with "not
//! found", and must never log or put a credential in an error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tokio::sync::watch;
use tokio::time::Instant;

use super::helper::protocol_login;
use super::{Inventory, Resolved, SourceContext};
use crate::config::{Config, RegistryConfig};
use crate::model::credential::{Credential, RegistryKey};

/// Why a lookup failed. The message names registries, files, Vault paths and outcomes, never
/// a credential value: the helper prints it to stdout for docker to show.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// Every registry's last good credential, as the daemon's source schedule last published it.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub credentials: BTreeMap<String, Resolved>,
    /// When each registry's credential was last read successfully.
    pub read_at: BTreeMap<String, StdInstant>,
    /// The last read's error per registry that failed (texts without values).
    pub failures: BTreeMap<String, String>,
    /// When each registry's credential ends, where that is known (served or expired).
    pub expires_at: BTreeMap<String, std::time::SystemTime>,
    /// Registries whose last good credential has expired: not in `credentials`, never served.
    pub expired: BTreeSet<String>,
    /// `verify:` registries whose newest credential the registry refused, and why (no value):
    /// their Secrets keep the previous credential and their namespaces get an Event.
    pub rejected: BTreeMap<String, String>,
    /// Registries whose credential changed in the refresh that published this snapshot.
    pub changed: BTreeSet<String>,
    /// True once every configured registry has a credential.
    pub complete: bool,
    /// 0 before the first refresh finished.
    pub generation: u64,
}

/// Answers credential lookups from the config's sources.
pub struct CredentialService {
    ctx: SourceContext,
    /// `Some(age)`: keep what was read and read again when older than `age` (the agent);
    /// `None`: read the one registry asked for on each call (a helper without an agent).
    cache_for: Option<Duration>,
    state: tokio::sync::Mutex<State>,
}

struct State {
    /// `None` until the workstation has found a registry to serve.
    config: Option<Config>,
    inventory: Inventory,
    refreshed_at: Option<Instant>,
    /// The last refresh's error per registry (texts without values).
    failures: BTreeMap<String, String>,
}

/// What a refresh read: every registry's last good credential and the failures, as text.
#[derive(Debug, Default)]
pub struct Refreshed {
    pub credentials: BTreeMap<String, Resolved>,
    /// Registries whose read failed, and why (they keep their last good credential).
    pub failures: Vec<String>,
    /// Registries read successfully whose credential changed.
    pub changed: Vec<String>,
}

impl CredentialService {
    pub fn new(config: Option<Config>, ctx: SourceContext, cache_for: Option<Duration>) -> Self {
        Self {
            ctx,
            cache_for,
            state: tokio::sync::Mutex::new(State {
                config,
                inventory: Inventory::new(),
                refreshed_at: None,
                failures: BTreeMap::new(),
            }),
        }
    }

    /// Reads every registry of `config` (or of the current config) once, keeping each one's
    /// last good credential. The workstation's passes and stale agent lookups use this.
    pub async fn refresh(&self, config: Option<Config>) -> Refreshed {
        let mut state = self.state.lock().await;
        if config.is_some() {
            state.config = config;
        }
        self.refresh_locked(&mut state).await
    }

    async fn refresh_locked(&self, state: &mut State) -> Refreshed {
        let State {
            config, inventory, ..
        } = state;
        let Some(config) = config.as_ref() else {
            return Refreshed::default();
        };
        let report = inventory.refresh(config, &self.ctx).await;
        state.refreshed_at = Some(Instant::now());
        state.failures = report
            .failures
            .iter()
            .map(|f| (f.registry.clone(), f.to_string()))
            .collect();
        Refreshed {
            credentials: state.inventory.credentials(),
            failures: state.failures.values().cloned().collect(),
            changed: report.changed,
        }
    }

    /// The credential for `server`; `Ok(None)` when the config names no such registry.
    pub async fn get(&self, server: &RegistryKey) -> Result<Option<Credential>, LookupError> {
        let mut state = self.state.lock().await;
        let Some(registry) = state
            .config
            .as_ref()
            .and_then(|config| find_registry(config, server))
            .cloned()
        else {
            return Ok(None);
        };
        let Some(max_age) = self.cache_for else {
            drop(state);
            return self.read_one(&registry).await.map(Some);
        };
        if is_stale(state.refreshed_at, max_age) {
            self.refresh_locked(&mut state).await;
        }
        match state.inventory.get(&registry.name) {
            Some(last_good) => Ok(Some(last_good.resolved.credential.clone())),
            None => Err(LookupError(state.failures.get(&registry.name).map_or_else(
                || {
                    format!(
                        "registry {}: no credential has been read yet",
                        registry.name
                    )
                },
                Clone::clone,
            ))),
        }
    }

    /// Every registry's server and username; an error when any registry cannot be read.
    pub async fn list(&self) -> Result<BTreeMap<String, String>, LookupError> {
        let mut state = self.state.lock().await;
        let credentials = match self.cache_for {
            Some(max_age) => {
                if is_stale(state.refreshed_at, max_age) {
                    self.refresh_locked(&mut state).await;
                }
                let missing: Vec<&String> = state
                    .config
                    .iter()
                    .flat_map(|config| config.registries.keys())
                    .filter(|name| state.inventory.get(name).is_none())
                    .collect();
                if let Some(name) = missing.first() {
                    return Err(LookupError(state.failures.get(*name).map_or_else(
                        || format!("registry {name}: no credential has been read yet"),
                        Clone::clone,
                    )));
                }
                state.inventory.credentials()
            }
            None => {
                let registries: Vec<RegistryConfig> = state
                    .config
                    .iter()
                    .flat_map(|config| config.registries.values().cloned())
                    .collect();
                drop(state);
                let mut credentials = BTreeMap::new();
                for registry in registries {
                    let resolved = self.read_one(&registry).await?;
                    credentials.insert(
                        registry.name.clone(),
                        Resolved {
                            credential: resolved,
                            version: String::new(),
                            expires_at: None,
                            lease: None,
                        },
                    );
                }
                credentials
            }
        };
        let mut entries = BTreeMap::new();
        for resolved in credentials.values() {
            let (username, _) = protocol_login(&resolved.credential);
            entries
                .entry(resolved.credential.registry.auths_key())
                .or_insert_with(|| username.to_string());
        }
        Ok(entries)
    }

    async fn read_one(&self, registry: &RegistryConfig) -> Result<Credential, LookupError> {
        super::resolve(registry, &self.ctx)
            .await
            .map(|resolved| resolved.credential)
            .map_err(|error| LookupError(format!("registry {}: {error}", registry.name)))
    }
}

fn is_stale(refreshed_at: Option<Instant>, max_age: Duration) -> bool {
    refreshed_at.is_none_or(|at| at.elapsed() >= max_age)
}

/// The registry of `config` serving `server`: the same key, else the same host.
pub fn find_registry<'a>(config: &'a Config, server: &RegistryKey) -> Option<&'a RegistryConfig> {
    let registries = || config.registries.values();
    registries()
        .find(|r| r.server == *server)
        .or_else(|| registries().find(|r| r.server.host_only() == server.host_only()))
}

/// Where lookups are answered from: a service reading the sources, or the daemon's snapshots.
#[derive(Clone)]
pub enum Lookup {
    Service(Arc<CredentialService>),
    /// The daemon's current config and the snapshots its source schedule publishes.
    Daemon {
        config: watch::Receiver<Arc<Config>>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
    },
}

impl Lookup {
    /// The credential for `server`; `Ok(None)` when the config names no such registry.
    pub async fn get(&self, server: &RegistryKey) -> Result<Option<Credential>, LookupError> {
        match self {
            Self::Service(service) => service.get(server).await,
            Self::Daemon { config, snapshot } => {
                let config = Arc::clone(&config.borrow());
                let Some(registry) = find_registry(&config, server) else {
                    return Ok(None);
                };
                let snapshot = Arc::clone(&snapshot.borrow());
                match snapshot.credentials.get(&registry.name) {
                    Some(resolved) => Ok(Some(resolved.credential.clone())),
                    None => Err(not_read_yet(&snapshot, &registry.name)),
                }
            }
        }
    }

    /// Every registry's server and username; an error when any registry has no credential.
    pub async fn list(&self) -> Result<BTreeMap<String, String>, LookupError> {
        match self {
            Self::Service(service) => service.list().await,
            Self::Daemon { config, snapshot } => {
                let config = Arc::clone(&config.borrow());
                let snapshot = Arc::clone(&snapshot.borrow());
                let mut entries = BTreeMap::new();
                for name in config.registries.keys() {
                    let Some(resolved) = snapshot.credentials.get(name) else {
                        return Err(not_read_yet(&snapshot, name));
                    };
                    let (username, _) = protocol_login(&resolved.credential);
                    entries
                        .entry(resolved.credential.registry.auths_key())
                        .or_insert_with(|| username.to_string());
                }
                Ok(entries)
            }
        }
    }
}

fn not_read_yet(snapshot: &Snapshot, registry: &str) -> LookupError {
    LookupError(snapshot.failures.get(registry).map_or_else(
        || format!("registry {registry}: no credential has been read yet"),
        Clone::clone,
    ))
}

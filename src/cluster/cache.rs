//! Watch caches (kube I/O, read-only): watches of namespaces, managed Secrets, the linked
//! service accounts (one watch per account name) and managed RoleBindings, and the
//! per-namespace view of them that `diff` needs.
//!
//! After the initial list each cache is kept current by its watch (resumed from the last
//! resourceVersion or bookmark; re-listed only after 410 Expired), so reading a namespace's
//! objects costs no request. Every change is reported as the name of the namespace it touches,
//! including objects that vanished while a watch was re-listing. Must not write anything; what
//! this daemon wrote is remembered by the stores until the watch delivers it ([`WriteLog`]).
//!
//! Secrets, service accounts and RoleBindings live in slim stores ([`super::slim`]): per object
//! only its identity, the rest shared between equal objects, a Secret's payload as a digest.
//! Namespaces live in their own store ([`super::namespaces`]): a name and a shared label set
//! each. A deleted namespace's objects leave the stores with their delete events.
//!
//! Namespaced mode (`namespaces:` in the config) watches nothing cluster-wide and needs only a
//! Role per namespace: one watch per namespace per kind (per account name for service
//! accounts), each re-list replacing only what its stream covers. There is no namespace watch:
//! the namespace store is filled once from the config, labels empty, and the config's
//! namespaces are fixed for the daemon's life (a reload that changes them is rejected; see
//! `daemon`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt as _};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, watcher as watch};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch as signal};

use super::namespaces::{NamespaceRelist, NamespaceStore};
use super::slim::{Coverage, Relist, Slim, SlimStore};
use super::view::{self, ClusterView};
use crate::diff::ObservedProject;
use crate::model::managed::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::plan::NamespaceInfo;

/// Names of namespaces whose objects changed; the controller reconciles them.
pub type Touched = mpsc::UnboundedSender<String>;

/// A watch stopped before its initial list was in (the daemon is stopping).
#[derive(Debug, thiserror::Error)]
#[error("a watch stopped before its initial list")]
pub struct WatchStopped;

/// Whether one watch stream has had its initial list.
#[derive(Clone)]
struct Synced(signal::Receiver<bool>);

impl Synced {
    async fn wait(&self) -> Result<(), WatchStopped> {
        let mut synced = self.0.clone();
        synced
            .wait_for(|done| *done)
            .await
            .map(|_| ())
            .map_err(|_| WatchStopped)
    }
}

async fn wait_all(streams: &[Synced]) -> Result<(), WatchStopped> {
    for stream in streams {
        stream.wait().await?;
    }
    Ok(())
}

/// The caches the daemon plans and diffs from.
#[derive(Clone)]
pub struct Caches {
    /// Watched, or (namespaced mode) the configured namespaces, filled once.
    pub namespaces: NamespaceStore,
    secrets: SlimStore<Secret>,
    role_bindings: SlimStore<RoleBinding>,
    /// Every watched service-account name's accounts.
    accounts: SlimStore<ServiceAccount>,
    /// The namespace, Secret and RoleBinding streams.
    synced: Vec<Synced>,
    /// The streams of each watched service-account name.
    account_names: Arc<Mutex<BTreeMap<String, Vec<Synced>>>>,
    /// Namespaced mode: the only namespaces watched.
    scope: Option<Vec<String>>,
    client: Client,
    touched: Touched,
    /// OpenShift or not (API discovery at start): image-puller bindings exist only there.
    openshift: Option<bool>,
}

impl Caches {
    /// Starts the namespace, Secret and RoleBinding watches (each in its own task) and one
    /// watch per name in `accounts`; in namespaced mode (`scope`), each of these per namespace
    /// and no namespace watch. Changes are sent to `touched`.
    pub fn start(
        client: &Client,
        accounts: &BTreeSet<String>,
        touched: Touched,
        openshift: Option<bool>,
        scope: Option<&[String]>,
    ) -> Self {
        let managed =
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
        let (namespaces, mut synced) = match scope {
            None => {
                let (store, synced) = spawn_namespace_watch(client, touched.clone());
                (store, vec![synced])
            }
            Some(names) => (NamespaceStore::fixed(names), Vec::new()),
        };
        let secrets = SlimStore::default();
        synced.extend(spawn_watches(
            client, scope, &managed, None, &secrets, &touched,
        ));
        let role_bindings = SlimStore::default();
        synced.extend(spawn_watches(
            client,
            scope,
            &managed,
            None,
            &role_bindings,
            &touched,
        ));
        let caches = Self {
            namespaces,
            secrets,
            role_bindings,
            accounts: SlimStore::default(),
            synced,
            account_names: Arc::default(),
            scope: scope.map(<[String]>::to_vec),
            client: client.clone(),
            touched,
            openshift,
        };
        caches.watch_accounts(accounts);
        caches
    }

    /// Every cached managed Secret (rebuilt; data only as digests).
    pub fn secrets(&self) -> Vec<Secret> {
        self.secrets.all()
    }

    /// Where the daemon's writes are remembered until the watches deliver them.
    pub fn write_log(&self) -> Arc<dyn WriteLog> {
        Arc::new(StoreWriteLog {
            secrets: self.secrets.clone(),
            accounts: self.accounts.clone(),
            role_bindings: self.role_bindings.clone(),
        })
    }

    /// Adds a watch for each service-account name not watched yet (returned, to wait for).
    /// Names are never dropped: an account the config stopped linking must still be seen to
    /// be unlinked.
    pub fn watch_accounts(&self, names: &BTreeSet<String>) -> Vec<AccountWatch> {
        let mut watched = self
            .account_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut added = Vec::new();
        for name in names {
            if watched.contains_key(name) {
                continue;
            }
            let synced = spawn_watches(
                &self.client,
                self.scope.as_deref(),
                &watcher::Config::default().fields(&format!("metadata.name={name}")),
                Some(name),
                &self.accounts,
                &self.touched,
            );
            watched.insert(name.clone(), synced.clone());
            added.push(AccountWatch(synced));
        }
        added
    }

    fn watched_account_names(&self) -> BTreeSet<String> {
        self.account_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Waits until every watch has had its initial list.
    pub async fn wait_until_ready(&self) -> Result<(), WatchStopped> {
        wait_all(&self.synced).await?;
        let accounts: Vec<Synced> = self
            .account_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .flatten()
            .cloned()
            .collect();
        wait_all(&accounts).await
    }
}

/// A newly started service-account watch (all its namespaces' streams).
pub struct AccountWatch(Vec<Synced>);

impl AccountWatch {
    /// Waits until its initial list(s) are in.
    pub async fn wait_until_ready(&self) -> Result<(), WatchStopped> {
        wait_all(&self.0).await
    }
}

/// What apply tells the caches it wrote, so a namespace reconciled again before the watch
/// delivers those writes diffs against them ([`super::slim`]).
pub trait WriteLog: Send + Sync {
    /// A Secret the server answered a create (`before` = `None`) or an update against
    /// `before` with.
    fn secret_written(&self, before: Option<&str>, written: Secret);
    /// A Secret deleted at `resource_version`.
    fn secret_deleted(&self, namespace: &str, name: &str, resource_version: Option<&str>);
    /// A service account the server answered an update against `before` with.
    fn account_written(&self, before: Option<&str>, written: ServiceAccount);
    /// A RoleBinding the server answered a create or an update against `before` with.
    fn role_binding_written(&self, before: Option<&str>, written: RoleBinding);
    /// A RoleBinding deleted at `resource_version`.
    fn role_binding_deleted(&self, namespace: &str, name: &str, resource_version: Option<&str>);
}

struct StoreWriteLog {
    secrets: SlimStore<Secret>,
    accounts: SlimStore<ServiceAccount>,
    role_bindings: SlimStore<RoleBinding>,
}

impl WriteLog for StoreWriteLog {
    fn secret_written(&self, before: Option<&str>, written: Secret) {
        self.secrets.remember_written(before, written);
    }

    fn secret_deleted(&self, namespace: &str, name: &str, resource_version: Option<&str>) {
        self.secrets
            .remember_deleted(namespace, name, resource_version);
    }

    fn account_written(&self, before: Option<&str>, written: ServiceAccount) {
        self.accounts.remember_written(before, written);
    }

    fn role_binding_written(&self, before: Option<&str>, written: RoleBinding) {
        self.role_bindings.remember_written(before, written);
    }

    fn role_binding_deleted(&self, namespace: &str, name: &str, resource_version: Option<&str>) {
        self.role_bindings
            .remember_deleted(namespace, name, resource_version);
    }
}

impl Caches {
    /// Namespaced mode: only the configured namespaces are watched (and may be listed).
    pub fn is_namespaced(&self) -> bool {
        self.scope.is_some()
    }

    /// The names of [`ClusterView::namespaces`], without keeping their labels.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.namespaces.len());
        self.namespaces.for_each(|info| names.push(info.name));
        names.sort();
        names
    }

    /// Calls `visit` with each namespace of [`ClusterView::namespaces`], in no set order,
    /// holding one namespace's labels at a time instead of all of them.
    pub fn for_each_namespace(&self, visit: impl FnMut(NamespaceInfo)) {
        self.namespaces.for_each(visit);
    }
}

impl ClusterView for Caches {
    fn namespaces(&self) -> Vec<NamespaceInfo> {
        let mut infos = Vec::with_capacity(self.namespaces.len());
        self.namespaces.for_each(|info| infos.push(info));
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        self.namespaces.info(name)
    }

    fn openshift(&self) -> Option<bool> {
        self.openshift
    }

    /// From the caches (and this daemon's writes they have not seen yet): no request, no scan
    /// of other namespaces.
    fn observed(&self, namespace: &str) -> ObservedProject {
        let (secrets, data_digests) = self.secrets.objects(namespace);
        let watched = self.watched_account_names();
        ObservedProject {
            unread_accounts: view::unread_accounts(&secrets, &watched),
            secrets,
            service_accounts: self.accounts.objects(namespace).0,
            role_bindings: self.role_bindings.objects(namespace).0,
            data_digests,
        }
    }

    fn namespaces_with_objects(&self) -> BTreeSet<String> {
        let mut names = self.secrets.namespaces();
        names.extend(self.role_bindings.namespaces());
        names
    }
}

/// The namespace watch, into `store`, reporting each namespace that changes (and, after a
/// re-list, each that vanished).
fn spawn_namespace_watch(client: &Client, touched: Touched) -> (NamespaceStore, Synced) {
    let store = NamespaceStore::default();
    let events = watch(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let (synced_tx, synced_rx) = signal::channel(false);
    tokio::spawn(feed_namespaces(events, store.clone(), touched, synced_tx));
    (store, Synced(synced_rx))
}

async fn feed_namespaces(
    events: impl Stream<Item = Result<Event<Namespace>, watcher::Error>>,
    store: NamespaceStore,
    touched: Touched,
    synced: signal::Sender<bool>,
) {
    let mut events = std::pin::pin!(events);
    let mut relist = NamespaceRelist::default();
    while let Some(event) = events.next().await {
        let sent = match event {
            Ok(Event::Apply(namespace)) => touched.send(store.apply(namespace)),
            Ok(Event::Delete(namespace)) => touched.send(store.delete(&namespace)),
            Ok(Event::Init) => {
                relist = NamespaceRelist::default();
                Ok(())
            }
            Ok(Event::InitApply(namespace)) => {
                store.add_to_relist_from(&mut relist, namespace);
                Ok(())
            }
            Ok(Event::InitDone) => {
                // Every namespace listed may have changed, and those not listed are gone.
                let relisted = relist.names();
                let vanished = store.replace(std::mem::take(&mut relist));
                synced.send_replace(true);
                relisted
                    .into_iter()
                    .chain(vanished)
                    .try_for_each(|name| touched.send(name))
            }
            Err(error) => {
                tracing::warn!(error = %watch_error(&error), "Watch failed; retrying with backoff.");
                Ok(())
            }
        };
        if sent.is_err() {
            // The controller is gone: the daemon is stopping.
            return;
        }
    }
}

/// Starts the watch(es) of `K` with `config` into `store`: across all namespaces, or in each
/// of `namespaces`; `name` when `config` selects one object name.
fn spawn_watches<K>(
    client: &Client,
    namespaces: Option<&[String]>,
    config: &watcher::Config,
    name: Option<&String>,
    store: &SlimStore<K>,
    touched: &Touched,
) -> Vec<Synced>
where
    K: Slim + kube::Resource<Scope = NamespaceResourceScope> + DeserializeOwned + Debug,
{
    let start = |api: Api<K>, namespace: Option<&String>| {
        let coverage = Coverage {
            namespace: namespace.cloned(),
            name: name.cloned(),
        };
        let (synced_tx, synced_rx) = signal::channel(false);
        let events = watch(api, config.clone()).default_backoff();
        tokio::spawn(feed_store(
            events,
            store.clone(),
            coverage,
            touched.clone(),
            synced_tx,
        ));
        Synced(synced_rx)
    };
    match namespaces {
        None => vec![start(Api::all(client.clone()), None)],
        Some(names) => names
            .iter()
            .map(|ns| start(Api::namespaced(client.clone(), ns), Some(ns)))
            .collect(),
    }
}

/// Applies one watch stream's events to `store`, sending the namespace of every object that
/// changed. A re-list (a fresh start or a 410 Expired) is collected and replaces what the
/// stream covers at its end; objects gone by then count as changed too.
async fn feed_store<K: Slim>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    store: SlimStore<K>,
    coverage: Coverage,
    touched: Touched,
    synced: signal::Sender<bool>,
) {
    let mut events = std::pin::pin!(events);
    let mut relist = Relist::default();
    while let Some(event) = events.next().await {
        let sent = match event {
            Ok(Event::Apply(object)) => touched.send(store.apply(object)),
            Ok(Event::Delete(object)) => touched.send(store.delete(&object)),
            Ok(Event::Init) => {
                relist = Relist::default();
                Ok(())
            }
            Ok(Event::InitApply(object)) => {
                store.add_to_relist(&mut relist, object);
                Ok(())
            }
            Ok(Event::InitDone) => {
                let changed = store.replace(&coverage, std::mem::take(&mut relist));
                synced.send_replace(true);
                changed.into_iter().try_for_each(|ns| touched.send(ns))
            }
            Err(error) => {
                tracing::warn!(error = %watch_error(&error), "Watch failed; retrying with backoff.");
                Ok(())
            }
        };
        if sent.is_err() {
            // The controller is gone: the daemon is stopping.
            return;
        }
    }
}

/// A watch error in words: the server's message and code, never a Debug dump.
fn watch_error(error: &watcher::Error) -> String {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => super::describe(e),
        watcher::Error::WatchError(status) => {
            format!(
                "{} ({}, HTTP {})",
                status.message, status.reason, status.code
            )
        }
        other => other.to_string(),
    }
}

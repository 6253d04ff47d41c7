//! Watch caches (kube I/O, read-only): kube-runtime reflectors over namespaces, managed Secrets,
//! the linked service accounts (one watch per account name) and managed RoleBindings, and the
//! per-namespace view of them that `diff` needs.
//!
//! After the initial list each cache is kept current by its watch (resumed from the last
//! resourceVersion or bookmark; re-listed only after 410 Expired), so reading a namespace's
//! objects costs no request. Every change is reported as the name of the namespace it touches,
//! including objects that vanished while a watch was re-listing. Must not write anything.
//!
//! Namespaced mode (`namespaces:` in the config) watches nothing cluster-wide and needs only a
//! Role per namespace: one reflector per namespace per kind (per account name for service
//! accounts), in a map namespace → store. One store cannot serve several watch streams,
//! because each stream's re-list (`Init` … `InitDone`) replaces the whole store and would drop
//! the other namespaces' objects. There is no namespace watch: the namespace store is filled
//! once from the config, labels empty, and the config's namespaces are fixed for the daemon's
//! life (a reload that changes them is rejected; see `daemon`).
//!
//! Secrets and RoleBindings are also indexed by namespace, so a reconcile reads its own
//! namespace's objects without scanning every namespace's (at 10,000 namespaces a full scan
//! per reconcile made a cold start quadratic).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt as _};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, reflector as reflect, watcher as watch};
use kube::{Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::view::{self, ClusterView, namespace_info};
use crate::diff::ObservedProject;
use crate::model::managed::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::plan::NamespaceInfo;

/// Names of namespaces whose objects changed; the controller reconciles them.
pub type Touched = mpsc::UnboundedSender<String>;

/// Names of a store's objects by namespace, kept by the task that reports changes: updated
/// before the namespace is reported, so the reconcile that follows sees the object.
#[derive(Clone, Default)]
struct NamespaceIndex(Arc<Mutex<HashMap<String, BTreeSet<String>>>>);

impl NamespaceIndex {
    fn insert(&self, namespace: String, name: String) {
        self.lock().entry(namespace).or_default().insert(name);
    }

    fn remove(&self, namespace: &str, name: &str) {
        let mut index = self.lock();
        if let Some(names) = index.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                index.remove(namespace);
            }
        }
    }

    fn namespaces(&self) -> BTreeSet<String> {
        self.lock().keys().cloned().collect()
    }

    fn names(&self, namespace: &str) -> Vec<String> {
        self.lock()
            .get(namespace)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One kind's reflector stores: one across all namespaces, or one per namespace (namespaced
/// mode).
#[derive(Clone)]
enum Stores<K: Resource<DynamicType = ()> + Clone + 'static> {
    Cluster(Store<K>),
    Namespaces(BTreeMap<String, Store<K>>),
}

impl<K> Stores<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    /// Starts the watch(es) of `K` with `config`: across all namespaces, or in each of
    /// `namespaces`.
    fn spawn(
        client: &Client,
        namespaces: Option<&[String]>,
        config: &watcher::Config,
        touched: &Touched,
        index: Option<&NamespaceIndex>,
    ) -> Self {
        let start = |api: Api<K>| {
            spawn_reflector(
                api,
                config.clone(),
                touched.clone(),
                namespace_of,
                index.cloned(),
            )
        };
        match namespaces {
            None => Self::Cluster(start(Api::all(client.clone()))),
            Some(names) => Self::Namespaces(
                names
                    .iter()
                    .map(|ns| (ns.clone(), start(Api::namespaced(client.clone(), ns))))
                    .collect(),
            ),
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = ObjectRef::new(name).within(namespace);
        match self {
            Self::Cluster(store) => store.get(&key),
            Self::Namespaces(stores) => stores.get(namespace)?.get(&key),
        }
    }

    fn state(&self) -> Vec<Arc<K>> {
        match self {
            Self::Cluster(store) => store.state(),
            Self::Namespaces(stores) => stores.values().flat_map(Store::state).collect(),
        }
    }

    async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        match self {
            Self::Cluster(store) => store.wait_until_ready().await,
            Self::Namespaces(stores) => {
                for store in stores.values() {
                    store.wait_until_ready().await?;
                }
                Ok(())
            }
        }
    }
}

/// The reflector stores the daemon plans and diffs from.
#[derive(Clone)]
pub struct Caches {
    /// Watched, or (namespaced mode) the configured namespaces, filled once.
    pub namespaces: Store<Namespace>,
    secrets: Stores<Secret>,
    role_bindings: Stores<RoleBinding>,
    secrets_by_namespace: NamespaceIndex,
    role_bindings_by_namespace: NamespaceIndex,
    /// One store (or, namespaced, one per namespace) per watched service-account name.
    accounts: Arc<Mutex<BTreeMap<String, Stores<ServiceAccount>>>>,
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
        let namespaces = match scope {
            None => spawn_reflector(
                Api::<Namespace>::all(client.clone()),
                watcher::Config::default(),
                touched.clone(),
                |ns: &Namespace| ns.name_any(),
                None,
            ),
            Some(names) => fixed_namespaces(names),
        };
        let secrets_by_namespace = NamespaceIndex::default();
        let secrets = Stores::spawn(
            client,
            scope,
            &managed,
            &touched,
            Some(&secrets_by_namespace),
        );
        let role_bindings_by_namespace = NamespaceIndex::default();
        let role_bindings = Stores::spawn(
            client,
            scope,
            &managed,
            &touched,
            Some(&role_bindings_by_namespace),
        );
        let caches = Self {
            namespaces,
            secrets,
            role_bindings,
            secrets_by_namespace,
            role_bindings_by_namespace,
            accounts: Arc::default(),
            scope: scope.map(<[String]>::to_vec),
            client: client.clone(),
            touched,
            openshift,
        };
        caches.watch_accounts(accounts);
        caches
    }

    /// Every cached managed Secret.
    pub fn secrets(&self) -> Vec<Arc<Secret>> {
        self.secrets.state()
    }

    /// Adds a watch for each service-account name not watched yet (returned, to wait for).
    /// Names are never dropped: an account the config stopped linking must still be seen to
    /// be unlinked.
    pub fn watch_accounts(&self, names: &BTreeSet<String>) -> Vec<AccountWatch> {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut added = Vec::new();
        for name in names {
            if accounts.contains_key(name) {
                continue;
            }
            let stores = Stores::spawn(
                &self.client,
                self.scope.as_deref(),
                &watcher::Config::default().fields(&format!("metadata.name={name}")),
                &self.touched,
                None,
            );
            accounts.insert(name.clone(), stores.clone());
            added.push(AccountWatch(stores));
        }
        added
    }

    fn account_stores(&self) -> Vec<(String, Stores<ServiceAccount>)> {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, store)| (name.clone(), store.clone()))
            .collect()
    }

    /// Waits until every store has had its initial list.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.namespaces.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.role_bindings.wait_until_ready().await?;
        for (_, stores) in self.account_stores() {
            stores.wait_until_ready().await?;
        }
        Ok(())
    }
}

/// A newly started service-account watch (all its namespaces' stores).
pub struct AccountWatch(Stores<ServiceAccount>);

impl AccountWatch {
    /// Waits until its initial list(s) are in.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.0.wait_until_ready().await
    }
}

/// Namespaced mode: a store holding the configured namespaces (names only), ready at once, and
/// never changed: the daemon's reconcile requests are looked up in it.
fn fixed_namespaces(names: &[String]) -> Store<Namespace> {
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    for name in names {
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..kube::api::ObjectMeta::default()
            },
            ..Namespace::default()
        };
        writer.apply_watcher_event(&Event::InitApply(namespace));
    }
    writer.apply_watcher_event(&Event::InitDone);
    reader
}

impl ClusterView for Caches {
    fn namespaces(&self) -> Vec<NamespaceInfo> {
        let mut infos: Vec<NamespaceInfo> = self
            .namespaces
            .state()
            .iter()
            .filter_map(|ns| cache_namespace_info(ns))
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        let namespace = self.namespaces.get(&ObjectRef::new(name))?;
        cache_namespace_info(&namespace)
    }

    fn openshift(&self) -> Option<bool> {
        self.openshift
    }

    /// From the caches: no request, no scan of other namespaces.
    fn observed(&self, namespace: &str) -> ObservedProject {
        let secrets: Vec<Secret> = self
            .secrets_by_namespace
            .names(namespace)
            .iter()
            .filter_map(|name| self.secrets.get(namespace, name))
            .map(|s| Secret::clone(&s))
            .collect();
        let stores = self.account_stores();
        let watched: BTreeSet<String> = stores.iter().map(|(name, _)| name.clone()).collect();
        ObservedProject {
            unread_accounts: view::unread_accounts(&secrets, &watched),
            secrets,
            service_accounts: stores
                .iter()
                .filter_map(|(name, stores)| stores.get(namespace, name))
                .map(|sa| ServiceAccount::clone(&sa))
                .collect(),
            role_bindings: self
                .role_bindings_by_namespace
                .names(namespace)
                .iter()
                .filter_map(|name| self.role_bindings.get(namespace, name))
                .map(|b| RoleBinding::clone(&b))
                .collect(),
        }
    }

    fn namespaces_with_objects(&self) -> BTreeSet<String> {
        let mut names = self.secrets_by_namespace.namespaces();
        names.extend(self.role_bindings_by_namespace.namespaces());
        names
    }
}

fn cache_namespace_info(namespace: &Namespace) -> Option<NamespaceInfo> {
    namespace_info(
        &namespace.metadata,
        namespace.status.as_ref().and_then(|s| s.phase.as_deref()),
    )
}

fn namespace_of<K: Resource>(object: &K) -> String {
    object.meta().namespace.clone().unwrap_or_default()
}

/// Runs a reflector in its own task, reporting the namespace of every object it sees change
/// (and keeping `index` current when given).
fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    touched: Touched,
    namespace: fn(&K) -> String,
    index: Option<NamespaceIndex>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    // managedFields are never read here and are often the bulk of an object: not cached.
    let events = reflect(
        writer,
        watch(api, config)
            .default_backoff()
            .modify(|object: &mut K| object.meta_mut().managed_fields = None),
    );
    let store = reader.clone();
    tokio::spawn(report_changes(events, reader, touched, namespace, index));
    store
}

/// Sends the namespace of each applied or deleted object. After a re-list (a fresh start or a
/// 410 Expired), objects that were cached before and are gone now count as deleted.
async fn report_changes<K>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    store: Store<K>,
    touched: Touched,
    namespace: fn(&K) -> String,
    index: Option<NamespaceIndex>,
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let mut events = std::pin::pin!(events);
    let mut before_relist: Vec<Arc<K>> = Vec::new();
    while let Some(event) = events.next().await {
        let sent = match event {
            Ok(Event::Apply(object) | Event::InitApply(object)) => {
                if let Some(index) = &index {
                    index.insert(namespace(&object), object.name_any());
                }
                touched.send(namespace(&object))
            }
            Ok(Event::Delete(object)) => {
                if let Some(index) = &index {
                    index.remove(&namespace(&object), &object.name_any());
                }
                touched.send(namespace(&object))
            }
            Ok(Event::Init) => {
                before_relist = store.state();
                Ok(())
            }
            Ok(Event::InitDone) => {
                let gone: BTreeSet<String> = before_relist
                    .drain(..)
                    .filter(|old| store.get(&ObjectRef::from_obj(old.as_ref())).is_none())
                    .map(|old| {
                        if let Some(index) = &index {
                            index.remove(&namespace(&old), &old.name_any());
                        }
                        namespace(&old)
                    })
                    .collect();
                gone.into_iter().try_for_each(|ns| touched.send(ns))
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

//! The cluster as the pipeline reads it (read-only): one [`ClusterView`] trait, implemented by
//! a list snapshot ([`super::snapshot::ClusterSnapshot`], `once`, `plan --cluster`,
//! workstation passes) and by the daemon's watch caches ([`super::cache::Caches`]). Whatever
//! the trigger, the same rules decide which namespaces exist and which service accounts are
//! read, so `reconcile` is written once. Must not write anything.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;

use crate::config::Config;
use crate::diff::ObservedProject;
use crate::model::managed::{self, recorded_service_accounts};
use crate::plan::{self, NamespaceInfo};

/// What the pipeline reads from a cluster.
pub trait ClusterView {
    /// Namespaces that exist and are not terminating, with their labels, sorted by name.
    fn namespaces(&self) -> Vec<NamespaceInfo>;
    /// One namespace, if it exists and is not terminating.
    fn namespace(&self, name: &str) -> Option<NamespaceInfo>;
    /// OpenShift or not, from API discovery; `None` when discovery failed.
    fn openshift(&self) -> Option<bool>;
    /// What `namespace` holds of interest (empty when nothing).
    fn observed(&self, namespace: &str) -> ObservedProject;
    /// Namespaces holding any object with pullsecretd's label (candidates for cleanup).
    fn namespaces_with_objects(&self) -> BTreeSet<String>;
}

/// A namespace (or OpenShift project) as the planner sees it; `None` while it terminates:
/// nothing can be created in it, so nothing is planned for it.
pub fn namespace_info(meta: &ObjectMeta, phase: Option<&str>) -> Option<NamespaceInfo> {
    (phase != Some("Terminating")).then(|| NamespaceInfo {
        name: meta.name.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
    })
}

/// At most this many service-account names beyond the configured ones are read from
/// Secrets' records, in all: each costs a list or a watch.
pub const MAX_RECORDED_ACCOUNTS: usize = 64;

/// The service accounts to read: those the config links, plus those this instance's Secrets
/// record they are linked from (so a link the config dropped can still be found and
/// removed). Anyone who may create a Secret can copy pullsecretd's marks, and each name read
/// costs a list or a watch, so the record is read only from Secrets that pass the ownership
/// proof, and at most [`MAX_RECORDED_ACCOUNTS`] recorded names beyond the configured ones are
/// read: first those recorded in namespaces of `namespaces` the config selects, then those
/// recorded elsewhere (a namespace no longer selected, a pull secret the config dropped), each
/// group in name order. A Secret recording an account left unread is never deleted
/// ([`unread_accounts`], the diff's guard).
pub fn account_names<'a>(
    config: &Config,
    secrets: impl IntoIterator<Item = &'a Secret>,
    namespaces: &[NamespaceInfo],
) -> BTreeSet<String> {
    let instance = config.instance_name();
    let selected: BTreeSet<&str> = namespaces
        .iter()
        .filter(|ns| plan::selects_namespace(config, ns))
        .map(|ns| ns.name.as_str())
        .collect();
    let mut names: BTreeSet<String> = config
        .pull_secrets
        .iter()
        .flat_map(|p| p.links.keys().cloned())
        .filter(|name| !name.is_empty())
        .collect();
    let (mut inside, mut outside) = (BTreeSet::new(), BTreeSet::new());
    for secret in secrets {
        if !managed::secret_ownership(secret, instance).is_ours() {
            continue;
        }
        let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
        let group = if selected.contains(namespace) {
            &mut inside
        } else {
            &mut outside
        };
        group.extend(recorded_service_accounts(secret).filter(|n| !names.contains(n)));
    }
    let mut extra = 0;
    for name in inside.into_iter().chain(outside) {
        if extra == MAX_RECORDED_ACCOUNTS {
            break;
        }
        if names.insert(name) {
            extra += 1;
        }
    }
    names
}

/// The accounts `secrets` (of one namespace) record that are not in `read`: their link lists
/// are unknown, so a Secret recording one must not be deleted.
pub fn unread_accounts<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    read: &BTreeSet<String>,
) -> BTreeSet<String> {
    secrets
        .into_iter()
        .flat_map(recorded_service_accounts)
        .filter(|name| !read.contains(name))
        .collect()
}

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
use crate::plan::NamespaceInfo;

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

/// The service accounts to read: those the config links, plus those this instance's Secrets
/// record they are linked from (so a link the config dropped can still be found and
/// removed). Other instances' and unproven Secrets are not read.
pub fn account_names<'a>(
    config: &Config,
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> BTreeSet<String> {
    let instance = config.instance_name();
    let configured = config
        .pull_secrets
        .iter()
        .flat_map(|p| p.links.keys().cloned());
    let recorded = secrets
        .into_iter()
        .filter(|s| managed::secret_ownership(s, instance).is_ours())
        .flat_map(recorded_service_accounts);
    configured
        .chain(recorded)
        .filter(|name| !name.is_empty())
        .collect()
}

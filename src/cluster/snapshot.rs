//! The list snapshot (I/O, read-only): what the cluster holds that the diff needs, read once in
//! few requests — the [`ClusterView`] of `once`, `plan --cluster` and workstation passes.
//!
//! Reads scale with kinds, not namespaces: API discovery (is this OpenShift?), one list of
//! namespaces, one of pullsecretd's
//! Secrets, one per linked service-account name (`fieldSelector=metadata.name=default`), one of
//! pullsecretd's RoleBindings — each across all namespaces and paginated. An identity that may
//! not list across namespaces (an OpenShift self-provisioner) falls back to OpenShift
//! `projects` for the namespace list and to per-namespace lists for the rest.
//!
//! Namespaced mode (`namespaces:` in the config) reads no namespace list and makes no
//! cluster-wide request: the configured names are the namespaces, and every list runs in each
//! of them, which a Role per namespace allows. A configured namespace that does not exist
//! cannot hold a Role, so its lists answer 403 (404 or an empty list for an identity with
//! cluster-wide rights): it is then left out of the namespaces, so the plan reports it as a
//! project that does not exist (or is not visible) instead of failing; an empty list leaves
//! it to the create, whose 404 is the same problem (`apply`).
//!
//! Same-name Secrets pullsecretd does not own are not read up front: a create that answers
//! `AlreadyExists` reveals them at the cost of one request, instead of a read per namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectList};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::view::{ClusterView, account_names, namespace_info, unread_accounts};
use super::{ApiError, Throttle};
use crate::config::Config;
use crate::diff::ObservedProject;
use crate::model::managed::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::plan::NamespaceInfo;

/// Objects per list page.
const PAGE_SIZE: u32 = 500;

/// Everything `plan` and `diff` need from the cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    /// Namespaces that exist and are not terminating, with their labels.
    pub namespaces: Vec<NamespaceInfo>,
    /// What each namespace holds of interest; namespaces holding nothing are absent.
    pub projects: BTreeMap<String, ObservedProject>,
    /// OpenShift or not, from API discovery; `None` when discovery failed.
    pub openshift: Option<bool>,
}

impl ClusterView for ClusterSnapshot {
    fn namespaces(&self) -> Vec<NamespaceInfo> {
        self.namespaces.clone()
    }

    fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        self.namespaces.iter().find(|ns| ns.name == name).cloned()
    }

    fn openshift(&self) -> Option<bool> {
        self.openshift
    }

    fn observed(&self, namespace: &str) -> ObservedProject {
        self.projects.get(namespace).cloned().unwrap_or_default()
    }

    fn namespaces_with_objects(&self) -> BTreeSet<String> {
        self.projects
            .iter()
            .filter(|(_, p)| !p.secrets.is_empty() || !p.role_bindings.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Reads namespaces, managed Secrets, the service accounts pullsecretd links (or has linked),
/// and managed RoleBindings.
pub async fn read_snapshot(
    client: &Client,
    config: &Config,
    throttle: &Throttle,
) -> Result<ClusterSnapshot, ApiError> {
    let (mut namespaces, scope) = match &config.namespaces {
        Some(names) => (
            configured_namespaces(names),
            Scope::Namespaces(names.clone()),
        ),
        None => {
            let namespaces = list_namespaces(client, throttle).await?;
            let names: Vec<String> = namespaces.iter().map(|ns| ns.name.clone()).collect();
            let scope = Scope::detect(client, throttle, &names).await?;
            (namespaces, scope)
        }
    };
    let managed = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));

    let mut missing = BTreeSet::new();
    let secrets: Vec<Secret> = scope.list(client, throttle, &managed, &mut missing).await?;
    let mut accounts: Vec<ServiceAccount> = Vec::new();
    let read = account_names(config, &secrets, &namespaces);
    for account in &read {
        let by_name = ListParams::default().fields(&format!("metadata.name={account}"));
        accounts.extend(
            scope
                .list::<ServiceAccount>(client, throttle, &by_name, &mut missing)
                .await?,
        );
    }
    let bindings: Vec<RoleBinding> = scope.list(client, throttle, &managed, &mut missing).await?;
    namespaces.retain(|ns| !missing.contains(&ns.name));

    let mut projects: BTreeMap<String, ObservedProject> = BTreeMap::new();
    for secret in secrets {
        project_of(&mut projects, &secret).secrets.push(secret);
    }
    for account in accounts {
        project_of(&mut projects, &account)
            .service_accounts
            .push(account);
    }
    for binding in bindings {
        project_of(&mut projects, &binding)
            .role_bindings
            .push(binding);
    }
    for project in projects.values_mut() {
        project.unread_accounts = unread_accounts(&project.secrets, &read);
    }
    let openshift = detect_openshift(client, throttle).await;
    Ok(ClusterSnapshot {
        namespaces,
        projects,
        openshift,
    })
}

/// Every Event in `namespaces`, for `status`, which picks pullsecretd's own. `cluster_wide`
/// tries one list across all namespaces first (a 403 falls back to one list per namespace):
/// the caller already knows the namespaces from its snapshot, so nothing is listed twice.
pub async fn read_events(
    client: &Client,
    throttle: &Throttle,
    namespaces: &[String],
    cluster_wide: bool,
) -> Result<Vec<Event>, ApiError> {
    if cluster_wide {
        match list_pages(
            &Api::<Event>::all(client.clone()),
            throttle,
            &ListParams::default(),
        )
        .await
        {
            Ok(events) => return Ok(events),
            Err(error) if is_forbidden(&error) => {}
            Err(error) => return Err(ApiError::new("list", "events", "(all namespaces)", error)),
        }
    }
    let mut missing = BTreeSet::new();
    Scope::Namespaces(namespaces.to_vec())
        .list(client, throttle, &ListParams::default(), &mut missing)
        .await
}

/// Namespaced mode, for the daemon's watches: the configured namespaces whose Secrets this
/// identity can list (one request each). A watch in any other would never sync; those are
/// logged and left out until a restart.
pub async fn readable_namespaces(
    client: &Client,
    throttle: &Throttle,
    names: &[String],
) -> Result<Vec<String>, ApiError> {
    let probe = ListParams::default()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
        .limit(1);
    let mut readable = Vec::with_capacity(names.len());
    for namespace in names {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        match throttle.call(|| api.list_metadata(&probe)).await {
            Ok(_) => readable.push(namespace.clone()),
            Err(error) if is_forbidden(&error) || is_not_found(&error) => {
                tracing::error!(
                    namespace,
                    error = %super::describe(&error),
                    "Namespace not readable (it does not exist, or has no Role for \
                     pullsecretd): not managed until a restart."
                );
            }
            Err(error) => return Err(ApiError::new("list", "secrets", namespace, error)),
        }
    }
    Ok(readable)
}

/// Namespaced mode: the configured namespaces, taken as existing (their labels are not read).
pub fn configured_namespaces(names: &[String]) -> Vec<NamespaceInfo> {
    let mut infos: Vec<NamespaceInfo> = names
        .iter()
        .map(|name| NamespaceInfo {
            name: name.clone(),
            labels: BTreeMap::new(),
        })
        .collect();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    infos
}

/// API groups that only OpenShift serves (docs/openshift.md). `user.openshift.io` is not one of them:
/// it is absent when OpenShift uses an external OIDC provider.
const OPENSHIFT_GROUPS: &[&str] = &["project.openshift.io", "image.openshift.io"];

/// OpenShift is recognised by its API groups in `/apis`. A failed discovery is "unknown", not
/// "no": aggregated APIs can be briefly unavailable.
pub async fn detect_openshift(client: &Client, throttle: &Throttle) -> Option<bool> {
    match throttle.call(|| client.list_api_groups()).await {
        Ok(list) => Some(
            list.groups
                .iter()
                .any(|group| OPENSHIFT_GROUPS.contains(&group.name.as_str())),
        ),
        Err(error) => {
            tracing::warn!(
                error = %super::describe(&error),
                "API discovery failed; whether this is OpenShift is unknown."
            );
            None
        }
    }
}

fn project_of<'a, K: Resource>(
    projects: &'a mut BTreeMap<String, ObservedProject>,
    object: &K,
) -> &'a mut ObservedProject {
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    projects.entry(namespace).or_default()
}

/// All namespaces, or (when that is forbidden) the OpenShift projects the identity can see.
/// Terminating namespaces are left out: nothing can be created in them.
async fn list_namespaces(
    client: &Client,
    throttle: &Throttle,
) -> Result<Vec<NamespaceInfo>, ApiError> {
    let api: Api<Namespace> = Api::all(client.clone());
    match list_pages(&api, throttle, &ListParams::default()).await {
        Ok(namespaces) => Ok(namespaces
            .iter()
            .filter_map(|ns| {
                namespace_info(
                    &ns.metadata,
                    ns.status.as_ref().and_then(|s| s.phase.as_deref()),
                )
            })
            .collect()),
        Err(error) if is_forbidden(&error) => list_projects(client, throttle).await,
        Err(error) => Err(ApiError::new("list", "namespaces", "(cluster)", error)),
    }
}

async fn list_projects(
    client: &Client,
    throttle: &Throttle,
) -> Result<Vec<NamespaceInfo>, ApiError> {
    let resource = ApiResource {
        group: "project.openshift.io".into(),
        version: "v1".into(),
        api_version: "project.openshift.io/v1".into(),
        kind: "Project".into(),
        plural: "projects".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let projects = list_pages(&api, throttle, &ListParams::default())
        .await
        .map_err(|error| ApiError::new("list", "projects", "(cluster)", error))?;
    Ok(projects
        .iter()
        .filter_map(|p| {
            let phase = p
                .data
                .get("status")
                .and_then(|s| s.get("phase"))
                .and_then(|v| v.as_str());
            namespace_info(&p.metadata, phase)
        })
        .collect())
}

fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Where lists run: across all namespaces, or namespace by namespace when the identity may only
/// read inside its own projects.
enum Scope {
    Cluster,
    Namespaces(Vec<String>),
}

impl Scope {
    /// Cluster-wide if a cluster-wide list of Secrets is allowed.
    async fn detect(
        client: &Client,
        throttle: &Throttle,
        namespaces: &[String],
    ) -> Result<Self, ApiError> {
        let api: Api<Secret> = Api::all(client.clone());
        let probe = ListParams::default()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
            .limit(1);
        match throttle.call(|| api.list_metadata(&probe)).await {
            Ok(_) => Ok(Self::Cluster),
            Err(error) if is_forbidden(&error) => Ok(Self::Namespaces(namespaces.to_vec())),
            Err(error) => Err(ApiError::new("list", "secrets", "(all namespaces)", error)),
        }
    }

    /// Lists `K` with `params`; namespaces that answer 403 or 404 (not readable: no Role
    /// there, or they do not exist — under RBAC a missing namespace has no Role, so it answers
    /// 403) are added to `missing` and skipped.
    async fn list<K>(
        &self,
        client: &Client,
        throttle: &Throttle,
        params: &ListParams,
        missing: &mut BTreeSet<String>,
    ) -> Result<Vec<K>, ApiError>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let resource = <K as k8s_openapi::Resource>::URL_PATH_SEGMENT;
        match self {
            Self::Cluster => list_pages(&Api::<K>::all(client.clone()), throttle, params)
                .await
                .map_err(|error| ApiError::new("list", resource, "(all namespaces)", error)),
            Self::Namespaces(namespaces) => {
                let mut items = Vec::new();
                for namespace in namespaces {
                    let api = Api::<K>::namespaced(client.clone(), namespace);
                    match list_pages(&api, throttle, params).await {
                        Ok(page) => items.extend(page),
                        // A project this identity may not read is not one it can manage.
                        Err(error) if is_forbidden(&error) => {
                            tracing::warn!(namespace, resource, "Not allowed to list; skipping.");
                            missing.insert(namespace.clone());
                        }
                        Err(error) if is_not_found(&error) => {
                            tracing::warn!(namespace, resource, "Namespace not found; skipping.");
                            missing.insert(namespace.clone());
                        }
                        Err(error) => {
                            return Err(ApiError::new("list", resource, namespace, error));
                        }
                    }
                }
                Ok(items)
            }
        }
    }
}

/// Every page of a list.
async fn list_pages<K>(
    api: &Api<K>,
    throttle: &Throttle,
    params: &ListParams,
) -> Result<Vec<K>, kube::Error>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut params = params.clone().limit(PAGE_SIZE);
    let mut items = Vec::new();
    loop {
        let page: ObjectList<K> = throttle.call(|| api.list(&params)).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

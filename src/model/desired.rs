//! Desired objects (pure): what the planner wants to exist in each project — Secrets with their
//! payloads, service-account links, image-puller RoleBindings — plus the Secrets it must hold
//! and the problems it found. `plan` makes them, `diff` compares them with the cluster,
//! `model::manifest` turns them into Kubernetes objects. Must not do I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretSlice};

use crate::model::credential::RegistryKey;
use crate::model::managed::{
    self, CONTENT_HASH_ANNOTATION, PULL_SECRET_ANNOTATION, SERVICE_ACCOUNTS_ANNOTATION,
    SOURCE_VERSION_ANNOTATION,
};

/// The two pull-secret types (docs/pull-secrets.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretType {
    /// `kubernetes.io/dockerconfigjson`, data key `.dockerconfigjson`, `{"auths": {...}}`.
    DockerConfigJson,
    /// `kubernetes.io/dockercfg`, data key `.dockercfg`, a bare map.
    Dockercfg,
}

impl SecretType {
    pub const fn type_name(self) -> &'static str {
        match self {
            Self::DockerConfigJson => "kubernetes.io/dockerconfigjson",
            Self::Dockercfg => "kubernetes.io/dockercfg",
        }
    }

    pub const fn data_key(self) -> &'static str {
        match self {
            Self::DockerConfigJson => ".dockerconfigjson",
            Self::Dockercfg => ".dockercfg",
        }
    }
}

/// Pods whose `imagePullSecrets` were copied from their service account before pullsecretd
/// linked the Secret never get it; after a link or rotation pullsecretd can tell or fix that.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Heal {
    /// Read no pods for this pull secret.
    Off,
    /// A Warning Event on each stuck pod naming the Secret and the fix.
    #[default]
    Report,
    /// Delete each stuck pod a controller owns (it comes back with the account's current
    /// secrets), rate-limited; a bare pod only gets the Event.
    Restart,
}

/// `oc secrets link --for=pull|mount` (docs/service-accounts.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkKind {
    /// `.imagePullSecrets`: pods created with this service account pull with the secret.
    Pull,
    /// `.secrets`: builds running as this service account may mount the secret.
    Mount,
}

impl LinkKind {
    /// The word `oc secrets link --for=` takes.
    pub const fn for_flag(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Mount => "mount",
        }
    }

    /// The ServiceAccount field the link lives in.
    pub const fn field(self) -> &'static str {
        match self {
            Self::Pull => "imagePullSecrets",
            Self::Mount => "secrets",
        }
    }
}

/// A RoleBinding subject for `system:image-puller` (docs/openshift.md).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PullerSubject {
    /// `serviceaccount:<project>:<name>`.
    ServiceAccount { namespace: String, name: String },
    /// `group:<project>`: every service account of that project,
    /// i.e. group `system:serviceaccounts:<project>`.
    ProjectServiceAccounts { project: String },
}

/// What the planner knows about a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl NamespaceInfo {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
        }
    }
}

/// The rendered bytes of a Secret's one data key. Never printed.
#[derive(Clone)]
pub struct SecretPayload(SecretSlice<u8>);

impl SecretPayload {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(SecretSlice::from(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPayload({} bytes, redacted)", self.expose().len())
    }
}

/// One pull Secret as it should exist in every project it is planned for.
#[derive(Clone, Debug)]
pub struct DesiredSecret {
    pub name: String,
    pub secret_type: SecretType,
    /// The config's pull-secret entry this Secret comes from.
    pub pull_secret: String,
    /// Registry names (config keys), in config order.
    pub registries: Vec<String>,
    /// The `auths` keys the payload holds, in config order.
    pub servers: Vec<RegistryKey>,
    pub payload: SecretPayload,
    /// Hex SHA-256 of type and payload.
    pub content_hash: String,
    /// `name=version,…` of the credentials it was rendered from.
    pub source_versions: String,
    /// Versioned Secrets are immutable; a new version is a new Secret.
    pub immutable: bool,
    /// Service accounts the Secret is linked from, sorted.
    pub service_accounts: Vec<String>,
    /// The pullsecretd instance writing it (its identity label).
    pub instance: String,
    /// The pull secret may take over a same-name Secret pullsecretd did not create.
    pub adopt: bool,
    /// Versioned Secrets: how long replaced versions stay, and how many.
    pub retention: Option<Retention>,
}

/// How replaced versions of a versioned Secret are kept (`rotation.grace`, `rotation.keep`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub grace: std::time::Duration,
    pub keep: usize,
}

impl DesiredSecret {
    /// Labels every managed Secret carries: managed-by and the instance.
    pub fn labels(&self) -> BTreeMap<String, String> {
        managed::labels(&self.instance)
    }

    /// Annotations every managed Secret carries: hashes and versions, never values.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                CONTENT_HASH_ANNOTATION.to_string(),
                self.content_hash.clone(),
            ),
            (
                SOURCE_VERSION_ANNOTATION.to_string(),
                self.source_versions.clone(),
            ),
            (PULL_SECRET_ANNOTATION.to_string(), self.pull_secret.clone()),
            (
                SERVICE_ACCOUNTS_ANNOTATION.to_string(),
                self.service_accounts.join(","),
            ),
        ])
    }
}

/// `oc secrets link <service_account> <secret> --for=<kind>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DesiredLink {
    pub service_account: String,
    pub kind: LinkKind,
    pub secret: String,
}

/// A RoleBinding of `system:image-puller` in the project holding the images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRoleBinding {
    pub name: String,
    pub subjects: Vec<PullerSubject>,
    /// The pullsecretd instance writing it (its identity label).
    pub instance: String,
}

/// A Secret the config wants whose content cannot be known now. Every Secret it owns in the
/// cluster (the one of its name and, for versioned rotation, every version), and their links,
/// must be left exactly as they are (last known good).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldSecret {
    /// The Secret's name, or for versioned rotation the base every version shares.
    pub name: String,
    pub pull_secret: String,
    pub reason: HoldReason,
}

/// Why a Secret is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// These registries have no credential: their source failed and none was read before.
    SourceFailed { registries: Vec<String> },
    /// The credentials were read but make no valid pull secret (the text says why, never a
    /// value), or its name is invalid.
    NotRendered { reason: String },
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SourceFailed { registries } => {
                write!(
                    f,
                    "source failed: no credential for {}",
                    registries.join(", ")
                )
            }
            Self::NotRendered { reason } => write!(f, "not rendered: {reason}"),
        }
    }
}

/// Desired objects in one project.
#[derive(Clone, Debug, Default)]
pub struct ProjectPlan {
    pub secrets: Vec<Arc<DesiredSecret>>,
    /// Problems of this project's plan (two pull secrets wanting one Secret name).
    pub problems: Vec<Problem>,
    pub held: Vec<HeldSecret>,
    pub links: Vec<DesiredLink>,
    pub role_bindings: Vec<DesiredRoleBinding>,
}

impl ProjectPlan {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
            && self.held.is_empty()
            && self.links.is_empty()
            && self.role_bindings.is_empty()
    }
}

/// Something the plan could not do, as data (like a status condition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Short machine-readable reason, e.g. `SourceFailed`.
    pub reason: &'static str,
    pub message: String,
}

/// The whole desired state.
#[derive(Clone, Debug, Default)]
pub struct DesiredState {
    /// Projects with at least one desired object, by name.
    pub projects: BTreeMap<String, ProjectPlan>,
    pub problems: Vec<Problem>,
}

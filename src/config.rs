//! Config stage (pure apart from reading the file): YAML in, a validated [`Config`] out.
//!
//! Every error names `file:line:column` and the field path. Nothing downstream re-validates:
//! a [`Config`] that exists is one whose references all resolve.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::credential::RegistryKey;
use crate::selector::LabelSelector;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Named registry credentials, each from one source.
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Pull secrets to write, in config order.
    pub pull_secrets: Vec<PullSecretConfig>,
    /// Cross-project `system:image-puller` grants (OpenShift).
    pub image_pullers: Vec<ImagePullerConfig>,
}

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// The key under `registries:`; pull secrets refer to it.
    pub name: String,
    /// The registry host the credential is for, normalised as docker does.
    pub server: RegistryKey,
    pub from: SourceConfig,
}

/// Where a registry's credential comes from. Paths are absolute: `~` is expanded and relative
/// paths are resolved against the config file's directory when the config is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceConfig {
    /// A docker `config.json`; `credsStore`/`credHelpers` entries are resolved through helpers.
    DockerConfig { path: PathBuf },
    /// A legacy `~/.dockercfg` (bare map of registry → entry).
    Dockercfg { path: PathBuf },
    /// A containers `auth.json` (podman, skopeo, buildah); keys may carry a namespace.
    ContainersAuth { path: PathBuf },
    /// `docker-credential-<name> get`, asked for the registry's server.
    Helper { name: String },
}

/// The two pull-secret types (SPEC.md §1).
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

#[derive(Clone, Debug)]
pub struct PullSecretConfig {
    /// Secret name (a DNS-1123 subdomain).
    pub name: String,
    pub secret_type: SecretType,
    /// Names from `registries:`, in order; more than one is a delegated-auth group.
    pub registries: Vec<String>,
    /// `combined` writes one Secret with every registry; `split` one Secret per registry.
    pub layout: Layout,
    pub projects: ProjectSelection,
    /// Service account name → which of its lists reference the secret(s), in config order.
    pub links: BTreeMap<String, Vec<LinkKind>>,
    pub rotation: Rotation,
    /// Take over an existing Secret of the same name that pullsecretd did not create.
    pub adopt: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    #[default]
    Combined,
    Split,
}

/// Which projects (namespaces) a pull secret goes to: listed names plus those matching the
/// selector, minus those matching any exclude glob.
#[derive(Clone, Debug, Default)]
pub struct ProjectSelection {
    pub names: Vec<String>,
    pub selector: Option<LabelSelector>,
    pub exclude: Vec<glob::Pattern>,
}

/// `oc secrets link --for=pull|mount` (SPEC.md §4).
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// How often the source is read again.
    pub refresh: Duration,
    pub strategy: RotationStrategy,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(300),
            strategy: RotationStrategy::InPlace,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RotationStrategy {
    /// Update the Secret's data; links stay as they are.
    #[default]
    InPlace,
    /// A new immutable Secret per credential version, linked before the old one is unlinked.
    Versioned,
}

#[derive(Clone, Debug)]
pub struct ImagePullerConfig {
    /// The project that holds the images.
    pub project: String,
    /// Who may pull from it, in config order, without duplicates.
    pub allow: Vec<PullerSubject>,
}

/// A RoleBinding subject for `system:image-puller` (SPEC.md §6).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PullerSubject {
    /// `serviceaccount:<project>:<name>`.
    ServiceAccount { namespace: String, name: String },
    /// `group:<project>`: every service account of that project,
    /// i.e. group `system:serviceaccounts:<project>`.
    ProjectServiceAccounts { project: String },
}

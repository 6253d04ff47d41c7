//! Config stage (pure apart from reading the file and `$HOME`): YAML in, a validated [`Config`]
//! out. It must not touch the cluster, credentials or any file the config names.
//!
//! Every error names `file:line:column` and the field path. Nothing downstream re-validates:
//! a [`Config`] that exists is one whose references all resolve.
//!
//! How: `yaml` parses the text with saphyr-parser's marked events into a small tree whose
//! every node keeps its line and column; `decode` walks that tree by hand into the typed
//! config, carrying the field path. serde is not used here because its messages quote the
//! offending value (a password pasted into the wrong field would end up in logs) and because a
//! check made after deserialising (an unknown registry, a duplicate name) has no location left.
//! The walk reports the first problem it finds: outside-in, in schema order.

mod decode;
pub mod provider;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::credential::RegistryKey;
pub use crate::model::desired::{Heal, LinkKind, PullerSubject, SecretType};
use crate::regular_file;
use crate::selector::LabelSelector;
pub use provider::{CacheKeyType, CredentialProviderConfig};

/// The most shards `run` accepts, from the config file or `--shards`.
pub const MAX_SHARDS: u32 = 1024;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The pullsecretd instance this config runs as: every object it writes carries this name,
    /// and it changes or deletes only objects that do (docs/ownership.md). `None`: the trigger's
    /// default ([`crate::model::managed::DEFAULT_INSTANCE`], or `workstation` for workstation mode).
    pub instance: Option<String>,
    /// How to reach Vault/OpenBao; present whenever a registry reads from Vault.
    pub vault: Option<VaultConfig>,
    /// Named registry credentials, each from one source.
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Pull secrets to write, in config order.
    pub pull_secrets: Vec<PullSecretConfig>,
    /// Cross-project `system:image-puller` grants (OpenShift).
    pub image_pullers: Vec<ImagePullerConfig>,
    /// Namespaced mode (`namespaces:`): the only namespaces pullsecretd reads and writes, taken
    /// as existing, so it needs a Role in each of them instead of cluster-wide access. `None`:
    /// the whole cluster. When present, every pull secret's projects and image puller lies
    /// inside it (the config stage checks this) and no label selector is used, since namespace
    /// labels are not read.
    pub namespaces: Option<Vec<String>>,
    /// `shards:`: how many shards `run` splits the namespaces into (docs/sharding.md); `--shards`
    /// overrides it. `None`: not set (one shard, unless the flag says otherwise).
    pub shards: Option<u32>,
    /// `credentialProvider:`: what only `pullsecretd credential-provider` reads.
    pub credential_provider: CredentialProviderConfig,
}

impl Config {
    /// The instance name: the config's, else the default one.
    pub fn instance_name(&self) -> &str {
        self.instance
            .as_deref()
            .unwrap_or(crate::model::managed::DEFAULT_INSTANCE)
    }

    /// Pull secrets allowed to take over same-name Secrets they did not create (`adopt: true`).
    pub fn adopting(&self) -> BTreeSet<String> {
        self.pull_secrets
            .iter()
            .filter(|p| p.adopt)
            .map(|p| p.name.clone())
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The key under `registries:`; pull secrets refer to it.
    pub name: String,
    /// The registry host the credential is for, normalised as docker does.
    pub server: RegistryKey,
    pub from: SourceConfig,
    /// `verify:`: check a changed credential against the registry before publishing it
    /// (`None`: publish what the source says).
    pub verify: Option<VerifyConfig>,
}

/// `registries.NAME.verify`: a changed credential is tried against the registry's `/v2/`
/// endpoint before any Secret gets it; a rejected one is never published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyConfig {
    /// What to do with a changed credential when the registry cannot be asked.
    pub unreachable: UnreachablePolicy,
    /// How long one check (ping, token request, authenticated ping) may take in all.
    pub timeout: Duration,
}

/// A check that got no answer from the registry (or its token realm).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnreachablePolicy {
    /// Keep the previous credential and try again (the source's failure backoff).
    #[default]
    Hold,
    /// Publish the unchecked credential (reported all the same).
    Publish,
}

/// Default time for one credential check.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            unreachable: UnreachablePolicy::default(),
            timeout: DEFAULT_VERIFY_TIMEOUT,
        }
    }
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
    /// A secret in a Vault/OpenBao KV engine, read through the one [`VaultConfig`] session.
    Vault(VaultSource),
}

/// Default request timeout for Vault calls: long enough for a busy server, short enough that
/// `plan` does not appear to hang.
pub const DEFAULT_VAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The top-level `vault:` block: one server, one login, shared by every Vault-sourced registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultConfig {
    /// `http://` or `https://` URL of the server, without credentials, query or fragment.
    pub address: String,
    /// PEM bundle of the CA certificates that sign the server's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Name the server certificate must carry when it differs from the address's host.
    pub tls_server_name: Option<String>,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Time limit of each HTTP request.
    pub timeout: Duration,
    pub auth: VaultAuth,
}

/// How pullsecretd logs in to Vault. Secrets (tokens, secret IDs) are never in the config:
/// only where to find them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token from `VAULT_TOKEN`, else `~/.vault-token`, else `file`.
    Token { file: Option<PathBuf> },
    /// AppRole: the role ID is not secret; the secret ID is read from `secret_id_file`.
    AppRole {
        role_id: String,
        secret_id_file: PathBuf,
        mount: String,
    },
    /// Kubernetes: the service-account token in `token_file` is exchanged for a Vault token.
    Kubernetes {
        role: String,
        mount: String,
        token_file: PathBuf,
    },
}

impl VaultAuth {
    /// The in-pod path of the service-account token.
    pub const DEFAULT_KUBERNETES_TOKEN_FILE: &str =
        "/var/run/secrets/kubernetes.io/serviceaccount/token";

    /// `token`, `approle` or `kubernetes`, as written in the config.
    pub const fn method(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::AppRole { .. } => "approle",
            Self::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// One secret in a KV engine and how to turn it into a registry credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultSource {
    /// Where the secret is: registries sharing a location are read once per refresh.
    pub location: VaultLocation,
    pub mapping: VaultMapping,
}

/// A secret (and, for KV v2, optionally one version of it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VaultLocation {
    /// The KV engine's mount, e.g. `secret`.
    pub mount: String,
    /// The secret's path below the mount, e.g. `registries/private`.
    pub path: String,
    pub kv: KvVersion,
}

/// The kind of secrets engine: a KV version, or a dynamic engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KvVersion {
    /// KV v1: unversioned; change detection hashes the content.
    V1,
    /// KV v2: `pinned` reads that version; `None` reads the current one.
    V2 { pinned: Option<u64> },
    /// `engine: dynamic`, not KV: each read of the path (the whole path, `mount` is empty)
    /// issues a new secret with a lease (the database engine's `database/creds/ROLE`), which
    /// the daemon renews and revokes (docs in the README's "Dynamic secrets").
    Dynamic,
}

impl std::fmt::Display for VaultLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kv == KvVersion::Dynamic {
            return write!(f, "{} (dynamic)", self.path);
        }
        write!(f, "{}/{}", self.mount, self.path)?;
        match self.kv {
            KvVersion::Dynamic => Ok(()),
            KvVersion::V1 => f.write_str(" (KV v1)"),
            KvVersion::V2 { pinned: None } => f.write_str(" (KV v2)"),
            KvVersion::V2 { pinned: Some(v) } => write!(f, " (KV v2, version {v})"),
        }
    }
}

/// Which fields of the secret hold the login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaultMapping {
    /// One field per part of the login.
    Fields(FieldMapping),
    /// One field holding a whole docker `config.json`; the registry's server is looked up in
    /// it by docker's rules.
    DockerConfig { field: String },
}

/// Field names for each part of a login; defaults `username`, `password`, `email`, `server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldMapping {
    pub username: String,
    pub password: String,
    pub email: OptionalField,
    /// When present in the secret, it must name the registry's configured server.
    pub server: OptionalField,
}

/// A field the secret may leave out, unless the config named it explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionalField {
    pub name: String,
    /// True when the config named the field: then it must be there.
    pub required: bool,
}

impl Default for FieldMapping {
    fn default() -> Self {
        Self {
            username: "username".into(),
            password: "password".into(),
            email: OptionalField {
                name: "email".into(),
                required: false,
            },
            server: OptionalField {
                name: "server".into(),
                required: false,
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullSecretConfig {
    /// Secret name (a DNS-1123 subdomain).
    pub name: String,
    pub secret_type: SecretType,
    /// Names from `registries:`, in order; more than one is a delegated-auth group.
    pub registries: Vec<String>,
    /// `combined` writes one Secret with every registry; `split` one Secret per registry.
    pub layout: Layout,
    pub projects: ProjectSelection,
    /// Service account name → which of its lists reference the secret(s). A map: service
    /// accounts in name order, each one's link kinds in config order (`model::links` documents
    /// the order links are written in).
    pub links: BTreeMap<String, Vec<LinkKind>>,
    pub rotation: Rotation,
    /// Take over an existing Secret of the same name that pullsecretd did not create.
    pub adopt: bool,
    /// What to do about pods stuck pulling because they were created before the link
    /// (docs/healing.md).
    pub heal: Heal,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    #[default]
    Combined,
    Split,
}

/// Which projects (namespaces) a pull secret goes to: listed names plus those matching the
/// selector, minus those matching any exclude glob.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProjectSelection {
    pub names: Vec<String>,
    pub selector: Option<LabelSelector>,
    pub exclude: Vec<glob::Pattern>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// How often the source is read again.
    pub refresh: Duration,
    pub strategy: RotationStrategy,
    /// `versioned`: how long a replaced version stays (unlinked) before it is deleted, so pods
    /// created just before the switch can still pull with it.
    pub grace: Duration,
    /// `versioned`: at most this many replaced versions are kept during their grace period.
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(300),
            strategy: RotationStrategy::InPlace,
            grace: Duration::from_secs(600),
            keep: 2,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePullerConfig {
    /// The project that holds the images.
    pub project: String,
    /// Who may pull from it, in config order, without duplicates.
    pub allow: Vec<PullerSubject>,
    /// Pull secrets whose selected projects may all pull from it: each such project's service
    /// accounts (group `system:serviceaccounts:<project>`) become subjects, as projects come
    /// and go, without listing them.
    pub allow_projects_of: Vec<String>,
}

/// Most namespaces a namespaced-mode config may list: each costs a list (and, in `run`, a watch)
/// per kind, so a longer list belongs in cluster-wide mode.
pub const MAX_NAMESPACES: usize = 1000;

/// Largest config file read; a config is a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Why a config could not be loaded. Every variant names the file; [`ConfigError::Invalid`]
/// also names the line, column and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", file.display())]
    ReadFile {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A directory, FIFO, device or socket: refused before it is opened, so it cannot block.
    #[error("{}: is {kind}, not a regular file", file.display())]
    NotAFile { file: PathBuf, kind: &'static str },
    #[error("{}: config is larger than {} bytes", file.display(), MAX_CONFIG_BYTES)]
    TooLarge { file: PathBuf },
    #[error("{}:{line}:{column}: config is not valid UTF-8", file.display())]
    NotUtf8 {
        file: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{}: cannot find the config's directory: {source}", file.display())]
    ResolveDirectory {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Anything wrong with the content: YAML syntax, types, fields, names, references.
    #[error("{}:{line}:{column}: {field}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        /// Where in the document, e.g. `pullSecrets[0].registries[1]`; `(top level)` for the
        /// document itself.
        field: String,
        message: String,
    },
}

impl Config {
    /// How often `registry` is read: the shortest `rotation.refresh` of the pull secrets using
    /// it (5 minutes when none does).
    pub fn refresh_interval(&self, registry: &str) -> Duration {
        self.pull_secrets
            .iter()
            .filter(|p| p.registries.iter().any(|r| r == registry))
            .map(|p| p.rotation.refresh)
            .min()
            .unwrap_or(Duration::from_secs(300))
    }

    /// How long a replaced credential of `registry` stays usable: the longest `rotation.grace`
    /// of the pull secrets using it (zero when none does).
    pub fn rotation_grace(&self, registry: &str) -> Duration {
        self.pull_secrets
            .iter()
            .filter(|p| p.registries.iter().any(|r| r == registry))
            .map(|p| p.rotation.grace)
            .max()
            .unwrap_or_default()
    }

    /// Reads and validates a config file (at most [`MAX_CONFIG_BYTES`], UTF-8).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_text(path)?;
        Self::from_yaml(&text, path)
    }

    /// Validates config text. `origin` names the file in errors, and its directory is where
    /// relative source paths start; `~` expands to `$HOME`.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let base_dir = config_directory(origin)?;
        let home = std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(PathBuf::from);
        Self::from_yaml_in(text, origin, &decode::Context { base_dir, home })
    }

    fn from_yaml_in(
        text: &str,
        origin: &Path,
        context: &decode::Context,
    ) -> Result<Config, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let root =
            yaml::parse_document(text).map_err(|e| invalid(origin, e.mark, &e.path, e.message))?;
        let Some(root) = root else {
            let message = "the config is empty; expected a mapping with registries and pullSecrets";
            return Err(invalid(
                origin,
                yaml::Mark { line: 1, column: 1 },
                &yaml::FieldPath::root(),
                message.into(),
            ));
        };
        decode::decode_config(&root, context)
            .map_err(|p| invalid(origin, p.mark, &p.path, p.message))
    }
}

impl PullSecretConfig {
    /// The links used when `link:` is left out: `default` pulls with the secret and `builder`
    /// mounts it, as OpenShift's "Using image pull secrets" procedure sets up.
    pub fn default_links() -> BTreeMap<String, Vec<LinkKind>> {
        decode::default_links()
    }
}

fn invalid(
    origin: &Path,
    mark: yaml::Mark,
    path: &yaml::FieldPath,
    message: String,
) -> ConfigError {
    ConfigError::Invalid {
        file: origin.to_path_buf(),
        line: mark.line,
        column: mark.column,
        field: path.to_string(),
        message,
    }
}

/// The absolute directory holding `origin`, for relative source paths.
fn config_directory(origin: &Path) -> Result<PathBuf, ConfigError> {
    let absolute = std::path::absolute(origin).map_err(|source| ConfigError::ResolveDirectory {
        file: origin.to_path_buf(),
        source,
    })?;
    Ok(absolute.parent().map(Path::to_path_buf).unwrap_or(absolute))
}

fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    let file = path.to_path_buf();
    let mut bytes =
        regular_file::read(path, MAX_CONFIG_BYTES).map_err(|refused| match refused {
            regular_file::Refused::Io(source) => ConfigError::ReadFile { file, source },
            regular_file::Refused::NotRegular(kind) => ConfigError::NotAFile { file, kind },
            regular_file::Refused::TooLarge => ConfigError::TooLarge { file },
        })?;
    // A config holds no secret values: take the bytes out of their zeroing wrapper.
    let bytes = std::mem::take(&mut *bytes);
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let (line, column) = line_and_column(valid);
        ConfigError::NotUtf8 {
            file: path.to_path_buf(),
            line,
            column,
        }
    })
}

/// 1-based line and column (in characters) just after `valid_prefix`, which is valid UTF-8.
fn line_and_column(valid_prefix: &[u8]) -> (usize, usize) {
    let text = std::str::from_utf8(valid_prefix).unwrap_or_default();
    let line = text.matches('\n').count() + 1;
    let last_line = text.rsplit('\n').next().unwrap_or_default();
    (line, last_line.chars().count() + 1)
}

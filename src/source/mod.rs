//! Source stage (I/O): resolve each configured registry to a [`Credential`] plus a version.
//!
//! One read per registry per refresh, however many projects use it. Sources never touch the
//! cluster, and their errors never carry secret values.

pub mod docker_file;
pub mod helper;
pub mod inventory;
pub mod service;
pub mod vault;
pub mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};

use crate::config::{Config, KvVersion, RegistryConfig, SourceConfig, VaultLocation, VaultSource};
use crate::dockerconfig::{AuthFileFormat, ParseError};
use crate::model::credential::{Credential, RegistryKey, Secret};
use crate::model::expiry;

pub use helper::HelperError;
pub use inventory::{Inventory, RefreshFailure, RefreshReport};
pub use vault::{VaultError, VaultSession};

/// Why a registry's credential could not be read. Names the file, helper and registry; never
/// carries a credential value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {format} {path}: {source}")]
    ReadAuthFile {
        format: AuthFileFormat,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {format} {path}: it is {kind}, not a regular file")]
    NotAFile {
        format: AuthFileFormat,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("reading {format} {path}: it is larger than {limit} bytes")]
    FileTooLarge {
        format: AuthFileFormat,
        path: PathBuf,
        limit: u64,
    },
    #[error("parsing {format} {path}: {source}")]
    ParseAuthFile {
        format: AuthFileFormat,
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    #[error("registry {registry} is not in {format} {path}")]
    NotInFile {
        registry: String,
        format: AuthFileFormat,
        path: PathBuf,
    },
    #[error("registry {registry}: entry {key:?} in {format} {path} is unusable: {reason}")]
    UnusableEntry {
        registry: String,
        key: String,
        format: AuthFileFormat,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("registry {registry}{}: {source}", named_in(.path.as_deref()))]
    HelperGet {
        registry: String,
        /// The file that named the helper, if any.
        path: Option<PathBuf>,
        #[source]
        source: HelperError,
    },
    #[error(
        "registry {registry}: credential helper {}{helper} has no credential for {server_url:?}{}",
        helper::HELPER_PREFIX,
        named_in(.path.as_deref())
    )]
    NotInHelper {
        registry: String,
        helper: String,
        server_url: String,
        path: Option<PathBuf>,
    },
    /// Shared by every registry that reads the same secret.
    #[error(transparent)]
    Vault(Arc<VaultError>),
    #[error("registry {registry} reads from Vault, but no Vault session was set up")]
    NoVaultSession { registry: String },
    /// `verify:` — the registry (or its token realm) refused the changed credential.
    #[error(
        "registry {registry}: {by} refused the new credential (HTTP {status}); it is not \
         published"
    )]
    CredentialRejected {
        registry: String,
        status: u16,
        by: &'static str,
    },
    /// `verify: { unreachable: hold }` — the changed credential could not be checked.
    #[error("registry {registry}: the new credential could not be checked ({reason}); it is held")]
    VerifyUnreachable { registry: String, reason: String },
}

fn named_in(path: Option<&Path>) -> String {
    path.map(|p| format!(" (helper named in {})", p.display()))
        .unwrap_or_default()
}

pub use crate::model::credential::Resolved;

/// How sources reach the outside world; tests point these at temporary directories.
#[derive(Clone, Debug)]
pub struct SourceContext {
    /// Directories searched for `docker-credential-<name>`; `None` means `$PATH`.
    pub helper_dirs: Option<Vec<PathBuf>>,
    /// How long a credential helper may take before it is killed.
    pub helper_timeout: Duration,
    /// The process's one Vault session, shared by every Vault-sourced registry.
    pub vault: Option<Arc<VaultSession>>,
}

impl Default for SourceContext {
    fn default() -> Self {
        Self {
            helper_dirs: None,
            helper_timeout: Duration::from_secs(10),
            vault: None,
        }
    }
}

/// What one pass over every registry produced: a credential or an error for each.
#[derive(Debug, Default)]
pub struct Resolution {
    pub credentials: BTreeMap<String, Resolved>,
    pub errors: BTreeMap<String, Error>,
}

/// Reads every registry once, however many projects use it. Vault registries that share a
/// secret (mount, path, pinned version) share one read: reads scale with secrets, not with
/// registries or projects.
pub async fn resolve_all(config: &Config, ctx: &SourceContext) -> Resolution {
    resolve_all_since(config, ctx, &BTreeMap::new()).await
}

/// As [`resolve_all`], knowing what the last refresh read: an unpinned KV v2 secret whose
/// metadata still names the version every registry using it already has is not read again
/// (its registries keep their `previous` credential).
pub async fn resolve_all_since(
    config: &Config,
    ctx: &SourceContext,
    previous: &BTreeMap<String, Resolved>,
) -> Resolution {
    let mut resolution = Resolution::default();
    let vault_reads = read_vault_secrets(config, ctx, previous).await;
    for registry in config.registries.values() {
        let outcome = match &registry.from {
            SourceConfig::Vault(source) => match vault_reads.get(&source.location) {
                Some(VaultRead::Unchanged { expires_at }) => previous
                    .get(&registry.name)
                    .cloned()
                    .map(|mut resolved| {
                        // The expiry metadata is the secret's: it may move without a version.
                        resolved.expires_at =
                            expiry::earliest(*expires_at, password_expiry(&resolved.credential));
                        resolved
                    })
                    .ok_or_else(|| Error::NoVaultSession {
                        registry: registry.name.clone(),
                    }),
                Some(VaultRead::Read(read)) => from_vault_read(registry, source, read),
                None => Err(Error::NoVaultSession {
                    registry: registry.name.clone(),
                }),
            },
            _ => resolve(registry, ctx).await,
        };
        match outcome {
            Ok(resolved) => {
                resolution
                    .credentials
                    .insert(registry.name.clone(), resolved);
            }
            Err(error) => {
                resolution.errors.insert(registry.name.clone(), error);
            }
        }
    }
    resolution
}

/// What one refresh got for one Vault secret.
enum VaultRead {
    Read(Result<vault::SecretData, Arc<VaultError>>),
    /// Its metadata names the version its registries already have (and this expiry).
    Unchanged {
        expires_at: Option<std::time::SystemTime>,
    },
}

/// Each distinct Vault location the config uses, read (or version-polled) once. Without a
/// session, nothing.
async fn read_vault_secrets(
    config: &Config,
    ctx: &SourceContext,
    previous: &BTreeMap<String, Resolved>,
) -> BTreeMap<VaultLocation, VaultRead> {
    let mut reads = BTreeMap::new();
    let Some(session) = &ctx.vault else {
        return reads;
    };
    for registry in config.registries.values() {
        if let SourceConfig::Vault(source) = &registry.from
            && !reads.contains_key(&source.location)
        {
            let read = read_vault_secret(session, config, &source.location, previous).await;
            reads.insert(source.location.clone(), read);
        }
    }
    reads
}

async fn read_vault_secret(
    session: &VaultSession,
    config: &Config,
    location: &VaultLocation,
    previous: &BTreeMap<String, Resolved>,
) -> VaultRead {
    if let Some(known) = known_kv2_version(config, location, previous) {
        match session.current_version(location).await {
            Ok(Some(current)) if format!("v{}", current.version) == known => {
                return VaultRead::Unchanged {
                    expires_at: current.expires_at,
                };
            }
            Ok(_) => {}
            Err(error) => return VaultRead::Read(Err(Arc::new(error))),
        }
    }
    VaultRead::Read(session.read(location).await.map_err(Arc::new))
}

/// The version every registry reading `location` already has, when it is an unpinned KV v2
/// secret and they all agree.
fn known_kv2_version<'a>(
    config: &Config,
    location: &VaultLocation,
    previous: &'a BTreeMap<String, Resolved>,
) -> Option<&'a str> {
    if !matches!(location.kv, KvVersion::V2 { pinned: None }) {
        return None;
    }
    let mut versions = config
        .registries
        .values()
        .filter_map(|registry| match &registry.from {
            SourceConfig::Vault(source) if source.location == *location => Some(
                previous
                    .get(&registry.name)
                    .map(|resolved| resolved.version.as_str()),
            ),
            _ => None,
        });
    let first = versions.next()??;
    versions
        .all(|version| version == Some(first))
        .then_some(first)
}

fn from_vault_read(
    registry: &RegistryConfig,
    source: &VaultSource,
    read: &Result<vault::SecretData, Arc<VaultError>>,
) -> Result<Resolved, Error> {
    let vault_error = Error::Vault;
    let secret = match read {
        Ok(secret) => secret,
        Err(error) => return Err(vault_error(error.clone())),
    };
    let mut credential =
        vault::credential_from(secret, &source.location, &source.mapping, &registry.server)
            .map_err(|e| vault_error(Arc::new(e)))?;
    credential.registry = registry.server.clone();
    Ok(Resolved {
        expires_at: expiry::earliest(secret.expires_at, password_expiry(&credential)),
        credential,
        version: secret.version.clone(),
        lease: secret.lease.clone(),
    })
}

/// Reads the credential for `registry` from its configured source.
pub async fn resolve(registry: &RegistryConfig, ctx: &SourceContext) -> Result<Resolved, Error> {
    let server = &registry.server;
    let mut credential = match &registry.from {
        SourceConfig::DockerConfig { path } => {
            docker_file::resolve(path, AuthFileFormat::DockerConfig, server, ctx).await?
        }
        SourceConfig::Dockercfg { path } => {
            docker_file::resolve(path, AuthFileFormat::Dockercfg, server, ctx).await?
        }
        SourceConfig::ContainersAuth { path } => {
            docker_file::resolve(path, AuthFileFormat::ContainersAuth, server, ctx).await?
        }
        SourceConfig::Helper { name } => from_helper(name, server, ctx).await?,
        SourceConfig::Vault(source) => return resolve_vault(registry, source, ctx).await,
    };
    // Whatever key the source stored it under, the credential is for the configured server.
    credential.registry = server.clone();
    let version = credential_version(&credential);
    Ok(Resolved {
        expires_at: password_expiry(&credential),
        credential,
        version,
        lease: None,
    })
}

/// The `exp` of a password or token that is a JWT (identity tokens, cloud registry tokens).
fn password_expiry(credential: &Credential) -> Option<std::time::SystemTime> {
    match &credential.secret {
        Secret::Password(secret) | Secret::IdentityToken(secret) => {
            expiry::jwt_expiry(secret.expose_secret())
        }
    }
}

/// One Vault registry on its own (no sharing of reads; [`resolve_all`] shares them).
async fn resolve_vault(
    registry: &RegistryConfig,
    source: &VaultSource,
    ctx: &SourceContext,
) -> Result<Resolved, Error> {
    let Some(session) = &ctx.vault else {
        return Err(Error::NoVaultSession {
            registry: registry.name.clone(),
        });
    };
    let read = session.read(&source.location).await.map_err(Arc::new);
    from_vault_read(registry, source, &read)
}

async fn from_helper(
    name: &str,
    server: &RegistryKey,
    ctx: &SourceContext,
) -> Result<Credential, Error> {
    let server_url = server.auths_key();
    let found = helper::get(name, &server_url, ctx)
        .await
        .map_err(|source| Error::HelperGet {
            registry: server.to_string(),
            path: None,
            source,
        })?;
    found.ok_or_else(|| Error::NotInHelper {
        registry: server.to_string(),
        helper: name.to_string(),
        server_url,
        path: None,
    })
}

/// 16 hex digits of SHA-256 over a length-prefixed encoding of every field of the credential:
/// equal exactly when the credentials are equal (up to hash collisions).
pub fn credential_version(credential: &Credential) -> String {
    let (kind, secret) = match &credential.secret {
        Secret::Password(p) => ("password", p.expose_secret()),
        Secret::IdentityToken(t) => ("identitytoken", t.expose_secret()),
    };
    let mut hasher = Sha256::new();
    let fields = [
        "pullsecretd-credential-v1",
        &credential.registry.auths_key(),
        &credential.username,
        kind,
        secret,
        if credential.email.is_some() {
            "email"
        } else {
            "no-email"
        },
        credential.email.as_deref().unwrap_or_default(),
    ];
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn version_covers_every_field() {
        let key = RegistryKey::from_docker("quay.io").expect("valid key");
        let base = Credential::with_password(key.clone(), "robot", "pw");
        let variants = [
            Credential::with_password(key.clone(), "robot", "pw2"),
            Credential::with_password(key.clone(), "robot2", "pw"),
            Credential::with_password(
                RegistryKey::from_docker("ghcr.io").expect("key"),
                "robot",
                "pw",
            ),
            Credential {
                email: Some(String::new()),
                ..base.clone()
            },
            Credential {
                secret: Secret::IdentityToken(SecretString::from("pw")),
                ..base.clone()
            },
            // Length prefixes keep field boundaries apart.
            Credential::with_password(key, "robotp", "w"),
        ];
        let version = credential_version(&base);
        assert_eq!(version, credential_version(&base.clone()));
        for variant in &variants {
            assert_ne!(credential_version(variant), version, "{variant:?}");
        }
        assert!(!version.contains("pw"));
    }
}

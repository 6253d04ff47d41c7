//! Source stage (I/O): registry credentials from Vault/OpenBao KV v1/v2 secrets and dynamic
//! engines (`engine: dynamic`: a leased secret per read, with `sys/leases/renew` and `revoke`
//! for the daemon's lease keeper), through ONE session per process that logs in, renews and
//! logs in again by itself.
//!
//! Must not: talk to the cluster, keep more than one login per process, retry without bound,
//! read an answer without bound (every request goes through [`transport`], which stops at 4 MiB),
//! or put a token, secret ID or secret value into an error, a log line or `Debug` output. Errors
//! name the mount, path and field and what happened (e.g. "403 permission denied by policy").
//!
//! Session lifecycle, all on use (no background task):
//! - the first request logs in (token / AppRole / Kubernetes);
//! - a request made after two thirds of the token's TTL first renews it (`renew-self`); a failed
//!   renewal logs in again;
//! - a request answered 403 logs in again once and is retried (a revoked or expired token is
//!   invisible to callers); a second 403 is reported as a policy denial or a rejected token;
//! - transport errors and 5xx are retried with jittered exponential backoff (`backon`), a
//!   bounded number of times, so a `plan` against a dead server ends within seconds;
//! - a login that still fails (refused, or the server unreachable after those retries) is not
//!   tried again with the same credentials for a while ([`LoginBackoff`]: 10 s, doubling, at
//!   most 5 min); meanwhile every request gets that login's error at once. A refresh over many
//!   Vault paths therefore costs one login attempt — with Kubernetes auth, one TokenReview on
//!   the API server — not one per path. Rotated credentials (a new token file) are tried at once.
//!
//! Renewing on use rather than from a timer task keeps the session free of task lifetimes and
//! works the same in `plan`'s short-lived runtime and the daemon, whose refresh timer calls in
//! regularly; a token that lapsed while nobody asked is replaced by the 403 → login path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
use secrecy::{ExposeSecret as _, SecretString};
use vaultrs::api::auth::approle::requests::LoginWithApproleRequest;
use vaultrs::api::auth::kubernetes::requests::LoginWithKubernetesRequest;
use vaultrs::api::kv1::requests::GetSecretRequest;
use vaultrs::api::kv2::requests::{ReadSecretMetadataRequest, ReadSecretRequest};
use vaultrs::api::token::requests::{LookupTokenSelfRequest, RenewTokenSelfRequest};
use vaultrs::error::ClientError;

use crate::config::{
    FieldMapping, KvVersion, OptionalField, VaultAuth, VaultConfig, VaultLocation, VaultMapping,
};
use crate::dockerconfig::{AuthFileFormat, Lookup, ParseError, parse_auth_file};
use crate::model::credential::{Credential, LeaseGrant, RegistryKey, Secret};
use crate::model::expiry;
use crate::regular_file;

mod lease;
mod transport;
use transport::{MAX_RESPONSE_BYTES, VaultApi, is_too_large, read_bounded};

/// Largest token / secret-ID file read; real ones are well under 4 KiB.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
/// Longest Vault error text repeated in a message.
const MAX_SHOWN_ERROR_CHARS: usize = 200;

/// Why a Vault-sourced credential could not be read. Never carries a token, secret ID or value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("Vault client for {address}: {reason}")]
    BuildClient { address: String, reason: String },
    #[error("Vault token: {0}")]
    NoToken(String),
    #[error("reading the {what} file {}: {source}", path.display())]
    ReadSecretFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Refused before it was opened, so a FIFO in its place cannot block the login.
    #[error("the {what} file {} is {kind}, not a regular file", path.display())]
    NotARegularFile {
        what: &'static str,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("the {what} file {} is {problem}", path.display())]
    BadSecretFile {
        what: &'static str,
        path: PathBuf,
        problem: &'static str,
    },
    #[error("Vault login ({method} at auth/{mount}): {outcome}")]
    Login {
        method: &'static str,
        mount: String,
        outcome: Outcome,
    },
    #[error("Vault read {location}: {outcome}")]
    Read {
        location: VaultLocation,
        outcome: Outcome,
    },
    #[error("Vault lease renewal of {location}: {outcome}")]
    RenewLease {
        location: VaultLocation,
        outcome: Outcome,
    },
    #[error("Vault lease revocation of {location}: {outcome}")]
    RevokeLease {
        location: VaultLocation,
        outcome: Outcome,
    },
    #[error("Vault metadata of {location}: {outcome}")]
    ReadMetadata {
        location: VaultLocation,
        outcome: Outcome,
    },
    #[error("Vault secret {location}: field {field:?} is missing")]
    MissingField {
        location: VaultLocation,
        field: String,
    },
    #[error("Vault secret {location}: field {field:?} is empty")]
    EmptyField {
        location: VaultLocation,
        field: String,
    },
    #[error("Vault secret {location}: field {field:?} is not a string")]
    NotAString {
        location: VaultLocation,
        field: String,
    },
    #[error("Vault secret {location}: field {field:?} is not a docker config: {source}")]
    BadDockerConfig {
        location: VaultLocation,
        field: String,
        #[source]
        source: Box<ParseError>,
    },
    #[error(
        "Vault secret {location}: the docker config in field {field:?} has no usable entry for \
         {registry}"
    )]
    NotInDockerConfig {
        location: VaultLocation,
        field: String,
        registry: String,
    },
    #[error(
        "Vault secret {location}: field {field:?} names another registry than the configured \
         server {registry}"
    )]
    ServerMismatch {
        location: VaultLocation,
        field: String,
        registry: String,
    },
    #[error("Vault health {address}: {outcome}")]
    Health { address: String, outcome: Outcome },
}

/// What a Vault request came to, in words safe to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No HTTP answer: connection refused, DNS, reset.
    Unreachable(String),
    /// The server's TLS certificate was not accepted (unknown CA, or it does not name the
    /// host): a configuration problem, not retried.
    CertificateRejected(String),
    /// No answer within the configured timeout.
    TimedOut,
    /// 403 after a fresh login, with a token Vault still accepts.
    PermissionDenied,
    /// 403 and the token itself is refused (revoked, expired, wrong).
    TokenRejected,
    /// 403 to a login: the auth method refused the role or credentials.
    LoginRefused,
    /// 404: no secret there, or its version is deleted or destroyed.
    NotFound,
    /// Any other HTTP error status, with Vault's own error texts.
    Status { code: u16, errors: Vec<String> },
    /// An answer that is not what the API documents (its body is never shown).
    BadResponse,
    /// An answer larger than `limit` bytes: not read further, so a runaway answer cannot take
    /// the process's memory.
    TooLarge { limit: u64 },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(detail) => write!(f, "Vault is unreachable ({detail})"),
            Self::CertificateRejected(detail) => write!(
                f,
                "the server's TLS certificate was not accepted ({detail}); check vault.caCert \
                 and vault.tlsServerName"
            ),
            Self::TimedOut => f.write_str("Vault did not answer in time"),
            Self::PermissionDenied => f.write_str("403 permission denied by policy"),
            Self::TokenRejected => {
                f.write_str("403 the Vault token was rejected (revoked, expired or unknown)")
            }
            Self::LoginRefused => f.write_str(
                "403 login refused (check the role, its credentials and the auth method's \
                 configuration)",
            ),
            Self::NotFound => f.write_str(
                "404 not found (no secret at this path, or the version is deleted or destroyed)",
            ),
            Self::Status { code, errors } if errors.is_empty() => write!(f, "HTTP {code}"),
            Self::Status { code, errors } => {
                let text = errors.join("; ");
                let shown: String = text.chars().take(MAX_SHOWN_ERROR_CHARS).collect();
                write!(f, "HTTP {code}: {shown}")
            }
            Self::BadResponse => f.write_str("Vault sent an answer that could not be read"),
            Self::TooLarge { limit } => write!(
                f,
                "Vault's answer is larger than {} MiB; it was not read (a real answer is a few \
                 KiB: check vault.address points at Vault)",
                limit / (1024 * 1024)
            ),
        }
    }
}

impl Outcome {
    /// Worth retrying after a pause: the server may come back.
    fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::TimedOut => true,
            Self::Status { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }

    fn from_client_error(error: &ClientError) -> Self {
        match error {
            ClientError::APIError { code: 403, .. } => Self::PermissionDenied,
            ClientError::APIError { code: 404, .. } => Self::NotFound,
            ClientError::APIError { code, errors } => Self::Status {
                code: *code,
                errors: errors.clone(),
            },
            ClientError::RestClientError { source } => Self::from_rest_error(source),
            _ => Self::BadResponse,
        }
    }

    fn from_rest_error(error: &rustify::errors::ClientError) -> Self {
        use rustify::errors::ClientError as Rest;
        if let Some(limit) = is_too_large(error) {
            return Self::TooLarge { limit };
        }
        match error {
            Rest::ServerResponseError { code: 403, .. } => Self::PermissionDenied,
            Rest::ServerResponseError { code: 404, .. } => Self::NotFound,
            Rest::ServerResponseError { code, .. } => Self::Status {
                code: *code,
                errors: Vec::new(),
            },
            Rest::RequestError { source, .. } => Self::from_transport(source.as_ref()),
            _ => Self::BadResponse,
        }
    }

    /// A body read by [`read_bounded`] that failed: too large, or the transport.
    fn from_body_error(error: &anyhow::Error) -> Self {
        match error.downcast_ref::<transport::TooLarge>() {
            Some(too_large) => Self::TooLarge {
                limit: too_large.limit,
            },
            None => Self::from_transport(error.as_ref()),
        }
    }

    fn from_transport(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut current = Some(error);
        let mut innermost = error.to_string();
        while let Some(e) = current {
            if let Some(reqwest) = e.downcast_ref::<reqwest::Error>()
                && reqwest.is_timeout()
            {
                return Self::TimedOut;
            }
            innermost = e.to_string();
            current = e.source();
        }
        // rustls says "invalid peer certificate: UnknownIssuer" (or NotValidForName…).
        if innermost.contains("invalid peer certificate") {
            return Self::CertificateRejected(innermost);
        }
        Self::Unreachable(innermost)
    }
}

/// How transient failures are retried: jittered exponential backoff, bounded.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts over about 1.5 s plus request time: a brief restart is ridden out, a dead
    /// server is reported quickly.
    fn default() -> Self {
        Self {
            retries: 3,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    fn backoff(self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries)
            .with_jitter()
    }
}

/// How long a refused login keeps the session from trying the same credentials again: the
/// first refusal holds for `min`, each further one in a row for twice as long, up to `max`.
/// Changed credentials (a rotated token or secret-ID file) are tried at once.
#[derive(Clone, Copy, Debug)]
pub struct LoginBackoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for LoginBackoff {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

/// Where a token-auth session looks for its token besides the configured file. Captured once
/// from the process; tests pass their own so they never touch the process environment.
#[derive(Clone, Default)]
pub struct TokenEnvironment {
    /// `VAULT_TOKEN`.
    pub vault_token: Option<SecretString>,
    /// `$HOME`, for `~/.vault-token`.
    pub home: Option<PathBuf>,
}

impl TokenEnvironment {
    pub fn from_process() -> Self {
        Self {
            vault_token: std::env::var("VAULT_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .map(SecretString::from),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
        }
    }
}

impl fmt::Debug for TokenEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEnvironment")
            .field(
                "vault_token",
                &self.vault_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("home", &self.home)
            .finish()
    }
}

/// A logged-in client and what is known about its token.
struct Login {
    client: Arc<VaultApi>,
    obtained: Instant,
    /// `None` for tokens that never expire (TTL 0, e.g. a root token).
    ttl: Option<Duration>,
    renewable: bool,
}

impl Login {
    fn renewal_due(&self, now: Instant) -> bool {
        self.ttl
            .is_some_and(|ttl| now.duration_since(self.obtained) >= ttl * 2 / 3)
    }
}

/// A failed login: the same credentials are not presented again before `until`.
struct LoginHold {
    /// SHA-256 of the credentials that failed (never the credentials themselves).
    fingerprint: [u8; 32],
    until: Instant,
    /// Failed logins in a row, whatever the credentials.
    streak: u32,
    method: &'static str,
    mount: String,
    outcome: Outcome,
}

impl LoginBackoff {
    /// The hold after the `streak`-th failed login in a row.
    fn delay(self, streak: u32) -> Duration {
        let factor = 2u32.saturating_pow(streak.saturating_sub(1).min(16));
        self.min.saturating_mul(factor).min(self.max)
    }
}

/// SHA-256 of login credentials: tells "the same ones again" without keeping them.
fn fingerprint(secret: &SecretString) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(secret.expose_secret().as_bytes()).into()
}

/// Counters of what the session did, for logs, metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub logins: u64,
    pub renewals: u64,
    pub failed_renewals: u64,
}

/// The one Vault session of the process, shared (`Arc`) by every Vault-sourced registry.
pub struct VaultSession {
    config: VaultConfig,
    /// Our own HTTP client (CA, TLS name, timeout), shared with every vaultrs client we make.
    http: reqwest::Client,
    /// The URL requests go to: the configured address, with the TLS server name as host when
    /// one is configured (the connection still goes to the configured host's address).
    base_url: reqwest::Url,
    environment: TokenEnvironment,
    retry: RetryPolicy,
    login_backoff: LoginBackoff,
    /// Kubernetes auth with a token handed in rather than read from `token_file` (the
    /// credential provider's service-account mode: the pod's token from the kubelet).
    presented_token: Option<SecretString>,
    login: tokio::sync::Mutex<Option<Login>>,
    /// The last failed login, held off (see [`LoginBackoff`]).
    login_hold: std::sync::Mutex<Option<LoginHold>>,
    /// KV v2 secrets whose metadata the policy does not let us read: polled by data reads
    /// instead, without a 403 → login round each time. Forgotten at the next login.
    metadata_denied: std::sync::Mutex<BTreeSet<VaultLocation>>,
    logins: AtomicU64,
    renewals: AtomicU64,
    failed_renewals: AtomicU64,
}

impl fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSession")
            .field("address", &self.config.address)
            .field("auth", &self.config.auth.method())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A read secret: its fields and the version that identifies this content.
pub struct SecretData {
    fields: BTreeMap<String, FieldValue>,
    /// `v<N>` for KV v2; a content hash for KV v1 and dynamic secrets.
    pub version: String,
    /// KV v2: the `custom_metadata` [`expiry::EXPIRES_AT_KEY`]; dynamic: the lease's end.
    pub expires_at: Option<std::time::SystemTime>,
    /// Dynamic secrets: the lease they were issued with.
    pub lease: Option<LeaseGrant>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .field("expires_at", &self.expires_at)
            .field("lease", &self.lease)
            .finish()
    }
}

/// What a KV v2 metadata poll says: the current version and the expiry metadata (which is the
/// secret's, not a version's, so it can move without a new version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrentVersion {
    pub version: u64,
    pub expires_at: Option<std::time::SystemTime>,
}

/// The expiry a KV v2 `custom_metadata` map names, if any and valid.
fn metadata_expiry(
    custom: Option<&std::collections::HashMap<String, String>>,
) -> Option<std::time::SystemTime> {
    custom?
        .get(expiry::EXPIRES_AT_KEY)
        .and_then(|text| expiry::parse_expires_at(text))
}

/// One field's value; JSON objects are kept as their JSON text (for docker config fields).
struct FieldValue {
    text: SecretString,
    kind: FieldKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    String,
    Object,
    Other,
}

impl VaultSession {
    /// A session for `config`, taking `VAULT_TOKEN` and `$HOME` from the process. Does no I/O
    /// beyond reading the CA file; the first request logs in.
    pub fn new(config: &VaultConfig) -> Result<Self, VaultError> {
        Self::with_environment(config, TokenEnvironment::from_process())
    }

    /// As [`VaultSession::new`], with the token environment given.
    pub fn with_environment(
        config: &VaultConfig,
        environment: TokenEnvironment,
    ) -> Result<Self, VaultError> {
        let (http, base_url) = build_http(config)?;
        Ok(Self {
            config: config.clone(),
            http,
            base_url,
            environment,
            retry: RetryPolicy::default(),
            login_backoff: LoginBackoff::default(),
            presented_token: None,
            login: tokio::sync::Mutex::new(None),
            login_hold: std::sync::Mutex::new(None),
            metadata_denied: std::sync::Mutex::new(BTreeSet::new()),
            logins: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            failed_renewals: AtomicU64::new(0),
        })
    }

    /// Replaces the retry policy (tests use short delays).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the hold-off after a refused login (tests use short ones).
    #[must_use]
    pub fn with_login_backoff(mut self, backoff: LoginBackoff) -> Self {
        self.login_backoff = backoff;
        self
    }

    /// With Kubernetes auth, logs in with `token` instead of reading the configured token
    /// file: the credential provider passes the pod's service-account token this way, so it
    /// is never written anywhere.
    #[must_use]
    pub fn with_presented_token(mut self, token: SecretString) -> Self {
        self.presented_token = Some(token);
        self
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            logins: self.logins.load(Ordering::Relaxed),
            renewals: self.renewals.load(Ordering::Relaxed),
            failed_renewals: self.failed_renewals.load(Ordering::Relaxed),
        }
    }

    /// `GET /v1/sys/health` into our own struct (vaultrs' `sys::health` fails on OpenBao, whose
    /// reply lacks `performance_standby`). Any status is an answer: 200 active, 429 standby,
    /// 501 not initialised, 503 sealed.
    pub async fn health(&self) -> Result<Health, VaultError> {
        let fail = |outcome| VaultError::Health {
            address: self.config.address.clone(),
            outcome,
        };
        let url = self
            .base_url
            .join("v1/sys/health")
            .map_err(|_| fail(Outcome::BadResponse))?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(Outcome::from_transport(&e)))?;
        let status = response.status().as_u16();
        let body = read_bounded(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| fail(Outcome::from_body_error(&e)))?;
        let mut health: Health =
            serde_json::from_slice(&body).map_err(|_| fail(Outcome::BadResponse))?;
        health.status = status;
        Ok(health)
    }

    /// Reads the secret at `location` (the current or pinned version).
    pub async fn read(&self, location: &VaultLocation) -> Result<SecretData, VaultError> {
        let fail = |outcome| VaultError::Read {
            location: location.clone(),
            outcome,
        };
        match location.kv {
            KvVersion::V2 { pinned } => {
                let response = self
                    .call(fail, |client| read_kv2(client, location, pinned))
                    .await?;
                let version = format!("v{}", response.metadata.version);
                let expires_at = metadata_expiry(response.metadata.custom_metadata.as_ref());
                let fields =
                    secret_fields(response.data).ok_or_else(|| fail(Outcome::BadResponse))?;
                Ok(SecretData {
                    fields,
                    version,
                    expires_at,
                    lease: None,
                })
            }
            KvVersion::V1 => {
                let response = self.call(fail, |client| read_kv1(client, location)).await?;
                let fields =
                    secret_fields(response.data).ok_or_else(|| fail(Outcome::BadResponse))?;
                let version = content_hash(&fields);
                Ok(SecretData {
                    fields,
                    version,
                    expires_at: None,
                    lease: None,
                })
            }
            KvVersion::Dynamic => {
                let response = self
                    .call(fail, |client| read_dynamic(client, location))
                    .await?;
                let fields =
                    secret_fields(response.data).ok_or_else(|| fail(Outcome::BadResponse))?;
                // Each read issues a new secret: its content is its version.
                let version = content_hash(&fields);
                let lease = (!response.lease_id.is_empty()).then(|| LeaseGrant {
                    id: response.lease_id,
                    ttl: Duration::from_secs(response.lease_duration),
                    renewable: response.renewable,
                });
                let expires_at = lease
                    .as_ref()
                    .filter(|lease| !lease.ttl.is_zero())
                    .map(|lease| std::time::SystemTime::now() + lease.ttl);
                Ok(SecretData {
                    fields,
                    version,
                    expires_at,
                    lease,
                })
            }
        }
    }

    /// The current version of an unpinned KV v2 secret, from its metadata: a cheap poll that
    /// reads no secret value. `Ok(None)` when the policy does not allow reading the metadata
    /// (then the caller reads the data instead; remembered until the next login).
    pub async fn current_version(
        &self,
        location: &VaultLocation,
    ) -> Result<Option<CurrentVersion>, VaultError> {
        if self.metadata_is_denied(location) {
            return Ok(None);
        }
        let client = self.client().await?;
        let read = self
            .attempt(&client, &|c| read_kv2_metadata(c, location))
            .await;
        match read {
            Ok(metadata) => Ok(Some(CurrentVersion {
                version: metadata.current_version,
                expires_at: metadata_expiry(metadata.custom_metadata.as_ref()),
            })),
            Err(Outcome::PermissionDenied) => {
                if let Ok(mut denied) = self.metadata_denied.lock() {
                    denied.insert(location.clone());
                }
                Ok(None)
            }
            Err(outcome) => Err(VaultError::ReadMetadata {
                location: location.clone(),
                outcome,
            }),
        }
    }

    /// Renews `lease` (read from `location`) for `increment`: the TTL Vault granted, which is
    /// less than asked for once the lease reaches its max TTL.
    pub async fn renew_lease(
        &self,
        location: &VaultLocation,
        lease: &LeaseGrant,
        increment: Duration,
    ) -> Result<LeaseGrant, VaultError> {
        let fail = |outcome| VaultError::RenewLease {
            location: location.clone(),
            outcome,
        };
        let renewed = self
            .call(fail, |client| {
                let endpoint = lease::RenewLease {
                    lease_id: lease.id.clone(),
                    increment_seconds: increment.as_secs(),
                };
                async move { client.whole(endpoint).await }
            })
            .await?;
        Ok(LeaseGrant {
            id: lease.id.clone(),
            ttl: Duration::from_secs(renewed.lease_duration),
            renewable: renewed.renewable,
        })
    }

    /// Revokes `lease` (read from `location`): the engine deletes the credential at once.
    pub async fn revoke_lease(
        &self,
        location: &VaultLocation,
        lease: &LeaseGrant,
    ) -> Result<(), VaultError> {
        let fail = |outcome| VaultError::RevokeLease {
            location: location.clone(),
            outcome,
        };
        self.call(fail, |client| {
            let endpoint = lease::RevokeLease {
                lease_id: lease.id.clone(),
            };
            async move { client.empty(endpoint).await }
        })
        .await
    }

    fn metadata_is_denied(&self, location: &VaultLocation) -> bool {
        self.metadata_denied
            .lock()
            .is_ok_and(|denied| denied.contains(location))
    }

    /// Runs `op` with a logged-in client: renews or logs in first when due, retries transient
    /// failures, and on a 403 logs in again once and retries.
    async fn call<T, F, Fut, E>(&self, fail: E, op: F) -> Result<T, VaultError>
    where
        F: Fn(Arc<VaultApi>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
        E: Fn(Outcome) -> VaultError,
    {
        let client = self.client().await?;
        match self.attempt(&client, &op).await {
            Err(Outcome::PermissionDenied) => {}
            other => return other.map_err(fail),
        }
        tracing::debug!("Vault answered 403; logging in again and retrying once.");
        let client = self.login_again(&client).await?;
        match self.attempt(&client, &op).await {
            Err(Outcome::PermissionDenied) => Err(fail(self.why_forbidden(&client).await)),
            other => other.map_err(fail),
        }
    }

    /// One request, with bounded jittered retries of transient failures.
    async fn attempt<T, F, Fut>(&self, client: &Arc<VaultApi>, op: &F) -> Result<T, Outcome>
    where
        F: Fn(Arc<VaultApi>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        (|| async {
            op(client.clone())
                .await
                .map_err(|e| Outcome::from_client_error(&e))
        })
        .retry(self.retry.backoff())
        .when(Outcome::is_transient)
        .notify(|outcome, delay| {
            tracing::warn!(%outcome, ?delay, "Vault request failed; retrying.");
        })
        .await
    }

    /// After a 403 with a fresh token: is it the policy, or the token?
    async fn why_forbidden(&self, client: &Arc<VaultApi>) -> Outcome {
        match self
            .attempt(client, &|c| async move {
                c.data(LookupTokenSelfRequest {}).await
            })
            .await
        {
            Err(Outcome::PermissionDenied) => Outcome::TokenRejected,
            _ => Outcome::PermissionDenied,
        }
    }

    /// The current client, logging in or renewing first when needed.
    async fn client(&self) -> Result<Arc<VaultApi>, VaultError> {
        let mut guard = self.login.lock().await;
        if let Some(login) = guard.as_mut() {
            if !login.renewal_due(Instant::now()) {
                return Ok(login.client.clone());
            }
            if login.renewable && self.renew(login).await {
                return Ok(login.client.clone());
            }
        }
        let login = self.log_in().await?;
        let client = login.client.clone();
        *guard = Some(login);
        Ok(client)
    }

    /// Logs in again unless another caller already replaced `stale`.
    async fn login_again(&self, stale: &Arc<VaultApi>) -> Result<Arc<VaultApi>, VaultError> {
        let mut guard = self.login.lock().await;
        if let Some(login) = guard.as_ref()
            && !Arc::ptr_eq(&login.client, stale)
        {
            return Ok(login.client.clone());
        }
        let login = self.log_in().await?;
        let client = login.client.clone();
        *guard = Some(login);
        Ok(client)
    }

    /// `renew-self`; true when the token now has a fresh TTL.
    async fn renew(&self, login: &mut Login) -> bool {
        let client = login.client.clone();
        let renewed = self
            .attempt(&client, &|c| async move {
                c.auth(RenewTokenSelfRequest { increment: None }).await
            })
            .await;
        match renewed {
            Ok(auth) => {
                self.renewals.fetch_add(1, Ordering::Relaxed);
                login.obtained = Instant::now();
                login.ttl = ttl(auth.lease_duration);
                login.renewable = auth.renewable;
                // Only the new TTL (seconds) is logged: never the token or the answer.
                tracing::debug!(ttl = auth.lease_duration, "Renewed the Vault token.");
                true
            }
            Err(outcome) => {
                self.failed_renewals.fetch_add(1, Ordering::Relaxed);
                // An Outcome shows fixed texts, the transport's innermost error and Vault's
                // own error texts (capped): never a request, a header or an answer's body.
                tracing::warn!(%outcome, "Renewing the Vault token failed; logging in again.");
                false
            }
        }
    }

    /// Logs in with the credentials configured now, unless the very same credentials were
    /// refused (or the server could not be reached) within the hold-off: then the last error is
    /// returned without a request. Without this, every Vault path of a refresh would log in
    /// again, and with Kubernetes auth each attempt is a TokenReview on the API server.
    async fn log_in(&self) -> Result<Login, VaultError> {
        let credentials = self.login_credentials()?;
        let fingerprint = fingerprint(&credentials);
        if let Some(error) = self.held_login(&fingerprint) {
            return Err(error);
        }
        let result = self.log_in_with(&credentials).await;
        let mut hold = self.login_hold.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(login) => {
                *hold = None;
                self.logins.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut denied) = self.metadata_denied.lock() {
                    denied.clear();
                }
                tracing::info!(method = self.config.auth.method(), "Logged in to Vault.");
                Ok(login)
            }
            Err(VaultError::Login {
                method,
                mount,
                outcome,
            }) => {
                let streak = hold.as_ref().map_or(1, |h| h.streak.saturating_add(1));
                let delay = self.login_backoff.delay(streak);
                tracing::warn!(
                    method,
                    %outcome,
                    ?delay,
                    "Vault login failed; the same credentials are not tried again before the delay."
                );
                *hold = Some(LoginHold {
                    fingerprint,
                    until: Instant::now() + delay,
                    streak,
                    method,
                    mount: mount.clone(),
                    outcome: outcome.clone(),
                });
                Err(VaultError::Login {
                    method,
                    mount,
                    outcome,
                })
            }
            Err(other) => Err(other),
        }
    }

    /// The last login error, while the same credentials are held off.
    fn held_login(&self, fingerprint: &[u8; 32]) -> Option<VaultError> {
        let hold = self.login_hold.lock().unwrap_or_else(|e| e.into_inner());
        let hold = hold.as_ref()?;
        let now = Instant::now();
        if hold.fingerprint != *fingerprint || now >= hold.until {
            return None;
        }
        tracing::debug!(
            remaining = ?hold.until.duration_since(now),
            "Vault login held off after a failure."
        );
        Some(VaultError::Login {
            method: hold.method,
            mount: hold.mount.clone(),
            outcome: hold.outcome.clone(),
        })
    }

    /// The secret a login presents, read now (files may have been rotated since the last one).
    fn login_credentials(&self) -> Result<SecretString, VaultError> {
        match &self.config.auth {
            VaultAuth::Token { file } => self.find_token(file.as_deref()),
            VaultAuth::AppRole { secret_id_file, .. } => {
                read_secret_file("AppRole secret ID", secret_id_file)
            }
            VaultAuth::Kubernetes { token_file, .. } => match &self.presented_token {
                Some(token) => Ok(token.clone()),
                None => read_secret_file("service-account token", token_file),
            },
        }
    }

    async fn log_in_with(&self, secret: &SecretString) -> Result<Login, VaultError> {
        match &self.config.auth {
            VaultAuth::Token { .. } => self.log_in_with_token(secret).await,
            VaultAuth::AppRole { role_id, mount, .. } => {
                let auth = self
                    .login_call(mount, |c| {
                        let endpoint = LoginWithApproleRequest {
                            mount: mount.clone(),
                            role_id: role_id.clone(),
                            secret_id: secret.expose_secret().to_string(),
                        };
                        async move { c.auth(endpoint).await }
                    })
                    .await?;
                self.login_from_auth(&auth)
            }
            VaultAuth::Kubernetes { role, mount, .. } => {
                let auth = self
                    .login_call(mount, |c| {
                        let endpoint = LoginWithKubernetesRequest {
                            mount: mount.clone(),
                            role: role.clone(),
                            jwt: secret.expose_secret().to_string(),
                        };
                        async move { c.auth(endpoint).await }
                    })
                    .await?;
                self.login_from_auth(&auth)
            }
        }
    }

    /// A login request made with an unauthenticated client, transient failures retried.
    async fn login_call<F, Fut>(
        &self,
        mount: &str,
        op: F,
    ) -> Result<vaultrs::api::AuthInfo, VaultError>
    where
        F: Fn(Arc<VaultApi>) -> Fut,
        Fut: Future<Output = Result<vaultrs::api::AuthInfo, ClientError>>,
    {
        let anonymous = Arc::new(self.vault_client(&SecretString::from(String::new()))?);
        self.attempt(&anonymous, &op)
            .await
            .map_err(|outcome| VaultError::Login {
                method: self.config.auth.method(),
                mount: mount.to_string(),
                outcome: match outcome {
                    Outcome::PermissionDenied => Outcome::LoginRefused,
                    other => other,
                },
            })
    }

    fn login_from_auth(&self, auth: &vaultrs::api::AuthInfo) -> Result<Login, VaultError> {
        let token = SecretString::from(auth.client_token.clone());
        Ok(Login {
            client: Arc::new(self.vault_client(&token)?),
            obtained: Instant::now(),
            ttl: ttl(auth.lease_duration),
            renewable: auth.renewable,
        })
    }

    /// Token auth: the token is found, then looked up for its TTL (which also proves it works).
    async fn log_in_with_token(&self, token: &SecretString) -> Result<Login, VaultError> {
        let client = Arc::new(self.vault_client(token)?);
        let lookup = self
            .attempt(&client, &|c| async move {
                c.data(LookupTokenSelfRequest {}).await
            })
            .await
            .map_err(|outcome| VaultError::Login {
                method: "token",
                mount: "token".to_string(),
                outcome: match outcome {
                    Outcome::PermissionDenied => Outcome::TokenRejected,
                    other => other,
                },
            })?;
        Ok(Login {
            client,
            obtained: Instant::now(),
            ttl: ttl(lookup.ttl),
            renewable: lookup.renewable.unwrap_or(false),
        })
    }

    /// `VAULT_TOKEN`, else `~/.vault-token`, else the configured file.
    fn find_token(&self, file: Option<&Path>) -> Result<SecretString, VaultError> {
        if let Some(token) = &self.environment.vault_token {
            return Ok(token.clone());
        }
        if let Some(home) = &self.environment.home {
            let path = home.join(".vault-token");
            if path.is_file() {
                return read_secret_file("Vault token", &path);
            }
        }
        match file {
            Some(path) => read_secret_file("Vault token", path),
            None => Err(VaultError::NoToken(
                "VAULT_TOKEN is not set, ~/.vault-token does not exist, and the config names no \
                 token file (vault.auth.file)"
                    .to_string(),
            )),
        }
    }

    /// A client over our HTTP client with `token` (empty: none). Settings are filled in here,
    /// never from the environment (vaultrs' builder would read `VAULT_ADDR`,
    /// `VAULT_SKIP_VERIFY` and others).
    fn vault_client(&self, token: &SecretString) -> Result<VaultApi, VaultError> {
        let base = self.base_url.as_str().trim_end_matches('/');
        Ok(VaultApi::new(
            self.http.clone(),
            base,
            token.expose_secret().to_string(),
            self.config.namespace.clone(),
        ))
    }
}

/// What `GET /v1/sys/health` says; `status` is the HTTP status it came with.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Health {
    #[serde(default)]
    pub initialized: bool,
    #[serde(default)]
    pub sealed: bool,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub version: String,
    #[serde(skip)]
    pub status: u16,
}

fn ttl(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

async fn read_kv2(
    client: Arc<VaultApi>,
    location: &VaultLocation,
    version: Option<u64>,
) -> Result<vaultrs::api::kv2::responses::ReadSecretResponse, ClientError> {
    let endpoint = ReadSecretRequest {
        mount: location.mount.clone(),
        path: location.path.clone(),
        version,
    };
    client.data(endpoint).await
}

async fn read_dynamic(
    client: Arc<VaultApi>,
    location: &VaultLocation,
) -> Result<lease::DynamicSecret, ClientError> {
    let endpoint = lease::ReadDynamic {
        path: location.path.clone(),
    };
    client.whole(endpoint).await
}

async fn read_kv2_metadata(
    client: Arc<VaultApi>,
    location: &VaultLocation,
) -> Result<vaultrs::api::kv2::responses::ReadSecretMetadataResponse, ClientError> {
    let endpoint = ReadSecretMetadataRequest {
        mount: location.mount.clone(),
        path: location.path.clone(),
    };
    client.data(endpoint).await
}

async fn read_kv1(
    client: Arc<VaultApi>,
    location: &VaultLocation,
) -> Result<vaultrs::api::kv1::responses::GetSecretResponse, ClientError> {
    let endpoint = GetSecretRequest {
        mount: location.mount.clone(),
        path: location.path.clone(),
    };
    client.whole(endpoint).await
}

/// The HTTP client every request uses, and the base URL it is pointed at.
fn build_http(config: &VaultConfig) -> Result<(reqwest::Client, reqwest::Url), VaultError> {
    let fail = |reason: String| VaultError::BuildClient {
        address: config.address.clone(),
        reason,
    };
    let mut url =
        reqwest::Url::parse(&config.address).map_err(|e| fail(format!("bad address: {e}")))?;
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .no_proxy();
    if let Some(ca_file) = &config.ca_cert {
        let pem = read_ca_file(ca_file).map_err(fail)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("CA file {} is not PEM: {e}", ca_file.display())))?;
        builder = builder.tls_certs_merge(certs);
    }
    if let Some(name) = &config.tls_server_name {
        // Connect to the configured host, but speak TLS (SNI, certificate check) as `name`.
        let port = url.port_or_known_default().unwrap_or(8200);
        let host = url.host_str().unwrap_or_default().to_string();
        let addresses: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(&(host.trim_matches(['[', ']']), port))
                .map_err(|e| fail(format!("resolving {host}: {e}")))?
                .collect();
        builder = builder.resolve_to_addrs(name, &addresses);
        url.set_host(Some(name))
            .map_err(|e| fail(format!("bad TLS server name: {e}")))?;
    }
    let http = builder
        .build()
        .map_err(|e| fail(format!("building the HTTP client: {e}")))?;
    Ok((http, url))
}

/// Largest CA bundle read (a system bundle is a few hundred KiB).
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The CA file's PEM; a FIFO or device in its place is refused before it is opened.
fn read_ca_file(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    regular_file::read(path, MAX_CA_FILE_BYTES).map_err(|refused| {
        let shown = path.display();
        match refused {
            regular_file::Refused::Io(e) => format!("reading CA file {shown}: {e}"),
            regular_file::Refused::NotRegular(kind) => {
                format!("CA file {shown} is {kind}, not a regular file")
            }
            regular_file::Refused::TooLarge => {
                format!("CA file {shown} is larger than {MAX_CA_FILE_BYTES} bytes")
            }
        }
    })
}

/// Reads a token / secret-ID file: a regular file, at most [`MAX_SECRET_FILE_BYTES`], UTF-8,
/// surrounding whitespace trimmed, not empty.
fn read_secret_file(what: &'static str, path: &Path) -> Result<SecretString, VaultError> {
    let io_error = |source| VaultError::ReadSecretFile {
        what,
        path: path.to_path_buf(),
        source,
    };
    let bad = |problem| VaultError::BadSecretFile {
        what,
        path: path.to_path_buf(),
        problem,
    };
    let bytes =
        regular_file::read(path, MAX_SECRET_FILE_BYTES).map_err(|refused| match refused {
            regular_file::Refused::Io(source) => io_error(source),
            regular_file::Refused::NotRegular(kind) => VaultError::NotARegularFile {
                what,
                path: path.to_path_buf(),
                kind,
            },
            regular_file::Refused::TooLarge => bad("larger than 64 KiB"),
        })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8"))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

/// The secret's fields; `None` when `data` is not a JSON object.
fn secret_fields(data: serde_json::Value) -> Option<BTreeMap<String, FieldValue>> {
    let serde_json::Value::Object(map) = data else {
        return None;
    };
    let fields = map
        .into_iter()
        .map(|(key, value)| {
            let (text, kind) = match value {
                serde_json::Value::String(s) => (s, FieldKind::String),
                object @ serde_json::Value::Object(_) => (object.to_string(), FieldKind::Object),
                other => (other.to_string(), FieldKind::Other),
            };
            let value = FieldValue {
                text: SecretString::from(text),
                kind,
            };
            (key, value)
        })
        .collect();
    Some(fields)
}

/// KV v1 change detection: SHA-256 over the length-prefixed fields, 16 hex digits.
fn content_hash(fields: &BTreeMap<String, FieldValue>) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"pullsecretd-kv1-v1");
    for (key, value) in fields {
        for part in [key.as_str(), value.text.expose_secret()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    format!("sha256:{}", hex::encode(&hasher.finalize()[..8]))
}

/// The credential for `server` in a read secret, by the registry's field mapping.
pub fn credential_from(
    secret: &SecretData,
    location: &VaultLocation,
    mapping: &VaultMapping,
    server: &RegistryKey,
) -> Result<Credential, VaultError> {
    match mapping {
        VaultMapping::Fields(fields) => from_fields(secret, location, fields, server),
        VaultMapping::DockerConfig { field } => from_docker_config(secret, location, field, server),
    }
}

fn from_fields(
    secret: &SecretData,
    location: &VaultLocation,
    mapping: &FieldMapping,
    server: &RegistryKey,
) -> Result<Credential, VaultError> {
    let username = required_text(secret, location, &mapping.username)?;
    let password = required_text(secret, location, &mapping.password)?;
    let email = optional_text(secret, location, &mapping.email)?;
    if let Some(named) = optional_text(secret, location, &mapping.server)? {
        let same = RegistryKey::from_docker(&named).is_ok_and(|key| key == server.host_only());
        if !same {
            return Err(VaultError::ServerMismatch {
                location: location.clone(),
                field: mapping.server.name.clone(),
                registry: server.to_string(),
            });
        }
    }
    Ok(Credential {
        registry: server.clone(),
        username,
        secret: Secret::Password(SecretString::from(password)),
        email,
    })
}

fn from_docker_config(
    secret: &SecretData,
    location: &VaultLocation,
    field: &str,
    server: &RegistryKey,
) -> Result<Credential, VaultError> {
    let value = present_field(secret, location, field)?;
    if value.kind == FieldKind::Other {
        return Err(VaultError::NotAString {
            location: location.clone(),
            field: field.to_string(),
        });
    }
    let file = parse_auth_file(
        AuthFileFormat::DockerConfig,
        value.text.expose_secret().as_bytes(),
    )
    .map_err(|source| VaultError::BadDockerConfig {
        location: location.clone(),
        field: field.to_string(),
        source: Box::new(source),
    })?;
    match file.lookup(server) {
        Lookup::Found(credential) => Ok(credential),
        // A credential helper cannot run for a config that lives in Vault.
        Lookup::Helper { .. } | Lookup::Unusable { .. } | Lookup::NotPresent => {
            Err(VaultError::NotInDockerConfig {
                location: location.clone(),
                field: field.to_string(),
                registry: server.to_string(),
            })
        }
    }
}

/// A field that must be present (its value is not looked at here).
fn present_field<'a>(
    secret: &'a SecretData,
    location: &VaultLocation,
    field: &str,
) -> Result<&'a FieldValue, VaultError> {
    secret
        .fields
        .get(field)
        .ok_or_else(|| VaultError::MissingField {
            location: location.clone(),
            field: field.to_string(),
        })
}

/// A string field that must be there and not empty.
fn required_text(
    secret: &SecretData,
    location: &VaultLocation,
    field: &str,
) -> Result<String, VaultError> {
    let value = present_field(secret, location, field)?;
    if value.kind != FieldKind::String {
        return Err(VaultError::NotAString {
            location: location.clone(),
            field: field.to_string(),
        });
    }
    let text = value.text.expose_secret();
    if text.is_empty() {
        return Err(VaultError::EmptyField {
            location: location.clone(),
            field: field.to_string(),
        });
    }
    Ok(text.to_string())
}

/// A string field the secret may leave out (unless the config named it); empty means absent
/// for default-named fields.
fn optional_text(
    secret: &SecretData,
    location: &VaultLocation,
    field: &OptionalField,
) -> Result<Option<String>, VaultError> {
    let present = secret
        .fields
        .get(&field.name)
        .is_some_and(|v| !(v.kind == FieldKind::String && v.text.expose_secret().is_empty()));
    if field.required || present {
        required_text(secret, location, &field.name).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, serde_json::Value)]) -> SecretData {
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        let fields = secret_fields(serde_json::Value::Object(map)).expect("an object");
        SecretData {
            version: content_hash(&fields),
            fields,
            expires_at: None,
            lease: None,
        }
    }

    fn location() -> VaultLocation {
        VaultLocation {
            mount: "secret".into(),
            path: "registries/x".into(),
            kv: KvVersion::V2 { pinned: None },
        }
    }

    fn key(server: &str) -> RegistryKey {
        RegistryKey::from_docker(server).expect("valid")
    }

    #[test]
    fn field_mapping_defaults_and_errors_never_show_values() {
        let sentinel = "SENTINEL-unit-pw";
        let mapping = VaultMapping::Fields(FieldMapping::default());
        let ok = secret(&[
            ("username", "robot".into()),
            ("password", sentinel.into()),
            ("email", "".into()),
        ]);
        let credential =
            credential_from(&ok, &location(), &mapping, &key("quay.io")).expect("maps");
        assert_eq!(credential.username, "robot");
        assert_eq!(credential.email, None);

        let cases = [
            (
                secret(&[("username", "robot".into())]),
                "Vault secret secret/registries/x (KV v2): field \"password\" is missing",
            ),
            (
                secret(&[("username", "".into()), ("password", sentinel.into())]),
                "Vault secret secret/registries/x (KV v2): field \"username\" is empty",
            ),
            (
                secret(&[("username", 7.into()), ("password", sentinel.into())]),
                "Vault secret secret/registries/x (KV v2): field \"username\" is not a string",
            ),
            (
                secret(&[
                    ("username", "robot".into()),
                    ("password", sentinel.into()),
                    ("server", "ghcr.io".into()),
                ]),
                "Vault secret secret/registries/x (KV v2): field \"server\" names another \
                 registry than the configured server quay.io",
            ),
        ];
        for (data, want) in cases {
            let error =
                credential_from(&data, &location(), &mapping, &key("quay.io")).expect_err(want);
            assert_eq!(error.to_string(), want);
            assert!(!format!("{error:?}").contains(sentinel));
            assert!(!format!("{data:?}").contains(sentinel));
        }
    }

    #[test]
    fn kv1_content_hash_changes_with_content_only() {
        let a = secret(&[("username", "u".into()), ("password", "p".into())]);
        let b = secret(&[("password", "p".into()), ("username", "u".into())]);
        let c = secret(&[("username", "u".into()), ("password", "q".into())]);
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert!(a.version.starts_with("sha256:"));
    }

    #[test]
    fn failed_logins_are_held_off_twice_as_long_each_time_up_to_the_cap() {
        let backoff = LoginBackoff::default();
        let secs = |n| Duration::from_secs(n);
        assert_eq!(backoff.delay(1), secs(10));
        assert_eq!(backoff.delay(2), secs(20));
        assert_eq!(backoff.delay(5), secs(160));
        assert_eq!(backoff.delay(6), secs(300));
        assert_eq!(backoff.delay(u32::MAX), secs(300));
        let a = SecretString::from("token-a".to_string());
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&"token-b".to_string().into()));
    }

    #[test]
    fn outcomes_say_what_happened() {
        assert_eq!(
            Outcome::PermissionDenied.to_string(),
            "403 permission denied by policy"
        );
        assert!(
            Outcome::Status {
                code: 503,
                errors: vec!["Vault is sealed".into()]
            }
            .is_transient()
        );
        assert!(!Outcome::NotFound.is_transient());
        // A certificate problem is configuration: retrying cannot fix it.
        assert!(!Outcome::CertificateRejected("x".into()).is_transient());
        assert!(Outcome::Unreachable("connection refused".into()).is_transient());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const SENTINEL: &str = "SENTINEL-vault-prop-77aa";

        fn value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::String(SENTINEL.to_string())),
                Just(serde_json::Value::String(String::new())),
                "[a-z.:]{0,10}".prop_map(serde_json::Value::String),
                any::<i64>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
                Just(serde_json::json!({"auths": {"quay.io": {"auth": SENTINEL}}})),
                Just(
                    serde_json::json!({"auths": {"quay.io": {"username": "u", "password": SENTINEL}}})
                ),
            ];
            leaf.prop_recursive(2, 8, 3, |inner| {
                proptest::collection::btree_map("[a-z]{1,8}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// A KV answer of any shape maps to a credential or an error naming the field, never
            /// its value.
            #[test]
            fn kv_answers_map_or_refuse_without_echoing_a_value(
                fields in proptest::collection::btree_map(
                    prop_oneof![Just("username".to_string()), Just("password".to_string()),
                                Just("server".to_string()), Just("email".to_string()),
                                Just("config".to_string()), "[a-z]{1,6}"],
                    value(),
                    0..5,
                ),
                docker_config in any::<bool>(),
            ) {
                let Some(parsed) = secret_fields(serde_json::Value::Object(fields.into_iter().collect())) else {
                    return Ok(());
                };
                let data = SecretData { version: content_hash(&parsed), fields: parsed, expires_at: None, lease: None };
                let mapping = if docker_config {
                    VaultMapping::DockerConfig { field: "config".into() }
                } else {
                    VaultMapping::Fields(FieldMapping::default())
                };
                if let Err(error) = credential_from(&data, &location(), &mapping, &key("quay.io")) {
                    let shown = format!("{error} {error:?}");
                    prop_assert!(!shown.contains(SENTINEL), "echoed: {}", shown);
                }
                let debug = format!("{data:?}");
                prop_assert!(!debug.contains(SENTINEL));
            }
        }
    }
}

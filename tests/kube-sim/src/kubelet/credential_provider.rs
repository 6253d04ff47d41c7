//! Image credential provider plugins as the kubelet runs them: kubernetes/kubernetes
//! `pkg/credentialprovider/plugin/plugin.go` (`pluginProvider.provide`, `execPlugin`,
//! `getCachedCredentials`, the cache keys) and `plugins.go` (`externalCredentialProviderKeyring`),
//! for the wire types of `staging/src/k8s.io/kubelet/pkg/apis/credentialprovider/v1/types.go`
//! (and its v1beta1/v1alpha1 twins):
//!
//! - a provider is consulted for an image only if one of its `matchImages` matches it
//!   (`URLsMatchStr`: as many host labels, each a glob, equal ports, path prefix);
//! - credentials cached for the image, then its registry, then `<global>` are used without
//!   running anything; an entry is good until `cacheDuration` (or `defaultCacheDuration` when the
//!   response has none) has passed; `cacheDuration: 0s`, or no duration and a zero default,
//!   caches nothing;
//! - otherwise `<bin dir>/<name> args…` runs with the kubelet's environment plus `env`, the
//!   `CredentialProviderRequest` on stdin (in the provider's `apiVersion`), and a deadline
//!   (upstream: one minute); concurrent lookups of one image share one run (singleflight);
//! - the response must be JSON of the same `apiVersion`, kind `CredentialProviderResponse`,
//!   decoded strictly, with a `cacheKeyType` of `Image`, `Registry` or `Global`; the `auth` map
//!   is a DockerConfig (keys with globs, ports, paths);
//! - any failure (spawn, exit status, deadline, bad response) is logged and this provider
//!   contributes nothing: the pull goes on with the other credentials, or anonymously;
//! - every provider's credentials go into one keyring, providers in config order
//!   (`externalCredentialProviderKeyring.Lookup`);
//! - with `tokenAttributes` (KEP-4412, `KubeletServiceAccountTokenForCredentialProviders`), the
//!   pod's service account is read first: a pod without one is skipped when
//!   `requireServiceAccount` is set, an account missing a `requiredServiceAccountAnnotationKeys`
//!   annotation is skipped (`required annotation KEY not found`, the plugin is not run), and
//!   otherwise the plugin gets a token of that account bound to the pod for the configured
//!   audience (from the kubelet's token manager) and the required and present optional
//!   annotations; the cache key then also holds the account's namespace, name, uid and those
//!   annotations, and with `cacheType: Token` the token's hash; a response that hands the token
//!   back as a password is refused unless `cacheType` is `Token`.
//!
//! Every run is recorded as a [`ProviderCall`]: provider, image, account, the cache key the
//! response made and the `auth` keys, never a username, password, token or the provider's
//! stdout; every provider skipped for a pod in token mode as a [`ProviderSkip`].

use super::keyring::{Keyring, Source};
use super::provider_config::TokenCacheType;
use super::provider_config::{ProviderConfig, parse_go_duration};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// `globalCacheKey`: angle brackets keep it apart from any image or registry.
pub const GLOBAL_CACHE_KEY: &str = "<global>";

/// The key credentials are cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The image, its registry (`host[:port]`) or [`GLOBAL_CACHE_KEY`], by `cacheKeyType`.
    pub base: String,
    /// In token mode, the account part (`generateServiceAccountCacheKey`).
    pub service_account: Option<ServiceAccountKey>,
}

/// The account part of a cache key in token mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccountKey {
    /// The pod's (and account's) namespace.
    pub namespace: String,
    /// The account's name.
    pub name: String,
    /// The account's uid: a recreated account does not see its predecessor's credentials.
    pub uid: String,
    /// The annotations sent to the plugin.
    pub annotations: BTreeMap<String, String>,
    /// With `cacheType: Token`, `sha256:<hex>` of the token (not the token).
    pub token_hash: Option<String>,
}

/// A provider not run for a pod in token mode, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSkip {
    /// The provider's `name`.
    pub provider: String,
    /// The image looked up.
    pub image: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    /// The kubelet's log text (`required annotation KEY not found`, …).
    pub reason: String,
}

/// The pod a lookup is for (`perPodPluginProvider`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContext {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.serviceAccountName` (empty: none).
    pub service_account: String,
}

/// What token mode needs from the cluster: the kubelet reads accounts and asks its token
/// manager for tokens.
pub trait ServiceAccounts: Sync {
    /// The account's uid and annotations, or the API error text.
    fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(String, BTreeMap<String, String>), String>;

    /// A token of the account, bound to the pod, for `audience`; or the error text.
    fn token(
        &self,
        pod: &PodContext,
        service_account_uid: &str,
        audience: &str,
    ) -> Result<String, String>;
}

/// What a token-mode provider sends along and caches by.
struct TokenUse {
    /// `ns/name` of the account (for the record).
    account: String,
    /// `serviceAccountToken`.
    token: String,
    /// `serviceAccountAnnotations`.
    annotations: BTreeMap<String, String>,
    /// `sha256:<hex>` of the token.
    token_hash: String,
    /// The account part of the cache key.
    key: ServiceAccountKey,
}

/// One run of a provider's executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCall {
    /// The provider's `name`.
    pub provider: String,
    /// `CredentialProviderRequest.image`.
    pub image: String,
    /// `namespace/name` of the account whose token was sent (token mode).
    pub service_account: Option<String>,
    /// `serviceAccountAnnotations` sent.
    pub annotations: BTreeMap<String, String>,
    /// What came of it: the response's cache entry, or the error the kubelet logged.
    pub outcome: Result<Cached, String>,
}

/// What a good response made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// `cacheKeyType` of the response.
    pub cache_key_type: String,
    /// Where it was cached; None when it was not (`cacheDuration: 0s`, or no duration and a
    /// zero `defaultCacheDuration`).
    pub cache_key: Option<CacheKey>,
    /// For how long, when cached.
    pub cache_duration: Option<Duration>,
    /// The keys of `auth` (never the credentials).
    pub auth_keys: Vec<String>,
}

/// A DockerConfig from a provider: (match key, username, password).
type Entries = Vec<(String, String, String)>;

/// A cached DockerConfig.
struct Entry {
    /// The credentials.
    entries: Entries,
    /// `expiresAt`: the entry is expired once now is after it.
    expires_at: Instant,
}

/// The result of one run, shared by the lookups that waited for it.
type Flight = Arc<OnceCell<Result<Entries, String>>>;

/// One configured provider (`pluginProvider` with its `execPlugin`).
struct Provider {
    /// Its config entry.
    config: ProviderConfig,
    /// `<bin dir>/<name>`.
    path: PathBuf,
    /// Cached credentials.
    cache: Mutex<HashMap<CacheKey, Entry>>,
    /// Runs in progress, by singleflight key.
    inflight: Mutex<HashMap<String, Flight>>,
}

/// The kubelet's registered providers and the record of their runs.
pub struct Providers {
    /// In config order.
    list: Vec<Provider>,
    /// The exec deadline.
    timeout: Duration,
    /// Every run, in order (for tests).
    calls: Mutex<Vec<ProviderCall>>,
    /// Every skip in token mode, in order (for tests).
    skips: Mutex<Vec<ProviderSkip>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `CredentialProviderRequest` as the JSON encoder writes it: kind, apiVersion, then fields.
#[derive(Serialize)]
struct Request<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    image: &'a str,
    #[serde(rename = "serviceAccountToken", skip_serializing_if = "str::is_empty")]
    service_account_token: &'a str,
    #[serde(
        rename = "serviceAccountAnnotations",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    service_account_annotations: &'a BTreeMap<String, String>,
}

/// `CredentialProviderResponse`, strictly: unknown or repeated fields fail the decode.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Response {
    #[serde(rename = "apiVersion")]
    #[allow(dead_code)]
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(rename = "cacheKeyType")]
    cache_key_type: Option<String>,
    #[serde(rename = "cacheDuration")]
    cache_duration: Option<String>,
    auth: Option<BTreeMap<String, AuthConfig>>,
}

/// `AuthConfig`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthConfig {
    username: Option<String>,
    password: Option<String>,
}

/// A decoded response: what `provide` needs.
struct Decoded {
    cache_key_type: String,
    /// Nanoseconds; None: use the default.
    cache_duration: Option<i64>,
    entries: Entries,
}

/// `URLsMatchStr(matchImage, image)`: whether a `matchImages` entry (or an `auth` key)
/// matches a normalised repository (`host[:port]/path`).
pub fn image_matches(match_image: &str, image: &str) -> bool {
    super::keyring::urls_match(match_image, image)
}

/// `parseRegistry`: the part of the image before the first `/`.
fn registry_of(image: &str) -> &str {
    image.split('/').next().unwrap_or(image)
}

impl Providers {
    /// Providers for the registered config entries, executables in `bin_dir`.
    pub fn new(configs: Vec<ProviderConfig>, bin_dir: PathBuf, timeout: Duration) -> Self {
        let list = configs
            .into_iter()
            .map(|config| Provider {
                path: bin_dir.join(&config.name),
                config,
                cache: Mutex::new(HashMap::new()),
                inflight: Mutex::new(HashMap::new()),
            })
            .collect();
        Self {
            list,
            timeout,
            calls: Mutex::new(Vec::new()),
            skips: Mutex::new(Vec::new()),
        }
    }

    /// Every run so far.
    pub fn calls(&self) -> Vec<ProviderCall> {
        lock(&self.calls).clone()
    }

    /// Every token-mode skip so far.
    pub fn skips(&self) -> Vec<ProviderSkip> {
        lock(&self.skips).clone()
    }

    /// `externalCredentialProviderKeyring`: what every provider gives for `image` (a normalised
    /// repository, `host/path`) and `pod`, in one keyring.
    pub async fn keyring(
        &self,
        image: &str,
        pod: &PodContext,
        accounts: &dyn ServiceAccounts,
    ) -> Keyring {
        let mut keyring = Keyring::default();
        for p in &self.list {
            let entries = self.provide(p, image, pod, accounts).await;
            keyring.add_entries(&Source::Provider(p.config.name.clone()), entries);
        }
        keyring
    }

    fn skip(&self, p: &Provider, image: &str, pod: &PodContext, reason: String) -> Entries {
        tracing::debug!(provider = %p.config.name, %image, %reason, "credential provider skipped");
        lock(&self.skips).push(ProviderSkip {
            provider: p.config.name.clone(),
            image: image.to_string(),
            pod: format!("{}/{}", pod.namespace, pod.name),
            reason,
        });
        Vec::new()
    }

    /// `pluginProvider.provide`.
    async fn provide(
        &self,
        p: &Provider,
        image: &str,
        pod: &PodContext,
        accounts: &dyn ServiceAccounts,
    ) -> Entries {
        if !p.allows(image) {
            return Vec::new();
        }
        let token = match p.token_use(pod, accounts) {
            Ok(t) => t,
            Err(reason) => return self.skip(p, image, pod, reason),
        };
        let sa_key = token.as_ref().map(|t| t.key.clone());
        if let Some(cached) = p.cached(image, sa_key.as_ref()) {
            return cached;
        }
        let flight_key = match &token {
            Some(t) => format!(
                "{image}\0{}\0{:?}",
                t.token_hash,
                t.annotations.iter().collect::<Vec<_>>()
            ),
            None => image.to_string(),
        };
        let flight = p.flight(&flight_key);
        let result = flight
            .get_or_init(|| async { self.run(p, image, token.as_ref()).await })
            .await
            .clone();
        p.land(&flight_key, &flight);
        result.unwrap_or_default()
    }

    /// One run: exec, decode, cache, record. The error is what the kubelet logs.
    async fn run(
        &self,
        p: &Provider,
        image: &str,
        token: Option<&TokenUse>,
    ) -> Result<Entries, String> {
        let outcome = match p.exec(image, token, self.timeout).await {
            Ok(decoded) => p.store(image, token, decoded),
            Err(e) => Err(format!(
                "Failed getting credential from external registry credential provider: {e}"
            )),
        };
        let record = outcome
            .as_ref()
            .map(|(c, _)| c.clone())
            .map_err(Clone::clone);
        if let Err(e) = &record {
            tracing::warn!(provider = %p.config.name, %image, error = %e, "credential provider");
        }
        lock(&self.calls).push(ProviderCall {
            provider: p.config.name.clone(),
            image: image.to_string(),
            service_account: token.map(|t| t.account.clone()),
            annotations: token.map(|t| t.annotations.clone()).unwrap_or_default(),
            outcome: record,
        });
        outcome.map(|(_, entries)| entries)
    }
}

impl Provider {
    /// `isImageAllowed`.
    fn allows(&self, image: &str) -> bool {
        self.config
            .match_images
            .iter()
            .any(|m| image_matches(m, image))
    }

    /// The service-account side of `provide`: None outside token mode (or for a pod without an
    /// account when none is required); the skip reason when the plugin must not run.
    fn token_use(
        &self,
        pod: &PodContext,
        accounts: &dyn ServiceAccounts,
    ) -> Result<Option<TokenUse>, String> {
        let Some(t) = self
            .config
            .token_attributes
            .as_ref()
            .filter(|t| !t.audience.is_empty())
        else {
            return Ok(None);
        };
        let sa = &pod.service_account;
        if sa.is_empty() {
            if t.require_service_account == Some(true) {
                return Err(format!(
                    "Service account name is empty for pod {}/{}",
                    pod.namespace, pod.name
                ));
            }
            return Ok(None);
        }
        let failed =
            |e: String| format!("Failed to get service account {}/{sa}: {e}", pod.namespace);
        let (uid, all) = accounts
            .service_account(&pod.namespace, sa)
            .map_err(failed)?;
        let mut annotations = BTreeMap::new();
        for k in &t.required_annotation_keys {
            let Some(v) = all.get(k) else {
                return Err(format!(
                    "Failed to get service account data {}/{sa}: required annotation {k} not found",
                    pod.namespace
                ));
            };
            annotations.insert(k.clone(), v.clone());
        }
        for k in &t.optional_annotation_keys {
            if let Some(v) = all.get(k) {
                annotations.insert(k.clone(), v.clone());
            }
        }
        let token = accounts.token(pod, &uid, &t.audience).map_err(|e| {
            format!(
                "Error getting service account token {}/{sa}: {e}",
                pod.namespace
            )
        })?;
        let token_hash = format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())));
        let key = ServiceAccountKey {
            namespace: pod.namespace.clone(),
            name: sa.clone(),
            uid,
            annotations: annotations.clone(),
            token_hash: (t.cache_type == Some(TokenCacheType::Token)).then(|| token_hash.clone()),
        };
        Ok(Some(TokenUse {
            account: format!("{}/{sa}", pod.namespace),
            token,
            annotations,
            token_hash,
            key,
        }))
    }

    /// `getCachedCredentials`: the image, then its registry, then the global key (each with
    /// the account part in token mode); expired entries are dropped when looked at.
    fn cached(&self, image: &str, sa_key: Option<&ServiceAccountKey>) -> Option<Entries> {
        let mut cache = lock(&self.cache);
        let now = Instant::now();
        for base in [image, registry_of(image), GLOBAL_CACHE_KEY] {
            let key = CacheKey {
                base: base.to_string(),
                service_account: sa_key.cloned(),
            };
            match cache.get(&key) {
                Some(e) if now > e.expires_at => {
                    cache.remove(&key);
                }
                Some(e) => return Some(e.entries.clone()),
                None => {}
            }
        }
        None
    }

    /// The singleflight slot for `key`: a run in progress, or a new one.
    fn flight(&self, key: &str) -> Flight {
        lock(&self.inflight)
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone()
    }

    /// The run is over: later lookups start their own.
    fn land(&self, key: &str, flight: &Flight) {
        let mut inflight = lock(&self.inflight);
        if inflight.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            inflight.remove(key);
        }
    }

    /// The response's cache key and duration; caches it. The error is upstream's log text.
    fn store(
        &self,
        image: &str,
        token: Option<&TokenUse>,
        d: Decoded,
    ) -> Result<(Cached, Entries), String> {
        let token_cache = self
            .config
            .token_attributes
            .as_ref()
            .and_then(|t| t.cache_type);
        if let Some(t) = token
            && token_cache != Some(TokenCacheType::Token)
            && d.entries
                .iter()
                .any(|(_, _, password)| *password == t.token)
        {
            return Err(format!(
                "Credential provider plugin returned the service account token as the password for image {}, which is not allowed when service account cache type is not set to 'Token'",
                crate::status::go_quote(image)
            ));
        }
        let base = match d.cache_key_type.as_str() {
            "Image" => image.to_string(),
            "Registry" => registry_of(image).to_string(),
            "Global" => GLOBAL_CACHE_KEY.to_string(),
            other => {
                return Err(format!(
                    "credential provider plugin did not return a valid cacheKeyType: {}",
                    crate::status::go_quote(other)
                ));
            }
        };
        let nanos = match d.cache_duration {
            Some(n) => n,
            None => self.config.default_cache_duration.unwrap_or(0),
        };
        let auth_keys = d.entries.iter().map(|(k, _, _)| k.clone()).collect();
        let mut cached = Cached {
            cache_key_type: d.cache_key_type,
            cache_key: None,
            cache_duration: None,
            auth_keys,
        };
        // A zero duration caches nothing; a negative one makes an entry expired at once.
        if nanos > 0 {
            let duration = Duration::from_nanos(nanos.unsigned_abs());
            let key = CacheKey {
                base,
                service_account: token.map(|t| t.key.clone()),
            };
            lock(&self.cache).insert(
                key.clone(),
                Entry {
                    entries: d.entries.clone(),
                    expires_at: Instant::now() + duration,
                },
            );
            cached.cache_key = Some(key);
            cached.cache_duration = Some(duration);
        }
        Ok((cached, d.entries))
    }

    /// `execPlugin.ExecPlugin`: run with the request on stdin, decode stdout.
    async fn exec(
        &self,
        image: &str,
        token: Option<&TokenUse>,
        timeout: Duration,
    ) -> Result<Decoded, String> {
        let none = BTreeMap::new();
        let request = Request {
            kind: "CredentialProviderRequest",
            api_version: &self.config.api_version,
            image,
            service_account_token: token.map_or("", |t| t.token.as_str()),
            service_account_annotations: token.map_or(&none, |t| &t.annotations),
        };
        let mut body = serde_json::to_vec(&request)
            .map_err(|e| format!("failed to encode auth request: {e}"))?;
        body.push(b'\n');
        let name = &self.config.name;
        let failed = |why: String| {
            format!("error execing credential provider plugin {name} for image {image}: {why}")
        };
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.args(&self.config.args)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: ", failed(spawn_error(&self.path, &e))))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may exit without reading its input (Go ignores EPIPE there too).
            let _ = stdin.write_all(&body).await;
        }
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => return Err(format!("{}: ", failed("context deadline exceeded".into()))),
            Ok(Err(e)) => return Err(format!("{}: ", failed(e.to_string()))),
            Ok(Ok(out)) => out,
        };
        if !out.status.success() {
            return Err(format!(
                "{}: {}",
                failed(exit_error(out.status)),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.decode(&out.stdout)
    }

    /// The GVK check, then the strict decode.
    fn decode(&self, data: &[u8]) -> Result<Decoded, String> {
        let api_version = interpret(data)?;
        if api_version != self.config.api_version {
            return Err(format!(
                "apiVersion from credential plugin response did not match expected apiVersion:{}, actual apiVersion:{api_version}",
                self.config.api_version
            ));
        }
        // The decode error is not wrapped: it could quote the credentials.
        let opaque =
            || "error decoding credential provider plugin response from stdout".to_string();
        let r: Response = serde_json::from_slice(data).map_err(|_| opaque())?;
        if r.kind.as_deref() != Some("CredentialProviderResponse") {
            return Err(opaque());
        }
        let cache_duration = match &r.cache_duration {
            Some(s) => Some(parse_go_duration(s).map_err(|_| opaque())?),
            None => None,
        };
        let entries = r
            .auth
            .unwrap_or_default()
            .into_iter()
            .map(|(k, a)| {
                (
                    k,
                    a.username.unwrap_or_default(),
                    a.password.unwrap_or_default(),
                )
            })
            .collect();
        Ok(Decoded {
            cache_key_type: r.cache_key_type.unwrap_or_default(),
            cache_duration,
            entries,
        })
    }
}

/// `json.DefaultMetaFactory.Interpret`: the apiVersion of a JSON object (lenient, like
/// `json.Unmarshal` into a two-field struct).
fn interpret(data: &[u8]) -> Result<String, String> {
    let wrap = |e: String| {
        format!("error reading GVK from response: couldn't get version/kind; json parse error: {e}")
    };
    let v: serde_json::Value = serde_json::from_slice(data)
        .map_err(|e| wrap(crate::strategy::go_json_syntax_error(data, &e)))?;
    let Some(m) = v.as_object() else {
        return Err(wrap(
            "json: cannot unmarshal non-object into Go value of type struct { APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }".into(),
        ));
    };
    let field = m
        .get("apiVersion")
        .or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("apiVersion"))
                .map(|(_, v)| v)
        })
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    Ok(field.to_string())
}

/// Go's `exec.ExitError` text.
fn exit_error(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    let signal = status.signal().unwrap_or(0);
    let name = match signal {
        1 => "hangup".to_string(),
        2 => "interrupt".to_string(),
        6 => "aborted".to_string(),
        9 => "killed".to_string(),
        11 => "segmentation fault".to_string(),
        15 => "terminated".to_string(),
        n => format!("signal {n}"),
    };
    format!("signal: {name}")
}

/// Go's `fork/exec PATH: …` text for a failed start.
fn spawn_error(path: &std::path::Path, e: &std::io::Error) -> String {
    let what = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ if e.raw_os_error() == Some(8) => "exec format error".to_string(),
        _ => e.to_string(),
    };
    format!("fork/exec {}: {what}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(api_version: &str) -> Provider {
        Provider {
            config: ProviderConfig {
                name: "p".into(),
                match_images: vec!["*.registry.io".into(), "127.0.0.1:5000/team".into()],
                default_cache_duration: Some(60_000_000_000),
                api_version: api_version.into(),
                args: Vec::new(),
                env: Vec::new(),
                token_attributes: None,
            },
            path: PathBuf::from("/nonexistent"),
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    const V1: &str = "credentialprovider.kubelet.k8s.io/v1";

    #[test]
    fn the_request_is_encoded_as_upstream_s_json_serializer_does() {
        for v in [
            "credentialprovider.kubelet.k8s.io/v1alpha1",
            "credentialprovider.kubelet.k8s.io/v1beta1",
            V1,
        ] {
            let none = BTreeMap::new();
            let r = Request {
                kind: "CredentialProviderRequest",
                api_version: v,
                image: "test.registry.io/foobar",
                service_account_token: "",
                service_account_annotations: &none,
            };
            assert_eq!(
                serde_json::to_string(&r).expect("json"),
                format!(
                    "{{\"kind\":\"CredentialProviderRequest\",\"apiVersion\":\"{v}\",\"image\":\"test.registry.io/foobar\"}}"
                )
            );
        }
        let annotations: BTreeMap<String, String> = [
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ]
        .into();
        let r = Request {
            kind: "CredentialProviderRequest",
            api_version: V1,
            image: "r.io/x",
            service_account_token: "tok",
            service_account_annotations: &annotations,
        };
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            format!(
                "{{\"kind\":\"CredentialProviderRequest\",\"apiVersion\":\"{V1}\",\"image\":\"r.io/x\",\"serviceAccountToken\":\"tok\",\"serviceAccountAnnotations\":{{\"a\":\"1\",\"b\":\"2\"}}}}"
            )
        );
    }

    #[test]
    fn responses_decode_strictly() {
        let p = provider(V1);
        let ok = br#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"1m","auth":{"*.registry.io":{"username":"user","password":"password"}}}"#;
        let d = p.decode(ok).expect("decodes");
        assert_eq!(d.cache_key_type, "Registry");
        assert_eq!(d.cache_duration, Some(60_000_000_000));
        assert_eq!(
            d.entries,
            [(
                "*.registry.io".to_string(),
                "user".to_string(),
                "password".to_string()
            )]
        );
        let opaque = Some("error decoding credential provider plugin response from stdout");
        let wrong_kind = br#"{"kind":"WrongKind","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry"}"#;
        assert_eq!(p.decode(wrong_kind).err().as_deref(), opaque);
        let unknown = br#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","extra":1}"#;
        assert_eq!(p.decode(unknown).err().as_deref(), opaque);
        let bad_duration = br#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"soon"}"#;
        assert_eq!(p.decode(bad_duration).err().as_deref(), opaque);
        let beta = br#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","cacheKeyType":"Registry"}"#;
        assert_eq!(
            p.decode(beta).err().as_deref(),
            Some(
                "apiVersion from credential plugin response did not match expected apiVersion:credentialprovider.kubelet.k8s.io/v1, actual apiVersion:credentialprovider.kubelet.k8s.io/v1beta1"
            )
        );
        assert_eq!(
            p.decode(b"not json").err().as_deref(),
            Some(
                "error reading GVK from response: couldn't get version/kind; json parse error: invalid character 'o' looking for beginning of value"
            )
        );
    }

    #[test]
    fn cache_keys_follow_the_cache_key_type() {
        let p = provider(V1);
        let entries = vec![(
            "*.registry.io".to_string(),
            "u".to_string(),
            "p".to_string(),
        )];
        let decoded = |t: &str, d: Option<i64>| Decoded {
            cache_key_type: t.into(),
            cache_duration: d,
            entries: entries.clone(),
        };
        let image = "test.registry.io/foo/bar";
        let (c, _) = p.store(image, None, decoded("Image", None)).expect("image");
        assert_eq!(c.cache_key.map(|k| k.base).as_deref(), Some(image));
        assert_eq!(c.cache_duration, Some(Duration::from_secs(60)));
        let (c, _) = p
            .store(image, None, decoded("Registry", None))
            .expect("registry");
        assert_eq!(
            c.cache_key.map(|k| k.base).as_deref(),
            Some("test.registry.io")
        );
        let (c, _) = p
            .store(image, None, decoded("Global", Some(0)))
            .expect("global");
        assert_eq!(c.cache_key, None, "cacheDuration 0 caches nothing");
        assert_eq!(
            p.store(image, None, decoded("", None)).err().as_deref(),
            Some("credential provider plugin did not return a valid cacheKeyType: \"\"")
        );
        // Another image of the registry finds the registry entry.
        assert!(p.cached("test.registry.io/other", None).is_some());
        assert!(p.cached("other.registry.io/x", None).is_none());
    }

    #[test]
    fn match_images_gate_the_provider() {
        let p = provider(V1);
        assert!(p.allows("test.registry.io/foo"));
        assert!(!p.allows("registry.io/foo"));
        assert!(p.allows("127.0.0.1:5000/team/app"));
        assert!(!p.allows("127.0.0.1:5000/other/app"));
        assert!(!p.allows("127.0.0.1:5001/team/app"));
    }
}

//! kube-sim: a faithful, in-memory Kubernetes API-server emulator for tests (dev-only).
//!
//! No real API server can run on the project's machines, yet every cluster-facing feature must be
//! tested over real HTTP with the real `kube::Client` and `kubectl`. kube-sim reproduces the
//! apiserver semantics of docs/service-accounts.md and docs/api-server.md — Status objects, optimistic concurrency, validation of
//! pull secrets, strategic merge patch list rules, server-side apply ownership, watches with
//! bookmarks and 410 Expired — so tests check behaviour a real cluster would show.
//!
//! Layout (request path, top to bottom):
//! - `server`: listener (HTTP/HTTPS), authentication, path parsing, faults, counters, discovery.
//! - `api`: registry semantics per verb; `strategy`: per-kind prepare/validate; `hooks`: what
//!   controllers do right after a write (default SAs, OpenShift pull secrets, namespace cascade).
//! - `patch` (JSON/merge/strategic), `managed` (managedFields and server-side apply).
//! - `store`: objects, one resourceVersion counter, bounded history, watch fan-out; `watch`.
//! - `discovery`, `table`, `rbac`, `selector`, `status`, `tls`, `faults`, `resources`, `util`.
//! - The pod path: `workloads` (pod/apps strategies), `admission` (ServiceAccount plugin),
//!   `subresource` (scale), `controllers` (ReplicaSet/Deployment, a background task), `kubelet`
//!   (opt-in: binds pods, pulls images from loopback registries with pull secrets and exec
//!   credential providers, writes pod status), `recorder` (their Events), `image_ref` (image
//!   reference parsing).
//! - Service-account tokens: `tokens` (signing, claims, review) and `token_request` (the
//!   `serviceaccounts/token` subresource).

mod admission;
mod api;
mod controllers;
mod convert;
mod discovery;
pub mod faults;
mod hooks;
mod image_ref;
pub mod kubelet;
mod managed;
mod patch;
pub mod pause;
mod proto;
mod rbac;
mod recorder;
pub mod resources;
mod selector;
mod server;
mod status;
mod store;
mod strategy;
mod subresource;
mod table;
mod table_workloads;
mod tls;
mod token_request;
mod tokens;
mod util;
mod watch;
mod workloads;

pub use faults::{ErrorRule, Faults, InjectedError, RequestCounts, WriteRecord};
pub use hooks::{OPENSHIFT_SA_MANAGER, PULL_SECRET_REF};
pub use kubelet::credential_provider::{
    CacheKey, Cached, ProviderCall, ProviderSkip, ServiceAccountKey,
};
pub use kubelet::{KubeletOptions, PullAttempt};
pub use pause::{Pause, Release};

use serde_json::{Value, json};
use server::Shared;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The token of the built-in cluster-admin user unless `Options::token` says otherwise.
pub const DEFAULT_TOKEN: &str = "kube-sim-admin-token";

/// An authenticated identity (also what TokenReview returns for a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: HashMap<String, Vec<String>>,
    /// Audiences the token is valid for (empty: any requested audience).
    pub audiences: Vec<String>,
}

impl UserInfo {
    fn admin() -> Self {
        Self {
            username: "kube-sim:admin".into(),
            uid: "00000000-0000-0000-0000-000000000001".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            extra: HashMap::new(),
            audiences: Vec::new(),
        }
    }

    fn anonymous() -> Self {
        Self {
            username: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: HashMap::new(),
            audiences: Vec::new(),
        }
    }

    /// A ServiceAccount identity as the apiserver's SA authenticator builds it (docs/api-server.md).
    pub fn service_account(namespace: &str, name: &str) -> Self {
        let mut extra = HashMap::new();
        extra.insert(
            "authentication.kubernetes.io/pod-name".to_string(),
            vec![format!("{name}-pod")],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".to_string(),
            vec![util::new_uid()],
        );
        Self {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: util::new_uid(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            extra,
            audiences: Vec::new(),
        }
    }

    /// A plain user.
    pub fn user(name: &str, groups: &[&str]) -> Self {
        let mut g: Vec<String> = groups.iter().map(|s| (*s).to_string()).collect();
        g.push("system:authenticated".into());
        Self {
            username: name.into(),
            uid: util::new_uid(),
            groups: g,
            extra: HashMap::new(),
            audiences: Vec::new(),
        }
    }

    fn to_json(&self) -> Value {
        let mut u = json!({"username": self.username, "uid": self.uid, "groups": self.groups});
        if !self.extra.is_empty() {
            u["extra"] = json!(self.extra);
        }
        u
    }
}

/// How to start a server. `Options::default()` is plain Kubernetes over HTTP.
#[derive(Debug, Clone)]
pub struct Options {
    /// Listen port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Serve HTTPS with a fresh self-signed CA.
    pub tls: bool,
    /// Serve the OpenShift groups, projects, `system:image-puller` and OpenShift's controllers.
    pub openshift: bool,
    /// Bearer token of the cluster-admin user.
    pub token: String,
    /// More tokens: each authenticates as its identity and is what TokenReview reports.
    pub identities: HashMap<String, UserInfo>,
    /// Enforce RBAC for identities not in `system:masters`.
    pub rbac: bool,
    /// Watch events kept; watches from older resourceVersions get 410 Expired.
    pub event_history: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Create the `default` ServiceAccount (and OpenShift's `builder`, `deployer`) per namespace.
    pub default_service_accounts: bool,
    /// On OpenShift, create the managed `<sa>-dockercfg-*` pull secret for every new SA.
    pub openshift_pull_secrets: bool,
    /// Delay between a namespace turning Terminating and its removal (zero: at once).
    pub namespace_deletion_delay: Duration,
    /// Faults in force from the start.
    pub faults: Faults,
    /// Run the ReplicaSet and Deployment controllers (as kube-controller-manager does).
    pub controllers: bool,
    /// Run a kubelet for one node that binds pods and really pulls their images (None: pods
    /// stay Pending, as on a cluster without nodes).
    pub kubelet: Option<KubeletOptions>,
    /// Keep a log of every authorized write request ([`Handle::writes`]): who wrote which
    /// namespace when (off by default: it grows with every write).
    pub record_writes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: 0,
            tls: false,
            openshift: false,
            token: DEFAULT_TOKEN.into(),
            identities: HashMap::new(),
            rbac: false,
            event_history: 10_000,
            bookmark_interval: Duration::from_secs(1),
            default_service_accounts: true,
            openshift_pull_secrets: true,
            namespace_deletion_delay: Duration::ZERO,
            faults: Faults::default(),
            controllers: true,
            kubelet: None,
            record_writes: false,
        }
    }
}

impl Options {
    #[must_use]
    pub fn openshift(mut self) -> Self {
        self.openshift = true;
        self
    }

    #[must_use]
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Runs a kubelet with these options.
    #[must_use]
    pub fn kubelet(mut self, kubelet: KubeletOptions) -> Self {
        self.kubelet = Some(kubelet);
        self
    }

    /// Adds a token → identity mapping.
    #[must_use]
    pub fn identity(mut self, token: &str, user: UserInfo) -> Self {
        self.identities.insert(token.into(), user);
        self
    }
}

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("creating TLS certificates: {0}")]
    Tls(String),
    #[error("starting the server runtime: {0}")]
    Runtime(std::io::Error),
    #[error("starting the kubelet: {0}")]
    Kubelet(String),
    #[error("creating the service-account signing key: {0}")]
    Signing(String),
}

/// Starts servers.
pub struct Server;

/// A running server; dropping it shuts the server down.
pub struct Handle {
    shared: Arc<Shared>,
    url: String,
    ca_pem: Option<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The server's own runtime when started with [`Server::start_in_thread`].
    runtime: Option<tokio::runtime::Runtime>,
    /// The kubelet's state, when one runs.
    kubelet: Option<Arc<kubelet::Kubelet>>,
}

impl Server {
    /// Starts on the current tokio runtime.
    pub async fn start(opts: Options) -> Result<Handle, Error> {
        let port = opts.port;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|source| Error::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { port, source })?;
        let tls = if opts.tls {
            Some(tls::generate().map_err(Error::Tls)?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let bookmark_interval = opts.bookmark_interval;
        let kubelet = match &opts.kubelet {
            Some(k) => Some(Arc::new(
                kubelet::Kubelet::new(k.clone()).map_err(Error::Kubelet)?,
            )),
            None => None,
        };
        let signer = tokens::Issuer::new().map_err(Error::Signing)?;
        let shared = Shared::new(opts, addr.to_string(), signer);
        hooks::bootstrap(&shared);
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), acceptor));
        let weak = Arc::downgrade(&shared);
        let bookmarks = tokio::spawn(async move {
            let mut tick = tokio::time::interval(bookmark_interval.max(Duration::from_millis(10)));
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.lock_store().send_bookmarks();
            }
        });
        let mut tasks = vec![accept, bookmarks];
        if shared.opts.controllers {
            tasks.push(controllers::spawn(&shared));
        }
        if let Some(k) = &kubelet {
            tasks.push(kubelet::spawn(&shared, k.clone()));
        }
        Ok(Handle {
            shared,
            url: format!("{scheme}://{addr}"),
            ca_pem: tls.map(|t| t.ca_pem),
            tasks,
            runtime: None,
            kubelet,
        })
    }

    /// Starts on a runtime of its own, for tests that block (running `kubectl`).
    pub fn start_in_thread(opts: Options) -> Result<Handle, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let mut handle = rt.block_on(Self::start(opts))?;
        handle.runtime = Some(rt);
        Ok(handle)
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut shutdown = shared.shutdown_rx();
            let svc_shared = shared.clone();
            let svc =
                hyper::service::service_fn(move |req| server::handle(svc_shared.clone(), req));
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    tokio::select! { _ = conn => {}, _ = shutdown.changed() => {} }
                }
                None => {
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
                    tokio::select! { _ = conn => {}, _ = shutdown.changed() => {} }
                }
            }
        });
    }
}

impl Handle {
    /// `http(s)://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster-admin bearer token.
    pub fn token(&self) -> &str {
        &self.shared.opts.token
    }

    /// The CA certificate (PEM) with HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Writes the CA certificate (PEM) to a file, for clients such as OpenBao.
    pub fn write_ca(&self, path: &Path) -> std::io::Result<()> {
        write_atomically(path, self.ca_pem.as_deref().unwrap_or(""))
    }

    /// A kubeconfig for this server, with `token` (default: the admin's) and a default namespace.
    pub fn kubeconfig_yaml_for(&self, token: &str, namespace: &str) -> String {
        use base64::Engine as _;
        let mut cluster = json!({"server": self.url});
        if let Some(pem) = &self.ca_pem {
            cluster["certificate-authority-data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(pem));
        }
        let cfg = json!({
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "kube-sim", "cluster": cluster}],
            "users": [{"name": "kube-sim", "user": {"token": token}}],
            "contexts": [{"name": "kube-sim", "context": {"cluster": "kube-sim", "user": "kube-sim", "namespace": namespace}}],
            "current-context": "kube-sim",
        });
        serde_yaml_ng::to_string(&cfg).unwrap_or_default()
    }

    /// The admin kubeconfig, namespace `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(self.token(), "default")
    }

    /// Writes the admin kubeconfig to a file.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        write_atomically(path, &self.kubeconfig_yaml())
    }

    /// A `kube::Config` for the admin user (namespace `default`).
    pub fn kube_config(&self) -> kube::Config {
        let uri = self.url.parse().unwrap_or_default();
        let mut c = kube::Config::new(uri);
        c.default_namespace = "default".into();
        c.auth_info.token = Some(self.token().to_string().into());
        if let Some(pem) = &self.ca_pem {
            c.root_cert = Some(pem_to_der(pem));
        }
        c
    }

    /// The public key (PEM) that signs the service-account tokens of TokenRequest.
    pub fn service_account_public_key_pem(&self) -> String {
        self.shared.tokens.public_key_pem()
    }

    /// Request counts so far.
    pub fn counts(&self) -> RequestCounts {
        self.shared.counts().clone()
    }

    /// The write log so far (empty unless `Options::record_writes`).
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.shared.writes()
    }

    /// Resets the request counts (e.g. after test setup).
    pub fn reset_counts(&self) {
        *self.shared.counts() = RequestCounts::default();
    }

    /// Changes faults at run time.
    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.faults_mut());
    }

    /// The next `n` update/patch requests fail with 409 Conflict.
    pub fn force_conflicts(&self, n: u64) {
        self.shared.faults_mut().forced_conflicts = n;
    }

    /// Forgets the event history: watches from any earlier resourceVersion get 410 Expired.
    pub fn compact(&self) {
        self.shared.lock_store().compact();
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock_store().rv()
    }

    /// Open watch streams.
    pub fn watch_count(&self) -> usize {
        self.shared.lock_store().watcher_count()
    }

    /// An object as stored (group "" for core), bypassing HTTP and counters.
    pub fn get(&self, group: &str, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = resources::find(group, "v1", resource, true)?;
        self.shared
            .lock_store()
            .get(rt.key(), namespace, name)
            .cloned()
    }

    /// Stored objects of a resource, in one namespace or all, bypassing HTTP and counters.
    pub fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(rt) = resources::find(group, "v1", resource, true) else {
            return Vec::new();
        };
        self.shared
            .lock_store()
            .list(rt.key(), namespace)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Every image pull the kubelet attempted, in order (empty without a kubelet).
    pub fn pull_attempts(&self) -> Vec<PullAttempt> {
        self.kubelet
            .as_ref()
            .map(|k| k.attempts())
            .unwrap_or_default()
    }

    /// Every run of a credential provider plugin by the kubelet, in order (empty without a
    /// kubelet or providers): provider, image, the cache key its response made, never a
    /// credential.
    pub fn provider_calls(&self) -> Vec<ProviderCall> {
        self.kubelet
            .as_ref()
            .map(|k| k.provider_calls())
            .unwrap_or_default()
    }

    /// Every credential provider the kubelet did not run for a pod in token mode (no account,
    /// a required annotation missing, no token), with the kubelet's log text.
    pub fn provider_skips(&self) -> Vec<ProviderSkip> {
        self.kubelet
            .as_ref()
            .map(|k| k.provider_skips())
            .unwrap_or_default()
    }

    /// Full references of the images on the kubelet's node.
    pub fn node_images(&self) -> Vec<String> {
        self.kubelet
            .as_ref()
            .map(|k| k.images())
            .unwrap_or_default()
    }

    /// Number of stored objects of a resource.
    pub fn count_objects(&self, group: &str, resource: &str) -> usize {
        resources::find(group, "v1", resource, true)
            .map_or(0, |rt| self.shared.lock_store().count(rt.key()))
    }

    /// A reader of the store that outlives borrows of the handle (for a checker thread that
    /// sweeps the state while a test runs). Reads bypass HTTP and counters.
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Holds the next `verb` request on `resource` (for object `name`, if given) at the server
    /// until [`Pause::release`]: a test kills a client mid-step with it.
    pub fn pause(&self, verb: &str, resource: &str, name: Option<&str>) -> Arc<Pause> {
        self.shared.pauses.arm(verb, resource, None, name)
    }

    /// [`Handle::pause`] for requests in one namespace only.
    pub fn pause_in(
        &self,
        verb: &str,
        resource: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Arc<Pause> {
        self.shared
            .pauses
            .arm(verb, resource, Some(namespace), name)
    }

    /// Applies a JSON merge patch (RFC 7386) to a stored object directly (seeding test state):
    /// validated and stored as an update, with a new resourceVersion and a watch event, but
    /// not counted as a request.
    pub fn merge_patch(
        &self,
        group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, String> {
        let rt = resources::find(group, "v1", resource, true)
            .ok_or_else(|| format!("unknown resource {resource}"))?;
        let mut st = self.shared.lock_store();
        let old = st
            .get(rt.key(), namespace, name)
            .cloned()
            .ok_or_else(|| format!("{resource} {namespace}/{name} not found"))?;
        let mut updated = old.clone();
        json_patch::merge(&mut updated, patch);
        api::write_update(&mut st, rt, &old, updated, "kube-sim-seed", false).map_err(|e| e.message)
    }

    /// Creates an object directly (seeding test state), with the server's full create semantics.
    pub fn create(&self, group: &str, resource: &str, obj: Value) -> Result<Value, String> {
        let rt = resources::find(group, "v1", resource, true)
            .ok_or_else(|| format!("unknown resource {resource}"))?;
        let mut st = self.shared.lock_store();
        api::create_locked(&self.shared, &mut st, rt, obj, "kube-sim-seed", false)
            .map_err(|e| e.message)
    }
}

/// Read-only access to a running server's objects, shareable across threads.
#[derive(Clone)]
pub struct StoreReader {
    shared: Arc<Shared>,
}

impl StoreReader {
    /// Every stored object of a resource (in `namespace`, or all), as stored.
    pub fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(rt) = resources::find(group, "v1", resource, true) else {
            return Vec::new();
        };
        self.shared
            .lock_store()
            .list(rt.key(), namespace)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Every stored object of each `(group, resource)`, all read under one lock: one
    /// consistent moment of the store, as a sweeper needs when it compares one resource with
    /// another (a Secret created and then linked between two separate lists would look like a
    /// link to a missing Secret).
    pub fn list_at_once(&self, kinds: &[(&str, &str)]) -> Vec<Vec<Value>> {
        let store = self.shared.lock_store();
        kinds
            .iter()
            .map(
                |(group, resource)| match resources::find(group, "v1", resource, true) {
                    Some(rt) => store.list(rt.key(), None).into_iter().cloned().collect(),
                    None => Vec::new(),
                },
            )
            .collect()
    }

    /// One object as stored.
    pub fn get(&self, group: &str, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = resources::find(group, "v1", resource, true)?;
        self.shared
            .lock_store()
            .get(rt.key(), namespace, name)
            .cloned()
    }
}

/// Readers that wait for the file (scripts, tests) never see it half-written.
fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

fn pem_to_der(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inside = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") {
            inside = true;
            cur.clear();
        } else if line.starts_with("-----END") {
            inside = false;
            if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(cur.as_bytes()) {
                out.push(der);
            }
        } else if inside {
            cur.push_str(line.trim());
        }
    }
    out
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shut_down();
        for t in &self.tasks {
            t.abort();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

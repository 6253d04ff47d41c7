//! An opt-in kubelet for one node (`Options::kubelet`): it binds every unscheduled pod to its
//! node, then for each pod runs a pod worker that does what the kubelet's `SyncPod` does for
//! images (kubernetes/kubernetes `pkg/kubelet/kubelet_pods.go` `getPullSecretsForPod`,
//! `pkg/kubelet/images/image_manager.go` `EnsureImageExists`/`pullImage`,
//! `pkg/kubelet/kuberuntime/kuberuntime_image.go` `PullImage`,
//! `pkg/kubelet/kuberuntime/kuberuntime_container.go` `startContainer`):
//!
//! - at each sync it reads the Secrets the pod names (a missing one is skipped with a
//!   `FailedToRetrieveImagePullSecret` warning), builds the keyring (`keyring`), and for each
//!   container applies `imagePullPolicy` against the node's image cache (IfNotPresent/Never)
//!   or pulls, trying every matching credential in order (anonymous if none) through the
//!   simulated runtime (`runtime`), serially as with `serializeImagePulls: true`;
//! - a failed pull is `ErrImagePull` and starts the per-(pod, image) backoff (initial doubling to
//!   the max, reset after 2×max without failure); a sync inside the backoff is
//!   `ImagePullBackOff` with the previous error appended; Events `Pulling`, `Pulled`, `Failed`
//!   (`Failed to pull image …` and `Error: <reason>`), `BackOff`, `Created`, `Started`;
//! - a pulled container "runs" at once (no process): `running.startedAt`, `imageID`, `ready`,
//!   phase `Running`, `Ready`/`ContainersReady` conditions;
//! - a pod being deleted gets `Killing` events and is deleted with grace period 0.
//!
//! A pod's spec (and so its `imagePullSecrets`) is what it was created with; only the named
//! Secrets are re-read at each attempt. The worker is woken by spec changes and deletion, not by
//! its own status writes, and otherwise re-syncs on the schedule documented on
//! [`KubeletOptions`]. Every pull attempt is recorded ([`PullAttempt`], never a password).

pub mod credential_provider;
mod keyring;
pub mod provider_config;
mod runtime;
mod token_manager;

use crate::image_ref::{self, ImageRef};
use crate::recorder::{self, Note, Source};
use crate::resources::{self, ResourceType};
use crate::server::Shared;
use crate::store::{EventType, Store, WatchMsg};
use crate::util::{self, meta_str};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the simulated kubelet behaves. Defaults are upstream's.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// The node's name (`spec.nodeName` of the pods it runs, `source.host` of its events).
    pub node_name: String,
    /// First image pull backoff (kubelet `backOffPeriod`, 10 s).
    pub image_backoff_initial: Duration,
    /// Backoff cap (kubelet `MaxImageBackOff`, 300 s).
    pub image_backoff_max: Duration,
    /// Delay from a failed pull to the next sync, the one that reports `ImagePullBackOff` (on a
    /// node, the runtime's lifecycle events trigger it within about a second).
    pub sync_after_failure: Duration,
    /// Re-sync period of a pod whose containers cannot start (pod workers requeue failed syncs
    /// after `backOffPeriod`, 10 s, upstream with up to 50 % jitter; none here).
    pub resync_interval: Duration,
    /// `--image-credential-provider-config`: a CredentialProviderConfig file, or a directory of
    /// them (None, with no bin dir either: no exec providers, as on a kubelet without the flags).
    pub image_credential_provider_config: Option<PathBuf>,
    /// `--image-credential-provider-bin-dir`: where each provider's executable `<name>` lives.
    pub image_credential_provider_bin_dir: Option<PathBuf>,
    /// How long a provider may run before it is killed (upstream: a fixed minute).
    pub credential_provider_timeout: Duration,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        Self {
            node_name: "kube-sim-node".into(),
            image_backoff_initial: Duration::from_secs(10),
            image_backoff_max: Duration::from_secs(300),
            sync_after_failure: Duration::from_secs(1),
            resync_interval: Duration::from_secs(10),
            image_credential_provider_config: None,
            image_credential_provider_bin_dir: None,
            credential_provider_timeout: Duration::from_secs(60),
        }
    }
}

/// One try of the runtime to pull an image with one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullAttempt {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container whose image was pulled.
    pub container: String,
    /// The image as the container names it.
    pub image: String,
    /// The credential's username; None for an anonymous pull.
    pub username: Option<String>,
    /// The Secret that credential came from.
    pub secret: Option<String>,
    /// The credential provider that credential came from.
    pub provider: Option<String>,
    /// The manifest digest reference (`name@sha256:…`), or the runtime's error.
    pub result: Result<String, String>,
}

/// `flowcontrol.Backoff` entry (no jitter).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    /// The current delay before the next pull may be tried.
    backoff: Duration,
    /// The last failure.
    last_update: Instant,
}

/// The node's state shared by its pod workers.
pub struct Kubelet {
    /// Node name and timings.
    opts: KubeletOptions,
    /// The simulated container runtime that pulls images.
    runtime: runtime::Runtime,
    /// Every pull attempt, in order (for tests).
    attempts: Mutex<Vec<PullAttempt>>,
    /// Images present on the node, by full reference.
    images: Mutex<BTreeMap<String, runtime::Pulled>>,
    /// Image pull backoff per `<pod uid>_<image>`.
    backoff: Mutex<HashMap<String, Backoff>>,
    /// The last pull error per backoff key, appended to `ImagePullBackOff` messages.
    prev_err: Mutex<HashMap<String, String>>,
    /// Pulls are serial (`serializeImagePulls: true`, the default).
    pull_lock: tokio::sync::Mutex<()>,
    /// Last pod IP handed out.
    last_ip: Mutex<u32>,
    /// The registered credential provider plugins (None without the provider flags).
    providers: Option<credential_provider::Providers>,
    /// Service-account tokens asked for the providers, reused until they need a refresh.
    tokens: token_manager::TokenManager,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Kubelet {
    pub fn new(opts: KubeletOptions) -> Result<Self, String> {
        let providers = register_providers(&opts)?;
        Ok(Self {
            providers,
            tokens: token_manager::TokenManager::default(),
            opts,
            runtime: runtime::Runtime::new()?,
            attempts: Mutex::new(Vec::new()),
            images: Mutex::new(BTreeMap::new()),
            backoff: Mutex::new(HashMap::new()),
            prev_err: Mutex::new(HashMap::new()),
            pull_lock: tokio::sync::Mutex::new(()),
            last_ip: Mutex::new(1),
        })
    }

    /// Every pull attempt so far.
    pub fn attempts(&self) -> Vec<PullAttempt> {
        lock(&self.attempts).clone()
    }

    /// Full references of the images on the node.
    pub fn images(&self) -> Vec<String> {
        lock(&self.images).keys().cloned().collect()
    }

    /// Every credential provider skipped for a pod in token mode so far.
    pub fn provider_skips(&self) -> Vec<credential_provider::ProviderSkip> {
        self.providers
            .as_ref()
            .map(credential_provider::Providers::skips)
            .unwrap_or_default()
    }

    /// Every run of a credential provider so far.
    pub fn provider_calls(&self) -> Vec<credential_provider::ProviderCall> {
        self.providers
            .as_ref()
            .map(credential_provider::Providers::calls)
            .unwrap_or_default()
    }

    fn expired(&self, e: &Backoff, now: Instant) -> bool {
        now.duration_since(e.last_update) > self.opts.image_backoff_max * 2
    }

    /// `Backoff.Next`.
    fn backoff_next(&self, key: &str) {
        let now = Instant::now();
        let mut b = lock(&self.backoff);
        let backoff = match b.get(key) {
            Some(e) if !self.expired(e, now) => (e.backoff * 2).min(self.opts.image_backoff_max),
            _ => self.opts.image_backoff_initial,
        };
        b.insert(
            key.to_string(),
            Backoff {
                backoff,
                last_update: now,
            },
        );
    }

    /// Time left in the backoff (`IsInBackOffSinceUpdate` is `Some`).
    fn backoff_left(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let b = lock(&self.backoff);
        let e = b.get(key)?;
        if self.expired(e, now) {
            return None;
        }
        let since = now.duration_since(e.last_update);
        (since < e.backoff).then(|| e.backoff - since)
    }

    fn next_ip(&self) -> String {
        let mut n = lock(&self.last_ip);
        *n += 1;
        format!("10.88.{}.{}", (*n / 254) % 256, *n % 254 + 1)
    }

    fn source(&self) -> Source {
        Source {
            component: "kubelet".into(),
            host: self.opts.node_name.clone(),
        }
    }
}

/// `RegisterCredentialProviderPlugins`, run when either flag is given (as the kubelet does);
/// its error stops the kubelet from starting.
fn register_providers(
    opts: &KubeletOptions,
) -> Result<Option<credential_provider::Providers>, String> {
    let (config, bin_dir) = match (
        &opts.image_credential_provider_config,
        &opts.image_credential_provider_bin_dir,
    ) {
        (None, None) => return Ok(None),
        (c, b) => (c.clone().unwrap_or_default(), b.clone().unwrap_or_default()),
    };
    let configs = provider_config::register(&config, &bin_dir)?;
    Ok(Some(credential_provider::Providers::new(
        configs,
        bin_dir,
        opts.credential_provider_timeout,
    )))
}

fn pods_rt() -> Option<&'static ResourceType> {
    resources::find("", "v1", "pods", false)
}

fn secrets_rt() -> Option<&'static ResourceType> {
    resources::find("", "v1", "secrets", false)
}

/// Starts the kubelet on the current runtime.
pub fn spawn(shared: &Arc<Shared>, kubelet: Arc<Kubelet>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(shared);
    let (rx, existing) = {
        let mut st = shared.lock_store();
        let since = st.rv();
        let rx = pods_rt().and_then(|r| st.watch(r.key(), None, since, false).ok());
        let existing: Vec<Value> = pods_rt()
            .map(|r| st.list(r.key(), None).into_iter().cloned().collect())
            .unwrap_or_default();
        (rx, existing)
    };
    let shutdown = shared.shutdown_rx();
    tokio::spawn(async move {
        let Some(rx) = rx else { return };
        let mut workers = Workers::default();
        for pod in &existing {
            workers.ensure(&weak, &kubelet, pod);
        }
        watch_pods(weak, kubelet, rx, shutdown, workers).await;
    })
}

/// The running pod workers by pod uid; dropping it stops them.
#[derive(Default)]
struct Workers(HashMap<String, (Arc<Notify>, tokio::task::JoinHandle<()>)>);

impl Workers {
    fn ensure(&mut self, weak: &Weak<Shared>, kubelet: &Arc<Kubelet>, pod: &Value) {
        self.0.retain(|_, (_, h)| !h.is_finished());
        let uid = meta_str(pod, "uid").to_string();
        if self.0.contains_key(&uid) {
            return;
        }
        let notify = Arc::new(Notify::new());
        let worker = PodWorker {
            weak: weak.clone(),
            kubelet: kubelet.clone(),
            ns: meta_str(pod, "namespace").to_string(),
            name: meta_str(pod, "name").to_string(),
            uid: uid.clone(),
            containers: BTreeMap::new(),
            ip: kubelet.next_ip(),
            initialized: false,
        };
        let handle = tokio::spawn(worker.run(notify.clone()));
        self.0.insert(uid, (notify, handle));
    }

    fn notify(&self, uid: &str) {
        if let Some((n, _)) = self.0.get(uid) {
            n.notify_one();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, h) in self.0.values() {
            h.abort();
        }
    }
}

/// What of a pod the kubelet reacts to: its containers' images and its deletion (the kubelet's
/// config source ignores status-only updates; binding is the kubelet's own write).
fn sync_relevant(old: &Value, new: &Value) -> bool {
    let images = |p: &Value| -> Vec<String> {
        p.pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    old.pointer("/metadata/deletionTimestamp") != new.pointer("/metadata/deletionTimestamp")
        || images(old) != images(new)
}

async fn watch_pods(
    weak: Weak<Shared>,
    kubelet: Arc<Kubelet>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<WatchMsg>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut workers: Workers,
) {
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = shutdown.changed() => return,
        };
        let Some(msg) = msg else { return };
        let WatchMsg::Event(ev) = msg else { continue };
        let uid = meta_str(&ev.object, "uid").to_string();
        match ev.kind {
            EventType::Added => workers.ensure(&weak, &kubelet, &ev.object),
            EventType::Modified => {
                if ev
                    .old
                    .as_ref()
                    .is_some_and(|o| sync_relevant(o, &ev.object))
                {
                    workers.notify(&uid);
                }
                workers.ensure(&weak, &kubelet, &ev.object);
            }
            EventType::Deleted => workers.notify(&uid),
        }
    }
}

/// A container as the runtime knows it.
#[derive(Debug, Clone)]
enum Container {
    /// Not started: `waiting.reason` and `waiting.message`.
    Waiting { reason: String, message: String },
    Running {
        /// The spec image it was started from (a different one restarts it).
        spec_image: String,
        /// The fully qualified image the runtime reports.
        image: String,
        /// `name@sha256:…` of the pulled manifest.
        image_id: String,
        /// `cri-o://<64 hex>`.
        container_id: String,
        /// `running.startedAt`.
        started_at: String,
    },
}

/// Why a container could not start (`startContainer`'s error and message).
struct Failure {
    /// `waiting.reason` (the error: `ErrImagePull`, `ImagePullBackOff`, …).
    reason: String,
    message: String,
}

/// What a worker does next.
enum Next {
    Exit,
    Idle,
    After(Duration),
}

/// The pod's spec and secrets, read under the lock at the start of a sync.
struct Snapshot {
    /// The pod as stored when the sync began.
    pod: Value,
    /// The Secrets it names that exist, in its order.
    secrets: Vec<Value>,
}

struct PodWorker {
    /// The server; the worker ends when it is gone.
    weak: Weak<Shared>,
    /// The node's shared state.
    kubelet: Arc<Kubelet>,
    /// The pod's namespace, name and uid (a new pod of the same name has its own worker).
    ns: String,
    name: String,
    uid: String,
    /// Container states by name, as the runtime knows them.
    containers: BTreeMap<String, Container>,
    /// The pod's IP.
    ip: String,
    /// The first status (ContainerCreating) was written.
    initialized: bool,
}

fn container_ref(name: &str) -> String {
    format!("spec.containers{{{name}}}")
}

impl PodWorker {
    async fn run(mut self, notify: Arc<Notify>) {
        loop {
            match self.sync().await {
                Next::Exit => return,
                Next::Idle => notify.notified().await,
                Next::After(d) => {
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = notify.notified() => {}
                    }
                }
            }
        }
    }

    /// Runs `f` with the store locked; None once the server is gone.
    fn with_store<T>(&self, f: impl FnOnce(&Shared, &mut Store) -> T) -> Option<T> {
        with_store(&self.weak, f)
    }

    fn event(&self, pod: &Value, kind: &str, reason: &str, message: &str, container: Option<&str>) {
        let field_path = container.map(container_ref);
        let source = self.kubelet.source();
        self.with_store(|shared, st| {
            recorder::record(
                shared,
                st,
                &source,
                pod,
                Note {
                    kind,
                    reason,
                    message,
                    field_path: field_path.as_deref(),
                },
            );
        });
    }

    async fn sync(&mut self) -> Next {
        let weak = self.weak.clone();
        let Some(Some(snap)) = with_store(&weak, |shared, st| self.prepare(shared, st)) else {
            return Next::Exit;
        };
        let containers: Vec<Value> = snap
            .pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut failed_pulls = false;
        for c in &containers {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let spec_image = c
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(Container::Running {
                spec_image: running,
                ..
            }) = self.containers.get(&name)
            {
                if *running == spec_image {
                    continue;
                }
                let msg = format!("Container {name} definition changed, will be restarted");
                self.event(&snap.pod, "Normal", "Killing", &msg, Some(&name));
            }
            let state = match self.ensure_image(&snap, c, &name, &spec_image).await {
                Ok(pulled) => self.start(&snap.pod, &name, &spec_image, &pulled),
                Err(f) => {
                    let msg = format!("Error: {}", f.reason);
                    self.event(&snap.pod, "Warning", "Failed", &msg, Some(&name));
                    failed_pulls |= f.reason == "ErrImagePull";
                    Container::Waiting {
                        reason: f.reason,
                        message: f.message,
                    }
                }
            };
            self.containers.insert(name, state);
        }
        let written = self.with_store(|_, st| self.write_status(st, &containers));
        if written != Some(true) {
            return Next::Exit;
        }
        self.schedule(&snap.pod, &containers, failed_pulls)
    }

    /// When to sync again: soon after a failed pull, else at the end of the backoff or the
    /// re-sync period, whichever is first; never while every container runs.
    fn schedule(&self, pod: &Value, containers: &[Value], failed_pulls: bool) -> Next {
        let opts = &self.kubelet.opts;
        let mut next: Option<Duration> = None;
        for c in containers {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            let Some(Container::Waiting { reason, .. }) = self.containers.get(name) else {
                continue;
            };
            let image = c.get("image").and_then(Value::as_str).unwrap_or("");
            let key = format!("{}_{image}", meta_str(pod, "uid"));
            let d = match reason.as_str() {
                _ if failed_pulls => opts.sync_after_failure,
                "ImagePullBackOff" => self
                    .kubelet
                    .backoff_left(&key)
                    .map_or(opts.resync_interval, |left| left.min(opts.resync_interval)),
                _ => opts.resync_interval,
            };
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        next.map_or(Next::Idle, Next::After)
    }

    /// Under the lock: the pod (None if gone), deletion, binding, the first status, the Secrets.
    fn prepare(&mut self, shared: &Shared, st: &mut Store) -> Option<Snapshot> {
        let pods = pods_rt()?;
        let pod = st.get(pods.key(), &self.ns, &self.name)?.clone();
        if meta_str(&pod, "uid") != self.uid {
            return None;
        }
        let node = self.kubelet.opts.node_name.clone();
        let bound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !bound.is_empty() && bound != node {
            return None;
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            self.kill(shared, st, &pod);
            return None;
        }
        let pod = if bound.is_empty() {
            bind(shared, st, &pod, &node)?
        } else {
            pod
        };
        let pod = if self.initialized {
            pod
        } else {
            self.initialized = true;
            let mut next = pod.clone();
            next["status"] = self.status(&pod, &[]);
            crate::api::write_update(st, pods, &pod, next, "kubelet", false).ok()?
        };
        let secrets = self.pull_secrets(shared, st, &pod);
        Some(Snapshot { pod, secrets })
    }

    /// `getPullSecretsForPod`: the named Secrets that exist, a warning for the others.
    fn pull_secrets(&self, shared: &Shared, st: &mut Store, pod: &Value) -> Vec<Value> {
        let Some(secrets) = secrets_rt() else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for r in pod
            .pointer("/spec/imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                continue;
            }
            match st.get(secrets.key(), &self.ns, name) {
                Some(s) => found.push(s.clone()),
                None => missing.push(name.to_string()),
            }
        }
        if !missing.is_empty() {
            let msg = format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                missing.join(", ")
            );
            recorder::record(
                shared,
                st,
                &self.kubelet.source(),
                pod,
                Note {
                    kind: "Warning",
                    reason: "FailedToRetrieveImagePullSecret",
                    message: &msg,
                    field_path: None,
                },
            );
        }
        found
    }

    /// A pod being deleted: its containers stop, then the kubelet deletes it for good.
    fn kill(&self, shared: &Shared, st: &mut Store, pod: &Value) {
        self.kubelet.tokens.delete_pod(&self.uid);
        for (name, c) in &self.containers {
            if matches!(c, Container::Running { .. }) {
                let msg = format!("Stopping container {name}");
                recorder::record(
                    shared,
                    st,
                    &self.kubelet.source(),
                    pod,
                    Note {
                        kind: "Normal",
                        reason: "Killing",
                        message: &msg,
                        field_path: Some(&container_ref(name)),
                    },
                );
            }
        }
        if let Some(pods) = pods_rt() {
            let _ = crate::api::delete_locked(shared, st, pods, &self.ns, &self.name, false);
        }
    }

    /// `EnsureImageExists` for one container.
    async fn ensure_image(
        &self,
        snap: &Snapshot,
        c: &Value,
        name: &str,
        requested: &str,
    ) -> Result<runtime::Pulled, Failure> {
        let pod = &snap.pod;
        let policy = c
            .get("imagePullPolicy")
            .and_then(Value::as_str)
            .unwrap_or("IfNotPresent");
        let image = match image_ref::parse(requested) {
            Ok(i) => i,
            Err(e) => {
                let msg = format!(
                    "Failed to apply default image tag {requested:?}: couldn't parse image name {requested:?}: {e}"
                );
                self.event(pod, "Warning", "InspectFailed", &msg, Some(name));
                return Err(Failure {
                    reason: "InvalidImageName".into(),
                    message: msg,
                });
            }
        };
        let present = lock(&self.kubelet.images).get(&image.full()).cloned();
        if policy != "Always"
            && let Some(p) = present
        {
            let msg = format!("Container image {requested:?} already present on machine");
            self.event(pod, "Normal", "Pulled", &msg, Some(name));
            return Ok(p);
        }
        if policy == "Never" {
            let msg =
                format!("Container image {requested:?} is not present with pull policy of Never");
            self.event(pod, "Warning", "ErrImageNeverPull", &msg, Some(name));
            return Err(Failure {
                reason: "ErrImageNeverPull".into(),
                message: msg,
            });
        }
        let creds = self.credentials(snap, &image).await?;
        let key = format!("{}_{requested}", meta_str(pod, "uid"));
        if self.kubelet.backoff_left(&key).is_some() {
            let mut msg = format!("Back-off pulling image {requested:?}");
            self.event(pod, "Normal", "BackOff", &msg, Some(name));
            if let Some(prev) = lock(&self.kubelet.prev_err).get(&key) {
                msg = format!("{msg}: {prev}");
            }
            return Err(Failure {
                reason: "ImagePullBackOff".into(),
                message: msg,
            });
        }
        lock(&self.kubelet.prev_err).remove(&key);
        self.event(
            pod,
            "Normal",
            "Pulling",
            &format!("Pulling image {requested:?}"),
            Some(name),
        );
        let started = std::time::Instant::now();
        match self.pull(&image, creds, name, requested).await {
            Ok((pulled, pulling)) => {
                let msg = format!(
                    "Successfully pulled image {requested:?} in {} ({} including waiting). Image size: {} bytes.",
                    go_duration(pulling),
                    go_duration(started.elapsed()),
                    pulled.size
                );
                self.event(pod, "Normal", "Pulled", &msg, Some(name));
                lock(&self.kubelet.images).insert(image.full(), pulled.clone());
                Ok(pulled)
            }
            Err(err) => {
                let msg = format!("Failed to pull image {requested:?}: {err}");
                self.event(pod, "Warning", "Failed", &msg, Some(name));
                self.kubelet.backoff_next(&key);
                lock(&self.kubelet.prev_err).insert(key, format!("ErrImagePull: {err}"));
                Err(Failure {
                    reason: "ErrImagePull".into(),
                    message: err,
                })
            }
        }
    }

    /// `makeLookupPullCredentialsFunc`: `MakeDockerKeyring(pullSecrets, Union{node keyring,
    /// external providers})` looked up for the repository. The pull secrets' credentials come
    /// first, then the providers'. A secret that does not decode fails the pull before any
    /// provider runs.
    async fn credentials(
        &self,
        snap: &Snapshot,
        image: &ImageRef,
    ) -> Result<Vec<keyring::Credential>, Failure> {
        let secrets = keyring::from_secrets(&snap.secrets).map_err(|e| Failure {
            reason: e.clone(),
            message: e,
        })?;
        let repo = image.name();
        let mut creds = secrets.lookup(&repo);
        if let Some(providers) = &self.kubelet.providers {
            let pod = credential_provider::PodContext {
                namespace: self.ns.clone(),
                name: self.name.clone(),
                uid: self.uid.clone(),
                service_account: snap
                    .pod
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            };
            let accounts = ClusterAccounts {
                weak: &self.weak,
                tokens: &self.kubelet.tokens,
            };
            let keyring = providers.keyring(&repo, &pod, &accounts).await;
            creds.extend(keyring.lookup(&repo));
        }
        Ok(creds)
    }

    /// `PullImage`: each matching credential in order until one works (anonymous when none
    /// match); the errors of all attempts are aggregated. On success, also how long the pull
    /// itself took (without waiting for the serial puller).
    async fn pull(
        &self,
        image: &ImageRef,
        creds: Vec<keyring::Credential>,
        container: &str,
        requested: &str,
    ) -> Result<(runtime::Pulled, Duration), String> {
        let _serial = self.kubelet.pull_lock.lock().await;
        let started = std::time::Instant::now();
        let attempts: Vec<Option<keyring::Credential>> = if creds.is_empty() {
            vec![None]
        } else {
            creds.into_iter().map(Some).collect()
        };
        let mut errors: Vec<String> = Vec::new();
        for cred in attempts {
            let result = self.kubelet.runtime.pull(image, cred.as_ref()).await;
            lock(&self.kubelet.attempts).push(PullAttempt {
                namespace: self.ns.clone(),
                pod: self.name.clone(),
                container: container.to_string(),
                image: requested.to_string(),
                username: cred.as_ref().map(|c| c.username.clone()),
                secret: cred.as_ref().and_then(|c| match &c.source {
                    keyring::Source::Secret(s) => Some(s.clone()),
                    keyring::Source::Provider(_) => None,
                }),
                provider: cred.as_ref().and_then(|c| match &c.source {
                    keyring::Source::Provider(p) => Some(p.clone()),
                    keyring::Source::Secret(_) => None,
                }),
                result: result
                    .as_ref()
                    .map(|p| p.repo_digest.clone())
                    .map_err(Clone::clone),
            });
            match result {
                Ok(p) => return Ok((p, started.elapsed())),
                Err(e) => errors.push(e),
            }
        }
        Err(aggregate(errors))
    }

    /// The container is created and started (there is no process to run).
    fn start(
        &self,
        pod: &Value,
        name: &str,
        spec_image: &str,
        pulled: &runtime::Pulled,
    ) -> Container {
        self.event(
            pod,
            "Normal",
            "Created",
            &format!("Created container: {name}"),
            Some(name),
        );
        self.event(
            pod,
            "Normal",
            "Started",
            &format!("Started container {name}"),
            Some(name),
        );
        let image =
            image_ref::parse(spec_image).map_or_else(|_| spec_image.to_string(), |r| r.full());
        let id = format!("{}{}", util::new_uid(), util::new_uid()).replace('-', "");
        Container::Running {
            spec_image: spec_image.to_string(),
            image,
            image_id: pulled.repo_digest.clone(),
            container_id: format!("cri-o://{}", &id[..64.min(id.len())]),
            started_at: util::now_rfc3339(),
        }
    }

    /// Writes the status for the current container states. False if the pod is gone.
    fn write_status(&self, st: &mut Store, containers: &[Value]) -> bool {
        let Some(pods) = pods_rt() else { return false };
        let Some(pod) = st.get(pods.key(), &self.ns, &self.name).cloned() else {
            return false;
        };
        if meta_str(&pod, "uid") != self.uid {
            return false;
        }
        let status = self.status(&pod, containers);
        if pod.get("status") != Some(&status) {
            let mut next = pod.clone();
            next["status"] = status;
            let _ = crate::api::write_update(st, pods, &pod, next, "kubelet", false);
        }
        true
    }

    /// `generateAPIPodStatus` for the containers of the spec.
    fn status(&self, pod: &Value, containers: &[Value]) -> Value {
        let old = pod.get("status").cloned().unwrap_or(json!({}));
        let now = util::now_rfc3339();
        let specs: Vec<Value> = if containers.is_empty() {
            pod.pointer("/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        } else {
            containers.to_vec()
        };
        let mut statuses = Vec::new();
        let mut unready = Vec::new();
        for c in &specs {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            let spec_image = c.get("image").and_then(Value::as_str).unwrap_or("");
            let s = match self.containers.get(name) {
                Some(Container::Running {
                    image,
                    image_id,
                    container_id,
                    started_at,
                    ..
                }) => json!({"name": name, "state": {"running": {"startedAt": started_at}},
                    "lastState": {}, "ready": true, "restartCount": 0, "image": image,
                    "imageID": image_id, "containerID": container_id, "started": true}),
                other => {
                    unready.push(name.to_string());
                    let waiting = match other {
                        Some(Container::Waiting { reason, message }) if !message.is_empty() => {
                            json!({"reason": reason, "message": message})
                        }
                        Some(Container::Waiting { reason, .. }) => json!({"reason": reason}),
                        _ => json!({"reason": "ContainerCreating"}),
                    };
                    json!({"name": name, "state": {"waiting": waiting}, "lastState": {},
                        "ready": false, "restartCount": 0, "image": spec_image, "imageID": "",
                        "started": false})
                }
            };
            statuses.push(s);
        }
        let ready = unready.is_empty() && !specs.is_empty();
        let unready_msg = format!("containers with unready status: [{}]", unready.join(" "));
        let condition = |t: &str, ok: bool, reason_msg: Option<(&str, &str)>| {
            let status = if ok { "True" } else { "False" };
            let prev = old
                .get("conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(t));
            let since = prev
                .filter(|p| p.get("status").and_then(Value::as_str) == Some(status))
                .and_then(|p| p.get("lastTransitionTime").cloned())
                .unwrap_or(json!(now));
            let mut c = json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
            if let (false, Some((reason, msg))) = (ok, reason_msg) {
                c["reason"] = json!(reason);
                c["message"] = json!(msg);
            }
            c
        };
        let not_ready = Some(("ContainersNotReady", unready_msg.as_str()));
        let conditions = json!([
            condition("PodReadyToStartContainers", true, None),
            condition("Initialized", true, None),
            condition("Ready", ready, not_ready),
            condition("ContainersReady", ready, not_ready),
            condition("PodScheduled", true, None),
        ]);
        let start_time = old.get("startTime").cloned().unwrap_or(json!(now));
        json!({
            "phase": if ready { "Running" } else { "Pending" },
            "conditions": conditions,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip, "podIPs": [{"ip": self.ip}],
            "startTime": start_time,
            "qosClass": old.get("qosClass").cloned().unwrap_or(json!("BestEffort")),
            "containerStatuses": statuses,
        })
    }
}

/// The cluster as the credential providers' token mode sees it: the kubelet reads the pod's
/// account (`getServiceAccount`) and asks its token manager for a bound token.
struct ClusterAccounts<'a> {
    /// The server.
    weak: &'a Weak<Shared>,
    /// The kubelet's token manager.
    tokens: &'a token_manager::TokenManager,
}

impl credential_provider::ServiceAccounts for ClusterAccounts<'_> {
    fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(String, BTreeMap<String, String>), String> {
        let rt = resources::find("", "v1", "serviceaccounts", false)
            .ok_or_else(|| "serviceaccounts are not served".to_string())?;
        let sa = with_store(self.weak, |_, st| {
            st.get(rt.key(), namespace, name).cloned()
        })
        .flatten()
        .ok_or_else(|| {
            format!(
                "serviceaccounts {} not found",
                crate::status::go_quote(name)
            )
        })?;
        let annotations = sa
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        Ok((meta_str(&sa, "uid").to_string(), annotations))
    }

    fn token(
        &self,
        pod: &credential_provider::PodContext,
        service_account_uid: &str,
        audience: &str,
    ) -> Result<String, String> {
        let shared = self
            .weak
            .upgrade()
            .ok_or_else(|| "the API server is gone".to_string())?;
        let spec =
            token_manager::provider_token_spec(audience, &pod.name, &pod.uid, service_account_uid);
        self.tokens
            .get(&shared, &pod.namespace, &pod.service_account, &spec)
    }
}

/// Runs `f` with the store locked; None once the server is gone.
fn with_store<T>(weak: &Weak<Shared>, f: impl FnOnce(&Shared, &mut Store) -> T) -> Option<T> {
    let shared = weak.upgrade()?;
    let mut st = shared.lock_store();
    Some(f(&shared, &mut st))
}

/// The scheduler's binding to the only node: `spec.nodeName`, `PodScheduled`, a `Scheduled`
/// event from `default-scheduler`.
fn bind(shared: &Shared, st: &mut Store, pod: &Value, node: &str) -> Option<Value> {
    let pods = pods_rt()?;
    let mut next = pod.clone();
    next["spec"]["nodeName"] = json!(node);
    next["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True",
        "lastProbeTime": null, "lastTransitionTime": util::now_rfc3339()}]);
    let ns = meta_str(pod, "namespace").to_string();
    let name = meta_str(pod, "name").to_string();
    let stored = st.put(pods.key(), &ns, &name, next, EventType::Modified);
    let msg = format!("Successfully assigned {ns}/{name} to {node}");
    let source = Source {
        component: "default-scheduler".into(),
        host: String::new(),
    };
    recorder::record(
        shared,
        st,
        &source,
        &stored,
        Note {
            kind: "Normal",
            reason: "Scheduled",
            message: &msg,
            field_path: None,
        },
    );
    Some(stored)
}

/// `utilerrors.NewAggregate(errs).Error()`: one message as is, several deduplicated in `[…]`.
fn aggregate(errors: Vec<String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Go's `time.Duration.String()` of a duration truncated to milliseconds.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, frac) = (rem / 1000, rem % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    if frac > 0 {
        out.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_millis(0)), "0s");
        assert_eq!(go_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(61_234)), "1m1.234s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn errors_aggregate_like_utilerrors() {
        assert_eq!(aggregate(vec!["a".into()]), "a");
        assert_eq!(aggregate(vec!["a".into(), "a".into()]), "a");
        assert_eq!(aggregate(vec!["a".into(), "b".into()]), "[a, b]");
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let k = Kubelet::new(KubeletOptions {
            image_backoff_initial: Duration::from_secs(10),
            image_backoff_max: Duration::from_secs(25),
            ..KubeletOptions::default()
        })
        .expect("kubelet");
        assert!(k.backoff_left("x").is_none());
        let mut seen = Vec::new();
        for _ in 0..3 {
            k.backoff_next("x");
            seen.push(lock(&k.backoff).get("x").map(|b| b.backoff.as_secs()));
        }
        assert_eq!(seen, [Some(10), Some(20), Some(25)]);
        assert!(
            k.backoff_left("x")
                .is_some_and(|d| d <= Duration::from_secs(25))
        );
    }
}

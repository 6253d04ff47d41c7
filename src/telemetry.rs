//! Telemetry (I/O at the edge): the daemon's Prometheus metrics and its health/readiness/metrics
//! HTTP listener.
//!
//! Metrics are counted by the stages that do the work and only read here. Labels carry results,
//! verbs and registry names — never namespaces (unbounded) and never anything from a credential.
//! Must not decide anything: readiness is a flag the daemon sets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `result` label: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// API writes by verb and result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub verb: &'static str,
    pub result: &'static str,
}

/// Per-registry source metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabel {
    pub registry: String,
}

/// Plan problems by reason (`ForeignSecret`, `ServiceAccountMissing`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// What was done about a stuck pod: `reported`, `restarted`, `bare`, `deferred`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: &'static str,
}

/// Source reads by registry and result (`changed`, `unchanged`, `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    pub registry: String,
    pub result: &'static str,
}

/// `verify:` checks by registry and result (`accepted`, `rejected`, `unreachable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub registry: String,
    pub result: &'static str,
}

/// Another writer's field manager (bounded: see `daemon::writers::MAX_MANAGER_LABELS`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ManagerLabel {
    pub manager: String,
}

/// Every reason a plan or diff reports a problem with (the `reason` label of
/// `pullsecretd_problems`).
pub const PROBLEM_REASONS: &[&str] = &[
    "ForeignSecret",
    "ForeignRoleBinding",
    "OwnedByAnotherInstance",
    "UnprovenOwnership",
    "RecreateSkipped",
    "ServiceAccountMissing",
    "NameConflict",
    "InvalidName",
    "SourceFailed",
    "NotRendered",
    "ProjectNotFound",
    "NotOpenShift",
    "UnreadServiceAccounts",
    "HealForbidden",
    "CredentialRejected",
    "CredentialExpired",
];

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub api_writes: Family<WriteLabels, Counter>,
    pub source_reads: Family<ReadLabels, Counter>,
    pub source_errors: Family<RegistryLabel, Counter>,
    /// `verify:` checks of changed credentials against their registries.
    pub credential_checks: Family<CheckLabels, Counter>,
    /// Repeated repairs of links another writer removed, by that writer's field manager.
    pub write_conflicts: Family<ManagerLabel, Counter>,
    /// Seconds since each registry's last good read; set by the daemon before each scrape.
    pub credential_age: Family<RegistryLabel, Gauge<f64, AtomicU64>>,
    /// Each registry's configured refresh interval (alerts compare the age with it).
    pub credential_refresh: Family<RegistryLabel, Gauge<f64, AtomicU64>>,
    /// Seconds until each registry's credential expires; +Inf when no expiry is known.
    pub credential_expiry: Family<RegistryLabel, Gauge<f64, AtomicU64>>,
    /// Current plan problems, by reason, over every namespace.
    pub problems: Family<ReasonLabel, Gauge>,
    /// Secrets held as they are (their source failed, or they could not be rendered).
    pub held_secrets: Gauge,
    /// Replaced Secrets kept past their time because pods still name them.
    pub versions_in_use: Gauge,
    /// Pods found stuck pulling without a Secret pullsecretd linked, by what was done
    /// (`reported`, `restarted`, `bare`, `deferred`).
    pub stuck_pods: Family<ActionLabel, Counter>,
    pub rotations: Counter,
    pub last_sync: Gauge<f64, AtomicU64>,
    pub reconcile_duration: Histogram,
    pub leader: Gauge,
    pub shards_led: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pullsecretd");
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Namespace reconciles by result",
            reconciles.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Kubernetes API writes by verb and result",
            api_writes.clone(),
        );
        let source_reads = Family::<ReadLabels, Counter>::default();
        registry.register(
            "source_reads",
            "Credential source reads by registry and result",
            source_reads.clone(),
        );
        let source_errors = Family::<RegistryLabel, Counter>::default();
        registry.register(
            "source_errors",
            "Credential source read errors by registry",
            source_errors.clone(),
        );
        let credential_checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "credential_checks",
            "Checks of changed credentials against their registry (verify:), by result",
            credential_checks.clone(),
        );
        let write_conflicts = Family::<ManagerLabel, Counter>::default();
        registry.register(
            "write_conflicts",
            "Links re-added again after another writer removed them, by that writer's field manager",
            write_conflicts.clone(),
        );
        let credential_age = Family::<RegistryLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "credential_age_seconds",
            "Seconds since the registry's credential was last read successfully",
            credential_age.clone(),
        );
        let credential_refresh = Family::<RegistryLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "credential_refresh_seconds",
            "The configured refresh interval of the registry's credential",
            credential_refresh.clone(),
        );
        let credential_expiry = Family::<RegistryLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "credential_expiry_seconds",
            "Seconds until the registry's credential expires (+Inf when no expiry is known)",
            credential_expiry.clone(),
        );
        let problems = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "problems",
            "Current plan problems over every namespace, by reason",
            problems.clone(),
        );
        let held_secrets = Gauge::default();
        registry.register(
            "held_secrets",
            "Secrets kept as they are because their source failed or they could not be rendered",
            held_secrets.clone(),
        );
        let versions_in_use = Gauge::default();
        registry.register(
            "versions_in_use",
            "Replaced Secrets not deleted because a pod still names them in imagePullSecrets",
            versions_in_use.clone(),
        );
        let stuck_pods = Family::<ActionLabel, Counter>::default();
        registry.register(
            "stuck_pods",
            "Pods found stuck pulling without a Secret pullsecretd linked, by action taken",
            stuck_pods.clone(),
        );
        let rotations = Counter::default();
        registry.register(
            "rotations",
            "Pull secrets rewritten or re-versioned for new credentials",
            rotations.clone(),
        );
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_successful_sync_timestamp_seconds",
            "Unix time of the last reconcile that converged",
            last_sync.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time taken by one namespace reconcile",
            reconcile_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds a Lease (a shard's, with shards) and may write",
            leader.clone(),
        );
        let shards_led = Gauge::default();
        registry.register(
            "shards_led",
            "Shards whose Lease this replica holds (1 without shards while leading)",
            shards_led.clone(),
        );
        Self {
            registry,
            reconciles,
            api_writes,
            source_reads,
            source_errors,
            credential_checks,
            write_conflicts,
            credential_age,
            credential_refresh,
            credential_expiry,
            problems,
            held_secrets,
            versions_in_use,
            stuck_pods,
            rotations,
            last_sync,
            reconcile_duration,
            leader,
            shards_led,
        }
    }

    /// Creates every series whose labels are known up front at zero, so each family is served
    /// from the start and `increase()` counts its first event: per registry, and per result,
    /// verb and problem reason.
    pub fn zero_series<'a>(&self, registries: impl IntoIterator<Item = &'a str>) {
        for registry in registries {
            let label = RegistryLabel {
                registry: registry.to_string(),
            };
            self.source_errors.get_or_create(&label).inc_by(0);
            for result in ["changed", "unchanged", "error"] {
                let labels = ReadLabels {
                    registry: registry.to_string(),
                    result,
                };
                self.source_reads.get_or_create(&labels).inc_by(0);
            }
        }
        for result in ["ok", "error"] {
            self.reconciles
                .get_or_create(&ResultLabel { result })
                .inc_by(0);
            for verb in ["create", "update", "delete"] {
                self.api_writes
                    .get_or_create(&WriteLabels { verb, result })
                    .inc_by(0);
            }
        }
        for reason in PROBLEM_REASONS {
            self.problems
                .get_or_create(&ReasonLabel { reason })
                .inc_by(0);
        }
        for action in ["reported", "restarted", "bare", "deferred"] {
            self.stuck_pods
                .get_or_create(&ActionLabel { action })
                .inc_by(0);
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// What the HTTP listener reports.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once caches synced and every source delivered once.
    pub ready: AtomicBool,
    /// Called before each scrape to refresh gauges computed from time (credential age).
    pub before_scrape: Box<dyn Fn(&Metrics) + Send + Sync>,
    /// Once ready: why this replica cannot do its job now (`None`: it can) — e.g. a standby
    /// that cannot reach its Lease could never take over.
    pub unfit: Box<dyn Fn() -> Option<String> + Send + Sync>,
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("listening on {address}: {source}")]
pub struct ListenError {
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `address` and serves until `shutdown` resolves. Returns the bound address (useful
/// with port 0) and the server task.
pub async fn serve(
    address: SocketAddr,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ListenError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ListenError { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError { address, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
        if let Err(error) = server.await {
            tracing::error!(%error, "The HTTP listener stopped.");
        }
    });
    Ok((bound, task))
}

/// 200 when this replica can do its job: caches synced, every source delivered once, and it
/// leads or is a standby that reaches its Lease. Otherwise 503 and the reason, one line.
async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if !health.ready.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the caches are syncing or a source has not delivered yet\n".to_string(),
        );
    }
    match (health.unfit)() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    (health.before_scrape)(&health.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

/// Seconds as f64 for gauges.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// How the daemon writes logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, with the span fields (e.g. `namespace`).
    Json,
}

/// Installs the global tracing subscriber on stderr. `RUST_LOG` overrides `default_filter`.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only for a person at a terminal, never into a file or a log collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A subscriber set already (tests) is kept.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

//! Cluster stage (I/O): read what the cluster holds, and carry out the actions `diff` chose.
//!
//! The only module that talks to the Kubernetes API. It never decides *what* should exist —
//! that is `plan` and `diff` — only how to read and write it safely: lists instead of per-object
//! reads, a client-side rate limit, retries with jittered backoff for errors worth retrying,
//! read-modify-write with `resourceVersion` for service-account lists, and errors that name the
//! verb, resource and object but never a Secret's data.

pub mod apply;
pub mod cache;
pub mod events;
pub mod lease;
pub mod namespaces;
pub mod pod_lists;
pub mod pods;
pub mod slim;
pub mod snapshot;
pub mod view;

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub use apply::{ApplyOptions, Change, ProjectOutcome, Verb, apply_project, apply_project_from};
pub use snapshot::{ClusterSnapshot, read_events, read_snapshot};
pub use view::ClusterView;

/// A Kubernetes client whose only retries are [`Throttle`]'s. kube's built-in retry layer
/// (on by default since kube 3: up to 15 retries of 429/503/504 with delays growing to 1000 s)
/// is turned off: it would bypass the client-side rate limit, stack under `--retries`, and keep a
/// call against a failing API server going for minutes.
pub fn client(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    kube::Client::try_from(config)
}

/// Waits until the API server at `url` answers (`GET /version`), at most `limit`: a daemon
/// that cannot reach its cluster says so and stops instead of retrying forever. A server that
/// answers but refuses the credentials is an error at once.
pub async fn wait_until_reachable(
    client: &kube::Client,
    url: &str,
    limit: Duration,
) -> Result<(), ReachError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let error = match client.apiserver_version().await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 401 || status.code == 403 => {
                return Err(ReachError::Refused {
                    url: url.to_string(),
                    message: describe(&kube::Error::Api(status)),
                });
            }
            Err(error) => error,
        };
        if tokio::time::Instant::now() + Duration::from_secs(1) > deadline {
            return Err(ReachError::Unreachable {
                url: url.to_string(),
                limit,
                message: describe(&error),
            });
        }
        tracing::info!(%url, error = %describe(&error), "The API server does not answer yet.");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Why the daemon could not start talking to its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error(
        "cannot reach the Kubernetes API server at {url} within {}: {message}",
        humantime::format_duration(*.limit)
    )]
    Unreachable {
        url: String,
        limit: Duration,
        message: String,
    },
    #[error("the Kubernetes API server at {url} refused the credentials: {message}")]
    Refused { url: String, message: String },
}

/// A failed API call, named by what was attempted.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {resource} {target}: {}", describe(.source))]
pub struct ApiError {
    pub verb: &'static str,
    pub resource: &'static str,
    /// `namespace/name`, `namespace` or `(all namespaces)`.
    pub target: String,
    #[source]
    pub source: kube::Error,
}

impl ApiError {
    pub(crate) fn new(
        verb: &'static str,
        resource: &'static str,
        target: impl fmt::Display,
        source: kube::Error,
    ) -> Self {
        Self {
            verb,
            resource,
            target: target.to_string(),
            source,
        }
    }

    /// The failure as outcome data (its message rendered now: the kube error is not kept).
    pub fn to_failure(&self) -> crate::model::outcome::Failure {
        crate::model::outcome::Failure {
            verb: self.verb,
            resource: self.resource,
            target: self.target.clone(),
            message: describe(&self.source),
        }
    }

    /// The HTTP status the server answered with, if it answered.
    pub fn status_code(&self) -> Option<u16> {
        match &self.source {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }
}

/// The server's own message (`secrets "x" is forbidden: User ... cannot create ...`) with its
/// code, or the transport error. Status messages for Secrets never carry data: the API server
/// redacts it (`<secret contents redacted>`).
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.reason.is_empty() => {
            format!("{} (HTTP {})", status.message, status.code)
        }
        kube::Error::Api(status) => {
            format!(
                "{} ({}, HTTP {})",
                status.message, status.reason, status.code
            )
        }
        other => with_causes(other),
    }
}

/// `error: cause: deeper cause`, each cause once: a transport error's own text is often only
/// "client error (Connect)", and the reason ("Connection refused") is in its sources.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// True for errors a later attempt may not get: throttling, server errors, timeouts and
/// connection failures. Conflicts are handled by re-reading, not by blind retries.
pub fn is_retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Client-side politeness: a QPS/burst limit on every request, and how hard to retry.
pub struct Throttle {
    limiter: DefaultDirectRateLimiter,
    qps: NonZeroU32,
    retries: usize,
}

impl Throttle {
    /// `qps` requests per second on average, at most `burst` at once; `retries` extra attempts
    /// for retryable errors.
    pub fn new(qps: NonZeroU32, burst: NonZeroU32, retries: usize) -> Self {
        Self {
            limiter: RateLimiter::direct(Quota::per_second(qps).allow_burst(burst)),
            qps,
            retries,
        }
    }

    /// The average requests per second allowed.
    pub fn qps(&self) -> NonZeroU32 {
        self.qps
    }

    /// Runs one API call under the rate limit, retrying retryable errors with jittered
    /// exponential backoff.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, kube::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.retries);
        let attempt = || {
            let request = op();
            async move {
                self.limiter.until_ready().await;
                request.await
            }
        };
        attempt
            .retry(backoff)
            .when(is_retryable)
            .notify(|error, delay| {
                tracing::warn!(
                    error = %describe(error),
                    delay_ms = delay.as_millis() as u64,
                    "API call failed; retrying."
                );
            })
            .await
    }
}

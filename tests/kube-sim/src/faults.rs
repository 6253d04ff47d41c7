//! Fault injection and observation, settable at start and at run time: latency, error rates per
//! verb/resource (500/503/429), forced conflicts, watch drops; and the request counters tests use
//! for "zero writes" assertions and the benchmark. Decisions only; the HTTP layer applies them.

use std::collections::BTreeMap;
use std::time::Duration;

/// An error the server answers with instead of serving the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedError {
    /// 500 InternalError Status.
    Internal,
    /// 503 ServiceUnavailable Status.
    Unavailable,
    /// 429 from priority-and-fairness: `Retry-After` and the plain-text body of docs/api-server.md.
    TooManyRequests { retry_after: u32 },
    /// 429 with a Status body carrying `details.retryAfterSeconds`.
    TooManyRequestsStatus { retry_after: u32 },
}

/// When to inject an error.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRule {
    /// Only this verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`...), or any.
    pub verb: Option<String>,
    /// Only this resource (plural), or any.
    pub resource: Option<String>,
    pub error: InjectedError,
    /// Probability in [0, 1] per matching request.
    pub rate: f64,
    /// Stop after this many injections (None: forever).
    pub remaining: Option<u64>,
}

impl ErrorRule {
    /// Every matching request fails `times` times (None: always).
    pub fn new(
        verb: Option<&str>,
        resource: Option<&str>,
        error: InjectedError,
        times: Option<u64>,
    ) -> Self {
        Self {
            verb: verb.map(str::to_string),
            resource: resource.map(str::to_string),
            error,
            rate: 1.0,
            remaining: times,
        }
    }

    /// Sets the probability of failing each matching request.
    #[must_use]
    pub fn with_rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }
}

/// Current fault settings.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub latency: Duration,
    /// Extra random latency, uniform in [0, jitter].
    pub jitter: Duration,
    pub rules: Vec<ErrorRule>,
    /// The next N update/patch requests get 409 Conflict.
    pub forced_conflicts: u64,
    /// The next N watches from an explicit resourceVersion get 200 + ERROR 410 Expired.
    pub expire_watches: u64,
    /// API groups whose discovery document answers 503, as an aggregated API that is down
    /// (clients must tolerate `GroupDiscoveryFailed`).
    pub failing_groups: Vec<String>,
    /// Watch streams end after this many events.
    pub watch_drop_after_events: Option<u64>,
    /// Watch streams end after this long.
    pub watch_drop_after: Option<Duration>,
    /// Extra latency of the requests of one (verb, resource plural), beside `latency`: a slow
    /// list of a big collection, so clients that overlap such requests can be tested.
    pub slow: Vec<(String, String, Duration)>,
}

fn random_unit() -> f64 {
    let b = uuid::Uuid::new_v4().into_bytes();
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    (u64::from_le_bytes(x) >> 11) as f64 / (1u64 << 53) as f64
}

impl Faults {
    /// The latency to add to one request.
    pub fn delay(&self, verb: &str, resource: &str) -> Duration {
        let slow = self
            .slow
            .iter()
            .filter(|(v, r, _)| v == verb && r == resource)
            .map(|(_, _, extra)| *extra)
            .sum::<Duration>();
        if self.jitter.is_zero() {
            self.latency + slow
        } else {
            self.latency + slow + self.jitter.mul_f64(random_unit())
        }
    }

    /// The error to inject for this request, if any (consumes one from a limited rule).
    pub fn pick_error(&mut self, verb: &str, resource: &str) -> Option<InjectedError> {
        for rule in &mut self.rules {
            let verb_ok = rule.verb.as_deref().is_none_or(|v| v == verb);
            let res_ok = rule.resource.as_deref().is_none_or(|r| r == resource);
            if !verb_ok || !res_ok || rule.remaining == Some(0) {
                continue;
            }
            if rule.rate >= 1.0 || random_unit() < rule.rate {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                return Some(rule.error);
            }
        }
        None
    }
}

/// Request counts by verb, resource and namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// (verb, resource plural, namespace or "") → count.
    pub by_key: BTreeMap<(String, String, String), u64>,
    /// Every HTTP request, discovery included.
    pub total: u64,
    /// Watch events sent.
    pub watch_events: u64,
    /// Requests answered 403 Forbidden — by the authorizer or by the RBAC storage's escalation
    /// check — by (verb, resource plural).
    pub forbidden: BTreeMap<(String, String), u64>,
}

/// One authorized write request, as the write log keeps it (`Options::record_writes`): who
/// wrote what, when, whatever the answer was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub at: std::time::SystemTime,
    /// The authenticated user's name.
    pub user: String,
    pub verb: String,
    pub resource: String,
    /// The namespace of the path ("" for cluster-scoped objects).
    pub namespace: String,
    pub name: String,
}

/// Verbs that change state.
pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl RequestCounts {
    pub(crate) fn record(&mut self, verb: &str, resource: &str, namespace: &str) {
        *self
            .by_key
            .entry((
                verb.to_string(),
                resource.to_string(),
                namespace.to_string(),
            ))
            .or_default() += 1;
    }

    /// Records a 403 answer.
    pub(crate) fn record_forbidden(&mut self, verb: &str, resource: &str) {
        *self
            .forbidden
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    /// 403 answers to this verb on this resource.
    pub fn forbidden(&self, verb: &str, resource: &str) -> u64 {
        self.forbidden
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests with this verb on this resource, all namespaces.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.by_key
            .iter()
            .filter(|((v, r, _), _)| v == verb && r == resource)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests with this verb on this resource in one namespace.
    pub fn count_in(&self, verb: &str, resource: &str, namespace: &str) -> u64 {
        self.by_key
            .get(&(
                verb.to_string(),
                resource.to_string(),
                namespace.to_string(),
            ))
            .copied()
            .unwrap_or(0)
    }

    /// All requests with this verb.
    pub fn verb(&self, verb: &str) -> u64 {
        self.by_key
            .iter()
            .filter(|((v, _, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// All state-changing requests (create, update, patch, delete, deletecollection).
    pub fn writes(&self) -> u64 {
        WRITE_VERBS.iter().map(|v| self.verb(v)).sum()
    }

    /// All resource requests (not discovery).
    pub fn resource_requests(&self) -> u64 {
        self.by_key.values().sum()
    }
}

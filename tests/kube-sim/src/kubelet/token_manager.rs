//! The kubelet's service-account token cache (kubernetes/kubernetes
//! `pkg/kubelet/token/token_manager.go`): tokens it asked TokenRequest for, reused until they
//! need a refresh, and dropped with their pod.
//!
//! - the key is the account, namespace, audiences, requested `expirationSeconds` and bound
//!   object (`keyFunc`); a cached token is reused unless more than 80 % of its lifetime or
//!   24 h have passed (`requiresRefresh`, without the random jitter);
//! - a refresh that fails while the old token is still valid keeps the old token; otherwise the
//!   error is `failed to fetch token: …`;
//! - `DeleteServiceAccountToken` forgets every token bound to a pod once the pod is gone.
//!
//! Requests go through `token_request::issue` (the apiserver's TokenRequest path without HTTP;
//! the kubelet's own request would be allowed by the Node authorizer for its pods). Token text
//! stays in memory, never logged.

use crate::server::Shared;
use crate::token_request::{self, BoundRef, TokenSpec};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// `maxTTL`: a token older than this is refreshed whatever its lifetime.
const MAX_TTL_SECS: u64 = 24 * 60 * 60;

/// A cached TokenRequest answer.
#[derive(Clone)]
struct Cached {
    /// The token (never printed).
    token: String,
    /// `status.expirationTimestamp`, seconds since the epoch.
    expires: u64,
    /// `spec.expirationSeconds` of the answer (defaulted by the server).
    expiration_seconds: u64,
    /// The uid of the pod it is bound to (for `delete_pod`).
    pod_uid: String,
}

/// The kubelet's token manager.
#[derive(Default)]
pub struct TokenManager {
    /// Tokens by `keyFunc` key.
    cache: Mutex<HashMap<String, Cached>>,
}

fn key(namespace: &str, name: &str, spec: &TokenSpec) -> String {
    let bound = spec.bound.as_ref().map_or(String::new(), |b| {
        format!("{}/{}/{}/{}", b.api_version, b.kind, b.name, b.uid)
    });
    format!(
        "{name:?}/{namespace:?}/{:?}/{}/{bound}",
        spec.audiences,
        spec.expiration_seconds.unwrap_or(0)
    )
}

impl TokenManager {
    fn cache(&self) -> MutexGuard<'_, HashMap<String, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `GetServiceAccountToken`.
    pub fn get(
        &self,
        shared: &Shared,
        namespace: &str,
        name: &str,
        spec: &TokenSpec,
    ) -> Result<String, String> {
        let k = key(namespace, name, spec);
        let now = crate::tokens::now_secs();
        let cached = self.cache().get(&k).cloned();
        if let Some(c) = &cached
            && !requires_refresh(c, now)
        {
            return Ok(c.token.clone());
        }
        let issued = {
            let st = shared.lock_store();
            token_request::issue(shared, &st, namespace, name, spec)
        };
        match (issued, cached) {
            (Ok(t), _) => {
                let pod_uid = spec.bound.as_ref().map_or(String::new(), |b| b.uid.clone());
                let expiration_seconds = t
                    .spec
                    .get("expirationSeconds")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                self.cache().insert(
                    k,
                    Cached {
                        token: t.token.clone(),
                        expires: t.expires,
                        expiration_seconds,
                        pod_uid,
                    },
                );
                Ok(t.token)
            }
            (Err(e), None) => Err(format!("failed to fetch token: {}", e.message)),
            (Err(e), Some(c)) if now > c.expires => Err(format!(
                "token {k} expired and refresh failed: {}",
                e.message
            )),
            (Err(e), Some(c)) => {
                tracing::warn!(cache_key = %k, error = %e.message, "Couldn't update token");
                Ok(c.token)
            }
        }
    }

    /// `DeleteServiceAccountToken`: the pod is gone.
    pub fn delete_pod(&self, pod_uid: &str) {
        self.cache().retain(|_, c| c.pod_uid != pod_uid);
    }
}

/// `requiresRefresh`: past 80 % of the lifetime, older than a day, or issued in the future.
fn requires_refresh(c: &Cached, now: u64) -> bool {
    let issued = c.expires.saturating_sub(c.expiration_seconds);
    now > issued + MAX_TTL_SECS
        || now > c.expires.saturating_sub(c.expiration_seconds * 20 / 100)
        || now < issued
}

/// The TokenRequest the credential provider plugin path sends (`getServiceAccountToken`): the
/// provider's audience, the default lifetime, bound to the pod, with the account's uid.
pub fn provider_token_spec(
    audience: &str,
    pod_name: &str,
    pod_uid: &str,
    service_account_uid: &str,
) -> TokenSpec {
    TokenSpec {
        audiences: vec![audience.to_string()],
        expiration_seconds: None,
        bound: Some(BoundRef {
            kind: "Pod".into(),
            api_version: "v1".into(),
            name: pod_name.to_string(),
            uid: pod_uid.to_string(),
        }),
        service_account_uid: Some(service_account_uid.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_after_80_percent_of_their_life() {
        let c = Cached {
            token: String::new(),
            expires: 10_000 + 3600,
            expiration_seconds: 3600,
            pod_uid: String::new(),
        };
        assert!(!requires_refresh(&c, 10_000));
        assert!(!requires_refresh(&c, 10_000 + 2880));
        assert!(requires_refresh(&c, 10_000 + 2881));
        assert!(requires_refresh(&c, 9_000));
    }
}

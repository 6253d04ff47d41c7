//! Pod lists (kube I/O): a namespace's pods, or its Pending ones, reduced to [`PodSummary`]s a
//! page at a time; and the pending-pod lists shared by the namespaces that heal at the same
//! time.
//!
//! Healing looks at a namespace's Pending pods right after linking a pull secret there
//! (docs/healing.md). At a cold start that is one list per namespace: 10,000 lists beside the
//! 50,000 writes of 10,000 namespaces, a sixth of the request budget. Namespaces that heal
//! while a list is in flight do not each list: they wait for the list in flight to end, and the
//! first of them then makes one list for all of them, across the cluster, each caller given
//! its own namespace's pods. Every caller is served by a list that *started after it asked*,
//! so it sees every pod created before its link, as a list of its own would.
//!
//! A list across the cluster costs one request per page of *every* Pending pod in the cluster,
//! so it is made only when more namespaces wait than the last one took pages; otherwise, and
//! when listing across the cluster is not allowed (namespaced mode, or a 403, after which it is
//! not tried again), each waiting namespace is listed on its own, as before.
//!
//! Rounds are spaced: one starts at least [`ROUND_SPACING_REQUESTS`] requests' worth of the
//! client's QPS after the one before (100 ms at 1,000 QPS, at most [`MAX_ROUND_SPACING`]), so
//! at a cold start a round serves every namespace that healed in that time, not only those that
//! came while the last list was in flight: while Pending pods fit on one page, the lists then
//! take at most a hundredth of the request budget instead of about 7 %. Waiting is cheap only because the daemon heals off its
//! work queue (`daemon/controller.rs`, `spawn_heal`): a reconcile waiting here would hold a
//! slot the writes of other namespaces need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt as _, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, ObjectList};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{ApiError, Throttle};
use crate::model::heal::PodSummary;

type Listed = Result<Vec<PodSummary>, ApiError>;

/// Pods per page of a list.
const PAGE_SIZE: u32 = 500;

/// The least gap between the starts of two rounds, in requests at the client's QPS.
pub const ROUND_SPACING_REQUESTS: u32 = 100;

/// The gap between rounds at a low QPS: healing never waits longer than this for its turn.
pub const MAX_ROUND_SPACING: Duration = Duration::from_secs(1);

/// The least gap between the starts of two rounds for a client allowed `throttle`'s QPS.
pub fn round_spacing(throttle: &Throttle) -> Duration {
    let qps = f64::from(throttle.qps().get());
    Duration::from_secs_f64(f64::from(ROUND_SPACING_REQUESTS) / qps).min(MAX_ROUND_SPACING)
}

/// Every pod of `namespace`, summarised page by page.
pub async fn pod_summaries(
    client: &Client,
    throttle: &Throttle,
    namespace: &str,
) -> Result<Vec<PodSummary>, ApiError> {
    list_summaries(client, throttle, namespace, ListParams::default()).await
}

/// The pods of `namespace` that can be stuck pulling: phase `Pending` (a pod whose image never
/// arrived never leaves it), selected by the server, so running pods cost nothing.
pub async fn pending_pod_summaries(
    client: &Client,
    throttle: &Throttle,
    namespace: &str,
) -> Result<Vec<PodSummary>, ApiError> {
    list_summaries(client, throttle, namespace, pending_params()).await
}

/// A list of the pods that can be stuck pulling: phase `Pending`, selected by the server.
fn pending_params() -> ListParams {
    ListParams::default().fields("status.phase=Pending")
}

async fn list_summaries(
    client: &Client,
    throttle: &Throttle,
    namespace: &str,
    params: ListParams,
) -> Result<Vec<PodSummary>, ApiError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut params = params.limit(PAGE_SIZE);
    let mut summaries = Vec::new();
    loop {
        let page: ObjectList<Pod> = throttle
            .call(|| api.list(&params))
            .await
            .map_err(|error| ApiError::new("list", "pods", namespace, error))?;
        summaries.extend(page.items.iter().map(PodSummary::of));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(summaries),
        }
    }
}

/// One process's shared pending-pod lists.
pub struct PendingPods {
    /// Whether a list across the cluster may be tried.
    cluster_wide: AtomicBool,
    /// Callers not yet served, by namespace.
    waiting: Mutex<Vec<(String, oneshot::Sender<Listed>)>>,
    /// Held by the caller making the lists: one round at a time, callers served in turn. It
    /// holds when the last round started.
    turn: tokio::sync::Mutex<Option<Instant>>,
    /// Pages the last list across the cluster took (at least 1).
    pages: AtomicUsize,
}

impl PendingPods {
    /// Lists shared across the cluster (a daemon watching every namespace).
    pub fn cluster_wide() -> Self {
        Self::new(true)
    }

    /// Every namespace listed on its own (one-shot passes, namespaced mode).
    pub fn per_namespace() -> Self {
        Self::new(false)
    }

    fn new(cluster_wide: bool) -> Self {
        Self {
            cluster_wide: AtomicBool::new(cluster_wide),
            waiting: Mutex::default(),
            turn: tokio::sync::Mutex::new(None),
            pages: AtomicUsize::new(1),
        }
    }

    fn may_list_cluster_wide(&self) -> bool {
        self.cluster_wide.load(Ordering::Relaxed)
    }

    /// The Pending pods of `namespace`, from a list started after this call.
    pub async fn pending_in(
        &self,
        client: &Client,
        throttle: &Throttle,
        namespace: &str,
    ) -> Listed {
        if !self.may_list_cluster_wide() {
            return pending_pod_summaries(client, throttle, namespace).await;
        }
        let (answer, mut answered) = oneshot::channel();
        lock(&self.waiting).push((namespace.to_string(), answer));
        tokio::select! {
            biased;
            listed = &mut answered => {
                if let Ok(listed) = listed {
                    return listed;
                }
            }
            mut turn = self.turn.lock() => {
                if let Ok(listed) = answered.try_recv() {
                    return listed;
                }
                if let Some(last) = *turn {
                    tokio::time::sleep_until(last + round_spacing(throttle)).await;
                }
                *turn = Some(Instant::now());
                let round = std::mem::take(&mut *lock(&self.waiting));
                self.serve(client, throttle, round).await;
                drop(turn);
                if let Ok(listed) = answered.await {
                    return listed;
                }
            }
        }
        // The caller that took this request was cancelled before answering it: list alone.
        pending_pod_summaries(client, throttle, namespace).await
    }

    /// Answers every request of `round`: one list across the cluster when that is cheaper
    /// than a list per namespace, else (or when it fails) a list per namespace.
    async fn serve(
        &self,
        client: &Client,
        throttle: &Throttle,
        round: Vec<(String, oneshot::Sender<Listed>)>,
    ) {
        let across =
            self.may_list_cluster_wide() && round.len() > self.pages.load(Ordering::Relaxed);
        if across {
            match list_across(client, throttle, &round).await {
                Ok((mut by_namespace, pages)) => {
                    self.pages.store(pages.max(1), Ordering::Relaxed);
                    for (namespace, answer) in round {
                        let pods = by_namespace.get_mut(&namespace).map(std::mem::take);
                        let _ = answer.send(Ok(pods.unwrap_or_default()));
                    }
                    return;
                }
                Err(error) => {
                    if error.status_code() == Some(403) {
                        self.cluster_wide.store(false, Ordering::Relaxed);
                    }
                    tracing::debug!(%error, "Listing Pending pods across the cluster failed; listing each namespace.");
                }
            }
        }
        stream::iter(round)
            .for_each_concurrent(None, |(namespace, answer)| async move {
                let _ = answer.send(pending_pod_summaries(client, throttle, &namespace).await);
            })
            .await;
    }
}

/// The Pending pods of the round's namespaces, by namespace, from one paged list across the
/// cluster (other namespaces' pods dropped page by page), and the pages it took.
async fn list_across(
    client: &Client,
    throttle: &Throttle,
    round: &[(String, oneshot::Sender<Listed>)],
) -> Result<(HashMap<String, Vec<PodSummary>>, usize), ApiError> {
    let api: Api<Pod> = Api::all(client.clone());
    let mut by_namespace: HashMap<String, Vec<PodSummary>> = round
        .iter()
        .map(|(namespace, _)| (namespace.clone(), Vec::new()))
        .collect();
    let mut params: ListParams = pending_params().limit(PAGE_SIZE);
    let mut pages = 0;
    loop {
        let page: ObjectList<Pod> = throttle
            .call(|| api.list(&params))
            .await
            .map_err(|error| ApiError::new("list", "pods", "(all namespaces)", error))?;
        pages += 1;
        for pod in &page.items {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            if let Some(pods) = by_namespace.get_mut(namespace) {
                pods.push(PodSummary::of(pod));
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok((by_namespace, pages)),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

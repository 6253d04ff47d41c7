//! Pods (I/O): heal the ones stuck for want of a Secret pullsecretd has just linked or rotated
//! (docs/healing.md), from the summaries [`super::pod_lists`] reads.
//!
//! Pods are read only in namespaces pullsecretd is changing, when it changes them: after a link
//! or rotation (healing), and before a Secret is deleted (is a pod still naming it?). There is
//! no pod watch, so the cost grows with the namespaces changed, not with the pods in the
//! cluster. Each page of the list is reduced to summaries before the next is read.
//!
//! Healing never deletes a pod nothing would recreate, deletes with the pod's uid as a
//! precondition (a pod recreated under the same name meanwhile survives), and is rate-limited
//! process-wide, so a large namespace cannot turn one link into a storm of restarts.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::{EventType, Recorder};

use super::events::publish_event;
use super::pod_lists::PendingPods;
use super::{ApiError, Throttle};
use crate::model::heal::{self, HealAction, HealOutcome, HealTarget, StuckPod};

/// How many stuck pods may be restarted at once, and how many per second after that.
pub const RESTART_BURST: u32 = 10;
pub const RESTARTS_PER_SECOND: u32 = 1;

/// The process-wide restart rate limit.
pub struct HealBudget {
    limiter: DefaultDirectRateLimiter,
}

impl Default for HealBudget {
    fn default() -> Self {
        let per_second = NonZeroU32::new(RESTARTS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(RESTART_BURST).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
        }
    }
}

impl HealBudget {
    /// Takes one restart if the budget allows it now.
    fn take(&self) -> bool {
        self.limiter.check().is_ok()
    }
}

/// What healing needs besides the namespace and its targets.
pub struct Healer<'a> {
    pub client: &'a Client,
    pub throttle: &'a Throttle,
    pub recorder: Option<&'a Recorder>,
    pub budget: &'a HealBudget,
    /// Pending-pod lists shared with the namespaces healing at the same time.
    pub pending: &'a PendingPods,
}

impl Healer<'_> {
    /// Looks at `namespace`'s pods for `targets` (each with the Secret name just linked or
    /// written) and reports or restarts the stuck ones.
    pub async fn heal(
        &self,
        namespace: &str,
        targets: &[(HealTarget, String)],
    ) -> Result<HealOutcome, ApiError> {
        let pods = self
            .pending
            .pending_in(self.client, self.throttle, namespace)
            .await?;
        let pairs: Vec<(&HealTarget, &str)> =
            targets.iter().map(|(t, s)| (t, s.as_str())).collect();
        let scan = heal::scan(&pods, &pairs);
        drop(pods);
        let mut outcome = HealOutcome::default();
        for stuck in &scan.stuck {
            self.handle(namespace, stuck, &mut outcome).await?;
        }
        if scan.pending > 0 || !outcome.deferred.is_empty() {
            outcome.recheck = targets.to_vec();
        }
        Ok(outcome)
    }

    async fn handle(
        &self,
        namespace: &str,
        stuck: &StuckPod,
        outcome: &mut HealOutcome,
    ) -> Result<(), ApiError> {
        match &stuck.action {
            HealAction::Report => {
                self.warn(namespace, stuck, &report_note(stuck)).await;
                outcome.reported.push(stuck.pod.clone());
            }
            HealAction::BarePod => {
                self.warn(namespace, stuck, &bare_note(stuck)).await;
                outcome.bare.push(stuck.pod.clone());
            }
            HealAction::Restart { owner_kind, owner } => {
                if !self.budget.take() {
                    outcome.deferred.push(stuck.pod.clone());
                    return Ok(());
                }
                if self.restart(namespace, stuck).await? {
                    let note = restart_note(stuck, owner_kind, owner);
                    tracing::info!(namespace, pod = %stuck.pod, "{note}");
                    self.publish(
                        namespace,
                        stuck,
                        EventType::Normal,
                        "RestartedStuckPod",
                        &note,
                    )
                    .await;
                    outcome.restarted.push(stuck.pod.clone());
                }
            }
        }
        Ok(())
    }

    /// Deletes the pod if it is still the one read; false when it was gone or replaced.
    async fn restart(&self, namespace: &str, stuck: &StuckPod) -> Result<bool, ApiError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: stuck.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.throttle.call(|| api.delete(&stuck.pod, &params)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => {
                Ok(false)
            }
            Err(error) => Err(ApiError::new(
                "delete",
                "pods",
                format!("{namespace}/{}", stuck.pod),
                error,
            )),
        }
    }

    async fn warn(&self, namespace: &str, stuck: &StuckPod, note: &str) {
        tracing::warn!(namespace, pod = %stuck.pod, "{note}");
        self.publish(
            namespace,
            stuck,
            EventType::Warning,
            "MissingPullSecret",
            note,
        )
        .await;
    }

    async fn publish(
        &self,
        namespace: &str,
        stuck: &StuckPod,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let Some(recorder) = self.recorder else {
            return;
        };
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(stuck.pod.clone()),
            namespace: Some(namespace.into()),
            uid: stuck.uid.clone(),
            ..ObjectReference::default()
        };
        publish_event(recorder, type_, reason, note, &reference).await;
    }
}

fn stuck_on(stuck: &StuckPod) -> String {
    format!(
        "pod {} cannot pull {} ({}) and does not name secret {}, which pullsecretd links to \
         service account {} (pull secret {}): a pod's imagePullSecrets are copied from its \
         service account only when it is created",
        stuck.pod,
        stuck.image,
        stuck.reason,
        stuck.secret,
        stuck.service_account,
        stuck.pull_secret
    )
}

fn report_note(stuck: &StuckPod) -> String {
    format!(
        "{}; delete the pod so its controller recreates it, or set heal: restart on pull \
         secret {}",
        stuck_on(stuck),
        stuck.pull_secret
    )
}

fn bare_note(stuck: &StuckPod) -> String {
    format!(
        "{}; no controller owns it, so pullsecretd does not delete it: recreate it yourself",
        stuck_on(stuck)
    )
}

fn restart_note(stuck: &StuckPod, owner_kind: &str, owner: &str) -> String {
    format!(
        "{}; deleted it so that {owner_kind} {owner} recreates it with the account's current \
         pull secrets",
        stuck_on(stuck)
    )
}

//! Pods and pull secrets (pure): which pods are stuck for want of a Secret pullsecretd has just
//! linked or rotated, and which Secrets pods still name.
//!
//! Two facts of Kubernetes make "a linked Secret" differ from "a pod that pulls"
//! (docs/healing.md): the ServiceAccount admission plugin copies the account's
//! `imagePullSecrets` into a pod only when the pod is created, and a pod's spec never changes
//! after that. So a pod created before the link never gets the Secret, and a pod created before
//! a versioned rotation keeps naming the old version. The first is what healing finds; the
//! second is why a version a pod names is never deleted.
//!
//! Everything here works on [`PodSummary`], the few fields of a pod these rules read, so a
//! namespace's pods cost a few hundred bytes each while they are looked at.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};

use crate::model::credential::RegistryKey;
use crate::model::desired::Heal;
use crate::model::rotation;

/// Waiting reasons of a container whose image pull failed (the kubelet's `ErrImagePull`, then
/// `ImagePullBackOff` while it waits to try again).
pub const PULL_FAILURE_REASONS: &[&str] = &["ErrImagePull", "ImagePullBackOff"];

/// Controller kinds that recreate a deleted pod from their template, so deleting a stuck pod
/// replaces it with one that gets the account's current secrets.
pub const RESTARTABLE_OWNERS: &[&str] = &["ReplicaSet", "StatefulSet", "Job", "DaemonSet"];

/// What the rules read of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSummary {
    pub name: String,
    pub uid: Option<String>,
    /// `spec.serviceAccountName` (`default` when empty, as admission sets it).
    pub service_account: String,
    /// `spec.imagePullSecrets` names, in order.
    pub pull_secrets: Vec<String>,
    /// Phase `Succeeded` or `Failed`: no container of it starts again, so it pulls nothing.
    pub finished: bool,
    /// Has a `deletionTimestamp`: going already.
    pub deleting: bool,
    /// The controller owner's kind and name (`ownerReferences[].controller: true`).
    pub controller: Option<(String, String)>,
    /// Every container, init containers first.
    pub containers: Vec<ContainerPull>,
}

/// A container's image and how far it got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerPull {
    pub image: String,
    /// `state.waiting.reason`, when it is waiting.
    pub waiting: Option<String>,
    /// It has run or is running: its image is there.
    pub started: bool,
}

impl ContainerPull {
    /// Neither started nor failing to pull: still being created (or not reported yet).
    fn is_pending(&self) -> bool {
        !self.started
            && self
                .waiting
                .as_deref()
                .is_none_or(|r| r == "ContainerCreating")
    }

    fn pull_failed(&self) -> bool {
        self.waiting
            .as_deref()
            .is_some_and(|r| PULL_FAILURE_REASONS.contains(&r))
    }
}

impl PodSummary {
    /// The summary of `pod`.
    pub fn of(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut containers = Vec::new();
        if let Some(spec) = spec {
            let init_statuses = status.and_then(|s| s.init_container_statuses.as_deref());
            for container in spec.init_containers.iter().flatten() {
                containers.push(container_pull(container, init_statuses));
            }
            let statuses = status.and_then(|s| s.container_statuses.as_deref());
            for container in &spec.containers {
                containers.push(container_pull(container, statuses));
            }
        }
        let phase = status.and_then(|s| s.phase.as_deref());
        Self {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            pull_secrets: spec
                .and_then(|s| s.image_pull_secrets.as_ref())
                .into_iter()
                .flatten()
                .map(|r| r.name.clone())
                .collect(),
            finished: matches!(phase, Some("Succeeded" | "Failed")),
            deleting: meta.deletion_timestamp.is_some(),
            controller: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| (o.kind.clone(), o.name.clone())),
            containers,
        }
    }

    /// True when a pod that may still pull names `secret` in `spec.imagePullSecrets`.
    pub fn may_pull_with(&self, secret: &str) -> bool {
        !self.finished && self.pull_secrets.iter().any(|name| name == secret)
    }
}

fn container_pull(container: &Container, statuses: Option<&[ContainerStatus]>) -> ContainerPull {
    let status = statuses
        .into_iter()
        .flatten()
        .find(|s| s.name == container.name);
    let state = status.and_then(|s| s.state.as_ref());
    ContainerPull {
        image: container.image.clone().unwrap_or_default(),
        waiting: state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone()),
        started: state.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            || status
                .and_then(|s| s.last_state.as_ref())
                .is_some_and(|s| s.terminated.is_some()),
    }
}

/// The names of the pods in `pods` that may still pull with `secret`.
pub fn pods_using<'a>(pods: &'a [PodSummary], secret: &str) -> Vec<&'a str> {
    pods.iter()
        .filter(|pod| pod.may_pull_with(secret))
        .map(|pod| pod.name.as_str())
        .collect()
}

/// One pull secret's Secret in a namespace, as healing looks at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealTarget {
    pub pull_secret: String,
    pub heal: Heal,
    /// The planned name (for a versioned Secret, any version of it counts).
    pub secret: String,
    /// The registries its payload holds.
    pub servers: Vec<RegistryKey>,
    /// The accounts that link it for pull: only their new pods get it.
    pub accounts: Vec<String>,
}

impl HealTarget {
    /// True when `name` is this target's Secret or one of its versions.
    pub fn names(&self, name: &str) -> bool {
        let base = |n: &'_ str| -> String { rotation::version_base(n).unwrap_or(n).to_string() };
        name == self.secret || base(name) == base(&self.secret)
    }
}

/// A pod stuck pulling from a registry of `target` without naming `secret`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckPod {
    pub pod: String,
    pub uid: Option<String>,
    pub service_account: String,
    /// The image that failed, and the waiting reason.
    pub image: String,
    pub reason: String,
    pub pull_secret: String,
    /// The Secret (the version just linked or written) it lacks.
    pub secret: String,
    pub action: HealAction,
}

/// What is done about a stuck pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealAction {
    /// Tell (an Event), change nothing: `heal: report`.
    Report,
    /// Delete it: `heal: restart` and a controller that recreates it.
    Restart { owner_kind: String, owner: String },
    /// `heal: restart`, but nothing would bring it back: tell only.
    BarePod,
}

/// What a scan of a namespace's pods found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealScan {
    pub stuck: Vec<StuckPod>,
    /// Pods that lack the Secret and pull from its registry but have not failed yet (still
    /// being created): worth another look shortly.
    pub pending: usize,
}

/// The pods stuck for want of `secret` (a name `target` covers), one entry per pod: the
/// first target (in order) that explains it.
pub fn scan(pods: &[PodSummary], targets: &[(&HealTarget, &str)]) -> HealScan {
    let mut scan = HealScan::default();
    for pod in pods {
        if pod.finished || pod.deleting {
            continue;
        }
        let mut pending = false;
        let stuck = targets.iter().find_map(|(target, secret)| {
            if target.heal == Heal::Off
                || !target.accounts.contains(&pod.service_account)
                || pod.pull_secrets.iter().any(|name| name == secret)
            {
                return None;
            }
            let served: Vec<&ContainerPull> = pod
                .containers
                .iter()
                .filter(|c| served_by(&c.image, &target.servers))
                .collect();
            pending |= served.iter().any(|c| c.is_pending());
            let failed = served.iter().find(|c| c.pull_failed())?;
            let image = failed.image.clone();
            let reason = failed.waiting.clone().unwrap_or_default();
            Some(StuckPod {
                pod: pod.name.clone(),
                uid: pod.uid.clone(),
                service_account: pod.service_account.clone(),
                image,
                reason,
                pull_secret: target.pull_secret.clone(),
                secret: (*secret).to_string(),
                action: action(target.heal, pod),
            })
        });
        match stuck {
            Some(stuck) => scan.stuck.push(stuck),
            None if pending => scan.pending += 1,
            None => {}
        }
    }
    scan
}

/// What healing did in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealOutcome {
    /// Pods told about (an Event), by name.
    pub reported: Vec<String>,
    /// Pods deleted so their controller replaces them.
    pub restarted: Vec<String>,
    /// Pods `heal: restart` left alone because no controller would bring them back.
    pub bare: Vec<String>,
    /// Pods to restart that the rate limit put off.
    pub deferred: Vec<String>,
    /// The targets to look at again (pods still being created, or restarts put off).
    pub recheck: Vec<(HealTarget, String)>,
}

impl HealOutcome {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn action(heal: Heal, pod: &PodSummary) -> HealAction {
    if heal != Heal::Restart {
        return HealAction::Report;
    }
    match &pod.controller {
        Some((kind, name)) if RESTARTABLE_OWNERS.contains(&kind.as_str()) => HealAction::Restart {
            owner_kind: kind.clone(),
            owner: name.clone(),
        },
        _ => HealAction::BarePod,
    }
}

/// True when `image` is pulled from a registry (or repository namespace) in `servers`, as a
/// docker keyring looks it up: the image's repository, then each parent namespace, then its
/// host. Docker Hub short names (`nginx`, `team/app`) are `docker.io/…`.
pub fn served_by(image: &str, servers: &[RegistryKey]) -> bool {
    let Some(repository) = image_repository(image) else {
        return false;
    };
    repository
        .lookup_order()
        .iter()
        .any(|key| servers.contains(key))
}

/// The `host/path` of an image reference without tag or digest.
fn image_repository(image: &str) -> Option<RegistryKey> {
    let name = image.split('@').next().unwrap_or_default();
    let name = match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => name,
    };
    let (host, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        Some(_) => ("docker.io".to_string(), name.to_string()),
        None => ("docker.io".to_string(), format!("library/{name}")),
    };
    if path.is_empty() {
        return None;
    }
    RegistryKey::from_containers(&format!("{host}/{path}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(server: &str) -> RegistryKey {
        RegistryKey::from_containers(server).expect("valid key")
    }

    /// A pod of `default` owned by a ReplicaSet; reason `Running` means a started container.
    fn pod(name: &str, image: &str, reason: Option<&str>) -> PodSummary {
        let container = ContainerPull {
            image: image.into(),
            waiting: reason.filter(|r| *r != "Running").map(str::to_string),
            started: reason == Some("Running"),
        };
        PodSummary {
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            service_account: "default".into(),
            controller: Some(("ReplicaSet".into(), "web-1".into())),
            containers: vec![container],
            ..PodSummary::default()
        }
    }

    fn target(heal: Heal) -> HealTarget {
        HealTarget {
            pull_secret: "quay".into(),
            heal,
            secret: "quay-pull".into(),
            servers: vec![key("127.0.0.1:5000")],
            accounts: vec!["default".into()],
        }
    }

    #[test]
    fn images_match_registries_as_a_keyring_looks_them_up() {
        let local = [key("127.0.0.1:5000")];
        assert!(served_by("127.0.0.1:5000/team/app:v1", &local));
        assert!(served_by("127.0.0.1:5000/app@sha256:abc", &local));
        assert!(!served_by("127.0.0.1:5001/team/app:v1", &local));
        assert!(!served_by("quay.io/team/app", &local));
        let team = [key("quay.io/team")];
        assert!(served_by("quay.io/team/app:v1", &team));
        assert!(served_by("quay.io/team/sub/app", &team));
        assert!(!served_by("quay.io/teamx/app", &team));
        assert!(!served_by("quay.io/other/app", &team));
        let hub = [RegistryKey::from_docker("https://index.docker.io/v1/").expect("valid")];
        assert!(served_by("nginx", &hub));
        assert!(served_by("team/app:v2", &hub));
        assert!(served_by("docker.io/team/app", &hub));
        assert!(!served_by("localhost/app", &hub));
        assert!(served_by("localhost:5000/app", &[key("localhost:5000")]));
    }

    #[test]
    fn a_pod_failing_to_pull_without_the_secret_is_stuck() {
        let t = target(Heal::Report);
        let pods = vec![
            pod("stuck", "127.0.0.1:5000/app:v1", Some("ImagePullBackOff")),
            pod("err", "127.0.0.1:5000/app:v1", Some("ErrImagePull")),
            pod(
                "creating",
                "127.0.0.1:5000/app:v1",
                Some("ContainerCreating"),
            ),
            pod("other-registry", "quay.io/app:v1", Some("ImagePullBackOff")),
            pod("running", "127.0.0.1:5000/app:v1", Some("Running")),
            pod("unreported", "127.0.0.1:5000/app:v1", None),
        ];
        let scan = scan(&pods, &[(&t, "quay-pull")]);
        let names: Vec<&str> = scan.stuck.iter().map(|s| s.pod.as_str()).collect();
        assert_eq!(names, ["stuck", "err"]);
        assert_eq!(scan.stuck[0].action, HealAction::Report);
        assert_eq!(scan.stuck[0].image, "127.0.0.1:5000/app:v1");
        // Still being created, or with no status yet: worth another look.
        assert_eq!(scan.pending, 2);
    }

    #[test]
    fn pods_naming_the_secret_or_of_other_accounts_or_going_are_not_stuck() {
        let t = target(Heal::Restart);
        let mut named = pod("named", "127.0.0.1:5000/app", Some("ErrImagePull"));
        named.pull_secrets = vec!["quay-pull".into()];
        let mut other = pod("other", "127.0.0.1:5000/app", Some("ErrImagePull"));
        other.service_account = "robot".into();
        let mut going = pod("going", "127.0.0.1:5000/app", Some("ErrImagePull"));
        going.deleting = true;
        let mut done = pod("done", "127.0.0.1:5000/app", Some("ErrImagePull"));
        done.finished = true;
        let scan = scan(&[named, other, going, done], &[(&t, "quay-pull")]);
        assert_eq!(scan, HealScan::default());
    }

    #[test]
    fn restart_deletes_only_pods_a_controller_brings_back() {
        let t = target(Heal::Restart);
        let owned = pod("owned", "127.0.0.1:5000/app", Some("ErrImagePull"));
        let mut bare = pod("bare", "127.0.0.1:5000/app", Some("ErrImagePull"));
        bare.controller = None;
        let mut node = pod("node-owned", "127.0.0.1:5000/app", Some("ErrImagePull"));
        node.controller = Some(("Node".into(), "n1".into()));
        let scan = scan(&[owned, bare, node], &[(&t, "quay-pull")]);
        let actions: Vec<&HealAction> = scan.stuck.iter().map(|s| &s.action).collect();
        assert_eq!(
            actions,
            [
                &HealAction::Restart {
                    owner_kind: "ReplicaSet".into(),
                    owner: "web-1".into()
                },
                &HealAction::BarePod,
                &HealAction::BarePod
            ]
        );
    }

    #[test]
    fn a_pod_naming_an_old_version_lacks_the_new_one() {
        let t = HealTarget {
            secret: "quay-pull-v-aaaaaaaaaa".into(),
            ..target(Heal::Report)
        };
        let mut old = pod("old", "127.0.0.1:5000/app", Some("ErrImagePull"));
        old.pull_secrets = vec!["quay-pull-v-aaaaaaaaaa".into()];
        let scan = scan(&[old], &[(&t, "quay-pull-v-bbbbbbbbbb")]);
        assert_eq!(scan.stuck.len(), 1);
        assert_eq!(scan.stuck[0].secret, "quay-pull-v-bbbbbbbbbb");
    }

    #[test]
    fn heal_off_reads_nothing_into_a_pod() {
        let t = target(Heal::Off);
        let pods = [pod("stuck", "127.0.0.1:5000/app", Some("ErrImagePull"))];
        assert_eq!(scan(&pods, &[(&t, "quay-pull")]), HealScan::default());
    }

    #[test]
    fn finished_pods_do_not_keep_a_secret_in_use() {
        let mut live = pod("live", "x", None);
        live.pull_secrets = vec!["s".into(), "t".into()];
        let mut done = live.clone();
        done.name = "done".into();
        done.finished = true;
        let pods = [live, done];
        assert_eq!(pods_using(&pods, "t"), ["live"]);
        assert!(pods_using(&pods, "u").is_empty());
    }
}

//! kube-controller-manager's ReplicaSet and Deployment controllers, reduced to what keeps a
//! replica count (kubernetes/kubernetes `pkg/controller/replicaset/replica_set.go`,
//! `pkg/controller/deployment/{sync.go,progress.go}`, `pkg/controller/controller_utils.go`):
//!
//! - a Deployment owns one ReplicaSet per pod template, named `<deployment>-<pod-template-hash>`
//!   and labelled/selected with `pod-template-hash`; a RollingUpdate grows the current
//!   template's ReplicaSet within `maxSurge` and shrinks older ones (unhealthy pods first) while
//!   `replicas - maxUnavailable` stay available; Recreate scales old ones to 0 and waits for
//!   their pods to go before scaling the new one up;
//! - a ReplicaSet keeps `spec.replicas` active pods `<rs>-<5 random>` created from its template
//!   with a controller `ownerReference` (`controller: true`, `blockOwnerDeletion: true`); a pod
//!   that is deleted (or terminating) is replaced; a create the apiserver refuses (admission)
//!   is a `FailedCreate` event, a `ReplicaFailure` condition and a retry with the workqueue's
//!   exponential backoff (5 ms doubling to 1000 s);
//! - status fields `replicas`, `readyReplicas`, `availableReplicas`, `updatedReplicas`,
//!   `observedGeneration` and the `Available`/`Progressing` conditions kubectl reads.
//!
//! It runs as one background task fed by store watches on deployments, replicasets and pods, so
//! like the real controllers it acts shortly after a write, not inside it. Writes go through the
//! same create/update path as requests (admission, validation), without request counters.

use crate::api;
use crate::recorder::{self, Note, Source};
use crate::resources::{self, APPS, ResourceType};
use crate::server::Shared;
use crate::store::{Store, WatchMsg};
use crate::util::{self, meta_str};
use crate::workloads;
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Field manager and user agent of the controllers' writes.
const MANAGER: &str = "kube-controller-manager";
/// The label that ties a ReplicaSet and its pods to one pod template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
/// The workqueue rate limiter's base and cap (`workqueue.DefaultControllerRateLimiter`).
const RETRY_BASE: Duration = Duration::from_millis(5);
const RETRY_MAX: Duration = Duration::from_secs(1000);

/// One unit of controller work.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Work {
    Deployment(String, String),
    ReplicaSet(String, String),
}

fn rt(group: &str, plural: &str) -> Option<&'static ResourceType> {
    resources::find(group, "v1", plural, false)
}

/// Starts the controllers on the current runtime.
pub fn spawn(shared: &Arc<Shared>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(shared);
    let receivers = {
        let mut st = shared.lock_store();
        let since = st.rv();
        let mut open = |group: &str, plural: &str| {
            rt(group, plural).and_then(|r| st.watch(r.key(), None, since, false).ok())
        };
        (
            open(APPS, "deployments"),
            open(APPS, "replicasets"),
            open("", "pods"),
        )
    };
    let shutdown = shared.shutdown_rx();
    tokio::spawn(async move {
        if let (Some(d), Some(r), Some(p)) = receivers {
            run(weak, d, r, p, shutdown).await;
        }
    })
}

type Rx = mpsc::UnboundedReceiver<WatchMsg>;

async fn run(
    weak: Weak<Shared>,
    mut deployments: Rx,
    mut replicasets: Rx,
    mut pods: Rx,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (retry_tx, mut retries) = mpsc::unbounded_channel::<Work>();
    let mut failures: HashMap<Work, u32> = HashMap::new();
    loop {
        let mut queue = BTreeSet::new();
        tokio::select! {
            Some(m) = deployments.recv() => queue.extend(work_of(&m)),
            Some(m) = replicasets.recv() => queue.extend(work_of(&m)),
            Some(m) = pods.recv() => queue.extend(work_of(&m)),
            Some(w) = retries.recv() => { queue.insert(w); }
            _ = shutdown.changed() => return,
            else => return,
        }
        // Batch whatever else is already waiting.
        for rx in [&mut deployments, &mut replicasets, &mut pods] {
            while let Ok(m) = rx.try_recv() {
                queue.extend(work_of(&m));
            }
        }
        let Some(shared) = weak.upgrade() else { return };
        for work in queue {
            let outcome = {
                let mut st = shared.lock_store();
                match &work {
                    Work::Deployment(ns, name) => sync_deployment(&shared, &mut st, ns, name),
                    Work::ReplicaSet(ns, name) => {
                        let outcome = sync_replica_set(&shared, &mut st, ns, name);
                        // The Deployment controller also watches pods (a Recreate rollout
                        // waits for the old ones to be gone): look at the owner too.
                        if let Some(("Deployment", owner)) = owner_of_replica_set(&st, ns, name)
                            .as_ref()
                            .map(|(k, n)| (k.as_str(), n.clone()))
                        {
                            let _ = sync_deployment(&shared, &mut st, ns, &owner);
                        }
                        outcome
                    }
                }
            };
            match outcome {
                Outcome::Done => {
                    failures.remove(&work);
                }
                Outcome::Retry => {
                    let n = failures.entry(work.clone()).or_insert(0);
                    let delay = RETRY_BASE
                        .saturating_mul(2u32.saturating_pow(*n))
                        .min(RETRY_MAX);
                    *n = n.saturating_add(1);
                    requeue(&retry_tx, work, delay);
                }
                Outcome::After(delay) => requeue(&retry_tx, work, delay),
            }
        }
    }
}

fn requeue(tx: &mpsc::UnboundedSender<Work>, work: Work, delay: Duration) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tx.send(work);
    });
}

/// What a sync asks for next.
enum Outcome {
    Done,
    /// An error: retry with backoff.
    Retry,
    /// Look again later (e.g. when `minReadySeconds` will have passed).
    After(Duration),
}

/// The controller an object's event concerns: itself, or its controlling owner.
fn work_of(msg: &WatchMsg) -> Vec<Work> {
    let WatchMsg::Event(ev) = msg else {
        return Vec::new();
    };
    let obj = &ev.object;
    let ns = meta_str(obj, "namespace").to_string();
    let mut out = Vec::new();
    match (ev.key.group, ev.key.plural) {
        (APPS, "deployments") => {
            out.push(Work::Deployment(ns.clone(), meta_str(obj, "name").into()))
        }
        (APPS, "replicasets") => {
            out.push(Work::ReplicaSet(ns.clone(), meta_str(obj, "name").into()))
        }
        _ => {}
    }
    if let Some((kind, name)) = controller_of(obj) {
        match kind.as_str() {
            "Deployment" => out.push(Work::Deployment(ns, name)),
            "ReplicaSet" => out.push(Work::ReplicaSet(ns, name)),
            _ => {}
        }
    }
    out
}

fn owner_of_replica_set(st: &Store, ns: &str, name: &str) -> Option<(String, String)> {
    let rs = st.get(rt(APPS, "replicasets")?.key(), ns, name)?;
    controller_of(rs)
}

/// (kind, name) of the `controller: true` owner reference.
fn controller_of(obj: &Value) -> Option<(String, String)> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (s("kind"), s("name"))
        })
}

fn controlled_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && r.get("uid").and_then(Value::as_str) == Some(uid)
            })
        })
}

fn controller_ref(owner: &Value, kind: &str) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": kind, "name": meta_str(owner, "name"),
            "uid": meta_str(owner, "uid"), "controller": true, "blockOwnerDeletion": true}])
}

fn source(component: &str) -> Source {
    Source {
        component: component.into(),
        host: String::new(),
    }
}

fn event(
    shared: &Shared,
    st: &mut Store,
    component: &str,
    obj: &Value,
    kind: &str,
    reason: &str,
    message: &str,
) {
    recorder::record(
        shared,
        st,
        &source(component),
        obj,
        Note {
            kind,
            reason,
            message,
            field_path: None,
        },
    );
}

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

/// A pod counts for its ReplicaSet unless it is being deleted or has finished
/// (`controller.FilterActivePods`).
fn is_active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// The pod's `Ready` condition, with its transition time in seconds.
fn ready_since(pod: &Value) -> Option<u64> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some("Ready")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
        .map(|c| {
            c.get("lastTransitionTime")
                .and_then(Value::as_str)
                .and_then(util::parse_rfc3339)
                .unwrap_or(0)
        })
}

fn now_secs() -> u64 {
    util::parse_rfc3339(&util::now_rfc3339()).unwrap_or(0)
}

/// Writes `status` (and only it) if it changed.
fn write_status(st: &mut Store, rt: &'static ResourceType, old: &Value, status: Value) {
    if old.get("status") == Some(&status) {
        return;
    }
    let mut next = old.clone();
    next["status"] = status;
    let _ = api::write_update(st, rt, old, next, MANAGER, false);
}

/// Drops zero counters, as the `omitempty` fields of the apps/v1 status types are.
fn omit_zero(mut m: Map<String, Value>, keep: &[&str]) -> Value {
    m.retain(|k, v| keep.contains(&k.as_str()) || v.as_i64() != Some(0));
    Value::Object(m)
}

fn sync_replica_set(shared: &Shared, st: &mut Store, ns: &str, name: &str) -> Outcome {
    let (Some(rs_rt), Some(pod_rt)) = (rt(APPS, "replicasets"), rt("", "pods")) else {
        return Outcome::Done;
    };
    let Some(rs) = st.get(rs_rt.key(), ns, name).cloned() else {
        return Outcome::Done;
    };
    if rs.pointer("/metadata/deletionTimestamp").is_some() {
        return Outcome::Done;
    }
    let uid = meta_str(&rs, "uid").to_string();
    let owned = |st: &Store| -> Vec<Value> {
        st.list(pod_rt.key(), Some(ns))
            .into_iter()
            .filter(|p| controlled_by(p, &uid) && is_active(p))
            .cloned()
            .collect()
    };
    let active = owned(st);
    let desired = int(&rs, "/spec/replicas");
    let mut failure: Option<String> = None;
    let diff = desired - i64::try_from(active.len()).unwrap_or(i64::MAX);
    if diff > 0 {
        for _ in 0..diff {
            let pod = pod_from_template(&rs);
            match api::create_locked(shared, st, pod_rt, pod, MANAGER, false) {
                Ok(p) => {
                    let msg = format!("Created pod: {}", meta_str(&p, "name"));
                    event(
                        shared,
                        st,
                        "replicaset-controller",
                        &rs,
                        "Normal",
                        "SuccessfulCreate",
                        &msg,
                    );
                }
                Err(e) => {
                    let msg = format!("Error creating: {}", e.message);
                    event(
                        shared,
                        st,
                        "replicaset-controller",
                        &rs,
                        "Warning",
                        "FailedCreate",
                        &msg,
                    );
                    failure = Some(e.message);
                    break;
                }
            }
        }
    } else if diff < 0 {
        for pod in pods_to_delete(active, diff.unsigned_abs()) {
            let pod_name = meta_str(&pod, "name").to_string();
            if api::delete_pod_locked(shared, st, ns, &pod_name).is_ok() {
                let msg = format!("Deleted pod: {pod_name}");
                event(
                    shared,
                    st,
                    "replicaset-controller",
                    &rs,
                    "Normal",
                    "SuccessfulDelete",
                    &msg,
                );
            }
        }
    }
    let pods = owned(st);
    let min_ready = u64::try_from(int(&rs, "/spec/minReadySeconds")).unwrap_or(0);
    let now = now_secs();
    let ready: Vec<u64> = pods.iter().filter_map(ready_since).collect();
    let available = ready.iter().filter(|t| **t + min_ready <= now).count();
    let template_labels = rs
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            let l = util::labels(p);
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count();
    let mut status = Map::new();
    status.insert("replicas".into(), json!(pods.len()));
    status.insert("fullyLabeledReplicas".into(), json!(fully_labeled));
    status.insert("readyReplicas".into(), json!(ready.len()));
    status.insert("availableReplicas".into(), json!(available));
    status.insert(
        "observedGeneration".into(),
        json!(int(&rs, "/metadata/generation")),
    );
    if let Some(msg) = &failure {
        let since = replica_failure_since(&rs).unwrap_or_else(util::now_rfc3339);
        status.insert(
            "conditions".into(),
            json!([{"type": "ReplicaFailure", "status": "True", "lastTransitionTime": since,
                    "reason": "FailedCreate", "message": msg}]),
        );
    }
    write_status(st, rs_rt, &rs, omit_zero(status, &["replicas"]));
    if failure.is_some() {
        return Outcome::Retry;
    }
    // Pods that are ready but not yet available become available after minReadySeconds.
    let pending = ready
        .iter()
        .filter(|t| **t + min_ready > now)
        .map(|t| *t + min_ready - now)
        .min();
    match pending {
        Some(s) => Outcome::After(Duration::from_secs(s.max(1))),
        None => Outcome::Done,
    }
}

fn replica_failure_since(rs: &Value) -> Option<String> {
    rs.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("ReplicaFailure"))?
        .get("lastTransitionTime")?
        .as_str()
        .map(str::to_string)
}

/// `controller.GetPodFromTemplate`: labels, annotations and finalizers of the template,
/// `generateName: <rs>-`, the controller reference, the template's spec.
fn pod_from_template(rs: &Value) -> Value {
    let t = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut meta = json!({
        "generateName": format!("{}-", meta_str(rs, "name")),
        "namespace": meta_str(rs, "namespace"),
        "ownerReferences": controller_ref(rs, "ReplicaSet"),
    });
    for k in ["labels", "annotations", "finalizers"] {
        if let Some(v) = t.pointer(&format!("/metadata/{k}")) {
            meta[k] = v.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "spec": t.get("spec").cloned().unwrap_or(json!({}))})
}

/// `controller.ActivePods` order: unscheduled before scheduled, not ready before ready, newer
/// before older; the first `n` are deleted.
fn pods_to_delete(mut pods: Vec<Value>, n: u64) -> Vec<Value> {
    pods.sort_by_key(|p| {
        let scheduled = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        let ready = ready_since(p).is_some();
        let created = std::cmp::Reverse(
            p.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .and_then(util::parse_rfc3339)
                .unwrap_or(0),
        );
        (scheduled, ready, created)
    });
    pods.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    pods
}

/// An int-or-percent of `total` (`intstr.GetScaledValueFromIntOrPercent`).
fn scaled(v: Option<&Value>, total: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let x = pct * total;
            if round_up { (x + 99) / 100 } else { x / 100 }
        }
        _ => 0,
    }
}

/// (maxSurge, maxUnavailable) of a Deployment (`deploymentutil.ResolveFenceposts`).
fn fenceposts(d: &Value, desired: i64) -> (i64, i64) {
    if d.pointer("/spec/strategy/type").and_then(Value::as_str) != Some("RollingUpdate") {
        return (0, 0);
    }
    let surge = scaled(
        d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
        desired,
        true,
    );
    let unavailable = scaled(
        d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
        desired,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// The template without the `pod-template-hash` label (`EqualIgnoreHash`).
fn template_ignoring_hash(t: Option<&Value>) -> Value {
    let mut t = t.cloned().unwrap_or(Value::Null);
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(POD_TEMPLATE_HASH);
        if l.is_empty()
            && let Some(m) = t.pointer_mut("/metadata").and_then(Value::as_object_mut)
        {
            m.remove("labels");
        }
    }
    t
}

fn revision(obj: &Value) -> i64 {
    obj.pointer(&format!(
        "/metadata/annotations/{}",
        REVISION.replace('/', "~1")
    ))
    .and_then(Value::as_str)
    .and_then(|r| r.parse().ok())
    .unwrap_or(0)
}

/// A new ReplicaSet for the Deployment's current template (`getNewReplicaSet`).
fn new_replica_set(d: &Value, hash: &str, replicas: i64, surge: i64, rev: i64) -> Value {
    let mut template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
    let labels = template["metadata"]["labels"].clone();
    let mut spec = json!({"replicas": replicas, "selector": selector, "template": template});
    if let Some(m) = d.pointer("/spec/minReadySeconds") {
        spec["minReadySeconds"] = m.clone();
    }
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{}-{hash}", meta_str(d, "name")), "namespace": meta_str(d, "namespace"),
            "labels": labels,
            "annotations": {REVISION: rev.to_string(),
                            "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                            "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string()},
            "ownerReferences": controller_ref(d, "Deployment")},
        "spec": spec})
}

/// Sets a ReplicaSet's replica count (and the Deployment's annotations on it).
fn scale_replica_set(
    shared: &Shared,
    st: &mut Store,
    d: &Value,
    rs: &Value,
    replicas: i64,
    surge: i64,
) {
    let Some(rs_rt) = rt(APPS, "replicasets") else {
        return;
    };
    let old_scale = int(rs, "/spec/replicas");
    let mut next = rs.clone();
    next["spec"]["replicas"] = json!(replicas);
    let ann = &mut next["metadata"]["annotations"];
    ann["deployment.kubernetes.io/desired-replicas"] = json!(int(d, "/spec/replicas").to_string());
    ann["deployment.kubernetes.io/max-replicas"] =
        json!((int(d, "/spec/replicas") + surge).to_string());
    crate::strategy::prepare_update(rs_rt, rs, &mut next);
    if api::write_update(st, rs_rt, rs, next, MANAGER, false).is_ok() && old_scale != replicas {
        let op = if old_scale < replicas { "up" } else { "down" };
        let msg = format!(
            "Scaled {op} replica set {} from {old_scale} to {replicas}",
            meta_str(rs, "name")
        );
        event(
            shared,
            st,
            "deployment-controller",
            d,
            "Normal",
            "ScalingReplicaSet",
            &msg,
        );
    }
}

fn sync_deployment(shared: &Shared, st: &mut Store, ns: &str, name: &str) -> Outcome {
    let (Some(d_rt), Some(rs_rt)) = (rt(APPS, "deployments"), rt(APPS, "replicasets")) else {
        return Outcome::Done;
    };
    let Some(d) = st.get(d_rt.key(), ns, name).cloned() else {
        return Outcome::Done;
    };
    if d.pointer("/metadata/deletionTimestamp").is_some() {
        return Outcome::Done;
    }
    let uid = meta_str(&d, "uid").to_string();
    let owned = |st: &Store| -> Vec<Value> {
        st.list(rs_rt.key(), Some(ns))
            .into_iter()
            .filter(|r| controlled_by(r, &uid))
            .cloned()
            .collect()
    };
    let desired = int(&d, "/spec/replicas");
    let (surge, max_unavailable) = fenceposts(&d, desired);
    let recreate = d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");
    let template = template_ignoring_hash(d.pointer("/spec/template"));
    let rss = owned(st);
    let (current, mut old): (Vec<Value>, Vec<Value>) = rss
        .into_iter()
        .partition(|r| template_ignoring_hash(r.pointer("/spec/template")) == template);
    old.sort_by_key(|r| {
        r.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(util::parse_rfc3339)
            .unwrap_or(0)
    });
    let old_total: i64 = old.iter().map(|r| int(r, "/spec/replicas")).sum();
    let mut created = None;
    let new_rs = match current.into_iter().next() {
        Some(rs) => Some(rs),
        // Recreate creates the new ReplicaSet once the old pods are gone.
        None if recreate && (old_total > 0 || old_pods_exist(st, ns, &old)) => None,
        None => {
            let replicas = if recreate {
                desired
            } else {
                new_rs_replicas(desired, surge, old_total, 0)
            };
            let collisions = d.pointer("/status/collisionCount").and_then(Value::as_i64);
            let hash = workloads::pod_template_hash(&template, collisions);
            let rev = old.iter().map(revision).max().unwrap_or(0) + 1;
            let rs = new_replica_set(&d, &hash, replicas, surge, rev);
            match api::create_locked(shared, st, rs_rt, rs, MANAGER, false) {
                Ok(rs) => {
                    let msg = format!(
                        "Scaled up replica set {} from 0 to {replicas}",
                        meta_str(&rs, "name")
                    );
                    event(
                        shared,
                        st,
                        "deployment-controller",
                        &d,
                        "Normal",
                        "ScalingReplicaSet",
                        &msg,
                    );
                    created = Some(meta_str(&rs, "name").to_string());
                    Some(rs)
                }
                Err(e) if e.code == 409 => {
                    // A ReplicaSet of that name with another template: hash again with a
                    // higher collision count.
                    let mut status = d.get("status").cloned().unwrap_or(json!({}));
                    status["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
                    write_status(st, d_rt, &d, status);
                    return Outcome::Retry;
                }
                Err(_) => return Outcome::Retry,
            }
        }
    };
    let rollout = Rollout {
        d: &d,
        desired,
        surge,
        max_unavailable,
    };
    if created.is_none() {
        if recreate {
            rollout.recreate(shared, st, ns, new_rs.as_ref(), &old);
        } else if let Some(new_rs) = &new_rs {
            rollout.rolling(shared, st, new_rs, &mut old);
        }
    }
    let new_name = new_rs
        .as_ref()
        .map(|r| meta_str(r, "name").to_string())
        .unwrap_or_default();
    // The Deployment carries the revision of its current ReplicaSet.
    let mut d = st.get(d_rt.key(), ns, name).cloned().unwrap_or(d);
    if let Some(new_rs) = &new_rs {
        let rev = revision(new_rs).to_string();
        if revision(&d).to_string() != rev {
            let mut next = d.clone();
            next["metadata"]["annotations"][REVISION] = json!(rev);
            if let Ok(stored) = api::write_update(st, d_rt, &d, next, MANAGER, false) {
                d = stored;
            }
        }
    }
    let status = deployment_status(
        &d,
        &owned(st),
        &new_name,
        created.as_deref(),
        max_unavailable,
    );
    write_status(st, d_rt, &d, status);
    Outcome::Done
}

/// Whether any pod (even terminating) of the old ReplicaSets remains.
fn old_pods_exist(st: &Store, ns: &str, old: &[Value]) -> bool {
    let Some(pods) = rt("", "pods") else {
        return false;
    };
    st.list(pods.key(), Some(ns))
        .into_iter()
        .any(|p| old.iter().any(|r| controlled_by(p, meta_str(r, "uid"))))
}

/// `NewRSNewReplicas` for RollingUpdate: grow the new ReplicaSet as far as `maxSurge` allows.
fn new_rs_replicas(desired: i64, surge: i64, others: i64, current: i64) -> i64 {
    let max_total = desired + surge;
    let total = others + current;
    if total >= max_total {
        return current;
    }
    current + (max_total - total).min(desired - current)
}

/// One Deployment's rollout step (`rolling.go`, `recreate.go`).
struct Rollout<'a> {
    /// The Deployment.
    d: &'a Value,
    /// Its `spec.replicas`.
    desired: i64,
    /// Resolved `maxSurge` and `maxUnavailable`.
    surge: i64,
    max_unavailable: i64,
}

impl Rollout<'_> {
    /// `rolloutRolling`: scale the new ReplicaSet up within `maxSurge`; otherwise scale old ones
    /// down, unhealthy pods first, keeping `desired - maxUnavailable` available.
    fn rolling(&self, shared: &Shared, st: &mut Store, new_rs: &Value, old: &mut [Value]) {
        let new_replicas = int(new_rs, "/spec/replicas");
        let old_total: i64 = old.iter().map(|r| int(r, "/spec/replicas")).sum();
        if new_replicas > self.desired {
            scale_replica_set(shared, st, self.d, new_rs, self.desired, self.surge);
            return;
        }
        if new_replicas < self.desired {
            let target = new_rs_replicas(self.desired, self.surge, old_total, new_replicas);
            if target != new_replicas {
                scale_replica_set(shared, st, self.d, new_rs, target, self.surge);
                return;
            }
        }
        if old_total == 0 {
            return;
        }
        let min_available = self.desired - self.max_unavailable;
        let new_unavailable = new_replicas - int(new_rs, "/status/availableReplicas");
        let max_down = old_total + new_replicas - min_available - new_unavailable;
        if max_down <= 0 {
            return;
        }
        // cleanupUnhealthyReplicas
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            let spec = int(rs, "/spec/replicas");
            let unhealthy = spec - int(rs, "/status/availableReplicas");
            if cleaned >= max_down || spec == 0 || unhealthy <= 0 {
                continue;
            }
            let down = unhealthy.min(max_down - cleaned);
            scale_replica_set(shared, st, self.d, rs, spec - down, self.surge);
            rs["spec"]["replicas"] = json!(spec - down);
            cleaned += down;
        }
        // scaleDownOldReplicaSetsForRollingUpdate
        let available = int(new_rs, "/status/availableReplicas")
            + old
                .iter()
                .map(|r| int(r, "/status/availableReplicas"))
                .sum::<i64>();
        if available <= min_available {
            return;
        }
        let total = available - min_available;
        let mut scaled = 0;
        for rs in old.iter_mut() {
            let spec = int(rs, "/spec/replicas");
            if scaled >= total || spec == 0 {
                continue;
            }
            let down = spec.min(total - scaled);
            scale_replica_set(shared, st, self.d, rs, spec - down, self.surge);
            rs["spec"]["replicas"] = json!(spec - down);
            scaled += down;
        }
    }

    /// `rolloutRecreate`: old ReplicaSets to 0, wait for their pods to go, then the new one up.
    fn recreate(
        &self,
        shared: &Shared,
        st: &mut Store,
        ns: &str,
        new_rs: Option<&Value>,
        old: &[Value],
    ) {
        let mut scaled = false;
        for rs in old.iter().filter(|r| int(r, "/spec/replicas") > 0) {
            scale_replica_set(shared, st, self.d, rs, 0, self.surge);
            scaled = true;
        }
        if scaled || old_pods_exist(st, ns, old) {
            return;
        }
        if let Some(new_rs) = new_rs
            && int(new_rs, "/spec/replicas") != self.desired
        {
            scale_replica_set(shared, st, self.d, new_rs, self.desired, self.surge);
        }
    }
}

/// `calculateStatus` plus the conditions of `syncRolloutStatus`.
fn deployment_status(
    d: &Value,
    rss: &[Value],
    new_name: &str,
    created: Option<&str>,
    max_unavailable: i64,
) -> Value {
    let sum = |p: &str| rss.iter().map(|r| int(r, p)).sum::<i64>();
    let desired = int(d, "/spec/replicas");
    let replicas = sum("/status/replicas");
    let available = sum("/status/availableReplicas");
    let updated = rss
        .iter()
        .find(|r| meta_str(r, "name") == new_name)
        .map_or(0, |r| int(r, "/status/replicas"));
    let mut s = Map::new();
    s.insert(
        "observedGeneration".into(),
        json!(int(d, "/metadata/generation")),
    );
    s.insert("replicas".into(), json!(replicas));
    s.insert("updatedReplicas".into(), json!(updated));
    s.insert("readyReplicas".into(), json!(sum("/status/readyReplicas")));
    s.insert("availableReplicas".into(), json!(available));
    s.insert(
        "unavailableReplicas".into(),
        json!((sum("/spec/replicas") - available).max(0)),
    );
    if let Some(c) = d.pointer("/status/collisionCount") {
        s.insert("collisionCount".into(), c.clone());
    }
    let old_conditions = d.pointer("/status/conditions").and_then(Value::as_array);
    let previous = |t: &str| {
        old_conditions
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
            .cloned()
    };
    let now = util::now_rfc3339();
    let condition = |t: &str, status: &str, reason: &str, message: String| {
        let prev = previous(t);
        let same = |k: &str, v: &str| {
            prev.as_ref().and_then(|p| p.get(k)).and_then(Value::as_str) == Some(v)
        };
        let transition = if same("status", status) {
            prev.as_ref()
                .and_then(|p| p.get("lastTransitionTime").cloned())
                .unwrap_or(json!(now))
        } else {
            json!(now)
        };
        let update =
            if same("status", status) && same("reason", reason) && same("message", &message) {
                prev.as_ref()
                    .and_then(|p| p.get("lastUpdateTime").cloned())
                    .unwrap_or(json!(now))
            } else {
                json!(now)
            };
        json!({"type": t, "status": status, "lastUpdateTime": update,
               "lastTransitionTime": transition, "reason": reason, "message": message})
    };
    let available_cond = if available >= desired - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let complete = updated == desired && replicas == desired && available == desired;
    // Messages name the new ReplicaSet, or the Deployment while there is none (Recreate).
    let subject = if new_name.is_empty() {
        format!("Deployment {:?}", meta_str(d, "name"))
    } else {
        format!("ReplicaSet {new_name:?}")
    };
    let progressing = if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("{subject} has successfully progressed."),
        )
    } else if let Some(c) = created {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set {c:?}"),
        )
    } else {
        match previous("Progressing") {
            Some(p) if p.get("reason").and_then(Value::as_str) == Some("NewReplicaSetCreated") => p,
            _ => condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("{subject} is progressing."),
            ),
        }
    };
    s.insert("conditions".into(), json!([available_cond, progressing]));
    omit_zero(s, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_like_intstr() {
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}});
        assert_eq!(fenceposts(&d, 2), (1, 0));
        assert_eq!(fenceposts(&d, 4), (1, 1));
        assert_eq!(
            fenceposts(&json!({"spec": {"strategy": {"type": "Recreate"}}}), 3),
            (0, 0)
        );
        let zero = json!({"spec": {"strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}});
        assert_eq!(fenceposts(&zero, 3), (0, 1));
    }

    #[test]
    fn new_replica_sets_grow_within_max_surge() {
        // 3 desired, surge 1: a new ReplicaSet beside 3 old pods starts with 1.
        assert_eq!(new_rs_replicas(3, 1, 3, 0), 1);
        assert_eq!(new_rs_replicas(3, 1, 2, 1), 2);
        assert_eq!(new_rs_replicas(3, 1, 0, 2), 3);
        assert_eq!(new_rs_replicas(3, 0, 3, 0), 0);
        assert_eq!(new_rs_replicas(2, 1, 0, 0), 2);
    }

    #[test]
    fn pods_from_templates_are_owned() {
        let rs = json!({"metadata": {"name": "web-abc", "namespace": "n", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}});
        let p = pod_from_template(&rs);
        assert_eq!(p["metadata"]["generateName"], "web-abc-");
        assert_eq!(p["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            p["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u1",
                    "controller": true, "blockOwnerDeletion": true}])
        );
        assert!(controlled_by(&p, "u1"));
    }

    #[test]
    fn deletion_prefers_unscheduled_and_unready_pods() {
        let pod = |name: &str, node: &str, ready: bool| {
            let mut p = json!({"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
                               "spec": {"nodeName": node}});
            if ready {
                p["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
            }
            p
        };
        let chosen = pods_to_delete(
            vec![
                pod("ready", "n", true),
                pod("unready", "n", false),
                pod("unscheduled", "", false),
            ],
            2,
        );
        let names: Vec<&str> = chosen.iter().map(|p| meta_str(p, "name")).collect();
        assert_eq!(names, ["unscheduled", "unready"]);
    }
}

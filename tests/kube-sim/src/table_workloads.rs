//! Server-side printing of pods, Deployments, ReplicaSets and Events: the columns and cells of
//! kubernetes/kubernetes `pkg/printers/internalversion/printers.go` (`printPod`,
//! `printDeployment`, `printReplicaSet`, `printEvent`), with every column filled as the
//! apiserver does (it prints wide; kubectl hides priority-1 columns without `-o wide`).

use crate::resources::ResourceType;
use crate::table::{age, since};
use crate::util::meta_str;
use serde_json::{Value, json};

type Columns = Vec<(&'static str, &'static str, u8)>;

/// Column definitions of the kinds printed here.
pub fn columns(rt: &ResourceType) -> Option<Columns> {
    Some(match (rt.group, rt.plural) {
        ("", "pods") => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("apps", "deployments") => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "replicasets") => vec![
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("", "events") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "integer", 1),
            ("Name", "string", 1),
        ],
        _ => return None,
    })
}

/// The cells of one object.
pub fn cells(rt: &ResourceType, obj: &Value) -> Option<Vec<Value>> {
    Some(match (rt.group, rt.plural) {
        ("", "pods") => pod_cells(obj),
        ("apps", "deployments") => {
            let (containers, images, selector) = template_columns(obj);
            vec![
                json!(meta_str(obj, "name")),
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                json!(age(obj)),
                json!(containers),
                json!(images),
                json!(selector),
            ]
        }
        ("apps", "replicasets") => {
            let (containers, images, selector) = template_columns(obj);
            vec![
                json!(meta_str(obj, "name")),
                json!(int(obj, "/spec/replicas")),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                json!(age(obj)),
                json!(containers),
                json!(images),
                json!(selector),
            ]
        }
        ("", "events") => event_cells(obj),
        _ => return None,
    })
}

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

/// CONTAINERS, IMAGES and SELECTOR of a workload with a pod template.
fn template_columns(obj: &Value) -> (String, String, String) {
    let containers: Vec<&Value> = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    let selector = crate::workloads::selector_string(obj.pointer("/spec/selector"));
    (names.join(","), images.join(","), or_none(&selector))
}

/// `printPod`: READY counts ready running containers; STATUS is the phase (or `status.reason`)
/// overridden by a waiting or terminated container's reason, and `Terminating` while deleted.
fn pod_cells(pod: &Value) -> Vec<Value> {
    let statuses: Vec<&Value> = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut reason = match str_at(pod, "/status/reason") {
        "" => str_at(pod, "/status/phase").to_string(),
        r => r.to_string(),
    };
    let mut ready = 0;
    let mut restarts = 0;
    let mut running = false;
    for c in statuses.iter().rev() {
        restarts += int(c, "/restartCount");
        let waiting = str_at(c, "/state/waiting/reason");
        let terminated = c.pointer("/state/terminated");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if let Some(t) = terminated {
            reason = match str_at(t, "/reason") {
                "" if int(t, "/signal") != 0 => format!("Signal:{}", int(t, "/signal")),
                "" => format!("ExitCode:{}", int(t, "/exitCode")),
                r => r.to_string(),
            };
        } else if c.get("ready").and_then(Value::as_bool) == Some(true)
            && c.pointer("/state/running").is_some()
        {
            running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && running {
        reason = "Running".into();
    }
    let terminal = matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed");
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        if str_at(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if !terminal {
            reason = "Terminating".into();
        }
    }
    vec![
        json!(meta_str(pod, "name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age(pod)),
        json!(or_none(str_at(pod, "/status/podIP"))),
        json!(or_none(str_at(pod, "/spec/nodeName"))),
        json!(or_none(str_at(pod, "/status/nominatedNodeName"))),
        json!("<none>"),
    ]
}

/// `printEvent` (wide): LAST SEEN, TYPE, REASON, OBJECT, SUBOBJECT, SOURCE, MESSAGE, FIRST SEEN,
/// COUNT, NAME.
fn event_cells(e: &Value) -> Vec<Value> {
    let first = since(e.get("firstTimestamp"));
    let last = match e.get("lastTimestamp") {
        Some(Value::String(_)) => since(e.get("lastTimestamp")),
        _ => first.clone(),
    };
    let kind = str_at(e, "/involvedObject/kind").to_lowercase();
    let target = match str_at(e, "/involvedObject/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let source = match (str_at(e, "/source/component"), str_at(e, "/source/host")) {
        ("", _) => str_at(e, "/reportingComponent").to_string(),
        (c, "") => c.to_string(),
        (c, h) => format!("{c}, {h}"),
    };
    vec![
        json!(last),
        json!(str_at(e, "/type")),
        json!(str_at(e, "/reason")),
        json!(target),
        json!(str_at(e, "/involvedObject/fieldPath")),
        json!(source),
        json!(str_at(e, "/message").trim()),
        json!(first),
        json!(int(e, "/count")),
        json!(meta_str(e, "name")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pod: Value) -> Value {
        pod_cells(&pod).get(2).cloned().unwrap_or(Value::Null)
    }

    #[test]
    fn pod_status_column_as_kubectl_shows_it() {
        let c = json!({"containers": [{"name": "a"}]});
        assert_eq!(
            status(json!({"spec": c, "status": {"phase": "Pending"}})),
            "Pending"
        );
        let waiting = |r: &str| {
            json!({"spec": c, "status": {"phase": "Pending",
            "containerStatuses": [{"state": {"waiting": {"reason": r}}}]}})
        };
        for r in ["ContainerCreating", "ErrImagePull", "ImagePullBackOff"] {
            assert_eq!(status(waiting(r)), r);
        }
        let running = json!({"spec": c, "status": {"phase": "Running",
            "containerStatuses": [{"ready": true, "state": {"running": {}}}]}});
        let cells = pod_cells(&running);
        assert_eq!(
            (cells[1].clone(), cells[2].clone()),
            (json!("1/1"), json!("Running"))
        );
        let mut deleting = running;
        deleting["metadata"] = json!({"deletionTimestamp": "2026-01-01T00:00:00Z"});
        assert_eq!(status(deleting), "Terminating");
    }
}

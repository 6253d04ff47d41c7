//! Events written by kube-sim's own components (kubelet, ReplicaSet and Deployment
//! controllers), as client-go's legacy `record.EventRecorder` writes them: a core/v1 Event named
//! `<object>.<hex unix nanos>` with `source`, `reportingComponent` and `first/lastTimestamp`;
//! an identical event (same source, object, type, reason and message — the EventCorrelator's
//! key) bumps `count` and `lastTimestamp` instead of creating another. The aggregation of
//! *similar* events ("combined from similar events") and the spam filter are not modelled.
//! Called with the store locked; never blocks.

use crate::api;
use crate::resources::{self, ResourceType};
use crate::server::Shared;
use crate::store::Store;
use crate::util::{self, meta_str};
use serde_json::{Value, json};

/// Who reports an event (`EventSource`).
#[derive(Debug, Clone)]
pub struct Source {
    /// `source.component`: `kubelet`, `replicaset-controller`, `deployment-controller`.
    pub component: String,
    /// `source.host`: the node of a kubelet, empty for controllers.
    pub host: String,
}

/// What one event says.
#[derive(Debug, Clone, Copy)]
pub struct Note<'a> {
    /// `Normal` or `Warning`.
    pub kind: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
    /// `involvedObject.fieldPath`, e.g. `spec.containers{app}` for container events.
    pub field_path: Option<&'a str>,
}

fn events_rt() -> Option<&'static ResourceType> {
    resources::find("", "v1", "events", false)
}

/// `reference.GetReference` of the object, plus the field path.
fn involved(object: &Value, field_path: Option<&str>) -> Value {
    let mut r = json!({
        "kind": object.get("kind").cloned().unwrap_or(json!("")),
        "namespace": meta_str(object, "namespace"),
        "name": meta_str(object, "name"),
        "uid": meta_str(object, "uid"),
        "apiVersion": object.get("apiVersion").cloned().unwrap_or(json!("")),
        "resourceVersion": meta_str(object, "resourceVersion"),
    });
    if let Some(f) = field_path {
        r["fieldPath"] = json!(f);
    }
    r
}

/// The correlator's key fields of an event.
fn same_event(e: &Value, source: &Source, inv: &Value, note: &Note<'_>) -> bool {
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    s(e, "/source/component") == source.component
        && s(e, "/source/host") == source.host
        && [
            "kind",
            "namespace",
            "name",
            "uid",
            "apiVersion",
            "fieldPath",
        ]
        .iter()
        .all(|k| s(e, &format!("/involvedObject/{k}")) == s(inv, &format!("/{k}")))
        && s(e, "/type") == note.kind
        && s(e, "/reason") == note.reason
        && s(e, "/message") == note.message
}

/// Records an event about `object` (which must carry apiVersion, kind and metadata).
pub fn record(shared: &Shared, st: &mut Store, source: &Source, object: &Value, note: Note<'_>) {
    let Some(rt) = events_rt() else { return };
    let ns = match meta_str(object, "namespace") {
        "" => "default".to_string(),
        n => n.to_string(),
    };
    let inv = involved(object, note.field_path);
    let now = util::now_rfc3339();
    let existing = st
        .list(rt.key(), Some(&ns))
        .into_iter()
        .find(|e| same_event(e, source, &inv, &note))
        .cloned();
    if let Some(old) = existing {
        let mut next = old.clone();
        let count = old.get("count").and_then(Value::as_i64).unwrap_or(1);
        next["count"] = json!(count + 1);
        next["lastTimestamp"] = json!(now);
        let _ = api::write_update(st, rt, &old, next, &source.component, false);
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut name = format!("{}.{nanos:x}", meta_str(object, "name"));
    while st.get(rt.key(), &ns, &name).is_some() {
        name.push('0');
    }
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": inv,
        "reason": note.reason, "message": note.message, "type": note.kind,
        "source": if source.host.is_empty() { json!({"component": source.component}) }
                  else { json!({"component": source.component, "host": source.host}) },
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "eventTime": Value::Null,
        "reportingComponent": source.component, "reportingInstance": source.host,
    });
    let _ = api::create_locked(shared, st, rt, event, &source.component, false);
}

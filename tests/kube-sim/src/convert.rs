//! Conversion between `v1` Events and `events.k8s.io/v1` Events. Both APIs serve one storage (as
//! in the apiserver), so an Event written by kube-runtime's Recorder (events.k8s.io) is what
//! `kubectl get events` (v1) lists. Field mapping of k8s.io/kubernetes `pkg/apis/events/v1`.

use crate::resources::ResourceType;
use serde_json::Value;

/// (events.k8s.io/v1 name, v1 name) for the fields that differ.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// Whether requests for this resource are converted to and from stored `v1` Events.
pub fn is_events_v1(rt: &ResourceType) -> bool {
    rt.group == "events.k8s.io" && rt.plural == "events"
}

fn rename(obj: &mut Value, to_core: bool, api_version: &str) {
    let Some(m) = obj.as_object_mut() else { return };
    for (new, old) in RENAMES {
        let (from, to) = if to_core { (new, old) } else { (old, new) };
        if let Some(v) = m.remove(*from) {
            m.insert((*to).to_string(), v);
        }
    }
    if m.contains_key("apiVersion") {
        m.insert("apiVersion".into(), Value::String(api_version.into()));
    }
}

/// An events.k8s.io/v1 Event as a stored v1 Event.
pub fn to_core(obj: &mut Value) {
    rename(obj, true, "v1");
}

/// A stored v1 Event (or an EventList reply) as events.k8s.io/v1.
pub fn from_core(obj: &mut Value) {
    if let Some(items) = obj.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            rename(item, false, "events.k8s.io/v1");
        }
        return;
    }
    if obj.get("kind").and_then(Value::as_str) == Some("Status") {
        return;
    }
    rename(obj, false, "events.k8s.io/v1");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "note": "n", "regarding": {"name": "x"},
                         "reportingController": "pullsecretd", "reason": "Synced"});
        let mut v = new.clone();
        to_core(&mut v);
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Event", "message": "n", "involvedObject": {"name": "x"},
                   "reportingComponent": "pullsecretd", "reason": "Synced"})
        );
        from_core(&mut v);
        assert_eq!(v, new);
    }
}

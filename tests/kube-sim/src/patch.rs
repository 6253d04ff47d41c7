//! Strategic merge patch with the list rules of the served kinds (apimachinery
//! `strategicpatch/patch.go`): only lists tagged `patchStrategy:"merge"` are merged (a
//! ServiceAccount's `secrets` by `name`, `metadata.ownerReferences` by `uid`,
//! `metadata.finalizers` as a set; in pod specs `containers`, `env`, `volumes` and
//! `imagePullSecrets` by `name`, `ports` by `containerPort`, `volumeMounts` by `mountPath`;
//! status `conditions` by `type`); every other list, a ServiceAccount's `imagePullSecrets`
//! included, is replaced whole. JSON patch and merge patch come from `json-patch`.

use crate::status::{ApiError, ApiResult};
use serde_json::{Map, Value};

/// How a list field behaves under strategic merge patch and server-side apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// Replaced whole (`+listType=atomic`, no patchStrategy).
    Atomic,
    /// Merged by key (`patchStrategy:"merge" patchMergeKey:"name"`, `+listType=map`).
    Map(&'static str),
    /// Merged as a set of scalars (`+listType=set`, finalizers).
    Set,
}

/// The list schema of the served kinds, by field path (names only, list items skipped).
pub fn list_kind(kind: &str, path: &[&str]) -> ListKind {
    match (kind, path) {
        (_, ["metadata", "finalizers"]) => ListKind::Set,
        (_, ["metadata", "ownerReferences"]) => ListKind::Map("uid"),
        ("ServiceAccount", ["secrets"]) => ListKind::Map("name"),
        ("Pod", ["spec", rest @ ..]) => pod_spec_list(rest),
        ("Deployment" | "ReplicaSet", ["spec", "template", "spec", rest @ ..]) => {
            pod_spec_list(rest)
        }
        ("Pod" | "Deployment" | "ReplicaSet", ["status", "conditions"]) => ListKind::Map("type"),
        _ => ListKind::Atomic,
    }
}

/// Lists of a PodSpec tagged `patchStrategy:"merge"` (k8s.io/api core/v1 types.go).
fn pod_spec_list(path: &[&str]) -> ListKind {
    match path {
        ["containers" | "initContainers" | "ephemeralContainers"]
        | ["containers" | "initContainers", "env"]
        | ["volumes"]
        | ["imagePullSecrets"] => ListKind::Map("name"),
        ["containers" | "initContainers", "ports"] => ListKind::Map("containerPort"),
        ["containers" | "initContainers", "volumeMounts"] => ListKind::Map("mountPath"),
        _ => ListKind::Atomic,
    }
}

/// Applies a strategic merge patch to `original`.
pub fn strategic_merge(kind: &str, original: &Value, patch: &Value) -> ApiResult<Value> {
    let Value::Object(p) = patch else {
        return Err(ApiError::bad_request(
            "error decoding patch: json: cannot unmarshal into Go value of type map[string]interface {}",
        ));
    };
    let o = original.as_object().cloned().unwrap_or_default();
    Ok(Value::Object(merge_map(kind, &mut Vec::new(), o, p)?))
}

fn merge_map(
    kind: &str,
    path: &mut Vec<String>,
    mut orig: Map<String, Value>,
    patch: &Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = patch.clone();
            p.remove("$patch");
            return Ok(strip_directives(p));
        }
        Some("delete") => return Ok(Map::new()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Unknown patch type: {other}"
            )));
        }
        None => {}
    }
    let before = orig.clone();
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in patch {
        if k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (orig.get_mut(field), pv) {
                list.retain(|v| !del.contains(v));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        path.push(k.clone());
        match pv {
            Value::Null => {
                orig.remove(k);
            }
            Value::Object(pm) => {
                let cur = match orig.remove(k) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                let merged = merge_map(kind, path, cur, pm)?;
                if pm.get("$patch").and_then(Value::as_str) != Some("delete") {
                    orig.insert(k.clone(), Value::Object(merged));
                }
            }
            Value::Array(pl) => {
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                let merged = match list_kind(kind, &names) {
                    ListKind::Atomic => Value::Array(pl.iter().map(|v| strip(v.clone())).collect()),
                    ListKind::Set => {
                        let mut cur = match orig.remove(k) {
                            Some(Value::Array(a)) => a,
                            _ => Vec::new(),
                        };
                        let original = cur.clone();
                        for v in pl {
                            if !cur.contains(v) {
                                cur.push(v.clone());
                            }
                        }
                        // mergeSlice enforces the patch's order, server-only items interleaved.
                        Value::Array(normalize_element_order(cur, pl, &original, None))
                    }
                    ListKind::Map(key) => {
                        let cur = match orig.remove(k) {
                            Some(Value::Array(a)) => a,
                            _ => Vec::new(),
                        };
                        Value::Array(merge_keyed_list(kind, path, cur, pl, key)?)
                    }
                };
                orig.insert(k.clone(), merged);
            }
            scalar => {
                orig.insert(k.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    // `$setElementOrder/<list>`: the order kubectl wants for a merged list.
    for (k, order) in patch {
        let (Some(field), Value::Array(order)) = (k.strip_prefix("$setElementOrder/"), order)
        else {
            continue;
        };
        path.push(field.to_string());
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        let key = match list_kind(kind, &names) {
            ListKind::Map(key) => Some(key),
            ListKind::Set => None,
            ListKind::Atomic => {
                path.pop();
                continue;
            }
        };
        path.pop();
        let original = before
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(merged)) = orig.get_mut(field) {
            *merged = normalize_element_order(std::mem::take(merged), order, &original, key);
        }
    }
    Ok(orig)
}

/// apimachinery `normalizeElementOrder` + `mergeSortedSlice`: items named in the order list
/// follow it; the others keep their live order, interleaved by their position in the live list.
fn normalize_element_order(
    merged: Vec<Value>,
    order: &[Value],
    original: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let id = |v: &Value| match key {
        Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
        None => v.clone(),
    };
    let order_ids: Vec<Value> = order.iter().map(id).collect();
    let server_ids: Vec<Value> = original.iter().map(id).collect();
    let pos = |ids: &[Value], v: &Value| ids.iter().position(|x| *x == id(v));
    let (mut both, mut only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| pos(&order_ids, v).is_some());
    both.sort_by_key(|v| pos(&order_ids, v));
    only.sort_by_key(|v| pos(&server_ids, v).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(both.len() + only.len());
    let (mut left, mut right) = (only.into_iter().peekable(), both.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
            (Some(l), Some(r)) => match (pos(&server_ids, l), pos(&server_ids, r)) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
    out
}

fn merge_keyed_list(
    kind: &str,
    path: &mut Vec<String>,
    mut cur: Vec<Value>,
    patch: &[Value],
    key: &str,
) -> ApiResult<Vec<Value>> {
    // `[{"$patch": "replace"}, ...]` replaces the whole list with the other items.
    if patch
        .iter()
        .any(|v| v.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|v| v.get("$patch").is_none())
            .map(|v| strip(v.clone()))
            .collect());
    }
    // Deletions first (mergeSliceWithSpecialElements), then merges; the live list left after
    // the deletions is the order server-only items keep.
    for item in patch {
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            let Some(kv) = item.get(key) else {
                return Err(ApiError::bad_request(format!(
                    "map: {item} does not contain declared merge key: {key}"
                )));
            };
            cur.retain(|c| c.get(key) != Some(kv));
        }
    }
    let original = cur.clone();
    let mut order = Vec::new();
    for item in patch {
        let Some(pm) = item.as_object() else {
            return Err(ApiError::bad_request(format!(
                "unable to find api field in struct for the merge key {key:?}: list items must be objects"
            )));
        };
        let Some(kv) = pm.get(key) else {
            return Err(ApiError::bad_request(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        if pm.get("$patch").is_some() {
            continue;
        }
        order.push(item.clone());
        let pos = cur.iter().position(|c| c.get(key) == Some(kv));
        match pos {
            Some(i) => {
                let o = cur[i].as_object().cloned().unwrap_or_default();
                cur[i] = Value::Object(merge_map(kind, path, o, pm)?);
            }
            None => cur.push(strip(item.clone())),
        }
    }
    Ok(normalize_element_order(cur, &order, &original, Some(key)))
}

fn strip_directives(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k, strip(v)))
        .collect()
}

/// Removes `$`-directives from values that are inserted as they are.
fn strip(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(a) => Value::Array(a.into_iter().map(strip).collect()),
        other => other,
    }
}

/// RFC 6902: a malformed patch is 400; one that fails (`test`, missing path) is 422.
pub fn json_patch(original: &Value, patch: &Value) -> ApiResult<Value> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("json: cannot unmarshal patch: {e}")))?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| ApiError::unprocessable(&e.to_string()))?;
    Ok(doc)
}

/// RFC 7386: every list is replaced.
pub fn merge_patch(original: &Value, patch: &Value) -> ApiResult<Value> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "error decoding patch: json: cannot unmarshal into Go value of type map[string]interface {}",
        ));
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sa() -> Value {
        json!({"kind": "ServiceAccount", "metadata": {"name": "default", "finalizers": ["a"]},
               "secrets": [{"name": "default-dockercfg-x"}, {"name": "other"}],
               "imagePullSecrets": [{"name": "default-dockercfg-x"}]})
    }

    #[test]
    fn image_pull_secrets_are_replaced() {
        let out = strategic_merge(
            "ServiceAccount",
            &sa(),
            &json!({"imagePullSecrets": [{"name": "mine"}]}),
        );
        assert_eq!(
            out.ok().and_then(|o| o.get("imagePullSecrets").cloned()),
            Some(json!([{"name": "mine"}]))
        );
    }

    #[test]
    fn secrets_merge_by_name_and_delete() {
        let p = json!({"secrets": [{"name": "mine"}, {"name": "other", "$patch": "delete"}],
                       "$setElementOrder/secrets": [{"name": "mine"}]});
        let out = strategic_merge("ServiceAccount", &sa(), &p);
        assert_eq!(
            out.ok().and_then(|o| o.get("secrets").cloned()),
            // The ordered item first: a server-only item goes before a patch item only when
            // both are in the live list.
            Some(json!([{"name": "mine"}, {"name": "default-dockercfg-x"}]))
        );
    }

    #[test]
    fn merged_lists_take_the_patch_order() {
        // apimachinery mergeSlice: patch items first unless both are in the live list.
        let live = json!({"secrets": [{"name": "ddx"}, {"name": "other"}]});
        let out = strategic_merge(
            "ServiceAccount",
            &live,
            &json!({"secrets": [{"name": "mine"}]}),
        );
        assert_eq!(
            out.unwrap_or_default()["secrets"],
            json!([{"name": "mine"}, {"name": "ddx"}, {"name": "other"}])
        );
        let p = json!({"secrets": [{"name": "other"}, {"name": "ddx"}]});
        let out = strategic_merge("ServiceAccount", &live, &p).unwrap_or_default();
        assert_eq!(out["secrets"], json!([{"name": "other"}, {"name": "ddx"}]));
    }

    #[test]
    fn set_element_order_as_kubectl_apply_sends_it() {
        // Live [s1, foreign]; kubectl apply replaces its s1 by s2: server-only items go after
        // patch items they cannot be compared with.
        let live = json!({"secrets": [{"name": "s1"}, {"name": "foreign"}]});
        let p = json!({"$setElementOrder/secrets": [{"name": "s2"}],
                       "secrets": [{"name": "s2"}, {"name": "s1", "$patch": "delete"}]});
        let out = strategic_merge("ServiceAccount", &live, &p).unwrap_or_default();
        assert_eq!(out["secrets"], json!([{"name": "s2"}, {"name": "foreign"}]));
        // Items in the order keep its sequence; x, before b in the live list, stays in front.
        let live = json!({"secrets": [{"name": "a"}, {"name": "x"}, {"name": "b"}]});
        let p = json!({"$setElementOrder/secrets": [{"name": "b"}, {"name": "a"}]});
        let out = strategic_merge("ServiceAccount", &live, &p).unwrap_or_default();
        assert_eq!(
            out["secrets"],
            json!([{"name": "x"}, {"name": "b"}, {"name": "a"}])
        );
        let live = json!({"metadata": {"finalizers": ["f1", "f2"]}});
        let p = json!({"metadata": {"$setElementOrder/finalizers": ["f3", "f1"], "finalizers": ["f3"]}});
        let out = strategic_merge("ServiceAccount", &live, &p).unwrap_or_default();
        assert_eq!(out["metadata"]["finalizers"], json!(["f3", "f1", "f2"]));
    }

    #[test]
    fn finalizers_union_and_null_deletes() {
        let p = json!({"metadata": {"finalizers": ["b", "a"], "labels": {"x": "1"}}, "imagePullSecrets": null});
        let out = strategic_merge("ServiceAccount", &sa(), &p).unwrap_or_default();
        // The patch's order wins for the items it names (mergeSlice -> normalizeElementOrder).
        assert_eq!(
            out.pointer("/metadata/finalizers"),
            Some(&json!(["b", "a"]))
        );
        assert_eq!(out.get("imagePullSecrets"), None);
        assert_eq!(out.pointer("/metadata/labels/x"), Some(&json!("1")));
    }

    #[test]
    fn json_patch_test_and_append() {
        let ok = json_patch(
            &sa(),
            &json!([{"op": "test", "path": "/imagePullSecrets/0/name", "value": "default-dockercfg-x"},
                                           {"op": "add", "path": "/imagePullSecrets/-", "value": {"name": "m"}}]),
        );
        assert_eq!(
            ok.ok()
                .and_then(|o| o.pointer("/imagePullSecrets/1/name").cloned()),
            Some(json!("m"))
        );
        let failed = json_patch(
            &sa(),
            &json!([{"op": "test", "path": "/imagePullSecrets/0/name", "value": "nope"}]),
        );
        assert_eq!(failed.err().map(|e| e.code), Some(422));
        let missing = json_patch(
            &json!({}),
            &json!([{"op": "add", "path": "/imagePullSecrets/-", "value": {}}]),
        );
        assert_eq!(missing.err().map(|e| e.code), Some(422));
        assert_eq!(
            json_patch(&sa(), &json!({"op": "add"}))
                .err()
                .map(|e| e.code),
            Some(400)
        );
    }
}

//! Field ownership: `metadata.managedFields` (FieldsV1) for every write, and server-side apply
//! with conflicts, `force` and removal of fields a manager stops applying — a compact version of
//! structured-merge-diff for the list types of `patch::list_kind`. Maps and structs are granular,
//! lists are atomic unless the schema says map or set. No storage access here.

use crate::patch::{ListKind, list_kind};
use crate::status::{ApiError, go_quote};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pe {
    Field(String),
    /// Map-list item: canonical JSON of its key fields.
    Key(String),
    /// Set-list item: canonical JSON of the value.
    Value(String),
}

pub type Path = Vec<Pe>;
pub type Set = BTreeSet<Path>;

/// `fieldpath.Path.String()`: `.imagePullSecrets`, `.secrets[name="x"]`, `.metadata.finalizers[="f"]`.
pub fn path_string(p: &Path) -> String {
    let mut s = String::new();
    for e in p {
        match e {
            Pe::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Pe::Key(k) => {
                let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            Pe::Value(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

/// Fields that are never owned (`metadata` system fields, type meta, the status of the main resource).
fn ignored(path: &[String]) -> bool {
    matches!(
        path.first().map(String::as_str),
        Some("apiVersion" | "kind" | "status")
    ) || (path.first().map(String::as_str) == Some("metadata")
        && matches!(
            path.get(1).map(String::as_str),
            Some(
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
                    | "managedFields"
                    | "selfLink"
                    | "generateName"
            )
        ))
}

fn key_of(item: &Value, key: &str) -> String {
    let mut m = Map::new();
    m.insert(
        key.to_string(),
        item.get(key).cloned().unwrap_or(Value::Null),
    );
    Value::Object(m).to_string()
}

/// Every owned leaf of an object with its value; map-list items and set values appear as
/// existence markers (`true`), so adding/removing them is a change.
pub fn leaves(kind: &str, obj: &Value) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    let mut names = Vec::new();
    walk(kind, obj, &mut Vec::new(), &mut names, &mut out);
    out
}

fn walk(
    kind: &str,
    v: &Value,
    path: &mut Path,
    names: &mut Vec<String>,
    out: &mut BTreeMap<Path, Value>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                names.push(k.clone());
                if !ignored(names) {
                    path.push(Pe::Field(k.clone()));
                    walk(kind, child, path, names, out);
                    path.pop();
                }
                names.pop();
            }
        }
        Value::Array(items) => {
            let n: Vec<&str> = names.iter().map(String::as_str).collect();
            match list_kind(kind, &n) {
                ListKind::Atomic => {
                    out.insert(path.clone(), v.clone());
                }
                ListKind::Set => {
                    for item in items {
                        path.push(Pe::Value(item.to_string()));
                        out.insert(path.clone(), Value::Bool(true));
                        path.pop();
                    }
                }
                ListKind::Map(key) => {
                    for item in items {
                        path.push(Pe::Key(key_of(item, key)));
                        out.insert(path.clone(), Value::Bool(true));
                        walk(kind, item, path, names, out);
                        path.pop();
                    }
                }
            }
        }
        other => {
            if !path.is_empty() {
                out.insert(path.clone(), other.clone());
            }
        }
    }
}

/// Paths of maps and structs present in an object (not `metadata` itself, always present).
/// An Update that creates or removes one owns it too, which FieldsV1 shows as `.`.
fn containers(obj: &Value) -> Set {
    fn rec(v: &Value, path: &mut Path, names: &mut Vec<String>, out: &mut Set) {
        let Value::Object(m) = v else { return };
        for (k, child) in m {
            names.push(k.clone());
            if !ignored(names) && child.as_object().is_some_and(|c| !c.is_empty()) {
                path.push(Pe::Field(k.clone()));
                if names.len() > 1 || k != "metadata" {
                    out.insert(path.clone());
                }
                rec(child, path, names, out);
                path.pop();
            }
            names.pop();
        }
    }
    let mut out = Set::new();
    rec(obj, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

/// The field set of an (applied) object.
pub fn field_set(kind: &str, obj: &Value) -> Set {
    leaves(kind, obj).into_keys().collect()
}

/// Paths whose value differs between two objects.
pub fn changed(kind: &str, old: &Value, new: &Value) -> Set {
    let (a, b) = (leaves(kind, old), leaves(kind, new));
    let mut out = Set::new();
    for (p, v) in &a {
        if b.get(p) != Some(v) {
            out.insert(p.clone());
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            out.insert(p.clone());
        }
    }
    out
}

fn pe_key(e: &Pe) -> String {
    match e {
        Pe::Field(f) => format!("f:{f}"),
        Pe::Key(k) => format!("k:{k}"),
        Pe::Value(v) => format!("v:{v}"),
    }
}

/// FieldsV1 JSON of a set.
pub fn to_fields_v1(set: &Set) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut node = &mut root;
        for (i, e) in p.iter().enumerate() {
            let entry = node
                .entry(pe_key(e))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(m) = entry else { break };
            if i + 1 == p.len() {
                if !m.is_empty() {
                    m.insert(".".into(), json!({}));
                }
            } else if m.is_empty() && set.contains(&p[..=i].to_vec()) {
                m.insert(".".into(), json!({}));
            }
            node = m;
        }
    }
    Value::Object(root)
}

/// Parses FieldsV1 JSON back into a set.
pub fn from_fields_v1(v: &Value) -> Set {
    let mut out = Set::new();
    fn rec(m: &Map<String, Value>, path: &mut Path, out: &mut Set) {
        for (k, child) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            let e = if let Some(f) = k.strip_prefix("f:") {
                Pe::Field(f.into())
            } else if let Some(kk) = k.strip_prefix("k:") {
                Pe::Key(
                    serde_json::from_str::<Value>(kk)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|_| kk.into()),
                )
            } else if let Some(vv) = k.strip_prefix("v:") {
                Pe::Value(
                    serde_json::from_str::<Value>(vv)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|_| vv.into()),
                )
            } else {
                continue;
            };
            path.push(e);
            match child.as_object() {
                Some(cm) if !cm.is_empty() => rec(cm, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    if let Some(m) = v.as_object() {
        rec(m, &mut Vec::new(), &mut out);
    }
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub set: Set,
}

impl Entry {
    fn to_json(&self) -> Value {
        json!({"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version,
               "time": self.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&self.set)})
    }

    /// `printManager` of apimachinery's conflict.go.
    fn printed(&self) -> String {
        if self.operation == "Update" {
            format!(
                "{} using {} at {}",
                go_quote(&self.manager),
                self.api_version,
                self.time
            )
        } else {
            go_quote(&self.manager)
        }
    }
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            operation: e
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("Update")
                .into(),
            api_version: e
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("v1")
                .into(),
            time: e.get("time").and_then(Value::as_str).unwrap_or("").into(),
            set: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(Entry::to_json)
        .collect();
    let meta = crate::util::meta_mut(obj);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Records a non-apply write: the manager takes every changed field, from everyone.
pub fn track_update(
    kind: &str,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let empty = json!({});
    let mut diff = changed(kind, old.unwrap_or(&empty), new);
    let (c_old, c_new) = (containers(old.unwrap_or(&empty)), containers(new));
    diff.extend(c_new.symmetric_difference(&c_old).cloned());
    if diff.is_empty() {
        write_entries(new, entries);
        return;
    }
    for e in &mut entries {
        e.set.retain(|p| !diff.contains(p));
    }
    let now_fields = leaves(kind, new);
    let gained: Set = diff
        .into_iter()
        .filter(|p| now_fields.contains_key(p) || c_new.contains(p))
        .collect();
    let time = crate::util::now_rfc3339();
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update")
    {
        Some(e) => {
            e.set.extend(gained);
            e.time = time;
            e.api_version = api_version.into();
        }
        None => entries.push(Entry {
            manager: manager.into(),
            operation: "Update".into(),
            api_version: api_version.into(),
            time,
            set: gained,
        }),
    }
    write_entries(new, entries);
}

/// Merges an applied configuration into the live object (lists by their schema).
fn apply_merge(kind: &str, names: &mut Vec<String>, live: &mut Value, applied: &Value) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                names.push(k.clone());
                if !ignored(names) || names.len() > 2 {
                    match l.get_mut(k) {
                        Some(lv) => apply_merge(kind, names, lv, av),
                        None => {
                            l.insert(k.clone(), av.clone());
                        }
                    }
                }
                names.pop();
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            let n: Vec<&str> = names.iter().map(String::as_str).collect();
            match list_kind(kind, &n) {
                ListKind::Atomic => *l = a.clone(),
                ListKind::Set => {
                    *l = merge_associative(l, a, |v| v.clone(), |_, r| r.clone());
                }
                ListKind::Map(key) => {
                    let id = |v: &Value| v.get(key).cloned().unwrap_or(Value::Null);
                    *l = merge_associative(l, a, id, |live, applied| match live {
                        Some(live) => {
                            let mut merged = live.clone();
                            apply_merge(kind, names, &mut merged, applied);
                            merged
                        }
                        None => applied.clone(),
                    });
                }
            }
        }
        (l, a) => *l = a.clone(),
    }
}

/// structured-merge-diff's `visitListItems` for map and set lists: applied items keep their
/// order, live-only items stay where they were, shared items follow the applied order.
fn merge_associative(
    lhs: &[Value],
    rhs: &[Value],
    id: impl Fn(&Value) -> Value,
    mut merge: impl FnMut(Option<&Value>, &Value) -> Value,
) -> Vec<Value> {
    let l_ids: Vec<Value> = lhs.iter().map(&id).collect();
    let r_ids: Vec<Value> = rhs.iter().map(&id).collect();
    let mut shared: std::collections::VecDeque<Value> = r_ids
        .iter()
        .filter(|r| l_ids.contains(r))
        .cloned()
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: Vec<Value> = Vec::new();
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            if l_ids[li] == r_ids[ri] {
                out.push(merge(Some(&lhs[li]), &rhs[ri]));
                merged_rhs.push(r_ids[ri].clone());
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if r_ids.contains(&l_ids[li]) && next_shared.as_ref().is_some_and(|n| *n != l_ids[li]) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            if !r_ids.contains(&l_ids[li]) {
                out.push(lhs[li].clone());
                li += 1;
                continue;
            } else if merged_rhs.contains(&l_ids[li]) {
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let pe = r_ids[ri].clone();
            let live = l_ids.iter().position(|l| *l == pe).map(|i| &lhs[i]);
            out.push(merge(live, &rhs[ri]));
            merged_rhs.push(pe.clone());
            ri += 1;
            if next_shared.as_ref() == Some(&pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    out
}

/// Removes one path from an object (a field, a map-list item or a set value).
fn remove_path(obj: &mut Value, path: &[Pe]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    let mut names: Vec<String> = Vec::new();
    for e in parent {
        let next = match e {
            Pe::Field(f) => {
                names.push(f.clone());
                cur.get_mut(f)
            }
            Pe::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                cur.as_array_mut().and_then(|a| {
                    a.iter_mut()
                        .find(|x| key.iter().all(|(kk, vv)| x.get(kk) == Some(vv)))
                })
            }
            Pe::Value(_) => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Pe::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        Pe::Key(k) => {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            if let Some(a) = cur.as_array_mut() {
                a.retain(|x| !key.iter().all(|(kk, vv)| x.get(kk) == Some(vv)));
            }
        }
        Pe::Value(v) => {
            let target: Option<Value> = serde_json::from_str(v).ok();
            if let (Some(a), Some(t)) = (cur.as_array_mut(), target) {
                a.retain(|x| *x != t);
            }
        }
    }
}

/// Server-side apply of `applied` by `manager` onto `live` (None: the object is created).
/// Returns the new object with its managedFields, or the 409 FieldManagerConflict.
pub fn apply(
    kind: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);
    let mut entries = read_entries(live_obj);
    let new_set = field_set(kind, applied);
    let prev_set: Set = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.set.clone())
        .unwrap_or_default();

    let mut merged = live_obj.clone();
    apply_merge(kind, &mut Vec::new(), &mut merged, applied);

    // Fields this manager applied before but no longer does are removed unless someone else owns them.
    let others: Set = entries
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    for p in prev_set.difference(&new_set) {
        if !others.contains(p) {
            remove_path(&mut merged, p);
        }
    }

    let diff = changed(kind, live_obj, &merged);
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
    {
        for p in e.set.intersection(&diff) {
            if new_set.contains(p) {
                conflicts.push((e.printed(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(conflicts));
    }
    for e in &mut entries {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        // Forced: others lose what was taken; a field changed by this apply belongs to it alone.
        e.set.retain(|p| !(diff.contains(p) && new_set.contains(p)));
    }
    let time = crate::util::now_rfc3339();
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Apply")
    {
        Some(e) => {
            e.set = new_set;
            e.api_version = api_version.into();
            if !diff.is_empty() {
                e.time = time;
            }
        }
        None => entries.push(Entry {
            manager: manager.into(),
            operation: "Apply".into(),
            api_version: api_version.into(),
            time,
            set: new_set,
        }),
    }
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// apimachinery `managedfields/internal/conflict.go` `NewConflictError`.
fn conflict_error(mut conflicts: Vec<(String, Path)>) -> ApiError {
    conflicts.sort();
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": path_string(p)}))
        .collect();
    let message = if let [(m, p)] = conflicts.as_slice() {
        format!(
            "Apply failed with 1 conflict: conflict with {m}: {}",
            path_string(p)
        )
    } else {
        let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (m, p) in &conflicts {
            by.entry(m.as_str()).or_default().push(path_string(p));
        }
        let mut lines = Vec::new();
        for (m, paths) in by {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(json!({"causes": causes})),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(ips: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "default", "namespace": "n", "labels": {"a": "1"}},
               "secrets": [{"name": "s1"}], "imagePullSecrets": ips})
    }

    #[test]
    fn fields_v1_round_trip() {
        let set = field_set("ServiceAccount", &sa(json!([{"name": "x"}])));
        let v = to_fields_v1(&set);
        assert_eq!(
            v,
            json!({"f:metadata": {"f:labels": {"f:a": {}}},
                   "f:secrets": {"k:{\"name\":\"s1\"}": {".": {}, "f:name": {}}},
                   "f:imagePullSecrets": {}})
        );
        assert_eq!(from_fields_v1(&v), set);
    }

    #[test]
    fn associative_lists_merge_in_structured_merge_diff_order() {
        let id = |v: &Value| v.clone();
        let keep = |_: Option<&Value>, r: &Value| r.clone();
        let m = |l: Value, r: Value| {
            let (l, r) = (
                l.as_array().cloned().unwrap_or_default(),
                r.as_array().cloned().unwrap_or_default(),
            );
            Value::Array(merge_associative(&l, &r, id, keep))
        };
        assert_eq!(m(json!(["x"]), json!(["y"])), json!(["x", "y"]));
        assert_eq!(
            m(json!(["a", "b"]), json!(["c", "a"])),
            json!(["c", "a", "b"])
        );
        assert_eq!(
            m(json!(["a", "b", "c"]), json!(["c", "a"])),
            json!(["b", "c", "a"])
        );
        assert_eq!(m(json!([]), json!(["a"])), json!(["a"]));
    }

    #[test]
    fn update_owns_the_maps_it_creates() {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"},
                           "data": {"a": "Yg=="}, "type": "Opaque"});
        track_update("Secret", None, &mut s, "kubectl-create", "v1");
        assert_eq!(
            s["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {".": {}, "f:a": {}}, "f:type": {}})
        );
        let old = s.clone();
        s["metadata"]["labels"] = json!({"x": "y"});
        track_update("Secret", Some(&old), &mut s, "kubectl-label", "v1");
        assert_eq!(
            s["metadata"]["managedFields"][1]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {".": {}, "f:x": {}}}})
        );
    }

    #[test]
    fn atomic_list_conflict_and_force() {
        let mut live = sa(json!([{"name": "x"}]));
        track_update("ServiceAccount", None, &mut live, "other", "v1");
        let applied = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"},
                             "imagePullSecrets": [{"name": "mine"}]});
        let err = apply("ServiceAccount", Some(&live), &applied, "me", "v1", false).err();
        let err = err.map(|e| (e.code, e.message)).unwrap_or_default();
        assert_eq!(err.0, 409);
        assert!(
            err.1
                .starts_with("Apply failed with 1 conflict: conflict with \"other\" using v1 at "),
            "{}",
            err.1
        );
        assert!(err.1.ends_with(": .imagePullSecrets"), "{}", err.1);

        let out =
            apply("ServiceAccount", Some(&live), &applied, "me", "v1", true).unwrap_or_default();
        assert_eq!(out["imagePullSecrets"], json!([{"name": "mine"}]));
        // The other manager keeps the rest, loses the list.
        let entries = read_entries(&out);
        let other = entries
            .iter()
            .find(|e| e.manager == "other")
            .map(|e| e.set.clone())
            .unwrap_or_default();
        assert!(!other.contains(&vec![Pe::Field("imagePullSecrets".into())]));
        assert!(other.contains(&vec![
            Pe::Field("secrets".into()),
            Pe::Key("{\"name\":\"s1\"}".into())
        ]));

        // Same value: shared ownership, no conflict.
        let same = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"},
                          "imagePullSecrets": [{"name": "x"}]});
        assert!(apply("ServiceAccount", Some(&live), &same, "me", "v1", false).is_ok());
    }

    #[test]
    fn applying_less_removes_own_fields() {
        let a1 = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "secrets": [{"name": "m"}]});
        let live = apply(
            "ServiceAccount",
            Some(&sa(json!([]))),
            &a1,
            "me",
            "v1",
            true,
        )
        .unwrap_or_default();
        assert_eq!(live["secrets"], json!([{"name": "s1"}, {"name": "m"}]));
        let a2 = json!({"metadata": {"labels": {"a": "1"}}});
        let out = apply("ServiceAccount", Some(&live), &a2, "me", "v1", false).unwrap_or_default();
        assert_eq!(out["secrets"], json!([{"name": "s1"}]));
        assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
    }
}

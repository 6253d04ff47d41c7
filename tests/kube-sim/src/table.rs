//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for with
//! `Accept: application/json;as=Table;...`, with the columns of the real printers for our kinds.

use crate::resources::ResourceType;
use serde_json::{Value, json};

pub(crate) fn age(obj: &Value) -> String {
    since(obj.pointer("/metadata/creationTimestamp"))
}

/// `translateTimestampSince`: how long ago a timestamp was, as kubectl's `duration.HumanDuration`.
pub(crate) fn since(timestamp: Option<&Value>) -> String {
    let created = timestamp
        .and_then(Value::as_str)
        .and_then(crate::util::parse_rfc3339);
    let now = crate::util::parse_rfc3339(&crate::util::now_rfc3339()).unwrap_or(0);
    let Some(c) = created else {
        return "<unknown>".into();
    };
    let s = now.saturating_sub(c);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => format!("{}m", s / 60),
        10_800..28_800 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        28_800..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// (name, type, priority) of each column; priority 1 columns show with `-o wide` only.
fn columns(rt: &ResourceType) -> Vec<(&'static str, &'static str, u8)> {
    if let Some(cols) = crate::table_workloads::columns(rt) {
        return cols;
    }
    let plain =
        |cols: &[(&'static str, &'static str)]| cols.iter().map(|(n, t)| (*n, *t, 0)).collect();
    match (rt.group, rt.plural) {
        ("", "secrets") => plain(&[
            ("Name", "string"),
            ("Type", "string"),
            ("Data", "string"),
            ("Age", "string"),
        ]),
        ("", "namespaces") => plain(&[("Name", "string"), ("Status", "string"), ("Age", "string")]),
        ("", "serviceaccounts") => {
            plain(&[("Name", "string"), ("Secrets", "string"), ("Age", "string")])
        }
        _ => plain(&[("Name", "string"), ("Age", "string")]),
    }
}

fn cells(rt: &ResourceType, obj: &Value) -> Vec<Value> {
    if let Some(cells) = crate::table_workloads::cells(rt, obj) {
        return cells;
    }
    let name = json!(crate::util::meta_str(obj, "name"));
    let len = |v: Option<&Value>| {
        v.map_or(0, |v| {
            v.as_object()
                .map_or_else(|| v.as_array().map_or(0, Vec::len), serde_json::Map::len)
        })
    };
    match (rt.group, rt.plural) {
        ("", "secrets") => vec![
            name,
            json!(obj.get("type").cloned().unwrap_or(json!(""))),
            json!(len(obj.get("data"))),
            json!(age(obj)),
        ],
        ("", "namespaces") => vec![
            name,
            obj.pointer("/status/phase").cloned().unwrap_or(json!("")),
            json!(age(obj)),
        ],
        ("", "serviceaccounts") => vec![name, json!(len(obj.get("secrets"))), json!(age(obj))],
        _ => vec![name, json!(age(obj))],
    }
}

/// `includeObject` of a Table request: what each row carries besides its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    /// The default: `PartialObjectMetadata`.
    Metadata,
    /// The whole object (`kubectl get --sort-by` asks for it).
    Object,
}

impl Include {
    pub fn from_query(v: Option<&str>) -> Self {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn row(rt: &ResourceType, obj: &Value, include: Include, api_version: &str) -> Value {
    let object = match include {
        Include::None => Value::Null,
        Include::Metadata => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                    "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
        }
        Include::Object => {
            let mut o = obj.clone();
            if let Some(m) = o.as_object_mut() {
                m.entry("apiVersion").or_insert_with(|| json!(api_version));
                m.entry("kind").or_insert_with(|| json!(rt.kind));
            }
            o
        }
    };
    json!({"cells": cells(rt, obj), "object": object})
}

/// Converts a successful get/list reply to a Table; anything else is returned unchanged.
pub fn to_table(rt: &ResourceType, v: &Value, code: u16) -> Value {
    to_table_with(rt, v, code, Include::Metadata)
}

/// [`to_table`] with the request's `includeObject`.
pub fn to_table_with(rt: &ResourceType, v: &Value, code: u16, include: Include) -> Value {
    if !(200..300).contains(&code) || v.get("kind").and_then(Value::as_str) == Some("Status") {
        return v.clone();
    }
    let defs: Vec<Value> = columns(rt)
        .into_iter()
        .map(|(n, t, priority)| json!({"name": n, "type": t, "format": if n == "Name" { "name" } else { "" }, "description": n, "priority": priority}))
        .collect();
    let (rows, rv) = match v.get("items").and_then(Value::as_array) {
        Some(items) => (
            items
                .iter()
                .map(|o| row(rt, o, include, &rt.api_version()))
                .collect::<Vec<_>>(),
            v.pointer("/metadata/resourceVersion").cloned(),
        ),
        None => (
            vec![row(rt, v, include, &rt.api_version())],
            v.pointer("/metadata/resourceVersion").cloned(),
        ),
    };
    let mut meta = json!({"resourceVersion": rv.unwrap_or(json!(""))});
    if let Some(c) = v.pointer("/metadata/continue") {
        meta["continue"] = c.clone();
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

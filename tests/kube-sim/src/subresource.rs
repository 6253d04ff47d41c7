//! The `scale` subresource of Deployments and ReplicaSets (`autoscaling/v1` Scale, as
//! `pkg/registry/apps/deployment/storage/storage.go` `ScaleREST` serves it): GET shows
//! `spec.replicas` and the selector; PUT and PATCH change only the parent's `spec.replicas`.
//! This is what `kubectl scale` uses. `status` subresources are handled in `api` (they write
//! only `.status`).

use crate::api::{self, Reply, Request};
use crate::patch;
use crate::server::Shared;
use crate::status::{ApiError, ApiResult};
use crate::util::meta_str;
use serde_json::{Value, json};

/// The Scale view of a Deployment or ReplicaSet.
fn scale_of(parent: &Value) -> Value {
    let meta = parent.get("metadata").cloned().unwrap_or(json!({}));
    let keep = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ];
    let meta: serde_json::Map<String, Value> = meta
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
        "spec": {"replicas": parent.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": parent.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": crate::workloads::selector_string(parent.pointer("/spec/selector")),
        },
    })
}

/// GET, PUT and PATCH of `<deployments|replicasets>/<name>/scale`.
pub fn scale(shared: &Shared, req: &Request) -> ApiResult<Reply> {
    let mut st = shared.lock_store();
    let key = req.rt.key();
    let old = st
        .get(key, req.ns(), req.name())
        .cloned()
        .ok_or_else(|| ApiError::not_found(req.rt.group, req.rt.plural, req.name()))?;
    let view = scale_of(&old);
    let wanted = match req.verb {
        "get" => return Ok(Reply::Json(200, view)),
        "update" => api::decode_object(req)?,
        "patch" => patched(req, &view)?,
        v => {
            return Err(ApiError::method_not_allowed(format!(
                "verb {v} is not supported on scale"
            )));
        }
    };
    api::forced_conflict(shared, req)?;
    let rv = meta_str(&wanted, "resourceVersion");
    if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(req.rt.group, req.rt.plural, req.name()));
    }
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            req.name(),
            vec![crate::status::Cause::invalid(
                "spec.replicas",
                &replicas.to_string(),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut next = old.clone();
    next["spec"]["replicas"] = json!(replicas);
    crate::strategy::prepare_update(req.rt, &old, &mut next);
    let out = api::write_update(&mut st, req.rt, &old, next, &req.manager(), req.dry_run())?;
    Ok(Reply::Json(200, scale_of(&out)))
}

fn patched(req: &Request, view: &Value) -> ApiResult<Value> {
    let ct = req.content_type.split(';').next().unwrap_or("").trim();
    let doc: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match ct {
        "application/json-patch+json" => patch::json_patch(view, &doc),
        "application/merge-patch+json" => patch::merge_patch(view, &doc),
        "application/strategic-merge-patch+json" => patch::strategic_merge("Scale", view, &doc),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

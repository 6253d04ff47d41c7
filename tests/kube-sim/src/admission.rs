//! Admission plugins that change or reject objects on create, before the strategy runs: the
//! ServiceAccount plugin for pods (kubernetes/kubernetes
//! `plugin/pkg/admission/serviceaccount/admission.go`). It reads the store but never writes.

use crate::resources::ResourceType;
use crate::status::{ApiError, ApiResult};
use crate::store::Store;
use crate::util::meta_str;
use serde_json::{Value, json};

/// The account a pod without `spec.serviceAccountName` runs as.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Mutating and validating admission of a create. Only pods are admitted by anything here.
pub fn admit_create(st: &Store, rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
    if rt.group.is_empty() && rt.plural == "pods" {
        return service_account(st, obj);
    }
    Ok(())
}

/// The ServiceAccount plugin's `Admit` and `Validate` for a pod create:
/// - an empty `spec.serviceAccountName` becomes `default`;
/// - the account must exist, else 403 `error looking up service account NS/NAME: serviceaccount
///   "NAME" not found` (the lister's NotFound, wrapped by `admission.NewForbidden`, which names
///   the pod by its name or, before name generation, its generateName);
/// - a pod that names no `imagePullSecrets` gets a copy of the account's list (names only).
///
/// Mirror pods and the token volume the plugin mounts are not modelled (see the README).
fn service_account(st: &Store, pod: &mut Value) -> ApiResult<()> {
    let ns = meta_str(pod, "namespace").to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let deprecated = spec
        .get("serviceAccount")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let named = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // The v1 conversion fills serviceAccountName from the deprecated field.
    let account = match (named.is_empty(), deprecated.is_empty()) {
        (false, _) => named,
        (true, false) => deprecated,
        (true, true) => DEFAULT_SERVICE_ACCOUNT.to_string(),
    };
    spec.insert("serviceAccountName".into(), json!(account));
    let sa_key = crate::resources::find("", "v1", "serviceaccounts", false).map(ResourceType::key);
    let sa = sa_key.and_then(|k| st.get(k, &ns, &account));
    let Some(sa) = sa else {
        return Err(forbidden(
            pod,
            &format!(
                "error looking up service account {ns}/{account}: serviceaccount {} not found",
                crate::status::go_quote(&account)
            ),
        ));
    };
    let pod_has_secrets = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    if !pod_has_secrets {
        let copied: Vec<Value> = sa
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| json!({"name": r.get("name").cloned().unwrap_or(json!(""))}))
            .collect();
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            if copied.is_empty() {
                spec.remove("imagePullSecrets");
            } else {
                spec.insert("imagePullSecrets".into(), Value::Array(copied));
            }
        }
    }
    Ok(())
}

/// `admission.NewForbidden`: `pods "NAME" is forbidden: <err>`, the name being the pod's name,
/// else its generateName (names are generated after admission).
fn forbidden(pod: &Value, err: &str) -> ApiError {
    let name = match (meta_str(pod, "name"), meta_str(pod, "generateName")) {
        ("", "") => "Unknown",
        ("", generated) => generated,
        (n, _) => n,
    };
    ApiError::forbidden(
        "",
        "pods",
        name,
        format!("pods {} is forbidden: {err}", crate::status::go_quote(name)),
    )
}

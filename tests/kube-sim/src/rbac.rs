//! Optional RBAC enforcement (`Options::rbac`): the apiserver's RBAC authorizer over the stored
//! ClusterRoles, Roles and their bindings, and its 403 Forbidden wording. Read-only on the store.

use crate::UserInfo;
use crate::api::Request;
use crate::resources::RBAC;
use crate::status::ApiError;
use crate::store::Store;
use serde_json::Value;

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(s: &Value, user: &UserInfo) -> bool {
    let get = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("");
    match get("kind") {
        "User" => get("name") == user.username,
        "Group" => user.groups.iter().any(|g| g == get("name")),
        "ServiceAccount" => {
            user.username == format!("system:serviceaccount:{}:{}", get("namespace"), get("name"))
        }
        _ => false,
    }
}

fn rules_allow(role: &Value, verb: &str, group: &str, resource: &str, name: &str) -> bool {
    role.get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            let any = |list: Vec<&str>, x: &str| list.iter().any(|v| *v == "*" || *v == x);
            let names = strs(r.get("resourceNames"));
            any(strs(r.get("verbs")), verb)
                && any(strs(r.get("apiGroups")), group)
                && any(strs(r.get("resources")), resource)
                && (names.is_empty() || names.contains(&name))
        })
}

fn role_of<'a>(st: &'a Store, binding: &Value, ns: &str) -> Option<&'a Value> {
    let kind = binding.pointer("/roleRef/kind").and_then(Value::as_str)?;
    let name = binding.pointer("/roleRef/name").and_then(Value::as_str)?;
    let key = |plural: &'static str| crate::resources::ResourceKey {
        group: RBAC,
        plural,
    };
    match kind {
        "ClusterRole" => st.get(key("clusterroles"), "", name),
        "Role" => st.get(key("roles"), ns, name),
        _ => None,
    }
}

/// Whether some binding grants `user` the verb on the resource.
pub fn allowed(
    st: &Store,
    user: &UserInfo,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
    name: &str,
) -> bool {
    let key = |plural: &'static str| crate::resources::ResourceKey {
        group: RBAC,
        plural,
    };
    let grants = |b: &&Value, bns: &str| {
        b.get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|s| subject_matches(s, user))
            && role_of(st, b, bns).is_some_and(|r| rules_allow(r, verb, group, resource, name))
    };
    if st
        .list(key("clusterrolebindings"), None)
        .iter()
        .any(|b| grants(b, ""))
    {
        return true;
    }
    !ns.is_empty()
        && st
            .list(key("rolebindings"), Some(ns))
            .iter()
            .any(|b| grants(b, ns))
}

/// The apiserver's `forbiddenMessage`.
pub fn forbidden(req: &Request) -> ApiError {
    let rt = req.rt;
    let name = req.name.as_deref().unwrap_or("");
    let what = if name.is_empty() {
        if rt.group.is_empty() {
            rt.plural.to_string()
        } else {
            format!("{}.{}", rt.plural, rt.group)
        }
    } else if rt.group.is_empty() {
        format!("{} \"{name}\"", rt.plural)
    } else {
        format!("{}.{} \"{name}\"", rt.plural, rt.group)
    };
    let scope = match &req.namespace {
        Some(ns) if rt.namespaced => format!("in the namespace \"{ns}\""),
        _ => "at the cluster scope".to_string(),
    };
    ApiError::forbidden(
        rt.group,
        rt.plural,
        name,
        format!(
            "{what} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            req.user.username, req.verb, rt.plural, rt.group
        ),
    )
}

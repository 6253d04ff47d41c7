//! The one way tests seed kube-sim: namespaces, service accounts and their lists, written to
//! its store directly (with the server's create and update semantics and watch events, but not
//! counted as requests), so request counters show only what pullsecretd did.

use kube_sim::Handle;
use serde_json::{Value, json};

/// A namespace with `labels` (its `default` service account comes with it).
pub fn namespace(server: &Handle, name: &str, labels: Value) {
    server
        .create(
            "",
            "namespaces",
            json!({"metadata": {"name": name, "labels": labels}}),
        )
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
}

/// Service account `name` in `namespace` with exactly these pull and mount lists: created, or
/// (like `default`, which exists already) its lists replaced.
pub fn account(server: &Handle, namespace: &str, name: &str, pull: &[&str], mount: &[&str]) {
    let names = |list: &[&str]| list.iter().map(|n| json!({"name": n})).collect::<Vec<_>>();
    let lists = json!({"imagePullSecrets": names(pull), "secrets": names(mount)});
    if server.get("", "serviceaccounts", namespace, name).is_some() {
        server
            .merge_patch("", "serviceaccounts", namespace, name, &lists)
            .unwrap_or_else(|e| panic!("service account {namespace}/{name}: {e}"));
        return;
    }
    let mut account = lists;
    account["metadata"] = json!({"name": name, "namespace": namespace});
    server
        .create("", "serviceaccounts", account)
        .unwrap_or_else(|e| panic!("service account {namespace}/{name}: {e}"));
}

/// Any object, created as the server would create it.
pub fn object(server: &Handle, group: &str, resource: &str, object: Value) {
    server
        .create(group, resource, object)
        .unwrap_or_else(|e| panic!("{resource}: {e}"));
}

/// RBAC objects (and ServiceAccounts) as manifests give them — deploy/'s files, an overlay's
/// rendering — created as they are, each in the resource its kind names.
pub fn rbac_objects(server: &Handle, objects: Vec<Value>) {
    for object in objects {
        let (group, resource) = match object["kind"].as_str() {
            Some("ServiceAccount") => ("", "serviceaccounts"),
            Some("ClusterRole") => ("rbac.authorization.k8s.io", "clusterroles"),
            Some("ClusterRoleBinding") => ("rbac.authorization.k8s.io", "clusterrolebindings"),
            Some("Role") => ("rbac.authorization.k8s.io", "roles"),
            Some("RoleBinding") => ("rbac.authorization.k8s.io", "rolebindings"),
            other => panic!("not an RBAC object: {other:?}"),
        };
        server
            .create(group, resource, object)
            .unwrap_or_else(|e| panic!("seeding {resource}: {e}"));
    }
}

//! What controllers of a real cluster do right after a write, done synchronously so tests are
//! deterministic: the ServiceAccount controller's `default` SA per namespace; on OpenShift the
//! `builder`/`deployer` SAs, the `system:image-pullers` binding and the per-SA managed
//! `<sa>-dockercfg-<rand>` pull secret (docs/service-accounts.md and docs/openshift.md); the namespace controller's cascade.

use crate::api;
use crate::managed;
use crate::resources::{self, ResourceType};
use crate::server::Shared;
use crate::store::{EventType, Store};
use crate::util::{self, meta_mut, meta_str};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// Field manager of OpenShift's internal-registry pull-secret controller (docs/service-accounts.md).
pub const OPENSHIFT_SA_MANAGER: &str =
    "openshift.io/image-registry-pull-secrets_service-account-controller";
/// SA annotation naming the managed pull secret.
pub const PULL_SECRET_REF: &str = "openshift.io/internal-registry-pull-secret-ref";

fn rt(group: &str, plural: &str) -> Option<&'static ResourceType> {
    resources::find(group, "v1", plural, true)
}

pub fn after_create(shared: &Shared, st: &mut Store, rtype: &ResourceType, obj: &Value) {
    let opts = &shared.opts;
    match (rtype.group, rtype.plural) {
        ("", "namespaces") if opts.default_service_accounts => {
            let ns = meta_str(obj, "name").to_string();
            let mut sas = vec!["default"];
            if opts.openshift {
                sas.extend(["builder", "deployer"]);
            }
            let Some(sa_rt) = rt("", "serviceaccounts") else {
                return;
            };
            for sa in sas {
                let sa_obj = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}});
                let _ =
                    api::create_locked(shared, st, sa_rt, sa_obj, "kube-controller-manager", false);
            }
            if opts.openshift
                && let Some(rb) = rt(resources::RBAC, "rolebindings")
            {
                let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": "system:image-pullers", "namespace": ns,
                                     "annotations": {"openshift.io/description": "Allows all pods in this namespace to pull images from this namespace.  It is auto-managed by a controller; remove subjects to disable."}},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:image-puller"},
                        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": format!("system:serviceaccounts:{ns}")}]});
                let _ = api::create_locked(
                    shared,
                    st,
                    rb,
                    binding,
                    "openshift-controller-manager",
                    false,
                );
            }
        }
        ("", "serviceaccounts") if opts.openshift && opts.openshift_pull_secrets => {
            openshift_pull_secret(shared, st, obj);
        }
        _ => {}
    }
}

/// OCM's image_pull_secret + service_account controllers (OpenShift >= 4.16), in one step.
fn openshift_pull_secret(shared: &Shared, st: &mut Store, sa: &Value) {
    let (Some(secret_rt), Some(sa_rt)) = (rt("", "secrets"), rt("", "serviceaccounts")) else {
        return;
    };
    let ns = meta_str(sa, "namespace").to_string();
    let sa_name = meta_str(sa, "name").to_string();
    let prefix = format!(
        "{}-dockercfg-",
        truncate(&sa_name, 58 - "-dockercfg-".len())
    );
    let token = format!("sha256~{}", util::random_suffix(16));
    let auth = B64.encode(format!("<token>:{token}"));
    let mut entries = serde_json::Map::new();
    for host in [
        "image-registry.openshift-image-registry.svc:5000",
        "image-registry.openshift-image-registry.svc.cluster.local:5000",
        "172.30.0.10:5000",
    ] {
        entries.insert(host.into(), json!({"auth": auth}));
    }
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockercfg",
        "metadata": {"generateName": prefix, "namespace": ns,
            "annotations": {"openshift.io/internal-registry-auth-token.service-account": sa_name,
                            "openshift.io/internal-registry-auth-token.binding": "bound"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ServiceAccount", "name": sa_name,
                                 "uid": meta_str(sa, "uid"), "controller": true, "blockOwnerDeletion": false}]},
        "data": {".dockercfg": B64.encode(Value::Object(entries).to_string())}});
    let Ok(secret) = api::create_locked(
        shared,
        st,
        secret_rt,
        secret,
        "openshift-controller-manager",
        false,
    ) else {
        return;
    };
    let secret_name = meta_str(&secret, "name").to_string();
    let Some(live) = st.get(sa_rt.key(), &ns, &sa_name).cloned() else {
        return;
    };
    // Server-side apply with force, re-listing every current imagePullSecret (the list is atomic).
    let mut ips: Vec<Value> = live
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !ips
        .iter()
        .any(|r| r.get("name").and_then(Value::as_str) == Some(&secret_name))
    {
        ips.push(json!({"name": secret_name}));
    }
    let applied = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": sa_name, "namespace": ns, "annotations": {PULL_SECRET_REF: secret_name}},
        "imagePullSecrets": ips, "secrets": [{"name": secret_name}]});
    if let Ok(next) = managed::apply(
        "ServiceAccount",
        Some(&live),
        &applied,
        OPENSHIFT_SA_MANAGER,
        "v1",
        true,
    ) {
        st.put(sa_rt.key(), &ns, &sa_name, next, EventType::Modified);
    }
}

fn truncate(s: &str, n: usize) -> &str {
    s.get(..n.min(s.len())).unwrap_or(s)
}

/// Namespace deletion: mark Terminating, then (the namespace controller) delete its content and
/// the namespace itself. Returns the namespace as the DELETE response shows it (Terminating).
pub fn delete_namespace(shared: &Shared, st: &mut Store, name: &str) -> Value {
    let key = resources::namespaces().key();
    let Some(mut ns) = st.get(key, "", name).cloned() else {
        return Value::Null;
    };
    if ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
        meta_mut(&mut ns).insert("deletionTimestamp".into(), json!(util::now_rfc3339()));
        ns["status"] = json!({"phase": "Terminating"});
        ns = st.put(key, "", name, ns, EventType::Modified);
    }
    if shared.opts.namespace_deletion_delay.is_zero() {
        finish_namespace_deletion(st, name);
    } else if let Some(shared) = shared.self_ref() {
        let name = name.to_string();
        let delay = shared.opts.namespace_deletion_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            finish_namespace_deletion(&mut shared.lock_store(), &name);
        });
    }
    ns
}

/// The namespace controller's work: every object in it, then the namespace.
pub fn finish_namespace_deletion(st: &mut Store, name: &str) {
    for (key, obj_name) in st.in_namespace(name) {
        st.remove(key, name, &obj_name);
    }
    st.remove(resources::namespaces().key(), "", name);
}

/// Objects every cluster starts with.
pub fn bootstrap(shared: &Shared) {
    let mut st = shared.lock_store();
    let Some(ns_rt) = rt("", "namespaces") else {
        return;
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let _ = api::create_locked(shared, &mut st, ns_rt, obj, "kube-apiserver", false);
    }
    // The bootstrap RBAC a kube-apiserver creates that our clients rely on: everyone may ask
    // "can I?", and system:auth-delegator is what a TokenReview caller (Vault) gets bound to.
    if let (Some(cr), Some(crb)) = (
        rt(resources::RBAC, "clusterroles"),
        rt(resources::RBAC, "clusterrolebindings"),
    ) {
        let basic = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:basic-user", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [{"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                       "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}]});
        let _ = api::create_locked(shared, &mut st, cr, basic, "kube-apiserver", false);
        let delegator = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:auth-delegator", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [{"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"]},
                      {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"]}]});
        let _ = api::create_locked(shared, &mut st, cr, delegator, "kube-apiserver", false);
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:basic-user", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:basic-user"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]});
        let _ = api::create_locked(shared, &mut st, crb, binding, "kube-apiserver", false);
    }
    if shared.opts.openshift {
        if let Some(cr) = rt(resources::RBAC, "clusterroles") {
            // openshift-apiserver bootstrappolicy (docs/openshift.md).
            let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "system:image-puller",
                             "annotations": {"openshift.io/description": "Grants the right to pull images from within a project."}},
                "rules": [{"verbs": ["get"], "apiGroups": ["image.openshift.io", ""], "resources": ["imagestreams/layers"]}]});
            let _ = api::create_locked(shared, &mut st, cr, role, "openshift-apiserver", false);
        }
        for ns in ["openshift", "openshift-config", "openshift-image-registry"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let _ = api::create_locked(shared, &mut st, ns_rt, obj, "kube-apiserver", false);
        }
    }
}

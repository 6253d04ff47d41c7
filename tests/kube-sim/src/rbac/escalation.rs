//! The RBAC storage's escalation checks on create, update, patch and apply of RoleBindings,
//! ClusterRoleBindings, Roles and ClusterRoles, run when `Options::rbac` is on. A caller may
//! write a binding only if it may `bind` the role or already holds every rule the role grants,
//! and a role only if it may `escalate` roles or holds every rule it lists. Decides admission
//! only; never writes.
//!
//! Upstream: kubernetes/kubernetes `pkg/registry/rbac/{rolebinding,clusterrolebinding,role,
//! clusterrole}/policybased/storage.go`, `pkg/registry/rbac/escalation_check.go`
//! (`EscalationAllowed`, `BindingAuthorized`, `RoleEscalationAuthorized`),
//! `pkg/registry/rbac/helpers.go` (`IsOnlyMutatingGCFields`) and
//! `pkg/registry/rbac/validation/rule.go` (`ConfirmNoEscalation`).

use super::rule::{self, PolicyRule};
use super::{Attributes, PRIVILEGED_GROUP, Wording, authorize, new_forbidden, rules_for};
use crate::UserInfo;
use crate::api::Request;
use crate::managed;
use crate::resources::RBAC;
use crate::server::Shared;
use crate::status::{ApiResult, go_quote};
use crate::store::Store;
use crate::util::{meta_mut, meta_str};
use serde_json::{Map, Value};

/// Admits or refuses a write of an RBAC object, as the policy-based storage does before the
/// standard storage runs (so before validation, the 404 of a PUT and resourceVersion checks).
/// `obj` is the object to be written, `old` the live one (None on create, and on a PUT or apply
/// of a missing object). Other kinds, and servers without RBAC, are always admitted.
pub fn admit(
    shared: &Shared,
    st: &Store,
    req: &Request,
    obj: &Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if !shared.opts.rbac || req.rt.group != RBAC || escalation_allowed(&req.user) {
        return Ok(());
    }
    match req.rt.plural {
        "rolebindings" | "clusterrolebindings" => admit_binding(st, req, obj, old),
        "roles" | "clusterroles" => admit_role(st, req, obj, old),
        _ => Ok(()),
    }
}

/// `EscalationAllowed`: `system:masters` (the apiserver's own loopback identity) skips the check.
fn escalation_allowed(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == PRIVILEGED_GROUP)
}

/// `Covers` of the user's rules in `ns` over `rules`, worded as `ConfirmNoEscalation`.
pub fn confirm_no_escalation(
    st: &Store,
    user: &UserInfo,
    ns: &str,
    rules: &[PolicyRule],
) -> Result<(), String> {
    let (held, errors) = rules_for(st, user, ns, Wording::Registry);
    let missing = rule::uncovered(&held, rules);
    if missing.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        go_quote(&user.username),
        rule::go_quote_list(&user.groups),
        rule::describe_missing(&missing).join("\n")
    );
    if !errors.is_empty() {
        // A slice holding the one aggregate error, printed with %v.
        msg.push_str(&format!(
            "; resolution errors: [{}]",
            super::aggregate(&errors)
        ));
    }
    Err(msg)
}

/// The roleRef of a binding, `apiGroup` defaulted as `SetDefaults_RoleBinding` does.
struct RoleRef<'a> {
    api_group: &'a str,
    kind: &'a str,
    name: &'a str,
}

impl<'a> RoleRef<'a> {
    fn of(binding: &'a Value) -> Self {
        let get = |k: &str| {
            binding
                .pointer(&format!("/roleRef/{k}"))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let api_group = match get("apiGroup") {
            "" => RBAC,
            g => g,
        };
        Self {
            api_group,
            kind: get("kind"),
            name: get("name"),
        }
    }
}

/// The RoleBinding and ClusterRoleBinding storages' `Create`/`Update`.
fn admit_binding(st: &Store, req: &Request, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    if old.is_some_and(|old| only_gc_fields(req, obj, old)) {
        return Ok(());
    }
    let role_ref = RoleRef::of(obj);
    // A RoleBinding is checked in its namespace, a ClusterRoleBinding cluster-wide.
    let binding_ns = if req.rt.plural == "rolebindings" {
        req.namespace.as_deref().unwrap_or("")
    } else {
        ""
    };
    if binding_authorized(st, &req.user, &role_ref, binding_ns) {
        return Ok(());
    }
    let rules = super::role_reference_rules(
        st,
        role_ref.kind,
        role_ref.name,
        binding_ns,
        Wording::Registry,
    )?;
    confirm_no_escalation(st, &req.user, binding_ns, &rules)
        .map_err(|e| new_forbidden(RBAC, req.rt.plural, meta_str(obj, "name"), &e))
}

/// `BindingAuthorized`: may the user `bind` this role (by name) where the binding lives?
fn binding_authorized(st: &Store, user: &UserInfo, role_ref: &RoleRef<'_>, ns: &str) -> bool {
    let resource = match role_ref.kind {
        "ClusterRole" => "clusterroles",
        "Role" => "roles",
        _ => return false,
    };
    let attrs = Attributes {
        verb: "bind".into(),
        group: role_ref.api_group.into(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: ns.into(),
        name: role_ref.name.into(),
    };
    authorize(st, user, &attrs).allowed
}

/// The Role and ClusterRole storages' `Create`/`Update`.
fn admit_role(st: &Store, req: &Request, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let ns = req.namespace.as_deref().unwrap_or("");
    // RoleEscalationAuthorized: the request's own name, so never on create (no name in a POST).
    let attrs = Attributes {
        verb: "escalate".into(),
        group: RBAC.into(),
        resource: req.rt.plural.into(),
        subresource: String::new(),
        namespace: ns.into(),
        name: req.name.clone().unwrap_or_default(),
    };
    if authorize(st, &req.user, &attrs).allowed {
        return Ok(());
    }
    if old.is_some_and(|old| only_gc_fields(req, obj, old)) {
        return Ok(());
    }
    let name = meta_str(obj, "name");
    let forbid = |e: &str| new_forbidden(RBAC, req.rt.plural, name, e);
    confirm_no_escalation(st, &req.user, ns, &PolicyRule::rules_of(obj)).map_err(|e| forbid(&e))?;
    // An aggregationRule can gather any rule, so setting or changing one needs `*` on `*.*`.
    let aggregates = |o: &Value| {
        o.pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty())
    };
    if req.rt.plural == "clusterroles"
        && (aggregates(obj) || old.is_some_and(aggregates))
        && confirm_no_escalation(st, &req.user, ns, &full_authority()).is_err()
    {
        return Err(forbid(
            "must have cluster-admin privileges to use the aggregationRule",
        ));
    }
    Ok(())
}

/// `fullAuthority` of the ClusterRole storage: every verb on every resource and URL.
fn full_authority() -> Vec<PolicyRule> {
    vec![
        PolicyRule::resource(&["*"], &["*"], &["*"], &[]),
        PolicyRule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..PolicyRule::default()
        },
    ]
}

/// `IsOnlyMutatingGCFields`: the update changes nothing but ownerReferences, finalizers and
/// selfLink. Upstream compares after the field manager has recorded the write, so a change a
/// manager's managedFields entry records is not GC-only; kube-sim records it the same way.
fn only_gc_fields(req: &Request, obj: &Value, old: &Value) -> bool {
    let mut new = obj.clone();
    let apply = req.content_type.starts_with("application/apply-patch");
    if !apply {
        if new.pointer("/metadata/managedFields").is_none()
            && let Some(mf) = old.pointer("/metadata/managedFields")
        {
            meta_mut(&mut new).insert("managedFields".into(), mf.clone());
        }
        let version = req.rt.api_version();
        managed::track_update(req.rt.kind, Some(old), &mut new, &req.manager(), &version);
    }
    for key in ["ownerReferences", "finalizers", "selfLink"] {
        match old.pointer(&format!("/metadata/{key}")) {
            Some(v) => {
                meta_mut(&mut new).insert(key.into(), v.clone());
            }
            None => {
                meta_mut(&mut new).remove(key);
            }
        }
    }
    // Typed objects are compared, whose TypeMeta the decoding sets alike on both sides.
    let comparable = |v: &Value| {
        let mut v = without_zero_values(v);
        if let Some(m) = v.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
        v
    };
    comparable(&new) == comparable(old)
}

/// The value with empty fields dropped: Go's semantic DeepEqual of typed objects cannot tell an
/// absent field from an empty one.
fn without_zero_values(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let kept: Map<String, Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), without_zero_values(v)))
                .filter(|(_, v)| !is_zero(v))
                .collect();
            Value::Object(kept)
        }
        Value::Array(a) => Value::Array(a.iter().map(without_zero_values).collect()),
        other => other.clone(),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventType;
    use serde_json::json;

    fn put(st: &mut Store, plural: &'static str, ns: &str, obj: Value) {
        let key = crate::resources::ResourceKey {
            group: RBAC,
            plural,
        };
        let name = meta_str(&obj, "name").to_string();
        st.put(key, ns, &name, obj, EventType::Added);
    }

    /// team:bot may create RoleBindings in `team` and read Secrets there; cluster-admin exists.
    fn cluster() -> (Store, UserInfo) {
        let mut st = Store::new(10);
        put(
            &mut st,
            "clusterroles",
            "",
            json!({"metadata": {"name": "cluster-admin"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                      {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
        );
        put(
            &mut st,
            "roles",
            "team",
            json!({"metadata": {"name": "binder", "namespace": "team"},
            "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]},
                      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}),
        );
        // The subject has no namespace: in a RoleBinding it means the binding's own.
        put(
            &mut st,
            "rolebindings",
            "team",
            json!({"metadata": {"name": "bot", "namespace": "team"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "binder"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot"}]}),
        );
        (st, UserInfo::service_account("team", "bot"))
    }

    #[test]
    fn missing_rules_are_listed_as_confirm_no_escalation_words_them() {
        let (st, bot) = cluster();
        let admin = st
            .get(super::super::rbac_key("clusterroles"), "", "cluster-admin")
            .map(PolicyRule::rules_of)
            .unwrap_or_default();
        assert_eq!(
            confirm_no_escalation(&st, &bot, "team", &admin),
            Err("user \"system:serviceaccount:team:bot\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:team\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
                 {APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}\n\
                 {NonResourceURLs:[\"*\"], Verbs:[\"*\"]}"
                .to_string())
        );
        // Held rules (and subsets of them) are no escalation; elsewhere the binding does not apply.
        let read = [PolicyRule::resource(
            &["get"],
            &[""],
            &["secrets"],
            &["reg"],
        )];
        assert_eq!(confirm_no_escalation(&st, &bot, "team", &read), Ok(()));
        assert!(confirm_no_escalation(&st, &bot, "other", &read).is_err());
        assert!(confirm_no_escalation(&st, &bot, "", &read).is_err());
    }

    #[test]
    fn a_binding_to_a_missing_role_is_a_resolution_error() {
        let (mut st, bot) = cluster();
        put(
            &mut st,
            "rolebindings",
            "team",
            json!({"metadata": {"name": "dangling", "namespace": "team"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "team"}]}),
        );
        let want = [PolicyRule::resource(&["delete"], &[""], &["secrets"], &[])];
        let err = match confirm_no_escalation(&st, &bot, "team", &want) {
            Err(e) => e,
            Ok(()) => panic!("delete secrets is not held"),
        };
        assert!(
            err.ends_with(
                "Verbs:[\"delete\"]}; resolution errors: [clusterroles.rbac.authorization.k8s.io \"gone\" not found]"
            ),
            "{err}"
        );
        // The authorizer reads listers: singular resource in its reason.
        let attrs = Attributes {
            verb: "delete".into(),
            resource: "secrets".into(),
            namespace: "team".into(),
            name: "x".into(),
            ..Attributes::default()
        };
        let d = authorize(&st, &bot, &attrs);
        assert!(!d.allowed);
        assert_eq!(
            d.reason,
            "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found"
        );
    }

    #[test]
    fn bind_is_checked_by_role_name_in_the_binding_namespace() {
        let (mut st, bot) = cluster();
        put(
            &mut st,
            "roles",
            "team",
            json!({"metadata": {"name": "puller-binder", "namespace": "team"},
            "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                       "resourceNames": ["system:image-puller"], "verbs": ["bind"]}]}),
        );
        put(
            &mut st,
            "rolebindings",
            "team",
            json!({"metadata": {"name": "bot-binds", "namespace": "team"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "puller-binder"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "team"}]}),
        );
        let role = |name| RoleRef {
            api_group: RBAC,
            kind: "ClusterRole",
            name,
        };
        assert!(binding_authorized(
            &st,
            &bot,
            &role("system:image-puller"),
            "team"
        ));
        assert!(!binding_authorized(
            &st,
            &bot,
            &role("cluster-admin"),
            "team"
        ));
        assert!(!binding_authorized(
            &st,
            &bot,
            &role("system:image-puller"),
            "other"
        ));
        assert!(!binding_authorized(
            &st,
            &bot,
            &role("system:image-puller"),
            ""
        ));
    }

    #[test]
    fn zero_values_do_not_count() {
        assert_eq!(
            without_zero_values(&json!({"a": [], "b": {"c": ""}, "d": [{"e": null}], "f": 1})),
            json!({"d": [{}], "f": 1})
        );
    }
}

//! kube-sim's RBAC, through the real `kube::Client`: the escalation check on bindings and roles
//! (pkg/registry/rbac/*/policybased/storage.go) and resourceNames in the authorizer
//! (plugin/pkg/auth/authorizer/rbac/rbac.go, requestinfo.go). Each test starts its own server
//! with RBAC enforced; setup is seeded as the admin, the calls under test are made as the
//! restricted identities.

#![allow(clippy::unwrap_used)]

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Client, Error};
use kube_sim::{Handle, Options, Server, UserInfo};
use serde_json::{Value, json};
use std::time::Duration;

const RBAC: &str = "rbac.authorization.k8s.io";
/// `%q` of a service account's groups in namespace `team`.
const TEAM_SA_GROUPS: &str =
    r#"["system:serviceaccounts" "system:serviceaccounts:team" "system:authenticated"]"#;
/// How cluster-admin's two rules are listed when missing.
const ADMIN_RULES: &str = "{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}\n{NonResourceURLs:[\"*\"], Verbs:[\"*\"]}";

/// A server with RBAC on and the given identities (token → user).
async fn start(openshift: bool, users: &[(&str, UserInfo)]) -> Handle {
    let mut opts = if openshift {
        Options::default().openshift()
    } else {
        Options::default()
    };
    for (token, user) in users {
        opts = opts.identity(token, user.clone());
    }
    opts.rbac = true;
    let h = Server::start(opts).await.expect("server starts");
    for ns in ["team", "other"] {
        seed(&h, "", "namespaces", json!({"metadata": {"name": ns}}));
    }
    seed(
        &h,
        RBAC,
        "clusterroles",
        json!({"metadata": {"name": "cluster-admin"},
               "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                         {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
    );
    h
}

/// Creates an object as the cluster would hold it, bypassing HTTP (and RBAC).
fn seed(h: &Handle, group: &str, resource: &str, obj: Value) {
    h.create(group, resource, obj).expect("seeded");
}

/// A Role (or ClusterRole, with `ns` empty) and a binding of it to `subject`.
fn grant(h: &Handle, ns: &str, name: &str, rules: Value, subject: Value) {
    let (role_kind, roles, bindings) = if ns.is_empty() {
        ("ClusterRole", "clusterroles", "clusterrolebindings")
    } else {
        ("Role", "roles", "rolebindings")
    };
    seed(
        h,
        RBAC,
        roles,
        json!({"metadata": {"name": name, "namespace": ns}, "rules": rules}),
    );
    seed(
        h,
        RBAC,
        bindings,
        json!({"metadata": {"name": name, "namespace": ns},
               "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": name},
               "subjects": [subject]}),
    );
}

fn sa(ns: &str, name: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
}

/// A client for `token` that does not retry, so each answer is seen as it is.
fn client(h: &Handle, token: &str) -> Client {
    let mut cfg = h.kube_config();
    cfg.default_retry = false;
    cfg.auth_info.token = Some(token.to_string().into());
    Client::try_from(cfg).expect("client")
}

fn binding(name: &str, kind: &str, role: &str) -> RoleBinding {
    serde_json::from_value(json!({"metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "other"}]}))
    .unwrap()
}

fn status(r: Result<impl std::fmt::Debug, Error>) -> Value {
    match r {
        Err(Error::Api(s)) => {
            let mut v = serde_json::to_value(*s).unwrap();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
            }
            v
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn forbidden(resource: &str, name: &str, message: &str) -> Value {
    json!({"status": "Failure", "code": 403, "reason": "Forbidden", "message": message,
           "details": {"name": name, "group": RBAC, "kind": resource}})
}

#[tokio::test]
async fn create_rolebindings_alone_cannot_bind_cluster_admin() {
    let h = start(
        false,
        &[("binder", UserInfo::service_account("team", "binder"))],
    )
    .await;
    grant(
        &h,
        "team",
        "binder",
        json!([{"apiGroups": [RBAC], "resources": ["rolebindings"], "verbs": ["create", "update"]}]),
        sa("team", "binder"),
    );
    let api: Api<RoleBinding> = Api::namespaced(client(&h, "binder"), "team");
    let denied = api
        .create(
            &PostParams::default(),
            &binding("grab", "ClusterRole", "cluster-admin"),
        )
        .await;
    assert_eq!(
        status(denied),
        forbidden(
            "rolebindings",
            "grab",
            &format!(
                "rolebindings.rbac.authorization.k8s.io \"grab\" is forbidden: user \"system:serviceaccount:team:binder\" (groups={TEAM_SA_GROUPS}) is attempting to grant RBAC permissions not currently held:\n{ADMIN_RULES}"
            )
        )
    );
    assert!(h.get(RBAC, "rolebindings", "team", "grab").is_none());
    // A generated name is not known yet when the check runs.
    let mut anonymous = binding("", "ClusterRole", "cluster-admin");
    anonymous.metadata.name = None;
    anonymous.metadata.generate_name = Some("grab-".into());
    let denied = status(api.create(&PostParams::default(), &anonymous).await);
    assert_eq!(
        denied["details"],
        json!({"group": RBAC, "kind": "rolebindings"})
    );
    assert!(
        denied["message"]
            .as_str()
            .unwrap()
            .starts_with("rolebindings.rbac.authorization.k8s.io is forbidden: user "),
        "{denied}"
    );
    // The check runs before the registry looks for the object: a PUT of a missing binding is 403.
    let denied = api
        .replace(
            "grab",
            &PostParams::default(),
            &binding("grab", "ClusterRole", "cluster-admin"),
        )
        .await;
    assert_eq!(status(denied)["code"], 403);
    // A roleRef kind the storage cannot resolve is a plain error: 500 without a reason.
    let odd = api
        .create(&PostParams::default(), &binding("odd", "Group", "admins"))
        .await;
    assert_eq!(
        status(odd),
        json!({"status": "Failure", "code": 500,
               "message": "unsupported role reference kind: \"Group\""})
    );
    // Binding a role that does not exist needs the role's rules, so the lookup fails first.
    let missing = api
        .create(
            &PostParams::default(),
            &binding("ghost", "ClusterRole", "no-such-role"),
        )
        .await;
    assert_eq!(
        status(missing),
        json!({"status": "Failure", "code": 404, "reason": "NotFound",
               "message": "clusterroles.rbac.authorization.k8s.io \"no-such-role\" not found",
               "details": {"name": "no-such-role", "group": RBAC, "kind": "clusterroles"}})
    );
}

#[tokio::test]
async fn an_unchanged_binding_may_be_written_back_without_bind() {
    let h = start(
        false,
        &[("binder", UserInfo::service_account("team", "binder"))],
    )
    .await;
    grant(
        &h,
        "team",
        "binder",
        json!([{"apiGroups": [RBAC], "resources": ["rolebindings"], "verbs": ["update"]}]),
        sa("team", "binder"),
    );
    seed(
        &h,
        RBAC,
        "rolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "admins", "namespace": "team"},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "apiGroup": RBAC, "name": "admins"}]}),
    );
    let stored = h.get(RBAC, "rolebindings", "team", "admins").unwrap();
    let api: Api<RoleBinding> = Api::namespaced(client(&h, "binder"), "team");
    let same: RoleBinding = serde_json::from_value(stored.clone()).unwrap();
    let written = api
        .replace("admins", &PostParams::default(), &same)
        .await
        .expect("a write that changes nothing is only GC fields");
    assert_eq!(
        written.metadata.resource_version.as_deref(),
        stored["metadata"]["resourceVersion"].as_str()
    );
    // A finalizer is a GC field, but the field manager records who set it: a real change.
    let mut finalized = same;
    finalized.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    let denied = api
        .replace("admins", &PostParams::default(), &finalized)
        .await;
    assert_eq!(
        status(denied)["message"],
        format!(
            "rolebindings.rbac.authorization.k8s.io \"admins\" is forbidden: user \"system:serviceaccount:team:binder\" (groups={TEAM_SA_GROUPS}) is attempting to grant RBAC permissions not currently held:\n{ADMIN_RULES}"
        )
    );
}

/// The shipped ClusterRole's shape: rolebindings everywhere, `bind` on one ClusterRole by name.
async fn puller_cluster() -> Handle {
    let h = start(
        true,
        &[("puller", UserInfo::service_account("team", "puller"))],
    )
    .await;
    grant(
        &h,
        "",
        "puller",
        json!([{"apiGroups": [RBAC], "resources": ["rolebindings", "clusterrolebindings"],
                "verbs": ["list", "watch", "create", "update", "delete"]},
               {"apiGroups": [RBAC], "resources": ["clusterroles"],
                "resourceNames": ["system:image-puller"], "verbs": ["bind"]}]),
        sa("team", "puller"),
    );
    seed(
        &h,
        RBAC,
        "clusterroles",
        json!({"metadata": {"name": "secret-reader"},
               "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}),
    );
    h
}

#[tokio::test]
async fn bind_by_resource_name_allows_that_role_only() {
    let h = puller_cluster().await;
    let api: Api<RoleBinding> = Api::namespaced(client(&h, "puller"), "other");
    let created = api
        .create(
            &PostParams::default(),
            &binding("system:image-puller", "ClusterRole", "system:image-puller"),
        )
        .await
        .expect("bind on system:image-puller admits the binding");
    assert_eq!(created.role_ref.name, "system:image-puller");
    let denied = api
        .create(
            &PostParams::default(),
            &binding("reader", "ClusterRole", "secret-reader"),
        )
        .await;
    assert_eq!(
        status(denied),
        forbidden(
            "rolebindings",
            "reader",
            &format!(
                "rolebindings.rbac.authorization.k8s.io \"reader\" is forbidden: user \"system:serviceaccount:team:puller\" (groups={TEAM_SA_GROUPS}) is attempting to grant RBAC permissions not currently held:\n{{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}}"
            )
        )
    );
    // An update is checked as well, and passes with the same bind rule.
    let mut next = created.clone();
    next.subjects = Some(vec![
        serde_json::from_value(
            json!({"kind": "Group", "apiGroup": RBAC, "name": "system:serviceaccounts:other"}),
        )
        .unwrap(),
    ]);
    let updated = api
        .replace("system:image-puller", &PostParams::default(), &next)
        .await
        .expect("update admitted");
    assert_eq!(
        updated.subjects.unwrap()[0].name,
        "system:serviceaccounts:other"
    );
    // roleRef is immutable: ValidateRoleBindingUpdate's 422 (the bind check passes first).
    let mut moved = h
        .get(RBAC, "rolebindings", "other", "system:image-puller")
        .unwrap();
    moved["roleRef"]["name"] = json!("cluster-admin");
    let moved: RoleBinding = serde_json::from_value(moved).unwrap();
    let refused = api
        .replace("system:image-puller", &PostParams::default(), &moved)
        .await;
    assert_eq!(
        status(refused)["code"],
        403,
        "cluster-admin is not bindable"
    );
    let admin: Api<RoleBinding> =
        Api::namespaced(Client::try_from(h.kube_config()).unwrap(), "other");
    let refused = admin
        .replace("system:image-puller", &PostParams::default(), &moved)
        .await;
    let cause = "Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"cluster-admin\"}: cannot change roleRef";
    assert_eq!(
        status(refused),
        json!({"status": "Failure", "code": 422, "reason": "Invalid",
               "message": format!("RoleBinding.rbac.authorization.k8s.io \"system:image-puller\" is invalid: roleRef: {cause}"),
               "details": {"name": "system:image-puller", "group": RBAC, "kind": "RoleBinding",
                           "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "roleRef"}]}})
    );
}

#[tokio::test]
async fn cluster_role_bindings_need_bind_cluster_wide() {
    let h = puller_cluster().await;
    let crbs: Api<ClusterRoleBinding> = Api::all(client(&h, "puller"));
    let crb = |name: &str, role: &str| -> ClusterRoleBinding {
        serde_json::from_value(json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "Group", "apiGroup": RBAC, "name": "system:authenticated"}]}))
        .unwrap()
    };
    crbs.create(
        &PostParams::default(),
        &crb("pullers", "system:image-puller"),
    )
    .await
    .expect("bind on system:image-puller is cluster-wide here");
    let denied = crbs
        .create(
            &PostParams::default(),
            &crb("everyone-admin", "cluster-admin"),
        )
        .await;
    assert_eq!(
        status(denied),
        forbidden(
            "clusterrolebindings",
            "everyone-admin",
            &format!(
                "clusterrolebindings.rbac.authorization.k8s.io \"everyone-admin\" is forbidden: user \"system:serviceaccount:team:puller\" (groups={TEAM_SA_GROUPS}) is attempting to grant RBAC permissions not currently held:\n{ADMIN_RULES}"
            )
        )
    );

    // A ClusterRoleBinding of a Role is looked up with no namespace, which the registry refuses.
    let mut of_role = crb("of-role", "some-role");
    of_role.role_ref.kind = "Role".into();
    assert_eq!(
        status(crbs.create(&PostParams::default(), &of_role).await),
        json!({"status": "Failure", "code": 400, "reason": "BadRequest",
               "message": "Namespace parameter required."})
    );

    // `bind` granted in one namespace only admits RoleBindings there, never a ClusterRoleBinding.
    let h = start(false, &[("ns-binder", UserInfo::user("carol", &[]))]).await;
    seed(
        &h,
        RBAC,
        "clusterroles",
        json!({"metadata": {"name": "system:image-puller"},
        "rules": [{"verbs": ["get"], "apiGroups": ["image.openshift.io", ""], "resources": ["imagestreams/layers"]}]}),
    );
    grant(
        &h,
        "",
        "crb-writer",
        json!([{"apiGroups": [RBAC], "resources": ["clusterrolebindings", "rolebindings"], "verbs": ["create"]}]),
        json!({"kind": "User", "apiGroup": RBAC, "name": "carol"}),
    );
    grant(
        &h,
        "team",
        "team-binder",
        json!([{"apiGroups": [RBAC], "resources": ["clusterroles"], "resourceNames": ["system:image-puller"], "verbs": ["bind"]}]),
        json!({"kind": "User", "apiGroup": RBAC, "name": "carol"}),
    );
    let carol = client(&h, "ns-binder");
    Api::<RoleBinding>::namespaced(carol.clone(), "team")
        .create(
            &PostParams::default(),
            &binding("pull", "ClusterRole", "system:image-puller"),
        )
        .await
        .expect("bind holds in team");
    let elsewhere = Api::<RoleBinding>::namespaced(carol.clone(), "other")
        .create(
            &PostParams::default(),
            &binding("pull", "ClusterRole", "system:image-puller"),
        )
        .await;
    let missing = "{APIGroups:[\"\"], Resources:[\"imagestreams/layers\"], Verbs:[\"get\"]}\n{APIGroups:[\"image.openshift.io\"], Resources:[\"imagestreams/layers\"], Verbs:[\"get\"]}";
    assert_eq!(
        status(elsewhere)["message"],
        format!(
            "rolebindings.rbac.authorization.k8s.io \"pull\" is forbidden: user \"carol\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{missing}"
        )
    );
    let cluster_wide = Api::<ClusterRoleBinding>::all(carol)
        .create(&PostParams::default(), &crb("pull", "system:image-puller"))
        .await;
    assert_eq!(status(cluster_wide)["code"], 403);
}

#[tokio::test]
async fn holding_every_rule_of_a_role_is_enough_to_bind_it() {
    let h = start(false, &[("alice", UserInfo::user("alice", &["devs"]))]).await;
    grant(
        &h,
        "team",
        "alice",
        json!([{"apiGroups": [RBAC], "resources": ["rolebindings"], "verbs": ["create"]},
               {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch"]}]),
        json!({"kind": "Group", "apiGroup": RBAC, "name": "devs"}),
    );
    seed(
        &h,
        RBAC,
        "roles",
        json!({"metadata": {"name": "reader", "namespace": "team"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}),
    );
    seed(
        &h,
        RBAC,
        "roles",
        json!({"metadata": {"name": "writer", "namespace": "team"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "update", "delete"]},
                  {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get", "patch"]}]}),
    );
    let api: Api<RoleBinding> = Api::namespaced(client(&h, "alice"), "team");
    api.create(&PostParams::default(), &binding("reader", "Role", "reader"))
        .await
        .expect("alice holds every rule of reader");
    let denied = api
        .create(&PostParams::default(), &binding("writer", "Role", "writer"))
        .await;
    assert_eq!(
        status(denied)["message"],
        "rolebindings.rbac.authorization.k8s.io \"writer\" is forbidden: user \"alice\" (groups=[\"devs\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
         {APIGroups:[\"\"], Resources:[\"configmaps\"], ResourceNames:[\"cfg\"], Verbs:[\"patch\"]}\n\
         {APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"update\" \"delete\"]}"
    );
}

#[tokio::test]
async fn roles_need_escalate_or_every_rule_they_grant() {
    let h = start(
        false,
        &[
            ("bob", UserInfo::user("bob", &[])),
            ("eve", UserInfo::user("eve", &[])),
        ],
    )
    .await;
    let role_writer = json!([{"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["create", "update"]},
                             {"apiGroups": [RBAC], "resources": ["clusterroles"], "verbs": ["create"]},
                             {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]);
    grant(
        &h,
        "",
        "role-writer",
        role_writer,
        json!({"kind": "User", "apiGroup": RBAC, "name": "bob"}),
    );
    grant(
        &h,
        "team",
        "escalator",
        json!([{"apiGroups": [RBAC], "resources": ["roles"], "verbs": ["create", "escalate"]}]),
        json!({"kind": "User", "apiGroup": RBAC, "name": "eve"}),
    );
    let role = |name: &str, verbs: Value| -> Role {
        serde_json::from_value(json!({"metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": verbs}]}))
        .unwrap()
    };
    let bob: Api<Role> = Api::namespaced(client(&h, "bob"), "team");
    bob.create(&PostParams::default(), &role("getter", json!(["get"])))
        .await
        .expect("bob holds get secrets");
    let denied = bob
        .create(
            &PostParams::default(),
            &role("deleter", json!(["get", "delete"])),
        )
        .await;
    assert_eq!(
        status(denied),
        forbidden(
            "roles",
            "deleter",
            "roles.rbac.authorization.k8s.io \"deleter\" is forbidden: user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"delete\"]}"
        )
    );
    // Updating a role to grant more is the same check.
    let mut getter: Role =
        serde_json::from_value(h.get(RBAC, "roles", "team", "getter").unwrap()).unwrap();
    getter.rules.as_mut().unwrap()[0].verbs.push("list".into());
    assert_eq!(
        status(bob.replace("getter", &PostParams::default(), &getter).await)["code"],
        403
    );
    // escalate lets eve write any rule.
    Api::<Role>::namespaced(client(&h, "eve"), "team")
        .create(&PostParams::default(), &role("anything", json!(["*"])))
        .await
        .expect("escalate skips the check");
    // An aggregationRule can gather anything: only a holder of `*` on `*` may set one.
    let aggregated: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "gathers"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}}))
    .unwrap();
    let denied = Api::<ClusterRole>::all(client(&h, "bob"))
        .create(&PostParams::default(), &aggregated)
        .await;
    assert_eq!(
        status(denied),
        forbidden(
            "clusterroles",
            "gathers",
            "clusterroles.rbac.authorization.k8s.io \"gathers\" is forbidden: must have cluster-admin privileges to use the aggregationRule"
        )
    );
}

/// team:reader may do anything to the Secret named `reg`, and nothing else.
async fn reader_cluster() -> (Handle, Api<Secret>) {
    let h = start(
        false,
        &[("reader", UserInfo::service_account("team", "reader"))],
    )
    .await;
    grant(
        &h,
        "team",
        "reader",
        json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["reg"], "verbs": ["*"]}]),
        sa("team", "reader"),
    );
    for name in ["reg", "other"] {
        seed(
            &h,
            "",
            "secrets",
            json!({"metadata": {"name": name, "namespace": "team"}, "data": {}}),
        );
    }
    let api = Api::namespaced(client(&h, "reader"), "team");
    (h, api)
}

fn user_forbidden(verb: &str, name: &str) -> Value {
    let what = if name.is_empty() {
        "secrets".to_string()
    } else {
        format!("secrets \"{name}\"")
    };
    // kube's Status drops the empty core group when it is read back.
    let mut details = json!({"kind": "secrets"});
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    json!({"status": "Failure", "code": 403, "reason": "Forbidden", "details": details,
           "message": format!("{what} is forbidden: User \"system:serviceaccount:team:reader\" cannot {verb} resource \"secrets\" in API group \"\" in the namespace \"team\"")})
}

#[tokio::test]
async fn resource_names_allow_that_name_only_and_never_create() {
    let (h, api) = reader_cluster().await;
    api.get("reg").await.expect("get reg");
    assert_eq!(
        status(api.get("other").await),
        user_forbidden("get", "other")
    );
    let patch = Patch::Merge(json!({"metadata": {"labels": {"seen": "yes"}}}));
    api.patch("reg", &PatchParams::default(), &patch)
        .await
        .expect("patch reg");
    assert_eq!(
        status(api.patch("other", &PatchParams::default(), &patch).await),
        user_forbidden("patch", "other")
    );
    let current = api.get("reg").await.unwrap();
    api.replace("reg", &PostParams::default(), &current)
        .await
        .expect("update reg");
    // create carries no name, so a name-limited rule never allows it (even for the same name).
    let fresh: Secret = serde_json::from_value(json!({"metadata": {"name": "reg"}})).unwrap();
    assert_eq!(
        status(api.create(&PostParams::default(), &fresh).await),
        user_forbidden("create", "")
    );
    assert_eq!(
        status(api.delete("other", &DeleteParams::default()).await),
        user_forbidden("delete", "other")
    );
    api.delete("reg", &DeleteParams::default())
        .await
        .expect("delete reg");
    assert!(h.get("", "secrets", "team", "reg").is_none());
}

#[tokio::test]
async fn resource_names_allow_list_and_watch_only_with_a_name_selector() {
    let (_h, api) = reader_cluster().await;
    assert_eq!(
        status(api.list(&ListParams::default()).await),
        user_forbidden("list", "")
    );
    let one = api
        .list(&ListParams::default().fields("metadata.name=reg"))
        .await
        .expect("list by name");
    let names: Vec<_> = one
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, ["reg"]);
    // The selector's name is the request's: the denial names it.
    assert_eq!(
        status(
            api.list(&ListParams::default().fields("metadata.name=other"))
                .await
        ),
        user_forbidden("list", "other")
    );
    assert_eq!(
        status(
            api.list(&ListParams::default().fields("metadata.name!=other"))
                .await
        ),
        user_forbidden("list", "")
    );
    assert!(matches!(
        api.watch(&WatchParams::default(), "0").await.map(|_| ()),
        Err(Error::Api(s)) if s.code == 403
    ));
    let stream = api
        .watch(&WatchParams::default().fields("metadata.name=reg"), "0")
        .await
        .expect("watch by name");
    let mut stream = Box::pin(stream);
    let first = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("an event before the deadline");
    match first {
        Some(Ok(WatchEvent::Added(s))) => assert_eq!(s.metadata.name.as_deref(), Some("reg")),
        other => panic!("expected ADDED reg, got {other:?}"),
    }
}

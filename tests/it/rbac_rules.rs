//! Every verb of the shipped RBAC is needed: for each rule of deploy/base's ClusterRole and
//! Lease Role, and each verb in it, kube-sim (RBAC enforced, escalation check included) is
//! seeded with the shipped objects minus that one verb, and the `run` daemon, as pullsecretd's
//! service account, is driven through every job it has (elect, converge, provision a new
//! namespace, repair a deleted Secret and a removed link after a 409, rotate, repair and delete
//! the image-puller binding, report a recurring problem, clean up, release the Lease). The
//! dropped verb must be refused at least once — a 403 on exactly that verb and resource (for
//! `bind`: the RoleBinding create the escalation check refuses) — or the rule is not needed and
//! the test fails. With every verb in place nothing is refused (tests/it/daemon_rbac.rs). The
//! namespaced overlay's Role goes through the same oracle in tests/it/rbac_rules_namespaced.rs.

use crate::support::cluster::Fixture;

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_sim::Options;
use serde_json::{Value, json};

use pullsecretd::daemon::{self, DaemonOptions};

const SENTINEL: &str = "SENTINEL-pw-rbac-rules-2b90";
const TOKEN: &str = "pullsecretd-sa-token";
const HOME: &str = "pullsecretd";
const IMAGE_PULLERS: &str =
    "imagePullers:\n  - project: b\n    allow: [serviceaccount:a:default]\n";

/// The objects of one deploy/base file.
fn shipped(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/base")
        .join(file);
    let yaml = std::fs::read_to_string(path).expect("deploy/base file");
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .collect()
}

/// The shipped objects with `verb` removed from rule `rule` of the role in `file` (the rule
/// dropped when no verb is left).
fn without(file: &str, rule: usize, verb: &str) -> Vec<Value> {
    let mut objects: Vec<Value> = ["rbac.yaml", "leader-election.yaml"]
        .iter()
        .flat_map(|f| shipped(f).into_iter().map(move |o| (*f, o)))
        .map(|(f, mut object)| {
            let is_role = matches!(object["kind"].as_str(), Some("ClusterRole" | "Role"));
            if f == file && is_role {
                drop_verb(&mut object, rule, verb);
            }
            object
        })
        .collect();
    objects.sort_by_key(|o| o["kind"] != "ServiceAccount");
    objects
}

/// Removes `verb` from rule `rule` of `role` (the rule dropped when no verb is left).
pub(crate) fn drop_verb(role: &mut Value, rule: usize, verb: &str) {
    let rules = role["rules"].as_array_mut().expect("rules");
    let verbs = rules[rule]["verbs"].as_array_mut().expect("verbs");
    verbs.retain(|v| v.as_str() != Some(verb));
    if verbs.is_empty() {
        rules.remove(rule);
    }
}

/// kube-sim (OpenShift flavour, RBAC on) holding `objects`, and a client acting as
/// pullsecretd's service account.
async fn fixture(objects: Vec<Value>) -> (Fixture, Client) {
    let mut options = Options::default()
        .openshift()
        .identity(TOKEN, kube_sim::UserInfo::service_account(HOME, HOME));
    options.rbac = true;
    let fx = Fixture::start(options).await;
    fx.namespace(HOME, json!({}));
    crate::support::seed::rbac_objects(&fx.server, objects);
    let client = fx.client_as(TOKEN).await;
    (fx, client)
}

/// Waits until `check` holds, `refused` holds, or `limit` passes — never fails: with a verb
/// missing, a step may never complete.
pub(crate) async fn until(limit: Duration, refused: &dyn Fn() -> bool, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() && !refused() && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drives the daemon through every job its rules exist for, stopping early once `refused`.
async fn exercise(fx: &Fixture, client: Client, refused: &dyn Fn() -> bool) {
    let rotation = "    rotation: { refresh: 200ms }\n";
    fx.config(SENTINEL, &format!("{rotation}{IMAGE_PULLERS}"));
    fx.namespace("a", json!({}));
    fx.namespace("b", json!({}));
    fx.namespace("c", json!({"team": "web"}));
    let Some(running) = start_beside_foreign_secret(fx, client, "c").await else {
        return;
    };
    let step = Duration::from_secs(4);
    until(step, refused, || {
        fx.secret("a", "reg-pull").is_some()
            && fx
                .account_lists("a", "builder")
                .1
                .contains(&"reg-pull".into())
            && fx
                .server
                .get(
                    "rbac.authorization.k8s.io",
                    "rolebindings",
                    "b",
                    "pullsecretd-image-puller",
                )
                .is_some()
    })
    .await;

    // A new namespace, its first link edit answered 409 (so the account is read again).
    fx.server.force_conflicts(1);
    fx.namespace("web-1", json!({"team": "web"}));
    until(step, refused, || {
        fx.account_lists("web-1", "default")
            .0
            .contains(&"reg-pull".into())
    })
    .await;
    // The recurring problem: c reconciled again.
    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    let relabel = |labels: Value| Patch::Merge(json!({"metadata": {"labels": labels}}));
    let _ = namespaces
        .patch(
            "c",
            &PatchParams::default(),
            &relabel(json!({"again": "1"})),
        )
        .await;
    // A Secret deleted by hand, a link removed by hand, the binding edited by hand.
    let secrets: Api<Secret> = Api::namespaced(fx.client.clone(), "web-1");
    let _ = secrets.delete("reg-pull", &DeleteParams::default()).await;
    until(step, refused, || fx.secret("web-1", "reg-pull").is_some()).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(fx.client.clone(), "web-1");
    let _ = accounts
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": []})),
        )
        .await;
    until(step, refused, || {
        fx.account_lists("web-1", "default")
            .0
            .contains(&"reg-pull".into())
    })
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(fx.client.clone(), "b");
    let _ = bindings
        .patch(
            "pullsecretd-image-puller",
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": []})),
        )
        .await;
    until(step, refused, || {
        fx.server
            .get(
                "rbac.authorization.k8s.io",
                "rolebindings",
                "b",
                "pullsecretd-image-puller",
            )
            .is_some_and(|b| b["subjects"].as_array().is_some_and(|s| !s.is_empty()))
    })
    .await;
    // Rotation, its first write answered 409 (so the Secret is read again).
    fx.server.force_conflicts(1);
    fx.config("rotated-pw", &format!("{rotation}{IMAGE_PULLERS}"));
    until(step, refused, || {
        fx.secret("a", "reg-pull")
            .is_some_and(|s| crate::support::cluster::password_in(&s) == "rotated-pw")
    })
    .await;
    // Clean-up: web-1 no longer selected; the image pullers dropped from the config.
    let _ = namespaces
        .patch(
            "web-1",
            &PatchParams::default(),
            &relabel(json!({"team": null})),
        )
        .await;
    until(step, refused, || fx.secret("web-1", "reg-pull").is_none()).await;
    fx.config("rotated-pw", rotation);
    until(step, refused, || {
        fx.server
            .get(
                "rbac.authorization.k8s.io",
                "rolebindings",
                "b",
                "pullsecretd-image-puller",
            )
            .is_none()
    })
    .await;
    // The Lease released on the way out.
    running.stop();
    let _ = running.wait(Duration::from_secs(10)).await;
}

/// Seeds someone else's Secret of the wanted name `reg-pull` in `namespace` — a ForeignSecret
/// Warning at every reconcile there, which the daemon's one recorder turns into a series (a
/// patch) the second time — and starts the daemon as `client`. `None`: the start was refused
/// (the Lease, a probe list), which has met its 403 already.
pub(crate) async fn start_beside_foreign_secret(
    fx: &Fixture,
    client: Client,
    namespace: &str,
) -> Option<daemon::Running> {
    crate::support::seed::object(
        &fx.server,
        "",
        "secrets",
        json!({"metadata": {"name": "reg-pull", "namespace": namespace}, "type": "Opaque"}),
    );
    let options = DaemonOptions {
        reload_debounce: Duration::from_millis(100),
        ..fx.daemon_options(0)
    };
    daemon::start(client, options).await.ok()
}

/// Drops each verb of rule `rule` of the role in `file` in turn; each must be refused.
async fn each_verb_is_needed(file: &str, rule: usize) {
    let role = shipped(file)
        .into_iter()
        .find(|o| matches!(o["kind"].as_str(), Some("ClusterRole" | "Role")))
        .expect("a role");
    each_verb_is_refused(
        &format!("{file} rule {rule}"),
        &role["rules"][rule],
        async |verb| fixture(without(file, rule, verb)).await,
        exercise,
    )
    .await;
}

/// Drops each verb of `rule` in turn: `start(verb)` is kube-sim holding the RBAC without it
/// and a client as pullsecretd's service account, which `exercise` drives (stopping early once
/// the verb was refused). The dropped verb must be refused at least once — a 403 on exactly
/// that verb and the rule's resource; for `bind`, the RoleBinding create the escalation check
/// refuses — or the rule is not needed.
pub(crate) async fn each_verb_is_refused(
    what: &str,
    rule: &Value,
    start: impl AsyncFn(&str) -> (Fixture, Client),
    exercise: impl AsyncFn(&Fixture, Client, &dyn Fn() -> bool),
) {
    let resource = rule["resources"][0]
        .as_str()
        .expect("a resource")
        .to_string();
    let verbs: Vec<String> = rule["verbs"]
        .as_array()
        .expect("verbs")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    assert!(!verbs.is_empty());
    for verb in verbs {
        // `bind` is checked on the RoleBinding write it allows.
        let (refused_verb, refused_resource) = if verb == "bind" {
            ("create".to_string(), "rolebindings".to_string())
        } else {
            (verb.clone(), resource.clone())
        };
        let (fx, client) = start(&verb).await;
        let refused = || {
            fx.server
                .counts()
                .forbidden(&refused_verb, &refused_resource)
                > 0
        };
        exercise(&fx, client, &refused).await;
        assert!(
            refused(),
            "{what}: without `{verb}` on {resource} nothing was refused, so the rule is not \
             needed (403s: {:?})",
            fx.server.counts().forbidden
        );
    }
}

#[test]
fn the_rules_cover_exactly_what_each_test_below_drops() {
    let rules = |file: &str| {
        shipped(file)
            .into_iter()
            .find(|o| matches!(o["kind"].as_str(), Some("ClusterRole" | "Role")))
            .and_then(|role| role["rules"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    assert_eq!(
        rules("rbac.yaml"),
        8,
        "a rule was added or removed: add or remove its test"
    );
    assert_eq!(
        rules("leader-election.yaml"),
        2,
        "likewise for the Lease Role"
    );
}

#[tokio::test]
async fn namespaces_list_and_watch_are_needed() {
    each_verb_is_needed("rbac.yaml", 0).await;
}

#[tokio::test]
async fn every_secrets_verb_is_needed() {
    each_verb_is_needed("rbac.yaml", 1).await;
}

#[tokio::test]
async fn every_serviceaccounts_verb_is_needed() {
    each_verb_is_needed("rbac.yaml", 2).await;
}

#[tokio::test]
async fn rolebindings_list_watch_and_create_are_needed() {
    each_verb_is_needed("rbac.yaml", 3).await;
}

#[tokio::test]
async fn update_and_delete_of_the_image_puller_binding_by_name_are_needed() {
    each_verb_is_needed("rbac.yaml", 4).await;
}

#[tokio::test]
async fn bind_on_system_image_puller_is_needed() {
    each_verb_is_needed("rbac.yaml", 5).await;
}

#[tokio::test]
async fn events_create_and_patch_are_needed() {
    each_verb_is_needed("rbac.yaml", 6).await;
}

#[tokio::test]
async fn pods_list_is_needed() {
    each_verb_is_needed("rbac.yaml", 7).await;
}

#[tokio::test]
async fn lease_create_is_needed() {
    each_verb_is_needed("leader-election.yaml", 0).await;
}

#[tokio::test]
async fn lease_get_and_update_are_needed() {
    each_verb_is_needed("leader-election.yaml", 1).await;
}

/// The oracle's other half: with every shipped rule in place the same drive is refused nothing,
/// so each refusal above is the dropped verb's.
#[tokio::test]
async fn with_every_shipped_rule_nothing_is_refused() {
    let (fx, client) = fixture(without("(none)", 0, "(none)")).await;
    exercise(&fx, client, &|| false).await;
    let counts = fx.server.counts();
    assert!(
        counts.forbidden.is_empty(),
        "refused: {:?}",
        counts.forbidden
    );
    assert!(fx.secret("a", "reg-pull").is_some(), "it converged");
    assert!(fx.secret("web-1", "reg-pull").is_none(), "and cleaned up");
}

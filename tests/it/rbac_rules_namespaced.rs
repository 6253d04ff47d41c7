//! Every verb of the namespaced overlay's Role is needed: for each rule of the Role that
//! deploy/overlays/namespaced/rbac.yaml ships in every team namespace (rendered with the real
//! `kubectl kustomize`), and each verb in it, kube-sim (OpenShift flavour, RBAC enforced,
//! escalation check included) is seeded with the overlay's RBAC minus that verb in every team's
//! Role, and the `run` daemon in namespaced mode (`namespaces: [team-a, team-b]`), as
//! pullsecretd's service account, is driven through every job it has there: converge (a link
//! edit answered 409), repair a deleted Secret and a removed link, repair the image-puller
//! binding edited by hand, report a recurring problem (someone else's Secret of the wanted
//! name in team-b) as an Event series, rotate (the write answered 409), clean up a project
//! dropped from the pull secret and the image pullers dropped from the config. The dropped verb
//! must be refused at least once (`rbac_rules::each_verb_is_refused`), or the rule is not
//! needed and the test fails. With every rule in place nothing is refused.
//!
//! The Lease Role in pullsecretd's own namespace is the base's, covered by tests/it/rbac_rules.rs.

use crate::deploy::NAMESPACED_TEAMS;
use crate::namespaced::{fixture_holding, overlay_rbac, write_config_for};
use crate::rbac_rules::{drop_verb, each_verb_is_refused, start_beside_foreign_secret, until};
use crate::support::cluster::{Fixture, password_in};

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_sim::Options;
use serde_json::{Value, json};

const SENTINEL: &str = "SENTINEL-pw-rbac-rules-namespaced-7c41";
const IMAGE_PULLERS: &str =
    "imagePullers:\n  - project: team-b\n    allow: [serviceaccount:team-a:default]\n";
const BINDING: &str = "pullsecretd-image-puller";

/// A Role of the overlay in one of the teams' namespaces.
fn is_team_role(object: &Value) -> bool {
    object["kind"] == "Role"
        && object["metadata"]["namespace"]
            .as_str()
            .is_some_and(|ns| NAMESPACED_TEAMS.contains(&ns))
}

/// The rules of the team Role (the same in every team's namespace).
fn team_rules() -> Vec<Value> {
    let roles: Vec<Value> = overlay_rbac().into_iter().filter(is_team_role).collect();
    assert_eq!(roles.len(), NAMESPACED_TEAMS.len(), "one Role per team");
    for role in &roles {
        assert_eq!(role["rules"], roles[0]["rules"], "the team Roles differ");
    }
    roles[0]["rules"].as_array().cloned().unwrap_or_default()
}

/// The overlay's RBAC with `verb` removed from rule `rule` of every team's Role.
fn without(rule: usize, verb: &str) -> Vec<Value> {
    overlay_rbac()
        .into_iter()
        .map(|mut object| {
            if is_team_role(&object) {
                drop_verb(&mut object, rule, verb);
            }
            object
        })
        .collect()
}

/// kube-sim (OpenShift flavour, so image pullers are planned) holding `rbac`, and a client
/// acting as pullsecretd's service account.
async fn fixture(rbac: Vec<Value>) -> (Fixture, Client) {
    fixture_holding(Options::default().openshift(), rbac, &[]).await
}

fn binding(fx: &Fixture) -> Option<Value> {
    fx.server.get(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "team-b",
        BINDING,
    )
}

fn linked(fx: &Fixture, namespace: &str) -> bool {
    fx.account_lists(namespace, "default")
        .0
        .contains(&"reg-pull".to_string())
}

/// Waits until kube-sim has had no request for 200 ms (2 s at most), so that a conflict forced
/// next meets the daemon's next job, not a late Event of its last one.
async fn settled(fx: &Fixture) {
    let started = Instant::now();
    let mut seen = fx.server.counts().total;
    while started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = fx.server.counts().total;
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// Drives the daemon in namespaced mode through every job the team Role's rules exist for,
/// stopping early once `refused`.
async fn exercise(fx: &Fixture, client: Client, refused: &dyn Fn() -> bool) {
    write_config_for(
        fx,
        SENTINEL,
        &NAMESPACED_TEAMS,
        &NAMESPACED_TEAMS,
        IMAGE_PULLERS,
    );
    // Someone else's Secret of the wanted name in team-b: the create meets it (a get shows
    // whose it is), and its problem recurs at every reconcile of team-b.
    let Some(running) = start_beside_foreign_secret(fx, client, "team-b").await else {
        return;
    };
    let step = Duration::from_secs(4);
    until(step, refused, || {
        fx.secret("team-a", "reg-pull").is_some() && linked(fx, "team-a") && binding(fx).is_some()
    })
    .await;

    // A Secret deleted by hand, a link removed by hand (in kube-sim's store, so no request
    // meets the forced conflict but the daemon's relink, which is then read again).
    let secrets: Api<Secret> = Api::namespaced(fx.client.clone(), "team-a");
    let _ = secrets.delete("reg-pull", &DeleteParams::default()).await;
    until(step, refused, || fx.secret("team-a", "reg-pull").is_some()).await;
    settled(fx).await;
    fx.server.force_conflicts(1);
    let unlinked = json!({"imagePullSecrets": []});
    let _ = fx
        .server
        .merge_patch("", "serviceaccounts", "team-a", "default", &unlinked);
    until(step, refused, || linked(fx, "team-a")).await;

    // The binding edited by hand: updated back (team-b reconciled again, its problem recurs).
    let bindings: Api<RoleBinding> = Api::namespaced(fx.client.clone(), "team-b");
    let _ = bindings
        .patch(
            BINDING,
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": []})),
        )
        .await;
    until(step, refused, || {
        binding(fx).is_some_and(|b| b["subjects"].as_array().is_some_and(|s| !s.is_empty()))
    })
    .await;

    // Rotation, its first write answered 409 (so the Secret is read again).
    settled(fx).await;
    fx.server.force_conflicts(1);
    write_config_for(
        fx,
        "rotated-pw",
        &NAMESPACED_TEAMS,
        &NAMESPACED_TEAMS,
        IMAGE_PULLERS,
    );
    until(step, refused, || {
        fx.secret("team-a", "reg-pull")
            .is_some_and(|s| password_in(&s) == "rotated-pw")
    })
    .await;

    // Clean-up: team-a dropped from the pull secret's projects (`namespaces:` kept, since a
    // reload changing it is rejected), and the image pullers dropped.
    write_config_for(fx, "rotated-pw", &NAMESPACED_TEAMS, &["team-b"], "");
    until(step, refused, || {
        fx.secret("team-a", "reg-pull").is_none() && binding(fx).is_none()
    })
    .await;
    running.stop();
    let _ = running.wait(Duration::from_secs(10)).await;
}

/// Drops each verb of rule `rule` of every team's Role in turn; each must be refused.
async fn each_verb_is_needed(rule: usize) {
    each_verb_is_refused(
        &format!("namespaced team Role rule {rule}"),
        &team_rules()[rule],
        async |verb| fixture(without(rule, verb)).await,
        exercise,
    )
    .await;
}

#[test]
fn the_rules_cover_exactly_what_each_namespaced_test_below_drops() {
    assert_eq!(
        team_rules().len(),
        7,
        "a rule was added to or removed from the namespaced overlay's Role: add or remove its \
         test"
    );
}

#[tokio::test]
async fn every_secrets_verb_is_needed_in_namespaced_mode() {
    each_verb_is_needed(0).await;
}

#[tokio::test]
async fn every_serviceaccounts_verb_is_needed_in_namespaced_mode() {
    each_verb_is_needed(1).await;
}

#[tokio::test]
async fn rolebindings_list_watch_and_create_are_needed_in_namespaced_mode() {
    each_verb_is_needed(2).await;
}

#[tokio::test]
async fn update_and_delete_of_the_image_puller_binding_are_needed_in_namespaced_mode() {
    each_verb_is_needed(3).await;
}

#[tokio::test]
async fn bind_on_system_image_puller_is_needed_in_namespaced_mode() {
    each_verb_is_needed(4).await;
}

#[tokio::test]
async fn events_create_and_patch_are_needed_in_namespaced_mode() {
    each_verb_is_needed(5).await;
}

#[tokio::test]
async fn pods_list_is_needed_in_namespaced_mode() {
    each_verb_is_needed(6).await;
}

/// The oracle's other half: with every rule of the overlay in place the same drive is refused
/// nothing, so each refusal above is the dropped verb's; and it did every job.
#[tokio::test]
async fn with_every_namespaced_rule_nothing_is_refused() {
    let (fx, client) = fixture(overlay_rbac()).await;
    exercise(&fx, client, &|| false).await;
    let counts = fx.server.counts();
    assert!(
        counts.forbidden.is_empty(),
        "refused: {:?}",
        counts.forbidden
    );
    let secret = fx.secret("team-b", "reg-pull").expect("someone else's");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"), "left alone");
    assert!(fx.secret("team-a", "reg-pull").is_none(), "cleaned up");
    assert!(!linked(&fx, "team-a"), "unlinked");
    assert!(binding(&fx).is_none(), "binding deleted");
    // The jobs the verbs are needed for were done: the 409s were answered with reads (team-a's
    // Secret read only after the rotation's), the binding repaired, the problem a series.
    for (verb, resource, namespace) in [
        ("get", "serviceaccounts", "team-a"),
        ("get", "secrets", "team-a"),
        ("update", "rolebindings", "team-b"),
        ("patch", "events", "team-b"),
    ] {
        assert!(
            counts.count_in(verb, resource, namespace) > 0,
            "no {verb} {resource} in {namespace}: {counts:#?}"
        );
    }
}

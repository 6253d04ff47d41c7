//! Not fighting other writers: a writer with its own field manager ("argocd-controller", as a
//! GitOps tool syncing a ServiceAccount manifest) sets the `default` account's
//! `imagePullSecrets` to its own list every second, removing pullsecretd's link each time. The
//! daemon notices the repeated repairs, spaces them exponentially instead of rewriting at full
//! speed, names the writer's field manager (from `managedFields`) in a `WriteConflict` Event
//! on the account, and counts the flaps in `pullsecretd_write_conflicts_total{manager}`.
//! And on OpenShift, what its controllers own on the same accounts (the
//! `openshift.io/internal-registry-pull-secret-ref` annotation, the managed `*-dockercfg-*`
//! entries and Secrets) is never changed by pullsecretd's links and rotations.

use crate::daemon::{http_get, metric};
use crate::support::cluster::Fixture;
use pullsecretd_testkit::poll::eventually;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams};
use kube_sim::Options;
use serde_json::{Value, json};

use pullsecretd::daemon;

const WRITER: &str = "argocd-controller";
/// How long the writer keeps undoing the link.
const FIGHT: Duration = Duration::from_secs(20);

fn pull_list(fx: &Fixture) -> Vec<String> {
    fx.account_lists("a", "default").0
}

/// The writer's sync: its labels and its own pull list, with its field manager.
async fn sync(api: &Api<ServiceAccount>) {
    let manifest = json!({
        "metadata": { "labels": { "app.kubernetes.io/instance": "a" } },
        "imagePullSecrets": [{ "name": "argo-own" }],
    });
    api.patch(
        "default",
        &PatchParams {
            field_manager: Some(WRITER.into()),
            ..PatchParams::default()
        },
        &Patch::Merge(&manifest),
    )
    .await
    .expect("the writer's patch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_undoing_the_link_every_second_is_named_and_repaired_ever_more_slowly() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("pullsecretd", json!({}));
    fx.namespace("a", json!({}));
    let api: Api<ServiceAccount> = Api::namespaced(fx.client.clone(), "a");
    eventually(Duration::from_secs(10), "the default account", || {
        fx.server
            .get("", "serviceaccounts", "a", "default")
            .is_some()
    })
    .await;
    sync(&api).await;
    fx.config("SENTINEL-writers-pw-3b1f", "");
    let options = daemon::DaemonOptions {
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..fx.daemon_options(4)
    };
    let running = daemon::start(fx.client.clone(), options)
        .await
        .expect("daemon starts");
    eventually(Duration::from_secs(30), "linked", || {
        pull_list(&fx).contains(&"reg-pull".to_string())
    })
    .await;

    // Every second: if pullsecretd's link is back (a repair), note when, and undo it.
    let started = Instant::now();
    let mut repairs: Vec<Duration> = Vec::new();
    while started.elapsed() < FIGHT {
        if pull_list(&fx).contains(&"reg-pull".to_string()) {
            repairs.push(started.elapsed());
            sync(&api).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let gaps: Vec<u64> = repairs
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    // Without backoff the link would be back at every one of ~20 ticks.
    assert!(
        (3..=7).contains(&repairs.len()),
        "repairs at {repairs:?} (gaps {gaps:?})"
    );
    assert!(
        gaps.last().is_some_and(|last| *last >= 4) && gaps.last() > gaps.first(),
        "the repairs slow down: gaps {gaps:?}"
    );

    let events: Vec<String> = fx
        .server
        .list("", "events", Some("a"))
        .into_iter()
        .filter(|e| e["reason"] == "WriteConflict")
        .filter(|e| {
            e["regarding"]["kind"] == "ServiceAccount"
                || e["involvedObject"]["kind"] == "ServiceAccount"
        })
        .map(|e| {
            e["note"]
                .as_str()
                .or_else(|| e["message"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        events
            .iter()
            .any(|note| note.contains(&format!("{WRITER:?}"))),
        "an Event on the account names the writer: {events:?}"
    );

    let address = running.address.expect("listener");
    let (_, text) = http_get(address, "/metrics").await;
    let flaps = metric(
        &text,
        &format!("pullsecretd_write_conflicts_total{{manager=\"{WRITER}\"}}"),
    )
    .unwrap_or(0.0);
    // The first repair is not counted as a conflict; every later one is.
    assert!(
        flaps >= 2.0 && flaps <= repairs.len() as f64,
        "flaps counted: {flaps}, repairs seen: {repairs:?}"
    );
    assert!(!text.contains("SENTINEL"), "no secret in the metrics");
    running.stop();
}

/// What OpenShift owns on a project's accounts and managed pull secrets: each account's
/// annotations and its `*-dockercfg-*` list entries, and each `*-dockercfg-*` Secret's
/// metadata (annotations, labels, finalizers, ownerReferences), type and data.
fn openshift_state(fx: &Fixture, namespace: &str) -> Value {
    let mut state = serde_json::Map::new();
    for account in ["default", "builder"] {
        let sa = fx
            .server
            .get("", "serviceaccounts", namespace, account)
            .expect("account");
        let (pull, mount) = fx.account_lists(namespace, account);
        let managed = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .filter(|name| name.contains("-dockercfg-"))
                .collect()
        };
        state.insert(
            format!("sa/{account}"),
            json!({
                "annotations": sa["metadata"]["annotations"],
                "imagePullSecrets": managed(pull),
                "secrets": managed(mount),
            }),
        );
    }
    for secret in fx.server.list("", "secrets", Some(namespace)) {
        let name = secret["metadata"]["name"].as_str().unwrap_or_default();
        if name.contains("-dockercfg-") {
            let meta = &secret["metadata"];
            state.insert(
                format!("secret/{name}"),
                json!({
                    "annotations": meta["annotations"],
                    "labels": meta["labels"],
                    "finalizers": meta["finalizers"],
                    "ownerReferences": meta["ownerReferences"],
                    "type": secret["type"],
                    "data": secret["data"],
                }),
            );
        }
    }
    Value::Object(state)
}

/// On OpenShift (kube-sim `--openshift`: the 4.16+ managed `<sa>-dockercfg-<rand>` Secrets and
/// the `openshift.io/internal-registry-pull-secret-ref` annotation), pullsecretd links, rotates
/// (versioned: link the new Secret, unlink and delete the old) and never touches what OpenShift
/// owns: the annotation, the managed entries in both lists, the managed Secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openshift_annotations_and_managed_pull_secrets_survive_links_and_rotations() {
    let fx = Fixture::start(Options::default().openshift()).await;
    fx.namespace("pullsecretd", json!({}));
    fx.namespace("a", json!({}));
    eventually(
        Duration::from_secs(10),
        "OpenShift's managed pull secrets",
        || {
            ["default", "builder"].iter().all(|sa| {
                fx.account_lists("a", sa)
                    .0
                    .iter()
                    .any(|n| n.starts_with(&format!("{sa}-dockercfg-")))
            })
        },
    )
    .await;
    let before = openshift_state(&fx, "a");
    for account in ["default", "builder"] {
        let annotation = &before[format!("sa/{account}")]["annotations"]["openshift.io/internal-registry-pull-secret-ref"];
        assert!(annotation.is_string(), "{before:#}");
    }
    let extra = "    link: { default: [pull, mount], builder: [pull, mount] }\n\
                 \x20   rotation: { refresh: 200ms, strategy: versioned, grace: 1s, keep: 0 }\n";
    fx.config("SENTINEL-openshift-pw-1", extra);
    let running = daemon::start(fx.client.clone(), fx.daemon_options(4))
        .await
        .expect("daemon starts");
    let ours = |fx: &Fixture, account: &str| -> (Vec<String>, Vec<String>) {
        let (pull, mount) = fx.account_lists("a", account);
        let mine = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .filter(|n| n.starts_with("reg-pull-"))
                .collect()
        };
        (mine(pull), mine(mount))
    };
    eventually(Duration::from_secs(30), "linked in both lists", || {
        ["default", "builder"].iter().all(|sa| {
            let (pull, mount) = ours(&fx, sa);
            pull.len() == 1 && mount.len() == 1
        })
    })
    .await;
    let first = ours(&fx, "default").0[0].clone();
    assert!(fx.secret("a", &first).is_some(), "{first} was written");

    // A rotation: the new version is linked, the old one unlinked and, after grace, deleted.
    fx.config("SENTINEL-openshift-pw-2", extra);
    eventually(
        Duration::from_secs(30),
        "rotated and the old one gone",
        || {
            ["default", "builder"].iter().all(|sa| {
                let (pull, mount) = ours(&fx, sa);
                pull.len() == 1 && mount.len() == 1 && pull[0] != first
            }) && fx.secret("a", &first).is_none()
        },
    )
    .await;
    running.stop();

    let after = openshift_state(&fx, "a");
    assert_eq!(after, before, "what OpenShift owns is as it was");
    // OpenShift's entries stay first in both lists, ahead of pullsecretd's.
    for account in ["default", "builder"] {
        let (pull, mount) = fx.account_lists("a", account);
        for list in [pull, mount] {
            assert!(
                list.first()
                    .is_some_and(|n| n.starts_with(&format!("{account}-dockercfg-"))),
                "{account}: {list:?}"
            );
        }
    }
}

//! Not fighting other writers: a writer with its own field manager ("argocd-controller", as a
//! GitOps tool syncing a ServiceAccount manifest) sets the `default` account's
//! `imagePullSecrets` to its own list every second, removing pullsecretd's link each time. The
//! daemon notices the repeated repairs, spaces them exponentially instead of rewriting at full
//! speed, names the writer's field manager (from `managedFields`) in a `WriteConflict` Event
//! on the account, and counts the flaps in `pullsecretd_write_conflicts_total{manager}`.

use crate::daemon::{http_get, metric};
use crate::support::cluster::Fixture;
use pullsecretd_testkit::poll::eventually;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams};
use kube_sim::Options;
use serde_json::json;

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

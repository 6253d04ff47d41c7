//! Scale: 10,000 namespaces with a few objects each, held in memory and served fast enough that
//! the emulator is never the bottleneck of a benchmark. Prints its own requests/s.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube_sim::{Options, Server};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_namespaces() {
    let opts = Options {
        event_history: 1_000,
        ..Default::default()
    };
    let h = Server::start(opts).await.unwrap();
    let t = Instant::now();
    for i in 0..10_000 {
        let ns = format!("ns-{i:05}");
        h.create("", "namespaces", json!({"metadata": {"name": ns}}))
            .unwrap();
        h.create(
            "",
            "secrets",
            json!({"metadata": {"name": "pull", "namespace": ns}, "type": "Opaque"}),
        )
        .unwrap();
    }
    let seeded = t.elapsed();
    assert_eq!(h.count_objects("", "namespaces"), 10_004);
    assert_eq!(h.count_objects("", "serviceaccounts"), 10_004);

    let client = kube::Client::try_from(h.kube_config()).unwrap();
    let all: Api<Secret> = Api::all(client.clone());
    let t = Instant::now();
    let list = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 10_000);
    let list_time = t.elapsed();

    let n: u32 = 2_000;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                let api: Api<Secret> =
                    Api::namespaced(client.clone(), &format!("ns-{:05}", i * 5 % 10_000));
                api.get("pull").await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = t.elapsed();
    let rate = f64::from(n) / elapsed.as_secs_f64();
    println!(
        "kube-sim scale: seeded 30k objects in {seeded:?}; listed 10k secrets in {list_time:?}; {rate:.0} GET/s over HTTP"
    );
    assert_eq!(h.counts().count("get", "secrets"), u64::from(n));
    assert!(elapsed < Duration::from_secs(20), "GETs took {elapsed:?}");
}

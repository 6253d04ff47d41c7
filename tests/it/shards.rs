//! Active-active shards against kube-sim (OpenShift flavour, for the cross-project image-puller
//! binding): two in-process daemons, each with its own identity
//! (its own bearer token, so kube-sim's write log tells their writes apart), split the
//! namespaces over two shard Leases. Each namespace is written only by the replica leading its
//! shard; a replica that dies has its shard taken over; a replica that comes back is handed a
//! shard; and the sweeper finds no namespace written by both replicas in the same second and no
//! service account naming a missing Secret.

use crate::support::cluster::{Fixture, nz};
use pullsecretd_testkit::poll::eventually;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kube_sim::{Options, UserInfo, WriteRecord};
use serde_json::json;

use pullsecretd::cluster::Throttle;
use pullsecretd::cluster::lease::LeaseConfig;
use pullsecretd::config::LinkKind;
use pullsecretd::daemon::{self, DaemonOptions, Running};
use pullsecretd::model::shard::shard_of;
use pullsecretd::source::SourceContext;

const SHARDS: u32 = 2;
const NAMESPACES: usize = 24;

/// The daemon tests' quick Lease timings, over two shards.
fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        shards: SHARDS,
        ..crate::daemon::lease(identity)
    }
}

/// A replica named `identity`, authenticating with the token of the same name.
async fn replica(fx: &Fixture, identity: &str) -> Running {
    let options = DaemonOptions {
        config_path: fx.dir.path().join("config.yaml"),
        config: None,
        sources: SourceContext::default(),
        throttle: Throttle::new(nz(500), nz(200), 4),
        events: false,
        concurrency: 4,
        lease: Some(lease(identity)),
        listen: None,
        reload_debounce: Duration::from_millis(150),
        debounce: Duration::from_millis(10),
    };
    let client = fx.client_as(identity).await;
    daemon::start(client, options).await.expect("daemon starts")
}

fn fixture_options() -> Options {
    // OpenShift: image-puller bindings exist only there.
    let mut options = Options {
        record_writes: true,
        ..Options::default()
    }
    .openshift();
    for identity in ["replica-a", "replica-b", "replica-c"] {
        options = options.identity(identity, UserInfo::user(identity, &["system:masters"]));
    }
    options
}

fn names() -> Vec<String> {
    (0..NAMESPACES).map(|i| format!("web-{i:02}")).collect()
}

fn holder(fx: &Fixture, shard: u32) -> Option<String> {
    fx.server
        .get(
            "coordination.k8s.io",
            "leases",
            "kube-system",
            &format!("pullsecretd-shard-{shard}"),
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

fn provisioned(fx: &Fixture, namespace: &str) -> bool {
    fx.secret(namespace, "reg-pull").is_some()
        && fx
            .account_lists(namespace, "default")
            .0
            .contains(&"reg-pull".to_string())
}

/// The replicas' writes to managed namespaces (the Leases live elsewhere; the test's own
/// writes are the admin's).
fn namespace_writes(fx: &Fixture) -> Vec<WriteRecord> {
    fx.server
        .writes()
        .into_iter()
        .filter(|w| w.namespace.starts_with("web-") && w.user.starts_with("replica-"))
        .collect()
}

/// Drift: the test (as the admin) deletes a namespace's pull Secret.
async fn delete_secret(fx: &Fixture, namespace: &str) {
    let secrets: Api<Secret> = Api::namespaced(fx.client.clone(), namespace);
    secrets
        .delete("reg-pull", &DeleteParams::default())
        .await
        .expect("deleted");
}

/// The sweeper: no namespace written by two users within the same second, and every pull
/// reference of every account names a Secret that exists.
fn sweep(fx: &Fixture) {
    let mut writers: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
    for write in namespace_writes(fx) {
        let second = write
            .at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        writers
            .entry((write.namespace.clone(), second))
            .or_default()
            .insert(write.user);
    }
    let doubled: Vec<_> = writers
        .iter()
        .filter(|(_, users)| users.len() > 1)
        .collect();
    assert!(
        doubled.is_empty(),
        "written by two replicas at once: {doubled:?}"
    );
    for namespace in names() {
        for account in ["default", "builder"] {
            let Some(value) = fx.server.get("", "serviceaccounts", &namespace, account) else {
                continue;
            };
            let account: k8s_openapi::api::core::v1::ServiceAccount =
                serde_json::from_value(value).expect("a ServiceAccount");
            for kind in [LinkKind::Pull, LinkKind::Mount] {
                for name in pullsecretd::diff::linked_names(&account, kind) {
                    assert!(
                        fx.secret(&namespace, name).is_some(),
                        "{namespace}: a reference to the missing Secret {name}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn two_replicas_split_the_namespaces_and_take_over_and_hand_back_shards() {
    let fx = Fixture::start(fixture_options()).await;
    for name in names() {
        fx.namespace(&name, json!({"team": "web"}));
    }
    // Cluster work that spans shards: a project in one shard lets an account of the other pull.
    let in_shard = |shard: u32| {
        names()
            .into_iter()
            .find(|ns| shard_of(ns, SHARDS) == shard)
            .expect("a namespace in each shard")
    };
    let (puller, pulled) = (in_shard(0), in_shard(1));
    fx.config(
        "SENTINEL-shards-pw-9a1f",
        &format!(
            "imagePullers:\n  - project: {pulled}\n    allow: [serviceaccount:{puller}:default]\n"
        ),
    );
    let a = replica(&fx, "replica-a").await;
    let b = replica(&fx, "replica-b").await;

    eventually(Duration::from_secs(30), "one shard each", || {
        a.leadership.led().len() == 1 && b.leadership.led().len() == 1
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "every namespace provisioned",
        || names().iter().all(|ns| provisioned(&fx, ns)),
    )
    .await;
    let holders: Vec<Option<String>> = (0..SHARDS).map(|s| holder(&fx, s)).collect();
    assert_eq!(
        holders.iter().flatten().collect::<BTreeSet<_>>().len(),
        2,
        "the two Leases have two holders: {holders:?}"
    );
    eventually(Duration::from_secs(30), "the image-puller binding", || {
        fx.server
            .get(
                "rbac.authorization.k8s.io",
                "rolebindings",
                &pulled,
                "pullsecretd-image-puller",
            )
            .is_some_and(|binding| {
                binding["subjects"][0]["namespace"] == puller.as_str()
                    && binding["subjects"][0]["name"] == "default"
            })
    })
    .await;
    // Each namespace was written by the holder of its shard, and by nobody else: the binding
    // by the holder of the pulled project's shard, whoever leads the puller's.
    for write in namespace_writes(&fx) {
        let shard = shard_of(&write.namespace, SHARDS) as usize;
        assert_eq!(
            Some(&write.user),
            holders[shard].as_ref(),
            "{} in shard {shard} written by another replica",
            write.namespace
        );
    }

    // Replica a dies (no release): b takes its shard after the lease duration and repairs drift
    // and new namespaces there.
    let dead_shard = a.leadership.led()[0];
    let in_dead_shard = names()
        .into_iter()
        .find(|ns| shard_of(ns, SHARDS) == dead_shard)
        .expect("a namespace in each shard");
    a.kill();
    let killed = Instant::now();
    eventually(Duration::from_secs(30), "b leads both shards", || {
        b.leadership.led().len() == 2
    })
    .await;
    let takeover = killed.elapsed();
    eprintln!("the dead replica's shard was taken over after {takeover:?}");
    // The lease duration (1.5 s) plus b's deference for the shard it leads (one retry period);
    // three lease durations leave room for a loaded machine.
    assert!(takeover < Duration::from_millis(3 * 1500), "{takeover:?}");
    delete_secret(&fx, &in_dead_shard).await;
    fx.namespace("web-new", json!({"team": "web"}));
    eventually(
        Duration::from_secs(30),
        "b repairs and provisions the dead shard",
        || provisioned(&fx, &in_dead_shard) && provisioned(&fx, "web-new"),
    )
    .await;

    // A new replica asks for a shard; b hands one over and keeps the other.
    let c = replica(&fx, "replica-c").await;
    eventually(Duration::from_secs(30), "one shard each again", || {
        b.leadership.led().len() == 1 && c.leadership.led().len() == 1
    })
    .await;
    let moved = c.leadership.led()[0];
    let in_moved = names()
        .into_iter()
        .find(|ns| shard_of(ns, SHARDS) == moved)
        .expect("a namespace in each shard");
    delete_secret(&fx, &in_moved).await;
    eventually(Duration::from_secs(30), "c repairs its new shard", || {
        provisioned(&fx, &in_moved)
    })
    .await;
    let repairers: BTreeSet<String> = namespace_writes(&fx)
        .into_iter()
        .filter(|w| w.namespace == in_moved && w.verb == "create" && w.resource == "secrets")
        .map(|w| w.user)
        .collect();
    assert!(repairers.contains("replica-c"), "{repairers:?}");

    sweep(&fx);
    b.stop();
    c.stop();
    assert!(b.wait(Duration::from_secs(5)).await);
    assert!(c.wait(Duration::from_secs(5)).await);
    assert_eq!(holder(&fx, 0), None, "released on shutdown");
    assert_eq!(holder(&fx, 1), None, "released on shutdown");
}

#[tokio::test]
async fn a_lone_replica_leads_every_shard() {
    let fx = Fixture::start(fixture_options()).await;
    for name in names() {
        fx.namespace(&name, json!({"team": "web"}));
    }
    fx.config("SENTINEL-shards-pw-9a1f", "");
    let a = replica(&fx, "replica-a").await;
    eventually(
        Duration::from_secs(30),
        "every namespace provisioned",
        || names().iter().all(|ns| provisioned(&fx, ns)),
    )
    .await;
    assert_eq!(a.leadership.led(), vec![0, 1]);
    sweep(&fx);
    a.stop();
    assert!(a.wait(Duration::from_secs(5)).await);
}

//! The `run` daemon under exactly the shipped least-privilege RBAC (deploy/base/rbac.yaml and
//! the Lease Role in deploy/base/leader-election.yaml) in kube-sim with RBAC enforced, acting
//! as pullsecretd's service account: it elects itself, converges, repairs drift from its
//! watches (namespaces, Secrets, service accounts), rotates, cleans up, reloads its config
//! (image-puller RoleBinding created, then deleted), publishes Events, and releases the Lease.

use crate::support::cluster;
use pullsecretd_testkit::poll::eventually;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_sim::Options;
use serde_json::{Value, json};

use cluster::{Fixture, password_in};
use pullsecretd::daemon::{self, DaemonOptions};

const SENTINEL: &str = "SENTINEL-pw-daemon-rbac-71c3";
const TOKEN: &str = "pullsecretd-sa-token";
/// Where deploy/base puts pullsecretd (its ServiceAccount, and the Lease).
const HOME: &str = "pullsecretd";

/// Every RBAC object (and the ServiceAccount) deploy/base ships, as JSON values.
pub(crate) fn shipped_rbac() -> Vec<Value> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base");
    ["rbac.yaml", "leader-election.yaml"]
        .iter()
        .flat_map(|file| {
            let yaml = std::fs::read_to_string(base.join(file)).expect("deploy/base file");
            serde_yaml_ng::Deserializer::from_str(&yaml)
                .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// kube-sim (OpenShift flavour, RBAC enforced) holding deploy/base's objects, and a client
/// acting as the pullsecretd ServiceAccount.
async fn rbac_fixture() -> (Fixture, Client) {
    let mut options = Options::default()
        .openshift()
        .identity(TOKEN, kube_sim::UserInfo::service_account(HOME, HOME));
    options.rbac = true;
    let fx = Fixture::start(options).await;
    fx.namespace(HOME, json!({}));
    let objects = shipped_rbac();
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ],
        "deploy/base changed: load what it ships"
    );
    crate::support::seed::rbac_objects(&fx.server, objects);
    let client = fx.client_as(TOKEN).await;
    (fx, client)
}

fn lease_holder(fx: &Fixture) -> Option<String> {
    fx.server
        .get("coordination.k8s.io", "leases", HOME, HOME)
        .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(String::from))
        .filter(|holder| !holder.is_empty())
}

const IMAGE_PULLERS: &str =
    "imagePullers:\n  - project: b\n    allow: [serviceaccount:a:default]\n";

#[tokio::test]
async fn run_converges_and_watches_under_exactly_the_shipped_rbac() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (fx, client) = rbac_fixture().await;
    fx.namespace("a", json!({}));
    fx.namespace("b", json!({}));
    let rotation = "    rotation: { refresh: 200ms }\n";
    fx.config(SENTINEL, &format!("{rotation}{IMAGE_PULLERS}"));

    // The admin client can do anything; make sure this one cannot (RBAC is on).
    let as_sa: Api<ConfigMap> = Api::namespaced(client.clone(), HOME);
    let denied = as_sa
        .list(&kube::api::ListParams::default())
        .await
        .expect_err("not allowed");
    assert!(denied.to_string().contains("forbidden"), "{denied}");

    let running = daemon::start(
        client,
        DaemonOptions {
            listen: Some("127.0.0.1:0".parse().expect("address")),
            ..fx.daemon_options(2)
        },
    )
    .await
    .expect("daemon starts");

    // Lease created (create), the Secret written and linked (OpenShift's builder has
    // `secrets`), the image-puller RoleBinding created, Events published.
    let limit = Duration::from_secs(10);
    eventually(limit, "converged as leader", || {
        lease_holder(&fx).as_deref() == Some("replica-1")
            && fx.secret("a", "reg-pull").is_some()
            && fx
                .account_lists("a", "default")
                .0
                .contains(&"reg-pull".into())
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
    eventually(limit, "Events published", || {
        fx.server.count_objects("events.k8s.io", "events") > 0
    })
    .await;

    // Namespace watch: a new labelled namespace is provisioned. Its first link edit (from
    // the cached account) is answered 409, so the account is read again (get).
    fx.server.reset_counts();
    fx.server.force_conflicts(1);
    fx.namespace("web-1", json!({"team": "web"}));
    eventually(limit, "web-1 provisioned", || {
        fx.secret("web-1", "reg-pull").is_some()
            && fx
                .account_lists("web-1", "default")
                .0
                .contains(&"reg-pull".into())
    })
    .await;
    let counts = fx.server.counts();
    assert!(
        counts.count("get", "serviceaccounts") > 0,
        "re-read after the 409: {counts:#?}"
    );

    // Secret watch: deleted by hand → restored.
    let admin_secrets: Api<Secret> = Api::namespaced(fx.client.clone(), "web-1");
    admin_secrets
        .delete("reg-pull", &DeleteParams::default())
        .await
        .expect("deleted by hand");
    eventually(limit, "secret restored", || {
        fx.secret("web-1", "reg-pull").is_some()
    })
    .await;

    // Service-account watch: link removed by hand → restored (get + update).
    let admin_accounts: Api<ServiceAccount> = Api::namespaced(fx.client.clone(), "web-1");
    admin_accounts
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": []})),
        )
        .await
        .expect("unlinked by hand");
    eventually(limit, "link restored", || {
        fx.account_lists("web-1", "default")
            .0
            .contains(&"reg-pull".into())
    })
    .await;

    // RoleBinding watch: subjects edited by hand → updated back.
    let bindings: Api<RoleBinding> = Api::namespaced(fx.client.clone(), "b");
    bindings
        .patch(
            "pullsecretd-image-puller",
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": []})),
        )
        .await
        .expect("binding edited by hand");
    eventually(limit, "binding repaired", || {
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

    // Rotation (update), its first write answered 409: the Secret is read again (get).
    fx.server.reset_counts();
    fx.server.force_conflicts(1);
    fx.config("rotated-pw", &format!("{rotation}{IMAGE_PULLERS}"));
    eventually(limit, "rotated in place", || {
        ["a", "web-1"].iter().all(|ns| {
            fx.secret(ns, "reg-pull")
                .is_some_and(|s| password_in(&s) == "rotated-pw")
        })
    })
    .await;
    let counts = fx.server.counts();
    assert!(
        counts.count("get", "secrets") > 0,
        "re-read after the 409: {counts:#?}"
    );

    // Clean-up (update + delete): label removed.
    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    namespaces
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await
        .expect("label removed");
    eventually(limit, "web-1 cleaned up", || {
        fx.secret("web-1", "reg-pull").is_none()
            && !fx
                .account_lists("web-1", "default")
                .0
                .contains(&"reg-pull".into())
    })
    .await;

    // Config reload without image pullers: the RoleBinding is deleted.
    fx.config("rotated-pw", rotation);
    eventually(limit, "RoleBinding deleted", || {
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

    // Nothing was refused on the way: no failed write, no failed reconcile.
    let address = running.address.expect("listener");
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("pullsecretd_api_writes_total{verb=\"delete\",result=\"ok\"}"),
        "{metrics}"
    );
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|line| line.contains("result=\"error\"") && !line.ends_with(" 0"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{metrics}");
    assert!(metrics.contains("pullsecretd_leader 1"), "{metrics}");

    // SIGTERM's path: stop, and the Lease is released (update) under the Role.
    running.stop();
    assert!(running.wait(Duration::from_secs(10)).await, "stopped");
    assert_eq!(lease_holder(&fx), None, "Lease released");
}

/// The `--shards` value of the sharded overlay's Deployment.
fn rendered_shards(objects: &[Value]) -> u32 {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find_map(|arg| arg.as_str()?.strip_prefix("--shards=")?.parse().ok())
        .expect("the sharded overlay passes --shards")
}

/// deploy/overlays/sharded under enforced RBAC: the Lease Role it renders lets one replica
/// create, read and renew every shard's Lease (a lone replica ends up leading them all), and
/// nothing about Leases is refused.
#[tokio::test]
async fn the_sharded_overlay_grants_every_shard_lease_and_only_those() {
    let rendered = crate::deploy::render("deploy/overlays/sharded");
    let shards = rendered_shards(&rendered);
    let rbac: Vec<Value> = rendered
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .cloned()
        .collect();
    let mut options =
        Options::default().identity(TOKEN, kube_sim::UserInfo::service_account(HOME, HOME));
    options.rbac = true;
    let fx = Fixture::start(options).await;
    fx.namespace(HOME, json!({}));
    crate::support::seed::rbac_objects(&fx.server, rbac);
    let client = fx.client_as(TOKEN).await;
    fx.namespace("a", json!({}));
    fx.config(SENTINEL, "");
    let mut options = fx.daemon_options(2);
    let lease = options.lease.as_mut().expect("a Lease");
    lease.shards = shards;
    lease.lease_duration = Duration::from_millis(1500);
    lease.renew_deadline = Duration::from_millis(1000);
    lease.retry_period = Duration::from_millis(200);
    let running = daemon::start(client, options).await.expect("daemon starts");
    let holders = || -> Vec<Option<String>> {
        (0..shards)
            .map(|i| {
                fx.server
                    .get(
                        "coordination.k8s.io",
                        "leases",
                        HOME,
                        &format!("pullsecretd-shard-{i}"),
                    )
                    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
            })
            .collect()
    };
    eventually(
        Duration::from_secs(30),
        "every shard led, a converged",
        || {
            holders().iter().all(|h| h.as_deref() == Some("replica-1"))
                && fx.secret("a", "reg-pull").is_some()
        },
    )
    .await;
    assert_eq!(running.leadership.led().len(), shards as usize);
    let counts = fx.server.counts();
    assert_eq!(counts.forbidden("get", "leases"), 0);
    assert_eq!(counts.forbidden("update", "leases"), 0);
    assert_eq!(counts.forbidden("create", "leases"), 0);
    // Only those: a Lease of another name is refused.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(fx.client_as(TOKEN).await, HOME);
    let other = leases
        .get("pullsecretd-shard-99")
        .await
        .expect_err("not granted");
    assert!(other.to_string().contains("forbidden"), "{other}");
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);
}

//! Versioned Secret names reveal nothing about the credential (docs/versioned-names.md), and the
//! versions that exist keep working: across `once` processes and daemon restarts (each with a
//! key of its own) and across the upgrade from the release whose names were a plain hash
//! prefix. Against kube-sim over HTTPS, with `once` and `run` as processes.

use crate::support::invariants::Sweeper;
use crate::support::kube::{Cluster, path};
use crate::support::process::{Daemon, http_get, stdout, wait_until};

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::Options;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const SENTINEL: &str = "SENTINEL-pw-names-51c7";
const ROTATED: &str = "SENTINEL-pw-names-rotated-0e93";
const SERVER: &str = "registry.example.com";

fn versioned_yaml(auth: &std::path::Path, namespaces: &[&str]) -> String {
    format!(
        "registries:\n  reg:\n    server: {SERVER}\n    from: {{ dockerConfig: {} }}\n\
         pullSecrets:\n  - name: quay-pull\n    registries: [reg]\n    projects: {{ names: [{}] }}\n\
         \x20   link: {{ default: [pull] }}\n    rotation: {{ strategy: versioned, grace: 1h }}\n",
        auth.display(),
        namespaces.join(", ")
    )
}

/// The hex SHA-256 of a dockerconfigjson Secret's type and payload, as the release before
/// keyed names took its suffix from (and as the content-hash annotation still records).
fn plain_hash(secret: &Value) -> String {
    let data = secret
        .pointer("/data/.dockerconfigjson")
        .and_then(Value::as_str)
        .expect("dockerconfigjson data");
    let payload = STANDARD.decode(data).expect("base64");
    let mut hasher = Sha256::new();
    hasher.update(b"kubernetes.io/dockerconfigjson");
    hasher.update([0]);
    hasher.update(&payload);
    hex::encode(hasher.finalize())
}

fn suffix(name: &str) -> &str {
    name.rsplit_once('-').map(|(_, s)| s).unwrap_or_default()
}

fn the_linked_version(c: &Cluster, namespace: &str) -> String {
    let linked = c.pull_list(namespace, "default");
    assert_eq!(
        linked.len(),
        1,
        "one version linked in {namespace}: {linked:?}"
    );
    linked[0].clone()
}

fn once_writes(c: &Cluster, config: &std::path::Path) -> u64 {
    c.server.reset_counts();
    let out = c.once_checked(config, &[], &[], SENTINEL);
    assert!(out.status.success(), "{}", stdout(&out));
    c.server.counts().writes()
}

/// Rewrites version `keyed` in `namespace` the way the release before keyed names wrote it:
/// the same object named `<base>-<first 10 hex of the plain hash>`, linked in its place.
fn as_the_last_release_named_it(c: &Cluster, namespace: &str, keyed: &str) -> String {
    let mut secret = c.secret(namespace, keyed).expect("the version");
    let hash = plain_hash(&secret);
    let legacy = format!("quay-pull-{}", &hash[..10]);
    let meta = secret["metadata"].as_object_mut().expect("metadata");
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        meta.remove(field);
    }
    meta.insert("name".into(), json!(legacy));
    c.server.create("", "secrets", secret).expect("legacy copy");
    c.server
        .merge_patch(
            "",
            "serviceaccounts",
            namespace,
            "default",
            &json!({"imagePullSecrets": [{"name": legacy}]}),
        )
        .expect("relinked");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = kube::Client::try_from(c.server.kube_config()).expect("client");
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client, namespace);
        secrets
            .delete(keyed, &Default::default())
            .await
            .expect("keyed version deleted");
    });
    legacy
}

#[test]
fn a_versioned_name_is_no_password_oracle_and_the_last_releases_names_survive_the_upgrade() {
    let c = Cluster::start(Options::default());
    c.namespace("a");
    let auth = c.docker_config("config.json", SERVER, SENTINEL);
    let config = c.file("pullsecretd.yaml", &versioned_yaml(&auth, &["a"]));
    assert_ne!(once_writes(&c, &config), 0);
    let keyed = the_linked_version(&c, "a");
    let secret = c.secret("a", &keyed).expect("the version");
    let hash = plain_hash(&secret);
    assert_eq!(
        secret.pointer("/metadata/annotations/pullsecretd.io~1content-hash"),
        Some(&json!(hash)),
        "the Secret itself records the plain hash (only its readers see it)"
    );
    assert_ne!(
        suffix(&keyed),
        &hash[..10],
        "the name is no prefix of the plain hash"
    );
    assert!(
        !hash.contains(suffix(&keyed)),
        "nor any part of it: {keyed} vs {hash}"
    );

    // Another process, with a key of its own, keeps the version that exists.
    assert_eq!(once_writes(&c, &config), 0, "a second once writes nothing");
    assert_eq!(the_linked_version(&c, "a"), keyed);

    // The upgrade: the version as the last release named it is kept, without a write.
    let legacy = as_the_last_release_named_it(&c, "a", &keyed);
    let sweeper = Sweeper::start(c.server.reader(), Some("default"));
    assert_eq!(once_writes(&c, &config), 0, "the upgrade writes nothing");
    assert_eq!(the_linked_version(&c, "a"), legacy);
    assert!(c.secret("a", &keyed).is_none(), "no second copy made");

    // The next rotation names the new version under the new scheme and keeps the old one
    // through its grace.
    c.docker_config("config.json", SERVER, ROTATED);
    let out = c.once_checked(&config, &[], &[], ROTATED);
    assert!(out.status.success(), "{}", stdout(&out));
    let rotated = the_linked_version(&c, "a");
    assert_ne!(rotated, legacy);
    let new_hash = plain_hash(&c.secret("a", &rotated).expect("the new version"));
    assert_ne!(suffix(&rotated), &new_hash[..10]);
    assert!(
        c.secret("a", &legacy).is_some(),
        "the old version is kept in grace"
    );
    sweeper
        .finish()
        .assert_clean("upgrade from plain-hash names");
}

fn reconciles(address: &str) -> f64 {
    let (_, body) = http_get(address, "/metrics");
    body.lines()
        .filter(|line| line.starts_with("pullsecretd_reconciles_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_restarted_daemon_keeps_every_version_it_wrote_without_a_write() {
    let c = Cluster::start(Options::default());
    let namespaces = ["a", "b", "c"];
    for ns in namespaces {
        c.namespace(ns);
    }
    let auth = c.docker_config("config.json", SERVER, SENTINEL);
    let config = c.file("pullsecretd.yaml", &versioned_yaml(&auth, &namespaces));
    let args = [
        "--config",
        path(&config),
        "--no-leader-election",
        "--no-events",
    ];
    let mut first = Daemon::start(c.dir.path(), "first", &args, &c.env(&[]), SENTINEL);
    wait_until(Duration::from_secs(30), "every namespace linked", || {
        namespaces
            .iter()
            .all(|ns| c.pull_list(ns, "default").len() == 1)
    });
    let linked: Vec<String> = namespaces
        .iter()
        .map(|ns| the_linked_version(&c, ns))
        .collect();
    assert!(first.terminate(Duration::from_secs(10)).success());

    c.server.reset_counts();
    let second = Daemon::start(c.dir.path(), "second", &args, &c.env(&[]), SENTINEL);
    let address = second.health_address(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        "every namespace reconciled",
        || reconciles(&address) >= namespaces.len() as f64,
    );
    let counts = c.server.counts();
    assert_eq!(counts.writes(), 0, "a restart rewrites nothing: {counts:?}");
    let after: Vec<String> = namespaces
        .iter()
        .map(|ns| the_linked_version(&c, ns))
        .collect();
    assert_eq!(after, linked);
}

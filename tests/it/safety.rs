//! Never the outage: what pullsecretd must not delete or change, shown the way a user meets it —
//! `once` and `run` as processes against kube-sim (HTTPS) and a real OpenBao, workstation passes
//! through the library. Each test here failed before instance identities, held versions, safe
//! type changes, add-only workstation passes, reload re-reads and source retries existed. An
//! invariant sweeper (tests/it/support/invariants.rs) watches the cluster throughout.

use crate::support::cluster;
use crate::support::kube as kube_cluster;
use crate::support::process;
use crate::support::{invariants, seed};
use pullsecretd_testkit::openbao;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::{ErrorRule, InjectedError, Options};
use serde_json::{Value, json};

use invariants::Sweeper;
use kube_cluster::{Cluster, path};
use openbao::{OpenBao, ROOT_TOKEN};
use process::{Daemon, run, stdout, wait_until};

const SENTINEL: &str = "SENTINEL-pw-safety-9d21";

fn vault_yaml(bao: &OpenBao, vault_path: &str, strategy: &str, refresh: &str) -> String {
    format!(
        "vault:\n  address: {}\n  timeout: 1s\n  auth: {{ method: token }}\n\
         registries:\n  priv:\n    server: registry.example.com\n    from: {{ vault: {{ path: {vault_path} }} }}\n\
         pullSecrets:\n  - name: priv\n    registries: [priv]\n    projects: {{ names: [a] }}\n\
         \x20   link: {{ default: [pull] }}\n    rotation: {{ strategy: {strategy}, refresh: {refresh} }}\n",
        bao.address
    )
}

async fn put_login(bao: &OpenBao, vault_path: &str, password: &str) {
    bao.kv2_put(
        "secret",
        vault_path,
        json!({"username": "robot", "password": password}),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 1. A Vault outage (or a credential that cannot be rendered) holds versioned pull secrets.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_outage_holds_every_version_in_once_and_in_a_restarted_run() {
    let bao = OpenBao::start().await;
    put_login(&bao, "registries/priv", SENTINEL).await;
    let c = Cluster::start(Options::default());
    c.namespace("a");
    let config = c.file(
        "vault.yaml",
        &vault_yaml(&bao, "registries/priv", "versioned", "1h"),
    );
    let out = c.once_checked(&config, &[], &[("VAULT_TOKEN", ROOT_TOKEN)], SENTINEL);
    assert!(out.status.success(), "{}", process::stderr(&out));
    let linked = c.pull_list("a", "default");
    assert!(
        linked.len() == 1 && linked[0].starts_with("priv-"),
        "{linked:?}"
    );
    let version = linked[0].clone();
    let uid = c.uid("a", &version).expect("the version exists");

    let sweeper = Sweeper::start(c.server.reader(), None);
    let out = c.once_checked(&config, &[], &[("VAULT_TOKEN", "bogus-token")], SENTINEL);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{text}{}",
        process::stderr(&out)
    );
    assert!(text.contains("HELD secret priv"), "{text}");
    assert!(text.contains(&version), "the held version is named: {text}");
    assert!(
        !text.contains("deleted") && !text.contains("unlinked"),
        "{text}"
    );
    assert_eq!(c.uid("a", &version).as_deref(), Some(uid.as_str()));
    assert_eq!(c.pull_list("a", "default"), std::slice::from_ref(&version));

    // `run` restarted while Vault refuses the token: the same.
    let args = ["--config", path(&config), "--no-leader-election"];
    let mut daemon = Daemon::start(
        c.dir.path(),
        "held",
        &args,
        &c.env(&[("VAULT_TOKEN", "bogus-token")]),
        SENTINEL,
    );
    daemon.wait_for_log(Duration::from_secs(20), "is held");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.uid("a", &version).as_deref(), Some(uid.as_str()));
    assert_eq!(c.pull_list("a", "default"), std::slice::from_ref(&version));
    assert!(daemon.terminate(Duration::from_secs(20)).success());
    sweeper.finish().assert_clean("vault outage");
}

#[test]
fn a_credential_that_cannot_be_rendered_holds_every_version() {
    let c = Cluster::start(Options::default());
    c.namespace("a");
    let auth = c.docker_config("config.json", "registry.example.com", SENTINEL);
    let yaml = format!(
        "registries:\n  priv:\n    server: registry.example.com\n    from: {{ dockerConfig: {} }}\n\
         pullSecrets:\n  - name: priv\n    registries: [priv]\n    projects: {{ names: [a] }}\n\
         \x20   link: {{ default: [pull] }}\n    rotation: {{ strategy: versioned }}\n",
        auth.display()
    );
    let config = c.file("pullsecretd.yaml", &yaml);
    assert!(c.once_checked(&config, &[], &[], SENTINEL).status.success());
    let version = c.pull_list("a", "default")[0].clone();
    let uid = c.uid("a", &version);

    // The login becomes an identity token pullsecretd cannot turn into a pull secret.
    c.file(
        "config.json",
        &json!({"auths": {"registry.example.com": {"identitytoken": SENTINEL}}}).to_string(),
    );
    let sweeper = Sweeper::start(c.server.reader(), None);
    let out = c.once_checked(&config, &[], &[], SENTINEL);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{text}{}",
        process::stderr(&out)
    );
    assert!(text.contains("HELD secret priv (not rendered"), "{text}");
    assert!(!text.contains("deleted"), "{text}");
    assert_eq!(c.uid("a", &version), uid);
    assert_eq!(c.pull_list("a", "default"), [version]);
    sweeper.finish().assert_clean("not rendered");
}

// ---------------------------------------------------------------------------------------------
// 2. Ownership is proven by the instance, not by a label alone.

/// A config of instance `instance` with file-sourced pull secrets: (name, namespaces, strategy).
fn team_yaml(instance: &str, auth: &Path, pull_secrets: &[(&str, &[&str], &str)]) -> String {
    let mut yaml = format!(
        "instance: {instance}\nregistries:\n  reg:\n    server: registry.example.com\n    \
         from: {{ dockerConfig: {} }}\npullSecrets:\n",
        auth.display()
    );
    for (name, namespaces, strategy) in pull_secrets {
        yaml.push_str(&format!(
            "  - name: {name}\n    registries: [reg]\n    projects: {{ names: [{}] }}\n    \
             link: {{ default: [pull] }}\n    rotation: {{ strategy: {strategy}, refresh: 500ms, grace: 1s, keep: 0 }}\n",
            namespaces.join(", ")
        ));
    }
    yaml
}

/// The Opaque Secret a user labelled `managed-by: pullsecretd` by hand.
fn users_labelled_secret(c: &Cluster, namespace: &str) {
    seed::object(
        &c.server,
        "",
        "secrets",
        json!({
            "metadata": {"name": "app-config", "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "pullsecretd"}},
            "type": "Opaque",
            "data": {"key": STANDARD.encode("value")},
        }),
    );
}

#[test]
fn another_configs_once_touches_neither_teams_secrets_nor_a_users_labelled_secret() {
    let c = Cluster::start(Options::default());
    for ns in ["team-a", "team-b", "other"] {
        c.namespace(ns);
    }
    users_labelled_secret(&c, "other");
    let auth = c.docker_config("config.json", "registry.example.com", SENTINEL);
    let team_a = c.file(
        "team-a.yaml",
        &team_yaml("team-a", &auth, &[("a-pull", &["team-a"], "in-place")]),
    );
    assert!(c.once_checked(&team_a, &[], &[], SENTINEL).status.success());
    let before = c.versions();
    assert!(c.secret("team-a", "a-pull").is_some());

    // Team B's config selects only team-b: nothing of team A's, nor the user's, changes.
    let team_b = c.file(
        "team-b.yaml",
        &team_yaml("team-b", &auth, &[("b-pull", &["team-b"], "in-place")]),
    );
    let sweeper = Sweeper::start(c.server.reader(), Some("team-b"));
    let out = c.once_checked(&team_b, &[], &[], SENTINEL);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(c.secret("team-b", "b-pull").is_some());
    // A config with no instance (the default) that selects nothing at all.
    let nothing = c.file(
        "nothing.yaml",
        &format!(
            "registries:\n  reg:\n    server: registry.example.com\n    from: {{ dockerConfig: {} }}\n",
            auth.display()
        ),
    );
    let out = c.once_checked(&nothing, &[], &[], SENTINEL);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("0 changes"), "{}", stdout(&out));
    sweeper
        .finish()
        .assert_clean("team B and an unrelated once");
    let after = c.versions();
    let unchanged: Vec<_> = before.iter().filter(|v| after.contains(v)).collect();
    assert_eq!(unchanged.len(), before.len(), "{before:?} -> {after:?}");
    assert!(c.secret("other", "app-config").is_some());
}

#[test]
fn an_unrelated_once_leaves_a_running_daemons_versioned_secrets() {
    let c = Cluster::start(Options::default());
    let namespaces: Vec<String> = (0..5).map(|i| format!("web-{i}")).collect();
    for ns in &namespaces {
        c.namespace(ns);
    }
    let auth = c.docker_config("config.json", "registry.example.com", SENTINEL);
    let names: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let platform = c.file(
        "platform.yaml",
        &team_yaml("platform", &auth, &[("web-pull", &names, "versioned")]),
    );
    let args = ["--config", path(&platform), "--no-leader-election"];
    let _daemon = Daemon::start(c.dir.path(), "platform", &args, &c.env(&[]), SENTINEL);
    wait_until(
        Duration::from_secs(30),
        "the daemon linked every namespace",
        || {
            namespaces
                .iter()
                .all(|ns| c.pull_list(ns, "default").len() == 1)
        },
    );
    let linked: Vec<Vec<String>> = namespaces
        .iter()
        .map(|ns| c.pull_list(ns, "default"))
        .collect();

    // Someone runs `once` with their own config (the default instance) in the same cluster.
    let sweeper = Sweeper::start(c.server.reader(), Some("default"));
    let adhoc = c.file(
        "adhoc.yaml",
        &format!(
            "registries:\n  reg:\n    server: registry.example.com\n    from: {{ dockerConfig: {} }}\n\
             pullSecrets:\n  - name: adhoc\n    registries: [reg]\n    projects: {{ names: [web-0] }}\n",
            auth.display()
        ),
    );
    let out = c.once_checked(&adhoc, &[], &[], SENTINEL);
    assert!(out.status.success(), "{}", stdout(&out));
    let after: Vec<Vec<String>> = namespaces
        .iter()
        .map(|ns| {
            c.pull_list(ns, "default")
                .into_iter()
                .filter(|n| n != "adhoc")
                .collect()
        })
        .collect();
    assert_eq!(after, linked, "the daemon's versions stay linked");
    for (ns, names) in namespaces.iter().zip(&linked) {
        assert!(c.secret(ns, &names[0]).is_some(), "{ns}/{} kept", names[0]);
    }
    sweeper.finish().assert_clean("unrelated once");
}

#[test]
fn two_instances_sharing_namespaces_never_touch_each_others_objects() {
    let c = Cluster::start(Options::default());
    c.namespace("pullsecretd");
    for ns in ["a1", "b1", "both1", "both2", "other"] {
        c.namespace(ns);
    }
    users_labelled_secret(&c, "other");
    let auth_a = c.docker_config("a.json", "registry.example.com", "a-one");
    let auth_b = c.docker_config("b.json", "registry.example.com", "b-one");
    let a_secrets: &[(&str, &[&str], &str)] = &[
        ("a-pull", &["a1", "both1", "both2"], "in-place"),
        ("common", &["both1"], "in-place"),
    ];
    let b_secrets: &[(&str, &[&str], &str)] = &[
        ("b-pull", &["b1", "both1", "both2"], "versioned"),
        ("b-extra", &["both2"], "in-place"),
    ];
    let config_a = c.file("a.yaml", &team_yaml("team-a", &auth_a, a_secrets));
    let config_b = c.file("b.yaml", &team_yaml("team-b", &auth_b, b_secrets));
    let daemon_args = |config: &Path| {
        vec![
            "--config".to_string(),
            path(config).to_string(),
            "--lease-namespace".into(),
            "pullsecretd".into(),
            "--reload-debounce".into(),
            "100ms".into(),
        ]
    };
    let args_a = daemon_args(&config_a);
    let args_b = daemon_args(&config_b);
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    // Both lead at once: one Lease per instance.
    let _a = Daemon::start(c.dir.path(), "team-a", &args_a, &c.env(&[]), SENTINEL);
    let _b = Daemon::start(c.dir.path(), "team-b", &args_b, &c.env(&[]), SENTINEL);
    let provisioned = |c: &Cluster| {
        c.pull_list("both1", "default").len() == 3 && c.pull_list("both2", "default").len() == 3
    };
    wait_until(
        Duration::from_secs(40),
        "both instances provisioned",
        || provisioned(&c),
    );
    let b_version = |c: &Cluster| {
        c.pull_list("both1", "default")
            .into_iter()
            .find(|n| n.starts_with("b-pull-"))
    };
    let first_b = b_version(&c).expect("team B's version");

    // Team B rotates, then drops b-extra and b1: team A's objects do not change meanwhile.
    let sweeper = Sweeper::start(c.server.reader(), Some("team-b"));
    c.docker_config("b.json", "registry.example.com", "b-two");
    wait_until(Duration::from_secs(30), "team B rotated", || {
        b_version(&c).is_some_and(|v| v != first_b) && c.secret("both1", &first_b).is_none()
    });
    let fewer: &[(&str, &[&str], &str)] = &[("b-pull", &["both1", "both2"], "versioned")];
    c.file("b.yaml", &team_yaml("team-b", &auth_b, fewer));
    // Cleaned up means unlinked *and* deleted: b1's Secret goes after its link, and must be
    // gone before team A's phase starts, or the sweeper below would see team B's own delete.
    let b1_holds_b_pull = |c: &Cluster| {
        c.server.list("", "secrets", Some("b1")).iter().any(|s| {
            s.pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("b-pull"))
        })
    };
    wait_until(Duration::from_secs(30), "team B cleaned up", || {
        c.secret("both2", "b-extra").is_none()
            && c.pull_list("b1", "default").is_empty()
            && !b1_holds_b_pull(&c)
    });
    sweeper
        .finish()
        .assert_clean("team B rotates and cleans up");

    // Team A does the same: team B's objects do not change.
    let sweeper = Sweeper::start(c.server.reader(), Some("team-a"));
    c.docker_config("a.json", "registry.example.com", "a-two");
    c.file(
        "a.yaml",
        &team_yaml("team-a", &auth_a, &[("a-pull", &["both1"], "in-place")]),
    );
    wait_until(Duration::from_secs(30), "team A cleaned up", || {
        c.secret("both2", "a-pull").is_none() && c.secret("both1", "common").is_none()
    });
    sweeper
        .finish()
        .assert_clean("team A rotates and cleans up");
    assert!(
        c.secret("other", "app-config").is_some(),
        "the user's Secret survives both"
    );
    assert!(b_version(&c).is_some(), "team B's version is still linked");
}

// ---------------------------------------------------------------------------------------------
// 4. A type change never leaves a service account naming a missing Secret.

#[test]
fn a_type_change_that_fails_half_way_leaves_no_dangling_reference() {
    let c = Cluster::start(Options::default());
    c.namespace("a");
    let auth = c.docker_config("config.json", "registry.example.com", SENTINEL);
    let config_of = |type_: &str| {
        format!(
            "registries:\n  reg:\n    server: registry.example.com\n    from: {{ dockerConfig: {} }}\n\
             pullSecrets:\n  - name: reg-pull\n    type: {type_}\n    registries: [reg]\n    projects: {{ names: [a] }}\n",
            auth.display()
        )
    };
    let config = c.file(
        "pullsecretd.yaml",
        &config_of("kubernetes.io/dockerconfigjson"),
    );
    assert!(c.once_checked(&config, &[], &[], SENTINEL).status.success());
    assert_eq!(c.pull_list("a", "default"), ["reg-pull"]);
    let sweeper = Sweeper::start(c.server.reader(), None);

    // The delete fails: the Secret stays, and so do (after a relink) its links.
    c.file("pullsecretd.yaml", &config_of("kubernetes.io/dockercfg"));
    c.server.set_faults(|f| {
        f.rules = vec![ErrorRule::new(
            Some("delete"),
            Some("secrets"),
            InjectedError::Internal,
            Some(1),
        )];
    });
    let out = c.once_checked(&config, &["--retries", "0"], &[], SENTINEL);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("unlinked [-reg-pull (imagePullSecrets)]"),
        "{text}"
    );
    assert!(text.contains("FAILED delete secrets a/reg-pull"), "{text}");
    assert!(
        text.contains("linked [+reg-pull (imagePullSecrets)]"),
        "{text}"
    );
    assert_eq!(c.pull_list("a", "default"), ["reg-pull"]);

    // The create fails: the Secret is gone, and no account names it.
    c.server.set_faults(|f| {
        f.rules = vec![ErrorRule::new(
            Some("create"),
            Some("secrets"),
            InjectedError::Unavailable,
            Some(1),
        )];
    });
    let out = c.once_checked(&config, &["--retries", "0"], &[], SENTINEL);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("deleted secret reg-pull"), "{text}");
    assert!(text.contains("FAILED create secrets a/reg-pull"), "{text}");
    assert!(text.contains("2 changes, 1 failure,"), "{text}");
    assert!(c.secret("a", "reg-pull").is_none());
    assert!(c.pull_list("a", "default").is_empty());

    // The fault clears: the next pass creates and links it.
    let out = c.once_checked(&config, &[], &[], SENTINEL);
    assert!(out.status.success(), "{}", stdout(&out));
    let secret = c.secret("a", "reg-pull").expect("recreated");
    assert_eq!(secret["type"], "kubernetes.io/dockercfg");
    assert_eq!(c.pull_list("a", "default"), ["reg-pull"]);
    sweeper.finish().assert_clean("type change");
}

#[test]
fn a_secret_recreated_by_someone_else_between_read_and_delete_survives() {
    let c = Cluster::start(Options::default());
    c.namespace("a");
    let auth = c.docker_config("config.json", "registry.example.com", SENTINEL);
    let yaml = |names: &str| {
        format!(
            "registries:\n  reg:\n    server: registry.example.com\n    from: {{ dockerConfig: {} }}\n\
             pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ names: [{names}] }}\n",
            auth.display()
        )
    };
    let config = c.file("pullsecretd.yaml", &yaml("a"));
    assert!(c.once_checked(&config, &[], &[], SENTINEL).status.success());
    // The config drops project a: the next once unlinks and deletes reg-pull. Its DELETE is
    // held at the server while someone replaces the Secret with one of their own.
    c.file("pullsecretd.yaml", &yaml("elsewhere"));
    let pause = c.server.pause("delete", "secrets", Some("reg-pull"));
    let config_path = config.clone();
    let env: Vec<(String, String)> = c
        .env(&[])
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let once = std::thread::spawn(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(
            &["once", "--config", path(&config_path), "--no-events"],
            &env,
            SENTINEL,
        )
    });
    assert!(
        pause.wait_arrived(Duration::from_secs(20)),
        "the delete arrives"
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let kube = kube_client(&c);
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(kube, "a");
        api.delete("reg-pull", &Default::default())
            .await
            .expect("deleted by someone else");
        let mine: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": "reg-pull"},
            "type": "Opaque",
            "data": {"mine": STANDARD.encode("yes")},
        }))
        .expect("secret");
        api.create(&Default::default(), &mine)
            .await
            .expect("recreated by someone else");
    });
    pause.release(kube_sim::Release::Proceed);
    let out = once.join().expect("once finished");
    let text = stdout(&out);
    let survivor = c.secret("a", "reg-pull").expect("their Secret survives");
    assert_eq!(survivor["type"], "Opaque", "{text}");
    assert!(
        text.contains("not deleted: it was recreated by someone else"),
        "{text}"
    );
}

fn kube_client(c: &Cluster) -> kube::Client {
    kube::Client::try_from(c.server.kube_config()).expect("client")
}

// ---------------------------------------------------------------------------------------------
// The upgrade: objects of the release before instances are adopted, nothing else written.

#[test]
fn objects_written_before_instances_are_adopted_with_only_the_identity_label() {
    let c = Cluster::start(Options::default().openshift());
    for ns in ["a", "b", "images"] {
        c.namespace(ns);
    }
    let auth = c.docker_config("config.json", "registry.example.com", SENTINEL);
    let yaml = format!(
        "registries:\n  reg:\n    server: registry.example.com\n    from: {{ dockerConfig: {} }}\n\
         pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ names: [a, b] }}\n\
         \x20 - name: versioned\n    registries: [reg]\n    projects: {{ names: [a] }}\n    rotation: {{ strategy: versioned }}\n\
         imagePullers:\n  - project: images\n    allow: [\"serviceaccount:a:default\"]\n",
        auth.display()
    );
    let config = c.file("pullsecretd.yaml", &yaml);
    assert!(c.once_checked(&config, &[], &[], SENTINEL).status.success());
    // What the release before instances wrote: the same objects without the identity label.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let managed: Vec<(String, String, String)> =
        runtime.block_on(async { strip_instance_labels(&c, kube_client(&c)).await });
    assert_eq!(managed.len(), 4, "3 Secrets and 1 RoleBinding: {managed:?}");
    let data_before: Vec<Value> = managed
        .iter()
        .filter(|(resource, ..)| resource == "secrets")
        .map(|(_, ns, name)| c.secret(ns, name).expect("secret")["data"].clone())
        .collect();

    c.server.reset_counts();
    let out = c.once_checked(&config, &[], &[], SENTINEL);
    assert!(out.status.success(), "{}", stdout(&out));
    let counts = c.server.counts();
    assert_eq!(counts.count("update", "secrets"), 3, "{counts:?}");
    assert_eq!(counts.count("update", "rolebindings"), 1, "{counts:?}");
    assert_eq!(counts.writes(), 4, "nothing but the label: {counts:?}");
    let data_after: Vec<Value> = managed
        .iter()
        .filter(|(resource, ..)| resource == "secrets")
        .map(|(_, ns, name)| c.secret(ns, name).expect("kept")["data"].clone())
        .collect();
    assert_eq!(data_before, data_after);
    for (resource, ns, name) in &managed {
        let group = if resource == "secrets" {
            ""
        } else {
            "rbac.authorization.k8s.io"
        };
        let object = c.server.get(group, resource, ns, name).expect("kept");
        assert_eq!(
            object.pointer("/metadata/labels/pullsecretd.io~1instance"),
            Some(&json!("default")),
            "{resource} {ns}/{name}"
        );
    }
    // And a second pass writes nothing.
    c.server.reset_counts();
    assert!(c.once_checked(&config, &[], &[], SENTINEL).status.success());
    assert_eq!(c.server.counts().writes(), 0);
}

/// Removes `pullsecretd.io/instance` from every managed object, as they were before instances;
/// returns (resource, namespace, name) of each.
async fn strip_instance_labels(c: &Cluster, kube: kube::Client) -> Vec<(String, String, String)> {
    use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
    let mut stripped = Vec::new();
    for (group, version, kind, resource) in [
        ("", "v1", "Secret", "secrets"),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
        ),
    ] {
        let api_resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: resource.into(),
        };
        for object in c.server.list(group, resource, None) {
            let labels = object.pointer("/metadata/labels");
            if labels
                .and_then(|l| l.get("pullsecretd.io/instance"))
                .is_none()
            {
                continue;
            }
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &ns, &api_resource);
            let patch = json!({"metadata": {"labels": {"pullsecretd.io/instance": null}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("label removed");
            stripped.push((resource.to_string(), ns, name));
        }
    }
    stripped
}

// ---------------------------------------------------------------------------------------------
// 3. Workstation passes never replace a team's Secret.

#[tokio::test]
async fn a_workstation_pass_leaves_a_teams_secret_of_the_same_name_alone() {
    use pullsecretd::cluster::Throttle;
    use pullsecretd::dockerconfig::AuthFileFormat;
    use pullsecretd::source::SourceContext;
    use pullsecretd::source::service::CredentialService;
    use pullsecretd::workstation::{ConfigSource, WatchedFile, Workstation};

    let fx = cluster::Fixture::start(Options::default()).await;
    fx.namespace("dev", json!({}));
    // The team's pullsecretd (the default instance) manages registry-example-com in dev, as a
    // dockercfg Secret, linked to default.
    let team_auth = fx.dir.path().join("team.json");
    std::fs::write(
        &team_auth,
        json!({"auths": {"registry.example.com": {"auth": STANDARD.encode("team:team-pw")}}})
            .to_string(),
    )
    .expect("team auth");
    let team_yaml = format!(
        "registries:\n  reg:\n    server: registry.example.com\n    from: {{ dockerConfig: {} }}\n\
         pullSecrets:\n  - name: registry-example-com\n    type: kubernetes.io/dockercfg\n    registries: [reg]\n    projects: {{ names: [dev] }}\n",
        team_auth.display()
    );
    let team = pullsecretd::config::Config::from_yaml(&team_yaml, &fx.dir.path().join("team.yaml"))
        .expect("team config");
    assert!(fx.once(&team).await.converged());
    let before = fx
        .secret("dev", "registry-example-com")
        .expect("team's secret");

    // The developer logs in to the same registry; workstation syncs their logins into dev.
    let mine = fx.dir.path().join("config.json");
    std::fs::write(
        &mine,
        json!({"auths": {"registry.example.com": {"auth": STANDARD.encode(format!("me:{SENTINEL}"))}}})
            .to_string(),
    )
    .expect("my auth");
    let service = Arc::new(CredentialService::new(None, SourceContext::default(), None));
    let source = ConfigSource::Default {
        files: vec![WatchedFile {
            path: mine,
            format: AuthFileFormat::DockerConfig,
        }],
        namespace: "dev".into(),
    };
    let sweeper = Sweeper::start(fx.server.reader(), Some("workstation"));
    let mut workstation = Workstation::new(
        fx.client.clone(),
        Throttle::new(cluster::nz(100), cluster::nz(50), 2),
        source,
        service,
    );
    workstation.pass().await.expect("pass");
    let after = fx
        .secret("dev", "registry-example-com")
        .expect("still there");
    assert_eq!(after.metadata.uid, before.metadata.uid, "not recreated");
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.type_.as_deref(), Some("kubernetes.io/dockercfg"));
    assert!(!format!("{:?}", after.data).contains(SENTINEL));
    sweeper.finish().assert_clean("workstation");
}

// ---------------------------------------------------------------------------------------------
// 5 and 6. Reloads re-read at once; a failed source is retried long before its refresh.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_vault_path_serves_its_credential_at_once() {
    let bao = OpenBao::start().await;
    // Two paths, both at KV version 1, with different passwords.
    put_login(&bao, "registries/one", "password-one").await;
    put_login(&bao, "registries/two", SENTINEL).await;
    let c = Cluster::start(Options::default());
    c.namespace("a");
    let config = c.file(
        "vault.yaml",
        &vault_yaml(&bao, "registries/one", "in-place", "1h"),
    );
    let args = [
        "--config",
        path(&config),
        "--no-leader-election",
        "--reload-debounce",
        "100ms",
    ];
    let _daemon = Daemon::start(
        c.dir.path(),
        "reload",
        &args,
        &c.env(&[("VAULT_TOKEN", ROOT_TOKEN)]),
        SENTINEL,
    );
    let password = |c: &Cluster| {
        c.secret("a", "priv").and_then(|s| {
            let data = s.pointer("/data/.dockerconfigjson")?.as_str()?.to_string();
            let payload: Value = serde_json::from_slice(&STANDARD.decode(data).ok()?).ok()?;
            payload["auths"]["registry.example.com"]["password"]
                .as_str()
                .map(String::from)
        })
    };
    wait_until(
        Duration::from_secs(20),
        "the first path's credential",
        || password(&c).as_deref() == Some("password-one"),
    );
    c.file(
        "vault.yaml",
        &vault_yaml(&bao, "registries/two", "in-place", "1h"),
    );
    let took = wait_until(
        Duration::from_secs(20),
        "the second path's credential",
        || password(&c).as_deref() == Some(SENTINEL),
    );
    eprintln!("the reloaded path's credential was written {took:?} after the reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_was_down_at_start_is_retried_long_before_its_refresh() {
    let mut bao = OpenBao::start().await;
    bao.kill();
    let c = Cluster::start(Options::default());
    c.namespace("a");
    let config = c.file(
        "vault.yaml",
        &vault_yaml(&bao, "registries/priv", "in-place", "1h"),
    );
    let args = ["--config", path(&config), "--no-leader-election"];
    let daemon = Daemon::start(
        c.dir.path(),
        "retry",
        &args,
        &c.env(&[("VAULT_TOKEN", ROOT_TOKEN)]),
        SENTINEL,
    );
    daemon.wait_for_log(Duration::from_secs(20), "Reading a registry failed");
    bao.restart().await;
    put_login(&bao, "registries/priv", SENTINEL).await;
    let took = wait_until(
        Duration::from_secs(60),
        "the Secret written after Vault came back",
        || c.secret("a", "priv").is_some(),
    );
    eprintln!("written {took:?} after Vault came back (refresh: 1h)");
    assert!(daemon.log().contains("Ready"), "{}", daemon.log());
}

/// A tenant who may create Secrets in its own namespace copies pullsecretd's labels and
/// annotations onto a bait Secret recording 400 service-account names. Each recorded name would
/// cost a cluster-wide list (a watch in `run`): the bait fails the proof instead, is reported,
/// never read for names and never deleted, and `once` lists service accounts only for the
/// accounts the config links.
#[tokio::test]
async fn a_bait_secret_recording_hundreds_of_accounts_is_not_trusted() {
    let fx = cluster::Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.namespace("tenant", json!({}));
    bait_in(&fx, "tenant", "bait", "bait", 400);
    let config = fx.config(SENTINEL, "    link: { default: [pull] }\n");
    fx.server.reset_counts();
    let report = fx.once(&config).await;
    assert!(report.converged());
    let account_lists = fx.server.counts().count("list", "serviceaccounts");
    assert_eq!(account_lists, 1, "one list, for `default` only");
    assert!(
        fx.secret("tenant", "bait").is_some(),
        "unproven: never deleted"
    );
    let reported: Vec<&str> = report
        .projects
        .iter()
        .flat_map(|p| &p.problems)
        .map(|p| p.reason)
        .collect();
    assert!(reported.contains(&"UnprovenOwnership"), "{reported:?}");
}

/// A Secret with pullsecretd's marks in `namespace` recording `count` service accounts
/// `PREFIX-0`…: it passes the ownership proof up to 64 names.
fn bait_in(fx: &cluster::Fixture, namespace: &str, name: &str, prefix: &str, count: usize) {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    seed::object(
        &fx.server,
        "",
        "secrets",
        json!({
            "metadata": {
                "name": name, "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "pullsecretd",
                           "pullsecretd.io/instance": "default"},
                "annotations": {"pullsecretd.io/pull-secret": "reg-pull",
                                "pullsecretd.io/content-hash": "0000",
                                "pullsecretd.io/service-accounts": names.join(",")},
            },
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": STANDARD.encode(r#"{"auths":{"bait.example":{"auth":"eDp5"}}}"#)},
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baits_that_pass_the_proof_cost_a_bounded_number_of_reads() {
    // Five baits of 60 names each (300 names, each passing the per-Secret bound): at most 64
    // recorded names beyond the configured `default` are read, in `once` and in `run`.
    let fx = cluster::Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.namespace("tenant", json!({}));
    fx.namespace("pullsecretd", json!({}));
    let baits = ["bait-a", "bait-b", "bait-c", "bait-d", "bait-e"];
    for (i, bait) in baits.iter().enumerate() {
        bait_in(&fx, "tenant", bait, &format!("sa{i}"), 60);
    }
    let config = fx.config(SENTINEL, "    link: { default: [pull] }\n");
    fx.server.reset_counts();
    let report = fx.once(&config).await;
    let counts = fx.server.counts();
    assert_eq!(
        counts.count("list", "serviceaccounts"),
        1 + 64,
        "`default` and at most 64 recorded names"
    );
    let kept: Vec<&str> = baits
        .iter()
        .copied()
        .filter(|b| fx.secret("tenant", b).is_some())
        .collect();
    assert!(
        kept.len() >= 3,
        "a bait whose accounts were not read stays: {kept:?}"
    );
    let reported = report
        .projects
        .iter()
        .flat_map(|p| &p.problems)
        .filter(|p| p.reason == "UnreadServiceAccounts")
        .count();
    assert_eq!(reported, kept.len(), "each kept bait is reported");

    // The daemon likewise watches `default` and at most 64 recorded names.
    fx.server.reset_counts();
    let running = pullsecretd::daemon::start(fx.client.clone(), fx.daemon_options(0))
        .await
        .expect("daemon starts");
    pullsecretd_testkit::poll::eventually(Duration::from_secs(20), "a linked", || {
        fx.account_lists("a", "default")
            .0
            .contains(&"reg-pull".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = fx.server.counts();
    assert!(
        counts.count("watch", "serviceaccounts") <= 1 + 64,
        "{counts:?}"
    );
    // A bait whose every account was read is cleaned up like any Secret of this instance in a
    // namespace no longer selected; the rest stay.
    assert!(baits.iter().any(|b| fx.secret("tenant", b).is_some()));
    running.stop();
    let _ = running.wait(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_whose_accounts_were_crowded_out_waits_under_api_errors_with_no_dangling_reference()
 {
    // reg-pull in `a` is linked from `default` and `deployer`; then the config drops it, and
    // two baits (120 recorded names sorting before `deployer`) fill the budget of recorded
    // names, so `deployer` is not read: the Secret must stay while `deployer` may name it,
    // whatever the API refuses, and go once the budget reaches `deployer`.
    let fx = cluster::Fixture::start(Options::default()).await;
    for ns in ["a", "b", "tenant"] {
        fx.namespace(ns, json!({}));
    }
    seed::account(&fx.server, "a", "deployer", &[], &[]);
    let other = "  - name: other-pull\n    registries: [reg]\n    projects: { names: [b] }\n\
                 \x20   link: { default: [pull] }\n";
    let both = fx.config(
        SENTINEL,
        &format!("    link: {{ default: [pull], deployer: [pull] }}\n{other}"),
    );
    assert!(fx.once(&both).await.converged());
    assert_eq!(fx.account_lists("a", "deployer").0, ["reg-pull"]);
    let path = fx.dir.path().join("config.yaml");
    let yaml = std::fs::read_to_string(&path).expect("config");
    let (head, _) = yaml.split_once("pullSecrets:\n").expect("pull secrets");
    let fewer = format!("{head}pullSecrets:\n{other}");
    let fewer = pullsecretd::config::Config::from_yaml(&fewer, &path).expect("valid config");
    bait_in(&fx, "tenant", "bait-aa", "aa", 60);
    bait_in(&fx, "tenant", "bait-ab", "ab", 60);

    let sweeper = Sweeper::start(fx.server.reader(), Some("default"));
    fx.server.set_faults(|faults| {
        for (verb, resource) in [("update", "serviceaccounts"), ("delete", "secrets")] {
            faults.rules.push(ErrorRule::new(
                Some(verb),
                Some(resource),
                InjectedError::Unavailable,
                Some(3),
            ));
        }
    });
    let first = fx.once(&fewer).await;
    let unread = first
        .projects
        .iter()
        .flat_map(|p| &p.problems)
        .any(|p| p.reason == "UnreadServiceAccounts" && p.message.contains("reg-pull"));
    assert!(unread, "{first:#?}");
    assert!(
        fx.secret("a", "reg-pull").is_some(),
        "kept while deployer is unread"
    );
    let mut passes = 1;
    while !fx.once(&fewer).await.converged() {
        passes += 1;
        assert!(passes < 8, "never converged");
    }
    assert!(fx.secret("a", "reg-pull").is_none(), "cleaned up at last");
    assert!(fx.account_lists("a", "deployer").0.is_empty());
    assert!(fx.account_lists("a", "default").0.is_empty());
    assert_eq!(fx.account_lists("b", "default").0, ["other-pull"]);
    sweeper
        .finish()
        .assert_clean("a crowded-out cleanup under API errors");
}

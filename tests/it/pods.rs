//! Pods that actually pull, end to end: OpenBao → the daemon → kube-sim (ServiceAccount
//! admission, Deployments, ReplicaSets) → kube-sim's kubelet → a real Debian `docker-registry`
//! with htpasswd auth (images pushed with `skopeo`). Healing of pods created before the link
//! (`heal: restart`, `report`, a bare pod, a pod of a registry pullsecretd does not serve), a
//! password rotation in Vault and in the registry's htpasswd (in place: a restarted pod pulls
//! with the new password; versioned: a pod created before the rotation keeps its version past
//! `grace` until it is gone), and the delegated pair through the kubelet's merged keyring.
//! Only loopback addresses are contacted.

use crate::daemon::{http_get, metric};
use crate::support::cluster::{self, Fixture, nz};
use pullsecretd_testkit::openbao::{OpenBao, ROOT_TOKEN};
use pullsecretd_testkit::poll::{eventually, eventually_async};
use pullsecretd_testkit::registry::Registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_sim::{KubeletOptions, Options};
use secrecy::SecretString;
use serde_json::{Value, json};

use pullsecretd::config::Config;
use pullsecretd::daemon::{self, Running};
use pullsecretd::source::SourceContext;
use pullsecretd::source::vault::{RetryPolicy, TokenEnvironment, VaultSession};

const USER: &str = "robot";
const PASSWORD: &str = "SENTINEL-pods-pw-1-4d2a";
const REPO: &str = "team/app";
/// Deadline of every wait: states are asserted, never how long they took.
const WAIT: Duration = Duration::from_secs(30);

/// A kubelet with short backoffs, so several pull attempts fit in a test.
fn fast_kubelet() -> KubeletOptions {
    KubeletOptions {
        image_backoff_initial: Duration::from_millis(300),
        image_backoff_max: Duration::from_millis(1200),
        sync_after_failure: Duration::from_millis(50),
        resync_interval: Duration::from_secs(2),
        ..KubeletOptions::default()
    }
}

async fn cluster_with_kubelet() -> Fixture {
    Fixture::start(Options::default().kubelet(fast_kubelet())).await
}

/// A docker auth file for `host` with `user:password`, for `skopeo`.
fn authfile(dir: &Path, name: &str, host: &str, user: &str, password: &str) -> PathBuf {
    let path = dir.join(name);
    let auth = STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(&path, json!({"auths": {host: {"auth": auth}}}).to_string())
        .expect("authfile written");
    path
}

/// A logged registry accepting `users`, holding `team/app:v1` and `:v2`.
fn registry_with_images(dir: &Path, users: &[(&str, &str)]) -> Registry {
    let registry = Registry::start_logged(users);
    let (user, password) = users[0];
    let auth = authfile(dir, "push.json", &registry.host, user, password);
    for tag in ["v1", "v2"] {
        let out = registry.push(&auth, REPO, tag);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    registry
}

async fn put_credential(bao: &OpenBao, path: &str, user: &str, password: &str) {
    bao.kv2_put(
        "secret",
        path,
        json!({"username": user, "password": password}),
    )
    .await;
}

/// Writes the daemon's config (`registries:` and `pullSecrets:` as given, Vault as source).
fn write_config(fx: &Fixture, bao: &OpenBao, body: &str) -> PathBuf {
    let yaml = format!(
        "vault:\n  address: {}\n  timeout: 1s\n  auth: {{ method: token }}\n{body}",
        bao.address
    );
    let path = fx.dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).expect("config written");
    Config::from_yaml(&yaml, &path).expect("valid config");
    path
}

/// [`write_config`] with the one registry `reg` at `host`, read from `registries/reg` in
/// OpenBao, before `pull_secrets` (the `pullSecrets:` block).
fn write_reg_config(fx: &Fixture, bao: &OpenBao, host: &str, pull_secrets: &str) -> PathBuf {
    let registries = format!(
        "registries:\n  reg:\n    server: {host}\n    from: {{ vault: {{ path: registries/reg }} }}\n"
    );
    write_config(fx, bao, &format!("{registries}{pull_secrets}"))
}

async fn start_daemon(fx: &Fixture, path: &Path) -> Running {
    start_daemon_as(fx, path, fx.client.clone()).await
}

async fn start_daemon_as(fx: &Fixture, path: &Path, client: kube::Client) -> Running {
    // The Lease's namespace.
    fx.namespace("pullsecretd", json!({}));
    let config = Config::load(path).expect("config");
    let vault = config.vault.as_ref().expect("vault block");
    let session = VaultSession::with_environment(
        vault,
        TokenEnvironment {
            vault_token: Some(SecretString::from(ROOT_TOKEN.to_string())),
            home: None,
        },
    )
    .expect("session")
    .with_retry(RetryPolicy {
        retries: 1,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
    });
    let options = daemon::DaemonOptions {
        sources: SourceContext {
            vault: Some(Arc::new(session)),
            ..SourceContext::default()
        },
        throttle: pullsecretd::cluster::Throttle::new(nz(500), nz(200), 4),
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..fx.daemon_options(4)
    };
    daemon::start(client, options).await.expect("daemon starts")
}

fn deployment(name: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": image, "imagePullPolicy": "Always"}]}}}})
}

fn create_deployment(fx: &Fixture, namespace: &str, name: &str, image: &str) {
    let mut object = deployment(name, image);
    object["metadata"]["namespace"] = json!(namespace);
    fx.server
        .create("apps", "deployments", object)
        .unwrap_or_else(|e| panic!("deployment {namespace}/{name}: {e}"));
}

fn create_bare_pod(fx: &Fixture, namespace: &str, name: &str, image: &str) {
    let pod = json!({"metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}]}});
    fx.server
        .create("", "pods", pod)
        .unwrap_or_else(|e| panic!("pod {namespace}/{name}: {e}"));
}

/// The pods of `namespace` whose name starts with `prefix`.
fn pods(fx: &Fixture, namespace: &str, prefix: &str) -> Vec<Value> {
    fx.server
        .list("", "pods", Some(namespace))
        .into_iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

fn name_of(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn waiting_reason(pod: &Value) -> Option<String> {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .map(str::to_string)
}

fn is_running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["containerStatuses"][0]["state"]["running"].is_object()
}

fn in_back_off(pod: &Value) -> bool {
    waiting_reason(pod).as_deref() == Some("ImagePullBackOff")
}

/// The one pod of `namespace` starting with `prefix`, once `check` holds for it.
async fn one_pod(
    fx: &Fixture,
    namespace: &str,
    prefix: &str,
    what: &str,
    check: fn(&Value) -> bool,
) -> Value {
    let mut found = None;
    eventually(WAIT, what, || {
        let all = pods(fx, namespace, prefix);
        found = all.first().filter(|p| all.len() == 1 && check(p)).cloned();
        found.is_some()
    })
    .await;
    found.unwrap_or_default()
}

/// (reason, message) of every Event pullsecretd published about pod `name` in `namespace`.
fn pullsecretd_events(fx: &Fixture, namespace: &str, name: &str) -> Vec<(String, String)> {
    fx.server
        .list("", "events", Some(namespace))
        .into_iter()
        .filter(|e| e["involvedObject"]["kind"] == "Pod" && e["involvedObject"]["name"] == name)
        .filter(|e| {
            e["reportingComponent"] == "pullsecretd" || e["source"]["component"] == "pullsecretd"
        })
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The registry's manifest GETs of `team/app` that it answered 200.
fn manifest_pulls(registry: &Registry) -> Vec<String> {
    registry
        .access_log()
        .into_iter()
        .filter(|l| l.method == "GET" && l.uri.starts_with(&format!("/v2/{REPO}/manifests/")))
        .filter(|l| l.status == 200)
        .map(|l| l.uri)
        .collect()
}

fn pull_list(fx: &Fixture, namespace: &str) -> Vec<String> {
    fx.account_lists(namespace, "default").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_pull_with_pullsecretd_and_back_off_without_it() {
    let fx = cluster_with_kubelet().await;
    let registry = registry_with_images(fx.dir.path(), &[(USER, PASSWORD)]);
    let bao = OpenBao::start().await;
    put_credential(&bao, "registries/reg", USER, PASSWORD).await;
    let selected = ["web-0", "web-1", "web-2"];
    for ns in selected {
        fx.namespace(ns, json!({"team": "web"}));
    }
    fx.namespace("other", json!({"team": "other"}));
    let path = write_reg_config(
        &fx,
        &bao,
        &registry.host,
        "pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: { selector: \"team=web\" }\n",
    );
    let running = start_daemon(&fx, &path).await;
    eventually(WAIT, "reg-pull linked in every selected namespace", || {
        selected.iter().all(|ns| pull_list(&fx, ns) == ["reg-pull"])
    })
    .await;

    let image = format!("{}/{REPO}:v1", registry.host);
    for ns in selected.iter().chain(&["other"]) {
        create_deployment(&fx, ns, "web", &image);
    }
    for ns in selected {
        let pod = one_pod(&fx, ns, "web-", "the web pod running", is_running).await;
        assert_eq!(
            pod["spec"]["imagePullSecrets"],
            json!([{"name": "reg-pull"}])
        );
        let attempts: Vec<_> = fx
            .server
            .pull_attempts()
            .into_iter()
            .filter(|a| a.namespace == ns)
            .collect();
        assert!(
            attempts.iter().any(|a| a.username.as_deref() == Some(USER)
                && a.secret.as_deref() == Some("reg-pull")
                && a.result.is_ok()),
            "{attempts:?}"
        );
    }
    // Without pullsecretd (a namespace it does not select) the same Deployment backs off.
    let stuck = one_pod(
        &fx,
        "other",
        "web-",
        "the unselected pod backing off",
        in_back_off,
    )
    .await;
    assert!(
        stuck["spec"].get("imagePullSecrets").is_none(),
        "{}",
        stuck["spec"]
    );

    // The registry (htpasswd: only authenticated requests get a 200) served the three
    // namespaces' manifest pulls, and its log says each was authorized.
    eventually(WAIT, "three manifest pulls in the access log", || {
        manifest_pulls(&registry).len() >= 3
    })
    .await;
    let authorized = registry
        .app_log()
        .lines()
        .filter(|l| l.contains("\"msg\":\"authorized request\"") && l.contains("\"GET\""))
        .filter(|l| l.contains(&format!("/v2/{REPO}/manifests/v1")))
        .count();
    assert!(authorized >= 3, "{}", registry.app_log());
    // Each selected namespace's pods are looked at after its link (healing runs beside the
    // work queue, in spaced rounds: it may come after the pods run), on its own or in a list
    // across the cluster shared by namespaces healing at once (src/cluster/pod_lists.rs).
    eventually(WAIT, "each selected namespace's pods looked at", || {
        let counts = fx.server.counts();
        let across = counts.count_in("list", "pods", "");
        selected
            .iter()
            .all(|ns| counts.count_in("list", "pods", ns) >= 1 || across >= 1)
    })
    .await;
    // Pods are read only where pullsecretd changed something, and never watched.
    let counts = fx.server.counts();
    assert_eq!(counts.count("watch", "pods"), 0, "{counts:#?}");
    assert_eq!(counts.count_in("list", "pods", "other"), 0, "{counts:#?}");
    assert!(!registry.access_log_text().contains(PASSWORD));
    assert!(!registry.app_log().contains(PASSWORD));
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_stuck_from_before_the_link_are_restarted_reported_or_left_alone() {
    let fx = cluster_with_kubelet().await;
    let registry = registry_with_images(fx.dir.path(), &[(USER, PASSWORD)]);
    // A second registry pullsecretd does not serve.
    let unserved = registry_with_images(fx.dir.path(), &[("someone", "else-pw")]);
    let bao = OpenBao::start().await;
    put_credential(&bao, "registries/reg", USER, PASSWORD).await;
    for ns in ["fix", "tell"] {
        fx.namespace(ns, json!({}));
    }
    let image = format!("{}/{REPO}:v1", registry.host);
    let unserved_image = format!("{}/{REPO}:v1", unserved.host);
    create_deployment(&fx, "fix", "web", &image);
    create_deployment(&fx, "fix", "elsewhere", &unserved_image);
    create_bare_pod(&fx, "fix", "bare", &image);
    create_deployment(&fx, "tell", "web", &image);
    let stuck_web = one_pod(&fx, "fix", "web-", "fix/web stuck", in_back_off).await;
    let stuck_elsewhere =
        one_pod(&fx, "fix", "elsewhere-", "fix/elsewhere stuck", in_back_off).await;
    one_pod(&fx, "fix", "bare", "the bare pod stuck", in_back_off).await;
    let stuck_tell = one_pod(&fx, "tell", "web-", "tell/web stuck", in_back_off).await;

    let path = write_reg_config(
        &fx,
        &bao,
        &registry.host,
        "pullSecrets:\n\
             \x20 - name: fix-pull\n    registries: [reg]\n    projects: { names: [fix] }\n    heal: restart\n\
             \x20 - name: tell-pull\n    registries: [reg]\n    projects: { names: [tell] }\n",
    );
    let running = start_daemon(&fx, &path).await;

    // heal: restart — the Deployment's pod is replaced by one that has the Secret, and runs.
    let healed = one_pod(
        &fx,
        "fix",
        "web-",
        "fix/web replaced and running",
        is_running,
    )
    .await;
    assert_ne!(name_of(&healed), name_of(&stuck_web));
    assert_eq!(
        healed["spec"]["imagePullSecrets"],
        json!([{"name": "fix-pull"}])
    );
    let restarted = pullsecretd_events(&fx, "fix", &name_of(&stuck_web));
    assert!(
        restarted
            .iter()
            .any(|(reason, message)| reason == "RestartedStuckPod"
                && message.contains("fix-pull")
                && message.contains("ReplicaSet")),
        "{restarted:?}"
    );

    // heal: report — the pod gets the Event and is left as it is.
    eventually(WAIT, "tell/web told", || {
        !pullsecretd_events(&fx, "tell", &name_of(&stuck_tell)).is_empty()
    })
    .await;
    let told = pullsecretd_events(&fx, "tell", &name_of(&stuck_tell));
    assert!(
        told.iter()
            .all(|(reason, message)| reason == "MissingPullSecret"
                && message.contains("tell-pull")
                && message.contains("heal: restart")),
        "{told:?}"
    );

    // A bare pod is told, never deleted.
    eventually(WAIT, "the bare pod told", || {
        !pullsecretd_events(&fx, "fix", "bare").is_empty()
    })
    .await;
    let bare = pullsecretd_events(&fx, "fix", "bare");
    assert!(
        bare.iter()
            .all(|(reason, m)| reason == "MissingPullSecret" && m.contains("no controller")),
        "{bare:?}"
    );

    // Give healing time to do anything more it would do, then check what it left alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = |ns: &str, pod: &Value| {
        fx.server
            .get("", "pods", ns, &name_of(pod))
            .is_some_and(|p| p["metadata"]["uid"] == pod["metadata"]["uid"] && in_back_off(&p))
    };
    assert!(still("tell", &stuck_tell), "heal: report deleted nothing");
    assert!(
        fx.server
            .get("", "pods", "fix", "bare")
            .is_some_and(|p| in_back_off(&p)),
        "the bare pod stays"
    );
    assert!(
        still("fix", &stuck_elsewhere),
        "a pod of an unserved registry is untouched"
    );
    assert!(pullsecretd_events(&fx, "fix", &name_of(&stuck_elsewhere)).is_empty());
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_rotation_reaches_a_restarted_pod() {
    let fx = cluster_with_kubelet().await;
    let registry = registry_with_images(fx.dir.path(), &[(USER, PASSWORD)]);
    let bao = OpenBao::start().await;
    put_credential(&bao, "registries/reg", USER, PASSWORD).await;
    fx.namespace("web", json!({}));
    let path = write_reg_config(
        &fx,
        &bao,
        &registry.host,
        "pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: { names: [web] }\n\
             \x20   rotation: { refresh: 200ms }\n",
    );
    let running = start_daemon(&fx, &path).await;
    eventually(WAIT, "linked", || pull_list(&fx, "web") == ["reg-pull"]).await;
    create_deployment(&fx, "web", "web", &format!("{}/{REPO}:v1", registry.host));
    let first = one_pod(&fx, "web", "web-", "the first pod running", is_running).await;

    // The password changes in the registry and in Vault; the Secret follows in place.
    let new_password = "SENTINEL-pods-pw-2-91bc";
    registry.set_password(USER, new_password);
    put_credential(&bao, "registries/reg", USER, new_password).await;
    eventually(WAIT, "the Secret holds the new password", || {
        fx.secret("web", "reg-pull")
            .is_some_and(|s| cluster::password_in(&s) == new_password)
    })
    .await;

    // A restarted pod (deleted; its ReplicaSet recreates it) pulls with the new password.
    let api: Api<Pod> = Api::namespaced(fx.client.clone(), "web");
    api.delete(&name_of(&first), &DeleteParams::default())
        .await
        .expect("pod deleted");
    let second = one_pod(&fx, "web", "web-", "the replacement running", |p| {
        is_running(p)
    })
    .await;
    assert_ne!(name_of(&second), name_of(&first));
    let attempts: Vec<_> = fx
        .server
        .pull_attempts()
        .into_iter()
        .filter(|a| a.pod == name_of(&second))
        .collect();
    assert!(
        attempts
            .iter()
            .all(|a| a.result.is_ok() && a.username.as_deref() == Some(USER)),
        "{attempts:?}"
    );
    running.stop();
}

/// The second robot account of the versioned tests.
const NEW_USER: &str = "robot-2";

/// A cluster with namespace `web`, a registry accepting both [`USER`] and [`NEW_USER`] (the old
/// and the new credential are both valid during a versioned switch), and OpenBao holding the
/// first.
async fn two_credentials(new_password: &str) -> (Fixture, Registry, OpenBao) {
    let fx = cluster_with_kubelet().await;
    let registry =
        registry_with_images(fx.dir.path(), &[(USER, PASSWORD), (NEW_USER, new_password)]);
    let bao = OpenBao::start().await;
    put_credential(&bao, "registries/reg", USER, PASSWORD).await;
    fx.namespace("web", json!({}));
    (fx, registry, bao)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_a_pod_still_names_is_kept_past_grace_and_goes_with_the_pod() {
    let new_password = "SENTINEL-pods-pw-3-77de";
    let (fx, registry, bao) = two_credentials(new_password).await;
    let new_user = NEW_USER;
    let path = write_reg_config(
        &fx,
        &bao,
        &registry.host,
        "pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: { names: [web] }\n\
             \x20   rotation: { refresh: 200ms, strategy: versioned, grace: 1s, keep: 0 }\n",
    );
    let running = start_daemon(&fx, &path).await;
    eventually(WAIT, "a first version linked", || {
        pull_list(&fx, "web").len() == 1
    })
    .await;
    let first_version = pull_list(&fx, "web")[0].clone();
    create_bare_pod(&fx, "web", "old", &format!("{}/{REPO}:v1", registry.host));
    let old = one_pod(&fx, "web", "old", "the old pod running", is_running).await;
    assert_eq!(
        old["spec"]["imagePullSecrets"],
        json!([{"name": first_version}])
    );

    // Rotate; wait well past grace: the first version stays while the pod names it.
    put_credential(&bao, "registries/reg", new_user, new_password).await;
    eventually(WAIT, "the second version linked", || {
        pull_list(&fx, "web")
            .first()
            .is_some_and(|n| *n != first_version)
    })
    .await;
    let second_version = pull_list(&fx, "web")[0].clone();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        fx.secret("web", &first_version).is_some(),
        "a version a pod names is kept past grace"
    );
    let address = running.address.expect("listener");
    let in_use = async || {
        let (_, text) = http_get(address, "/metrics").await;
        metric(&text, "pullsecretd_versions_in_use ")
    };
    assert_eq!(in_use().await, Some(1.0));
    assert_eq!(pull_list(&fx, "web"), std::slice::from_ref(&second_version));

    // The old pod pulls again (a new image for its container) with its own, old version.
    let api: Api<Pod> = Api::namespaced(fx.client.clone(), "web");
    let v2 = json!({"spec": {"containers": [
        {"name": "app", "image": format!("{}/{REPO}:v2", registry.host)}]}});
    api.patch("old", &PatchParams::default(), &Patch::Strategic(v2))
        .await
        .expect("image changed");
    eventually(WAIT, "the old pod pulled v2 with the first version", || {
        fx.server.pull_attempts().iter().any(|a| {
            a.pod == "old"
                && a.image.ends_with(":v2")
                && a.secret.as_deref() == Some(first_version.as_str())
                && a.username.as_deref() == Some(USER)
                && a.result.is_ok()
        })
    })
    .await;

    // A pod created now gets the second version; once the old pod is gone, so is its version.
    create_bare_pod(&fx, "web", "new", &format!("{}/{REPO}:v1", registry.host));
    let new = one_pod(&fx, "web", "new", "the new pod running", is_running).await;
    assert_eq!(
        new["spec"]["imagePullSecrets"],
        json!([{"name": second_version}])
    );
    api.delete("old", &DeleteParams::default())
        .await
        .expect("old pod deleted");
    eventually(
        WAIT,
        "the first version deleted once no pod names it",
        || fx.secret("web", &first_version).is_none(),
    )
    .await;
    assert!(fx.secret("web", &second_version).is_some());
    assert_eq!(in_use().await, Some(0.0));
    running.stop();
}

/// Every (namespace, pod, secret) where a pod that may still pull names a missing Secret.
fn pods_naming_missing_secrets(fx: &Fixture) -> Vec<(String, String, String)> {
    let mut missing = Vec::new();
    for pod in fx.server.list("", "pods", None) {
        if matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        for reference in pod["spec"]["imagePullSecrets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = reference["name"].as_str().unwrap_or_default();
            if fx.server.get("", "secrets", ns, name).is_none() {
                missing.push((ns.to_string(), name_of(&pod), name.to_string()));
            }
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pod_reads_and_deletes_never_cost_a_named_version_or_a_bare_pod() {
    use kube_sim::{ErrorRule, InjectedError};
    let new_password = "SENTINEL-pods-pw-4-0e6f";
    let (fx, registry, bao) = two_credentials(new_password).await;
    let new_user = NEW_USER;
    let image = format!("{}/{REPO}:v1", registry.host);
    create_deployment(&fx, "web", "web", &image);
    create_bare_pod(&fx, "web", "bare", &image);
    let stuck = one_pod(&fx, "web", "web-", "the web pod stuck", in_back_off).await;
    let bare = one_pod(&fx, "web", "bare", "the bare pod stuck", in_back_off).await;

    // Pods can be neither listed nor deleted.
    let fault =
        |verb: &str| ErrorRule::new(Some(verb), Some("pods"), InjectedError::Internal, None);
    fx.server.set_faults(|f| {
        f.rules.push(fault("list"));
        f.rules.push(fault("delete"));
    });
    let sweeper = crate::support::invariants::Sweeper::start(fx.server.reader(), Some("default"));
    let path = write_reg_config(
        &fx,
        &bao,
        &registry.host,
        "pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: { names: [web] }\n\
             \x20   heal: restart\n\
             \x20   rotation: { refresh: 200ms, strategy: versioned, grace: 1s, keep: 0 }\n",
    );
    let running = start_daemon(&fx, &path).await;
    eventually(WAIT, "a first version linked", || {
        pull_list(&fx, "web").len() == 1
    })
    .await;
    let first_version = pull_list(&fx, "web")[0].clone();
    // A pod created now names the first version.
    create_bare_pod(&fx, "web", "user", &image);
    one_pod(&fx, "web", "user", "the user pod running", is_running).await;

    // Rotate while pods cannot be listed: past grace, the first version is unlinked but stays.
    put_credential(&bao, "registries/reg", new_user, new_password).await;
    eventually(WAIT, "the second version linked", || {
        pull_list(&fx, "web")
            .first()
            .is_some_and(|n| *n != first_version)
    })
    .await;
    let mut problems = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        problems.extend(pods_naming_missing_secrets(&fx));
    }
    assert!(
        fx.secret("web", &first_version).is_some(),
        "kept while pods are unreadable"
    );
    let unchanged = |pod: &Value| {
        fx.server
            .get("", "pods", "web", &name_of(pod))
            .is_some_and(|p| p["metadata"]["uid"] == pod["metadata"]["uid"])
    };
    assert!(
        unchanged(&stuck) && unchanged(&bare),
        "no pod deleted without a read"
    );

    // Pods readable again, deletes still failing: the named version stays, the stuck pod stays.
    fx.server
        .set_faults(|f| f.rules.retain(|r| r.verb.as_deref() != Some("list")));
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        problems.extend(pods_naming_missing_secrets(&fx));
    }
    assert!(
        fx.secret("web", &first_version).is_some(),
        "the user pod still names it"
    );
    assert!(unchanged(&stuck) && unchanged(&bare));

    // Deletes work again: the Deployment's pod is replaced (the bare pod never is), and once
    // the user pod is gone its version goes too.
    fx.server.set_faults(|f| f.rules.clear());
    let healed = one_pod(
        &fx,
        "web",
        "web-",
        "the web pod replaced and running",
        is_running,
    )
    .await;
    assert_ne!(name_of(&healed), name_of(&stuck));
    assert!(unchanged(&bare), "a bare pod is never deleted");
    let api: Api<Pod> = Api::namespaced(fx.client.clone(), "web");
    api.delete("user", &DeleteParams::default())
        .await
        .expect("user pod deleted");
    eventually(WAIT, "the first version deleted", || {
        problems.extend(pods_naming_missing_secrets(&fx));
        fx.secret("web", &first_version).is_none()
    })
    .await;
    assert!(
        problems.is_empty(),
        "pods named missing Secrets: {problems:?}"
    );
    sweeper
        .finish()
        .assert_clean("pod list and delete failures during healing and a versioned rotation");
    running.stop();
}

/// deploy/components/heal-restart's objects.
fn heal_restart_rbac() -> Vec<Value> {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/components/heal-restart/rbac.yaml");
    let yaml = std::fs::read_to_string(file).expect("component file");
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_restart_needs_the_heal_restart_component_and_nothing_more() {
    const TOKEN: &str = "pullsecretd-sa-token";
    let mut options = Options::default().kubelet(fast_kubelet()).identity(
        TOKEN,
        kube_sim::UserInfo::service_account("pullsecretd", "pullsecretd"),
    );
    options.rbac = true;
    let fx = Fixture::start(options).await;
    crate::support::seed::rbac_objects(&fx.server, crate::daemon_rbac::shipped_rbac());
    let registry = registry_with_images(fx.dir.path(), &[(USER, PASSWORD)]);
    let bao = OpenBao::start().await;
    put_credential(&bao, "registries/reg", USER, PASSWORD).await;
    fx.namespace("web", json!({}));
    create_deployment(&fx, "web", "web", &format!("{}/{REPO}:v1", registry.host));
    let stuck = one_pod(&fx, "web", "web-", "the web pod stuck", in_back_off).await;
    let path = write_reg_config(
        &fx,
        &bao,
        &registry.host,
        "pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: { names: [web] }\n\
             \x20   heal: restart\n",
    );
    let client = fx.client_as(TOKEN).await;
    let running = start_daemon_as(&fx, &path, client).await;
    eventually(WAIT, "linked", || pull_list(&fx, "web") == ["reg-pull"]).await;

    // The base lists pods but may not delete them: the stuck pod stays, the refusal is the
    // delete of that pod.
    let delete_pods = ("delete".to_string(), "pods".to_string());
    eventually(WAIT, "the pod delete refused", || {
        fx.server.counts().forbidden.contains_key(&delete_pods)
    })
    .await;
    let forbidden = fx.server.counts().forbidden;
    assert!(forbidden.keys().all(|k| *k == delete_pods), "{forbidden:?}");
    // The refusal is a problem the daemon reports (healing runs beside the work queue and adds
    // it to the namespace's problems after the reconcile reported).
    let address = running.address.expect("listener");
    eventually_async(WAIT, "HealForbidden in the problems gauge", async || {
        let (_, text) = http_get(address, "/metrics").await;
        metric(&text, "pullsecretd_problems{reason=\"HealForbidden\"}").unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(
        fx.server
            .get("", "pods", "web", &name_of(&stuck))
            .is_some_and(|p| p["metadata"]["uid"] == stuck["metadata"]["uid"])
    );

    // With the component, the next look replaces the pod.
    crate::support::seed::rbac_objects(&fx.server, heal_restart_rbac());
    let healed = one_pod(
        &fx,
        "web",
        "web-",
        "the web pod replaced and running",
        is_running,
    )
    .await;
    assert_ne!(name_of(&healed), name_of(&stuck));
    running.stop();
}

/// Namespaces healing while a pending-pod list is in flight share the next list, made across
/// the cluster: every stuck pod is still found (and told), with fewer lists than namespaces.
/// Pod lists are made slow (kube-sim's `slow` fault), so healing namespaces overlap for sure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_healing_together_share_pending_pod_lists() {
    const NAMESPACES: usize = 12;
    let fx = cluster_with_kubelet().await;
    let registry = registry_with_images(fx.dir.path(), &[(USER, PASSWORD)]);
    let bao = OpenBao::start().await;
    put_credential(&bao, "registries/reg", USER, PASSWORD).await;
    let image = format!("{}/{REPO}:v1", registry.host);
    let names: Vec<String> = (0..NAMESPACES).map(|n| format!("heal-{n}")).collect();
    for ns in &names {
        fx.namespace(ns, json!({"team": "heal"}));
        create_deployment(&fx, ns, "web", &image);
    }
    let mut stuck = Vec::new();
    for ns in &names {
        stuck.push(one_pod(&fx, ns, "web-", "a stuck pod", in_back_off).await);
    }
    fx.server.set_faults(|f| {
        f.slow
            .push(("list".into(), "pods".into(), Duration::from_millis(300)));
    });

    let path = write_reg_config(
        &fx,
        &bao,
        &registry.host,
        "pullSecrets:\n\
             \x20 - name: reg-pull\n    registries: [reg]\n    projects: { selector: team=heal }\n",
    );
    let running = start_daemon(&fx, &path).await;
    eventually(WAIT, "every stuck pod told", || {
        names.iter().zip(&stuck).all(|(ns, pod)| {
            pullsecretd_events(&fx, ns, &name_of(pod))
                .iter()
                .any(|(reason, _)| reason == "MissingPullSecret")
        })
    })
    .await;
    let counts = fx.server.counts();
    let across = counts.count_in("list", "pods", "");
    let lists = counts.count("list", "pods");
    running.stop();
    assert!(
        across >= 1,
        "one list served several namespaces: {counts:?}"
    );
    assert!(
        lists < NAMESPACES as u64,
        "{lists} pod lists for {NAMESPACES} namespaces"
    );
    for (ns, pod) in names.iter().zip(&stuck) {
        let told = pullsecretd_events(&fx, ns, &name_of(pod));
        assert!(
            told.iter()
                .all(|(reason, message)| reason == "MissingPullSecret"
                    && message.contains("reg-pull")),
            "{ns}: {told:?}"
        );
    }
}

/// Pending-pod rounds are spaced (`cluster/pod_lists.rs`): namespaces that ask within the
/// spacing after a round share the next one, though none of them came while a list was in
/// flight. At 200 QPS the spacing is 500 ms; five namespaces asking 40 ms apart after a first
/// one (its list takes a few milliseconds) share one list across the cluster, and each is
/// given exactly its own namespace's pods. Without the spacing each lists on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pod_rounds_are_spaced_and_shared() {
    use pullsecretd::cluster::Throttle;
    use pullsecretd::cluster::pod_lists::{self, PendingPods};

    let fx = Fixture::start(Options::default()).await;
    let names: Vec<String> = (0..6).map(|n| format!("space-{n}")).collect();
    for ns in &names {
        fx.namespace(ns, json!({}));
        create_bare_pod(&fx, ns, &format!("pod-{ns}"), "127.0.0.1:1/none:v1");
    }
    let throttle = Arc::new(Throttle::new(nz(200), nz(200), 0));
    assert_eq!(
        pod_lists::round_spacing(&throttle),
        Duration::from_millis(500)
    );
    let pending = Arc::new(PendingPods::cluster_wide());
    let first = pending
        .pending_in(&fx.client, &throttle, &names[0])
        .await
        .expect("first list");
    assert_eq!(first.len(), 1);
    let before = fx.server.counts().count("list", "pods");

    let mut asking = tokio::task::JoinSet::new();
    for ns in names.iter().skip(1) {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (client, throttle, pending, ns) = (
            fx.client.clone(),
            Arc::clone(&throttle),
            Arc::clone(&pending),
            ns.clone(),
        );
        asking.spawn(async move {
            let pods = pending.pending_in(&client, &throttle, &ns).await;
            (ns, pods)
        });
    }
    while let Some(answered) = asking.join_next().await {
        let (ns, pods) = answered.expect("caller finished");
        let pods = pods.expect("pods listed");
        let own: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(own, [format!("pod-{ns}")], "{ns}");
    }
    let counts = fx.server.counts();
    assert_eq!(
        counts.count("list", "pods") - before,
        1,
        "five namespaces, one list: {counts:#?}"
    );
    assert_eq!(counts.count_in("list", "pods", ""), 1, "{counts:#?}");
}

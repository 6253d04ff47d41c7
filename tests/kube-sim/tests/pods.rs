//! The pod path against real parts: kube-sim with its kubelet, the real `kubectl`, a real
//! Debian `docker-registry` (htpasswd or token auth, pushed to with `skopeo`) and the
//! repository's registry token server. Each test starts its own HTTPS kube-sim (kubectl sends
//! bearer tokens only over TLS) and registry on loopback ports; ~/.kube is never touched.
//! Missing programs fail the tests (never skip). Waits have a 30 s deadline and assert on
//! states and events, never on how long anything took.

#![allow(clippy::unwrap_used)]

#[path = "support/registry.rs"]
mod registry;

use pullsecretd_testkit::token_server;

use kube_sim::{Handle, KubeletOptions, Options, PullAttempt, Server};
use registry::{Registry, TokenAuth};
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pull";
const REPO: &str = "team/app";

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

struct Cluster {
    handle: Handle,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        Self::with(Options::default().kubelet(fast_kubelet()))
    }

    fn with(opts: Options) -> Self {
        let handle = Server::start_in_thread(opts.tls()).expect("server starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        handle.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        Self {
            handle,
            dir,
            kubeconfig,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("kubectl must be installed and on PATH")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write manifest");
        p.to_string_lossy().into_owned()
    }

    fn apply(&self, name: &str, yaml: &str) {
        let f = self.file(name, yaml);
        self.ok(&["apply", "-f", &f]);
    }

    /// `kubectl create secret docker-registry` for `server`.
    fn pull_secret(&self, name: &str, server: &str, user: &str, password: &str) {
        self.ok(&[
            "create",
            "secret",
            "docker-registry",
            name,
            &format!("--docker-server={server}"),
            &format!("--docker-username={user}"),
            &format!("--docker-password={password}"),
        ]);
    }

    /// The documented way to link: a strategic patch of the account's `imagePullSecrets`.
    fn link(&self, account: &str, secret: &str) {
        let patch = json!({"imagePullSecrets": [{"name": secret}]}).to_string();
        self.ok(&["patch", "serviceaccount", account, "-p", &patch]);
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.handle.get("", "pods", ns, name)
    }

    fn pods(&self, ns: &str) -> Vec<Value> {
        self.handle.list("", "pods", Some(ns))
    }

    /// Events about an object, oldest first (event names end in the creation time in hex).
    fn events(&self, ns: &str, name: &str) -> Vec<Value> {
        let mut evs: Vec<Value> = self
            .handle
            .list("", "events", Some(ns))
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == name)
            .collect();
        evs.sort_by_key(|e| e["metadata"]["name"].as_str().unwrap_or("").to_string());
        evs
    }

    fn attempts(&self, pod: &str) -> Vec<PullAttempt> {
        self.handle
            .pull_attempts()
            .into_iter()
            .filter(|a| a.pod == pod)
            .collect()
    }
}

/// Polls `f` until it returns Some, for at most 30 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn waiting_reason(pod: &Value) -> String {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn is_running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["containerStatuses"][0]["state"]["running"].is_object()
}

fn is_failing_to_pull(pod: &Value) -> bool {
    matches!(
        waiting_reason(pod).as_str(),
        "ErrImagePull" | "ImagePullBackOff"
    )
}

fn pod_yaml(name: &str, image: &str, policy: &str, secrets: &[&str]) -> String {
    let ips: Vec<Value> = secrets.iter().map(|s| json!({"name": s})).collect();
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": policy}]}});
    if !ips.is_empty() {
        pod["spec"]["imagePullSecrets"] = json!(ips);
    }
    pod.to_string()
}

fn registry_with_image() -> Registry {
    let reg = Registry::start(&[(USER, PASSWORD)]);
    reg.push(USER, PASSWORD, REPO, "v1");
    reg
}

/// (type, reason, message) of each event, in order of first occurrence.
fn notes(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("type"), s("reason"), s("message"))
        })
        .collect()
}

#[test]
fn a_pod_whose_account_links_a_good_secret_runs_and_the_registry_serves_an_authorized_pull() {
    let reg = registry_with_image();
    let c = Cluster::start();
    let image = format!("{}/{REPO}:v1", reg.host);
    c.pull_secret("reg", &reg.host, USER, PASSWORD);
    c.link("default", "reg");
    c.ok(&[
        "run",
        "app",
        &format!("--image={image}"),
        "--image-pull-policy=Always",
    ]);

    let pod = eventually("app running", || c.pod("default", "app").filter(is_running));
    // ServiceAccount admission: the default account and a copy of its pull secrets.
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["ready"], true);
    assert_eq!(status["image"], image);
    assert!(
        status["imageID"]
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("{}/{REPO}@sha256:", reg.host))),
        "{status}"
    );
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned();
    assert_eq!(ready.map(|r| r["status"].clone()), Some(json!("True")));

    let attempts = c.attempts("app");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].username.as_deref(), Some(USER));
    assert_eq!(attempts[0].secret.as_deref(), Some("reg"));
    assert!(attempts[0].result.is_ok(), "{attempts:?}");
    // The registry (whose only account is alice) served the manifest to an authorized request.
    let pulls = reg.manifest_pulls(REPO);
    assert!(pulls.iter().any(|p| p.authorized), "{:?}", reg.served());

    let reasons: Vec<String> = notes(&c.events("default", "app"))
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    assert_eq!(
        reasons,
        ["Scheduled", "Pulling", "Pulled", "Created", "Started"]
    );
    let table = c.ok(&["get", "pod", "app"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["app", "1/1", "Running", "0"], "{table}");
    let described = c.ok(&["describe", "pod", "app"]);
    assert!(
        described.contains(&format!("Successfully pulled image \"{image}\"")),
        "{described}"
    );
}

#[test]
fn without_the_link_a_pod_goes_err_image_pull_then_image_pull_back_off() {
    let reg = registry_with_image();
    let c = Cluster::start();
    let image = format!("{}/{REPO}:v1", reg.host);
    // Watch the pod's waiting reason with kubectl from before it exists.
    let mut watch = c
        .command(&[
            "get",
            "pods",
            "--field-selector=metadata.name=stuck",
            "-w",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    c.apply("stuck.json", &pod_yaml("stuck", &image, "Always", &[]));

    // The reasons as kubectl saw them change: a failure, the backoff, the retry, the backoff.
    let wanted = [
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
    ];
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_subsequence(&wanted, &seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "kubectl -w showed only {seen:?}");
        if let Ok(line) = rx.recv_timeout(left)
            && !line.is_empty()
            && seen.last() != Some(&line)
        {
            seen.push(line);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();

    let pull_error = format!(
        "rpc error: code = Unknown desc = initializing source docker://{image}: reading manifest v1 in {}/{REPO}: authentication required",
        reg.host
    );
    let evs = notes(&c.events("default", "stuck"));
    let firsts: Vec<(&str, &str, &str)> = evs
        .iter()
        .map(|(t, r, m)| (t.as_str(), r.as_str(), m.as_str()))
        .collect();
    let failed = format!("Failed to pull image \"{image}\": {pull_error}");
    let pulling = format!("Pulling image \"{image}\"");
    let backoff = format!("Back-off pulling image \"{image}\"");
    assert_eq!(
        firsts[1..],
        [
            ("Normal", "Pulling", pulling.as_str()),
            ("Warning", "Failed", failed.as_str()),
            ("Warning", "Failed", "Error: ErrImagePull"),
            ("Normal", "BackOff", backoff.as_str()),
            ("Warning", "Failed", "Error: ImagePullBackOff"),
        ]
    );
    // Repeated events are counted, not repeated.
    let pulls = c.events("default", "stuck");
    let pulling_count = pulls
        .iter()
        .find(|e| e["reason"] == "Pulling")
        .map(|e| e["count"].clone());
    assert!(
        pulling_count
            .and_then(|n| n.as_i64())
            .is_some_and(|n| n >= 2)
    );

    let pod = eventually("back-off state", || {
        c.pod("default", "stuck")
            .filter(|p| waiting_reason(p) == "ImagePullBackOff")
    });
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        format!("{backoff}: ErrImagePull: {pull_error}")
    );
    assert_eq!(pod["status"]["phase"], "Pending");
    let attempts = c.attempts("stuck");
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert!(
        attempts
            .iter()
            .all(|a| a.username.is_none() && a.result.is_err())
    );
    assert!(reg.manifest_pulls(REPO).is_empty(), "{:?}", reg.served());
}

fn is_subsequence(wanted: &[&str], seen: &[String]) -> bool {
    let mut it = seen.iter();
    wanted.iter().all(|w| it.any(|s| s == w))
}

#[test]
fn a_pod_created_before_the_link_stays_stuck_and_its_replacement_runs() {
    let reg = registry_with_image();
    let c = Cluster::start();
    let image = format!("{}/{REPO}:v1", reg.host);
    c.apply(
        "web.json",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}]}}}})
        .to_string(),
    );
    let first = eventually("a failing web pod", || {
        c.pods("default").into_iter().find(is_failing_to_pull)
    });
    let first_name = first["metadata"]["name"].as_str().unwrap_or("").to_string();
    assert!(first_name.starts_with("web-"), "{first_name}");
    let owner = &first["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ReplicaSet");
    assert_eq!(
        (
            owner["controller"].clone(),
            owner["blockOwnerDeletion"].clone()
        ),
        (json!(true), json!(true))
    );

    // Link now: the running pod's spec is fixed, so its retries stay anonymous and fail.
    c.pull_secret("reg", &reg.host, USER, PASSWORD);
    c.link("default", "reg");
    let before = c.attempts(&first_name).len();
    eventually("two more attempts after the link", || {
        (c.attempts(&first_name).len() >= before + 2).then_some(())
    });
    let pod = c.pod("default", &first_name).expect("still there");
    assert!(
        pod["spec"].get("imagePullSecrets").is_none(),
        "{}",
        pod["spec"]
    );
    assert!(is_failing_to_pull(&pod), "{}", pod["status"]);
    assert!(
        c.attempts(&first_name)
            .iter()
            .all(|a| a.username.is_none() && a.result.is_err())
    );
    assert_eq!(c.handle.count_objects("", "pods"), 1);

    // Deleting it: the ReplicaSet creates a pod that admission gives the current secrets.
    c.ok(&["delete", "pod", &first_name]);
    let second = eventually("a running replacement", || {
        c.pods("default").into_iter().find(is_running)
    });
    assert_ne!(second["metadata"]["name"], first_name);
    assert_eq!(second["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
    assert!(c.pod("default", &first_name).is_none());
    let second_name = second["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(c.attempts(&second_name)[0].username.as_deref(), Some(USER));
    assert!(reg.manifest_pulls(REPO).iter().any(|p| p.authorized));

    let killing = notes(&c.events("default", &first_name));
    assert!(
        killing.iter().all(|(_, r, _)| r != "Started"),
        "{killing:?}"
    );
    let rs = c.handle.list("apps", "replicasets", Some("default"));
    let rs_name = rs[0]["metadata"]["name"].as_str().unwrap_or("").to_string();
    let created: Vec<String> = notes(&c.events("default", &rs_name))
        .into_iter()
        .filter(|(_, r, _)| r == "SuccessfulCreate")
        .map(|(_, _, m)| m)
        .collect();
    assert_eq!(
        created,
        [
            format!("Created pod: {first_name}"),
            format!("Created pod: {second_name}")
        ]
    );
    eventually("deployment ready", || {
        let out = c.ok(&["get", "deployment", "web"]);
        let row: Vec<String> = out
            .lines()
            .nth(1)?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        (row[..4] == ["web", "1/1", "1", "1"]).then_some(())
    });
}

#[test]
fn a_missing_secret_is_skipped_with_a_warning_and_read_again_at_each_attempt() {
    let reg = registry_with_image();
    let c = Cluster::start();
    let image = format!("{}/{REPO}:v1", reg.host);
    c.pull_secret("reg", &reg.host, USER, PASSWORD);

    // The missing one is skipped; the next one is used.
    c.apply(
        "skips.json",
        &pod_yaml("skips", &image, "Always", &["missing", "reg"]),
    );
    eventually("skips running", || {
        c.pod("default", "skips").filter(is_running)
    });
    let warning = notes(&c.events("default", "skips"))
        .into_iter()
        .find(|(_, r, _)| r == "FailedToRetrieveImagePullSecret");
    assert_eq!(
        warning,
        Some((
            "Warning".to_string(),
            "FailedToRetrieveImagePullSecret".to_string(),
            "Unable to retrieve some image pull secrets (missing); attempting to pull the image may not succeed."
                .to_string()
        ))
    );
    assert_eq!(c.attempts("skips")[0].secret.as_deref(), Some("reg"));

    // A pod naming only a Secret that appears later recovers at its next attempt.
    c.apply(
        "waits.json",
        &pod_yaml("waits", &image, "Always", &["later"]),
    );
    let stuck = eventually("waits failing", || {
        c.pod("default", "waits").filter(is_failing_to_pull)
    });
    c.pull_secret("later", &reg.host, USER, PASSWORD);
    let pod = eventually("waits running", || {
        c.pod("default", "waits").filter(is_running)
    });
    assert_eq!(pod["metadata"]["uid"], stuck["metadata"]["uid"]);
    let attempts = c.attempts("waits");
    assert!(
        attempts
            .first()
            .is_some_and(|a| a.username.is_none() && a.result.is_err())
    );
    let last = attempts.last().expect("attempts");
    assert_eq!(
        (last.username.as_deref(), last.secret.as_deref()),
        (Some(USER), Some("later"))
    );
    assert!(last.result.is_ok());
}

#[test]
fn a_bad_payload_in_any_named_secret_fails_the_pull_before_any_request() {
    let reg = registry_with_image();
    let c = Cluster::start();
    let image = format!("{}/{REPO}:v1", reg.host);
    c.pull_secret("good", &reg.host, USER, PASSWORD);
    // A JSON object, so the apiserver accepts it; its `auth` is not base64.
    c.apply(
        "bad.json",
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": format!("{{\"auths\":{{\"{}\":{{\"auth\":\"!!\"}}}}}}", reg.host)}})
        .to_string(),
    );
    c.apply(
        "pod.json",
        &pod_yaml("broken", &image, "Always", &["good", "bad"]),
    );
    let pod = eventually("the keyring error", || {
        c.pod("default", "broken")
            .filter(|p| waiting_reason(p) == "illegal base64 data at input byte 0")
    });
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "illegal base64 data at input byte 0"
    );
    let reasons = notes(&c.events("default", "broken"));
    assert!(reasons.contains(&(
        "Warning".into(),
        "Failed".into(),
        "Error: illegal base64 data at input byte 0".into()
    )));
    assert!(
        reasons.iter().all(|(_, r, _)| r != "Pulling"),
        "{reasons:?}"
    );
    assert!(c.attempts("broken").is_empty());
    // The kubelet reads the named Secrets at each attempt: fixing the payload is enough.
    c.apply(
        "bad.json",
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": "{\"auths\":{}}"}})
        .to_string(),
    );
    let running = eventually("broken running", || {
        c.pod("default", "broken").filter(is_running)
    });
    assert_eq!(running["metadata"]["uid"], pod["metadata"]["uid"]);
    assert_eq!(c.attempts("broken")[0].secret.as_deref(), Some("good"));
}

#[test]
fn images_off_loopback_fail_as_unreachable() {
    let c = Cluster::start();
    for (name, image, host) in [
        ("hub", "busybox", "registry-1.docker.io"),
        ("library", "library/pullsecretd:1", "registry-1.docker.io"),
        ("quay", "quay.io/team/app:1", "quay.io"),
    ] {
        c.apply(
            &format!("{name}.json"),
            &pod_yaml(name, image, "IfNotPresent", &[]),
        );
        let pod = eventually(name, || c.pod("default", name).filter(is_failing_to_pull));
        let full = if host == "quay.io" {
            image.to_string()
        } else {
            let r = image
                .split_once(':')
                .map_or((image, "latest"), |(n, t)| (n, t));
            let path = if r.0.contains('/') {
                r.0.to_string()
            } else {
                format!("library/{}", r.0)
            };
            format!("docker.io/{path}:{}", r.1)
        };
        let message = c.attempts(name)[0].result.clone().err().unwrap_or_default();
        assert_eq!(
            message,
            format!(
                "rpc error: code = Unknown desc = initializing source docker://{full}: pinging container registry {host}: Get \"https://{host}/v2/\": dial tcp: lookup {host}: no such host"
            )
        );
        assert!(is_failing_to_pull(&pod));
    }
    // A loopback registry named `localhost` is reached (the resolver maps only that name).
    let reg = registry_with_image();
    let port = reg
        .host
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    let local = format!("localhost:{port}");
    c.pull_secret("local", &local, USER, PASSWORD);
    c.apply(
        "local.json",
        &pod_yaml("local", &format!("{local}/{REPO}:v1"), "Always", &["local"]),
    );
    eventually("local running", || {
        c.pod("default", "local").filter(is_running)
    });
}

#[test]
fn admission_rejects_pods_of_missing_accounts_with_the_real_message() {
    let c = Cluster::start();
    let f = c.file(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  serviceAccountName: nosuch\n  containers: [{name: app, image: busybox}]\n",
    );
    let stderr = c.fails(&["create", "-f", &f]);
    assert_eq!(
        stderr.trim(),
        format!(
            "Error from server (Forbidden): error when creating \"{f}\": pods \"p\" is forbidden: error looking up service account default/nosuch: serviceaccount \"nosuch\" not found"
        )
    );
    // A ReplicaSet's creates are refused too, and retried until the account exists.
    c.apply(
        "w.json",
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "w"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "w"}},
                "template": {"metadata": {"labels": {"app": "w"}},
                    "spec": {"serviceAccountName": "later", "containers": [{"name": "app", "image": "busybox"}]}}}})
        .to_string(),
    );
    let failed = eventually("FailedCreate", || {
        notes(&c.events("default", "w"))
            .into_iter()
            .find(|(_, r, _)| r == "FailedCreate")
    });
    assert_eq!(
        failed,
        (
            "Warning".to_string(),
            "FailedCreate".to_string(),
            "Error creating: pods \"w-\" is forbidden: error looking up service account default/later: serviceaccount \"later\" not found".to_string()
        )
    );
    let rs = c
        .handle
        .get("apps", "replicasets", "default", "w")
        .expect("rs");
    assert_eq!(rs["status"]["conditions"][0]["type"], "ReplicaFailure");
    assert!(c.pods("default").is_empty());
    c.ok(&["create", "serviceaccount", "later"]);
    let pod = eventually("the pod, once the account exists", || {
        c.pods("default").into_iter().next()
    });
    assert_eq!(pod["spec"]["serviceAccountName"], "later");
    // Admission runs at create only: the pod outlives its account and can still be updated.
    c.ok(&["delete", "serviceaccount", "later"]);
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    c.ok(&["label", "pod", &name, "checked=yes"]);
    // A pod that names no account runs as `default`.
    c.ok(&["run", "d", "--image=busybox"]);
    assert_eq!(
        c.pod("default", "d").expect("d")["spec"]["serviceAccountName"],
        "default"
    );
}

#[test]
fn the_kustomize_base_applies_and_kubectl_shows_its_pods_failing_to_pull() {
    let c = Cluster::start();
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base");
    let out = c.ok(&["apply", "-k", base.to_str().expect("UTF-8 path")]);
    assert!(out.contains("deployment.apps/pullsecretd created"), "{out}");
    let pods = eventually("two pods failing to pull", || {
        let pods = c.pods("pullsecretd");
        (pods.len() == 2 && pods.iter().all(is_failing_to_pull)).then_some(pods)
    });
    for p in &pods {
        assert_eq!(p["spec"]["serviceAccountName"], "pullsecretd");
        assert!(p["spec"].get("imagePullSecrets").is_none());
    }
    let table = c.ok(&["get", "pods", "-n", "pullsecretd"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    for row in &rows {
        assert!(row[0].starts_with("pullsecretd-"), "{table}");
        assert_eq!(row[1], "0/1", "{table}");
        assert!(
            matches!(row[2], "ErrImagePull" | "ImagePullBackOff"),
            "{table}"
        );
    }
    let deploy = c.ok(&["get", "deployment", "-n", "pullsecretd"]);
    let row: Vec<&str> = deploy
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["pullsecretd", "0/2", "2", "0"], "{deploy}");

    let name = rows[0][0];
    let described = eventually("describe shows the back-off", || {
        let d = c.ok(&["describe", "pod", "-n", "pullsecretd", name]);
        d.contains("Back-off pulling image \"registry.example.com/pullsecretd/pullsecretd:0.1.0\"")
            .then_some(d)
    });
    let fields = |name: &str| {
        described
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        fields("Service Account:").as_deref(),
        Some("Service Account: pullsecretd")
    );
    assert_eq!(
        fields("Image:").as_deref(),
        Some("Image: registry.example.com/pullsecretd/pullsecretd:0.1.0")
    );
    assert_eq!(
        fields("Reason:")
            .as_deref()
            .map(|r| r.replace("ErrImagePull", "ImagePullBackOff"))
            .as_deref(),
        Some("Reason: ImagePullBackOff")
    );
    for wanted in [
        "Failed to pull image \"registry.example.com/pullsecretd/pullsecretd:0.1.0\": rpc error: code = Unknown desc = initializing source docker://registry.example.com/pullsecretd/pullsecretd:0.1.0: pinging container registry registry.example.com: Get \"https://registry.example.com/v2/\": dial tcp: lookup registry.example.com: no such host",
        "Error: ErrImagePull",
        "Successfully assigned pullsecretd/",
    ] {
        assert!(
            described.contains(wanted),
            "{wanted:?} not in:\n{described}"
        );
    }
}

#[test]
fn a_token_registry_gets_the_image_hosts_credential_at_its_realm() {
    let ts = token_server::TokenServer::start(&[(USER, PASSWORD)]);
    let reg = Registry::start_token(&TokenAuth {
        realm: &ts.realm,
        service: &ts.service,
        issuer: &ts.issuer,
        rootcertbundle: ts.root_cert_path(),
    });
    reg.push(USER, PASSWORD, REPO, "v1");
    let c = Cluster::start();
    let image = format!("{}/{REPO}:v1", reg.host);
    // The credential is keyed by the image host, not the realm's.
    c.pull_secret("reg", &reg.host, USER, PASSWORD);
    c.pull_secret("wrong", &reg.host, USER, "not-the-password");
    c.apply("ok.json", &pod_yaml("ok", &image, "Always", &["reg"]));
    c.apply("anon.json", &pod_yaml("anon", &image, "Always", &[]));
    c.apply(
        "wrong.json",
        &pod_yaml("wrong", &image, "Always", &["wrong"]),
    );
    eventually("ok running", || c.pod("default", "ok").filter(is_running));
    let at_realm = ts.requests();
    assert!(
        at_realm.iter().any(|r| r.username.as_deref() == Some(USER)
            && r.granted
            && r.scopes == [format!("repository:{REPO}:pull")]),
        "{at_realm:?}"
    );
    assert!(reg.manifest_pulls(REPO).iter().any(|p| p.authorized));

    let first_error = |pod: &str| {
        eventually(pod, || c.attempts(pod).first().cloned())
            .result
            .err()
            .unwrap_or_default()
    };
    assert!(
        first_error("anon").ends_with(&format!(
            "reading manifest v1 in {}/{REPO}: requested access to the resource is denied",
            reg.host
        )),
        "{}",
        first_error("anon")
    );
    assert_eq!(
        first_error("wrong"),
        format!(
            "rpc error: code = Unknown desc = initializing source docker://{image}: unable to retrieve auth token: invalid username/password: unauthorized: incorrect username or password"
        )
    );
}

#[test]
fn pull_policies_use_the_nodes_image_cache() {
    let reg = registry_with_image();
    let c = Cluster::start();
    let image = format!("{}/{REPO}:v1", reg.host);
    c.pull_secret("reg", &reg.host, USER, PASSWORD);
    c.apply(
        "first.json",
        &pod_yaml("first", &image, "IfNotPresent", &["reg"]),
    );
    eventually("first running", || {
        c.pod("default", "first").filter(is_running)
    });
    assert_eq!(c.handle.node_images(), std::slice::from_ref(&image));

    // IfNotPresent: the cached image starts without credentials and without a pull (1.33's
    // kubelet does not re-check credentials; KubeletEnsureSecretPulledImages is alpha, off).
    c.apply(
        "second.json",
        &pod_yaml("second", &image, "IfNotPresent", &[]),
    );
    eventually("second running", || {
        c.pod("default", "second").filter(is_running)
    });
    assert!(c.attempts("second").is_empty());
    let present = format!("Container image \"{image}\" already present on machine");
    assert!(
        notes(&c.events("default", "second"))
            .iter()
            .any(|(_, r, m)| r == "Pulled" && *m == present)
    );

    // Always: pulls, anonymously, and fails.
    c.apply("third.json", &pod_yaml("third", &image, "Always", &[]));
    eventually("third failing", || {
        c.pod("default", "third").filter(is_failing_to_pull)
    });

    // Never: an absent image is not pulled.
    let absent = format!("{}/{REPO}:absent", reg.host);
    c.apply("never.json", &pod_yaml("never", &absent, "Never", &[]));
    let pod = eventually("never refused", || {
        c.pod("default", "never")
            .filter(|p| waiting_reason(p) == "ErrImageNeverPull")
    });
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        format!("Container image \"{absent}\" is not present with pull policy of Never")
    );
    assert!(c.attempts("never").is_empty());
}

#[test]
fn without_a_kubelet_pods_stay_pending_and_unscheduled_ones_delete_at_once() {
    let c = Cluster::with(Options::default());
    c.ok(&["run", "idle", "--image=busybox"]);
    let table = c.ok(&["get", "pods"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["idle", "0/1", "Pending", "0"], "{table}");
    let pod = c.pod("default", "idle").expect("pod");
    assert_eq!(
        pod["status"],
        json!({"phase": "Pending", "qosClass": "BestEffort"})
    );
    assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    // No node: deletion is immediate, as for any unscheduled pod.
    c.ok(&["delete", "pod", "idle", "--wait=false"]);
    assert!(c.pod("default", "idle").is_none());
}

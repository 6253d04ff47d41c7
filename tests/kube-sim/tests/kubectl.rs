//! Conformance of kube-sim against the real `kubectl` (must be on PATH: these tests fail, never
//! skip, without it). Each test starts its own HTTPS server (kubectl sends bearer tokens only
//! over TLS) and uses its own kubeconfig and cache directory; ~/.kube is never touched.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use kube_sim::{Handle, Options, Server, UserInfo};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    handle: Handle,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start(opts: Options) -> Self {
        let handle = Server::start_in_thread(opts.tls()).expect("server starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        handle
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
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

    /// Runs kubectl and returns stdout; panics with stderr if it failed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl printed JSON")
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write manifest");
        p.to_string_lossy().into_owned()
    }
}

fn b64d(s: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64"),
    )
    .expect("utf8")
}

#[test]
fn create_secret_docker_registry_and_get_json() {
    let c = Cluster::start(Options::default());
    let out = c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "reg",
        "--docker-server=quay.io",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    assert_eq!(out.trim(), "secret/reg created");
    let s = c.json(&["get", "secret", "reg"]);
    assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(s["metadata"]["namespace"], "default");
    assert!(s["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(
        s["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| rv.parse::<u64>().is_ok())
    );
    // Exact bytes kubectl produced (docs/pull-secrets.md): field order, no email, padded auth.
    assert_eq!(
        b64d(s["data"][".dockerconfigjson"].as_str().unwrap_or("")),
        r#"{"auths":{"quay.io":{"username":"u","password":"p","auth":"dTpw"}}}"#
    );
    let stored = c
        .handle
        .get("", "secrets", "default", "reg")
        .expect("stored");
    assert_eq!(
        stored["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    let err = c.fails(&[
        "create",
        "secret",
        "docker-registry",
        "reg",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    assert!(err.contains(r#"secrets "reg" already exists"#), "{err}");
    let err = c.fails(&["get", "secret", "nope"]);
    assert!(
        err.contains(r#"Error from server (NotFound): secrets "nope" not found"#),
        "{err}"
    );
    let err = c.fails(&[
        "create",
        "secret",
        "generic",
        "x",
        "--from-literal=a=b",
        "-n",
        "missing",
    ]);
    assert!(err.contains(r#"namespaces "missing" not found"#), "{err}");
}

#[test]
fn invalid_pull_secret_is_rejected_with_422() {
    let c = Cluster::start(Options::default());
    let bad = c.file(
        "bad.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: bad}\ntype: kubernetes.io/dockercfg\ndata: {other: e30=}\n",
    );
    let err = c.fails(&["create", "-f", &bad]);
    assert!(
        err.contains(r#"The Secret "bad" is invalid: data[.dockercfg]: Required value"#),
        "{err}"
    );
    let arr = c.file(
        "arr.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: arr}\ntype: kubernetes.io/dockerconfigjson\nstringData: {.dockerconfigjson: '[1]'}\n",
    );
    let err = c.fails(&["apply", "-f", &arr]);
    assert!(
        err.contains(r#"data[.dockerconfigjson]: Invalid value: "<secret contents redacted>": json: cannot unmarshal array into Go value of type map[string]interface {}"#),
        "{err}"
    );
    // kubectl asks for strict field validation; the server refuses unknown fields.
    let typo = c.file(
        "typo.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: t, labelz: {}}\nspec: {}\n",
    );
    let err = c.fails(&["create", "-f", &typo]);
    assert!(
        err.contains(r#"Secret in version "v1" cannot be handled as a Secret: strict decoding error: unknown field "spec", unknown field "metadata.labelz""#),
        "{err}"
    );
    // Client-side apply and create -f work without --validate=false.
    let good = c.file(
        "good.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: good}\ndata: {k: dg==}\n",
    );
    assert_eq!(c.ok(&["apply", "-f", &good]).trim(), "secret/good created");
    assert_eq!(
        c.ok(&["apply", "-f", &good]).trim(),
        "secret/good unchanged"
    );
}

fn seed_sa(c: &Cluster) {
    c.ok(&["create", "sa", "bot"]);
    let rv_before = c.json(&["get", "sa", "bot"])["metadata"]["resourceVersion"].clone();
    c.ok(&[
        "patch", "sa", "bot", "--type=merge", "-p",
        r#"{"imagePullSecrets":[{"name":"bot-dockercfg-abcde"},{"name":"theirs"}],"secrets":[{"name":"bot-dockercfg-abcde","namespace":"x","uid":"u"}]}"#,
    ]);
    let sa = c.json(&["get", "sa", "bot"]);
    assert_ne!(sa["metadata"]["resourceVersion"], rv_before);
    // The ServiceAccount strategy trims .secrets[] refs to {name}.
    assert_eq!(sa["secrets"], json!([{"name": "bot-dockercfg-abcde"}]));
}

#[test]
fn strategic_patch_replaces_image_pull_secrets_and_merges_secrets() {
    let c = Cluster::start(Options::default());
    seed_sa(&c);
    // `--type` defaults to strategic: imagePullSecrets has no patchStrategy, so it is REPLACED.
    c.ok(&[
        "patch",
        "sa",
        "bot",
        "-p",
        r#"{"imagePullSecrets":[{"name":"mine"}]}"#,
    ]);
    let sa = c.json(&["get", "sa", "bot"]);
    assert_eq!(sa["imagePullSecrets"], json!([{"name": "mine"}]));
    // secrets is patchStrategy=merge, patchMergeKey=name: merged, and $patch: delete removes one.
    c.ok(&[
        "patch",
        "sa",
        "bot",
        "--type=strategic",
        "-p",
        r#"{"secrets":[{"name":"mine"}]}"#,
    ]);
    // Merged, not replaced; as mergeSlice orders it, the patch's new item comes first.
    assert_eq!(
        c.json(&["get", "sa", "bot"])["secrets"],
        json!([{"name": "mine"}, {"name": "bot-dockercfg-abcde"}])
    );
    c.ok(&[
        "patch",
        "sa",
        "bot",
        "-p",
        r#"{"secrets":[{"name":"bot-dockercfg-abcde","$patch":"delete"}]}"#,
    ]);
    assert_eq!(
        c.json(&["get", "sa", "bot"])["secrets"],
        json!([{"name": "mine"}])
    );
}

#[test]
fn merge_and_json_patches_follow_their_rfcs() {
    let c = Cluster::start(Options::default());
    seed_sa(&c);
    // RFC 7386 replaces every list.
    c.ok(&[
        "patch",
        "sa",
        "bot",
        "--type=merge",
        "-p",
        r#"{"secrets":[{"name":"only"}]}"#,
    ]);
    assert_eq!(
        c.json(&["get", "sa", "bot"])["secrets"],
        json!([{"name": "only"}])
    );
    // RFC 6902 appends, guarded by test.
    c.ok(&[
        "patch", "sa", "bot", "--type=json", "-p",
        r#"[{"op":"test","path":"/imagePullSecrets/1/name","value":"theirs"},{"op":"add","path":"/imagePullSecrets/-","value":{"name":"mine"}}]"#,
    ]);
    assert_eq!(
        c.json(&["get", "sa", "bot"])["imagePullSecrets"],
        json!([{"name": "bot-dockercfg-abcde"}, {"name": "theirs"}, {"name": "mine"}])
    );
    let err = c.fails(&[
        "patch",
        "sa",
        "bot",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/imagePullSecrets/0/name","value":"nope"}]"#,
    ]);
    assert!(err.contains("The request is invalid"), "{err}");
    // Appending to a missing array is an error (RFC 6902 §4.1).
    c.ok(&["create", "sa", "empty"]);
    let err = c.fails(&[
        "patch",
        "sa",
        "empty",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/imagePullSecrets/-","value":{"name":"x"}}]"#,
    ]);
    assert!(err.contains("The request is invalid"), "{err}");
}

#[test]
fn server_side_apply_and_conflict() {
    let c = Cluster::start(Options::default());
    let m = c.file(
        "sa.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: applied\n  labels: {team: a}\nimagePullSecrets: [{name: one}]\n",
    );
    assert_eq!(
        c.ok(&["apply", "--server-side", "-f", &m]).trim(),
        "serviceaccount/applied serverside-applied"
    );
    // Same values under another manager: shared ownership, no conflict.
    c.ok(&["apply", "--server-side", "--field-manager=other", "-f", &m]);
    let m2 = c.file(
        "sa2.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: applied\nimagePullSecrets: [{name: two}]\n",
    );
    let err = c.fails(&["apply", "--server-side", "--field-manager=other", "-f", &m2]);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .imagePullSecrets"#),
        "{err}"
    );
    c.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &m2,
    ]);
    let sa = c.json(&["get", "sa", "applied", "--show-managed-fields"]);
    assert_eq!(sa["imagePullSecrets"], json!([{"name": "two"}]));
    let managers: Vec<&str> = sa["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert_eq!(managers, ["kubectl", "other"]);
    // "other" stopped applying the label it co-owned with kubectl: kubectl still owns it, so it stays.
    assert_eq!(sa["metadata"]["labels"]["team"], "a");
    assert_eq!(
        sa["metadata"]["managedFields"][1]["fieldsV1"],
        json!({"f:imagePullSecrets": {}})
    );
}

/// Reads a running kubectl's stdout until it contains `marker` (or 15 s pass), then stops it.
fn output_until(mut child: std::process::Child, marker: &str) -> String {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !text.contains(marker) && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn get_watch_sees_added_modified_deleted() {
    let c = Cluster::start(Options::default());
    let child = c
        .command(&[
            "get",
            "secrets",
            "-w",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl must be installed and on PATH");
    // A second watch printed by the server as Tables, as plain `kubectl get -w` asks.
    let table = c
        .command(&["get", "secrets", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl must be installed and on PATH");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.handle.watch_count() < 2 {
        assert!(Instant::now() < deadline, "kubectl never opened a watch");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.ok(&["create", "secret", "generic", "w1", "--from-literal=a=b"]);
    c.ok(&["label", "secret", "w1", "x=y"]);
    c.ok(&["delete", "secret", "w1"]);
    let text = output_until(child, "\"DELETED\"");
    let events: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let w1: Vec<&str> = seen
        .iter()
        .filter(|(_, n)| n == "w1")
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(w1, ["ADDED", "MODIFIED", "DELETED"], "{text}");
    let text = output_until(table, "DELETED ");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.first().map(|r| r[..4].to_vec()),
        Some(vec!["EVENT", "NAME", "TYPE", "DATA"]),
        "{text}"
    );
    let events: Vec<&str> = rows
        .iter()
        .skip(1)
        .filter(|r| r.get(1) == Some(&"w1"))
        .map(|r| r[0])
        .collect();
    assert_eq!(events, ["ADDED", "MODIFIED", "DELETED"], "{text}");
    assert!(
        rows.iter().skip(1).all(|r| r.get(2) == Some(&"Opaque")),
        "{text}"
    );
}

#[test]
fn delete_and_label_selectors() {
    let c = Cluster::start(Options::default());
    for (name, labels) in [
        ("a", "app=web,tier=front"),
        ("b", "app=db,tier=back"),
        ("c", "app=cache"),
        ("d", ""),
    ] {
        c.ok(&["create", "secret", "generic", name, "--from-literal=k=v"]);
        if !labels.is_empty() {
            let mut args = vec!["label", "secret", name];
            args.extend(labels.split(','));
            c.ok(&args);
        }
    }
    let names = |sel: &str| -> Vec<String> {
        c.ok(&["get", "secrets", "-l", sel, "-o", "name"])
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(names("app=web"), ["secret/a"]);
    assert_eq!(names("app in (web,db)"), ["secret/a", "secret/b"]);
    assert_eq!(names("app notin (web),tier"), ["secret/b"]);
    assert_eq!(names("!tier,app"), ["secret/c"]);
    assert_eq!(names("tier!=front"), ["secret/b", "secret/c", "secret/d"]);
    let err = c.fails(&["get", "secrets", "-l", "app in web"]);
    assert!(
        err.contains("BadRequest") || err.contains("unable to parse requirement"),
        "{err}"
    );
    let fs = c.ok(&[
        "get",
        "secrets",
        "--field-selector",
        "metadata.name=c",
        "-o",
        "name",
    ]);
    assert_eq!(fs.trim(), "secret/c");
    assert_eq!(c.ok(&["delete", "secret", "-l", "app"]).lines().count(), 3);
    assert_eq!(c.ok(&["get", "secrets", "-o", "name"]).trim(), "secret/d");
    assert_eq!(
        c.ok(&["delete", "secret", "d"]).trim(),
        r#"secret "d" deleted"#
    );
    let err = c.fails(&["delete", "secret", "d"]);
    assert!(
        err.contains(r#"Error from server (NotFound): secrets "d" not found"#),
        "{err}"
    );
}

#[test]
fn openshift_discovery_and_image_puller() {
    let c = Cluster::start(Options::default().openshift());
    let out = c.ok(&["api-resources"]);
    for group in [
        "project.openshift.io/v1",
        "image.openshift.io/v1",
        "authorization.openshift.io/v1",
    ] {
        assert!(out.contains(group), "{group} missing from:\n{out}");
    }
    let plain = Cluster::start(Options::default());
    assert!(!plain.ok(&["api-resources"]).contains("openshift.io"));
    let role = c.json(&["get", "clusterrole", "system:image-puller"]);
    assert_eq!(
        role["rules"],
        json!([{"verbs": ["get"], "apiGroups": ["image.openshift.io", ""], "resources": ["imagestreams/layers"]}])
    );
    assert_eq!(
        role["metadata"]["annotations"]["openshift.io/description"],
        "Grants the right to pull images from within a project."
    );
    c.ok(&["create", "namespace", "project-a"]);
    assert!(
        c.ok(&["get", "projects", "-o", "name"])
            .lines()
            .any(|l| l == "project.project.openshift.io/project-a")
    );
    // OpenShift's controller linked its managed pull secret to both lists of every new SA.
    let sa = c.json(&["get", "sa", "default", "-n", "project-a"]);
    let managed = sa["metadata"]["annotations"][kube_sim::PULL_SECRET_REF]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(managed.starts_with("default-dockercfg-"), "{sa}");
    assert_eq!(sa["imagePullSecrets"], json!([{"name": managed}]));
    assert_eq!(sa["secrets"], json!([{"name": managed}]));
    assert_eq!(
        c.json(&["get", "secret", &managed, "-n", "project-a"])["type"],
        "kubernetes.io/dockercfg"
    );
}

#[test]
fn rbac_auth_can_i_and_forbidden() {
    let mut opts =
        Options::default().identity("sa-token", UserInfo::service_account("team", "bot"));
    opts.rbac = true;
    let c = Cluster::start(opts);
    c.ok(&["create", "namespace", "team"]);
    c.ok(&[
        "create",
        "role",
        "reader",
        "-n",
        "team",
        "--verb=get,list",
        "--resource=secrets",
    ]);
    c.ok(&[
        "create",
        "rolebinding",
        "bot-reader",
        "-n",
        "team",
        "--role=reader",
        "--serviceaccount=team:bot",
    ]);
    let kc = c.dir.path().join("bot-kubeconfig");
    std::fs::write(&kc, c.handle.kubeconfig_yaml_for("sa-token", "team")).unwrap();
    let bot = |args: &[&str]| {
        let mut cmd = c.command(args);
        cmd.arg("--kubeconfig").arg(&kc);
        cmd.output().expect("kubectl on PATH")
    };
    let yes = bot(&["auth", "can-i", "list", "secrets"]);
    assert_eq!(String::from_utf8_lossy(&yes.stdout).trim(), "yes");
    let no = bot(&["auth", "can-i", "delete", "secrets"]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    let denied = bot(&["delete", "secret", "x"]);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains(r#"Error from server (Forbidden): secrets "x" is forbidden: User "system:serviceaccount:team:bot" cannot delete resource "secrets" in API group "" in the namespace "team""#),
        "{err}"
    );
}

/// Started as the README shows, without `--tls`: kubectl sends its bearer token only over TLS,
/// so the binary serves HTTPS whatever the flags say, and the kubeconfig it writes works.
#[test]
fn the_binary_writes_a_kubeconfig_kubectl_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let ca = dir.path().join("ca.pem");
    let mut server = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--openshift", "--port", "0", "--latency-ms", "1"])
        .arg("--kubeconfig-out")
        .arg(&kc)
        .arg("--ca-out")
        .arg(&ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(kc.exists() && ca.exists()) {
        assert!(
            Instant::now() < deadline,
            "kube-sim never wrote its kubeconfig"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let out = Command::new("kubectl")
        .args(["get", "projects", "-o", "name", "--kubeconfig"])
        .arg(&kc)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env("HOME", dir.path())
        .output()
        .expect("kubectl must be installed and on PATH");
    let _ = server.kill();
    let _ = server.wait();
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        names
            .lines()
            .any(|l| l == "project.project.openshift.io/default"),
        "{names}"
    );
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
}

#[test]
fn workloads_without_a_kubelet_keep_their_replicas() {
    let c = Cluster::start(Options::default());
    let resources = c.ok(&["api-resources"]);
    for wanted in [
        "pods po v1 true Pod",
        "deployments deploy apps/v1 true Deployment",
        "replicasets rs apps/v1 true ReplicaSet",
    ] {
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == wanted),
            "{wanted:?} missing from:\n{resources}"
        );
    }
    // kubectl's typed client sends the Deployment as protobuf.
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
    ]);
    let pods = |c: &Cluster| -> Vec<Value> {
        c.json(&["get", "pods", "-l", "app=web"])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("two pods", &|| pods(&c).len() == 2);
    let rs = c.ok(&["get", "rs", "-l", "app=web"]);
    let row: Vec<&str> = rs.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert!(row[0].starts_with("web-"), "{rs}");
    assert_eq!(row[1..4], ["2", "2", "0"], "{rs}");
    let pod = &pods(&c)[0];
    assert!(
        pod["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .starts_with(row[0])
    );
    assert_eq!(pod["status"]["phase"], "Pending");

    c.ok(&["scale", "deployment", "web", "--replicas=3"]);
    wait("three pods", &|| pods(&c).len() == 3);
    let deploy = c.ok(&["get", "deployment", "web"]);
    let row: Vec<&str> = deploy
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["web", "0/3", "3", "0"], "{deploy}");
    let all = c.ok(&["get", "all"]);
    for kind in ["pod/web-", "deployment.apps/web", "replicaset.apps/web-"] {
        assert!(all.contains(kind), "{kind} missing from:\n{all}");
    }

    // A deleted pod (unscheduled: removed at once) is replaced.
    let victim = pods(&c)[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    c.ok(&["delete", "pod", &victim]);
    wait("a replacement", &|| {
        let names: Vec<Value> = pods(&c)
            .iter()
            .map(|p| p["metadata"]["name"].clone())
            .collect();
        names.len() == 3 && !names.contains(&json!(victim))
    });
    // A pod's spec is fixed: its pull secrets cannot be changed afterwards.
    let some = pods(&c)[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let err = c.fails(&[
        "patch",
        "pod",
        &some,
        "-p",
        r#"{"spec":{"imagePullSecrets":[{"name":"late"}]}}"#,
    ]);
    assert!(
        err.contains(&format!("The Pod \"{some}\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`")),
        "{err}"
    );
    // pods/status is writable; a Failed pod no longer counts and is replaced.
    c.ok(&[
        "patch",
        "pod",
        &some,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ]);
    wait("a fourth pod beside the failed one", &|| {
        pods(&c).len() == 4
    });
    let table = c.ok(&["get", "pod", &some]);
    assert_eq!(
        table.lines().nth(1).unwrap_or("").split_whitespace().nth(2),
        Some("Failed"),
        "{table}"
    );
    // Deleting the Deployment collects its ReplicaSet and pods.
    c.ok(&["delete", "deployment", "web"]);
    wait("everything gone", &|| pods(&c).is_empty());
    assert_eq!(c.handle.count_objects("apps", "replicasets"), 0);
}

//! `pullsecretd plan --cluster` and `pullsecretd once` as a user runs them: the binary, a
//! kubeconfig file, kube-sim over HTTPS. Exit statuses, summaries, and no credential text.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::{ErrorRule, Handle, InjectedError, Options, Server};
use serde_json::json;

const SENTINEL: &str = "SENTINEL-pw-clicluster-4e1";

struct Setup {
    server: Handle,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    config: PathBuf,
}

fn setup() -> Setup {
    let server = Server::start_in_thread(Options::default().tls()).expect("kube-sim starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    for ns in ["a", "b"] {
        server
            .create("", "namespaces", json!({"metadata": {"name": ns}}))
            .expect("namespace");
        server
            .create(
                "",
                "serviceaccounts",
                json!({"metadata": {"name": "builder", "namespace": ns}}),
            )
            .expect("builder");
    }
    let docker_config = dir.path().join("config.json");
    let auth = STANDARD.encode(format!("robot:{SENTINEL}"));
    fs::write(
        &docker_config,
        json!({"auths": {"quay.io": {"auth": auth}}}).to_string(),
    )
    .expect("docker config");
    let config = dir.path().join("pullsecretd.yaml");
    fs::write(
        &config,
        format!(
            "registries:\n  quay:\n    server: quay.io\n    from: {{ dockerConfig: {} }}\n\
             pullSecrets:\n  - name: quay-pull\n    registries: [quay]\n    projects: {{ names: [a, b] }}\n",
            docker_config.display()
        ),
    )
    .expect("config");
    Setup {
        server,
        dir,
        kubeconfig,
        config,
    }
}

fn run(setup: &Setup, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
        .args(args)
        .args(["--config", path(&setup.config)])
        .env("KUBECONFIG", &setup.kubeconfig)
        .env("HOME", setup.dir.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("pullsecretd runs");
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(SENTINEL),
            "credential leaked"
        );
    }
    out
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn plan_cluster_shows_changes_and_writes_nothing() {
    let setup = setup();
    setup.server.reset_counts();
    let out = run(&setup, &["plan", "--cluster"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for expected in [
        "Project a",
        "create secret quay-pull",
        "link serviceaccount default: +quay-pull (imagePullSecrets)",
        "link serviceaccount builder: +quay-pull (secrets)",
        "6 changes in 2 projects.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(setup.server.counts().writes(), 0, "plan never writes");
}

#[test]
fn once_converges_then_has_nothing_to_do_and_fails_loudly_when_the_api_does() {
    let setup = setup();
    let first = run(&setup, &["once"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout(&first).contains("6 changes, 0 failures, in 2 projects; converged."),
        "{}",
        stdout(&first)
    );
    assert!(setup.server.get("", "secrets", "b", "quay-pull").is_some());

    setup.server.reset_counts();
    let second = run(&setup, &["once"]);
    assert!(second.status.success());
    assert!(
        stdout(&second).contains("0 changes, 0 failures, in 0 projects; converged."),
        "{}",
        stdout(&second)
    );
    assert_eq!(setup.server.counts().writes(), 0);

    // The credential rotates while every write fails: exit 1 and a summary naming what failed.
    let docker_config = setup.dir.path().join("config.json");
    let auth = STANDARD.encode("robot:rotated-password");
    fs::write(
        &docker_config,
        json!({"auths": {"quay.io": {"auth": auth}}}).to_string(),
    )
    .expect("docker config");
    setup.server.set_faults(|f| {
        f.rules = vec![ErrorRule::new(
            Some("update"),
            None,
            InjectedError::Internal,
            None,
        )];
    });
    let failed = run(&setup, &["once", "--retries", "1", "--no-events"]);
    assert_eq!(failed.status.code(), Some(1));
    let text = stdout(&failed);
    assert!(
        text.contains("FAILED update secrets a/quay-pull:"),
        "{text}"
    );
    assert!(text.contains("NOT converged"), "{text}");
    assert!(!text.contains("rotated-password"));
}

#[test]
fn unreachable_cluster_is_a_clear_error() {
    let setup = setup();
    let bogus = setup.dir.path().join("nowhere");
    fs::write(
        &bogus,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
         current-context: x\n",
    )
    .expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
        .args(["once", "--retries", "0", "--config", path(&setup.config)])
        .env("KUBECONFIG", &bogus)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("list namespaces"), "{stderr}");
}

//! One pipeline, every trigger: what the single reconcile guarantees whoever calls it — `once`
//! reuses the service accounts it listed (no GET), the daemon reports a plan problem as an
//! Event and a metric, workstation mode logs it, and `run --agent` answers from the daemon's
//! own sources (each Vault path read once per refresh, reloads included).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::Options;
use serde_json::{Value, json};

use crate::support::cluster::{Fixture, nz};
use crate::support::kube::{Cluster, path};
use crate::support::process::{Daemon, stdout};
use crate::support::seed;
use pullsecretd::cluster::Throttle;
use pullsecretd::daemon::{self, DaemonOptions};
use pullsecretd::source::SourceContext;
use pullsecretd_testkit::openbao::{OpenBao, ROOT_TOKEN, audit_requests};
use pullsecretd_testkit::poll::{eventually, wait_until};

const SENTINEL: &str = "SENTINEL-pw-pipeline-3b7e";

#[tokio::test]
async fn once_writes_links_against_the_accounts_it_listed_without_getting_them() {
    let fx = Fixture::start(Options::default()).await;
    for ns in ["a", "web-1", "web-2"] {
        fx.namespace(ns, json!({"team": "web"}));
        fx.account(ns, "builder", &[], &[]).await;
    }
    let config = fx.config(SENTINEL, "");
    fx.server.reset_counts();
    let report = fx.once(&config).await;
    assert!(report.converged(), "{report:#?}");
    let counts = fx.server.counts();
    assert_eq!(
        counts.count("get", "serviceaccounts"),
        0,
        "a listed account is not read again: {counts:?}"
    );
    assert_eq!(counts.count("update", "serviceaccounts"), 6, "{counts:?}");
}

async fn scrape(address: std::net::SocketAddr) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("body")
}

/// Events in `namespace` with `reason`, as stored.
fn events(fx: &Fixture, namespace: &str, reason: &str) -> Vec<Value> {
    fx.server
        .list("", "events", Some(namespace))
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

#[tokio::test]
async fn the_daemon_reports_a_foreign_secret_as_an_event_and_a_metric() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    // Someone's own Secret where pullsecretd would write reg-pull.
    seed::object(
        &fx.server,
        "",
        "secrets",
        json!({"metadata": {"name": "reg-pull", "namespace": "a"}, "type": "Opaque",
               "data": {"x": STANDARD.encode("y")}}),
    );
    fx.config(SENTINEL, "");
    let running = daemon::start(
        fx.client.clone(),
        DaemonOptions {
            config_path: fx.dir.path().join("config.yaml"),
            config: None,
            sources: SourceContext::default(),
            throttle: Throttle::new(nz(500), nz(200), 4),
            events: true,
            concurrency: 8,
            lease: None,
            listen: Some("127.0.0.1:0".parse().expect("address")),
            reload_debounce: Duration::from_millis(150),
            debounce: Duration::from_millis(10),
        },
    )
    .await
    .expect("daemon starts");
    let address = running.address.expect("listener");
    eventually(
        Duration::from_secs(20),
        "a ForeignSecret Event in a",
        || !events(&fx, "a", "ForeignSecret").is_empty(),
    )
    .await;
    let event = &events(&fx, "a", "ForeignSecret")[0];
    assert_eq!(event["type"], "Warning");
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("secret reg-pull exists and was not created")),
        "{event}"
    );
    let metrics = scrape(address).await;
    assert!(
        metrics.contains("pullsecretd_problems{reason=\"ForeignSecret\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pullsecretd_problems{reason=\"UnprovenOwnership\"} 0"),
        "every reason's series is there: {metrics}"
    );
    let secret = fx.secret("a", "reg-pull").expect("still there");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"), "left untouched");
    running.stop();
    assert!(running.wait(Duration::from_secs(10)).await);
}

#[test]
fn workstation_logs_a_foreign_secret_it_leaves_alone() {
    let c = Cluster::start(Options::default());
    // The kube context's namespace is `default`; a Secret of the name workstation would write.
    seed::object(
        &c.server,
        "",
        "secrets",
        json!({"metadata": {"name": "registry-example-com", "namespace": "default"},
               "type": "Opaque", "data": {"x": STANDARD.encode("y")}}),
    );
    let docker_dir = c.dir.path().join("docker");
    std::fs::create_dir_all(&docker_dir).expect("docker dir");
    std::fs::write(
        docker_dir.join("config.json"),
        json!({"auths": {"registry.example.com": {"auth": STANDARD.encode(format!("me:{SENTINEL}"))}}})
            .to_string(),
    )
    .expect("docker config");
    let log = c.dir.path().join("workstation.log");
    let mut child = std::process::Command::new(crate::support::process::binary())
        .args(["workstation", "--no-agent"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .env("DOCKER_CONFIG", &docker_dir)
        .env_remove("RUST_LOG")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("workstation starts");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            Duration::from_secs(20),
            "workstation logs ForeignSecret",
            || read().contains("ForeignSecret"),
        )
    }));
    let _ = child.kill();
    let _ = child.wait();
    let text = read();
    assert!(found.is_ok(), "{text}");
    assert!(!text.contains(SENTINEL), "a credential leaked into the log");
    let secret = c.secret("default", "registry-example-com").expect("kept");
    assert_eq!(secret["type"], "Opaque");
}

fn vault_config(bao: &OpenBao, vault_path: &str) -> String {
    format!(
        "vault:\n  address: {}\n  timeout: 1s\n  auth: {{ method: token }}\n\
         registries:\n  reg:\n    server: registry.example.com\n    from: {{ vault: {{ path: {vault_path} }} }}\n\
         pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ names: [a] }}\n\
         \x20   rotation: {{ refresh: 500ms }}\n",
        bao.address
    )
}

/// Data reads (not metadata polls) of `vault_path` in OpenBao's audit log.
fn data_reads(bao: &OpenBao, vault_path: &str) -> usize {
    audit_requests(&bao.audit_log())
        .iter()
        .filter(|(operation, path, _)| {
            operation == "read" && path == &format!("secret/data/{vault_path}")
        })
        .count()
}

fn helper_get(c: &Cluster, socket: &Path) -> std::process::Output {
    let mut child = std::process::Command::new(crate::support::process::binary())
        .args(["credential-helper", "get"])
        .env("HOME", c.dir.path())
        .env("PULLSECRETD_AGENT_SOCKET", socket)
        .env("PULLSECRETD_CONFIG", "/nonexistent/config.yaml")
        .env_remove("VAULT_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("helper runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"registry.example.com\n")
        .expect("server written");
    child.wait_with_output().expect("helper finished")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_agent_reads_each_vault_path_once_per_refresh_and_follows_reloads() {
    let bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/one",
        json!({"username": "robot", "password": "first-pw"}),
    )
    .await;
    bao.kv2_put(
        "secret",
        "registries/two",
        json!({"username": "robot", "password": SENTINEL}),
    )
    .await;
    let c = Cluster::start(Options::default());
    c.namespace("a");
    let config = c.file("vault.yaml", &vault_config(&bao, "registries/one"));
    let socket = c.dir.path().join("run/agent.sock");
    let args = [
        "--config",
        path(&config),
        "--no-leader-election",
        "--agent",
        "--reload-debounce",
        "100ms",
    ];
    let daemon = Daemon::start(
        c.dir.path(),
        "agent",
        &args,
        &c.env(&[
            ("VAULT_TOKEN", ROOT_TOKEN),
            ("PULLSECRETD_AGENT_SOCKET", path(&socket)),
        ]),
        SENTINEL,
    );
    wait_until(
        Duration::from_secs(30),
        "the Secret and the agent socket",
        || socket.exists() && c.secret("a", "reg-pull").is_some(),
    );
    let reads_before = data_reads(&bao, "registries/one");
    for _ in 0..5 {
        let out = helper_get(&c, &socket);
        let answer: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("JSON answer: {}", stdout(&out)));
        assert_eq!(answer["Secret"], "first-pw");
    }
    // Five answers and a few refreshes later (500 ms each): still the one read at start; the
    // refreshes are metadata polls, shared by the daemon and the agent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reads_before, 1, "{}", daemon.log());
    assert_eq!(data_reads(&bao, "registries/one"), 1, "{}", daemon.log());

    // A reload points the registry at another path: the helper answers from it.
    c.file("vault.yaml", &vault_config(&bao, "registries/two"));
    wait_until(
        Duration::from_secs(20),
        "the helper answers the new path",
        || {
            let out = helper_get(&c, &socket);
            serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|a| a["Secret"] == SENTINEL)
        },
    );
    assert_eq!(data_reads(&bao, "registries/two"), 1, "{}", daemon.log());
}

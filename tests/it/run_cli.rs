//! `pullsecretd run` as a process: the binary, a kubeconfig file, kube-sim over HTTPS.
//! SIGTERM while writes are in flight exits 0 in bounded time, releases the Lease and leaves a
//! state the next start repairs; `--agent` serves the credential helper from the daemon's own
//! Vault session (a real OpenBao). Only 127.0.0.1 is contacted.

use pullsecretd_testkit::openbao;
use pullsecretd_testkit::poll::wait_until;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube_sim::{Handle, Options, Server};
use serde_json::{Value, json};

use openbao::{OpenBao, ROOT_TOKEN};
use pullsecretd::config::LinkKind;
use pullsecretd::diff::linked_names;

const SENTINEL: &str = "SENTINEL-pw-run-cli-83e0";
/// Where the Lease lives.
const LEASE_NAMESPACE: &str = "pullsecretd";

/// A running `pullsecretd run`; killed on drop if a test fails before it exits.
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let stderr = dir.join(format!("stderr-{}.log", args.join("-").replace('/', "_")));
        let child = Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
            .arg("run")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", dir)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("PULLSECRETD_AGENT_SOCKET")
            .env_remove("VAULT_TOKEN")
            .env_remove("POD_NAMESPACE")
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("pullsecretd run starts");
        Self { child, stderr }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit.
    fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM sent");
        let sent = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let log = self.log();
                assert!(!log.contains(SENTINEL), "credential in the log");
                return (status, sent.elapsed());
            }
            assert!(
                sent.elapsed() < limit,
                "still running {limit:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes `server`'s kubeconfig into `dir` and creates the Lease's namespace.
fn prepare(server: Handle, dir: &Path) -> (Handle, PathBuf) {
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    server
        .create(
            "",
            "namespaces",
            json!({"metadata": {"name": LEASE_NAMESPACE}}),
        )
        .expect("namespace");
    (server, kubeconfig)
}

fn lists(server: &Handle, namespace: &str, account: &str) -> (Vec<String>, Vec<String>) {
    let Some(value) = server.get("", "serviceaccounts", namespace, account) else {
        return (Vec::new(), Vec::new());
    };
    let sa: ServiceAccount = serde_json::from_value(value).expect("a ServiceAccount");
    let owned = |kind| {
        linked_names(&sa, kind)
            .into_iter()
            .map(String::from)
            .collect()
    };
    (owned(LinkKind::Pull), owned(LinkKind::Mount))
}

/// Every reference from `default` or `builder` that names no existing Secret.
fn dangling(server: &Handle, namespaces: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    for ns in namespaces {
        for account in ["default", "builder"] {
            let (pull, mount) = lists(server, ns, account);
            for name in pull.into_iter().chain(mount) {
                if server.get("", "secrets", ns, &name).is_none() {
                    missing.push(format!("{ns}/{account} -> {name}"));
                }
            }
        }
    }
    missing
}

fn converged(server: &Handle, ns: &str) -> bool {
    server.get("", "secrets", ns, "reg-pull").is_some()
        && lists(server, ns, "default").0 == ["reg-pull"]
        && lists(server, ns, "builder").1 == ["reg-pull"]
}

fn lease_holder(server: &Handle) -> Option<String> {
    server
        .get(
            "coordination.k8s.io",
            "leases",
            LEASE_NAMESPACE,
            "pullsecretd",
        )
        .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(String::from))
        .filter(|holder| !holder.is_empty())
}

#[test]
fn sigterm_mid_reconcile_exits_0_releases_the_lease_and_the_next_start_converges() {
    const NAMESPACES: usize = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_in_thread(Options::default().tls()).expect("kube-sim starts");
    let (server, kubeconfig) = prepare(server, dir.path());
    let namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("web-{i:02}")).collect();
    for ns in &namespaces {
        server
            .create(
                "",
                "namespaces",
                json!({"metadata": {"name": ns, "labels": {"team": "web"}}}),
            )
            .expect("namespace");
        server
            .create(
                "",
                "serviceaccounts",
                json!({"metadata": {"name": "builder", "namespace": ns}}),
            )
            .expect("builder");
    }
    let docker_config = dir.path().join("docker-config.json");
    let auth = STANDARD.encode(format!("robot:{SENTINEL}"));
    fs::write(
        &docker_config,
        json!({"auths": {"registry.example.com": {"auth": auth}}}).to_string(),
    )
    .expect("docker config");
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        format!(
            "registries:\n  reg:\n    server: registry.example.com\n    \
             from: {{ dockerConfig: {} }}\n\
             pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    \
             projects: {{ selector: \"team=web\" }}\n",
            docker_config.display()
        ),
    )
    .expect("config");
    let config = config.to_str().expect("UTF-8 path");
    // Every request takes a while: a reconcile is in flight for most of a pass.
    server.set_faults(|f| f.latency = Duration::from_millis(40));
    let socket = dir.path().join("agent.sock");
    let socket_env = ("PULLSECRETD_AGENT_SOCKET", socket.to_str().expect("UTF-8"));
    let args = |identity: &'static str| {
        [
            "--config",
            config,
            "--lease-namespace",
            LEASE_NAMESPACE,
            "--identity",
            identity,
            "--concurrency",
            "4",
            "--qps",
            "1000",
            "--burst",
            "1000",
            "--no-events",
            "--shutdown-timeout",
            "20s",
        ]
    };

    let mut first = Daemon::start(dir.path(), &kubeconfig, &args("first"), &[socket_env]);
    wait_until(Duration::from_secs(30), "writes under way", || {
        server.counts().count("create", "secrets") >= 3
    });
    let written_at_signal = server.count_objects("", "secrets");
    assert!(
        written_at_signal < NAMESPACES,
        "the pass must still be running when SIGTERM arrives"
    );
    assert_eq!(lease_holder(&server).as_deref(), Some("first"));
    let (status, took) = first.terminate(Duration::from_secs(25));
    eprintln!("first daemon exited {status} {took:?} after SIGTERM");
    assert!(status.success(), "exit 0 after SIGTERM:\n{}", first.log());
    assert!(
        first.log().contains("Stopping: finishing in-flight writes"),
        "{}",
        first.log()
    );
    assert_eq!(lease_holder(&server), None, "Lease released");
    // It stopped taking work: only reconciles already running finished.
    let written = server.count_objects("", "secrets");
    assert!(
        written < NAMESPACES,
        "{written} of {NAMESPACES} namespaces written: the pass went on after SIGTERM"
    );
    assert_eq!(dangling(&server, &namespaces), Vec::<String>::new());
    // In-flight writes finished: a namespace whose Secret was written was linked too.
    let half_done: Vec<&String> = namespaces
        .iter()
        .filter(|ns| server.get("", "secrets", ns, "reg-pull").is_some() && !converged(&server, ns))
        .collect();
    assert!(
        half_done.is_empty(),
        "interrupted mid-namespace: {half_done:?}"
    );
    eprintln!("{written_at_signal} Secrets at SIGTERM, {written} at exit, of {NAMESPACES}");
    assert!(!socket.exists(), "no agent socket without --agent");

    // The next start repairs everything the interrupted pass left undone.
    server.set_faults(|f| f.latency = Duration::ZERO);
    let mut second = Daemon::start(dir.path(), &kubeconfig, &args("second"), &[socket_env]);
    wait_until(Duration::from_secs(30), "every namespace converged", || {
        namespaces.iter().all(|ns| converged(&server, ns))
    });
    assert_eq!(dangling(&server, &namespaces), Vec::<String>::new());
    assert_eq!(lease_holder(&server).as_deref(), Some("second"));
    let (status, _) = second.terminate(Duration::from_secs(25));
    assert!(status.success(), "{}", second.log());
    assert_eq!(lease_holder(&server), None);
}

/// Runs `pullsecretd credential-helper ACTION` with `stdin` in a clean environment.
fn helper(dir: &Path, action: &str, stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
        .args(["credential-helper", action])
        .env("HOME", dir)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("PULLSECRETD_AGENT_SOCKET")
        .env_remove("VAULT_TOKEN")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helper runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    let out = child.wait_with_output().expect("helper finishes");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(SENTINEL));
    out
}

// Multi-threaded: kube-sim runs on this runtime while the test blocks on child processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_agent_serves_the_credential_helper_from_its_vault_session() {
    let bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/reg",
        json!({"username": "robot", "password": SENTINEL}),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(Options::default().tls())
        .await
        .expect("kube-sim starts");
    let (server, kubeconfig) = prepare(server, dir.path());
    server
        .create("", "namespaces", json!({"metadata": {"name": "a"}}))
        .expect("namespace");
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        format!(
            "vault:\n  address: {}\n  auth: {{ method: token }}\n\
             registries:\n  reg:\n    server: registry.example.com\n    \
             from: {{ vault: {{ path: registries/reg }} }}\n\
             pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    \
             projects: {{ names: [a] }}\n",
            bao.address
        ),
    )
    .expect("config");
    // The socket's directory does not exist yet: the agent makes it 0700.
    let socket = dir.path().join("run/agent.sock");
    let socket_str = socket.to_str().expect("UTF-8");
    let mut daemon = Daemon::start(
        dir.path(),
        &kubeconfig,
        &[
            "--config",
            config.to_str().expect("UTF-8"),
            "--no-leader-election",
            "--agent",
        ],
        &[
            ("VAULT_TOKEN", ROOT_TOKEN),
            ("PULLSECRETD_AGENT_SOCKET", socket_str),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() || server.get("", "secrets", "a", "reg-pull").is_none() {
        assert!(
            Instant::now() < deadline,
            "agent socket and Secret never appeared:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().expect("run dir")), 0o700);

    // The helper has no config and no Vault token: only the daemon can answer.
    let env = [
        ("PULLSECRETD_AGENT_SOCKET", socket_str),
        ("PULLSECRETD_CONFIG", "/nonexistent/config.yaml"),
    ];
    let out = helper(dir.path(), "get", "registry.example.com", &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert_eq!(answer["Username"], "robot");
    assert_eq!(answer["Secret"], SENTINEL);
    let out = helper(dir.path(), "get", "unknown.example.com", &env);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "credentials not found in native keychain"
    );
    let out = helper(dir.path(), "list", "", &env);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON list");
    assert_eq!(listed, json!({"registry.example.com": "robot"}));

    let (status, _) = daemon.terminate(Duration::from_secs(25));
    assert!(status.success(), "{}", daemon.log());
    assert!(!socket.exists(), "the socket goes with the daemon");
    // Without the agent the same call has nowhere to turn: an error, never "not found".
    let out = helper(dir.path(), "get", "registry.example.com", &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SENTINEL));
}

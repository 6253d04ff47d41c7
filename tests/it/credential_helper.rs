//! `docker-credential-pullsecretd` as clients run it: the binary through a symlink, stdin and
//! stdout per docs/docker-auth.md#credential-helper-protocol; the real `skopeo` calling it through `credHelpers` against a real
//! htpasswd registry with credentials from a real OpenBao; the agent socket served by
//! `pullsecretd workstation`, and the refusal of another uid at both ends. Only 127.0.0.1 is
//! contacted.

use pullsecretd_testkit::openbao;
use pullsecretd_testkit::registry;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use openbao::{OpenBao, ROOT_TOKEN};
use registry::Registry;

const SENTINEL: &str = "SENTINEL-helper-pw-5d2";
const NOT_FOUND: &str = "credentials not found in native keychain";

/// A temp HOME with `bin/docker-credential-pullsecretd` → the built binary.
struct Home {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Home {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_pullsecretd"),
            bin.join("docker-credential-pullsecretd"),
        )
        .expect("symlink");
        Self { dir, bin }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `PATH` with the symlink's directory first.
    fn search_path(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.bin.clone()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).expect("PATH")
    }

    /// A command with a clean helper environment: this HOME, no agent, no Vault token.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("HOME", self.dir.path())
            .env("PATH", self.search_path())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("PULLSECRETD_AGENT_SOCKET")
            .env_remove("PULLSECRETD_CONFIG")
            .env_remove("VAULT_TOKEN")
            .env_remove("RUST_LOG");
        command
    }

    /// Runs `docker-credential-pullsecretd ARGS` with `stdin`.
    fn helper(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
        let mut command = self.command(&self.bin.join("docker-credential-pullsecretd"));
        command.args(args).envs(env.iter().copied());
        run_with_stdin(command, stdin)
    }
}

fn run_with_stdin(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helper runs");
    // A helper may answer (or refuse) and exit before reading all of its input, as a
    // protocol edge case allows: a closed pipe is its answer, not a test failure.
    let written = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    if let Err(error) = written {
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe,
            "stdin: {error}"
        );
    }
    let out = child.wait_with_output().expect("helper finishes");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(SENTINEL),
        "secret on stderr"
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A config serving `quay.io` (password) and `ghcr.io` (identity token) from a docker
/// config file.
fn file_config(home: &Home) -> PathBuf {
    let docker = home.path("docker-config.json");
    let auth = STANDARD.encode(format!("robot:{SENTINEL}"));
    std::fs::write(
        &docker,
        json!({"auths": {
            "quay.io": {"auth": auth},
            "ghcr.io": {"identitytoken": "SENTINEL-token"},
        }})
        .to_string(),
    )
    .expect("docker config");
    let config = home.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            "registries:\n  quay:\n    server: quay.io\n    from: {{ dockerConfig: {d} }}\n  \
             ghcr:\n    server: ghcr.io\n    from: {{ dockerConfig: {d} }}\n\
             pullSecrets:\n  - name: quay-pull\n    registries: [quay]\n    projects: {{ names: [a] }}\n",
            d = docker.display()
        ),
    )
    .expect("config");
    config
}

#[test]
fn protocol_edge_cases_per_spec() {
    let home = Home::new();
    let config = file_config(&home);
    let env = [("PULLSECRETD_CONFIG", config.to_str().expect("UTF-8"))];

    // get: the JSON answer and a newline; the server URL as asked.
    let out = home.helper(&["get"], "https://quay.io\n", &env);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).ends_with("}\n"));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        answer,
        json!({"ServerURL": "https://quay.io", "Username": "robot", "Secret": SENTINEL})
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Identity tokens come back under `<token>`.
    let out = home.helper(&["get"], "ghcr.io", &env);
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["Username"], "<token>");
    assert_eq!(answer["Secret"], "SENTINEL-token");

    // Unknown server: exactly the not-found text on stdout, exit 1.
    let out = home.helper(&["get"], "unknown.example.com", &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out).trim(), NOT_FOUND);

    // Empty stdin.
    let out = home.helper(&["get"], " \n", &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out).trim(), "no credentials server URL");

    // list: server → username, whatever stdin holds.
    let out = home.helper(&["list"], "unused", &env);
    assert_eq!(out.status.code(), Some(0));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(listed, json!({"quay.io": "robot", "ghcr.io": "<token>"}));

    // version.
    let out = home.helper(&["version"], "", &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("docker-credential-pullsecretd (pullsecretd) v"));

    // store and erase are refused, after the protocol's own input checks.
    let store = json!({"ServerURL": "quay.io", "Username": "u", "Secret": SENTINEL}).to_string();
    let out = home.helper(&["store"], &store, &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("does not store or erase"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains(SENTINEL));
    let out = home.helper(&["store"], r#"{"ServerURL":"quay.io","Secret":"x"}"#, &env);
    assert_eq!(stdout(&out).trim(), "no credentials username");
    let out = home.helper(&["erase"], "", &env);
    assert_eq!(stdout(&out).trim(), "no credentials server URL");
    let out = home.helper(&["erase"], "quay.io", &env);
    assert!(stdout(&out).contains("does not store or erase"));

    // Unknown action and wrong argument counts: usage-type errors on stdout, exit 1.
    let out = home.helper(&["fetch"], "", &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out).trim(), "Unknown credential action `fetch`");
    let out = home.helper(&[], "", &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("Usage: docker-credential-pullsecretd"));

    // A missing config is an error, never "not found".
    let out = home.helper(
        &["get"],
        "quay.io",
        &[("PULLSECRETD_CONFIG", "/nonexistent.yaml")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("/nonexistent.yaml"),
        "{}",
        stdout(&out)
    );
    assert_ne!(stdout(&out).trim(), NOT_FOUND);

    // The subcommand form is the same front end.
    let mut command = home.command(Path::new(env!("CARGO_BIN_EXE_pullsecretd")));
    command
        .args(["credential-helper", "get", "--config"])
        .arg(&config);
    let out = run_with_stdin(command, "quay.io");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON")["Username"],
        "robot"
    );

    // A helper pullsecretd runs that is pullsecretd again refuses instead of recursing.
    let out = home.helper(
        &["get"],
        "quay.io",
        &[env[0], ("PULLSECRETD_NESTED_HELPER", "1")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("points back at pullsecretd"));
}

fn skopeo_list_tags(home: &Home, authfile: &Path, host: &str, env: &[(&str, &str)]) -> Output {
    let mut command = home.command(Path::new("skopeo"));
    command
        .args(["list-tags", "--tls-verify=false", "--authfile"])
        .arg(authfile)
        .arg(format!("docker://{host}/team/app"))
        .envs(env.iter().copied());
    command
        .output()
        .expect("skopeo runs (Debian package skopeo)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_gets_credentials_from_openbao_through_the_helper() {
    let registry = Registry::start("robot", SENTINEL);
    let mut bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/app",
        json!({"username": "robot", "password": SENTINEL}),
    )
    .await;
    let home = Home::new();
    // Push an image with a plain authfile so there are tags to list.
    let plain = home.path("plain.json");
    let auth = STANDARD.encode(format!("robot:{SENTINEL}"));
    std::fs::write(
        &plain,
        json!({"auths": {registry.host.clone(): {"auth": auth}}}).to_string(),
    )
    .expect("plain authfile");
    assert!(registry.push(&plain, "team/app", "v1").status.success());

    let config = home.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            "vault:\n  address: {}\n  timeout: 2s\n  auth: {{ method: token }}\n\
             registries:\n  app:\n    server: {}\n    from: {{ vault: {{ path: registries/app }} }}\n",
            bao.address, registry.host
        ),
    )
    .expect("config");
    let authfile = home.path("auth.json");
    std::fs::write(
        &authfile,
        json!({"credHelpers": {registry.host.clone(): "pullsecretd"}}).to_string(),
    )
    .expect("authfile with credHelpers");
    let env = [
        ("PULLSECRETD_CONFIG", config.to_str().expect("UTF-8")),
        ("VAULT_TOKEN", ROOT_TOKEN),
    ];

    let out = skopeo_list_tags(&home, &authfile, &registry.host, &env);
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tags: Value = serde_json::from_slice(&out.stdout).expect("skopeo JSON");
    assert_eq!(tags["Tags"], json!(["v1"]));

    // Vault down: skopeo gets the helper's error instead of trying anonymously.
    bao.kill();
    let out = skopeo_list_tags(&home, &authfile, &registry.host, &env);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("skopeo with OpenBao down: {}", stderr.trim());
    assert!(stderr.contains("credential"), "{stderr}");
    assert!(stderr.contains("Vault"), "{stderr}");
    assert!(
        !stderr.contains("unauthorized"),
        "no anonymous attempt: {stderr}"
    );
    assert!(!stderr.contains(SENTINEL));
}

/// `pullsecretd workstation` as a user runs it, with its agent socket; killed on drop.
struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn workstation_serves_the_helper_over_its_socket_and_only_to_its_uid() {
    let server = kube_sim::Server::start_in_thread(kube_sim::Options::default().tls())
        .expect("kube-sim starts");
    server
        .create("", "namespaces", json!({"metadata": {"name": "a"}}))
        .expect("namespace");
    let home = Home::new();
    let kubeconfig = home.path("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let config = file_config(&home);
    let socket = home.path("run/agent.sock");
    let mut command = home.command(Path::new(env!("CARGO_BIN_EXE_pullsecretd")));
    command
        .args(["workstation", "--config"])
        .arg(&config)
        .env("KUBECONFIG", &kubeconfig)
        .env("PULLSECRETD_AGENT_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let agent = Agent {
        child: command.spawn().expect("workstation starts"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() || server.get("", "secrets", "a", "quay-pull").is_none() {
        assert!(
            Instant::now() < deadline,
            "agent socket and Secret never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // The helper asks the agent: its own config does not even exist.
    let socket_env = ("PULLSECRETD_AGENT_SOCKET", socket.to_str().expect("UTF-8"));
    let no_config = ("PULLSECRETD_CONFIG", "/nonexistent.yaml");
    let out = home.helper(&["get"], "quay.io", &[socket_env, no_config]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["Username"], "robot");
    let out = home.helper(&["get"], "unknown.example.com", &[socket_env, no_config]);
    assert_eq!(stdout(&out).trim(), NOT_FOUND);
    let out = home.helper(&["list"], "", &[socket_env, no_config]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(listed["quay.io"], "robot");

    another_uid_is_refused(&home, &socket);
    drop(agent);
}

/// A second uid: possible here only as root (`Command::uid`). The socket's 0600 mode and the
/// 0700 directory already keep other users out; they are opened up so that the peer-uid checks
/// themselves are what refuse. Both ends check: the helper of another uid refuses this agent
/// before asking (it would be handed root's credentials), and the agent refuses a raw client of
/// another uid that asks anyway.
fn another_uid_is_refused(home: &Home, socket: &Path) {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("not root: cannot run a second uid here; peer_allowed() is unit-tested");
        return;
    }
    for dir in [
        home.dir.path(),
        &home.bin,
        socket.parent().expect("run dir"),
    ] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let binary = home.bin.join("pullsecretd-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_pullsecretd"), &binary).expect("binary copy");
    let mut command = home.command(&binary);
    command
        .args(["credential-helper", "get"])
        .env("PULLSECRETD_AGENT_SOCKET", socket)
        .uid(65534)
        .gid(65534);
    let out = run_with_stdin(command, "quay.io");
    let warning = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "helper as uid 65534: {} / {}",
        stdout(&out).trim(),
        warning.trim()
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        warning.contains("is served by uid 0, not by this user (uid 65534): refused"),
        "{warning}"
    );
    assert!(!stdout(&out).contains(SENTINEL));

    // A client that skips the check: the agent itself refuses it. It answers and closes
    // without reading the request, so sending may fail and the socket reset after the answer.
    let script = r#"
import socket, sys
client = socket.socket(socket.AF_UNIX)
client.connect(sys.argv[1])
try:
    client.sendall(b'{"v":1,"action":"get","server":"quay.io"}\n')
except OSError:
    pass
answer = b""
while True:
    try:
        chunk = client.recv(65536)
    except OSError:
        break
    if not chunk:
        break
    answer += chunk
sys.stdout.write(answer.decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(socket)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3 runs");
    let answer = stdout(&out);
    eprintln!("raw client as uid 65534: {}", answer.trim());
    assert!(
        answer.contains("the pullsecretd agent refused this connection"),
        "{answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!answer.contains(SENTINEL));
}

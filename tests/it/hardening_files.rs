//! Files, the agent socket and answer sizes under a hostile neighbour, through the binary:
//! `plan --output` against a planted symbolic link and directories others can write; the
//! agent against a socket directory that is not private, and the helper against an agent
//! served by another uid (a real process running as uid 65534) or answering without end; a
//! loopback "Vault" answering a KV read with an endless or 1.5 GB body. Only 127.0.0.1 is
//! contacted. The uid tests need root (`chown`, `Command::uid`); as another user they say so
//! and stop, as `credential_helper.rs` does.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::Options;
use serde_json::{Value, json};

use crate::support::kube::Cluster;
use crate::support::process::{binary, run, stderr, stdout};

/// The example docker config's password: no output may contain it.
const EXAMPLE_PASSWORD: &str = "example-password-not-real";
const SENTINEL: &str = "SENTINEL-hardening-pw-41c";
const NOBODY: u32 = 65534;

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `pullsecretd plan --config config/example.yaml --output OUT`.
fn plan_into(out: &Path) -> Output {
    let config = repo_file("config/example.yaml");
    run(
        &["plan", "--config", path(&config), "--output", path(out)],
        &[],
        EXAMPLE_PASSWORD,
    )
}

#[test]
fn plan_output_replaces_a_planted_link_and_never_writes_through_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "the victim's own text\n").expect("victim");
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("project-a")).expect("mkdir");
    chmod(&out, 0o700);
    chmod(&out.join("project-a"), 0o700);
    let planted = out.join("project-a/secret-private-registry.yaml");
    std::os::unix::fs::symlink(&victim, &planted).expect("planted link");
    // A leftover temporary name (a crash mid-write) is no obstacle either.
    std::fs::write(
        out.join("project-a/.links.sh.tmp-1-0"),
        "left over by a crash",
    )
    .expect("leftover");

    let result = plan_into(&out);
    assert!(result.status.success(), "{}", stderr(&result));

    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "the victim's own text\n",
        "the Secret was written through the planted link"
    );
    let metadata = std::fs::symlink_metadata(&planted).expect("stat");
    assert!(metadata.file_type().is_file(), "the link was not replaced");
    assert_eq!(mode(&planted), 0o600);
    assert!(
        std::fs::read_to_string(&planted)
            .expect("manifest")
            .contains("kind: Secret")
    );
    let links = out.join("project-a/links.sh");
    assert_eq!(mode(&links), 0o600, "links.sh is run with sh: owner-only");
    assert_eq!(
        mode(&out.join("project-b/rolebinding-pullsecretd-image-puller.yaml")),
        0o644
    );
    assert_eq!(mode(&out.join("project-b")), 0o700);
    // Nothing but the manifests, links.sh and the leftover: no temporary file of this run.
    let mut names: Vec<String> = std::fs::read_dir(out.join("project-a"))
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".links.sh.tmp-1-0",
            "links.sh",
            "secret-private-registry.yaml",
            "secret-quay-robot.yaml"
        ]
    );
}

#[test]
fn plan_output_refuses_directories_others_can_write_or_do_not_own() {
    let dir = tempfile::tempdir().expect("temp dir");

    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    chmod(&open, 0o777);
    let result = plan_into(&open);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    let text = stderr(&result);
    assert!(
        text.contains(&format!(
            "{} is writable by its group or by others (mode 0777)",
            open.display()
        )),
        "{text}"
    );
    assert!(text.contains("chmod go-w"), "{text}");
    assert_eq!(std::fs::read_dir(&open).expect("list").count(), 0);

    // A private output directory with an open project directory in it.
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("project-a")).expect("mkdir");
    chmod(&out, 0o700);
    chmod(&out.join("project-a"), 0o775);
    let result = plan_into(&out);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("project-a is writable by its group or by others (mode 0775)"),
        "{}",
        stderr(&result)
    );
    assert_eq!(
        std::fs::read_dir(out.join("project-a"))
            .expect("list")
            .count(),
        0
    );

    // A missing one is created 0700, parents too.
    let fresh = dir.path().join("new/out");
    let result = plan_into(&fresh);
    assert!(result.status.success(), "{}", stderr(&result));
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&dir.path().join("new")), 0o700);

    if !is_root() {
        eprintln!("not root: cannot chown a directory to another uid here");
        return;
    }
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    chmod(&theirs, 0o700);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown");
    let result = plan_into(&theirs);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    assert!(
        stderr(&result).contains(&format!(
            "{} belongs to uid 65534, not to this user (uid 0)",
            theirs.display()
        )),
        "{}",
        stderr(&result)
    );
    assert_eq!(std::fs::read_dir(&theirs).expect("list").count(), 0);
}

/// Runs `command` to its end, at most `limit`; a process still running then is killed and the
/// test fails (the old agent served from any directory, forever).
fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pullsecretd starts");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {limit:?} (it should have refused to start):\n{}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A config serving quay.io (`robot`, [`SENTINEL`]) from a docker config file in `dir`.
fn file_config(dir: &Path) -> PathBuf {
    let docker = dir.join("docker-config.json");
    let auth = STANDARD.encode(format!("robot:{SENTINEL}"));
    std::fs::write(
        &docker,
        json!({"auths": {"quay.io": {"auth": auth}}}).to_string(),
    )
    .expect("docker config");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "registries:\n  quay:\n    server: quay.io\n    from: {{ dockerConfig: {} }}\n\
             pullSecrets:\n  - name: quay-pull\n    registries: [quay]\n    projects: {{ names: [a] }}\n",
            docker.display()
        ),
    )
    .expect("config");
    config
}

/// `workstation` and `run --agent` with their socket in `socket_dir`: both must exit 2 with
/// `expected` in their error, without a socket.
fn agent_refuses(cluster: &Cluster, config: &Path, socket_dir: &Path, expected: &str) {
    let socket = socket_dir.join("agent.sock");
    for args in [
        vec!["workstation", "--config", path(config)],
        vec![
            "run",
            "--agent",
            "--no-leader-election",
            "--listen",
            "127.0.0.1:0",
            "--config",
            path(config),
        ],
    ] {
        let mut command = Command::new(binary());
        command
            .args(&args)
            .env_remove("RUST_LOG")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("VAULT_TOKEN")
            .envs(cluster.env(&[("PULLSECRETD_AGENT_SOCKET", path(&socket))]));
        let out = run_bounded(command, Duration::from_secs(30));
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {text}", args[0]);
        assert!(text.contains(expected), "{}: {text}", args[0]);
        assert!(!text.contains(SENTINEL));
        assert!(!socket.exists(), "{}: a socket was bound", args[0]);
    }
}

#[test]
fn the_agent_refuses_a_socket_directory_others_can_write_or_do_not_own() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("a");
    let config = file_config(cluster.dir.path());

    let open = cluster.dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    chmod(&open, 0o777);
    agent_refuses(
        &cluster,
        &config,
        &open,
        &format!(
            "the agent socket directory: {} is writable by its group or by others (mode 0777)",
            open.display()
        ),
    );

    if !is_root() {
        eprintln!("not root: cannot chown a directory to another uid here");
        return;
    }
    let theirs = cluster.dir.path().join("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    chmod(&theirs, 0o700);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown");
    agent_refuses(
        &cluster,
        &config,
        &theirs,
        &format!(
            "the agent socket directory: {} belongs to uid 65534, not to this user (uid 0)",
            theirs.display()
        ),
    );
}

/// A unix-socket server in Python answering every connection with `answer` (`repeat`: sent
/// over and over, without end), started with `setup` (e.g. as another uid); killed on drop.
struct FakeAgent {
    child: Child,
}

impl FakeAgent {
    fn start(socket: &Path, answer: &str, repeat: bool, setup: impl FnOnce(&mut Command)) -> Self {
        let script = r#"
import os, socket, sys
path, answer, repeat = sys.argv[1], sys.argv[2].encode(), sys.argv[3] == "1"
server = socket.socket(socket.AF_UNIX)
server.bind(path)
os.chmod(path, 0o666)
server.listen(8)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    try:
        conn.recv(65536)
        conn.sendall(answer)
        while repeat:
            conn.sendall(answer)
    except OSError:
        pass
    finally:
        conn.close()
"#;
        let mut command = Command::new("python3");
        command
            .args(["-c", script, path(socket), answer])
            .arg(if repeat { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        setup(&mut command);
        let mut child = command.spawn().expect("python3 runs");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("ready line");
        assert_eq!(ready.trim(), "ready", "the fake agent did not start");
        Self { child }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pullsecretd credential-helper get` for quay.io with the agent socket at `socket` and the
/// file config as its fallback.
fn helper_get(socket: &Path, config: &Path) -> Output {
    let mut child = Command::new(binary())
        .args(["credential-helper", "get"])
        .env_remove("RUST_LOG")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("VAULT_TOKEN")
        .env("PULLSECRETD_AGENT_SOCKET", socket)
        .env("PULLSECRETD_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helper runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"quay.io")
        .expect("stdin written");
    let out = child.wait_with_output().expect("helper finishes");
    assert!(!stderr(&out).contains(SENTINEL), "secret on stderr");
    out
}

#[test]
fn the_helper_refuses_an_agent_served_by_another_uid() {
    if !is_root() {
        eprintln!(
            "not root: cannot run a server as another uid here; the peer check is unit-tested"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // uid 65534 must reach its own directory inside the temp dir.
    chmod(dir.path(), 0o711);
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    chmod(&theirs, 0o700);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown");
    let socket = theirs.join("agent.sock");
    let intruder = json!({"found": {"Username": "intruder", "Secret": "INTRUDER-pw"}});
    let _agent = FakeAgent::start(&socket, &format!("{intruder}\n"), false, |command| {
        command.uid(NOBODY).gid(NOBODY);
    });
    let config = file_config(dir.path());

    let out = helper_get(&socket, &config);
    let answer = stdout(&out);
    assert!(
        !answer.contains("intruder"),
        "another user's answer was used: {answer}"
    );
    assert_eq!(out.status.code(), Some(0), "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(answer["Username"], "robot", "read here, as with no agent");
    let warning = stderr(&out);
    assert!(
        warning.contains(&format!(
            "warning: the agent socket {} is served by uid 65534, not by this user (uid 0): \
             refused; remove it, or set PULLSECRETD_AGENT_SOCKET to a path in a directory of \
             your own; reading sources here instead\n",
            socket.display()
        )),
        "{warning}"
    );
}

#[test]
fn the_helper_stops_reading_an_endless_agent_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("run/agent.sock");
    std::fs::create_dir(dir.path().join("run")).expect("mkdir");
    chmod(&dir.path().join("run"), 0o700);
    // This user's own server, answering one line that never ends.
    let _agent = FakeAgent::start(&socket, &"x".repeat(64 * 1024), true, |_| {});
    let config = file_config(dir.path());

    let started = Instant::now();
    let out = helper_get(&socket, &config);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("reading the answer: the line is longer than 1 MiB"),
        "{}",
        stdout(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A loopback stand-in for Vault: `lookup-self` gets a real-looking token answer, every other
/// request an answer that does not end (`declared`: with that `Content-Length`, else none),
/// cut off by the server itself after 256 MiB. Counts the body bytes it managed to send.
struct HugeVault {
    address: String,
    sent: Arc<AtomicU64>,
}

const HUGE_CAP: u64 = 256 * 1024 * 1024;

impl HugeVault {
    fn start(declared: Option<u64>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || answer(stream, declared, &counter));
            }
        });
        Self { address, sent }
    }
}

fn answer(mut stream: TcpStream, declared: Option<u64>, sent: &AtomicU64) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    if head.contains("/v1/auth/token/lookup-self") {
        let body = json!({
            "request_id": "r", "lease_id": "", "lease_duration": 0, "renewable": false,
            "data": {
                "accessor": "a", "creation_time": 0, "creation_ttl": 0, "display_name": "token",
                "entity_id": "", "explicit_max_ttl": 0, "id": "t", "num_uses": 0,
                "orphan": true, "path": "auth/token/create", "policies": ["root"], "ttl": 0
            }
        })
        .to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let length = declared.map_or_else(String::new, |n| format!("Content-Length: {n}\r\n"));
    if write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n\
         {{\"data\": {{\"data\": {{\"password\": \""
    )
    .is_err()
    {
        return;
    }
    let chunk = vec![b'x'; 64 * 1024];
    while sent.load(Ordering::Relaxed) < HUGE_CAP {
        if stream.write_all(&chunk).is_err() {
            return;
        }
        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

#[test]
fn a_huge_vault_answer_is_refused_quickly_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    for declared in [None, Some(1_610_612_736)] {
        let vault = HugeVault::start(declared);
        let config = dir.path().join("vault.yaml");
        std::fs::write(
            &config,
            format!(
                "vault:\n  address: {}\n  timeout: 30s\n  auth: {{ method: token }}\n\
                 registries:\n  quay:\n    server: quay.io\n    from: {{ vault: {{ path: registries/quay }} }}\n\
                 pullSecrets:\n  - name: quay-pull\n    registries: [quay]\n    projects: {{ names: [a] }}\n",
                vault.address
            ),
        )
        .expect("config");
        let started = Instant::now();
        let out = run(
            &["plan", "--config", path(&config)],
            &[("VAULT_TOKEN", "t"), ("HOME", path(dir.path()))],
            SENTINEL,
        );
        let elapsed = started.elapsed();
        let text = stderr(&out);
        eprintln!(
            "Content-Length {declared:?}: refused after {elapsed:?}, {} MiB sent by the server",
            vault.sent.load(Ordering::Relaxed) / (1024 * 1024)
        );
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(
            text.contains(
                "Vault read secret/registries/quay (KV v2): Vault's answer is larger than 4 MiB; \
                 it was not read"
            ),
            "{declared:?}: {text}"
        );
        // The client stopped reading: the server could only fill the socket buffers beyond
        // the 4 MiB read (it would have sent 256 MiB to a reader that kept reading).
        assert!(
            vault.sent.load(Ordering::Relaxed) < 64 * 1024 * 1024,
            "{declared:?}: the server sent {} bytes",
            vault.sent.load(Ordering::Relaxed)
        );
        assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    }
}

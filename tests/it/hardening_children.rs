//! Containment of what pullsecretd starts and opens, against real processes and real FIFOs:
//! credential helpers see only the allowlisted environment, their background jobs die with
//! them, an answer counts once the helper exits even if a job still holds stdout, flooding
//! output is cut off without being shown, and a FIFO named as a config, auth, token or CA file
//! is refused at once instead of blocking the process.
//!
//! Helper scripts are written once, before any test starts a process (a file still open for
//! writing while another thread forks cannot be executed: ETXTBSY), and leave what they saw
//! (environment, pids) in files beside them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pullsecretd::source::SourceContext;
use pullsecretd::source::helper::{self, HelperError};

use crate::support::process::{binary, wait_until};

const SENTINEL: &str = "SENTINEL-children-3b8f";

/// The helper scripts' directory (also where they write what they saw).
fn helper_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("hardening-children-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create helper dir");
        let out = dir.display();
        let answer = r#"read -r server; printf '{"ServerURL":"%s","Username":"robot","Secret":"fictional-pw"}\n' "$server""#;
        let scripts = [
            ("envdump", format!("env > {out}/envdump.env; {answer}")),
            ("ecr-login", format!("env > {out}/ecr-login.env; {answer}")),
            (
                "orphan-hang",
                format!(
                    "echo $$ > {out}/orphan-hang.pids; sleep 300 & echo $! >> {out}/orphan-hang.pids; \
                     exec sleep 300"
                ),
            ),
            (
                "answer-bg",
                format!("{answer}; sleep 30 & echo $! > {out}/answer-bg.pid"),
            ),
            (
                "flood",
                format!("yes {SENTINEL} | head -c 10485760; echo done > {out}/flood.done"),
            ),
        ];
        for (name, body) in scripts {
            write_script(&dir.join(format!("docker-credential-{name}")), &body);
        }
        dir
    })
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write helper");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod helper");
}

fn ctx(timeout: Duration) -> SourceContext {
    SourceContext {
        helper_dirs: Some(vec![helper_dir().to_path_buf()]),
        helper_timeout: timeout,
        vault: None,
    }
}

/// Whether `pid` has ended: no /proc entry, or a zombie nobody has reaped yet (this
/// container's init may not reap orphans promptly).
fn is_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn pids_in(path: &Path) -> Vec<u32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| line.trim().parse().expect("a pid"))
        .collect()
}

/// Kills on drop the `sleep`s a failed test would otherwise leave running.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in pids_in(&self.0) {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let pid = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if comm.trim() == "sleep"
                && let Some(pid) = pid
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

// ---- Environment ----

/// `NAME=value` lines of a helper's environment dump, as (name, value).
fn dumped_environment(path: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(path).expect("the helper dumped its environment");
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn helpers_run_without_pullsecretds_secrets_in_their_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        "registries:\n  a: { server: a.example.com, from: { helper: envdump } }\n  \
         b: { server: b.example.com, from: { helper: ecr-login } }\n\
         pullSecrets:\n  - name: p\n    registries: [a, b]\n    projects: { names: [x] }\n",
    )
    .expect("write config");
    let path = format!("{}:/usr/bin:/bin", helper_dir().display());
    let out = Command::new(binary())
        .args(["plan", "--config", config.to_str().expect("UTF-8 path")])
        .env_clear()
        .envs([
            ("PATH", path.as_str()),
            ("HOME", dir.path().to_str().expect("UTF-8 path")),
            ("LC_ALL", "C.UTF-8"),
            ("VAULT_TOKEN", SENTINEL),
            ("VAULT_ADDR", "http://127.0.0.1:1"),
            ("PULLSECRETD_CONFIG", "/nonexistent/pullsecretd.yaml"),
            ("PULLSECRETD_AGENT_SOCKET", "/nonexistent/agent.sock"),
            ("KUBECONFIG", "/nonexistent/kubeconfig"),
            ("AWS_SECRET_ACCESS_KEY", SENTINEL),
            ("AWS_REGION", "eu-west-1"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("pullsecretd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plan failed: {stderr}");

    let general = dumped_environment(&helper_dir().join("envdump.env"));
    let names: Vec<&str> = general.iter().map(|(name, _)| name.as_str()).collect();
    for wanted in ["PATH", "HOME", "LC_ALL"] {
        assert!(names.contains(&wanted), "{wanted} missing: {names:?}");
    }
    assert!(
        general.contains(&("PULLSECRETD_NESTED_HELPER".to_string(), "1".to_string())),
        "the recursion guard is set: {names:?}"
    );
    for (name, value) in &general {
        let withheld = name.starts_with("VAULT_")
            || name.starts_with("AWS_")
            || name == "KUBECONFIG"
            || (name.starts_with("PULLSECRETD_") && name != "PULLSECRETD_NESTED_HELPER");
        assert!(!withheld, "{name} reached the helper");
        assert!(!value.contains(SENTINEL), "{name} carries a secret");
    }

    // ecr-login documents the AWS variables: it gets them, and still nothing of pullsecretd's.
    let ecr = dumped_environment(&helper_dir().join("ecr-login.env"));
    assert!(ecr.contains(&("AWS_REGION".to_string(), "eu-west-1".to_string())));
    assert!(ecr.iter().any(|(name, _)| name == "AWS_SECRET_ACCESS_KEY"));
    assert!(
        !ecr.iter()
            .any(|(name, _)| name.starts_with("VAULT_") || name == "PULLSECRETD_CONFIG"),
        "pullsecretd's variables reached ecr-login"
    );
}

// ---- Children and output ----

#[tokio::test]
async fn a_timed_out_helper_and_its_background_jobs_are_all_killed() {
    let pids_file = helper_dir().join("orphan-hang.pids");
    let _leftovers = Leftovers(pids_file.clone());
    let started = Instant::now();
    let err = helper::get("orphan-hang", "quay.io", &ctx(Duration::from_secs(1)))
        .await
        .expect_err("times out");
    assert!(matches!(err, HelperError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    let pids = pids_in(&pids_file);
    assert_eq!(
        pids.len(),
        2,
        "the helper and its grandchild wrote their pids"
    );
    wait_until(
        Duration::from_secs(5),
        "the helper and its `sleep 300 &` are gone",
        || pids.iter().all(|pid| is_gone(*pid)),
    );
}

#[tokio::test]
async fn an_answer_counts_at_the_helpers_exit_though_a_background_job_holds_stdout() {
    let pid_file = helper_dir().join("answer-bg.pid");
    let _leftovers = Leftovers(pid_file.clone());
    let started = Instant::now();
    let credential = helper::get("answer-bg", "quay.io", &ctx(Duration::from_secs(10)))
        .await
        .expect("answered, not timed out")
        .expect("a credential");
    let took = started.elapsed();
    assert_eq!(credential.username, "robot");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let pids = pids_in(&pid_file);
    assert_eq!(pids.len(), 1, "the helper wrote its background job's pid");
    wait_until(
        Duration::from_secs(5),
        "the background `sleep 30` is killed with the helper's group",
        || is_gone(pids[0]),
    );
}

#[tokio::test]
async fn flooding_output_is_cut_off_with_a_clear_error_that_shows_none_of_it() {
    let done = helper_dir().join("flood.done");
    let started = Instant::now();
    let err = helper::get("flood", "quay.io", &ctx(Duration::from_secs(10)))
        .await
        .expect_err("too much output");
    let took = started.elapsed();
    assert!(matches!(err, HelperError::TooMuchOutput { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("docker-credential-flood") && shown.contains("more than 64 KiB"),
        "{shown}"
    );
    assert!(!shown.contains(SENTINEL) && !format!("{err:?}").contains(SENTINEL));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Reading stopped at the limit and the helper was killed in the middle of its write, not
    // merely disconnected (on EPIPE it would carry on and write the marker).
    std::thread::sleep(Duration::from_millis(300));
    assert!(!done.exists(), "the helper's whole output was read");
}

// ---- FIFOs ----

/// Runs `pullsecretd ARGS` with `env`; fails the test if it has not exited within 10 s.
fn run_bounded(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let stderr_path = dir.join("stderr.txt");
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("VAULT_TOKEN")
        .env_remove("PULLSECRETD_CONFIG")
        .env_remove("PULLSECRETD_AGENT_SOCKET")
        .env("HOME", dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("pullsecretd starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pullsecretd {args:?} hung (killed after 10 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    (status, stderr)
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

fn assert_refused(dir: &Path, args: &[&str], fifo: &Path) {
    let (status, stderr) = run_bounded(dir, args, &[]);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(&fifo.display().to_string())
            && stderr.contains("is a FIFO, not a regular file"),
        "{args:?}: {stderr}"
    );
}

#[test]
fn a_fifo_as_the_config_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("config.yaml");
    mkfifo(&fifo);
    let fifo_arg = fifo.to_str().expect("UTF-8 path");
    for args in [
        vec!["check-config", fifo_arg],
        vec!["check-config", "--config", fifo_arg],
        vec!["plan", "--config", fifo_arg],
    ] {
        assert_refused(dir.path(), &args, &fifo);
    }
}

#[test]
fn a_fifo_as_an_auth_file_is_refused_at_once() {
    for source in ["dockerConfig", "dockercfg", "containersAuth"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("auth.json");
        mkfifo(&fifo);
        let config = dir.path().join("config.yaml");
        fs::write(
            &config,
            format!(
                "registries:\n  r:\n    server: registry.example.com\n    \
                 from: {{ {source}: {} }}\n\
                 pullSecrets:\n  - name: p\n    registries: [r]\n    projects: {{ names: [a] }}\n",
                fifo.display()
            ),
        )
        .expect("write config");
        let config = config.to_str().expect("UTF-8 path");
        assert_refused(dir.path(), &["plan", "--config", config], &fifo);
    }
}

#[test]
fn a_fifo_as_a_vault_token_or_ca_file_is_refused_at_once() {
    let vault_config = |vault: &str| {
        format!(
            "vault:\n{vault}\
             registries:\n  r:\n    server: registry.example.com\n    \
             from: {{ vault: {{ mount: secret, path: r }} }}\n\
             pullSecrets:\n  - name: p\n    registries: [r]\n    projects: {{ names: [a] }}\n"
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    // Nothing listens on port 1: a file that is read before any request is what fails.
    for vault in [
        format!(
            "  address: http://127.0.0.1:1\n  auth: {{ method: token, file: {} }}\n",
            fifo.display()
        ),
        format!(
            "  address: https://127.0.0.1:1\n  caCert: {}\n  auth: {{ method: token }}\n",
            fifo.display()
        ),
    ] {
        let config = dir.path().join("config.yaml");
        fs::write(&config, vault_config(&vault)).expect("write config");
        let config = config.to_str().expect("UTF-8 path");
        assert_refused(dir.path(), &["plan", "--config", config], &fifo);
    }
}

#[test]
fn a_fifo_among_the_workstations_auth_files_is_reported_not_waited_on() {
    use pullsecretd::dockerconfig::AuthFileFormat;
    use pullsecretd::workstation::{WatchedFile, default_config_now};

    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("config.json");
    mkfifo(&fifo);
    let files = vec![WatchedFile {
        path: fifo.clone(),
        format: AuthFileFormat::DockerConfig,
    }];
    // On a thread: if the read blocked, the test fails here instead of hanging.
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sent.send(default_config_now(&files));
    });
    let result = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the workstation's read of a FIFO returned");
    let error = result.expect_err("nothing readable");
    assert!(
        error.contains(&fifo.display().to_string()) && error.contains("a FIFO, not a regular file"),
        "{error}"
    );
}

//! Test harness: the `pullsecretd` binary as a user runs it — one-shot commands with their
//! output, and `pullsecretd run` as a child process that can be stopped with SIGTERM or
//! killed with SIGKILL (a crash). Every output is checked for a sentinel credential.

pub use pullsecretd_testkit::poll::wait_until;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: this build's, or `$PULLSECRETD_TEST_BIN` (to run a test against
/// another build, e.g. the previous release, and see it fail).
pub fn binary() -> PathBuf {
    std::env::var_os("PULLSECRETD_TEST_BIN")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_pullsecretd")),
            PathBuf::from,
        )
}

/// Runs `pullsecretd ARGS` with `env` (and HOME, KUBECONFIG as given), without RUST_LOG.
pub fn run(args: &[&str], env: &[(&str, &str)], forbidden: &str) -> Output {
    let out = Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("VAULT_TOKEN")
        .env_remove("PULLSECRETD_AGENT_SOCKET")
        .env_remove("XDG_RUNTIME_DIR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("pullsecretd runs");
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(forbidden),
            "a credential leaked into the output"
        );
    }
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `pullsecretd run`; killed on drop if a test fails before it exits.
pub struct Daemon {
    process: Process,
}

impl Daemon {
    /// Starts `pullsecretd run --listen 127.0.0.1:0 ARGS` with `env`, logging at info into a
    /// file under `dir` named after `label`.
    pub fn start(
        dir: &Path,
        label: &str,
        args: &[&str],
        env: &[(&str, &str)],
        forbidden: &str,
    ) -> Self {
        // The log is not beside the config: a daemon watching that directory must not see
        // log writes (Process keeps logs in `dir/logs`).
        let mut all = vec!["run", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let process = Process::spawn(&Spawn {
            dir,
            label: &format!("daemon-{label}"),
            args: &all,
            env,
            rust_log: Some("info,vaultrs=off,rustify=off"),
            cwd: None,
            forbidden,
        });
        Self { process }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Waits until the log contains `text`, at most `limit` (the log is shown on failure).
    pub fn wait_for_log(&self, limit: Duration, text: &str) {
        self.process.wait_for_log(limit, text);
    }

    /// SIGKILL: the process dies at once, as in a crash (no Lease release, nothing finished).
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// The address of its health and metrics listener ([`Process::health_address`]).
    pub fn health_address(&self, limit: Duration) -> String {
        self.process.health_address(limit)
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.process.signal(rustix::process::Signal::TERM, limit)
    }
}

/// Any `pullsecretd` command as a child process: full arguments, a working directory, and the
/// environment a user has (RUST_LOG only when given), its stderr in a file. Killed on drop.
pub struct Process {
    child: Child,
    stderr: PathBuf,
    forbidden: String,
}

/// How to start a [`Process`].
pub struct Spawn<'a> {
    pub dir: &'a Path,
    pub label: &'a str,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// `None`: no RUST_LOG at all, the default filters decide.
    pub rust_log: Option<&'a str>,
    pub cwd: Option<&'a Path>,
    pub forbidden: &'a str,
}

impl Process {
    pub fn spawn(spec: &Spawn<'_>) -> Self {
        let logs = spec.dir.join("logs");
        fs::create_dir_all(&logs).expect("log directory");
        let stderr = logs.join(format!("{}.log", spec.label));
        let mut command = Command::new(binary());
        command
            .args(spec.args)
            .env_remove("RUST_LOG")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("PULLSECRETD_AGENT_SOCKET")
            .env_remove("PULLSECRETD_CONFIG")
            .env_remove("VAULT_TOKEN")
            .env_remove("POD_NAMESPACE")
            .envs(spec.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr file"));
        if let Some(filter) = spec.rust_log {
            command.env("RUST_LOG", filter);
        }
        if let Some(cwd) = spec.cwd {
            command.current_dir(cwd);
        }
        Self {
            child: command.spawn().expect("pullsecretd starts"),
            stderr,
            forbidden: spec.forbidden.to_string(),
        }
    }

    pub fn log(&self) -> String {
        let log = fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(
            !log.contains(&self.forbidden),
            "a credential leaked into the log"
        );
        log
    }

    /// Waits until the log contains `text`, at most `limit` (the log is shown on failure).
    pub fn wait_for_log(&self, limit: Duration, text: &str) {
        let started = Instant::now();
        while !self.log().contains(text) {
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {text:?}; the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `limit`) for the process to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let _ = self.log();
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "still running after {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process dies at once, as in a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` and waits (at most `limit`) for the exit.
    pub fn signal(&mut self, signal: rustix::process::Signal, limit: Duration) -> ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("signal sent");
        self.wait(limit)
    }

    /// The address of the health listener, from the log line `run` writes once it serves.
    pub fn health_address(&self, limit: Duration) -> String {
        self.wait_for_log(limit, "Serving /healthz");
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("Serving /healthz"))
            .expect("the line waited for");
        let address = line
            .split("address=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the line names an address");
        address.trim_matches('"').to_string()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET http://ADDRESS/PATH` with a plain TCP client: (status code, body).
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).expect("connects to the listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout set");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply read");
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("an HTTP status line");
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (code, body)
}

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
    child: Child,
    stderr: PathBuf,
    forbidden: String,
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
        // Not beside the config: a daemon watching that directory must not see log writes.
        let logs = dir.join("logs");
        fs::create_dir_all(&logs).expect("log directory");
        let stderr = logs.join(format!("daemon-{label}.log"));
        let child = Command::new(binary())
            .arg("run")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("PULLSECRETD_AGENT_SOCKET")
            .env_remove("VAULT_TOKEN")
            .env_remove("POD_NAMESPACE")
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,vaultrs=off,rustify=off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("pullsecretd run starts");
        Self {
            child,
            stderr,
            forbidden: forbidden.to_string(),
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
                "timed out after {limit:?}: the daemon logged {text:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process dies at once, as in a crash (no Lease release, nothing finished).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM sent");
        let sent = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let _ = self.log();
                return status;
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

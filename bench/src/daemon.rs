//! The pullsecretd release binary as a child process, measured from outside: peak RSS from
//! `/proc/PID/status` (VmHWM) and CPU seconds from `/proc/PID/stat` (utime + stime).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running `pullsecretd run`.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
    ticks_per_second: f64,
}

/// How the child talks to the cluster.
pub struct Limits {
    pub qps: u32,
    pub burst: u32,
    pub concurrency: usize,
}

impl Daemon {
    pub fn spawn(
        binary: &Path,
        config: &Path,
        kubeconfig: &Path,
        limits: &Limits,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(
            binary,
            config,
            kubeconfig,
            limits,
            log,
            &["--no-leader-election".to_string()],
        )
    }

    /// `pullsecretd run` with `election` as its leader-election arguments
    /// (`--no-leader-election`, or `--shards N --identity ID ...`).
    pub fn spawn_with(
        binary: &Path,
        config: &Path,
        kubeconfig: &Path,
        limits: &Limits,
        log: PathBuf,
        election: &[String],
    ) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(&log).context("daemon log file")?;
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(config)
            .args(election)
            .args([
                "--no-events",
                "--listen",
                "127.0.0.1:0",
                "--qps",
                &limits.qps.to_string(),
                "--burst",
                &limits.burst.to_string(),
                "--concurrency",
                &limits.concurrency.to_string(),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("VAULT_TOKEN", "root")
            .env("RUST_LOG", "warn,vaultrs=off,rustify=off")
            .env_remove("BAO_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            log,
            ticks_per_second: clock_ticks(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the daemon exited early (with the tail of its log).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "pullsecretd exited with {status}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return 0.0;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After "pid (comm)": state is field 3, utime 14, stime 15.
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / self.ticks_per_second
    }

    /// Peak resident set size (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        status_kib(self.pid(), "VmHWM:") / 1024.0
    }

    /// Current resident set size (VmRSS), MiB.
    pub fn rss_mib(&self) -> f64 {
        status_kib(self.pid(), "VmRSS:") / 1024.0
    }

    /// SIGKILL: a replica dying without releasing its Leases.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (SIGKILL after 20 s).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0.0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

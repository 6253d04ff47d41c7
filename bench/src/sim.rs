//! kube-sim and OpenBao for the scenarios: seeding, direct state checks (no HTTP, not counted),
//! request counts by verb, and Vault reads counted from OpenBao's file audit log.

use std::collections::BTreeMap;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use kube_sim::{Handle, Options, Server};
use serde_json::{Value, json};

/// The label every benchmark namespace carries; the config selects on it.
pub const LABEL_KEY: &str = "bench";
pub const LABEL_VALUE: &str = "yes";
/// The Secret names every namespace gets (`quay-pull` is versioned: `quay-pull-<hash>`).
pub const SECRETS: [&str; 3] = ["private-registry", "quay-pull", "internal-pull"];

/// A fresh kube-sim with `latency` on every resource request.
pub async fn start(latency: Duration) -> anyhow::Result<Handle> {
    let mut options = Options {
        // Watches that fall behind during a 10k burst must not get 410 Expired.
        event_history: 100_000,
        ..Options::default()
    };
    options.faults.latency = latency;
    Ok(Server::start(options).await?)
}

pub fn namespace_name(i: usize) -> String {
    format!("team-{i:05}")
}

/// A labelled namespace with its `builder` account (`default` is made by kube-sim, as by the
/// service-account controller).
pub fn create_namespace(h: &Handle, name: &str) -> anyhow::Result<()> {
    h.create(
        "",
        "namespaces",
        json!({"metadata": {"name": name, "labels": {LABEL_KEY: LABEL_VALUE}}}),
    )
    .map_err(anyhow::Error::msg)?;
    h.create(
        "",
        "serviceaccounts",
        json!({"metadata": {"name": "builder", "namespace": name}}),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(())
}

pub fn seed(h: &Handle, n: usize) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (0..n).map(namespace_name).collect();
    for name in &names {
        create_namespace(h, name)?;
    }
    Ok(names)
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn is(name: &str, wanted: &str) -> bool {
    name == wanted
        || name
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.len() == 11 && rest.starts_with('-'))
}

/// Waits until every one of `namespaces` is provisioned (the request counts first, the objects
/// once the counts say it can be), calling `alive` at every poll so a dead daemon fails fast.
/// Returns the seconds since `started` and whether they converged within `limit`.
pub async fn wait_provisioned(
    h: &std::sync::Arc<Handle>,
    namespaces: &[String],
    started: std::time::Instant,
    limit: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, bool)> {
    let n = namespaces.len() as u64;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        alive()?;
        let counts = h.counts();
        let linked =
            counts.count("update", "serviceaccounts") + counts.count("patch", "serviceaccounts");
        if counts.count("create", "secrets") >= 3 * n && linked >= 2 * n {
            let at = started.elapsed().as_secs_f64();
            let check = std::sync::Arc::clone(h);
            let names = namespaces.to_vec();
            let done =
                tokio::task::spawn_blocking(move || names.iter().all(|ns| provisioned(&check, ns)))
                    .await?;
            if done {
                return Ok((at, true));
            }
        }
        if started.elapsed() > limit {
            return Ok((started.elapsed().as_secs_f64(), false));
        }
    }
}

/// `default` pulls with, and `builder` mounts, all three Secrets, and they exist.
pub fn provisioned(h: &Handle, namespace: &str) -> bool {
    let (Some(default), Some(builder)) = (
        h.get("", "serviceaccounts", namespace, "default"),
        h.get("", "serviceaccounts", namespace, "builder"),
    ) else {
        return false;
    };
    let pulls = names(&default["imagePullSecrets"]);
    let mounts = names(&builder["secrets"]);
    SECRETS.iter().all(|wanted| {
        let found = pulls.iter().find(|n| is(n, wanted));
        found.is_some_and(|name| h.get("", "secrets", namespace, name).is_some())
            && mounts.iter().any(|n| is(n, wanted))
    })
}

/// A thread sweeping every namespace for references to missing Secrets until finished.
pub struct DanglingSweeper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl DanglingSweeper {
    /// Sweeps `namespaces` of `h`, pausing `every` between sweeps.
    pub fn start(h: &std::sync::Arc<Handle>, namespaces: &[String], every: Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let h = std::sync::Arc::clone(h);
            let names = namespaces.to_vec();
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut sweeps = 0u64;
                let mut dangling = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for ns in &names {
                        dangling.extend(self::dangling(&h, ns));
                    }
                    sweeps += 1;
                    std::thread::sleep(every);
                }
                (sweeps, dangling)
            })
        };
        Self { stop, thread }
    }

    /// Stops sweeping: the sweeps made and every dangling reference seen.
    pub fn finish(self) -> anyhow::Result<(u64, Vec<String>)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the dangling-reference sweeper panicked"))
    }
}

/// References from `default`/`builder` to Secrets that do not exist.
pub fn dangling(h: &Handle, namespace: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for (account, field) in [("default", "imagePullSecrets"), ("builder", "secrets")] {
        let Some(sa) = h.get("", "serviceaccounts", namespace, account) else {
            continue;
        };
        for name in names(&sa[field]) {
            if h.get("", "secrets", namespace, &name).is_none() {
                missing.push(format!("{namespace}/{account}->{name}"));
            }
        }
    }
    missing
}

/// The `source-versions` annotation of a namespace's Secret.
pub fn source_versions(h: &Handle, namespace: &str, secret: &str) -> Option<String> {
    h.get("", "secrets", namespace, secret)?["metadata"]["annotations"]
        ["pullsecretd.io/source-versions"]
        .as_str()
        .map(String::from)
}

/// Verbs that change state (as kube-sim counts them).
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Resource requests by verb (discovery excluded).
pub fn by_verb(h: &Handle) -> BTreeMap<String, u64> {
    let mut verbs = BTreeMap::new();
    for ((verb, _, _), n) in &h.counts().by_key {
        *verbs.entry(verb.clone()).or_default() += n;
    }
    verbs
}

pub fn total(verbs: &BTreeMap<String, u64>) -> u64 {
    verbs.values().sum()
}

pub fn writes(verbs: &BTreeMap<String, u64>) -> u64 {
    WRITE_VERBS.iter().filter_map(|v| verbs.get(*v)).sum()
}

/// Reads in OpenBao's audit log since the last `take`.
pub struct AuditTail {
    path: PathBuf,
    offset: u64,
}

/// Vault requests by kind.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct VaultReads {
    /// KV v2 `metadata/` reads (versions only, no secret value).
    pub metadata: u64,
    /// KV `data/` reads (the secret value).
    pub data: u64,
    /// Anything else (token lookups, writes by the harness).
    pub other: u64,
}

impl VaultReads {
    pub fn reads(&self) -> u64 {
        self.metadata + self.data
    }
}

impl AuditTail {
    pub fn new(path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Self { path, offset }
    }

    /// Skips what is logged so far.
    pub fn skip(&mut self) {
        let _ = self.take();
    }

    pub fn take(&mut self) -> VaultReads {
        let mut reads = VaultReads::default();
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return reads;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return reads;
        }
        let mut text = String::new();
        if file.read_to_string(&mut text).is_err() {
            return reads;
        }
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        for line in text[..complete].lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if entry["type"] != "request" {
                continue;
            }
            let request = &entry["request"];
            let path = request["path"].as_str().unwrap_or_default();
            match (request["operation"].as_str(), path) {
                (Some("read"), p) if p.starts_with("secret/metadata/") => reads.metadata += 1,
                (Some("read"), p) if p.starts_with("secret/data/") => reads.data += 1,
                _ => reads.other += 1,
            }
        }
        reads
    }
}

/// Percentile (0..=100) of durations in seconds; 0 when empty.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

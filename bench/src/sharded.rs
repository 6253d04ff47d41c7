//! Active-active shards as separate processes: `replicas` release binaries with `--shards N`,
//! each authenticating as its own kube-sim user so the write log tells their writes apart.
//! Cold start over all of them, then an in-place rotation during which one replica is killed
//! (SIGKILL, no Lease release): how soon its shards are led again, how soon their namespaces
//! carry the new credential, and the invariants — no namespace written by two replicas within
//! one second, no reference to a missing Secret — swept throughout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube_sim::{Handle, Options, Server, UserInfo};
use serde::Serialize;

use crate::bao::OpenBao;
use crate::daemon::{Daemon, Limits};
use crate::sim;

/// The Lease namespace the replicas share.
const LEASE_NAMESPACE: &str = "kube-system";
/// `run`'s default lease duration: the replicas run with the shipped timings.
const LEASE_DURATION: Duration = Duration::from_secs(15);

#[derive(Debug, Default, Serialize)]
pub struct Sharded {
    pub namespaces: usize,
    pub shards: u32,
    pub replicas: usize,
    pub cold_seconds: f64,
    pub cold_converged: bool,
    pub cold_target_seconds: f64,
    pub initial_list_seconds: f64,
    pub cold_requests: BTreeMap<String, u64>,
    /// Namespace writes per replica at cold start.
    pub cold_writes_by_replica: BTreeMap<String, u64>,
    /// Seconds from the replicas' start to each one's first and last namespace write of the
    /// cold start: where the time beyond writes ÷ QPS goes.
    pub cold_write_span_by_replica: BTreeMap<String, (f64, f64)>,
    pub peak_rss_mib: Vec<f64>,
    pub cpu_seconds: Vec<f64>,
    pub killed: String,
    pub killed_shards: Vec<u32>,
    /// From the kill until every shard the killed replica led is led by another.
    pub takeover_seconds: f64,
    pub takeover_target_seconds: f64,
    /// From the kill until every namespace of the killed replica's shards carries the rotation.
    pub killed_shards_rotated_seconds: f64,
    /// From the rotation until every namespace carries it.
    pub rotation_seconds: f64,
    pub rotation_converged: bool,
    /// (namespace, second) pairs written by more than one replica: must be 0.
    pub double_writes: usize,
    pub dangling_references: Vec<String>,
    pub invariant_sweeps: u64,
}

fn replica_name(i: usize) -> String {
    format!("replica-{i}")
}

async fn start_sim(latency: Duration, replicas: usize) -> anyhow::Result<Handle> {
    let mut options = Options {
        event_history: 200_000,
        record_writes: true,
        ..Options::default()
    };
    options.faults.latency = latency;
    for i in 0..replicas {
        let name = replica_name(i);
        options = options.identity(&name, UserInfo::user(&name, &["system:masters"]));
    }
    Ok(Server::start(options).await?)
}

fn holders(h: &Handle, shards: u32) -> Vec<Option<String>> {
    (0..shards)
        .map(|i| {
            h.get(
                "coordination.k8s.io",
                "leases",
                LEASE_NAMESPACE,
                &format!("pullsecretd-shard-{i}"),
            )
            .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(String::from))
            .filter(|holder| !holder.is_empty())
        })
        .collect()
}

/// The write log's namespace writes (the Leases' excluded).
fn namespace_writes(h: &Handle) -> impl Iterator<Item = kube_sim::WriteRecord> {
    h.writes()
        .into_iter()
        .filter(|write| write.namespace != LEASE_NAMESPACE)
}

/// Namespace writes by replica.
fn writes_by_replica(h: &Handle) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for write in namespace_writes(h) {
        *by.entry(write.user).or_default() += 1;
    }
    by
}

/// Seconds from `started` to each replica's first and last namespace write.
fn write_span_by_replica(h: &Handle, started: SystemTime) -> BTreeMap<String, (f64, f64)> {
    let mut span: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for write in namespace_writes(h) {
        let at = write
            .at
            .duration_since(started)
            .map_or(0.0, |d| d.as_secs_f64());
        let (first, last) = span.entry(write.user).or_insert((at, at));
        *first = first.min(at);
        *last = last.max(at);
    }
    span
}

/// (namespace, second) pairs written by two or more replicas.
fn double_writes(h: &Handle) -> usize {
    let mut writers: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
    for write in namespace_writes(h) {
        let second = write
            .at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        writers
            .entry((write.namespace, second))
            .or_default()
            .insert(write.user);
    }
    writers.values().filter(|users| users.len() > 1).count()
}

pub struct Setup<'a> {
    pub binary: &'a Path,
    pub bao: &'a OpenBao,
    pub config_yaml: String,
    pub limits: Limits,
    pub latency: Duration,
    pub namespaces: usize,
    pub shards: u32,
    pub replicas: usize,
    pub writes_per_namespace: u64,
}

pub async fn run(setup: Setup<'_>) -> anyhow::Result<Sharded> {
    let Setup {
        binary,
        bao,
        config_yaml,
        limits,
        latency,
        namespaces: n,
        shards,
        replicas,
        writes_per_namespace,
    } = setup;
    let h = Arc::new(start_sim(latency, replicas).await?);
    let namespaces = sim::seed(&h, n)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_yaml)?;
    let client = kube::Client::try_from(h.kube_config())?;
    let initial_list = crate::initial_list_time(&client).await?;
    h.reset_counts();

    let mut daemons = Vec::new();
    let started = Instant::now();
    let started_wall = SystemTime::now();
    for i in 0..replicas {
        let name = replica_name(i);
        let kubeconfig = dir.path().join(format!("kubeconfig-{i}"));
        std::fs::write(&kubeconfig, h.kubeconfig_yaml_for(&name, LEASE_NAMESPACE))?;
        let election = [
            "--shards".to_string(),
            shards.to_string(),
            "--identity".to_string(),
            name.clone(),
            "--lease-namespace".to_string(),
            LEASE_NAMESPACE.to_string(),
        ];
        let log = std::env::temp_dir().join(format!("pullsecretd-bench-sharded-{n}-{i}.log"));
        daemons.push(Some(Daemon::spawn_with(
            binary,
            &config,
            &kubeconfig,
            &limits,
            log,
            &election,
        )?));
    }
    let minimal_writes = writes_per_namespace * n as u64;
    let target =
        1.2 * (minimal_writes as f64 / (f64::from(shards) * f64::from(limits.qps))) + initial_list;
    let mut result = Sharded {
        namespaces: n,
        shards,
        replicas,
        cold_target_seconds: target,
        initial_list_seconds: initial_list,
        takeover_target_seconds: (LEASE_DURATION + Duration::from_secs(10)).as_secs_f64(),
        ..Sharded::default()
    };
    let limit = Duration::from_secs_f64((target * 5.0).max(90.0));
    let alive = || -> anyhow::Result<()> {
        for daemon in daemons.iter_mut().flatten() {
            daemon.check_alive()?;
        }
        Ok(())
    };
    (result.cold_seconds, result.cold_converged) =
        sim::wait_provisioned(&h, &namespaces, started, limit, alive).await?;
    if !result.cold_converged {
        eprintln!("sharded cold start did not converge within {limit:?}");
    }
    result.cold_requests = sim::by_verb(&h);
    result.cold_writes_by_replica = writes_by_replica(&h);
    result.cold_write_span_by_replica = write_span_by_replica(&h, started_wall);
    eprintln!(
        "sharded cold start: {:.1} s (target {:.1} s), writes by replica {:?}, first and last \
         write by replica {:?}",
        result.cold_seconds,
        target,
        result.cold_writes_by_replica,
        result.cold_write_span_by_replica
    );

    // Rotation with a kill: the sweeper runs throughout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sweeper = sim::DanglingSweeper::start(&h, &namespaces, Duration::from_millis(50));
    let version = crate::put_credential(bao, "internal", &format!("sharded-{n}")).await?;
    let rotated_at = Instant::now();
    let wanted = format!("internal=v{version}");
    // Mid-rotation: the kill comes as soon as the first namespace carries the new credential.
    let rotation_limit = Duration::from_secs(180);
    let rotating = {
        let h = Arc::clone(&h);
        let names = namespaces.clone();
        let wanted = wanted.clone();
        tokio::task::spawn_blocking(move || {
            while rotated_at.elapsed() < rotation_limit {
                let started = names.iter().any(|ns| {
                    sim::source_versions(&h, ns, "internal-pull")
                        .is_some_and(|v| v.contains(&wanted))
                });
                if started {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
        .await?
    };
    if !rotating {
        eprintln!("the rotation did not start within {rotation_limit:?}");
    }
    let victim = 0;
    result.killed = replica_name(victim);
    result.killed_shards = holders(&h, shards)
        .iter()
        .enumerate()
        .filter(|(_, holder)| holder.as_deref() == Some(result.killed.as_str()))
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect();
    if let Some(daemon) = daemons[victim].take() {
        result.peak_rss_mib.push(daemon.peak_rss_mib());
        result.cpu_seconds.push(daemon.cpu_seconds());
        daemon.kill();
    }
    let killed_at = Instant::now();
    let killed_shards: BTreeSet<u32> = result.killed_shards.iter().copied().collect();
    let mut pending_takeover = true;
    let mut pending: Vec<String> = namespaces.clone();
    while (pending_takeover || !pending.is_empty()) && rotated_at.elapsed() < rotation_limit {
        if pending_takeover {
            let now = holders(&h, shards);
            let taken = killed_shards.iter().all(|shard| {
                now[*shard as usize]
                    .as_deref()
                    .is_some_and(|holder| holder != result.killed)
            });
            if taken {
                result.takeover_seconds = killed_at.elapsed().as_secs_f64();
                pending_takeover = false;
            }
        }
        let check = Arc::clone(&h);
        let wanted = wanted.clone();
        pending = tokio::task::spawn_blocking(move || {
            pending.retain(|ns| {
                !sim::source_versions(&check, ns, "internal-pull")
                    .is_some_and(|v| v.contains(&wanted))
            });
            pending
        })
        .await?;
        if pending.is_empty() && result.rotation_seconds == 0.0 {
            result.rotation_seconds = rotated_at.elapsed().as_secs_f64();
        }
        let in_killed = pending
            .iter()
            .any(|ns| killed_shards.contains(&pullsecretd::model::shard::shard_of(ns, shards)));
        if !in_killed && result.killed_shards_rotated_seconds == 0.0 {
            result.killed_shards_rotated_seconds = killed_at.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    result.rotation_converged = pending.is_empty();
    if !result.rotation_converged {
        result.rotation_seconds = rotated_at.elapsed().as_secs_f64();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (sweeps, dangling) = sweeper.finish()?;
    result.invariant_sweeps = sweeps;
    result.dangling_references = dangling;
    result.double_writes = double_writes(&h);
    for daemon in daemons.into_iter().flatten() {
        result.peak_rss_mib.push(daemon.peak_rss_mib());
        result.cpu_seconds.push(daemon.cpu_seconds());
        daemon.stop();
    }
    eprintln!(
        "sharded: killed {} (shards {:?}), taken over after {:.1} s, its shards rotated {:.1} s \
         after the kill, all rotated in {:.1} s; {} double writes, {} dangling in {} sweeps",
        result.killed,
        result.killed_shards,
        result.takeover_seconds,
        result.killed_shards_rotated_seconds,
        result.rotation_seconds,
        result.double_writes,
        result.dangling_references.len(),
        result.invariant_sweeps
    );
    Ok(result)
}

/// The README rows for a sharded run.
pub fn markdown(r: &Sharded, met: fn(bool) -> &'static str) -> String {
    let mut out = format!(
        "\n{} namespaces over {} shards, {} replicas (separate processes):\n\n\
         | Measure | Figure | Target | Met |\n|---|---:|---:|---|\n",
        r.namespaces, r.shards, r.replicas
    );
    // `ok`: None for a figure without a target.
    let mut row = |what: &str, figure: String, target: String, ok: Option<bool>| {
        let verdict = ok.map_or("–", met);
        out.push_str(&format!("| {what} | {figure} | {target} | {verdict} |\n"));
    };
    row(
        "Convergence from cold, s",
        format!("{:.1}", r.cold_seconds),
        format!("≤ {:.1}", r.cold_target_seconds),
        Some(r.cold_converged && r.cold_seconds <= r.cold_target_seconds),
    );
    row(
        "Shards of the killed replica led again, s after the kill",
        format!("{:.1}", r.takeover_seconds),
        format!("≤ {:.0}", r.takeover_target_seconds),
        Some(r.takeover_seconds > 0.0 && r.takeover_seconds <= r.takeover_target_seconds),
    );
    row(
        "Their namespaces rotated, s after the kill",
        format!("{:.1}", r.killed_shards_rotated_seconds),
        "–".into(),
        None,
    );
    row(
        "Rotation with the kill: every namespace rotated, s",
        format!("{:.1}", r.rotation_seconds),
        "–".into(),
        (!r.rotation_converged).then_some(false),
    );
    row(
        "Namespace-seconds written by two replicas",
        r.double_writes.to_string(),
        "0".into(),
        Some(r.double_writes == 0),
    );
    row(
        "Dangling references (sweeps)",
        format!("{} ({})", r.dangling_references.len(), r.invariant_sweeps),
        "0".into(),
        Some(r.dangling_references.is_empty()),
    );
    let rss: Vec<String> = r.peak_rss_mib.iter().map(|m| format!("{m:.1}")).collect();
    row(
        "Peak RSS per replica, MiB",
        rss.join(" / "),
        "–".into(),
        None,
    );
    let writes: Vec<String> = r
        .cold_writes_by_replica
        .iter()
        .map(|(who, n)| format!("{who}: {n}"))
        .collect();
    row(
        "Cold-start writes by replica",
        writes.join(", "),
        "–".into(),
        None,
    );
    let spans: Vec<String> = r
        .cold_write_span_by_replica
        .iter()
        .map(|(who, (first, last))| format!("{who}: {first:.1} – {last:.1}"))
        .collect();
    row(
        "Cold start: first – last write by replica, s",
        spans.join(", "),
        "–".into(),
        None,
    );
    out
}

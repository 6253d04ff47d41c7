//! The `run` daemon against kube-sim (HTTPS, real `kube::Client`) and a real OpenBao: watches
//! provision and repair namespaces, Vault rotations (in place and versioned, with an invariant
//! checker), a steady state that costs nothing, leader election with takeover, watch drops and
//! 410 Expired, a Vault outage, config reload, and SIGTERM.

use crate::support::cluster;
use pullsecretd_testkit::openbao;
use pullsecretd_testkit::poll::eventually;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_sim::Options;
use secrecy::SecretString;
use serde_json::json;

use cluster::{Fixture, nz, password_in};
use openbao::{OpenBao, ROOT_TOKEN, audit_requests};
use pullsecretd::cluster::Throttle;
use pullsecretd::cluster::lease::LeaseConfig;
use pullsecretd::config::{Config, LinkKind};
use pullsecretd::daemon::{self, DaemonOptions, Running};
use pullsecretd::diff::linked_names;
use pullsecretd::source::SourceContext;
use pullsecretd::source::vault::{RetryPolicy, TokenEnvironment, VaultSession};

const SENTINEL: &str = "SENTINEL-daemon-pw-5c1e";

fn options(
    config_path: &Path,
    sources: SourceContext,
    lease: Option<LeaseConfig>,
) -> DaemonOptions {
    DaemonOptions {
        config_path: config_path.to_path_buf(),
        config: None,
        sources,
        throttle: Throttle::new(nz(500), nz(200), 4),
        events: false,
        concurrency: 8,
        lease,
        listen: Some("127.0.0.1:0".parse().expect("address")),
        reload_debounce: Duration::from_millis(150),
        debounce: Duration::from_millis(10),
    }
}

async fn start(fx: &Fixture, sources: SourceContext, lease: Option<LeaseConfig>) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let path = fx.dir.path().join("config.yaml");
    daemon::start(fx.client.clone(), options(&path, sources, lease))
        .await
        .expect("daemon starts")
}

fn pull_list(fx: &Fixture, namespace: &str, account: &str) -> Vec<String> {
    fx.server
        .get("", "serviceaccounts", namespace, account)
        .map(|v| {
            let sa: ServiceAccount = serde_json::from_value(v).expect("a ServiceAccount");
            linked_names(&sa, LinkKind::Pull)
                .into_iter()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .expect("listener answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

pub(crate) fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn namespaces_are_provisioned_cleaned_up_and_repaired_from_watches() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.config(SENTINEL, "");
    let running = start(&fx, SourceContext::default(), None).await;
    eventually(Duration::from_secs(20), "a provisioned", || {
        fx.secret("a", "reg-pull").is_some() && pull_list(&fx, "a", "default") == ["reg-pull"]
    })
    .await;

    // A new labelled namespace, with a foreign reference on its default account.
    fx.namespace("web-1", json!({"team": "web"}));
    fx.account("web-1", "default", &["users-own"], &[]).await;
    let took = eventually(Duration::from_secs(10), "web-1 provisioned", || {
        fx.secret("web-1", "reg-pull").is_some()
            && pull_list(&fx, "web-1", "default") == ["users-own", "reg-pull"]
    })
    .await;
    eprintln!("web-1 provisioned {took:?} after it appeared");
    let secret = fx.secret("web-1", "reg-pull").expect("secret");
    assert_eq!(password_in(&secret), SENTINEL);

    // Drift: the Secret deleted by hand, the link removed by hand.
    let secrets: Api<Secret> = Api::namespaced(fx.client.clone(), "web-1");
    secrets
        .delete("reg-pull", &DeleteParams::default())
        .await
        .expect("deleted by hand");
    eventually(Duration::from_secs(20), "secret restored", || {
        fx.secret("web-1", "reg-pull").is_some()
    })
    .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(fx.client.clone(), "web-1");
    accounts
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": [{"name": "users-own"}]})),
        )
        .await
        .expect("unlinked by hand");
    eventually(Duration::from_secs(20), "link restored", || {
        pull_list(&fx, "web-1", "default") == ["users-own", "reg-pull"]
    })
    .await;

    // Label removed: cleaned up, the foreign reference stays.
    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    namespaces
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await
        .expect("label removed");
    eventually(Duration::from_secs(20), "web-1 cleaned up", || {
        fx.secret("web-1", "reg-pull").is_none()
            && pull_list(&fx, "web-1", "default") == ["users-own"]
    })
    .await;
    let (status, text) = http_get(running.address.expect("listener"), "/metrics").await;
    assert_eq!(status, 200);
    assert!(!text.contains(SENTINEL));
    assert!(
        text.contains("pullsecretd_reconciles_total{result=\"ok\"}"),
        "{text}"
    );
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);
}

// ---------------------------------------------------------------------------------------------
// Vault-sourced tests.

const FAST_RETRY: RetryPolicy = RetryPolicy {
    retries: 1,
    min_delay: Duration::from_millis(20),
    max_delay: Duration::from_millis(50),
};

fn vault_config(fx: &Fixture, bao: &OpenBao, rotation: &str, selector: &str) -> PathBuf {
    let yaml = format!(
        "vault:\n  address: {}\n  timeout: 1s\n  auth: {{ method: token }}\n\
         registries:\n  reg:\n    server: registry.example.com\n    from: {{ vault: {{ path: registries/reg }} }}\n\
         pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ selector: \"{selector}\" }}\n\
         \x20   rotation: {rotation}\n",
        bao.address
    );
    let path = fx.dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).expect("config written");
    Config::from_yaml(&yaml, &path).expect("valid config");
    path
}

fn vault_sources(path: &Path) -> SourceContext {
    let config = Config::load(path).expect("config");
    let vault = config.vault.as_ref().expect("vault block");
    let session = VaultSession::with_environment(
        vault,
        TokenEnvironment {
            vault_token: Some(SecretString::from(ROOT_TOKEN.to_string())),
            home: None,
        },
    )
    .expect("session")
    .with_retry(FAST_RETRY);
    SourceContext {
        vault: Some(Arc::new(session)),
        ..SourceContext::default()
    }
}

async fn put_password(bao: &OpenBao, password: &str) {
    bao.kv2_put(
        "secret",
        "registries/reg",
        json!({"username": "robot", "password": password}),
    )
    .await;
}

/// Every service account's pull references name a Secret that exists.
fn dangling_references(fx: &Fixture, namespaces: &[String]) -> Vec<String> {
    let mut dangling = Vec::new();
    for ns in namespaces {
        for name in pull_list(fx, ns, "default") {
            if fx.server.get("", "secrets", ns, &name).is_none() && name != "users-own" {
                dangling.push(format!("{ns}/{name}"));
            }
        }
    }
    dangling
}

#[tokio::test]
async fn vault_rotation_versioned_never_dangles_and_old_versions_go_after_grace() {
    let bao = OpenBao::start().await;
    put_password(&bao, "v1").await;
    let fx = Fixture::start(Options::default()).await;
    let namespaces: Vec<String> = (0..5).map(|i| format!("web-{i}")).collect();
    for ns in &namespaces {
        fx.namespace(ns, json!({"team": "web"}));
    }
    let path = vault_config(
        &fx,
        &bao,
        "{ refresh: 200ms, strategy: versioned, grace: 1s, keep: 1 }",
        "team=web",
    );
    let running = start(&fx, vault_sources(&path), None).await;
    eventually(Duration::from_secs(20), "first version linked", || {
        namespaces
            .iter()
            .all(|ns| pull_list(&fx, ns, "default").len() == 1)
    })
    .await;
    let first = pull_list(&fx, "web-0", "default")[0].clone();
    assert!(first.starts_with("reg-pull-"), "{first}");

    // The invariant checker polls kube-sim while the rotation runs.
    let stop = AtomicBool::new(false);
    let checker = async {
        let mut violations = Vec::new();
        let mut samples = 0u32;
        while !stop.load(Ordering::Relaxed) {
            for ns in &namespaces {
                let Some(sa) = fx.server.get("", "serviceaccounts", ns, "default") else {
                    continue;
                };
                let sa: ServiceAccount = serde_json::from_value(sa).expect("SA");
                for kind in [LinkKind::Pull, LinkKind::Mount] {
                    for name in linked_names(&sa, kind) {
                        if fx.server.get("", "secrets", ns, name).is_none() {
                            violations.push(format!("{ns}/{name}"));
                        }
                    }
                }
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (violations, samples)
    };
    let rotation = async {
        put_password(&bao, "v2").await;
        eventually(
            Duration::from_secs(5),
            "second version linked everywhere",
            || {
                namespaces.iter().all(|ns| {
                    pull_list(&fx, ns, "default")
                        .first()
                        .is_some_and(|n| *n != first)
                })
            },
        )
        .await;
        let second = pull_list(&fx, "web-0", "default")[0].clone();
        assert_eq!(
            password_in(&fx.secret("web-0", &second).expect("new version")),
            "v2"
        );
        assert_eq!(
            fx.secret("web-0", &second).and_then(|s| s.immutable),
            Some(true)
        );
        // Within the grace period the old version is unlinked but still there.
        assert!(
            fx.secret("web-0", &first).is_some(),
            "old version kept for the grace period"
        );
        eventually(
            Duration::from_secs(5),
            "old versions deleted after grace",
            || namespaces.iter().all(|ns| fx.secret(ns, &first).is_none()),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
    };
    let ((violations, samples), ()) = tokio::join!(checker, rotation);
    assert!(violations.is_empty(), "dangling references: {violations:?}");
    assert!(samples > 10, "the checker ran ({samples} samples)");
    assert!(dangling_references(&fx, &namespaces).is_empty());
    let (_, text) = http_get(running.address.expect("listener"), "/metrics").await;
    assert_eq!(
        metric(&text, "pullsecretd_rotations_total"),
        Some(5.0),
        "{text}"
    );
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn vault_rotation_in_place_updates_exactly_the_using_namespaces() {
    let bao = OpenBao::start().await;
    put_password(&bao, "one").await;
    let fx = Fixture::start(Options::default()).await;
    let namespaces: Vec<String> = (0..4).map(|i| format!("web-{i}")).collect();
    for ns in &namespaces {
        fx.namespace(ns, json!({"team": "web"}));
    }
    fx.namespace("other", json!({"team": "db"}));
    let path = vault_config(&fx, &bao, "{ refresh: 200ms }", "team=web");
    let running = start(&fx, vault_sources(&path), None).await;
    // Provisioned means written *and* linked: a link still in flight would otherwise be counted
    // as part of the rotation below.
    eventually(Duration::from_secs(20), "provisioned and linked", || {
        namespaces.iter().all(|ns| {
            fx.secret(ns, "reg-pull").is_some() && pull_list(&fx, ns, "default") == ["reg-pull"]
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.server.reset_counts();
    put_password(&bao, "two").await;
    eventually(Duration::from_secs(20), "updated in place", || {
        namespaces.iter().all(|ns| {
            fx.secret(ns, "reg-pull")
                .is_some_and(|s| password_in(&s) == "two")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = fx.server.counts();
    assert_eq!(counts.count("update", "secrets"), 4, "{counts:#?}");
    assert_eq!(
        counts.count("update", "serviceaccounts"),
        0,
        "links unchanged"
    );
    assert_eq!(counts.count_in("get", "secrets", "other"), 0);
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn steady_state_with_200_namespaces_costs_no_writes_no_polling_and_only_metadata_reads() {
    let bao = OpenBao::start().await;
    put_password(&bao, "steady").await;
    let fx = Fixture::start(Options::default()).await;
    let namespaces: Vec<String> = (0..200).map(|i| format!("web-{i:03}")).collect();
    for ns in &namespaces {
        fx.namespace(ns, json!({"team": "web"}));
    }
    let path = vault_config(&fx, &bao, "{ refresh: 200ms }", "team=web");
    let running = start(&fx, vault_sources(&path), None).await;
    let took = eventually(
        Duration::from_secs(30),
        "200 namespaces provisioned",
        || {
            fx.server.count_objects("", "secrets") >= 200
                && namespaces
                    .iter()
                    .all(|ns| pull_list(&fx, ns, "default") == ["reg-pull"])
        },
    )
    .await;
    eprintln!("200 namespaces converged in {took:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    fx.server.reset_counts();
    let audit_before = audit_requests(&bao.audit_log()).len();

    // Several refresh periods with nothing changing anywhere: wait until OpenBao has seen at
    // least four metadata polls (a slow machine stretches the periods), then look at the API.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while audit_requests(&bao.audit_log()).len() < audit_before + 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "sources stopped refreshing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = fx.server.counts();
    assert_eq!(counts.writes(), 0, "no API writes: {counts:#?}");
    assert_eq!(counts.verb("list"), 0, "no list polling: {counts:#?}");
    assert_eq!(counts.verb("get"), 0, "no get polling: {counts:#?}");
    let audited: Vec<(String, String, Vec<String>)> = audit_requests(&bao.audit_log())
        .into_iter()
        .skip(audit_before)
        .collect();
    let paths: BTreeSet<&str> = audited.iter().map(|(_, p, _)| p.as_str()).collect();
    assert!(
        audited.len() >= 4,
        "metadata polled each period: {audited:?}"
    );
    assert_eq!(
        paths,
        BTreeSet::from(["secret/metadata/registries/reg"]),
        "metadata reads only"
    );
    eprintln!(
        "steady state over 1.5 s: {} API requests, {} Vault requests (metadata)",
        counts.total,
        audited.len()
    );
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn vault_outage_keeps_secrets_ages_the_credential_and_recovers_without_restart() {
    let mut bao = OpenBao::start().await;
    put_password(&bao, "before").await;
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("web-1", json!({"team": "web"}));
    let path = vault_config(&fx, &bao, "{ refresh: 200ms }", "team=web");
    let running = start(&fx, vault_sources(&path), None).await;
    let address = running.address.expect("listener");
    eventually(Duration::from_secs(20), "provisioned", || {
        fx.secret("web-1", "reg-pull").is_some()
    })
    .await;
    eventually(Duration::from_secs(20), "ready", || {
        running.health.ready.load(Ordering::Relaxed)
    })
    .await;

    bao.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (ready, _) = http_get(address, "/readyz").await;
    assert_eq!(ready, 200, "stays ready on the last good credential");
    let (_, text) = http_get(address, "/metrics").await;
    let age = metric(
        &text,
        "pullsecretd_credential_age_seconds{registry=\"reg\"}",
    )
    .expect("age");
    assert!(
        age >= 1.0,
        "credential age grows during the outage: {age}\n{text}"
    );
    assert!(
        metric(&text, "pullsecretd_source_errors_total{registry=\"reg\"}").unwrap_or(0.0) >= 2.0
    );
    assert_eq!(
        password_in(&fx.secret("web-1", "reg-pull").expect("kept")),
        "before"
    );

    // A dev server restarts empty: two writes so the KV version moves past the old one.
    bao.restart().await;
    put_password(&bao, "after-0").await;
    put_password(&bao, "after").await;
    eventually(Duration::from_secs(20), "resumed after the outage", || {
        fx.secret("web-1", "reg-pull")
            .is_some_and(|s| password_in(&s) == "after")
    })
    .await;
    let (_, text) = http_get(address, "/metrics").await;
    let age = metric(
        &text,
        "pullsecretd_credential_age_seconds{registry=\"reg\"}",
    )
    .expect("age");
    assert!(age < 1.0, "fresh again: {age}");
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);
}

// ---------------------------------------------------------------------------------------------
// Leader election, watch faults, config reload.

pub(crate) fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "kube-system".into(),
        name: "pullsecretd".into(),
        identity: identity.into(),
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(200),
        shards: 1,
    }
}

fn lease_holder(fx: &Fixture) -> Option<String> {
    fx.server
        .get(
            "coordination.k8s.io",
            "leases",
            "kube-system",
            "pullsecretd",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

#[tokio::test]
async fn two_daemons_one_leads_and_the_standby_takes_over_when_it_dies() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("web-1", json!({"team": "web"}));
    fx.config(SENTINEL, "");
    let one = start(&fx, SourceContext::default(), Some(lease("one"))).await;
    eventually(Duration::from_secs(20), "one leads", || {
        lease_holder(&fx).as_deref() == Some("one")
    })
    .await;
    let two = start(&fx, SourceContext::default(), Some(lease("two"))).await;
    eventually(Duration::from_secs(20), "provisioned by the leader", || {
        fx.secret("web-1", "reg-pull").is_some()
    })
    .await;

    // Never both leading: sampled throughout.
    let both = Arc::new(AtomicBool::new(false));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (a, b) = (one.leadership.clone(), two.leadership.clone());
        let (both, sampling) = (Arc::clone(&both), Arc::clone(&sampling));
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if a.is_leading() && b.is_leading() {
                    both.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(one.leadership.is_leading() && !two.leadership.is_leading());

    one.kill();
    let killed = Instant::now();
    eventually(Duration::from_secs(20), "two takes over", || {
        two.leadership.is_leading()
    })
    .await;
    let takeover = killed.elapsed();
    eprintln!("standby took over {takeover:?} after the leader died");
    // Correctness, not speed: the standby waits out the lease (1.5 s) and then takes over;
    // three lease durations leave room for a loaded machine.
    assert!(takeover < Duration::from_millis(3 * 1500), "{takeover:?}");
    fx.namespace("web-2", json!({"team": "web"}));
    eventually(Duration::from_secs(20), "the new leader converges", || {
        fx.secret("web-2", "reg-pull").is_some()
    })
    .await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    assert!(!both.load(Ordering::Relaxed), "both replicas led at once");

    two.stop();
    assert!(two.wait(Duration::from_secs(5)).await);
    assert_eq!(lease_holder(&fx), None, "the Lease is released on shutdown");
}

#[tokio::test]
async fn watch_drops_and_410_expired_resume_without_missing_anything() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("web-1", json!({"team": "web"}));
    fx.config(SENTINEL, "");
    let running = start(&fx, SourceContext::default(), None).await;
    eventually(Duration::from_secs(20), "provisioned", || {
        fx.secret("web-1", "reg-pull").is_some()
    })
    .await;

    // Every watch is dropped after 300 ms; history is compacted so resumes get 410 Expired.
    fx.server
        .set_faults(|f| f.watch_drop_after = Some(Duration::from_millis(300)));
    let secrets: Api<Secret> = Api::namespaced(fx.client.clone(), "web-1");
    for round in 0..3 {
        fx.server.compact();
        fx.namespace(&format!("web-new-{round}"), json!({"team": "web"}));
        secrets
            .delete("reg-pull", &DeleteParams::default())
            .await
            .expect("deleted by hand");
        fx.server.compact();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    eventually(Duration::from_secs(20), "nothing missed", || {
        fx.secret("web-1", "reg-pull").is_some()
            && (0..3).all(|r| fx.secret(&format!("web-new-{r}"), "reg-pull").is_some())
    })
    .await;
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn config_reload_applies_a_valid_config_and_rejects_an_invalid_one() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.namespace("b", json!({}));
    fx.config(SENTINEL, "");
    let running = start(&fx, SourceContext::default(), None).await;
    eventually(Duration::from_secs(20), "a provisioned", || {
        fx.secret("a", "reg-pull").is_some()
    })
    .await;
    assert!(fx.secret("b", "reg-pull").is_none());

    // Valid: project b added, a dropped → b provisioned, a cleaned up.
    let path = fx.dir.path().join("config.yaml");
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replace("names: [a]", "names: [b]")).expect("rewritten");
    eventually(Duration::from_secs(20), "reloaded", || {
        fx.secret("b", "reg-pull").is_some() && fx.secret("a", "reg-pull").is_none()
    })
    .await;

    // Invalid: rejected, the daemon keeps running on the last good config.
    std::fs::write(&path, "pullSecrets: [ { name: 7 } ]\n").expect("broken");
    tokio::time::sleep(Duration::from_millis(500)).await;
    fx.namespace("web-9", json!({"team": "web"}));
    eventually(
        Duration::from_secs(3),
        "still running on the old config",
        || fx.secret("web-9", "reg-pull").is_some() && fx.secret("b", "reg-pull").is_some(),
    )
    .await;
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn metrics_never_carry_namespaces_or_secrets() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.config(SENTINEL, "");
    let running = start(&fx, SourceContext::default(), None).await;
    eventually(Duration::from_secs(20), "provisioned", || {
        fx.secret("a", "reg-pull").is_some()
    })
    .await;
    let address = running.address.expect("listener");
    assert_eq!(http_get(address, "/healthz").await.0, 200);
    eventually(Duration::from_secs(20), "ready", || {
        running.health.ready.load(Ordering::Relaxed)
    })
    .await;
    let (status, text) = http_get(address, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "pullsecretd_reconciles_total",
        "pullsecretd_api_writes_total",
        "pullsecretd_source_reads_total",
        "pullsecretd_credential_age_seconds",
        "pullsecretd_rotations_total",
        "pullsecretd_last_successful_sync_timestamp_seconds",
        "pullsecretd_reconcile_duration_seconds",
        "pullsecretd_leader",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(!text.contains(SENTINEL) && !text.contains("namespace=\""));
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);
}

//! The proof that matters: a pull secret pullsecretd writes actually authenticates. pullsecretd
//! renders the Secret into kube-sim; its `.dockerconfigjson` data, taken as skopeo's
//! `--authfile`, pushes to and lists a real registry (docker-registry with htpasswd); after the
//! source rotates to a wrong password, the same path gets `unauthorized`.

use crate::support::cluster;
use pullsecretd_testkit::registry;

use kube_sim::Options;
use serde_json::json;

use cluster::Fixture;
use registry::Registry;

const PASSWORD: &str = "SENTINEL-registry-pw-31f9";

/// Writes the Secret's `.dockerconfigjson` data, as the kubelet would read it, to a file.
fn authfile_from_secret(fx: &Fixture, name: &str) -> std::path::PathBuf {
    let secret = fx
        .secret("a", "reg-pull")
        .expect("secret written by pullsecretd");
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let data = secret.data.expect("data");
    let path = fx.dir.path().join(name);
    std::fs::write(&path, &data[".dockerconfigjson"].0).expect("authfile");
    path
}

#[tokio::test]
async fn rendered_pull_secret_authenticates_against_a_real_registry() {
    let registry = Registry::start("robot", PASSWORD);
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.account("a", "builder", &[], &[]).await;

    let report = fx.once(&fx.config_for(&registry.host, PASSWORD, "")).await;
    assert!(report.converged(), "{report:#?}");
    let good = authfile_from_secret(&fx, "good.json");
    let pushed = registry.push(&good, "team/app", "v1");
    assert!(
        pushed.status.success(),
        "push: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let listed = registry.list_tags(&good, "team/app");
    assert!(
        listed.status.success(),
        "list: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let tags: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("skopeo JSON");
    assert_eq!(tags["Tags"], json!(["v1"]));

    // The source rotates to a wrong password; pullsecretd follows; the registry refuses.
    let report = fx
        .once(&fx.config_for(&registry.host, "wrong-password", ""))
        .await;
    assert!(report.converged(), "{report:#?}");
    let bad = authfile_from_secret(&fx, "bad.json");
    let refused = registry.list_tags(&bad, "team/app");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
}

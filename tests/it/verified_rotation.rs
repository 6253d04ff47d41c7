//! Verified rotation for real (`registries.NAME.verify`): OpenBao (KV v2) → the daemon →
//! kube-sim, with the credential checked against a real Debian `docker-registry` before it is
//! published — htpasswd (Basic) and token auth through the token server (Bearer). A correct new
//! password is published; a wrong one is held with a `CredentialRejected` Event and a metric,
//! and the Secret still pulls with `skopeo`; the registry's access log (or the realm's request
//! record) shows the checks. A registry nobody answers for is held or published by
//! `verify.unreachable`. Only loopback addresses are contacted.

use crate::daemon::{http_get, metric};
use crate::support::cluster::{self, Fixture, nz};
use pullsecretd_testkit::openbao::{OpenBao, ROOT_TOKEN};
use pullsecretd_testkit::poll::eventually;
use pullsecretd_testkit::registry::{Registry, TokenAuth};
use pullsecretd_testkit::token_server::TokenServer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::Options;
use secrecy::SecretString;
use serde_json::json;

use pullsecretd::config::Config;
use pullsecretd::daemon::{self, Running};
use pullsecretd::source::SourceContext;
use pullsecretd::source::vault::{RetryPolicy, TokenEnvironment, VaultSession};

const USER: &str = "robot";
const FIRST: &str = "SENTINEL-verify-pw-1-7e21";
const SECOND: &str = "SENTINEL-verify-pw-2-c3d9";
const WRONG: &str = "SENTINEL-verify-wrong-44aa";
const REPO: &str = "team/app";
const WAIT: Duration = Duration::from_secs(30);

/// A docker auth file for `host` with `user:password`.
fn authfile(dir: &Path, name: &str, host: &str, user: &str, password: &str) -> PathBuf {
    let path = dir.join(name);
    let auth = STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(&path, json!({"auths": {host: {"auth": auth}}}).to_string())
        .expect("authfile written");
    path
}

fn push_image(registry: &Registry, auth: &Path) {
    let out = registry.push(auth, REPO, "v1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn put_credential(bao: &OpenBao, user: &str, password: &str) {
    bao.kv2_put(
        "secret",
        "registries/reg",
        json!({"username": user, "password": password}),
    )
    .await;
}

/// The daemon's config: Vault as source, one pull secret `reg-pull` in `web` refreshed every
/// 200 ms, and `registries:` as given.
fn write_config(fx: &Fixture, bao: &OpenBao, registries: &str) -> PathBuf {
    let yaml = format!(
        "vault:\n  address: {}\n  timeout: 1s\n  auth: {{ method: token }}\n\
         registries:\n{registries}\
         pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ names: [web] }}\n\
         \x20   rotation: {{ refresh: 200ms }}\n",
        bao.address
    );
    let path = fx.dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).expect("config written");
    Config::from_yaml(&yaml, &path).expect("valid config");
    path
}

async fn start_daemon(fx: &Fixture, path: &Path) -> Running {
    fx.namespace("pullsecretd", json!({}));
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
    .with_retry(RetryPolicy {
        retries: 1,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
    });
    let options = daemon::DaemonOptions {
        sources: SourceContext {
            vault: Some(Arc::new(session)),
            ..SourceContext::default()
        },
        throttle: pullsecretd::cluster::Throttle::new(nz(500), nz(200), 4),
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..fx.daemon_options(4)
    };
    daemon::start(fx.client.clone(), options)
        .await
        .expect("daemon starts")
}

fn password_of(fx: &Fixture) -> Option<String> {
    fx.secret("web", "reg-pull")
        .map(|secret| cluster::password_in(&secret))
}

/// Messages of pullsecretd's `reason` Events in `namespace`.
fn events(fx: &Fixture, namespace: &str, reason: &str) -> Vec<String> {
    fx.server
        .list("", "events", Some(namespace))
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn checks_metric(running: &Running, result: &str) -> f64 {
    let address = running.address.expect("listener");
    let (_, text) = http_get(address, "/metrics").await;
    metric(
        &text,
        &format!("pullsecretd_credential_checks_total{{registry=\"reg\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

/// The Secret's data, as a node's auth file, pulls `team/app:v1`.
fn pulls_with_secret(fx: &Fixture, registry: &Registry, file: &str) {
    let auth = fx.merged_authfile("web", &["reg-pull"], file);
    let out = registry.pull(&auth, REPO, "v1");
    assert!(
        out.status.success(),
        "the published Secret pulls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Holds the refused credential: waits for the Event, then checks the Secret kept `kept`, the
/// metric counted the refusal, and the refused version is not asked about again.
async fn refused_and_held(fx: &Fixture, running: &Running, kept: &str, checks: impl Fn() -> usize) {
    eventually(WAIT, "a CredentialRejected Event in web", || {
        !events(fx, "web", "CredentialRejected").is_empty()
    })
    .await;
    let message = events(fx, "web", "CredentialRejected").remove(0);
    assert!(
        message.contains("registry reg") && message.contains("HTTP 401"),
        "the Event names the registry and the status: {message}"
    );
    assert!(!message.contains(WRONG), "no password in the Event");
    assert!(checks_metric(running, "rejected").await >= 1.0);
    let asked = checks();
    // Several refreshes (200 ms each) later: still the old password, and no new check of the
    // same refused version.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(password_of(fx).as_deref(), Some(kept), "the old one stays");
    assert_eq!(checks(), asked, "a refused version is checked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_a_correct_password_is_published_and_a_wrong_one_held() {
    let fx = Fixture::start(Options::default()).await;
    let registry = Registry::start_logged(&[(USER, FIRST)]);
    push_image(
        &registry,
        &authfile(fx.dir.path(), "push.json", &registry.host, USER, FIRST),
    );
    // skopeo's own pings while pushing are not pullsecretd's.
    let pushed = registry.v2_checks().len();
    let bao = OpenBao::start().await;
    put_credential(&bao, USER, FIRST).await;
    fx.namespace("web", json!({}));
    let path = write_config(
        &fx,
        &bao,
        &format!(
            "  reg:\n    server: {}\n    from: {{ vault: {{ path: registries/reg }} }}\n\
             \x20   verify: true\n",
            registry.host
        ),
    );
    let running = start_daemon(&fx, &path).await;
    eventually(WAIT, "the first password published", || {
        password_of(&fx).as_deref() == Some(FIRST)
    })
    .await;
    // The check: an anonymous ping (401, the Basic challenge), then the credential (200).
    let statuses = |from: usize| -> Vec<u16> {
        registry.v2_checks()[from..]
            .iter()
            .map(|l| l.status)
            .collect()
    };
    eventually(WAIT, "the first check in the access log", || {
        statuses(pushed).contains(&200)
    })
    .await;
    assert_eq!(statuses(pushed), [401, 200]);

    // A correct rotation: the registry knows the new password first, then Vault has it.
    registry.set_password(USER, SECOND);
    let before = registry.v2_checks().len();
    put_credential(&bao, USER, SECOND).await;
    eventually(WAIT, "the second password published", || {
        password_of(&fx).as_deref() == Some(SECOND)
    })
    .await;
    eventually(WAIT, "its check logged", || statuses(before).contains(&200)).await;
    assert!(checks_metric(&running, "accepted").await >= 2.0);
    pulls_with_secret(&fx, &registry, "after-second.json");

    // A typo in Vault: the registry refuses it, the Secret keeps the second password.
    let before = registry.v2_checks().len();
    put_credential(&bao, USER, WRONG).await;
    refused_and_held(&fx, &running, SECOND, || registry.v2_checks().len()).await;
    assert_eq!(
        statuses(before),
        [401, 401],
        "the ping and the refused credential"
    );
    pulls_with_secret(&fx, &registry, "after-wrong.json");

    // Fixed in Vault (the published password again): the rejection is over.
    let address = running.address.expect("listener");
    let rejected_problems = async || {
        let (_, text) = http_get(address, "/metrics").await;
        metric(&text, "pullsecretd_problems{reason=\"CredentialRejected\"}").unwrap_or(0.0)
    };
    assert_eq!(rejected_problems().await, 1.0, "one namespace reports it");
    put_credential(&bao, USER, SECOND).await;
    pullsecretd_testkit::poll::eventually_async(WAIT, "the rejection is over", async || {
        rejected_problems().await == 0.0
    })
    .await;
    assert_eq!(password_of(&fx).as_deref(), Some(SECOND));
    for text in [registry.access_log_text(), registry.app_log()] {
        for password in [FIRST, SECOND, WRONG] {
            assert!(
                !text.contains(password),
                "no password in the registry's logs"
            );
        }
    }
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_the_credential_goes_to_the_realm_and_a_refused_one_is_held() {
    let fx = Fixture::start(Options::default()).await;
    // A rotation to another robot account: the realm knows both; the wrong password is refused.
    let tokens = TokenServer::start(&[("robot-1", FIRST), ("robot-2", SECOND)]);
    let registry = Registry::start_token(&TokenAuth {
        realm: &tokens.realm,
        service: &tokens.service,
        issuer: &tokens.issuer,
        rootcertbundle: tokens.root_cert_path(),
    });
    push_image(
        &registry,
        &authfile(fx.dir.path(), "push.json", &registry.host, "robot-1", FIRST),
    );
    let bao = OpenBao::start().await;
    put_credential(&bao, "robot-1", FIRST).await;
    fx.namespace("web", json!({}));
    let path = write_config(
        &fx,
        &bao,
        &format!(
            "  reg:\n    server: {}\n    from: {{ vault: {{ path: registries/reg }} }}\n\
             \x20   verify: {{ unreachable: hold, timeout: 5s }}\n",
            registry.host
        ),
    );
    let realm_users = |from: usize| -> Vec<(Option<String>, bool)> {
        tokens.requests()[from..]
            .iter()
            .map(|r| (r.username.clone(), r.granted))
            .collect()
    };
    let running = start_daemon(&fx, &path).await;
    eventually(WAIT, "robot-1 published", || {
        password_of(&fx).as_deref() == Some(FIRST)
    })
    .await;
    assert!(
        realm_users(0).contains(&(Some("robot-1".into()), true)),
        "the realm was asked with the image host's credential: {:?}",
        realm_users(0)
    );

    let before = tokens.requests().len();
    put_credential(&bao, "robot-2", SECOND).await;
    eventually(WAIT, "robot-2 published", || {
        password_of(&fx).as_deref() == Some(SECOND)
    })
    .await;
    assert_eq!(realm_users(before), [(Some("robot-2".into()), true)]);
    pulls_with_secret(&fx, &registry, "after-second.json");

    let before = tokens.requests().len();
    put_credential(&bao, "robot-2", WRONG).await;
    refused_and_held(&fx, &running, SECOND, || tokens.requests().len()).await;
    assert_eq!(realm_users(before), [(Some("robot-2".into()), false)]);
    let message = events(&fx, "web", "CredentialRejected").remove(0);
    assert!(message.contains("token realm"), "{message}");
    pulls_with_secret(&fx, &registry, "after-wrong.json");
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_held_or_published_by_policy() {
    let fx = Fixture::start(Options::default()).await;
    let bao = OpenBao::start().await;
    put_credential(&bao, USER, FIRST).await;
    fx.namespace("web", json!({}));
    // Nothing listens on these loopback ports.
    let closed: Vec<String> = (0..2)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            listener.local_addr().expect("address").to_string()
        })
        .collect();
    let yaml = format!(
        "vault:\n  address: {}\n  timeout: 1s\n  auth: {{ method: token }}\n\
         registries:\n\
         \x20 held:\n    server: {}\n    from: {{ vault: {{ path: registries/reg }} }}\n\
         \x20   verify: {{ unreachable: hold, timeout: 1s }}\n\
         \x20 open:\n    server: {}\n    from: {{ vault: {{ path: registries/reg }} }}\n\
         \x20   verify: {{ unreachable: publish, timeout: 1s }}\n\
         pullSecrets:\n\
         \x20 - {{ name: held-pull, registries: [held], projects: {{ names: [web] }} }}\n\
         \x20 - {{ name: open-pull, registries: [open], projects: {{ names: [web] }} }}\n",
        bao.address, closed[0], closed[1]
    );
    let path = fx.dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).expect("config written");
    Config::from_yaml(&yaml, &path).expect("valid config");
    let running = start_daemon(&fx, &path).await;
    eventually(WAIT, "published unchecked (unreachable: publish)", || {
        fx.secret("web", "open-pull")
            .is_some_and(|s| cluster::password_in(&s) == FIRST)
    })
    .await;
    let address = running.address.expect("listener");
    let unreachable = async |registry: &str| {
        let (_, text) = http_get(address, "/metrics").await;
        metric(
            &text,
            &format!(
                "pullsecretd_credential_checks_total{{registry=\"{registry}\",result=\"unreachable\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    // The held one is tried again (the source's failure backoff), and never published.
    pullsecretd_testkit::poll::eventually_async(WAIT, "held, and checked again", async || {
        unreachable("held").await >= 2.0
    })
    .await;
    assert!(unreachable("open").await >= 1.0);
    assert!(
        fx.secret("web", "held-pull").is_none(),
        "held: nothing unchecked is published"
    );
    running.stop();
}

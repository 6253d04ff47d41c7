//! Delegated authentication for real: a registry (Debian's `docker-registry`, distribution 2.8)
//! with `auth: token` whose realm is a token server on another loopback port (the "SSO" host,
//! tests/it/support/token_server.rs). pullsecretd writes the procedure's pair — the registry host
//! (`private-registry`) and the SSO host (`redhat-connect-sso`) — into kube-sim, as one Secret
//! (`layout: combined`) or two linked ones (`layout: split`). skopeo, given only the Secret data,
//! pushes and pulls through the token flow.
//!
//! Which entry matters (docs/delegated-auth.md): clients pick credentials by the *image* host and send them
//! to whatever realm the registry names. So a wrong password in the SSO host's entry does not
//! break a pull, and a wrong one in the registry host's entry does, although the realm is the
//! SSO host. The token server records the username of every request to show it.

use crate::support::cluster;
use pullsecretd_testkit::jwt;
use pullsecretd_testkit::registry;
use pullsecretd_testkit::token_server;

use std::process::Output;

use kube_sim::Options;
use serde_json::json;

use cluster::{Entry, Fixture};
use registry::{Registry, TokenAuth};
use token_server::TokenServer;

const REGISTRY_USER: &str = "robot";
const REGISTRY_PASSWORD: &str = "SENTINEL-token-registry-pw-5d3a";
const SSO_USER: &str = "sso-user";
const SSO_PASSWORD: &str = "SENTINEL-token-sso-pw-81c4";
const WRONG: &str = "SENTINEL-wrong-pw-0000";

struct World {
    tokens: TokenServer,
    registry: Registry,
    fx: Fixture,
}

impl World {
    async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    async fn start_with(options: Options) -> Self {
        // The SSO host knows both accounts: were the SSO entry ever sent to the realm with its
        // right password, it would be accepted.
        let tokens =
            TokenServer::start(&[(REGISTRY_USER, REGISTRY_PASSWORD), (SSO_USER, SSO_PASSWORD)]);
        let registry = Registry::start_token(&TokenAuth {
            realm: &tokens.realm,
            service: &tokens.service,
            issuer: &tokens.issuer,
            rootcertbundle: tokens.root_cert_path(),
        });
        let fx = Fixture::start(options).await;
        fx.namespace("a", json!({}));
        fx.account("a", "builder", &[], &[]).await;
        Self {
            tokens,
            registry,
            fx,
        }
    }

    /// pullsecretd writes the pair with these passwords; returns the auth file a node would
    /// use (every Secret of the layout, merged).
    async fn render(&self, layout: &str, registry_pw: &str, sso_pw: &str, file: &str) -> String {
        let config = self.fx.config_with_entries(
            "private-registry",
            layout,
            &[
                Entry {
                    name: "private-registry",
                    server: &self.registry.host,
                    username: REGISTRY_USER,
                    password: registry_pw,
                },
                Entry {
                    name: "redhat-connect-sso",
                    server: &self.tokens.host,
                    username: SSO_USER,
                    password: sso_pw,
                },
            ],
        );
        let report = self.fx.once(&config).await;
        assert!(report.converged(), "{report:#?}");
        for sentinel in [REGISTRY_PASSWORD, SSO_PASSWORD, WRONG] {
            assert!(
                !format!("{report:?}").contains(sentinel),
                "a password leaked"
            );
        }
        let secrets: &[&str] = match layout {
            "combined" => &["private-registry"],
            _ => &["private-registry", "redhat-connect-sso"],
        };
        let (pull, mount) = self.fx.account_lists("a", "default");
        for name in secrets {
            assert!(
                pull.iter().any(|n| n == name) || mount.iter().any(|n| n == name),
                "{name} is linked: pull {pull:?}, mount {mount:?}"
            );
        }
        let path = self.fx.merged_authfile("a", secrets, file);
        let text = std::fs::read_to_string(&path).expect("authfile");
        let auths: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let hosts: Vec<&String> = auths["auths"].as_object().expect("auths").keys().collect();
        assert_eq!(hosts.len(), 2, "both hosts have an entry: {hosts:?}");
        path.to_str().expect("UTF-8").to_string()
    }

    /// Usernames the realm saw since `from`.
    fn realm_users_since(&self, from: usize) -> Vec<String> {
        self.tokens.requests()[from..]
            .iter()
            .filter_map(|r| r.username.clone())
            .collect()
    }
}

fn ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn refused(output: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{what} should fail");
    assert!(
        stderr.contains("unauthorized") || stderr.contains("authentication required"),
        "{what}: {stderr}"
    );
}

async fn delegated_pair_pulls_through_the_token_server(layout: &str) {
    let world = World::start().await;
    let path = |p: &str| std::path::PathBuf::from(p);

    // The registry sends clients to the SSO host, and trusts only tokens its issuer signed.
    let manifest = format!("http://{}/v2/team/app/manifests/v1", world.registry.host);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client");
    let challenge = http.get(&manifest).send().await.expect("registry answers");
    assert_eq!(challenge.status().as_u16(), 401);
    let header = challenge.headers()["www-authenticate"]
        .to_str()
        .expect("ASCII header");
    assert!(
        header.starts_with(&format!("Bearer realm=\"{}\"", world.tokens.realm)),
        "{header}"
    );
    let impostor = jwt::Signer::new("not the registry's issuer");
    let now = jwt::now();
    let forged = impostor.sign(
        json!({ "x5c": impostor.x5c() }),
        &json!({
            "iss": world.tokens.issuer, "sub": REGISTRY_USER, "aud": world.tokens.service,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": "forged",
            "access": [{ "type": "repository", "name": "team/app", "actions": ["pull"] }]
        }),
    );
    let answer = http
        .get(&manifest)
        .bearer_auth(forged)
        .send()
        .await
        .expect("registry answers");
    assert_eq!(answer.status().as_u16(), 401, "a forged token is refused");

    // Right passwords: push, then pull, with nothing but the Secret data.
    let good = world
        .render(layout, REGISTRY_PASSWORD, SSO_PASSWORD, "good.json")
        .await;
    ok(&world.registry.push(&path(&good), "team/app", "v1"), "push");
    let before = world.tokens.requests().len();
    ok(&world.registry.pull(&path(&good), "team/app", "v1"), "pull");
    let users = world.realm_users_since(before);
    assert!(!users.is_empty(), "the pull went through the token server");
    assert!(
        users.iter().all(|u| u == REGISTRY_USER),
        "only the registry host's entry reaches the realm: {users:?}"
    );

    // Wrong password only in the SSO host's entry: the pull still works (that entry is never
    // sent anywhere).
    let sso_wrong = world
        .render(layout, REGISTRY_PASSWORD, WRONG, "sso-wrong.json")
        .await;
    let before = world.tokens.requests().len();
    ok(
        &world.registry.pull(&path(&sso_wrong), "team/app", "v1"),
        "pull with a wrong SSO-host password",
    );
    assert!(
        world
            .realm_users_since(before)
            .iter()
            .all(|u| u == REGISTRY_USER)
    );

    // Wrong password only in the registry host's entry: refused by the realm (the SSO host),
    // although the SSO host's own entry is right.
    let registry_wrong = world
        .render(layout, WRONG, SSO_PASSWORD, "registry-wrong.json")
        .await;
    let before = world.tokens.requests().len();
    refused(
        &world
            .registry
            .pull(&path(&registry_wrong), "team/app", "v1"),
        "pull with a wrong registry-host password",
    );
    let requests = world.tokens.requests();
    assert!(
        requests[before..]
            .iter()
            .any(|r| r.username.as_deref() == Some(REGISTRY_USER) && !r.granted),
        "the realm refused the registry host's entry: {:?}",
        &requests[before..]
    );
    assert!(
        world
            .realm_users_since(before)
            .iter()
            .all(|u| u == REGISTRY_USER)
    );

    // Both wrong: refused.
    let both_wrong = world.render(layout, WRONG, WRONG, "both-wrong.json").await;
    refused(
        &world.registry.pull(&path(&both_wrong), "team/app", "v1"),
        "pull with both passwords wrong",
    );
}

#[tokio::test]
async fn combined_secret_for_registry_and_sso_host_pulls_through_a_token_server() {
    delegated_pair_pulls_through_the_token_server("combined").await;
}

#[tokio::test]
async fn split_secrets_for_registry_and_sso_host_pull_through_a_token_server() {
    delegated_pair_pulls_through_the_token_server("split").await;
}

/// The pair through kube-sim's kubelet: a pod created after `once` gets the account's Secrets
/// (one or two) from admission, the kubelet merges their entries into one keyring, picks the
/// image host's credential and sends it to the realm the registry names. A wrong password in the
/// SSO host's entry changes nothing; the pod runs, and only the registry host's user reached
/// the realm.
async fn delegated_pair_pulls_through_the_kubelet(layout: &str) {
    let kubelet = kube_sim::KubeletOptions {
        image_backoff_initial: std::time::Duration::from_millis(300),
        image_backoff_max: std::time::Duration::from_millis(1200),
        sync_after_failure: std::time::Duration::from_millis(50),
        ..kube_sim::KubeletOptions::default()
    };
    let world = World::start_with(Options::default().kubelet(kubelet)).await;
    let good = world
        .render(layout, REGISTRY_PASSWORD, SSO_PASSWORD, "good.json")
        .await;
    ok(
        &world
            .registry
            .push(std::path::Path::new(&good), "team/app", "v1"),
        "push",
    );
    // The SSO host's password is wrong now: it must not matter.
    world
        .render(layout, REGISTRY_PASSWORD, WRONG, "sso-wrong.json")
        .await;
    let before = world.tokens.requests().len();
    let image = format!("{}/team/app:v1", world.registry.host);
    world
        .fx
        .server
        .create(
            "",
            "pods",
            json!({"metadata": {"name": "app", "namespace": "a"},
                "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}]}}),
        )
        .expect("pod created");
    pullsecretd_testkit::poll::eventually(
        std::time::Duration::from_secs(30),
        "the pod running",
        || {
            world
                .fx
                .server
                .get("", "pods", "a", "app")
                .is_some_and(|p| p["status"]["phase"] == "Running")
        },
    )
    .await;
    let pod = world.fx.server.get("", "pods", "a", "app").expect("pod");
    let named: Vec<&str> = pod["spec"]["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    let expected: &[&str] = match layout {
        "combined" => &["private-registry"],
        _ => &["private-registry", "redhat-connect-sso"],
    };
    for name in expected {
        assert!(named.contains(name), "{name} in {named:?}");
    }
    let attempts = world.fx.server.pull_attempts();
    let pulled = attempts
        .iter()
        .find(|a| a.pod == "app" && a.result.is_ok())
        .unwrap_or_else(|| panic!("a successful pull: {attempts:?}"));
    assert_eq!(pulled.username.as_deref(), Some(REGISTRY_USER));
    assert_eq!(pulled.secret.as_deref(), Some("private-registry"));
    let users = world.realm_users_since(before);
    assert!(!users.is_empty(), "the pull went through the token server");
    assert!(users.iter().all(|u| u == REGISTRY_USER), "{users:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_pair_pulls_through_the_kubelet() {
    delegated_pair_pulls_through_the_kubelet("combined").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_pair_pulls_through_the_kubelet_as_merged_from_the_pod_s_secrets() {
    delegated_pair_pulls_through_the_kubelet("split").await;
}

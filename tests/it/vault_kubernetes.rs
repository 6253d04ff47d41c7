//! Vault's Kubernetes auth end to end: a REAL OpenBao whose `kubernetes` auth method reviews
//! service-account tokens against kube-sim over HTTPS (its CA, its TokenReview endpoint), and
//! pullsecretd logging in with a token file as a pod would, then reading its registries.
//!
//! The setup is the one for a Vault running outside the cluster: OpenBao calls TokenReview with
//! a long-lived `token_reviewer_jwt` of its own service account (`vault/vault-auth`, bound to
//! `system:auth-delegator`), never with the client's token; kube-sim enforces RBAC, so
//! pullsecretd's own account could not review tokens, and a login through the client's JWT as
//! reviewer would fail. (A Vault inside the cluster would use its pod's own token instead.)
//!
//! Tokens are JWTs as the apiserver issues them (projected-token claims, ES256-signed by a
//! throwaway "cluster" key): OpenBao parses the claims and checks the name, namespace and UID it
//! finds there against the TokenReview answer.

use pullsecretd_testkit::jwt;
use pullsecretd_testkit::openbao;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_sim::{Handle, Options, Server, UserInfo};
use secrecy::ExposeSecret as _;
use serde_json::json;

use jwt::Signer;
use openbao::OpenBao;
use pullsecretd::config::Config;
use pullsecretd::model::credential::Secret;
use pullsecretd::source::vault::{LoginBackoff, RetryPolicy, TokenEnvironment};
use pullsecretd::source::{Inventory, SourceContext, VaultSession};

/// A registry password no output may contain.
const SENTINEL: &str = "SENTINEL-k8s-auth-pw-7c21";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const CLIENT_UID: &str = "5a0d7c3e-2f51-4a7e-9d0b-3c1f6e8a9b42";
const REVIEWER_UID: &str = "0e6b1f2a-8c4d-4f3e-a5b7-1d2c3e4f5a6b";

const FAST_RETRY: RetryPolicy = RetryPolicy {
    retries: 2,
    min_delay: Duration::from_millis(20),
    max_delay: Duration::from_millis(100),
};

/// A projected service-account token as the apiserver issues it.
fn service_account_token(signer: &Signer, namespace: &str, name: &str, uid: &str) -> String {
    let now = jwt::now();
    let claims = json!({
        "aud": [ISSUER],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "jti": format!("{namespace}-{name}-{now}-{}", std::process::id()),
        "kubernetes.io": {
            "namespace": namespace,
            "pod": { "name": format!("{name}-7d9f-x2k4"), "uid": "9f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b" },
            "serviceaccount": { "name": name, "uid": uid }
        },
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    });
    signer.sign(json!({ "kid": "kube-sim-sa-key" }), &claims)
}

fn identity(namespace: &str, name: &str, uid: &str) -> UserInfo {
    let mut user = UserInfo::service_account(namespace, name);
    user.uid = uid.to_string();
    user
}

/// kube-sim over HTTPS with RBAC, OpenBao with the Kubernetes auth method pointed at it, two
/// registries' secrets, and pullsecretd's token file.
struct World {
    kube: Handle,
    bao: OpenBao,
    dir: tempfile::TempDir,
    /// The file pullsecretd reads its service-account token from.
    token_file: PathBuf,
    /// A token kube-sim recognises as `system:serviceaccount:pullsecretd:pullsecretd`.
    good_token: String,
}

impl World {
    async fn start(registries: usize) -> Self {
        let signer = Signer::new("kube-sim service-account issuer");
        let good_token = service_account_token(&signer, "pullsecretd", "pullsecretd", CLIENT_UID);
        let reviewer_token = service_account_token(&signer, "vault", "vault-auth", REVIEWER_UID);
        let mut options = Options::default()
            .tls()
            .identity(
                &good_token,
                identity("pullsecretd", "pullsecretd", CLIENT_UID),
            )
            .identity(
                &reviewer_token,
                identity("vault", "vault-auth", REVIEWER_UID),
            );
        options.rbac = true;
        let kube = Server::start(options).await.expect("kube-sim starts");
        // What `kubectl create clusterrolebinding vault-auth-delegator
        // --clusterrole=system:auth-delegator --serviceaccount=vault:vault-auth` makes.
        kube.create(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            json!({
                "metadata": { "name": "vault-auth-delegator" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator" },
                "subjects": [{ "kind": "ServiceAccount", "namespace": "vault", "name": "vault-auth" }]
            }),
        )
        .expect("binding created");

        let bao = OpenBao::start().await;
        bao.api(
            "POST",
            "sys/auth/kubernetes",
            Some(json!({ "type": "kubernetes" })),
        )
        .await;
        bao.api(
            "POST",
            "auth/kubernetes/config",
            Some(json!({
                "kubernetes_host": kube.url(),
                "kubernetes_ca_cert": kube.ca_pem().expect("kube-sim serves HTTPS"),
                "token_reviewer_jwt": reviewer_token,
                // OpenBao runs outside the cluster: no pod token of its own to fall back on.
                "disable_local_ca_jwt": true
            })),
        )
        .await;
        bao.put_policy(
            "pullsecretd",
            "path \"secret/data/registries/*\" { capabilities = [\"read\"] }\n\
             path \"secret/metadata/registries/*\" { capabilities = [\"read\"] }\n",
        )
        .await;
        bao.api(
            "POST",
            "auth/kubernetes/role/pullsecretd",
            Some(json!({
                "bound_service_account_names": ["pullsecretd"],
                "bound_service_account_namespaces": ["pullsecretd"],
                "token_policies": ["pullsecretd"],
                "token_ttl": "10m"
            })),
        )
        .await;
        for n in 0..registries {
            bao.kv2_put(
                "secret",
                &format!("registries/r{n}"),
                json!({ "username": format!("robot-{n}"), "password": SENTINEL }),
            )
            .await;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{good_token}\n")).expect("token file");
        Self {
            kube,
            bao,
            dir,
            token_file,
            good_token,
        }
    }

    /// A well-formed token for the same account that kube-sim never issued (say, from a
    /// deleted and recreated account): OpenBao's TokenReview is answered "not authenticated".
    fn unknown_token(&self) -> String {
        let other = Signer::new("another cluster");
        service_account_token(&other, "pullsecretd", "pullsecretd", CLIENT_UID)
    }

    /// The config file: `registries` registries, each at its own Vault path, one pull secret.
    fn config_text(&self, registries: usize) -> String {
        let mut text = format!(
            "vault:\n  address: {}\n  timeout: 5s\n  auth: {{ method: kubernetes, role: pullsecretd, tokenFile: {} }}\nregistries:\n",
            self.bao.address,
            self.token_file.display()
        );
        for n in 0..registries {
            text.push_str(&format!(
                "  r{n}:\n    server: registry-{n}.example.com\n    from: {{ vault: {{ path: registries/r{n} }} }}\n"
            ));
        }
        let names: Vec<String> = (0..registries).map(|n| format!("r{n}")).collect();
        text.push_str(&format!(
            "pullSecrets:\n  - name: pulls\n    registries: [{}]\n    projects: {{ names: [a] }}\n",
            names.join(", ")
        ));
        text
    }

    fn config(&self, registries: usize) -> (Config, PathBuf) {
        let text = self.config_text(registries);
        let path = self.dir.path().join("config.yaml");
        std::fs::write(&path, &text).expect("config file");
        let config = Config::from_yaml(&text, &path)
            .unwrap_or_else(|e| panic!("test config is valid: {e}\n{text}"));
        (config, path)
    }

    fn token_reviews(&self) -> u64 {
        self.kube.counts().count("create", "tokenreviews")
    }
}

fn session(config: &Config, backoff: LoginBackoff) -> Arc<VaultSession> {
    let vault = config.vault.as_ref().expect("config has a vault block");
    Arc::new(
        VaultSession::with_environment(vault, TokenEnvironment::default())
            .expect("session builds")
            .with_retry(FAST_RETRY)
            .with_login_backoff(backoff),
    )
}

fn context(session: &Arc<VaultSession>) -> SourceContext {
    SourceContext {
        vault: Some(session.clone()),
        ..SourceContext::default()
    }
}

/// Runs the binary without blocking the runtime, which also serves kube-sim (OpenBao's
/// TokenReview calls land there while the binary waits on its login).
async fn pullsecretd(args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().expect("temp HOME");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
        .args(args)
        .env("HOME", home.path())
        .env_remove("VAULT_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("the pullsecretd binary runs")
}

fn assert_no_secrets(text: &str, tokens: &[&str]) {
    assert!(!text.contains(SENTINEL), "a password leaked: {text}");
    for token in tokens {
        // Any third of a token (header, claims or signature) would be a leak.
        for part in token.split('.') {
            assert!(!text.contains(part), "token text leaked: {text}");
        }
    }
}

#[tokio::test]
async fn service_account_token_logs_in_through_token_review_and_reads_the_registries() {
    let world = World::start(2).await;
    let (config, config_path) = world.config(2);
    let session = session(&config, LoginBackoff::default());

    let mut inventory = Inventory::new();
    let report = inventory.refresh(&config, &context(&session)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    for n in 0..2 {
        let entry = inventory.get(&format!("r{n}")).expect("registry read");
        assert_eq!(entry.resolved.credential.username, format!("robot-{n}"));
        match &entry.resolved.credential.secret {
            Secret::Password(p) => assert_eq!(p.expose_secret(), SENTINEL),
            Secret::IdentityToken(_) => panic!("expected a password"),
        }
    }
    // One login for both registries; OpenBao asked kube-sim about the token exactly once.
    assert_eq!(session.stats().logins, 1);
    assert_eq!(world.token_reviews(), 1);

    // A second refresh uses the same Vault token: no new login, no new review.
    let report = inventory.refresh(&config, &context(&session)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(session.stats().logins, 1);
    assert_eq!(world.token_reviews(), 1);

    // The binary, from the config file alone: `plan` logs in the same way and plans the Secret.
    let output = pullsecretd(&["plan", "--config", config_path.to_str().expect("UTF-8")]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("registry-0.example.com, registry-1.example.com"),
        "{stdout}"
    );
    assert_no_secrets(&format!("{stdout}{stderr}"), &[&world.good_token]);
    assert_eq!(world.token_reviews(), 2);
}

#[tokio::test]
async fn unknown_token_is_refused_clearly_without_a_token_review_storm() {
    const REGISTRIES: usize = 3;
    let world = World::start(REGISTRIES).await;
    let unknown = world.unknown_token();
    std::fs::write(&world.token_file, &unknown).expect("token file");
    let (config, config_path) = world.config(REGISTRIES);
    // Wide enough that five refreshes fit in the first window even on a loaded machine.
    let hold_off = Duration::from_secs(3);
    let backoff = LoginBackoff {
        min: hold_off,
        max: Duration::from_secs(10),
    };
    let session = session(&config, backoff);

    // Five refreshes in a row, three Vault paths each: one login attempt, one TokenReview.
    let mut inventory = Inventory::new();
    let started = Instant::now();
    for _ in 0..5 {
        let report = inventory.refresh(&config, &context(&session)).await;
        assert_eq!(report.failures.len(), REGISTRIES);
        for failure in &report.failures {
            let message = failure.error.to_string();
            assert_eq!(
                message,
                "Vault login (kubernetes at auth/kubernetes): 403 login refused (check the role, \
                 its credentials and the auth method's configuration)"
            );
            assert_no_secrets(
                &format!("{message} {:?}", failure.error),
                &[&unknown, &world.good_token],
            );
        }
    }
    assert!(
        started.elapsed() < hold_off,
        "the refreshes took {:?}: the test's hold-off window is too short for this machine",
        started.elapsed()
    );
    let first_window = world.token_reviews();
    assert_eq!(first_window, 1, "TokenReviews in the first hold-off window");
    assert_eq!(session.stats().logins, 0);

    // After the hold-off the same token is tried once more (and refused again), then held
    // for twice as long.
    tokio::time::sleep_until((started + hold_off + Duration::from_millis(100)).into()).await;
    for _ in 0..5 {
        let report = inventory.refresh(&config, &context(&session)).await;
        assert_eq!(report.failures.len(), REGISTRIES);
    }
    assert_eq!(world.token_reviews(), 2, "TokenReviews after one hold-off");

    // The kubelet rotates the token file: the new token is tried at once and works.
    std::fs::write(&world.token_file, format!("{}\n", world.good_token)).expect("token file");
    let report = inventory.refresh(&config, &context(&session)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(session.stats().logins, 1);
    assert_eq!(world.token_reviews(), 3);

    // The binary with the unknown token: exit 2, the error named once per registry, one review.
    std::fs::write(&world.token_file, &unknown).expect("token file");
    let before = world.token_reviews();
    let output = pullsecretd(&["plan", "--config", config_path.to_str().expect("UTF-8")]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("Vault login (kubernetes at auth/kubernetes): 403 login refused"),
        "{stderr}"
    );
    assert_no_secrets(&format!("{stdout}{stderr}"), &[&unknown, &world.good_token]);
    assert_eq!(
        world.token_reviews() - before,
        1,
        "TokenReviews by one plan"
    );
}

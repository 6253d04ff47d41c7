//! `pullsecretd credential-provider` as the kubelet runs it, end to end: kube-sim's kubelet
//! runs the real binary (a symlink named `pullsecretd-credential-provider` in its provider
//! bin dir) by the exec plugin protocol, the binary reads a real OpenBao, and the kubelet
//! really pulls from a Debian `docker-registry` with htpasswd auth. No Secret is ever created.
//! The binary is also run directly, for bad input, faults, the exact response JSON and a
//! burst of 200 concurrent runs against the agent. Only 127.0.0.1 is contacted.

use pullsecretd_testkit::openbao;
use pullsecretd_testkit::registry;
use pullsecretd_testkit::token_server::TokenServer;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::{Handle, KubeletOptions, Options, Server};
use serde_json::{Value, json};

use openbao::{OpenBao, ROOT_TOKEN, audit_requests};
use registry::{Registry, TokenAuth};

const SENTINEL: &str = "SENTINEL-provider-pw-41c7";
const SENTINEL_B: &str = "SENTINEL-provider-pw-b-93e0";
const PROVIDER: &str = "pullsecretd-credential-provider";
const V1: &str = "credentialprovider.kubelet.k8s.io/v1";
const REPO: &str = "team/app";

/// A test's files: the provider bin dir (with the symlink), config, Vault token file.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pullsecretd"), bin.join(PROVIDER))
            .expect("symlink");
        std::fs::write(dir.path().join("vault-token"), ROOT_TOKEN).expect("token file");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bin(&self) -> PathBuf {
        self.path("bin")
    }

    /// Writes the pullsecretd config: the Vault block (token auth from the token file), then
    /// `rest`.
    fn config(&self, bao: &OpenBao, rest: &str) -> PathBuf {
        let path = self.path("config.yaml");
        let text = format!(
            "vault:\n  address: {}\n  timeout: 2s\n  auth: {{ method: token, file: {} }}\n{rest}",
            bao.address,
            self.path("vault-token").display()
        );
        std::fs::write(&path, text).expect("config");
        path
    }

    /// Runs the provider (through its symlink) with `stdin`, as the kubelet would.
    fn provide(&self, config: &Path, stdin: &[u8], env: &[(&str, &str)]) -> Output {
        let mut child = Command::new(self.bin().join(PROVIDER))
            .arg("--config")
            .arg(config)
            .env("HOME", self.dir.path())
            .env("PULLSECRETD_AGENT_SOCKET", self.path("no-agent.sock"))
            .env_remove("RUST_LOG")
            .env_remove("VAULT_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the provider runs");
        let written = child.stdin.take().expect("stdin").write_all(stdin);
        if let Err(error) = written {
            assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
        }
        let out = child.wait_with_output().expect("the provider finishes");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(SENTINEL), "a password on stderr: {stderr}");
        out
    }
}

fn request(version: &str, image: &str) -> Vec<u8> {
    json!({"kind": "CredentialProviderRequest", "apiVersion": version, "image": image})
        .to_string()
        .into_bytes()
}

/// A registry with `user:password` holding `team/app:v1`.
fn registry_with_image(files: &Files, user: &str, password: &str) -> Registry {
    let registry = Registry::start_logged(&[(user, password)]);
    let authfile = files.path(&format!("push-{}.json", registry.host.replace(':', "-")));
    let auth = STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        &authfile,
        json!({"auths": {registry.host.clone(): {"auth": auth}}}).to_string(),
    )
    .expect("push authfile");
    let pushed = registry.push(&authfile, REPO, "v1");
    assert!(
        pushed.status.success(),
        "skopeo push: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    registry
}

/// kube-sim with a kubelet whose one provider is pullsecretd (`entry_extra` appended to the
/// provider entry: e.g. `tokenAttributes`).
async fn cluster(files: &Files, config: &Path, match_images: &[&str], entry_extra: &str) -> Handle {
    let images: Vec<String> = match_images.iter().map(|m| format!("\"{m}\"")).collect();
    let provider_config = files.path("credential-providers.yaml");
    std::fs::write(
        &provider_config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n\
             - name: {PROVIDER}\n  matchImages: [{}]\n  defaultCacheDuration: 1m\n  \
             apiVersion: {V1}\n  args: [--config, \"{}\"]\n  \
             env: [{{name: PULLSECRETD_AGENT_SOCKET, value: \"{}\"}}]\n{entry_extra}",
            images.join(", "),
            config.display(),
            files.path("no-agent.sock").display()
        ),
    )
    .expect("provider config");
    let kubelet = KubeletOptions {
        image_backoff_initial: Duration::from_millis(300),
        image_backoff_max: Duration::from_millis(1200),
        sync_after_failure: Duration::from_millis(50),
        resync_interval: Duration::from_secs(2),
        image_credential_provider_config: Some(provider_config),
        image_credential_provider_bin_dir: Some(files.bin()),
        ..KubeletOptions::default()
    };
    Server::start(Options::default().tls().kubelet(kubelet))
        .await
        .expect("kube-sim starts")
}

fn create_namespace(kube: &Handle, name: &str) {
    kube.create("", "namespaces", json!({"metadata": {"name": name}}))
        .expect("namespace");
}

/// A pod of `image` (pull policy Always) with no imagePullSecrets.
fn create_pod(kube: &Handle, namespace: &str, name: &str, image: &str) {
    kube.create(
        "",
        "pods",
        json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}]}
        }),
    )
    .expect("pod created");
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn running(kube: &Handle, namespace: &str, name: &str) -> Value {
    eventually(&format!("{namespace}/{name} running"), || {
        kube.get("", "pods", namespace, name)
            .filter(|pod| pod["status"]["phase"] == "Running")
    })
    .await
}

fn waiting_reason(pod: &Value) -> String {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// (reason, message) of the events of pod `namespace/name`.
fn events(kube: &Handle, namespace: &str, name: &str) -> Vec<(String, String)> {
    kube.list("", "events", Some(namespace))
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (text("reason"), text("message"))
        })
        .collect()
}

/// No Secret anywhere in kube-sim's store holds `password`, plain or base64 in a login.
fn assert_no_secret_holds(kube: &Handle, user: &str, password: &str) {
    let secrets = kube.list("", "secrets", None);
    let text = serde_json::to_string(&secrets).expect("JSON");
    let login = STANDARD.encode(format!("{user}:{password}"));
    assert!(!text.contains(password), "a Secret holds the password");
    assert!(!text.contains(&login), "a Secret holds the login");
}

/// Successful GETs of `team/app`'s manifest in the registry's access log.
fn manifest_pulls(registry: &Registry) -> usize {
    registry
        .access_log()
        .iter()
        .filter(|l| {
            l.method == "GET"
                && l.uri.starts_with(&format!("/v2/{REPO}/manifests/"))
                && l.status == 200
        })
        .count()
}

/// KV v2 data reads of `secret/data/<path>` in OpenBao's audit log.
fn data_reads(bao: &OpenBao, path: &str) -> usize {
    let wanted = format!("secret/data/{path}");
    audit_requests(&bao.audit_log())
        .iter()
        .filter(|(operation, p, _)| operation == "read" && *p == wanted)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_pull_secrets_pulls_with_credentials_from_openbao() {
    let files = Files::new();
    let registry = registry_with_image(&files, "robot", SENTINEL);
    let bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/app",
        json!({"username": "robot", "password": SENTINEL}),
    )
    .await;
    let config = files.config(
        &bao,
        &format!(
            "registries:\n  app:\n    server: {}\n    from: {{ vault: {{ path: registries/app }} }}\n",
            registry.host
        ),
    );
    let kube = cluster(&files, &config, &[&registry.host], "").await;
    create_namespace(&kube, "team-a");
    let image = format!("{}/{REPO}:v1", registry.host);
    create_pod(&kube, "team-a", "app", &image);

    let pod = running(&kube, "team-a", "app").await;
    assert_eq!(pod["spec"].get("imagePullSecrets"), None, "{pod}");
    let attempts: Vec<_> = kube
        .pull_attempts()
        .into_iter()
        .filter(|a| a.pod == "app")
        .collect();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].provider.as_deref(), Some(PROVIDER));
    assert_eq!(attempts[0].username.as_deref(), Some("robot"));
    assert!(attempts[0].result.is_ok(), "{attempts:?}");
    // The registry saw the authenticated pull; OpenBao the one read.
    assert!(
        manifest_pulls(&registry) >= 1,
        "{}",
        registry.access_log_text()
    );
    assert_eq!(data_reads(&bao, "registries/app"), 1);
    // What the kubelet cached: the registry, for the default refresh of five minutes.
    let calls = kube.provider_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let cached = calls[0].outcome.as_ref().expect("a good response");
    assert_eq!(cached.cache_key_type, "Registry");
    assert_eq!(cached.cache_duration, Some(Duration::from_secs(300)));
    assert_eq!(cached.auth_keys, std::slice::from_ref(&registry.host));
    // No Secret at rest: none in the pod's namespace, none anywhere holding the credential.
    assert!(kube.list("", "secrets", Some("team-a")).is_empty());
    assert_no_secret_holds(&kube, "robot", SENTINEL);
    assert!(!format!("{calls:?}{attempts:?}").contains(SENTINEL));
}

/// The response, field by field, as `CredentialProviderResponse` of
/// k8s.io/kubelet/pkg/apis/credentialprovider/v1/types.go defines it (and v1beta1/v1alpha1):
/// `kind`, `apiVersion` (the request's), `cacheKeyType`, `cacheDuration` as a Go duration
/// (`metav1.Duration`), `auth` keyed by match string with exactly `username` and `password`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_faults_exit_non_zero_and_unserved_registries_get_an_empty_answer() {
    let files = Files::new();
    let mut bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/app",
        json!({"username": "robot", "password": SENTINEL}),
    )
    .await;
    let config = files.config(
        &bao,
        "registries:\n  app:\n    server: 127.0.0.1:5999\n    from: { vault: { path: registries/app } }\n\
         pullSecrets:\n  - name: app-pull\n    registries: [app]\n    projects: { names: [a] }\n    rotation: { refresh: 90s }\n\
         credentialProvider: { cacheKeyType: Image }\n",
    );
    let image = "127.0.0.1:5999/team/app";

    // A served image, in each API version: exactly the upstream fields.
    for version in [
        V1,
        "credentialprovider.kubelet.k8s.io/v1beta1",
        "credentialprovider.kubelet.k8s.io/v1alpha1",
    ] {
        let out = files.provide(&config, &request(version, image), &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let response: Value = serde_json::from_slice(&out.stdout).expect("one JSON response");
        assert_eq!(
            response,
            json!({
                "kind": "CredentialProviderResponse",
                "apiVersion": version,
                "cacheKeyType": "Image",
                "cacheDuration": "1m30s",
                "auth": {"127.0.0.1:5999": {"username": "robot", "password": SENTINEL}}
            })
        );
    }

    // The same as a subcommand of the binary.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
        .args(["credential-provider", "--config"])
        .arg(&config)
        .env("PULLSECRETD_AGENT_SOCKET", files.path("no-agent.sock"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pullsecretd credential-provider runs");
    let written = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&request(V1, image));
    written.expect("request written");
    let out = child.wait_with_output().expect("it finishes");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response: Value = serde_json::from_slice(&out.stdout).expect("one JSON response");
    assert_eq!(response["auth"]["127.0.0.1:5999"]["username"], "robot");

    // An image of a registry the config does not serve: a valid, empty answer.
    let out = files.provide(&config, &request(V1, "127.0.0.1:6000/other/app:v2"), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let response: Value = serde_json::from_slice(&out.stdout).expect("one JSON response");
    assert_eq!(
        response,
        json!({"kind": "CredentialProviderResponse", "apiVersion": V1, "cacheKeyType": "Image"})
    );

    let refused = |out: &Output, expected: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(out.stdout.is_empty(), "an error must not print a response");
        assert!(stderr.contains(expected), "{stderr}");
    };
    // Truncated JSON.
    let whole = request(V1, image);
    let out = files.provide(&config, &whole[..whole.len() / 2], &[]);
    refused(&out, "not complete JSON");
    // Nothing at all.
    refused(&files.provide(&config, b"", &[]), "not complete JSON");
    // An apiVersion the kubelet does not define.
    let out = files.provide(
        &config,
        &request("credentialprovider.kubelet.k8s.io/v2", image),
        &[],
    );
    refused(&out, "apiVersion");
    // Another kind.
    let other =
        br#"{"kind":"Pod","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"x"}"#;
    refused(&files.provide(&config, other, &[]), "kind");
    // A config that does not load.
    let out = files.provide(&files.path("missing.yaml"), &request(V1, image), &[]);
    refused(&out, "missing.yaml");

    // Vault down: an error, never an empty success.
    bao.kill();
    let out = files.provide(&config, &request(V1, image), &[]);
    refused(&out, "Vault is unreachable");
    // ... while images it does not serve still get their empty answer, without Vault.
    let out = files.provide(&config, &request(V1, "gcr.io/x/y"), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Vault logins through `auth/kubernetes/login` that succeeded, per service-account
/// namespace, from the audit log's response entries.
fn logins_by_namespace(bao: &OpenBao) -> std::collections::BTreeMap<String, usize> {
    let text = std::fs::read_to_string(bao.audit_log()).unwrap_or_default();
    let mut logins = std::collections::BTreeMap::new();
    for entry in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if entry["type"] != "response" || entry["request"]["path"] != "auth/kubernetes/login" {
            continue;
        }
        if let Some(namespace) = entry["auth"]["metadata"]["service_account_namespace"].as_str() {
            *logins.entry(namespace.to_string()).or_insert(0) += 1;
        }
    }
    logins
}

/// A token of `namespace/name` from kube-sim's TokenRequest, through the real kubectl.
async fn create_token(kube: &Handle, files: &Files, namespace: &str, name: &str) -> String {
    let kubeconfig = files.path("admin.kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let out = tokio::process::Command::new("kubectl")
        .args(["create", "token", name, "-n", namespace, "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(files.path("kube-cache"))
        .env("HOME", files.dir.path())
        .env_remove("KUBECONFIG")
        .output()
        .await
        .expect("kubectl must be installed and on PATH");
    assert!(
        out.status.success(),
        "kubectl create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// OpenBao's Kubernetes auth reviewing tokens at kube-sim (a reviewer account of its own,
/// bound to system:auth-delegator), and one role per team namespace granting its own path.
async fn kubernetes_auth(bao: &OpenBao, kube: &Handle, files: &Files, teams: &[&str]) {
    create_namespace(kube, "vault");
    kube.create(
        "",
        "serviceaccounts",
        json!({"metadata": {"name": "reviewer", "namespace": "vault"}}),
    )
    .expect("reviewer account");
    kube.create(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        json!({
            "metadata": {"name": "vault-reviewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "namespace": "vault", "name": "reviewer"}]
        }),
    )
    .expect("binding");
    let reviewer = create_token(kube, files, "vault", "reviewer").await;
    bao.api(
        "POST",
        "sys/auth/kubernetes",
        Some(json!({"type": "kubernetes"})),
    )
    .await;
    bao.api(
        "POST",
        "auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": kube.url(),
            "kubernetes_ca_cert": kube.ca_pem().expect("kube-sim serves HTTPS"),
            "token_reviewer_jwt": reviewer,
            "disable_local_ca_jwt": true
        })),
    )
    .await;
    for team in teams {
        bao.put_policy(
            &format!("pull-{team}"),
            &format!("path \"secret/data/registries/{team}\" {{ capabilities = [\"read\"] }}\n"),
        )
        .await;
        bao.api(
            "POST",
            &format!("auth/kubernetes/role/pull-team-{team}"),
            Some(json!({
                "bound_service_account_names": ["default"],
                "bound_service_account_namespaces": [format!("team-{team}")],
                "audience": "vault",
                "token_policies": [format!("pull-{team}")],
                "token_ttl": "10m"
            })),
        )
        .await;
    }
}

async fn failing(kube: &Handle, namespace: &str, name: &str) -> Value {
    eventually(&format!("{namespace}/{name} failing to pull"), || {
        kube.get("", "pods", namespace, name).filter(|pod| {
            matches!(
                waiting_reason(pod).as_str(),
                "ErrImagePull" | "ImagePullBackOff"
            )
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_pull_only_what_their_vault_policy_allows() {
    let files = Files::new();
    let registry_a = registry_with_image(&files, "robot-a", SENTINEL);
    let registry_b = registry_with_image(&files, "robot-b", SENTINEL_B);
    let bao = OpenBao::start().await;
    for (team, user, password) in [("a", "robot-a", SENTINEL), ("b", "robot-b", SENTINEL_B)] {
        bao.kv2_put(
            "secret",
            &format!("registries/{team}"),
            json!({"username": user, "password": password}),
        )
        .await;
    }
    let config = files.config(
        &bao,
        &format!(
            "registries:\n\
             \x20 a:\n    server: {}\n    from: {{ vault: {{ path: registries/a }} }}\n\
             \x20 b:\n    server: {}\n    from: {{ vault: {{ path: registries/b }} }}\n\
             credentialProvider:\n  serviceAccounts:\n    role: \"pull-{{namespace}}\"\n",
            registry_a.host, registry_b.host
        ),
    );
    let token_attributes = "  tokenAttributes:\n    serviceAccountTokenAudience: vault\n    \
                            cacheType: ServiceAccount\n    requireServiceAccount: true\n";
    let kube = cluster(
        &files,
        &config,
        &[&registry_a.host, &registry_b.host],
        token_attributes,
    )
    .await;
    kubernetes_auth(&bao, &kube, &files, &["a", "b"]).await;
    for team in ["team-a", "team-b"] {
        create_namespace(&kube, team);
        eventually(&format!("{team}/default account"), || {
            kube.get("", "serviceaccounts", team, "default")
        })
        .await;
    }
    let image_a = format!("{}/{REPO}:v1", registry_a.host);
    let image_b = format!("{}/{REPO}:v1", registry_b.host);

    // Each team pulls its own registry's image, and not the other's.
    create_pod(&kube, "team-a", "own", &image_a);
    create_pod(&kube, "team-b", "own", &image_b);
    create_pod(&kube, "team-a", "other", &image_b);
    create_pod(&kube, "team-b", "other", &image_a);
    running(&kube, "team-a", "own").await;
    running(&kube, "team-b", "own").await;
    for team in ["team-a", "team-b"] {
        failing(&kube, team, "other").await;
        let events = events(&kube, team, "other");
        assert!(
            events
                .iter()
                .any(|(reason, message)| reason == "Failed"
                    && message.contains("Failed to pull image")),
            "{team}/other: {events:?}"
        );
    }
    let attempts = kube.pull_attempts();
    for attempt in attempts.iter().filter(|a| a.pod == "own") {
        assert_eq!(attempt.provider.as_deref(), Some(PROVIDER), "{attempt:?}");
        assert!(attempt.result.is_ok(), "{attempt:?}");
    }
    let denied: Vec<_> = attempts.iter().filter(|a| a.pod == "other").collect();
    assert!(!denied.is_empty());
    for attempt in &denied {
        // No credential was handed out: the pull went on anonymously and was refused.
        assert_eq!(attempt.username, None, "{attempt:?}");
        assert!(attempt.result.is_err(), "{attempt:?}");
    }
    let calls = kube.provider_calls();
    for call in &calls {
        let outcome = call.outcome.as_ref().expect("every run answered");
        let account = call.service_account.as_deref().expect("token mode");
        let own = (account == "team-a/default") == call.image.starts_with(&registry_a.host);
        assert_eq!(outcome.auth_keys.len(), usize::from(own), "{call:?}");
    }

    // More pods and the kubelet's retries of the refused ones: no new Vault login within the
    // cache period, for either account.
    let logins = logins_by_namespace(&bao);
    // Per account: one login for its own registry, and two for the other one (the session
    // logs in afresh once on a 403 before taking it as the policy's answer).
    let expected =
        std::collections::BTreeMap::from([("team-a".to_string(), 3), ("team-b".to_string(), 3)]);
    assert_eq!(logins, expected, "logins per account");
    // One provider run per account and registry: the kubelet caches per account.
    assert_eq!(calls.len(), 4, "{calls:?}");
    let runs = kube.provider_calls().len();
    create_pod(&kube, "team-a", "own-2", &image_a);
    create_pod(&kube, "team-b", "own-2", &image_b);
    running(&kube, "team-a", "own-2").await;
    running(&kube, "team-b", "own-2").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let retries = kube
        .pull_attempts()
        .iter()
        .filter(|a| a.pod == "other")
        .count();
    assert!(retries > denied.len(), "the refused pods were retried");
    assert_eq!(logins_by_namespace(&bao), logins, "logins per account");
    assert_eq!(kube.provider_calls().len(), runs, "provider runs");
    // Each path: one read by its own account, two refused reads by the other.
    assert_eq!(data_reads(&bao, "registries/a"), 3);
    assert_eq!(data_reads(&bao, "registries/b"), 3);
    assert_no_secret_holds(&kube, "robot-a", SENTINEL);
    assert_no_secret_holds(&kube, "robot-b", SENTINEL_B);
}

/// `pullsecretd workstation` serving the agent socket; killed on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One provider run with `stdin`, started now and answered later (tokio's child, so 200 can
/// be in flight at once).
async fn provide_async(home: &Path, config: &Path, socket: &Path, stdin: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(home.join("bin").join(PROVIDER))
        .arg("--config")
        .arg(config)
        .env("HOME", home)
        .env("PULLSECRETD_AGENT_SOCKET", socket)
        .env_remove("RUST_LOG")
        .env_remove("VAULT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the provider runs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("request written");
    drop(input);
    child
        .wait_with_output()
        .await
        .expect("the provider finishes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_runs_with_the_agent_cost_one_vault_read() {
    const RUNS: usize = 200;
    let files = Files::new();
    let bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/app",
        json!({"username": "robot", "password": SENTINEL}),
    )
    .await;
    let config = files.config(
        &bao,
        "registries:\n  app:\n    server: 127.0.0.1:5999\n    from: { vault: { path: registries/app } }\n",
    );
    // The node agent: `workstation` against a kube-sim (it needs a cluster to sync into).
    let kube = Server::start(Options::default().tls())
        .await
        .expect("kube-sim starts");
    let kubeconfig = files.path("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let socket = files.path("run/agent.sock");
    let agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
            .args(["workstation", "--config"])
            .arg(&config)
            .env("HOME", files.dir.path())
            .env("KUBECONFIG", &kubeconfig)
            .env("PULLSECRETD_AGENT_SOCKET", &socket)
            .env_remove("RUST_LOG")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("workstation starts"),
    );
    eventually("the agent socket", || socket.exists().then_some(())).await;

    let request = request(V1, "127.0.0.1:5999/team/app");
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..RUNS {
        let (home, config, socket, request) = (
            files.dir.path().to_path_buf(),
            config.clone(),
            socket.clone(),
            request.clone(),
        );
        runs.spawn(async move { provide_async(&home, &config, &socket, &request).await });
    }
    let mut answered = 0;
    while let Some(out) = runs.join_next().await {
        let out = out.expect("the run's task");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains(SENTINEL));
        let response: Value = serde_json::from_slice(&out.stdout).expect("a JSON response");
        assert_eq!(response["auth"]["127.0.0.1:5999"]["username"], "robot");
        answered += 1;
    }
    assert_eq!(answered, RUNS);
    // The agent read the secret once (its first pass, or the first run's lookup).
    assert_eq!(data_reads(&bao, "registries/app"), 1);
    drop(agent);
}

/// deploy/credential-provider: both kubelet configs load in kube-sim's kubelet, which decodes
/// and validates them as the kubelet does (an error stops it from starting), and the
/// pullsecretd config there is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_credential_provider_examples_are_valid() {
    let files = Files::new();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/credential-provider");
    for name in [
        "credential-provider-config.yaml",
        "credential-provider-config-node.yaml",
    ] {
        let kubelet = KubeletOptions {
            image_credential_provider_config: Some(deploy.join(name)),
            image_credential_provider_bin_dir: Some(files.bin()),
            ..KubeletOptions::default()
        };
        let started = Server::start(Options::default().kubelet(kubelet)).await;
        assert!(started.is_ok(), "{name}: {:?}", started.err());
    }
    let config = pullsecretd::config::Config::load(&deploy.join("config.yaml"))
        .unwrap_or_else(|e| panic!("deploy/credential-provider/config.yaml: {e}"));
    let login = config
        .credential_provider
        .service_accounts
        .expect("the example shows service-account mode");
    assert_eq!(login.mount, "kubernetes");
    assert_eq!(
        login.role.render("team-a", "default", &Default::default()),
        Ok("pull-team-a".to_string())
    );
}

/// The token-auth pair: the registry sends the kubelet to a token server on another loopback
/// port, and the credential the provider returned for the registry host is what the kubelet
/// presents there (clients choose credentials by the image host, docs/delegated-auth.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_auth_registry_pulls_with_the_registry_credential_from_openbao() {
    let files = Files::new();
    let tokens = TokenServer::start(&[("robot", SENTINEL)]);
    let registry = Registry::start_token(&TokenAuth {
        realm: &tokens.realm,
        service: &tokens.service,
        issuer: &tokens.issuer,
        rootcertbundle: tokens.root_cert_path(),
    });
    let authfile = files.path("push.json");
    let auth = STANDARD.encode(format!("robot:{SENTINEL}"));
    std::fs::write(
        &authfile,
        json!({"auths": {registry.host.clone(): {"auth": auth}}}).to_string(),
    )
    .expect("push authfile");
    let pushed = registry.push(&authfile, REPO, "v1");
    assert!(
        pushed.status.success(),
        "skopeo push: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/app",
        json!({"username": "robot", "password": SENTINEL}),
    )
    .await;
    let config = files.config(
        &bao,
        &format!(
            "registries:\n  app:\n    server: {}\n    from: {{ vault: {{ path: registries/app }} }}\n",
            registry.host
        ),
    );
    let kube = cluster(&files, &config, &[&registry.host], "").await;
    let before = tokens.requests().len();
    create_namespace(&kube, "team-a");
    create_pod(
        &kube,
        "team-a",
        "app",
        &format!("{}/{REPO}:v1", registry.host),
    );

    running(&kube, "team-a", "app").await;
    let pulls: Vec<_> = tokens.requests().into_iter().skip(before).collect();
    assert!(
        pulls.iter().any(|r| r.granted
            && r.username.as_deref() == Some("robot")
            && r.scopes
                .iter()
                .any(|s| s == &format!("repository:{REPO}:pull"))),
        "{pulls:?}"
    );
    assert!(kube.list("", "secrets", Some("team-a")).is_empty());
    assert_no_secret_holds(&kube, "robot", SENTINEL);
}

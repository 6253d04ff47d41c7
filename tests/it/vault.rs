//! The Vault source against a REAL OpenBao dev server (tests/it/support/openbao.rs), one server per
//! test on its own loopback port: KV v1/v2 reads and mappings, token/AppRole/Kubernetes login,
//! renewal, re-login after revocation, last-known-good across a server outage, policy denials
//! that never print values, and OpenBao's own audit log counting reads.

use pullsecretd_testkit::openbao;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;

use openbao::{OpenBao, ROOT_TOKEN, audit_requests};
use pullsecretd::config::Config;
use pullsecretd::model::credential::Secret;
use pullsecretd::source::vault::{RetryPolicy, TokenEnvironment};
use pullsecretd::source::{Inventory, Resolved, SourceContext, VaultSession, resolve_all};

/// A password no output may ever contain.
const SENTINEL: &str = "SENTINEL-vault-pw-9f41";

/// Short retries: a dead server is reported in well under a second.
const FAST_RETRY: RetryPolicy = RetryPolicy {
    retries: 2,
    min_delay: Duration::from_millis(20),
    max_delay: Duration::from_millis(100),
};

fn config(bao: &OpenBao, auth: &str, registries: &str) -> Config {
    let text = format!(
        "vault:\n  address: {}\n  timeout: 5s\n  auth: {auth}\nregistries:\n{registries}",
        bao.address
    );
    Config::from_yaml(&text, Path::new("/tmp/vault-test.yaml"))
        .unwrap_or_else(|e| panic!("test config is valid: {e}\n{text}"))
}

fn token_env(token: &str) -> TokenEnvironment {
    TokenEnvironment {
        vault_token: Some(SecretString::from(token.to_string())),
        home: None,
    }
}

fn session(config: &Config, environment: TokenEnvironment) -> Arc<VaultSession> {
    let vault = config.vault.as_ref().expect("config has a vault block");
    Arc::new(
        VaultSession::with_environment(vault, environment)
            .expect("session builds")
            .with_retry(FAST_RETRY),
    )
}

fn context(session: &Arc<VaultSession>) -> SourceContext {
    SourceContext {
        vault: Some(session.clone()),
        ..SourceContext::default()
    }
}

fn password(resolved: &Resolved) -> &str {
    match &resolved.credential.secret {
        Secret::Password(p) => p.expose_secret(),
        Secret::IdentityToken(_) => panic!("expected a password"),
    }
}

fn registry(name: &str, server: &str, from: &str) -> String {
    format!("  {name}:\n    server: {server}\n    from: {from}\n")
}

#[tokio::test]
async fn kv2_and_kv1_reads_with_mappings_pinned_versions_and_docker_config_field() {
    let bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/private",
        json!({ "username": "robot", "password": "pw-v1", "email": "ops@example.com" }),
    )
    .await;
    bao.kv2_put(
        "secret",
        "registries/private",
        json!({ "username": "robot", "password": "pw-v2" }),
    )
    .await;
    bao.kv2_put(
        "secret",
        "registries/custom",
        json!({ "user": "custom-user", "pass": "custom-pw", "mail": "c@example.com", "host": "https://ghcr.io" }),
    )
    .await;
    let docker_config = json!({ "auths": {
        "quay.io": { "auth": "cXVheS1ib3Q6cXVheS1wdw==" },
        "https://index.docker.io/v1/": { "username": "hub", "password": "hub-pw" }
    }});
    bao.kv2_put(
        "secret",
        "registries/dockerconfig",
        json!({ ".dockerconfigjson": docker_config.to_string() }),
    )
    .await;
    bao.enable_kv1("kv1").await;
    bao.kv1_put(
        "kv1",
        "registries/legacy",
        json!({ "username": "v1-user", "password": "v1-pw" }),
    )
    .await;
    bao.kv1_put(
        "kv1",
        "registries/legacy-custom",
        json!({ "login": "lc", "secret": "lc-pw" }),
    )
    .await;

    let registries = [
        registry("current", "privateregistry.example.com", "{ vault: { path: registries/private } }"),
        registry("pinned", "pinned.example.com", "{ vault: { path: registries/private, version: 1 } }"),
        registry(
            "custom",
            "ghcr.io",
            "{ vault: { path: registries/custom, fields: { username: user, password: pass, email: mail, server: host } } }",
        ),
        registry("quay", "quay.io", "{ vault: { path: registries/dockerconfig, dockerConfigField: .dockerconfigjson } }"),
        registry("hub", "docker.io", "{ vault: { path: registries/dockerconfig, dockerConfigField: .dockerconfigjson } }"),
        registry("legacy", "legacy.example.com", "{ vault: { mount: kv1, path: registries/legacy, kv: 1 } }"),
        registry(
            "legacy-custom",
            "lc.example.com",
            "{ vault: { mount: kv1, path: registries/legacy-custom, kv: 1, fields: { username: login, password: secret } } }",
        ),
    ]
    .concat();
    let config = config(&bao, "{ method: token }", &registries);
    let session = session(&config, token_env(ROOT_TOKEN));
    let resolution = resolve_all(&config, &context(&session)).await;
    assert!(resolution.errors.is_empty(), "{:?}", resolution.errors);
    let got = |name: &str| &resolution.credentials[name];

    assert_eq!(password(got("current")), "pw-v2");
    assert_eq!(got("current").version, "v2");
    assert_eq!(got("current").credential.email, None);
    assert_eq!(password(got("pinned")), "pw-v1");
    assert_eq!(got("pinned").version, "v1");
    assert_eq!(
        got("pinned").credential.email.as_deref(),
        Some("ops@example.com")
    );
    assert_eq!(got("custom").credential.username, "custom-user");
    assert_eq!(password(got("custom")), "custom-pw");
    assert_eq!(
        got("custom").credential.email.as_deref(),
        Some("c@example.com")
    );
    assert_eq!(got("quay").credential.username, "quay-bot");
    assert_eq!(password(got("quay")), "quay-pw");
    assert_eq!(got("quay").version, "v1");
    assert_eq!(got("hub").credential.username, "hub");
    assert_eq!(got("legacy").credential.username, "v1-user");
    assert_eq!(password(got("legacy")), "v1-pw");
    assert!(
        got("legacy").version.starts_with("sha256:"),
        "{}",
        got("legacy").version
    );
    assert_eq!(password(got("legacy-custom")), "lc-pw");
    // Seven registries, six secrets (quay and hub share one), one login.
    assert_eq!(session.stats().logins, 1);

    // KV v1 versions follow the content.
    let before = got("legacy").version.clone();
    bao.kv1_put(
        "kv1",
        "registries/legacy",
        json!({ "username": "v1-user", "password": "v1-pw2" }),
    )
    .await;
    let again = resolve_all(&config, &context(&session)).await;
    assert_ne!(again.credentials["legacy"].version, before);

    // Missing and empty fields name the path and field, never a value.
    bao.kv2_put(
        "secret",
        "registries/broken",
        json!({ "username": "", "password": SENTINEL }),
    )
    .await;
    bao.kv2_put(
        "secret",
        "registries/nopass",
        json!({ "username": "u", "pw": SENTINEL }),
    )
    .await;
    let broken = config_with_single(&bao, "{ vault: { path: registries/broken } }");
    let resolution = resolve_all(&broken, &context(&session)).await;
    let error = &resolution.errors["r"];
    assert_eq!(
        error.to_string(),
        "Vault secret secret/registries/broken (KV v2): field \"username\" is empty"
    );
    assert!(!format!("{error:?}").contains(SENTINEL));
    let nopass = config_with_single(&bao, "{ vault: { path: registries/nopass } }");
    let resolution = resolve_all(&nopass, &context(&session)).await;
    assert_eq!(
        resolution.errors["r"].to_string(),
        "Vault secret secret/registries/nopass (KV v2): field \"password\" is missing"
    );
}

fn config_with_single(bao: &OpenBao, from: &str) -> Config {
    config(bao, "{ method: token }", &registry("r", "quay.io", from))
}

#[tokio::test]
async fn approle_login_set_up_through_the_api() {
    let bao = OpenBao::start().await;
    bao.put_policy(
        "reader",
        "path \"secret/data/registries/*\" { capabilities = [\"read\"] }",
    )
    .await;
    let (role_id, secret_id) = bao.setup_approle("pullsecretd", &["reader"]).await;
    bao.kv2_put(
        "secret",
        "registries/private",
        json!({ "username": "u", "password": "p" }),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_id_file = dir.path().join("secret-id");
    std::fs::write(&secret_id_file, format!("{secret_id}\n")).expect("write secret id");

    let auth = format!(
        "{{ method: approle, roleId: {role_id}, secretIdFile: {} }}",
        secret_id_file.display()
    );
    let config = config(
        &bao,
        &auth,
        &registry("r", "quay.io", "{ vault: { path: registries/private } }"),
    );
    // No token anywhere: only the AppRole can log in.
    let session = session(&config, TokenEnvironment::default());
    let resolution = resolve_all(&config, &context(&session)).await;
    assert!(resolution.errors.is_empty(), "{:?}", resolution.errors);
    assert_eq!(password(&resolution.credentials["r"]), "p");
    assert_eq!(session.stats().logins, 1);
    assert!(!format!("{session:?}").contains(&secret_id));
}

#[tokio::test]
async fn short_ttl_token_is_renewed_and_keeps_working_past_its_ttl() {
    let bao = OpenBao::start().await;
    bao.put_policy(
        "reader",
        "path \"secret/data/registries/*\" { capabilities = [\"read\"] }",
    )
    .await;
    bao.kv2_put(
        "secret",
        "registries/private",
        json!({ "username": "u", "password": "p" }),
    )
    .await;
    let token = bao
        .create_token(json!({
            "policies": ["reader"], "ttl": "4s", "explicit_max_ttl": "60s", "renewable": true,
            "no_default_policy": false
        }))
        .await;
    let config = config(
        &bao,
        "{ method: token }",
        &registry("r", "quay.io", "{ vault: { path: registries/private } }"),
    );
    let session = session(&config, token_env(&token));
    let started = Instant::now();
    // Read about every 700 ms for 7 s: well past the 4 s TTL.
    while started.elapsed() < Duration::from_secs(7) {
        let resolution = resolve_all(&config, &context(&session)).await;
        assert!(
            resolution.errors.is_empty(),
            "after {:?}: {:?}",
            started.elapsed(),
            resolution.errors
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let stats = session.stats();
    assert_eq!(stats.logins, 1, "{stats:?}");
    assert!(stats.renewals >= 2, "{stats:?}");
    // The token itself is still alive: it was renewed, not replaced.
    let lookup = bao
        .api("POST", "auth/token/lookup", Some(json!({ "token": token })))
        .await;
    assert!(lookup["data"]["ttl"].as_u64().unwrap_or(0) > 0);
}

#[tokio::test]
async fn revoked_token_is_replaced_by_a_new_approle_login_invisibly() {
    let bao = OpenBao::start().await;
    bao.put_policy(
        "reader",
        "path \"secret/data/registries/*\" { capabilities = [\"read\"] }",
    )
    .await;
    let (role_id, secret_id) = bao.setup_approle("pullsecretd", &["reader"]).await;
    bao.kv2_put(
        "secret",
        "registries/private",
        json!({ "username": "u", "password": "p" }),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_id_file = dir.path().join("secret-id");
    std::fs::write(&secret_id_file, &secret_id).expect("write secret id");
    let auth = format!(
        "{{ method: approle, roleId: {role_id}, secretIdFile: {} }}",
        secret_id_file.display()
    );
    let config = config(
        &bao,
        &auth,
        &registry("r", "quay.io", "{ vault: { path: registries/private } }"),
    );
    let session = session(&config, TokenEnvironment::default());
    let mut inventory = Inventory::new();
    let report = inventory.refresh(&config, &context(&session)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(session.stats().logins, 1);

    // Revoke every token AppRole ever issued: the session's token is now dead.
    bao.api("PUT", "sys/leases/revoke-prefix/auth/approle/login", None)
        .await;

    let report = inventory.refresh(&config, &context(&session)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.unchanged, vec!["r".to_string()]);
    assert_eq!(session.stats().logins, 2);
}

#[tokio::test]
async fn server_outage_serves_last_good_and_recovers_with_the_same_session() {
    let mut bao = OpenBao::start().await;
    let seed = json!({ "username": "u", "password": "last-good" });
    bao.kv2_put("secret", "registries/private", seed.clone())
        .await;
    let config = config(
        &bao,
        "{ method: token }",
        &registry("r", "quay.io", "{ vault: { path: registries/private } }"),
    );
    let session = session(&config, token_env(ROOT_TOKEN));
    let health = session.health().await.expect("health answers");
    assert!(health.initialized && !health.sealed, "{health:?}");
    assert_eq!(health.status, 200);

    let mut inventory = Inventory::new();
    let report = inventory.refresh(&config, &context(&session)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);

    bao.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let report = inventory.refresh(&config, &context(&session)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded backoff"
    );
    assert_eq!(report.failures.len(), 1);
    let failure = &report.failures[0];
    let message = failure.to_string();
    assert!(
        message.starts_with(
            "registry r: Vault metadata of secret/registries/private (KV v2): Vault is \
             unreachable"
        ),
        "{message}"
    );
    assert!(
        message.contains("; keeping the credential read "),
        "{message}"
    );
    assert!(
        failure
            .last_good_age
            .is_some_and(|age| age >= Duration::from_millis(300))
    );
    assert_eq!(password(&inventory.credentials()["r"]), "last-good");

    // Same port, data re-seeded; the session is not recreated.
    bao.restart().await;
    bao.kv2_put("secret", "registries/private", seed).await;
    let report = inventory.refresh(&config, &context(&session)).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(password(&inventory.credentials()["r"]), "last-good");

    // Sealed: 503, reported; the last good credential stays.
    bao.api("PUT", "sys/seal", None).await;
    let report = inventory.refresh(&config, &context(&session)).await;
    let message = report
        .failures
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(message.contains("HTTP 503"), "{message}");
    assert!(message.contains("sealed"), "{message}");
    assert_eq!(password(&inventory.credentials()["r"]), "last-good");
    let health = session.health().await.expect("health answers when sealed");
    assert!(health.sealed && health.status == 503, "{health:?}");
}

#[tokio::test]
async fn policy_denial_names_the_path_and_never_the_value() {
    let bao = OpenBao::start().await;
    bao.put_policy(
        "narrow",
        "path \"secret/data/registries/allowed\" { capabilities = [\"read\"] }",
    )
    .await;
    bao.kv2_put(
        "secret",
        "registries/denied",
        json!({ "username": "u", "password": SENTINEL }),
    )
    .await;
    let token = bao
        .create_token(json!({ "policies": ["narrow"], "ttl": "1h" }))
        .await;
    let config = config(
        &bao,
        "{ method: token }",
        &registry("r", "quay.io", "{ vault: { path: registries/denied } }"),
    );
    let session = session(&config, token_env(&token));
    let mut inventory = Inventory::new();
    let report = inventory.refresh(&config, &context(&session)).await;
    let failure = report.failures.first().expect("the read is denied");
    let display = failure.to_string();
    assert_eq!(
        display,
        "registry r: Vault read secret/registries/denied (KV v2): 403 permission denied by \
         policy; no credential was ever read, so its secrets are held"
    );
    let debug = format!("{failure:?} {session:?} {inventory:?}");
    for text in [&display, &debug] {
        assert!(!text.contains(SENTINEL), "{text}");
        assert!(!text.contains(&token), "{text}");
    }
    assert!(inventory.credentials().is_empty());

    // A revoked token is told apart from a policy denial.
    bao.api("POST", "auth/token/revoke", Some(json!({ "token": token })))
        .await;
    let report = inventory.refresh(&config, &context(&session)).await;
    let display = report
        .failures
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(display.contains("token was rejected"), "{display}");
    assert!(!display.contains(&token));
}

#[tokio::test]
async fn kubernetes_login_request_reaches_the_auth_mount_with_role_and_jwt() {
    let bao = OpenBao::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let audit_log = bao.audit_log();
    bao.api(
        "POST",
        "sys/auth/k8s",
        Some(json!({ "type": "kubernetes" })),
    )
    .await;
    // Nothing listens on port 1: OpenBao's TokenReview call fails, so the login is refused.
    // The CA is a throwaway certificate whose key was discarded when it was made.
    let kubernetes_ca = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vault/unused-kubernetes-ca.pem"),
    )
    .expect("test CA");
    bao.api(
        "POST",
        "auth/k8s/config",
        Some(json!({
            "kubernetes_host": "https://127.0.0.1:1",
            "kubernetes_ca_cert": kubernetes_ca,
            "disable_local_ca_jwt": true
        })),
    )
    .await;
    bao.api(
        "POST",
        "auth/k8s/role/pullsecretd",
        Some(json!({
            "bound_service_account_names": ["pullsecretd"],
            "bound_service_account_namespaces": ["pullsecretd"],
            "token_policies": ["default"]
        })),
    )
    .await;
    let jwt_file = dir.path().join("token");
    std::fs::write(&jwt_file, format!("eyJhbGciOiJSUzI1NiJ9.{SENTINEL}.c2ln\n")).expect("jwt");
    let auth = format!(
        "{{ method: kubernetes, role: pullsecretd, mount: k8s, tokenFile: {} }}",
        jwt_file.display()
    );
    let config = config(
        &bao,
        &auth,
        &registry("r", "quay.io", "{ vault: { path: registries/x } }"),
    );
    let session = session(&config, TokenEnvironment::default());
    let resolution = resolve_all(&config, &context(&session)).await;
    let message = resolution.errors["r"].to_string();
    assert!(
        message.starts_with("Vault login (kubernetes at auth/k8s): "),
        "{message}"
    );
    assert!(message.ends_with("403 login refused (check the role, its credentials and the auth method's configuration)"), "{message}");
    assert!(!message.contains(SENTINEL), "{message}");

    let logins: Vec<_> = audit_requests(&audit_log)
        .into_iter()
        .filter(|(_, path, _)| path == "auth/k8s/login")
        .collect();
    assert!(!logins.is_empty(), "no login request reached OpenBao");
    let (operation, _, keys) = &logins[0];
    assert_eq!(operation, "update");
    assert!(
        keys.contains(&"role".to_string()) && keys.contains(&"jwt".to_string()),
        "{keys:?}"
    );
}

fn pullsecretd(args: &[&str], token: &str) -> std::process::Output {
    let home = tempfile::tempdir().expect("temp HOME");
    Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
        .args(args)
        .env("VAULT_TOKEN", token)
        .env("HOME", home.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("the pullsecretd binary runs")
}

#[tokio::test]
async fn cli_plan_reads_a_shared_path_once_for_fifty_projects() {
    let bao = OpenBao::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let audit_log = bao.audit_log();
    bao.kv2_put(
        "secret",
        "registries/shared",
        json!({ "username": "robot", "password": SENTINEL }),
    )
    .await;
    let projects: Vec<String> = (0..50).map(|i| format!("project-{i:02}")).collect();
    let text = format!(
        "vault:\n  address: {}\n  auth: {{ method: token }}\nregistries:\n{}{}\
         pullSecrets:\n  - name: shared\n    registries: [one, two]\n    projects: {{ names: [{}] }}\n",
        bao.address,
        registry(
            "one",
            "registry-one.example.com",
            "{ vault: { path: registries/shared } }"
        ),
        registry(
            "two",
            "registry-two.example.com",
            "{ vault: { path: registries/shared } }"
        ),
        projects.join(", ")
    );
    let config_file = dir.path().join("vault.yaml");
    std::fs::write(&config_file, text).expect("write config");
    let config_arg = config_file.to_str().expect("UTF-8 path");

    let out = pullsecretd(&["plan", "--config", config_arg], ROOT_TOKEN);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("Project project-00") && stdout.contains("Project project-49"));
    assert!(
        stdout.contains("shared  kubernetes.io/dockerconfigjson  registry-one.example.com, registry-two.example.com"),
        "{stdout}"
    );
    assert!(
        stdout.contains("vault secret/registries/shared (KV v2)"),
        "{stdout}"
    );
    assert!(!stdout.contains(SENTINEL) && !stderr.contains(SENTINEL));

    let reads = audit_requests(&audit_log)
        .into_iter()
        .filter(|(op, path, _)| op == "read" && path == "secret/data/registries/shared")
        .count();
    assert_eq!(reads, 1, "50 projects, 2 registries, 1 path: one read");

    // A denied path: exit 2, the Secret held, the error names the path, no value anywhere.
    let token = bao
        .create_token(json!({ "policies": ["default"], "ttl": "1h" }))
        .await;
    let out = pullsecretd(
        &["plan", "--config", config_arg, "--projects", "project-00"],
        &token,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stdout.contains("(held: source failed)"), "{stdout}");
    assert!(
        stderr.contains(
            "error: registry one: Vault read secret/registries/shared (KV v2): 403 permission denied by policy"
        ),
        "{stderr}"
    );
    for text in [&stdout, &stderr] {
        assert!(!text.contains(SENTINEL) && !text.contains(&token), "{text}");
    }
}

/// The README's "Vault / OpenBao" walk-through: check-config, seed as the README does, plan.
#[tokio::test]
async fn shipped_vault_example_checks_and_plans_against_a_seeded_server() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vault.yaml");
    let example_arg = example.to_str().expect("UTF-8 path");
    let out = pullsecretd(&["check-config", example_arg], ROOT_TOKEN);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/private",
        json!({ "username": "robot", "password": SENTINEL, "email": "ops@example.com" }),
    )
    .await;
    bao.kv2_put(
        "secret",
        "registries/redhat-sso",
        json!({ "username": "sso-user", "password": SENTINEL }),
    )
    .await;
    let docker_config =
        json!({ "auths": { "quay.io": { "username": "q", "password": SENTINEL } } });
    bao.kv2_put(
        "secret",
        "registries/quay",
        json!({ ".dockerconfigjson": docker_config.to_string() }),
    )
    .await;
    // The example names the README's port; point a copy at this test's server.
    let text = std::fs::read_to_string(&example).expect("example is readable");
    assert!(text.contains("address: http://127.0.0.1:8200"));
    let text = text.replace("http://127.0.0.1:8200", &bao.address);
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("vault.yaml");
    std::fs::write(&copy, text).expect("write config copy");

    let out = pullsecretd(
        &["plan", "--config", copy.to_str().expect("UTF-8")],
        ROOT_TOKEN,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    for expected in [
        "private-registry  kubernetes.io/dockerconfigjson  privateregistry.example.com, sso.redhat.com",
        "quay-robot        kubernetes.io/dockercfg         quay.io",
        "Project project-b",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains(SENTINEL) && !stderr.contains(SENTINEL));
}

/// Reads of `path` by operation `read`, per OpenBao's own audit log.
fn audited_reads(bao: &OpenBao, path: &str) -> usize {
    audit_requests(&bao.audit_log())
        .into_iter()
        .filter(|(op, p, _)| op == "read" && p == path)
        .count()
}

#[tokio::test]
async fn refreshes_poll_kv2_metadata_and_read_data_only_when_the_version_moves() {
    const DATA: &str = "secret/data/registries/shared";
    const METADATA: &str = "secret/metadata/registries/shared";
    let bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/shared",
        json!({ "username": "u", "password": "one" }),
    )
    .await;
    let registries = [
        registry(
            "one",
            "one.example.com",
            "{ vault: { path: registries/shared } }",
        ),
        registry(
            "two",
            "two.example.com",
            "{ vault: { path: registries/shared } }",
        ),
    ]
    .concat();
    let config = config(&bao, "{ method: token }", &registries);
    let session = session(&config, token_env(ROOT_TOKEN));
    let mut inventory = Inventory::new();
    for _ in 0..3 {
        let report = inventory.refresh(&config, &context(&session)).await;
        assert!(report.failures.is_empty(), "{:?}", report.failures);
    }
    assert_eq!(
        audited_reads(&bao, DATA),
        1,
        "one data read for three refreshes"
    );
    assert_eq!(
        audited_reads(&bao, METADATA),
        2,
        "later refreshes only poll the version"
    );

    bao.kv2_put(
        "secret",
        "registries/shared",
        json!({ "username": "u", "password": "two" }),
    )
    .await;
    let report = inventory.refresh(&config, &context(&session)).await;
    assert_eq!(report.changed, vec!["one".to_string(), "two".to_string()]);
    assert_eq!(password(&inventory.credentials()["two"]), "two");
    assert_eq!(inventory.credentials()["two"].version, "v2");
    assert_eq!(audited_reads(&bao, DATA), 2);

    // A policy that may read the data but not the metadata: data reads each refresh, and the
    // denied metadata poll is tried once, not answered with a login storm.
    bao.put_policy(
        "data-only",
        "path \"secret/data/registries/*\" { capabilities = [\"read\"] }",
    )
    .await;
    let token = bao
        .create_token(json!({ "policies": ["data-only"], "ttl": "1h" }))
        .await;
    let narrow = session_for_token(&config, &token);
    let mut inventory = Inventory::new();
    let (data_before, metadata_before) = (audited_reads(&bao, DATA), audited_reads(&bao, METADATA));
    for _ in 0..3 {
        let report = inventory.refresh(&config, &context(&narrow)).await;
        assert!(report.failures.is_empty(), "{:?}", report.failures);
    }
    assert_eq!(audited_reads(&bao, DATA) - data_before, 3);
    assert_eq!(audited_reads(&bao, METADATA) - metadata_before, 1);
    assert_eq!(narrow.stats().logins, 1);
}

fn session_for_token(config: &Config, token: &str) -> Arc<VaultSession> {
    session(config, token_env(token))
}

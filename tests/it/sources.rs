//! Source stage against real files, real helper processes and the real `kubectl`.
//!
//! Every credential here is fictional. Bad inputs carry [`SENTINEL`], which must never appear
//! in an error's `Display` or `Debug`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use secrecy::ExposeSecret as _;

use pullsecretd::config::{RegistryConfig, SecretType, SourceConfig};
use pullsecretd::dockerconfig::{self, AuthFileFormat};
use pullsecretd::model::credential::{Credential, RegistryKey, Secret};
use pullsecretd::source::{self, Error, Resolved, SourceContext, helper};

const SENTINEL: &str = "SENTINEL-pw-93f1";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/auth")
        .join(name)
}

fn docker(server: &str) -> RegistryKey {
    RegistryKey::from_docker(server).expect("valid server")
}

fn registry(server: &str, from: SourceConfig) -> RegistryConfig {
    RegistryConfig {
        name: "test".into(),
        server: docker(server),
        from,
        verify: None,
    }
}

/// Helper scripts, written once before any test starts a process: a file still open for
/// writing while another thread forks cannot be executed (ETXTBSY).
fn helper_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sources-helpers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create helper dir");
        let read_server = r#"[ "$1" = get ] || exit 2; IFS= read -r server || true"#;
        let scripts = [
            (
                "test-ok",
                format!(
                    r#"{read_server}; printf '{{"ServerURL":"%s","Username":"user-for-%s","Secret":"fictional-helper-pw"}}\n' "$server" "$server""#
                ),
            ),
            (
                "test-token",
                format!(
                    r#"{read_server}; echo '{{"ServerURL":"x","Username":"<token>","Secret":"fictional-identity-token"}}'"#
                ),
            ),
            (
                "test-notfound",
                format!("{read_server}; echo 'credentials not found in native keychain'; exit 1"),
            ),
            (
                "test-nourl",
                format!("{read_server}; echo 'no credentials server URL'; exit 1"),
            ),
            (
                "test-fail",
                format!("{read_server}; echo 'cannot unlock {SENTINEL}'; echo '{SENTINEL}' >&2; exit 1"),
            ),
            (
                "test-garbage",
                format!("{read_server}; echo 'password={SENTINEL} {{not json'"),
            ),
            (
                "test-wrongshape",
                format!(r#"{read_server}; echo '{{"Username":"u","Secret":["{SENTINEL}"]}}'"#),
            ),
            ("test-hang", "exec sleep 30".to_string()),
            (
                "teststore",
                format!(
                    r#"{read_server}; printf '{{"ServerURL":"%s","Username":"store-user-for-%s","Secret":"fictional-store-pw"}}\n' "$server" "$server""#
                ),
            ),
            (
                "testgcr",
                format!(
                    r#"{read_server}; printf '{{"ServerURL":"%s","Username":"gcr-user-for-%s","Secret":"fictional-gcr-pw"}}\n' "$server" "$server""#
                ),
            ),
        ];
        for (name, body) in scripts {
            write_script(&dir.join(format!("docker-credential-{name}")), &body);
        }
        dir
    })
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, format!("#!/usr/bin/env bash\n{body}\n")).expect("write helper");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod helper");
}

fn ctx() -> SourceContext {
    SourceContext {
        helper_dirs: Some(vec![helper_dir().to_path_buf()]),
        helper_timeout: Duration::from_secs(10),
        vault: None,
    }
}

/// (username, secret, is identity token, email).
fn summary(cred: &Credential) -> (String, String, bool, Option<String>) {
    let (secret, token) = match &cred.secret {
        Secret::Password(p) => (p.expose_secret().to_string(), false),
        Secret::IdentityToken(t) => (t.expose_secret().to_string(), true),
    };
    (cred.username.clone(), secret, token, cred.email.clone())
}

fn pw(user: &str, pass: &str) -> (String, String, bool, Option<String>) {
    (user.into(), pass.into(), false, None)
}

async fn resolve_ok(server: &str, from: SourceConfig) -> Resolved {
    let config = registry(server, from);
    let resolved = source::resolve(&config, &ctx())
        .await
        .unwrap_or_else(|e| panic!("{server}: {e}"));
    assert_eq!(resolved.credential.registry, config.server);
    resolved
}

async fn resolve_err(server: &str, from: SourceConfig) -> Error {
    let err = source::resolve(&registry(server, from), &ctx())
        .await
        .expect_err("resolve should fail");
    assert_no_sentinel(&err);
    err
}

fn assert_no_sentinel(err: &impl std::fmt::Debug) {
    let debug = format!("{err:?}");
    assert!(!debug.contains(SENTINEL), "leaks a value: {debug}");
}

fn assert_clean(err: &Error, wants: &[&str]) {
    assert_no_sentinel(err);
    let shown = err.to_string();
    assert!(!shown.contains(SENTINEL), "leaks a value: {shown}");
    for want in wants {
        assert!(shown.contains(want), "{shown:?} should mention {want:?}");
    }
}

// ---- Real-shaped files ----

#[tokio::test]
async fn docker_config_json_resolves_each_registry() {
    let from = || SourceConfig::DockerConfig {
        path: data("docker-config.json"),
    };
    let cases = [
        ("docker.io", pw("example-hub-user", "fictional-hub-pw")),
        (
            "https://index.docker.io/v1/",
            pw("example-hub-user", "fictional-hub-pw"),
        ),
        ("quay.io", pw("example+robot", "FICTIONAL0ROBOT0TOKEN")),
        (
            "registry.example.com:8443",
            pw("ci-bot", "fictional:pw:with:colons"),
        ),
        (
            "registry.example.org",
            (
                "tokenuser".into(),
                "fictional-refresh-token".into(),
                true,
                None,
            ),
        ),
    ];
    for (server, want) in cases {
        assert_eq!(
            summary(&resolve_ok(server, from()).await.credential),
            want,
            "{server}"
        );
    }
    let err = resolve_err("ghcr.io", from()).await;
    assert!(matches!(err, Error::NotInFile { .. }), "{err:?}");
    assert_clean(&err, &["ghcr.io", "docker-config.json", "not in"]);
}

#[tokio::test]
async fn legacy_dockercfg_files_resolve() {
    let from = || SourceConfig::Dockercfg {
        path: data("dockercfg"),
    };
    let got = resolve_ok("registry.example.com", from()).await.credential;
    assert_eq!(
        summary(&got),
        (
            "legacy-user".into(),
            "fictional-legacy-pw".into(),
            false,
            Some("legacy@example.com".into())
        )
    );
    let hub = resolve_ok("docker.io", from()).await.credential;
    assert_eq!(hub.username, "hub-legacy");

    // OpenShift's generated dockercfg secrets have the same shape.
    let internal = "image-registry.openshift-image-registry.svc:5000";
    let sa = resolve_ok(
        internal,
        SourceConfig::Dockercfg {
            path: data("openshift-dockercfg.json"),
        },
    )
    .await
    .credential;
    assert_eq!(sa.username, "<token>");
}

#[tokio::test]
async fn containers_auth_json_resolves_and_ignores_creds_store() {
    let from = || SourceConfig::ContainersAuth {
        path: data("containers-auth.json"),
    };
    assert_eq!(
        summary(&resolve_ok("quay.io", from()).await.credential),
        pw("quay-host-user", "fictional-host-pw")
    );
    assert_eq!(
        summary(&resolve_ok("registry-1.docker.io", from()).await.credential),
        pw("podman-hub-user", "fictional-podman-pw")
    );
    // credHelpers apply per registry.
    assert_eq!(
        resolve_ok("registry.example.com", from())
            .await
            .credential
            .username,
        "gcr-user-for-registry.example.com"
    );
    // credsStore is not read from auth.json, so an unknown registry is just absent.
    let err = resolve_err("ghcr.io", from()).await;
    assert!(matches!(err, Error::NotInFile { .. }), "{err:?}");

    // Namespaced keys are found most-specific first.
    let bytes = std::fs::read(data("containers-auth.json")).expect("read fixture");
    let file = dockerconfig::parse_auth_file(AuthFileFormat::ContainersAuth, &bytes)
        .expect("fixture parses");
    let user_for = |key: &str| match file.lookup(&RegistryKey::from_containers(key).expect("key")) {
        dockerconfig::Lookup::Found(c) => c.username,
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(user_for("quay.io/example-org/app"), "quay-repo-robot");
    assert_eq!(user_for("quay.io/example-org/other"), "quay-org-robot");
    assert_eq!(user_for("quay.io/someone-else/app"), "quay-host-user");
}

#[tokio::test]
async fn docker_config_with_creds_store_asks_the_helpers() {
    let from = || SourceConfig::DockerConfig {
        path: data("docker-config-credstore.json"),
    };
    let cases = [
        // The stub's key, as stored, is what the store is asked for.
        ("docker.io", "store-user-for-https://index.docker.io/v1/"),
        ("quay.io", "store-user-for-https://quay.io"),
        ("ghcr.io", "store-user-for-ghcr.io"),
        ("other.example.com", "store-user-for-other.example.com"),
        // credHelpers wins over credsStore.
        ("gcr.example.com", "gcr-user-for-gcr.example.com"),
    ];
    for (server, want) in cases {
        assert_eq!(
            resolve_ok(server, from()).await.credential.username,
            want,
            "{server}"
        );
    }
}

// ---- Helpers ----

#[tokio::test]
async fn helper_source_sends_the_auths_key() {
    let from = || SourceConfig::Helper {
        name: "test-ok".into(),
    };
    let quay = resolve_ok("quay.io", from()).await;
    assert_eq!(
        summary(&quay.credential),
        pw("user-for-quay.io", "fictional-helper-pw")
    );
    let hub = resolve_ok("docker.io", from()).await;
    assert_eq!(
        hub.credential.username,
        "user-for-https://index.docker.io/v1/"
    );
}

#[tokio::test]
async fn helper_identity_tokens_are_identity_tokens() {
    let got = helper::get("test-token", "quay.io", &ctx())
        .await
        .expect("helper answers")
        .expect("helper has a credential");
    assert_eq!(
        summary(&got),
        (String::new(), "fictional-identity-token".into(), true, None)
    );
}

#[tokio::test]
async fn helper_not_found_is_none_and_a_clear_resolve_error() {
    let got = helper::get("test-notfound", "quay.io", &ctx())
        .await
        .expect("not found is an answer");
    assert!(got.is_none());
    let err = resolve_err(
        "quay.io",
        SourceConfig::Helper {
            name: "test-notfound".into(),
        },
    )
    .await;
    assert!(matches!(err, Error::NotInHelper { .. }), "{err:?}");
    assert_clean(
        &err,
        &[
            "docker-credential-test-notfound",
            "quay.io",
            "no credential",
        ],
    );
}

#[tokio::test]
async fn helper_failures_never_echo_output() {
    let cases = [
        (
            "test-fail",
            vec![
                "docker-credential-test-fail",
                "quay.io",
                "exit status: 1",
                "not shown",
            ],
        ),
        (
            "test-garbage",
            vec!["docker-credential-test-garbage", "quay.io", "not JSON"],
        ),
        (
            "test-wrongshape",
            vec!["docker-credential-test-wrongshape", "Secret"],
        ),
        ("test-nourl", vec!["no credentials server URL"]),
        (
            "test-missing",
            vec!["docker-credential-test-missing", "not found"],
        ),
        ("bad/name", vec!["invalid"]),
        ("", vec!["invalid"]),
    ];
    for (name, wants) in cases {
        let err = resolve_err(
            "quay.io",
            SourceConfig::Helper {
                name: name.to_string(),
            },
        )
        .await;
        assert!(matches!(err, Error::HelperGet { .. }), "{name}: {err:?}");
        assert_clean(&err, &wants);
    }
}

#[tokio::test]
async fn hanging_helper_is_killed_at_the_timeout() {
    let ctx = SourceContext {
        helper_timeout: Duration::from_millis(300),
        ..ctx()
    };
    let started = Instant::now();
    let err = helper::get("test-hang", "quay.io", &ctx)
        .await
        .expect_err("times out");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        matches!(err, helper::HelperError::Timeout { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("docker-credential-test-hang"),
        "{err}"
    );
}

// ---- Bad files ----

fn write_temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

#[tokio::test]
async fn bad_files_give_clear_errors_without_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut not_utf8 = format!(r#"{{"auths":{{"quay.io":{{"password":"{SENTINEL}"#).into_bytes();
    not_utf8.extend_from_slice(b"\xff\xfe\"}}}");
    let mut huge = format!(
        r#"{{"auths":{{"quay.io":{{"auth":"{}"}}}},"pad":""#,
        b64(&format!("u:{SENTINEL}"))
    )
    .into_bytes();
    huge.resize(1024 * 1024 + 10, b' ');
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "truncated.json",
            format!(r#"{{"auths":{{"quay.io":{{"auth":"{SENTINEL}"#).into_bytes(),
            vec!["invalid JSON at line 1", "truncated?", "truncated.json"],
        ),
        (
            "wrong-type.json",
            format!(r#"{{"auths":{{"quay.io":{{"auth":["{SENTINEL}"]}}}}}}"#).into_bytes(),
            vec![r#"auths["quay.io"].auth must be a string, found an array"#],
        ),
        (
            "entry-string.json",
            format!(r#"{{"auths":{{"quay.io":"{SENTINEL}"}}}}"#).into_bytes(),
            vec![r#"auths["quay.io"] must be an object"#],
        ),
        (
            "bad-base64.json",
            format!(r#"{{"auths":{{"quay.io":{{"auth":"{SENTINEL}%%"}}}}}}"#).into_bytes(),
            vec![r#"auths["quay.io"].auth"#, "base64"],
        ),
        (
            "no-colon.json",
            format!(
                r#"{{"auths":{{"quay.io":{{"auth":"{}"}}}}}}"#,
                b64(SENTINEL)
            )
            .into_bytes(),
            vec![r#"auths["quay.io"].auth"#, "':'"],
        ),
        ("not-utf8.json", not_utf8, vec!["UTF-8"]),
        (
            "huge.json",
            huge,
            vec!["larger than 1048576 bytes", "huge.json"],
        ),
    ];
    for (name, bytes, wants) in cases {
        let path = write_temp(&dir, name, &bytes);
        let err = resolve_err("quay.io", SourceConfig::DockerConfig { path }).await;
        assert_clean(&err, &wants);
    }

    let missing = dir.path().join("missing.json");
    let err = resolve_err("quay.io", SourceConfig::DockerConfig { path: missing }).await;
    assert!(matches!(err, Error::ReadAuthFile { .. }), "{err:?}");
    assert_clean(&err, &["missing.json", "No such file"]);

    let err = resolve_err(
        "quay.io",
        SourceConfig::ContainersAuth {
            path: dir.path().to_path_buf(),
        },
    )
    .await;
    assert!(matches!(err, Error::NotAFile { .. }), "{err:?}");
    assert_clean(&err, &["a directory", "containers auth.json"]);
}

#[tokio::test]
async fn versions_change_exactly_when_the_credential_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let write = |auth: &str| {
        write_temp(
            &dir,
            "config.json",
            format!(r#"{{"auths":{{"quay.io":{{"auth":"{}"}}}}}}"#, b64(auth)).as_bytes(),
        )
    };
    let version = |path: PathBuf| async {
        resolve_ok("quay.io", SourceConfig::DockerConfig { path })
            .await
            .version
    };
    let first = version(write("robot:one")).await;
    assert_eq!(first.len(), 16);
    assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(version(write("robot:one")).await, first);
    assert_ne!(version(write("robot:two")).await, first);
    assert_ne!(version(write("robot2:one")).await, first);
}

// ---- Golden bytes from the real kubectl ----

struct KubectlCase {
    server: Option<&'static str>,
    username: &'static str,
    password: &'static str,
    email: Option<&'static str>,
}

/// What `kubectl create secret docker-registry` puts in `data[".dockerconfigjson"]`.
fn kubectl_payload(case: &KubectlCase) -> Vec<u8> {
    let mut cmd = Command::new("kubectl");
    cmd.args(["create", "secret", "docker-registry", "golden"])
        .arg(format!("--docker-username={}", case.username))
        .arg(format!("--docker-password={}", case.password))
        .args(["--dry-run=client", "-o", "json"]);
    if let Some(server) = case.server {
        cmd.arg(format!("--docker-server={server}"));
    }
    if let Some(email) = case.email {
        cmd.arg(format!("--docker-email={email}"));
    }
    let output = cmd
        .output()
        .expect("kubectl must be on PATH for this test (CI installs it)");
    assert!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let secret: serde_json::Value = serde_json::from_slice(&output.stdout).expect("kubectl JSON");
    let encoded = secret["data"][".dockerconfigjson"]
        .as_str()
        .expect("data[.dockerconfigjson] is a string");
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("kubectl data is base64")
}

#[test]
fn encode_payload_matches_kubectl_byte_for_byte() {
    let _ = helper_dir(); // Scripts are written before any process starts.
    let cases = [
        KubectlCase {
            server: Some("quay.io"),
            username: "robot",
            password: "simple",
            email: None,
        },
        KubectlCase {
            server: None,
            username: "hubuser",
            password: "hubpw",
            email: None,
        },
        KubectlCase {
            server: Some("https://index.docker.io/v1/"),
            username: "hubuser",
            password: "hubpw",
            email: Some("me@example.com"),
        },
        KubectlCase {
            server: Some("registry.example.com:5000"),
            username: "ci",
            password: "pw",
            email: Some("ci+bot@example.com"),
        },
        KubectlCase {
            server: Some("quay.io"),
            username: "a<b>&\"c\\",
            password: "p:<>&\"\\\u{2028}\u{2029}:end",
            email: Some("<x>&\"y\"@example.com"),
        },
        KubectlCase {
            server: Some("ghcr.io"),
            username: "用户-ü",
            password: "пароль🔑é",
            email: Some("ñ@example.com"),
        },
        KubectlCase {
            server: Some("[::1]:5000"),
            username: "tab\tuser",
            password: "ctl\u{1}\u{8}\u{c}\n\r\u{7f}",
            email: None,
        },
    ];
    for case in &cases {
        let server = docker(case.server.unwrap_or("docker.io"));
        let credential = Credential {
            email: case.email.map(str::to_string),
            ..Credential::with_password(server, case.username, case.password)
        };
        let ours = dockerconfig::encode_payload(SecretType::DockerConfigJson, &[credential])
            .expect("renders");
        let theirs = kubectl_payload(case);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "server {:?}",
            case.server
        );
        assert_eq!(ours, theirs);
    }
}

//! The `pullsecretd` binary end to end: `plan` and `check-config` on real files, exit statuses,
//! `--output` manifests checked strictly against the k8s-openapi types, and the promise that no
//! credential text reaches stdout or stderr whatever the input.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use serde::de::DeserializeOwned;

/// A password no output may ever contain.
const SENTINEL: &str = "SENTINEL-pw-cli-7d3e";

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn pullsecretd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the pullsecretd binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every password in the shipped example file; none may appear in any output.
fn example_passwords() -> Vec<String> {
    let raw = fs::read_to_string(repo_file("config/example-docker-config.json"))
        .expect("example docker config is readable");
    let json: serde_json::Value = serde_json::from_str(&raw).expect("example is JSON");
    let auths = json["auths"].as_object().expect("example has auths");
    auths
        .values()
        .map(|entry| {
            let auth = entry["auth"].as_str().expect("entry has auth");
            let decoded = STANDARD.decode(auth).expect("auth is base64");
            let decoded = String::from_utf8(decoded).expect("auth is UTF-8");
            let (_, password) = decoded.split_once(':').expect("auth has a colon");
            password.to_string()
        })
        .collect()
}

#[test]
fn readme_plan_command_prints_the_example_plan() {
    let config = repo_file("config/example.yaml");
    let out = pullsecretd(&["plan", "--config", config.to_str().expect("UTF-8 path")]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));

    for expected in [
        "Project project-a",
        "Project project-b",
        "private-registry  kubernetes.io/dockerconfigjson  privateregistry.example.com, sso.redhat.com",
        "quay-robot        kubernetes.io/dockercfg         quay.io",
        "default          imagePullSecrets  private-registry",
        "builder          secrets           private-registry",
        "pullsecretd-image-puller  ClusterRole/system:image-puller  ServiceAccount project-a/default",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    for password in example_passwords() {
        assert!(!stdout.contains(&password) && !text(&out.stderr).contains(&password));
    }
}

#[test]
fn projects_flag_limits_the_plan() {
    let config = repo_file("config/example.yaml");
    let config = config.to_str().expect("UTF-8 path");
    let out = pullsecretd(&["plan", "--config", config, "--projects", "project-b"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("Project project-b"));
    assert!(!stdout.contains("Project project-a"), "{stdout}");

    let bad = pullsecretd(&["plan", "--config", config, "--projects", "Project_B"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("not a valid project name"));
}

/// Deserializes `yaml` into `T` and fails on any field `T` does not know.
fn strictly<T: DeserializeOwned>(yaml: &str) -> T {
    let mut ignored = Vec::new();
    let deserializer = serde_yaml_ng::Deserializer::from_str(yaml);
    let value: T = serde_ignored::deserialize(deserializer, |path| ignored.push(path.to_string()))
        .expect("manifest deserializes");
    assert!(
        ignored.is_empty(),
        "fields unknown to k8s-openapi: {ignored:?}"
    );
    value
}

#[test]
fn output_writes_strict_manifests_and_append_only_links() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("out");
    let config = repo_file("config/example.yaml");
    let out = pullsecretd(&[
        "plan",
        "--config",
        config.to_str().expect("UTF-8 path"),
        "--output",
        out_dir.to_str().expect("UTF-8 path"),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));

    let secret_path = out_dir.join("project-a/secret-private-registry.yaml");
    let secret: Secret = strictly(&fs::read_to_string(&secret_path).expect("secret manifest"));
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(secret.metadata.namespace.as_deref(), Some("project-a"));
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("pullsecretd")
    );
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key("pullsecretd.io/content-hash"));
    let data = secret.data.expect("secret has data");
    let payload: serde_json::Value =
        serde_json::from_slice(&data[".dockerconfigjson"].0).expect("payload is JSON");
    let keys: Vec<&String> = payload["auths"]
        .as_object()
        .expect("auths")
        .keys()
        .collect();
    assert_eq!(keys, ["privateregistry.example.com", "sso.redhat.com"]);
    let mode = fs::metadata(&secret_path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "secret manifests hold credentials");

    let legacy: Secret = strictly(
        &fs::read_to_string(out_dir.join("project-a/secret-quay-robot.yaml")).expect("manifest"),
    );
    let legacy_data = legacy.data.expect("data");
    let legacy_payload: serde_json::Value =
        serde_json::from_slice(&legacy_data[".dockercfg"].0).expect("payload is JSON");
    assert!(
        legacy_payload.get("quay.io").is_some(),
        "bare map: {legacy_payload}"
    );

    let binding: RoleBinding = strictly(
        &fs::read_to_string(out_dir.join("project-b/rolebinding-pullsecretd-image-puller.yaml"))
            .expect("rolebinding manifest"),
    );
    assert_eq!(binding.role_ref.name, "system:image-puller");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    let subjects = binding.subjects.expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].namespace.as_deref(),
            subjects[0].name.as_str()
        ),
        ("ServiceAccount", Some("project-a"), "default")
    );

    let links = fs::read_to_string(out_dir.join("project-a/links.sh")).expect("links");
    assert!(links.contains("oc secrets link default private-registry --for=pull -n project-a"));
    assert!(links.contains("oc secrets link builder private-registry --for=mount -n project-a"));
    assert!(links.contains("oc secrets link default quay-robot --for=pull -n project-a"));
    let no_service_account = fs::read_dir(&out_dir)
        .expect("out dir")
        .flatten()
        .flat_map(|project| fs::read_dir(project.path()).into_iter().flatten().flatten())
        .all(|file| {
            let contents = fs::read_to_string(file.path()).unwrap_or_default();
            !contents.lines().any(|line| line == "kind: ServiceAccount")
        });
    assert!(
        no_service_account,
        "whole ServiceAccounts would drop references"
    );
}

#[test]
fn check_config_accepts_the_example_and_locates_errors() {
    let good = pullsecretd(&[
        "check-config",
        repo_file("config/example.yaml").to_str().expect("path"),
    ]);
    assert!(good.status.success(), "stderr: {}", text(&good.stderr));
    assert!(text(&good.stdout).contains("valid (3 registries, 2 pull secrets, 1 image puller)"));

    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.yaml");
    fs::write(
        &bad,
        "registries:\n  quay:\n    server: quay.io\n    from: { helper: x }\npullSecrets:\n  - name: p\n    registries: [quay, nope]\n    projects: { names: [a] }\n",
    )
    .expect("write config");
    let out = pullsecretd(&["check-config", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let location = format!("{}:7:24: pullSecrets[0].registries[1]", bad.display());
    assert!(stderr.contains(&location), "{stderr}");
}

/// A config with one registry read from `source` (a docker config file or a helper).
fn config_for(dir: &Path, from: &str) -> PathBuf {
    let path = dir.join("config.yaml");
    fs::write(
        &path,
        format!(
            "registries:\n  r:\n    server: registry.example.com\n    from: {from}\n\
             pullSecrets:\n  - name: p\n    registries: [r]\n    projects: {{ names: [a] }}\n"
        ),
    )
    .expect("write config");
    path
}

fn auth(user: &str, password: &str) -> String {
    STANDARD.encode(format!("{user}:{password}"))
}

/// Runs `plan` and asserts: exit 2, an error on stderr mentioning `expected`, no panic, and no
/// trace of the sentinel anywhere.
fn assert_bad_input(config: &Path, expected: &str, extra: &[&str]) {
    let mut args = vec!["plan", "--config", config.to_str().expect("path")];
    args.extend_from_slice(extra);
    let out = pullsecretd(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let encoded_sentinel = STANDARD.encode(SENTINEL);
    for output in [&stdout, &stderr] {
        assert!(!output.contains(SENTINEL), "sentinel leaked: {output}");
        assert!(
            !output.contains(&encoded_sentinel[..12]),
            "encoded sentinel leaked: {output}"
        );
    }
}

#[test]
fn bad_docker_config_files_exit_2_without_leaking() {
    let good_auth = auth("user", SENTINEL);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated JSON",
            format!(r#"{{"auths": {{"registry.example.com": {{"auth": "{good_auth}""#).into_bytes(),
            "line 1",
        ),
        (
            "wrong type",
            format!(r#"{{"auths": {{"registry.example.com": {{"auth": ["{good_auth}"]}}}}}}"#)
                .into_bytes(),
            "must be a string",
        ),
        (
            "invalid base64",
            format!(r#"{{"auths": {{"registry.example.com": {{"auth": "%%{SENTINEL}"}}}}}}"#)
                .into_bytes(),
            "base64",
        ),
        (
            "auth without colon",
            format!(
                r#"{{"auths": {{"registry.example.com": {{"auth": "{}"}}}}}}"#,
                STANDARD.encode(SENTINEL)
            )
            .into_bytes(),
            ":",
        ),
        (
            "not UTF-8",
            [format!(r#"{{"auths": {{"registry.example.com": {{"password": "{SENTINEL}"#).as_bytes(), b"\xff\xfe\"}}}"]
                .concat(),
            "UTF-8",
        ),
        (
            "over 1 MiB",
            format!(
                r#"{{"auths": {{"registry.example.com": {{"auth": "{good_auth}"}}}}, "pad": "{}"}}"#,
                "x".repeat(1024 * 1024)
            )
            .into_bytes(),
            "larger than 1048576 bytes",
        ),
    ];
    for (name, contents, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let docker_config = dir.path().join("config.json");
        fs::write(&docker_config, contents).expect("write docker config");
        let config = config_for(
            dir.path(),
            &format!("{{ dockerConfig: {} }}", docker_config.display()),
        );
        eprintln!("case: {name}");
        assert_bad_input(&config, expected, &[]);
    }
}

#[test]
fn missing_file_and_directory_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = config_for(
        dir.path(),
        &format!("{{ dockerConfig: {}/nope.json }}", dir.path().display()),
    );
    assert_bad_input(&missing, "nope.json", &[]);

    let subdir = dir.path().join("a-directory");
    fs::create_dir(&subdir).expect("mkdir");
    let directory = config_for(
        dir.path(),
        &format!("{{ dockerConfig: {} }}", subdir.display()),
    );
    assert_bad_input(&directory, "a-directory", &[]);

    let out = pullsecretd(&[
        "plan",
        "--config",
        &format!("{}/no-config.yaml", dir.path().display()),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no-config.yaml"));
}

/// Writes `docker-credential-<name>` with `body` into `dir`, executable.
fn write_helper(dir: &Path, name: &str, body: &str) {
    let path = dir.join(format!("docker-credential-{name}"));
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write helper");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod helper");
}

/// Runs `plan` for a config whose registry comes from `docker-credential-<name>`, with only the
/// temp dir (plus the system dirs for `sh`, `cat`, `sleep`) on PATH.
fn plan_with_helper(dir: &Path, name: &str, extra: &[&str]) -> Output {
    let config = config_for(dir, &format!("{{ helper: {name} }}"));
    let mut args = vec!["plan", "--config", config.to_str().expect("path")];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_pullsecretd"))
        .args(&args)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .output()
        .expect("pullsecretd runs")
}

#[test]
fn credential_helpers_are_used_and_their_failures_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_helper(
        dir.path(),
        "good",
        &format!(
            r#"read url; printf '{{"ServerURL":"%s","Username":"robot","Secret":"{SENTINEL}"}}\n' "$url""#
        ),
    );
    let out = plan_with_helper(dir.path(), "good", &[]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("helper docker-credential-good"));
    assert!(!text(&out.stdout).contains(SENTINEL));

    write_helper(dir.path(), "fails", "echo 'something went wrong'; exit 1");
    write_helper(
        dir.path(),
        "garbage",
        &format!("echo 'not json {SENTINEL}'"),
    );
    write_helper(dir.path(), "hangs", "exec sleep 30");
    for (name, expected) in [
        ("fails", "fails"),
        ("garbage", "garbage"),
        ("hangs", "hangs"),
    ] {
        let started = std::time::Instant::now();
        let out = plan_with_helper(dir.path(), name, &["--helper-timeout", "1s"]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(
            !stdout.contains(SENTINEL) && !stderr.contains(SENTINEL),
            "{name} leaked"
        );
        assert!(
            started.elapsed().as_secs() < 20,
            "{name} was not bounded by the timeout"
        );
    }
}

//! The kubelet's exec image credential providers against real parts: kube-sim's kubelet runs
//! `tests/support/credential-provider.sh` (a stand-in for pullsecretd's provider) by the
//! kubelet's protocol, and really pulls from a Debian `docker-registry` with htpasswd auth
//! (pushed to with `skopeo`); pods are created with the real `kubectl`. Each test has its own
//! HTTPS kube-sim, registry and provider state directory; missing programs fail the tests.
//! Waits have a 30 s deadline and assert on states, events and recorded runs, never on how long
//! anything took. The one test of cache expiry lets a 1 s cache lifetime pass first.

#![allow(clippy::unwrap_used)]

#[path = "support/registry.rs"]
mod registry;

use kube_sim::{Handle, KubeletOptions, Options, ProviderCall, PullAttempt, Server};
use registry::Registry;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-from-vault";
const REPO: &str = "team/app";
const SCRIPT: &str = include_str!("support/credential-provider.sh");
const V1: &str = "credentialprovider.kubelet.k8s.io/v1";

/// A provider's state directory: what the script answers and what it was asked.
struct State(PathBuf);

impl State {
    fn set(&self, file: &str, value: &str) {
        std::fs::write(self.0.join(file), value).unwrap();
    }

    /// The requests the provider received, oldest first.
    fn requests(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.0.join("calls"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|x| x == "request"));
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// The environment marker each run saw.
    fn metas(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.0.join("calls"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|x| x == "meta"));
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
            .collect()
    }
}

/// Installs the script as `name` in `bin` and returns its state directory.
fn install(bin: &Path, name: &str, dir: &Path) -> State {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(bin).unwrap();
    let exe = bin.join(name);
    std::fs::write(&exe, SCRIPT).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.join(format!("state-{name}"));
    std::fs::create_dir_all(&state).unwrap();
    State(state)
}

/// A `providers[]` entry running the script for `auth_key`.
fn provider_yaml(
    name: &str,
    match_images: &[&str],
    default_cache: &str,
    auth_key: &str,
    state: &State,
) -> String {
    let images: Vec<String> = match_images.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "- name: {name}\n  matchImages: [{}]\n  defaultCacheDuration: {default_cache}\n  apiVersion: {V1}\n  args: [--auth-key, \"{auth_key}\", --state, \"{}\"]\n  env: [{{name: PROVIDER_ENV, value: from-config}}]\n",
        images.join(", "),
        state.0.display()
    )
}

fn config_yaml(providers: &[String]) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n{}",
        providers.concat()
    )
}

/// A kubelet with short backoffs and the providers of `config`.
fn kubelet(config: &Path, bin: &Path) -> KubeletOptions {
    KubeletOptions {
        image_backoff_initial: Duration::from_millis(300),
        image_backoff_max: Duration::from_millis(1200),
        sync_after_failure: Duration::from_millis(50),
        resync_interval: Duration::from_secs(2),
        image_credential_provider_config: Some(config.to_path_buf()),
        image_credential_provider_bin_dir: Some(bin.to_path_buf()),
        ..KubeletOptions::default()
    }
}

struct Cluster {
    handle: Handle,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// kube-sim with a kubelet whose provider config is `providers` (entries of
    /// [`provider_yaml`]), written into `dir`.
    fn start(dir: tempfile::TempDir, providers: &[String]) -> Self {
        Self::start_with(dir, providers, |k| k)
    }

    fn start_with(
        dir: tempfile::TempDir,
        providers: &[String],
        tweak: impl FnOnce(KubeletOptions) -> KubeletOptions,
    ) -> Self {
        let config = dir.path().join("credential-providers.yaml");
        std::fs::write(&config, config_yaml(providers)).unwrap();
        let opts = Options::default()
            .tls()
            .kubelet(tweak(kubelet(&config, &dir.path().join("bin"))));
        let handle = Server::start_in_thread(opts).expect("server starts");
        let kubeconfig = dir.path().join("kubeconfig");
        handle.write_kubeconfig(&kubeconfig).unwrap();
        Self {
            handle,
            dir,
            kubeconfig,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("kubectl must be installed and on PATH")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl run NAME --image=IMAGE --image-pull-policy=Always` (plus `extra`).
    fn run_pod(&self, name: &str, image: &str, extra: &[&str]) {
        let mut args = vec![
            "run".to_string(),
            name.to_string(),
            format!("--image={image}"),
            "--image-pull-policy=Always".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.handle.get("", "pods", ns, name)
    }

    fn attempts(&self, pod: &str) -> Vec<PullAttempt> {
        self.handle
            .pull_attempts()
            .into_iter()
            .filter(|a| a.pod == pod)
            .collect()
    }

    fn calls(&self, provider: &str) -> Vec<ProviderCall> {
        self.handle
            .provider_calls()
            .into_iter()
            .filter(|c| c.provider == provider)
            .collect()
    }

    /// Waits until pod `name` (namespace default) runs.
    fn running(&self, name: &str) -> Value {
        eventually(&format!("{name} running"), || {
            self.pod("default", name).filter(is_running)
        })
    }

    /// Waits until pod `name` fails to pull.
    fn failing(&self, name: &str) -> Value {
        eventually(&format!("{name} failing to pull"), || {
            self.pod("default", name)
                .filter(|p| waiting_reason(p) == "ErrImagePull")
        })
    }

    /// (type, reason, message) of the events of pod `name`, oldest first.
    fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let mut evs: Vec<Value> = self
            .handle
            .list("", "events", Some("default"))
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == name)
            .collect();
        evs.sort_by_key(|e| e["metadata"]["name"].as_str().unwrap_or("").to_string());
        evs.iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                (s("type"), s("reason"), s("message"))
            })
            .collect()
    }
}

/// Polls `f` until it returns Some, for at most 30 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn waiting_reason(pod: &Value) -> String {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn is_running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
}

fn registry_with_image() -> Registry {
    let reg = Registry::start(&[(USER, PASSWORD)]);
    reg.push(USER, PASSWORD, REPO, "v1");
    reg.push(USER, PASSWORD, "team/other", "v1");
    reg
}

fn cache_base(call: &ProviderCall) -> Option<String> {
    call.outcome
        .as_ref()
        .ok()
        .and_then(|c| c.cache_key.as_ref())
        .map(|k| k.base.clone())
}

#[test]
fn a_pod_without_pull_secrets_pulls_with_what_the_provider_returns() {
    let reg = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
    state.set("password", PASSWORD);
    let p = provider_yaml("vaultcp", &[&reg.host], "5m", &reg.host, &state);
    let c = Cluster::start(dir, &[p]);
    let image = format!("{}/{REPO}:v1", reg.host);
    c.run_pod("app", &image, &[]);

    let pod = c.running("app");
    assert_eq!(pod["spec"].get("imagePullSecrets"), None, "{pod}");
    let attempts = c.attempts("app");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].username.as_deref(), Some(USER));
    assert_eq!(attempts[0].provider.as_deref(), Some("vaultcp"));
    assert_eq!(attempts[0].secret, None);
    assert!(attempts[0].result.is_ok(), "{attempts:?}");
    assert!(
        reg.manifest_pulls(REPO).iter().any(|p| p.authorized),
        "{:?}",
        reg.served()
    );

    // The request as the kubelet encodes it: the repository, without tag; args and env given.
    assert_eq!(
        state.requests(),
        [format!(
            "{{\"kind\":\"CredentialProviderRequest\",\"apiVersion\":\"{V1}\",\"image\":\"{}/{REPO}\"}}",
            reg.host
        )]
    );
    assert_eq!(state.metas(), ["env=from-config"]);
    let calls = c.calls("vaultcp");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].image, format!("{}/{REPO}", reg.host));
    let cached = calls[0].outcome.as_ref().expect("a good response");
    assert_eq!(cached.cache_key_type, "Registry");
    assert_eq!(cache_base(&calls[0]).as_deref(), Some(reg.host.as_str()));
    assert_eq!(cached.cache_duration, Some(Duration::from_secs(300)));
    assert_eq!(cached.auth_keys, std::slice::from_ref(&reg.host));
    assert!(
        !format!("{calls:?}{attempts:?}").contains(PASSWORD),
        "a record shows the password"
    );
    let described = c.ok(&["describe", "pod", "app"]);
    assert!(
        described.contains(&format!("Successfully pulled image \"{image}\"")),
        "{described}"
    );
}

#[test]
fn credentials_are_reused_within_the_cache_duration_by_cache_key_type() {
    let reg = registry_with_image();
    for (key_type, second_repo_reexecs) in [("Image", true), ("Registry", false), ("Global", false)]
    {
        let dir = tempfile::tempdir().unwrap();
        let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
        state.set("password", PASSWORD);
        state.set("cache-key-type", key_type);
        state.set("cache-duration", "5m");
        let p = provider_yaml("vaultcp", &[&reg.host], "0s", &reg.host, &state);
        let c = Cluster::start(dir, &[p]);
        let app = format!("{}/{REPO}:v1", reg.host);
        c.run_pod("one", &app, &[]);
        c.running("one");
        // Same repository, pulled again (Always): the cached credential, no run.
        c.run_pod("two", &app, &[]);
        c.running("two");
        assert_eq!(
            c.calls("vaultcp").len(),
            1,
            "{key_type}: {:?}",
            c.calls("vaultcp")
        );
        assert_eq!(c.attempts("two")[0].provider.as_deref(), Some("vaultcp"));
        // Another repository of the registry: only an Image key misses.
        c.run_pod("three", &format!("{}/team/other:v1", reg.host), &[]);
        c.running("three");
        let calls = c.calls("vaultcp");
        let want = if second_repo_reexecs { 2 } else { 1 };
        assert_eq!(calls.len(), want, "{key_type}: {calls:?}");
        let bases: Vec<Option<String>> = calls.iter().map(cache_base).collect();
        let expected: Vec<Option<String>> = match key_type {
            "Image" => vec![
                Some(format!("{}/{REPO}", reg.host)),
                Some(format!("{}/team/other", reg.host)),
            ],
            "Registry" => vec![Some(reg.host.clone())],
            _ => vec![Some("<global>".to_string())],
        };
        assert_eq!(bases, expected, "{key_type}");
    }
}

#[test]
fn an_expired_entry_and_a_zero_duration_run_the_provider_again() {
    let reg = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
    state.set("password", PASSWORD);
    state.set("cache-duration", "1s");
    let p = provider_yaml("vaultcp", &[&reg.host], "5m", &reg.host, &state);
    let c = Cluster::start(dir, &[p]);
    let app = format!("{}/{REPO}:v1", reg.host);
    c.run_pod("one", &app, &[]);
    c.running("one");
    let first = c.calls("vaultcp");
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0]
            .outcome
            .as_ref()
            .ok()
            .and_then(|o| o.cache_duration),
        Some(Duration::from_secs(1)),
        "the response's duration wins over the default"
    );
    // Let the 1 s lifetime pass (a precondition, not a measurement).
    std::thread::sleep(Duration::from_millis(1500));
    c.run_pod("two", &app, &[]);
    c.running("two");
    assert_eq!(c.calls("vaultcp").len(), 2, "{:?}", c.calls("vaultcp"));

    // cacheDuration 0s: nothing is cached, every pull runs the provider.
    state.set("cache-duration", "0s");
    // Pod two's entry is still good for its second: let it lapse too.
    std::thread::sleep(Duration::from_millis(1500));
    c.run_pod("three", &app, &[]);
    c.running("three");
    c.run_pod("four", &app, &[]);
    c.running("four");
    let calls = c.calls("vaultcp");
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(cache_base(&calls[2]), None);
    assert_eq!(cache_base(&calls[3]), None);
}

#[test]
fn a_failing_provider_leaves_an_anonymous_pull_that_the_registry_refuses() {
    let reg = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
    state.set("password", PASSWORD);
    state.set("mode", "fail");
    let p = provider_yaml("vaultcp", &[&reg.host], "5m", &reg.host, &state);
    let c = Cluster::start(dir, &[p]);
    let image = format!("{}/{REPO}:v1", reg.host);
    c.run_pod("app", &image, &[]);

    let pod = c.failing("app");
    let pull_error = format!(
        "rpc error: code = Unknown desc = initializing source docker://{image}: reading manifest v1 in {}/{REPO}: authentication required",
        reg.host
    );
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        json!(pull_error)
    );
    let attempts = c.attempts("app");
    assert_eq!(attempts[0].username, None, "anonymous: {attempts:?}");
    let events = c.events("app");
    assert!(
        events.contains(&(
            "Warning".into(),
            "Failed".into(),
            format!("Failed to pull image \"{image}\": {pull_error}")
        )),
        "{events:?}"
    );
    assert!(events.contains(&(
        "Warning".into(),
        "Failed".into(),
        "Error: ErrImagePull".into()
    )));
    let calls = c.calls("vaultcp");
    assert_eq!(
        calls[0].outcome,
        Err(format!(
            "Failed getting credential from external registry credential provider: error execing credential provider plugin vaultcp for image {}/{REPO}: exit status 3: registry credentials unavailable\n",
            reg.host
        ))
    );

    // A failure is not cached: once the provider answers, the next sync pulls.
    state.set("mode", "ok");
    c.running("app");
    let last = c.attempts("app").pop().unwrap();
    assert_eq!(last.username.as_deref(), Some(USER));
    assert!(c.calls("vaultcp").len() >= 2);
}

#[test]
fn bad_responses_and_a_hung_provider_are_failures_too() {
    let reg = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
    state.set("password", PASSWORD);
    let p = provider_yaml("vaultcp", &[&reg.host], "5m", &reg.host, &state);
    let c = Cluster::start_with(dir, &[p], |k| KubeletOptions {
        credential_provider_timeout: Duration::from_millis(500),
        ..k
    });
    let repo = format!("{}/{REPO}", reg.host);
    let image = format!("{repo}:v1");
    let prefix = "Failed getting credential from external registry credential provider: ";
    let cases = [
        (
            "garbage",
            format!(
                "{prefix}error reading GVK from response: couldn't get version/kind; json parse error: invalid character '<' looking for beginning of value"
            ),
        ),
        (
            "wrong-version",
            format!(
                "{prefix}apiVersion from credential plugin response did not match expected apiVersion:{V1}, actual apiVersion:credentialprovider.kubelet.k8s.io/v1alpha1"
            ),
        ),
        (
            "hang",
            format!(
                "{prefix}error execing credential provider plugin vaultcp for image {repo}: context deadline exceeded: "
            ),
        ),
    ];
    for (i, (mode, want)) in cases.iter().enumerate() {
        state.set("mode", mode);
        let pod = format!("pod-{i}");
        c.run_pod(&pod, &image, &[]);
        c.failing(&pod);
        let calls = c.calls("vaultcp");
        assert_eq!(
            calls.last().map(|c| c.outcome.clone()),
            Some(Err(want.clone())),
            "{mode}"
        );
        assert_eq!(c.attempts(&pod)[0].username, None, "{mode}");
        // Gone, so its retries do not run the provider in the next case's mode.
        c.ok(&["delete", "pod", &pod]);
    }
    state.set("mode", "ok");
    state.set("cache-key-type", "none");
    c.run_pod("no-key-type", &image, &[]);
    c.failing("no-key-type");
    assert_eq!(
        c.calls("vaultcp").last().map(|c| c.outcome.clone()),
        Some(Err(
            "credential provider plugin did not return a valid cacheKeyType: \"\"".into()
        ))
    );
}

#[test]
fn pull_secret_credentials_are_tried_before_the_provider_s() {
    let reg = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
    state.set("password", PASSWORD);
    let p = provider_yaml("vaultcp", &[&reg.host], "5m", &reg.host, &state);
    let c = Cluster::start(dir, &[p]);
    c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "stale",
        &format!("--docker-server={}", reg.host),
        "--docker-username=alice",
        "--docker-password=rotated-away",
    ]);
    c.run_pod(
        "app",
        &format!("{}/{REPO}:v1", reg.host),
        &[
            "--overrides",
            r#"{"spec":{"imagePullSecrets":[{"name":"stale"}]}}"#,
        ],
    );
    c.running("app");
    let attempts = c.attempts("app");
    let sources: Vec<(Option<String>, Option<String>, bool)> = attempts
        .iter()
        .map(|a| (a.secret.clone(), a.provider.clone(), a.result.is_ok()))
        .collect();
    assert_eq!(
        sources,
        [
            (Some("stale".into()), None, false),
            (None, Some("vaultcp".into()), true)
        ]
    );
}

#[test]
fn only_providers_whose_match_images_match_run_and_they_run_in_config_order() {
    let reg = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let elsewhere = install(&bin, "elsewhere", dir.path());
    let team = install(&bin, "team-only", dir.path());
    let any = install(&bin, "any-path", dir.path());
    team.set("password", PASSWORD);
    any.set("password", "wrong");
    let providers = [
        provider_yaml(
            "elsewhere",
            &["127.0.0.2:5000", "*.example.com"],
            "5m",
            &reg.host,
            &elsewhere,
        ),
        provider_yaml("any-path", &[&reg.host], "5m", &reg.host, &any),
        provider_yaml(
            "team-only",
            &[&format!("{}/team", reg.host)],
            "5m",
            &reg.host,
            &team,
        ),
    ];
    let c = Cluster::start(dir, &providers);
    c.run_pod("app", &format!("{}/{REPO}:v1", reg.host), &[]);
    c.running("app");
    assert!(c.calls("elsewhere").is_empty());
    assert_eq!(c.calls("any-path").len(), 1);
    assert_eq!(c.calls("team-only").len(), 1);
    // Both answered for the same key: the earlier provider's credential is tried first.
    let tried: Vec<Option<String>> = c
        .attempts("app")
        .iter()
        .map(|a| a.provider.clone())
        .collect();
    assert_eq!(tried, [Some("any-path".into()), Some("team-only".into())]);
}

/// Upstream's `TestUrlsMatch` (pkg/credentialprovider/keyring_test.go) and the matchImages
/// examples of the config types, through the kubelet's matcher.
#[test]
fn match_images_follow_upstream_s_url_matching_table() {
    use kube_sim::kubelet::credential_provider::image_matches;
    let table = [
        ("*.kubernetes.io", "prefix.kubernetes.io", true),
        ("prefix.*.io", "prefix.kubernetes.io", true),
        ("prefix.kubernetes.*", "prefix.kubernetes.io", true),
        ("*-good.kubernetes.io", "prefix-good.kubernetes.io", true),
        ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", true),
        ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", true),
        (
            "*.kubernetes.io:1111/blah",
            "prefix.kubernetes.io:1111/blah",
            true,
        ),
        (
            "prefix.*.io:1111/foo",
            "prefix.kubernetes.io:1111/foo/bar",
            true,
        ),
        ("*.kubernetes.io", "kubernetes.io", false),
        ("*.*.kubernetes.io", "prefix.kubernetes.io", false),
        ("*.*.kubernetes.io", "kubernetes.io", false),
        ("kubernetes.io", "kubernetes.com", false),
        ("k*.io", "quay.io", false),
        (
            "*.kubernetes.io:1234/blah",
            "prefix.kubernetes.io:1111/blah",
            false,
        ),
        (
            "prefix.*.io/foo",
            "prefix.kubernetes.io:1111/foo/bar",
            false,
        ),
        // plugin_test.go's providers.
        ("test.registry.io", "test.registry.io/foo/bar", true),
        ("*.registry.io:8080", "test.registry.io:8080/foo", true),
        ("*.*.registry.io", "foo.bar.registry.io/foo/bar", true),
        ("*.registry.io", "test.registry.io", true),
        // types.go: one label per glob, ports must match when given, paths are prefixes.
        ("*.azurecr.io", "myreg.azurecr.io/app", true),
        ("*.io", "registry.k8s.io/app", false),
        ("registry.io:8080/path", "registry.io:8080/path/app", true),
        ("registry.io:8080/path", "registry.io/path/app", false),
        ("127.0.0.1:5000", "127.0.0.1:5000/team/app", true),
        ("127.0.0.1", "127.0.0.1:5000/team/app", false),
    ];
    for (pattern, image, want) in table {
        assert_eq!(image_matches(pattern, image), want, "{pattern} vs {image}");
    }
}

#[test]
fn the_kubelet_does_not_start_with_a_bad_config_or_a_missing_executable() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let state = install(&bin, "vaultcp", dir.path());
    let config = dir.path().join("c.yaml");
    let start = |yaml: &str, bin: &Path| {
        std::fs::write(&config, yaml).unwrap();
        let opts = Options::default().kubelet(kubelet(&config, bin));
        Server::start_in_thread(opts).err().map(|e| e.to_string())
    };
    let good = provider_yaml("vaultcp", &["127.0.0.1:5000"], "5m", "k", &state);
    assert_eq!(start(&config_yaml(std::slice::from_ref(&good)), &bin), None);
    assert_eq!(
        start(&config_yaml(&[good.replace("5m", "-1m")]), &bin).as_deref(),
        Some(
            "starting the kubelet: failed to validate credential provider config: providers.defaultCacheDuration: Invalid value: \"-1m0s\": must be greater than or equal to 0"
        )
    );
    assert_eq!(
        start(&config_yaml(&[good.replace("vaultcp", "missing")]), &bin).as_deref(),
        Some("starting the kubelet: plugin binary executable  did not exist")
    );
    assert_eq!(
        start(
            &config_yaml(std::slice::from_ref(&good)),
            &dir.path().join("nope")
        )
        .as_deref(),
        Some(&*format!(
            "starting the kubelet: plugin binary directory {} did not exist",
            dir.path().join("nope").display()
        ))
    );
    let err = start(&config_yaml(&[good.replace("  args:", "  argz:")]), &bin);
    assert_eq!(
        err.as_deref(),
        Some(&*format!(
            "starting the kubelet: error decoding config \"{}\": strict decoding error: unknown field \"providers[0].argz\"",
            config.display()
        ))
    );
}

/// `tokenAttributes` for a provider entry of [`provider_yaml`].
fn token_attributes(cache_type: &str, required: &[&str], optional: &[&str]) -> String {
    let list = |keys: &[&str]| {
        let q: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        format!("[{}]", q.join(", "))
    };
    format!(
        "  tokenAttributes:\n    serviceAccountTokenAudience: pullsecretd\n    cacheType: {cache_type}\n    requireServiceAccount: true\n    requiredServiceAccountAnnotationKeys: {}\n    optionalServiceAccountAnnotationKeys: {}\n",
        list(required),
        list(optional)
    )
}

const ROLE: &str = "pullsecretd.io/vault-role";
const TEAM: &str = "pullsecretd.io/team";

/// The JWT payload of a token.
fn jwt_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

impl Cluster {
    /// `kubectl create -f` of a TokenReview for `audiences`; its status.
    fn review(&self, token: &str, audiences: &[&str]) -> Value {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences}});
        let f = self.dir.path().join("review.json");
        std::fs::write(&f, body.to_string()).unwrap();
        let out = self.ok(&["create", "-f", f.to_str().unwrap(), "-o", "json"]);
        serde_json::from_str::<Value>(&out).unwrap()["status"].clone()
    }

    /// A service account with annotations, made with kubectl.
    fn account(&self, name: &str, annotations: &[(&str, &str)]) {
        self.ok(&["create", "serviceaccount", name]);
        for (k, v) in annotations {
            self.ok(&["annotate", "serviceaccount", name, &format!("{k}={v}")]);
        }
    }

    fn run_as(&self, pod: &str, image: &str, account: &str) {
        let overrides = json!({"spec": {"serviceAccountName": account}}).to_string();
        self.run_pod(pod, image, &["--overrides", &overrides]);
    }

    fn uid(&self, resource: &str, name: &str) -> String {
        self.handle.get("", resource, "default", name).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

#[test]
fn token_mode_sends_a_token_of_the_pod_s_account_that_token_review_accepts() {
    let reg = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
    state.set("password", PASSWORD);
    let p = provider_yaml("vaultcp", &[&reg.host], "5m", &reg.host, &state)
        + &token_attributes("ServiceAccount", &[ROLE], &[TEAM, "pullsecretd.io/absent"]);
    let c = Cluster::start(dir, &[p]);
    c.account(
        "builder",
        &[(ROLE, "ci"), (TEAM, "payments"), ("other/key", "x")],
    );
    c.run_as("app", &format!("{}/{REPO}:v1", reg.host), "builder");
    c.running("app");
    assert_eq!(c.attempts("app")[0].provider.as_deref(), Some("vaultcp"));

    let requests = state.requests();
    assert_eq!(requests.len(), 1);
    let request: Value = serde_json::from_str(&requests[0]).unwrap();
    assert_eq!(request["image"], format!("{}/{REPO}", reg.host));
    assert_eq!(
        request["serviceAccountAnnotations"],
        json!({ROLE: "ci", TEAM: "payments"}),
        "the required and the present optional annotations, nothing else"
    );
    let token = request["serviceAccountToken"].as_str().unwrap();
    let pod_uid = c.uid("pods", "app");
    let sa_uid = c.uid("serviceaccounts", "builder");
    let claims = jwt_claims(token);
    assert_eq!(claims["aud"], json!(["pullsecretd"]));
    assert_eq!(claims["sub"], "system:serviceaccount:default:builder");
    assert_eq!(
        claims["kubernetes.io"]["pod"],
        json!({"name": "app", "uid": pod_uid})
    );
    assert_eq!(claims["kubernetes.io"]["node"]["name"], "kube-sim-node");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    // What pullsecretd's provider will do with it: a TokenReview for its audience.
    let status = c.review(token, &["pullsecretd"]);
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:default:builder"
    );
    assert_eq!(status["user"]["uid"], json!(sa_uid));
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["app"])
    );
    assert!(c.review(token, &[]).get("authenticated").is_none());

    let calls = c.calls("vaultcp");
    assert_eq!(calls[0].service_account.as_deref(), Some("default/builder"));
    let key = calls[0]
        .outcome
        .as_ref()
        .unwrap()
        .cache_key
        .clone()
        .unwrap();
    assert_eq!(key.base, reg.host);
    let sa = key.service_account.expect("the account is in the key");
    assert_eq!(
        (sa.namespace.as_str(), sa.name.as_str()),
        ("default", "builder")
    );
    assert_eq!(sa.uid, sa_uid);
    assert_eq!(sa.token_hash, None, "cacheType ServiceAccount");
    assert!(
        !format!("{calls:?}").contains(token),
        "a record shows the token"
    );
}

#[test]
fn a_missing_required_annotation_skips_the_provider_until_the_account_has_it() {
    let reg = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
    state.set("password", PASSWORD);
    let p = provider_yaml("vaultcp", &[&reg.host], "5m", &reg.host, &state)
        + &token_attributes("ServiceAccount", &[ROLE], &[]);
    let c = Cluster::start(dir, &[p]);
    c.run_pod("app", &format!("{}/{REPO}:v1", reg.host), &[]);
    c.failing("app");
    assert!(c.calls("vaultcp").is_empty(), "the plugin must not run");
    assert_eq!(c.attempts("app")[0].username, None);
    let skips = c.handle.provider_skips();
    assert_eq!(
        skips[0].reason,
        format!(
            "Failed to get service account data default/default: required annotation {ROLE} not found"
        )
    );
    assert_eq!(skips[0].pod, "default/app");
    // The account is read at every lookup: annotating it lets the next sync pull.
    c.ok(&[
        "annotate",
        "serviceaccount",
        "default",
        &format!("{ROLE}=ci"),
    ]);
    c.running("app");
    assert_eq!(c.calls("vaultcp").len(), 1);
    assert_eq!(
        c.calls("vaultcp")[0].annotations,
        [(ROLE.to_string(), "ci".to_string())].into()
    );
}

#[test]
fn the_cache_is_per_account_and_with_cache_type_token_per_token() {
    let reg = registry_with_image();
    let image = format!("{}/{REPO}:v1", reg.host);
    for cache_type in ["ServiceAccount", "Token"] {
        let dir = tempfile::tempdir().unwrap();
        let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
        state.set("password", PASSWORD);
        let p = provider_yaml("vaultcp", &[&reg.host], "5m", &reg.host, &state)
            + &token_attributes(cache_type, &[], &[]);
        let c = Cluster::start(dir, &[p]);
        c.account("a", &[]);
        c.account("b", &[]);
        c.run_as("a-one", &image, "a");
        c.running("a-one");
        c.run_as("a-two", &image, "a");
        c.running("a-two");
        c.run_as("b-one", &image, "b");
        c.running("b-one");
        let accounts: Vec<Option<String>> = c
            .calls("vaultcp")
            .iter()
            .map(|call| call.service_account.clone())
            .collect();
        let want: Vec<Option<String>> = if cache_type == "Token" {
            // Each pod has its own bound token, so its own cache entry.
            vec![
                Some("default/a".into()),
                Some("default/a".into()),
                Some("default/b".into()),
            ]
        } else {
            vec![Some("default/a".into()), Some("default/b".into())]
        };
        assert_eq!(accounts, want, "{cache_type}");
        let hashes: Vec<bool> = c
            .calls("vaultcp")
            .iter()
            .map(|call| {
                call.outcome
                    .as_ref()
                    .unwrap()
                    .cache_key
                    .as_ref()
                    .unwrap()
                    .service_account
                    .as_ref()
                    .unwrap()
                    .token_hash
                    .is_some()
            })
            .collect();
        assert!(
            hashes.iter().all(|h| *h == (cache_type == "Token")),
            "{cache_type}"
        );
        let tokens: Vec<String> = state
            .requests()
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(r).unwrap()["serviceAccountToken"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let mut distinct = tokens.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), tokens.len(), "a fresh token per pod");
    }
}

#[test]
fn handing_the_token_back_as_the_password_is_only_allowed_with_cache_type_token() {
    let reg = registry_with_image();
    let image = format!("{}/{REPO}:v1", reg.host);
    for (cache_type, allowed) in [("ServiceAccount", false), ("Token", true)] {
        let dir = tempfile::tempdir().unwrap();
        let state = install(&dir.path().join("bin"), "vaultcp", dir.path());
        state.set("mode", "echo-token");
        let p = provider_yaml("vaultcp", &[&reg.host], "5m", &reg.host, &state)
            + &token_attributes(cache_type, &[], &[]);
        let c = Cluster::start(dir, &[p]);
        c.run_pod("app", &image, &[]);
        // The registry knows no such password: the pull fails either way.
        c.failing("app");
        let outcome = c.calls("vaultcp")[0].outcome.clone();
        // Let the pod retry after its backoff.
        eventually("a second pull attempt", || {
            (c.attempts("app").len() >= 2).then_some(())
        });
        if allowed {
            assert!(outcome.is_ok(), "{outcome:?}");
            assert_eq!(c.attempts("app")[0].provider.as_deref(), Some("vaultcp"));
            // The retry got the same token from the kubelet's token manager, so the same
            // cache key: no second run.
            assert_eq!(c.calls("vaultcp").len(), 1, "{:?}", c.calls("vaultcp"));
        } else {
            assert_eq!(
                outcome,
                Err(format!(
                    "Credential provider plugin returned the service account token as the password for image \"{}/{REPO}\", which is not allowed when service account cache type is not set to 'Token'",
                    reg.host
                ))
            );
            assert_eq!(c.attempts("app")[0].username, None);
            // A refused response is not cached: the retry ran the plugin again.
            assert!(c.calls("vaultcp").len() >= 2);
        }
    }
}

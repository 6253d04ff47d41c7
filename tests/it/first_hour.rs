//! An operator's first hour, through the binary as a user runs it (no RUST_LOG unless a test
//! says so, plain stderr to a file): `run` works or says why and exits 2, `/readyz` tells the
//! truth, what cannot be rendered is said and exits 2, logs are plain and say each thing once,
//! workstation stops gracefully, messages point at the real mistake, the helper works without
//! a config, and the install aids (completions, man pages) are generated. Against kube-sim over
//! HTTPS; only 127.0.0.1 is contacted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::{ErrorRule, InjectedError};
use kube_sim::{Options, UserInfo};
use rustix::process::Signal;
use serde_json::json;

use crate::support::kube::{Cluster, path};
use crate::support::process::{Process, Spawn, http_get, run, stderr, stdout, wait_until};

const SENTINEL: &str = "SENTINEL-pw-first-hour-5d21";

/// A config with one registry from `auth.json` in the cluster's directory, one pull secret for
/// `team-a` linked to `default`.
fn simple_config(cluster: &Cluster) -> PathBuf {
    cluster.docker_config("auth.json", "registry.example.com", SENTINEL);
    cluster.file(
        "config.yaml",
        "registries:\n  reg:\n    server: registry.example.com\n    from: { dockerConfig: auth.json }\n\
         pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: { names: [team-a] }\n    link: { default: [pull] }\n",
    )
}

/// A kubeconfig for `token` whose context namespace is `namespace`.
fn kubeconfig(cluster: &Cluster, token: &str, namespace: &str) -> PathBuf {
    cluster.file(
        &format!("kubeconfig-{namespace}"),
        &cluster.server.kubeconfig_yaml_for(token, namespace),
    )
}

fn spawn_run(cluster: &Cluster, label: &str, kubeconfig: &Path, args: &[&str]) -> Process {
    let mut all = vec!["run", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let home = path(cluster.dir.path());
    Process::spawn(&Spawn {
        dir: cluster.dir.path(),
        label,
        args: &all,
        env: &[("KUBECONFIG", path(kubeconfig)), ("HOME", home)],
        rust_log: None,
        cwd: None,
        forbidden: SENTINEL,
    })
}

/// The one-line failure of a start: exactly one `error:` line, no Debug dump of an API error.
fn assert_one_plain_error(log: &str) -> &str {
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{log}");
    for dump in ["Status {", "Some(", "ErrorResponse", "\u{1b}["] {
        assert!(!log.contains(dump), "{dump:?} in the output:\n{log}");
    }
    errors[0]
}

#[test]
fn run_outside_a_pod_takes_the_lease_namespace_from_the_kube_context_and_logs_plainly() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("team-a");
    cluster.namespace("ops");
    let config = simple_config(&cluster);
    let kubeconfig = kubeconfig(&cluster, cluster.server.token(), "ops");
    let mut daemon = spawn_run(
        &cluster,
        "context-namespace",
        &kubeconfig,
        &["--config", path(&config)],
    );
    let address = daemon.health_address(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        "the Lease in the context namespace ops",
        || {
            cluster
                .server
                .get("coordination.k8s.io", "leases", "ops", "pullsecretd")
                .is_some()
        },
    );
    wait_until(
        Duration::from_secs(30),
        "reg-pull linked on team-a/default",
        || cluster.pull_list("team-a", "default") == ["reg-pull"],
    );
    wait_until(Duration::from_secs(30), "/readyz 200 while leading", || {
        http_get(&address, "/readyz").0 == 200
    });
    let status = daemon.signal(Signal::TERM, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    let log = daemon.log();
    assert!(
        log.contains(" INFO "),
        "info lines without RUST_LOG:\n{log}"
    );
    for dump in ["\u{1b}[", "Some(", "Status {"] {
        assert!(!log.contains(dump), "{dump:?} in the log:\n{log}");
    }
}

#[test]
fn run_with_a_missing_lease_namespace_exits_2_naming_the_flags() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("team-a");
    let config = simple_config(&cluster);
    let kubeconfig = kubeconfig(&cluster, cluster.server.token(), "nowhere");
    let mut daemon = spawn_run(
        &cluster,
        "no-namespace",
        &kubeconfig,
        &["--config", path(&config)],
    );
    let status = daemon.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    let log = daemon.log();
    let error = assert_one_plain_error(&log);
    for words in ["nowhere", "--lease-namespace", "--no-leader-election"] {
        assert!(error.contains(words), "{words:?} not in {error:?}");
    }
    assert!(
        cluster.pull_list("team-a", "default").is_empty(),
        "nothing written"
    );
}

#[test]
fn run_against_an_unreachable_api_server_exits_2_after_the_start_timeout() {
    let cluster = Cluster::start(Options::default());
    let config = simple_config(&cluster);
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let yaml = cluster
        .server
        .kubeconfig_yaml_for("t", "ops")
        .replace(cluster.server.url(), &format!("https://127.0.0.1:{port}"));
    let kubeconfig = cluster.file("kubeconfig-closed", &yaml);
    let started = Instant::now();
    let mut daemon = spawn_run(
        &cluster,
        "unreachable",
        &kubeconfig,
        &["--config", path(&config), "--start-timeout", "2s"],
    );
    let status = daemon.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded start wait"
    );
    let log = daemon.log();
    let error = assert_one_plain_error(&log);
    assert!(
        error.contains("cannot reach the Kubernetes API server") && error.contains("2s"),
        "{error}"
    );
}

#[test]
fn run_forbidden_to_use_its_lease_exits_2_naming_the_role() {
    let mut options = Options::default().identity("ops-token", UserInfo::user("ops", &[]));
    options.rbac = true;
    let cluster = Cluster::start(options);
    cluster.namespace("ops");
    let config = simple_config(&cluster);
    let kubeconfig = kubeconfig(&cluster, "ops-token", "ops");
    let mut daemon = spawn_run(
        &cluster,
        "forbidden",
        &kubeconfig,
        &["--config", path(&config)],
    );
    let status = daemon.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    let log = daemon.log();
    let error = assert_one_plain_error(&log);
    assert!(
        error.contains("not allowed to use the Lease ops/pullsecretd")
            && error.contains("leader-election.yaml"),
        "{error}"
    );
}

#[test]
fn readyz_is_200_for_a_healthy_standby_and_503_with_the_reason_when_its_lease_fails() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("team-a");
    cluster.namespace("ops");
    let renewed = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    crate::support::seed::object(
        &cluster.server,
        "coordination.k8s.io",
        "leases",
        json!({
            "metadata": {"name": "pullsecretd", "namespace": "ops"},
            "spec": {"holderIdentity": "another-replica", "leaseDurationSeconds": 3600,
                     "acquireTime": renewed, "renewTime": renewed, "leaseTransitions": 0},
        }),
    );
    let config = simple_config(&cluster);
    let kubeconfig = kubeconfig(&cluster, cluster.server.token(), "ops");
    let daemon = spawn_run(
        &cluster,
        "standby",
        &kubeconfig,
        &[
            "--config",
            path(&config),
            "--retry-period",
            "200ms",
            "--retries",
            "0",
        ],
    );
    let address = daemon.health_address(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        "/readyz 200 as a healthy standby",
        || http_get(&address, "/readyz").0 == 200,
    );
    assert!(
        cluster.pull_list("team-a", "default").is_empty(),
        "a standby writes nothing"
    );
    cluster.server.set_faults(|faults| {
        faults.rules.push(ErrorRule::new(
            None,
            Some("leases"),
            InjectedError::Unavailable,
            None,
        ));
    });
    wait_until(
        Duration::from_secs(30),
        "/readyz 503 once the Lease fails",
        || http_get(&address, "/readyz").0 == 503,
    );
    let (_, body) = http_get(&address, "/readyz");
    assert!(body.contains("cannot reach its Lease"), "{body}");
    cluster.server.set_faults(|faults| faults.rules.clear());
    wait_until(
        Duration::from_secs(30),
        "/readyz 200 again once the Lease answers",
        || http_get(&address, "/readyz").0 == 200,
    );
}

#[test]
fn a_pull_secret_that_cannot_be_rendered_is_said_and_plan_and_once_exit_2() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("team-a");
    let token_only = json!({"auths": {
        "token.example.com": {"identitytoken": "an-identity-token"},
        "registry.example.com": {"auth": STANDARD.encode(format!("robot:{SENTINEL}"))},
    }});
    cluster.file("auth.json", &token_only.to_string());
    let config = cluster.file(
        "config.yaml",
        "registries:\n  tok:\n    server: token.example.com\n    from: { dockerConfig: auth.json }\n\
         \x20 reg:\n    server: registry.example.com\n    from: { dockerConfig: auth.json }\n\
         pullSecrets:\n  - name: tok-pull\n    registries: [tok]\n    projects: { names: [team-a] }\n\
         \x20 - name: reg-pull\n    registries: [reg]\n    projects: { names: [team-a] }\n",
    );
    let out_dir = cluster.dir.path().join("out");
    let plan = run(
        &[
            "plan",
            "--config",
            path(&config),
            "--output",
            path(&out_dir),
        ],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains("(held: not rendered)"),
        "{}",
        stdout(&plan)
    );
    assert!(
        !stdout(&plan).contains("source failed"),
        "the source read fine"
    );
    assert!(
        stderr(&plan).contains("1 secret could not be rendered (tok-pull)"),
        "{}",
        stderr(&plan)
    );
    assert!(
        out_dir.join("team-a/secret-reg-pull.yaml").exists(),
        "what can be rendered is written"
    );
    assert!(!out_dir.join("team-a/secret-tok-pull.yaml").exists());

    let once = cluster.once_checked(&config, &[], &[], SENTINEL);
    assert_eq!(once.status.code(), Some(2), "{}", stderr(&once));
    assert!(
        stdout(&once).contains("HELD secret tok-pull (not rendered"),
        "{}",
        stdout(&once)
    );
    assert!(
        cluster.secret("team-a", "reg-pull").is_some(),
        "the rest is applied"
    );
    assert!(cluster.secret("team-a", "tok-pull").is_none());
}

#[test]
fn a_source_error_is_said_once_with_correct_plurals() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("team-a");
    cluster.docker_config("auth.json", "registry.example.com", SENTINEL);
    cluster.file("broken.json", "{");
    let config = cluster.file(
        "config.yaml",
        "registries:\n  reg:\n    server: registry.example.com\n    from: { dockerConfig: auth.json }\n\
         \x20 bad:\n    server: bad.example.com\n    from: { dockerConfig: broken.json }\n\
         pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: { names: [team-a] }\n\
         \x20   link: { default: [pull] }\n\
         \x20 - name: bad-pull\n    registries: [bad]\n    projects: { names: [team-a] }\n",
    );
    let plan = run(
        &["plan", "--config", path(&config)],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert_eq!(plan.status.code(), Some(2));
    let both = format!("{}{}", stdout(&plan), stderr(&plan));
    assert_eq!(
        both.matches("invalid JSON").count(),
        1,
        "said once:\n{both}"
    );
    assert!(
        stderr(&plan).contains("1 of 2 registries could not be read"),
        "{both}"
    );

    let once = cluster.once_checked(&config, &[], &[], SENTINEL);
    let both = format!("{}{}", stdout(&once), stderr(&once));
    assert_eq!(once.status.code(), Some(2), "{both}");
    assert_eq!(
        both.matches("invalid JSON").count(),
        1,
        "said once:\n{both}"
    );
    assert!(
        stdout(&once).contains("2 changes, 0 failures, in 1 project;"),
        "{both}"
    );
    assert!(
        !both.contains("1 changes") && !both.contains("1 registries"),
        "{both}"
    );
}

#[test]
fn a_rejected_reload_is_logged_once_and_an_unlink_is_logged_as_unlinked() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("team-a");
    cluster.namespace("ops");
    simple_config(&cluster);
    let kubeconfig = kubeconfig(&cluster, cluster.server.token(), "ops");
    // A relative config path, as typed in a shell: it must be watched all the same.
    let home = path(cluster.dir.path());
    let daemon = Process::spawn(&Spawn {
        dir: cluster.dir.path(),
        label: "reload",
        args: &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--config",
            "config.yaml",
            "--reload-debounce",
            "100ms",
        ],
        env: &[("KUBECONFIG", path(&kubeconfig)), ("HOME", home)],
        rust_log: None,
        cwd: Some(cluster.dir.path()),
        forbidden: SENTINEL,
    });
    wait_until(
        Duration::from_secs(30),
        "reg-pull linked on team-a/default",
        || cluster.pull_list("team-a", "default") == ["reg-pull"],
    );
    cluster.file("config.yaml", "registries: [this is not a map\n");
    daemon.wait_for_log(Duration::from_secs(30), "New config rejected");
    // The file stays as it is: the rejection is not repeated.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        daemon.log().matches("New config rejected").count(),
        1,
        "{}",
        daemon.log()
    );

    cluster.file(
        "config.yaml",
        "registries:\n  reg:\n    server: registry.example.com\n    from: { dockerConfig: auth.json }\n\
         pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: { names: [team-a] }\n    link: {}\n",
    );
    wait_until(
        Duration::from_secs(30),
        "the link removed after the reload",
        || cluster.pull_list("team-a", "default").is_empty(),
    );
    daemon.wait_for_log(Duration::from_secs(10), "Unlinked.");
    let log = daemon.log();
    let unlink_lines: Vec<&str> = log.lines().filter(|l| l.contains("-reg-pull")).collect();
    assert!(!unlink_lines.is_empty(), "{log}");
    assert!(
        unlink_lines.iter().all(|l| l.contains("Unlinked.")),
        "an unlink is logged as one:\n{log}"
    );
}

#[test]
fn workstation_logs_what_it_writes_watches_each_file_once_and_stops_gracefully() {
    for (signal, label) in [(Signal::TERM, "term"), (Signal::INT, "int")] {
        let cluster = Cluster::start(Options::default());
        cluster.namespace("dev");
        let docker = cluster.dir.path().join(".docker");
        std::fs::create_dir_all(&docker).expect("~/.docker");
        let auth = STANDARD.encode(format!("me:{SENTINEL}"));
        std::fs::write(
            docker.join("config.json"),
            json!({"auths": {"registry.example.com": {"auth": auth}}}).to_string(),
        )
        .expect("docker config");
        let kubeconfig = kubeconfig(&cluster, cluster.server.token(), "dev");
        let runtime_dir = cluster.dir.path().join("run");
        std::fs::create_dir_all(&runtime_dir).expect("runtime dir");
        let home = path(cluster.dir.path());
        let mut workstation = Process::spawn(&Spawn {
            dir: cluster.dir.path(),
            label,
            args: &["workstation"],
            env: &[
                ("KUBECONFIG", path(&kubeconfig)),
                ("HOME", home),
                ("XDG_RUNTIME_DIR", path(&runtime_dir)),
            ],
            rust_log: None,
            cwd: None,
            forbidden: SENTINEL,
        });
        workstation.wait_for_log(Duration::from_secs(30), "Synced.");
        let socket = runtime_dir.join("pullsecretd/agent.sock");
        wait_until(Duration::from_secs(10), "the agent socket", || {
            socket.exists()
        });
        let status = workstation.signal(signal, Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "{label}: {}", workstation.log());
        assert!(!socket.exists(), "{label}: the socket is removed");
        let log = workstation.log();
        let watched: Vec<&str> = log.lines().filter(|l| l.contains("Watching.")).collect();
        let mut files: Vec<&str> = watched
            .iter()
            .filter_map(|l| l.split("file=").nth(1))
            .collect();
        assert!(
            files.iter().any(|f| f.ends_with(".docker/config.json")),
            "~/.docker/config.json is watched:\n{log}"
        );
        let all = files.len();
        files.sort_unstable();
        files.dedup();
        assert_eq!(files.len(), all, "each file watched once:\n{log}");
        assert!(log.contains("Stopped."), "{log}");
        assert!(
            !log.contains("\u{1b}["),
            "plain text off a terminal:\n{log}"
        );
    }
}

#[test]
fn messages_point_at_the_real_mistake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("config written");
        p
    };
    write("auth.json", r#"{"auths": {}}"#);
    let check = |file: &Path| run(&["check-config", path(file)], &[], SENTINEL);

    let ftp = write(
        "ftp.yaml",
        "registries:\n  reg:\n    server: ftp://registry.example.com\n    from: { dockerConfig: auth.json }\n",
    );
    let out = check(&ftp);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ftp"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("port"), "{}", stderr(&out));

    let misindented = write(
        "indent.yaml",
        "registries:\n  reg:\n    server: registry.example.com\n  from: { dockerConfig: auth.json }\n",
    );
    let out = check(&misindented);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("indent.yaml:4:"),
        "the misplaced line: {}",
        stderr(&out)
    );

    let oc_forms = write(
        "oc.yaml",
        "registries: {}\nimagePullers:\n  - project: project-b\n    allow:\n      - system:serviceaccount:project-a:default\n      - system:serviceaccounts:project-c\n",
    );
    let out = check(&oc_forms);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let config = write(
        "plan.yaml",
        "registries:\n  reg:\n    server: registry.example.com\n    from: { dockerConfig: auth.json }\n\
         pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: { names: [project-a] }\n",
    );
    let out = run(
        &["plan", "--config", path(&config), "--projects", "project-z"],
        &[],
        SENTINEL,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("project-z"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("project-a does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_helper_without_a_config_or_an_agent_answers_from_the_docker_config() {
    let home = tempfile::tempdir().expect("home");
    let docker = home.path().join(".docker");
    std::fs::create_dir_all(&docker).expect("~/.docker");
    let auth = STANDARD.encode(format!("me:{SENTINEL}"));
    std::fs::write(
        docker.join("config.json"),
        json!({"auths": {"registry.example.com": {"auth": auth}}}).to_string(),
    )
    .expect("docker config");
    let mut child = Command::new(crate::support::process::binary())
        .args(["credential-helper", "get"])
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helper runs");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"registry.example.com\n")
            .expect("request written");
    }
    let out = child.wait_with_output().expect("helper exits");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON reply");
    assert_eq!(reply["Username"], "me");
    assert_eq!(reply["Secret"], SENTINEL);
    assert!(!stderr(&out).contains(SENTINEL));
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    let bash = run(&["completions", "bash"], &[], SENTINEL);
    assert_eq!(bash.status.code(), Some(0));
    for word in ["_pullsecretd", "workstation", "--lease-namespace", "status"] {
        assert!(
            stdout(&bash).contains(word),
            "{word} in the bash completions"
        );
    }
    let zsh = run(&["completions", "zsh"], &[], SENTINEL);
    assert!(
        stdout(&zsh).starts_with("#compdef pullsecretd"),
        "{}",
        stdout(&zsh)
    );

    let man = run(&["man"], &[], SENTINEL);
    assert_eq!(man.status.code(), Some(0));
    assert!(stdout(&man).starts_with(".ie") || stdout(&man).contains(".TH pullsecretd 1"));
    let dir = tempfile::tempdir().expect("man dir");
    let pages = dir.path().join("man1");
    let out = run(&["man", "--dir", path(&pages)], &[], SENTINEL);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for page in ["pullsecretd.1", "pullsecretd-run.1", "pullsecretd-status.1"] {
        let text = std::fs::read_to_string(pages.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page} written");
    }
}

#[test]
fn the_readme_once_sample_is_what_once_prints_for_the_example() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("project-a");
    cluster.namespace("project-b");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README");
    let sample = readme
        .split("<!-- once-sample -->\n```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README marks its once sample");
    let out = cluster.once_checked(&repo.join("config/example.yaml"), &[], &[], SENTINEL);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), sample);
}

#[test]
fn run_with_no_events_publishes_none_and_without_it_one_per_change() {
    for (flag, expect_events) in [(Some("--no-events"), false), (None, true)] {
        let cluster = Cluster::start(Options::default());
        cluster.namespace("team-a");
        let config = simple_config(&cluster);
        let kubeconfig = kubeconfig(&cluster, cluster.server.token(), "team-a");
        let mut args = vec!["--config", path(&config), "--no-leader-election"];
        args.extend(flag);
        let mut daemon = spawn_run(&cluster, flag.unwrap_or("events"), &kubeconfig, &args);
        wait_until(
            Duration::from_secs(30),
            "reg-pull linked on team-a/default",
            || cluster.pull_list("team-a", "default") == ["reg-pull"],
        );
        std::thread::sleep(Duration::from_millis(300));
        let events = cluster.server.count_objects("events.k8s.io", "events");
        assert_eq!(
            daemon.signal(Signal::TERM, Duration::from_secs(30)).code(),
            Some(0)
        );
        assert_eq!(events > 0, expect_events, "{flag:?}: {events} Events");
    }
}

#[test]
fn shards_from_the_config_are_elected_and_overridden_by_the_flag() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("team-a");
    cluster.namespace("ops");
    let base = simple_config(&cluster);
    let text = std::fs::read_to_string(&base).expect("config");
    let config = cluster.file("sharded.yaml", &format!("shards: 2\n{text}"));
    let kubeconfig = kubeconfig(&cluster, cluster.server.token(), "ops");
    let lease = |name: &str| {
        cluster
            .server
            .get("coordination.k8s.io", "leases", "ops", name)
            .is_some()
    };

    // Without leader election nothing keeps two replicas apart: refused before any write.
    let mut refused = spawn_run(
        &cluster,
        "shards-no-election",
        &kubeconfig,
        &["--config", path(&config), "--no-leader-election"],
    );
    assert_eq!(refused.wait(Duration::from_secs(30)).code(), Some(2));
    let log = refused.log();
    let error = assert_one_plain_error(&log);
    for words in ["2 shards", "--no-leader-election", "shards:"] {
        assert!(error.contains(words), "{words:?} not in {error:?}");
    }
    assert!(cluster.pull_list("team-a", "default").is_empty());

    let mut daemon = spawn_run(
        &cluster,
        "shards-config",
        &kubeconfig,
        &["--config", path(&config)],
    );
    daemon.health_address(Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "both shard Leases", || {
        lease("pullsecretd-shard-0") && lease("pullsecretd-shard-1")
    });
    wait_until(Duration::from_secs(30), "reg-pull linked on team-a", || {
        cluster.pull_list("team-a", "default") == ["reg-pull"]
    });
    assert!(!lease("pullsecretd"), "no single Lease beside the shards'");
    // A reload may not change the count: refused, the running config kept.
    std::fs::write(&config, format!("shards: 3\n{text}")).expect("rewrite the config");
    wait_until(Duration::from_secs(30), "the reload refused", || {
        daemon
            .log()
            .contains("changing shards needs every replica stopped first")
    });
    assert!(
        !lease("pullsecretd-shard-2"),
        "no third shard from a reload"
    );
    assert_eq!(
        daemon.signal(Signal::TERM, Duration::from_secs(30)).code(),
        Some(0)
    );

    // The flag wins over the file.
    std::fs::write(&config, format!("shards: 2\n{text}")).expect("restore the config");
    let mut flagged = spawn_run(
        &cluster,
        "shards-flag",
        &kubeconfig,
        &["--config", path(&config), "--shards", "3"],
    );
    flagged.health_address(Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "the third shard's Lease", || {
        lease("pullsecretd-shard-2")
    });
    assert_eq!(
        flagged.signal(Signal::TERM, Duration::from_secs(30)).code(),
        Some(0)
    );
}

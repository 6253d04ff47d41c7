//! No secret in any output, at the loudest logging there is: every command run as a user runs
//! it, with `RUST_LOG=trace` (which also turns on the HTTP, kube and Vault client crates' own
//! logs), against kube-sim and a real OpenBao. The registry password and the Vault token must
//! appear in no stdout or stderr, neither as is nor base64-encoded — except where the output
//! *is* the credential by design (`credential-helper get`'s stdout, `plan --output`'s files).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::Options;
use rustix::process::Signal;
use serde_json::json;

use pullsecretd_testkit::openbao::OpenBao;

use crate::support::kube::{Cluster, path};
use crate::support::process::{Process, Spawn, run, stderr, stdout, wait_until};

const SENTINEL: &str = "SENTINEL-pw-trace-6e02";

/// The needle as is, and inside base64 at each of the three alignments.
fn forms(needle: &str) -> Vec<String> {
    let mut forms = vec![needle.to_string()];
    for pad in 0..3 {
        let encoded = STANDARD.encode(format!("{}{needle}", "x".repeat(pad)));
        forms.push(encoded.chars().skip(4).take(16).collect());
    }
    forms
}

fn assert_clean(label: &str, text: &str, needles: &[String]) {
    for needle in needles {
        assert!(
            !text.contains(needle.as_str()),
            "{label}: a secret ({needle:?}) is in the output"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_prints_a_secret_even_at_trace() {
    let bao = OpenBao::start().await;
    bao.kv2_put(
        "secret",
        "registries/reg",
        json!({"username": "robot", "password": SENTINEL}),
    )
    .await;
    let token = bao
        .create_token(json!({"policies": ["root"], "ttl": "1h"}))
        .await;
    let mut needles = forms(SENTINEL);
    needles.extend(forms(&token));

    let cluster = Cluster::start(Options::default());
    cluster.namespace("a");
    let config = cluster.file(
        "vault.yaml",
        &format!(
            "vault:\n  address: {}\n  timeout: 2s\n  auth: {{ method: token }}\n\
             registries:\n  reg:\n    server: registry.example.com\n    from: {{ vault: {{ path: registries/reg }} }}\n\
             pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ names: [a] }}\n\
             \x20   link: {{ default: [pull] }}\n",
            bao.address
        ),
    );
    let config = path(&config).to_string();
    let out_dir = cluster.dir.path().join("out");
    let env = cluster.env(&[("RUST_LOG", "trace"), ("VAULT_TOKEN", &token)]);

    let one_shots: Vec<(&str, Vec<&str>)> = vec![
        ("check-config", vec!["check-config", "--config", &config]),
        ("plan", vec!["plan", "--config", &config]),
        (
            "plan -o json",
            vec!["plan", "--config", &config, "-o", "json"],
        ),
        (
            "plan --output",
            vec!["plan", "--config", &config, "--output", path(&out_dir)],
        ),
        (
            "plan --cluster",
            vec!["plan", "--cluster", "--config", &config],
        ),
        (
            "plan --cluster -o json",
            vec!["plan", "--cluster", "--config", &config, "-o", "json"],
        ),
        ("once", vec!["once", "--config", &config]),
        ("status", vec!["status", "--config", &config]),
        (
            "status -o json",
            vec!["status", "--config", &config, "-o", "json"],
        ),
        (
            "credential-helper list",
            vec!["credential-helper", "list", "--config", &config],
        ),
    ];
    for (label, args) in &one_shots {
        // `run` checks for the raw password itself; the token and encodings are checked here.
        let out = run(args, &env, SENTINEL);
        assert_eq!(out.status.code(), Some(0), "{label}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("TRACE")
                || stderr(&out).contains("DEBUG")
                || *label == "check-config",
            "{label}: trace logging is on"
        );
        assert_clean(label, &stdout(&out), &needles);
        assert_clean(label, &stderr(&out), &needles);
    }
    assert!(
        cluster.secret("a", "reg-pull").is_some(),
        "once wrote the Secret the later commands read"
    );

    // The daemon and workstation, each for a pass, then stopped.
    cluster.server.set_faults(|_| {});
    for (label, args) in [
        (
            "run",
            vec![
                "run",
                "--listen",
                "127.0.0.1:0",
                "--config",
                config.as_str(),
                "--no-leader-election",
            ],
        ),
        (
            "workstation",
            vec!["workstation", "--config", config.as_str(), "--no-agent"],
        ),
    ] {
        let mut process = Process::spawn(&Spawn {
            dir: cluster.dir.path(),
            label,
            args: &args,
            env: &env,
            rust_log: Some("trace"),
            cwd: None,
            forbidden: SENTINEL,
        });
        wait_until(Duration::from_secs(30), "a pass logged", || {
            process.log().contains("pullsecretd")
                && (process.log().contains("Caches synced") || process.log().contains("Watching."))
        });
        std::thread::sleep(Duration::from_millis(500));
        let status = process.signal(Signal::TERM, Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "{label}: {}", process.log());
        assert_clean(label, &process.log(), &needles);
    }
}

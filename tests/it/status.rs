//! `pullsecretd status` through the binary against kube-sim: after `once` it shows each Secret
//! with its source version, age and links; after a held source it shows the hold pullsecretd
//! reported (its Warning Event) and the Secret kept as it was; `-o json` gives scripts the
//! same, with no secret value. Only 127.0.0.1 is contacted.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::Options;
use serde_json::Value;

use crate::support::kube::{Cluster, path};
use crate::support::process::{run, stderr, stdout};

const SENTINEL: &str = "SENTINEL-pw-status-9b7e";

fn config(cluster: &Cluster, auth_file: &str) -> std::path::PathBuf {
    cluster.file(
        "config.yaml",
        &format!(
            "instance: team-a\nregistries:\n  reg:\n    server: registry.example.com\n    from: {{ dockerConfig: {auth_file} }}\n\
             pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ names: [team-a] }}\n    link: {{ default: [pull] }}\n"
        ),
    )
}

fn status_json(cluster: &Cluster, config: &std::path::Path) -> Value {
    let out = run(
        &["status", "--config", path(config), "-o", "json"],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("status -o json is JSON")
}

#[test]
fn status_shows_secrets_versions_links_and_then_a_held_source() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("team-a");
    cluster.namespace("team-b");
    cluster.docker_config("auth.json", "registry.example.com", SENTINEL);
    let good = config(&cluster, "auth.json");
    let once = run(
        &["once", "--config", path(&good)],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert_eq!(once.status.code(), Some(0), "{}", stderr(&once));

    let text = run(
        &["status", "--config", path(&good)],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    let table = stdout(&text);
    assert!(table.contains("Project team-a (last sync "), "{table}");
    assert!(
        table.contains("reg-pull") && table.contains("default (pull)"),
        "{table}"
    );
    assert!(
        !table.contains("team-b"),
        "nothing of this instance there:\n{table}"
    );

    let json = status_json(&cluster, &good);
    assert_eq!(json["instance"], "team-a");
    let projects = json["projects"].as_array().expect("projects");
    assert_eq!(projects.len(), 1, "{json:#}");
    let secret = &projects[0]["secrets"][0];
    assert_eq!(secret["name"], "reg-pull");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(secret["links"][0]["service_account"], "default");
    assert_eq!(secret["links"][0]["for"], "pull");
    let version = secret["source_versions"]["reg"]
        .as_str()
        .expect("a version")
        .to_string();
    assert!(!version.is_empty());
    assert!(
        projects[0]["problems"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    let stored = cluster.secret("team-a", "reg-pull").expect("written");
    let data = stored["data"][".dockerconfigjson"].as_str().expect("data");
    assert!(!json.to_string().contains(data), "no secret data in status");
    assert!(!json.to_string().contains(&STANDARD.encode(SENTINEL)));

    // The source breaks: once holds the Secret and says so; status shows both.
    cluster.file("broken.json", "{");
    let broken = config(&cluster, "broken.json");
    let once = run(
        &["once", "--config", path(&broken)],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert_eq!(once.status.code(), Some(2), "{}", stderr(&once));
    let json = status_json(&cluster, &broken);
    let project = &json["projects"][0];
    assert_eq!(project["secrets"][0]["name"], "reg-pull", "kept as it was");
    assert_eq!(
        project["secrets"][0]["source_versions"]["reg"], version,
        "still the version it was rendered from"
    );
    let problems = project["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{json:#}");
    assert_eq!(problems[0]["reason"], "Held");
    assert!(
        problems[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("source failed")),
        "{json:#}"
    );
    let text = run(
        &["status", "--config", path(&broken)],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert!(stdout(&text).contains("  Held ("), "{}", stdout(&text));

    // Narrowed to a project that holds nothing: listed, empty.
    let out = run(
        &[
            "status",
            "--config",
            path(&good),
            "--projects",
            "team-b",
            "-o",
            "json",
        ],
        &cluster.env(&[]),
        SENTINEL,
    );
    let json: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["projects"][0]["project"], "team-b");
    assert!(
        json["projects"][0]["secrets"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

#[test]
fn plan_json_lists_secrets_links_and_holds_without_values() {
    let cluster = Cluster::start(Options::default());
    cluster.namespace("team-a");
    cluster.docker_config("auth.json", "registry.example.com", SENTINEL);
    let good = config(&cluster, "auth.json");
    let out = run(
        &["plan", "--config", path(&good), "-o", "json"],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).expect("plan -o json is JSON");
    assert_eq!(json["sources"][0]["registry"], "reg");
    let project = &json["projects"][0];
    assert_eq!(project["project"], "team-a");
    assert_eq!(project["secrets"][0]["name"], "reg-pull");
    assert_eq!(project["links"][0]["for"], "pull");

    let cluster_plan = run(
        &["plan", "--cluster", "--config", path(&good), "-o", "json"],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert_eq!(
        cluster_plan.status.code(),
        Some(0),
        "{}",
        stderr(&cluster_plan)
    );
    let json: Value = serde_json::from_str(&stdout(&cluster_plan)).expect("JSON");
    let steps = json["changes"][0]["steps"].as_array().expect("steps");
    let verbs: Vec<&str> = steps.iter().filter_map(|s| s["verb"].as_str()).collect();
    assert_eq!(verbs, ["create", "update"], "{json:#}");

    cluster.file("broken.json", "{");
    let broken = config(&cluster, "broken.json");
    let out = run(
        &["plan", "--config", path(&broken), "-o", "json"],
        &cluster.env(&[]),
        SENTINEL,
    );
    assert_eq!(out.status.code(), Some(2));
    let json: Value = serde_json::from_str(&stdout(&out)).expect("still one JSON document");
    assert_eq!(json["projects"][0]["held"][0]["reason"], "source_failed");
}

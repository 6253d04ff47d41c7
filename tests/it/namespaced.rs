//! Namespaced mode end to end under exactly the RBAC deploy/overlays/namespaced ships (rendered
//! with the real `kubectl kustomize`): kube-sim with RBAC enforced holds only that overlay's
//! ServiceAccount, Roles and RoleBindings, no ClusterRole. `once` and the `run` daemon, acting
//! as pullsecretd's service account, converge team-a and team-b, the daemon repairs a deleted
//! Secret from its per-namespace watch, kube-sim refuses nothing, and no list or watch runs
//! across all namespaces. A configured namespace that does not exist is a problem, not a
//! failure.

use crate::deploy::{NAMESPACED_TEAMS, render};
use crate::support::cluster::{Fixture, nz, password_in};
use crate::support::invariants::Sweeper;
use pullsecretd_testkit::poll::eventually;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams};
use kube_sim::{ErrorRule, InjectedError, Options, RequestCounts};
use serde_json::{Value, json};

use pullsecretd::cluster::Throttle;
use pullsecretd::config::Config;
use pullsecretd::daemon::{self, DaemonOptions};
use pullsecretd::reconcile::Report;
use pullsecretd::source::SourceContext;

const SENTINEL: &str = "SENTINEL-pw-namespaced-5d1e";
const TOKEN: &str = "pullsecretd-sa-token";
/// Where the overlay puts pullsecretd (its ServiceAccount, and the Lease).
const HOME: &str = "pullsecretd";
const NAMESPACED: &str = "deploy/overlays/namespaced";

/// The overlay's ServiceAccount and RBAC objects, as rendered.
pub(crate) fn overlay_rbac() -> Vec<Value> {
    let objects: Vec<Value> = render(NAMESPACED)
        .into_iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "Role"
                        | "RoleBinding"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                )
            )
        })
        .collect();
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(
        !kinds.iter().any(|k| k.starts_with("Cluster")),
        "the overlay ships cluster-wide RBAC: {kinds:?}"
    );
    objects
}

/// kube-sim (Kubernetes, RBAC enforced) with pullsecretd's namespace, the teams' namespaces
/// and `extra` ones, holding exactly the overlay's RBAC; and a client acting as pullsecretd's
/// service account.
async fn fixture(extra: &[&str]) -> (Fixture, Client) {
    fixture_holding(Options::default(), overlay_rbac(), extra).await
}

/// kube-sim started with `options`, RBAC enforced, with pullsecretd's namespace, the teams'
/// namespaces and `extra` ones, holding exactly `rbac` (the overlay's, or a variant of it); and
/// a client acting as pullsecretd's service account.
pub(crate) async fn fixture_holding(
    options: Options,
    rbac: Vec<Value>,
    extra: &[&str],
) -> (Fixture, Client) {
    let mut options = options.identity(TOKEN, kube_sim::UserInfo::service_account(HOME, HOME));
    options.rbac = true;
    let fx = Fixture::start(options).await;
    for namespace in [HOME].iter().chain(&NAMESPACED_TEAMS).chain(extra) {
        fx.namespace(namespace, json!({}));
    }
    crate::support::seed::rbac_objects(&fx.server, rbac);
    let client = fx.client_as(TOKEN).await;
    (fx, client)
}

/// Writes a docker config with `robot:<password>` and a namespaced-mode config managing
/// `namespaces`, with pull secret `reg-pull` in each, linked to `default` for pulls.
fn write_config(fx: &Fixture, password: &str, namespaces: &[&str]) -> Config {
    write_config_for(fx, password, namespaces, namespaces, "")
}

/// [`write_config`] with pull secret `reg-pull` in `projects` only, and `extra` (top-level
/// config, such as `imagePullers:`) appended.
pub(crate) fn write_config_for(
    fx: &Fixture,
    password: &str,
    namespaces: &[&str],
    projects: &[&str],
    extra: &str,
) -> Config {
    let docker_config = fx.dir.path().join("docker-config.json");
    let auth = STANDARD.encode(format!("robot:{password}"));
    std::fs::write(
        &docker_config,
        json!({"auths": {"registry.example.com": {"auth": auth}}}).to_string(),
    )
    .expect("docker config written");
    let (list, projects) = (namespaces.join(", "), projects.join(", "));
    let yaml = format!(
        "namespaces: [{list}]\nregistries:\n  reg:\n    server: registry.example.com\n    \
         from: {{ dockerConfig: {} }}\npullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    \
         projects: {{ names: [{projects}] }}\n    link: {{ default: [pull] }}\n    \
         rotation: {{ refresh: 200ms }}\n{extra}",
        docker_config.display()
    );
    let path = fx.dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).expect("config written");
    Config::from_yaml(&yaml, &path).expect("valid config")
}

/// Nothing refused, and no list or watch of the namespaced kinds across all namespaces (nor of
/// namespaces at all).
fn assert_namespaced_only(counts: &RequestCounts) {
    assert!(
        counts.forbidden.is_empty(),
        "kube-sim refused: {:?}",
        counts.forbidden
    );
    let cluster_wide: Vec<&(String, String, String)> = counts
        .by_key
        .keys()
        .filter(|(verb, resource, namespace)| {
            let namespaced_kind = matches!(
                resource.as_str(),
                "secrets" | "serviceaccounts" | "rolebindings"
            );
            (namespaced_kind && namespace.is_empty())
                || (resource == "namespaces" && matches!(verb.as_str(), "list" | "watch"))
        })
        .collect();
    assert!(
        cluster_wide.is_empty(),
        "cluster-wide requests: {cluster_wide:?}"
    );
}

fn linked(fx: &Fixture, namespace: &str) -> bool {
    fx.account_lists(namespace, "default")
        .0
        .contains(&"reg-pull".to_string())
}

#[tokio::test]
async fn once_and_run_converge_under_the_namespaced_overlays_roles_only() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // `outside` exists and holds a Secret with pullsecretd's label: namespaced mode never
    // looks at it.
    let (fx, client) = fixture(&["outside"]).await;
    fx.server
        .create(
            "",
            "secrets",
            json!({"metadata": {"name": "reg-pull", "namespace": "outside",
                "labels": {"app.kubernetes.io/managed-by": "pullsecretd"}},
                "type": "Opaque", "data": {}}),
        )
        .expect("seeded");
    let config = write_config(&fx, SENTINEL, &NAMESPACED_TEAMS);

    // The service account cannot read across namespaces (RBAC is on, no ClusterRole).
    let as_sa: Api<Secret> = Api::all(client.clone());
    let denied = as_sa
        .list(&kube::api::ListParams::default())
        .await
        .expect_err("not allowed");
    assert!(denied.to_string().contains("forbidden"), "{denied}");
    fx.server.reset_counts();

    // once
    let report = fx.once_as(&client, &config).await;
    assert!(report.converged(), "{report:#?}");
    assert!(report.plan_problems.is_empty(), "{report:#?}");
    for team in NAMESPACED_TEAMS {
        let secret = fx.secret(team, "reg-pull").expect("written");
        assert_eq!(password_in(&secret), SENTINEL);
        assert!(linked(&fx, team), "{team} linked");
    }
    let counts = fx.server.counts();
    assert!(
        counts.count_in("list", "secrets", "team-a") > 0,
        "{counts:#?}"
    );
    assert_namespaced_only(&counts);

    // run: starts from clean namespaces.
    let admin_secrets = |ns: &str| Api::<Secret>::namespaced(fx.client.clone(), ns);
    for team in NAMESPACED_TEAMS {
        admin_secrets(team)
            .delete("reg-pull", &DeleteParams::default())
            .await
            .expect("deleted by hand");
    }
    fx.server.reset_counts();
    let running = daemon::start(client, fx.daemon_options(2))
        .await
        .expect("daemon starts");
    let limit = Duration::from_secs(10);
    eventually(limit, "converged in both teams", || {
        NAMESPACED_TEAMS
            .iter()
            .all(|team| fx.secret(team, "reg-pull").is_some() && linked(&fx, team))
    })
    .await;

    // The Secret watch of team-b alone: deleted by hand → restored.
    admin_secrets("team-b")
        .delete("reg-pull", &DeleteParams::default())
        .await
        .expect("deleted by hand");
    eventually(limit, "team-b's Secret restored", || {
        fx.secret("team-b", "reg-pull").is_some()
    })
    .await;

    // Rotation reaches both teams.
    write_config(&fx, "rotated-pw", &NAMESPACED_TEAMS);
    eventually(limit, "rotated in both teams", || {
        NAMESPACED_TEAMS.iter().all(|team| {
            fx.secret(team, "reg-pull")
                .is_some_and(|s| password_in(&s) == "rotated-pw")
        })
    })
    .await;

    // A reload that changes the namespaces is rejected: the running config stays, so a
    // Secret deleted in team-a is still restored, and nothing goes to `outside`.
    write_config(&fx, "rotated-pw", &["team-a", "team-b", "outside"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    admin_secrets("team-a")
        .delete("reg-pull", &DeleteParams::default())
        .await
        .expect("deleted by hand");
    eventually(limit, "team-a's Secret restored", || {
        fx.secret("team-a", "reg-pull").is_some()
    })
    .await;
    let outside = fx.secret("outside", "reg-pull").expect("still there");
    assert_eq!(
        outside.type_.as_deref(),
        Some("Opaque"),
        "outside untouched"
    );

    running.stop();
    assert!(running.wait(Duration::from_secs(10)).await, "stopped");
    let counts = fx.server.counts();
    assert!(
        counts.count_in("watch", "secrets", "team-b") > 0,
        "{counts:#?}"
    );
    assert_namespaced_only(&counts);
}

/// `report` converged in team-a, failed nowhere, and reported `gone` as not found.
fn assert_gone_is_a_problem(fx: &Fixture, report: &Report) {
    let team_a = report
        .projects
        .iter()
        .find(|p| p.project == "team-a")
        .expect("team-a reported");
    assert!(team_a.converged(), "{report:#?}");
    assert!(fx.secret("team-a", "reg-pull").is_some());
    let failures: Vec<_> = report.projects.iter().flat_map(|p| &p.failures).collect();
    assert!(failures.is_empty(), "{report:#?}");
    let gone_reported = report
        .plan_problems
        .iter()
        .chain(report.projects.iter().flat_map(|p| &p.problems))
        .any(|p| p.reason == "ProjectNotFound" && p.message.contains("gone"));
    assert!(gone_reported, "{report:#?}");
}

#[tokio::test]
async fn a_configured_namespace_that_does_not_exist_is_a_problem_not_a_failure() {
    // As pullsecretd's service account: `gone` cannot hold a Role, so its lists answer 403.
    let (fx, client) = fixture(&[]).await;
    let config = write_config(&fx, SENTINEL, &["team-a", "gone"]);
    let report = fx.once_as(&client, &config).await;
    assert_gone_is_a_problem(&fx, &report);

    // With cluster-wide rights (an admin's kubeconfig): its lists are empty and the create
    // answers 404.
    let (fx, _) = fixture(&[]).await;
    let config = write_config(&fx, SENTINEL, &["team-a", "gone"]);
    let admin = fx.client.clone();
    let report = fx.once_as(&admin, &config).await;
    assert_gone_is_a_problem(&fx, &report);
    assert!(fx.server.counts().count("create", "secrets") >= 2);

    // The daemon leaves `gone` out of its watches and still converges team-a.
    let (fx, client) = fixture(&[]).await;
    write_config(&fx, SENTINEL, &["team-a", "gone"]);
    let running = daemon::start(
        client,
        DaemonOptions {
            config_path: fx.dir.path().join("config.yaml"),
            config: None,
            sources: SourceContext::default(),
            throttle: Throttle::new(nz(500), nz(200), 2),
            events: false,
            concurrency: 2,
            lease: None,
            listen: None,
            reload_debounce: Duration::from_millis(150),
            debounce: Duration::from_millis(10),
        },
    )
    .await
    .expect("daemon starts");
    eventually(Duration::from_secs(10), "team-a converged", || {
        fx.secret("team-a", "reg-pull").is_some() && linked(&fx, "team-a")
    })
    .await;
    running.stop();
    assert!(running.wait(Duration::from_secs(10)).await, "stopped");
    assert_eq!(fx.server.counts().count_in("watch", "secrets", "gone"), 0);
}

/// Who runs a command: pullsecretd's service account, or an operator (kube-sim's admin).
#[derive(Clone, Copy)]
enum As {
    ServiceAccount,
    Operator,
}

/// Runs the binary with `args`, the config and a kubeconfig for `who`; returns its exit code
/// and stdout (stderr on failure).
async fn cli(fx: &Fixture, who: As, args: &[&str]) -> (Option<i32>, String) {
    let kubeconfig = fx.dir.path().join("kubeconfig");
    let yaml = match who {
        As::ServiceAccount => fx.server.kubeconfig_yaml_for(TOKEN, "default"),
        As::Operator => fx.server.kubeconfig_yaml(),
    };
    std::fs::write(&kubeconfig, yaml).expect("kubeconfig written");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pullsecretd"));
    command
        .args(args)
        .arg("--config")
        .arg(fx.dir.path().join("config.yaml"))
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", fx.dir.path())
        .env_remove("RUST_LOG");
    let out = tokio::task::spawn_blocking(move || command.output().expect("pullsecretd runs"))
        .await
        .expect("joined");
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(SENTINEL),
            "credential leaked"
        );
    }
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (out.status.code(), text)
}

#[tokio::test]
async fn plan_cluster_once_and_status_read_only_the_configured_namespaces() {
    let (fx, _) = fixture(&["outside"]).await;
    write_config(&fx, SENTINEL, &NAMESPACED_TEAMS);
    fx.server.reset_counts();

    let (code, text) = cli(&fx, As::ServiceAccount, &["plan", "--cluster"]).await;
    assert_eq!(code, Some(0), "{text}");
    for team in NAMESPACED_TEAMS {
        assert!(text.contains(&format!("Project {team}")), "{text}");
    }
    assert!(!text.contains("outside"), "{text}");
    assert_eq!(fx.server.counts().writes(), 0, "plan never writes");

    let (code, text) = cli(&fx, As::ServiceAccount, &["once"]).await;
    assert_eq!(code, Some(0), "{text}");
    for team in NAMESPACED_TEAMS {
        assert!(fx.secret(team, "reg-pull").is_some(), "{team}");
    }

    assert_namespaced_only(&fx.server.counts());

    // `status` is an operator's command (pullsecretd's Roles do not read Events): as one, it
    // still reads only the configured namespaces.
    fx.server.reset_counts();
    let (code, text) = cli(&fx, As::Operator, &["status", "-o", "json"]).await;
    assert_eq!(code, Some(0), "{text}");
    let status: Value = serde_json::from_str(&text).expect("JSON");
    let projects = status["projects"].to_string();
    for team in NAMESPACED_TEAMS {
        assert!(projects.contains(team), "{status:#}");
    }
    let counts = fx.server.counts();
    assert!(
        counts.count_in("list", "events", "team-a") > 0,
        "{counts:#?}"
    );
    assert_namespaced_only(&counts);
    assert_eq!(counts.count_in("list", "events", ""), 0, "{counts:#?}");
}

/// The delete path of namespaced mode under faults: team-b stays managed but is no longer
/// selected; the unlink fails (both attempts) in the first pass and the delete in the second.
/// The sweeper watches throughout: no account ever names a missing Secret (the Secret is not
/// deleted while still linked), the user's own Secret and link in team-b are never touched,
/// nothing is emptied; the third pass finishes the cleanup.
#[tokio::test]
async fn a_cleanup_under_api_errors_leaves_no_dangling_reference_in_namespaced_mode() {
    let (fx, client) = fixture(&[]).await;
    crate::support::seed::object(
        &fx.server,
        "",
        "secrets",
        json!({"metadata": {"name": "user-own", "namespace": "team-b"}, "type": "Opaque"}),
    );
    crate::support::seed::account(&fx.server, "team-b", "default", &["user-own"], &[]);
    let config = write_config(&fx, SENTINEL, &NAMESPACED_TEAMS);
    assert!(fx.once_as(&client, &config).await.converged());
    assert!(linked(&fx, "team-b"));

    let path = fx.dir.path().join("config.yaml");
    let yaml = std::fs::read_to_string(&path).expect("config").replace(
        "projects: { names: [team-a, team-b] }",
        "projects: { names: [team-a] }",
    );
    std::fs::write(&path, &yaml).expect("config written");
    let fewer = Config::from_yaml(&yaml, &path).expect("valid config");

    let sweeper = Sweeper::start(fx.server.reader(), Some("default"));
    fx.server.set_faults(|faults| {
        // once_as retries each call once: two refusals fail the step.
        for (verb, resource) in [("update", "serviceaccounts"), ("delete", "secrets")] {
            faults.rules.push(ErrorRule::new(
                Some(verb),
                Some(resource),
                InjectedError::Unavailable,
                Some(2),
            ));
        }
    });
    let unlink_failed = fx.once_as(&client, &fewer).await;
    assert!(!unlink_failed.converged());
    assert!(
        fx.secret("team-b", "reg-pull").is_some(),
        "not deleted while still linked"
    );
    let delete_failed = fx.once_as(&client, &fewer).await;
    assert!(!delete_failed.converged());
    assert!(fx.once_as(&client, &fewer).await.converged());
    assert!(fx.secret("team-b", "reg-pull").is_none(), "cleaned up");
    assert_eq!(fx.account_lists("team-b", "default").0, ["user-own"]);
    assert!(linked(&fx, "team-a"), "team-a kept");
    sweeper
        .finish()
        .assert_clean("namespaced cleanup under API errors");
}

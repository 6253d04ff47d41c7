//! One reconcile pass (`once`) against kube-sim over HTTPS with the real `kube::Client`:
//! convergence from empty, zero writes on the second pass, foreign references kept in order,
//! foreign Secrets left alone, rotation in place, conflicts, injected server errors, and the
//! shipped least-privilege RBAC.

use crate::support::cluster;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::Client;
use kube_sim::{ErrorRule, InjectedError, Options};
use serde_json::{Value, json};

use cluster::{Fixture, password_in};
use pullsecretd::config::Config;

const SENTINEL: &str = "SENTINEL-pw-once-0b7a";

#[tokio::test]
async fn from_empty_converges_and_a_second_pass_writes_nothing() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.namespace("web-1", json!({"team": "web"}));
    fx.namespace("other", json!({"team": "db"}));
    for ns in ["a", "web-1", "other"] {
        fx.account(ns, "builder", &[], &[]).await;
    }
    let config = fx.config(SENTINEL, "");
    fx.server.reset_counts();

    let report = fx.once(&config).await;
    assert!(report.converged(), "{report:#?}");
    let counts = fx.server.counts();
    assert_eq!(counts.count("create", "secrets"), 2, "{counts:#?}");
    assert_eq!(
        counts.count("update", "serviceaccounts"),
        4,
        "default and builder in a and web-1"
    );
    assert_eq!(counts.count("delete", "secrets"), 0);
    assert!(fx.secret("other", "reg-pull").is_none(), "not selected");
    for ns in ["a", "web-1"] {
        let secret = fx.secret(ns, "reg-pull").expect("secret written");
        assert_eq!(
            secret.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        assert_eq!(password_in(&secret), SENTINEL);
        assert_eq!(fx.account_lists(ns, "default").0, ["reg-pull"]);
        assert_eq!(fx.account_lists(ns, "builder").1, ["reg-pull"]);
    }

    fx.server.reset_counts();
    let again = fx.once(&config).await;
    assert!(again.converged() && again.change_count() == 0, "{again:#?}");
    let counts = fx.server.counts();
    assert_eq!(
        counts.writes(),
        0,
        "steady state writes nothing: {counts:#?}"
    );
    assert_eq!(
        counts.verb("get"),
        0,
        "steady state reads by list only: {counts:#?}"
    );
}

#[tokio::test]
async fn foreign_references_survive_linking_and_unlinking_in_order() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.account(
        "a",
        "default",
        &["default-dockercfg-abcde", "users-own"],
        &["default-dockercfg-abcde"],
    )
    .await;
    fx.account(
        "a",
        "builder",
        &["builder-dockercfg-xyz12"],
        &["builder-dockercfg-xyz12"],
    )
    .await;

    let report = fx.once(&fx.config(SENTINEL, "")).await;
    assert!(report.converged(), "{report:#?}");
    assert_eq!(
        fx.account_lists("a", "default"),
        (
            vec![
                "default-dockercfg-abcde".to_string(),
                "users-own".into(),
                "reg-pull".into()
            ],
            vec!["default-dockercfg-abcde".to_string()]
        )
    );
    assert_eq!(
        fx.account_lists("a", "builder").1,
        ["builder-dockercfg-xyz12", "reg-pull"]
    );

    // The config stops asking for the pull secret: unlink, then delete; the rest stays.
    let without = fx.config(SENTINEL, "").clone();
    let without = Config {
        pull_secrets: vec![],
        ..without
    };
    let report = fx.once(&without).await;
    assert!(report.converged(), "{report:#?}");
    assert_eq!(
        fx.account_lists("a", "default"),
        (
            vec!["default-dockercfg-abcde".to_string(), "users-own".into()],
            vec!["default-dockercfg-abcde".to_string()]
        )
    );
    assert_eq!(
        fx.account_lists("a", "builder").1,
        ["builder-dockercfg-xyz12"]
    );
    assert!(
        fx.secret("a", "reg-pull").is_none(),
        "deleted after unlinking"
    );
}

#[tokio::test]
async fn conflicting_writers_both_keep_their_changes() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.account("a", "builder", &[], &[]).await;
    fx.account("a", "default", &["default-dockercfg-abcde"], &[])
        .await;
    // The next updates conflict, as if another controller wrote in between.
    let config = fx.config(SENTINEL, "");
    fx.server.reset_counts();
    fx.server.force_conflicts(3);
    let report = fx.once(&config).await;
    assert!(report.converged(), "{report:#?}");
    let counts = fx.server.counts();
    assert_eq!(
        counts.count("update", "serviceaccounts"),
        5,
        "3 conflicts, then 2 edits: {counts:#?}"
    );
    assert_eq!(
        fx.account_lists("a", "default").0,
        ["default-dockercfg-abcde", "reg-pull"]
    );
    assert_eq!(fx.account_lists("a", "builder").1, ["reg-pull"]);
}

#[tokio::test]
async fn a_foreign_secret_of_the_same_name_is_left_alone_unless_adopted() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.account("a", "builder", &[], &[]).await;
    let foreign = json!({
        "metadata": {"name": "reg-pull", "namespace": "a"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": STANDARD.encode(r#"{"auths":{}}"#)},
    });
    fx.server
        .create("", "secrets", foreign)
        .expect("foreign secret");

    let report = fx.once(&fx.config(SENTINEL, "")).await;
    let problems: Vec<&str> = report
        .projects
        .iter()
        .flat_map(|p| &p.problems)
        .map(|p| p.reason)
        .collect();
    assert_eq!(problems, ["ForeignSecret"], "{report:#?}");
    let untouched = fx.secret("a", "reg-pull").expect("still there");
    assert!(untouched.metadata.labels.is_none(), "not labelled");
    assert_eq!(
        fx.account_lists("a", "default").0,
        Vec::<String>::new(),
        "not linked"
    );
    let shown = format!("{report:?}");
    assert!(!shown.contains(SENTINEL));

    let adopting = fx.config(SENTINEL, "    adopt: true\n");
    let report = fx.once(&adopting).await;
    assert!(report.converged(), "{report:#?}");
    let adopted = fx.secret("a", "reg-pull").expect("adopted");
    assert_eq!(password_in(&adopted), SENTINEL);
    assert_eq!(fx.account_lists("a", "default").0, ["reg-pull"]);
}

#[tokio::test]
async fn rotation_updates_data_in_place_and_leaves_links() {
    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.account("a", "builder", &[], &[]).await;
    assert!(fx.once(&fx.config("first-password", "")).await.converged());

    fx.server.reset_counts();
    let report = fx.once(&fx.config(SENTINEL, "")).await;
    assert!(report.converged(), "{report:#?}");
    let counts = fx.server.counts();
    assert_eq!(counts.count("update", "secrets"), 1, "{counts:#?}");
    assert_eq!(
        counts.count("update", "serviceaccounts"),
        0,
        "links untouched"
    );
    assert_eq!(
        password_in(&fx.secret("a", "reg-pull").expect("secret")),
        SENTINEL
    );
}

#[tokio::test]
async fn injected_server_errors_are_retried_and_reported_honestly() {
    let fx = Fixture::start(Options::default()).await;
    for ns in ["a", "b", "c", "d"] {
        fx.namespace(ns, json!({"team": "web"}));
        fx.account(ns, "builder", &[], &[]).await;
    }
    let config = fx.config(SENTINEL, "");
    fx.server.set_faults(|f| {
        for verb in ["create", "update"] {
            f.rules.push(
                ErrorRule::new(Some(verb), None, InjectedError::Unavailable, None).with_rate(0.1),
            );
            f.rules.push(
                ErrorRule::new(
                    Some(verb),
                    None,
                    InjectedError::TooManyRequests { retry_after: 0 },
                    None,
                )
                .with_rate(0.1),
            );
        }
    });
    let report = fx.once(&config).await;
    assert!(
        report.converged(),
        "20% errors are retried away: {report:#?}"
    );
    for ns in ["a", "b", "c", "d"] {
        assert_eq!(fx.account_lists(ns, "default").0, ["reg-pull"]);
    }

    // Every write fails: nothing converges, the report says what and where, nothing leaks.
    fx.server.set_faults(|f| {
        f.rules = vec![ErrorRule::new(
            Some("update"),
            None,
            InjectedError::Internal,
            None,
        )];
    });
    let report = fx.once(&fx.config("another-password", "")).await;
    assert!(!report.converged());
    let failures: Vec<String> = report
        .projects
        .iter()
        .flat_map(|p| &p.failures)
        .map(ToString::to_string)
        .collect();
    assert_eq!(failures.len(), 4, "{failures:#?}");
    assert!(
        failures[0].starts_with("update secrets a/reg-pull:"),
        "{}",
        failures[0]
    );
    assert!(failures.iter().all(|f| !f.contains("another-password")));
}

/// The ClusterRole and ClusterRoleBinding shipped in deploy/base/rbac.yaml, as JSON values.
fn shipped_rbac() -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/rbac.yaml");
    let yaml = std::fs::read_to_string(path).expect("deploy/base/rbac.yaml");
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .filter(|doc: &Value| doc["kind"] == "ClusterRole" || doc["kind"] == "ClusterRoleBinding")
        .collect()
}

/// kube-sim with RBAC enforced, the given rules loaded, and a client acting as pullsecretd's
/// service account.
async fn rbac_fixture(rbac: Vec<Value>) -> (Fixture, Client) {
    let token = "pullsecretd-sa-token";
    let mut options = Options::default().identity(
        token,
        kube_sim::UserInfo::service_account("pullsecretd", "pullsecretd"),
    );
    options.rbac = true;
    let fx = Fixture::start(options).await;
    crate::support::seed::rbac_objects(&fx.server, rbac);
    let client = fx.client_as(token).await;
    (fx, client)
}

#[tokio::test]
async fn the_shipped_rbac_is_enough_and_each_write_rule_is_needed() {
    let (fx, client) = rbac_fixture(shipped_rbac()).await;
    fx.namespace("a", json!({}));
    fx.account("a", "builder", &[], &[]).await;
    let report = fx.once_as(&client, &fx.config(SENTINEL, "")).await;
    assert!(report.converged(), "{report:#?}");
    assert_eq!(fx.account_lists("a", "default").0, ["reg-pull"]);
    assert!(
        fx.server.counts().count("create", "events") > 0,
        "changes are reported as Events"
    );

    // Without `update` on serviceaccounts, linking is refused: the error says what and where.
    let mut rules = shipped_rbac();
    for rule in rules[0]["rules"].as_array_mut().expect("rules") {
        if rule["resources"] == json!(["serviceaccounts"]) {
            rule["verbs"] = json!(["list", "watch", "get"]);
        }
    }
    let (fx, client) = rbac_fixture(rules).await;
    fx.namespace("a", json!({}));
    fx.account("a", "builder", &[], &[]).await;
    let report = fx.once_as(&client, &fx.config(SENTINEL, "")).await;
    assert!(!report.converged());
    let failure = report.projects[0].failures[0].to_string();
    assert!(
        failure.starts_with("update serviceaccounts a/builder:"),
        "{failure}"
    );
    assert!(
        failure.contains("forbidden") && failure.contains("Forbidden, HTTP 403"),
        "{failure}"
    );
}

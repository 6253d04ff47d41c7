//! OpenShift's "Using image pull secrets" procedure, command by command, against kube-sim in
//! OpenShift mode: for each `oc` command, the object it would create (from kubectl's identical
//! `create` code in dry-run, or built exactly as docs/service-accounts.md and docs/openshift.md describe oc) is compared with
//! what pullsecretd writes. Names may differ where docs/pull-secrets.md and docs/openshift.md say why; types, data keys, payloads,
//! roleRefs, subjects and list entries must match.

use crate::support::cluster;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube_sim::Options;
use serde_json::{Value, json};

use cluster::{Fixture, resolve};
use pullsecretd::cluster::{ApplyOptions, Throttle};
use pullsecretd::config::{Config, SecretType};
use pullsecretd::dockerconfig::decode_payload;
use pullsecretd::reconcile::{Report, reconcile_once};

const SSO_PASSWORD: &str = "SENTINEL-sso-pw-8c21";

/// Writes `files` into the fixture's directory and loads `yaml` as the config.
fn config(fx: &Fixture, yaml: &str) -> Config {
    let path = fx.dir.path().join("config.yaml");
    std::fs::write(&path, yaml).expect("config written");
    Config::from_yaml(yaml, &path).expect("valid config")
}

/// The procedure's credentials: one SSO account used for the registry and its SSO host, and a
/// legacy quay entry; written as docker config.json and as a legacy .dockercfg.
fn write_credentials(dir: &Path) {
    let auth = STANDARD.encode(format!("developer@example.com:{SSO_PASSWORD}"));
    let quay = STANDARD.encode("robot:quay-pw");
    let docker = json!({"auths": {
        "privateregistry.example.com": {"auth": auth},
        "sso.redhat.com": {"auth": auth},
        "quay.io": {"auth": quay},
    }});
    std::fs::write(dir.join("config.json"), docker.to_string()).expect("config.json");
    let legacy = json!({"quay.io": {"auth": quay, "email": "robot@example.com"}});
    std::fs::write(dir.join(".dockercfg"), legacy.to_string()).expect(".dockercfg");
}

async fn once(fx: &Fixture, config: &Config) -> Report {
    let credentials = resolve(config).await;
    let throttle = Throttle::new(cluster::nz(200), cluster::nz(50), 2);
    let report = reconcile_once(
        &fx.client,
        &throttle,
        &ApplyOptions::for_instance("default"),
        config,
        &credentials,
        4,
    )
    .await
    .expect("cluster readable");
    assert!(report.converged(), "{report:#?}");
    report
}

/// What `kubectl create secret ... --dry-run=client -o json` (oc runs the same code) makes.
fn kubectl_secret(args: &[&str]) -> Secret {
    let out = Command::new("kubectl")
        .args(["create", "secret"])
        .args(args)
        .args(["--dry-run=client", "-o", "json"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a Secret")
}

fn stored_secret(fx: &Fixture, namespace: &str, name: &str) -> Secret {
    fx.secret(namespace, name)
        .unwrap_or_else(|| panic!("secret {namespace}/{name} exists"))
}

/// Same type, same data keys, and payloads the kubelet reads as the same logins.
fn assert_equivalent(ours: &Secret, theirs: &Secret) {
    assert_eq!(ours.type_, theirs.type_);
    let (ours_data, theirs_data) = (
        ours.data.clone().unwrap_or_default(),
        theirs.data.clone().unwrap_or_default(),
    );
    assert_eq!(
        ours_data.keys().collect::<Vec<_>>(),
        theirs_data.keys().collect::<Vec<_>>()
    );
    let secret_type = if ours.type_.as_deref() == Some("kubernetes.io/dockercfg") {
        SecretType::Dockercfg
    } else {
        SecretType::DockerConfigJson
    };
    let key = secret_type.data_key();
    let logins = |data: &[u8]| -> Vec<(String, String, String)> {
        decode_payload(secret_type, data)
            .expect("kubelet-readable payload")
            .into_iter()
            .map(|c| {
                let basic = c.basic_auth().expect("basic auth");
                let password = secrecy::ExposeSecret::expose_secret(&basic.password).to_string();
                (c.registry.auths_key(), basic.username, password)
            })
            .collect()
    };
    assert_eq!(logins(&ours_data[key].0), logins(&theirs_data[key].0));
}

fn binding(fx: &Fixture, namespace: &str, name: &str) -> RoleBinding {
    let value = fx
        .server
        .get("rbac.authorization.k8s.io", "rolebindings", namespace, name)
        .unwrap_or_else(|| panic!("rolebinding {namespace}/{name} exists"));
    serde_json::from_value(value).expect("a RoleBinding")
}

/// The RoleBinding `oc policy add-role-to-user/-group system:image-puller ... -n project-b`
/// creates (docs/openshift.md): roleRef the ClusterRole, one subject.
fn oc_policy_binding(subject: Value) -> Value {
    json!({
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:image-puller"},
        "subjects": [subject],
    })
}

fn openshift_fixture_projects() -> Options {
    Options::default().openshift()
}

#[tokio::test]
async fn oc_policy_add_role_to_user_and_to_group() {
    let fx = Fixture::start(openshift_fixture_projects()).await;
    for ns in ["project-a", "project-b"] {
        fx.namespace(ns, json!({}));
    }
    let default_pullers = binding(&fx, "project-b", "system:image-pullers");

    // oc policy add-role-to-user system:image-puller system:serviceaccount:project-a:default -n project-b
    let user = config(
        &fx,
        "imagePullers:\n  - project: project-b\n    allow: [\"serviceaccount:project-a:default\"]\n",
    );
    once(&fx, &user).await;
    let ours = binding(&fx, "project-b", "pullsecretd-image-puller");
    let expected = oc_policy_binding(
        json!({"kind": "ServiceAccount", "namespace": "project-a", "name": "default"}),
    );
    assert_eq!(
        serde_json::to_value(&ours.role_ref).expect("json"),
        expected["roleRef"]
    );
    assert_eq!(
        serde_json::to_value(&ours.subjects).expect("json"),
        expected["subjects"]
    );

    // oc policy add-role-to-group system:image-puller system:serviceaccounts:project-a -n project-b
    let group = config(
        &fx,
        "imagePullers:\n  - project: project-b\n    allow: [\"group:project-a\"]\n",
    );
    once(&fx, &group).await;
    let ours = binding(&fx, "project-b", "pullsecretd-image-puller");
    let expected = oc_policy_binding(json!({
        "kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts:project-a"
    }));
    assert_eq!(
        serde_json::to_value(&ours.subjects).expect("json"),
        expected["subjects"]
    );

    // OpenShift's own binding is never touched.
    let after = binding(&fx, "project-b", "system:image-pullers");
    assert_eq!(
        after.metadata.resource_version,
        default_pullers.metadata.resource_version
    );

    // Dropping the grant removes only pullsecretd's binding.
    once(&fx, &config(&fx, "registries: {}\n")).await;
    assert!(
        fx.server
            .get(
                "rbac.authorization.k8s.io",
                "rolebindings",
                "project-b",
                "pullsecretd-image-puller"
            )
            .is_none()
    );
    assert!(
        fx.server
            .get(
                "rbac.authorization.k8s.io",
                "rolebindings",
                "project-b",
                "system:image-pullers"
            )
            .is_some()
    );
}

#[tokio::test]
async fn every_selected_project_may_pull_without_listing_each() {
    let fx = Fixture::start(openshift_fixture_projects()).await;
    write_credentials(fx.dir.path());
    fx.namespace("images", json!({}));
    fx.namespace("team-1", json!({"pull": "yes"}));
    let yaml = format!(
        "registries:\n  quay:\n    server: quay.io\n    from: {{ dockerConfig: {dir}/config.json }}\n\
         pullSecrets:\n  - name: quay-pull\n    registries: [quay]\n    projects: {{ selector: \"pull=yes\" }}\n\
         imagePullers:\n  - project: images\n    allowProjectsOf: [quay-pull]\n",
        dir = fx.dir.path().display()
    );
    let config = config(&fx, &yaml);
    once(&fx, &config).await;
    let subjects = |fx: &Fixture| {
        let b = binding(fx, "images", "pullsecretd-image-puller");
        b.subjects
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(subjects(&fx), ["system:serviceaccounts:team-1"]);

    // A new project with the label joins on the next pass, without a config change.
    fx.namespace("team-2", json!({"pull": "yes"}));
    once(&fx, &config).await;
    assert_eq!(
        subjects(&fx),
        [
            "system:serviceaccounts:team-1",
            "system:serviceaccounts:team-2"
        ]
    );
}

#[tokio::test]
async fn oc_create_secret_commands_and_oc_secrets_link() {
    let fx = Fixture::start(openshift_fixture_projects()).await;
    write_credentials(fx.dir.path());
    fx.namespace("project-a", json!({}));
    let dir = fx.dir.path().display().to_string();
    let yaml = format!(
        "registries:\n\
         \x20 quay-legacy:\n    server: quay.io\n    from: {{ dockercfg: {dir}/.dockercfg }}\n\
         \x20 quay:\n    server: quay.io\n    from: {{ dockerConfig: {dir}/config.json }}\n\
         \x20 private-registry:\n    server: privateregistry.example.com\n    from: {{ dockerConfig: {dir}/config.json }}\n\
         pullSecrets:\n\
         \x20 - name: from-dockercfg\n    type: kubernetes.io/dockercfg\n    registries: [quay-legacy]\n    projects: {{ names: [project-a] }}\n    link: {{}}\n\
         \x20 - name: from-dockerconfigjson\n    registries: [quay]\n    projects: {{ names: [project-a] }}\n    link: {{}}\n\
         \x20 - name: private-registry\n    registries: [private-registry]\n    projects: {{ names: [project-a] }}\n\
         \x20   link: {{ default: [pull], builder: [mount] }}\n"
    );
    once(&fx, &config(&fx, &yaml)).await;

    // oc create secret generic from-dockercfg --from-file=.dockercfg=<file> --type=kubernetes.io/dockercfg
    let legacy_file = format!(".dockercfg={dir}/.dockercfg");
    let theirs = kubectl_secret(&[
        "generic",
        "x",
        "--from-file",
        &legacy_file,
        "--type=kubernetes.io/dockercfg",
    ]);
    assert_equivalent(&stored_secret(&fx, "project-a", "from-dockercfg"), &theirs);

    // oc create secret generic ... --from-file=.dockerconfigjson=<file> --type=kubernetes.io/dockerconfigjson
    let quay_only = fx.dir.path().join("quay.json");
    let quay_auth = STANDARD.encode("robot:quay-pw");
    std::fs::write(
        &quay_only,
        json!({"auths": {"quay.io": {"auth": quay_auth}}}).to_string(),
    )
    .expect("file");
    let json_file = format!(".dockerconfigjson={}", quay_only.display());
    let theirs = kubectl_secret(&[
        "generic",
        "x",
        "--from-file",
        &json_file,
        "--type=kubernetes.io/dockerconfigjson",
    ]);
    assert_equivalent(
        &stored_secret(&fx, "project-a", "from-dockerconfigjson"),
        &theirs,
    );

    // oc create secret docker-registry private-registry --docker-server=... (byte for byte)
    let theirs = kubectl_secret(&[
        "docker-registry",
        "private-registry",
        "--docker-server=privateregistry.example.com",
        "--docker-username=developer@example.com",
        &format!("--docker-password={SSO_PASSWORD}"),
    ]);
    let ours = stored_secret(&fx, "project-a", "private-registry");
    assert_eq!(ours.type_, theirs.type_);
    assert_eq!(
        ours.data, theirs.data,
        "the same bytes as oc create secret docker-registry"
    );

    // oc secrets link default private-registry --for=pull; oc secrets link builder private-registry
    let (default_pull, default_mount) = fx.account_lists("project-a", "default");
    let (builder_pull, builder_mount) = fx.account_lists("project-a", "builder");
    assert!(
        default_pull.len() == 2 && default_pull[0].starts_with("default-dockercfg-"),
        "{default_pull:?}"
    );
    assert_eq!(
        default_pull[1], "private-registry",
        "--for=pull appends to imagePullSecrets"
    );
    assert!(!default_mount.contains(&"private-registry".to_string()));
    assert!(
        builder_mount.len() == 2 && builder_mount[0].starts_with("builder-dockercfg-"),
        "{builder_mount:?}"
    );
    assert_eq!(
        builder_mount[1], "private-registry",
        "oc's default --for=mount appends to secrets"
    );
    assert!(!builder_pull.contains(&"private-registry".to_string()));
    // OpenShift's managed-secret annotation on the service account is kept.
    let sa = fx
        .server
        .get("", "serviceaccounts", "project-a", "default")
        .expect("sa");
    assert!(
        sa["metadata"]["annotations"]["openshift.io/internal-registry-pull-secret-ref"].is_string(),
        "{sa}"
    );
}

#[tokio::test]
async fn the_delegated_authentication_pair_combined_and_split() {
    let fx = Fixture::start(openshift_fixture_projects()).await;
    write_credentials(fx.dir.path());
    fx.namespace("project-a", json!({}));
    fx.namespace("project-b", json!({}));
    let dir = fx.dir.path().display().to_string();
    let registries = format!(
        "registries:\n\
         \x20 private-registry:\n    server: privateregistry.example.com\n    from: {{ dockerConfig: {dir}/config.json }}\n\
         \x20 redhat-connect-sso:\n    server: sso.redhat.com\n    from: {{ dockerConfig: {dir}/config.json }}\n"
    );
    let yaml = format!(
        "{registries}pullSecrets:\n\
         \x20 - name: delegated\n    registries: [private-registry, redhat-connect-sso]\n    projects: {{ names: [project-a] }}\n\
         \x20 - name: pair\n    layout: split\n    registries: [private-registry, redhat-connect-sso]\n    projects: {{ names: [project-b] }}\n"
    );
    let report = once(&fx, &config(&fx, &yaml)).await;
    assert!(!format!("{report:?}").contains(SSO_PASSWORD));

    // The procedure's two commands, one per endpoint (--docker-email=unused as in its docs is
    // omitted here: pullsecretd writes email only when the source has one).
    let sso = kubectl_secret(&[
        "docker-registry",
        "redhat-connect-sso",
        "--docker-server=sso.redhat.com",
        "--docker-username=developer@example.com",
        &format!("--docker-password={SSO_PASSWORD}"),
    ]);
    let private = kubectl_secret(&[
        "docker-registry",
        "private-registry",
        "--docker-server=privateregistry.example.com",
        "--docker-username=developer@example.com",
        &format!("--docker-password={SSO_PASSWORD}"),
    ]);

    // split: the same two Secrets, byte for byte, each linked like the procedure links them.
    assert_eq!(
        stored_secret(&fx, "project-b", "redhat-connect-sso").data,
        sso.data
    );
    assert_eq!(
        stored_secret(&fx, "project-b", "private-registry").data,
        private.data
    );
    let (pull, _) = fx.account_lists("project-b", "default");
    assert_eq!(&pull[1..], ["private-registry", "redhat-connect-sso"]);

    // combined: one Secret with both entries.
    let combined = stored_secret(&fx, "project-a", "delegated");
    let payload: Value =
        serde_json::from_slice(&combined.data.expect("data")[".dockerconfigjson"].0).expect("JSON");
    let keys: Vec<&String> = payload["auths"]
        .as_object()
        .expect("auths")
        .keys()
        .collect();
    assert_eq!(keys, ["privateregistry.example.com", "sso.redhat.com"]);
}

#[tokio::test]
async fn plain_kubernetes_skips_image_pullers_with_one_warning() {
    let fx = Fixture::start(Options::default()).await;
    write_credentials(fx.dir.path());
    fx.namespace("project-a", json!({}));
    fx.namespace("project-b", json!({}));
    let yaml = format!(
        "registries:\n  quay:\n    server: quay.io\n    from: {{ dockerConfig: {}/config.json }}\n\
         pullSecrets:\n  - name: quay-pull\n    registries: [quay]\n    projects: {{ names: [project-a] }}\n\
         imagePullers:\n  - project: project-b\n    allow: [\"group:project-a\"]\n",
        fx.dir.path().display()
    );
    let report = once(&fx, &config(&fx, &yaml)).await;
    let reasons: Vec<&str> = report.plan_problems.iter().map(|p| p.reason).collect();
    assert_eq!(reasons, ["NotOpenShift"]);
    assert_eq!(fx.server.counts().count("create", "rolebindings"), 0);
    assert!(
        fx.secret("project-a", "quay-pull").is_some(),
        "everything else still works"
    );
}

#[tokio::test]
async fn a_user_who_cannot_list_namespaces_works_through_projects() {
    let token = "alice-token";
    let mut options = Options::default().openshift().identity(
        token,
        kube_sim::UserInfo::user("alice", &["system:authenticated"]),
    );
    options.rbac = true;
    let fx = Fixture::start(options).await;
    write_credentials(fx.dir.path());
    for ns in ["project-a", "someone-elses"] {
        fx.namespace(ns, json!({}));
    }
    // Like a self-provisioner: may list projects, and may do everything inside project-a only.
    let rbac = [
        (
            "clusterroles",
            json!({"metadata": {"name": "project-lister"},
            "rules": [{"apiGroups": ["project.openshift.io"], "resources": ["projects"], "verbs": ["list", "get"]}]}),
        ),
        (
            "clusterrolebindings",
            json!({"metadata": {"name": "alice-projects"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "project-lister"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]}),
        ),
        (
            "roles",
            json!({"metadata": {"name": "admin-ish", "namespace": "project-a"}, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "get", "create", "update", "delete"]},
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["list", "get", "update"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["list"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]}),
        ),
        (
            "rolebindings",
            json!({"metadata": {"name": "alice-admin", "namespace": "project-a"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "admin-ish"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]}),
        ),
    ];
    for (resource, object) in rbac {
        fx.server
            .create("rbac.authorization.k8s.io", resource, object)
            .expect("rbac seeded");
    }
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&fx.server.kubeconfig_yaml_for(token, "project-a"))
            .expect("kubeconfig");
    let client_config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("client config");
    let alice = pullsecretd::cluster::client(client_config).expect("client");

    let yaml = format!(
        "registries:\n  quay:\n    server: quay.io\n    from: {{ dockerConfig: {}/config.json }}\n\
         pullSecrets:\n  - name: quay-pull\n    registries: [quay]\n    projects: {{ names: [project-a] }}\n",
        fx.dir.path().display()
    );
    let config = config(&fx, &yaml);
    let credentials = resolve(&config).await;
    let throttle = Throttle::new(cluster::nz(200), cluster::nz(50), 1);
    let report = reconcile_once(
        &alice,
        &throttle,
        &ApplyOptions::for_instance("default"),
        &config,
        &credentials,
        2,
    )
    .await
    .expect("projects are listed instead of namespaces");
    assert!(report.converged(), "{report:#?}");
    assert!(fx.secret("project-a", "quay-pull").is_some());
    let counts = fx.server.counts();
    assert!(counts.count("list", "projects") >= 1, "{counts:#?}");
}

//! The shipped manifests (`deploy/`): every entry point renders with the real `kubectl
//! kustomize`, every object decodes strictly into its Kubernetes API type and applies to kube-sim
//! with the real `kubectl apply`, the objects agree with each other (selectors, ports, names),
//! the OpenShift overlay meets the restricted-v2 SCC, and every metric the alerts and the
//! dashboard query is one the daemon serves on /metrics.
//!
//! Must not stub anything: kubectl renders and applies, kube-sim stores, the daemon serves.

use crate::support::cluster;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube_sim::Options;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use cluster::{Fixture, nz};
use pullsecretd::cluster::Throttle;
use pullsecretd::daemon::{self, DaemonOptions};
use pullsecretd::source::SourceContext;

/// The entry points a cluster applies, as deploy/README.md lists them.
const KUBERNETES: &str = "deploy";
const MONITORING: &str = "deploy/overlays/monitoring";
const OPENSHIFT: &str = "deploy/overlays/openshift";
const NAMESPACED: &str = "deploy/overlays/namespaced";
const SHARDED: &str = "deploy/overlays/sharded";
const ENTRY_POINTS: [&str; 5] = [KUBERNETES, MONITORING, OPENSHIFT, NAMESPACED, SHARDED];
/// The namespaces the namespaced overlay manages (and holds a Role and RoleBinding in).
pub const NAMESPACED_TEAMS: [&str; 2] = ["team-a", "team-b"];

/// The image every entry point runs until an operator overrides it (base/kustomization.yaml).
const DEFAULT_IMAGE: &str = "registry.example.com/pullsecretd/pullsecretd:0.1.0";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize ENTRY`, one JSON value per YAML document.
pub fn render(entry: &str) -> Vec<Value> {
    let rendered = Command::new("kubectl")
        .args(["kustomize", entry])
        .current_dir(root())
        .output()
        .expect("kubectl runs");
    assert!(
        rendered.status.success(),
        "kubectl kustomize {entry}: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).expect("UTF-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            let value: Value = serde::Deserialize::deserialize(document).expect("YAML document");
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or("")
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// The one object of `kind` in a rendering.
fn only<'a>(objects: &'a [Value], wanted: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| kind(o) == wanted).collect();
    assert_eq!(
        found.len(),
        1,
        "one {wanted} expected, found {}",
        found.len()
    );
    found[0]
}

/// Decodes `object` into the API type and names every field the type does not have (a typo, or
/// a field of a newer Kubernetes than k8s-openapi's v1_33).
fn strictly<T: DeserializeOwned>(object: &Value) -> (T, Vec<String>) {
    let mut ignored = Vec::new();
    let typed = serde_ignored::deserialize(object.clone(), |path| ignored.push(path.to_string()))
        .unwrap_or_else(|e| panic!("{} {}: {e}", kind(object), name(object)));
    (typed, ignored)
}

fn unknown_fields(object: &Value) -> Vec<String> {
    match kind(object) {
        "Namespace" => strictly::<Namespace>(object).1,
        "ServiceAccount" => strictly::<ServiceAccount>(object).1,
        "ConfigMap" => strictly::<ConfigMap>(object).1,
        "Service" => strictly::<Service>(object).1,
        "Deployment" => strictly::<Deployment>(object).1,
        "PodDisruptionBudget" => strictly::<PodDisruptionBudget>(object).1,
        "NetworkPolicy" => strictly::<NetworkPolicy>(object).1,
        "Role" => strictly::<Role>(object).1,
        "RoleBinding" => strictly::<RoleBinding>(object).1,
        "ClusterRole" => strictly::<ClusterRole>(object).1,
        "ClusterRoleBinding" => strictly::<ClusterRoleBinding>(object).1,
        // Custom resources: no typed schema in k8s-openapi.
        "ServiceMonitor" | "PrometheusRule" => Vec::new(),
        other => vec![format!("unexpected kind {other}")],
    }
}

/// Whether every field of `want` is in `have` with the same value (objects recursively, lists
/// element by element): what the server stored keeps what was applied, plus its defaults. An
/// absent `want` (null) asks for nothing.
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (_, Value::Null) => true,
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        _ => have == want,
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Applies the rendering with `kubectl apply`, reads it back with `kubectl get -f`, and checks
/// that each object came back with everything it was applied with.
fn applies_to_kube_sim(entry: &str, options: Options) {
    applies_to_kube_sim_with(entry, options, &[]);
}

/// As [`applies_to_kube_sim`], in a cluster that already has `namespaces` (those the
/// rendering's Roles go to: the teams' own, which the manifests do not create).
fn applies_to_kube_sim_with(entry: &str, options: Options, namespaces: &[&str]) {
    let objects = render(entry);
    // Everything, the Deployment included: kube-sim serves apps/v1 (and runs its pods).
    let applied: Vec<&Value> = objects.iter().collect();
    assert!(
        applied.iter().any(|o| kind(o) == "Deployment"),
        "{entry}: no Deployment rendered"
    );
    let server = kube_sim::Server::start_in_thread(options.tls()).expect("kube-sim");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    for namespace in namespaces {
        let object =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        server
            .create("", "namespaces", object)
            .unwrap_or_else(|e| panic!("namespace {namespace}: {e}"));
    }
    let manifest = dir.path().join("manifest.yaml");
    let yaml: Vec<String> = applied
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).expect("YAML"))
        .collect();
    std::fs::write(&manifest, yaml.join("---\n")).expect("manifest");
    let manifest = manifest.to_str().expect("UTF-8 path");

    let out = kubectl(&kubeconfig, &["apply", "-f", manifest]);
    assert_eq!(out.lines().count(), applied.len(), "{entry}: {out}");
    let live: Value = serde_json::from_str(&kubectl(
        &kubeconfig,
        &["get", "-f", manifest, "-o", "json"],
    ))
    .expect("kubectl get -o json");
    let items = live["items"].as_array().expect("a List");
    for object in &applied {
        let stored = items
            .iter()
            .find(|i| kind(i) == kind(object) && name(i) == name(object))
            .unwrap_or_else(|| panic!("{entry}: {} {} not served", kind(object), name(object)));
        let mut want = (*object).clone();
        // The server adds metadata of its own; compare what the manifest set.
        let want_labels = want["metadata"]["labels"].take();
        let want_annotations = want["metadata"]["annotations"].take();
        if let Some(m) = want.as_object_mut() {
            m.remove("metadata");
        }
        assert!(
            contains(stored, &want)
                && contains(&stored["metadata"]["labels"], &want_labels)
                && contains(&stored["metadata"]["annotations"], &want_annotations),
            "{entry}: {} {} stored as\n{stored:#}\napplied\n{object:#}",
            kind(object),
            name(object)
        );
    }
}

#[test]
fn every_entry_point_renders_objects_of_the_real_api_types() {
    for entry in ENTRY_POINTS {
        let objects = render(entry);
        assert!(!objects.is_empty(), "{entry} renders nothing");
        for object in &objects {
            let unknown = unknown_fields(object);
            assert!(
                unknown.is_empty(),
                "{entry}: {} {}: fields the API type does not have: {unknown:?}",
                kind(object),
                name(object)
            );
            let team_rbac = entry == NAMESPACED
                && matches!(kind(object), "Role" | "RoleBinding")
                && name(object) == "pullsecretd";
            if team_rbac {
                let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
                assert!(
                    NAMESPACED_TEAMS.contains(&namespace),
                    "{entry}: {} in {namespace}",
                    kind(object)
                );
            } else if kind(object) != "Namespace" && !kind(object).starts_with("Cluster") {
                assert_eq!(
                    object["metadata"]["namespace"],
                    "pullsecretd",
                    "{entry}: {}",
                    name(object)
                );
            }
        }
    }
}

#[test]
fn kubernetes_entry_point_applies_to_kube_sim_with_kubectl() {
    applies_to_kube_sim(KUBERNETES, Options::default());
}

#[test]
fn monitoring_entry_point_applies_to_kube_sim_with_kubectl() {
    applies_to_kube_sim(MONITORING, Options::default());
}

#[test]
fn openshift_entry_point_applies_to_kube_sim_with_kubectl() {
    applies_to_kube_sim(OPENSHIFT, Options::default().openshift());
}

#[test]
fn sharded_entry_point_applies_to_kube_sim_with_kubectl() {
    applies_to_kube_sim(SHARDED, Options::default());
}

#[test]
fn namespaced_entry_point_applies_to_kube_sim_with_kubectl() {
    applies_to_kube_sim_with(NAMESPACED, Options::default(), &NAMESPACED_TEAMS);
}

/// Namespaced mode ships no cluster-wide RBAC: a Role and RoleBinding in each team's
/// namespace, the Lease Role, and a config naming exactly those namespaces.
#[test]
fn the_namespaced_overlay_grants_nothing_cluster_wide() {
    let objects = render(NAMESPACED);
    let cluster_wide: Vec<&str> = objects
        .iter()
        .map(kind)
        .filter(|k| k.starts_with("Cluster"))
        .collect();
    assert!(cluster_wide.is_empty(), "{cluster_wide:?}");
    for team in NAMESPACED_TEAMS {
        for wanted in ["Role", "RoleBinding"] {
            assert!(
                objects.iter().any(|o| kind(o) == wanted
                    && name(o) == "pullsecretd"
                    && o["metadata"]["namespace"] == team),
                "{wanted} in {team}"
            );
        }
    }
    assert!(
        objects
            .iter()
            .any(|o| kind(o) == "Role" && name(o) == "pullsecretd-leader-election"),
        "the Lease Role is kept"
    );
    let text = only(&objects, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml");
    let config =
        pullsecretd::config::Config::from_yaml(text, Path::new("/etc/pullsecretd/config.yaml"))
            .expect("the overlay's config is valid");
    let teams: Vec<String> = NAMESPACED_TEAMS.iter().map(|t| t.to_string()).collect();
    assert_eq!(config.namespaces, Some(teams));
}

#[test]
fn the_prometheus_operator_objects_come_only_with_the_monitoring_component() {
    let groups = |entry: &str| -> BTreeSet<String> {
        render(entry)
            .iter()
            .filter_map(|o| o["apiVersion"].as_str().map(String::from))
            .collect()
    };
    assert!(!groups(KUBERNETES).contains("monitoring.coreos.com/v1"));
    for entry in [MONITORING, OPENSHIFT] {
        let kinds: BTreeSet<String> = render(entry).iter().map(|o| kind(o).to_string()).collect();
        assert!(
            kinds.contains("ServiceMonitor") && kinds.contains("PrometheusRule"),
            "{entry}: {kinds:?}"
        );
    }
}

/// The pod template of the rendered Deployment.
fn pod_spec(objects: &[Value]) -> PodSpec {
    let (deployment, _) = strictly::<Deployment>(only(objects, "Deployment"));
    deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("a pod template")
}

fn pod_labels(objects: &[Value]) -> &Value {
    &only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
}

#[test]
fn the_deployment_is_hardened_in_every_entry_point() {
    for entry in ENTRY_POINTS {
        let objects = render(entry);
        let deployment = only(&objects, "Deployment");
        // Leader and standby, or one replica per shard.
        let replicas = if entry == SHARDED { 3 } else { 2 };
        assert_eq!(deployment["spec"]["replicas"], replicas, "{entry}");
        let pod = pod_spec(&objects);
        let security = pod.security_context.clone().expect("pod securityContext");
        assert_eq!(security.run_as_non_root, Some(true), "{entry}");
        assert_eq!(
            security.seccomp_profile.map(|p| p.type_),
            Some("RuntimeDefault".to_string()),
            "{entry}"
        );
        assert_eq!(pod.containers.len(), 1, "{entry}");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE), "{entry}");
        let c = container
            .security_context
            .clone()
            .expect("container securityContext");
        assert_eq!(c.allow_privilege_escalation, Some(false), "{entry}");
        assert_eq!(c.read_only_root_filesystem, Some(true), "{entry}");
        assert_eq!(c.privileged, None, "{entry}");
        let caps = c.capabilities.expect("capabilities");
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]), "{entry}");
        assert_eq!(caps.add, None, "{entry}");
        let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|g| g.path.clone())
        };
        assert_eq!(path(&container.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(path(&container.liveness_probe).as_deref(), Some("/healthz"));
        let resources = container.resources.clone().expect("resources");
        let requests = resources.requests.expect("requests");
        let limits = resources.limits.expect("limits");
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
        assert!(limits.contains_key("cpu") && limits.contains_key("memory"));
        // Spread: never two replicas on one node; zones when possible.
        let spread: Vec<(String, String)> = pod
            .topology_spread_constraints
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.topology_key, t.when_unsatisfiable))
            .collect();
        assert!(
            spread.contains(&("kubernetes.io/hostname".into(), "DoNotSchedule".into()))
                && spread.contains(&(
                    "topology.kubernetes.io/zone".into(),
                    "ScheduleAnyway".into()
                )),
            "{entry}: {spread:?}"
        );
    }
}

#[test]
fn only_the_kubernetes_entry_points_fix_the_uid() {
    for entry in [KUBERNETES, MONITORING] {
        let security = pod_spec(&render(entry))
            .security_context
            .expect("pod securityContext");
        assert_eq!(security.run_as_user, Some(65532), "{entry}");
        assert_eq!(security.run_as_group, Some(65532), "{entry}");
    }
}

/// What the restricted-v2 SCC refuses in a pod spec, or leaves for its own assignment
/// (openshift/cluster-kube-apiserver-operator,
/// bindata/bootkube/scc-manifests/0000_20_kube-apiserver-operator_00_scc-restricted-v2.yaml):
/// runAsUser MustRunAsRange (a UID is assigned from the namespace's range, so a fixed one is
/// refused unless it happens to fall in it), fsGroup and SELinux MustRunAs (assigned), ALL
/// capabilities dropped and only NET_BIND_SERVICE addable, no privilege escalation, no
/// privileged container, no host namespaces or ports, seccomp runtime/default, and these
/// volume types only.
fn restricted_v2_violations(pod: &PodSpec) -> Vec<String> {
    const VOLUMES: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    let mut out = Vec::new();
    let pod_security = pod.security_context.clone().unwrap_or_default();
    if pod_security.run_as_user.is_some() {
        out.push("pod runAsUser is fixed".to_string());
    }
    if pod_security.fs_group.is_some() {
        out.push("pod fsGroup is fixed".to_string());
    }
    if pod_security.se_linux_options.is_some() {
        out.push("pod seLinuxOptions are fixed".to_string());
    }
    let seccomp = pod_security.seccomp_profile.map(|p| p.type_);
    for flag in [pod.host_network, pod.host_pid, pod.host_ipc] {
        if flag == Some(true) {
            out.push("a host namespace is used".to_string());
        }
    }
    for container in &pod.containers {
        let c = container.security_context.clone().unwrap_or_default();
        let who = &container.name;
        if c.run_as_user.is_some() {
            out.push(format!("{who}: runAsUser is fixed"));
        }
        if c.se_linux_options.is_some() {
            out.push(format!("{who}: seLinuxOptions are fixed"));
        }
        if c.privileged == Some(true) {
            out.push(format!("{who}: privileged"));
        }
        if c.allow_privilege_escalation != Some(false) {
            out.push(format!("{who}: privilege escalation is not disabled"));
        }
        let caps = c.capabilities.unwrap_or_default();
        if !caps.drop.unwrap_or_default().iter().any(|d| d == "ALL") {
            out.push(format!("{who}: does not drop ALL capabilities"));
        }
        if caps
            .add
            .unwrap_or_default()
            .iter()
            .any(|a| a != "NET_BIND_SERVICE")
        {
            out.push(format!(
                "{who}: adds a capability other than NET_BIND_SERVICE"
            ));
        }
        let profile = c.seccomp_profile.map(|p| p.type_).or(seccomp.clone());
        if profile.is_some_and(|p| p != "RuntimeDefault") {
            out.push(format!("{who}: seccomp profile is not runtime/default"));
        }
        for port in container.ports.clone().unwrap_or_default() {
            if port.host_port.is_some() {
                out.push(format!("{who}: hostPort {:?}", port.host_port));
            }
        }
    }
    for volume in pod.volumes.clone().unwrap_or_default() {
        let value = serde_json::to_value(&volume).unwrap_or(Value::Null);
        let types: Vec<String> = value
            .as_object()
            .map(|m| m.keys().filter(|k| *k != "name").cloned().collect())
            .unwrap_or_default();
        for ty in types {
            if !VOLUMES.contains(&ty.as_str()) {
                out.push(format!("volume {}: type {ty} is not allowed", volume.name));
            }
        }
    }
    out
}

#[test]
fn the_openshift_overlay_meets_restricted_v2_and_the_kubernetes_one_does_not() {
    let openshift = pod_spec(&render(OPENSHIFT));
    let security = openshift
        .security_context
        .clone()
        .expect("pod securityContext");
    assert_eq!(security.run_as_group, None);
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(restricted_v2_violations(&openshift), Vec::<String>::new());
    // The checker sees what OpenShift would refuse: the Kubernetes entry point's fixed UID.
    assert_eq!(
        restricted_v2_violations(&pod_spec(&render(KUBERNETES))),
        vec!["pod runAsUser is fixed".to_string()]
    );
}

/// `labels` (a JSON object) satisfies a `matchLabels` selector.
fn matches(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && contains(labels, selector))
}

#[test]
fn service_pdb_and_policy_select_the_deployments_pods_and_its_metrics_port() {
    for entry in ENTRY_POINTS {
        let objects = render(entry);
        let labels = pod_labels(&objects);
        let pod = pod_spec(&objects);
        let port = pod.containers[0]
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.container_port == 8080)
            .expect("container port 8080");
        let port_name = port.name.clone().expect("a named port");
        assert_eq!(
            pod.containers[0]
                .args
                .clone()
                .unwrap_or_default()
                .iter()
                .find(|a| a.starts_with("--listen=")),
            Some(&"--listen=0.0.0.0:8080".to_string()),
            "{entry}"
        );

        let service = only(&objects, "Service");
        assert!(matches(&service["spec"]["selector"], labels), "{entry}");
        assert_eq!(service["spec"]["ports"][0]["port"], 8080);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], json!(port_name));

        let pdb = only(&objects, "PodDisruptionBudget");
        assert!(matches(&pdb["spec"]["selector"]["matchLabels"], labels));
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert!(pdb["spec"].get("minAvailable").is_none());

        let policy = only(&objects, "NetworkPolicy");
        assert!(matches(
            &policy["spec"]["podSelector"]["matchLabels"],
            labels
        ));
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let ingress = policy["spec"]["ingress"].as_array().expect("ingress rules");
        for rule in ingress {
            assert_eq!(
                rule["ports"],
                json!([{"protocol": "TCP", "port": 8080}]),
                "{entry}: ingress beyond the metrics port"
            );
        }
        let egress = policy["spec"]["egress"].as_array().expect("egress rules");
        assert_eq!(egress.len(), 3, "{entry}: DNS, API server, Vault");
        for rule in egress {
            assert!(
                rule["ports"].as_array().is_some_and(|p| !p.is_empty())
                    && rule["to"].as_array().is_some_and(|t| !t.is_empty()),
                "{entry}: an egress rule open to every port or peer: {rule}"
            );
        }

        if let Some(monitor) = objects.iter().find(|o| kind(o) == "ServiceMonitor") {
            assert!(matches(
                &monitor["spec"]["selector"]["matchLabels"],
                &service["metadata"]["labels"]
            ));
            assert_eq!(
                monitor["spec"]["endpoints"][0]["port"],
                service["spec"]["ports"][0]["name"]
            );
        }
    }
}

#[test]
fn openshift_dns_egress_is_its_resolver_on_5353() {
    let objects = render(OPENSHIFT);
    let dns = &only(&objects, "NetworkPolicy")["spec"]["egress"][0];
    assert_eq!(
        dns["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "openshift-dns"
    );
    assert_eq!(
        dns["ports"],
        json!([{"protocol": "UDP", "port": 5353}, {"protocol": "TCP", "port": 5353}])
    );
    let kubernetes = render(KUBERNETES);
    let dns = &only(&kubernetes, "NetworkPolicy")["spec"]["egress"][0];
    assert_eq!(
        dns["ports"],
        json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
    );
}

/// Every `pullsecretd_…` metric name in a PromQL expression (string literals skipped: label
/// values and regexes are not names).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut in_string = false;
    let mut escaped = false;
    let mut current = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
            continue;
        }
        if word(c) {
            current.push(c);
            continue;
        }
        if current.starts_with("pullsecretd_") {
            into.insert(std::mem::take(&mut current));
        }
        current.clear();
        in_string = c == '"';
    }
}

/// The metric names the PrometheusRule's expressions and the Grafana dashboard's queries use.
fn queried_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let objects = render(MONITORING);
    let rule = only(&objects, "PrometheusRule");
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            metric_names(r["expr"].as_str().expect("expr"), &mut names);
        }
    }
    let dashboard_path = root().join("deploy/components/monitoring/grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_path).expect("dashboard"))
            .expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            metric_names(target["expr"].as_str().expect("expr"), &mut names);
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            metric_names(query, &mut names);
        }
    }
    names
}

/// The sample names a Prometheus text exposition serves: each family by its `# TYPE` line
/// (with its suffixes: counters `_total`, histograms `_bucket`/`_sum`/`_count`), so a family
/// with no sample yet counts, plus every sample line's name.
fn served_metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(family), Some(ty)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match ty {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "summary" => &["", "_sum", "_count", "_created"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{family}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

#[test]
fn served_names_count_families_without_samples() {
    let text = "# TYPE pullsecretd_reconciles counter\n# TYPE pullsecretd_d histogram\n\
                # TYPE pullsecretd_leader gauge\npullsecretd_leader 1\n";
    let served = served_metric_names(text);
    for name in [
        "pullsecretd_reconciles_total",
        "pullsecretd_d_bucket",
        "pullsecretd_leader",
    ] {
        assert!(served.contains(name), "{name}: {served:?}");
    }
    assert!(!served.contains("pullsecretd_reconciles"));
    let mut names = BTreeSet::new();
    metric_names(
        "rate(pullsecretd_a_total{x=\"pullsecretd_\\\"not\"}[5m]) / xpullsecretd_b",
        &mut names,
    );
    assert_eq!(names, BTreeSet::from(["pullsecretd_a_total".to_string()]));
}

async fn scrape(address: std::net::SocketAddr) -> String {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("listener answers");
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.expect("body")
}

#[tokio::test]
async fn every_metric_the_alerts_and_dashboard_query_is_served_by_the_daemon() {
    let queried = queried_metric_names();
    assert!(queried.len() >= 10, "{queried:?}");

    let fx = Fixture::start(Options::default()).await;
    fx.namespace("a", json!({}));
    fx.config("daemon-deploy-pw", "");
    let config_path: PathBuf = fx.dir.path().join("config.yaml");
    let running = daemon::start(
        fx.client.clone(),
        DaemonOptions {
            config_path,
            config: None,
            sources: SourceContext::default(),
            throttle: Throttle::new(nz(500), nz(200), 4),
            events: false,
            concurrency: 8,
            lease: None,
            listen: Some("127.0.0.1:0".parse().expect("address")),
            reload_debounce: Duration::from_millis(150),
            debounce: Duration::from_millis(10),
        },
    )
    .await
    .expect("daemon starts");
    // Served after the first reconcile, so families with labels have their samples too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(running.health.ready.load(Ordering::Relaxed) && fx.secret("a", "reg-pull").is_some()) {
        assert!(Instant::now() < deadline, "the daemon never converged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = scrape(running.address.expect("listener")).await;
    running.stop();
    assert!(running.wait(Duration::from_secs(5)).await);

    let served = served_metric_names(&text);
    let missing: Vec<&String> = queried.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "queried by deploy/components/monitoring but not served on /metrics: {missing:?}\n\
         (a family is served once it has a sample: prometheus-client writes nothing for a labelled \
         family without series, so create each registry's series at 0 when the daemon starts; \
         that also lets increase() count the first error)\n{text}"
    );
}

#[test]
fn docker_and_podman_read_the_same_build_context_rules() {
    let podman =
        std::fs::read_to_string(root().join(".containerignore")).expect(".containerignore");
    let docker = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    assert_eq!(podman, docker);
    let rules: Vec<&str> = podman
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    for excluded in ["target/", "**/target/", ".git/", "/*.json"] {
        assert!(
            rules.contains(&excluded),
            "{excluded} not excluded: {rules:?}"
        );
    }
    // Cargo loads every workspace member, even for `-p pullsecretd`: none may be left out.
    for needed in ["src", "tests", "bench", "Cargo.toml", "Cargo.lock"] {
        assert!(
            !rules.iter().any(|r| r.trim_end_matches('/') == needed),
            "{needed} is excluded"
        );
    }
}

//! Test harness: kube-sim over HTTPS with a real `kube::Client`, plus the config, sources and
//! one `once` pass that tests run against it. Only 127.0.0.1 is ever contacted.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube_sim::{Handle, Options, Server};
use serde_json::{Value, json};

use pullsecretd::cluster::{ApplyOptions, Throttle};
use pullsecretd::config::{Config, LinkKind};
use pullsecretd::diff::linked_names;
use pullsecretd::reconcile::{Report, reconcile_once};
use pullsecretd::source::{self, Resolved, SourceContext};

pub struct Fixture {
    pub server: Handle,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start(options: Options) -> Self {
        let server = Server::start(options.tls()).await.expect("kube-sim starts");
        let client =
            pullsecretd::cluster::client(server.kube_config()).expect("client for kube-sim");
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            server,
            client,
            dir,
        }
    }

    pub fn namespace(&self, name: &str, labels: Value) {
        super::seed::namespace(&self.server, name, labels);
    }

    pub async fn account(&self, namespace: &str, name: &str, pull: &[&str], mount: &[&str]) {
        super::seed::account(&self.server, namespace, name, pull, mount);
    }

    /// Writes a docker config with `password` for registry.example.com and a config using it.
    pub fn config(&self, password: &str, extra: &str) -> Config {
        self.config_for("registry.example.com", password, extra)
    }

    /// Writes a docker config with `robot:<password>` for `server`, and a config with one pull
    /// secret `reg-pull` for it in project `a` and projects labelled `team=web`.
    pub fn config_for(&self, server: &str, password: &str, extra: &str) -> Config {
        let docker_config = self.dir.path().join("docker-config.json");
        let auth = STANDARD.encode(format!("robot:{password}"));
        std::fs::write(
            &docker_config,
            json!({"auths": {server: {"auth": auth}}}).to_string(),
        )
        .expect("docker config written");
        let yaml = format!(
            "registries:\n  reg:\n    server: {server}\n    from: {{ dockerConfig: {} }}\n\
             pullSecrets:\n  - name: reg-pull\n    registries: [reg]\n    projects: {{ selector: \"team=web\", names: [a] }}\n{extra}",
            docker_config.display()
        );
        let path = self.dir.path().join("config.yaml");
        std::fs::write(&path, &yaml).expect("config written");
        Config::from_yaml(&yaml, &path).expect("valid config")
    }

    pub async fn once(&self, config: &Config) -> Report {
        let credentials = resolve(config).await;
        let throttle = Throttle::new(nz(200), nz(50), 4);
        let options = ApplyOptions::for_instance(config.instance_name());
        reconcile_once(&self.client, &throttle, &options, config, &credentials, 8)
            .await
            .expect("cluster readable")
    }

    /// One `once` pass as `client` (another identity than the admin), one retry per call;
    /// the counters are shown if the cluster could not be read.
    pub async fn once_as(&self, client: &Client, config: &Config) -> Report {
        let credentials = resolve(config).await;
        let throttle = Throttle::new(nz(200), nz(50), 1);
        reconcile_once(
            client,
            &throttle,
            &ApplyOptions::for_instance(config.instance_name()),
            config,
            &credentials,
            4,
        )
        .await
        .unwrap_or_else(|error| panic!("{error}; {:?}", self.server.counts()))
    }

    /// Options for the in-process daemon on this fixture's `config.yaml`: Events on, no HTTP
    /// listener, leading on the Lease `pullsecretd/pullsecretd` as `replica-1` with renewals
    /// rare enough that a test's forced conflicts meet its own writes, and `retries` extra
    /// attempts per API call.
    pub fn daemon_options(&self, retries: usize) -> pullsecretd::daemon::DaemonOptions {
        use std::time::Duration;
        pullsecretd::daemon::DaemonOptions {
            config_path: self.dir.path().join("config.yaml"),
            config: None,
            sources: SourceContext::default(),
            throttle: Throttle::new(nz(500), nz(200), retries),
            events: true,
            concurrency: 4,
            lease: Some(pullsecretd::cluster::lease::LeaseConfig {
                namespace: "pullsecretd".into(),
                name: "pullsecretd".into(),
                identity: "replica-1".into(),
                lease_duration: Duration::from_secs(40),
                renew_deadline: Duration::from_secs(30),
                retry_period: Duration::from_secs(20),
                shards: 1,
            }),
            listen: None,
            reload_debounce: Duration::from_millis(150),
            debounce: Duration::from_millis(10),
        }
    }

    /// A client that authenticates with `token` (an identity the server was started with), as
    /// pullsecretd does from a kubeconfig.
    pub async fn client_as(&self, token: &str) -> Client {
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&self.server.kubeconfig_yaml_for(token, "default"))
                .expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("client config");
        pullsecretd::cluster::client(config).expect("client")
    }

    pub fn account_lists(&self, namespace: &str, name: &str) -> (Vec<String>, Vec<String>) {
        let value = self
            .server
            .get("", "serviceaccounts", namespace, name)
            .expect("account exists");
        let account: ServiceAccount = serde_json::from_value(value).expect("a ServiceAccount");
        let owned = |kind| {
            linked_names(&account, kind)
                .into_iter()
                .map(String::from)
                .collect()
        };
        (owned(LinkKind::Pull), owned(LinkKind::Mount))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let value = self.server.get("", "secrets", namespace, name)?;
        Some(serde_json::from_value(value).expect("a Secret"))
    }
}

pub fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

pub async fn resolve(config: &Config) -> BTreeMap<String, Resolved> {
    let mut credentials = BTreeMap::new();
    for registry in config.registries.values() {
        let resolved = source::resolve(registry, &SourceContext::default())
            .await
            .expect("source readable");
        credentials.insert(registry.name.clone(), resolved);
    }
    credentials
}

pub fn password_in(secret: &Secret) -> String {
    let data = secret.data.as_ref().expect("data");
    let payload: Value =
        serde_json::from_slice(&data[".dockerconfigjson"].0).expect("JSON payload");
    payload["auths"]
        .as_object()
        .and_then(|a| a.values().next())
        .map_or(&Value::Null, |e| &e["password"])
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// One `auths` entry a test writes into a docker config source.
pub struct Entry<'a> {
    /// The registry entry's name in the config (and, with `layout: split`, the Secret's).
    pub name: &'a str,
    pub server: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

impl Fixture {
    /// A config with one registry per entry (all read from one docker config file written
    /// here) and one pull secret `name` listing them all, with `layout`, in project `a`: the
    /// delegated-authentication pair of OpenShift's "Using image pull secrets" procedure.
    pub fn config_with_entries(&self, name: &str, layout: &str, entries: &[Entry<'_>]) -> Config {
        let docker_config = self.dir.path().join(format!("{name}-docker-config.json"));
        let auths: serde_json::Map<String, Value> = entries
            .iter()
            .map(|e| {
                let auth = STANDARD.encode(format!("{}:{}", e.username, e.password));
                (e.server.to_string(), json!({"auth": auth}))
            })
            .collect();
        std::fs::write(&docker_config, json!({"auths": auths}).to_string())
            .expect("docker config written");
        let mut yaml = String::from("registries:\n");
        for e in entries {
            yaml.push_str(&format!(
                "  {}:\n    server: {}\n    from: {{ dockerConfig: {} }}\n",
                e.name,
                e.server,
                docker_config.display()
            ));
        }
        let names: Vec<&str> = entries.iter().map(|e| e.name).collect();
        yaml.push_str(&format!(
            "pullSecrets:\n  - name: {name}\n    registries: [{}]\n    layout: {layout}\n    \
             projects: {{ names: [a] }}\n",
            names.join(", ")
        ));
        let path = self.dir.path().join(format!("{name}-config.yaml"));
        std::fs::write(&path, &yaml).expect("config written");
        Config::from_yaml(&yaml, &path).unwrap_or_else(|e| panic!("valid config: {e}\n{yaml}"))
    }

    /// The `auths` of these Secrets in `namespace`, merged in order as the kubelet merges all
    /// of a pod's pull secrets, written as one auth file for skopeo.
    pub fn merged_authfile(&self, namespace: &str, secrets: &[&str], file: &str) -> PathBuf {
        let mut auths = serde_json::Map::new();
        for name in secrets {
            let secret = self
                .secret(namespace, name)
                .unwrap_or_else(|| panic!("secret {namespace}/{name} written by pullsecretd"));
            assert_eq!(
                secret.type_.as_deref(),
                Some("kubernetes.io/dockerconfigjson")
            );
            let data = secret.data.expect("data");
            let payload: Value =
                serde_json::from_slice(&data[".dockerconfigjson"].0).expect("JSON payload");
            for (key, entry) in payload["auths"].as_object().expect("auths") {
                auths.entry(key.clone()).or_insert_with(|| entry.clone());
            }
        }
        let path = self.dir.path().join(file);
        std::fs::write(&path, json!({"auths": auths}).to_string()).expect("authfile");
        path
    }
}

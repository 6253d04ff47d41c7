//! Test harness: kube-sim over HTTPS with a real `kube::Client`, plus the config, sources and
//! one `once` pass that tests run against it. Only 127.0.0.1 is ever contacted.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::num::NonZeroU32;

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
        let client = Client::try_from(server.kube_config()).expect("client for kube-sim");
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            server,
            client,
            dir,
        }
    }

    pub fn namespace(&self, name: &str, labels: Value) {
        self.server
            .create(
                "",
                "namespaces",
                json!({"metadata": {"name": name, "labels": labels}}),
            )
            .expect("namespace created");
    }

    pub async fn account(&self, namespace: &str, name: &str, pull: &[&str], mount: &[&str]) {
        let pull: Vec<Value> = pull.iter().map(|n| json!({"name": n})).collect();
        let mount: Vec<Value> = mount.iter().map(|n| json!({"name": n})).collect();
        let account = json!({
            "metadata": {"name": name, "namespace": namespace},
            "imagePullSecrets": pull,
            "secrets": mount,
        });
        // `default` exists already (created with the namespace): replace its lists.
        if self
            .server
            .get("", "serviceaccounts", namespace, name)
            .is_some()
        {
            let api: kube::Api<ServiceAccount> =
                kube::Api::namespaced(self.client.clone(), namespace);
            let patch = json!({"imagePullSecrets": account["imagePullSecrets"], "secrets": account["secrets"]});
            api.patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("service account patched");
        } else {
            self.server
                .create("", "serviceaccounts", account)
                .expect("service account created");
        }
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
        let options = ApplyOptions {
            adopt: config
                .pull_secrets
                .iter()
                .filter(|p| p.adopt)
                .map(|p| p.name.clone())
                .collect(),
            ..ApplyOptions::default()
        };
        reconcile_once(&self.client, &throttle, &options, config, &credentials, 8)
            .await
            .expect("cluster readable")
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

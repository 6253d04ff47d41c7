//! Test harness: kube-sim over HTTPS (on a runtime of its own) with a kubeconfig file, a
//! directory for configs and auth files, and the `pullsecretd` binary run against it
//! (support/process.rs). Only 127.0.0.1 is ever contacted.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::{Handle, Options, Server};
use serde_json::{Value, json};

use super::invariants::entries;
use super::process::run;

/// kube-sim over HTTPS with a kubeconfig file, and a directory for configs and auth files.
pub struct Cluster {
    pub server: Handle,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// kube-sim on a runtime of its own (started from a plain thread, so async tests may
    /// call it too): the tests block on processes while it serves.
    pub fn start(options: Options) -> Self {
        let server = std::thread::spawn(move || Server::start_in_thread(options.tls()))
            .join()
            .expect("starting thread")
            .expect("kube-sim starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        Self {
            server,
            dir,
            kubeconfig,
        }
    }

    pub fn namespace(&self, name: &str) {
        super::seed::namespace(&self.server, name, json!({}));
    }

    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        // Write then rename: a daemon watching the directory never reads half a file.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).expect("file written");
        std::fs::rename(&tmp, &path).expect("file renamed");
        path
    }

    /// A docker config with `user:password` for `server`.
    pub fn docker_config(&self, name: &str, server: &str, password: &str) -> PathBuf {
        let auth = STANDARD.encode(format!("robot:{password}"));
        self.file(
            name,
            &json!({"auths": {server: {"auth": auth}}}).to_string(),
        )
    }

    pub fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("KUBECONFIG", path(&self.kubeconfig)),
            ("HOME", path(self.dir.path())),
        ];
        env.extend_from_slice(extra);
        env
    }

    /// `pullsecretd once --config CONFIG --no-events ARGS`, checked for `forbidden`.
    pub fn once_checked(
        &self,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        forbidden: &str,
    ) -> std::process::Output {
        let mut all = vec!["once", "--config", path(config), "--no-events"];
        all.extend_from_slice(args);
        run(&all, &self.env(env), forbidden)
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Value> {
        self.server.get("", "secrets", namespace, name)
    }

    pub fn uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.secret(namespace, name)
            .and_then(|s| s.pointer("/metadata/uid")?.as_str().map(String::from))
    }

    pub fn pull_list(&self, namespace: &str, account: &str) -> Vec<String> {
        self.server
            .get("", "serviceaccounts", namespace, account)
            .map(|sa| entries(&sa, "imagePullSecrets"))
            .unwrap_or_default()
    }

    /// Names and resourceVersions of every Secret and RoleBinding in the cluster.
    pub fn versions(&self) -> Vec<(String, String)> {
        let mut all = Vec::new();
        for (group, resource) in [
            ("", "secrets"),
            ("rbac.authorization.k8s.io", "rolebindings"),
        ] {
            for object in self.server.list(group, resource, None) {
                let meta = |p: &str| {
                    object
                        .pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                all.push((
                    format!(
                        "{resource} {}/{}",
                        meta("/metadata/namespace"),
                        meta("/metadata/name")
                    ),
                    meta("/metadata/resourceVersion"),
                ));
            }
        }
        all.sort();
        all
    }
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The password of `server`'s entry in a dockerconfigjson Secret as stored.
pub fn password_of(secret: &Value, server: &str) -> Option<String> {
    let data = secret.pointer("/data/.dockerconfigjson")?.as_str()?;
    let payload: Value = serde_json::from_slice(&STANDARD.decode(data).ok()?).ok()?;
    payload["auths"][server]["password"]
        .as_str()
        .map(String::from)
}

//! Test harness: a real container registry (Debian's `docker-registry`, distribution 2.8) on a
//! free loopback port, with htpasswd or token auth and its request log kept, plus `skopeo` to
//! push a minimal image. Adapted from the repository's `tests/support/registry.rs` (which
//! discards the log): kube-sim's pod tests read the log to see which user each pull came
//! from. Only 127.0.0.1 is contacted; a missing program fails the test (never skips).

#![allow(dead_code)]

use base64::Engine as _;
use sha2::Digest as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`, the registry's name in image references and `auths` keys.
    pub host: String,
    dir: tempfile::TempDir,
    log: PathBuf,
}

/// Token auth (distribution's `auth: token`) settings.
pub struct TokenAuth<'a> {
    pub realm: &'a str,
    pub service: &'a str,
    pub issuer: &'a str,
    pub rootcertbundle: &'a Path,
}

/// One request the registry answered, from its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// `http.request.method`.
    pub method: String,
    /// `http.request.uri`.
    pub uri: String,
    /// `http.response.status`.
    pub status: u16,
    /// The access controller logged "authorized request" for it (credentials were accepted).
    pub authorized: bool,
    /// `auth.user.name` where the registry logs it (distribution 2.8 does on error lines only).
    pub user: Option<String>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

fn run_ok(command: &mut Command) -> Output {
    let out = command.output().expect("command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Registry {
    /// A registry that accepts only these (user, password) accounts.
    pub fn start(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut lines = Vec::new();
        for (user, password) in users {
            // -C 4: the lowest bcrypt cost, so logins stay fast.
            let out = run_ok(Command::new("htpasswd").args(["-Bbn", "-C", "4", user, password]));
            lines.extend(String::from_utf8_lossy(&out.stdout).trim().as_bytes());
            lines.push(b'\n');
        }
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, lines).expect("htpasswd file");
        let auth = format!(
            "auth: {{ htpasswd: {{ realm: test, path: {} }} }}",
            htpasswd.display()
        );
        Self::spawn(dir, &auth)
    }

    /// A registry that accepts only bearer tokens from `auth`'s realm.
    pub fn start_token(auth: &TokenAuth<'_>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = format!(
            "auth: {{ token: {{ realm: \"{}\", service: {}, issuer: {}, rootcertbundle: {} }} }}",
            auth.realm,
            auth.service,
            auth.issuer,
            auth.rootcertbundle.display()
        );
        Self::spawn(dir, &auth)
    }

    fn spawn(dir: tempfile::TempDir, auth: &str) -> Self {
        let host = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog: {{ level: info, formatter: json, accesslog: {{ disabled: true }} }}\n\
             storage: {{ filesystem: {{ rootdirectory: {root} }} }}\n\
             http: {{ addr: {host} }}\n{auth}\n",
            root = dir.path().join("data").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("docker-registry runs (Debian package docker-registry)");
        let registry = Self {
            child,
            host,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&registry.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start on {}",
                registry.host
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Every request the registry has answered so far, from its JSON log (the lines of one
    /// request share `http.request.id`).
    pub fn served(&self) -> Vec<Served> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let s =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let of_request = |id: &Option<String>| -> Vec<&serde_json::Value> {
            lines
                .iter()
                .filter(|l| id.is_some() && s(l, "http.request.id") == *id)
                .collect()
        };
        lines
            .iter()
            .filter(|v| v.get("http.response.status").is_some())
            .map(|v| {
                let id = s(v, "http.request.id");
                Served {
                    method: s(v, "http.request.method").unwrap_or_default(),
                    uri: s(v, "http.request.uri").unwrap_or_default(),
                    status: v
                        .get("http.response.status")
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|n| u16::try_from(n).ok())
                        .unwrap_or(0),
                    authorized: of_request(&id)
                        .iter()
                        .any(|l| s(l, "msg").as_deref() == Some("authorized request")),
                    user: of_request(&id).iter().find_map(|l| s(l, "auth.user.name")),
                }
            })
            .collect()
    }

    /// Successful manifest GETs of `repository`, with the user each was served to.
    pub fn manifest_pulls(&self, repository: &str) -> Vec<Served> {
        let prefix = format!("/v2/{repository}/manifests/");
        self.served()
            .into_iter()
            .filter(|s| s.method == "GET" && s.uri.starts_with(&prefix) && s.status == 200)
            .collect()
    }

    /// Pushes a minimal image (an empty OCI image) as `repository:tag` with `user:password`.
    pub fn push(&self, user: &str, password: &str, repository: &str, tag: &str) {
        let layout = self.dir.path().join(format!("oci-{tag}"));
        write_empty_oci_image(&layout, tag);
        let authfile = self.dir.path().join("push-auth.json");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            &authfile,
            serde_json::json!({"auths": {self.host.clone(): {"auth": auth}}}).to_string(),
        )
        .expect("authfile");
        run_ok(Command::new("skopeo").args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-authfile",
            authfile.to_str().expect("UTF-8 path"),
            &format!("oci:{}:{tag}", layout.to_str().expect("UTF-8 path")),
            &format!("docker://{}/{repository}:{tag}", self.host),
        ]));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI image layout holding one image with no layers, tagged `tag`.
fn write_empty_oci_image(layout: &Path, tag: &str) {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dirs");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    // The tag goes into the config so each tag is a distinct image.
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"tag":"{tag}"}}}}}}"#
    );
    let config_digest = write_blob(&blobs, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_digest}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let manifest_digest = write_blob(&blobs, manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(layout.join("index.json"), index).expect("index.json");
}

fn write_blob(blobs: &Path, content: &[u8]) -> String {
    let digest = hex::encode(sha2::Sha256::digest(content));
    std::fs::write(blobs.join(&digest), content).expect("blob");
    digest
}

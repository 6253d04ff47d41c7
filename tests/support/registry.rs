//! Test harness: a real container registry (Debian's `docker-registry`, distribution 2.8) with
//! htpasswd auth on a free loopback port, and the real `skopeo` client. Only 127.0.0.1 is ever
//! contacted. When either program is missing the tests FAIL (never skip): `.ci/run` installs
//! them.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`, the registry's name in image references and `auths` keys.
    pub host: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry that accepts only `user:password`.
    pub fn start(user: &str, password: &str) -> Self {
        Self::start_users(&[(user, password)])
    }

    /// Starts a registry that accepts each of `users` (user, password).
    pub fn start_users(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut lines = Vec::new();
        for (user, password) in users {
            // -C 4: the lowest bcrypt cost, so logins stay fast in latency tests.
            let out = run_ok(Command::new("htpasswd").args(["-Bbn", "-C", "4", user, password]));
            lines.extend(String::from_utf8_lossy(&out.stdout).trim().as_bytes());
            lines.push(b'\n');
        }
        std::fs::write(dir.path().join("htpasswd"), lines).expect("htpasswd file");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog: {{ level: error }}\n\
             storage: {{ filesystem: {{ rootdirectory: {root} }} }}\n\
             http: {{ addr: {host} }}\n\
             auth: {{ htpasswd: {{ realm: test, path: {htpasswd} }} }}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (Debian package docker-registry)");
        let registry = Self { child, host, dir };
        registry.wait_until_listening();
        registry
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&self.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start on {}",
                self.host
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `skopeo list-tags` for `repository` with `authfile`.
    pub fn list_tags(&self, authfile: &Path, repository: &str) -> Output {
        skopeo(&[
            "list-tags",
            "--tls-verify=false",
            "--authfile",
            path(authfile),
            &format!("docker://{}/{repository}", self.host),
        ])
    }

    /// Pushes a minimal image (an empty OCI image) as `repository:tag`, authenticating with
    /// `authfile`.
    pub fn push(&self, authfile: &Path, repository: &str, tag: &str) -> Output {
        let layout = self.dir.path().join("oci");
        write_empty_oci_image(&layout, tag);
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-authfile",
            path(authfile),
            &format!("oci:{}:{tag}", path(&layout)),
            &format!("docker://{}/{repository}:{tag}", self.host),
        ])
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs (Debian package skopeo)")
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

/// An OCI image layout holding one image with no layers, tagged `tag`.
fn write_empty_oci_image(layout: &Path, tag: &str) {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dirs");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let config_digest = write_blob(&blobs, config);
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
    let digest = hex::encode(Sha256::digest(content));
    std::fs::write(blobs.join(&digest), content).expect("blob");
    digest
}

/// Token auth (distribution's `auth: token`): the registry sends clients to `realm` for a
/// bearer token and trusts tokens signed by a certificate in `rootcertbundle`.
pub struct TokenAuth<'a> {
    pub realm: &'a str,
    pub service: &'a str,
    pub issuer: &'a str,
    pub rootcertbundle: &'a Path,
}

impl Registry {
    /// Starts a registry with token auth: it accepts only bearer tokens from `auth`'s realm.
    pub fn start_token(auth: &TokenAuth<'_>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog: {{ level: error }}\n\
             storage: {{ filesystem: {{ rootdirectory: {root} }} }}\n\
             http: {{ addr: {host} }}\n\
             auth: {{ token: {{ realm: \"{realm}\", service: {service}, issuer: {issuer}, \
             rootcertbundle: {bundle} }} }}\n",
            root = dir.path().join("data").display(),
            realm = auth.realm,
            service = auth.service,
            issuer = auth.issuer,
            bundle = auth.rootcertbundle.display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (Debian package docker-registry)");
        let registry = Self { child, host, dir };
        registry.wait_until_listening();
        registry
    }

    /// Pulls `repository:tag` into a fresh local directory with `authfile`, as a node would.
    pub fn pull(&self, authfile: &Path, repository: &str, tag: &str) -> Output {
        let target = tempfile::tempdir_in(self.dir.path()).expect("pull target");
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-authfile",
            path(authfile),
            &format!("docker://{}/{repository}:{tag}", self.host),
            &format!("dir:{}", path(target.path())),
        ])
    }
}

//! Test harness: a real container registry (Debian's `docker-registry`, distribution 2.8) with
//! htpasswd auth on a free loopback port, and the real `skopeo` client. Only 127.0.0.1 is ever
//! contacted. When either program is missing the tests FAIL (never skip): `.ci/run` installs
//! them.
//!
//! For verified rotation, [`Registry::start_logged`] keeps the access log ([`Registry::v2_checks`])
//! and [`Registry::set_password`] changes a password while the registry runs.

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

// ---------------------------------------------------------------------------------------------
// Verified rotation: a registry whose passwords change while it runs, and its access log of
// `/v2/` checks. pullsecretd will GET `/v2/` with a new credential before publishing it.
//
// Upstream (distribution/distribution at v2.8.2, the Debian package's version):
// - registry/auth/htpasswd/access.go: on every request with basic auth the access controller
//   stats the htpasswd file and re-reads it when its modification time differs from the one it
//   last read; so a changed file takes effect without a restart, provided its mtime changes.
// - registry/registry.go: unless `log.accesslog.disabled`, the handler is wrapped in gorilla's
//   CombinedLoggingHandler writing to stdout: one Apache "combined" line per request, 401s
//   included (the JSON "response completed" lines on stderr cover 2xx/3xx only).
// ---------------------------------------------------------------------------------------------

/// One line of the registry's access log (Apache combined format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    /// The request method.
    pub method: String,
    /// The request URI as sent (path and query).
    pub uri: String,
    /// The HTTP status the registry answered.
    pub status: u16,
}

impl Registry {
    /// Like [`Registry::start_users`], but the access log is kept (see
    /// [`Registry::access_log`]) and the application log too (`registry.log`).
    pub fn start_logged(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let htpasswd = dir.path().join("htpasswd");
        let mut content = String::new();
        for (user, password) in users {
            content.push_str(&htpasswd_line(user, password));
        }
        std::fs::write(&htpasswd, content).expect("htpasswd file");
        let host = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog: {{ level: info, formatter: json }}\n\
             storage: {{ filesystem: {{ rootdirectory: {root} }} }}\n\
             http: {{ addr: {host} }}\n\
             auth: {{ htpasswd: {{ realm: test, path: {htpasswd} }} }}\n",
            root = dir.path().join("data").display(),
            htpasswd = htpasswd.display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let access = std::fs::File::create(dir.path().join("access.log")).expect("access.log");
        let app = std::fs::File::create(dir.path().join("registry.log")).expect("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::from(access))
            .stderr(Stdio::from(app))
            .spawn()
            .expect("docker-registry runs (Debian package docker-registry)");
        let registry = Self { child, host, dir };
        registry.wait_until_listening();
        registry
    }

    /// The registry process's id: the same before and after a password change shows that no
    /// restart was needed.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sets `user`'s password (adding the user if new) in the running registry's htpasswd
    /// file. The new file replaces the old by rename (the registry never reads half a file),
    /// and its mtime is made to differ from the old one even within one clock tick, since the
    /// registry re-reads the file only when the mtime changed.
    pub fn set_password(&self, user: &str, password: &str) {
        let path = self.dir.path().join("htpasswd");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let old_mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let prefix = format!("{user}:");
        let mut content: String = old
            .lines()
            .filter(|line| !line.starts_with(&prefix))
            .map(|line| format!("{line}\n"))
            .collect();
        content.push_str(&htpasswd_line(user, password));
        let staged = self.dir.path().join("htpasswd.new");
        std::fs::write(&staged, content).expect("write the new htpasswd file");
        let file = std::fs::File::options()
            .write(true)
            .open(&staged)
            .expect("open the new htpasswd file");
        if let Some(old_mtime) = old_mtime
            && file.metadata().and_then(|m| m.modified()).ok() == Some(old_mtime)
        {
            file.set_modified(old_mtime + Duration::from_millis(1))
                .expect("set the htpasswd mtime");
        }
        drop(file);
        std::fs::rename(&staged, &path).expect("replace the htpasswd file");
    }

    /// Every request the registry has logged so far, from its access log. Only registries
    /// from [`Registry::start_logged`] keep one (others: empty). A line is written after the
    /// response is sent, so wait for it rather than read once.
    pub fn access_log(&self) -> Vec<AccessLine> {
        self.access_log_text()
            .lines()
            .filter_map(parse_combined_line)
            .collect()
    }

    /// The access log as written (to check that it holds no secret).
    pub fn access_log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The access log's requests for the API base `/v2/` (the credential check), in order.
    pub fn v2_checks(&self) -> Vec<AccessLine> {
        self.access_log()
            .into_iter()
            .filter(|line| {
                let path = line.uri.split('?').next().unwrap_or_default();
                path == "/v2/" || path == "/v2"
            })
            .collect()
    }

    /// The registry's application log (JSON lines; `start_logged` registries only).
    pub fn app_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// GET `/v2/` with `user:password` (basic auth), as a credential check does; returns the
    /// HTTP status. No proxy: the request goes straight to the loopback registry.
    pub async fn check_v2(&self, user: &str, password: &str) -> u16 {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        client
            .get(format!("http://{}/v2/", self.host))
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("the registry answers")
            .status()
            .as_u16()
    }
}

/// One htpasswd line for `user` (bcrypt, cost 4 as elsewhere here); `-i` reads the password
/// from stdin, so it is not on a command line.
fn htpasswd_line(user: &str, password: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("htpasswd")
        .args(["-niB", "-C", "4", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("htpasswd runs (Debian package apache2-utils)");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(password.as_bytes())
        .expect("password to htpasswd");
    let out = child.wait_with_output().expect("htpasswd finishes");
    assert!(
        out.status.success(),
        "htpasswd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}\n", String::from_utf8_lossy(&out.stdout).trim())
}

/// `HOST IDENT USER [TIME] "METHOD URI PROTO" STATUS SIZE "REFERER" "AGENT"`; the request and
/// status are what we need.
fn parse_combined_line(line: &str) -> Option<AccessLine> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut words = request.split(' ');
    let method = words.next()?.to_string();
    let uri = words.next()?.to_string();
    let status = rest.split(' ').next()?.parse().ok()?;
    Some(AccessLine {
        method,
        uri,
        status,
    })
}

